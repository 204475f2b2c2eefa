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

/// Adds `range` to `set`, a list of sorted, disjoint, non-touching ranges,
/// merging it with the ranges it overlaps or touches: the list stays sorted,
/// disjoint and non-touching.
pub(crate) fn insert_range(set: &mut Vec<PageRange>, range: PageRange) {
    if range.is_empty() {
        return;
    }
    // The first range that ends at or after `range.start` (touching merges).
    let first = set.partition_point(|r| r.end < range.start);
    // One past the last range that starts at or before `range.end`.
    let last = set.partition_point(|r| r.start <= range.end);
    if first == last {
        set.insert(first, range);
        return;
    }
    let merged = PageRange::new(set[first].start.min(range.start), set[last - 1].end.max(range.end));
    set.splice(first..last, [merged]);
}

/// The union of two lists of sorted, disjoint ranges, as a list of sorted,
/// disjoint, non-touching ranges.
pub(crate) fn union(a: &[PageRange], b: &[PageRange]) -> Vec<PageRange> {
    let mut merged: Vec<PageRange> = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = if j >= b.len() || (i < a.len() && a[i].start <= b[j].start) {
            i += 1;
            a[i - 1]
        } else {
            j += 1;
            b[j - 1]
        };
        if next.is_empty() {
            continue;
        }
        match merged.last_mut() {
            Some(last) if next.start <= last.end => last.end = last.end.max(next.end),
            _ => merged.push(next),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> PageRange {
        PageRange::new(start, end)
    }

    /// The pages of a list of ranges, one by one (the model).
    fn pages(set: &[PageRange]) -> std::collections::BTreeSet<u64> {
        set.iter().flat_map(|r| r.start..r.end).collect()
    }

    fn well_formed(set: &[PageRange]) -> bool {
        set.iter().all(|r| !r.is_empty()) && set.windows(2).all(|w| w[0].end < w[1].start)
    }

    #[test]
    fn insert_range_keeps_the_set_sorted_disjoint_and_merged() {
        // Every small range inserted into every small set, against the model.
        let small: Vec<PageRange> = (0..8).flat_map(|s| (s..9).map(move |e| r(s, e))).collect();
        for a in &small {
            for b in &small {
                for c in &small {
                    let mut set = Vec::new();
                    for x in [a, b, c] {
                        insert_range(&mut set, *x);
                    }
                    assert!(well_formed(&set), "{set:?}");
                    let want: std::collections::BTreeSet<u64> = [a, b, c].iter().flat_map(|x| x.start..x.end).collect();
                    assert_eq!(pages(&set), want, "{a:?} {b:?} {c:?}");
                }
            }
        }
    }

    #[test]
    fn union_equals_the_union_of_pages() {
        let lists = [vec![], vec![r(0, 2)], vec![r(1, 3), r(5, 6)], vec![r(2, 5)], vec![r(0, 1), r(3, 4), r(6, 9)]];
        for a in &lists {
            for b in &lists {
                let u = union(a, b);
                assert!(well_formed(&u), "{u:?}");
                let want: std::collections::BTreeSet<u64> = pages(a).union(&pages(b)).copied().collect();
                assert_eq!(pages(&u), want);
            }
        }
    }
}
