//! Finding the pages written since they were last write-protected: which
//! stretches of a range to scan (`PAGEMAP_SCAN`), and with which query.
//!
//! [`Query::Dirty`] tests each present page for being an unmodified file
//! page, which reads the page's `struct page`: a cache miss per resident
//! page, the bulk of a scan's time over a memory with many resident pages.
//! `Zero` frames (and `Unmapped` ones) are anonymous memory (the space's
//! invariant 3), whose pages are never file pages, so stretches of them are
//! scanned with [`Query::DirtyAnonymous`], which skips that test; `Image`
//! and `Shared` stretches keep [`Query::Dirty`].
//!
//! Checkpoints (what snapshots capture) scan this way. Resets do not: their
//! scan is on the recycling hot path, where a memory's zero pages are
//! mostly untouched and a second system call costs more than the test it
//! saves (the built-in workload's instantiate + drop went from 3.48 to
//! 4.24 us with its 8 MiB image and 8 MiB of zero pages scanned apart).
//!
//! Invariant kept here: the stretches of a scan cover the range asked for,
//! in address order, and each stretch's query reports exactly the pages
//! [`Query::Dirty`] reports there (the anonymous query differs from it only
//! on file pages, which anonymous stretches cannot hold), so splitting a
//! scan never hides a written page from a reset or a checkpoint, and never
//! reports one more.

use super::LinearSpace;
use crate::frame::FrameKind;
use crate::page::PageRange;
use crate::sys::pagemap::{self, Query};
use crate::table::FrameTable;
use std::io;

/// Fewest pages an anonymous stretch must have to be scanned on its own
/// (one page table's worth on x86-64): a shorter one joins its neighbours'
/// [`Query::Dirty`] scan, so a fragmented layout does not cost one system
/// call per run.
const MIN_ANONYMOUS_STRETCH: u64 = 512;

/// The stretches of `range` and the query each is scanned with, in address
/// order, covering `range` (see the module docs).
fn plan(table: &FrameTable, range: PageRange) -> Vec<(PageRange, Query)> {
    // Runs grouped by kind of memory first, so runs of one kind that differ
    // only in protection count as one stretch.
    let mut by_kind: Vec<(PageRange, Query)> = Vec::new();
    for (run, frame) in table.runs_in(range) {
        let query = match frame.kind() {
            FrameKind::Zero | FrameKind::Unmapped => Query::DirtyAnonymous,
            FrameKind::Image { .. } | FrameKind::Shared { .. } => Query::Dirty,
        };
        push(&mut by_kind, run, query);
    }
    let mut plan = Vec::with_capacity(by_kind.len());
    for (stretch, query) in by_kind {
        let query = match query {
            Query::DirtyAnonymous if stretch.len() < MIN_ANONYMOUS_STRETCH => Query::Dirty,
            query => query,
        };
        push(&mut plan, stretch, query);
    }
    plan
}

/// Appends `run`, scanned with `query`, to `plan`, extending its last
/// stretch if that one ends where `run` starts and has the same query.
fn push(plan: &mut Vec<(PageRange, Query)>, run: PageRange, query: Query) {
    match plan.last_mut() {
        Some((last, q)) if *q == query && last.end == run.start => last.end = run.end,
        _ => plan.push((run, query)),
    }
}

impl LinearSpace {
    /// Reports the pages of `range` written since they were last
    /// write-protected (in address order, as page ranges, adjacent ones
    /// not necessarily merged); with `protect`, write-protects them in the
    /// same walk. `range` must lie inside the reservation.
    pub(super) fn scan_written(
        &self,
        range: PageRange,
        protect: bool,
        mut visit: impl FnMut(PageRange),
    ) -> io::Result<()> {
        let shift = self.page.trailing_zeros();
        let base = self.base().as_ptr() as usize;
        let mut to_pages =
            |s: usize, e: usize| visit(PageRange::new(((s - base) as u64) >> shift, ((e - base) as u64) >> shift));
        for (stretch, query) in plan(&self.table, range) {
            let (start, end) = (self.addr_of(stretch.start) as usize, self.addr_of(stretch.end) as usize);
            match protect {
                true => pagemap::scan_and_protect(start, end, query, &mut to_pages)?,
                false => pagemap::scan(start, end, query, &mut to_pages)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Protection;
    use crate::{Image, SpaceConfig};

    fn space(pages: u64) -> LinearSpace {
        let p = crate::host_page_size() as u64;
        LinearSpace::new(SpaceConfig { capacity: pages * p, guard: 0, initial_len: pages * p }).unwrap()
    }

    #[test]
    fn long_zero_stretches_get_the_anonymous_query_and_short_ones_join_their_neighbours() {
        let p = crate::host_page_size() as u64;
        let image = Image::from_bytes(&vec![3u8; 4 * p as usize]).unwrap();
        let mut m = space(2048);
        m.map_image(0, &image, 0, 4 * p, Protection::ReadWrite).unwrap();
        // Zero runs that differ only in protection count as one stretch.
        m.protect(1000 * p, 8 * p, Protection::Read).unwrap();
        m.map_image(1600 * p, &image, 0, 4 * p, Protection::Read).unwrap();
        let plan = plan(&m.table, m.accessible_pages());
        assert_eq!(
            plan,
            vec![
                (PageRange::new(0, 4), Query::Dirty),
                (PageRange::new(4, 1600), Query::DirtyAnonymous),
                // 444 zero pages after the image: too short alone.
                (PageRange::new(1600, 2048), Query::Dirty),
            ]
        );
        let small = space(16);
        assert_eq!(plan_of(&small), vec![(PageRange::new(0, 16), Query::Dirty)]);
    }

    fn plan_of(m: &LinearSpace) -> Vec<(PageRange, Query)> {
        plan(&m.table, m.accessible_pages())
    }

    /// Split or not, a scan reports the same pages: written image pages
    /// and written zero pages, never pages only read.
    #[test]
    fn a_split_scan_reports_what_one_full_scan_does() {
        if !crate::testing::feature_present(
            crate::sys::pagemap::scan_supported(),
            "PAGEMAP_SCAN",
            "FRAMEMAP_REQUIRE_PAGEMAP_SCAN",
        ) {
            return;
        }
        let p = crate::host_page_size() as u64;
        let image = Image::from_bytes(&vec![3u8; 64 * p as usize]).unwrap();
        let mut m = space(4096);
        m.map_image(0, &image, 0, 64 * p, Protection::ReadWrite).unwrap();
        m.map_image(3000 * p, &image, 0, 64 * p, Protection::ReadWrite).unwrap();
        let mut buf = [0u8; 1];
        for page in [0, 5, 63, 64, 700, 2999, 3000, 3063, 3064, 4095] {
            m.write(page * p, &[9]).unwrap();
        }
        for page in [1, 6, 65, 900, 3001, 3065, 4000] {
            m.read(page * p, &mut buf).unwrap();
        }
        assert!(plan_of(&m).iter().any(|&(_, q)| q == Query::DirtyAnonymous));
        let mut split = Vec::new();
        m.scan_written(m.accessible_pages(), false, |r| split.extend(r.start..r.end)).unwrap();
        let mut whole = Vec::new();
        let (start, end) = (m.base().as_ptr() as usize, m.addr_of(4096) as usize);
        pagemap::scan(start, end, Query::Dirty, |s, e| {
            whole.extend(((s - start) as u64 / p)..((e - start) as u64 / p))
        })
        .unwrap();
        assert_eq!(split, whole);
        assert_eq!(split, vec![0, 5, 63, 64, 700, 2999, 3000, 3063, 3064, 4095]);
    }
}
