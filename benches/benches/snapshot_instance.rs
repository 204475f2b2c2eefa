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
//! Besides criterion's statistics, the medians of interleaved rounds (both
//! sides alternating, so machine noise hits both alike) are printed as
//! ratios.
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

fn ratios(s: &Setup, fresh: &Snapshot, dirty: &Snapshot, dense: &Snapshot) {
    const ROUNDS: usize = 41;
    const BLOCK: usize = 50;
    let (mut p, mut f, mut d, mut g) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        g.push((0..BLOCK).map(|_| restored_once(s, dense)).sum::<Duration>() / BLOCK as u32);
        p.push((0..BLOCK).map(|_| prepared_once(s)).sum::<Duration>() / BLOCK as u32);
        f.push((0..BLOCK).map(|_| restored_once(s, fresh)).sum::<Duration>() / BLOCK as u32);
        d.push((0..BLOCK).map(|_| restored_once(s, dirty)).sum::<Duration>() / BLOCK as u32);
    }
    let (p, f, d, g) = (median(p), median(f), median(d), median(g));
    println!(
        "\ninstance snapshots (built-in module, store + instantiate or restore + touch(16) + drop; medians of {ROUNDS} rounds of {BLOCK}):"
    );
    println!("  prepared instantiation:                 {p:?}");
    println!("  restore, snapshot right after start:    {f:?} ({:.2}x)", f.as_secs_f64() / p.as_secs_f64());
    println!(
        "  restore, snapshot after touch(256):     {d:?} ({:.2}x; target <= 1.2x: {})",
        d.as_secs_f64() / p.as_secs_f64(),
        if d.as_secs_f64() / p.as_secs_f64() <= 1.2 { "met" } else { "MISSED" }
    );
    let runs = |snap: &Snapshot| snap.manifest().memories.iter().map(|m| m.runs.len()).sum::<usize>();
    println!(
        "  restore, touch(256), gaps filled:        {g:?} ({:.2}x; target <= 1.2x: {}); {} runs and {} data pages, against {} and {}",
        g.as_secs_f64() / p.as_secs_f64(),
        if g.as_secs_f64() / p.as_secs_f64() <= 1.2 { "met" } else { "MISSED" },
        runs(dense),
        dense.data_pages(),
        runs(dirty),
        dirty.data_pages()
    );
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
/// and minor faults (the restore is not counted).
fn first_call(s: &Setup, prepared: &PreparedModule, snapshot: &Snapshot, first: FirstCall) -> (Duration, u64) {
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
    (elapsed, minor_faults() - faults)
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
    // Samples: (time, faults) per side.
    let (mut without, mut with, mut warmed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        without.push(first_call(&cold, &cold.prepared, &snapshot, first));
        with.push(first_call(&cold, &prefetching, &with_set, first));
        // The first of the two calls warms the recycled slot the second gets.
        warmed.push(first_call(&warm, &warm.prepared, &snapshot, first));
    }
    assert_eq!(cold._creator.stats().reused, 0, "the cold restores recycle nothing");
    let times = |v: &[(Duration, u64)]| median(v.iter().map(|x| x.0).collect());
    let faults = |v: &[(Duration, u64)]| median(v.iter().map(|x| x.1).collect());
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
    c.bench_function("snapshot_instance/prepared instantiate + touch(16) + drop", |b| b.iter(|| prepared_once(&s)));
    c.bench_function("snapshot_instance/restore + touch(16) + drop", |b| b.iter(|| restored_once(&s, &dirty)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = bench, bench_working_set
}
criterion_main!(benches);
