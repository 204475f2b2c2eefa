//! `LinearSpace` against a pure model: arbitrary sequences of grow,
//! map_image, map_buffer (windows of host-shared buffers), map_zero, unmap,
//! unmap_buffer, buffer revocation, protect, discard, host writes and reads
//! (through the space and through the buffers), reset, restore_dirty,
//! restore_layout, populate and summary on a small real space.
//!
//! The operations and their decoding are `framemap_fuzz::space_ops`, the
//! model `framemap_fuzz::space_model`, and the run that checks the space
//! against it after every step `framemap_fuzz::space_replay` (where the
//! crate's tests replay the corpus and hand-written sequences too).
#![no_main]

use framemap_fuzz::space_ops::Input;
use framemap_fuzz::space_replay::replay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: Input| {
    replay(input);
});
