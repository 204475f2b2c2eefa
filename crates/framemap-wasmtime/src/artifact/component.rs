//! [`PreparedComponent::save_artifact`] and
//! [`PreparedComponent::load_artifact`]: a component's artifact (kind 2),
//! its metadata the plan (every core memory of one instantiation, in the
//! order wasmtime creates them, each with its facts and image), the
//! component's not-prepared reason and its core modules left unchanged.
//! That is all a plain [`PreparedComponent`] holds besides its compiled
//! component and its creator, so a loaded one instantiates exactly as the
//! freshly built one: the same strict plan, the same images' bytes.
//!
//! wasmtime 48 loads a component from a file only by path
//! ([`Component::deserialize_file`]; a `Module` can be given the open
//! file). The load hands it `/proc/self/fd/N` of the file whose trailer,
//! kind, fingerprint and checksum were just checked: opening that reaches
//! the same inode, even if the path was renamed over or unlinked since, so
//! wasmtime never maps a file other than the one checked.

use super::ArtifactInfo;
use super::file::{self, Kind};
use super::meta::{self, Cursor};
use crate::component::PreparedComponent;
use crate::creator::FrameMemoryCreator;
use crate::error::{Error, Result};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::Component;

#[cfg(doc)]
use framemap::Image;

impl PreparedComponent {
    /// Saves this component as an artifact at `path` (see
    /// [`crate::artifact`] for the format): its compiled component,
    /// uncompressed, the image of each planned core memory (each distinct
    /// image once), and the plan that hands them over. Written atomically:
    /// a temporary file in `path`'s directory, synced, then renamed over
    /// `path`. A component that is not prepared is saved too (its compiled
    /// form and its reason).
    ///
    /// Refused for a component made with
    /// [`PreparedComponent::with_snapshots`] ([`Error::ArtifactUnsupported`]);
    /// file system failures are [`Error::ArtifactIo`] (a full or read-only
    /// directory shows in its `source`'s kind), and leave no temporary file
    /// behind.
    pub fn save_artifact(&self, path: &Path) -> Result<ArtifactInfo> {
        if self.snapshots.is_some() {
            return Err(Error::ArtifactUnsupported {
                reason: "components prepared with PreparedComponent::with_snapshots are not saved (only the plain prepared form)",
            });
        }
        let plan = self.plan.as_deref();
        if plan.is_some_and(|p| p.iter().any(|m| m.snapshot.is_some())) {
            return Err(Error::ArtifactUnsupported { reason: "a memory is planned to restore from a snapshot" });
        }
        let code = self.component.serialize().map_err(|e| Error::ArtifactSerialize { message: format!("{e:#}") })?;
        let (images, refs) = file::image_table(plan);
        file::save(path, Kind::Component, &code, &images, self.component.engine(), |ranges| {
            let mut out = Vec::new();
            meta::encode_plan(&mut out, plan, &refs, ranges);
            meta::encode_component(&mut out, self.not_prepared.as_ref(), &self.unprepared_modules);
            out
        })
    }

    /// Loads the artifact at `path` (written by
    /// [`PreparedComponent::save_artifact`]) for `engine`, whose `Config`
    /// must have `creator` installed with [`crate::configure`] and the
    /// component model enabled, as [`PreparedComponent::new`] would have
    /// made it from the component's bytes: the compiled component is mapped
    /// from the file ([`Component::deserialize_file`], no copy, no
    /// compilation) and each image is a range of the file
    /// ([`Image::from_file_range_unchecked`]), mapped copy-on-write.
    ///
    /// Checked before wasmtime sees the file: the trailer (magic, format
    /// version, page size, lengths), the kind (a module's artifact is
    /// [`Error::ArtifactKind`]), the engine fingerprint, and the CRC-32 of
    /// every byte. Each failure is its own error variant
    /// ([`Error::ArtifactTruncated`], [`Error::ArtifactChecksum`],
    /// [`Error::ArtifactEngineMismatch`], ...), never a panic. Needs
    /// `/proc/self/fd` (see the module docs).
    ///
    /// # Safety
    /// As for wasmtime's [`Component::deserialize_file`]: the file must be
    /// one this crate wrote (a checksum detects damage, not a forged file,
    /// and wasmtime runs the code it holds), and it must not change or
    /// shrink while the returned component, any instance of it or any
    /// memory mapping its images exists. Replacing it by a rename, or
    /// unlinking it, is fine: the open file stays as it was.
    pub unsafe fn load_artifact(
        creator: &Arc<FrameMemoryCreator>,
        engine: &Engine,
        path: &Path,
    ) -> Result<PreparedComponent> {
        let checked = file::open(path, engine, Kind::Component)?;
        let malformed = |detail: String| Error::ArtifactMalformed { path: path.to_owned(), detail };
        let mut cursor = Cursor(&checked.meta);
        let plan = cursor.plan(checked.images).map_err(malformed)?;
        let (not_prepared, unprepared_modules) = cursor.component().map_err(malformed)?;
        cursor.finish().map_err(malformed)?;

        // The checked file itself, reopened by wasmtime (see the module docs).
        let own = format!("/proc/self/fd/{}", checked.file.as_raw_fd());
        // SAFETY: the caller guarantees the file is one this crate wrote for
        // this engine (its kind, checksum and fingerprint were just checked
        // on this descriptor, which `own` names) and that it does not change
        // while the component lives; the compiled component is its first
        // bytes, and wasmtime reads nothing past them.
        let component = unsafe { Component::deserialize_file(engine, &own) };
        let component =
            component.map_err(|e| Error::ArtifactDeserialize { path: path.to_owned(), message: format!("{e:#}") })?;
        // SAFETY: the caller guarantees the file does not change or shrink
        // while the component or its images live; `Cursor::plan` checked
        // that every range lies inside it.
        let plan = unsafe { checked.plan(path, plan) };
        let plan = plan?;
        Ok(PreparedComponent {
            component,
            creator: creator.clone(),
            plan,
            not_prepared,
            unprepared_modules,
            snapshots: None,
            buffers: Arc::default(),
            restore_mode: crate::RestoreMode::default(),
        })
    }
}
