//! Snapshots of memories: checkpoints, capture (full, incremental, all
//! pages), restore (lazy, chains, flattened, recycled), files written
//! atomically, and every kind of bad input refused with its own error.
//! Working sets are in `tests/snapshot_working_set.rs`; the helpers both
//! share in `tests/snapshot_support/`.

mod common;
mod snapshot_support;

use common::{host, page, shared_space};
use framemap::snapshot::{Durability, GlobalValue, PageSource, Resolver, Snapshot, SnapshotWriter};
use framemap::{
    BufferGrant, Error, FrameKind, Image, LinearSpace, PageRange, Protection, ResetPolicy, SharedBuffer,
    SnapshotDamage, SpaceConfig,
};
use snapshot_support::*;
use std::sync::{Arc, Mutex};

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
    let snap = snapshot_of(&mut m);
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
    let parent = snapshot_of(&mut m);

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

/// The size target: an incremental snapshot costs its dirtied pages plus
/// at most one page of manifest per 1000 runs, counting only the runs of
/// dirtied pages (each comes with a run of the parent's pages, free here).
#[test]
fn scattered_writes_cost_under_a_page_of_manifest_per_1000_dirty_runs() {
    let p = page();
    let pages = 65_536;
    let mut m = space(pages);
    let mut chain = snapshot_of(&mut m);
    for dirty in [1000, 10_000] {
        let stride = pages / dirty;
        for i in 0..dirty {
            m.write(i * stride * p, &(dirty + i).to_le_bytes()).unwrap();
        }
        let mut w = SnapshotWriter::in_memory().unwrap().incremental_to(&chain);
        w.capture("0", &mut m, &no_names).unwrap();
        let child = w.finish_in_memory().unwrap();
        let runs = &child.memory("0").unwrap().runs;
        let data_runs = runs.iter().filter(|r| matches!(r.source, PageSource::Data { .. })).count() as u64;
        if tracks_writes() {
            assert_eq!((child.data_pages(), data_runs), (dirty, dirty), "one data run per written page");
        }
        let manifest = child.file_len() - (1 + child.data_pages()) * p;
        assert!(
            manifest * 1000 <= 4096 * data_runs,
            "{dirty} dirty pages: {manifest} manifest bytes for {data_runs} data runs ({} runs in all)",
            runs.len()
        );
        chain = child.with_parent(chain).unwrap();
    }
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

/// A new layout keeps the frames that already are its targets, and with
/// them pages a checkpoint protected: the next reset must still restore
/// them (found by the `memory_ops` fuzz target: `restore_layout` used to
/// forget them, and a reset then left a written page in a zero frame).
#[test]
fn pages_a_checkpoint_protected_stay_owed_across_a_new_layout() {
    let p = page();
    let mut s = space(32);
    s.restore_layout(16 * p, None).unwrap();
    s.restore_dirty(ResetPolicy::default()).unwrap();
    s.write(4 * p + 3, b"stale").unwrap();
    s.checkpoint().unwrap();
    // Smaller, and page 4 keeps its zero frame (no reset in between).
    s.restore_layout(11 * p, None).unwrap();
    let mut buf = [0u8; 5];
    s.read(4 * p + 3, &mut buf).unwrap();
    assert_eq!(&buf, b"stale", "a kept frame keeps its contents, as documented");
    // A full capture stores the page by content, not as a zero page.
    let snap = snapshot_of(&mut s);
    assert!(snap.data_pages() >= 1, "the written page is stored");
    let restored = restored(&snap, "0", &mut (), 32);
    restored.read(4 * p + 3, &mut buf).unwrap();
    assert_eq!(&buf, b"stale");
    // The reset restores it.
    s.restore_dirty(ResetPolicy::default()).unwrap();
    s.read(4 * p + 3, &mut buf).unwrap();
    assert_eq!(buf, [0; 5], "page 4 after the reset");
    s.validate().unwrap();
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
    let parent = snapshot_of(&mut m);
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
    let base = snapshot_of(&mut m);

    let mut r = restored(&base, "0", &mut vec![image.clone()], 64);
    r.write(30 * p, b"after restore").unwrap();
    let mut w = SnapshotWriter::in_memory().unwrap().incremental_to(&base);
    w.capture("0", &mut r, &no_names).unwrap();
    let child = w.finish_in_memory().unwrap().with_parent(base.clone()).unwrap();
    if tracked {
        assert_eq!(child.data_pages(), 1, "only the page written since the restore");
    }
    assert_same_memory(&r, &restored(&child, "0", &mut vec![image.clone()], 64));

    let full = snapshot_of(&mut r);
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
    let snap = snapshot_of(&mut m);
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
