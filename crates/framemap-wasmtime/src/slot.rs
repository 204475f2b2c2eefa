//! [`Slot`]: one reservation of a creator, for its whole life.
//!
//! Every reservation a creator makes is a slot, made and registered with the
//! creator (by base address) once, then kept until its reservation is
//! released: serving one memory, or idle in the pool between two. The space
//! sits behind the slot's mutex, which handles take while the guest runs; the
//! guest itself never takes it (it accesses the memory through its base
//! pointer).
//!
//! Invariant: each memory a slot serves is one generation of the slot. The
//! generation advances when the slot starts serving a memory and the slot is
//! live until that memory is dropped, so a handle, which names the
//! generation it was made for, never reaches an idle slot, nor a later
//! memory on the same reservation.

use framemap::snapshot::Digest;
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
    /// The snapshot the memory served now was restored from, if it was
    /// (set right after [`SlotState::start_serving`], which clears it).
    pub restored: Option<RestoredFrom>,
}

/// Where the memory a slot serves was restored from, and how: what
/// recording its working set needs to know ([`crate::PreparedModule::working_set`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RestoredFrom {
    /// The snapshot's id.
    pub snapshot: Digest,
    /// The memory's name in it.
    pub memory: String,
    /// Restored for recording ([`crate::RestoreMode::Record`]): every page
    /// mapped fresh, none prefetched, so the pages with an entry are the
    /// pages touched since.
    pub recording: bool,
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
        self.restored = None;
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
        let slot =
            Arc::new(Slot { base, state: Mutex::new(SlotState { space, generation: 0, live: false, restored: None }) });
        // Revocation reaches the space through its slot.
        let weak: Weak<Slot> = Arc::downgrade(&slot);
        slot.lock().space.set_window_owner(weak);
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

impl framemap::WindowOwner for Slot {
    fn revoke_windows(&self, buffer: BackingId) -> framemap::Result<()> {
        // Idle slots too: a revoked buffer is unmapped everywhere.
        self.lock().space.unmap_buffer(buffer)
    }
}
