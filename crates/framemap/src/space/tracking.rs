//! Write tracking, and when pages restored in place are write-protected
//! again.
//!
//! Where the kernel offers asynchronous userfaultfd write-protection
//! (`sys::uffd`), the accessible `Zero` and `Image` runs are registered once
//! per layout, and [`LinearSpace::restore_dirty`] may write-protect the
//! pages it restored in place (`sys::pagemap::protect_dirty`), so a later
//! reset finds only the pages written since. Protection costs a minor fault
//! on each page's next write, so [`Reprotect`], a pure state machine with no
//! kernel call, decides when it pays.
//!
//! Invariants kept here:
//! - the registration is forgotten by every mapping change (`apply` and its
//!   failure recovery in `commit.rs` call [`Tracking::forget_registration`])
//!   and redone before the next tracked reset; a protection change keeps it;
//! - tracking only ever makes a page look clean if it was protected and not
//!   written since (`sys::uffd`'s invariant): a page outside a registered
//!   run, or whose protection failed, looks written and is restored again,
//!   so losing track costs work and never misses a page;
//! - [`Reprotect`]'s period stays a power of two from
//!   [`REPROTECT_PERIOD_MIN`] to [`REPROTECT_PERIOD_MAX`], and any change of
//!   the dirty set is protected at once.

use super::LinearSpace;
use super::reset::ResetReport;
use crate::frame::FrameKind;
use crate::page::PageRange;
use crate::sys::{pagemap, uffd};

/// Fewest resets between two in which write tracking protects every page it
/// restored, whether or not the dirty set changed (see
/// [`LinearSpace::restore_dirty`]): the period after any change of the
/// dirty set.
const REPROTECT_PERIOD_MIN: u32 = 64;

/// Most resets between two such protections: the period reached by a dirty
/// set that stays the same. A hot set of n pages then takes n faults per
/// 512 resets; a set that goes cold is copied for at most 512 more resets.
const REPROTECT_PERIOD_MAX: u32 = 512;

/// Write tracking state of a space (see [`LinearSpace::restore_dirty`]).
#[derive(Debug, Default)]
pub(super) struct Tracking {
    /// Whether the accessible Zero and Image runs are registered for write
    /// tracking as laid out now (`None`: the layout changed since).
    registered: Option<bool>,
    /// The dirty runs the reset before the last one found.
    previous: Vec<PageRange>,
    /// When to protect the pages restored in place.
    reprotect: Reprotect,
}

impl Tracking {
    /// A mapping changed: the new mappings are not registered yet.
    pub(super) fn forget_registration(&mut self) {
        self.registered = None;
    }

    /// Starts a reset: the runs `last_dirty` holds (what the last reset
    /// found) become the previous ones, and `last_dirty` is emptied for this
    /// reset's scan. Both buffers are reused.
    pub(super) fn begin_reset(&mut self, last_dirty: &mut Vec<PageRange>) {
        std::mem::swap(last_dirty, &mut self.previous);
        last_dirty.clear();
    }
}

/// The re-protection policy: whether a reset write-protects the pages it
/// restored in place.
///
/// - The dirty set changed since the last reset (a burst, or new pages):
///   protect now, and the period goes back to [`REPROTECT_PERIOD_MIN`].
/// - The same set dirty twice in a row is hot: left unprotected, copied at
///   each reset with no fault.
/// - Every `period` resets the restored pages are protected anyway, so
///   pages that went cold stop being copied. Such a periodic protection is a
///   probe: if the very same set is written again after it, it only cost
///   faults, and the period doubles, up to [`REPROTECT_PERIOD_MAX`].
///
/// Only resets that are tracked and restored something in place count; any
/// other reset leaves the state as it is. A protection the kernel fails
/// leaves the state [`Reprotect::next`] returned (the reset counts, nothing
/// was protected), so the pages are protected at the next reset that counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Reprotect {
    /// Counted resets since the last one that protected.
    resets_since_protection: u32,
    /// Resets between periodic protections now, from
    /// [`REPROTECT_PERIOD_MIN`] to [`REPROTECT_PERIOD_MAX`].
    period: u32,
    /// Whether the last protection was a periodic one of an unchanged set,
    /// whose outcome the next counted reset judges.
    probing: bool,
}

impl Default for Reprotect {
    fn default() -> Self {
        Reprotect { resets_since_protection: 0, period: REPROTECT_PERIOD_MIN, probing: false }
    }
}

/// What a reset tells the policy: plain facts, found before any protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ResetSeen {
    /// Whether writes are tracked: dirty pages were found by scanning and
    /// the accessible Zero and Image runs are registered.
    tracked: bool,
    /// Whether the reset restored any page in place (only those can be
    /// protected).
    restored: bool,
    /// Whether the dirty runs differ from those the reset before found.
    changed: bool,
}

/// What the policy decides for the pages a reset restored in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Decision {
    /// Leave them unprotected (copied again at the next reset).
    Leave,
    /// Write-protect them; once that succeeded, the policy's state becomes
    /// `then`.
    Protect {
        /// The state after a successful protection.
        then: Reprotect,
    },
}

impl Reprotect {
    /// The transition at one reset: the state to keep, and what to do with
    /// the pages restored in place (if the decision is to protect and that
    /// succeeds, the state is the decision's `then` instead).
    fn next(self, seen: ResetSeen) -> (Reprotect, Decision) {
        if !seen.tracked || !seen.restored {
            return (self, Decision::Leave);
        }
        let resets_since_protection = self.resets_since_protection.saturating_add(1);
        let period = if seen.changed {
            REPROTECT_PERIOD_MIN
        } else if self.probing {
            // The same set was written again after a periodic protection.
            (self.period * 2).min(REPROTECT_PERIOD_MAX)
        } else {
            self.period
        };
        let kept = Reprotect { resets_since_protection, period, probing: false };
        if seen.changed || resets_since_protection >= period {
            let then = Reprotect { resets_since_protection: 0, period, probing: !seen.changed };
            (kept, Decision::Protect { then })
        } else {
            (kept, Decision::Leave)
        }
    }
}

impl LinearSpace {
    /// Registers the accessible Zero and Image runs for write tracking if
    /// the layout changed since they were; true if they are registered. A
    /// run the kernel refuses stays untracked: its present pages always
    /// count as written (see [`crate::sys::uffd`]).
    ///
    /// Adjacent eligible runs are registered together, one `ioctl` per
    /// stretch of them rather than one per run: a restored snapshot whose
    /// stored pages are scattered through an image has hundreds of runs
    /// (one mapping each) but one stretch, and the kernel registers every
    /// mapping of a range in one call.
    pub(super) fn register_for_tracking(&mut self) -> bool {
        if let Some(registered) = self.tracking.registered {
            return registered;
        }
        let mut registered = uffd::supported();
        if registered {
            let mut stretches: Vec<PageRange> = Vec::new();
            for (run, frame) in self.table.runs_in(self.accessible_pages()) {
                if matches!(frame.kind(), FrameKind::Zero | FrameKind::Image { .. }) {
                    match stretches.last_mut() {
                        Some(last) if last.end == run.start => last.end = run.end,
                        _ => stretches.push(run),
                    }
                }
            }
            for stretch in stretches {
                // SAFETY: `stretch` is made of runs mapped inside this
                // space's reservation, with no gap between them.
                let ok = unsafe { uffd::register(self.addr_of(stretch.start), (stretch.len() * self.page) as usize) };
                registered &= ok.is_ok();
            }
        }
        self.tracking.registered = Some(registered);
        registered
    }

    /// Write tracking after a reset that restored the pages of `kept` (the
    /// hull of those restored in place) and found `self.last_dirty`: asks
    /// [`Reprotect`] whether to protect them, and does; sets
    /// `report.protected` if it protected them.
    pub(super) fn protect_after_restore(&mut self, tracked: bool, kept: PageRange, report: &mut ResetReport) {
        let restored = !kept.is_empty();
        // Compared only when it matters: the policy ignores it otherwise.
        let changed = tracked && restored && self.last_dirty != self.tracking.previous;
        let (state, decision) = self.tracking.reprotect.next(ResetSeen { tracked, restored, changed });
        self.tracking.reprotect = state;
        if let Decision::Protect { then } = decision {
            let (first, last) = (self.addr_of(kept.start) as usize, self.addr_of(kept.end) as usize);
            // A failure leaves pages unprotected, which only means they
            // are copied again next time.
            if pagemap::protect_dirty(first, last).is_ok() {
                self.tracking.reprotect = then;
                report.protected = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashSet, VecDeque};

    const PERIODS: [u32; 4] = [64, 128, 256, 512];

    fn state(resets_since_protection: u32, period: u32, probing: bool) -> Reprotect {
        Reprotect { resets_since_protection, period, probing }
    }

    /// Every input a reset can give.
    fn all_seen() -> impl Iterator<Item = ResetSeen> {
        (0..8u8).map(|b| ResetSeen { tracked: b & 1 != 0, restored: b & 2 != 0, changed: b & 4 != 0 })
    }

    /// Every state with a count up to `max_since`.
    fn all_states(max_since: u32) -> impl Iterator<Item = Reprotect> {
        (0..=max_since).flat_map(|since| {
            PERIODS.into_iter().flat_map(move |period| [false, true].map(|probing| state(since, period, probing)))
        })
    }

    /// One reset as the space runs it: the state after the transition and
    /// the protection outcome, and whether the pages ended up protected.
    fn step(s: Reprotect, seen: ResetSeen, protection_succeeds: bool) -> (Reprotect, bool) {
        match s.next(seen) {
            (_, Decision::Protect { then }) if protection_succeeds => (then, true),
            (kept, _) => (kept, false),
        }
    }

    /// The rules as `restore_dirty` spelled them out inline before they became
    /// [`Reprotect`], kept verbatim (field for field) as the oracle that
    /// the state machine changed no behaviour.
    fn inline_rules(mut s: Reprotect, seen: ResetSeen, protection_succeeds: bool) -> (Reprotect, bool) {
        let mut protected = false;
        if seen.tracked && seen.restored {
            s.resets_since_protection += 1;
            let changed = seen.changed;
            if changed {
                s.period = REPROTECT_PERIOD_MIN;
            } else if s.probing {
                s.period = (s.period * 2).min(REPROTECT_PERIOD_MAX);
            }
            s.probing = false;
            if (changed || s.resets_since_protection >= s.period) && protection_succeeds {
                s.resets_since_protection = 0;
                s.probing = !changed;
                protected = true;
            }
        }
        (s, protected)
    }

    #[test]
    fn every_transition_matches_the_inline_rules_it_replaced() {
        let mut cases = 0;
        for s in all_states(2 * REPROTECT_PERIOD_MAX + 1) {
            for seen in all_seen() {
                for ok in [false, true] {
                    assert_eq!(step(s, seen, ok), inline_rules(s, seen, ok), "{s:?} {seen:?} protection ok: {ok}");
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 1026 * 4 * 2 * 8 * 2);
    }

    #[test]
    fn a_reset_that_is_not_tracked_or_restored_nothing_changes_nothing() {
        for s in all_states(2 * REPROTECT_PERIOD_MAX) {
            for seen in all_seen().filter(|seen| !seen.tracked || !seen.restored) {
                assert_eq!(s.next(seen), (s, Decision::Leave), "{seen:?}");
            }
        }
    }

    #[test]
    fn a_changed_set_is_protected_at_once_and_restarts_the_period() {
        for s in all_states(2 * REPROTECT_PERIOD_MAX) {
            let seen = ResetSeen { tracked: true, restored: true, changed: true };
            let (kept, decision) = s.next(seen);
            assert_eq!(kept, state(s.resets_since_protection + 1, REPROTECT_PERIOD_MIN, false));
            assert_eq!(decision, Decision::Protect { then: state(0, REPROTECT_PERIOD_MIN, false) }, "{s:?}");
        }
    }

    #[test]
    fn an_unchanged_set_is_protected_exactly_when_the_period_runs_out() {
        for s in all_states(2 * REPROTECT_PERIOD_MAX) {
            let seen = ResetSeen { tracked: true, restored: true, changed: false };
            let (kept, decision) = s.next(seen);
            let period = if s.probing { (s.period * 2).min(REPROTECT_PERIOD_MAX) } else { s.period };
            assert_eq!(kept, state(s.resets_since_protection + 1, period, false), "{s:?}");
            let due = s.resets_since_protection + 1 >= period;
            let expected = if due { Decision::Protect { then: state(0, period, true) } } else { Decision::Leave };
            assert_eq!(decision, expected, "{s:?}");
        }
    }

    /// Every state reachable from a fresh space, with protections that
    /// succeed: the period is one of the four powers of two, a probe
    /// starts a fresh count, and the count stays below the period (a
    /// counted reset that reaches it protects).
    #[test]
    fn reachable_states_stay_within_bounds() {
        let mut seen_states = HashSet::from([Reprotect::default()]);
        let mut queue = VecDeque::from([Reprotect::default()]);
        while let Some(s) = queue.pop_front() {
            assert!(PERIODS.contains(&s.period), "{s:?}");
            assert!(s.resets_since_protection < s.period, "{s:?}");
            assert!(!s.probing || s.resets_since_protection == 0, "{s:?}");
            let fresh = s.resets_since_protection == 0 && !s.probing;
            assert!(!fresh || s.period == REPROTECT_PERIOD_MIN, "only a change restarts the count unprobed: {s:?}");
            for seen in all_seen() {
                let (next, _) = step(s, seen, true);
                if seen_states.insert(next) {
                    queue.push_back(next);
                }
            }
        }
        // The fresh state (after a change), counts 1..period of each period,
        // and one probe per period: nothing else is reachable.
        let expected = 1 + PERIODS.iter().map(|&p| p as usize - 1).sum::<usize>() + PERIODS.len();
        assert_eq!(seen_states.len(), expected);
    }

    /// Resets (counted from 1) at which a set written at every reset is
    /// protected, the first reset seeing it as new.
    fn hot_schedule(resets: u32) -> Vec<u32> {
        let mut s = Reprotect::default();
        let mut at = Vec::new();
        for reset in 1..=resets {
            let seen = ResetSeen { tracked: true, restored: true, changed: reset == 1 };
            let protected;
            (s, protected) = step(s, seen, true);
            if protected {
                at.push(reset);
            }
        }
        at
    }

    #[test]
    fn a_hot_set_is_protected_ever_more_rarely_up_to_the_longest_period() {
        assert_eq!(hot_schedule(2000), [1, 65, 193, 449, 961, 1473, 1985]);
    }

    #[test]
    fn a_set_that_goes_cold_keeps_its_state_until_written_again() {
        // Protected periodically (a probe), then nothing dirty: no reset
        // restores anything, so the probe is still pending when a set is
        // found again; the same set doubles the period, a new one resets it.
        let probe = state(0, 128, true);
        let idle = ResetSeen { tracked: true, restored: false, changed: true };
        assert_eq!(probe.next(idle), (probe, Decision::Leave));
        let same = ResetSeen { tracked: true, restored: true, changed: false };
        assert_eq!(probe.next(same), (state(1, 256, false), Decision::Leave));
        let new = ResetSeen { tracked: true, restored: true, changed: true };
        assert_eq!(probe.next(new).1, Decision::Protect { then: state(0, 64, false) });
    }

    #[test]
    fn a_failed_protection_is_retried_at_the_next_counted_reset() {
        let due = state(63, 64, false);
        let same = ResetSeen { tracked: true, restored: true, changed: false };
        let (after_failure, protected) = step(due, same, false);
        assert!(!protected);
        assert_eq!(after_failure, state(64, 64, false), "the reset counted, nothing was protected");
        assert_eq!(after_failure.next(same).1, Decision::Protect { then: state(0, 64, true) });
        // A failed protection of a changed set still restarts the period.
        let changed = ResetSeen { tracked: true, restored: true, changed: true };
        assert_eq!(step(state(10, 512, true), changed, false), (state(11, 64, false), false));
    }
}
