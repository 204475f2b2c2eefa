//! Changing mappings and the frame table together.
//!
//! [`LinearSpace::commit`] is the one entry for a change (invariant 1): it
//! folds in what the guards did behind the table's back
//! ([`LinearSpace::reconcile`], invariants 6 and 7), refuses a change over
//! the run budget before any kernel call (9), then `apply` replaces frames
//! with one `mmap(MAP_FIXED)` or one `mprotect` (2, 3), registering windows
//! of unsealed buffers with the SIGBUS guard first and refusing one past the
//! space's guard share (6), and keeps the per-backing page counts that let
//! go of images and buffers no frame names (5). A kernel failure re-covers
//! the range as `Unmapped`, or gives each run its protection back (8).

use super::LinearSpace;
use crate::buffer::SharedBuffer;
use crate::error::{Error, Result};
use crate::frame::{BackingId, Frame, FrameKind, FrameTag, Protection};
use crate::page::PageRange;
use crate::sys::{maps, mman, sigbus};

/// How many windows of unsealed buffers (ranges of the SIGBUS guard's
/// registry of `sigbus::CAPACITY` = 4096) one space may hold: a sixteenth,
/// so that one memory cannot exhaust the registry for every other.
pub const GUARD_SHARE: usize = 256;

/// The change [`LinearSpace::commit`] makes to a range.
#[derive(Clone, Copy, Debug)]
pub(super) enum Change {
    /// Replace the frames with fresh ones: contents are those of the new frame.
    Map(Frame),
    /// Keep the frames and their contents; set their protection.
    Protect(Protection),
}

impl LinearSpace {
    /// The one place mappings change (module invariants 1-3, 6 and 9): folds
    /// in what the guards did first, checks the run budget, then applies
    /// `change`.
    pub(super) fn commit(&mut self, range: PageRange, change: Change) -> Result<()> {
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
    pub(super) fn apply(&mut self, range: PageRange, change: Change) -> Result<()> {
        let (addr, len) = (self.addr_of(range.start), (range.len() * self.page) as usize);
        let page = self.page;
        let kernel =
            move |syscall, source| Error::Kernel { syscall, start: range.start * page, end: range.end * page, source };
        match change {
            Change::Map(frame) => {
                // Contents change without a write (even if the kernel fails:
                // the range may then be re-covered as Unmapped).
                self.checkpoints.note_remapped(range);
                // New mappings are not registered for write tracking yet
                // (a protection change keeps a mapping's registration).
                self.tracking.forget_registration();
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
        self.tracking.forget_registration();
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
                let offset = image.file_offset() + page * self.page;
                // SAFETY: as above; the image's file cannot shrink and
                // covers the range (`map_image`/`restore_layout` check
                // it against the image's length, which lies inside the file
                // from `file_offset`).
                let mapped = unsafe { mman::replace_with_file(addr, len, frame.prot(), image.fd(), offset, false) };
                mapped.map_err(|e| kernel("mmap", e))?;
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
}
