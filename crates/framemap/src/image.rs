//! Images: the immutable initial bytes of a memory, mapped copy-on-write.
//!
//! Invariant: an image's file can never shrink while the image exists (its
//! own memfds are sealed against shrinking, growing and writing before any
//! mapping; a caller's file is accepted only if it carries `F_SEAL_SHRINK`),
//! and its length is a whole number of host pages, so mapping any page range
//! inside it can never raise SIGBUS. Zero pages are holes in the file: a
//! mostly-empty image costs no memory for its empty pages. An image may be a
//! page-aligned range of a larger file ([`Image::from_file_range_unchecked`]:
//! a compile-cache entry); every mapping and read of it adds its file offset.

use crate::error::{Error, Result};
use crate::frame::BackingId;
use crate::sys::memfd;
use crate::sys::mman::Mapping;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Immutable, page-granular initial contents of a memory, shared by every
/// memory that maps it (clones are cheap and refer to the same file).
#[derive(Clone)]
pub struct Image {
    inner: Arc<ImageFile>,
}

struct ImageFile {
    id: BackingId,
    fd: OwnedFd,
    /// Where the image starts in its file (page-aligned; 0 but for
    /// [`Image::from_file_range_unchecked`]).
    offset: u64,
    len: u64,
    inode: u64,
    /// Whether the file is sealed against writes: only then may its bytes be
    /// read through a `&[u8]` (a file others can write would change under it).
    immutable: bool,
    /// A read-only view of the whole file, made on first use, to restore
    /// dirty pages by copying (immutable files only).
    view: OnceLock<Option<Mapping>>,
    /// The SHA-256 of the contents, computed on first use (immutable
    /// files only: another's may change).
    hash: OnceLock<crate::snapshot::Digest>,
    /// Whether this is a snapshot file, whose pages a capture refers to by
    /// snapshot rather than by the file's content hash.
    snapshot: bool,
    /// For a merged image of a restored layout (`snapshot/merge.rs`): the
    /// frames its pages were copied from, which captures name instead.
    origins: Option<Arc<[crate::snapshot::Origin]>>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image").field("id", &self.inner.id).field("len", &self.inner.len).finish()
    }
}

impl Image {
    /// An image holding `bytes` (its length rounded up to whole host pages).
    pub fn from_bytes(bytes: &[u8]) -> Result<Image> {
        Image::from_segments(bytes.len() as u64, [(0, bytes)])
    }

    /// An image of `len` bytes (rounded up to whole host pages) that reads zero
    /// except where `segments` put bytes: each `(offset, bytes)` is written in
    /// order, so a later segment overwrites an earlier one where they overlap.
    /// Pages no segment writes, and all-zero pages no earlier segment wrote,
    /// stay holes.
    pub fn from_segments<'a>(len: u64, segments: impl IntoIterator<Item = (u64, &'a [u8])>) -> Result<Image> {
        let page = crate::host_page_size() as u64;
        let len = len.checked_next_multiple_of(page).ok_or(Error::InvalidSize {
            what: "image length",
            value: len,
            reason: "too large to round up to a whole page",
        })?;
        let io = |syscall| move |source| Error::Kernel { syscall, start: 0, end: len, source };
        let fd = memfd::create("framemap-image").map_err(io("memfd_create"))?;
        memfd::set_len(&fd, len).map_err(io("ftruncate"))?;
        // Byte ranges already written, to know when a zero page must still be
        // written (it overwrites earlier bytes) rather than left a hole.
        let mut written: Vec<(u64, u64)> = Vec::new();
        for (offset, bytes) in segments {
            let end = offset.checked_add(bytes.len() as u64).filter(|&e| e <= len).ok_or(Error::OutOfBounds {
                start: offset,
                end: offset.saturating_add(bytes.len() as u64),
                accessible: len,
            })?;
            let mut at = offset;
            while at < end {
                let chunk_end = (at / page + 1).saturating_mul(page).min(end);
                let chunk = &bytes[(at - offset) as usize..(chunk_end - offset) as usize];
                let overwrites = written.iter().any(|&(s, e)| s < chunk_end && at < e);
                if overwrites || chunk.iter().any(|&b| b != 0) {
                    memfd::write_all_at(&fd, chunk, at).map_err(io("pwrite"))?;
                }
                at = chunk_end;
            }
            if offset < end {
                written.push((offset, end));
            }
        }
        memfd::seal_immutable(&fd).map_err(io("fcntl(F_ADD_SEALS)"))?;
        Image::from_sealed(fd, len)
    }

    /// An image backed directly by `file`, which must be sealed against
    /// shrinking (`F_SEAL_SHRINK`, e.g. a memfd you sealed): then no mapping of
    /// it can ever raise SIGBUS. Its length is the file's, rounded up to whole
    /// pages (the tail of the last page reads zero). Writes to the file by
    /// others show through in pages no memory has written yet unless it is
    /// also sealed with `F_SEAL_WRITE`. A file that can shrink is refused with
    /// [`Error::CanShrink`]: use [`Image::copy_of_file`] for it.
    pub fn from_file(file: impl Into<OwnedFd>) -> Result<Image> {
        let fd = file.into();
        if !memfd::cannot_shrink(&fd) {
            return Err(Error::CanShrink);
        }
        let len = memfd::len(&fd).map_err(|source| Error::Kernel { syscall: "fstat", start: 0, end: 0, source })?;
        let page = crate::host_page_size() as u64;
        Image::from_sealed(fd, len.next_multiple_of(page))
    }

    /// An image holding a copy of `file`'s bytes, in a sealed memfd (all-zero
    /// pages are left as holes). Costs a read of the whole file once.
    pub fn copy_of_file(file: impl AsFd) -> Result<Image> {
        let file = file.as_fd();
        let len = memfd::len(file).map_err(|source| Error::Kernel { syscall: "fstat", start: 0, end: 0, source })?;
        let mut chunk = vec![0u8; 1 << 20];
        let mut chunks = Vec::new();
        let mut offset = 0;
        while offset < len {
            let n = chunk.len().min((len - offset) as usize);
            memfd::read_exact_at(file, &mut chunk[..n], offset).map_err(|source| Error::Kernel {
                syscall: "pread",
                start: offset,
                end: offset + n as u64,
                source,
            })?;
            chunks.push((offset, chunk[..n].to_vec()));
            offset += n as u64;
        }
        Image::from_segments(len, chunks.iter().map(|(o, b)| (*o, b.as_slice())))
    }

    /// An image backed directly by `file`, which need not be sealed: its
    /// length is the file's, rounded up to whole pages.
    ///
    /// # Safety
    /// The file must not shrink while the image, or any memory that maps
    /// it, exists (a mapped page past the file's end raises SIGBUS, which
    /// kills the process), and it must not change where a Rust reference
    /// reads it (as a `&[u8]` from `wasmtime::Memory::data`), like
    /// `memmap2::Mmap::map`'s contract.
    pub unsafe fn from_file_unchecked(file: impl Into<OwnedFd>) -> Result<Image> {
        let fd = file.into();
        let len = memfd::len(&fd).map_err(|source| Error::Kernel { syscall: "fstat", start: 0, end: 0, source })?;
        Image::from_sealed(fd, len.next_multiple_of(crate::host_page_size() as u64))
    }

    /// An image backed directly by the `len` bytes (rounded up to whole
    /// pages) of `file` from byte `offset` on, which must be a multiple of
    /// the host page size: a range of a larger file, such as a compile-cache
    /// entry holding several images. The image counts as immutable
    /// ([`Image::is_immutable`]): that is this function's contract.
    ///
    /// Refused with [`Error::Misaligned`] if `offset` is not page-aligned,
    /// and with [`Error::OutOfBounds`] if the range reaches a page past the
    /// file's end (mapping it would raise SIGBUS).
    ///
    /// # Safety
    /// The file must not shrink, and its bytes in the range must not change,
    /// while the image or any memory that maps it exists (a mapped page past
    /// the file's end raises SIGBUS, which kills the process, and Rust
    /// references to the bytes, as `wasmtime::Memory::data` lends out,
    /// must not see them change): the contract of `memmap2::Mmap::map`, or
    /// of wasmtime's `Module::deserialize_file`.
    pub unsafe fn from_file_range_unchecked(file: impl Into<OwnedFd>, offset: u64, len: u64) -> Result<Image> {
        let fd = file.into();
        let page = crate::host_page_size();
        if !offset.is_multiple_of(page as u64) {
            return Err(Error::Misaligned { start: offset, len, page_size: page });
        }
        let page = page as u64;
        let file_len =
            memfd::len(&fd).map_err(|source| Error::Kernel { syscall: "fstat", start: 0, end: 0, source })?;
        let len = len.checked_next_multiple_of(page).ok_or(Error::Overflow { start: offset, len })?;
        let end = offset.checked_add(len).ok_or(Error::Overflow { start: offset, len })?;
        if end > file_len.next_multiple_of(page) {
            return Err(Error::OutOfBounds { start: offset, end, accessible: file_len });
        }
        let mut image = Image::from_sealed(fd, len)?;
        if let Some(inner) = Arc::get_mut(&mut image.inner) {
            inner.offset = offset;
            inner.immutable = true;
        }
        Ok(image)
    }

    /// The SHA-256 of the image's contents (its whole length, holes read
    /// as zeros): how a snapshot names the image it needs. Computed once,
    /// reading the whole image, for an image sealed against writes; every
    /// time for one that is not (its contents may change).
    pub fn content_hash(&self) -> Result<crate::snapshot::Digest> {
        if let Some(hash) = self.inner.hash.get() {
            return Ok(*hash);
        }
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        let mut chunk = vec![0u8; 1 << 20];
        let mut offset = 0;
        while offset < self.len() {
            let n = chunk.len().min((self.len() - offset) as usize);
            self.copy_to(offset, &mut chunk[..n]).map_err(|source| Error::Kernel {
                syscall: "pread",
                start: offset,
                end: offset + n as u64,
                source,
            })?;
            hasher.update(&chunk[..n]);
            offset += n as u64;
        }
        let hash = crate::snapshot::Digest(hasher.finalize().into());
        if self.inner.immutable {
            let _ = self.inner.hash.set(hash);
        }
        Ok(hash)
    }

    pub(crate) fn from_sealed(fd: OwnedFd, len: u64) -> Result<Image> {
        let inode = rustix::fs::fstat(&fd)
            .map_err(|e| Error::Kernel { syscall: "fstat", start: 0, end: len, source: e.into() })?
            .st_ino;
        let immutable = memfd::cannot_be_written(&fd);
        let (view, hash) = (OnceLock::new(), OnceLock::new());
        let (snapshot, origins) = (false, None);
        let (id, offset) = (BackingId::fresh(), 0);
        let file = ImageFile { id, fd, offset, len, inode, immutable, view, hash, snapshot, origins };
        Ok(Image { inner: Arc::new(file) })
    }

    /// Whether the image's file is sealed against writes (`F_SEAL_WRITE`;
    /// every image framemap makes is), or promised never to change
    /// ([`Image::from_file_range_unchecked`]): only then are its bytes fixed
    /// for good. A file others may still write shows their writes through in
    /// pages no memory has written yet, so the wasmtime adapter refuses to
    /// map such an image into a memory whose bytes wasmtime lends out as a
    /// `&[u8]`.
    pub fn is_immutable(&self) -> bool {
        self.inner.immutable
    }

    /// This image, marked as a snapshot file's (it must be fresh: no clone
    /// of it exists yet).
    pub(crate) fn into_snapshot_data(mut self) -> Image {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.snapshot = true;
        }
        self
    }

    /// Whether this image is a snapshot file (see [`crate::snapshot`]).
    pub(crate) fn is_snapshot_data(&self) -> bool {
        self.inner.snapshot
    }

    /// This image, marked as merged from `origins` (it must be fresh: no
    /// clone of it exists yet). It also counts as snapshot data, so a
    /// capture that does not look at the origins stores its pages by
    /// content, never names the merged file.
    pub(crate) fn into_merged(mut self, origins: Arc<[crate::snapshot::Origin]>) -> Image {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.snapshot = true;
            inner.origins = Some(origins);
        }
        self
    }

    /// Where the pages of a merged image came from, if it is one.
    pub(crate) fn origins(&self) -> Option<&[crate::snapshot::Origin]> {
        self.inner.origins.as_deref()
    }

    /// The image's identity in frame tables.
    pub fn id(&self) -> BackingId {
        self.inner.id
    }

    /// Length in bytes (a whole number of host pages).
    pub fn len(&self) -> u64 {
        self.inner.len
    }

    /// Whether the image holds no page.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Bytes of memory the image's file really holds (its holes excluded;
    /// the whole file's, for an image of a range of a file).
    pub fn allocated_bytes(&self) -> Result<u64> {
        let stat = rustix::fs::fstat(&self.inner.fd).map_err(|e| Error::Kernel {
            syscall: "fstat",
            start: 0,
            end: self.len(),
            source: e.into(),
        })?;
        Ok(u64::try_from(stat.st_blocks).unwrap_or(0) * 512)
    }

    /// Copies `buf.len()` bytes at `offset` out of the image.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end =
            offset.checked_add(buf.len() as u64).ok_or(Error::Overflow { start: offset, len: buf.len() as u64 })?;
        if end > self.len() {
            return Err(Error::OutOfBounds { start: offset, end, accessible: self.len() });
        }
        memfd::read_exact_at(&self.inner.fd, buf, self.inner.offset + offset).map_err(|source| Error::Kernel {
            syscall: "pread",
            start: offset,
            end,
            source,
        })
    }

    /// Copies `target.len()` bytes at `offset` of the image into `target`:
    /// a `memcpy` from a read-only view of the image (made once) if its file
    /// is sealed against writes, else (or if no view can be made) a `pread`,
    /// which copies a file others may be writing without a Rust reference to
    /// its bytes.
    pub(crate) fn copy_to(&self, offset: u64, target: &mut [u8]) -> std::io::Result<()> {
        let view = self.inner.view.get_or_init(|| {
            if !self.inner.immutable {
                return None;
            }
            let len = usize::try_from(self.inner.len).ok().filter(|&l| l > 0)?;
            // SAFETY: the image's file covers `len` bytes from its offset
            // and cannot shrink (module invariant).
            unsafe { Mapping::of_file_at(self.fd(), self.inner.offset, len, crate::Protection::Read) }.ok()
        });
        let end = offset as usize + target.len();
        match view {
            Some(view) if end <= view.len() => {
                // The view is mapped read-only for the image's lifetime, of a
                // file sealed against writes: its bytes never change.
                // SAFETY: so a slice of `offset..end`, inside the view, is sound.
                let source =
                    unsafe { std::slice::from_raw_parts(view.ptr().as_ptr().add(offset as usize), target.len()) };
                target.copy_from_slice(source);
                Ok(())
            }
            _ => memfd::read_exact_at(&self.inner.fd, target, self.inner.offset + offset),
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// Where the image starts in its file (page-aligned).
    pub(crate) fn file_offset(&self) -> u64 {
        self.inner.offset
    }

    pub(crate) fn inode(&self) -> u64 {
        self.inner.inode
    }
}
