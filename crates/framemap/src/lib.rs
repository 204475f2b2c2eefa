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
pub mod snapshot;
mod space;
mod summary;
mod sys;
mod table;

pub use buffer::{BufferGrant, SharedBuffer, WindowOwner};
pub use error::{Error, Result, SnapshotDamage};
pub use frame::{BackingId, Frame, FrameKind, FrameTag, PerTag, PerTagIter, Protection};
pub use image::Image;
pub use page::{PageRange, host_page_size};
pub use reservation::Reservation;
pub use space::{
    Checkpoint, GUARD_SHARE, LinearSpace, Prefetch, PrefetchReport, ResetPolicy, ResetReport, SpaceConfig,
};
pub use summary::{SpaceSummary, human_bytes};
pub use table::FrameTable;

/// Fault injection for tests (feature `fault-injection`): fail the N-th
/// system call a thread makes on a memory, to show that no kernel failure
/// leaves the frame table lying. Never enable it outside tests.
#[cfg(feature = "fault-injection")]
pub mod fault_injection {
    pub use crate::sys::inject::{disarm, fail_nth, fired};
}

/// Test support: decides whether a test of a kernel feature runs.
#[doc(hidden)]
pub mod testing {
    /// Whether a test that needs `feature` (named for people, e.g.
    /// "PAGEMAP_SCAN") can run: `present` says whether this machine has it.
    /// When it does not, the test skips, unless the environment variable
    /// `require` (e.g. `FRAMEMAP_REQUIRE_PAGEMAP_SCAN`) is set, which makes
    /// the absence a failure (CI sets it for what its machine has).
    pub fn feature_present(present: bool, feature: &str, require: &str) -> bool {
        if present {
            return true;
        }
        assert!(std::env::var_os(require).is_none(), "{require} is set, but this machine has no {feature}");
        eprintln!("no {feature} here: this test skips (set {require} to make that a failure)");
        false
    }
}

/// Whether the SIGBUS guard is installed in this process: it is, from the
/// first buffer over a file framemap could not seal (see
/// [`SharedBuffer::from_fd`]) on.
pub fn sigbus_guard_installed() -> bool {
    sys::sigbus::installed()
}

/// Whether the hole guard (the SIGSEGV handler that keeps host code touching
/// an inaccessible page of a memory from killing the process; see
/// [`LinearSpace::poisoned_pages`]) is installed: it is, from the first
/// [`LinearSpace`] on.
pub fn hole_guard_installed() -> bool {
    sys::hole_guard::installed()
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
