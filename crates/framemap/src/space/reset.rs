//! Resets: bringing a memory's contents and layout back to a fresh one's.
//!
//! [`LinearSpace::restore_dirty`] brings every `Zero` and `Image` page back
//! to its frame's initial contents, in place (up to a budget) or by dropping
//! the page; it changes contents only, never a mapping, so the table stays
//! equal to the kernel (invariant 1) without going through `commit`.
//! `Shared` frames (the host's) and `Unmapped` ones are never touched.
//! Write tracking (`tracking.rs`) decides after each restore whether the
//! pages restored in place are write-protected again. Only a page found
//! dirty, or every page where no scan is possible, is restored: losing
//! track costs work, never a missed page.
//!
//! [`LinearSpace::restore_layout`] sets the frames of a fresh memory through
//! `commit`, keeping frames that already have their target backing, and
//! moves the hole guard's end with the size (invariants 4 and 7).

use super::LinearSpace;
use super::commit::Change;
use crate::error::{Error, Result};
use crate::frame::{BackingId, Frame, FrameKind, Protection};
use crate::image::Image;
use crate::page::PageRange;
use crate::sys::{mman, pagemap};

/// How a reset zeroes what the guest dirtied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetPolicy {
    /// Up to this many dirty bytes are zeroed in place with `memset` (they stay
    /// resident, so the next user takes no page fault on them); dirty pages past
    /// this budget are dropped with `madvise(MADV_DONTNEED)`.
    pub keep_resident: u64,
    /// Find dirty pages with `PAGEMAP_SCAN` where the kernel has it (the
    /// default). When false, or on kernels without it, a reset drops every
    /// mapped page with one `madvise` per run instead.
    pub scan_dirty: bool,
}

impl Default for ResetPolicy {
    fn default() -> Self {
        ResetPolicy { keep_resident: 1 << 20, scan_dirty: true }
    }
}

/// What a reset did, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResetReport {
    /// Dirty bytes found (zeroed or dropped).
    pub dirty: u64,
    /// Bytes zeroed in place.
    pub zeroed_in_place: u64,
    /// Bytes dropped with `madvise`.
    pub dropped: u64,
    /// Whether dirty pages were found with `PAGEMAP_SCAN`; without it the whole
    /// mapped range is dropped (the kernel's cost is then proportional to the
    /// page tables that exist).
    pub scanned: bool,
    /// Whether the pages restored in place were write-protected again for
    /// write tracking (see [`LinearSpace::restore_dirty`]): their next writes
    /// each take one minor fault.
    pub protected: bool,
}

/// Pages [`LinearSpace::restore_in_one_run`] restored in place.
#[derive(Clone, Copy, Debug)]
struct Restored {
    /// The smallest range holding every page restored (what write tracking
    /// protects again).
    hull: PageRange,
    /// How many pages were restored.
    pages: u64,
}

/// Where the initial contents of pages of an `Image` frame come from.
#[derive(Clone, Copy, Debug)]
struct ImageSource<'a> {
    /// The image.
    image: &'a Image,
    /// The image's page that the first restored page shows.
    page: u64,
}

impl LinearSpace {
    /// Brings back what the guest dirtied and restores the initial layout of a
    /// memory of `len` bytes starting with `image` (see
    /// [`LinearSpace::restore_layout`]). Costs time proportional to the dirty
    /// pages (see [`ResetReport`]).
    pub fn reset(&mut self, len: u64, image: Option<&Image>, policy: ResetPolicy) -> Result<ResetReport> {
        self.check_layout(len, image)?;
        let report = self.restore_dirty(policy)?;
        self.restore_layout(len, image)?;
        Ok(report)
    }

    /// Brings every page's contents back to its frame's initial contents
    /// (zero for `Zero` frames, the image's bytes for `Image` frames), leaving
    /// the layout and `Shared` frames as they are.
    ///
    /// Dirty pages are found with `PAGEMAP_SCAN`. Where the kernel offers
    /// asynchronous userfaultfd write-protection (Linux 6.7+), pages restored
    /// in place are write-protected after a burst of writes, so a later reset
    /// finds only the pages written since, not every page kept resident:
    /// after one user dirtied 256 pages and the next none, the next reset
    /// copies nothing. A set of pages dirty at two resets in a row is left
    /// unprotected (it is copied each time, with no fault), and is protected
    /// again periodically so pages that went cold stop being copied: every 64
    /// resets after a change of the dirty set, the period doubling up to 512
    /// while the same set keeps being written ([`ResetReport::protected`]
    /// says when a reset protected). See [`crate::sys`]'s `uffd` module.
    pub fn restore_dirty(&mut self, policy: ResetPolicy) -> Result<ResetReport> {
        // Host pages are a power of two: shift instead of dividing.
        let shift = self.page.trailing_zeros();
        let accessible = self.accessible_pages();
        let mut report = ResetReport::default();
        let (start, end) = (self.addr_of(accessible.start) as usize, self.addr_of(accessible.end) as usize);
        // The runs found last time become the tracking's previous ones; this
        // scan refills `last_dirty` (both buffers are reused: no allocation
        // once warm).
        self.tracking.begin_reset(&mut self.last_dirty);
        let scan = policy.scan_dirty && pagemap::scan_supported();
        let tracked = scan && self.register_for_tracking();
        if scan {
            let base = self.base().as_ptr() as usize;
            let dirty = &mut self.last_dirty;
            let scanned = pagemap::scan(start, end, pagemap::Query::Dirty, |s, e| {
                dirty.push(PageRange::new(((s - base) as u64) >> shift, ((e - base) as u64) >> shift));
            });
            report.scanned = scanned.is_ok();
            if !report.scanned {
                self.last_dirty.clear();
            }
        }
        if report.scanned && !self.checkpoints.owed().is_empty() {
            // Pages a checkpoint write-protected read as not written: restore
            // them too (checkpoint invariant 1).
            self.last_dirty = crate::page::union(&self.last_dirty, self.checkpoints.owed());
        }
        let everything = [accessible];
        let regions: &[PageRange] = if report.scanned { &self.last_dirty } else { &everything };
        let mut budget = if report.scanned { policy.keep_resident >> shift } else { 0 };
        // The usual case: every dirty run lies inside one read-write Image or
        // Zero run of the table and fits the budget, so each is restored in
        // place from the same source, back to back, with no bookkeeping
        // between two copies.
        if let Some(kept) = self.restore_in_one_run(regions, budget)? {
            report.dirty = kept.pages << shift;
            report.zeroed_in_place = report.dirty;
            self.protect_after_restore(tracked, kept.hull, &mut report);
            self.checkpoints.new_life();
            return Ok(report);
        }
        let mut to_drop: Vec<PageRange> = Vec::new();
        // The first and last page restored in place (to protect them again).
        let mut kept = PageRange::new(0, 0);
        // Dirty runs mostly fall inside one long run of the table (an image,
        // the zero pages after it): remember the last run looked up, and the
        // last image, instead of searching the table and the images each time.
        let mut cached_run: Option<(PageRange, Frame)> = None;
        let mut cached_image: Option<(BackingId, &Image)> = None;
        let mut restore = |run: PageRange, frame: Frame| -> Result<()> {
            match frame.kind() {
                FrameKind::Unmapped | FrameKind::Shared { .. } => return Ok(()),
                kind @ (FrameKind::Zero | FrameKind::Image { .. }) if frame.prot().writable() && budget > 0 => {
                    let in_place = PageRange::new(run.start, run.start + run.len().min(budget));
                    let source = match kind {
                        FrameKind::Image { image: id, page } => {
                            let image = match cached_image {
                                Some((cached, image)) if cached == id => image,
                                _ => {
                                    let found = self.images.get(&id).ok_or(Error::UnknownBacking { id: id.0 })?;
                                    cached_image = Some((id, found));
                                    found
                                }
                            };
                            Some(ImageSource { image, page })
                        }
                        _ => None,
                    };
                    self.restore_in_place(in_place, source)?;
                    budget -= in_place.len();
                    report.zeroed_in_place += in_place.len() * self.page;
                    kept = hull(kept, in_place);
                    push_coalesced(&mut to_drop, PageRange::new(in_place.end, run.end));
                }
                FrameKind::Zero | FrameKind::Image { .. } => push_coalesced(&mut to_drop, run),
            }
            if report.scanned {
                report.dirty += run.len() * self.page;
            }
            Ok(())
        };
        for &region in regions {
            let contains = |run: &PageRange| run.start <= region.start && region.end <= run.end;
            if !cached_run.is_some_and(|(run, _)| contains(&run)) {
                cached_run = self.table.run_containing(region.start);
            }
            match cached_run {
                Some((run, frame)) if contains(&run) => restore(region, frame.advanced(region.start - run.start))?,
                _ => {
                    for (run, frame) in self.table.runs_in(region) {
                        restore(run, frame)?;
                    }
                }
            }
        }
        // Dropped pages read as the image or zero again, and count as written
        // only once written: dropped before protecting, they need no
        // protection (nor the kernel's markers for it).
        for range in to_drop {
            self.drop_pages(range)?;
            report.dropped += range.len() * self.page;
        }
        self.protect_after_restore(tracked, kept, &mut report);
        self.checkpoints.new_life();
        Ok(report)
    }

    /// Restores every run of `regions` in place if they all lie inside one
    /// read-write Zero or Image run of the table and together fit `budget`
    /// pages, or returns `None` (nothing done) if they do not.
    fn restore_in_one_run(&self, regions: &[PageRange], budget: u64) -> Result<Option<Restored>> {
        let (Some(first), Some(last)) = (regions.first(), regions.last()) else { return Ok(None) };
        let Some((run, frame)) = self.table.run_containing(first.start) else { return Ok(None) };
        let pages: u64 = regions.iter().map(|r| r.len()).sum();
        if last.end > run.end || !frame.prot().writable() || pages > budget {
            return Ok(None);
        }
        let image = match frame.kind() {
            FrameKind::Unmapped | FrameKind::Shared { .. } => return Ok(None),
            FrameKind::Zero => None,
            FrameKind::Image { image, page } => {
                let found = self.images.get(&image).ok_or(Error::UnknownBacking { id: image.0 })?;
                Some(ImageSource { image: found, page })
            }
        };
        for region in regions {
            let source = image.map(|s| ImageSource { image: s.image, page: s.page + region.start - run.start });
            self.restore_in_place(*region, source)?;
        }
        Ok(Some(Restored { hull: PageRange::new(first.start, last.end), pages }))
    }

    /// Writes the initial contents of `pages` over them in place: the image's
    /// bytes from `source` (the image and its page at `pages.start`), or zeros
    /// if `None`. `pages` must be a read-write Zero or Image run of this space.
    fn restore_in_place(&self, pages: PageRange, source: Option<ImageSource<'_>>) -> Result<()> {
        // `pages` is a read-write Zero or Image run of this reservation
        // (caller's contract), and table == kernel (invariant 1); resets run
        // under `&mut self`, which excludes other host references.
        // SAFETY: the pages are mapped and writable, and nothing else refers to them.
        let target =
            unsafe { std::slice::from_raw_parts_mut(self.addr_of(pages.start), (pages.len() * self.page) as usize) };
        match source {
            None => target.fill(0),
            Some(ImageSource { image, page }) => {
                image.copy_to(page * self.page, target).map_err(|source| Error::Kernel {
                    syscall: "copy from image",
                    start: pages.start * self.page,
                    end: pages.end * self.page,
                    source,
                })?
            }
        }
        Ok(())
    }

    /// The runs of pages the last [`LinearSpace::restore_dirty`] found dirty,
    /// in page order (empty if it could not scan): the working set of the
    /// memory's last user.
    pub fn last_dirty(&self) -> &[PageRange] {
        &self.last_dirty
    }

    /// Faults in, for writing, the writable pages of `ranges` (clipped to
    /// the accessible pages) with one `madvise(MADV_POPULATE_WRITE)` per
    /// stretch, so a guest writing them takes no page fault; on kernels
    /// without it, each page is touched instead. Contents do not change.
    /// Returns the bytes populated.
    pub fn populate(&mut self, ranges: &[PageRange]) -> Result<u64> {
        let mut stretches: Vec<PageRange> = Vec::new();
        for &range in ranges {
            for (run, frame) in self.table.runs_in(range.intersect(self.accessible_pages())) {
                match frame.kind() {
                    FrameKind::Zero | FrameKind::Image { .. } if frame.prot().writable() => {
                        push_coalesced(&mut stretches, run)
                    }
                    FrameKind::Zero | FrameKind::Image { .. } | FrameKind::Unmapped | FrameKind::Shared { .. } => {}
                }
            }
        }
        let mut bytes = 0;
        for run in stretches {
            let (addr, len) = (self.addr_of(run.start), (run.len() * self.page) as usize);
            // SAFETY: `run` is a writable Zero or Image run of this reservation
            // (table == kernel, invariant 1), and `&mut self` excludes other
            // host access; populating leaves every byte as it was.
            if unsafe { mman::populate_write(addr, len) }.is_err() {
                for page in 0..run.len() {
                    // SAFETY: as above; each byte is rewritten with its value.
                    unsafe {
                        let p = addr.add((page * self.page) as usize);
                        p.write_volatile(p.read_volatile());
                    }
                }
            }
            bytes += run.len() * self.page;
        }
        Ok(bytes)
    }

    /// Sets the layout of a fresh memory of `len` bytes that starts with
    /// `image`: the image's pages read-write copy-on-write, the rest of
    /// `[0, len)` zero and read-write, everything after unmapped. Frames that
    /// already have their target backing keep their contents (callers reset
    /// contents first with [`LinearSpace::restore_dirty`]), so a slot that
    /// served the same image costs nothing here. Images no frame names any
    /// more are let go.
    pub fn restore_layout(&mut self, len: u64, image: Option<&Image>) -> Result<()> {
        self.check_layout(len, image)?;
        let image_len = image.map_or(0, Image::len);
        let old = self.accessible_pages();
        let new = PageRange::new(0, len.div_ceil(self.page));
        let image_pages = PageRange::new(0, image_len / self.page);
        if new.end < old.end {
            // Before the pages go: the hole guard must not touch them after.
            self.guard_accessible_pages(new.end);
        }
        self.commit(PageRange::new(new.end, old.end), Change::Map(Frame::UNMAPPED))?;
        if let Some(image) = image {
            self.images.entry(image.id()).or_insert_with(|| image.clone());
            let target = Frame::image(image.id(), 0, Protection::ReadWrite);
            let wrong: Vec<_> =
                self.table.runs_in(image_pages).filter(|&(run, f)| f != target.advanced(run.start)).collect();
            for (run, _) in wrong {
                self.commit(run, Change::Map(target.advanced(run.start)))?;
            }
        }
        let rw = Frame::zero(Protection::ReadWrite);
        let zero_pages = PageRange::new(image_pages.end, new.end);
        let wrong: Vec<_> = self.table.runs_in(zero_pages).filter(|&(_, f)| f != rw).collect();
        for (run, frame) in wrong {
            match frame.kind() {
                FrameKind::Zero => self.commit(run, Change::Protect(Protection::ReadWrite))?,
                FrameKind::Unmapped | FrameKind::Image { .. } | FrameKind::Shared { .. } => {
                    self.commit(run, Change::Map(rw))?
                }
            }
        }
        self.len = len;
        if new.end > old.end {
            self.guard_accessible_pages(new.end);
        }
        self.checkpoints.new_layout(new.end);
        if image.is_none_or(|i| !self.backing_pages.contains_key(&i.id())) {
            // `restore_layout` attached an image no page ended up naming.
            self.images.retain(|id, _| self.backing_pages.contains_key(id));
        }
        Ok(())
    }

    /// Checks that a memory of `len` bytes starting with `image` fits.
    fn check_layout(&self, len: u64, image: Option<&Image>) -> Result<()> {
        if len > self.capacity {
            return Err(Error::CapacityExceeded { requested: len, capacity: self.capacity });
        }
        let image_len = image.map_or(0, Image::len);
        if image_len > len.next_multiple_of(self.page) {
            return Err(Error::PastBacking { id: image.map_or(0, |i| i.id().0), start: 0, end: len, len: image_len });
        }
        Ok(())
    }
}

/// The smallest range holding `a` and `b` (an empty `a` holds nothing).
fn hull(a: PageRange, b: PageRange) -> PageRange {
    if a.is_empty() { b } else { PageRange::new(a.start.min(b.start), a.end.max(b.end)) }
}

/// Appends `range` to `ranges`, merged into the last one if they touch.
fn push_coalesced(ranges: &mut Vec<PageRange>, range: PageRange) {
    if range.is_empty() {
        return;
    }
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}
