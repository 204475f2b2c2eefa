//! The frame table: an extent map from host pages to [`Frame`]s.
//!
//! Invariants (checked by [`FrameTable::check`], kept by every operation):
//! - the runs cover `[0, pages)` exactly, in order, with no gap and no overlap;
//! - no run is empty;
//! - no two neighbouring runs could be one run (they are coalesced): a run is
//!   followed by a run whose frame differs from the first frame advanced by the
//!   first run's length.
//!
//! Every operation costs O(log n) in the number of runs, plus the number of
//! runs it replaces; nothing is ever proportional to the number of pages.

use crate::frame::Frame;
use crate::page::PageRange;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    len: u64,
    frame: Frame,
}

/// A coalesced, gap-free map from every host page of a reservation to its frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameTable {
    pages: u64,
    /// Runs keyed by their first page.
    runs: BTreeMap<u64, Run>,
}

impl FrameTable {
    /// A table of `pages` pages, all `frame`.
    pub fn new(pages: u64, frame: Frame) -> FrameTable {
        let mut runs = BTreeMap::new();
        if pages > 0 {
            runs.insert(0, Run { len: pages, frame });
        }
        FrameTable { pages, runs }
    }

    /// Number of pages the table covers.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Number of runs.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The run containing `page` and the frame of `page` itself, or `None`
    /// past the end.
    pub fn get(&self, page: u64) -> Option<(PageRange, Frame)> {
        let (&start, run) = self.runs.range(..=page).next_back()?;
        let range = PageRange::new(start, start + run.len);
        range.contains(page).then(|| (range, run.frame.advanced(page - start)))
    }

    /// Every run, in page order.
    pub fn runs(&self) -> impl Iterator<Item = (PageRange, Frame)> + '_ {
        self.runs.iter().map(|(&start, run)| (PageRange::new(start, start + run.len), run.frame))
    }

    /// The runs intersecting `range`, clipped to it (frames advanced to the
    /// clipped start), in page order.
    pub fn runs_in(&self, range: PageRange) -> impl Iterator<Item = (PageRange, Frame)> + '_ {
        let range = range.intersect(PageRange::new(0, self.pages));
        let first =
            if range.is_empty() { None } else { self.runs.range(..=range.start).next_back().map(|(&s, r)| (s, *r)) };
        let rest = self
            .runs
            .range(range.start.saturating_add(1)..range.end.max(range.start.saturating_add(1)))
            .map(|(&s, r)| (s, *r));
        first.into_iter().chain(rest).filter_map(move |(start, run)| {
            let clipped = PageRange::new(start, start + run.len).intersect(range);
            (!clipped.is_empty()).then(|| (clipped, run.frame.advanced(clipped.start - start)))
        })
    }

    /// The whole run holding `page`, with its first page's frame.
    pub fn run_containing(&self, page: u64) -> Option<(PageRange, Frame)> {
        let (&start, run) = self.runs.range(..=page).next_back()?;
        let range = PageRange::new(start, start + run.len);
        (page < range.end).then_some((range, run.frame))
    }

    /// Sets every page of `range` to `frame` (advanced page by page), splitting
    /// and coalescing runs as needed. `range` is clipped to the table.
    pub fn set(&mut self, range: PageRange, frame: Frame) {
        let range = range.intersect(PageRange::new(0, self.pages));
        if range.is_empty() {
            return;
        }
        if self.set_within_one_run(range, frame) {
            return;
        }
        self.split_at(range.start);
        self.split_at(range.end);
        while let Some(start) = self.runs.range(range.start..range.end).next().map(|(&s, _)| s) {
            self.runs.remove(&start);
        }
        self.runs.insert(range.start, Run { len: range.len(), frame });
        if let Some(next) = self.runs.range(range.end..).next().map(|(&s, _)| s) {
            self.merge_with_next(range.start, next);
        }
        if let Some(prev) = self.runs.range(..range.start).next_back().map(|(&s, _)| s) {
            self.merge_with_next(prev, range.start);
        }
    }

    /// How many runs the table would have after [`FrameTable::set`]`(range,
    /// frame)`, computed without changing it: O(log n + runs in `range`).
    pub fn run_count_after_set(&self, range: PageRange, frame: Frame) -> usize {
        let range = range.intersect(PageRange::new(0, self.pages));
        let count = self.run_count();
        if range.is_empty() {
            return count;
        }
        let replaced = self.runs_in(range).count();
        let head = self.run_containing(range.start).is_some_and(|(run, _)| run.start < range.start);
        let tail = self.run_containing(range.end - 1).is_some_and(|(run, _)| run.end > range.end);
        let merges_left = range.start > 0
            && self
                .run_containing(range.start - 1)
                .is_some_and(|(run, f)| f.advanced(range.start - run.start) == frame);
        let merges_right = self
            .run_containing(range.end)
            .is_some_and(|(run, f)| f.advanced(range.end - run.start) == frame.advanced(range.len()));
        count - replaced + 1 + usize::from(head) + usize::from(tail)
            - usize::from(merges_left)
            - usize::from(merges_right)
    }

    /// [`FrameTable::set`] for the common case of a (non-empty, clipped)
    /// range inside one run, in a few map operations instead of a general
    /// split, clear and merge; false (nothing done) for any other range.
    fn set_within_one_run(&mut self, range: PageRange, frame: Frame) -> bool {
        let Some((run, old)) = self.run_containing(range.start) else { return false };
        if range.end > run.end {
            return false;
        }
        if old.advanced(range.start - run.start) == frame {
            return true;
        }
        if range.start > run.start
            && let Some(head) = self.runs.get_mut(&run.start)
        {
            head.len = range.start - run.start;
        }
        // Replaces the run at `range.start` (the old one, if it began there).
        self.runs.insert(range.start, Run { len: range.len(), frame });
        if range.end < run.end {
            let tail = Run { len: run.end - range.end, frame: old.advanced(range.end - run.start) };
            self.runs.insert(range.end, tail);
        } else if let Some(next) = self.runs.range(range.end..).next().map(|(&s, _)| s) {
            self.merge_with_next(range.start, next);
        }
        if range.start == run.start
            && let Some(prev) = self.runs.range(..range.start).next_back().map(|(&s, _)| s)
        {
            self.merge_with_next(prev, range.start);
        }
        true
    }

    /// Makes `page` the first page of a run (no-op at a run boundary).
    fn split_at(&mut self, page: u64) {
        let Some((&start, run)) = self.runs.range_mut(..page).next_back() else { return };
        if start + run.len <= page {
            return;
        }
        let head = page - start;
        let tail = Run { len: run.len - head, frame: run.frame.advanced(head) };
        run.len = head;
        self.runs.insert(page, tail);
    }

    /// Merges the run at `next` into the run at `start` if they are contiguous
    /// continuations of each other.
    fn merge_with_next(&mut self, start: u64, next: u64) {
        let (Some(&first), Some(&second)) = (self.runs.get(&start), self.runs.get(&next)) else { return };
        if start + first.len == next && first.frame.advanced(first.len) == second.frame {
            self.runs.remove(&next);
            if let Some(run) = self.runs.get_mut(&start) {
                run.len += second.len;
            }
        }
    }

    /// Checks the module invariants, describing the first violation.
    pub fn check(&self) -> Result<(), String> {
        let mut expected_start = 0;
        let mut previous: Option<Run> = None;
        for (&start, run) in &self.runs {
            if start != expected_start {
                return Err(format!("run at page {start} does not start where the previous ended ({expected_start})"));
            }
            if run.len == 0 {
                return Err(format!("empty run at page {start}"));
            }
            if let Some(prev) = previous
                && prev.frame.advanced(prev.len) == run.frame
            {
                return Err(format!("run at page {start} should have been merged into its predecessor"));
            }
            expected_start = start + run.len;
            previous = Some(*run);
        }
        if expected_start != self.pages {
            return Err(format!("runs end at page {expected_start}, table has {} pages", self.pages));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{BackingId, Protection};

    const RW: Frame = Frame::zero(Protection::ReadWrite);
    const RO: Frame = Frame::zero(Protection::Read);

    /// A naive per-page model to compare the table against.
    fn expand(table: &FrameTable) -> Vec<Frame> {
        let mut pages = Vec::new();
        for (range, frame) in table.runs() {
            for i in 0..range.len() {
                pages.push(frame.advanced(i));
            }
        }
        pages
    }

    #[test]
    fn run_count_after_set_predicts_set() {
        let mut t = FrameTable::new(64, Frame::UNMAPPED);
        let frames = [RW, RO, Frame::UNMAPPED, Frame::image(BackingId(7), 0, Protection::Read)];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let start = x % 64;
            let len = (x >> 8) % 9;
            let frame = frames[((x >> 16) % 4) as usize].advanced((x >> 20) % 3);
            let range = PageRange::new(start, start + len);
            let predicted = t.run_count_after_set(range, frame);
            t.set(range, frame);
            assert_eq!(t.run_count(), predicted, "step {step}: set({range:?}, {frame:?})");
        }
    }

    #[test]
    fn set_splits_and_coalesces() {
        let mut t = FrameTable::new(100, Frame::UNMAPPED);
        t.set(PageRange::new(10, 20), RW);
        assert_eq!(t.run_count(), 3);
        t.set(PageRange::new(20, 30), RW);
        assert_eq!(t.run_count(), 3, "adjacent equal runs coalesce");
        t.set(PageRange::new(15, 16), RO);
        assert_eq!(t.run_count(), 5);
        t.set(PageRange::new(15, 16), RW);
        assert_eq!(t.run_count(), 3, "restoring the frame re-coalesces both sides");
        t.set(PageRange::new(0, 100), Frame::UNMAPPED);
        assert_eq!(t.run_count(), 1);
        t.check().unwrap();
    }

    #[test]
    fn backing_runs_coalesce_only_when_contiguous_in_the_backing() {
        let mut t = FrameTable::new(10, Frame::UNMAPPED);
        let img = BackingId(7);
        t.set(PageRange::new(0, 4), Frame::image(img, 0, Protection::Read));
        t.set(PageRange::new(4, 8), Frame::image(img, 4, Protection::Read));
        assert_eq!(t.run_count(), 2);
        t.set(PageRange::new(8, 10), Frame::image(img, 0, Protection::Read));
        assert_eq!(t.run_count(), 2, "a non-contiguous backing offset starts a new run");
        assert_eq!(t.get(6), Some((PageRange::new(0, 8), Frame::image(img, 6, Protection::Read))));
        t.check().unwrap();
    }

    #[test]
    fn runs_in_clips_and_advances() {
        let mut t = FrameTable::new(10, Frame::UNMAPPED);
        t.set(PageRange::new(2, 8), Frame::shared(BackingId(1), 100, Protection::ReadWrite));
        let got: Vec<_> = t.runs_in(PageRange::new(4, 9)).collect();
        assert_eq!(
            got,
            vec![
                (PageRange::new(4, 8), Frame::shared(BackingId(1), 102, Protection::ReadWrite)),
                (PageRange::new(8, 9), Frame::UNMAPPED),
            ]
        );
        assert_eq!(t.runs_in(PageRange::new(9, 20)).count(), 1);
        assert_eq!(t.runs_in(PageRange::new(10, 20)).count(), 0);
        assert_eq!(t.runs_in(PageRange::new(3, 3)).count(), 0);
    }

    #[test]
    fn matches_a_per_page_model_on_a_pseudo_random_sequence() {
        let frames = [
            Frame::UNMAPPED,
            RW,
            RO,
            Frame::image(BackingId(1), 0, Protection::Read),
            Frame::shared(BackingId(2), 3, Protection::ReadWrite),
        ];
        let mut t = FrameTable::new(64, Frame::UNMAPPED);
        let mut model = vec![Frame::UNMAPPED; 64];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let a = seed % 70;
            let b = (seed >> 16) % 70;
            let frame = frames[((seed >> 32) % frames.len() as u64) as usize];
            let range = PageRange::new(a.min(b), a.max(b));
            t.set(range, frame);
            for p in range.intersect(PageRange::new(0, 64)).start..range.intersect(PageRange::new(0, 64)).end {
                model[p as usize] = frame.advanced(p - range.start);
            }
            t.check().unwrap();
            assert_eq!(expand(&t), model);
        }
    }

    #[test]
    fn check_reports_broken_tables() {
        let mut t = FrameTable::new(10, RW);
        t.runs.insert(5, Run { len: 5, frame: RW });
        assert!(t.check().is_err());
        let empty = FrameTable::new(0, RW);
        assert_eq!(empty.run_count(), 0);
        empty.check().unwrap();
    }
}
