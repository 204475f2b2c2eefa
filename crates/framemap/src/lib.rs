//! framemap: linear memories for WebAssembly runtimes.
//!
//! A [`LinearSpace`] is one reservation of address space that never moves,
//! described by a [`FrameTable`]: an extent map whose every run of host pages
//! carries an explicit variant tag ([`FrameKind`]: unmapped, zero, image,
//! shared) and a [`Protection`]. Every change to the memory goes through one
//! function that updates the kernel's mappings and the table together, so the
//! table is always the truth about the memory (check it with
//! [`LinearSpace::validate`]).
//!
//! This crate knows nothing of wasmtime; `framemap-wasmtime` plugs it in as a
//! `MemoryCreator`.
//!
//! ```
//! use framemap::{LinearSpace, Protection, SpaceConfig};
//!
//! let page = framemap::host_page_size() as u64;
//! let mut space = LinearSpace::new(SpaceConfig { capacity: 64 * page, guard: 16 * page, initial_len: 4 * page })?;
//! space.write(0, b"hello")?;
//! space.protect(0, page, Protection::Read)?;
//! assert!(space.write(0, b"x").is_err());
//! space.grow_to(8 * page)?;
//! space.validate()?;
//! # Ok::<(), framemap::Error>(())
//! ```

mod buffer;
mod error;
mod frame;
mod image;
mod page;
mod reservation;
mod space;
mod summary;
mod sys;
mod table;

pub use buffer::{BufferGrant, SharedBuffer, WindowHost};
pub use error::{Error, Result};
pub use frame::{BackingId, Frame, FrameKind, FrameTag, Protection};
pub use image::Image;
pub use page::{PageRange, host_page_size};
pub use reservation::Reservation;
pub use space::{LinearSpace, ResetPolicy, ResetReport, SpaceConfig};
pub use summary::{SpaceSummary, human_bytes};
pub use table::FrameTable;

/// Whether the SIGBUS guard is installed in this process: it is, from the
/// first buffer over a file framemap could not seal (see
/// [`SharedBuffer::from_fd`]) on.
pub fn sigbus_guard_installed() -> bool {
    sys::sigbus::installed()
}

/// Whether this kernel supports `PAGEMAP_SCAN` (Linux 6.7+), which makes
/// resets and residency queries cost time proportional to the pages in use.
/// Probed once at run time.
pub fn pagemap_scan_supported() -> bool {
    sys::pagemap::scan_supported()
}

/// Whether resets track writes precisely: `PAGEMAP_SCAN` plus asynchronous
/// userfaultfd write-protection (Linux 6.7+, and userfaultfd allowed to this
/// process). Without it a reset copies every page it kept resident, whether
/// or not it was written again. Probed once at run time.
pub fn write_tracking_supported() -> bool {
    sys::pagemap::scan_supported() && sys::uffd::supported()
}
