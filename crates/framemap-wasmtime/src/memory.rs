//! [`FrameMemory`]: one framemap slot serving wasmtime as a `LinearMemory`.
//!
//! Every reservation a creator makes is a [`Slot`], made and registered with
//! the creator (by base address) once, then kept until its reservation is
//! released: serving one memory, or idle in the pool between two. The space
//! sits behind the slot's mutex, which handles take while the guest runs; the
//! guest itself never takes it (it accesses the memory through its base
//! pointer), and the accessible size wasmtime polls is cached in the
//! `FrameMemory`, which only `grow_to` changes.
//!
//! Invariant: each memory a slot serves is one generation of the slot. The
//! generation advances when the slot starts serving a memory and the slot is
//! live until that memory is dropped, so a handle, which names the
//! generation it was made for, never reaches an idle slot, nor a later
//! memory on the same reservation.

use crate::creator::CreatorShared;
use crate::error::Error;
use framemap::{BackingId, LinearSpace};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// One reservation of a creator, for its whole life.
#[derive(Debug)]
pub(crate) struct Slot {
    base: usize,
    state: Mutex<SlotState>,
}

/// A slot's space and whom it serves.
#[derive(Debug)]
pub(crate) struct SlotState {
    pub space: LinearSpace,
    /// The memory generation served now or last (0: none yet).
    generation: u64,
    /// Whether generation `generation` is alive.
    live: bool,
}

impl SlotState {
    /// The space, if the slot serves memory generation `generation` now.
    pub fn serving(&mut self, generation: u64) -> Option<&mut LinearSpace> {
        (self.live && self.generation == generation).then_some(&mut self.space)
    }

    /// The generation served now, if the slot serves a memory.
    pub fn current(&self) -> Option<u64> {
        self.live.then_some(self.generation)
    }

    /// Starts serving a new memory and returns its generation.
    pub fn start_serving(&mut self) -> u64 {
        self.generation += 1;
        self.live = true;
        self.generation
    }

    /// Stops serving the current memory: handles to it go stale at once.
    pub fn stop_serving(&mut self) {
        self.live = false;
    }
}

impl Slot {
    /// A slot around a freshly made space, serving nothing yet.
    pub(crate) fn new(space: LinearSpace) -> Arc<Slot> {
        let base = space.base().as_ptr() as usize;
        let slot = Arc::new(Slot { base, state: Mutex::new(SlotState { space, generation: 0, live: false }) });
        // Revocation reaches the space through its slot.
        let weak: Weak<Slot> = Arc::downgrade(&slot);
        slot.lock().space.set_window_host(weak);
        slot
    }

    pub(crate) fn base(&self) -> usize {
        self.base
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock cannot leave the space half-updated
        // in a way later users could observe (its methods keep the table and
        // the mappings in step), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl framemap::WindowHost for Slot {
    fn revoke_windows(&self, buffer: BackingId) -> framemap::Result<()> {
        // Idle slots too: a revoked buffer is unmapped everywhere.
        self.lock().space.unmap_buffer(buffer)
    }
}

/// The `LinearMemory` wasmtime holds for each framemap memory.
#[derive(Debug)]
pub(crate) struct FrameMemory {
    /// `None` only while the memory is being dropped.
    slot: Option<Arc<Slot>>,
    generation: u64,
    base: usize,
    creator: Arc<CreatorShared>,
    len: usize,
    capacity: usize,
    /// The image the memory started from, if any.
    image: Option<BackingId>,
}

impl FrameMemory {
    /// The memory served by `slot` as generation `generation`, whose space
    /// is `len` bytes long with room for `capacity`.
    pub(crate) fn new(
        slot: Arc<Slot>,
        generation: u64,
        (len, capacity): (u64, u64),
        creator: Arc<CreatorShared>,
        image: Option<BackingId>,
    ) -> FrameMemory {
        let base = slot.base();
        FrameMemory {
            slot: Some(slot),
            generation,
            base,
            creator,
            len: len as usize,
            capacity: capacity as usize,
            image,
        }
    }
}

// SAFETY: `as_ptr` is the base of a reservation of `capacity + guard` bytes
// that never moves while this value lives (the slot, which owns the space,
// is only given back in `drop`, and no one else changes its layout while it
// serves this generation except through this memory's own handles, which
// keep within it); `byte_size` bytes from it are mapped read-write and were
// zero when the memory was created (fresh pages, or a slot reset by the
// pool); growth maps zero pages in place and never relocates; everything
// past `byte_size` up to the end of the guard is `PROT_NONE`.
unsafe impl wasmtime::LinearMemory for FrameMemory {
    fn byte_size(&self) -> usize {
        self.len
    }

    fn byte_capacity(&self) -> usize {
        self.capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        let gone = || wasmtime::Error::new(Error::NotFramemap { base: self.base });
        let slot = self.slot.as_ref().ok_or_else(gone)?;
        let mut state = slot.lock();
        let space = state.serving(self.generation).ok_or_else(gone)?;
        space.grow_to(new_size as u64).map_err(|source| {
            wasmtime::Error::new(Error::Grow { base: self.base, requested: new_size as u64, source })
        })?;
        self.len = new_size;
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base as *mut u8
    }
}

impl Drop for FrameMemory {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.creator.release(slot, self.image);
        }
    }
}
