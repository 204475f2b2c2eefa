//! Laying a memory out from a list of frames: what a snapshot restore
//! sets, through `commit` like every other change (invariant 1).
//!
//! The caller checks everything that can refuse first (the snapshot's
//! runs, images by content hash, grants), then [`LinearSpace::apply_layout`]
//! maps every run fresh, attaching the backing a run names right before
//! mapping it (invariant 5), moves the hole guard's end with the size
//! (invariants 4 and 7), and starts a new life for checkpoints. Backings no
//! frame names are let go afterwards.

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
    fn attach_image(&mut self, image: &Image) {
        self.images.entry(image.id()).or_insert_with(|| image.clone());
    }

    /// Lets frames name `buffer` (invariant 5).
    fn attach_buffer(&mut self, buffer: &SharedBuffer) {
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
    /// covering `[0, ceil(len / page))`, naming only backings of `images`
    /// and `buffers`), every run mapped fresh. A kernel failure part-way
    /// returns the error with the table true (invariant 8). With
    /// `keep_equal`, runs whose frames already are the target's are left as
    /// they are (the caller vouches that their contents are the frames'
    /// initial ones: see `RestoreOptions::keep_reset_frames`).
    ///
    /// Each run's backing is attached right before the run is mapped, not
    /// all of them first: a commit lets go of a backing whose last page it
    /// replaces, so an earlier run (or the unmapping past the new end) over
    /// the last pages that showed an image before the restore would let go
    /// of that image while a later run still names it.
    pub(crate) fn apply_layout(
        &mut self,
        len: u64,
        frames: &[(PageRange, Frame)],
        images: &[Image],
        buffers: &[SharedBuffer],
        keep_equal: bool,
    ) -> Result<()> {
        let old = self.accessible_pages();
        let new = PageRange::new(0, len.div_ceil(self.page));
        debug_assert!(frames.last().is_none_or(|(r, _)| r.end == new.end));
        self.checkpoints.new_layout(new.end);
        if new.end < old.end {
            // Before the pages go: the hole guard must not touch them after.
            self.guard_accessible_pages(new.end);
        }
        self.commit(PageRange::new(new.end, old.end), Change::Map(Frame::UNMAPPED))?;
        for &(range, frame) in frames {
            // Once a run of this layout names a backing, no later run can
            // let it go (runs are disjoint, and a commit counts the pages
            // it maps before those it replaces).
            match frame.kind() {
                FrameKind::Image { image: id, .. } => {
                    if let Some(image) = images.iter().find(|i| i.id() == id) {
                        self.attach_image(image);
                    }
                }
                FrameKind::Shared { buffer: id, .. } => {
                    if let Some(buffer) = buffers.iter().find(|b| b.id() == id) {
                        self.attach_buffer(buffer);
                    }
                }
                FrameKind::Unmapped | FrameKind::Zero => {}
            }
            if keep_equal
                && let Some((run, now)) = self.table.run_containing(range.start)
                && range.end <= run.end
                && now.advanced(range.start - run.start) == frame
            {
                continue;
            }
            self.commit(range, Change::Map(frame))?;
        }
        self.len = len;
        if new.end > old.end {
            self.guard_accessible_pages(new.end);
        }
        Ok(())
    }
}
