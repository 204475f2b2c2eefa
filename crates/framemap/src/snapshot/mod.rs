//! Snapshots: a memory's state in a file any host can ship, captured in time
//! proportional to what changed, restored lazily, copy-on-write.
//!
//! Rooms:
//! - `format`: the file format (manifest, checks), no I/O; `header`: its
//!   first 64 bytes; `record`: a memory record's encoding (tables, runs);
//!   `codec`: the manifest's fields (varints, deltas, names);
//! - `capture`: [`SnapshotWriter`], which captures memories (by the frame
//!   tag table's snapshot rules) into a new file, written atomically, with
//!   their working sets' data pages packed first if given;
//! - `runs`: cutting table runs by page sets and merging run records;
//! - `restore`: resolving a snapshot chain into the sources of each page,
//!   [`LinearSpace::restore`](crate::LinearSpace::restore) (which
//!   prefetches the working set), flattening;
//! - this file: [`Snapshot`], an opened, checked snapshot file.
//!
//! The snapshot rules, one per frame tag (ARCHITECTURE.md's table):
//! `Unmapped` runs are recorded as holes that trap; `Zero` pages never
//! written (or holding only zeros) as holes; written `Zero` and `Image`
//! pages by content; clean `Image` pages by reference to the image's content
//! hash; `Shared` windows by the buffer's name and range only, never their
//! contents. An incremental snapshot stores the pages changed since its
//! parent was captured and refers to its parent for the rest.
//!
//! Invariants:
//! 1. A [`Snapshot`] is checked when it is opened: header and manifest
//!    checksums, every rule of the format, the page size; its data pages are
//!    the file's own pages, mapped `MAP_PRIVATE` at restore and never read
//!    whole (the data digest is checked by [`Snapshot::verify`]).
//! 2. A snapshot's data never changes under a memory restored from it: the
//!    file is sealed (made in memory by [`SnapshotWriter::in_memory`]),
//!    copied into a sealed memory file ([`Snapshot::open`]), or the caller
//!    promised it ([`Snapshot::map_file`], `unsafe`).
//! 3. A restore either produces exactly the memory the snapshot describes or
//!    fails with a specific error before changing the memory (a kernel
//!    failure part-way leaves the memory as `restore_layout` would: true to
//!    its table).

mod capture;
mod codec;
mod format;
mod header;
mod merge;
mod record;
mod restore;
mod runs;

pub use capture::{BufferNamer, Durability, SnapshotInfo, SnapshotWriter};
pub use format::{
    Digest, FORMAT_VERSION, GlobalRecord, GlobalValue, MAX_NAME_LEN, Manifest, MemoryRecord, PageSource, RunRecord,
    WorkingSetRecord,
};
pub(crate) use merge::Origin;
pub use restore::{Resolver, RestoreOptions};

use crate::error::{Error, Result, SnapshotDamage};
use crate::image::Image;
use crate::page::PageRange;
use crate::sys::memfd;
use format::{FormatError, HEADER_LEN};
use header::Header;
use rustix::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

/// An opened, checked snapshot file (see the module's invariants): its
/// manifest, and its data pages as an image that restores map lazily.
/// Clones are cheap and share the file.
#[derive(Clone, Debug)]
pub struct Snapshot {
    inner: Arc<Opened>,
}

#[derive(Debug)]
struct Opened {
    id: Digest,
    header: Header,
    manifest: Manifest,
    /// The whole file (header, data and manifest) as an image: data page
    /// `n` is image page `n + 1`.
    image: Image,
    /// The parent, once attached ([`Snapshot::with_parent`]).
    parent: Option<Snapshot>,
    /// Where it came from, for messages.
    path: String,
    /// Merged images of its memories' layouts, made by the first restore
    /// that merged them (`merge.rs`), by memory name and gap.
    merged: std::sync::Mutex<rustc_hash::FxHashMap<(String, u64), Image>>,
    /// Its memories resolved into layouts by the first restore of each
    /// (`restore.rs`), by memory name and merge gap.
    planned: std::sync::Mutex<rustc_hash::FxHashMap<(String, u64), Arc<restore::PlannedLayout>>>,
    /// The names of the buffers its windows show (see
    /// [`Snapshot::window_buffers`]), found once.
    window_buffers: std::sync::OnceLock<Vec<(String, String)>>,
}

impl Snapshot {
    /// Opens the snapshot file at `path`, checks its header and manifest,
    /// and copies it into a sealed memory file (all-zero pages stay holes),
    /// so that nothing another process does to the file afterwards can
    /// reach a memory restored from it. The copy costs one read of the
    /// file; [`Snapshot::map_file`] maps the file itself instead.
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| Error::SnapshotIo { path: name.clone(), source })?;
        let (header, manifest_bytes) = read_metadata(&file, &name)?;
        let len = header.file_len().unwrap_or(0);
        let copy =
            copy_to_sealed_memfd(&file, len).map_err(|source| Error::SnapshotIo { path: name.clone(), source })?;
        let image = Image::from_file(copy)?;
        Snapshot::checked(header, &manifest_bytes, image, name)
    }

    /// Opens the snapshot file at `path` and maps it as it is: a restore
    /// reads only the pages its memory touches, and opening costs time
    /// proportional to the manifest, whatever the data's size.
    ///
    /// # Safety
    /// The file must not be truncated or written while this snapshot, or
    /// any memory restored from it, exists (see
    /// [`Image::from_file_unchecked`]).
    pub unsafe fn map_file(path: impl AsRef<Path>) -> Result<Snapshot> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| Error::SnapshotIo { path: name.clone(), source })?;
        let (header, manifest_bytes) = read_metadata(&file, &name)?;
        // SAFETY: the caller's contract.
        let image = unsafe { Image::from_file_unchecked(OwnedFd::from(file)) }?;
        Snapshot::checked(header, &manifest_bytes, image, name)
    }

    /// Opens a snapshot held in a file sealed against shrinking and writing
    /// (a memory file, e.g. one [`SnapshotWriter::in_memory`] made and the
    /// caller passed on): mapped as it is, with no copy.
    pub fn from_sealed_file(file: impl Into<OwnedFd>) -> Result<Snapshot> {
        let fd: OwnedFd = file.into();
        let name = "(sealed file)".to_string();
        if !memfd::cannot_shrink(&fd) || !memfd::cannot_be_written(&fd) {
            return Err(Error::CanShrink);
        }
        let file = std::fs::File::from(fd);
        let (header, manifest_bytes) = read_metadata(&file, &name)?;
        let image = Image::from_file(OwnedFd::from(file))?;
        Snapshot::checked(header, &manifest_bytes, image, name)
    }

    fn checked(header: Header, manifest_bytes: &[u8], image: Image, path: String) -> Result<Snapshot> {
        let host = crate::host_page_size() as u64;
        if u64::from(header.page_size) != host {
            return Err(Error::SnapshotPageSize { snapshot: header.page_size.into(), host });
        }
        let manifest = Manifest::decode(manifest_bytes, host, header.data_pages).map_err(|e| invalid(&path, e))?;
        let image = image.into_snapshot_data();
        let id = Digest::of(manifest_bytes);
        let (merged, planned, window_buffers) = Default::default();
        let opened = Opened { id, header, manifest, image, parent: None, path, merged, planned, window_buffers };
        Ok(Snapshot { inner: Arc::new(opened) })
    }

    /// The snapshot's id: the SHA-256 of its manifest, which holds the
    /// digest of its data and its parent's id.
    pub fn id(&self) -> Digest {
        self.inner.id
    }

    /// The id of the snapshot this one is incremental to, if any.
    pub fn parent_id(&self) -> Option<Digest> {
        self.inner.manifest.parent
    }

    /// The attached parent, if any.
    pub fn parent(&self) -> Option<&Snapshot> {
        self.inner.parent.as_ref()
    }

    /// This snapshot with `parent` attached: the snapshot its `Parent`
    /// pages come from. Refused unless `parent` is the one it names.
    pub fn with_parent(&self, parent: Snapshot) -> Result<Snapshot> {
        match self.parent_id() {
            Some(id) if id == parent.id() => {}
            Some(id) => return Err(Error::MissingParent { child: self.id(), parent: id, wrong: true }),
            None => {
                return Err(Error::MissingParent { child: self.id(), parent: parent.id(), wrong: true });
            }
        }
        let o = &self.inner;
        Ok(Snapshot {
            inner: Arc::new(Opened {
                id: o.id,
                header: o.header,
                manifest: o.manifest.clone(),
                image: o.image.clone(),
                parent: Some(parent),
                path: o.path.clone(),
                merged: Default::default(),
                planned: Default::default(),
                window_buffers: Default::default(),
            }),
        })
    }

    /// Checks that every parent of the chain is attached.
    pub fn check_chain(&self) -> Result<()> {
        let mut at = self;
        while let Some(parent) = at.parent_id() {
            at = at.parent().ok_or(Error::MissingParent { child: at.id(), parent, wrong: false })?;
        }
        Ok(())
    }

    /// What the file says besides its data pages.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// Pages of data the file holds (captured by content).
    pub fn data_pages(&self) -> u64 {
        self.inner.header.data_pages
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.inner.header.file_len().unwrap_or(0)
    }

    /// The memory record named `name`.
    pub fn memory(&self, name: &str) -> Result<&MemoryRecord> {
        self.manifest().memories.iter().find(|m| m.name == name).ok_or(Error::NoSuchMemory { name: name.into() })
    }

    /// The working set recorded for memory `name`: the pages its instances
    /// touched first, which a restore prefetches (see
    /// [`RestoreOptions`]), as sorted, merged runs clipped to the memory.
    /// Taken from this snapshot, or, if it records none for `name` (an
    /// incremental capture made with plain
    /// [`SnapshotWriter::capture`]), from the nearest attached parent that
    /// does: the pages touched first rarely change between increments.
    /// Empty if none does.
    pub fn working_set(&self, name: &str) -> Result<Vec<PageRange>> {
        let pages = self.memory(name)?.len.div_ceil(u64::from(self.inner.header.page_size));
        let mut at = Some(self);
        while let Some(snapshot) = at {
            let manifest = snapshot.manifest();
            let Some(index) = manifest.memories.iter().position(|m| m.name == name) else {
                break;
            };
            let mut set = Vec::new();
            for ws in manifest.working_set.iter().filter(|ws| ws.memory as usize == index) {
                crate::page::insert_range(&mut set, ws.pages.intersect(PageRange::new(0, pages)));
            }
            if !set.is_empty() {
                return Ok(set);
            }
            at = snapshot.parent();
        }
        Ok(Vec::new())
    }

    /// Reads the whole data section and checks it against the manifest's
    /// digest ([`SnapshotDamage::Checksum`] if it differs); then the same
    /// for every attached parent.
    pub fn verify(&self) -> Result<()> {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        let page = u64::from(self.inner.header.page_size);
        let mut chunk = vec![0u8; 1 << 20];
        let (mut at, end) = (page, page + self.data_pages() * page);
        while at < end {
            let n = chunk.len().min((end - at) as usize);
            self.inner.image.read(at, &mut chunk[..n])?;
            hasher.update(&chunk[..n]);
            at += n as u64;
        }
        if Digest(hasher.finalize().into()) != self.manifest().data_digest {
            return Err(Error::SnapshotInvalid {
                path: self.inner.path.clone(),
                detail: "the data pages do not match the manifest's digest".into(),
                kind: SnapshotDamage::Checksum,
            });
        }
        self.parent().map_or(Ok(()), Snapshot::verify)
    }

    /// The identity of the snapshot's file in frame tables: the backing of
    /// the pages a restore maps from it (a pool can prefer a slot that
    /// still holds them).
    pub fn backing_id(&self) -> crate::BackingId {
        self.inner.image.id()
    }

    /// Every (memory, buffer name) pair for which a window of the memory
    /// shows the named buffer, in this snapshot and the parents attached to
    /// it (a restore needs each buffer): found once, then kept.
    pub fn window_buffers(&self) -> &[(String, String)] {
        self.inner.window_buffers.get_or_init(|| {
            let mut found: Vec<(String, String)> = Vec::new();
            let mut link = Some(self);
            while let Some(snapshot) = link {
                for memory in &snapshot.manifest().memories {
                    for run in &memory.runs {
                        if let PageSource::Shared { buffer, .. } = &run.source {
                            let pair = (memory.name.clone(), buffer.clone());
                            if !found.contains(&pair) {
                                found.push(pair);
                            }
                        }
                    }
                }
                link = snapshot.parent();
            }
            found
        })
    }

    /// The merged images restores of this snapshot made (see `merge.rs`).
    pub(crate) fn merged_cache(&self) -> &std::sync::Mutex<rustc_hash::FxHashMap<(String, u64), Image>> {
        &self.inner.merged
    }

    /// The layout of memory `name` restores with merge gap `gap` planned
    /// before, if one was.
    pub(crate) fn planned_layout(&self, name: &str, gap: u64) -> Option<Arc<restore::PlannedLayout>> {
        let planned = self.inner.planned.lock().unwrap_or_else(|p| p.into_inner());
        planned.get(&(name.to_owned(), gap)).cloned()
    }

    /// Keeps `layout` as memory `name`'s with merge gap `gap`.
    pub(crate) fn keep_planned_layout(&self, name: &str, gap: u64, layout: Arc<restore::PlannedLayout>) {
        let mut planned = self.inner.planned.lock().unwrap_or_else(|p| p.into_inner());
        planned.entry((name.to_owned(), gap)).or_insert(layout);
    }

    /// The file as an image (data page `n` is image page `n + 1`).
    pub(crate) fn image(&self) -> &Image {
        &self.inner.image
    }
}

/// The error for a file `format` refused.
fn invalid(path: &str, e: FormatError) -> Error {
    let (kind, detail) = match e {
        FormatError::NotASnapshot => (SnapshotDamage::NotASnapshot, "not a framemap snapshot".to_string()),
        FormatError::Version(v) => {
            (SnapshotDamage::Version, format!("format version {v}, this framemap reads version {FORMAT_VERSION}"))
        }
        FormatError::Checksum(part) => (SnapshotDamage::Checksum, format!("the {part}'s checksum does not match")),
        FormatError::Truncated { len, needed } => {
            (SnapshotDamage::Truncated, format!("{len} bytes long, its header says {needed}"))
        }
        FormatError::Malformed(what) => (SnapshotDamage::Malformed, what),
    };
    Error::SnapshotInvalid { path: path.to_string(), detail, kind }
}

/// Reads and checks the header, the file's length and the manifest's
/// checksum; returns the header and the manifest's bytes.
fn read_metadata(file: &std::fs::File, path: &str) -> Result<(Header, Vec<u8>)> {
    let io = |source| Error::SnapshotIo { path: path.to_string(), source };
    let len = memfd::len(file).map_err(io)?;
    let mut head = vec![0u8; HEADER_LEN.min(len as usize)];
    memfd::read_exact_at(file.as_fd(), &mut head, 0).map_err(io)?;
    let header = Header::decode(&head).map_err(|e| invalid(path, e))?;
    let file_len = header.file_len().unwrap_or(u64::MAX);
    if len != file_len {
        return Err(invalid(path, FormatError::Truncated { len, needed: file_len }));
    }
    let manifest_len = usize::try_from(header.manifest_len)
        .map_err(|_| invalid(path, FormatError::Truncated { len, needed: file_len }))?;
    let mut manifest = vec![0u8; manifest_len];
    memfd::read_exact_at(file.as_fd(), &mut manifest, header.manifest_offset().unwrap_or(0)).map_err(io)?;
    if crc32fast::hash(&manifest) != header.manifest_crc {
        return Err(invalid(path, FormatError::Checksum("manifest")));
    }
    Ok((header, manifest))
}

/// Copies the first `len` bytes of `file` into a new memory file, leaving
/// all-zero pages as holes, and seals it against every change.
fn copy_to_sealed_memfd(file: &std::fs::File, len: u64) -> std::io::Result<OwnedFd> {
    let copy = memfd::create("framemap-snapshot")?;
    memfd::set_len(&copy, len)?;
    let page = crate::host_page_size();
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = chunk.len().min((len - at) as usize);
        memfd::read_exact_at(file.as_fd(), &mut chunk[..n], at)?;
        for (i, piece) in chunk[..n].chunks(page).enumerate() {
            if piece.iter().any(|&b| b != 0) {
                memfd::write_all_at(&copy, piece, at + (i * page) as u64)?;
            }
        }
        at += n as u64;
    }
    memfd::seal_immutable(&copy)?;
    Ok(copy)
}
