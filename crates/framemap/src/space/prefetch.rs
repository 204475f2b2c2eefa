//! The working set: which pages a memory used since it was laid out, and
//! bringing a recorded set in ahead of its first use.
//!
//! [`LinearSpace::touched_pages`] asks the kernel which pages of the
//! readable `Zero` and `Image` frames have a page-table entry
//! (`sys::pagemap`'s `Query::Populated`); [`LinearSpace::prefetch`] makes
//! those entries in one `madvise` per stretch, so a guest's first touch of
//! each page takes no fault. Neither changes a mapping, a protection or a
//! byte (invariant 1: only contents and page-table entries, like resets);
//! [`Prefetch::Write`] copies private pages, with the same bytes.

use super::LinearSpace;
use crate::error::{Error, Result};
use crate::frame::FrameKind;
use crate::page::{PageRange, insert_range};
use crate::sys::{mman, pagemap};

/// How [`LinearSpace::prefetch`] (and a snapshot restore, through
/// [`RestoreOptions`](crate::snapshot::RestoreOptions)) brings a working
/// set in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prefetch {
    /// Not at all: every page costs a fault on first use.
    Off,
    /// `MADV_POPULATE_READ` per stretch: each page is mapped as a read
    /// would map it (a snapshot's or an image's page from the file, with no
    /// copy; a `Zero` page as the shared zero page), so reading it costs no
    /// fault and nothing is copied; a first write still costs one (the
    /// copy-on-write). Pages stay clean: resets and checkpoints see no
    /// change. Where the kernel lacks it (before Linux 5.14, detected at
    /// run time on the first `EINVAL`), `MADV_WILLNEED` instead: the file's
    /// pages are read ahead into the page cache, but each still costs a
    /// fault ([`PrefetchReport::advised`]).
    #[default]
    Read,
    /// As `Read` for read-only pages, and `MADV_POPULATE_WRITE` for
    /// writable ones: each gets its private copy up front, so neither a
    /// read nor a write of it faults. The price: every page is copied (and
    /// allocated) at once whether or not it is then written, and counts as
    /// written, so the next reset restores it and a checkpoint reports it.
    /// For working sets the first calls mostly write.
    Write,
}

/// What a prefetch did. Prefetching is advice: a failure only costs page
/// faults later, so it is reported here, not as an error of the operation
/// that prefetched.
#[derive(Debug, Default)]
pub struct PrefetchReport {
    /// Pages asked for: the readable `Zero` and `Image` pages of the ranges
    /// (other frames are never prefetched).
    pub pages: u64,
    /// Pages now mapped (`MADV_POPULATE_READ` or `MADV_POPULATE_WRITE`):
    /// their first touch takes no fault (but a read-populated page's first
    /// write does).
    pub populated: u64,
    /// Pages only advised (`MADV_WILLNEED`, on kernels without
    /// `MADV_POPULATE_READ`): read ahead, not mapped.
    pub advised: u64,
    /// The failure that stopped the prefetch, if one did: the stretch it
    /// failed on and every later one were left as they were (neither
    /// `populated` nor `advised`), and may be partly populated.
    pub error: Option<Error>,
}

impl PrefetchReport {
    /// Whether every page asked for is now mapped.
    pub fn complete(&self) -> bool {
        self.populated == self.pages
    }
}

impl LinearSpace {
    /// The readable `Zero` and `Image` pages that have a page-table entry
    /// (present, including the shared zero page a read of an untouched
    /// `Zero` page maps, or swapped out), as sorted, merged runs. Right after
    /// a new layout (a snapshot restore, [`LinearSpace::restore_layout`] of
    /// fresh frames) no page has one, so this is the set of pages used
    /// since, read or written: the working set to record with
    /// [`SnapshotWriter::capture_with_working_set`](crate::snapshot::SnapshotWriter::capture_with_working_set).
    ///
    /// It can be larger than what was touched, never smaller, except for
    /// pages the kernel reclaimed since (a clean file page dropped under
    /// memory pressure reads as untouched):
    /// - a read fault on a file page (a snapshot's data page, an image page)
    ///   also maps the neighbours already in the page cache, inside the same
    ///   mapping ("fault-around", 64 KiB by default);
    /// - pages a prefetch populated count ([`LinearSpace::prefetch`], the
    ///   default of a restore): record after a restore with
    ///   [`Prefetch::Off`] to learn the set afresh;
    /// - pages resets kept resident, or `populate`d, count.
    ///
    /// Uses `PAGEMAP_SCAN` (time proportional to the page tables that
    /// exist); on kernels without it, one pagemap entry per page of the
    /// readable runs (time proportional to their size; the same answer).
    pub fn touched_pages(&self) -> Result<Vec<PageRange>> {
        let eligible = self.prefetchable(&[self.accessible_pages()], false);
        let (Some(first), Some(last)) = (eligible.first(), eligible.last()) else {
            return Ok(Vec::new());
        };
        let mut found: Vec<PageRange> = Vec::new();
        let mut visit = |s: usize, e: usize| found.push(PageRange::new(self.page_of(s), self.page_of(e)));
        let result = if pagemap::scan_supported() {
            let (start, end) = (self.addr_of(first.start) as usize, self.addr_of(last.end) as usize);
            pagemap::scan(start, end, pagemap::Query::Populated, &mut visit)
        } else {
            eligible.iter().try_for_each(|run| {
                let (start, end) = (self.addr_of(run.start) as usize, self.addr_of(run.end) as usize);
                pagemap::populated_by_entries(start, end, &mut visit)
            })
        };
        result.map_err(|source| Error::Kernel {
            syscall: "read /proc/self/pagemap",
            start: first.start * self.page,
            end: last.end * self.page,
            source,
        })?;
        // Keep the pages of eligible runs only (one walk over both sorted lists).
        let mut touched: Vec<PageRange> = Vec::new();
        let mut i = 0;
        for range in found {
            while i < eligible.len() && eligible[i].end <= range.start {
                i += 1;
            }
            for run in eligible[i..].iter().take_while(|r| r.start < range.end) {
                insert_range(&mut touched, run.intersect(range));
            }
        }
        Ok(touched)
    }

    /// Brings the pages of `ranges` (any order; clipped to the accessible
    /// pages) in ahead of their first use, as `how` says: the readable
    /// `Zero` and `Image` pages only (windows are the host's, holes trap),
    /// with one `madvise` per contiguous stretch. Changes no byte and no
    /// mapping. Never fails: it is advice, and what it could not do is in
    /// the report (a failure stops it; see [`PrefetchReport::error`]).
    pub fn prefetch(&mut self, ranges: &[PageRange], how: Prefetch) -> PrefetchReport {
        let mut report = PrefetchReport::default();
        if how == Prefetch::Off {
            return report;
        }
        let mut normalized: Vec<PageRange> = Vec::new();
        for &range in ranges {
            insert_range(&mut normalized, range.intersect(self.accessible_pages()));
        }
        // Writable and read-only stretches apart when they differ in advice.
        let split_writable = how == Prefetch::Write;
        let stretches = self.prefetchable(&normalized, split_writable);
        report.pages = stretches.iter().map(|r| r.len()).sum();
        for stretch in stretches {
            let (addr, len) = (self.addr_of(stretch.start), (stretch.len() * self.page) as usize);
            let writable = split_writable && self.table.get(stretch.start).is_some_and(|(_, f)| f.prot().writable());
            let done = if writable {
                // `stretch` is a run of writable Zero or Image frames of this
                // reservation (invariant 1: the kernel agrees), and `&mut
                // self` excludes other host access.
                // SAFETY: populating for writing copies private pages with their bytes unchanged.
                unsafe { mman::populate_write(addr, len) }.map(|()| mman::Prefetched::Populated)
            } else {
                // `stretch` is a run of readable Zero or Image frames of this
                // reservation (invariant 1).
                // SAFETY: prefetching for reading changes no byte and no mapping.
                unsafe { mman::prefetch_read(addr, len) }
            };
            match done {
                Ok(mman::Prefetched::Populated) => report.populated += stretch.len(),
                Ok(mman::Prefetched::Advised) => report.advised += stretch.len(),
                Err(source) => {
                    report.error = Some(Error::Kernel {
                        syscall: "madvise",
                        start: stretch.start * self.page,
                        end: stretch.end * self.page,
                        source,
                    });
                    break;
                }
            }
        }
        report
    }

    /// The pages of `ranges` (sorted, disjoint) on readable `Zero` and
    /// `Image` frames, as sorted stretches merged across runs (split where
    /// writability changes, if `split_writable`).
    fn prefetchable(&self, ranges: &[PageRange], split_writable: bool) -> Vec<PageRange> {
        let mut out: Vec<PageRange> = Vec::new();
        let mut last_writable = false;
        for &range in ranges {
            for (run, frame) in self.table.runs_in(range) {
                let eligible = matches!(frame.kind(), FrameKind::Zero | FrameKind::Image { .. });
                if !eligible || !frame.prot().readable() {
                    continue;
                }
                let writable = frame.prot().writable();
                match out.last_mut() {
                    Some(last) if last.end == run.start && (!split_writable || writable == last_writable) => {
                        last.end = run.end;
                    }
                    _ => out.push(run),
                }
                last_writable = writable;
            }
        }
        out
    }
}
