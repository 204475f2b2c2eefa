//! The file discipline every artifact shares, module or component: writing
//! (compiled code at byte 0, page-aligned images, metadata, trailer; a
//! temporary file synced and renamed over the target) and opening for a
//! load (trailer, kind, engine fingerprint and CRC checked before anything
//! else reads the file). What the metadata says is [`super::meta`]'s.

use super::{ARTIFACT_FORMAT_VERSION, ArtifactInfo, engine_fingerprint};
use crate::error::{Error, Result};
use crate::image_plan::MemoryPlan;
use framemap::Image;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::Engine;

/// Length of the trailer at the end of every artifact.
const TRAILER_LEN: u64 = 96;
const MAGIC: &[u8; 8] = b"FMARTIF\0";
const END_MAGIC: &[u8; 8] = b"FMARTEND";
/// The ELF magic the compiled code starts with.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// Chunk size for checksumming and copying images.
const CHUNK: usize = 1 << 20;

/// What an artifact's compiled code is, recorded in its trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A core module (`Module::serialize`).
    Module,
    /// A component (`Component::serialize`).
    Component,
}

impl Kind {
    fn code(self) -> u32 {
        match self {
            Kind::Module => 1,
            Kind::Component => 2,
        }
    }

    fn from_code(code: u32) -> Option<Kind> {
        match code {
            1 => Some(Kind::Module),
            2 => Some(Kind::Component),
            _ => None,
        }
    }

    /// The word for it in errors.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Component => "component",
        }
    }
}

/// The images of a plan, each once (a component instantiating a module
/// twice plans its image twice), in first-use order, with the first memory
/// using each (for errors); and each memory's index in that list.
pub(super) fn image_table(plan: Option<&[MemoryPlan]>) -> (Vec<(usize, Image)>, Vec<Option<u32>>) {
    let mut images: Vec<(usize, Image)> = Vec::new();
    let mut refs = Vec::new();
    for (memory, planned) in plan.unwrap_or_default().iter().enumerate() {
        let index = planned.image.as_ref().map(|image| {
            let known = images.iter().position(|(_, seen)| seen.id() == image.id());
            known.unwrap_or_else(|| {
                images.push((memory, image.clone()));
                images.len() - 1
            }) as u32
        });
        refs.push(index);
    }
    (images, refs)
}

/// Writes an artifact of `kind` at `path`: `code` first, then `images`
/// (from [`image_table`]), then the metadata `meta` makes from the images'
/// byte ranges in the file, then the trailer. Atomic: a temporary file in
/// `path`'s directory, synced, renamed over `path`; on failure nothing is
/// left behind.
pub(super) fn save(
    path: &Path,
    kind: Kind,
    code: &[u8],
    images: &[(usize, Image)],
    engine: &Engine,
    meta: impl FnOnce(&[(u64, u64)]) -> Vec<u8>,
) -> Result<ArtifactInfo> {
    let temp = temporary_path(path);
    let outcome = write(&temp, kind, code, images, engine, meta).and_then(|info| {
        std::fs::rename(&temp, path).map_err(|source| Error::ArtifactIo { path: path.to_owned(), source })?;
        Ok(info)
    });
    if outcome.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    outcome
}

/// `path` with a suffix unique to this process and call, in the same
/// directory (so the rename is atomic).
fn temporary_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let unique = format!(".tmp-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(unique);
    path.with_file_name(name)
}

/// The host page size, the artifact's alignment.
pub(super) fn page() -> u64 {
    framemap::host_page_size() as u64
}

/// Writes the whole artifact to the new file `path` and syncs it.
fn write(
    path: &Path,
    kind: Kind,
    code: &[u8],
    images: &[(usize, Image)],
    engine: &Engine,
    meta: impl FnOnce(&[(u64, u64)]) -> Vec<u8>,
) -> Result<ArtifactInfo> {
    let io = |source| Error::ArtifactIo { path: path.to_owned(), source };
    let file = File::options().write(true).create_new(true).open(path).map_err(io)?;
    let mut crc = crc32fast::Hasher::new();
    file.write_all_at(code, 0).map_err(io)?;
    crc.update(code);
    let mut at = code.len() as u64;
    let zeros = vec![0u8; CHUNK];
    let padded = at.next_multiple_of(page());
    crc.update(&zeros[..(padded - at) as usize]);
    at = padded;

    // Images, whole pages; all-zero pages left as holes.
    let mut ranges = Vec::with_capacity(images.len());
    let mut chunk = vec![0u8; CHUNK];
    for (memory, image) in images {
        ranges.push((at, image.len()));
        let mut offset = 0;
        while offset < image.len() {
            let n = chunk.len().min((image.len() - offset) as usize);
            image.read(offset, &mut chunk[..n]).map_err(|source| Error::ArtifactImage {
                path: path.to_owned(),
                memory: *memory,
                source,
            })?;
            for (i, piece) in chunk[..n].chunks(page() as usize).enumerate() {
                if piece.iter().any(|&b| b != 0) {
                    file.write_all_at(piece, at + offset + (i as u64) * page()).map_err(io)?;
                }
            }
            crc.update(&chunk[..n]);
            offset += n as u64;
        }
        at += image.len();
    }
    let image_bytes = at - padded;

    let meta = meta(&ranges);
    let meta_len =
        u32::try_from(meta.len()).map_err(|_| Error::ArtifactUnsupported { reason: "the metadata exceeds 4 GiB" })?;
    let meta_offset = at;
    file.write_all_at(&meta, meta_offset).map_err(io)?;
    crc.update(&meta);
    at += meta.len() as u64;

    let file_len = at + TRAILER_LEN;
    let trailer = Trailer {
        version: ARTIFACT_FORMAT_VERSION,
        page_size: page() as u32,
        fingerprint: engine_fingerprint(engine),
        code_len: code.len() as u64,
        meta_offset,
        kind: kind.code(),
        meta_len,
        file_len,
        body_crc: crc.finalize(),
    };
    file.write_all_at(&trailer.encode(), at).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(ArtifactInfo { file_len, code_len: code.len() as u64, image_bytes })
}

/// An artifact file whose trailer, kind, engine fingerprint and contents
/// CRC have been checked.
pub(super) struct Checked {
    /// The open file (every later read and mapping uses this one).
    pub file: File,
    /// The metadata's bytes.
    pub meta: Vec<u8>,
    /// Where the images may lie: after the padded code, before the metadata.
    pub images: (u64, u64),
}

/// Opens the artifact at `path` expecting `kind` for `engine`, and checks
/// it: the trailer (magic, format version, length, page size, offsets),
/// then the kind, the engine fingerprint, and the CRC-32 of every byte.
pub(super) fn open(path: &Path, engine: &Engine, kind: Kind) -> Result<Checked> {
    let io = |source| Error::ArtifactIo { path: path.to_owned(), source };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let trailer = read_trailer(path, &file, len)?;
    match Kind::from_code(trailer.kind) {
        Some(found) if found == kind => {}
        Some(found) => {
            return Err(Error::ArtifactKind { path: path.to_owned(), found: found.name(), expected: kind.name() });
        }
        None => {
            let detail = format!("unknown kind {}", trailer.kind);
            return Err(Error::ArtifactMalformed { path: path.to_owned(), detail });
        }
    }
    if trailer.fingerprint != engine_fingerprint(engine) {
        return Err(Error::ArtifactEngineMismatch { path: path.to_owned() });
    }
    let computed = crc_of(&file, len - TRAILER_LEN).map_err(io)?;
    if computed != trailer.body_crc {
        let (part, stored) = ("contents", trailer.body_crc);
        return Err(Error::ArtifactChecksum { path: path.to_owned(), part, stored, computed });
    }
    let mut meta = vec![0u8; trailer.meta_len as usize];
    file.read_exact_at(&mut meta, trailer.meta_offset).map_err(io)?;
    let images = (trailer.code_len.next_multiple_of(page()), trailer.meta_offset);
    Ok(Checked { file, meta, images })
}

impl Checked {
    /// A second descriptor of the checked file.
    pub fn clone_file(&self, path: &Path) -> Result<File> {
        self.file.try_clone().map_err(|source| Error::ArtifactIo { path: path.to_owned(), source })
    }

    /// The plan the metadata describes: one image per range of `table`
    /// (each a range of this file), handed to the memories that name it.
    ///
    /// # Safety
    /// The file must not change or shrink while any image made here, or a
    /// memory mapping one, exists; the ranges must lie inside it (as
    /// [`super::meta`]'s decoding checks).
    pub unsafe fn plan(&self, path: &Path, decoded: super::meta::PlanMeta) -> Result<Option<Arc<[MemoryPlan]>>> {
        let Some(memories) = decoded.memories else { return Ok(None) };
        let mut images = Vec::with_capacity(decoded.images.len());
        for &(offset, len) in &decoded.images {
            let memory = memories.iter().position(|(_, image)| *image == Some(images.len())).unwrap_or(0);
            let file = self.clone_file(path)?;
            // SAFETY: the caller guarantees the file does not change or
            // shrink while the image lives, and that the range lies inside it.
            let image = unsafe { Image::from_file_range_unchecked(file, offset, len) };
            images.push(image.map_err(|source| Error::ArtifactImage { path: path.to_owned(), memory, source })?);
        }
        let plan = memories
            .into_iter()
            .map(|(facts, image)| MemoryPlan { facts, image: image.map(|i| images[i].clone()), snapshot: None })
            .collect();
        Ok(Some(plan))
    }
}

/// The CRC-32 of the file's first `len` bytes.
fn crc_of(file: &File, len: u64) -> std::io::Result<u32> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0;
    while at < len {
        let n = buf.len().min((len - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        crc.update(&buf[..n]);
        at += n as u64;
    }
    Ok(crc.finalize())
}

/// The fixed-size record at the end of an artifact.
struct Trailer {
    version: u32,
    page_size: u32,
    fingerprint: [u8; 32],
    code_len: u64,
    meta_offset: u64,
    kind: u32,
    meta_len: u32,
    file_len: u64,
    body_crc: u32,
}

impl Trailer {
    fn encode(&self) -> [u8; TRAILER_LEN as usize] {
        let mut out = [0u8; TRAILER_LEN as usize];
        out[0..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&self.page_size.to_le_bytes());
        out[16..48].copy_from_slice(&self.fingerprint);
        out[48..56].copy_from_slice(&self.code_len.to_le_bytes());
        out[56..64].copy_from_slice(&self.meta_offset.to_le_bytes());
        out[64..68].copy_from_slice(&self.kind.to_le_bytes());
        out[68..72].copy_from_slice(&self.meta_len.to_le_bytes());
        out[72..80].copy_from_slice(&self.file_len.to_le_bytes());
        out[80..84].copy_from_slice(&self.body_crc.to_le_bytes());
        let own = crc32fast::hash(&out[..84]);
        out[84..88].copy_from_slice(&own.to_le_bytes());
        out[88..96].copy_from_slice(END_MAGIC);
        out
    }
}

/// Reads and checks the trailer of the `len`-byte artifact `file`.
fn read_trailer(path: &Path, file: &File, len: u64) -> Result<Trailer> {
    let io = |source| Error::ArtifactIo { path: path.to_owned(), source };
    let mut start = [0u8; 4];
    let starts_as_elf = file.read_exact_at(&mut start, 0).is_ok() && &start == ELF_MAGIC;
    let truncated = |expected| Error::ArtifactTruncated { path: path.to_owned(), len, expected };
    let no_trailer =
        || if starts_as_elf { truncated(None) } else { Error::ArtifactNotFramemap { path: path.to_owned() } };
    if len < TRAILER_LEN {
        return Err(no_trailer());
    }
    let mut raw = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut raw, len - TRAILER_LEN).map_err(io)?;
    if &raw[0..8] != MAGIC || &raw[88..96] != END_MAGIC {
        return Err(no_trailer());
    }
    let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    let (stored, computed) = (u32_at(84), crc32fast::hash(&raw[..84]));
    if stored != computed {
        return Err(Error::ArtifactChecksum { path: path.to_owned(), part: "trailer", stored, computed });
    }
    // Magic, version and page size sit where format 1 had them, so an old
    // file is refused by its version.
    let version = u32_at(8);
    if version != ARTIFACT_FORMAT_VERSION {
        let expected = ARTIFACT_FORMAT_VERSION;
        return Err(Error::ArtifactVersion { path: path.to_owned(), found: version, expected });
    }
    let trailer = Trailer {
        version,
        page_size: u32_at(12),
        fingerprint: raw[16..48].try_into().expect("32 bytes"),
        code_len: u64_at(48),
        meta_offset: u64_at(56),
        kind: u32_at(64),
        meta_len: u32_at(68),
        file_len: u64_at(72),
        body_crc: u32_at(80),
    };
    if trailer.file_len != len {
        return Err(truncated(Some(trailer.file_len)));
    }
    let malformed = |detail: String| Error::ArtifactMalformed { path: path.to_owned(), detail };
    if u64::from(trailer.page_size) != page() {
        return Err(malformed(format!("written with {}-byte pages, this host has {}", trailer.page_size, page())));
    }
    let body = len - TRAILER_LEN;
    let meta_end = trailer.meta_offset.checked_add(u64::from(trailer.meta_len));
    if meta_end != Some(body) || trailer.code_len.next_multiple_of(page()) > trailer.meta_offset {
        return Err(malformed(format!(
            "compiled code {} bytes, metadata {} bytes at {}, in {body} bytes",
            trailer.code_len, trailer.meta_len, trailer.meta_offset
        )));
    }
    Ok(trailer)
}
