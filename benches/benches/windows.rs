//! Window operations: what framemap's bookkeeping costs on top of the kernel.
//!
//! **Latency.** One `LinearSpace::map_buffer` (alternating between two
//! buffers, so every call really remaps), `unmap` and `protect` of a 1-page
//! and a 16-page window, against the raw syscall each wraps, in the same run:
//! `mmap(MAP_FIXED | MAP_SHARED)` of a memfd range, `mmap(MAP_FIXED)` of
//! anonymous `PROT_NONE` memory (framemap never `munmap`s: it replaces), and
//! `mprotect`. The raw side's reservation is laid out exactly as a
//! `LinearSpace`'s (reserved `PROT_NONE`, made read-write; sealed memfds with
//! a host view), so both sides' kernel calls do the same VMA work and the
//! ratio is framemap's own overhead (target: framemap/raw ≤ 1.5).
//!
//! **Scaling.** A 4 GiB sparse memory holding W one-page windows spread over
//! it, W ∈ {10, 100, 1000, 10000}: the time of one more `map_buffer` and
//! `unmap` in the middle, per W. The frame table is a B-tree of runs, so this
//! should grow logarithmically with W, as the kernel's own VMA tree does.
//!
//! Besides criterion's statistics, each part prints medians from interleaved
//! A/B rounds in the same process (framemap and raw alternating, so machine
//! noise hits both alike), with the cost of reading the clock subtracted.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use framemap::{BufferGrant, LinearSpace, Protection, SharedBuffer, SpaceConfig, WindowOwner};
use rustix::fd::OwnedFd;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Pages of the latency benches' memory, and the page their window starts at.
const LATENCY_PAGES: u64 = 256;
const WINDOW_AT: u64 = 64;
/// Window sizes of the latency benches, in pages.
const SIZES: [u64; 2] = [1, 16];
/// Window counts of the scaling bench, in a memory of `SCALING_BYTES`.
const WINDOW_COUNTS: [u64; 4] = [10, 100, 1000, 10_000];
const SCALING_BYTES: u64 = 4 << 30;
/// Interleaved A/B rounds, and operations per side per round.
const ROUNDS: usize = 60;
const BLOCK: usize = 200;

fn page() -> u64 {
    framemap::host_page_size() as u64
}

/// The operations a memory's windows support, on either side.
trait Windows {
    /// Maps `pages` pages of buffer `buffer` (from its start) at page `at`.
    fn map(&mut self, at: u64, buffer: usize, pages: u64);
    /// Makes `pages` pages at `at` inaccessible and unbacked.
    fn unmap(&mut self, at: u64, pages: u64);
    /// Sets `pages` pages at `at` read-only or read-write.
    fn protect(&mut self, at: u64, pages: u64, read_only: bool);
}

/// framemap's side: a space registered with the buffers it may map.
struct Framemap {
    space: Arc<Mutex<LinearSpace>>,
    grants: Vec<BufferGrant>,
}

impl Framemap {
    fn new(pages: u64, buffers: usize, buffer_pages: u64) -> Framemap {
        let len = pages * page();
        let config = SpaceConfig { capacity: len, guard: 0, initial_len: len };
        let space = Arc::new(Mutex::new(LinearSpace::new(config).expect("space")));
        let weak: Weak<Mutex<LinearSpace>> = Arc::downgrade(&space);
        let host: Weak<dyn WindowOwner> = weak;
        space.lock().expect("space").set_window_owner(host.clone());
        let grants = (0..buffers)
            .map(|_| SharedBuffer::new(buffer_pages * page()).and_then(|b| b.grant(host.clone())).expect("buffer"))
            .collect();
        Framemap { space, grants }
    }

    /// The space, locked once for the whole bench (the lock is no part of
    /// what is measured).
    fn lock(&self) -> Locked<'_> {
        Locked { space: self.space.lock().expect("lock"), grants: &self.grants }
    }
}

struct Locked<'a> {
    space: MutexGuard<'a, LinearSpace>,
    grants: &'a [BufferGrant],
}

impl Windows for Locked<'_> {
    fn map(&mut self, at: u64, buffer: usize, pages: u64) {
        let p = page();
        self.space.map_buffer(at * p, &self.grants[buffer], 0, pages * p, Protection::ReadWrite).expect("map_buffer");
    }

    fn unmap(&mut self, at: u64, pages: u64) {
        self.space.unmap(at * page(), pages * page()).expect("unmap");
    }

    fn protect(&mut self, at: u64, pages: u64, read_only: bool) {
        let prot = if read_only { Protection::Read } else { Protection::ReadWrite };
        self.space.protect(at * page(), pages * page(), prot).expect("protect");
    }
}

/// The raw side: the syscalls framemap makes, on a reservation of its own.
struct Raw {
    base: *mut c_void,
    len: usize,
    /// Sealed memfds, each with the host's read-write view (as a
    /// `SharedBuffer` has).
    files: Vec<(OwnedFd, *mut c_void, usize)>,
}

impl Raw {
    fn new(pages: u64, files: usize, file_pages: u64) -> Raw {
        let len = (pages * page()) as usize;
        // SAFETY: a non-fixed anonymous mapping at a kernel-chosen address
        // overlaps no existing object.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .expect("reserve");
        // SAFETY: the range is the reservation just made, owned by this value.
        unsafe { rustix::mm::mprotect(base, len, MprotectFlags::READ | MprotectFlags::WRITE) }.expect("mprotect");
        let files = (0..files)
            .map(|_| {
                let file_len = file_pages * page();
                let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
                let fd = rustix::fs::memfd_create("framemap-bench-raw", flags).expect("memfd_create");
                rustix::fs::ftruncate(&fd, file_len).expect("ftruncate");
                rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).expect("seal");
                let (prot, flags) = (ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED);
                // SAFETY: a non-fixed mapping overlaps no existing object; the
                // file covers `file_len` bytes and is sealed against shrinking.
                let view = unsafe { rustix::mm::mmap(std::ptr::null_mut(), file_len as usize, prot, flags, &fd, 0) }
                    .expect("mmap view");
                (fd, view, file_len as usize)
            })
            .collect();
        Raw { base, len, files }
    }

    fn addr(&self, at: u64, pages: u64) -> (*mut c_void, usize) {
        let (offset, len) = ((at * page()) as usize, (pages * page()) as usize);
        assert!(offset + len <= self.len, "inside the reservation");
        (self.base.wrapping_byte_add(offset), len)
    }
}

impl Windows for Raw {
    fn map(&mut self, at: u64, buffer: usize, pages: u64) {
        let (addr, len) = self.addr(at, pages);
        let (prot, flags) = (ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED | MapFlags::FIXED);
        // SAFETY: `addr..addr + len` lies inside this value's reservation,
        // which no Rust reference points into; the sealed file covers it.
        unsafe { rustix::mm::mmap(addr, len, prot, flags, &self.files[buffer].0, 0) }.expect("mmap");
    }

    fn unmap(&mut self, at: u64, pages: u64) {
        let (addr, len) = self.addr(at, pages);
        let flags = MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE;
        // SAFETY: as in `map`.
        unsafe { rustix::mm::mmap_anonymous(addr, len, ProtFlags::empty(), flags) }.expect("mmap anonymous");
    }

    fn protect(&mut self, at: u64, pages: u64, read_only: bool) {
        let (addr, len) = self.addr(at, pages);
        let prot = if read_only { MprotectFlags::READ } else { MprotectFlags::READ | MprotectFlags::WRITE };
        // SAFETY: as in `map`; the range is mapped.
        unsafe { rustix::mm::mprotect(addr, len, prot) }.expect("mprotect");
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        for &(_, view, len) in &self.files {
            // SAFETY: the view is this value's own mapping, unused from now on.
            let _ = unsafe { rustix::mm::munmap(view, len) };
        }
        // SAFETY: as for the views.
        let _ = unsafe { rustix::mm::munmap(self.base, self.len) };
    }
}

/// Median cost of reading the clock around nothing, subtracted from every
/// timed operation.
fn clock_cost() -> Duration {
    static COST: OnceLock<Duration> = OnceLock::new();
    *COST.get_or_init(|| {
        let mut samples: Vec<Duration> = (0..10_000).map(|_| Instant::now().elapsed()).collect();
        samples.sort();
        samples[samples.len() / 2]
    })
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed().saturating_sub(clock_cost())
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Map,
    Unmap,
    Protect,
}

impl Op {
    const ALL: [Op; 3] = [Op::Map, Op::Unmap, Op::Protect];

    fn name(self) -> &'static str {
        match self {
            Op::Map => "map_buffer",
            Op::Unmap => "unmap",
            Op::Protect => "protect",
        }
    }

    /// Does the op once (call `i` of a series) on the latency window and
    /// returns its time; the setup an unmap needs is not timed.
    fn step(self, w: &mut impl Windows, pages: u64, i: u64) -> Duration {
        let buffer = (i % 2) as usize;
        match self {
            Op::Map => timed(|| w.map(WINDOW_AT, buffer, pages)),
            Op::Unmap => {
                w.map(WINDOW_AT, buffer, pages);
                timed(|| w.unmap(WINDOW_AT, pages))
            }
            Op::Protect => timed(|| w.protect(WINDOW_AT, pages, i.is_multiple_of(2))),
        }
    }
}

/// One map/unmap pair at page `at`: both times.
fn pair(w: &mut impl Windows, at: u64) -> [Duration; 2] {
    [timed(|| w.map(at, 0, 1)), timed(|| w.unmap(at, 1))]
}

/// Interleaved A/B rounds of `BLOCK` calls per side (which side goes first
/// alternates): per side and per timed part, the median over rounds of the
/// mean time per call, in nanoseconds.
fn ab<const N: usize>(
    mut a: impl FnMut(u64) -> [Duration; N],
    mut b: impl FnMut(u64) -> [Duration; N],
) -> [[f64; N]; 2] {
    let mut means = [[(); N].map(|()| Vec::with_capacity(ROUNDS)), [(); N].map(|()| Vec::with_capacity(ROUNDS))];
    let mut i = 0;
    for round in 0..ROUNDS {
        let order = if round.is_multiple_of(2) { [0, 1] } else { [1, 0] };
        for side in order {
            let mut total = [Duration::ZERO; N];
            for _ in 0..BLOCK {
                let times = if side == 0 { a(i) } else { b(i) };
                i += 1;
                for (t, d) in total.iter_mut().zip(times) {
                    *t += d;
                }
            }
            for (m, t) in means[side].iter_mut().zip(total) {
                m.push(t.as_secs_f64() * 1e9 / BLOCK as f64);
            }
        }
    }
    means.map(|side| {
        side.map(|mut m| {
            m.sort_by(f64::total_cmp);
            m[m.len() / 2]
        })
    })
}

fn latency(c: &mut Criterion) {
    let framemap = Framemap::new(LATENCY_PAGES, 2, SIZES[1]);
    let mut fm = framemap.lock();
    let mut raw = Raw::new(LATENCY_PAGES, 2, SIZES[1]);
    let mut summary = Vec::new();
    for op in Op::ALL {
        let mut group = c.benchmark_group(format!("window_{}", op.name()));
        group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
        for pages in SIZES {
            // Protect needs a window to protect; map and unmap bring their own.
            fm.map(WINDOW_AT, 0, pages);
            raw.map(WINDOW_AT, 0, pages);
            group.bench_function(BenchmarkId::new("framemap", pages), |b| {
                b.iter_custom(|iters| (0..iters).map(|i| op.step(&mut fm, pages, i)).sum())
            });
            group.bench_function(BenchmarkId::new("raw", pages), |b| {
                b.iter_custom(|iters| (0..iters).map(|i| op.step(&mut raw, pages, i)).sum())
            });
            let [[f], [r]] = ab(|i| [op.step(&mut fm, pages, i)], |i| [op.step(&mut raw, pages, i)]);
            summary.push((op, pages, f, r));
        }
        group.finish();
        fm.space.validate().expect("table equals the kernel");
    }
    println!("\nwindow latency, interleaved medians (clock cost {} ns subtracted):", clock_cost().as_nanos());
    for (op, pages, f, r) in summary {
        let unit = if pages == 1 { "page " } else { "pages" };
        println!(
            "  {:<10} {pages:>2} {unit}: framemap {f:>7.0} ns, raw {r:>7.0} ns, framemap/raw = {:.2}",
            op.name(),
            f / r
        );
    }
}

fn scaling(c: &mut Criterion) {
    let pages = SCALING_BYTES / page();
    let mut group = c.benchmark_group("window_scaling_map_unmap");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    let mut rows = Vec::new();
    for w in WINDOW_COUNTS {
        let framemap = Framemap::new(pages, 1, 1);
        let mut fm = framemap.lock();
        let mut raw = Raw::new(pages, 1, 1);
        let spacing = pages / w;
        for i in 0..w {
            fm.map(i * spacing, 0, 1);
            raw.map(i * spacing, 0, 1);
        }
        let probe = (w / 2) * spacing + spacing / 2;
        group.bench_function(BenchmarkId::new("framemap", w), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| pair(&mut fm, probe).into_iter().sum::<Duration>()).sum())
        });
        group.bench_function(BenchmarkId::new("raw", w), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| pair(&mut raw, probe).into_iter().sum::<Duration>()).sum())
        });
        let [f, r] = ab(|_| pair(&mut fm, probe), |_| pair(&mut raw, probe));
        fm.space.validate().expect("table equals the kernel");
        rows.push((w, fm.space.table().run_count(), f, r));
    }
    group.finish();
    println!("\nwindow scaling: one more 1-page map_buffer + unmap in the middle of a 4 GiB memory with W windows");
    println!("  (interleaved medians, ns per op)");
    println!(
        "  {:>6} {:>6} | {:>10} {:>8} | {:>8} {:>8} | {:>12}",
        "W", "runs", "map_buffer", "unmap", "raw map", "raw unm", "framemap/raw"
    );
    for (w, runs, [fm_map, fm_unmap], [raw_map, raw_unmap]) in rows {
        println!(
            "  {w:>6} {runs:>6} | {fm_map:>10.0} {fm_unmap:>8.0} | {raw_map:>8.0} {raw_unmap:>8.0} | {:>12.2}",
            (fm_map + fm_unmap) / (raw_map + raw_unmap)
        );
    }
}

criterion_group!(benches, latency, scaling);
criterion_main!(benches);
