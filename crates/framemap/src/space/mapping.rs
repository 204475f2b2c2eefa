//! The public mapping operations: grow, protect, map an image, a buffer or
//! zero pages, unmap, revoke a buffer's windows, discard.
//!
//! Each checks its whole argument before any kernel call (a rejected call
//! changes nothing), then hands the change to [`LinearSpace::commit`]. What
//! they keep:
//! - invariant 4: only pages below the accessible size are ever mapped, and
//!   `grow_to` moves the hole guard's end with the size (7);
//! - invariant 5: an image or buffer is held by the space before any frame
//!   names it, lies inside it, and a buffer's grant was issued for this
//!   space's window host.

use super::LinearSpace;
use super::commit::Change;
use crate::buffer::{BufferGrant, WindowOwner};
use crate::error::{Error, Result};
use crate::frame::{BackingId, Frame, FrameKind, FrameTag, Protection};
use crate::image::Image;
use crate::page::PageRange;
use std::sync::Weak;

impl LinearSpace {
    /// Grows the accessible size to `new_len` bytes; new pages are zero and
    /// read-write. Never moves the memory.
    pub fn grow_to(&mut self, new_len: u64) -> Result<()> {
        if new_len < self.len {
            return Err(Error::Shrink { current: self.len, requested: new_len });
        }
        if new_len > self.capacity {
            return Err(Error::CapacityExceeded { requested: new_len, capacity: self.capacity });
        }
        let old = self.accessible_pages();
        let new = PageRange::new(old.end, new_len.div_ceil(self.page));
        self.commit(new, Change::Map(Frame::zero(Protection::ReadWrite)))?;
        self.len = new_len;
        self.guard_accessible_pages(new.end);
        Ok(())
    }

    /// Sets the protection of the page-aligned range `offset..offset + len`,
    /// keeping its contents. Refused if the range holds `Unmapped` frames.
    pub fn protect(&mut self, offset: u64, len: u64, prot: Protection) -> Result<()> {
        let range = self.page_range(offset, len)?;
        self.commit(range, Change::Protect(prot))
    }

    /// Maps `len` bytes of `image` from `image_offset` at `offset`, copy-on-write,
    /// with protection `prot`: the guest reads the image's bytes and its writes
    /// stay private to this memory. All offsets and `len` must be page
    /// aligned; the range must be inside the accessible pages and the image.
    pub fn map_image(
        &mut self,
        offset: u64,
        image: &Image,
        image_offset: u64,
        len: u64,
        prot: Protection,
    ) -> Result<()> {
        let range = self.page_range(offset, len)?;
        let image_end = image_offset.checked_add(len).ok_or(Error::Overflow { start: image_offset, len })?;
        if !image_offset.is_multiple_of(self.page) {
            return Err(Error::Misaligned { start: image_offset, len, page_size: self.page as usize });
        }
        if image_end > image.len() {
            return Err(Error::PastBacking { id: image.id().0, start: image_offset, end: image_end, len: image.len() });
        }
        self.images.entry(image.id()).or_insert_with(|| image.clone());
        let mapped = self.commit(range, Change::Map(Frame::image(image.id(), image_offset / self.page, prot)));
        self.forget_if_unused(image.id());
        mapped
    }

    /// Maps `len` bytes of the granted buffer from `buffer_offset` at
    /// `offset`, shared, with protection `prot`: guest writes reach the host
    /// and every other window of the buffer. Offsets and `len` must be page
    /// aligned; the range must be inside the accessible pages and the buffer.
    /// The grant must have been issued for this space's window host
    /// ([`Error::ForeignGrant`] otherwise, or if the space has none), so that
    /// revoking the buffer reaches the window.
    pub fn map_buffer(
        &mut self,
        offset: u64,
        grant: &BufferGrant,
        buffer_offset: u64,
        len: u64,
        prot: Protection,
    ) -> Result<()> {
        let buffer = grant.buffer();
        if !self.window_owner.as_ref().is_some_and(|host| grant.is_for(host)) {
            return Err(Error::ForeignGrant { id: buffer.id().0 });
        }
        let range = self.page_range(offset, len)?;
        let end = buffer_offset.checked_add(len).ok_or(Error::Overflow { start: buffer_offset, len })?;
        if !buffer_offset.is_multiple_of(self.page) {
            return Err(Error::Misaligned { start: buffer_offset, len, page_size: self.page as usize });
        }
        if end > buffer.len() {
            return Err(Error::PastBacking { id: buffer.id().0, start: buffer_offset, end, len: buffer.len() });
        }
        if buffer.is_revoked() {
            return Err(Error::Revoked { id: buffer.id().0 });
        }
        if buffer.is_truncated() {
            return Err(Error::BufferTruncated { id: buffer.id().0 });
        }
        self.buffers.entry(buffer.id()).or_insert_with(|| buffer.clone());
        let mapped = self.commit(range, Change::Map(Frame::shared(buffer.id(), buffer_offset / self.page, prot)));
        self.forget_if_unused(buffer.id());
        mapped
    }

    /// Lets go of a backing no frame names (invariant 5 holds only the
    /// backings in use): one attached for a mapping that then failed in the
    /// kernel, or was refused before it, is not kept open.
    fn forget_if_unused(&mut self, id: BackingId) {
        if !self.backing_pages.contains_key(&id) {
            self.images.remove(&id);
            self.buffers.remove(&id);
        }
    }

    /// Names the owner through which revocation reaches this space (the
    /// `WindowOwner` that wraps it: an `Arc<Mutex<LinearSpace>>`, or an
    /// embedder's own type). Grants issued for another host are refused by
    /// [`LinearSpace::map_buffer`]. Set it once, before mapping buffers.
    pub fn set_window_owner(&mut self, host: Weak<dyn WindowOwner>) {
        self.window_owner = Some(host);
    }

    /// Maps fresh zero pages at the page-aligned range `offset..offset + len`,
    /// with protection `prot`, whatever was there.
    pub fn map_zero(&mut self, offset: u64, len: u64, prot: Protection) -> Result<()> {
        let range = self.page_range(offset, len)?;
        self.commit(range, Change::Map(Frame::zero(prot)))
    }

    /// Unmaps the page-aligned range `offset..offset + len`: its frames become
    /// `Unmapped` and a guest touching them traps; the size does not change.
    pub fn unmap(&mut self, offset: u64, len: u64) -> Result<()> {
        let range = self.page_range(offset, len)?;
        self.commit(range, Change::Map(Frame::UNMAPPED))
    }

    /// Unmaps every window of buffer `id` (revocation). Every window is
    /// tried, even after one fails, and the first failure is returned. A
    /// kernel failure still leaves the window `Unmapped` (invariant 8); a
    /// window survives only if the SIGBUS guard's registry is full
    /// ([`Error::GuardFull`]).
    pub fn unmap_buffer(&mut self, id: BackingId) -> Result<()> {
        let windows: Vec<_> = self
            .table
            .runs()
            .filter(|(_, f)| matches!(f.kind(), FrameKind::Shared { buffer, .. } if buffer == id))
            .map(|(run, _)| run)
            .collect();
        let mut first = None;
        for run in windows {
            // Not `commit`: a failing reconcile must not keep a window.
            if let Err(e) = self.apply(run, Change::Map(Frame::UNMAPPED)) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Discards the contents of the page-aligned range `offset..offset + len`:
    /// zero pages read zero again, image pages become zero pages, unmapped
    /// pages stay as they are. Refused (with nothing changed) if the range
    /// holds `Shared` frames, which the host owns.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<()> {
        let range = self.page_range(offset, len)?;
        if let Some((run, frame)) = self.table.runs_in(range).find(|(_, f)| f.tag() == FrameTag::Shared) {
            return Err(self.wrong_frames("discard", frame.tag(), run));
        }
        let runs: Vec<_> = self.table.runs_in(range).collect();
        let mut stretch: Option<PageRange> = None;
        for (run, frame) in runs {
            match frame.kind() {
                FrameKind::Unmapped | FrameKind::Zero => {
                    stretch = Some(stretch.map_or(run, |s| PageRange::new(s.start, run.end)));
                }
                FrameKind::Image { .. } => {
                    if let Some(s) = stretch.take() {
                        self.drop_pages(s)?;
                    }
                    self.commit(run, Change::Map(Frame::zero(frame.prot())))?;
                }
                FrameKind::Shared { .. } => return Err(self.wrong_frames("discard", FrameTag::Shared, run)),
            }
        }
        match stretch {
            Some(s) => self.drop_pages(s),
            None => Ok(()),
        }
    }
}
