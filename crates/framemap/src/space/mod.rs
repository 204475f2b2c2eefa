//! A linear space: one reservation, its frame table, and an accessible size.
//!
//! The space is one type whose methods live in rooms, one concept each; each
//! room's module doc names the invariants below that it keeps:
//! - this file: the [`LinearSpace`] struct, its geometry and accessors,
//!   creation (registration with the hole guard, 7) and drop (6, 7);
//! - `mapping`: the public mapping operations (grow, protect, map, unmap,
//!   discard), which check their whole argument, then commit (4, 5);
//! - `commit`: the one place mappings change, the run budget, the guard
//!   share, recovery from kernel failures, and folding in what the guards
//!   did behind the table's back (1, 2, 3, 5, 6, 7, 8, 9);
//! - `reset`: bringing contents and layout back (`reset`, `restore_dirty`,
//!   `restore_layout`, `populate`);
//! - `tracking`: write tracking, and the re-protection policy as a pure
//!   state machine;
//! - `written`: a checkpoint's scan for the pages written since their last
//!   protection, cut along the table into stretches, each asked the query
//!   that is exact there and cheapest;
//! - `checkpoint`: which pages changed since a point of a live memory's
//!   life (what snapshots capture), without hiding any page from resets;
//! - `layout`: laying a memory out from a list of frames (snapshot
//!   restore), through `commit` (1, 4, 5, 7);
//! - `access`: host reads and writes (6);
//! - `inspect`: validation against the kernel, summary, residency (1, 6, 7);
//! - `prefetch`: the working set: pages used since a layout
//!   (`touched_pages`), and bringing recorded ones in (`prefetch`),
//!   contents and page-table entries only (1).
//!
//! Invariants:
//! 1. The frame table equals the kernel's mappings of the reservation. Every
//!    change of mapping or protection goes through [`LinearSpace::commit`],
//!    or through `apply`, its second half, where folding in the guards and
//!    the run budget must not stop the change (revocation, and `reconcile`
//!    itself); `apply` makes the kernel call and updates the table to what
//!    the kernel then has (invariant 8 for failures). Nothing else touches
//!    mappings (resets, write tracking and prefetching change contents,
//!    page-table entries and write-protection bits only).
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
//!    ([`LinearSpace::set_window_owner`]), so revoking the buffer reaches it.
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

mod access;
mod checkpoint;
mod commit;
mod inspect;
mod layout;
mod mapping;
mod prefetch;
mod reset;
mod tracking;
mod written;

pub use checkpoint::Checkpoint;
pub use commit::GUARD_SHARE;
pub use prefetch::{Prefetch, PrefetchReport};
pub use reset::{ResetPolicy, ResetReport};

use crate::buffer::{SharedBuffer, WindowOwner};
use crate::error::{Error, Result};
use crate::frame::{BackingId, Frame, FrameTag};
use crate::image::Image;
use crate::page::PageRange;
use crate::reservation::Reservation;
use crate::sys::{hole_guard, mman, sigbus};
use crate::table::FrameTable;
use rustc_hash::FxHashMap as HashMap;
use std::ptr::NonNull;
use std::sync::Weak;
use tracking::Tracking;

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
    /// The dirty runs the last [`LinearSpace::restore_dirty`] found.
    last_dirty: Vec<PageRange>,
    /// Write tracking (see [`LinearSpace::restore_dirty`]).
    tracking: Tracking,
    /// This space's entry in the hole guard (invariant 7).
    hole_guard: hole_guard::GuardId,
    /// Pages the hole guard had replaced at the last [`LinearSpace::reconcile`].
    sunk_seen: u64,
    /// Most runs the table may hold (invariant 9).
    run_budget: usize,
    /// The owner revocation reaches this space through; only grants issued
    /// for it are accepted (invariant 5).
    window_owner: Option<Weak<dyn WindowOwner>>,
    /// Checkpoints of this life, and what they owe resets.
    checkpoints: checkpoint::Checkpoints,
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
            window_owner: None,
            checkpoints: checkpoint::Checkpoints::default(),
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

    /// Pages the hole guard replaced in this space since it was made: pages
    /// that host code (a wasmtime libcall, a WASI call, `Memory::data`)
    /// touched while they were inaccessible. Non-zero means the memory is
    /// poisoned: those pages' contents are lost (they read zero, or what
    /// host code wrote to them since), and [`LinearSpace::reconcile`] makes
    /// them read-write `Zero` frames.
    pub fn poisoned_pages(&self) -> u64 {
        hole_guard::sunk_pages(self.hole_guard)
    }

    /// Tells the hole guard where the accessible pages end (invariant 7).
    fn guard_accessible_pages(&self, end: u64) {
        hole_guard::set_end(self.hole_guard, self.addr_of(end) as usize);
    }

    /// `madvise(MADV_DONTNEED)` on `range`: contents only, mappings unchanged.
    fn drop_pages(&mut self, range: PageRange) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        self.checkpoints.note_remapped(range);
        // SAFETY: `range` lies inside the reservation; dropping pages changes
        // contents, never mappings, so the table stays equal to the kernel.
        unsafe { mman::discard(self.addr_of(range.start), (range.len() * self.page) as usize) }.map_err(|source| {
            Error::Kernel { syscall: "madvise", start: range.start * self.page, end: range.end * self.page, source }
        })
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
