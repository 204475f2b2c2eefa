//! [`FrameMemory`]: one framemap slot serving wasmtime as a `LinearMemory`.
//!
//! The accessible size wasmtime polls is cached in the `FrameMemory`, which
//! only `grow_to` changes. A dropped memory gives its slot back to the
//! [`Recycler`] it was made with (the creator's pool), the only thing a
//! memory knows of its creator.

use crate::error::Error;
use crate::slot::Slot;
use framemap::BackingId;
use std::fmt::Debug;
use std::sync::Arc;

/// Where a dropped memory's slot goes: reset into the pool, or released.
pub(crate) trait Recycler: Debug + Send + Sync {
    /// Takes back the slot of a dropped memory that started from `image`.
    fn release(&self, slot: Arc<Slot>, image: Option<BackingId>);
}

/// A slot that has just started serving a memory: the memory's generation
/// and its space's accessible length and capacity, in bytes.
#[derive(Debug)]
pub(crate) struct Serving {
    pub slot: Arc<Slot>,
    pub generation: u64,
    pub len: u64,
    pub capacity: u64,
}

/// The `LinearMemory` wasmtime holds for each framemap memory.
#[derive(Debug)]
pub(crate) struct FrameMemory {
    /// `None` only while the memory is being dropped.
    slot: Option<Arc<Slot>>,
    generation: u64,
    base: usize,
    recycler: Arc<dyn Recycler>,
    len: usize,
    capacity: usize,
    /// The image the memory started from, if any.
    image: Option<BackingId>,
}

impl FrameMemory {
    /// The memory a slot serves (see [`Serving`]).
    pub(crate) fn new(serving: Serving, recycler: Arc<dyn Recycler>, image: Option<BackingId>) -> FrameMemory {
        let Serving { slot, generation, len, capacity } = serving;
        let base = slot.base();
        FrameMemory {
            slot: Some(slot),
            generation,
            base,
            recycler,
            len: len as usize,
            capacity: capacity as usize,
            image,
        }
    }

    /// The memory's identity: its slot's base and the generation it serves.
    pub(crate) fn identity(&self) -> (usize, u64) {
        (self.base, self.generation)
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
            self.recycler.release(slot, self.image);
        }
    }
}
