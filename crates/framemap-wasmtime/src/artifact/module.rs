//! [`PreparedModule::save_artifact`] and [`PreparedModule::load_artifact`]:
//! a module's artifact (kind 1), its metadata the plan and the module's
//! not-prepared reason.

use super::ArtifactInfo;
use super::file::{self, Kind};
use super::meta::{self, Cursor};
use crate::creator::FrameMemoryCreator;
use crate::error::{Error, Result};
use crate::prepared::PreparedModule;
use std::path::Path;
use std::sync::Arc;
use wasmtime::{Engine, Module};

#[cfg(doc)]
use framemap::Image;

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
        let code = self.module.serialize().map_err(|e| Error::ArtifactSerialize { message: format!("{e:#}") })?;
        let (images, refs) = file::image_table(plan);
        file::save(path, Kind::Module, &code, &images, self.module.engine(), |ranges| {
            let mut out = Vec::new();
            meta::encode_plan(&mut out, plan, &refs, ranges);
            meta::encode_not_prepared(&mut out, self.not_prepared.as_ref());
            out
        })
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
    /// version, page size, lengths), the kind (a component's artifact is
    /// [`Error::ArtifactKind`]), the engine fingerprint, and the CRC-32 of
    /// every byte. Each failure is its own error variant
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
        let checked = file::open(path, engine, Kind::Module)?;
        let malformed = |detail: String| Error::ArtifactMalformed { path: path.to_owned(), detail };
        let mut cursor = Cursor(&checked.meta);
        let plan = cursor.plan(checked.images).map_err(malformed)?;
        let not_prepared = cursor.not_prepared().map_err(malformed)?;
        cursor.finish().map_err(malformed)?;

        let code = checked.clone_file(path)?;
        // SAFETY: the caller guarantees the file is one this crate wrote for
        // this engine (its kind, checksum and fingerprint were just checked)
        // and that it does not change while the module lives; the compiled
        // module is its first bytes, and wasmtime reads nothing past them.
        let module = unsafe { Module::deserialize_open_file(engine, code) };
        let module =
            module.map_err(|e| Error::ArtifactDeserialize { path: path.to_owned(), message: format!("{e:#}") })?;
        // SAFETY: the caller guarantees the file does not change or shrink
        // while the module or its images live; `Cursor::plan` checked that
        // every range lies inside it.
        let plan = unsafe { checked.plan(path, plan) };
        let plan = plan?;
        Ok(PreparedModule {
            module,
            creator: creator.clone(),
            plan,
            not_prepared,
            snapshots: None,
            restore_mode: crate::RestoreMode::default(),
            buffers: Arc::default(),
        })
    }
}
