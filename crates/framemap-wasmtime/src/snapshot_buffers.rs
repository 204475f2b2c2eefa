//! Host buffers by name, so instance snapshots can hold windows.
//!
//! A snapshot records a window of a host buffer (`Shared` frames) by the
//! buffer's name and the range shown, never its bytes: the buffer is the
//! host's, and a restore shows the buffer as it is then. [`SnapshotBuffers`]
//! is the host's directory of those names. Set on a [`PreparedModule`] or a
//! [`PreparedComponent`], it names the windows of every memory a capture
//! reads, and re-binds them in every memory a restore makes: each restored
//! window is granted to its new memory (so [`SharedBuffer::revoke`] reaches
//! it, as it reaches windows the guest or host mapped) and shows the same
//! buffer range with the same protection.
//!
//! Invariants kept here:
//! - a name names one buffer and a buffer has one name, so a capture's names
//!   are unambiguous and a restore re-binds each window to the buffer that
//!   was captured under that name in this directory;
//! - a snapshot that names a buffer the directory lacks is refused before
//!   anything is instantiated ([`Error::MissingBuffer`]), never restored
//!   with a zero page or a hole in its place; a capture of a window whose
//!   buffer the directory does not name is refused
//!   ([`framemap::Error::UnnamedBuffer`]), never captured as something else.

use crate::error::{Error, Result};
use crate::prepared::PreparedModule;
use crate::{MemoryHandle, PreparedComponent};
use framemap::snapshot::{MAX_NAME_LEN, Snapshot};
use framemap::{BufferGrant, Image, SharedBuffer, WindowOwner};
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

/// Host buffers by name: the names a capture records for windows, and the
/// buffers a restore maps them to again (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct SnapshotBuffers {
    by_name: BTreeMap<String, SharedBuffer>,
}

impl SnapshotBuffers {
    /// An empty directory: memories with windows cannot be captured, and
    /// snapshots with windows cannot be restored.
    pub fn new() -> SnapshotBuffers {
        SnapshotBuffers::default()
    }

    /// Names `buffer` `name`. Refused ([`Error::BufferName`]) if the name is
    /// empty or longer than [`MAX_NAME_LEN`] bytes, already names a buffer,
    /// or `buffer` already has a name here.
    pub fn insert(&mut self, name: impl Into<String>, buffer: SharedBuffer) -> Result<()> {
        let name = name.into();
        let refuse = |reason: &str| Err(Error::BufferName { name: name.clone(), reason: reason.into() });
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return refuse(&format!("a buffer name has 1 to {MAX_NAME_LEN} bytes"));
        }
        if self.by_name.contains_key(&name) {
            return refuse("the name already names a buffer");
        }
        if let Some(other) = self.name_of(&buffer) {
            return refuse(&format!("the buffer is already named {other:?}"));
        }
        self.by_name.insert(name, buffer);
        Ok(())
    }

    /// The buffer named `name`.
    pub fn get(&self, name: &str) -> Option<&SharedBuffer> {
        self.by_name.get(name)
    }

    /// The name of `buffer` (or of a clone of it).
    pub fn name_of(&self, buffer: &SharedBuffer) -> Option<&str> {
        self.by_name.iter().find(|(_, b)| b.id() == buffer.id()).map(|(n, _)| n.as_str())
    }

    /// How many buffers are named.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no buffer is named.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The named buffers, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SharedBuffer)> {
        self.by_name.iter().map(|(n, b)| (n.as_str(), b))
    }

    /// Captures memory `handle` (owned by `store`) as `name`, its windows
    /// named from this directory.
    pub(crate) fn capture(
        &self,
        handle: &MemoryHandle,
        store: impl wasmtime::AsContextMut,
        writer: &mut framemap::snapshot::SnapshotWriter,
        name: &str,
    ) -> Result<()> {
        let names = |buffer: &SharedBuffer| self.name_of(buffer).map(str::to_owned);
        handle.capture(store, writer, name, &names)
    }

    /// Checks that every buffer a window of `snapshot` (or of a parent it
    /// restores through) names is here.
    pub(crate) fn check(&self, snapshot: &Snapshot) -> Result<()> {
        for (memory, name) in snapshot.window_buffers() {
            if !self.by_name.contains_key(name) {
                return Err(Error::MissingBuffer { memory: memory.clone(), name: name.clone() });
            }
        }
        Ok(())
    }
}

/// What a restore in the creator resolves a snapshot's sources from: the
/// module's images by content hash, and the directory's buffers, each
/// granted to the memory being restored (its slot, `owner`).
pub(crate) struct RestoreSources {
    pub images: Vec<Image>,
    pub buffers: Arc<SnapshotBuffers>,
    pub owner: Weak<dyn WindowOwner>,
}

impl framemap::snapshot::Resolver for RestoreSources {
    fn image(&mut self, hash: &framemap::snapshot::Digest) -> Option<Image> {
        self.images.image(hash)
    }

    fn buffer(&mut self, name: &str) -> Option<BufferGrant> {
        // A revoked buffer grants nothing: the restore then fails with
        // `MissingBuffer`, as for a name the directory lacks.
        self.buffers.get(name)?.grant(self.owner.clone()).ok()
    }
}

impl PreparedModule {
    /// Sets the buffer directory captures name windows from and restores
    /// re-bind them with (see [`SnapshotBuffers`]). Without one (the
    /// default), a memory with a window cannot be captured and a snapshot
    /// with one cannot be restored.
    ///
    /// # Safety
    ///
    /// Every restore maps windows of these buffers into a new memory, so
    /// the caller takes on the contract of [`MemoryHandle::map_buffer`] for
    /// every non-shared memory restored with windows: the buffer's bytes do
    /// not change (host writes, other windows, other processes, revocation)
    /// while host code holds a borrow of that memory's bytes from
    /// `wasmtime::Memory::data` or `data_mut`.
    pub unsafe fn set_snapshot_buffers(&mut self, buffers: SnapshotBuffers) {
        self.buffers = Arc::new(buffers);
    }

    /// The buffer directory captures and restores use.
    pub fn snapshot_buffers(&self) -> &SnapshotBuffers {
        &self.buffers
    }
}

impl PreparedComponent {
    /// As [`PreparedModule::set_snapshot_buffers`], for the memories of
    /// every core instance of the component.
    ///
    /// # Safety
    ///
    /// As for [`PreparedModule::set_snapshot_buffers`].
    pub unsafe fn set_snapshot_buffers(&mut self, buffers: SnapshotBuffers) {
        self.buffers = Arc::new(buffers);
    }

    /// The buffer directory captures and restores use.
    pub fn snapshot_buffers(&self) -> &SnapshotBuffers {
        &self.buffers
    }
}
