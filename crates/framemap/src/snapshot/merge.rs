//! Merging a restored layout's short runs through one image, so a snapshot
//! whose stored pages are scattered through an image restores to a few
//! kernel mappings instead of one per run.
//!
//! Each run of a restored memory is one mapping, and every reset and
//! checkpoint walks the mappings (`PAGEMAP_SCAN` finds each one): writes
//! scattered one page in eight over an image leave 513 runs for 256 stored
//! pages, and each restore of that snapshot into a recycled slot costs
//! about 0.3 us per run more than a prepared instantiation
//! (ARCHITECTURE.md). With [`crate::snapshot::RestoreOptions::merge_gaps`]
//! set to `gap`, a restore copies each *segment* of its layout — stored
//! (data) runs joined by image runs of at most `gap` pages in all, with one
//! protection — into one sealed memory file, the *merged image*, at the
//! memory's own page offsets, and maps the segment from it as one run. The
//! merged image is made once per snapshot, memory and gap, by the first
//! restore that needs it, and kept with the snapshot: later restores map
//! the same file (a recycled slot that served the snapshot keeps its frames).
//! It costs the segments' pages in memory once per process (at most
//! `gap + 1` pages per stored page), not per instance.
//!
//! Invariants kept here:
//! - a merged page holds exactly the bytes of the frame it was copied from
//!   (the merged image is sealed, and its origins are immutable images), so
//!   a merged restore reads as the unmerged one, and a reset of a merged
//!   page restores the snapshot's bytes;
//! - a merged image records where each of its pages came from
//!   ([`Origin`]), and a capture names those frames, never the merged file
//!   ([`unmerged_runs`]): a snapshot captured from a merged memory is the
//!   one captured from the unmerged memory (same sources, same stored
//!   pages). The merged image also counts as snapshot data, so anything
//!   that does not look at its origins stores its pages by content.

use crate::error::{Error, Result};
use crate::frame::{Frame, FrameKind};
use crate::image::Image;
use crate::page::PageRange;
use crate::space::LinearSpace;
use crate::sys::memfd;
use std::sync::Arc;

use super::Snapshot;

/// A layout: sorted runs and their frames.
type Layout = Vec<(PageRange, Frame)>;

/// Pages `pages` of a merged image (the memory's pages when it was
/// restored) hold pages `page..` of `image`.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    pub(crate) pages: PageRange,
    pub(crate) image: Image,
    pub(crate) page: u64,
}

/// `frames` (the layout of memory `name` of `snapshot`, its Image frames
/// naming backings of `images`) with every segment of stored runs joined by
/// at most `gap` image pages mapped from one merged image; and that image
/// (`None` if no segment has two stored runs).
pub(crate) fn merge_gaps(
    snapshot: &Snapshot,
    name: &str,
    frames: Layout,
    images: &[Image],
    gap: u64,
) -> Result<(Layout, Option<Image>)> {
    let image_of = |frame: &Frame| match frame.kind() {
        FrameKind::Image { image, page } => images.iter().find(|i| i.id() == image).map(|i| (i, page)),
        _ => None,
    };
    let stored = |frame: &Frame| image_of(frame).is_some_and(|(i, _)| i.is_snapshot_data());
    // Segments, as inclusive index ranges of `frames`.
    let mut segments: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        if !stored(&frames[i].1) {
            i += 1;
            continue;
        }
        let (start, prot) = (i, frames[i].1.prot());
        let (mut last_stored, mut gap_len) = (i, 0);
        for (j, (range, frame)) in frames.iter().enumerate().skip(i + 1) {
            if image_of(frame).is_none() || frame.prot() != prot {
                break;
            }
            if stored(frame) {
                (last_stored, gap_len) = (j, 0);
            } else {
                gap_len += range.len();
                if gap_len > gap {
                    break;
                }
            }
        }
        if last_stored > start {
            segments.push((start, last_stored));
        }
        i = last_stored + 1;
    }
    if segments.is_empty() {
        return Ok((frames, None));
    }
    let key = (name.to_owned(), gap);
    let cached = snapshot.merged_cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    let merged = match cached {
        Some(merged) => merged,
        None => {
            let end = frames.last().map_or(0, |(r, _)| r.end);
            let mut origins = Vec::new();
            for &(first, last) in &segments {
                for (range, frame) in &frames[first..=last] {
                    // Segments hold only frames whose image is in `images`.
                    let Some((image, page)) = image_of(frame) else { continue };
                    origins.push(Origin { pages: *range, image: image.clone(), page });
                }
            }
            let merged = build(end, origins)?;
            let mut cache = snapshot.merged_cache().lock().unwrap_or_else(|p| p.into_inner());
            cache.entry(key).or_insert(merged).clone()
        }
    };
    let mut out: Layout = Vec::with_capacity(frames.len());
    let mut segment = segments.iter().peekable();
    for (i, (range, frame)) in frames.into_iter().enumerate() {
        while segment.peek().is_some_and(|&&(_, last)| last < i) {
            segment.next();
        }
        let inside = segment.peek().is_some_and(|&&(first, last)| (first..=last).contains(&i));
        let frame = if inside { Frame::image(merged.id(), range.start, frame.prot()) } else { frame };
        match out.last_mut() {
            Some((prev, prev_frame)) if inside && prev_frame.advanced(prev.len()) == frame => prev.end = range.end,
            _ => out.push((range, frame)),
        }
    }
    Ok((out, Some(merged)))
}

/// A sealed image of `pages` pages holding each origin's pages at its
/// place (every other page a hole).
fn build(pages: u64, origins: Vec<Origin>) -> Result<Image> {
    const CHUNK: u64 = 256;
    let ps = crate::host_page_size() as u64;
    let len = pages * ps;
    let io = |syscall| move |source| Error::Kernel { syscall, start: 0, end: len, source };
    let fd = memfd::create("framemap-merged").map_err(io("memfd_create"))?;
    memfd::set_len(&fd, len).map_err(io("ftruncate"))?;
    let mut buf = vec![0u8; (CHUNK * ps) as usize];
    for origin in &origins {
        let mut at = 0;
        while at < origin.pages.len() {
            let n = (origin.pages.len() - at).min(CHUNK);
            let chunk = &mut buf[..(n * ps) as usize];
            origin.image.read((origin.page + at) * ps, chunk)?;
            // All-zero chunks stay holes.
            if chunk.iter().any(|&b| b != 0) {
                memfd::write_all_at(&fd, chunk, (origin.pages.start + at) * ps).map_err(io("pwrite"))?;
            }
            at += n;
        }
    }
    memfd::seal_immutable(&fd).map_err(io("fcntl(F_ADD_SEALS)"))?;
    Ok(Image::from_sealed(fd, len)?.into_merged(Arc::from(origins)))
}

/// The runs of `space`'s table in `range`, each Image run with its image;
/// the runs of a merged image split into the frames its pages were copied
/// from (see the module docs).
pub(crate) fn unmerged_runs(space: &LinearSpace, range: PageRange) -> Result<Vec<(PageRange, Frame, Option<Image>)>> {
    let mut out = Vec::new();
    for (run, frame) in space.table().runs_in(range) {
        let FrameKind::Image { image: id, page } = frame.kind() else {
            out.push((run, frame, None));
            continue;
        };
        let image = space.image(id).ok_or(Error::UnknownBacking { id: id.0 })?;
        let Some(origins) = image.origins() else {
            out.push((run, frame, Some(image.clone())));
            continue;
        };
        // The run shows merged pages [page, page + len).
        let shown = PageRange::new(page, page + run.len());
        let mut covered = 0;
        for origin in origins {
            let part = origin.pages.intersect(shown);
            if part.is_empty() {
                continue;
            }
            let at = run.start + (part.start - page);
            let frame = Frame::image(origin.image.id(), origin.page + (part.start - origin.pages.start), frame.prot());
            out.push((PageRange::new(at, at + part.len()), frame, Some(origin.image.clone())));
            covered += part.len();
        }
        if covered != run.len() {
            // A merged page with no origin: never made by `merge_gaps`.
            return Err(Error::UnknownBacking { id: id.0 });
        }
    }
    out.sort_by_key(|(range, _, _)| range.start);
    Ok(out)
}
