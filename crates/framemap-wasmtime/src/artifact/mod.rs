//! Compile-cache artifacts: a [`PreparedModule`] or a [`PreparedComponent`]
//! saved to one file and loaded back without compiling, its compiled code
//! and its images mapped from the file (no copy).
//!
//! Only the plain prepared forms are saved ([`PreparedModule::new`],
//! [`PreparedComponent::new`]); one made `with_snapshots` is refused
//! ([`Error::ArtifactUnsupported`](crate::Error::ArtifactUnsupported)): it
//! holds a second compiled variant (the restore form) and what capture
//! needs, which the cache has no use for (`framemap run` compiles those
//! afresh).
//!
//! # File layout (format [`ARTIFACT_FORMAT_VERSION`])
//!
//! ```text
//! 0                 the compiled code: Module::serialize's or
//!                   Component::serialize's bytes (an ELF file),
//!                   uncompressed, padded with zeros to a host page
//! page-aligned      the image table: each distinct image once (a component
//!                   that instantiates a module twice plans its image
//!                   twice), whole pages, in plan order of first use;
//!                   all-zero pages are holes in the file
//! meta_offset       metadata (see `meta.rs`): the image table's ranges;
//!                   whether images can be handed to the memories, and
//!                   each planned memory's type facts and image; then a
//!                   module's not-prepared reason, or a component's
//!                   not-prepared reason and its unprepared core modules
//! file_len - 96     the trailer (little-endian): magic "FMARTIF\0", format
//!                   version u32, host page size u32, engine fingerprint
//!                   [u8; 32], code length u64, meta offset u64, kind u32
//!                   (1 module, 2 component), meta length u32, file length
//!                   u64, CRC-32 of every byte before the trailer u32,
//!                   CRC-32 of the trailer's first 84 bytes u32, end magic
//!                   "FMARTEND"
//! ```
//!
//! The compiled code comes first because wasmtime maps a whole file and
//! reads an ELF header at offset 0 ([`Module::deserialize_open_file`],
//! [`Component::deserialize_file`]: the zero-copy loads, one code path in
//! wasmtime 48, `Engine::load_code_file`; bytes after the ELF file are never
//! read by it); the trailer is last for the same reason, and a truncated
//! file loses it, so truncation is found before anything else. Format 1
//! had no kind (modules only) and a u64 meta length where the kind and the
//! meta length now are; magic, version and page size keep their places, so
//! a format-1 file is refused by its version. The kind is checked right
//! after the trailer: a module's artifact loaded as a component, or the
//! reverse, is [`Error::ArtifactKind`](crate::Error::ArtifactKind). The
//! contents CRC is checked on every load (crc32fast runs at several GB/s): a
//! flipped bit anywhere is refused
//! ([`Error::ArtifactChecksum`](crate::Error::ArtifactChecksum)) before
//! wasmtime sees the file.
//!
//! `save_artifact` writes a temporary file beside the target, syncs it and
//! renames it over the target, so the target always holds a whole artifact
//! or none, and concurrent writers of the same target both succeed (the
//! last rename wins; a reader keeps the file it opened).
//!
//! [`Module::deserialize_open_file`]: wasmtime::Module::deserialize_open_file
//! [`Component::deserialize_file`]: wasmtime::component::Component::deserialize_file

mod component;
mod file;
mod meta;
mod module;

use std::hash::{Hash, Hasher};
use wasmtime::Engine;

#[cfg(doc)]
use crate::{PreparedComponent, PreparedModule};

/// The artifact format this build writes and reads; part of every
/// compile-cache key, so a new format never meets an old entry.
pub const ARTIFACT_FORMAT_VERSION: u32 = 2;

/// What `save_artifact` wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// The file's length in bytes (image holes included).
    pub file_len: u64,
    /// Bytes of compiled code (the module's or the component's ELF file).
    pub code_len: u64,
    /// Bytes of images (whole pages; each distinct image once).
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
