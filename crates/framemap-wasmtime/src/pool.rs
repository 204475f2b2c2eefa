//! Slot recycling: idle reservations waiting to serve the next memory.
//!
//! Invariant: no slot in the pool serves a memory, and every slot's space
//! has had its contents reset (all pages
//! read as their frame's initial contents: zero here), so handing it out only
//! needs its layout set for the new memory's size
//! ([`framemap::LinearSpace::restore_layout`]). Slots are matched by exact
//! geometry (capacity and guard), so a recycled memory has precisely the
//! reservation wasmtime asked for.

use crate::slot::Slot;
use framemap::BackingId;
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

/// The geometry that decides whether a slot can serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SlotKey {
    pub capacity: u64,
    pub guard: u64,
}

/// An idle slot and the image its space was reset to, if any.
#[derive(Debug)]
pub(crate) struct IdleSlot {
    pub slot: Arc<Slot>,
    pub image: Option<BackingId>,
}

/// Idle, reset slots by geometry, bounded in number.
#[derive(Debug, Default)]
pub(crate) struct SlotPool {
    idle: HashMap<SlotKey, Vec<IdleSlot>>,
    count: usize,
    /// Slots handed out by [`SlotPool::take`] since the pool was made.
    taken: u64,
    /// Slots kept by [`SlotPool::put`] since the pool was made.
    kept: u64,
}

impl SlotPool {
    /// Takes an idle slot of geometry `key`: the most recently used one that
    /// already holds image `prefer` (its image frames are mapped and its
    /// contents reset to the image, so reuse costs almost nothing), else the
    /// most recently used one (its kept-resident pages are the likeliest to
    /// still be in cache).
    pub fn take(&mut self, key: SlotKey, prefer: Option<BackingId>) -> Option<IdleSlot> {
        let slots = self.idle.get_mut(&key)?;
        let holding = prefer.and_then(|id| slots.iter().rposition(|s| s.image == Some(id)));
        let space = match holding {
            Some(i) => slots.remove(i),
            None => slots.pop()?,
        };
        self.count -= 1;
        self.taken += 1;
        Some(space)
    }

    /// Keeps `slot` (of geometry `key`) for reuse if fewer than `limit`
    /// slots are idle; otherwise hands it back.
    pub fn put(&mut self, key: SlotKey, slot: IdleSlot, limit: usize) -> Result<(), IdleSlot> {
        if self.count >= limit {
            return Err(slot);
        }
        self.idle.entry(key).or_default().push(slot);
        self.count += 1;
        self.kept += 1;
        Ok(())
    }

    /// Number of idle slots.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Slots handed out since the pool was made.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Slots kept for reuse since the pool was made.
    pub fn kept(&self) -> u64 {
        self.kept
    }

    /// Empties the pool, handing out every idle slot.
    pub fn drain(&mut self) -> Vec<IdleSlot> {
        self.count = 0;
        self.idle.drain().flat_map(|(_, slots)| slots).collect()
    }
}
