//! Compile-cache artifacts: a [`PreparedModule`] saved to one file and
//! loaded back without compiling, its compiled code and its images mapped
//! from the file (no copy).
//!
//! Only the plain prepared form is saved ([`PreparedModule::new`]); a module
//! made with [`PreparedModule::with_snapshots`] is refused
//! ([`Error::ArtifactUnsupported`]).
//!
//! # File layout (format [`ARTIFACT_FORMAT_VERSION`])
//!
//! ```text
//! 0                 the compiled module: Module::serialize's bytes (an ELF
//!                   file), uncompressed, padded with zeros to a host page
//! page-aligned      each memory's image, whole pages, in defined-memory
//!                   order (memories without an image take no bytes);
//!                   all-zero pages are holes in the file
//! meta_offset       metadata: whether images can be handed to the module's
//!                   memories, each memory's type facts and image range,
//!                   the not-prepared reason
//! file_len - 96     the trailer (little-endian): magic "FMARTIF\0", format
//!                   version u32, host page size u32, engine fingerprint
//!                   [u8; 32], module length u64, meta offset u64, meta
//!                   length u64, file length u64, CRC-32 of every byte before
//!                   the trailer u32, CRC-32 of the trailer's first 84 bytes
//!                   u32, end magic "FMARTEND"
//! ```
//!
//! The compiled module comes first because wasmtime maps a whole file and
//! reads an ELF header at offset 0 ([`Module::deserialize_open_file`]: the
//! zero-copy load; bytes after the ELF file are never read by it); the
//! trailer is last for the same reason, and a truncated file loses it, so
//! truncation is found before anything else. The contents CRC is checked on
//! every load (crc32fast runs at several GB/s): a flipped bit anywhere is
//! refused ([`Error::ArtifactChecksum`]) before wasmtime sees the file.
//!
//! [`PreparedModule::save_artifact`] writes a temporary file beside the
//! target, syncs it and renames it over the target, so the target always
//! holds a whole artifact or none, and concurrent writers of the same target
//! both succeed (the last rename wins; a reader keeps the file it opened).

mod meta;

use crate::creator::FrameMemoryCreator;
use crate::error::{Error, Result};
use crate::image_plan::MemoryPlan;
use crate::prepared::PreparedModule;
use crate::rewrite::NotPrepared;
use framemap::Image;
use meta::{decode_meta, encode_meta};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::{Engine, Module};

/// The artifact format this build writes and reads; part of every
/// compile-cache key, so a new format never meets an old entry.
pub const ARTIFACT_FORMAT_VERSION: u32 = 1;

/// Length of the trailer at the end of every artifact.
const TRAILER_LEN: u64 = 96;
const MAGIC: &[u8; 8] = b"FMARTIF\0";
const END_MAGIC: &[u8; 8] = b"FMARTEND";
/// The ELF magic the compiled module starts with.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// Chunk size for checksumming and copying images.
const CHUNK: usize = 1 << 20;

/// What [`PreparedModule::save_artifact`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// The file's length in bytes (image holes included).
    pub file_len: u64,
    /// Bytes of compiled module.
    pub module_len: u64,
    /// Bytes of images (whole pages).
    pub image_bytes: u64,
}

/// The SHA-256 of `engine`'s [`Engine::precompile_compatibility_hash`]:
/// equal for two engines exactly when one can load the other's compiled
/// modules. Recorded in every artifact, and a compile cache's key part.
pub fn engine_fingerprint(engine: &Engine) -> [u8; 32] {
    /// Feeds what a `Hash` impl writes into SHA-256.
    struct Sha(sha2::Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0 // never asked: the digest is read out with `finalize`
        }
        fn write(&mut self, bytes: &[u8]) {
            sha2::Digest::update(&mut self.0, bytes);
        }
    }
    let mut hasher = Sha(<sha2::Sha256 as sha2::Digest>::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    sha2::Digest::finalize(hasher.0).into()
}

impl PreparedModule {
    /// Saves this module as an artifact at `path` (see [`crate::artifact`]
    /// for the format): its compiled module, uncompressed, each memory's
    /// image (the module's own, or one given with
    /// [`PreparedModule::set_image`]), and what instantiation needs to hand
    /// them over. Written atomically: a temporary file in `path`'s
    /// directory, synced, then renamed over `path`.
    ///
    /// Refused for a module made with [`PreparedModule::with_snapshots`]
    /// ([`Error::ArtifactUnsupported`]); file system failures are
    /// [`Error::ArtifactIo`] (a full or read-only directory shows in its
    /// `source`'s kind), and leave no temporary file behind.
    pub fn save_artifact(&self, path: &Path) -> Result<ArtifactInfo> {
        if self.snapshots.is_some() {
            return Err(Error::ArtifactUnsupported {
                reason: "modules prepared with PreparedModule::with_snapshots are not saved (only the plain prepared form)",
            });
        }
        let plan = self.plan.as_deref();
        if plan.is_some_and(|p| p.iter().any(|m| m.snapshot.is_some())) {
            return Err(Error::ArtifactUnsupported { reason: "a memory is planned to restore from a snapshot" });
        }
        let module = self.module.serialize().map_err(|e| Error::ArtifactSerialize { message: format!("{e:#}") })?;
        let temp = temporary_path(path);
        let outcome = write_artifact(&temp, &module, plan, self.not_prepared.as_ref(), self.module.engine());
        let info = match outcome.and_then(|info| {
            std::fs::rename(&temp, path).map_err(|source| Error::ArtifactIo { path: path.to_owned(), source })?;
            Ok(info)
        }) {
            Ok(info) => info,
            Err(error) => {
                let _ = std::fs::remove_file(&temp);
                return Err(error);
            }
        };
        Ok(info)
    }

    /// Loads the artifact at `path` (written by
    /// [`PreparedModule::save_artifact`]) for `engine`, whose `Config` must
    /// have `creator` installed with [`crate::configure`], as
    /// [`PreparedModule::new`] would have made it from the module's bytes:
    /// the compiled module is mapped from the file
    /// ([`Module::deserialize_open_file`], no copy, no compilation) and
    /// each image is a range of the file
    /// ([`Image::from_file_range_unchecked`]), mapped copy-on-write.
    ///
    /// Checked before wasmtime sees the file: the trailer (magic, format
    /// version, page size, lengths), the engine fingerprint, and the CRC-32
    /// of every byte. Each failure is its own error variant
    /// ([`Error::ArtifactTruncated`], [`Error::ArtifactChecksum`],
    /// [`Error::ArtifactEngineMismatch`], ...), never a panic.
    ///
    /// # Safety
    /// As for wasmtime's [`Module::deserialize_file`]: the file must be one
    /// this crate wrote (a checksum detects damage, not a forged file, and
    /// wasmtime runs the code it holds), and it must not change or shrink
    /// while the returned module, any instance of it or any memory mapping
    /// its images exists. Replacing it by a rename, or unlinking it, is
    /// fine: the open file stays as it was.
    pub unsafe fn load_artifact(
        creator: &Arc<FrameMemoryCreator>,
        engine: &Engine,
        path: &Path,
    ) -> Result<PreparedModule> {
        let io = |source| Error::ArtifactIo { path: path.to_owned(), source };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let trailer = read_trailer(path, &file, len)?;
        if trailer.fingerprint != engine_fingerprint(engine) {
            return Err(Error::ArtifactEngineMismatch { path: path.to_owned() });
        }
        let body = len - TRAILER_LEN;
        let computed = crc_of(&file, body).map_err(io)?;
        if computed != trailer.body_crc {
            let (part, stored) = ("contents", trailer.body_crc);
            return Err(Error::ArtifactChecksum { path: path.to_owned(), part, stored, computed });
        }
        let mut meta = vec![0u8; trailer.meta_len as usize];
        file.read_exact_at(&mut meta, trailer.meta_offset).map_err(io)?;
        let malformed = |detail: String| Error::ArtifactMalformed { path: path.to_owned(), detail };
        let images_start = trailer.module_len.next_multiple_of(page());
        let meta = decode_meta(&meta, images_start, trailer.meta_offset).map_err(malformed)?;

        let clone = || file.try_clone().map_err(io);
        // SAFETY: the caller guarantees the file is one this crate wrote for
        // this engine (its checksum and fingerprint were just checked) and
        // that it does not change while the module lives; the compiled
        // module is its first `module_len` bytes, and wasmtime reads nothing
        // past them.
        let module = unsafe { Module::deserialize_open_file(engine, clone()?) };
        let module =
            module.map_err(|e| Error::ArtifactDeserialize { path: path.to_owned(), message: format!("{e:#}") })?;
        let plan = match meta.memories {
            None => None,
            Some(memories) => {
                let mut plan = Vec::with_capacity(memories.len());
                for (memory, (facts, range)) in memories.into_iter().enumerate() {
                    let image = match range {
                        None => None,
                        Some((offset, len)) => {
                            let file = clone()?;
                            // SAFETY: the caller guarantees the file does not
                            // change or shrink while the image lives; the range
                            // lies inside it (checked by `decode_meta`).
                            let image = unsafe { Image::from_file_range_unchecked(file, offset, len) };
                            Some(image.map_err(|source| Error::ArtifactImage {
                                path: path.to_owned(),
                                memory,
                                source,
                            })?)
                        }
                    };
                    plan.push(MemoryPlan { facts, image, snapshot: None });
                }
                Some(Arc::from(plan))
            }
        };
        Ok(PreparedModule {
            module,
            creator: creator.clone(),
            plan,
            not_prepared: meta.not_prepared,
            snapshots: None,
            restore_mode: crate::RestoreMode::default(),
            buffers: Arc::default(),
        })
    }
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
pub(crate) fn page() -> u64 {
    framemap::host_page_size() as u64
}

/// Writes the whole artifact to the new file `path` and syncs it.
fn write_artifact(
    path: &Path,
    module: &[u8],
    plan: Option<&[MemoryPlan]>,
    not_prepared: Option<&NotPrepared>,
    engine: &Engine,
) -> Result<ArtifactInfo> {
    let io = |source| Error::ArtifactIo { path: path.to_owned(), source };
    let file = File::options().write(true).create_new(true).open(path).map_err(io)?;
    let mut crc = crc32fast::Hasher::new();
    file.write_all_at(module, 0).map_err(io)?;
    crc.update(module);
    let mut at = module.len() as u64;
    let zeros = vec![0u8; CHUNK];
    let padded = at.next_multiple_of(page());
    crc.update(&zeros[..(padded - at) as usize]);
    at = padded;

    // Images, whole pages; all-zero pages left as holes.
    let mut ranges = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    for (memory, planned) in plan.unwrap_or_default().iter().enumerate() {
        let Some(image) = &planned.image else {
            ranges.push(None);
            continue;
        };
        ranges.push(Some((at, image.len())));
        let mut offset = 0;
        while offset < image.len() {
            let n = chunk.len().min((image.len() - offset) as usize);
            image.read(offset, &mut chunk[..n]).map_err(|source| Error::ArtifactImage {
                path: path.to_owned(),
                memory,
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

    let meta = encode_meta(plan, &ranges, not_prepared);
    let meta_offset = at;
    file.write_all_at(&meta, meta_offset).map_err(io)?;
    crc.update(&meta);
    at += meta.len() as u64;

    let file_len = at + TRAILER_LEN;
    let trailer = Trailer {
        version: ARTIFACT_FORMAT_VERSION,
        page_size: page() as u32,
        fingerprint: engine_fingerprint(engine),
        module_len: module.len() as u64,
        meta_offset,
        meta_len: meta.len() as u64,
        file_len,
        body_crc: crc.finalize(),
    };
    file.write_all_at(&trailer.encode(), at).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(ArtifactInfo { file_len, module_len: module.len() as u64, image_bytes })
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
    module_len: u64,
    meta_offset: u64,
    meta_len: u64,
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
        out[48..56].copy_from_slice(&self.module_len.to_le_bytes());
        out[56..64].copy_from_slice(&self.meta_offset.to_le_bytes());
        out[64..72].copy_from_slice(&self.meta_len.to_le_bytes());
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
    let trailer = Trailer {
        version: u32_at(8),
        page_size: u32_at(12),
        fingerprint: raw[16..48].try_into().expect("32 bytes"),
        module_len: u64_at(48),
        meta_offset: u64_at(56),
        meta_len: u64_at(64),
        file_len: u64_at(72),
        body_crc: u32_at(80),
    };
    if trailer.version != ARTIFACT_FORMAT_VERSION {
        let (found, expected) = (trailer.version, ARTIFACT_FORMAT_VERSION);
        return Err(Error::ArtifactVersion { path: path.to_owned(), found, expected });
    }
    if trailer.file_len != len {
        return Err(truncated(Some(trailer.file_len)));
    }
    let malformed = |detail: String| Error::ArtifactMalformed { path: path.to_owned(), detail };
    if u64::from(trailer.page_size) != page() {
        return Err(malformed(format!("written with {}-byte pages, this host has {}", trailer.page_size, page())));
    }
    let body = len - TRAILER_LEN;
    let meta_end = trailer.meta_offset.checked_add(trailer.meta_len);
    if meta_end != Some(body) || trailer.module_len.next_multiple_of(page()) > trailer.meta_offset {
        return Err(malformed(format!(
            "module {} bytes, metadata {} bytes at {}, in {body} bytes",
            trailer.module_len, trailer.meta_len, trailer.meta_offset
        )));
    }
    Ok(trailer)
}
