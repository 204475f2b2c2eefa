//! Read-only views of a live memory's frame table.

use crate::error::{Error, Result};
use crate::memory::LiveMemory;
use framemap::{Frame, PageRange, SpaceSummary};
use std::fmt;
use std::sync::{Arc, Weak};

/// A read-only handle to one framemap memory. It does not keep the memory
/// alive: once wasmtime drops the memory, queries return
/// [`Error::NotFramemap`].
#[derive(Clone, Debug)]
pub struct MemoryHandle {
    base: usize,
    live: Weak<LiveMemory>,
}

impl MemoryHandle {
    pub(crate) fn new(live: Arc<LiveMemory>) -> MemoryHandle {
        MemoryHandle { base: live.base(), live: Arc::downgrade(&live) }
    }

    /// The memory's base address.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The memory's frame table and residency now.
    pub fn report(&self) -> Result<FrameReport> {
        let gone = || Error::NotFramemap { base: self.base };
        let live = self.live.upgrade().ok_or_else(gone)?;
        let guard = live.lock();
        let space = guard.as_ref().ok_or_else(gone)?;
        let summary = space.summary().map_err(|source| Error::Report { base: self.base, source })?;
        Ok(FrameReport { summary, runs: space.table().runs().collect() })
    }

    /// Checks the memory's frame table against the kernel's mappings.
    pub fn validate(&self) -> Result<()> {
        let gone = || Error::NotFramemap { base: self.base };
        let live = self.live.upgrade().ok_or_else(gone)?;
        let guard = live.lock();
        guard.as_ref().ok_or_else(gone)?.validate().map_err(|source| Error::Report { base: self.base, source })
    }
}

/// A copy of one memory's frame table and its statistics at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameReport {
    /// Runs, bytes and resident bytes per tag.
    pub summary: SpaceSummary,
    /// Every run of the table, in page order (page indices from the base).
    pub runs: Vec<(PageRange, Frame)>,
}

impl fmt::Display for FrameReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary)
    }
}
