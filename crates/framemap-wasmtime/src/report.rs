//! [`FrameReport`]: a copy of one memory's frame table at one moment.

use framemap::{Frame, PageRange, SpaceSummary};
use std::fmt;

/// A copy of one memory's frame table and its statistics at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameReport {
    /// Runs, bytes and resident bytes per tag.
    pub summary: SpaceSummary,
    /// Every run of the table, in page order (page indices from the base).
    pub runs: Vec<(PageRange, Frame)>,
    /// Pages the hole guard replaced: non-zero means the memory is poisoned
    /// (see [`Error::Poisoned`]).
    pub poisoned_pages: u64,
}

impl fmt::Display for FrameReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.summary)?;
        if self.poisoned_pages > 0 {
            writeln!(f, "poisoned: host code touched {} inaccessible page(s)", self.poisoned_pages)?;
        }
        Ok(())
    }
}
