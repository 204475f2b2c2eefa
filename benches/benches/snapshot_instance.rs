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

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use framemap::snapshot::{Snapshot, SnapshotWriter};
use framemap_benches::builtin;
use framemap_wasmtime::{FrameMemoryCreator, PreparedModule, engine};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Config, Engine, Instance, Store};

struct Setup {
    engine: Engine,
    prepared: PreparedModule,
    _creator: Arc<FrameMemoryCreator>,
}

fn setup() -> Setup {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&mut Config::new(), creator.clone()).expect("engine");
    let prepared = PreparedModule::with_snapshots(&creator, &engine, builtin::wasm()).expect("prepared");
    assert!(prepared.not_prepared().is_none(), "the built-in module is prepared");
    Setup { engine, prepared, _creator: creator }
}

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

fn median(mut v: Vec<Duration>) -> Duration {
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

fn bench(c: &mut Criterion) {
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
    targets = bench
}
criterion_main!(benches);
