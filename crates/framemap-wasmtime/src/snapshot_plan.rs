//! Planning a restore: a snapshot checked against the memories, globals
//! and buffers of what it is restored into (a module or a component), and
//! each memory planned from it, before anything is instantiated.
//!
//! Invariant: a snapshot that does not fit (another module's memories, a
//! missing global, a window of a buffer the host does not name, a broken
//! chain) is refused here, so the creator never starts a restore it cannot
//! finish for want of something the snapshot needs from the host.

use crate::error::{Error, Result};
use crate::image_plan::{MemoryFacts, MemoryPlan, SnapshotStart};
use crate::snapshot_buffers::SnapshotBuffers;
use crate::working_set::RestoreMode;
use framemap::Image;
use framemap::snapshot::Snapshot;
use std::sync::Arc;

/// What the memories of a restore are made from, besides the snapshot.
pub(crate) struct PlanSources<'a> {
    /// The images clean pages may name (by content hash).
    pub images: &'a [Image],
    /// The buffers windows name.
    pub buffers: &'a Arc<SnapshotBuffers>,
    /// How memories are laid out and their working sets brought in.
    pub mode: RestoreMode,
}

/// Checks that `snapshot` (its parents attached) holds exactly the memories
/// `names` (of types `facts`) and at least the globals `globals` of a
/// `what` (module, component), and that every buffer its windows name is in
/// `sources`, and plans each memory from it: clean image pages and windows
/// resolved from `sources`, laid out as it says.
pub(crate) fn snapshot_plan(
    snapshot: &Snapshot,
    what: &str,
    facts: &[MemoryFacts],
    names: Vec<String>,
    globals: impl IntoIterator<Item = String>,
    sources: PlanSources<'_>,
) -> Result<Vec<MemoryPlan>> {
    snapshot.check_chain().map_err(Error::Snapshot)?;
    sources.buffers.check(snapshot)?;
    let manifest = snapshot.manifest();
    if manifest.memories.len() != names.len() || names.iter().any(|n| snapshot.memory(n).is_err()) {
        let held: Vec<&str> = manifest.memories.iter().map(|m| m.name.as_str()).collect();
        return Err(Error::SnapshotMismatch {
            detail: format!("the {what}'s memories are {names:?}, the snapshot holds {held:?}"),
        });
    }
    for name in globals {
        if !manifest.globals.iter().any(|g| g.name == name) {
            return Err(Error::SnapshotMismatch { detail: format!("global {name:?} is missing") });
        }
    }
    let plan = facts.iter().zip(names).map(|(facts, memory)| MemoryPlan {
        facts: *facts,
        image: None,
        snapshot: Some(SnapshotStart {
            snapshot: snapshot.clone(),
            memory,
            images: sources.images.to_vec(),
            buffers: sources.buffers.clone(),
            mode: sources.mode,
        }),
    });
    Ok(plan.collect())
}
