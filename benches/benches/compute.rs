//! Guest speed parity: a loop summing 64 MiB with `i64` loads, on wasmtime's
//! default memories (`wasmtime-ondemand`) and on framemap's. framemap keeps wasmtime's reservation
//! and guard exactly, so compiled code keeps its bounds-check elision and the
//! two should run at the same speed (target: within 2%).
//!
//! Besides criterion's per-allocator statistics, the bench prints the ratio
//! of medians from an interleaved A/B run in the same process, so machine
//! noise hits both sides alike.

// criterion_group! and criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use framemap_benches::{Allocator, Compute, median};
use std::time::Instant;

fn compute(c: &mut Criterion) {
    let mut group = c.benchmark_group("compute_sum_64mib");
    group.sample_size(20);
    for allocator in Allocator::DEFAULT_AND_FRAMEMAP {
        let mut workload = Compute::new(allocator).expect("instantiate");
        group.bench_function(allocator.name(), |b| b.iter(|| workload.run().expect("run")));
    }
    group.finish();

    let mut workloads: Vec<_> = Allocator::DEFAULT_AND_FRAMEMAP.map(|a| Compute::new(a).expect("instantiate")).into();
    let mut samples = [Vec::new(), Vec::new()];
    for round in 0..41 {
        // Alternate which side goes first to cancel ordering effects.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let start = Instant::now();
            let sum = workloads[i].run().expect("run");
            samples[i].push(start.elapsed().as_secs_f64());
            assert_eq!(sum, Compute::expected());
        }
    }
    let [wasmtime, framemap] = samples.map(|mut s| median(&mut s).unwrap_or(f64::NAN));
    println!(
        "compute_sum_64mib interleaved medians: wasmtime-ondemand {:.3} ms, framemap {:.3} ms, ratio framemap/wasmtime = {:.4}",
        wasmtime * 1e3,
        framemap * 1e3,
        framemap / wasmtime
    );
}

criterion_group!(benches, compute);
criterion_main!(benches);
