//! [`MemoryHandle`]: a handle to one live memory, to inspect its frame table
//! and to change its mappings while the guest is not running.
//!
//! A handle names one memory: a slot and the generation it served when the
//! handle was made (see [`crate::memory`]). Once that memory is dropped, every
//! call fails with [`Error::NotFramemap`], even after the slot serves another.
//!
//! Invariant (the borrow rule, ARCHITECTURE.md "borrows of guest memory"):
//! nothing a safe method of a handle does changes the bytes, mappings or
//! protections of a memory while host code may hold a borrow of its bytes
//! from `wasmtime::Memory::data` or `data_mut`. Every method that changes or
//! copies bytes takes the context of the store that owns the memory (`&mut`
//! to change, `&` to read), which the borrow checker refuses while such a
//! borrow lives, and checks that it is that store. The one way around it,
//! a window of a buffer whose bytes others change, is `unsafe`
//! ([`MemoryHandle::map_buffer`]).

use crate::error::{Error, Result};
use crate::report::FrameReport;
use crate::slot::Slot;
use framemap::snapshot::{BufferNamer, SnapshotWriter};
use framemap::{Frame, Image, LinearSpace, PageRange, Protection, SharedBuffer, WindowOwner};
use std::sync::{Arc, Weak};
use wasmtime::{AsContext, AsContextMut};

/// Whose borrows protect a memory's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A non-shared memory of the store whose data lives at this address
    /// (the address of a live store's data is unique to it: wasmtime keeps
    /// it in the store's heap allocation, which never moves).
    Store(usize),
    /// A shared memory: wasmtime lends its bytes only as `UnsafeCell`s, so
    /// no store borrow is needed to change them.
    Shared,
    /// A memory found by enumeration, whose store is not known: changes and
    /// byte copies are refused ([`Error::StoreUnknown`]).
    Unknown,
}

impl Owner {
    /// The owner key of the store `store` belongs to.
    pub(crate) fn of_store(store: &impl AsContext) -> Owner {
        let data: *const _ = store.as_context().data();
        Owner::Store(data.cast::<u8>() as usize)
    }
}

/// A handle to one live framemap memory: its frame table, and windows
/// (buffers, images, zero pages) mapped into it between guest calls. It does
/// not keep the memory alive: once wasmtime drops the memory, calls return
/// [`Error::NotFramemap`].
///
/// Inspection ([`report`](Self::report), [`runs_in`](Self::runs_in),
/// [`validate`](Self::validate)) needs nothing else. Methods that change the
/// memory take the store that owns it mutably, so no borrow of the memory's
/// bytes from `wasmtime::Memory::data` can be alive while they run (for a
/// handle of a shared memory, any store's context will do: wasmtime never
/// lends a shared memory's bytes as `&[u8]`):
///
/// ```compile_fail
/// # use framemap_wasmtime::{FrameMemoryCreator, engine};
/// # use wasmtime::{Config, Instance, Module, Store};
/// # let creator = FrameMemoryCreator::new();
/// # let engine = engine(&mut Config::new(), creator.clone()).unwrap();
/// # let module = Module::new(&engine, r#"(module (memory (export "m") 2))"#).unwrap();
/// # let mut store = Store::new(&engine, ());
/// # let instance = Instance::new(&mut store, &module, &[]).unwrap();
/// # let memory = instance.get_memory(&mut store, "m").unwrap();
/// let handle = creator.handle(&store, &memory).unwrap();
/// let bytes: &[u8] = memory.data(&store);
/// handle.unmap(&mut store, 0, 65536).unwrap(); // error: `store` is borrowed by `bytes`
/// println!("{}", bytes[0]);
/// ```
///
/// Windows may leave pages inside the memory's size unmapped or
/// inaccessible: the guest traps on them. [`MemoryHandle::read`] and
/// [`MemoryHandle::write`] check the frame table first and refuse such
/// pages with an error; host code that touches them anyway (through
/// `Memory::data`, a WASI call, a libcall) meets the hole guard (see
/// [`Error::Poisoned`]).
#[derive(Clone, Debug)]
pub struct MemoryHandle {
    base: usize,
    slot: Weak<Slot>,
    generation: u64,
    owner: Owner,
}

impl MemoryHandle {
    pub(crate) fn new(slot: &Arc<Slot>, generation: u64, owner: Owner) -> MemoryHandle {
        MemoryHandle { base: slot.base(), slot: Arc::downgrade(slot), generation, owner }
    }

    /// The memory's base address.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The memory's frame table and residency now (windows the SIGBUS guard
    /// demoted and pages the hole guard replaced are folded in first, see
    /// [`LinearSpace::reconcile`]).
    pub fn report(&self) -> Result<FrameReport> {
        self.run(None, false, |space| {
            space.reconcile()?;
            let summary = space.summary()?;
            Ok(FrameReport { summary, runs: space.table().runs().collect(), poisoned_pages: space.poisoned_pages() })
        })
        .map_err(|e| match e {
            Error::Window { base, source } => Error::Report { base, source },
            e => e,
        })
    }

    /// The frame table's runs over the pages holding bytes `offset..offset +
    /// len` (clipped to them, frames advanced to the clipped start), with
    /// the guards' work folded in first: what [`report`] lists for that
    /// range, without measuring residency (no system call).
    ///
    /// [`report`]: MemoryHandle::report
    pub fn runs_in(&self, offset: u64, len: u64) -> Result<Vec<(PageRange, Frame)>> {
        let page = framemap::host_page_size() as u64;
        let end = offset.saturating_add(len).div_ceil(page);
        let range = PageRange::new(offset / page, end);
        self.run(None, false, |space| {
            space.reconcile()?;
            Ok(space.table().runs_in(range).collect())
        })
    }

    /// Maps `len` bytes of `buffer` from `buffer_offset` at guest offset
    /// `offset`, shared (see [`framemap::LinearSpace::map_buffer`]); the
    /// memory is registered with the buffer, so revoking it unmaps the
    /// window. `store` must own the memory.
    ///
    /// # Safety
    ///
    /// Unless the memory is shared, the caller guarantees that the bytes of
    /// the window do not change while host code holds a borrow of the
    /// memory's bytes (`wasmtime::Memory::data` or `data_mut`, or a host
    /// function holding one, as WASI's do during a call). They change when
    /// the host writes the buffer ([`SharedBuffer::write`], or a
    /// [`MemoryHandle::write`] or a guest store through a window of it in
    /// another memory), when another process writes or truncates the
    /// buffer's file, and when the buffer is revoked (the window's pages
    /// become holes). Rust forbids bytes to change under a live shared
    /// borrow; framemap cannot see such borrows, so this is the embedder's
    /// promise. Writing and revoking buffers only while no store mapping
    /// them is in a host call keeps it.
    pub unsafe fn map_buffer(
        &self,
        store: impl AsContextMut,
        offset: u64,
        buffer: &SharedBuffer,
        buffer_offset: u64,
        len: u64,
        prot: Protection,
    ) -> Result<()> {
        self.map_buffer_checked(Some(Owner::of_store(&store)), offset, buffer, buffer_offset, len, prot)
    }

    /// [`map_buffer`](Self::map_buffer) for the store given (`Some`, checked
    /// like every change), or from a guest's memory-control call (`None`: the store is
    /// the caller's, and its embedder accepted the safety contract when it
    /// granted the buffer, see [`crate::memctl::MemCtl::grant`]).
    pub(crate) fn map_buffer_checked(
        &self,
        store: Option<Owner>,
        offset: u64,
        buffer: &SharedBuffer,
        buffer_offset: u64,
        len: u64,
        prot: Protection,
    ) -> Result<()> {
        let slot = self.slot.upgrade().ok_or(Error::NotFramemap { base: self.base })?;
        let weak: Weak<Slot> = Arc::downgrade(&slot);
        let weak: Weak<dyn WindowOwner> = weak;
        let grant = buffer.grant(weak).map_err(|source| Error::Window { base: self.base, source })?;
        self.run(store, true, |space| space.map_buffer(offset, &grant, buffer_offset, len, prot))
    }

    /// Maps `len` bytes of `image` from `image_offset` at guest offset
    /// `offset`, copy-on-write (see [`framemap::LinearSpace::map_image`]).
    /// `store` must own the memory. An image whose file others may still
    /// write ([`Image::is_immutable`] false) is refused with
    /// [`Error::MutableImage`] unless the memory is shared: its bytes could
    /// change under a borrow of the memory's.
    pub fn map_image(
        &self,
        store: impl AsContextMut,
        offset: u64,
        image: &Image,
        image_offset: u64,
        len: u64,
        prot: Protection,
    ) -> Result<()> {
        if self.owner != Owner::Shared && !image.is_immutable() {
            return Err(Error::MutableImage { image: image.id() });
        }
        self.run(Some(Owner::of_store(&store)), true, |space| space.map_image(offset, image, image_offset, len, prot))
    }

    /// Maps fresh zero pages at guest offset `offset`. `store` must own the
    /// memory.
    pub fn map_zero(&self, store: impl AsContextMut, offset: u64, len: u64, prot: Protection) -> Result<()> {
        self.run(Some(Owner::of_store(&store)), true, |space| space.map_zero(offset, len, prot))
    }

    /// Unmaps guest pages: the guest traps on them until they are mapped
    /// again. `store` must own the memory.
    pub fn unmap(&self, store: impl AsContextMut, offset: u64, len: u64) -> Result<()> {
        self.run(Some(Owner::of_store(&store)), true, |space| space.unmap(offset, len))
    }

    /// Sets the protection of guest pages, keeping their contents. `store`
    /// must own the memory.
    pub fn protect(&self, store: impl AsContextMut, offset: u64, len: u64, prot: Protection) -> Result<()> {
        self.run(Some(Owner::of_store(&store)), true, |space| space.protect(offset, len, prot))
    }

    /// Discards the contents of guest pages (refused on shared frames).
    /// `store` must own the memory.
    pub fn discard(&self, store: impl AsContextMut, offset: u64, len: u64) -> Result<()> {
        self.run(Some(Owner::of_store(&store)), true, |space| space.discard(offset, len))
    }

    /// The memory-control proposal's `virtual` mode for the part of the
    /// memory from byte `from` on: those pages become `Unmapped` (their
    /// contents are dropped) and trap until the guest (see
    /// [`crate::memctl`]) or the host maps them. `from` must be a multiple
    /// of the host page size and at most the memory's size. Pages added
    /// later by `memory.grow` are zero pages, not unmapped. `store` must own
    /// the memory.
    pub fn make_virtual(&self, store: impl AsContextMut, from: u64) -> Result<()> {
        let owner = Some(Owner::of_store(&store));
        let size = self.run(owner, false, |space| Ok(space.len()))?;
        if from > size {
            return Err(Error::OutOfBounds { start: from, end: size, size });
        }
        if from == size {
            return Ok(());
        }
        self.run(owner, true, |space| space.unmap(from, size - from))
    }

    /// Copies `buf.len()` bytes at guest offset `offset` out of the memory,
    /// checking the frame table first: refused (nothing copied) if any byte
    /// is unmapped, inaccessible, past the memory's size, or in a window of
    /// a truncated buffer, where a raw read would fault outside wasm.
    /// `store` must own the memory (its shared borrow excludes a live
    /// `Memory::data_mut`).
    pub fn read(&self, store: impl AsContext, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.run(Some(Owner::of_store(&store)), false, |space| space.read(offset, buf))
    }

    /// Copies `data` into the memory at guest offset `offset`, checking the
    /// frame table first: refused (nothing written) if any byte is not
    /// writable (read-only, unmapped, past the memory's size, or in a window
    /// of a truncated buffer). `store` must own the memory.
    pub fn write(&self, store: impl AsContextMut, offset: u64, data: &[u8]) -> Result<()> {
        self.run(Some(Owner::of_store(&store)), false, |space| space.write(offset, data))
    }

    /// Captures the memory into `writer` as memory `name` (see
    /// [`framemap::snapshot::SnapshotWriter::capture`]: a checkpoint of the
    /// memory is taken, and an incremental writer stores only what changed
    /// since its parent). Windows of buffers are recorded by the names
    /// `names` gives. `store` must own the memory; a poisoned memory is
    /// refused (its lost pages would be captured as zeros).
    pub fn capture(
        &self,
        store: impl AsContextMut,
        writer: &mut SnapshotWriter,
        name: &str,
        names: BufferNamer<'_>,
    ) -> Result<()> {
        self.run(Some(Owner::of_store(&store)), true, |space| writer.capture(name, space, names))
    }

    /// The pages of the memory touched since it was restored from the
    /// snapshot `snapshot` as its memory `name` for recording
    /// ([`crate::RestoreMode::Record`]), clipped to the first `pages`
    /// pages (the snapshot's memory): see
    /// [`LinearSpace::touched_pages`]. Refused with
    /// [`Error::WorkingSetUnavailable`] for a memory not restored that way.
    pub(crate) fn touched_since_restore(
        &self,
        snapshot: framemap::snapshot::Digest,
        name: &str,
        pages: u64,
    ) -> Result<Vec<PageRange>> {
        let unavailable = |reason: &str| Error::WorkingSetUnavailable { memory: name.into(), reason: reason.into() };
        let slot = self.slot.upgrade().ok_or(Error::NotFramemap { base: self.base })?;
        let mut state = slot.lock();
        if state.current() != Some(self.generation) {
            return Err(Error::NotFramemap { base: self.base });
        }
        match &state.restored {
            None => return Err(unavailable("it was not restored from a snapshot")),
            Some(from) if from.snapshot != snapshot || from.memory != name => {
                return Err(unavailable("it was restored from another snapshot"));
            }
            Some(from) if !from.recording => {
                return Err(unavailable(
                    "it was not restored for recording (RestoreMode::Record): a prefetch or a recycled slot's \
                     pages would count as touched",
                ));
            }
            Some(_) => {}
        }
        let space = state.serving(self.generation).ok_or(Error::NotFramemap { base: self.base })?;
        let touched = space.touched_pages().map_err(|source| Error::Report { base: self.base, source })?;
        let within = PageRange::new(0, pages);
        Ok(touched.into_iter().map(|r| r.intersect(within)).filter(|r| !r.is_empty()).collect())
    }

    /// Pages of the memory that the hole guard replaced because host code
    /// touched them while they were inaccessible (see [`Error::Poisoned`]):
    /// non-zero means the memory is poisoned.
    pub fn poisoned_pages(&self) -> Result<u64> {
        self.run(None, false, |space| Ok(space.poisoned_pages()))
    }

    /// Checks the memory's frame table against the kernel's mappings, after
    /// folding in what the SIGBUS guard and the hole guard did (see
    /// [`LinearSpace::reconcile`]).
    pub fn validate(&self) -> Result<()> {
        self.run(None, false, |space| {
            space.reconcile()?;
            space.validate()
        })
        .map_err(|e| match e {
            Error::Window { base, source } => Error::Report { base, source },
            e => e,
        })
    }

    /// Runs `f` on the memory's space if the memory is still alive. With
    /// `store`, refuses a store that does not own it (the borrow rule in the
    /// module docs); without, the caller has checked the rule (inspection
    /// touches no byte, and a guest's memory-control call runs with its
    /// store borrowed). A `change` is refused on a poisoned memory.
    fn run<T>(
        &self,
        store: Option<Owner>,
        change: bool,
        f: impl FnOnce(&mut LinearSpace) -> framemap::Result<T>,
    ) -> Result<T> {
        let gone = || Error::NotFramemap { base: self.base };
        let slot = self.slot.upgrade().ok_or_else(gone)?;
        let mut state = slot.lock();
        let space = state.serving(self.generation).ok_or_else(gone)?;
        match (self.owner, store) {
            (_, None) | (Owner::Shared, Some(_)) => {}
            (Owner::Store(_), Some(given)) if given == self.owner => {}
            (Owner::Store(_), Some(_)) => return Err(Error::WrongStore { base: self.base }),
            (Owner::Unknown, Some(_)) => return Err(Error::StoreUnknown { base: self.base }),
        }
        if change && space.poisoned_pages() > 0 {
            return Err(Error::Poisoned { base: self.base, pages: space.poisoned_pages() });
        }
        f(space).map_err(|source| Error::Window { base: self.base, source })
    }

    /// Runs a change of mappings from a guest's memory-control call (whose
    /// store is borrowed by the call), refused on a poisoned memory.
    pub(crate) fn change_in_call(&self, f: impl FnOnce(&mut LinearSpace) -> framemap::Result<()>) -> Result<()> {
        self.run(None, true, f)
    }
}
