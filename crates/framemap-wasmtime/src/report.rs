//! Handles to live memories: their frame tables, and windows on them.
//!
//! A handle names one memory: a slot and the generation it served when the
//! handle was made (see [`crate::memory`]). Once that memory is dropped, every
//! call fails with [`Error::NotFramemap`], even after the slot serves another.

use crate::error::{Error, Result};
use crate::memory::Slot;
use framemap::{Frame, Image, LinearSpace, PageRange, Protection, SharedBuffer, SpaceSummary, WindowHost};
use std::fmt;
use std::sync::{Arc, Weak};

/// A handle to one live framemap memory: its frame table, and windows
/// (buffers, images, zero pages) mapped into it while the guest runs. It does
/// not keep the memory alive: once wasmtime drops the memory, calls return
/// [`Error::NotFramemap`].
///
/// Windows may leave pages inside the memory's size unmapped or
/// inaccessible: the guest traps on them, but host code reading the memory
/// through `wasmtime::Memory::data` (a WASI call, say) must not touch them,
/// or it faults outside wasm. [`MemoryHandle::read`] and
/// [`MemoryHandle::write`] check the frame table first and refuse such
/// pages with an error instead.
#[derive(Clone, Debug)]
pub struct MemoryHandle {
    base: usize,
    slot: Weak<Slot>,
    generation: u64,
}

impl MemoryHandle {
    pub(crate) fn new(slot: &Arc<Slot>, generation: u64) -> MemoryHandle {
        MemoryHandle { base: slot.base(), slot: Arc::downgrade(slot), generation }
    }

    /// The memory's base address.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The memory's frame table and residency now (windows the SIGBUS guard
    /// demoted are folded in first, see [`LinearSpace::reconcile`]).
    pub fn report(&self) -> Result<FrameReport> {
        let gone = || Error::NotFramemap { base: self.base };
        let slot = self.slot.upgrade().ok_or_else(gone)?;
        let mut state = slot.lock();
        let space = state.serving(self.generation).ok_or_else(gone)?;
        space.reconcile().map_err(|source| Error::Report { base: self.base, source })?;
        let summary = space.summary().map_err(|source| Error::Report { base: self.base, source })?;
        Ok(FrameReport { summary, runs: space.table().runs().collect(), poisoned_pages: space.poisoned_pages() })
    }

    /// The frame table's runs over the pages holding bytes `offset..offset +
    /// len` (clipped to them, frames advanced to the clipped start), with
    /// the SIGBUS guard's demotions folded in first: what [`report`] lists
    /// for that range, without measuring residency (no system call).
    ///
    /// [`report`]: MemoryHandle::report
    pub fn runs_in(&self, offset: u64, len: u64) -> Result<Vec<(PageRange, Frame)>> {
        let page = framemap::host_page_size() as u64;
        let end = offset.saturating_add(len).div_ceil(page);
        let range = PageRange::new(offset / page, end);
        self.with_space(|space| {
            space.reconcile()?;
            Ok(space.table().runs_in(range).collect())
        })
    }

    /// Maps `len` bytes of `buffer` from `buffer_offset` at guest offset
    /// `offset`, shared (see [`framemap::LinearSpace::map_buffer`]); the
    /// memory is registered with the buffer, so revoking it unmaps the
    /// window.
    pub fn map_buffer(
        &self,
        offset: u64,
        buffer: &SharedBuffer,
        buffer_offset: u64,
        len: u64,
        prot: Protection,
    ) -> Result<()> {
        let slot = self.slot.upgrade().ok_or(Error::NotFramemap { base: self.base })?;
        let weak: Weak<Slot> = Arc::downgrade(&slot);
        let weak: Weak<dyn WindowHost> = weak;
        let grant = buffer.grant(weak).map_err(|source| Error::Window { base: self.base, source })?;
        self.change(|space| space.map_buffer(offset, &grant, buffer_offset, len, prot))
    }

    /// Maps `len` bytes of `image` from `image_offset` at guest offset
    /// `offset`, copy-on-write (see [`framemap::LinearSpace::map_image`]).
    pub fn map_image(&self, offset: u64, image: &Image, image_offset: u64, len: u64, prot: Protection) -> Result<()> {
        self.change(|space| space.map_image(offset, image, image_offset, len, prot))
    }

    /// Maps fresh zero pages at guest offset `offset`.
    pub fn map_zero(&self, offset: u64, len: u64, prot: Protection) -> Result<()> {
        self.change(|space| space.map_zero(offset, len, prot))
    }

    /// Unmaps guest pages: the guest traps on them until they are mapped
    /// again.
    pub fn unmap(&self, offset: u64, len: u64) -> Result<()> {
        self.change(|space| space.unmap(offset, len))
    }

    /// Sets the protection of guest pages, keeping their contents.
    pub fn protect(&self, offset: u64, len: u64, prot: Protection) -> Result<()> {
        self.change(|space| space.protect(offset, len, prot))
    }

    /// Discards the contents of guest pages (refused on shared frames).
    pub fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.change(|space| space.discard(offset, len))
    }

    /// Copies `buf.len()` bytes at guest offset `offset` out of the memory,
    /// checking the frame table first: refused (nothing copied) if any byte
    /// is unmapped, inaccessible, past the memory's size, or in a window of
    /// a truncated buffer, where a raw read would fault outside wasm.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.with_space(|space| space.read(offset, buf))
    }

    /// Copies `data` into the memory at guest offset `offset`, checking the
    /// frame table first: refused (nothing written) if any byte is not
    /// writable (read-only, unmapped, past the memory's size, or in a window
    /// of a truncated buffer).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.with_space(|space| space.write(offset, data))
    }

    /// Pages of the memory that the hole guard replaced because host code
    /// touched them while they were inaccessible (see [`Error::Poisoned`]):
    /// non-zero means the memory is poisoned.
    pub fn poisoned_pages(&self) -> Result<u64> {
        self.with_space(|space| Ok(space.poisoned_pages()))
    }

    fn with_space<T>(&self, f: impl FnOnce(&mut LinearSpace) -> framemap::Result<T>) -> Result<T> {
        let gone = || Error::NotFramemap { base: self.base };
        let slot = self.slot.upgrade().ok_or_else(gone)?;
        let mut state = slot.lock();
        let space = state.serving(self.generation).ok_or_else(gone)?;
        f(space).map_err(|source| Error::Window { base: self.base, source })
    }

    /// Runs a change of mappings, refused on a poisoned memory.
    fn change(&self, f: impl FnOnce(&mut LinearSpace) -> framemap::Result<()>) -> Result<()> {
        let gone = || Error::NotFramemap { base: self.base };
        let slot = self.slot.upgrade().ok_or_else(gone)?;
        let mut state = slot.lock();
        let space = state.serving(self.generation).ok_or_else(gone)?;
        match space.poisoned_pages() {
            0 => f(space).map_err(|source| Error::Window { base: self.base, source }),
            pages => Err(Error::Poisoned { base: self.base, pages }),
        }
    }

    /// Checks the memory's frame table against the kernel's mappings, after
    /// folding in what the SIGBUS guard and the hole guard did (see
    /// [`LinearSpace::reconcile`]).
    pub fn validate(&self) -> Result<()> {
        let gone = || Error::NotFramemap { base: self.base };
        let slot = self.slot.upgrade().ok_or_else(gone)?;
        let mut state = slot.lock();
        let space = state.serving(self.generation).ok_or_else(gone)?;
        let report = |source| Error::Report { base: self.base, source };
        space.reconcile().map_err(report)?;
        space.validate().map_err(report)
    }
}

/// A copy of one memory's frame table and its statistics at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameReport {
    /// Runs, bytes and resident bytes per tag.
    pub summary: SpaceSummary,
    /// Every run of the table, in page order (page indices from the base).
    pub runs: Vec<(PageRange, Frame)>,
    /// Pages the hole guard replaced: non-zero means the memory is poisoned
    /// (see [`Error::Poisoned`]).
    pub poisoned_pages: u64,
}

impl fmt::Display for FrameReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary)?;
        if self.poisoned_pages > 0 {
            writeln!(f, "poisoned: host code touched {} inaccessible page(s)", self.poisoned_pages)?;
        }
        Ok(())
    }
}
