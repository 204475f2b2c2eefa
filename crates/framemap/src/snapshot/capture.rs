//! Capturing memories into a new snapshot file.
//!
//! [`SnapshotWriter::capture`] takes a checkpoint of the memory
//! (`space/checkpoint.rs`: the pages written since the one before are found
//! and write-protected in one walk) and records each accessible run by its
//! tag's rule. A full capture stores by content every page written since the
//! memory's last reset; an incremental one (the writer made with a parent)
//! only the pages written since the parent's capture, `Parent` for the rest
//! of what is unchanged, and the new frame's rule for pages remapped since.
//! Time is proportional to the pages stored, never to the memory's size
//! (where the kernel tracks writes).
//!
//! [`SnapshotWriter::capture_with_working_set`] also records a working set
//! and packs it: the pages to store are collected in page order, then
//! written to the data section working-set pages first, so only the data
//! page numbers of the runs differ from a plain capture's.
//!
//! Invariant: the file at the target path is either the old one or the
//! complete new one: data and manifest go to a temporary file in the same
//! directory, which is synced ([`Durability::Synced`]) and renamed over the
//! target, and the directory synced; a writer dropped unfinished removes its
//! temporary file.

use super::Snapshot;
use super::format::{
    Digest, GlobalRecord, GlobalValue, HEADER_LEN, MAX_NAME_LEN, Manifest, MemoryRecord, PageSource, RunRecord,
    WorkingSetRecord,
};
use super::header::Header;
use super::runs::{in_page_order, merge_stored, push_run, split};
use crate::buffer::SharedBuffer;
use crate::error::{Error, Result};
use crate::frame::{FrameKind, Protection};
use crate::page::{PageRange, insert_range};
use crate::space::LinearSpace;
use crate::sys::memfd;
use rustix::fd::OwnedFd;
use sha2::Digest as _;
use std::path::{Path, PathBuf};

/// Whether a finished snapshot file is synced to its device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` the file before the rename and the directory after it: the
    /// snapshot survives a power cut once [`SnapshotWriter::finish`]
    /// returned.
    #[default]
    Synced,
    /// Rename only: atomic against crashes of the process, not of the
    /// machine.
    Unsynced,
}

/// What [`SnapshotWriter::finish`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot's id.
    pub id: Digest,
    /// Pages stored by content.
    pub data_pages: u64,
    /// The manifest's length in bytes.
    pub manifest_len: u64,
    /// The file's length in bytes.
    pub file_len: u64,
}

/// Where the writer's file goes.
#[derive(Debug)]
enum Target {
    /// A temporary file renamed over `path` at the end.
    Path { path: PathBuf, temp: PathBuf, durability: Durability },
    /// A memory file, sealed at the end.
    Memory,
}

/// Names the buffers whose windows a capture records: `None` for a buffer
/// that has no name (its windows cannot be captured).
pub type BufferNamer<'a> = &'a dyn Fn(&SharedBuffer) -> Option<String>;

/// Captures memories (and globals) into a new snapshot file.
#[derive(Debug)]
pub struct SnapshotWriter {
    file: std::fs::File,
    target: Option<Target>,
    page: u64,
    data_pages: u64,
    data_hash: sha2::Sha256,
    parent: Option<Snapshot>,
    memories: Vec<MemoryRecord>,
    globals: Vec<GlobalRecord>,
    working_set: Vec<WorkingSetRecord>,
    /// Gaps of at most this many clean image pages between stored pages of
    /// one run are stored too ([`SnapshotWriter::fill_gaps`]).
    fill_gaps: u64,
}

/// What a capture stores: every page that may differ from its frame's
/// initial contents, or only what changed since the parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Pages differing from their frame's initial contents by content.
    Changed,
    /// Every accessible `Zero` and `Image` page by content (a snapshot that
    /// needs no image to restore).
    AllPages,
}

impl SnapshotWriter {
    /// A writer whose snapshot becomes the file at `path` when finished
    /// (atomically: see the module's invariant).
    pub fn to_path(path: impl AsRef<Path>, durability: Durability) -> Result<SnapshotWriter> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let path = path.as_ref().to_path_buf();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut temp = path.clone().into_os_string();
        temp.push(format!(".tmp-{}-{n}", std::process::id()));
        let temp = PathBuf::from(temp);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|source| Error::SnapshotIo { path: temp.display().to_string(), source })?;
        Ok(SnapshotWriter::new(file, Target::Path { path, temp, durability }))
    }

    /// A writer whose snapshot stays in memory ([`SnapshotWriter::finish_in_memory`]).
    pub fn in_memory() -> Result<SnapshotWriter> {
        let fd = memfd::create("framemap-snapshot")
            .map_err(|source| Error::SnapshotIo { path: "(in memory)".into(), source })?;
        Ok(SnapshotWriter::new(std::fs::File::from(fd), Target::Memory))
    }

    fn new(file: std::fs::File, target: Target) -> SnapshotWriter {
        SnapshotWriter {
            file,
            target: Some(target),
            page: crate::host_page_size() as u64,
            data_pages: 0,
            data_hash: sha2::Sha256::new(),
            parent: None,
            memories: Vec::new(),
            globals: Vec::new(),
            working_set: Vec::new(),
            fill_gaps: 0,
        }
    }

    /// Also stores by content every gap of at most `pages` pages of an
    /// image (clean, or the parent's) that lies between two stored pages of
    /// the same run of the memory. Each gap left is two more runs, each a
    /// kernel mapping at restore, which every restore, reset and
    /// checkpoint walks: scattered writes over an image (one page in eight,
    /// say) restore as hundreds of mappings unless the gaps are filled. The
    /// price is file size: up to `pages` more data pages per stored stretch.
    /// Off (0) by default.
    pub fn fill_gaps(mut self, pages: u64) -> SnapshotWriter {
        self.fill_gaps = pages;
        self
    }

    /// Makes this an incremental snapshot of `parent`: every memory it
    /// captures must have been captured into `parent` at its latest
    /// checkpoint, and only what changed since is stored. Call before
    /// capturing.
    pub fn incremental_to(mut self, parent: &Snapshot) -> SnapshotWriter {
        self.parent = Some(parent.clone());
        self
    }

    /// Captures `space` as memory `name`, taking a checkpoint of it (the
    /// next incremental capture starts there). `names` names the buffers of
    /// its windows. Refused with nothing written, and the space unchanged,
    /// if `name` is taken, a window's buffer has no name, or (incremental)
    /// the memory was not captured into the parent at its latest checkpoint.
    pub fn capture(&mut self, name: &str, space: &mut LinearSpace, names: BufferNamer<'_>) -> Result<()> {
        self.capture_scoped(name, space, names, Scope::Changed, &[])
    }

    /// Captures `space` as memory `name`, as [`SnapshotWriter::capture`]
    /// does, with `working_set` (ranges of its pages, in any order; e.g.
    /// what [`LinearSpace::touched_pages`] found after an earlier restore's
    /// first calls) recorded as its working set, which a restore prefetches
    /// ([`RestoreOptions`](super::RestoreOptions)).
    ///
    /// The file packs it: the data pages of this capture that lie in the
    /// working set are written first, one after another in page order, then
    /// the others, so the working set reads as one stretch of the file
    /// (read-ahead, and a cold file brought in with few large reads). The
    /// manifest's runs stay in page order; only their data page numbers
    /// change. The price: a stretch of the working set inside a run of data
    /// pages splits that run (each run is a mapping at restore). Pages of
    /// the working set that are not stored by content here (clean image
    /// pages, zero pages, a parent's pages) are prefetched where they live.
    ///
    /// Refused, with nothing written and the space unchanged, as `capture`
    /// is, and if a range reaches past the memory's pages
    /// ([`Error::OutOfBounds`]).
    pub fn capture_with_working_set(
        &mut self,
        name: &str,
        space: &mut LinearSpace,
        names: BufferNamer<'_>,
        working_set: &[PageRange],
    ) -> Result<()> {
        let set = self.checked_working_set(working_set, space.accessible_pages().end)?;
        self.capture_scoped(name, space, names, Scope::Changed, &set)?;
        self.record_working_set(name, &set)
    }

    /// Captures `space` as memory `name` with every accessible `Zero` and
    /// `Image` page stored by content, needing no image to restore (and
    /// making no use of a parent): the way to write a self-contained file,
    /// and what an incremental capture is measured against.
    pub fn capture_all_pages(&mut self, name: &str, space: &mut LinearSpace, names: BufferNamer<'_>) -> Result<()> {
        self.capture_scoped(name, space, names, Scope::AllPages, &[])
    }

    fn capture_scoped(
        &mut self,
        name: &str,
        space: &mut LinearSpace,
        names: BufferNamer<'_>,
        scope: Scope,
        working_set: &[PageRange],
    ) -> Result<()> {
        self.check_name(name, self.memories.iter().any(|m| m.name == name))?;
        // Everything that can refuse is checked before the checkpoint moves.
        let parent = match (scope, &self.parent) {
            (Scope::Changed, Some(parent)) => {
                let record = parent.memory(name).map_err(|_| Error::NotFromParent { name: name.into() })?;
                let current = space.latest_checkpoint().map(|c| c.token());
                if current != Some(record.checkpoint) {
                    return Err(Error::NotFromParent { name: name.into() });
                }
                true
            }
            _ => false,
        };
        for (_, frame) in space.table().runs_in(space.accessible_pages()) {
            if let FrameKind::Shared { buffer, .. } = frame.kind() {
                let named = space.buffer(buffer).and_then(names);
                if named.is_none_or(|n| n.len() > MAX_NAME_LEN) {
                    return Err(Error::UnnamedBuffer { id: buffer.0 });
                }
            }
        }
        let scan = space.advance_checkpoint(scope == Scope::Changed && !parent)?;
        // Pages stored by content, and (incremental) pages that read their
        // frame's initial contents rather than the parent's.
        let accessible = space.accessible_pages();
        let (by_content, fresh): (Vec<PageRange>, Vec<PageRange>) = match (scope, parent) {
            (Scope::AllPages, _) => (vec![accessible], vec![accessible]),
            (Scope::Changed, true) => (scan.written, scan.remapped),
            (Scope::Changed, false) => (scan.dirty, vec![accessible]),
        };
        // Runs whose source is known, and pieces to store by content.
        let mut pieces: Vec<RunRecord> = Vec::new();
        let mut to_store: Vec<(PageRange, Protection, PageSource)> = Vec::new();
        // A merged image's runs are named by the frames they were copied
        // from (`merge.rs`), each Image run with its image.
        let table_runs = super::merge::unmerged_runs(space, accessible)?;
        for (run, frame, frame_image) in table_runs {
            let prot = frame.prot();
            match frame.kind() {
                FrameKind::Unmapped => push_run(&mut pieces, run, prot, PageSource::Unmapped),
                FrameKind::Shared { buffer, page } => {
                    let buffer_name =
                        space.buffer(buffer).and_then(names).ok_or(Error::UnnamedBuffer { id: buffer.0 })?;
                    push_run(&mut pieces, run, prot, PageSource::Shared { buffer: buffer_name, page });
                }
                kind @ (FrameKind::Zero | FrameKind::Image { .. }) => {
                    // Pages of a snapshot's data (a restored memory) are not
                    // named by the snapshot file's hash: an incremental
                    // capture refers to them as the parent's, a full one
                    // stores them by content.
                    let mut whole_run = None;
                    let initial = match kind {
                        FrameKind::Image { image, page } => {
                            let image = frame_image.as_ref().ok_or(Error::UnknownBacking { id: image.0 })?;
                            if image.is_snapshot_data() {
                                if !parent || scope == Scope::AllPages {
                                    whole_run = Some([run]);
                                }
                                PageSource::Parent
                            } else {
                                PageSource::Image { image: image.content_hash()?, page }
                            }
                        }
                        _ => PageSource::Zero,
                    };
                    let stored_here: &[PageRange] = match &whole_run {
                        Some(whole) => whole,
                        None => &by_content,
                    };
                    // Split the run by which pages are stored, and (for the
                    // rest) whether they are fresh or the parent's.
                    let mut pieces_of_run = split(run, stored_here);
                    if self.fill_gaps > 0 && matches!(kind, FrameKind::Image { .. }) {
                        // A short unstored piece between two stored ones is
                        // stored too (see `fill_gaps`).
                        for i in 1..pieces_of_run.len().saturating_sub(1) {
                            let (piece, stored) = pieces_of_run[i];
                            if !stored && piece.len() <= self.fill_gaps {
                                pieces_of_run[i].1 = true;
                            }
                        }
                    }
                    for (piece, stored) in merge_stored(pieces_of_run) {
                        if stored {
                            to_store.push((piece, prot, initial.advanced(piece.start - run.start)));
                            continue;
                        }
                        for (part, is_fresh) in split(piece, &fresh) {
                            let source =
                                if is_fresh { initial.advanced(part.start - run.start) } else { PageSource::Parent };
                            push_run(&mut pieces, part, prot, source);
                        }
                    }
                }
            }
        }
        // The working set's pages first, then the rest (the packing): data
        // page numbers follow the order pages are stored in.
        for in_working_set in [true, false] {
            for (piece, prot, initial) in &to_store {
                for (part, inside) in split(*piece, working_set) {
                    if inside == in_working_set {
                        let initial = initial.advanced(part.start - piece.start);
                        self.store_pages(space, part, *prot, &initial, scope == Scope::Changed, &mut pieces)?;
                    }
                }
            }
        }
        let runs = in_page_order(pieces);
        self.memories.push(MemoryRecord {
            name: name.into(),
            len: space.len(),
            checkpoint: scan.checkpoint.token(),
            runs,
        });
        Ok(())
    }

    /// Stores `pages` (of a Zero or Image run, whose
    /// initial contents are `initial`) by content; with `elide_zero`,
    /// all-zero pages of Zero frames are recorded as Zero instead.
    fn store_pages(
        &mut self,
        space: &LinearSpace,
        pages: PageRange,
        prot: Protection,
        initial: &PageSource,
        elide_zero: bool,
        runs: &mut Vec<RunRecord>,
    ) -> Result<()> {
        const CHUNK: u64 = 64;
        let page = self.page as usize;
        let mut buf = vec![0u8; page * CHUNK as usize];
        let mut at = pages.start;
        while at < pages.end {
            let n = (pages.end - at).min(CHUNK);
            let chunk = &mut buf[..n as usize * page];
            space.read_for_snapshot(at * self.page, chunk)?;
            // The chunk's stored pages are packed to its front and written
            // with one call: data pages are numbered in order.
            let first_data = self.data_pages;
            let mut kept = 0usize;
            for i in 0..n as usize {
                let p = at + i as u64;
                let one = PageRange::new(p, p + 1);
                let bytes = i * page..(i + 1) * page;
                if elide_zero && matches!(initial, PageSource::Zero) && chunk[bytes.clone()].iter().all(|&b| b == 0) {
                    push_run(runs, one, prot, PageSource::Zero);
                    continue;
                }
                if kept != i {
                    chunk.copy_within(bytes, kept * page);
                }
                push_run(runs, one, prot, PageSource::Data { page: self.data_pages });
                self.data_pages += 1;
                kept += 1;
            }
            if kept > 0 {
                let stored = &chunk[..kept * page];
                let offset = self.page * (1 + first_data);
                memfd::write_all_at(&self.file, stored, offset).map_err(|source| self.io(source))?;
                self.data_hash.update(stored);
            }
            at += n;
        }
        Ok(())
    }

    /// Appends `count` data pages of `from`'s data section, from its page
    /// `page`, to this file's; returns the first one's page here.
    pub(crate) fn copy_data_pages(&mut self, from: &Snapshot, page: u64, count: u64) -> Result<u64> {
        let first = self.data_pages;
        let mut buf = vec![0u8; self.page as usize];
        for p in page..page + count {
            from.image().read((1 + p) * self.page, &mut buf)?;
            let offset = self.page * (1 + self.data_pages);
            memfd::write_all_at(&self.file, &buf, offset).map_err(|source| self.io(source))?;
            self.data_hash.update(&buf);
            self.data_pages += 1;
        }
        Ok(first)
    }

    /// Adds a memory record made elsewhere (flattening).
    pub(crate) fn add_memory_record(
        &mut self,
        name: String,
        len: u64,
        checkpoint: u64,
        runs: Vec<RunRecord>,
    ) -> Result<()> {
        self.check_name(&name, self.memories.iter().any(|m| m.name == name))?;
        self.memories.push(MemoryRecord { name, len, checkpoint, runs });
        Ok(())
    }

    /// Records a global's value under `name`.
    pub fn add_global(&mut self, name: &str, value: GlobalValue) -> Result<()> {
        self.check_name(name, self.globals.iter().any(|g| g.name == name))?;
        self.globals.push(GlobalRecord { name: name.into(), value });
        Ok(())
    }

    /// `working_set` sorted and merged, checked to lie inside a memory of
    /// `pages` pages ([`Error::OutOfBounds`] otherwise).
    pub(crate) fn checked_working_set(&self, working_set: &[PageRange], pages: u64) -> Result<Vec<PageRange>> {
        let mut set = Vec::new();
        for &range in working_set {
            if range.end <= range.start {
                continue;
            }
            if range.end > pages {
                return Err(Error::OutOfBounds {
                    start: range.start * self.page,
                    end: range.end * self.page,
                    accessible: pages * self.page,
                });
            }
            insert_range(&mut set, range);
        }
        Ok(set)
    }

    /// Records `set` (sorted, merged, checked) as the working set of memory
    /// `name`, captured already.
    pub(crate) fn record_working_set(&mut self, name: &str, set: &[PageRange]) -> Result<()> {
        set.iter().try_for_each(|&range| self.add_working_set(name, range))
    }

    /// Records that memory `name` (captured already) touches `pages` first:
    /// a restore prefetches them. Nothing is packed: see
    /// [`SnapshotWriter::capture_with_working_set`].
    pub fn add_working_set(&mut self, name: &str, pages: PageRange) -> Result<()> {
        let memory =
            self.memories.iter().position(|m| m.name == name).ok_or(Error::NoSuchMemory { name: name.into() })?;
        let len = self.memories[memory].len.div_ceil(self.page);
        if pages.end > len {
            return Err(Error::OutOfBounds {
                start: pages.start * self.page,
                end: pages.end * self.page,
                accessible: len * self.page,
            });
        }
        if !pages.is_empty() {
            self.working_set.push(WorkingSetRecord { memory: memory as u32, pages });
        }
        Ok(())
    }

    fn check_name(&self, name: &str, taken: bool) -> Result<()> {
        let cut = |n: &str| n.chars().take(64).collect::<String>();
        if name.len() > MAX_NAME_LEN {
            return Err(Error::BadName { name: cut(name), reason: "longer than 4096 bytes" });
        }
        if taken {
            return Err(Error::BadName { name: cut(name), reason: "already in the snapshot" });
        }
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> Error {
        let path = match &self.target {
            Some(Target::Path { temp, .. }) => temp.display().to_string(),
            _ => "(in memory)".into(),
        };
        Error::SnapshotIo { path, source }
    }

    /// Writes the manifest and the header; returns what was written.
    fn write_metadata(&mut self) -> Result<SnapshotInfo> {
        let manifest = Manifest {
            parent: self.parent.as_ref().map(Snapshot::id),
            data_digest: Digest(std::mem::take(&mut self.data_hash).finalize().into()),
            memories: std::mem::take(&mut self.memories),
            globals: std::mem::take(&mut self.globals),
            working_set: std::mem::take(&mut self.working_set),
        };
        let bytes = manifest.encode();
        let header = Header {
            page_size: self.page as u32,
            data_pages: self.data_pages,
            manifest_len: bytes.len() as u64,
            manifest_crc: crc32fast::hash(&bytes),
        };
        let manifest_at = header.manifest_offset().unwrap_or(u64::MAX);
        memfd::write_all_at(&self.file, &bytes, manifest_at).map_err(|s| self.io(s))?;
        let mut page0 = vec![0u8; self.page as usize];
        page0[..HEADER_LEN].copy_from_slice(&header.encode());
        memfd::write_all_at(&self.file, &page0, 0).map_err(|s| self.io(s))?;
        Ok(SnapshotInfo {
            id: Digest::of(&bytes),
            data_pages: self.data_pages,
            manifest_len: bytes.len() as u64,
            file_len: manifest_at + bytes.len() as u64,
        })
    }

    /// Finishes the file and puts it at its path (see the module's
    /// invariant). For an in-memory writer, use
    /// [`SnapshotWriter::finish_in_memory`].
    pub fn finish(mut self) -> Result<SnapshotInfo> {
        let info = self.write_metadata()?;
        match self.target.take() {
            Some(Target::Path { path, temp, durability }) => {
                fn named(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
                    move |source| Error::SnapshotIo { path: p.display().to_string(), source }
                }
                if durability == Durability::Synced {
                    self.file.sync_all().map_err(named(&temp))?;
                }
                if let Err(e) = std::fs::rename(&temp, &path) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(named(&path)(e));
                }
                if durability == Durability::Synced {
                    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(named(dir))?;
                }
                Ok(info)
            }
            Some(Target::Memory) | None => Ok(info),
        }
    }

    /// Finishes an in-memory snapshot, seals it, and opens it (mapped as
    /// it is: restores from it are lazy). For a path writer, this finishes
    /// the file and opens it with [`Snapshot::open`]. The parent of an
    /// incremental snapshot is not attached (as when opening a file): see
    /// [`Snapshot::with_parent`].
    pub fn finish_in_memory(mut self) -> Result<Snapshot> {
        match &self.target {
            Some(Target::Memory) => {
                self.write_metadata()?;
                self.target = None;
                let file = self.file.try_clone().map_err(|s| self.io(s))?;
                memfd::seal_immutable(&file).map_err(|s| self.io(s))?;
                Snapshot::from_sealed_file(OwnedFd::from(file))
            }
            Some(Target::Path { path, .. }) => {
                let path = path.clone();
                self.finish()?;
                Snapshot::open(&path)
            }
            None => {
                Err(Error::SnapshotIo { path: "(finished)".into(), source: std::io::ErrorKind::InvalidInput.into() })
            }
        }
    }
}

impl Drop for SnapshotWriter {
    /// An unfinished file writer removes its temporary file.
    fn drop(&mut self) {
        if let Some(Target::Path { temp, .. }) = &self.target {
            let _ = std::fs::remove_file(temp);
        }
    }
}
