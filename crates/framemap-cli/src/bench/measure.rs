//! Measuring: instantiate samples in rotating blocks, compute calls in rounds
//! on fresh engines, the footprint of many live instances, and framemap's
//! creator counters over a workload.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use framemap_benches::{
    Allocator, EngineOptions, FOOTPRINT_DIRTY_PAGES, FOOTPRINT_INSTANCES, Guest, Row, Summary, Target, Touch, Workload,
    footprint, interleaved, median,
};
use framemap_wasmtime::CreatorStats;

use super::{Plan, Results};

/// Builds `allocator`'s target for `wasm`.
pub(super) fn target(allocator: Allocator, options: &EngineOptions, wasm: &[u8], guest: &Guest) -> Result<Target> {
    let setup = allocator.setup(options)?;
    Target::new(setup, wasm, guest).with_context(|| format!("cannot set up the module on {allocator}"))
}

/// Builds a target of the built-in module for each of `allocators`.
pub(super) fn builtin_targets(allocators: &[Allocator], options: &EngineOptions, wasm: &[u8]) -> Result<Vec<Target>> {
    allocators.iter().map(|&a| target(a, options, wasm, &Guest::Builtin)).collect()
}

/// How `workload`'s instances dirty their k pages.
fn touch_of(workload: Workload) -> Touch {
    match workload {
        Workload::InstantiateContiguous => Touch::Contiguous,
        _ => Touch::Scattered,
    }
}

/// Measures the instantiate `workload` on `targets` for each k in `ks`
/// (`instantiate-contiguous` dirties the k pages as one run).
pub(super) fn measure_instantiate(
    results: &mut Results,
    workload: Workload,
    targets: &[&Target],
    ks: &[u32],
    plan: &Plan,
) -> Result<()> {
    let touch = touch_of(workload);
    for &k in ks {
        let times =
            interleaved(targets.len(), plan.warmup, plan.samples, plan.block, |i| targets[i].sample_touching(k, touch))
                .with_context(|| format!("{} k={k} failed", workload.name()))?;
        for (target, nanos) in targets.iter().zip(times) {
            let summary = Summary::of_nanos(&nanos).context("no samples")?;
            let allocator = target.allocator().name();
            results.push(Row { workload, allocator, dirty_pages: k, summary, rss_kib: None });
        }
    }
    Ok(())
}

/// Measures the compute workload over `rounds` rounds, each on the targets
/// `round_targets(round)` builds (the built-in workload builds fresh engines
/// per round); `expected` (if given) is what each call must return. The
/// rows hold every round's samples.
///
/// Why rounds: a guest's loads run from the physical pages that back its
/// image, and which pages an engine gets (and how the host backs them)
/// changes its compute time by a few percent for the whole life of the
/// engine: in one run two wasmtime pooling engines with the same memory
/// code measured 4.97 and 5.28 ms. Fresh engines per round spread that luck
/// over every allocator instead of fixing it once per run.
pub(super) fn measure_compute<T: std::borrow::Borrow<Target>>(
    results: &mut Results,
    plan: &Plan,
    rounds: usize,
    expected: Option<i64>,
    mut round_targets: impl FnMut(usize) -> Result<Vec<T>>,
) -> Result<()> {
    // Every round takes at least one sample.
    let rounds = rounds.clamp(1, plan.compute_samples.max(1));
    let mut recorded: Vec<(Allocator, Vec<u64>)> = Vec::new();
    for round in 0..rounds {
        let targets = round_targets(round)?;
        let mut runners = Vec::new();
        for target in &targets {
            let target = target.borrow();
            let mut runner = target.runner()?.context("the module has no compute export")?;
            let got = runner.run().with_context(|| format!("compute on {} failed", target.allocator()))?;
            if let Some(want) = expected {
                ensure!(got == Some(want), "compute on {} returned {got:?}, expected {want}", target.allocator());
            }
            runners.push(runner);
        }
        let samples = round_share(plan.compute_samples, rounds, round);
        // One ~5 ms call per turn: each call dwarfs any state the previous
        // one left in the caches.
        let times = interleaved(runners.len(), plan.compute_warmup, samples, 1, |i| runners[i].sample())
            .context("compute failed")?;
        for (target, nanos) in targets.iter().zip(times) {
            let allocator = target.borrow().allocator();
            match recorded.iter_mut().find(|(a, _)| *a == allocator) {
                Some((_, all)) => all.extend(nanos),
                None => recorded.push((allocator, nanos)),
            }
        }
    }
    for (allocator, nanos) in recorded {
        let summary = Summary::of_nanos(&nanos).context("no samples")?;
        results.push(Row {
            workload: Workload::Compute,
            allocator: allocator.name(),
            dirty_pages: 0,
            summary,
            rss_kib: None,
        });
    }
    Ok(())
}

/// Round `round`'s share of `total` samples split over `rounds` rounds: the
/// shares differ by at most one and add up to `total`.
fn round_share(total: usize, rounds: usize, round: usize) -> usize {
    total * (round + 1) / rounds - total * round / rounds
}

/// The footprint workload: per round and allocator (round-robin), a freshly
/// built engine, one warm-up instance, then [`FOOTPRINT_INSTANCES`] live
/// instances each having dirtied [`FOOTPRINT_DIRTY_PAGES`] pages.
pub(super) fn measure_footprint(results: &mut Results, wasm: &[u8], plan: &Plan) -> Result<()> {
    let options = EngineOptions::default();
    let mut times: BTreeMap<Allocator, Vec<u64>> = BTreeMap::new();
    let mut rss: BTreeMap<Allocator, Vec<f64>> = BTreeMap::new();
    let n = plan.allocators.len();
    for round in 0..plan.footprint_rounds {
        for j in 0..n {
            let allocator = plan.allocators[(round + j) % n];
            let target = target(allocator, &options, wasm, &Guest::Builtin)?;
            drop(target.spawn(0)?);
            let measured = footprint(&target, FOOTPRINT_INSTANCES, FOOTPRINT_DIRTY_PAGES)
                .with_context(|| format!("footprint on {allocator} failed"))?;
            times.entry(allocator).or_default().extend(measured.per_instance_ns);
            rss.entry(allocator).or_default().push(measured.rss_bytes as f64);
        }
    }
    for &allocator in &plan.allocators {
        let summary = Summary::of_nanos(&times[&allocator]).context("no samples")?;
        let rss_bytes = median(rss.get_mut(&allocator).context("no rss")?).context("no rss")?;
        results.push(Row {
            workload: Workload::Footprint,
            allocator: allocator.name(),
            dirty_pages: FOOTPRINT_DIRTY_PAGES,
            summary,
            rss_kib: Some((rss_bytes / 1024.0).round() as u64),
        });
    }
    Ok(())
}

/// framemap creator counters summed over the targets of a workload.
#[derive(Default)]
pub(super) struct Tally(Option<CreatorStats>);

impl Tally {
    /// Adds `target`'s creator counters (nothing for wasmtime's allocators).
    pub(super) fn add(&mut self, target: &Target) {
        if let Some(creator) = target.creator() {
            let (s, total) = (creator.stats(), self.0.get_or_insert_with(CreatorStats::default));
            total.created += s.created;
            total.reused += s.reused;
            total.recycled += s.recycled;
            total.released += s.released;
        }
    }

    /// The counters as one line, if any framemap target was added.
    pub(super) fn line(&self, label: &str) -> Option<String> {
        let s = self.0?;
        Some(format!(
            "framemap creator ({label}): {} memories created, {} reused, {} recycled, {} released",
            s.created, s.reused, s.recycled, s.released
        ))
    }
}

/// The creator counters of one target.
pub(super) fn tally_of(target: &Target) -> Tally {
    let mut tally = Tally::default();
    tally.add(target);
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_rounds_share_out_every_sample() {
        for (total, rounds) in [(300, 5), (3, 1), (7, 5), (5, 5), (1, 1), (301, 5)] {
            let shares: Vec<usize> = (0..rounds).map(|r| round_share(total, rounds, r)).collect();
            assert_eq!(shares.iter().sum::<usize>(), total, "{total} over {rounds}");
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(max - min <= 1 && *min >= 1, "{total} over {rounds}: {shares:?}");
        }
        assert_eq!((0..5).map(|r| round_share(300, 5, r)).collect::<Vec<_>>(), vec![60; 5]);
    }
}
