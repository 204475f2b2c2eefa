//! Instance snapshots through wasmtime: restoring an instance of the
//! built-in module (16 MiB memory, 8 MiB data image) from a snapshot,
//! against instantiating it from its prepared image, on one framemap engine
//! (target: restore ≤ 1.2× the prepared instantiation). Each side is a new
//! `Store`, the instantiation (or restore), one `touch(16)` call (the guest
//! runs: its first instruction and a few pages), and the drop (slots
//! recycled). Two snapshots are restored: the state right after
//! instantiation (clean image pages referenced by content hash, nothing
//! stored) and after 256 pages were written one in eight (stored by
//! content: 513 runs), and the latter captured with
//! `SnapshotWriter::fill_gaps(8)` (the gaps stored too: one run).
//!
//! Besides criterion's statistics, the medians of interleaved rounds (the
//! sides alternating in blocks, so machine noise hits all alike) are
//! printed as ratios. Each block's first iteration is reported apart
//! ("re-layout": the slot served the side before, so its layout is
//! replaced, paying the kernel's cost per mapping removed and made); the
//! rest of the block is the steady state of a slot serving the same
//! snapshot again, which the target is about. A sweep then restores
//! snapshots after `touch(k)` for k in 0, 4, 16, 64, 256 (2k + 1 runs in
//! the file) and prints the steady-state cost per run: the reset's
//! `PAGEMAP_SCAN` walks every mapping, and each run the restore maps is
//! one; the creator merges stored runs at restore
//! (`CreatorConfig::restore_merge_gaps`), so the slope is what is left.
//!
//! Working sets (`working_set` in the filter selects only them): the first
//! call after a restore, timed alone with its minor page faults counted
//! (`getrusage(RUSAGE_THREAD)`), from the snapshot after `touch(256)` and
//! from the file `PreparedModule::write_working_set` recorded from that
//! call (same state, working set packed and prefetched), against the same
//! call on a warm instance: restored from the snapshot into a recycled
//! slot that served it and ran the call (its frames kept, their pages still
//! mapped). The cold restores go through a creator that recycles nothing,
//! so each lays a new reservation out. Three calls: `SPARSE`'s `first`
//! (reads 512 scattered pages of a 4 MiB memory, writes 2: little but
//! faults; snapshot after its `init`; `Prefetch::Read`, then `Write`), and the built-in
//! module's `run` (reads the 8 MiB image, 2048 pages, 12 times;
//! `Prefetch::Read`) and `touch(512)` (writes 512 scattered pages;
//! `Prefetch::Write`). Target: the first call
//! with the working set at most 1.3x the warm call, with 90% fewer faults
//! than without.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use framemap::Prefetch;
use framemap::snapshot::{Snapshot, SnapshotWriter};
use framemap_benches::builtin;
use framemap_wasmtime::{CreatorConfig, FrameMemoryCreator, PreparedModule, RestoreMode, engine};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Config, Engine, Instance, Store};

struct Setup {
    engine: Engine,
    prepared: PreparedModule,
    _creator: Arc<FrameMemoryCreator>,
}

fn setup() -> Setup {
    let s = setup_with(CreatorConfig::default(), &builtin::wasm());
    assert!(s.prepared.not_prepared().is_none(), "the built-in module is prepared");
    s
}

fn setup_with(config: CreatorConfig, wasm: &[u8]) -> Setup {
    let creator = FrameMemoryCreator::with_config(config);
    let engine = engine(&mut Config::new(), creator.clone()).expect("engine");
    let prepared = PreparedModule::with_snapshots(&creator, &engine, wasm).expect("prepared");
    Setup { engine, prepared, _creator: creator }
}

/// A 4 MiB memory whose `init` writes one 4 KiB page in eight and whose
/// `first` reads every other page (512 pages: 128 data pages, 384 zero
/// pages) and writes 2: a first call whose time is mostly its page faults.
const SPARSE: &str = r#"
(module
  (memory 64)
  (func (export "init")
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 128)))
        (i32.store (i32.add (i32.mul (local.get $i) (i32.const 32768)) (i32.const 16)) (local.get $i))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))
  (func (export "first") (result i32)
    (local $i i32) (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 1024)))
        (local.set $acc (i32.add (local.get $acc)
          (i32.load (i32.add (i32.mul (local.get $i) (i32.const 4096)) (i32.const 16)))))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $next)))
    (i32.store (i32.const 12288) (i32.const 7))
    (i32.store (i32.const 4100096) (i32.const 8))
    (local.get $acc)))
"#;

fn touch(store: &mut Store<()>, instance: &Instance, k: i32) {
    let f = instance.get_typed_func::<i32, ()>(&mut *store, builtin::TOUCH_EXPORT).expect("touch");
    f.call(&mut *store, k).expect("call");
}

/// A snapshot of an instance after `touch(k)` (k = 0: right after
/// instantiation).
fn snapshot_after(s: &Setup, k: i32, fill_gaps: u64) -> Snapshot {
    let mut store = Store::new(&s.engine, ());
    let instance = s.prepared.instantiate(&mut store, &[]).expect("instantiate");
    if k > 0 {
        touch(&mut store, &instance, k);
    }
    let mut writer = SnapshotWriter::in_memory().expect("writer").fill_gaps(fill_gaps);
    s.prepared.capture(&mut store, &instance, &mut writer).expect("capture");
    writer.finish_in_memory().expect("finish")
}

fn prepared_once(s: &Setup) -> Duration {
    let t = Instant::now();
    let mut store = Store::new(&s.engine, ());
    let instance = s.prepared.instantiate(&mut store, &[]).expect("instantiate");
    touch(&mut store, &instance, 16);
    drop(store);
    t.elapsed()
}

fn restored_once(s: &Setup, snapshot: &Snapshot) -> Duration {
    let t = Instant::now();
    let mut store = Store::new(&s.engine, ());
    let instance = s.prepared.instantiate_snapshot(&mut store, &[], snapshot).expect("restore");
    touch(&mut store, &instance, 16);
    drop(store);
    t.elapsed()
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

/// One block of a side: its first iteration (the slot served another
/// layout before: a re-layout) and the mean of the `BLOCK` after it (the
/// slot served this one: steady state, what a server restoring the same
/// snapshot sees).
fn block(mut once: impl FnMut() -> Duration) -> (Duration, Duration) {
    const BLOCK: usize = 50;
    let first = once();
    (first, (0..BLOCK).map(|_| once()).sum::<Duration>() / BLOCK as u32)
}

fn ratios(s: &Setup, fresh: &Snapshot, dirty: &Snapshot, dense: &Snapshot) {
    const ROUNDS: usize = 41;
    // Sides: prepared instantiation, then restores of each snapshot.
    let snapshots = [fresh, dirty, dense];
    let mut first = vec![Vec::new(); 4];
    let mut steady = vec![Vec::new(); 4];
    for _ in 0..ROUNDS {
        for side in 0..4 {
            let (f, m) = match side {
                0 => block(|| prepared_once(s)),
                i => block(|| restored_once(s, snapshots[i - 1])),
            };
            first[side].push(f);
            steady[side].push(m);
        }
    }
    let first: Vec<Duration> = first.into_iter().map(median).collect();
    let steady: Vec<Duration> = steady.into_iter().map(median).collect();
    let p = steady[0];
    let ratio = |d: Duration| d.as_secs_f64() / p.as_secs_f64();
    let verdict = |d: Duration| if ratio(d) <= 1.2 { "met" } else { "MISSED" };
    let runs = |snap: &Snapshot| snap.manifest().memories.iter().map(|m| m.runs.len()).sum::<usize>();
    println!(
        "\ninstance snapshots (built-in module, store + instantiate or restore + touch(16) + drop; medians of {ROUNDS} rounds; \
         steady: mean of 50 in a slot that served the same layout; re-layout: the first of the block, the slot having served the side before):"
    );
    println!("  prepared instantiation:                 steady {p:?}; re-layout {:?}", first[0]);
    for (i, name) in
        ["snapshot right after start", "snapshot after touch(256)", "touch(256), gaps filled"].into_iter().enumerate()
    {
        let (d, f, snap) = (steady[i + 1], first[i + 1], snapshots[i]);
        println!(
            "  restore, {name:<27} steady {d:?} ({:.2}x; target <= 1.2x: {}); re-layout {f:?}; {} runs, {} data pages",
            ratio(d),
            verdict(d),
            runs(snap),
            snap.data_pages()
        );
    }
}

/// Steady-state restore time against the number of runs: snapshots after
/// `touch(k)` (k scattered pages: 2k + 1 runs), each restored into a slot
/// that served it, against prepared instantiation in the same rounds. The
/// slope is the kernel's cost per mapping in the reset's `PAGEMAP_SCAN`
/// walk and the restore's per-run check.
fn runs_sweep(s: &Setup) {
    const ROUNDS: usize = 21;
    let ks = [0, 4, 16, 64, 256];
    let snapshots: Vec<Snapshot> = ks.iter().map(|&k| snapshot_after(s, k, 0)).collect();
    let mut prepared = Vec::new();
    let mut restored = vec![Vec::new(); ks.len()];
    for _ in 0..ROUNDS {
        prepared.push(block(|| prepared_once(s)).1);
        for (i, snap) in snapshots.iter().enumerate() {
            restored[i].push(block(|| restored_once(s, snap)).1);
        }
    }
    let p = median(prepared);
    println!("\nsteady-state restore against runs (medians of {ROUNDS} rounds of 50; prepared instantiation {p:?}):");
    let runs = |snap: &Snapshot| snap.manifest().memories.iter().map(|m| m.runs.len()).sum::<usize>();
    let mut points = Vec::new();
    for (snap, times) in snapshots.iter().zip(restored) {
        let d = median(times);
        points.push((runs(snap) as f64, d.as_secs_f64()));
        println!("  {:>4} runs: {d:?} ({:.2}x)", runs(snap), d.as_secs_f64() / p.as_secs_f64());
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    println!("  slope: {:.2} us per run", (last.1 - first.1) / (last.0 - first.0) * 1e6);
}

/// The first call of a working-set comparison: `run()` (reads) or
/// `touch(k)` (writes).
#[derive(Clone, Copy)]
enum FirstCall {
    Run,
    Touch(i32),
    /// `SPARSE`'s `first`.
    Sparse,
}

impl FirstCall {
    fn call(self, store: &mut Store<()>, instance: &Instance) {
        match self {
            FirstCall::Run => {
                let f = instance.get_typed_func::<(), i64>(&mut *store, builtin::COMPUTE_EXPORT).expect("run");
                std::hint::black_box(f.call(&mut *store, ()).expect("call"));
            }
            FirstCall::Touch(k) => touch(store, instance, k),
            FirstCall::Sparse => {
                let f = instance.get_typed_func::<(), i32>(&mut *store, "first").expect("first");
                std::hint::black_box(f.call(&mut *store, ()).expect("call"));
            }
        }
    }
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

/// Restores `snapshot` with `prepared` and makes `first`: the call's time
/// and minor faults (the restore is not counted), and the time of the same
/// call made again on that instance right after.
fn first_call(
    s: &Setup,
    prepared: &PreparedModule,
    snapshot: &Snapshot,
    first: FirstCall,
) -> (Duration, u64, Duration) {
    let mut store = Store::new(&s.engine, ());
    let instance = prepared.instantiate_snapshot(&mut store, &[], snapshot).expect("restore");
    // Resolve the export before counting (as the call's own lookup would).
    first.call(&mut store, &instance);
    drop(store);
    let mut store = Store::new(&s.engine, ());
    let instance = prepared.instantiate_snapshot(&mut store, &[], snapshot).expect("restore");
    let (faults, t) = (minor_faults(), Instant::now());
    first.call(&mut store, &instance);
    let elapsed = t.elapsed();
    let faults = minor_faults() - faults;
    let t = Instant::now();
    first.call(&mut store, &instance);
    (elapsed, faults, t.elapsed())
}

/// `snapshot` again, with the working set `first` touches recorded.
fn recorded(s: &Setup, snapshot: &Snapshot, first: FirstCall) -> Snapshot {
    let mut recorder = s.prepared.clone();
    recorder.set_restore_mode(RestoreMode::Record);
    let mut store = Store::new(&s.engine, ());
    let instance = recorder.instantiate_snapshot(&mut store, &[], snapshot).expect("restore");
    first.call(&mut store, &instance);
    let mut writer = SnapshotWriter::in_memory().expect("writer");
    recorder.write_working_set(&mut store, &instance, snapshot, &mut writer).expect("record");
    writer.finish_in_memory().expect("finish")
}

/// The working-set comparison for one first call (see the module docs).
fn working_set_ratio(first: FirstCall, name: &str, prefetch: Prefetch) {
    const ROUNDS: usize = 31;
    let wasm = match first {
        FirstCall::Sparse => wat::parse_str(SPARSE).expect("SPARSE"),
        _ => builtin::wasm(),
    };
    let cold = setup_with(CreatorConfig { max_idle_slots: 0, ..CreatorConfig::default() }, &wasm);
    let warm = setup_with(CreatorConfig::default(), &wasm);
    let (snapshot, taken) = match first {
        FirstCall::Sparse => {
            let mut store = Store::new(&warm.engine, ());
            let instance = warm.prepared.instantiate(&mut store, &[]).expect("instantiate");
            let init = instance.get_typed_func::<(), ()>(&mut store, "init").expect("init");
            init.call(&mut store, ()).expect("init");
            let mut writer = SnapshotWriter::in_memory().expect("writer");
            warm.prepared.capture(&mut store, &instance, &mut writer).expect("capture");
            (writer.finish_in_memory().expect("finish"), "after init")
        }
        _ => (snapshot_after(&warm, 256, 0), "after touch(256)"),
    };
    let with_set = recorded(&cold, &snapshot, first);
    let mut prefetching = cold.prepared.clone();
    prefetching.set_restore_mode(RestoreMode::Prefetch(prefetch));
    let ws_pages: u64 = with_set.manifest().working_set.iter().map(|w| w.pages.len()).sum();
    // Samples: (time, faults, time of the same call again) per side.
    let (mut without, mut with, mut warmed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        without.push(first_call(&cold, &cold.prepared, &snapshot, first));
        with.push(first_call(&cold, &prefetching, &with_set, first));
        // The first of the two calls warms the recycled slot the second gets.
        warmed.push(first_call(&warm, &warm.prepared, &snapshot, first));
    }
    assert_eq!(cold._creator.stats().reused, 0, "the cold restores recycle nothing");
    let times = |v: &[(Duration, u64, Duration)]| median(v.iter().map(|x| x.0).collect());
    let faults = |v: &[(Duration, u64, Duration)]| median(v.iter().map(|x| x.1).collect());
    let again = |v: &[(Duration, u64, Duration)]| median(v.iter().map(|x| x.2).collect());
    let (t_without, t_with, t_warm) = (times(&without), times(&with), times(&warmed));
    let (f_without, f_with, f_warm) = (faults(&without), faults(&with), faults(&warmed));
    let ratio = t_with.as_secs_f64() / t_warm.as_secs_f64();
    let fewer = 1.0 - f_with as f64 / f_without.max(1) as f64;
    println!("\nfirst call {name} after a restore (snapshot {taken}; medians of {ROUNDS} interleaved rounds):");
    println!("  without a working set:                {t_without:?}, {f_without} minor faults");
    println!(
        "  with the recorded one ({ws_pages} pages, {prefetch:?}): {t_with:?}, {f_with} minor faults ({:.0}% fewer; target >= 90%: {})",
        fewer * 100.0,
        if fewer >= 0.9 { "met" } else { "MISSED" }
    );
    println!("  warm recycled instance:               {t_warm:?}, {f_warm} minor faults");
    println!(
        "  the same call again on the instance restored with the set: {:?} (its first call took {f_with} faults; the \
         rest of the gap is first touches of a freshly mapped memory: TLB fills, cache misses on page tables and \
         data)",
        again(&with)
    );
    println!(
        "  with / warm: {ratio:.2}x (target <= 1.3x: {}); without / warm: {:.2}x",
        if ratio <= 1.3 { "met" } else { "MISSED" },
        t_without.as_secs_f64() / t_warm.as_secs_f64()
    );
}

/// Whether the bench filter (the first argument that is not a flag), if
/// any, selects `name`.
fn selected(name: &str) -> bool {
    std::env::args().skip(1).find(|a| !a.starts_with('-')).is_none_or(|filter| name.contains(&filter))
}

fn bench_working_set(_: &mut Criterion) {
    if !selected("snapshot_instance/working_set") {
        return;
    }
    working_set_ratio(FirstCall::Sparse, "first() of a 4 MiB memory (reads 512 pages, writes 2)", Prefetch::Read);
    working_set_ratio(FirstCall::Sparse, "first() of a 4 MiB memory (reads 512 pages, writes 2)", Prefetch::Write);
    working_set_ratio(FirstCall::Run, "run() (reads 2048 pages)", Prefetch::Read);
    working_set_ratio(FirstCall::Touch(512), "touch(512) (writes 512 pages)", Prefetch::Write);
}

fn bench(c: &mut Criterion) {
    if !selected("snapshot_instance/restore + touch(16) + drop") && !selected("snapshot_instance/prepared") {
        return;
    }
    let s = setup();
    let fresh = snapshot_after(&s, 0, 0);
    let dirty = snapshot_after(&s, 256, 0);
    let dense = snapshot_after(&s, 256, 8);
    assert_eq!(fresh.data_pages(), 0, "a fresh instance's pages are the image's: nothing stored");
    assert!(dirty.data_pages() >= 256);
    ratios(&s, &fresh, &dirty, &dense);
    runs_sweep(&s);
    c.bench_function("snapshot_instance/prepared instantiate + touch(16) + drop", |b| b.iter(|| prepared_once(&s)));
    c.bench_function("snapshot_instance/restore + touch(16) + drop", |b| b.iter(|| restored_once(&s, &dirty)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = bench, bench_working_set
}
criterion_main!(benches);
