//! Inspection: checking the table against the kernel, summaries, residency.
//!
//! Nothing here changes the space. [`LinearSpace::validate`] checks
//! invariant 1 (and the held backings and their page counts, invariant 5)
//! against `/proc/self/maps`; it and [`LinearSpace::summary`] read the
//! table as the kernel has it now: runs the SIGBUS guard demoted since the
//! last `reconcile` as `Unmapped` (invariant 6), while pages the hole guard
//! replaced show up as divergences until then (invariant 7).

use super::LinearSpace;
use crate::buffer::SharedBuffer;
use crate::error::{Error, Result};
use crate::frame::{BackingId, Frame, FrameKind, PerTag};
use crate::page::PageRange;
use crate::summary::SpaceSummary;
use crate::sys::{maps, pagemap, sigbus};
use rustc_hash::FxHashMap as HashMap;

/// A stretch of the reservation as the kernel maps it, in bytes from the
/// reservation's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    /// First byte.
    start: u64,
    /// One past the last byte.
    end: u64,
    /// Permissions as `/proc/self/maps` writes them (`rw-p`).
    perms: [u8; 4],
    /// The file mapped there, or `None` if anonymous.
    file: Option<FileAt>,
}

/// Where a segment's first byte lies in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileAt {
    /// The file's inode number.
    inode: u64,
    /// Byte offset in the file.
    offset: u64,
}

impl LinearSpace {
    /// Compares the frame table with `/proc/self/maps` over the whole
    /// reservation: same protections, anonymous where the table says so, no
    /// hole. Used by tests and fuzzing.
    pub fn validate(&self) -> Result<()> {
        self.table.check().map_err(|detail| Error::Diverged { start: 0, end: self.total(), detail })?;
        let mut counted: HashMap<BackingId, u64> = HashMap::default();
        for (run, frame) in self.table.runs() {
            let held = match frame.kind() {
                FrameKind::Image { image: id, .. } => Some((id, self.images.contains_key(&id))),
                FrameKind::Shared { buffer: id, .. } => Some((id, self.buffers.contains_key(&id))),
                FrameKind::Unmapped | FrameKind::Zero => None,
            };
            if let Some((id, held)) = held {
                if !held {
                    let (start, end) = (run.start * self.page, run.end * self.page);
                    return Err(Error::Diverged { start, end, detail: format!("backing #{} is not held", id.0) });
                }
                *counted.entry(id).or_default() += run.len();
            }
        }
        if counted != self.backing_pages {
            return Err(Error::Diverged {
                start: 0,
                end: self.total(),
                detail: format!("backing page counts {:?} differ from the table's {counted:?}", self.backing_pages),
            });
        }
        let base = self.base().as_ptr() as usize;
        let end = base + self.total() as usize;
        let vmas = maps::vmas_in(base, end).map_err(|source| Error::Kernel {
            syscall: "read /proc/self/maps",
            start: 0,
            end: self.total(),
            source,
        })?;
        let mut actual: Vec<Segment> = Vec::new();
        for vma in vmas {
            let (s, e) = (vma.start.max(base), vma.end.min(end));
            let file =
                (vma.inode != 0).then(|| FileAt { inode: vma.inode, offset: vma.offset + (s - vma.start) as u64 });
            push_segment(
                &mut actual,
                Segment { start: (s - base) as u64, end: (e - base) as u64, perms: vma.perms, file },
            );
        }
        let mut expected: Vec<Segment> = Vec::new();
        for (run, frame) in self.effective_runs() {
            let (r, w) = (frame.prot().readable(), frame.prot().writable());
            let (shared, file) = match frame.kind() {
                FrameKind::Unmapped | FrameKind::Zero => (false, None),
                FrameKind::Image { image, page } => {
                    let (inode, base) = self.images.get(&image).map_or((0, 0), |i| (i.inode(), i.file_offset()));
                    (false, Some(FileAt { inode, offset: base + page * self.page }))
                }
                FrameKind::Shared { buffer, page } => {
                    let inode = self.buffers.get(&buffer).map_or(0, SharedBuffer::inode);
                    (true, Some(FileAt { inode, offset: page * self.page }))
                }
            };
            let perms =
                [if r { b'r' } else { b'-' }, if w { b'w' } else { b'-' }, b'-', if shared { b's' } else { b'p' }];
            push_segment(
                &mut expected,
                Segment { start: run.start * self.page, end: run.end * self.page, perms, file },
            );
        }
        for (i, want) in expected.iter().enumerate() {
            let got = actual.get(i);
            if got != Some(want) {
                let describe = |s: Option<&Segment>| match s {
                    Some(Segment { start, end, perms, file }) => format!(
                        "{start:#x}..{end:#x} {} {}",
                        String::from_utf8_lossy(perms),
                        file.map_or("anon".to_string(), |f| format!("inode {} @ {:#x}", f.inode, f.offset))
                    ),
                    None => "nothing".to_string(),
                };
                return Err(Error::Diverged {
                    start: want.start,
                    end: want.end,
                    detail: format!("table says {}, kernel has {}", describe(Some(want)), describe(got)),
                });
            }
        }
        if let Some(extra) = actual.get(expected.len()) {
            let Segment { start, end, perms, file } = extra;
            let file = file.map_or("anon".to_string(), |f| format!("inode {} @ {:#x}", f.inode, f.offset));
            let detail = format!(
                "kernel has extra mappings, from {start:#x}..{end:#x} {} {file} (the table's runs end at {:#x})",
                String::from_utf8_lossy(perms),
                expected.last().map_or(0, |s| s.end)
            );
            return Err(Error::Diverged { start: *start, end: self.total(), detail });
        }
        Ok(())
    }

    /// Runs, mapped bytes and resident bytes per frame tag.
    pub fn summary(&self) -> Result<SpaceSummary> {
        let mut summary = SpaceSummary {
            base: self.base().as_ptr() as usize,
            len: self.len,
            capacity: self.capacity,
            guard: self.guard,
            runs: PerTag::default(),
            bytes: PerTag::default(),
            resident: PerTag::default(),
        };
        for (run, frame) in self.effective_runs() {
            let tag = frame.tag();
            summary.runs[tag] += 1;
            summary.bytes[tag] += run.len() * self.page;
            let resident = match frame.kind() {
                FrameKind::Unmapped => 0,
                FrameKind::Zero | FrameKind::Image { .. } | FrameKind::Shared { .. } => self.resident_bytes(run)?,
            };
            summary.resident[tag] += resident;
        }
        Ok(summary)
    }

    /// The table's runs as the kernel has them now: runs the SIGBUS guard
    /// demoted since the last [`LinearSpace::reconcile`] read as `Unmapped`.
    fn effective_runs(&self) -> Vec<(PageRange, Frame)> {
        let base = self.base().as_ptr() as usize;
        let demoted: Vec<PageRange> = sigbus::demoted_windows(base, base + self.total() as usize)
            .into_iter()
            .map(|(s, e)| PageRange::new(self.page_of(s), self.page_of(e)))
            .collect();
        let mut out = Vec::with_capacity(self.table.run_count() + 2 * demoted.len());
        for (run, frame) in self.table.runs() {
            let mut at = run.start;
            for d in demoted.iter().map(|d| d.intersect(run)) {
                if d.is_empty() || d.start < at {
                    continue;
                }
                if d.start > at {
                    out.push((PageRange::new(at, d.start), frame.advanced(at - run.start)));
                }
                out.push((d, Frame::UNMAPPED));
                at = d.end;
            }
            if at < run.end {
                out.push((PageRange::new(at, run.end), frame.advanced(at - run.start)));
            }
        }
        out
    }

    /// Resident bytes of `run` (the shared zero page excluded where the
    /// kernel can tell it apart).
    fn resident_bytes(&self, run: PageRange) -> Result<u64> {
        let (start, end) = (self.addr_of(run.start) as usize, self.addr_of(run.end) as usize);
        let kernel = |source| Error::Kernel {
            syscall: "read /proc/self/pagemap",
            start: run.start * self.page,
            end: run.end * self.page,
            source,
        };
        if pagemap::scan_supported() {
            let mut bytes = 0u64;
            pagemap::scan(start, end, pagemap::Query::Resident, |s, e| bytes += (e - s) as u64).map_err(kernel)?;
            Ok(bytes)
        } else {
            Ok(pagemap::count_present_by_entries(start, end).map_err(kernel)? * self.page)
        }
    }
}

/// Appends a segment, merging it into the previous one when the kernel could
/// have merged the two mappings (same permissions, both anonymous or the same
/// file at contiguous offsets).
fn push_segment(segments: &mut Vec<Segment>, segment: Segment) {
    if let Some(last) = segments.last_mut()
        && last.end == segment.start
        && last.perms == segment.perms
    {
        let contiguous = match (last.file, segment.file) {
            (None, None) => true,
            (Some(file), Some(next)) => {
                file.inode == next.inode && file.offset + (last.end - last.start) == next.offset
            }
            _ => false,
        };
        if contiguous {
            last.end = segment.end;
            return;
        }
    }
    segments.push(segment);
}
