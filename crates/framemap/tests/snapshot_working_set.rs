//! Working sets of snapshots: the pages a memory used since a restore
//! (`touched_pages`), packed first in the file, prefetched by restore (page
//! faults counted), kept by flattening and inherited by increments.

mod snapshot_support;

use framemap::snapshot::{PageSource, Resolver, RestoreOptions, Snapshot, SnapshotWriter};
use framemap::{Error, LinearSpace, PageRange, Prefetch, PrefetchReport, ResetPolicy};
use snapshot_support::*;

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
    let snap = snapshot_of(&mut m);
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
    let base = snapshot_of(&mut m);

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
