//! [`FrameMemoryCreator`]: wasmtime's `MemoryCreator`, backed by framemap spaces.
//!
//! Every memory (linear memories of every kind, shared memories and GC heaps:
//! wasmtime sends them all through the creator) is a [`LinearSpace`] whose
//! reservation is exactly the `reserved_size_in_bytes` plus
//! `guard_size_in_bytes` wasmtime asks for (enlarged only when the memory's
//! minimum does not fit), so compiled code keeps its bounds-check elision.
//! Dropped memories return their reset slot to a bounded pool. Each slot is
//! registered by base address once, when its reservation is made, and
//! deregistered when it is released (see [`crate::memory`] for how handles
//! tell the memories a slot serves apart). A memory planned to start from a
//! snapshot ([`crate::PreparedModule::instantiate_snapshot`]) is laid out
//! from it with [`LinearSpace::restore`] instead of from an image.

use crate::RestoreMode;
use crate::error::{Error, Result};
use crate::handle::{MemoryHandle, Owner};
use crate::image_plan::{self, SnapshotStart};
use crate::memory::{FrameMemory, Recycler, Serving};
use crate::pool::{IdleSlot, SlotKey, SlotPool};
use crate::slot::{RestoredFrom, Slot};
use crate::snapshot_buffers::RestoreSources;
use framemap::snapshot::RestoreOptions;
use framemap::{BackingId, Image, LinearSpace, PageRange, Prefetch, ResetPolicy, SpaceConfig};
use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use wasmtime::{AsContext, LinearMemory, Memory, MemoryType, SharedMemory};

/// How a [`FrameMemoryCreator`] sizes, recycles and resets memories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreatorConfig {
    /// Most idle slots kept for reuse (0 turns recycling off). Each idle slot
    /// holds address space and up to `reset.keep_resident` resident bytes.
    pub max_idle_slots: usize,
    /// How a dropped memory is reset before its slot is reused.
    pub reset: ResetPolicy,
    /// Reservation used when wasmtime leaves the choice to the creator
    /// (`reserved_size_in_bytes == None`), in bytes. framemap memories never
    /// move, so this bounds their growth.
    pub default_reservation: u64,
    /// Address space reserved for growth beyond the minimum when a memory's
    /// minimum is larger than the reservation wasmtime asks for, in bytes
    /// (never more than the memory's maximum allows). wasmtime reserves
    /// `memory_reservation_for_growth` in that case for its own memories but
    /// does not tell a creator that value: set this to the same value for the
    /// same growth behaviour. The default, 2 GiB, is wasmtime's default on
    /// 64-bit hosts. It is address space only: nothing is committed.
    pub growth_reserve: u64,
    /// Most runs one memory's frame table may hold (see
    /// [`framemap::LinearSpace::set_run_budget`]). Each run is at least one
    /// kernel mapping, and a process has `vm.max_map_count` of them (65 530
    /// by default) for everything, wasmtime's code and stacks included: a
    /// guest toggling the protection of every other page would otherwise
    /// exhaust them for all. A change over the budget fails; from a guest's
    /// memory-control call, it traps. The default, 1024, is far above what
    /// ordinary memories use (a handful of runs) and lets 60 memories at
    /// their budget still leave room to the rest of the process.
    pub max_runs: usize,
    /// How snapshot restores merge stored pages scattered through an image
    /// ([`framemap::snapshot::RestoreOptions::merge_gaps`]): segments of
    /// stored runs joined by at most this many image pages are mapped as
    /// one run of a merged image, made once per snapshot memory, so resets
    /// and restores walk a few mappings instead of one per run (each costs
    /// about 0.3 us per restore in the kernel). 0 turns it off. Default: 16
    /// host pages, one 64 KiB wasm page: a snapshot with a write in every
    /// wasm page restores as one run. The merged image costs at most 17
    /// pages of memory per stored page, once per process and snapshot.
    pub restore_merge_gaps: u64,
}

impl Default for CreatorConfig {
    fn default() -> Self {
        CreatorConfig {
            max_idle_slots: 64,
            reset: ResetPolicy::default(),
            default_reservation: 4 << 30,
            growth_reserve: 2 << 30,
            max_runs: 1024,
            restore_merge_gaps: 16,
        }
    }
}

/// Counters of a creator's activity since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreatorStats {
    /// Memories created with a new reservation.
    pub created: u64,
    /// Memories created on a recycled slot.
    pub reused: u64,
    /// Dropped memories whose slot went back to the pool.
    pub recycled: u64,
    /// Dropped memories whose reservation was released (pool full, recycling
    /// off, or the reset failed).
    pub released: u64,
    /// Idle slots in the pool now.
    pub idle: u64,
    /// Memories alive now.
    pub live: u64,
    /// Bytes prefaulted into fresh slots from remembered working sets.
    pub prefaulted: u64,
}

/// State shared by a creator and every memory it made (memories outlive
/// neither the pool nor the registry).
#[derive(Debug, Default)]
pub(crate) struct CreatorShared {
    config: CreatorConfig,
    /// `config.growth_reserve`, or what [`crate::engine`] copied from the
    /// engine's `memory_reservation_for_growth` since.
    growth_reserve: AtomicU64,
    pool: Mutex<SlotPool>,
    /// The pool's slot count as of its last change: read without the lock
    /// to decide whether a dropped memory is worth resetting (a stale value
    /// only costs a wasted reset or a released slot; the pool itself bounds
    /// its size).
    idle: AtomicUsize,
    /// Every slot whose reservation exists, serving a memory or idle.
    slots: Mutex<HashMap<usize, Weak<Slot>>>,
    created: AtomicU64,
    /// Slots taken from the pool that could not be laid out for their new
    /// memory (reused = slots taken - these; the pool counts the former, so
    /// the hot path updates no counter of its own).
    unusable: AtomicU64,
    released: AtomicU64,
    prefaulted: AtomicU64,
    /// Images whose working set is prefaulted into fresh slots, with the
    /// dirty runs the last reset of a slot serving them found.
    working_sets: Mutex<HashMap<BackingId, Vec<PageRange>>>,
    /// Whether `working_sets` may be non-empty (lets the hot path skip its
    /// lock when no image has prefaulting on, the common case).
    any_working_set: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the guarded data
    // half-updated in a way later users could observe, so poisoning is ignored.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CreatorShared {
    /// A slot of geometry `key` serving a new memory with `minimum`
    /// accessible bytes (a recycled slot if one is idle, a new reservation
    /// otherwise), the memory's generation, and its length and capacity.
    fn acquire(&self, key: SlotKey, minimum: u64, image: Option<&Image>) -> Result<Serving> {
        let recycled = {
            let mut pool = lock(&self.pool);
            let taken = pool.take(key, image.map(Image::id));
            self.idle.store(pool.len(), Ordering::Relaxed);
            taken
        };
        if let Some(IdleSlot { slot, .. }) = recycled {
            let served = {
                let mut state = slot.lock();
                state.space.restore_layout(minimum, image).is_ok().then(|| {
                    let (len, capacity) = (state.space.len(), state.space.capacity());
                    (state.start_serving(), len, capacity)
                })
            };
            if let Some((generation, len, capacity)) = served {
                return Ok(Serving { slot, generation, len, capacity });
            }
            // A slot that cannot be laid out is released and a new one is
            // made instead.
            self.unusable.fetch_add(1, Ordering::Relaxed);
            self.forget(&slot);
        }
        let create = |source| Error::Create { minimum, reserved: key.capacity, guard: key.guard, source };
        let initial_len = if image.is_some() { 0 } else { minimum };
        let mut space =
            LinearSpace::new(SpaceConfig { capacity: key.capacity, guard: key.guard, initial_len }).map_err(create)?;
        space.set_run_budget(self.config.max_runs);
        if let Some(image) = image {
            space.restore_layout(minimum, Some(image)).map_err(create)?;
            let working_set = self.working_sets_on().then(|| lock(&self.working_sets).get(&image.id()).cloned());
            if let Some(Some(ranges)) = working_set
                && let Ok(bytes) = space.populate(&ranges)
            {
                self.prefaulted.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        Ok(self.serve_new(space))
    }

    /// A slot of geometry `key` serving a new memory restored from
    /// `start` (a recycled slot if one is idle, a new reservation
    /// otherwise). The snapshot's memory must be at least `minimum` bytes
    /// and at most `maximum`: memories only grow.
    fn acquire_snapshot(
        &self,
        key: SlotKey,
        minimum: u64,
        maximum: Option<u64>,
        start: &SnapshotStart,
    ) -> Result<Serving> {
        let create = |source| Error::Create { minimum, reserved: key.capacity, guard: key.guard, source };
        let len = start.snapshot.memory(&start.memory).map_err(create)?.len;
        if len < minimum || maximum.is_some_and(|max| len > max) {
            return Err(Error::SnapshotMismatch {
                detail: format!(
                    "memory {:?} holds {len:#x} bytes; the module's memory is {minimum:#x} bytes at least{}",
                    start.memory,
                    maximum.map(|m| format!(" and {m:#x} at most")).unwrap_or_default()
                ),
            });
        }
        let recycled = {
            let mut pool = lock(&self.pool);
            // A slot that served this snapshot most likely holds its frames.
            let taken = pool.take(key, Some(start.snapshot.backing_id()));
            self.idle.store(pool.len(), Ordering::Relaxed);
            taken
        };
        // Windows are granted to the slot that serves the memory.
        let sources = |slot: &Arc<Slot>| {
            let owner: Weak<Slot> = Arc::downgrade(slot);
            RestoreSources { images: start.images.clone(), buffers: start.buffers.clone(), owner }
        };
        let (prefetch, recording) = match start.mode {
            RestoreMode::Prefetch(prefetch) => (prefetch, false),
            RestoreMode::Record => (Prefetch::Off, true),
        };
        let restored_from = RestoredFrom { snapshot: start.snapshot.id(), memory: start.memory.clone(), recording };
        if let Some(IdleSlot { slot, .. }) = recycled {
            let served = {
                let mut state = slot.lock();
                // Pooled slots were reset by `restore_dirty` when released
                // and touched by nothing since: frames already the
                // snapshot's keep their (initial) contents, unless the
                // restore records a working set (kept frames keep the
                // page-table entries of the slot's last memory).
                let merge_gaps = self.config.restore_merge_gaps;
                let options = RestoreOptions { prefetch, keep_reset_frames: !recording, merge_gaps };
                let restored = state.space.restore_with(&start.snapshot, &start.memory, &mut sources(&slot), options);
                restored.map(|_| {
                    let (len, capacity) = (state.space.len(), state.space.capacity());
                    let generation = state.start_serving();
                    state.restored = Some(restored_from.clone());
                    (generation, len, capacity)
                })
            };
            match served {
                Ok((generation, len, capacity)) => return Ok(Serving { slot, generation, len, capacity }),
                Err(e) => {
                    // Refused before any change (a wrong snapshot) or failed
                    // in the kernel: the slot is released either way.
                    self.unusable.fetch_add(1, Ordering::Relaxed);
                    self.forget(&slot);
                    return Err(create(e));
                }
            }
        }
        let mut space = LinearSpace::new(SpaceConfig { capacity: key.capacity, guard: key.guard, initial_len: 0 })
            .map_err(create)?;
        space.set_run_budget(self.config.max_runs);
        // The slot exists before the restore, so windows can be granted to
        // it; it is registered only once the restore succeeded (a failed
        // one drops it and its reservation).
        let slot = Slot::new(space);
        let options = RestoreOptions { prefetch, keep_reset_frames: false, merge_gaps: self.config.restore_merge_gaps };
        slot.lock().space.restore_with(&start.snapshot, &start.memory, &mut sources(&slot), options).map_err(create)?;
        let serving = self.serve_slot(slot);
        serving.slot.lock().restored = Some(restored_from);
        Ok(serving)
    }

    /// A new slot for `space`, registered, serving its first memory.
    fn serve_new(&self, space: LinearSpace) -> Serving {
        self.serve_slot(Slot::new(space))
    }

    /// `slot`, new, registered and serving its first memory.
    fn serve_slot(&self, slot: Arc<Slot>) -> Serving {
        let (len, capacity, generation) = {
            let mut state = slot.lock();
            (state.space.len(), state.space.capacity(), state.start_serving())
        };
        lock(&self.slots).insert(slot.base(), Arc::downgrade(&slot));
        self.created.fetch_add(1, Ordering::Relaxed);
        Serving { slot, generation, len, capacity }
    }

    /// Deregisters a slot whose reservation is about to be released.
    fn forget(&self, slot: &Slot) {
        lock(&self.slots).remove(&slot.base());
    }
}

impl Recycler for CreatorShared {
    fn release(&self, slot: Arc<Slot>, image: Option<BackingId>) {
        // A slot that will not be kept is not worth resetting, unless its
        // dirty pages are wanted as an image's working set.
        let room = self.idle.load(Ordering::Relaxed) < self.config.max_idle_slots;
        let learn = image.is_some_and(|id| self.working_sets_on() && lock(&self.working_sets).contains_key(&id));
        let (reset, key, holds) = {
            let mut state = slot.lock();
            state.stop_serving();
            let space = &mut state.space;
            // A poisoned memory (see `Error::Poisoned`) is never recycled.
            let reset =
                (room || learn) && space.poisoned_pages() == 0 && space.restore_dirty(self.config.reset).is_ok();
            if reset
                && learn
                && let Some(id) = image
                && let Some(working_set) = lock(&self.working_sets).get_mut(&id)
            {
                working_set.clear();
                working_set.extend_from_slice(space.last_dirty());
            }
            let key = SlotKey { capacity: space.capacity(), guard: space.guard() };
            (reset, key, image.filter(|&id| space.holds_image(id)))
        };
        let refused = if room && reset {
            let mut pool = lock(&self.pool);
            let put = pool.put(key, IdleSlot { slot, image: holds }, self.config.max_idle_slots);
            self.idle.store(pool.len(), Ordering::Relaxed);
            put.err().map(|idle| idle.slot)
        } else {
            Some(slot)
        };
        if let Some(slot) = refused {
            self.forget(&slot);
            self.released.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl CreatorShared {
    fn working_sets_on(&self) -> bool {
        self.any_working_set.load(Ordering::Acquire)
    }

    /// A handle to the memory at `base`, if a slot of this creator serves one.
    /// A handle to the memory at `base` if its slot still serves
    /// `generation` (the memory a plan recorded).
    fn handle_of(&self, base: usize, generation: u64, owner: Owner) -> Result<MemoryHandle> {
        let slot = lock(&self.slots).get(&base).and_then(Weak::upgrade).ok_or(Error::NotFramemap { base })?;
        if slot.lock().current() != Some(generation) {
            return Err(Error::NotFramemap { base });
        }
        Ok(MemoryHandle::new(&slot, generation, owner))
    }

    fn handle(&self, base: usize, owner: Owner) -> Result<MemoryHandle> {
        let slot = lock(&self.slots).get(&base).and_then(Weak::upgrade).ok_or(Error::NotFramemap { base })?;
        let generation = slot.lock().current().ok_or(Error::NotFramemap { base })?;
        Ok(MemoryHandle::new(&slot, generation, owner))
    }
}

/// A wasmtime `MemoryCreator` whose memories are framemap reservations.
///
/// Install it with [`crate::configure`]. Clones of the `Arc` share one pool.
#[derive(Debug)]
pub struct FrameMemoryCreator {
    shared: Arc<CreatorShared>,
}

impl FrameMemoryCreator {
    /// A creator with [`CreatorConfig::default`].
    pub fn new() -> Arc<Self> {
        Self::with_config(CreatorConfig::default())
    }

    /// A creator with `config`.
    pub fn with_config(config: CreatorConfig) -> Arc<Self> {
        let growth_reserve = AtomicU64::new(config.growth_reserve);
        Arc::new(FrameMemoryCreator {
            shared: Arc::new(CreatorShared { config, growth_reserve, ..CreatorShared::default() }),
        })
    }

    /// Identifies this creator (and its clones' shared state) to the
    /// instantiation calls that hand it images.
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// The configuration this creator was made with.
    pub fn config(&self) -> &CreatorConfig {
        &self.shared.config
    }

    /// The growth reserve in force (see [`CreatorConfig::growth_reserve`]):
    /// the configured one, or the last engine's `memory_reservation_for_growth`
    /// copied by [`crate::engine`].
    pub fn growth_reserve(&self) -> u64 {
        self.shared.growth_reserve.load(Ordering::Relaxed)
    }

    pub(crate) fn set_growth_reserve(&self, bytes: u64) {
        self.shared.growth_reserve.store(bytes, Ordering::Relaxed);
    }

    /// Counters of what this creator did so far.
    pub fn stats(&self) -> CreatorStats {
        let s = &self.shared;
        let (taken, kept, idle) = {
            let pool = lock(&s.pool);
            (pool.taken(), pool.kept(), pool.len() as u64)
        };
        let created = s.created.load(Ordering::Relaxed);
        let reused = taken.saturating_sub(s.unusable.load(Ordering::Relaxed));
        let released = s.released.load(Ordering::Relaxed);
        CreatorStats {
            created,
            reused,
            recycled: kept,
            released,
            prefaulted: s.prefaulted.load(Ordering::Relaxed),
            idle,
            // Every memory made is dropped once, as recycled or released.
            live: (created + reused).saturating_sub(kept + released),
        }
    }

    /// Turns working-set prefaulting on or off for `image`: when on, each
    /// reset of a memory that started from `image` remembers the pages its
    /// guest dirtied, and a memory given a fresh slot for `image` has those
    /// pages populated for writing in one batched call
    /// (`MADV_POPULATE_WRITE`) instead of taking one fault per page.
    pub fn prefault_working_set(&self, image: &Image, enable: bool) {
        let mut sets = lock(&self.shared.working_sets);
        if enable {
            sets.entry(image.id()).or_default();
        } else {
            sets.remove(&image.id());
        }
        self.shared.any_working_set.store(!sets.is_empty(), Ordering::Release);
    }

    /// Releases every idle slot's reservation.
    pub fn clear_pool(&self) {
        let drained = {
            let mut pool = lock(&self.shared.pool);
            self.shared.idle.store(0, Ordering::Relaxed);
            pool.drain()
        };
        for idle in drained {
            self.shared.forget(&idle.slot);
        }
    }

    /// A handle to `memory` of `store`, which must have been created by this
    /// creator. Its changes take `store` (see [`MemoryHandle`]).
    pub fn handle(&self, store: impl AsContext, memory: &Memory) -> Result<MemoryHandle> {
        let owner = Owner::of_store(&store);
        self.shared.handle(memory.data_ptr(store) as usize, owner)
    }

    /// A handle to the memory a plan recorded as (base, generation), owned
    /// by `store` (the caller instantiated it there).
    pub(crate) fn handle_of(&self, store: &impl AsContext, identity: (usize, u64)) -> Result<MemoryHandle> {
        self.shared.handle_of(identity.0, identity.1, Owner::of_store(store))
    }

    /// A handle to a shared `memory` created by this creator.
    pub fn handle_shared(&self, memory: &SharedMemory) -> Result<MemoryHandle> {
        self.shared.handle(memory.data().as_ptr() as usize, Owner::Shared)
    }

    /// Handles to every memory this creator has alive now, by base address.
    /// Their stores are unknown, so they inspect only: changes and byte
    /// copies fail with [`Error::StoreUnknown`].
    pub fn live_memories(&self) -> Vec<MemoryHandle> {
        let mut slots: Vec<_> = lock(&self.shared.slots).values().filter_map(Weak::upgrade).collect();
        slots.sort_by_key(|slot| slot.base());
        slots
            .iter()
            .filter_map(|slot| {
                let generation = slot.lock().current()?;
                Some(MemoryHandle::new(slot, generation, Owner::Unknown))
            })
            .collect()
    }

    /// A report on every memory alive now (see [`MemoryHandle::report`]);
    /// memories dropped meanwhile are skipped.
    pub fn live_reports(&self) -> Vec<crate::report::FrameReport> {
        self.live_memories().iter().filter_map(|m| m.report().ok()).collect()
    }
}

// SAFETY: every memory returned is a `FrameMemory`, whose `LinearMemory` impl
// upholds wasmtime's contract (see there): a fixed reservation of at least
// `reserved_size_in_bytes` bytes followed by `guard_size_in_bytes`
// inaccessible bytes, zero-filled accessible bytes, and a base that never moves.
unsafe impl wasmtime::MemoryCreator for FrameMemoryCreator {
    fn new_memory(
        &self,
        ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> std::result::Result<Box<dyn LinearMemory>, String> {
        // usize -> u64 is lossless on every target wasmtime supports.
        let reserved = reserved_size_in_bytes.map_or(self.shared.config.default_reservation, |r| r as u64);
        let growth_reserve = self.shared.growth_reserve.load(Ordering::Relaxed);
        let key = slot_key(
            &CreatorConfig { growth_reserve, ..self.shared.config },
            minimum as u64,
            maximum.map(|m| m as u64),
            reserved,
            guard_size_in_bytes as u64,
        )
        .map_err(|e| e.to_string())?;
        let minimum = minimum as u64;
        let maximum = maximum.map(|m| m as u64);
        let creator = Arc::as_ptr(&self.shared) as usize;
        let memory = image_plan::with_plan(creator, &ty, |planned| {
            if let Some(start) = planned.and_then(|p| p.snapshot.as_ref()) {
                let serving = self.shared.acquire_snapshot(key, minimum, maximum, start).map_err(|e| e.to_string())?;
                let backing = Some(start.snapshot.backing_id());
                return Ok::<_, String>(FrameMemory::new(serving, self.shared.clone(), backing));
            }
            let image = planned.and_then(|p| p.image.as_ref());
            let serving = self.shared.acquire(key, minimum, image).map_err(|e| e.to_string())?;
            Ok::<_, String>(FrameMemory::new(serving, self.shared.clone(), image.map(Image::id)))
        })?;
        image_plan::note_served(creator, memory.identity());
        Ok(Box::new(memory))
    }
}

/// The geometry of a memory's reservation, as wasmtime's own memories have
/// it: `reserved` bytes, or, when the minimum does not fit, the minimum plus
/// `growth_reserve` (bounded by the maximum); then `guard` bytes. A memory
/// that would reserve nothing at all (no capacity and no guard) gets one
/// inaccessible guard page, since a reservation cannot be empty.
fn slot_key(config: &CreatorConfig, minimum: u64, maximum: Option<u64>, reserved: u64, guard: u64) -> Result<SlotKey> {
    let page = framemap::host_page_size() as u64;
    // Host pages are a power of two: round with a mask, not a division.
    let round =
        |what, value: u64| value.checked_add(page - 1).map(|v| v & !(page - 1)).ok_or(Error::TooLarge { what, value });
    let minimum = round("memory minimum", minimum)?;
    let capacity = if minimum <= reserved {
        reserved
    } else {
        let grown = minimum.saturating_add(config.growth_reserve);
        let ceiling = maximum.map_or(u64::MAX, |maximum| maximum.checked_next_multiple_of(page).unwrap_or(u64::MAX));
        // Both bounds are page multiples, unless the saturated sum is.
        grown.min(ceiling).max(minimum) / page * page
    };
    let guard = round("guard size", guard)?;
    let guard = if capacity == 0 && guard == 0 { page } else { guard };
    Ok(SlotKey { capacity, guard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_geometry_follows_wasmtime_s() {
        let page = framemap::host_page_size() as u64;
        let config = CreatorConfig { growth_reserve: 1 << 20, ..CreatorConfig::default() };
        let key = |minimum, maximum, reserved, guard| slot_key(&config, minimum, maximum, reserved, guard).unwrap();
        // The minimum fits: exactly what wasmtime asked for.
        assert_eq!(key(1 << 16, None, 4 << 30, 2 << 30), SlotKey { capacity: 4 << 30, guard: 2 << 30 });
        // It does not: minimum plus the growth reserve, bounded by the maximum.
        assert_eq!(key(8 << 16, None, 1 << 16, 0), SlotKey { capacity: (8 << 16) + (1 << 20), guard: 0 });
        assert_eq!(key(8 << 16, Some(10 << 16), 1 << 16, 0), SlotKey { capacity: 10 << 16, guard: 0 });
        assert_eq!(key(8 << 16, Some(8 << 16), 1 << 16, 0), SlotKey { capacity: 8 << 16, guard: 0 });
        // Byte-granular sizes are rounded to host pages.
        assert_eq!(key(1, Some(3), 0, 0), SlotKey { capacity: page, guard: 0 });
        // Nothing to reserve at all: one guard page.
        assert_eq!(key(0, None, 0, 0), SlotKey { capacity: 0, guard: page });
        assert!(matches!(slot_key(&config, u64::MAX, None, 0, 0), Err(Error::TooLarge { what: "memory minimum", .. })));
    }
}
