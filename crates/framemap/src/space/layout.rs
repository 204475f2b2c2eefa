//! Laying a memory out from a list of frames: what a snapshot restore
//! sets, through `commit` like every other change (invariant 1).
//!
//! The caller checks everything that can refuse first (the snapshot's
//! runs, images by content hash, grants), attaches the backings the frames
//! name (invariant 5), then [`LinearSpace::apply_layout`] maps every run
//! fresh, moves the hole guard's end with the size (invariants 4 and 7),
//! and starts a new life for checkpoints. Backings no frame names are let
//! go afterwards.

use super::LinearSpace;
use super::commit::Change;
use crate::buffer::{BufferGrant, SharedBuffer};
use crate::error::{Error, Result};
use crate::frame::{BackingId, Frame, FrameKind};
use crate::image::Image;
use crate::page::PageRange;

impl LinearSpace {
    /// The image `id` frames of this space may name, if attached.
    pub(crate) fn image(&self, id: BackingId) -> Option<&Image> {
        self.images.get(&id)
    }

    /// The buffer `id` frames of this space may name, if attached.
    pub(crate) fn buffer(&self, id: BackingId) -> Option<&SharedBuffer> {
        self.buffers.get(&id)
    }

    /// Lets frames name `image` (invariant 5).
    pub(crate) fn attach_image(&mut self, image: &Image) {
        self.images.entry(image.id()).or_insert_with(|| image.clone());
    }

    /// Lets frames name `buffer` (invariant 5).
    pub(crate) fn attach_buffer(&mut self, buffer: &SharedBuffer) {
        self.buffers.entry(buffer.id()).or_insert_with(|| buffer.clone());
    }

    /// Lets go of every image and buffer no frame names.
    pub(crate) fn forget_unused_backings(&mut self) {
        let used = &self.backing_pages;
        self.images.retain(|id, _| used.contains_key(id));
        self.buffers.retain(|id, _| used.contains_key(id));
    }

    /// Checks that `grant` may map `len` bytes from `offset` of its buffer
    /// here: issued for this space's window owner, in bounds, not revoked
    /// or truncated (what [`LinearSpace::map_buffer`] checks).
    pub(crate) fn check_grant(&self, grant: &BufferGrant, offset: u64, len: u64) -> Result<()> {
        let buffer = grant.buffer();
        if !self.window_owner.as_ref().is_some_and(|host| grant.is_for(host)) {
            return Err(Error::ForeignGrant { id: buffer.id().0 });
        }
        let end = offset.checked_add(len).ok_or(Error::Overflow { start: offset, len })?;
        if end > buffer.len() {
            return Err(Error::PastBacking { id: buffer.id().0, start: offset, end, len: buffer.len() });
        }
        if buffer.is_revoked() {
            return Err(Error::Revoked { id: buffer.id().0 });
        }
        if buffer.is_truncated() {
            return Err(Error::BufferTruncated { id: buffer.id().0 });
        }
        Ok(())
    }

    /// Sets the memory to `len` bytes laid out as `frames` (sorted runs
    /// covering `[0, ceil(len / page))`, naming attached backings only),
    /// every run mapped fresh. A kernel failure part-way returns the error
    /// with the table true (invariant 8).
    pub(crate) fn apply_layout(&mut self, len: u64, frames: &[(PageRange, Frame)]) -> Result<()> {
        let old = self.accessible_pages();
        let new = PageRange::new(0, len.div_ceil(self.page));
        debug_assert!(frames.last().is_none_or(|(r, _)| r.end == new.end));
        self.checkpoints.new_life();
        if new.end < old.end {
            // Before the pages go: the hole guard must not touch them after.
            self.guard_accessible_pages(new.end);
        }
        // Every backing the new frames name is pinned for the whole layout:
        // replacing the last old frames of a backing (say, the same
        // snapshot's pages at other offsets) must not let it go before the
        // new frames that name it are mapped (invariant 5).
        let mut pins: Vec<BackingId> = frames.iter().filter_map(|&(_, frame)| backing(frame)).collect();
        pins.sort_unstable();
        pins.dedup();
        for id in &pins {
            *self.backing_pages.entry(*id).or_default() += 1;
        }
        let laid = self
            .commit(PageRange::new(new.end, old.end), Change::Map(Frame::UNMAPPED))
            .and_then(|()| frames.iter().try_for_each(|&(range, frame)| self.commit(range, Change::Map(frame))));
        for id in &pins {
            let pages = self.backing_pages.entry(*id).or_default();
            *pages = pages.saturating_sub(1);
            if *pages == 0 {
                self.backing_pages.remove(id);
                self.images.remove(id);
                self.buffers.remove(id);
            }
        }
        laid?;
        self.len = len;
        if new.end > old.end {
            self.guard_accessible_pages(new.end);
        }
        Ok(())
    }
}

/// The image or buffer a frame names, if any.
fn backing(frame: Frame) -> Option<BackingId> {
    match frame.kind() {
        FrameKind::Image { image: id, .. } | FrameKind::Shared { buffer: id, .. } => Some(id),
        FrameKind::Unmapped | FrameKind::Zero => None,
    }
}
