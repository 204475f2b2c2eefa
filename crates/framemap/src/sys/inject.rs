//! Fault injection (feature `fault-injection`, for tests only): makes the
//! N-th system call that changes or inspects a memory fail, so tests can
//! show that no kernel failure leaves the frame table lying
//! (ARCHITECTURE.md, invariant 6).
//!
//! Every wrapper in [`super::mman`], [`super::pagemap`] and [`super::uffd`]
//! that acts on a reservation calls [`check`] first. Without the feature
//! `check` is an inlined `Ok(())`. With it, each thread has its own plan
//! (tests run on many threads at once): [`fail_nth`] arms it, and the N-th
//! call after that (1-based) fails with the given `errno` without reaching
//! the kernel; later calls succeed. Recovery paths that run after a failure
//! are ordinary calls: they count, and succeed.

use std::io;

#[cfg(feature = "fault-injection")]
mod plan {
    use std::cell::Cell;

    thread_local! {
        /// Calls left before the failing one (0: disarmed), the errno to
        /// fail with, and the calls counted since arming.
        pub(super) static PLAN: Cell<(u64, i32, u64)> = const { Cell::new((0, 0, 0)) };
    }
}

/// Fails with the armed errno if this call is the one planned to fail.
#[inline(always)]
pub(crate) fn check() -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    {
        let (left, errno, calls) = plan::PLAN.with(Cell::get);
        let calls = calls + 1;
        match left {
            0 => plan::PLAN.with(|p| p.set((0, errno, calls))),
            1 => {
                plan::PLAN.with(|p| p.set((0, errno, calls)));
                return Err(io::Error::from_raw_os_error(errno));
            }
            n => plan::PLAN.with(|p| p.set((n - 1, errno, calls))),
        }
    }
    Ok(())
}

#[cfg(feature = "fault-injection")]
use std::cell::Cell;

/// Arms this thread's plan: the `n`-th system call from now (1-based) fails
/// with `errno`. `n == 0` disarms. Resets the call count.
#[cfg(feature = "fault-injection")]
pub fn fail_nth(n: u64, errno: i32) {
    plan::PLAN.with(|p| p.set((n, errno, 0)));
}

/// Disarms this thread's plan and returns the calls counted since it was
/// armed (so a test knows when N has passed the last call).
#[cfg(feature = "fault-injection")]
pub fn disarm() -> u64 {
    plan::PLAN.with(|p| p.replace((0, 0, 0)).2)
}

/// Whether the armed failure has fired (the plan ran out) on this thread.
#[cfg(feature = "fault-injection")]
pub fn fired() -> bool {
    plan::PLAN.with(|p| p.get().0 == 0)
}
