//! Host-shared buffers: memory the host and guests see at the same time.
//!
//! Invariants:
//! - A buffer's file cannot shrink under a mapping (so no window of it can
//!   raise SIGBUS): buffers from [`SharedBuffer::new`] are memfds sealed
//!   against shrinking and growing before anything maps them, and
//!   [`SharedBuffer::from_fd`] seals the file it is given against shrinking
//!   when the kernel lets it.
//! - A buffer whose file could not be sealed is *unsealed*: its host view
//!   and every window of it are registered with the SIGBUS guard
//!   (`sys::sigbus`) before they are mapped and until after they are gone,
//!   so a truncation under a live mapping never kills the process (invariant
//!   3 of ARCHITECTURE.md). Once a truncation was observed the host view
//!   reads and writes fail with [`Error::BufferTruncated`], and no new
//!   window can be made.
//! - Every memory that maps a window of the buffer first registered its owner
//!   as a [`WindowOwner`] (a [`BufferGrant`] is the proof), so
//!   [`SharedBuffer::revoke`] reaches every window: each becomes `Unmapped`
//!   (one `mmap(MAP_FIXED)` per run, so a guest sees the buffer's page or an
//!   inaccessible one, never anything else).
//! - After revocation no new window can be made and the host view is gone;
//!   the buffer's pages are freed once the last window and handle are.

use crate::error::{Error, Result};
use crate::frame::BackingId;
use crate::sys::memfd;
use crate::sys::mman::Mapping;
use crate::sys::sigbus;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

/// The owner of a memory that may map windows of buffers: what
/// [`SharedBuffer::revoke`] calls to unmap the windows of that buffer.
pub trait WindowOwner: Send + Sync {
    /// Unmaps every window of buffer `buffer` (make them `Unmapped`). An
    /// error means a window may have survived (see
    /// [`crate::LinearSpace::unmap_buffer`]).
    fn revoke_windows(&self, buffer: BackingId) -> Result<()>;
}

/// A host buffer that guests can map as `Shared` frames: their writes reach
/// the host and each other. Clones share the buffer.
#[derive(Clone)]
pub struct SharedBuffer {
    inner: Arc<BufferFile>,
}

struct BufferFile {
    id: BackingId,
    fd: OwnedFd,
    len: u64,
    inode: u64,
    /// For unsealed buffers, the file length the buffer needs (the length
    /// asked for, before rounding to pages); `None` for sealed buffers.
    unsealed: Option<u64>,
    revoked: AtomicBool,
    /// The host's read-write view; `None` once revoked. Host accesses hold the
    /// read lock, revocation the write lock, so no access outlives the view.
    view: RwLock<Option<View>>,
    hosts: Mutex<Vec<Weak<dyn WindowOwner>>>,
}

/// The host view and, for unsealed buffers, its registration with the
/// SIGBUS guard. Fields drop in order: the registration goes before the
/// mapping does.
struct View {
    guarded: Option<sigbus::SlotId>,
    mapping: Mapping,
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(slot) = self.guarded.take() {
            sigbus::unguard(slot);
        }
    }
}

impl Drop for BufferFile {
    fn drop(&mut self) {
        // The view's registration retires its events: drop it first, then
        // forget them all.
        *self.view.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        if self.unsealed.is_some() {
            sigbus::forget_buffer(self.id.0);
        }
    }
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("id", &self.inner.id)
            .field("len", &self.inner.len)
            .field("sealed", &self.is_sealed())
            .field("revoked", &self.is_revoked())
            .finish()
    }
}

/// Proof that a memory's owner is registered with a buffer, needed to map
/// windows of it (see [`crate::LinearSpace::map_buffer`]). A grant is bound
/// to the host it was issued for: only a space whose window host
/// ([`crate::LinearSpace::set_window_owner`]) is that host accepts it, so
/// revocation always reaches every window made with it.
#[derive(Clone)]
pub struct BufferGrant {
    buffer: SharedBuffer,
    host: Weak<dyn WindowOwner>,
}

impl fmt::Debug for BufferGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferGrant").field("buffer", &self.buffer).finish_non_exhaustive()
    }
}

impl BufferGrant {
    /// The buffer granted.
    pub fn buffer(&self) -> &SharedBuffer {
        &self.buffer
    }

    /// Whether this grant was issued for `host`.
    pub(crate) fn is_for(&self, host: &Weak<dyn WindowOwner>) -> bool {
        Weak::ptr_eq(&self.host, host)
    }
}

impl SharedBuffer {
    /// A zero-filled buffer of `len` bytes (rounded up to whole host pages).
    pub fn new(len: u64) -> Result<SharedBuffer> {
        let page = crate::host_page_size() as u64;
        let len = len.checked_next_multiple_of(page).filter(|&l| l > 0 && l <= isize::MAX as u64).ok_or(
            Error::InvalidSize { what: "buffer length", value: len, reason: "must be between 1 byte and isize::MAX" },
        )?;
        let io = |syscall| move |source| Error::Kernel { syscall, start: 0, end: len, source };
        let fd = memfd::create("framemap-buffer").map_err(io("memfd_create"))?;
        memfd::set_len(&fd, len).map_err(io("ftruncate"))?;
        rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW)
            .map_err(|e| io("fcntl(F_ADD_SEALS)")(e.into()))?;
        let inode = rustix::fs::fstat(&fd).map_err(|e| io("fstat")(e.into()))?.st_ino;
        // SAFETY: the file covers `len` bytes and is sealed against shrinking.
        let view =
            unsafe { Mapping::of_file(fd.as_fd(), len as usize, crate::Protection::ReadWrite) }.map_err(io("mmap"))?;
        Ok(SharedBuffer {
            inner: Arc::new(BufferFile {
                id: BackingId::fresh(),
                fd,
                len,
                inode,
                unsealed: None,
                revoked: AtomicBool::new(false),
                view: RwLock::new(Some(View { guarded: None, mapping: view })),
                hosts: Mutex::new(Vec::new()),
            }),
        })
    }

    /// A buffer over the first `len` bytes (rounded up to whole host pages)
    /// of an existing file: a regular file, a POSIX shared-memory object, a
    /// memfd, a dma-buf. The descriptor must be open for reading and writing
    /// (the host view is a shared read-write mapping), and the file must hold
    /// at least `len` bytes now. Bytes between the end of the file and the
    /// end of its last page read zero and writes to them do not reach the
    /// file (as for any shared mapping).
    ///
    /// What is guaranteed depends on whether the file can be sealed; see
    /// [`SharedBuffer::is_sealed`]:
    ///
    /// - **Sealed**: the file already carries `F_SEAL_SHRINK`, or framemap
    ///   could add it (a memfd created with `MFD_ALLOW_SEALING` and not
    ///   sealed with `F_SEAL_SEAL`; framemap then adds `F_SEAL_SHRINK`, which
    ///   outlives the buffer: nobody can shrink that file any more). The
    ///   buffer behaves exactly as one from [`SharedBuffer::new`]: no mapping
    ///   of it can ever fault.
    /// - **Unsealed** (anything else: regular files, POSIX shm objects,
    ///   dma-bufs, memfds without sealing): another process, or the host,
    ///   can shrink the file under a live mapping. framemap then guarantees
    ///   that the process survives, and nothing more about the contents:
    ///   - the first access to a page past the new end of the file raises
    ///     SIGBUS, which framemap's handler (installed once per process by
    ///     the first unsealed buffer, chained to any previous handler)
    ///     absorbs: the *whole* mapping holding the page (the host view, or
    ///     one window) is replaced at once, including its pages still inside
    ///     the file;
    ///   - a window becomes inaccessible: a guest touching it traps (a wasm
    ///     memory fault), host reads and writes through
    ///     [`crate::LinearSpace::read`] / [`crate::LinearSpace::write`] fail
    ///     with [`Error::BufferTruncated`], and the frame table marks it
    ///     `Unmapped` (see [`crate::LinearSpace::reconcile`]);
    ///   - the host view reads zero; [`SharedBuffer::read`] and
    ///     [`SharedBuffer::write`] fail with [`Error::BufferTruncated`] from
    ///     the access that observed the truncation on; bytes written after
    ///     the truncation, by anyone, may be lost, and bytes past the new end
    ///     of the file are gone even if the file grows again;
    ///   - mappings in which no access faulted keep working (a truncation
    ///     is observed when a page past the end is touched, not when the
    ///     file shrinks; [`SharedBuffer::is_truncated`] also compares the
    ///     file's length);
    ///   - host code that touches a window through raw pointers into guest
    ///     memory (for example wasmtime's `Memory::data`) is not protected:
    ///     after the window was demoted it faults as on any unmapped page.
    ///
    ///   dma-bufs cannot be truncated, but their exporters decide whether
    ///   they can be mapped shared and writable at all (the call fails with
    ///   [`Error::Kernel`] otherwise), and framemap does not bracket accesses
    ///   with `DMA_BUF_IOCTL_SYNC`: coherency with the device is the
    ///   caller's affair.
    ///
    /// Fails with [`Error::FileTooShort`] if the file is shorter than `len`,
    /// and [`Error::GuardFull`] if the guard's registry is full.
    pub fn from_fd(fd: impl Into<OwnedFd>, len: u64) -> Result<SharedBuffer> {
        let fd: OwnedFd = fd.into();
        let page = crate::host_page_size() as u64;
        let requested = len;
        let len = len.checked_next_multiple_of(page).filter(|&l| l > 0 && l <= isize::MAX as u64).ok_or(
            Error::InvalidSize { what: "buffer length", value: len, reason: "must be between 1 byte and isize::MAX" },
        )?;
        let io = |syscall| move |source| Error::Kernel { syscall, start: 0, end: len, source };
        let file_len = memfd::len(&fd).map_err(io("fstat"))?;
        if file_len < requested {
            return Err(Error::FileTooShort { len: requested, file_len });
        }
        let sealed =
            memfd::cannot_shrink(&fd) || rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).is_ok();
        let inode = rustix::fs::fstat(&fd).map_err(|e| io("fstat")(e.into()))?.st_ino;
        let id = BackingId::fresh();
        let view = if sealed {
            // SAFETY: the file covers `requested` bytes (checked), hence
            // every page of `len`, and is sealed against shrinking.
            let mapping = unsafe { Mapping::of_file(fd.as_fd(), len as usize, crate::Protection::ReadWrite) }
                .map_err(io("mmap"))?;
            View { guarded: None, mapping }
        } else {
            sigbus::install().map_err(io("sigaction(SIGBUS)"))?;
            let mut ticket = sigbus::reserve(1).ok_or(Error::GuardFull { capacity: sigbus::CAPACITY })?;
            // The file may shrink later: a page past its end then raises
            // SIGBUS, which the guard absorbs for this range, registered below
            // before any access can reach the view (this function is the only
            // holder of the address until it returns).
            // SAFETY: the file covers every page of `len` now (checked).
            let mapping = unsafe { Mapping::of_file(fd.as_fd(), len as usize, crate::Protection::ReadWrite) }
                .map_err(io("mmap"))?;
            let start = mapping.ptr().as_ptr() as usize;
            let range = sigbus::Range::new(start, start + mapping.len(), sigbus::Guard::HostView, id.0, fd.as_fd(), 0);
            let slot = sigbus::guard(&mut ticket, range).ok_or(Error::GuardFull { capacity: sigbus::CAPACITY })?;
            View { guarded: Some(slot), mapping }
        };
        Ok(SharedBuffer {
            inner: Arc::new(BufferFile {
                id,
                fd,
                len,
                inode,
                unsealed: (!sealed).then_some(requested),
                revoked: AtomicBool::new(false),
                view: RwLock::new(Some(view)),
                hosts: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The buffer's identity in frame tables.
    pub fn id(&self) -> BackingId {
        self.inner.id
    }

    /// Length in bytes (whole host pages).
    pub fn len(&self) -> u64 {
        self.inner.len
    }

    /// Always false: a buffer holds at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether [`SharedBuffer::revoke`] was called.
    pub fn is_revoked(&self) -> bool {
        self.inner.revoked.load(Ordering::Acquire)
    }

    /// Whether the buffer's file is sealed against shrinking, so that no
    /// mapping of it can ever fault. Buffers from [`SharedBuffer::new`]
    /// always are; see [`SharedBuffer::from_fd`] for the others.
    pub fn is_sealed(&self) -> bool {
        self.inner.unsealed.is_none()
    }

    /// How many SIGBUS faults the guard absorbed in mappings of this buffer
    /// (its host view and its windows in every memory): each is an access
    /// that found the file truncated. Always 0 for sealed buffers.
    pub fn truncation_events(&self) -> u64 {
        if self.is_sealed() { 0 } else { sigbus::events(self.id().0) }
    }

    /// Whether the buffer's file was found truncated: an access faulted
    /// ([`SharedBuffer::truncation_events`]), or the file is now shorter
    /// than the buffer needs. Always false for sealed buffers.
    pub fn is_truncated(&self) -> bool {
        let Some(needed) = self.inner.unsealed else { return false };
        self.truncation_events() > 0 || memfd::len(&self.inner.fd).map_or(true, |len| len < needed)
    }

    /// Registers `host` so that revocation reaches its windows, and returns
    /// the grant needed to map them. Refused once the buffer is revoked.
    pub fn grant(&self, host: Weak<dyn WindowOwner>) -> Result<BufferGrant> {
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_revoked() {
            return Err(Error::Revoked { id: self.id().0 });
        }
        hosts.retain(|h| h.strong_count() > 0);
        if !hosts.iter().any(|h| Weak::ptr_eq(h, &host)) {
            hosts.push(host.clone());
        }
        Ok(BufferGrant { buffer: self.clone(), host })
    }

    /// Revokes the buffer: every window of it in every memory becomes
    /// `Unmapped` (a guest touching one traps), the host view goes away, and
    /// no new window can be made. Returns how many memories had to be told.
    ///
    /// Every memory is told, even after one fails. Fails with
    /// [`Error::Revocation`] if some memory could not unmap every window
    /// (the error names how many and the first failure): only then may a
    /// window have survived, and the host must not hand the buffer's pages
    /// to anyone else. A kernel failure while unmapping does not leave a
    /// window: the range is re-covered as `Unmapped` or the process aborts
    /// (ARCHITECTURE.md, invariant 6).
    pub fn revoke(&self) -> Result<usize> {
        let hosts = {
            let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
            self.inner.revoked.store(true, Ordering::Release);
            std::mem::take(&mut *hosts)
        };
        let (mut told, mut failed, mut first) = (0, 0, None);
        for host in hosts.iter().filter_map(Weak::upgrade) {
            if let Err(e) = host.revoke_windows(self.id()) {
                failed += 1;
                first.get_or_insert(e);
            }
            told += 1;
        }
        *self.inner.view.write().unwrap_or_else(|p| p.into_inner()) = None;
        match first {
            None => Ok(told),
            Some(source) => Err(Error::Revocation { id: self.id().0, failed, told, source: Box::new(source) }),
        }
    }

    /// Copies `buf.len()` bytes at `offset` out of the buffer. Guests may be
    /// writing at the same time: the copy then holds some mix of old and new
    /// bytes, as for a wasm shared memory.
    ///
    /// Fails with [`Error::BufferTruncated`] if the buffer is unsealed and
    /// the view was found truncated, before or during the copy (`buf` then
    /// holds zeros where the file was gone).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let view = self.inner.view.read().unwrap_or_else(|p| p.into_inner());
        let view = view.as_ref().ok_or(Error::Revoked { id: self.id().0 })?;
        let start = self.check(offset, buf.len() as u64)?;
        self.check_view(view)?;
        // If the file is unsealed and shrank, the SIGBUS guard replaces the view
        // with zero pages and the copy resumes on them.
        // SAFETY: `start..start + len` lies in the live view (checked, and the
        // read lock keeps it mapped); `buf` is a distinct allocation.
        unsafe { std::ptr::copy_nonoverlapping(view.mapping.ptr().as_ptr().add(start), buf.as_mut_ptr(), buf.len()) };
        self.check_view(view)
    }

    /// Copies `data` into the buffer at `offset`; guests see it at once.
    ///
    /// Fails with [`Error::BufferTruncated`] as [`SharedBuffer::read`] does
    /// (the bytes are then lost).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let view = self.inner.view.read().unwrap_or_else(|p| p.into_inner());
        let view = view.as_ref().ok_or(Error::Revoked { id: self.id().0 })?;
        let start = self.check(offset, data.len() as u64)?;
        self.check_view(view)?;
        // SAFETY: as in `read`; the view is writable shared memory (or
        // private zero pages once the guard replaced it).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), view.mapping.ptr().as_ptr().add(start), data.len()) };
        self.check_view(view)
    }

    /// Refuses access through a view the SIGBUS guard replaced.
    fn check_view(&self, view: &View) -> Result<()> {
        match view.guarded {
            Some(slot) if sigbus::is_demoted(slot) => Err(Error::BufferTruncated { id: self.id().0 }),
            _ => Ok(()),
        }
    }

    fn check(&self, offset: u64, len: u64) -> Result<usize> {
        let end = offset.checked_add(len).ok_or(Error::Overflow { start: offset, len })?;
        if end > self.len() {
            return Err(Error::PastBacking { id: self.id().0, start: offset, end, len: self.len() });
        }
        Ok(offset as usize)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    pub(crate) fn inode(&self) -> u64 {
        self.inner.inode
    }

    /// Whether windows of this buffer must be registered with the SIGBUS
    /// guard (its file is not sealed against shrinking).
    pub(crate) fn guarded(&self) -> bool {
        self.inner.unsealed.is_some()
    }
}

impl WindowOwner for Mutex<crate::LinearSpace> {
    fn revoke_windows(&self, buffer: BackingId) -> Result<()> {
        self.lock().unwrap_or_else(|p| p.into_inner()).unmap_buffer(buffer)
    }
}
