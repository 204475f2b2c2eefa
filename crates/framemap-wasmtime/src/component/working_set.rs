//! Working sets of component snapshots: [`RestoreMode`] for component
//! restores, and recording the pages a restored component's first calls
//! touch, as [`crate::PreparedModule`] does for modules (see
//! `crate::working_set`: record with [`RestoreMode::Record`], then write
//! the snapshot's state with the sets, flattened).

use super::PreparedComponent;
use super::snapshot::{TrackedInstance, memory_name};
use crate::error::{Error, Result};
use crate::{MemoryWorkingSet, RestoreMode};
use framemap::PageRange;
use framemap::snapshot::{Snapshot, SnapshotWriter};

impl PreparedComponent {
    /// Sets how snapshot restores of this component lay its core memories
    /// out and bring their working sets in (see [`RestoreMode`]; the
    /// default prefetches with [`framemap::Prefetch::Read`]).
    /// [`PreparedComponent::instance_pre`] takes the mode the component has
    /// then.
    pub fn set_restore_mode(&mut self, mode: RestoreMode) {
        self.restore_mode = mode;
    }

    /// How snapshot restores of this component lay memories out (see
    /// [`PreparedComponent::set_restore_mode`]).
    pub fn restore_mode(&self) -> RestoreMode {
        self.restore_mode
    }

    /// The working set of each core memory of `tracked`: the pages touched
    /// since it was restored from `snapshot` (by this component, with
    /// [`RestoreMode::Record`]), clipped to the snapshot's memory, as
    /// [`crate::PreparedModule::working_set`] gives them for a module.
    /// The guest must not be running.
    ///
    /// Refused with [`Error::NotSnapshottable`] for a component without
    /// snapshot support, [`Error::SnapshotMismatch`] for an instance of
    /// another component or a snapshot without its memories, and
    /// [`Error::WorkingSetUnavailable`] for an instance not restored from
    /// `snapshot` for recording.
    pub fn working_set(&self, tracked: &TrackedInstance, snapshot: &Snapshot) -> Result<Vec<MemoryWorkingSet>> {
        self.snapshot_support()?;
        let planned = self.planned_memories();
        if tracked.memories().len() != planned {
            return Err(Error::SnapshotMismatch {
                detail: format!(
                    "the instance has {} tracked memories, the component plans {planned}: is it an instance of this component?",
                    tracked.memories().len()
                ),
            });
        }
        let page = framemap::host_page_size() as u64;
        let mut sets = Vec::with_capacity(planned);
        for (k, handle) in tracked.memories().iter().enumerate() {
            let name = memory_name(k);
            let record = snapshot
                .memory(&name)
                .map_err(|_| Error::SnapshotMismatch { detail: format!("the snapshot holds no memory {name:?}") })?;
            let pages = handle.touched_since_restore(snapshot.id(), &name, record.len.div_ceil(page))?;
            sets.push(MemoryWorkingSet { memory: name, pages });
        }
        Ok(sets)
    }

    /// Records the working set of each core memory of `tracked` (see
    /// [`PreparedComponent::working_set`]) and writes into `writer` a new
    /// snapshot: `snapshot`'s state, flattened, with those working sets
    /// recorded and their data pages packed first, as
    /// [`crate::PreparedModule::write_working_set`] does. `writer` must be
    /// new. Returns the sets recorded; refused as `working_set` is, with
    /// nothing written.
    pub fn write_working_set(
        &self,
        tracked: &TrackedInstance,
        snapshot: &Snapshot,
        writer: &mut SnapshotWriter,
    ) -> Result<Vec<MemoryWorkingSet>> {
        let sets = self.working_set(tracked, snapshot)?;
        let given: Vec<(&str, &[PageRange])> = sets.iter().map(|s| (s.memory.as_str(), s.pages.as_slice())).collect();
        writer.add_flattened_with_working_sets(snapshot, &given).map_err(Error::Snapshot)?;
        Ok(sets)
    }
}
