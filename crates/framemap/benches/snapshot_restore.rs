//! Snapshots (issue "snapshots of live instances"): restores of memories
//! and their working sets, measured as ratios in one run (captures are
//! `snapshot.rs`).
//!
//! **Restore.** Restoring a memory from an all-pages snapshot of 16 MiB and
//! of 1 GiB, then reading its first page (target: within 1.5×): into one
//! memory that held the other layout, into a fresh memory, and into a slot
//! that served the same snapshot; the first against
//! the same layouts made bare (`mmap(MAP_FIXED)` of a file over the same
//! reservation, then a read: the kernel's part, without framemap; a
//! restore is one such `mmap` here), and against
//! laying out a memory with an image of the same bytes
//! (`restore_layout`, what a prepared instantiation does in the core:
//! target ≤ 1.2×; the wasmtime-level comparison is
//! `benches/benches/snapshot_instance.rs`).
//!
//! **Working set.** A 64 MiB memory captured with a working set of 2048
//! pages (1536 data pages in 48 stretches of 32, and 512 never-written
//! zero pages), restored into a fresh memory, then every page of the
//! working set read (or written) once: the first call's page faults (of
//! this thread, `getrusage(RUSAGE_THREAD)`, over the restore and the
//! touches) and time, without prefetching and with `Prefetch::Read` (and
//! `Prefetch::Write` for the writes). Target: >= 90% fewer faults. And the
//! restore alone, with and without the prefetch, against laying out a
//! memory with an image of the same bytes (`restore_layout`).
//!
//! Each figure is the median of interleaved rounds; the output says what
//! was measured, and nothing else. A first argument that is not a flag
//! runs only the parts whose name contains it (`restore`, `working set`),
//! e.g. `cargo bench -p framemap --bench snapshot_restore -- working`.

// criterion_main! generates an undocumented item.
#![allow(missing_docs)]

mod common;

use common::{GIB, MIB, dir, median, no_names, page, space, wants};
use framemap::snapshot::{Durability, RestoreOptions, Snapshot, SnapshotWriter};
use framemap::{Image, PageRange, Prefetch};
use std::time::{Duration, Instant};

/// An all-pages snapshot of a memory of `bytes`, every page non-zero.
fn snapshot_of(bytes: u64) -> (Snapshot, Image) {
    let p = page();
    let mut m = space(bytes);
    let mut contents = vec![0u8; bytes as usize];
    for i in 0..bytes / p {
        contents[(i * p) as usize] = 1 + (i % 251) as u8;
        m.write(i * p, &[1 + (i % 251) as u8]).expect("write");
    }
    let mut w = SnapshotWriter::in_memory().expect("writer");
    w.capture_all_pages("0", &mut m, &no_names).expect("capture");
    (w.finish_in_memory().expect("finish"), Image::from_bytes(&contents).expect("image"))
}

/// The kernel's part of a restore, without framemap: `mmap(MAP_FIXED)` of
/// a memory file over a reservation laid out as the restore bench's
/// target is, then a read of the first page (the file's first MiB is in
/// the page cache: fault-around maps the same 16 pages a restore's read
/// maps).
struct BareKernel {
    base: *mut u8,
    reservation: usize,
    file: std::fs::File,
}

impl BareKernel {
    fn new(reservation: usize) -> BareKernel {
        use std::os::fd::FromRawFd;
        // SAFETY: memfd_create with a valid name; the descriptor it
        // returns is owned by the File from here on.
        let fd = unsafe { libc::memfd_create(c"framemap-bench-bare".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create");
        // SAFETY: a fresh descriptor, owned by nobody else.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.set_len(GIB + page()).expect("set_len");
        std::os::unix::fs::FileExt::write_all_at(&file, &vec![1u8; MIB as usize], 0).expect("write");
        // SAFETY: a new anonymous reservation the kernel places; no Rust
        // reference points into it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reservation,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap");
        BareKernel { base: base.cast(), reservation, file }
    }

    /// Maps the file's bytes from one page in over `[0, len)`, read-write,
    /// private (a restore's data run), and reads the first byte.
    fn map(&self, len: u64) {
        use std::os::fd::AsRawFd;
        assert!(len as usize <= self.reservation);
        // SAFETY: MAP_FIXED inside this struct's own reservation, which
        // nothing else uses; the file covers the range.
        let at = unsafe {
            libc::mmap(
                self.base.cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                self.file.as_raw_fd(),
                page() as libc::off_t,
            )
        };
        assert_eq!(at.cast(), self.base, "mmap");
        // SAFETY: the first page was just mapped readable.
        std::hint::black_box(unsafe { std::ptr::read_volatile(self.base) });
    }

    /// Makes `[from, to)` inaccessible (a shrink's Unmapped run).
    fn hole(&self, from: u64, to: u64) {
        // SAFETY: MAP_FIXED inside this struct's own reservation.
        let at = unsafe {
            libc::mmap(
                self.base.add(from as usize).cast(),
                (to - from) as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED, "mmap");
    }
}

impl Drop for BareKernel {
    fn drop(&mut self) {
        // SAFETY: the reservation this struct mapped, no longer used.
        unsafe { libc::munmap(self.base.cast(), self.reservation) };
    }
}

fn restore_ratios() {
    println!("\nsnapshot restore (medians; restore, then read the first page):");
    let (small, small_image) = snapshot_of(16 * MIB);
    let (large, _) = snapshot_of(GIB);
    let mut target = space(GIB);
    let bare = BareKernel::new((GIB + 64 * 1024) as usize);
    let mut first = [0u8; 8];
    let (mut s, mut l, mut img, mut bs, mut bl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..51 {
        let t = Instant::now();
        target.restore(&small, "0", &mut ()).expect("restore");
        target.read(0, &mut first).expect("read");
        s.push(t.elapsed());
        let t = Instant::now();
        target.restore(&large, "0", &mut ()).expect("restore");
        target.read(0, &mut first).expect("read");
        l.push(t.elapsed());
        let t = Instant::now();
        target.restore_layout(16 * MIB, Some(&small_image)).expect("layout");
        target.read(0, &mut first).expect("read");
        img.push(t.elapsed());
        // The same three layouts, bare: 16 MiB over 16 MiB, 1 GiB over
        // 16 MiB and an inaccessible rest, then back to 16 MiB.
        let t = Instant::now();
        bare.map(16 * MIB);
        bs.push(t.elapsed());
        let t = Instant::now();
        bare.map(GIB);
        bl.push(t.elapsed());
        bare.hole(16 * MIB, GIB);
        bare.map(16 * MIB);
    }
    // The same two restores where no other layout's page tables are torn
    // down: into a fresh memory (made and dropped untimed), and into a
    // slot that served the same snapshot (reset untimed, then restored
    // keeping the frames that already are the snapshot's, as the wasmtime
    // adapter restores a recycled slot).
    let keep = RestoreOptions { keep_reset_frames: true, ..RestoreOptions::default() };
    let (mut same_small, mut same_large) = (space(GIB), space(GIB));
    same_small.restore(&small, "0", &mut ()).expect("restore");
    same_large.restore(&large, "0", &mut ()).expect("restore");
    let (mut fs, mut fl, mut ks, mut kl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..51 {
        for (snapshot, times) in [(&small, &mut fs), (&large, &mut fl)] {
            let mut fresh = space(GIB);
            let t = Instant::now();
            fresh.restore(snapshot, "0", &mut ()).expect("restore");
            fresh.read(0, &mut first).expect("read");
            times.push(t.elapsed());
        }
        for (memory, snapshot, times) in [(&mut same_small, &small, &mut ks), (&mut same_large, &large, &mut kl)] {
            memory.restore_dirty(framemap::ResetPolicy::default()).expect("reset");
            let t = Instant::now();
            memory.restore_with(snapshot, "0", &mut (), keep).expect("restore");
            memory.read(0, &mut first).expect("read");
            times.push(t.elapsed());
        }
    }
    let (fs, fl, ks, kl) = (median(fs), median(fl), median(ks), median(kl));
    let (s, l, img, bs, bl) = (median(s), median(l), median(img), median(bs), median(bl));
    let size_ratio = l.as_secs_f64() / s.as_secs_f64();
    let image_ratio = s.as_secs_f64() / img.as_secs_f64();
    println!(
        "  16 MiB {s:?}, 1 GiB {l:?}: {size_ratio:.2}x (target within 1.5x: {})",
        if size_ratio <= 1.5 { "met" } else { "MISSED" }
    );
    let (rs, rl) = (s.as_secs_f64() / bs.as_secs_f64(), l.as_secs_f64() / bl.as_secs_f64());
    println!(
        "  bare kernel, mmap(MAP_FIXED) of a file over the same layout + first read: 16 MiB {bs:?}, 1 GiB {bl:?} \
         ({:.2}x: the kernel's teardown of the replaced range); restore / bare: 16 MiB {rs:.2}x, 1 GiB {rl:.2}x \
         (restated target, each within 1.2x: {})",
        bl.as_secs_f64() / bs.as_secs_f64(),
        if rs <= 1.2 && rl <= 1.2 { "met" } else { "MISSED" },
    );
    let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
    println!(
        "  into a fresh memory: 16 MiB {fs:?}, 1 GiB {fl:?}: {:.2}x; into a slot that served the same snapshot: \
         16 MiB {ks:?}, 1 GiB {kl:?}: {:.2}x (no other layout torn down; within 1.5x: {})",
        ratio(fs, fl),
        ratio(ks, kl),
        if ratio(fs, fl) <= 1.5 && ratio(ks, kl) <= 1.5 { "met" } else { "MISSED" },
    );
    println!(
        "  16 MiB snapshot / 16 MiB image layout ({img:?}): {image_ratio:.2}x (core analog of the <= 1.2x target: {})",
        if image_ratio <= 1.2 { "met" } else { "MISSED" }
    );
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

/// What one restore and first touch cost.
#[derive(Clone, Copy)]
struct FirstTouch {
    /// The restore (with its prefetch).
    restore: Duration,
    /// The touches: the "first call".
    touch: Duration,
    /// Minor faults the kernel counted during the restore: a prefetch's
    /// page-ins count as faults of the thread that asks (but are taken in
    /// one call, not one trap each).
    restore_faults: u64,
    /// Minor faults during the touches.
    touch_faults: u64,
}

/// Restores memory "0" of `snapshot` into a fresh memory with `prefetch`,
/// then touches one byte of every page of `working_set` (writes it if
/// `write`). The memory is made before and dropped after the measurement.
fn first_touch(snapshot: &Snapshot, working_set: &[PageRange], prefetch: Prefetch, write: bool) -> FirstTouch {
    let p = page();
    let mut memory = space(snapshot.memory("0").expect("memory").len);
    let mut byte = [0u8; 1];
    let f0 = minor_faults();
    let t0 = Instant::now();
    let report = memory
        .restore_with(snapshot, "0", &mut (), RestoreOptions { prefetch, ..RestoreOptions::default() })
        .expect("restore");
    let t1 = Instant::now();
    let f1 = minor_faults();
    for page in working_set.iter().flat_map(|r| r.start..r.end) {
        if write {
            memory.write(page * p, &[0x5a]).expect("write");
        } else {
            memory.read(page * p, &mut byte).expect("read");
        }
    }
    let t2 = Instant::now();
    let f2 = minor_faults();
    assert!(report.error.is_none(), "{report:?}");
    std::hint::black_box(byte);
    FirstTouch { restore: t1 - t0, touch: t2 - t1, restore_faults: f1 - f0, touch_faults: f2 - f1 }
}

/// Drops the file's pages from the page cache (they are clean: the file
/// was synced), so the next read of each comes from the disk.
fn evict(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).expect("open");
    // SAFETY: an advice on a file descriptor this function holds open.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

fn working_set_ratios() {
    let p = page();
    let bytes = 64 * MIB;
    let pages = bytes / p;
    // 48 MiB written (stored by content), 16 MiB never written (zero holes).
    let written = pages * 3 / 4;
    let mut m = space(bytes);
    let mut contents = vec![0u8; bytes as usize];
    for i in 0..written {
        let v = 1 + (i % 251) as u8;
        contents[(i * p) as usize] = v;
        m.write(i * p, &[v]).expect("write");
    }
    let stride = written / 48;
    let mut working_set: Vec<PageRange> = (0..48).map(|i| PageRange::new(i * stride, i * stride + 32)).collect();
    working_set.push(PageRange::new(written, written + 512));
    let set_pages: u64 = working_set.iter().map(|r| r.len()).sum();
    let image = Image::from_bytes(&contents).expect("image");
    drop(contents);
    // Packed (the working set's data pages first), and the same working
    // set recorded without packing (data pages in memory order), in memory
    // and in synced files.
    let dir = dir();
    let mut snapshots = Vec::new();
    for (packed, file) in [(true, None), (false, None), (true, Some("ws-packed")), (false, Some("ws-unpacked"))] {
        let mut w = match file {
            Some(name) => SnapshotWriter::to_path(dir.join(name), Durability::Synced).expect("writer"),
            None => SnapshotWriter::in_memory().expect("writer"),
        };
        if packed {
            w.capture_with_working_set("0", &mut m, &no_names, &working_set).expect("capture");
        } else {
            w.capture("0", &mut m, &no_names).expect("capture");
            for &range in &working_set {
                w.add_working_set("0", range).expect("working set");
            }
        }
        snapshots.push(match file {
            Some(name) => {
                w.finish().expect("finish");
                // SAFETY: the bench's own file: nothing writes or truncates
                // it while the snapshot lives.
                unsafe { Snapshot::map_file(dir.join(name)) }.expect("map")
            }
            None => w.finish_in_memory().expect("finish"),
        });
    }
    drop(m);
    let runs = |s: &Snapshot| s.memory("0").expect("memory").runs.len();
    let (packed, unpacked) = (&snapshots[0], &snapshots[1]);

    let rounds = 21;
    let variants = [
        ("read, no prefetch", Prefetch::Off, false),
        ("read, Prefetch::Read", Prefetch::Read, false),
        ("write, no prefetch", Prefetch::Off, true),
        ("write, Prefetch::Read", Prefetch::Read, true),
        ("write, Prefetch::Write", Prefetch::Write, true),
    ];
    let mut touches: Vec<Vec<FirstTouch>> = vec![Vec::new(); variants.len()];
    // Restore alone: packed lazy, unpacked lazy, packed prefetched,
    // unpacked prefetched, image layout.
    let mut alone: Vec<Vec<Duration>> = vec![Vec::new(); 5];
    // Cold files, restore and first read: packed without prefetch, packed
    // prefetched, unpacked prefetched.
    let mut cold: Vec<Vec<Duration>> = vec![Vec::new(); 3];
    let mut first = [0u8; 8];
    for _ in 0..rounds {
        for (i, &(_, prefetch, write)) in variants.iter().enumerate() {
            touches[i].push(first_touch(packed, &working_set, prefetch, write));
        }
        let cases =
            [(packed, Prefetch::Off), (unpacked, Prefetch::Off), (packed, Prefetch::Read), (unpacked, Prefetch::Read)];
        for (i, (snapshot, prefetch)) in cases.into_iter().enumerate() {
            let mut target = space(bytes);
            let t = Instant::now();
            target
                .restore_with(snapshot, "0", &mut (), RestoreOptions { prefetch, ..RestoreOptions::default() })
                .expect("restore");
            target.read(0, &mut first).expect("read");
            alone[i].push(t.elapsed());
        }
        let mut target = space(bytes);
        let t = Instant::now();
        target.restore_layout(bytes, Some(&image)).expect("layout");
        target.read(0, &mut first).expect("read");
        alone[4].push(t.elapsed());
        drop(target);
        let cases =
            [(2, "ws-packed", Prefetch::Off), (2, "ws-packed", Prefetch::Read), (3, "ws-unpacked", Prefetch::Read)];
        for (i, (index, name, prefetch)) in cases.into_iter().enumerate() {
            evict(&dir.join(name));
            let f = first_touch(&snapshots[index], &working_set, prefetch, false);
            cold[i].push(f.restore + f.touch);
        }
    }
    let (packed_runs, unpacked_runs) = (runs(packed), runs(unpacked));
    drop(snapshots);
    let _ = std::fs::remove_dir_all(&dir);

    let med = |v: &[FirstTouch], f: fn(&FirstTouch) -> Duration| median(v.iter().map(f).collect());
    let med_count = |v: &[FirstTouch], f: fn(&FirstTouch) -> u64| {
        let mut c: Vec<u64> = v.iter().map(f).collect();
        c.sort_unstable();
        c[c.len() / 2]
    };
    println!(
        "\nsnapshot working set (64 MiB memory, {set_pages}-page working set: 1536 data pages in 48 stretches, \
         512 zero pages; medians of {rounds} rounds; restore into a fresh memory, then one touch per page, \
         the \"first call\"; minor faults of this thread):"
    );
    println!("  {:<24} {:>10} {:>8} {:>12} {:>8} {:>10}", "", "restore", "faults", "first touch", "faults", "in all");
    let mut touch_faults = Vec::new();
    let mut total = Vec::new();
    for (i, (name, _, _)) in variants.iter().enumerate() {
        let v = &touches[i];
        let (restore, touch) = (med(v, |f| f.restore), med(v, |f| f.touch));
        let (rf, tf) = (med_count(v, |f| f.restore_faults), med_count(v, |f| f.touch_faults));
        let all = med(v, |f| f.restore + f.touch);
        println!("  {name:<24} {restore:>10.2?} {rf:>8} {touch:>12.2?} {tf:>8} {all:>10.2?}");
        touch_faults.push(tf);
        total.push(all);
    }
    let fewer = |with: u64, without: u64| 100.0 * (1.0 - with as f64 / without.max(1) as f64);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let (read_fewer, write_fewer) = (fewer(touch_faults[1], touch_faults[0]), fewer(touch_faults[4], touch_faults[2]));
    let verdict = |x: f64| if x >= 90.0 { "met" } else { "MISSED" };
    println!(
        "  first touch, Prefetch::Read: {read_fewer:.1}% fewer faults on reads (target >= 90%: {}), {:.1}% on writes \
         (a first write still copies); Prefetch::Write: {write_fewer:.1}% fewer on writes (target >= 90%: {})",
        verdict(read_fewer),
        fewer(touch_faults[3], touch_faults[2]),
        verdict(write_fewer)
    );
    println!(
        "  restore + first touch, in all, no prefetch / prefetched: reads {:.2}x, writes {:.2}x (Prefetch::Read) \
         and {:.2}x (Prefetch::Write)",
        ratio(total[0], total[1]),
        ratio(total[2], total[3]),
        ratio(total[2], total[4])
    );
    let alone: Vec<Duration> = alone.into_iter().map(median).collect();
    println!(
        "  restore alone (then read the first page): packed ({} runs) lazy {:?}, prefetched {:?}; unpacked ({} runs) \
         lazy {:?}, prefetched {:?}; 64 MiB image layout {:?}: packed lazy / layout {:.2}x, prefetched / layout \
         {:.2}x, unpacked lazy / layout {:.2}x",
        packed_runs,
        alone[0],
        alone[2],
        unpacked_runs,
        alone[1],
        alone[3],
        alone[4],
        ratio(alone[0], alone[4]),
        ratio(alone[2], alone[4]),
        ratio(alone[1], alone[4])
    );
    let cold: Vec<Duration> = cold.into_iter().map(median).collect();
    println!(
        "  cold file (evicted from the page cache, mapped with map_file), restore + first read: packed without \
         prefetch {:?}, packed prefetched {:?}, unpacked prefetched {:?}: packing {:.2}x, prefetch {:.2}x",
        cold[0],
        cold[1],
        cold[2],
        ratio(cold[2], cold[1]),
        ratio(cold[0], cold[1])
    );
}

fn main() {
    if wants("snapshot/restore") {
        restore_ratios();
    }
    if wants("snapshot/working set") {
        working_set_ratios();
    }
}
