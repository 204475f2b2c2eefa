//! Snapshots of memories: checkpoints, capture (full, incremental, all
//! pages), restore (lazy, chains, flattened), files written atomically,
//! every kind of bad input refused with its own error, and working sets
//! (recorded, packed, prefetched: page faults counted).
//!
//! (At about 820 lines this file is over the project's ~600-line rule: the
//! working-set tests reuse its helpers. The split, when it grows: the
//! helpers to `tests/common/`, the working-set tests to a file of their
//! own.)

mod common;

use common::{host, page, shared_space};
use framemap::snapshot::{Durability, GlobalValue, PageSource, Resolver, RestoreOptions, Snapshot, SnapshotWriter};
use framemap::{
    BufferGrant, Error, FrameKind, Image, LinearSpace, PageRange, Prefetch, PrefetchReport, Protection, ResetPolicy,
    SharedBuffer, SnapshotDamage, SpaceConfig,
};
use std::sync::{Arc, Mutex};

fn space(pages: u64) -> LinearSpace {
    let p = page();
    LinearSpace::new(SpaceConfig { capacity: pages * p, guard: 4 * p, initial_len: pages * p }).unwrap()
}

fn no_names(_: &SharedBuffer) -> Option<String> {
    None
}

/// Whether the kernel tracks writes (exact checkpoints): required where
/// CI says the machine has it.
fn tracks_writes() -> bool {
    framemap::testing::feature_present(
        framemap::write_tracking_supported(),
        "userfaultfd write-protection",
        "FRAMEMAP_REQUIRE_UFFD_WP",
    )
}

/// A fresh directory for this test's files.
fn temp_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("framemap-snapshot-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every byte of every accessible page, with `None` for pages that cannot
/// be read (unmapped, or protected against reads: compared by table).
fn contents(s: &LinearSpace) -> Vec<Option<Vec<u8>>> {
    let p = page();
    (0..s.accessible_pages().end)
        .map(|i| {
            let (_, frame) = s.table().get(i).unwrap();
            frame.prot().readable().then(|| {
                let mut buf = vec![0; p.min(s.len() - i * p) as usize];
                s.read(i * p, &mut buf).unwrap();
                buf
            })
        })
        .collect()
}

/// What a snapshot must keep of each page's frame: unmapped or not, its
/// protection, and for windows the buffer and page (Zero and Image frames
/// may be restored as either, with the same bytes).
/// A page's shape: unmapped, its protection, and (buffer, page) for a window.
type Shape = (bool, Protection, Option<(u64, u64)>);

fn shape(s: &LinearSpace) -> Vec<Shape> {
    (0..s.accessible_pages().end)
        .map(|i| {
            let (_, f) = s.table().get(i).unwrap();
            let shared = match f.kind() {
                FrameKind::Shared { buffer, page } => Some((buffer.0, page)),
                _ => None,
            };
            (matches!(f.kind(), FrameKind::Unmapped), f.prot(), shared)
        })
        .collect()
}

fn assert_same_memory(a: &LinearSpace, b: &LinearSpace) {
    assert_eq!(a.len(), b.len());
    assert_eq!(shape(a), shape(b), "frames: unmapped runs, protections, windows");
    assert_eq!(contents(a), contents(b), "bytes");
    b.validate().unwrap();
}

/// A memory with every kind of run: written zero pages, an image with
/// clean and written pages, a read-only run, a hole, a written page then
/// made inaccessible, and an odd length.
fn varied(image: &Image) -> LinearSpace {
    let p = page();
    let mut s = LinearSpace::new(SpaceConfig { capacity: 64 * p, guard: 4 * p, initial_len: 32 * p }).unwrap();
    s.grow_to(40 * p - 5).unwrap();
    s.write(3, b"zero page written").unwrap();
    s.map_image(8 * p, image, 0, 8 * p, Protection::ReadWrite).unwrap();
    s.write(9 * p + 7, b"image page written").unwrap();
    s.protect(12 * p, 2 * p, Protection::Read).unwrap();
    s.unmap(20 * p, 2 * p).unwrap();
    s.write(25 * p, b"then hidden").unwrap();
    s.protect(25 * p, p, Protection::None).unwrap();
    s
}

fn image() -> Image {
    let p = page() as usize;
    let mut bytes = vec![0u8; 8 * p];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i / p + 1) as u8 ^ (i as u8);
    }
    Image::from_bytes(&bytes).unwrap()
}

fn restored(snapshot: &Snapshot, name: &str, resolver: &mut dyn Resolver, pages: u64) -> LinearSpace {
    let mut s = space(pages);
    s.restore(snapshot, name, resolver).unwrap();
    s
}

#[test]
fn a_full_snapshot_restores_every_byte_and_frame() {
    let image = image();
    let mut m = varied(&image);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    w.add_global("g", GlobalValue::I64(-7)).unwrap();
    let snap = w.finish_in_memory().unwrap();
    snap.verify().unwrap();
    // Stored by content: the written zero page, the written image page,
    // the hidden page; the clean image pages by reference.
    assert_eq!(snap.data_pages(), 3);
    let runs = &snap.memory("0").unwrap().runs;
    let hash = image.content_hash().unwrap();
    assert!(runs.iter().any(|r| matches!(r.source, PageSource::Image { image, .. } if image == hash)));
    assert_eq!(snap.manifest().globals[0].value, GlobalValue::I64(-7));

    let r = restored(&snap, "0", &mut vec![image.clone()], 64);
    assert_same_memory(&m, &r);
    // The hidden page's bytes came along too.
    let mut r = r;
    r.protect(25 * page(), page(), Protection::Read).unwrap();
    let mut buf = [0u8; 11];
    r.read(25 * page(), &mut buf).unwrap();
    assert_eq!(&buf, b"then hidden");
}

#[test]
fn a_restored_memory_resets_to_the_snapshot_and_is_private() {
    let image = image();
    let mut m = varied(&image);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    let snap = w.finish_in_memory().unwrap();
    let mut a = restored(&snap, "0", &mut vec![image.clone()], 64);
    let b = restored(&snap, "0", &mut vec![image.clone()], 64);
    a.write(3, b"changed").unwrap();
    assert_same_memory(&m, &b);
    a.restore_dirty(ResetPolicy::default()).unwrap();
    assert_same_memory(&m, &a);
}

#[test]
fn an_incremental_snapshot_stores_only_what_changed_and_restores_the_chain() {
    let tracked = tracks_writes();
    let p = page();
    let image = image();
    let mut m = varied(&image);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    let parent = w.finish_in_memory().unwrap();

    m.write(30 * p, b"new").unwrap();
    m.write(3, b"ZERO").unwrap();
    m.write(10 * p, b"image again").unwrap();
    m.map_zero(9 * p, p, Protection::ReadWrite).unwrap(); // its written bytes are gone
    m.grow_to(48 * p).unwrap();
    m.write(45 * p, b"grown").unwrap();
    let mut w = SnapshotWriter::in_memory().unwrap().incremental_to(&parent);
    w.capture("0", &mut m, &no_names).unwrap();
    let child = w.finish_in_memory().unwrap().with_parent(parent.clone()).unwrap();
    assert_eq!(child.parent_id(), Some(parent.id()));
    if tracked {
        assert_eq!(child.data_pages(), 4, "the pages written since the parent, no more");
    }
    let r = restored(&child, "0", &mut vec![image.clone()], 64);
    assert_same_memory(&m, &r);
}

#[test]
fn a_chain_needs_its_parent_and_flattens_to_the_same_memory() {
    let dir = temp_dir("chain");
    let p = page();
    let image = image();
    let mut m = varied(&image);
    let mut w = SnapshotWriter::to_path(dir.join("parent"), Durability::Synced).unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    w.finish().unwrap();
    let parent = Snapshot::open(dir.join("parent")).unwrap();
    m.write(5 * p, b"second").unwrap();
    let mut w = SnapshotWriter::to_path(dir.join("child"), Durability::Synced).unwrap().incremental_to(&parent);
    w.capture("0", &mut m, &no_names).unwrap();
    let info = w.finish().unwrap();
    let child = Snapshot::open(dir.join("child")).unwrap();
    assert_eq!(child.id(), info.id);

    let mut r = space(64);
    let err = r.restore(&child, "0", &mut vec![image.clone()]).unwrap_err();
    assert!(matches!(err, Error::MissingParent { parent, wrong: false, .. } if parent == parent_id(&child)), "{err}");
    let stranger = {
        let mut w = SnapshotWriter::in_memory().unwrap();
        w.capture("0", &mut space(4), &no_names).unwrap();
        w.finish_in_memory().unwrap()
    };
    assert!(matches!(child.with_parent(stranger), Err(Error::MissingParent { wrong: true, .. })));

    let chain = child.with_parent(parent).unwrap();
    let r = restored(&chain, "0", &mut vec![image.clone()], 64);
    assert_same_memory(&m, &r);

    let mut w = SnapshotWriter::in_memory().unwrap();
    w.add_flattened(&chain).unwrap();
    let flat = w.finish_in_memory().unwrap();
    assert_eq!(flat.parent_id(), None);
    let f = restored(&flat, "0", &mut vec![image.clone()], 64);
    assert_same_memory(&m, &f);
    std::fs::remove_dir_all(dir).unwrap();
}

fn parent_id(s: &Snapshot) -> framemap::snapshot::Digest {
    s.parent_id().unwrap()
}

#[test]
fn an_incremental_capture_must_continue_from_its_parent() {
    let mut a = space(8);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("a", &mut a, &no_names).unwrap();
    let parent = w.finish_in_memory().unwrap();
    // Another memory, a name the parent lacks, and the same memory after a
    // later checkpoint: each refused, with the memory unchanged.
    let mut b = space(8);
    let mut w = SnapshotWriter::in_memory().unwrap().incremental_to(&parent);
    assert!(matches!(w.capture("a", &mut b, &no_names), Err(Error::NotFromParent { .. })));
    assert!(matches!(w.capture("b", &mut a, &no_names), Err(Error::NotFromParent { .. })));
    w.capture("a", &mut a, &no_names).unwrap();
    assert!(matches!(w.capture("a", &mut a, &no_names), Err(Error::BadName { .. })));
    a.checkpoint().unwrap();
    let mut w = SnapshotWriter::in_memory().unwrap().incremental_to(&parent);
    assert!(matches!(w.capture("a", &mut a, &no_names), Err(Error::NotFromParent { .. })));
}

#[test]
fn checkpoints_report_what_changed_and_never_hide_a_page_from_a_reset() {
    let tracked = tracks_writes();
    let p = page();
    let mut s = space(32);
    s.write(0, b"before").unwrap();
    let c = s.checkpoint().unwrap();
    assert_eq!(s.changed_since(&c).unwrap(), if tracked { vec![] } else { vec![PageRange::new(0, 1)] });
    s.write(5 * p, b"after").unwrap();
    s.write(6 * p, b"after").unwrap();
    s.discard(20 * p, p).unwrap();
    let changed = s.changed_since(&c).unwrap();
    if tracked {
        assert_eq!(changed, vec![PageRange::new(5, 7), PageRange::new(20, 21)]);
    }
    for page in [5, 6, 20] {
        assert!(changed.iter().any(|r| r.contains(page)), "page {page} changed: {changed:?}");
    }
    let later = s.checkpoint().unwrap();
    assert!(matches!(s.changed_since(&c), Err(Error::StaleCheckpoint { .. })));
    assert!(s.changed_since(&later).is_ok());
    // The checkpoints protected pages 0, 5 and 6: a reset must restore them.
    s.restore_dirty(ResetPolicy::default()).unwrap();
    let mut buf = [0u8; 6];
    for page in [0, 5, 6] {
        s.read(page * p, &mut buf).unwrap();
        assert_eq!(buf, [0; 6], "page {page} after the reset");
    }
    assert!(matches!(s.changed_since(&later), Err(Error::StaleCheckpoint { .. })));
    assert!(matches!(space(4).changed_since(&later), Err(Error::StaleCheckpoint { .. })));
}

#[test]
fn capture_time_follows_the_dirty_pages_not_the_memory_size() {
    // The functional half of the bench's target: a 1 GiB memory with 7
    // pages written since the parent stores 7 pages and a few runs.
    if !tracks_writes() {
        return;
    }
    let p = page();
    let pages = (1u64 << 30) / p;
    let mut m = space(pages);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    let parent = w.finish_in_memory().unwrap();
    for i in 0..7 {
        m.write(i * 9973 * p, b"dirty").unwrap();
    }
    let mut w = SnapshotWriter::in_memory().unwrap().incremental_to(&parent);
    w.capture("0", &mut m, &no_names).unwrap();
    let child = w.finish_in_memory().unwrap();
    assert_eq!(child.data_pages(), 7);
    assert!(child.memory("0").unwrap().runs.len() <= 15);
    assert!(child.file_len() <= 9 * p, "{} bytes", child.file_len());
}

#[test]
fn windows_are_captured_by_name_and_rebound_by_the_resolver() {
    struct Buffers(Vec<(String, BufferGrant)>);
    impl Resolver for Buffers {
        fn buffer(&mut self, name: &str) -> Option<BufferGrant> {
            self.0.iter().find(|(n, _)| n == name).map(|(_, g)| g.clone())
        }
    }
    let p = page();
    let buffer = SharedBuffer::new(4 * p).unwrap();
    buffer.write(0, b"host bytes").unwrap();
    let space_a: Arc<Mutex<LinearSpace>> = shared_space(16);
    let grant = buffer.grant(host(&space_a)).unwrap();
    let mut a = space_a.lock().unwrap();
    a.map_buffer(2 * p, &grant, p, 2 * p, Protection::Read).unwrap();
    let mut w = SnapshotWriter::in_memory().unwrap();
    assert!(matches!(w.capture("0", &mut a, &no_names), Err(Error::UnnamedBuffer { .. })));
    let id = buffer.id();
    let names = move |b: &SharedBuffer| (b.id() == id).then(|| "ring".to_string());
    w.capture("0", &mut a, &names).unwrap();
    let snap = w.finish_in_memory().unwrap();
    assert_eq!(snap.data_pages(), 0, "a window is never stored by content");

    let space_b = shared_space(16);
    let mut b = space_b.lock().unwrap();
    assert!(matches!(b.restore(&snap, "0", &mut ()), Err(Error::MissingBuffer { .. })));
    let foreign = Buffers(vec![("ring".into(), grant.clone())]);
    assert!(matches!(b.restore(&snap, "0", &mut { foreign }), Err(Error::ForeignGrant { .. })));
    let mut ok = Buffers(vec![("ring".into(), buffer.grant(host(&space_b)).unwrap())]);
    b.restore(&snap, "0", &mut ok).unwrap();
    assert_same_memory(&a, &b);
    buffer.write(p, b"later").unwrap();
    let mut got = [0u8; 5];
    b.read(2 * p, &mut got).unwrap();
    assert_eq!(&got, b"later", "the window is the buffer, not a copy");
}

#[test]
fn bad_files_are_refused_each_with_its_error() {
    let dir = temp_dir("bad");
    let image = image();
    let mut m = varied(&image);
    let mut w = SnapshotWriter::to_path(dir.join("good"), Durability::Unsynced).unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    w.finish().unwrap();
    let good = std::fs::read(dir.join("good")).unwrap();
    let damaged = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).unwrap();
        match Snapshot::open(dir.join(name)) {
            Err(Error::SnapshotInvalid { kind, .. }) => kind,
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(damaged("text", b"hello, this is not a snapshot"), SnapshotDamage::NotASnapshot);
    assert_eq!(damaged("empty", b""), SnapshotDamage::NotASnapshot);
    let mut b = good.clone();
    b[20] ^= 1;
    assert_eq!(damaged("header", &b), SnapshotDamage::Checksum);
    let mut b = good.clone();
    *b.last_mut().unwrap() ^= 1;
    assert_eq!(damaged("manifest", &b), SnapshotDamage::Checksum);
    assert_eq!(damaged("truncated", &good[..good.len() - 1]), SnapshotDamage::Truncated);
    let mut b = good.clone();
    b.push(0);
    assert_eq!(damaged("longer", &b), SnapshotDamage::Truncated);
    let mut b = good.clone();
    b[8] = 9; // version 9, and the header's checksum no longer matches
    assert_eq!(damaged("version", &b), SnapshotDamage::Version);

    // A data page changed: opening checks metadata only; verify() finds it.
    let mut b = good.clone();
    b[page() as usize + 1] ^= 1;
    std::fs::write(dir.join("data"), &b).unwrap();
    let snap = Snapshot::open(dir.join("data")).unwrap();
    assert!(matches!(snap.verify(), Err(Error::SnapshotInvalid { kind: SnapshotDamage::Checksum, .. })));

    // Missing and wrong images, a missing memory, a memory too small.
    let snap = Snapshot::open(dir.join("good")).unwrap();
    let mut r = space(64);
    assert!(matches!(r.restore(&snap, "0", &mut ()), Err(Error::MissingImage { wrong: false, .. })));
    let other = Image::from_bytes(b"other").unwrap();
    struct Liar(Image);
    impl Resolver for Liar {
        fn image(&mut self, _: &framemap::snapshot::Digest) -> Option<Image> {
            Some(self.0.clone())
        }
    }
    assert!(matches!(r.restore(&snap, "0", &mut Liar(other)), Err(Error::MissingImage { wrong: true, .. })));
    assert!(matches!(r.restore(&snap, "1", &mut ()), Err(Error::NoSuchMemory { .. })));
    assert!(matches!(space(8).restore(&snap, "0", &mut vec![image.clone()]), Err(Error::CapacityExceeded { .. })));
    r.validate().unwrap();
    assert_eq!(r.len(), 64 * page(), "a refused restore changed nothing");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn files_are_replaced_atomically_and_unfinished_ones_leave_nothing() {
    let dir = temp_dir("atomic");
    let target = dir.join("snap");
    std::fs::write(&target, b"old").unwrap();
    let mut m = space(4);
    m.write(0, b"x").unwrap();
    let mut w = SnapshotWriter::to_path(&target, Durability::Synced).unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"old", "untouched until finished");
    drop(w);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "the temporary file is gone");
    let mut w = SnapshotWriter::to_path(&target, Durability::Synced).unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    let info = w.finish().unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    assert_eq!(Snapshot::open(&target).unwrap().id(), info.id);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), info.file_len);
    // The lazy path maps the file itself.
    // SAFETY: nothing writes or truncates the file while the snapshot lives.
    let mapped = unsafe { Snapshot::map_file(&target) }.unwrap();
    let r = restored(&mapped, "0", &mut (), 4);
    assert_same_memory(&m, &r);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_self_contained_snapshot_needs_no_image() {
    let image = image();
    let mut m = varied(&image);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture_all_pages("0", &mut m, &no_names).unwrap();
    let snap = w.finish_in_memory().unwrap();
    let accessible: u64 = m
        .table()
        .runs_in(m.accessible_pages())
        .filter(|(_, f)| matches!(f.kind(), FrameKind::Zero | FrameKind::Image { .. }))
        .map(|(r, _)| r.len())
        .sum();
    assert_eq!(snap.data_pages(), accessible);
    let r = restored(&snap, "0", &mut (), 64);
    assert_same_memory(&m, &r);
}

/// A small deterministic generator (xorshift), so every run replays the
/// same sequences.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The round-trip properties over random operation sequences: after every
/// few operations an incremental snapshot of the memory, restored with its
/// whole chain, equals the memory byte for byte and frame for frame, and so
/// does the flattened chain; operations the space refuses are skipped.
#[test]
fn random_sequences_round_trip_through_incremental_chains() {
    let p = page();
    let image = image();
    let mut steps = 0;
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut m = LinearSpace::new(SpaceConfig { capacity: 48 * p, guard: 4 * p, initial_len: 16 * p }).unwrap();
        let mut chain: Option<Snapshot> = None;
        for _ in 0..8 {
            for _ in 0..6 {
                let pages = m.accessible_pages().end;
                let at = rng.below(pages);
                let len = 1 + rng.below((pages - at).min(4));
                let prot = [Protection::None, Protection::Read, Protection::ReadWrite][rng.below(3) as usize];
                let _ = match rng.below(8) {
                    0..=2 => {
                        let byte = [rng.next() as u8 | 1; 3];
                        m.write(at * p + rng.below(p - 3), &byte)
                    }
                    3 => m.map_zero(at * p, len * p, prot),
                    4 => {
                        let from = rng.below(8 - len.min(8));
                        m.map_image(at * p, &image, from * p, len.min(8) * p, prot)
                    }
                    5 => m.protect(at * p, len * p, prot),
                    6 => m.unmap(at * p, len * p).and_then(|()| m.discard(at * p, p)),
                    _ => m.grow_to((m.len() + rng.below(3) * p + rng.below(p)).min(48 * p)),
                };
                steps += 1;
            }
            let mut w = SnapshotWriter::in_memory().unwrap();
            if let Some(parent) = &chain {
                w = w.incremental_to(parent);
            }
            w.capture("0", &mut m, &no_names).unwrap();
            let mut next = w.finish_in_memory().unwrap();
            if let Some(parent) = chain.take() {
                next = next.with_parent(parent).unwrap();
            }
            let r = restored(&next, "0", &mut vec![image.clone()], 48);
            assert_same_memory(&m, &r);
            let mut flat = SnapshotWriter::in_memory().unwrap();
            flat.add_flattened(&next).unwrap();
            let flat = flat.finish_in_memory().unwrap();
            let f = restored(&flat, "0", &mut vec![image.clone()], 48);
            assert_same_memory(&m, &f);
            chain = Some(next);
        }
    }
    println!("{steps} random operations, each round checked through its chain and flattened");
}

/// Restores memory "0" of `snapshot` into a fresh space of `pages` pages,
/// prefetching its working set as `prefetch` says.
fn restored_with(
    snapshot: &Snapshot,
    resolver: &mut dyn Resolver,
    pages: u64,
    prefetch: Prefetch,
) -> (LinearSpace, PrefetchReport) {
    let mut s = space(pages);
    let report =
        s.restore_with(snapshot, "0", resolver, RestoreOptions { prefetch, ..RestoreOptions::default() }).unwrap();
    (s, report)
}

/// Every page of `ranges`, in order.
fn pages_of(ranges: &[PageRange]) -> Vec<u64> {
    ranges.iter().flat_map(|r| r.start..r.end).collect()
}

/// `(memory page, data page)` for every page of memory `name` stored by
/// content, in memory page order.
fn data_pages(snapshot: &Snapshot, name: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for run in &snapshot.memory(name).unwrap().runs {
        if let PageSource::Data { page } = run.source {
            out.extend((run.pages.start..run.pages.end).map(|p| (p, page + p - run.pages.start)));
        }
    }
    out
}

/// Checks the packing: the data pages of the memory pages in `working_set`
/// are the first ones of the data section, contiguous and in page order,
/// and the other data pages follow them, in page order too.
fn assert_packed(snapshot: &Snapshot, name: &str, working_set: &[PageRange]) {
    let data = data_pages(snapshot, name);
    let (inside, outside): (Vec<_>, Vec<_>) =
        data.iter().partition(|(page, _)| working_set.iter().any(|r| r.contains(*page)));
    let inside: Vec<u64> = inside.iter().map(|&(_, d)| d).collect();
    let outside: Vec<u64> = outside.iter().map(|&(_, d)| d).collect();
    let k = inside.len() as u64;
    assert_eq!(inside, (0..k).collect::<Vec<_>>(), "working-set data pages first, contiguous, in page order");
    assert_eq!(outside, (k..k + outside.len() as u64).collect::<Vec<_>>(), "then the others, in page order");
    assert_eq!(snapshot.data_pages(), data.len() as u64);
}

#[test]
fn touched_pages_are_the_pages_used_since_a_restore() {
    let p = page();
    let image = image();
    let mut m = varied(&image);
    for i in 30..34 {
        m.write(i * p, b"data").unwrap();
    }
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    let snap = w.finish_in_memory().unwrap();
    let (mut r, report) = restored_with(&snap, &mut vec![image.clone()], 64, Prefetch::Off);
    assert_eq!((report.pages, report.populated), (0, 0));
    assert_eq!(r.touched_pages().unwrap(), vec![], "no page has an entry right after a restore");

    // Read a data page (31), a clean image page (10) and a zero hole (36);
    // write a zero hole (5) and a data page (9).
    let mut buf = [0u8; 4];
    for at in [31, 10, 36] {
        r.read(at * p, &mut buf).unwrap();
    }
    r.write(5 * p, b"new").unwrap();
    r.write(9 * p, b"new").unwrap();
    let touched = pages_of(&r.touched_pages().unwrap());
    for at in [5, 9, 10, 31, 36] {
        assert!(touched.contains(&at), "page {at} was touched: {touched:?}");
    }
    // A read fault on a file page may also map its neighbours in the same
    // mapping (fault-around): data pages 30..34, image pages 10..12. No
    // other page: not the anonymous zero pages, not the inaccessible
    // page 25, not the unmapped 20..22.
    let neighbours = [11, 30, 32, 33];
    for at in &touched {
        assert!([5, 9, 10, 31, 36].contains(at) || neighbours.contains(at), "page {at} was not touched: {touched:?}");
    }
    let set = r.touched_pages().unwrap();
    assert!(set.windows(2).all(|w| w[0].end < w[1].start), "sorted, merged: {set:?}");
    // Asking changes nothing.
    assert_eq!(r.touched_pages().unwrap(), set);
    r.validate().unwrap();
}

#[test]
fn a_working_set_snapshot_packs_its_pages_and_restores_like_any_other() {
    let p = page();
    let image = image();
    let mut m = varied(&image);
    for i in 26..40 {
        m.write(i * p + 1, &[i as u8]).unwrap();
    }
    let mut plain = SnapshotWriter::in_memory().unwrap();
    plain.capture("0", &mut m, &no_names).unwrap();
    let plain = plain.finish_in_memory().unwrap();
    assert_eq!(plain.working_set("0").unwrap(), vec![], "a plain capture records no working set");
    // Any order, overlapping, touching, empty: normalised.
    let given = [PageRange::new(30, 36), PageRange::new(0, 2), PageRange::new(9, 11), PageRange::new(33, 34)];
    let given = [&given[..], &[PageRange::new(7, 7), PageRange::new(2, 3)]].concat();
    let ws = vec![PageRange::new(0, 3), PageRange::new(9, 11), PageRange::new(30, 36)];
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture_with_working_set("0", &mut m, &no_names, &given).unwrap();
    let snap = w.finish_in_memory().unwrap();
    snap.verify().unwrap();
    assert_eq!(snap.working_set("0").unwrap(), ws);
    // Stored: pages 0 and 9 and 30..36 of the working set (page 1 and 2
    // are zero holes, 10 a clean image page), then 25, 26..30 and 36..40.
    assert_eq!(snap.data_pages(), plain.data_pages());
    assert_eq!(data_pages(&snap, "0").len(), 8 + 1 + 4 + 4);
    assert_packed(&snap, "0", &ws);
    assert_eq!(data_pages(&snap, "0")[..3], [(0, 0), (9, 1), (25, 8)], "only data page numbers change");

    // Restored with or without the prefetch, or copying it: the same memory.
    for prefetch in [Prefetch::Off, Prefetch::Read, Prefetch::Write] {
        let (r, report) = restored_with(&snap, &mut vec![image.clone()], 64, prefetch);
        assert_same_memory(&m, &r);
        assert!(report.error.is_none(), "{prefetch:?}: {:?}", report.error);
        if prefetch == Prefetch::Off {
            assert_eq!(report.pages, 0);
            continue;
        }
        // Every page of the working set is a readable Zero or Image page.
        assert_eq!(report.pages, 11, "{prefetch:?}");
        assert_eq!(report.populated + report.advised, 11, "{prefetch:?}");
        if report.complete() {
            let touched = pages_of(&r.touched_pages().unwrap());
            assert!(pages_of(&ws).iter().all(|p| touched.contains(p)), "{prefetch:?}: prefetched pages are populated");
        }
    }
    let r = restored(&snap, "0", &mut vec![image.clone()], 64);
    assert_same_memory(&m, &r);
    // A prefetched memory resets to the snapshot's state like any other.
    let (mut r, _) = restored_with(&snap, &mut vec![image.clone()], 64, Prefetch::Write);
    r.write(31 * p, b"changed").unwrap();
    r.restore_dirty(ResetPolicy::default()).unwrap();
    assert_same_memory(&m, &r);

    // Flattening keeps the working set, and packs it.
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.add_flattened(&snap).unwrap();
    let flat = w.finish_in_memory().unwrap();
    assert_eq!(flat.working_set("0").unwrap(), ws);
    assert_packed(&flat, "0", &ws);
    assert_same_memory(&m, &restored(&flat, "0", &mut vec![image.clone()], 64));
}

#[test]
fn a_recorded_working_set_is_added_by_flattening_and_inherited_by_increments() {
    let p = page();
    let image = image();
    let mut m = varied(&image);
    for i in 26..40 {
        m.write(i * p, &[i as u8]).unwrap();
    }
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    let base = w.finish_in_memory().unwrap();

    // Record: restore without prefetching, run "the first calls", ask.
    let (mut r, _) = restored_with(&base, &mut vec![image.clone()], 64, Prefetch::Off);
    let mut buf = [0u8; 8];
    for at in [35, 28, 2] {
        r.read(at * p, &mut buf).unwrap();
    }
    r.write(37 * p, b"first").unwrap();
    let touched = r.touched_pages().unwrap();

    // Refused before anything is written: an unknown memory, a range past it.
    let mut w = SnapshotWriter::in_memory().unwrap();
    let err = w.add_flattened_with_working_sets(&base, &[("1", &touched)]).unwrap_err();
    assert!(matches!(err, Error::NoSuchMemory { .. }), "{err}");
    let err = w.add_flattened_with_working_sets(&base, &[("0", &[PageRange::new(39, 41)])]).unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { .. }), "{err}");
    let before = m.latest_checkpoint();
    let err = w.capture_with_working_set("0", &mut m, &no_names, &[PageRange::new(0, 41)]).unwrap_err();
    assert!(matches!(err, Error::OutOfBounds { .. }), "{err}");
    assert_eq!(m.latest_checkpoint(), before, "a refused capture leaves the checkpoint where it was");

    // Add it to the snapshot already written: flattened and packed.
    w.add_flattened_with_working_sets(&base, &[("0", &touched)]).unwrap();
    let packed = w.finish_in_memory().unwrap();
    assert_eq!(packed.working_set("0").unwrap(), touched);
    assert_packed(&packed, "0", &touched);
    assert_eq!(packed.data_pages(), base.data_pages());
    assert_same_memory(&m, &restored(&packed, "0", &mut vec![image.clone()], 64));

    // An increment captured plainly uses its parent's working set, and so
    // does the chain flattened.
    m.write(27 * p, b"later").unwrap();
    let mut w = SnapshotWriter::in_memory().unwrap().incremental_to(&packed);
    w.capture("0", &mut m, &no_names).unwrap();
    let child = w.finish_in_memory().unwrap();
    assert_eq!(child.working_set("0").unwrap(), vec![], "without its parent attached, none");
    let chain = child.with_parent(packed.clone()).unwrap();
    assert_eq!(chain.working_set("0").unwrap(), touched);
    let (r, report) = restored_with(&chain, &mut vec![image.clone()], 64, Prefetch::Read);
    assert_same_memory(&m, &r);
    assert_eq!(report.pages, pages_of(&touched).len() as u64);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.add_flattened(&chain).unwrap();
    let flat = w.finish_in_memory().unwrap();
    assert_eq!(flat.working_set("0").unwrap(), touched);
    assert_packed(&flat, "0", &touched);
    assert_same_memory(&m, &restored(&flat, "0", &mut vec![image.clone()], 64));
}

/// Minor page faults this thread has taken so far.
fn minor_faults() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into the buffer it is given,
    // which is one, and aligned.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD)");
    // SAFETY: zeroed() made every byte valid, and getrusage filled it in.
    unsafe { usage.assume_init() }.ru_minflt as u64
}

/// Restores memory "0" of `snapshot` with `prefetch`, then reads (or
/// writes) one byte of every page of `working_set`: the minor faults of
/// this thread during the touches, and the restore's report.
fn faults_of_first_touch(
    snapshot: &Snapshot,
    working_set: &[PageRange],
    prefetch: Prefetch,
    write: bool,
) -> (u64, PrefetchReport) {
    let p = page();
    let (mut s, report) = restored_with(snapshot, &mut (), 2048, prefetch);
    let mut byte = [0u8; 1];
    let before = minor_faults();
    for page in pages_of(working_set) {
        if write {
            s.write(page * p, &[0x5a]).unwrap();
        } else {
            s.read(page * p, &mut byte).unwrap();
        }
    }
    let faults = minor_faults() - before;
    std::hint::black_box(byte);
    (faults, report)
}

/// The target, by count: the first touch of a working set of 768
/// pages after a restore that prefetched it takes at least 90% fewer page
/// faults than after one that did not. The set mixes what a first call
/// touches: 256 data pages scattered one in two (each its own mapping),
/// 256 never-written zero pages, and 256 contiguous data pages (where the
/// kernel's fault-around already maps 16 pages per fault). Counted over the
/// touches only: the kernel counts a prefetch's page-ins as faults of the
/// thread that restores, taken in one `madvise` per stretch rather than
/// one trap per page during the call.
#[test]
fn prefetching_the_working_set_spares_at_least_90_percent_of_first_touch_faults() {
    let p = page();
    let mut m = space(2048);
    for i in (0..512).step_by(2).chain(1024..2048) {
        m.write(i * p, &(i as u32 | 1).to_le_bytes()).unwrap();
    }
    let mut ws: Vec<PageRange> = (0..512).step_by(2).map(|i| PageRange::new(i, i + 1)).collect();
    ws.extend([PageRange::new(512, 768), PageRange::new(1024, 1280)]);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture_with_working_set("0", &mut m, &no_names, &ws).unwrap();
    let snap = w.finish_in_memory().unwrap();
    assert_packed(&snap, "0", &ws);
    let ws = snap.working_set("0").unwrap();
    assert_eq!(pages_of(&ws).len(), 768);

    // Warm up: the code and data the touches use fault in once here.
    let (_, report) = faults_of_first_touch(&snap, &ws, Prefetch::Read, false);
    if !framemap::testing::feature_present(
        report.advised == 0,
        "MADV_POPULATE_READ (Linux 5.14+)",
        "FRAMEMAP_REQUIRE_POPULATE_READ",
    ) {
        return;
    }
    faults_of_first_touch(&snap, &ws, Prefetch::Off, true);

    let (off_read, _) = faults_of_first_touch(&snap, &ws, Prefetch::Off, false);
    let (read_read, report) = faults_of_first_touch(&snap, &ws, Prefetch::Read, false);
    assert!(report.complete() && report.error.is_none(), "{report:?}");
    assert_eq!(report.populated, 768);
    let (off_write, _) = faults_of_first_touch(&snap, &ws, Prefetch::Off, true);
    let (read_write, _) = faults_of_first_touch(&snap, &ws, Prefetch::Read, true);
    let (write_write, report) = faults_of_first_touch(&snap, &ws, Prefetch::Write, true);
    assert!(report.complete() && report.error.is_none(), "{report:?}");
    println!(
        "first touch of a 768-page working set, minor faults: read-touch {off_read} without prefetch, \
         {read_read} with Prefetch::Read; write-touch {off_write} without, {read_write} with Prefetch::Read \
         (a write still copies), {write_write} with Prefetch::Write"
    );
    // Without prefetch: one fault per scattered data page and per zero page
    // at least (the contiguous data pages take fewer, by fault-around).
    assert!(off_read >= 512, "{off_read} faults without prefetch");
    assert!(off_write >= 768, "{off_write} faults without prefetch");
    assert!(read_read * 10 <= off_read, "read-touch: {read_read} faults with prefetch, {off_read} without");
    assert!(write_write * 10 <= off_write, "write-touch: {write_write} faults with prefetch, {off_write} without");
}

/// A restored memory starts at the snapshot's checkpoint: an incremental
/// capture against that snapshot stores only what was written since the
/// restore, and a full capture stores the snapshot's pages by content (it
/// never names the snapshot file as an image).
#[test]
fn a_restored_memory_continues_the_chain_of_the_snapshot_it_came_from() {
    let tracked = tracks_writes();
    let p = page();
    let image = image();
    let mut m = varied(&image);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    let base = w.finish_in_memory().unwrap();

    let mut r = restored(&base, "0", &mut vec![image.clone()], 64);
    r.write(30 * p, b"after restore").unwrap();
    let mut w = SnapshotWriter::in_memory().unwrap().incremental_to(&base);
    w.capture("0", &mut r, &no_names).unwrap();
    let child = w.finish_in_memory().unwrap().with_parent(base.clone()).unwrap();
    if tracked {
        assert_eq!(child.data_pages(), 1, "only the page written since the restore");
    }
    assert_same_memory(&r, &restored(&child, "0", &mut vec![image.clone()], 64));

    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", &mut r, &no_names).unwrap();
    let full = w.finish_in_memory().unwrap();
    assert_eq!(full.parent_id(), None);
    assert_same_memory(&r, &restored(&full, "0", &mut vec![image.clone()], 64));
    assert!(full.data_pages() > base.data_pages());
}

/// A memory restored over one restored from the same snapshot, at other
/// offsets (a recycled slot that served another memory of the instance):
/// replacing the old frames of the snapshot's file must not let the file
/// go before the new frames naming it are mapped.
#[test]
fn restoring_over_another_memory_of_the_same_snapshot_keeps_the_file() {
    let p = page();
    let mut a = space(16);
    a.write(0, b"first memory").unwrap();
    let mut b = space(16);
    b.write(9 * p, b"second memory").unwrap();
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("a", &mut a, &no_names).unwrap();
    w.capture("b", &mut b, &no_names).unwrap();
    let snap = w.finish_in_memory().unwrap();
    let mut r = restored(&snap, "a", &mut (), 16);
    r.restore(&snap, "b", &mut ()).unwrap();
    assert_same_memory(&b, &r);
    r.restore(&snap, "a", &mut ()).unwrap();
    assert_same_memory(&a, &r);
}

/// A memory reset after a restore lays out again from the same snapshot
/// keeping its frames, with the snapshot's bytes (what a recycled slot
/// does).
#[test]
fn a_reset_memory_restores_again_keeping_its_frames() {
    use framemap::snapshot::RestoreOptions;
    let p = page();
    let image = image();
    let mut m = varied(&image);
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", &mut m, &no_names).unwrap();
    let snap = w.finish_in_memory().unwrap();
    let mut r = restored(&snap, "0", &mut vec![image.clone()], 64);
    let table: Vec<_> = r.table().runs().collect();
    for at in [3, 9 * p + 7, 30 * p] {
        r.write(at, b"dirt").unwrap();
    }
    r.restore_dirty(ResetPolicy::default()).unwrap();
    let keep = RestoreOptions { keep_reset_frames: true, ..RestoreOptions::default() };
    r.restore_with(&snap, "0", &mut vec![image.clone()], keep).unwrap();
    assert_eq!(r.table().runs().collect::<Vec<_>>(), table, "every frame kept");
    assert_same_memory(&m, &r);
}

/// Scattered writes over an image: filling the gaps between stored pages
/// trades file size for runs (kernel mappings at restore), and restores the
/// same memory either way.
#[test]
fn filling_gaps_between_stored_pages_gives_fewer_runs_and_the_same_memory() {
    let p = page();
    let image = image();
    let mut m = space(16);
    m.map_image(0, &image, 0, 8 * p, Protection::ReadWrite).unwrap();
    for i in [0, 2, 4, 7] {
        m.write(i * p + 1, b"w").unwrap();
    }
    let capture = |writer: SnapshotWriter, m: &mut LinearSpace| {
        let mut w = writer;
        w.capture("0", m, &no_names).unwrap();
        w.finish_in_memory().unwrap()
    };
    let sparse = capture(SnapshotWriter::in_memory().unwrap(), &mut m);
    let dense = capture(SnapshotWriter::in_memory().unwrap().fill_gaps(2), &mut m);
    assert_eq!(sparse.data_pages(), 4);
    assert_eq!(dense.data_pages(), 8, "the gaps of 1 and 2 pages are stored too");
    let runs = |s: &Snapshot| s.memory("0").unwrap().runs.len();
    assert_eq!(runs(&dense), 2, "one data run, then the zero pages: {:?}", dense.memory("0").unwrap().runs);
    assert!(runs(&sparse) > runs(&dense) + 4);
    for snap in [&sparse, &dense] {
        assert_same_memory(&m, &restored(snap, "0", &mut vec![image.clone()], 16));
    }
}
