//! The snapshot file parser and restore against what the file says: a valid
//! snapshot built from the input's first bytes, mutated by the rest (manifest
//! edits that keep the format's shape, byte mutations of the file, CRCs fixed
//! up or not), then opened, verified and restored, every memory checked
//! against its runs. Run with `-rss_limit_mb=2048`.
//!
//! The stages are `framemap_fuzz::snapshot_make` (the snapshot),
//! `framemap_fuzz::snapshot_mutate` (the mutations) and
//! `framemap_fuzz::snapshot_check` (the run and its oracle), where the
//! crate's tests replay the corpus too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    framemap_fuzz::snapshot_check::run(data);
});
