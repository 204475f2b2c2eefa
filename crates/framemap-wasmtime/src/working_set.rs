//! Working sets of instance snapshots: how restores bring them in
//! ([`RestoreMode`]), and recording one from an instance's first calls
//! ([`PreparedModule::working_set`], [`PreparedModule::write_working_set`]).
//!
//! A snapshot records, per memory, the pages its instances touch first
//! after a restore; its file packs their data pages together and a restore
//! prefetches them, so the first call does not fault them in one by one
//! (ARCHITECTURE.md, "Working sets"). Recording goes through an instance
//! restored from the snapshot with [`RestoreMode::Record`]: every page is
//! mapped fresh (even on a recycled slot, whose kept pages would still
//! have page-table entries of its last memory) and nothing is prefetched,
//! so the pages that have an entry after the first calls are exactly the
//! pages they touched (with the kernel's fault-around neighbours). The new
//! file holds the snapshot's state, not the instance's after the calls:
//! the calls were a rehearsal, and the working set is recorded for the
//! state every later instance starts from.

use crate::error::{Error, Result};
use crate::prepared::PreparedModule;
use crate::state::memory_export;
use framemap::snapshot::{Snapshot, SnapshotWriter};
use framemap::{PageRange, Prefetch};
use wasmtime::{AsContextMut, Instance};

/// How [`PreparedModule::instantiate_snapshot`] (and every other snapshot
/// restore of the module) lays each memory out and brings in the working
/// set its snapshot records ([`Snapshot::working_set`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreMode {
    /// Prefetch the recorded working set as given, right after the layout
    /// ([`framemap::LinearSpace::prefetch`]): [`Prefetch::Read`] (the
    /// default) maps each page as a read would, so reads of it take no
    /// fault but a first write still copies; [`Prefetch::Write`] copies the
    /// writable pages up front, so writes take none either (every page is
    /// then written, and costs memory and the next reset); [`Prefetch::Off`]
    /// prefetches nothing. A recycled slot keeps the frames that already
    /// are the snapshot's (and the pages its last memory mapped of them).
    Prefetch(Prefetch),
    /// Restore for recording the working set
    /// ([`PreparedModule::working_set`]): nothing prefetched and every page
    /// mapped fresh, recycled slots included, so that the pages with a
    /// page-table entry are the pages touched since the restore. The first
    /// calls of such an instance fault every page in: use it to record,
    /// not to serve.
    Record,
}

impl Default for RestoreMode {
    fn default() -> Self {
        RestoreMode::Prefetch(Prefetch::Read)
    }
}

/// The working set recorded for one memory of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryWorkingSet {
    /// The memory's name in the snapshot (`framemap:memory:N`, see
    /// [`crate::state`]).
    pub memory: String,
    /// The pages touched since the restore, as sorted, merged ranges of
    /// host pages, inside the snapshot's memory.
    pub pages: Vec<PageRange>,
}

impl PreparedModule {
    /// Sets how snapshot restores of this module lay memories out and bring
    /// their working sets in (see [`RestoreMode`]; the default prefetches
    /// with [`Prefetch::Read`]). A clone of the module is cheap: keep one
    /// with [`RestoreMode::Record`] for recording and one to serve with.
    /// [`PreparedModule::instance_pre`] takes the mode the module has then.
    pub fn set_restore_mode(&mut self, mode: RestoreMode) {
        self.restore_mode = mode;
    }

    /// How snapshot restores of this module lay memories out (see
    /// [`PreparedModule::set_restore_mode`]).
    pub fn restore_mode(&self) -> RestoreMode {
        self.restore_mode
    }

    /// The working set of each memory of `instance`: the pages touched
    /// since it was restored from `snapshot` (by this module, with
    /// [`RestoreMode::Record`]), clipped to the snapshot's memory (pages a
    /// `memory.grow` added since are not the snapshot's). A superset of
    /// what was touched, never smaller but for pages the kernel reclaimed
    /// since (see [`framemap::LinearSpace::touched_pages`]: a read fault
    /// on a file page maps its cached neighbours too). The guest must not
    /// be running (the store is borrowed mutably).
    ///
    /// Refused with [`Error::NotSnapshottable`] for a module without
    /// snapshot support, [`Error::SnapshotMismatch`] for an instance of
    /// another module, and [`Error::WorkingSetUnavailable`] for an
    /// instance not restored from `snapshot` for recording.
    pub fn working_set(
        &self,
        mut store: impl AsContextMut,
        instance: &Instance,
        snapshot: &Snapshot,
    ) -> Result<Vec<MemoryWorkingSet>> {
        let support = self.snapshot_support()?;
        let page = framemap::host_page_size() as u64;
        let mut sets = Vec::with_capacity(support.layout.memories.len());
        for &index in &support.layout.memories {
            let name = memory_export(index);
            let memory = instance.get_memory(&mut store, &name).ok_or_else(|| Error::SnapshotMismatch {
                detail: format!("the instance has no export {name:?}: is it an instance of this module?"),
            })?;
            let record = snapshot
                .memory(&name)
                .map_err(|_| Error::SnapshotMismatch { detail: format!("the snapshot holds no memory {name:?}") })?;
            let handle = self.creator.handle(&store, &memory)?;
            let pages = handle.touched_since_restore(snapshot.id(), &name, record.len.div_ceil(page))?;
            sets.push(MemoryWorkingSet { memory: name, pages });
        }
        Ok(sets)
    }

    /// Records the working set of each memory of `instance` (see
    /// [`PreparedModule::working_set`]: restored from `snapshot` with
    /// [`RestoreMode::Record`], then given its first calls) and writes into
    /// `writer` a new snapshot: `snapshot`'s state (its chain flattened:
    /// every memory and global as the snapshot has them, not as the calls
    /// left them) with those working sets recorded and their data pages
    /// packed first ([`SnapshotWriter::add_flattened_with_working_sets`]).
    /// A restore from it prefetches them, as the module's [`RestoreMode`]
    /// says. `writer` must be new (no parent, nothing captured). Returns
    /// the sets recorded. Refused as `working_set` is, with nothing
    /// written.
    pub fn write_working_set(
        &self,
        store: impl AsContextMut,
        instance: &Instance,
        snapshot: &Snapshot,
        writer: &mut SnapshotWriter,
    ) -> Result<Vec<MemoryWorkingSet>> {
        let sets = self.working_set(store, instance, snapshot)?;
        let given: Vec<(&str, &[PageRange])> = sets.iter().map(|s| (s.memory.as_str(), s.pages.as_slice())).collect();
        writer.add_flattened_with_working_sets(snapshot, &given).map_err(Error::Snapshot)?;
        Ok(sets)
    }
}
