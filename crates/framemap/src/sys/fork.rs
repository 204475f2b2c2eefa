//! Telling a fork child from its parent without a system call.
//!
//! Some kernel objects framemap keeps per process (the pagemap file, the
//! userfaultfd descriptor) describe the address space of the process that
//! made them; a fork child inherits them but must make its own.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells, without a system call, that this process may be a fork child of
/// the one that last checked: one private page marked `MADV_WIPEONFORK`
/// holds a non-zero word, which a fork child sees as zero (its copy of the
/// page is wiped). When the page cannot be made, every check says "maybe"
/// and callers fall back to comparing process ids.
pub(crate) struct ForkSentinel(Option<NonNull<AtomicU64>>);

// SAFETY: the page is only ever accessed through the `AtomicU64`.
unsafe impl Send for ForkSentinel {}
// SAFETY: as above.
unsafe impl Sync for ForkSentinel {}

impl ForkSentinel {
    pub(crate) fn new() -> ForkSentinel {
        let page = super::mman::page_size();
        // SAFETY: a fresh private anonymous mapping, owned by the sentinel for
        // the rest of the process (never unmapped), aligned for a u64.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                page,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        };
        let Ok(addr) = mapped else { return ForkSentinel(None) };
        // SAFETY: `addr..addr + page` is the mapping just made.
        if unsafe { rustix::mm::madvise(addr, page, rustix::mm::Advice::LinuxWipeOnFork) }.is_err() {
            // SAFETY: unmaps the mapping just made, which nothing refers to.
            let _ = unsafe { rustix::mm::munmap(addr, page) };
            return ForkSentinel(None);
        }
        ForkSentinel(NonNull::new(addr.cast::<AtomicU64>()))
    }

    /// Arms the sentinel: until the next fork, [`ForkSentinel::untouched`]
    /// is true. Release ordering: whatever this thread wrote before arming
    /// is visible to a thread that then sees the sentinel untouched.
    pub(crate) fn arm(&self) {
        if let Some(word) = self.0 {
            // SAFETY: the page is mapped read-write for the process's life.
            unsafe { word.as_ref() }.store(1, Ordering::Release);
        }
    }

    /// True if no fork happened since the last [`ForkSentinel::arm`] in this
    /// process's address space.
    pub(crate) fn untouched(&self) -> bool {
        // SAFETY: as in `arm`.
        self.0.is_some_and(|word| unsafe { word.as_ref() }.load(Ordering::Acquire) == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_sentinel_is_untouched_once_armed() {
        let sentinel = ForkSentinel::new();
        assert!(sentinel.0.is_some(), "MADV_WIPEONFORK (Linux 4.14) is available");
        assert!(!sentinel.untouched(), "a fresh sentinel says a fork may have happened");
        sentinel.arm();
        assert!(sentinel.untouched());
    }
}
