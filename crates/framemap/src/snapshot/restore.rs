//! Restoring: a snapshot chain resolved into the source of every page, and
//! a memory laid out from it, lazily.
//!
//! `resolve` turns a memory record into runs whose sources are concrete:
//! `Parent` runs are replaced by the parent's sources for those pages
//! (recursively, with the child's protection), so a chain of any length
//! restores as one layout. [`LinearSpace::restore`] checks everything it
//! needs (sizes, the images by content hash, the buffers' grants) before it
//! changes anything, then maps each run fresh: data pages copy-on-write from
//! the snapshot file, clean image pages from the image, windows shared.
//! Nothing is read from the file at restore but the working set: the pages
//! the memory's instances touched first, recorded in the snapshot
//! ([`Snapshot::working_set`]), are prefetched right after the layout with
//! one `madvise(MADV_POPULATE_READ)` per stretch
//! ([`LinearSpace::prefetch`]), so the first call after a restore does not
//! fault them in one by one; every other page is read when the guest
//! touches it. Prefetching is advice: its failure never fails a restore
//! (the memory is whole; only faults are left to pay), and
//! [`LinearSpace::restore_with`] reports what it did.

use super::format::{Digest, PageSource, RunRecord};
use super::runs::in_page_order;
use super::runs::split;
use super::{Snapshot, SnapshotWriter};
use crate::buffer::{BufferGrant, SharedBuffer};
use crate::error::{Error, Result, SnapshotDamage};
use crate::frame::{Frame, FrameKind, Protection};
use crate::image::Image;
use crate::page::PageRange;
use crate::space::{LinearSpace, Prefetch, PrefetchReport};
use rustc_hash::FxHashMap as HashMap;

/// Supplies what a snapshot names but does not hold: the images its clean
/// pages come from (by content hash) and the buffers its windows show (by
/// name). A missing one is an error at restore, never a zero page.
pub trait Resolver {
    /// The image whose contents hash to `hash`, if the host has it.
    fn image(&mut self, hash: &Digest) -> Option<Image> {
        let _ = hash;
        None
    }

    /// A grant of the buffer named `name`, issued for the memory being
    /// restored's window owner, if the host has one.
    fn buffer(&mut self, name: &str) -> Option<BufferGrant> {
        let _ = name;
        None
    }
}

/// Resolves nothing: for snapshots that need no image and no buffer.
impl Resolver for () {}

/// Resolves images from a list (each hashed once, when first needed).
impl Resolver for Vec<Image> {
    fn image(&mut self, hash: &Digest) -> Option<Image> {
        self.iter().find(|i| i.content_hash().is_ok_and(|h| h == *hash)).cloned()
    }
}

/// How [`LinearSpace::restore_with`] restores a memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// How the memory's recorded working set ([`Snapshot::working_set`]) is
    /// brought in once the memory is laid out: [`Prefetch::Read`] by
    /// default; [`Prefetch::Off`] to measure without it, or to record a
    /// working set afresh ([`LinearSpace::touched_pages`] counts prefetched
    /// pages as touched).
    pub prefetch: Prefetch,
    /// Keep the runs whose frames already are the snapshot's (same backing,
    /// page and protection) instead of mapping them fresh. Set it only for
    /// a memory whose contents were just reset to its frames' initial
    /// contents with [`LinearSpace::restore_dirty`] and not touched since
    /// (a recycled slot, as [`LinearSpace::restore_layout`] assumes):
    /// otherwise the kept pages keep their bytes, which are then not the
    /// snapshot's. A slot that served the same memory of the same snapshot
    /// then restores with no mapping change at all.
    pub keep_reset_frames: bool,
    /// Merge the stored pages scattered through an image: each segment of
    /// the layout made of stored runs joined by image runs of at most this
    /// many pages in all is mapped as one run of a *merged image*, made by
    /// the first restore of the snapshot's memory that needs it and kept
    /// with the snapshot (see `merge.rs`: a restore of 256 pages stored one
    /// in eight through an image is 3 runs instead of 513). Costs the
    /// segments' pages in memory once per snapshot, at most this many plus
    /// one per stored page. 0 (the default): no merging.
    pub merge_gaps: u64,
}

/// Where the pages of a resolved run come from.
#[derive(Clone, Debug)]
pub(crate) enum Resolved<'a> {
    Unmapped,
    Zero,
    /// Pages of a snapshot's data section (of this one or an ancestor).
    Data {
        snapshot: &'a Snapshot,
        page: u64,
    },
    Image {
        hash: Digest,
        page: u64,
    },
    Shared {
        name: String,
        page: u64,
    },
}

/// A run with a concrete source.
#[derive(Clone, Debug)]
pub(crate) struct ResolvedRun<'a> {
    pub(crate) pages: PageRange,
    pub(crate) prot: Protection,
    pub(crate) source: Resolved<'a>,
}

/// Memory `name` of `snapshot` as runs with concrete sources, and its
/// length in bytes.
pub(crate) fn resolve<'a>(snapshot: &'a Snapshot, name: &str) -> Result<(u64, Vec<ResolvedRun<'a>>)> {
    let record = snapshot.memory(name)?;
    let mut out = Vec::with_capacity(record.runs.len());
    resolve_runs(snapshot, name, &record.runs, None, &mut out)?;
    Ok((record.len, out))
}

/// Resolves `runs` of memory `name` of `snapshot` (clipped to `within` if
/// given, with protection `prot` if given) into `out`.
fn resolve_runs<'a>(
    snapshot: &'a Snapshot,
    name: &str,
    runs: &[RunRecord],
    within: Option<(PageRange, Protection)>,
    out: &mut Vec<ResolvedRun<'a>>,
) -> Result<()> {
    for run in runs {
        let (pages, prot) = match within {
            Some((range, prot)) => (run.pages.intersect(range), prot),
            None => (run.pages, run.prot),
        };
        if pages.is_empty() {
            continue;
        }
        let skip = pages.start - run.pages.start;
        let source = match run.source.advanced(skip) {
            PageSource::Unmapped | PageSource::Shared { .. } if within.is_some() => {
                return Err(malformed(
                    snapshot,
                    format!(
                        "memory {name:?}: a child takes pages {pages} from this parent, where they are not memory pages"
                    ),
                ));
            }
            PageSource::Unmapped => Resolved::Unmapped,
            PageSource::Zero => Resolved::Zero,
            PageSource::Data { page } => Resolved::Data { snapshot, page },
            PageSource::Image { image, page } => Resolved::Image { hash: image, page },
            PageSource::Shared { buffer, page } => Resolved::Shared { name: buffer, page },
            PageSource::Parent => {
                let parent_id = snapshot.parent_id().expect("the format refuses Parent runs without a parent");
                let parent = snapshot.parent().ok_or(Error::MissingParent {
                    child: snapshot.id(),
                    parent: parent_id,
                    wrong: false,
                })?;
                let record = parent.memory(name).map_err(|_| {
                    malformed(parent, format!("memory {name:?} is missing from the parent its child takes pages from"))
                })?;
                let before = out.len();
                resolve_runs(parent, name, &record.runs, Some((pages, prot)), out)?;
                let covered: u64 = out[before..].iter().map(|r| r.pages.len()).sum();
                if covered != pages.len() {
                    return Err(malformed(
                        parent,
                        format!("memory {name:?} lacks pages {pages} its child takes from it"),
                    ));
                }
                continue;
            }
        };
        out.push(ResolvedRun { pages, prot, source });
    }
    Ok(())
}

fn malformed(snapshot: &Snapshot, detail: String) -> Error {
    Error::SnapshotInvalid { path: snapshot.inner.path.clone(), detail, kind: SnapshotDamage::Malformed }
}

impl LinearSpace {
    /// Lays this memory out as memory `name` of `snapshot` (its attached
    /// parents included): its size, every run's protection, and contents
    /// mapped lazily: data pages copy-on-write from the snapshot's file,
    /// clean image pages from the images `resolver` supplies (checked by
    /// content hash), windows from the grants it supplies. Whatever was in
    /// the memory before is replaced. Refused with nothing changed if the
    /// snapshot or a parent is missing or wrong, the memory is too small,
    /// or an image or buffer cannot be had. Starts a new life: earlier
    /// checkpoints end.
    ///
    /// Then prefetches the memory's recorded working set
    /// ([`Snapshot::working_set`]) with [`Prefetch::Read`]. `Ok` means the
    /// memory is restored; whether the prefetch succeeded is not part of
    /// it (a failed prefetch only leaves page faults to pay):
    /// [`LinearSpace::restore_with`] reports it, and can turn it off.
    pub fn restore(&mut self, snapshot: &Snapshot, name: &str, resolver: &mut dyn Resolver) -> Result<()> {
        self.restore_with(snapshot, name, resolver, RestoreOptions::default()).map(drop)
    }

    /// [`LinearSpace::restore`] with `options`: returns what the prefetch
    /// of the working set did (an empty report if the snapshot records no
    /// working set for the memory, or `options.prefetch` is
    /// [`Prefetch::Off`]). A prefetch failure is in the report
    /// ([`PrefetchReport::error`]), never an error of the restore.
    pub fn restore_with(
        &mut self,
        snapshot: &Snapshot,
        name: &str,
        resolver: &mut dyn Resolver,
        options: RestoreOptions,
    ) -> Result<PrefetchReport> {
        let planned = match snapshot.planned_layout(name, options.merge_gaps) {
            Some(planned) => {
                // The images were checked when the layout was planned; the
                // resolver must still supply each (a host that no longer
                // has an image cannot restore what needs it).
                for (hash, image) in &planned.images_by_hash {
                    let supplied = resolver.image(hash).ok_or(Error::MissingImage { hash: *hash, wrong: false })?;
                    if supplied.id() != image.id() && supplied.content_hash()? != *hash {
                        return Err(Error::MissingImage { hash: *hash, wrong: true });
                    }
                }
                planned
            }
            None => self.plan_layout(snapshot, name, resolver, options.merge_gaps)?,
        };
        if planned.len > self.capacity() {
            return Err(Error::CapacityExceeded { requested: planned.len, capacity: self.capacity() });
        }
        let ps = crate::host_page_size() as u64;
        // Windows: a grant per restore, for this memory's owner.
        let mut grants: HashMap<String, BufferGrant> = HashMap::default();
        let mut frames = planned.frames.clone();
        for ((range, frame), name) in frames.iter_mut().zip(&planned.windows) {
            let Some(name) = name else { continue };
            let FrameKind::Shared { page: first, .. } = frame.kind() else { continue };
            let grant = match grants.get(name) {
                Some(grant) => grant.clone(),
                None => {
                    let grant = resolver.buffer(name).ok_or(Error::MissingBuffer { name: name.clone() })?;
                    grants.insert(name.clone(), grant.clone());
                    grant
                }
            };
            self.check_grant(&grant, first * ps, range.len() * ps)?;
            *frame = Frame::shared(grant.buffer().id(), first, frame.prot());
        }
        let images = &planned.images;
        let len = planned.len;
        let buffers: Vec<SharedBuffer> = grants.values().map(|g| g.buffer().clone()).collect();
        let applied = self.apply_layout(len, &frames, images, &buffers, options.keep_reset_frames);
        self.forget_unused_backings();
        applied?;
        // Nothing is written yet: the memory is the snapshot, and an
        // incremental capture against it starts here (a write-prefetch
        // below makes its pages written: they are captured again, which
        // costs space, never correctness).
        self.adopt_checkpoint(planned.checkpoint);
        Ok(self.prefetch(&planned.working_set, options.prefetch))
    }

    /// Resolves memory `name` of `snapshot` into a layout: every run's
    /// frame, its images checked by content hash (clean image pages from
    /// `resolver`), merged as `merge_gaps` says; windows named, their
    /// frames granted per restore. Kept with the snapshot when it has no
    /// window, so later restores skip this.
    fn plan_layout(
        &self,
        snapshot: &Snapshot,
        name: &str,
        resolver: &mut dyn Resolver,
        merge_gaps: u64,
    ) -> Result<std::sync::Arc<PlannedLayout>> {
        let (len, runs) = resolve(snapshot, name)?;
        let working_set = snapshot.working_set(name)?;
        let ps = crate::host_page_size() as u64;
        let mut images: HashMap<Digest, Image> = HashMap::default();
        let mut data_images: Vec<Image> = Vec::new();
        let mut frames: Vec<(PageRange, Frame)> = Vec::with_capacity(runs.len());
        let mut windows: Vec<Option<String>> = Vec::with_capacity(runs.len());
        for run in &runs {
            let mut window = None;
            let frame = match &run.source {
                Resolved::Unmapped => Frame::UNMAPPED,
                Resolved::Zero => Frame::zero(run.prot),
                Resolved::Data { snapshot, page } => {
                    let image = snapshot.image();
                    if !data_images.iter().any(|i| i.id() == image.id()) {
                        data_images.push(image.clone());
                    }
                    Frame::image(image.id(), 1 + page, run.prot)
                }
                Resolved::Image { hash, page } => {
                    let image = match images.get(hash) {
                        Some(image) => image.clone(),
                        None => {
                            let image =
                                resolver.image(hash).ok_or(Error::MissingImage { hash: *hash, wrong: false })?;
                            if image.content_hash()? != *hash {
                                return Err(Error::MissingImage { hash: *hash, wrong: true });
                            }
                            images.insert(*hash, image.clone());
                            image
                        }
                    };
                    let end = (page + run.pages.len()) * ps;
                    if end > image.len() {
                        return Err(Error::PastBacking { id: image.id().0, start: page * ps, end, len: image.len() });
                    }
                    Frame::image(image.id(), *page, run.prot)
                }
                Resolved::Shared { name, page } => {
                    // The buffer's frame is made per restore, from its grant.
                    window = Some(name.clone());
                    Frame::shared(crate::BackingId(0), *page, run.prot)
                }
            };
            frames.push((run.pages, frame));
            windows.push(window);
        }
        let images_by_hash: Vec<(Digest, Image)> = images.into_iter().collect();
        let mut all_images: Vec<Image> = images_by_hash.iter().map(|(_, i)| i.clone()).chain(data_images).collect();
        let has_windows = windows.iter().any(Option::is_some);
        let (frames, windows) = match merge_gaps {
            // Windows are never merged, and merging changes the runs:
            // merge only layouts without windows (`windows` stays aligned).
            gap if gap > 0 && !has_windows => {
                let (frames, merged) = super::merge::merge_gaps(snapshot, name, frames, &all_images, gap)?;
                all_images.extend(merged);
                let windows = vec![None; frames.len()];
                (frames, windows)
            }
            _ => (frames, windows),
        };
        let checkpoint = snapshot.memory(name)?.checkpoint;
        let planned = std::sync::Arc::new(PlannedLayout {
            len,
            frames,
            windows,
            images: all_images,
            images_by_hash,
            working_set,
            checkpoint,
        });
        if !has_windows {
            snapshot.keep_planned_layout(name, merge_gaps, planned.clone());
        }
        Ok(planned)
    }
}

/// A memory of a snapshot resolved into a layout (see
/// [`LinearSpace::restore_with`]), kept with the snapshot.
#[derive(Debug)]
pub(crate) struct PlannedLayout {
    /// The memory's length in bytes.
    len: u64,
    /// Every run's frame (windows' frames made per restore).
    frames: Vec<(PageRange, Frame)>,
    /// For each run, the name of the buffer a window shows.
    windows: Vec<Option<String>>,
    /// Every image the frames name (merged images included).
    images: Vec<Image>,
    /// The images clean pages come from, by content hash.
    images_by_hash: Vec<(Digest, Image)>,
    /// The memory's recorded working set.
    working_set: Vec<PageRange>,
    /// The checkpoint token the memory was captured at.
    checkpoint: u64,
}

impl SnapshotWriter {
    /// Copies every memory, global and working set of `snapshot` (its
    /// attached parents included) into this writer with no `Parent` pages:
    /// the flattened chain, which restores to the same memories without
    /// the parents. Each memory's working set is the one
    /// [`Snapshot::working_set`] gives (a parent's, where the snapshot
    /// records none), and is packed as
    /// [`SnapshotWriter::capture_with_working_set`] packs it: its data
    /// pages first, contiguous, then the memory's other data pages. The
    /// writer must have no parent and nothing captured.
    pub fn add_flattened(&mut self, snapshot: &Snapshot) -> Result<()> {
        self.add_flattened_with_working_sets(snapshot, &[])
    }

    /// [`SnapshotWriter::add_flattened`], with the working set of each
    /// memory named in `working_sets` replaced by the ranges given with it
    /// (any order; e.g. what [`LinearSpace::touched_pages`] found after a
    /// restore of `snapshot` with [`Prefetch::Off`] and the first calls),
    /// and packed: the way to add a working set to a snapshot already
    /// written. Refused, before anything is written, if a name is not a
    /// memory of the snapshot ([`Error::NoSuchMemory`]) or a range reaches
    /// past its pages ([`Error::OutOfBounds`]).
    pub fn add_flattened_with_working_sets(
        &mut self,
        snapshot: &Snapshot,
        working_sets: &[(&str, &[PageRange])],
    ) -> Result<()> {
        snapshot.check_chain()?;
        let page = crate::host_page_size() as u64;
        for &(name, _) in working_sets {
            snapshot.memory(name)?;
        }
        let mut sets: Vec<Vec<PageRange>> = Vec::with_capacity(snapshot.manifest().memories.len());
        for record in &snapshot.manifest().memories {
            let given: Vec<PageRange> = working_sets
                .iter()
                .filter(|(name, _)| *name == record.name)
                .flat_map(|(_, ranges)| ranges.iter().copied())
                .collect();
            let set = if working_sets.iter().any(|(name, _)| *name == record.name) {
                self.checked_working_set(&given, record.len.div_ceil(page))?
            } else {
                snapshot.working_set(&record.name)?
            };
            sets.push(set);
        }
        for (record, set) in snapshot.manifest().memories.iter().zip(&sets) {
            let (len, runs) = resolve(snapshot, &record.name)?;
            let mut pieces: Vec<RunRecord> = Vec::with_capacity(runs.len());
            let mut data = Vec::new();
            for run in runs {
                let source = match run.source {
                    Resolved::Unmapped => PageSource::Unmapped,
                    Resolved::Zero => PageSource::Zero,
                    Resolved::Image { hash, page } => PageSource::Image { image: hash, page },
                    Resolved::Shared { name, page } => PageSource::Shared { buffer: name, page },
                    Resolved::Data { snapshot: from, page } => {
                        data.push((run.pages, run.prot, from, page));
                        continue;
                    }
                };
                pieces.push(RunRecord { pages: run.pages, prot: run.prot, source });
            }
            // The working set's data pages first (the packing), then the rest.
            for in_working_set in [true, false] {
                for &(pages, prot, from, first) in &data {
                    for (part, inside) in split(pages, set) {
                        if inside == in_working_set {
                            let page = self.copy_data_pages(from, first + (part.start - pages.start), part.len())?;
                            pieces.push(RunRecord { pages: part, prot, source: PageSource::Data { page } });
                        }
                    }
                }
            }
            self.add_memory_record(record.name.clone(), len, record.checkpoint, in_page_order(pieces))?;
            self.record_working_set(&record.name, set)?;
        }
        for global in &snapshot.manifest().globals {
            self.add_global(&global.name, global.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::buffer::SharedBuffer;
    use crate::frame::Protection;
    use crate::image::Image;
    use crate::snapshot::{PageSource, SnapshotWriter};
    use crate::space::{LinearSpace, SpaceConfig};

    fn space(pages: u64) -> LinearSpace {
        let p = crate::host_page_size() as u64;
        LinearSpace::new(SpaceConfig { capacity: pages * p, guard: p, initial_len: pages * p }).unwrap()
    }

    fn no_names(_: &SharedBuffer) -> Option<String> {
        None
    }

    /// Found by the `snapshot_file` fuzz target: restoring into a memory
    /// that already showed the snapshot's image, on pages an earlier run of
    /// the layout replaces (or past the restored size), let go of the image
    /// before the run that names it, which then failed with
    /// `UnknownBacking`, the memory half laid out.
    #[test]
    fn a_restore_keeps_an_image_the_memory_showed_elsewhere() {
        let p = crate::host_page_size() as u64;
        let bytes: Vec<u8> = (0..2 * p).map(|i| (i / p + 1) as u8).collect();
        let image = Image::from_bytes(&bytes).unwrap();
        // The snapshot: zero pages, then image page 1 at page 3.
        let mut source = space(4);
        source.map_image(3 * p, &image, p, p, Protection::Read).unwrap();
        let mut w = SnapshotWriter::in_memory().unwrap();
        w.capture("0", &mut source, &no_names).unwrap();
        let snapshot = w.finish_in_memory().unwrap();
        let runs = &snapshot.memory("0").unwrap().runs;
        assert!(matches!(runs.last().unwrap().source, PageSource::Image { page: 1, .. }), "{runs:?}");

        // The image shown only on page 1, which the zero run [0, 3) replaces
        // first; and only on page 5, past the restored size.
        for at in [1, 5] {
            let mut target = space(8);
            target.map_image(at * p, &image, 0, p, Protection::ReadWrite).unwrap();
            target.restore(&snapshot, "0", &mut vec![image.clone()]).unwrap();
            target.validate().unwrap();
            assert_eq!(target.len(), 4 * p);
            let mut page = vec![0u8; p as usize];
            target.read(3 * p, &mut page).unwrap();
            assert!(page.iter().all(|&b| b == 2), "image page 1 at page 3");
            target.read(p, &mut page).unwrap();
            assert!(page.iter().all(|&b| b == 0), "a zero page at page 1");
        }
    }
}
