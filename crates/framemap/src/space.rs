//! A linear space: one reservation, its frame table, and an accessible size.
//!
//! (At about 1 500 lines this file is over the project's ~600-line rule: it
//! mixes commit, reset and write tracking, host access and inspection, and
//! becomes a folder of those rooms with the house issue; the hardening it
//! holds landed first so that the split moves tested code.)
//!
//! Invariants:
//! 1. The frame table equals the kernel's mappings of the reservation. Every
//!    change of mapping or protection goes through [`LinearSpace::commit`],
//!    which makes the kernel call and updates the table for exactly the range
//!    the call succeeded on; nothing else touches mappings.
//! 2. A frame is replaced by one `mmap(MAP_FIXED)` (or changed in place by one
//!    `mprotect`), never unmapped first: a concurrent guest thread sees the old
//!    page or the new one, never a hole.
//! 3. An `Unmapped` page is fresh anonymous `PROT_NONE` memory holding no page:
//!    mapping it as `Zero` therefore only needs an `mprotect`.
//! 4. Pages `[0, ceil(len / page))` may be mapped (windows may also leave
//!    `Unmapped` holes there); every page from there to the end of the
//!    reservation (the growable rest and the guard) is `Unmapped`.
//! 5. Every `Image` frame names an image, and every `Shared` frame a granted,
//!    unrevoked buffer, that the space holds (so its file stays open and
//!    sealed for as long as it is mapped) and lies inside it. Every `Shared`
//!    frame was mapped with a grant issued for this space's window host
//!    ([`LinearSpace::set_window_host`]), so revoking the buffer reaches it.
//! 6. Every run of `Shared` frames of an unsealed buffer (see
//!    [`SharedBuffer::from_fd`]) is registered with the SIGBUS guard
//!    (`sys::sigbus`) from before it is mapped until after it is replaced.
//!    The guard may demote such a run behind the table's back (its file was
//!    truncated): the kernel then has `PROT_NONE` anonymous memory there.
//!    [`LinearSpace::reconcile`], run first by every change, turns demoted
//!    runs into `Unmapped` frames; until then `validate` and `summary` read
//!    them as `Unmapped`, and host reads and writes refuse them.
//!
//! 7. Every space is registered with the hole guard (`sys::hole_guard`) for
//!    its whole life, with the end of its accessible pages. Host code (not
//!    wasm code) faulting on an inaccessible page there gets that page
//!    replaced by a private read-write zero page behind the table's back: the
//!    space is *poisoned* ([`LinearSpace::poisoned_pages`]).
//!    [`LinearSpace::reconcile`] turns such pages into read-write `Zero`
//!    frames; until then `validate` reports them as divergences.
//!
//! 8. A kernel failure never leaves the table lying. A failed replacement
//!    (`mmap`) re-covers its whole range with fresh `PROT_NONE` anonymous
//!    memory and makes it `Unmapped` in the table (the process aborts if
//!    even that fails twice: the two could then only disagree); a failed
//!    `mprotect`, which may stop half-way over several mappings, gives every
//!    run its table protection back (a run that cannot be restored is
//!    re-covered as `Unmapped`).
//!
//! 9. The table never holds more runs than the space's run budget
//!    ([`LinearSpace::set_run_budget`]): each run is at least one kernel
//!    mapping, and mappings are a per-process resource (`vm.max_map_count`,
//!    65 530 by default) that one memory must not exhaust for all. A change
//!    that would exceed it is refused ([`Error::RunBudget`]) before any
//!    kernel call.
//!
//! Public operations validate their whole argument before any kernel call, so
//! a rejected call changes nothing. A call that fails in the kernel returns
//! the error with the table true to the kernel (invariant 8): a failed
//! `protect` changed nothing; a failed mapping change leaves its range
//! `Unmapped`; operations made of several steps (`discard`, `unmap_buffer`,
//! `restore_layout`, `reset`) keep the steps done before the failure, each
//! of which is a complete change.

use crate::buffer::{BufferGrant, SharedBuffer, WindowHost};
use crate::error::{Error, Result};
use crate::frame::{BackingId, Frame, FrameKind, FrameTag, Protection};
use crate::image::Image;
use crate::page::PageRange;
use crate::reservation::Reservation;
use crate::summary::SpaceSummary;
use crate::sys::{hole_guard, maps, mman, pagemap, sigbus, uffd};
use crate::table::FrameTable;
use rustc_hash::FxHashMap as HashMap;
use std::ptr::NonNull;
use std::sync::Weak;

/// How many windows of unsealed buffers (ranges of the SIGBUS guard's
/// registry of `sigbus::CAPACITY` = 4096) one space may hold: a sixteenth,
/// so that one memory cannot exhaust the registry for every other.
pub const GUARD_SHARE: usize = 256;

/// The geometry of a new [`LinearSpace`], in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceConfig {
    /// How far the memory may grow without moving: a multiple of the host page
    /// size.
    pub capacity: u64,
    /// Inaccessible bytes after the capacity, for bounds-check elision: a
    /// multiple of the host page size.
    pub guard: u64,
    /// Accessible bytes at creation (any size up to `capacity`; the last host
    /// page is mapped whole).
    pub initial_len: u64,
}

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
    /// write tracking (see [`LinearSpace::zero_dirty`]): their next writes
    /// each take one minor fault.
    pub protected: bool,
}

/// The change [`LinearSpace::commit`] makes to a range.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Replace the frames with fresh ones: contents are those of the new frame.
    Map(Frame),
    /// Keep the frames and their contents; set their protection.
    Protect(Protection),
}

/// A linear memory: a reservation that never moves, described by a frame table.
#[derive(Debug)]
pub struct LinearSpace {
    reservation: Reservation,
    table: FrameTable,
    capacity: u64,
    guard: u64,
    len: u64,
    page: u64,
    /// Images that frames of this space may name (invariant 5).
    images: HashMap<BackingId, Image>,
    /// Buffers that frames of this space may name (invariant 5).
    buffers: HashMap<BackingId, SharedBuffer>,
    /// How many pages name each image or buffer; a backing is let go when
    /// its count drops to zero ([`LinearSpace::commit`] keeps it).
    backing_pages: HashMap<BackingId, u64>,
    /// The dirty runs the last [`LinearSpace::zero_dirty`] found.
    last_dirty: Vec<PageRange>,
    /// Write tracking (see [`LinearSpace::zero_dirty`]).
    tracking: Tracking,
    /// This space's entry in the hole guard (invariant 7).
    hole_guard: hole_guard::GuardId,
    /// Pages the hole guard had replaced at the last [`LinearSpace::reconcile`].
    sunk_seen: u64,
    /// Most runs the table may hold (invariant 9).
    run_budget: usize,
    /// The owner revocation reaches this space through; only grants issued
    /// for it are accepted (invariant 5).
    window_host: Option<Weak<dyn WindowHost>>,
}

impl LinearSpace {
    /// Reserves `config.capacity + config.guard` bytes and makes the first
    /// `config.initial_len` of them accessible, zero-filled and read-write.
    pub fn new(config: SpaceConfig) -> Result<LinearSpace> {
        let page = crate::host_page_size() as u64;
        for (what, value) in [("capacity", config.capacity), ("guard size", config.guard)] {
            if !value.is_multiple_of(page) {
                return Err(Error::InvalidSize { what, value, reason: "must be a multiple of the host page size" });
            }
        }
        if config.initial_len > config.capacity {
            return Err(Error::CapacityExceeded { requested: config.initial_len, capacity: config.capacity });
        }
        let total = config
            .capacity
            .checked_add(config.guard)
            .filter(|&t| t <= isize::MAX as u64)
            .ok_or(Error::Overflow { start: config.capacity, len: config.guard })?;
        if total == 0 {
            return Err(Error::InvalidSize {
                what: "reservation size",
                value: 0,
                reason: "capacity plus guard must be non-zero",
            });
        }
        let reservation = Reservation::new(total as usize)?;
        hole_guard::install().map_err(|source| Error::Kernel {
            syscall: "sigaction(SIGSEGV)",
            start: 0,
            end: total,
            source,
        })?;
        let base = reservation.base().as_ptr() as usize;
        let hole_guard =
            hole_guard::register(base, base).ok_or(Error::HoleGuardFull { capacity: hole_guard::CAPACITY })?;
        let mut space = LinearSpace {
            reservation,
            table: FrameTable::new(total / page, Frame::UNMAPPED),
            capacity: config.capacity,
            guard: config.guard,
            len: 0,
            page,
            images: HashMap::default(),
            buffers: HashMap::default(),
            backing_pages: HashMap::default(),
            last_dirty: Vec::new(),
            tracking: Tracking::default(),
            hole_guard,
            sunk_seen: 0,
            run_budget: usize::MAX,
            window_host: None,
        };
        space.grow_to(config.initial_len)?;
        Ok(space)
    }

    /// The first byte of the memory; it never changes.
    pub fn base(&self) -> NonNull<u8> {
        self.reservation.base()
    }

    /// Accessible bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte is accessible.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the memory may grow to without moving.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Inaccessible bytes after the capacity.
    pub fn guard(&self) -> u64 {
        self.guard
    }

    /// Whether frames of this space may name image `id` (it is attached).
    pub fn holds_image(&self, id: BackingId) -> bool {
        self.images.contains_key(&id)
    }

    /// The frame table (read-only: changes go through this type's methods).
    pub fn table(&self) -> &FrameTable {
        &self.table
    }

    /// The pages that may be mapped: `[0, ceil(len / page))`.
    pub fn accessible_pages(&self) -> PageRange {
        PageRange::new(0, self.len.div_ceil(self.page))
    }

    /// Grows the accessible size to `new_len` bytes; new pages are zero and
    /// read-write. Never moves the memory.
    pub fn grow_to(&mut self, new_len: u64) -> Result<()> {
        if new_len < self.len {
            return Err(Error::Shrink { current: self.len, requested: new_len });
        }
        if new_len > self.capacity {
            return Err(Error::CapacityExceeded { requested: new_len, capacity: self.capacity });
        }
        let old = self.accessible_pages();
        let new = PageRange::new(old.end, new_len.div_ceil(self.page));
        self.commit(new, Change::Map(Frame::zero(Protection::ReadWrite)))?;
        self.len = new_len;
        self.guard_accessible_pages(new.end);
        Ok(())
    }

    /// Sets the protection of the page-aligned range `offset..offset + len`,
    /// keeping its contents. Refused if the range holds `Unmapped` frames.
    pub fn protect(&mut self, offset: u64, len: u64, prot: Protection) -> Result<()> {
        let range = self.page_range(offset, len)?;
        self.commit(range, Change::Protect(prot))
    }

    /// Maps `len` bytes of `image` from `image_offset` at `offset`, copy-on-write,
    /// with protection `prot`: the guest reads the image's bytes and its writes
    /// stay private to this memory. All offsets and `len` must be page
    /// aligned; the range must be inside the accessible pages and the image.
    pub fn map_image(
        &mut self,
        offset: u64,
        image: &Image,
        image_offset: u64,
        len: u64,
        prot: Protection,
    ) -> Result<()> {
        let range = self.page_range(offset, len)?;
        let image_end = image_offset.checked_add(len).ok_or(Error::Overflow { start: image_offset, len })?;
        if !image_offset.is_multiple_of(self.page) {
            return Err(Error::Misaligned { start: image_offset, len, page_size: self.page as usize });
        }
        if image_end > image.len() {
            return Err(Error::PastBacking { id: image.id().0, start: image_offset, end: image_end, len: image.len() });
        }
        self.images.entry(image.id()).or_insert_with(|| image.clone());
        self.commit(range, Change::Map(Frame::image(image.id(), image_offset / self.page, prot)))
    }

    /// Maps `len` bytes of the granted buffer from `buffer_offset` at
    /// `offset`, shared, with protection `prot`: guest writes reach the host
    /// and every other window of the buffer. Offsets and `len` must be page
    /// aligned; the range must be inside the accessible pages and the buffer.
    /// The grant must have been issued for this space's window host
    /// ([`Error::ForeignGrant`] otherwise, or if the space has none), so that
    /// revoking the buffer reaches the window.
    pub fn map_buffer(
        &mut self,
        offset: u64,
        grant: &BufferGrant,
        buffer_offset: u64,
        len: u64,
        prot: Protection,
    ) -> Result<()> {
        let buffer = grant.buffer();
        if !self.window_host.as_ref().is_some_and(|host| grant.is_for(host)) {
            return Err(Error::ForeignGrant { id: buffer.id().0 });
        }
        let range = self.page_range(offset, len)?;
        let end = buffer_offset.checked_add(len).ok_or(Error::Overflow { start: buffer_offset, len })?;
        if !buffer_offset.is_multiple_of(self.page) {
            return Err(Error::Misaligned { start: buffer_offset, len, page_size: self.page as usize });
        }
        if end > buffer.len() {
            return Err(Error::PastBacking { id: buffer.id().0, start: buffer_offset, end, len: buffer.len() });
        }
        if buffer.is_revoked() {
            return Err(Error::Revoked { id: buffer.id().0 });
        }
        if buffer.is_truncated() {
            return Err(Error::BufferTruncated { id: buffer.id().0 });
        }
        self.buffers.entry(buffer.id()).or_insert_with(|| buffer.clone());
        self.commit(range, Change::Map(Frame::shared(buffer.id(), buffer_offset / self.page, prot)))
    }

    /// Maps fresh zero pages at the page-aligned range `offset..offset + len`,
    /// with protection `prot`, whatever was there.
    pub fn map_zero(&mut self, offset: u64, len: u64, prot: Protection) -> Result<()> {
        let range = self.page_range(offset, len)?;
        self.commit(range, Change::Map(Frame::zero(prot)))
    }

    /// Unmaps the page-aligned range `offset..offset + len`: its frames become
    /// `Unmapped` and a guest touching them traps; the size does not change.
    pub fn unmap(&mut self, offset: u64, len: u64) -> Result<()> {
        let range = self.page_range(offset, len)?;
        self.commit(range, Change::Map(Frame::UNMAPPED))
    }

    /// Unmaps every window of buffer `id` (revocation). Every window is
    /// tried, even after one fails, and the first failure is returned. A
    /// kernel failure still leaves the window `Unmapped` (invariant 8); a
    /// window survives only if the SIGBUS guard's registry is full
    /// ([`Error::GuardFull`]).
    pub fn unmap_buffer(&mut self, id: BackingId) -> Result<()> {
        let windows: Vec<_> = self
            .table
            .runs()
            .filter(|(_, f)| matches!(f.kind(), FrameKind::Shared { buffer, .. } if buffer == id))
            .map(|(run, _)| run)
            .collect();
        let mut first = None;
        for run in windows {
            // Not `commit`: a failing reconcile must not keep a window.
            if let Err(e) = self.apply(run, Change::Map(Frame::UNMAPPED)) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Discards the contents of the page-aligned range `offset..offset + len`:
    /// zero pages read zero again, image pages become zero pages, unmapped
    /// pages stay as they are. Refused (with nothing changed) if the range
    /// holds `Shared` frames, which the host owns.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        let range = self.page_range(offset, len)?;
        if let Some((run, frame)) = self.table.runs_in(range).find(|(_, f)| f.tag() == FrameTag::Shared) {
            return Err(self.wrong_frames("discard", frame.tag(), run));
        }
        let runs: Vec<_> = self.table.runs_in(range).collect();
        let mut stretch: Option<PageRange> = None;
        for (run, frame) in runs {
            match frame.kind() {
                FrameKind::Unmapped | FrameKind::Zero => {
                    stretch = Some(stretch.map_or(run, |s| PageRange::new(s.start, run.end)));
                }
                FrameKind::Image { .. } => {
                    if let Some(s) = stretch.take() {
                        self.drop_pages(s)?;
                    }
                    self.commit(run, Change::Map(Frame::zero(frame.prot())))?;
                }
                FrameKind::Shared { .. } => return Err(self.wrong_frames("discard", FrameTag::Shared, run)),
            }
        }
        match stretch {
            Some(s) => self.drop_pages(s),
            None => Ok(()),
        }
    }

    /// Copies `buf.len()` bytes at `offset` out of the memory. Refused if any
    /// of them is not readable, or lies in a window of a buffer found
    /// truncated ([`Error::BufferTruncated`]).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_access(offset, buf.len() as u64, "read", Protection::readable)?;
        if sigbus::windows_guarded() {
            // Windows of unsealed buffers are read through the buffer's host
            // view, which survives a truncation (invariant 6).
            for (at, n, via) in self.guarded_pieces(offset, buf.len() as u64)? {
                let part = &mut buf[(at - offset) as usize..(at - offset + n) as usize];
                match via {
                    Some((buffer, from)) => buffer.read(from, part)?,
                    // SAFETY: as below, for this part of the range.
                    None => unsafe {
                        std::ptr::copy_nonoverlapping(
                            self.base().as_ptr().add(at as usize),
                            part.as_mut_ptr(),
                            part.len(),
                        )
                    },
                }
            }
            return Ok(());
        }
        // SAFETY: `check_access` proved the bytes lie inside the reservation on
        // readable frames (invariant 1: the kernel agrees), and `buf` is a
        // distinct Rust allocation, so the copy neither faults nor overlaps.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base().as_ptr().add(offset as usize), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `data` into the memory at `offset`. Refused if any target byte is
    /// not writable, or lies in a window of a buffer found truncated
    /// ([`Error::BufferTruncated`]).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_access(offset, data.len() as u64, "write", Protection::writable)?;
        if sigbus::windows_guarded() {
            // As in `read`: windows of unsealed buffers go through the view.
            for (at, n, via) in self.guarded_pieces(offset, data.len() as u64)? {
                let part = &data[(at - offset) as usize..(at - offset + n) as usize];
                match via {
                    Some((buffer, from)) => buffer.write(from, part)?,
                    // SAFETY: as below, for this part of the range.
                    None => unsafe {
                        std::ptr::copy_nonoverlapping(part.as_ptr(), self.base().as_ptr().add(at as usize), part.len())
                    },
                }
            }
            return Ok(());
        }
        // SAFETY: as in `read`, with writable frames; `&mut self` means no
        // other host access through this space runs concurrently.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base().as_ptr().add(offset as usize), data.len()) };
        Ok(())
    }

    /// Brings back what the guest dirtied and restores the initial layout of a
    /// memory of `len` bytes starting with `image` (see
    /// [`LinearSpace::restore_layout`]). Costs time proportional to the dirty
    /// pages (see [`ResetReport`]).
    pub fn reset(&mut self, len: u64, image: Option<&Image>, policy: ResetPolicy) -> Result<ResetReport> {
        self.check_layout(len, image)?;
        let report = self.zero_dirty(policy)?;
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
    pub fn zero_dirty(&mut self, policy: ResetPolicy) -> Result<ResetReport> {
        // Host pages are a power of two: shift instead of dividing.
        let shift = self.page.trailing_zeros();
        let accessible = self.accessible_pages();
        let mut report = ResetReport::default();
        let (start, end) = (self.addr_of(accessible.start) as usize, self.addr_of(accessible.end) as usize);
        // The runs found last time become `previous`; this scan refills
        // `last_dirty` (both buffers are reused: no allocation once warm).
        std::mem::swap(&mut self.last_dirty, &mut self.tracking.previous);
        self.last_dirty.clear();
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
        let everything = [accessible];
        let regions: &[PageRange] = if report.scanned { &self.last_dirty } else { &everything };
        let mut budget = if report.scanned { policy.keep_resident >> shift } else { 0 };
        // The usual case: every dirty run lies inside one read-write Image or
        // Zero run of the table and fits the budget, so each is restored in
        // place from the same source, back to back, with no bookkeeping
        // between two copies.
        if let Some(kept) = self.restore_in_one_run(regions, budget)? {
            report.dirty = kept.1 << shift;
            report.zeroed_in_place = report.dirty;
            self.protect_after_restore(tracked, kept.0, &mut report);
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
                            Some((image, page))
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
        Ok(report)
    }

    /// Write tracking after a reset that restored the pages of `kept` (the
    /// hull of those restored in place) and found `self.last_dirty`; sets
    /// `report.protected` if it protected them.
    fn protect_after_restore(&mut self, tracked: bool, kept: PageRange, report: &mut ResetReport) {
        // Write tracking: pages restored in place are written pages again.
        // Protecting them lets the next reset skip those the next user does
        // not write (a page is then copied only if written since), at the
        // price of one minor fault on the next write of each. So they are
        // protected when the dirty set changed (a burst of writes, or new
        // pages); a set found twice in a row is hot and left unprotected (it
        // is copied at each reset, with no fault), and every `period` resets
        // everything is protected again so pages that went cold stop being
        // copied. The period adapts: a periodic protection after which the
        // very same set is written again only cost faults, so the period
        // doubles (up to `REPROTECT_PERIOD_MAX`); any change of the dirty
        // set brings it back to `REPROTECT_PERIOD_MIN`.
        if tracked && !kept.is_empty() {
            let tracking = &mut self.tracking;
            tracking.resets_since_protection += 1;
            let changed = self.last_dirty != tracking.previous;
            if changed {
                tracking.period = REPROTECT_PERIOD_MIN;
            } else if tracking.probing {
                tracking.period = (tracking.period * 2).min(REPROTECT_PERIOD_MAX);
            }
            tracking.probing = false;
            if changed || tracking.resets_since_protection >= tracking.period {
                let (first, last) = (self.addr_of(kept.start) as usize, self.addr_of(kept.end) as usize);
                // A failure leaves pages unprotected, which only means they
                // are copied again next time.
                if pagemap::protect_dirty(first, last).is_ok() {
                    let tracking = &mut self.tracking;
                    tracking.resets_since_protection = 0;
                    tracking.probing = !changed;
                    report.protected = true;
                }
            }
        }
    }

    /// Restores every run of `regions` in place if they all lie inside one
    /// read-write Zero or Image run of the table and together fit `budget`
    /// pages: returns the hull of the restored pages and their number, or
    /// `None` (nothing done) if they do not.
    fn restore_in_one_run(&self, regions: &[PageRange], budget: u64) -> Result<Option<(PageRange, u64)>> {
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
                Some((found, page))
            }
        };
        for region in regions {
            self.restore_in_place(*region, image.map(|(image, page)| (image, page + region.start - run.start)))?;
        }
        Ok(Some((PageRange::new(first.start, last.end), pages)))
    }

    /// Writes the initial contents of `pages` over them in place: the image's
    /// bytes from `source` (the image and its page at `pages.start`), or zeros
    /// if `None`. `pages` must be a read-write Zero or Image run of this space.
    fn restore_in_place(&self, pages: PageRange, source: Option<(&Image, u64)>) -> Result<()> {
        // `pages` is a read-write Zero or Image run of this reservation
        // (caller's contract), and table == kernel (invariant 1); resets run
        // under `&mut self`, which excludes other host references.
        // SAFETY: the pages are mapped and writable, and nothing else refers to them.
        let target =
            unsafe { std::slice::from_raw_parts_mut(self.addr_of(pages.start), (pages.len() * self.page) as usize) };
        match source {
            None => target.fill(0),
            Some((image, page)) => image.copy_to(page * self.page, target).map_err(|source| Error::Kernel {
                syscall: "copy from image",
                start: pages.start * self.page,
                end: pages.end * self.page,
                source,
            })?,
        }
        Ok(())
    }

    /// Registers the accessible Zero and Image runs for write tracking if
    /// the layout changed since they were (one `ioctl` per run); true if
    /// they are registered. A run the kernel refuses stays untracked: its
    /// present pages always count as written (see [`crate::sys::uffd`]).
    fn register_for_tracking(&mut self) -> bool {
        if let Some(registered) = self.tracking.registered {
            return registered;
        }
        let mut registered = uffd::supported();
        if registered {
            for (run, frame) in self.table.runs_in(self.accessible_pages()) {
                if matches!(frame.kind(), FrameKind::Zero | FrameKind::Image { .. }) {
                    // SAFETY: `run` is mapped inside this space's reservation.
                    let ok = unsafe { uffd::register(self.addr_of(run.start), (run.len() * self.page) as usize) };
                    registered &= ok.is_ok();
                }
            }
        }
        self.tracking.registered = Some(registered);
        registered
    }

    /// The runs of pages the last [`LinearSpace::zero_dirty`] found dirty, in
    /// page order (empty if it could not scan): the working set of the
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
    /// contents first with [`LinearSpace::zero_dirty`]), so a slot that served
    /// the same image costs nothing here. Images no frame names any more are
    /// let go.
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

    /// Compares the frame table with `/proc/self/maps` over the whole
    /// reservation: same protections, anonymous where the table says so, no
    /// hole. Used by tests and fuzzing.
    pub fn validate(&self) -> Result<()> {
        self.table.check().map_err(|detail| Error::Diverged { start: 0, end: self.total(), detail })?;
        let mut counted: HashMap<BackingId, u64> = HashMap::default();
        for (run, frame) in self.table.runs() {
            let held = match frame.kind() {
                FrameKind::Image { image: id, .. } => Some((id, self.images.contains_key(&id))),
                FrameKind::Shared { buffer: id, .. } => Some((id, self.buffers.contains_key(&id))),
                FrameKind::Unmapped | FrameKind::Zero => None,
            };
            if let Some((id, held)) = held {
                if !held {
                    let (start, end) = (run.start * self.page, run.end * self.page);
                    return Err(Error::Diverged { start, end, detail: format!("backing #{} is not held", id.0) });
                }
                *counted.entry(id).or_default() += run.len();
            }
        }
        if counted != self.backing_pages {
            return Err(Error::Diverged {
                start: 0,
                end: self.total(),
                detail: format!("backing page counts {:?} differ from the table's {counted:?}", self.backing_pages),
            });
        }
        let base = self.base().as_ptr() as usize;
        let end = base + self.total() as usize;
        let vmas = maps::vmas_in(base, end).map_err(|source| Error::Kernel {
            syscall: "read /proc/self/maps",
            start: 0,
            end: self.total(),
            source,
        })?;
        let mut actual: Vec<Segment> = Vec::new();
        for vma in vmas {
            let (s, e) = (vma.start.max(base), vma.end.min(end));
            let file = (vma.inode != 0).then(|| (vma.inode, vma.offset + (s - vma.start) as u64));
            push_segment(&mut actual, ((s - base) as u64, (e - base) as u64, vma.perms, file));
        }
        let mut expected: Vec<Segment> = Vec::new();
        for (run, frame) in self.effective_runs() {
            let (r, w) = (frame.prot().readable(), frame.prot().writable());
            let (shared, file) = match frame.kind() {
                FrameKind::Unmapped | FrameKind::Zero => (false, None),
                FrameKind::Image { image, page } => {
                    let inode = self.images.get(&image).map_or(0, Image::inode);
                    (false, Some((inode, page * self.page)))
                }
                FrameKind::Shared { buffer, page } => {
                    let inode = self.buffers.get(&buffer).map_or(0, SharedBuffer::inode);
                    (true, Some((inode, page * self.page)))
                }
            };
            let perms =
                [if r { b'r' } else { b'-' }, if w { b'w' } else { b'-' }, b'-', if shared { b's' } else { b'p' }];
            push_segment(&mut expected, (run.start * self.page, run.end * self.page, perms, file));
        }
        for (i, want) in expected.iter().enumerate() {
            let got = actual.get(i);
            if got != Some(want) {
                let describe = |s: Option<&Segment>| match s {
                    Some((a, b, p, file)) => format!(
                        "{a:#x}..{b:#x} {} {}",
                        String::from_utf8_lossy(p),
                        file.map_or("anon".to_string(), |(inode, offset)| format!("inode {inode} @ {offset:#x}"))
                    ),
                    None => "nothing".to_string(),
                };
                return Err(Error::Diverged {
                    start: want.0,
                    end: want.1,
                    detail: format!("table says {}, kernel has {}", describe(Some(want)), describe(got)),
                });
            }
        }
        if actual.len() != expected.len() {
            return Err(Error::Diverged { start: 0, end: self.total(), detail: "kernel has extra mappings".into() });
        }
        Ok(())
    }

    /// Runs, mapped bytes and resident bytes per frame tag.
    pub fn summary(&self) -> Result<SpaceSummary> {
        let mut summary = SpaceSummary {
            base: self.base().as_ptr() as usize,
            len: self.len,
            capacity: self.capacity,
            guard: self.guard,
            runs: [0; 4],
            bytes: [0; 4],
            resident: [0; 4],
        };
        for (run, frame) in self.effective_runs() {
            let tag = frame.tag().index();
            summary.runs[tag] += 1;
            summary.bytes[tag] += run.len() * self.page;
            let resident = match frame.kind() {
                FrameKind::Unmapped => 0,
                FrameKind::Zero | FrameKind::Image { .. } | FrameKind::Shared { .. } => self.resident_bytes(run)?,
            };
            summary.resident[tag] += resident;
        }
        Ok(summary)
    }

    /// The one place mappings change (module invariants 1-3, 6 and 9): folds
    /// in what the guards did first, checks the run budget, then applies
    /// `change`.
    fn commit(&mut self, range: PageRange, change: Change) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        self.reconcile()?;
        self.check_run_budget(range, change)?;
        self.apply(range, change)
    }

    /// Refuses a new window of an unsealed buffer if this space already holds
    /// its share of the SIGBUS guard's process-wide registry
    /// ([`GUARD_SHARE`] ranges), so that one memory cannot take every slot.
    fn check_guard_share(&self) -> Result<()> {
        let guarded = |frame: Frame| match frame.kind() {
            FrameKind::Shared { buffer, .. } => self.buffers.get(&buffer).is_some_and(SharedBuffer::guarded),
            FrameKind::Unmapped | FrameKind::Zero | FrameKind::Image { .. } => false,
        };
        let held = self.table.runs().filter(|&(_, f)| guarded(f)).count();
        if held >= GUARD_SHARE {
            return Err(Error::GuardShare { held, share: GUARD_SHARE });
        }
        Ok(())
    }

    /// Names the owner through which revocation reaches this space (the
    /// `WindowHost` that wraps it: an `Arc<Mutex<LinearSpace>>`, or an
    /// embedder's own type). Grants issued for another host are refused by
    /// [`LinearSpace::map_buffer`]. Set it once, before mapping buffers.
    pub fn set_window_host(&mut self, host: Weak<dyn WindowHost>) {
        self.window_host = Some(host);
    }

    /// Sets the most runs this space's frame table may hold (module
    /// invariant 9); changes that would exceed it fail with
    /// [`Error::RunBudget`]. Unlimited by default. A budget below the runs
    /// held now refuses every change that does not reduce them.
    pub fn set_run_budget(&mut self, runs: usize) {
        self.run_budget = runs;
    }

    /// The run budget (see [`LinearSpace::set_run_budget`]).
    pub fn run_budget(&self) -> usize {
        self.run_budget
    }

    /// Refuses `change` if the table would then hold more runs than the
    /// budget allows (and more than it holds now). A change adds at most two
    /// runs (it splits at most the runs at its two ends), so the exact count
    /// is only worked out near the budget.
    fn check_run_budget(&self, range: PageRange, change: Change) -> Result<()> {
        let now = self.table.run_count();
        if now.saturating_add(2) <= self.run_budget {
            return Ok(());
        }
        let after = match change {
            Change::Map(frame) => self.table.run_count_after_set(range, frame),
            Change::Protect(prot) => {
                let mut table = self.table.clone();
                for (run, frame) in self.table.runs_in(range) {
                    if let Some(frame) = frame.with_prot(prot) {
                        table.set(run, frame);
                    }
                }
                table.run_count()
            }
        };
        if after > self.run_budget && after > now {
            return Err(Error::RunBudget { runs: after, budget: self.run_budget });
        }
        Ok(())
    }

    /// Turns the windows the SIGBUS guard demoted into `Unmapped` frames.
    ///
    /// A window of an unsealed buffer (see [`SharedBuffer::from_fd`]) whose
    /// file was truncated under it is replaced by the guard, from its signal
    /// handler, with inaccessible anonymous memory, without the frame table
    /// knowing. This makes the table say so: those runs become `Unmapped`
    /// (the kernel already agrees), and the buffer loses those pages'
    /// counts (it is let go once no page names it). Every change to the
    /// space runs it first; [`LinearSpace::validate`] and
    /// [`LinearSpace::summary`] read demoted runs as `Unmapped` without it.
    ///
    /// Then it folds in what the hole guard did (module invariant 7): pages
    /// it replaced with private read-write zero pages become read-write
    /// `Zero` frames.
    ///
    /// Returns the pages whose frames changed.
    pub fn reconcile(&mut self) -> Result<u64> {
        let base = self.base().as_ptr() as usize;
        let mut pages = 0;
        for (start, end) in sigbus::demoted_windows(base, base + self.total() as usize) {
            let run = PageRange::new(self.page_of(start), self.page_of(end));
            self.apply(run, Change::Map(Frame::UNMAPPED))?;
            pages += run.len();
        }
        Ok(pages + self.adopt_sunk_pages()?)
    }

    /// Pages the hole guard replaced in this space since it was made: pages
    /// that host code (a wasmtime libcall, a WASI call, `Memory::data`)
    /// touched while they were inaccessible. Non-zero means the memory is
    /// poisoned: those pages' contents are lost (they read zero, or what
    /// host code wrote to them since), and [`LinearSpace::reconcile`] makes
    /// them read-write `Zero` frames.
    pub fn poisoned_pages(&self) -> u64 {
        hole_guard::sunk_pages(self.hole_guard)
    }

    /// Tells the hole guard where the accessible pages end.
    fn guard_accessible_pages(&self, end: u64) {
        hole_guard::set_end(self.hole_guard, self.addr_of(end) as usize);
    }

    /// Makes the table say what the hole guard did (invariant 7): every page
    /// the kernel has as private read-write anonymous memory where the table
    /// says otherwise becomes a read-write `Zero` frame. Returns those pages.
    fn adopt_sunk_pages(&mut self) -> Result<u64> {
        let sunk = self.poisoned_pages();
        if sunk == self.sunk_seen {
            return Ok(0);
        }
        let base = self.base().as_ptr() as usize;
        let end = self.addr_of(self.accessible_pages().end) as usize;
        let vmas = maps::vmas_in(base, end).map_err(|source| Error::Kernel {
            syscall: "read /proc/self/maps",
            start: 0,
            end: (end - base) as u64,
            source,
        })?;
        let rw = Frame::zero(Protection::ReadWrite);
        let mut adopt = Vec::new();
        for vma in vmas.iter().filter(|v| v.inode == 0 && &v.perms == b"rw-p") {
            let pages = PageRange::new(self.page_of(vma.start.max(base)), self.page_of(vma.end.min(end)));
            adopt.extend(self.table.runs_in(pages).filter(|&(run, f)| f != rw.advanced(run.start)).map(|(r, _)| r));
        }
        let mut pages = 0;
        for run in adopt {
            // The kernel has private read-write pages there: mapping fresh
            // zero pages over them changes what they read (nothing worth
            // keeping) and makes the table exact.
            self.apply(run, Change::Map(rw))?;
            pages += run.len();
        }
        self.sunk_seen = sunk;
        Ok(pages)
    }

    /// Applies `change` to `range` in the kernel and the table.
    fn apply(&mut self, range: PageRange, change: Change) -> Result<()> {
        let (addr, len) = (self.addr_of(range.start), (range.len() * self.page) as usize);
        let page = self.page;
        let kernel =
            move |syscall, source| Error::Kernel { syscall, start: range.start * page, end: range.end * page, source };
        match change {
            Change::Map(frame) => {
                // New mappings are not registered for write tracking yet
                // (a protection change keeps a mapping's registration).
                self.tracking.registered = None;
                // Invariant 6: a window of an unsealed buffer is registered
                // before it is mapped; the windows it replaces are released
                // after, and mapped again where the guard demoted them
                // meanwhile (its mmap may have landed after ours).
                let guarded = match frame.kind() {
                    FrameKind::Shared { buffer, page } => {
                        self.buffers.get(&buffer).filter(|b| b.guarded()).map(|b| (b, page * self.page))
                    }
                    FrameKind::Unmapped | FrameKind::Zero | FrameKind::Image { .. } => None,
                };
                if guarded.is_some() {
                    self.check_guard_share()?;
                }
                let mut ticket = match guarded.is_some() || sigbus::windows_guarded() {
                    true => Some(sigbus::reserve(2).ok_or(Error::GuardFull { capacity: sigbus::CAPACITY })?),
                    false => None,
                };
                let (start, end) = (addr as usize, addr as usize + len);
                let slot = match (guarded, ticket.as_mut()) {
                    (Some((buffer, offset)), Some(t)) => {
                        let id = buffer.id().0;
                        sigbus::guard(t, sigbus::Range::new(start, end, sigbus::Guard::Window, id, buffer.fd(), offset))
                    }
                    _ => None,
                };
                let mapped = self.map_frames(range, frame).and_then(|()| {
                    for (s, e) in sigbus::unguard_windows(ticket.as_mut(), start, end, slot) {
                        let part = PageRange::new(self.page_of(s), self.page_of(e));
                        self.map_frames(part, frame.advanced(part.start - range.start))?;
                    }
                    Ok(())
                });
                if let Err(e) = mapped {
                    // The kernel may have replaced part of the range, or
                    // left a hole (invariant 8).
                    self.recover_unmapped(range, ticket.as_mut());
                    return Err(e);
                }
                self.count_backings(range, frame);
                self.table.set(range, frame);
            }
            Change::Protect(prot) => {
                // Most ranges lie inside one run: no need to collect them.
                if let Some((run, frame)) = self.table.run_containing(range.start)
                    && range.end <= run.end
                {
                    if frame.tag() == FrameTag::Unmapped {
                        return Err(self.wrong_frames("protect", FrameTag::Unmapped, range));
                    }
                    // SAFETY: as above; every page in the range is mapped.
                    if let Err(e) = unsafe { mman::protect(addr, len, prot) } {
                        self.restore_protections(range);
                        return Err(kernel("mprotect", e));
                    }
                    if frame.prot() != prot
                        && let Some(frame) = frame.with_prot(prot)
                    {
                        self.table.set(range, frame.advanced(range.start - run.start));
                    }
                    return Ok(());
                }
                let runs: Vec<_> = self.table.runs_in(range).collect();
                if let Some(&(run, _)) = runs.iter().find(|(_, f)| f.tag() == FrameTag::Unmapped) {
                    return Err(self.wrong_frames("protect", FrameTag::Unmapped, run));
                }
                // SAFETY: as above; every page in the range is mapped.
                if let Err(e) = unsafe { mman::protect(addr, len, prot) } {
                    // One mprotect over several mappings may stop half-way.
                    self.restore_protections(range);
                    return Err(kernel("mprotect", e));
                }
                for (run, frame) in runs {
                    if frame.prot() != prot
                        && let Some(frame) = frame.with_prot(prot)
                    {
                        self.table.set(run, frame);
                    }
                }
            }
        }
        Ok(())
    }

    /// After a failed replacement of `range` (invariant 8): re-covers the
    /// whole range with fresh `PROT_NONE` anonymous memory and makes the
    /// table say `Unmapped` there, releasing the windows the SIGBUS guard
    /// held in it. If even that fails twice, the kernel and the table could
    /// only disagree, and the process aborts.
    fn recover_unmapped(&mut self, range: PageRange, ticket: Option<&mut sigbus::Ticket>) {
        let (addr, len) = (self.addr_of(range.start), (range.len() * self.page) as usize);
        // SAFETY: `range` lies inside the reservation this space owns; no
        // Rust reference points into guest memory.
        let covered = (0..2).any(|_| unsafe { mman::replace_with_zero(addr, len, Protection::None) }.is_ok());
        if !covered {
            std::process::abort();
        }
        let start = addr as usize;
        // Windows the handler demoted meanwhile are `PROT_NONE` anonymous
        // memory too: nothing to redo.
        sigbus::unguard_windows(ticket, start, start + len, None);
        self.tracking.registered = None;
        self.count_backings(range, Frame::UNMAPPED);
        self.table.set(range, Frame::UNMAPPED);
    }

    /// After a failed `mprotect` of `range` (invariant 8): gives every run
    /// its table protection back, one call per run; a run that cannot be
    /// restored is re-covered as `Unmapped` instead.
    fn restore_protections(&mut self, range: PageRange) {
        let runs: Vec<_> = self.table.runs_in(range).collect();
        for (run, frame) in runs {
            let (addr, len) = (self.addr_of(run.start), (run.len() * self.page) as usize);
            // SAFETY: as in `apply`; this sets the protection the table
            // already records for these pages.
            if unsafe { mman::protect(addr, len, frame.prot()) }.is_err() {
                self.recover_unmapped(run, None);
            }
        }
    }

    /// Replaces `range` with `frame` (advanced page by page) in the kernel
    /// only, with one `mmap(MAP_FIXED)` (or an `mprotect` of fresh
    /// `Unmapped` pages).
    fn map_frames(&self, range: PageRange, frame: Frame) -> Result<()> {
        let (addr, len) = (self.addr_of(range.start), (range.len() * self.page) as usize);
        let kernel = |syscall, source| Error::Kernel {
            syscall,
            start: range.start * self.page,
            end: range.end * self.page,
            source,
        };
        match frame.kind() {
            FrameKind::Unmapped => {
                // SAFETY: `range` lies inside the reservation this space
                // owns; no Rust reference points into guest memory.
                unsafe { mman::replace_with_zero(addr, len, Protection::None) }.map_err(|e| kernel("mmap", e))?;
            }
            FrameKind::Zero if self.table.runs_in(range).all(|(_, f)| f.tag() == FrameTag::Unmapped) => {
                // SAFETY: as above; the pages are fresh anonymous
                // memory (invariant 3), so protecting them is mapping
                // zero pages.
                unsafe { mman::protect(addr, len, frame.prot()) }.map_err(|e| kernel("mprotect", e))?;
            }
            FrameKind::Zero => {
                // SAFETY: as above.
                unsafe { mman::replace_with_zero(addr, len, frame.prot()) }.map_err(|e| kernel("mmap", e))?;
            }
            FrameKind::Image { image, page } => {
                let image = self.images.get(&image).ok_or(Error::UnknownBacking { id: image.0 })?;
                // SAFETY: as above; the image's file cannot shrink and
                // covers the range (`map_image`/`restore_layout` check
                // it against the image's length).
                unsafe { mman::replace_with_file(addr, len, frame.prot(), image.fd(), page * self.page, false) }
                    .map_err(|e| kernel("mmap", e))?;
            }
            FrameKind::Shared { buffer, page } => {
                let buffer = self.buffers.get(&buffer).ok_or(Error::UnknownBacking { id: buffer.0 })?;
                // The buffer's file covers the range (`map_buffer` checks
                // it against the length) and is sealed against shrinking,
                // or else the range is registered with the SIGBUS guard
                // (invariant 6), which absorbs the faults of a truncation.
                // SAFETY: as above, and the file covers the range.
                unsafe { mman::replace_with_file(addr, len, frame.prot(), buffer.fd(), page * self.page, true) }
                    .map_err(|e| kernel("mmap", e))?;
            }
        }
        Ok(())
    }

    /// The table's runs as the kernel has them now: runs the SIGBUS guard
    /// demoted since the last [`LinearSpace::reconcile`] read as `Unmapped`.
    fn effective_runs(&self) -> Vec<(PageRange, Frame)> {
        let base = self.base().as_ptr() as usize;
        let demoted: Vec<PageRange> = sigbus::demoted_windows(base, base + self.total() as usize)
            .into_iter()
            .map(|(s, e)| PageRange::new(self.page_of(s), self.page_of(e)))
            .collect();
        let mut out = Vec::with_capacity(self.table.run_count() + 2 * demoted.len());
        for (run, frame) in self.table.runs() {
            let mut at = run.start;
            for d in demoted.iter().map(|d| d.intersect(run)) {
                if d.is_empty() || d.start < at {
                    continue;
                }
                if d.start > at {
                    out.push((PageRange::new(at, d.start), frame.advanced(at - run.start)));
                }
                out.push((d, Frame::UNMAPPED));
                at = d.end;
            }
            if at < run.end {
                out.push((PageRange::new(at, run.end), frame.advanced(at - run.start)));
            }
        }
        out
    }

    /// Splits `offset..offset + len` (checked by `check_access`) into parts
    /// read or written directly and parts inside windows of unsealed buffers,
    /// which go through the buffer's host view at the given buffer offset.
    /// Refused if a window the range touches was demoted.
    fn guarded_pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece<'_>>> {
        let end = offset + len;
        let pages = PageRange::new(offset / self.page, end.div_ceil(self.page));
        let (start, stop) = (self.addr_of(pages.start) as usize, self.addr_of(pages.end) as usize);
        if let Some(&(s, _)) = sigbus::demoted_windows(start, stop).first() {
            let id = match self.table.get(self.page_of(s.max(start))).map(|(_, f)| f.kind()) {
                Some(FrameKind::Shared { buffer, .. }) => buffer.0,
                _ => 0,
            };
            return Err(Error::BufferTruncated { id });
        }
        let mut pieces = Vec::new();
        for (run, frame) in self.table.runs_in(pages) {
            let (s, e) = ((run.start * self.page).max(offset), (run.end * self.page).min(end));
            let via = match frame.kind() {
                FrameKind::Shared { buffer, page } => self
                    .buffers
                    .get(&buffer)
                    .filter(|b| b.guarded())
                    .map(|b| (b, page * self.page + (s - run.start * self.page))),
                FrameKind::Unmapped | FrameKind::Zero | FrameKind::Image { .. } => None,
            };
            if e > s {
                pieces.push((s, e - s, via));
            }
        }
        Ok(pieces)
    }

    /// Updates the per-backing page counts for `range` becoming `frame`, and
    /// lets go of backings no page names any more. Costs O(runs replaced).
    fn count_backings(&mut self, range: PageRange, frame: Frame) {
        fn backing(frame: Frame) -> Option<BackingId> {
            match frame.kind() {
                FrameKind::Image { image: id, .. } | FrameKind::Shared { buffer: id, .. } => Some(id),
                FrameKind::Unmapped | FrameKind::Zero => None,
            }
        }
        let replaced: Vec<_> = self.table.runs_in(range).filter_map(|(run, f)| Some((run, backing(f)?))).collect();
        if let Some(id) = backing(frame) {
            *self.backing_pages.entry(id).or_default() += range.len();
        }
        for (run, id) in replaced {
            let pages = self.backing_pages.entry(id).or_default();
            *pages = pages.saturating_sub(run.len());
            if *pages == 0 {
                self.backing_pages.remove(&id);
                self.images.remove(&id);
                self.buffers.remove(&id);
            }
        }
    }

    /// `madvise(MADV_DONTNEED)` on `range`: contents only, mappings unchanged.
    fn drop_pages(&self, range: PageRange) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        // SAFETY: `range` lies inside the reservation; dropping pages changes
        // contents, never mappings, so the table stays equal to the kernel.
        unsafe { mman::discard(self.addr_of(range.start), (range.len() * self.page) as usize) }.map_err(|source| {
            Error::Kernel { syscall: "madvise", start: range.start * self.page, end: range.end * self.page, source }
        })
    }

    fn resident_bytes(&self, run: PageRange) -> Result<u64> {
        let (start, end) = (self.addr_of(run.start) as usize, self.addr_of(run.end) as usize);
        let kernel = |source| Error::Kernel {
            syscall: "read /proc/self/pagemap",
            start: run.start * self.page,
            end: run.end * self.page,
            source,
        };
        if pagemap::scan_supported() {
            let mut bytes = 0u64;
            pagemap::scan(start, end, pagemap::Query::Resident, |s, e| bytes += (e - s) as u64).map_err(kernel)?;
            Ok(bytes)
        } else {
            Ok(pagemap::count_present_by_entries(start, end).map_err(kernel)? * self.page)
        }
    }

    /// Checks that `offset..offset + len` is page aligned and inside the
    /// accessible pages, and converts it to pages.
    fn page_range(&self, offset: u64, len: u64) -> Result<PageRange> {
        let end = offset.checked_add(len).ok_or(Error::Overflow { start: offset, len })?;
        if !offset.is_multiple_of(self.page) || !len.is_multiple_of(self.page) {
            return Err(Error::Misaligned { start: offset, len, page_size: self.page as usize });
        }
        let accessible = self.accessible_pages().end * self.page;
        if end > accessible {
            return Err(Error::OutOfBounds { start: offset, end, accessible });
        }
        Ok(PageRange::new(offset / self.page, end / self.page))
    }

    fn check_access(
        &self,
        offset: u64,
        len: u64,
        operation: &'static str,
        allowed: fn(Protection) -> bool,
    ) -> Result<()> {
        let end = offset.checked_add(len).ok_or(Error::Overflow { start: offset, len })?;
        if end > self.len {
            return Err(Error::OutOfBounds { start: offset, end, accessible: self.len });
        }
        if len == 0 {
            return Ok(());
        }
        let pages = PageRange::new(offset / self.page, end.div_ceil(self.page));
        match self.table.runs_in(pages).find(|(_, f)| !allowed(f.prot())) {
            Some((run, frame)) => Err(Error::Protected {
                operation,
                prot: frame.prot(),
                start: run.start * self.page,
                end: run.end * self.page,
            }),
            None => Ok(()),
        }
    }

    fn wrong_frames(&self, operation: &'static str, tag: FrameTag, run: PageRange) -> Error {
        Error::WrongFrames { operation, tag, start: run.start * self.page, end: run.end * self.page }
    }

    fn total(&self) -> u64 {
        self.capacity + self.guard
    }

    fn addr_of(&self, page: u64) -> *mut u8 {
        self.base().as_ptr().wrapping_add((page * self.page) as usize)
    }

    fn page_of(&self, addr: usize) -> u64 {
        (addr - self.base().as_ptr() as usize) as u64 / self.page
    }
}

impl Drop for LinearSpace {
    /// Releases the space's guarded windows (invariant 6) and its hole guard
    /// entry (invariant 7) before the reservation is unmapped.
    fn drop(&mut self) {
        hole_guard::unregister(self.hole_guard);
        let base = self.base().as_ptr() as usize;
        sigbus::unguard_windows(None, base, base + self.total() as usize, None);
    }
}

/// The smallest range holding `a` and `b` (an empty `a` holds nothing).
fn hull(a: PageRange, b: PageRange) -> PageRange {
    if a.is_empty() { b } else { PageRange::new(a.start.min(b.start), a.end.max(b.end)) }
}

/// Fewest resets between two in which write tracking protects every page it
/// restored, whether or not the dirty set changed (see
/// [`LinearSpace::zero_dirty`]): the period after any change of the dirty
/// set.
const REPROTECT_PERIOD_MIN: u32 = 64;

/// Most resets between two such protections: the period reached by a dirty
/// set that stays the same. A hot set of n pages then takes n faults per
/// 512 resets; a set that goes cold is copied for at most 512 more resets.
const REPROTECT_PERIOD_MAX: u32 = 512;

/// Write tracking state of a space (see [`LinearSpace::zero_dirty`]).
#[derive(Debug)]
struct Tracking {
    /// Whether the accessible Zero and Image runs are registered for write
    /// tracking as laid out now (`None`: the layout changed since).
    registered: Option<bool>,
    /// The dirty runs the reset before the last one found.
    previous: Vec<PageRange>,
    /// Resets since the last one that protected the pages it restored.
    resets_since_protection: u32,
    /// Resets between periodic protections now, from `REPROTECT_PERIOD_MIN`
    /// to `REPROTECT_PERIOD_MAX`.
    period: u32,
    /// Whether the last protection was a periodic one of an unchanged set,
    /// whose outcome the next reset judges.
    probing: bool,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking {
            registered: None,
            previous: Vec::new(),
            resets_since_protection: 0,
            period: REPROTECT_PERIOD_MIN,
            probing: false,
        }
    }
}

fn push_coalesced(ranges: &mut Vec<PageRange>, range: PageRange) {
    if range.is_empty() {
        return;
    }
    match ranges.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => ranges.push(range),
    }
}

/// `(offset, len, via)`: part of a host access, made directly or, for a
/// window of an unsealed buffer, through that buffer at the given offset.
type Piece<'a> = (u64, u64, Option<(&'a SharedBuffer, u64)>);

/// `(start, end, perms, file)`: a stretch of the reservation as the kernel
/// maps it, `file` being `(inode, offset of start)` or `None` if anonymous.
type Segment = (u64, u64, [u8; 4], Option<(u64, u64)>);

/// Appends a segment, merging it into the previous one when the kernel could
/// have merged the two mappings (same permissions, both anonymous or the same
/// file at contiguous offsets).
fn push_segment(segments: &mut Vec<Segment>, segment: Segment) {
    if let Some(last) = segments.last_mut()
        && last.1 == segment.0
        && last.2 == segment.2
    {
        let contiguous = match (last.3, segment.3) {
            (None, None) => true,
            (Some((inode, offset)), Some((next_inode, next_offset))) => {
                inode == next_inode && offset + (last.1 - last.0) == next_offset
            }
            _ => false,
        };
        if contiguous {
            last.1 = segment.1;
            return;
        }
    }
    segments.push(segment);
}
