//! Installing a signal handler in front of the one the process had, and
//! handing it the signals that are not ours: what the SIGBUS guard
//! ([`super::sigbus`]) and the hole guard ([`super::hole_guard`]) share.
//!
//! Invariant kept: **the previous action is saved before our handler can
//! run**. [`Chain::install`] first reads the action in force and publishes
//! it, and only then installs ours; if another thread installed an action
//! between the two calls, the one our `sigaction` replaced is published
//! over it in a second cell (never the first: the handler may be reading
//! it). A handler never sees "no previous action yet".
//!
//! Forwarding follows the conventions wasmtime uses for its own chain: an
//! `SA_SIGINFO` handler is called with the kernel's three arguments, a plain
//! handler with the signal number; `SIG_DFL` is restored and the signal
//! re-raised (the process dies as it would have without us); `SIG_IGN` is
//! restored and the handler returns.

use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One signal's handler chain: the action installed before ours.
pub(crate) struct Chain {
    signum: c_int,
    /// Two cells, each written at most once, before `published` names it.
    previous: [UnsafeCell<MaybeUninit<libc::sigaction>>; 2],
    /// 0: nothing published yet; 1 or 2: `previous[published - 1]` holds it.
    published: AtomicUsize,
    installed: Mutex<bool>,
}

// SAFETY: each cell of `previous` is written once, under `installed`'s lock,
// before `published` (a release store) names it, and only read after an
// acquire load of `published` names it; no cell is written after that.
unsafe impl Sync for Chain {}

impl Chain {
    /// The chain of `signum`, nothing installed yet.
    pub(crate) const fn new(signum: c_int) -> Chain {
        Chain {
            signum,
            previous: [UnsafeCell::new(MaybeUninit::zeroed()), UnsafeCell::new(MaybeUninit::zeroed())],
            published: AtomicUsize::new(0),
            installed: Mutex::new(false),
        }
    }

    /// Installs `handler` (an `SA_SIGINFO` handler, run on the alternate
    /// stack if the thread has one, with the signal left unblocked in it),
    /// once per process.
    pub(crate) fn install(
        &self,
        handler: unsafe extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void),
    ) -> io::Result<()> {
        let mut installed = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        if *installed {
            return Ok(());
        }
        // SAFETY: reading the current action into the first cell, which no
        // one reads before `published` says 1 (set just below).
        if unsafe { libc::sigaction(self.signum, std::ptr::null(), self.previous[0].get().cast()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.published.store(1, Ordering::Release);
        // SAFETY: an all-zero `sigaction` is a valid value (no handler, no
        // flags, empty mask), filled in below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
        // SAFETY: `action.sa_mask` is a valid, writable signal set.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        let mut replaced = MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: `action` is a complete sigaction whose handler is
        // async-signal-safe (the caller's contract); `replaced` is writable.
        if unsafe { libc::sigaction(self.signum, &action, replaced.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sigaction succeeded, so it filled `replaced`; the first
        // cell was filled by the first call.
        let (replaced, first) = unsafe { (replaced.assume_init(), (*self.previous[0].get()).assume_init()) };
        if replaced.sa_sigaction != first.sa_sigaction || replaced.sa_flags != first.sa_flags {
            // SAFETY: the second cell is unpublished, so no handler reads it.
            unsafe { (*self.previous[1].get()).write(replaced) };
            self.published.store(2, Ordering::Release);
        }
        *installed = true;
        Ok(())
    }

    /// Whether the handler is installed.
    pub(crate) fn installed(&self) -> bool {
        *self.installed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the signal to the action installed before ours.
    ///
    /// # Safety
    /// The arguments must be those the kernel gave our handler for this
    /// chain's signal.
    pub(crate) unsafe fn forward(&self, signum: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
        let previous = match self.published.load(Ordering::Acquire) {
            // SAFETY: a published cell was fully written before it was
            // published and is never written again.
            n @ (1 | 2) => unsafe { (*self.previous[n - 1].get()).assume_init() },
            // Only a signal raised before `install` published anything can
            // get here, and then no handler of ours was installed yet: this
            // branch is never taken, but SIG_DFL is the safe reading.
            // SAFETY: all-zero is a valid sigaction, and SIG_DFL is 0.
            _ => unsafe { std::mem::zeroed() },
        };
        if previous.sa_sigaction == libc::SIG_DFL || previous.sa_sigaction == libc::SIG_IGN {
            // SAFETY: restoring a disposition the process had; `previous` is
            // a valid sigaction.
            unsafe { libc::sigaction(signum, &previous, std::ptr::null_mut()) };
            if previous.sa_sigaction == libc::SIG_DFL {
                // SAFETY: raise is async-signal-safe; SA_NODEFER leaves the
                // signal unblocked, so the default action runs now.
                unsafe { libc::raise(signum) };
            }
        } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
            // SAFETY: an SA_SIGINFO action's sa_sigaction is a three-argument
            // handler, and we pass it the kernel's own arguments.
            let handler = unsafe {
                std::mem::transmute::<usize, extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)>(
                    previous.sa_sigaction,
                )
            };
            handler(signum, info, context);
        } else {
            // SAFETY: without SA_SIGINFO, sa_sigaction is a one-argument handler.
            let handler = unsafe { std::mem::transmute::<usize, extern "C" fn(c_int)>(previous.sa_sigaction) };
            handler(signum);
        }
    }
}

/// Restores the interrupted code's `errno` (which the handler's system calls
/// may overwrite) when the handler returns.
pub(crate) struct SavedErrno(c_int);

impl SavedErrno {
    pub(crate) fn save() -> SavedErrno {
        // SAFETY: __errno_location returns this thread's errno, always valid.
        SavedErrno(unsafe { *libc::__errno_location() })
    }
}

impl Drop for SavedErrno {
    fn drop(&mut self) {
        // SAFETY: as in `save`.
        unsafe { *libc::__errno_location() = self.0 };
    }
}
