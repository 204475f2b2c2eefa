//! [`FrameMemory`]: one framemap space as a wasmtime `LinearMemory`.
//!
//! The space sits behind a mutex in a [`LiveMemory`] that handles can reach
//! while the guest runs; the guest itself never takes the lock (it accesses
//! the memory through its base pointer), and the accessible size wasmtime
//! polls is cached in the `FrameMemory`, which only `grow_to` changes.

use crate::creator::CreatorShared;
use crate::error::Error;
use framemap::{BackingId, LinearSpace};
use std::sync::{Arc, Mutex, MutexGuard};

/// A memory's space, reachable from handles while the memory is alive.
#[derive(Debug)]
pub(crate) struct LiveMemory {
    base: usize,
    /// `None` only while the memory is being dropped.
    space: Mutex<Option<LinearSpace>>,
}

impl LiveMemory {
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<LinearSpace>> {
        self.space.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl framemap::WindowHost for LiveMemory {
    fn revoke_windows(&self, buffer: BackingId) {
        if let Some(space) = self.lock().as_mut() {
            // A failed unmap (ENOMEM) leaves the window on the buffer's
            // still-valid file: memory-safe, and `validate` reports it.
            let _ = space.unmap_buffer(buffer);
        }
    }
}

/// The `LinearMemory` wasmtime holds for each framemap memory.
#[derive(Debug)]
pub(crate) struct FrameMemory {
    live: Arc<LiveMemory>,
    creator: Arc<CreatorShared>,
    len: usize,
    capacity: usize,
    /// The image the memory started from, if any.
    image: Option<BackingId>,
}

impl FrameMemory {
    pub(crate) fn new(space: LinearSpace, creator: Arc<CreatorShared>, image: Option<BackingId>) -> FrameMemory {
        let (len, capacity) = (space.len() as usize, space.capacity() as usize);
        let live = Arc::new(LiveMemory { base: space.base().as_ptr() as usize, space: Mutex::new(Some(space)) });
        FrameMemory { live, creator, len, capacity, image }
    }

    pub(crate) fn live(&self) -> &Arc<LiveMemory> {
        &self.live
    }
}

// SAFETY: `as_ptr` is the base of a reservation of `capacity + guard` bytes
// that never moves while this value lives (the space is only taken out in
// `drop`); `byte_size` bytes from it are mapped read-write and were zero when
// the memory was created (fresh pages, or a slot reset by the pool); growth
// maps zero pages in place and never relocates; everything past `byte_size`
// up to the end of the guard is `PROT_NONE`.
unsafe impl wasmtime::LinearMemory for FrameMemory {
    fn byte_size(&self) -> usize {
        self.len
    }

    fn byte_capacity(&self) -> usize {
        self.capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        let mut guard = self.live.lock();
        let Some(space) = guard.as_mut() else {
            return Err(wasmtime::Error::new(Error::NotFramemap { base: self.live.base }));
        };
        space.grow_to(new_size as u64).map_err(|source| {
            wasmtime::Error::new(Error::Grow { base: self.live.base, requested: new_size as u64, source })
        })?;
        self.len = new_size;
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.live.base as *mut u8
    }
}

impl Drop for FrameMemory {
    fn drop(&mut self) {
        let space = self.live.lock().take();
        if let Some(space) = space {
            self.creator.release(self.live.base, space, self.image);
        }
    }
}
