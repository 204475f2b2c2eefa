//! Building a memory's run list: cutting a run of the frame table by a set
//! of pages, merging neighbouring pieces, and appending run records merged
//! where one continues the last (the manifest's runs stay as few as the
//! sources allow).

use super::format::{PageSource, RunRecord};
use crate::frame::Protection;
use crate::page::PageRange;

/// `run` cut into pieces, each with whether it lies in `set` (sorted,
/// disjoint ranges), in order.
pub(crate) fn split(run: PageRange, set: &[PageRange]) -> Vec<(PageRange, bool)> {
    let mut out = Vec::new();
    let mut at = run.start;
    let first = set.partition_point(|r| r.end <= run.start);
    for r in set[first..].iter().take_while(|r| r.start < run.end) {
        let inside = r.intersect(run);
        if inside.start > at {
            out.push((PageRange::new(at, inside.start), false));
        }
        if !inside.is_empty() {
            out.push((inside, true));
            at = inside.end;
        }
    }
    if at < run.end {
        out.push((PageRange::new(at, run.end), false));
    }
    out
}

/// `pieces` (each a run, several possibly continuing one another) sorted
/// into page order and merged where one continues the other.
pub(crate) fn in_page_order(mut pieces: Vec<RunRecord>) -> Vec<RunRecord> {
    pieces.sort_by_key(|r| r.pages.start);
    let mut runs = Vec::with_capacity(pieces.len());
    for piece in pieces {
        push_run(&mut runs, piece.pages, piece.prot, piece.source);
    }
    runs
}

/// Merges neighbouring pieces of the same kind (stored or not).
pub(super) fn merge_stored(pieces: Vec<(PageRange, bool)>) -> Vec<(PageRange, bool)> {
    let mut out: Vec<(PageRange, bool)> = Vec::with_capacity(pieces.len());
    for (piece, stored) in pieces {
        match out.last_mut() {
            Some((last, s)) if *s == stored && last.end == piece.start => last.end = piece.end,
            _ => out.push((piece, stored)),
        }
    }
    out
}

/// Appends a run, merged into the last one where it continues it.
pub(super) fn push_run(runs: &mut Vec<RunRecord>, pages: PageRange, prot: Protection, source: PageSource) {
    if pages.is_empty() {
        return;
    }
    if let Some(last) = runs.last_mut()
        && last.pages.end == pages.start
        && last.prot == prot
        && last.source.advanced(last.pages.len()) == source
    {
        last.pages.end = pages.end;
        return;
    }
    runs.push(RunRecord { pages, prot, source });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cuts_a_run_by_a_set() {
        let r = PageRange::new;
        assert_eq!(
            split(r(0, 10), &[r(2, 4), r(8, 12)]),
            vec![(r(0, 2), false), (r(2, 4), true), (r(4, 8), false), (r(8, 10), true)]
        );
        assert_eq!(split(r(5, 6), &[]), vec![(r(5, 6), false)]);
        assert_eq!(split(r(5, 6), &[r(0, 100)]), vec![(r(5, 6), true)]);
    }

    #[test]
    fn runs_merge_only_where_the_source_continues() {
        let r = PageRange::new;
        let mut runs = Vec::new();
        push_run(&mut runs, r(0, 1), Protection::ReadWrite, PageSource::Data { page: 0 });
        push_run(&mut runs, r(1, 2), Protection::ReadWrite, PageSource::Data { page: 1 });
        push_run(&mut runs, r(2, 3), Protection::ReadWrite, PageSource::Data { page: 5 });
        push_run(&mut runs, r(3, 4), Protection::Read, PageSource::Data { page: 6 });
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].pages, r(0, 2));
    }
}
