//! Instantiation on each allocator: `Store::new` + instantiate the built-in
//! module (16 MiB memory, dense 8 MiB data image) + `touch(k)` dirtying k
//! pages of the image + drop the store, for k in {0, 16, 256}, on
//! wasmtime's on-demand (copy-on-write and copying), pooling (default and
//! tuned) allocators and on framemap (recycling, and fresh mappings).
//!
//! The workload code is `framemap_benches::Target`, the same `framemap bench`
//! times, so the two measure the same thing; as there, each (k, allocator)
//! runs on a freshly built engine, so no pool carries state between groups.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use framemap_benches::{Allocator, DIRTY_PAGES, EngineOptions, Guest, Target, builtin};
use std::time::Duration;

fn instantiate(c: &mut Criterion) {
    let wasm = builtin::wasm();
    let image = builtin::image();
    let recycled = EngineOptions::default();
    let fresh = EngineOptions { framemap_recycling: false, ..EngineOptions::default() };
    let allocators: Vec<(&str, Allocator, &EngineOptions)> = Allocator::ALL
        .iter()
        .map(|&a| (a.name(), a, &recycled))
        .chain([("framemap-fresh", Allocator::Framemap, &fresh)])
        .collect();
    let target = |allocator: Allocator, options: &EngineOptions| {
        let setup = allocator.setup(options).expect("engine");
        Target::new(setup, &wasm, &Guest::Builtin).expect("compile")
    };
    // Correctness first, on engines of its own: a pool keeps state from what
    // it served, so every measured group below starts from fresh engines.
    for &(name, allocator, options) in &allocators {
        target(allocator, options).verify_builtin(&image).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }

    for k in DIRTY_PAGES {
        let mut group = c.benchmark_group(format!("instantiate_k{k}"));
        group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        for &(name, allocator, options) in &allocators {
            let target = target(allocator, options);
            group.bench_with_input(BenchmarkId::from_parameter(name), &k, |b, &k| {
                b.iter(|| drop(target.spawn(k).expect("instantiate")))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, instantiate);
criterion_main!(benches);
