//! Prepared components: instantiate + drop of a component on framemap
//! (`PreparedComponentInstancePre`, recycled slots, images mapped) against
//! wasmtime's pooling allocator tuned at its best (`wasmtime-pooling-best`:
//! copy-on-write images, 16 MiB kept resident, `PAGEMAP_SCAN` resets) on the
//! same component, each side a new `Store` per instance. Target: framemap
//! ≤ 1.0× pooling-best. Two components: the Rust `wasm32-wasip2` command of
//! framemap-wasmtime's tests (64 KiB table, ~1.1 MiB memory) and the
//! wasi:http handler with a 16 MiB data image of framemap-cli's tests.
//! Imports are defined as traps (instantiation never calls them), so both
//! sides do exactly the instantiation and the drop.
//!
//! Medians of interleaved blocks (both sides alternating, so machine noise
//! hits both alike) are printed with their ratio, then criterion's own
//! statistics.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use framemap_benches::allocator::{Allocator, EngineOptions};
use framemap_benches::workload::interleaved;
use framemap_wasmtime::{PreparedComponent, PreparedComponentInstancePre};
use std::time::Instant;
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, Linker};

const COMPONENTS: [(&str, &str); 2] = [
    ("wasip2-command", "../crates/framemap-wasmtime/tests/guests/wasip2_command.wasm"),
    ("http-16MiB-image", "../crates/framemap-cli/tests/guests/http_image.wasm"),
];

/// The two sides of one component.
struct Sides {
    framemap: (wasmtime::Engine, PreparedComponentInstancePre<()>),
    pooling: (wasmtime::Engine, InstancePre<()>),
}

fn sides(wasm: &[u8]) -> Sides {
    let framemap = Allocator::Framemap.setup(&EngineOptions::default()).expect("framemap engine");
    let creator = framemap.creator.clone().expect("creator");
    let prepared = PreparedComponent::new(&creator, &framemap.engine, wasm).expect("prepare");
    assert!(prepared.not_prepared().is_none(), "{:?}", prepared.not_prepared());
    let mut linker = Linker::new(&framemap.engine);
    linker.define_unknown_imports_as_traps(prepared.component()).expect("traps");
    let framemap_pre = prepared.instance_pre(&linker).expect("pre");

    let pooling = Allocator::WasmtimePoolingBest.setup(&EngineOptions::default()).expect("pooling engine");
    let component = Component::new(&pooling.engine, wasm).expect("component");
    let mut linker = Linker::new(&pooling.engine);
    linker.define_unknown_imports_as_traps(&component).expect("traps");
    let pooling_pre = linker.instantiate_pre(&component).expect("pre");
    Sides { framemap: (framemap.engine, framemap_pre), pooling: (pooling.engine, pooling_pre) }
}

fn framemap_once(side: &(wasmtime::Engine, PreparedComponentInstancePre<()>)) {
    let mut store = Store::new(&side.0, ());
    side.1.instantiate(&mut store).expect("instantiate");
}

fn pooling_once(side: &(wasmtime::Engine, InstancePre<()>)) {
    let mut store = Store::new(&side.0, ());
    side.1.instantiate(&mut store).expect("instantiate");
}

fn median(mut samples: Vec<u64>) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2] as f64 / 1000.0
}

fn bench(c: &mut Criterion) {
    for (name, path) in COMPONENTS {
        let wasm = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + path).expect("guest");
        let sides = sides(&wasm);
        let recorded = interleaved(2, 200, 3000, 50, |i| {
            let start = Instant::now();
            match i {
                0 => framemap_once(&sides.framemap),
                _ => pooling_once(&sides.pooling),
            }
            Ok(start.elapsed())
        })
        .expect("interleaved");
        let (framemap, pooling) = (median(recorded[0].clone()), median(recorded[1].clone()));
        println!(
            "component_instantiate/{name}: framemap {framemap:.1} us, wasmtime-pooling-best {pooling:.1} us, ratio {:.2} (target <= 1.0)",
            framemap / pooling
        );
        let mut group = c.benchmark_group(format!("component_instantiate/{name}"));
        group.bench_function("framemap", |b| b.iter(|| framemap_once(&sides.framemap)));
        group.bench_function("wasmtime-pooling-best", |b| b.iter(|| pooling_once(&sides.pooling)));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
