//! Host pages and half-open ranges of them.

use std::fmt;

/// The host page size, in bytes (read once from the kernel).
pub fn host_page_size() -> usize {
    crate::sys::mman::page_size()
}

/// A half-open range `[start, end)` of host page indices, relative to the
/// start of a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageRange {
    /// First page in the range.
    pub start: u64,
    /// One past the last page.
    pub end: u64,
}

impl PageRange {
    /// `[start, end)`; an inverted range is treated as empty at `start`.
    pub fn new(start: u64, end: u64) -> PageRange {
        PageRange { start, end: end.max(start) }
    }

    /// Number of pages.
    pub fn len(self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no page.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// Whether `page` lies in the range.
    pub fn contains(self, page: u64) -> bool {
        self.start <= page && page < self.end
    }

    /// The pages in both ranges (possibly empty).
    pub fn intersect(self, other: PageRange) -> PageRange {
        PageRange::new(self.start.max(other.start), self.end.min(other.end))
    }
}

impl fmt::Display for PageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pages {}..{}", self.start, self.end)
    }
}
