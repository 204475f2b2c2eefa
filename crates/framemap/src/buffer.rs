//! Host-shared buffers: memory the host and guests see at the same time.
//!
//! Invariants:
//! - The buffer's file is a memfd sealed against shrinking and growing before
//!   anything maps it, so no window of it can raise SIGBUS.
//! - Every memory that maps a window of the buffer first registered its owner
//!   as a [`WindowHost`] (a [`BufferGrant`] is the proof), so
//!   [`SharedBuffer::revoke`] reaches every window: each becomes `Unmapped`
//!   (one `mmap(MAP_FIXED)` per run, so a guest sees the buffer's page or an
//!   inaccessible one, never anything else).
//! - After revocation no new window can be made and the host view is gone;
//!   the buffer's pages are freed once the last window and handle are.

use crate::error::{Error, Result};
use crate::frame::BackingId;
use crate::sys::memfd;
use crate::sys::mman::Mapping;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

/// The owner of a memory that may map windows of buffers: what
/// [`SharedBuffer::revoke`] calls to unmap the windows of that buffer.
pub trait WindowHost: Send + Sync {
    /// Unmaps every window of buffer `buffer` (make them `Unmapped`).
    fn revoke_windows(&self, buffer: BackingId);
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
    revoked: AtomicBool,
    /// The host's read-write view; `None` once revoked. Host accesses hold the
    /// read lock, revocation the write lock, so no access outlives the view.
    view: RwLock<Option<Mapping>>,
    hosts: Mutex<Vec<Weak<dyn WindowHost>>>,
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("id", &self.inner.id)
            .field("len", &self.inner.len)
            .field("revoked", &self.is_revoked())
            .finish()
    }
}

/// Proof that a memory's owner is registered with a buffer, needed to map
/// windows of it (see [`crate::LinearSpace::map_buffer`]).
#[derive(Clone, Debug)]
pub struct BufferGrant {
    buffer: SharedBuffer,
}

impl BufferGrant {
    /// The buffer granted.
    pub fn buffer(&self) -> &SharedBuffer {
        &self.buffer
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

    /// Registers `host` so that revocation reaches its windows, and returns
    /// the grant needed to map them. Refused once the buffer is revoked.
    pub fn grant(&self, host: Weak<dyn WindowHost>) -> Result<BufferGrant> {
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_revoked() {
            return Err(Error::Revoked { id: self.id().0 });
        }
        hosts.retain(|h| h.strong_count() > 0);
        if !hosts.iter().any(|h| Weak::ptr_eq(h, &host)) {
            hosts.push(host);
        }
        Ok(BufferGrant { buffer: self.clone() })
    }

    /// Revokes the buffer: every window of it in every memory becomes
    /// `Unmapped` (a guest touching one traps), the host view goes away, and
    /// no new window can be made. Returns how many memories had to be told.
    pub fn revoke(&self) -> usize {
        let hosts = {
            let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
            self.inner.revoked.store(true, Ordering::Release);
            std::mem::take(&mut *hosts)
        };
        let mut told = 0;
        for host in hosts.iter().filter_map(Weak::upgrade) {
            host.revoke_windows(self.id());
            told += 1;
        }
        *self.inner.view.write().unwrap_or_else(|p| p.into_inner()) = None;
        told
    }

    /// Copies `buf.len()` bytes at `offset` out of the buffer. Guests may be
    /// writing at the same time: the copy then holds some mix of old and new
    /// bytes, as for a wasm shared memory.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let view = self.inner.view.read().unwrap_or_else(|p| p.into_inner());
        let view = view.as_ref().ok_or(Error::Revoked { id: self.id().0 })?;
        let start = self.check(offset, buf.len() as u64)?;
        // SAFETY: `start..start + len` lies in the live view (checked, and the
        // read lock keeps it mapped); `buf` is a distinct allocation.
        unsafe { std::ptr::copy_nonoverlapping(view.ptr().as_ptr().add(start), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the buffer at `offset`; guests see it at once.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let view = self.inner.view.read().unwrap_or_else(|p| p.into_inner());
        let view = view.as_ref().ok_or(Error::Revoked { id: self.id().0 })?;
        let start = self.check(offset, data.len() as u64)?;
        // SAFETY: as in `read`; the view is writable shared memory.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), view.ptr().as_ptr().add(start), data.len()) };
        Ok(())
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
}

impl WindowHost for Mutex<crate::LinearSpace> {
    fn revoke_windows(&self, buffer: BackingId) {
        let mut space = self.lock().unwrap_or_else(|p| p.into_inner());
        // Failing to unmap (ENOMEM) leaves the window mapped to the buffer's
        // still-valid file: memory-safe, and reported by `validate`.
        let _ = space.unmap_buffer(buffer);
    }
}
