//! Checkpoints: which pages of a live memory changed since a point of its
//! life, scoped to that memory alone.
//!
//! A checkpoint write-protects the pages written since the one before
//! (`PAGEMAP_SCAN` with `PM_SCAN_WP_MATCHING`, over this space's accessible
//! range only: never process-wide like `clear_refs`), so that afterwards
//! the write tracking of `sys::uffd` reports exactly the pages written
//! since. Two more sets complete the picture:
//! - `remapped`: pages whose contents changed *without* a write since the
//!   latest checkpoint (a mapping replaced them, or `discard` dropped them).
//!   They read their new frame's initial contents plus whatever was written
//!   since, which the scan reports;
//! - `owed`: every page a checkpoint protected since the last reset. A
//!   protected page reads as not written, so a reset's scan would miss it:
//!   [`LinearSpace::restore_dirty`] restores `owed` as well as what it finds.
//!
//! Invariants:
//! 1. A checkpoint never hides a page from a reset: a page written since the
//!    last reset is reported by the dirty scan or lies in `owed`, new
//!    layouts in between included (they keep frames, and with them pages
//!    that are protected but not initial: `owed` survives them).
//! 2. `changed_since(latest)` is a superset of the pages whose contents
//!    differ from those at the latest checkpoint (exact where the kernel
//!    tracks writes; every present page where it cannot protect, every
//!    accessible page where it cannot scan).
//! 3. A reset, and every new layout, ends the memory's life as far as
//!    checkpoints go: the generation changes and every earlier checkpoint is
//!    refused ([`Error::StaleCheckpoint`]), so a checkpoint never spans two
//!    instances.

use super::LinearSpace;
use crate::error::{Error, Result};
use crate::frame::FrameKind;
use crate::page::{PageRange, insert_range, union};
use crate::sys::{pagemap, uffd};
use std::hash::{BuildHasher, Hash, Hasher};

/// A point in a live memory's life, from [`LinearSpace::checkpoint`]: what
/// [`LinearSpace::changed_since`] compares with. Only the latest checkpoint
/// of a memory, taken since its last reset, is current.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// The space it was taken on ([`LinearSpace::identity`]).
    space: u64,
    /// The space's life (bumped by every reset and new layout).
    generation: u64,
    /// Which checkpoint of that life (1 is the first).
    index: u64,
    /// Its token (see [`Checkpoint::token`]).
    token: u64,
}

impl Checkpoint {
    /// A token naming this checkpoint, unique in practice across processes
    /// (a snapshot file records it, so that an incremental snapshot can
    /// check that its parent was captured at the checkpoint it starts from).
    /// A memory restored from a snapshot starts at a checkpoint whose token
    /// is the one the snapshot recorded: its contents are the snapshot's.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// A fresh token for checkpoint `index` of life `generation` of space
    /// `space`.
    fn fresh_token(space: u64, generation: u64, index: u64) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        (process_salt(), space, generation, index).hash(&mut h);
        h.finish()
    }
}

/// A random number drawn once per process (`RandomState`'s keys come from
/// the operating system's random source).
fn process_salt() -> u64 {
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SALT.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(std::process::id()))
}

/// A space's checkpoint state.
#[derive(Debug)]
pub(super) struct Checkpoints {
    /// This space's identity in checkpoints (unique in the process).
    space: u64,
    /// The memory's life: bumped by every reset and new layout.
    generation: u64,
    /// The latest checkpoint of this life (0: none yet).
    latest: u64,
    /// The latest checkpoint's token.
    token: u64,
    /// Pages whose contents changed without a write since the latest
    /// checkpoint (sorted, disjoint).
    remapped: Vec<PageRange>,
    /// Pages checkpoints protected since the last reset (sorted, disjoint).
    owed: Vec<PageRange>,
}

impl Default for Checkpoints {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Checkpoints {
            space: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            generation: 0,
            latest: 0,
            token: 0,
            remapped: Vec::new(),
            owed: Vec::new(),
        }
    }
}

impl Checkpoints {
    /// Contents of `range` changed without a write (a mapping replaced them,
    /// or they were dropped).
    pub(super) fn note_remapped(&mut self, range: PageRange) {
        if self.latest != 0 {
            insert_range(&mut self.remapped, range);
        }
    }

    /// The pages a reset must restore besides those its scan finds.
    pub(super) fn owed(&self) -> &[PageRange] {
        &self.owed
    }

    /// A reset: a new life, with no checkpoint and nothing owed (the reset
    /// restored every owed page).
    pub(super) fn new_life(&mut self) {
        self.generation += 1;
        self.latest = 0;
        self.token = 0;
        self.remapped.clear();
        self.owed.clear();
    }

    /// A new layout of `pages` accessible pages: a new life with no
    /// checkpoint, but the owed pages below `pages` stay owed. A layout
    /// keeps frames that already are its targets, with their contents and
    /// their protection from writes, so a page a checkpoint protected and
    /// no reset restored still differs from its frame's initial contents
    /// while reading as not written (invariant 1; a remapped page owed
    /// costs only a needless restore).
    pub(super) fn new_layout(&mut self, pages: u64) {
        let owed = std::mem::take(&mut self.owed);
        self.new_life();
        let within = PageRange::new(0, pages);
        self.owed = owed.into_iter().map(|r| r.intersect(within)).filter(|r| !r.is_empty()).collect();
    }
}

/// What [`LinearSpace::advance_checkpoint`] found.
#[derive(Debug)]
pub(crate) struct CheckpointScan {
    /// The checkpoint taken.
    pub(crate) checkpoint: Checkpoint,
    /// Pages written since the checkpoint before (or since the last reset),
    /// sorted and disjoint.
    pub(crate) written: Vec<PageRange>,
    /// Pages whose contents changed without a write since the checkpoint
    /// before (meaningless if there was none), sorted and disjoint.
    pub(crate) remapped: Vec<PageRange>,
    /// Every page that may differ from its frame's initial contents: written
    /// since the last reset (`written` included), sorted and disjoint (empty
    /// unless asked for).
    pub(crate) dirty: Vec<PageRange>,
}

impl LinearSpace {
    /// This space's identity in [`Checkpoint`]s: unique in the process.
    pub fn identity(&self) -> u64 {
        self.checkpoints.space
    }

    /// Takes a checkpoint: from now on [`LinearSpace::changed_since`] with
    /// it reports the pages whose contents may have changed since this call.
    /// Costs time proportional to the pages written since the checkpoint
    /// before (one `PAGEMAP_SCAN` walk that also write-protects them), never
    /// to the memory's size, where the kernel tracks writes (Linux 6.7+ with
    /// asynchronous userfaultfd write-protection); elsewhere every page
    /// present counts as changed. A reset ends every checkpoint.
    pub fn checkpoint(&mut self) -> Result<Checkpoint> {
        Ok(self.advance_checkpoint(false)?.checkpoint)
    }

    /// The pages whose contents may differ from those at `checkpoint`
    /// (sorted, disjoint, inside the accessible pages): exact where the
    /// kernel tracks writes, a superset elsewhere (never a page missed).
    /// `checkpoint` must be this space's latest, taken since its last reset
    /// ([`Error::StaleCheckpoint`] otherwise). Changes nothing.
    pub fn changed_since(&mut self, checkpoint: &Checkpoint) -> Result<Vec<PageRange>> {
        self.check_current(checkpoint)?;
        self.reconcile()?;
        let (written, _) = self.written_pages(false)?;
        Ok(union(&written, &self.checkpoints.remapped)
            .into_iter()
            .map(|r| r.intersect(self.accessible_pages()))
            .filter(|r| !r.is_empty())
            .collect())
    }

    /// The latest checkpoint of this life, if one was taken since the last
    /// reset or new layout.
    pub fn latest_checkpoint(&self) -> Option<Checkpoint> {
        let c = &self.checkpoints;
        (c.latest != 0).then_some(Checkpoint {
            space: c.space,
            generation: c.generation,
            index: c.latest,
            token: c.token,
        })
    }

    /// Starts this life at a checkpoint whose token is `token`: the memory's
    /// contents are those of the snapshot that recorded it (called by
    /// [`LinearSpace::restore`] right after laying the memory out, when no
    /// page has been written: an incremental capture against that snapshot
    /// then stores exactly the pages written since).
    pub(crate) fn adopt_checkpoint(&mut self, token: u64) {
        let c = &mut self.checkpoints;
        c.latest = 1;
        c.token = token;
        c.remapped.clear();
    }

    /// Refuses a checkpoint that is not this space's latest of this life.
    pub(crate) fn check_current(&self, checkpoint: &Checkpoint) -> Result<()> {
        let c = &self.checkpoints;
        if checkpoint.space != c.space || checkpoint.generation != c.generation || checkpoint.index != c.latest {
            return Err(Error::StaleCheckpoint {
                space: checkpoint.space,
                index: checkpoint.index,
                latest: if checkpoint.space == c.space && checkpoint.generation == c.generation { c.latest } else { 0 },
            });
        }
        Ok(())
    }

    /// Takes a checkpoint and says what changed since the one before: the
    /// pages written since are found and write-protected in one walk.
    /// `want_dirty` asks for [`CheckpointScan::dirty`] (a copy of every
    /// page written since the last reset: only a full capture needs it).
    pub(crate) fn advance_checkpoint(&mut self, want_dirty: bool) -> Result<CheckpointScan> {
        self.reconcile()?;
        let (written, _) = self.written_pages(true)?;
        let c = &mut self.checkpoints;
        // One merge of two sorted lists, not one insertion per range.
        if !written.is_empty() {
            c.owed = union(&c.owed, &written);
        }
        c.latest += 1;
        c.token = Checkpoint::fresh_token(c.space, c.generation, c.latest);
        let remapped = std::mem::take(&mut c.remapped);
        Ok(CheckpointScan {
            checkpoint: Checkpoint { space: c.space, generation: c.generation, index: c.latest, token: c.token },
            dirty: if want_dirty { c.owed.clone() } else { Vec::new() },
            written,
            remapped,
        })
    }

    /// The accessible `Zero` and `Image` pages written since they were last
    /// write-protected (all of them if the kernel cannot scan), sorted and
    /// disjoint; with `protect`, also write-protects them in the same walk
    /// where the kernel tracks writes. Returns whether the kernel scanned.
    fn written_pages(&mut self, protect: bool) -> Result<(Vec<PageRange>, bool)> {
        let accessible = self.accessible_pages();
        let mut written = Vec::new();
        if pagemap::scan_supported() {
            let tracked = protect && uffd::supported() && self.register_for_tracking();
            let scanned = self.scan_written(accessible, tracked, |range| match written.last_mut() {
                Some(last @ &mut PageRange { .. }) if last.end == range.start => last.end = range.end,
                _ => written.push(range),
            });
            if scanned.is_ok() {
                // Shared frames are the host's: never part of what changed.
                let shared: Vec<PageRange> = self
                    .table
                    .runs_in(accessible)
                    .filter(|(_, f)| matches!(f.kind(), FrameKind::Shared { .. }))
                    .map(|(run, _)| run)
                    .collect();
                if !shared.is_empty() {
                    written = subtract(&written, &shared);
                }
                return Ok((written, true));
            }
            written.clear();
        }
        for (run, frame) in self.table.runs_in(accessible) {
            if matches!(frame.kind(), FrameKind::Zero | FrameKind::Image { .. }) {
                insert_range(&mut written, run);
            }
        }
        Ok((written, false))
    }
}

/// The pages of `a` not in `b` (both sorted and disjoint).
fn subtract(a: &[PageRange], b: &[PageRange]) -> Vec<PageRange> {
    let mut out = Vec::with_capacity(a.len());
    for &range in a {
        let mut start = range.start;
        for cut in b.iter().filter(|c| c.start < range.end && range.start < c.end) {
            if cut.start > start {
                out.push(PageRange::new(start, cut.start));
            }
            start = start.max(cut.end);
        }
        if start < range.end {
            out.push(PageRange::new(start, range.end));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_removes_exactly_the_cut_pages() {
        let r = PageRange::new;
        assert_eq!(subtract(&[r(0, 10)], &[r(2, 4), r(6, 7)]), vec![r(0, 2), r(4, 6), r(7, 10)]);
        assert_eq!(subtract(&[r(0, 3), r(5, 8)], &[r(0, 8)]), vec![]);
        assert_eq!(subtract(&[r(3, 5)], &[r(0, 1), r(9, 10)]), vec![r(3, 5)]);
    }
}
