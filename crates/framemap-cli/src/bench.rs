//! `framemap bench`: instantiation speed, memory footprint and guest speed of
//! framemap against wasmtime's own allocators, measured in one process.
//!
//! (Over the project's ~600-line rule: measuring, tables, targets and the
//! SVG chart are split into rooms of their own by the house issue.)
//!
//! The built-in workload ([`framemap_benches::builtin`]: a 16 MiB memory
//! whose first 8 MiB are a dense data image) runs on five allocators
//! ([`Allocator::ALL`]); the samples of a (workload, k) group are taken in
//! blocks of [`INSTANTIATE_BLOCK`] consecutive samples per allocator, the
//! blocks rotating across allocators round by round so noise and drift hit
//! all alike (see [`interleaved`]), and every group runs on
//! freshly built engines (a pool keeps state from what it served, which
//! would otherwise carry over from one k to the next). The workloads:
//!
//! - `instantiate`: `Store::new` + instantiate + `touch(k)` + drop, k in
//!   {0, 16, 256}, each allocator recycling as it normally does;
//! - `instantiate-fresh`: the same with framemap's recycling off, against
//!   `wasmtime-ondemand`;
//! - `footprint`: RSS growth and time per instance of 200 live instances
//!   that each dirtied 16 pages (each round on freshly built engines, so no
//!   pool left over from earlier work hides or adds resident memory);
//! - `compute`: one call of the guest's summing loop (12 passes over the
//!   image, about 5 ms), in rounds on freshly built engines (see
//!   `measure_compute`).
//!
//! Results go to stdout as tables and a "targets" section (the ratios the
//! project tracks, computed from the measured medians), or as JSON lines
//! with `--json`; progress goes to stderr. `--module` benchmarks a user's
//! module the same way (no footprint, no targets).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, ensure};
use clap::Args;
use framemap_benches::{
    Allocator, DIRTY_PAGES, EngineOptions, FOOTPRINT_DIRTY_PAGES, FOOTPRINT_INSTANCES, Guest, PoolingLimits, Row,
    Summary, Target, Workload, builtin, footprint, interleaved, median,
};
use framemap_wasmtime::CreatorStats;

/// Arguments of `framemap bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Fast smoke run: 3 samples per row and one footprint round (numbers
    /// are noisy; for tests and CI).
    #[arg(long)]
    pub quick: bool,

    /// Samples per (workload, allocator, k) for the instantiate and compute
    /// workloads, overriding the default (or --quick's). The footprint
    /// workload always measures 200 instances per round.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub samples: Option<u32>,

    /// Print one JSON object per measured row on stdout, nothing else.
    #[arg(long)]
    pub json: bool,

    /// Also write an SVG bar chart of the instantiate medians to FILE.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Benchmark this module (.wasm or .wat) instead of the built-in one:
    /// instantiate (+ call --export once) + drop per allocator, and the
    /// export alone as the compute workload.
    #[arg(long, value_name = "MODULE")]
    pub module: Option<PathBuf>,

    /// With --module: the exported function to call (it must take no
    /// parameters; its results are ignored).
    #[arg(long, value_name = "NAME", requires = "module")]
    pub export: Option<String>,

    /// Consecutive instantiate samples per allocator before the next
    /// allocator's turn (default 50). 1 alternates allocators sample by
    /// sample, which charges each sample with the cache and TLB misses left
    /// by the previous allocator's work (wasmtime-ondemand-copy copies 8 MiB
    /// per sample); larger blocks measure each allocator's steady state.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub block: Option<u32>,

    /// Measure only these allocators (comma-separated names, e.g.
    /// `framemap,wasmtime-pooling-best`); targets that need a missing one
    /// show n/a. For diagnosis: the full comparison needs all of them.
    #[arg(long, value_name = "NAMES", value_delimiter = ',', value_parser = parse_allocator)]
    pub allocators: Vec<Allocator>,
}

/// Parses an allocator name (see [`Allocator::name`]).
fn parse_allocator(name: &str) -> Result<Allocator, String> {
    Allocator::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Allocator::ALL.iter().map(|a| a.name()).collect();
        format!("unknown allocator `{name}` (known: {})", names.join(", "))
    })
}

/// How many samples each part of a run takes, on which allocators.
#[derive(Clone, Debug)]
struct Plan {
    /// The allocators measured, in [`Allocator::ALL`] order.
    allocators: Vec<Allocator>,
    /// Unrecorded instantiate samples per allocator before the recorded ones.
    warmup: usize,
    /// Recorded samples per (instantiate workload, allocator, k).
    samples: usize,
    /// Consecutive instantiate samples per allocator and turn.
    block: usize,
    /// Unrecorded compute calls per allocator.
    compute_warmup: usize,
    /// Recorded compute calls per allocator, over all rounds.
    compute_samples: usize,
    /// Compute rounds on the built-in workload, each on freshly built
    /// engines (see [`measure_compute`]).
    compute_rounds: usize,
    /// Footprint rounds (each measures [`FOOTPRINT_INSTANCES`] instances
    /// per allocator).
    footprint_rounds: usize,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        let mut plan = if args.quick {
            Plan {
                allocators: vec![],
                warmup: 1,
                samples: 3,
                block: INSTANTIATE_BLOCK,
                compute_warmup: 1,
                compute_samples: 3,
                compute_rounds: 1,
                footprint_rounds: 1,
            }
        } else {
            Plan {
                allocators: vec![],
                warmup: 100,
                samples: 2500,
                block: INSTANTIATE_BLOCK,
                compute_warmup: 10,
                compute_samples: 300,
                compute_rounds: COMPUTE_ROUNDS,
                footprint_rounds: 5,
            }
        };
        if let Some(block) = args.block {
            plan.block = block as usize;
        }
        plan.allocators =
            Allocator::ALL.into_iter().filter(|a| args.allocators.is_empty() || args.allocators.contains(a)).collect();
        if let Some(n) = args.samples {
            let n = n as usize;
            plan.samples = n;
            plan.compute_samples = n;
            plan.warmup = plan.warmup.min(n.div_ceil(10).max(1));
        }
        plan
    }
}

/// Consecutive instantiate samples an allocator takes per turn (see
/// [`interleaved`]): long enough that a block measures the allocator's
/// steady state, short enough (about a millisecond at k = 0) that 50 turns
/// per row spread drift over every allocator.
const INSTANTIATE_BLOCK: usize = 50;

/// Compute rounds of a full run on the built-in workload, each on freshly
/// built engines (see [`measure_compute`]).
const COMPUTE_ROUNDS: usize = 5;

/// All measured rows of a run, by (workload, allocator, k).
#[derive(Default)]
struct Results {
    rows: Vec<Row>,
}

impl Results {
    fn get(&self, workload: Workload, allocator: Allocator, k: u32) -> Option<&Row> {
        self.rows.iter().find(|r| r.workload == workload && r.allocator == allocator.name() && r.dirty_pages == k)
    }

    fn median(&self, workload: Workload, allocator: Allocator, k: u32) -> Option<f64> {
        self.get(workload, allocator, k).map(|r| r.summary.median_ns)
    }

    fn push(&mut self, row: Row) {
        progress(&progress_line(&row));
        self.rows.push(row);
    }
}

/// Runs `framemap bench`.
pub fn bench(args: BenchArgs) -> Result<u8> {
    let started = Instant::now();
    let plan = Plan::new(&args);
    let (results, context) = match &args.module {
        Some(path) => bench_module(path, args.export.as_deref(), &plan)?,
        None => bench_builtin(&plan)?,
    };
    let elapsed = started.elapsed();
    if let Some(path) = &args.plot {
        std::fs::write(path, svg_chart(&results, &context))
            .with_context(|| format!("cannot write the plot to `{}`", path.display()))?;
        progress(&format!("plot written to {}", path.display()));
    }
    let mut out = String::new();
    if args.json {
        for row in &results.rows {
            out.push_str(&row.to_json());
            out.push('\n');
        }
    } else {
        out.push_str(&render_tables(&results, &context, &plan));
        if context.builtin {
            out.push_str(&render_targets(&results));
        } else {
            out.push_str("\ntargets: not computed (they are defined on the built-in workload)\n");
        }
        let _ = writeln!(out, "\nmeasured in {:.1} s", elapsed.as_secs_f64());
    }
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).context("cannot write to stdout")?;
    Ok(0)
}

/// What the tables need to know about the run besides the rows.
struct RunContext {
    /// Whether this is the built-in workload (targets apply).
    builtin: bool,
    /// Title of the run, for the tables and the chart.
    title: String,
    /// Notes gathered while setting up (fallbacks, unprepared modules...).
    notes: Vec<String>,
    /// framemap creator counters after each instantiate workload.
    creator_stats: Vec<(Workload, String)>,
}

/// Prints one progress line on stderr.
fn progress(line: &str) {
    eprintln!("framemap bench: {line}");
}

fn progress_line(row: &Row) -> String {
    let mut line = format!(
        "{} k={} {}: median {}, p90 {} ({} samples)",
        row.workload.name(),
        row.dirty_pages,
        row.allocator,
        format_ns(row.summary.median_ns),
        format_ns(row.summary.p90_ns),
        row.summary.samples
    );
    if let Some(rss) = row.rss_kib {
        let _ = write!(line, ", rss +{}", format_kib(rss));
    }
    line
}

/// Builds `allocator`'s target for `wasm`.
fn target(allocator: Allocator, options: &EngineOptions, wasm: &[u8], guest: &Guest) -> Result<Target> {
    let setup = allocator.setup(options)?;
    Target::new(setup, wasm, guest).with_context(|| format!("cannot set up the module on {allocator}"))
}

/// Measures the instantiate workload on `targets` for each k in `ks`.
fn measure_instantiate(
    results: &mut Results,
    workload: Workload,
    targets: &[&Target],
    ks: &[u32],
    plan: &Plan,
) -> Result<()> {
    for &k in ks {
        let times = interleaved(targets.len(), plan.warmup, plan.samples, plan.block, |i| targets[i].sample(k))
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
fn measure_compute<T: std::borrow::Borrow<Target>>(
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

/// framemap creator counters summed over the targets of a workload.
#[derive(Default)]
struct Tally(Option<CreatorStats>);

impl Tally {
    /// Adds `target`'s creator counters (nothing for wasmtime's allocators).
    fn add(&mut self, target: &Target) {
        if let Some(creator) = target.creator() {
            let (s, total) = (creator.stats(), self.0.get_or_insert_with(CreatorStats::default));
            total.created += s.created;
            total.reused += s.reused;
            total.recycled += s.recycled;
            total.released += s.released;
        }
    }

    /// The counters as one line, if any framemap target was added.
    fn line(&self, label: &str) -> Option<String> {
        let s = self.0?;
        Some(format!(
            "framemap creator ({label}): {} memories created, {} reused, {} recycled, {} released",
            s.created, s.reused, s.recycled, s.released
        ))
    }
}

/// The creator counters of one target.
fn tally_of(target: &Target) -> Tally {
    let mut tally = Tally::default();
    tally.add(target);
    tally
}

/// Builds a target of the built-in module for each of `allocators`.
fn builtin_targets(allocators: &[Allocator], options: &EngineOptions, wasm: &[u8]) -> Result<Vec<Target>> {
    allocators.iter().map(|&a| target(a, options, wasm, &Guest::Builtin)).collect()
}

/// The built-in workload on every allocator.
///
/// Every (workload, k) group runs on freshly built engines: an allocator's
/// pool keeps state from what it served (e.g. pages kept resident after a
/// reset), so a group measures the steady state of instances dirtying k
/// pages, not the history of earlier groups. The correctness checks run on
/// engines of their own for the same reason.
fn bench_builtin(plan: &Plan) -> Result<(Results, RunContext)> {
    progress("building the built-in module and checking it on every allocator");
    let wasm = builtin::wasm();
    let image = builtin::image();
    let expected = builtin::expected_compute(&image);
    let recycled = EngineOptions::default();
    let fresh = EngineOptions { framemap_recycling: false, ..EngineOptions::default() };
    let mut context = RunContext {
        builtin: true,
        title: format!(
            "built-in module: {} MiB memory, {} MiB dense data image",
            (builtin::MIN_PAGES as u64) << 16 >> 20,
            builtin::IMAGE_BYTES >> 20
        ),
        notes: Vec::new(),
        creator_stats: Vec::new(),
    };
    let framemap = plan.allocators.contains(&Allocator::Framemap);
    let mut checked = builtin_targets(&plan.allocators, &recycled, &wasm)?;
    if framemap {
        checked.extend(builtin_targets(&[Allocator::Framemap], &fresh, &wasm)?);
    }
    for t in &checked {
        for note in t.notes() {
            progress(&format!("{}: {note}", t.allocator()));
            context.notes.push(format!("{}: {note}", t.allocator()));
        }
        t.verify_builtin(&image).context("the built-in module does not run correctly")?;
    }
    drop(checked);

    let mut results = Results::default();
    let mut tally = Tally::default();
    for k in DIRTY_PAGES {
        let targets = builtin_targets(&plan.allocators, &recycled, &wasm)?;
        let all: Vec<&Target> = targets.iter().collect();
        measure_instantiate(&mut results, Workload::Instantiate, &all, &[k], plan)?;
        targets.iter().for_each(|t| tally.add(t));
    }
    context.creator_stats.extend(tally.line("recycling").map(|l| (Workload::Instantiate, l)));

    let ondemand: Vec<Allocator> =
        plan.allocators.iter().copied().filter(|&a| a == Allocator::WasmtimeOnDemand).collect();
    let mut tally = Tally::default();
    for k in DIRTY_PAGES {
        let mut pair = builtin_targets(&ondemand, &recycled, &wasm)?;
        if framemap {
            pair.extend(builtin_targets(&[Allocator::Framemap], &fresh, &wasm)?);
        }
        if !pair.is_empty() {
            measure_instantiate(
                &mut results,
                Workload::InstantiateFresh,
                &pair.iter().collect::<Vec<_>>(),
                &[k],
                plan,
            )?;
        }
        pair.iter().for_each(|t| tally.add(t));
    }
    context.creator_stats.extend(tally.line("recycling off").map(|l| (Workload::InstantiateFresh, l)));

    measure_footprint(&mut results, &wasm, plan)?;
    measure_compute(&mut results, plan, plan.compute_rounds, Some(expected), |_| {
        builtin_targets(&plan.allocators, &recycled, &wasm)
    })?;
    Ok((results, context))
}

/// The footprint workload: per round and allocator (round-robin), a freshly
/// built engine, one warm-up instance, then [`FOOTPRINT_INSTANCES`] live
/// instances each having dirtied [`FOOTPRINT_DIRTY_PAGES`] pages.
fn measure_footprint(results: &mut Results, wasm: &[u8], plan: &Plan) -> Result<()> {
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

/// A user's module on every allocator that can run it.
fn bench_module(path: &Path, export: Option<&str>, plan: &Plan) -> Result<(Results, RunContext)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read module `{}`", path.display()))?;
    let wasm = framemap_benches::to_binary(&bytes).with_context(|| format!("invalid module `{}`", path.display()))?;
    let limits = PoolingLimits::for_module(&wasm).with_context(|| format!("invalid module `{}`", path.display()))?;
    let guest = Guest::User { export: export.map(str::to_owned) };
    let recycled = EngineOptions { pooling: limits, ..EngineOptions::default() };
    let fresh = EngineOptions { framemap_recycling: false, ..recycled };
    let mut context = RunContext {
        builtin: false,
        title: match export {
            Some(name) => format!("module {} (calling `{name}`)", path.display()),
            None => format!("module {}", path.display()),
        },
        notes: Vec::new(),
        creator_stats: Vec::new(),
    };
    progress(&format!("compiling {} once per allocator", path.display()));

    // The reference allocator first: its errors (invalid module, missing
    // export, a trap) are the module's and end the run.
    let plain = Target::new(Allocator::WasmtimeOnDemand.setup(&recycled)?, &wasm, &Guest::User { export: None })
        .with_context(|| format!("invalid module `{}`", path.display()))?;
    if let Some(name) = export {
        framemap_benches::workload::check_export(plain.module(), name)
            .with_context(|| format!("module `{}`", path.display()))?;
    }
    drop(plain);
    let reference = Target::new(Allocator::WasmtimeOnDemand.setup(&recycled)?, &wasm, &guest)?;
    let running = match export {
        Some(name) => format!("instantiating the module and calling `{name}` failed"),
        None => "instantiating the module failed".to_owned(),
    };
    drop(reference.spawn(0).context(running)?);
    let mut targets = vec![reference];
    for &allocator in &Allocator::ALL[1..] {
        match target(allocator, &recycled, &wasm, &guest).and_then(|t| t.spawn(0).map(drop).map(|()| t)) {
            Ok(t) => targets.push(t),
            Err(err) => {
                let note = format!("{allocator}: skipped: {err:#}");
                progress(&note);
                context.notes.push(note);
            }
        }
    }
    let framemap_fresh =
        target(Allocator::Framemap, &fresh, &wasm, &guest).and_then(|t| t.spawn(0).map(drop).map(|()| t));
    for t in &targets {
        for note in t.notes() {
            progress(&format!("{}: {note}", t.allocator()));
            context.notes.push(format!("{}: {note}", t.allocator()));
        }
    }

    let selected = |t: &&Target| plan.allocators.contains(&t.allocator());
    let mut results = Results::default();
    let all: Vec<&Target> = targets.iter().filter(selected).collect();
    measure_instantiate(&mut results, Workload::Instantiate, &all, &[0], plan)?;
    if let Some(t) = all.iter().find(|t| t.allocator() == Allocator::Framemap) {
        context.creator_stats.extend(tally_of(t).line("recycling").map(|l| (Workload::Instantiate, l)));
    }
    match framemap_fresh {
        Ok(fresh) => {
            let pair: Vec<&Target> = [&targets[0], &fresh].into_iter().filter(selected).collect();
            if !pair.is_empty() {
                measure_instantiate(&mut results, Workload::InstantiateFresh, &pair, &[0], plan)?;
            }
            context
                .creator_stats
                .extend(tally_of(&fresh).line("recycling off").map(|l| (Workload::InstantiateFresh, l)));
        }
        Err(err) => context.notes.push(format!("framemap (recycling off): skipped: {err:#}")),
    }
    if export.is_some() {
        // The user's targets are built once (their setup may be costly).
        measure_compute(&mut results, plan, 1, None, |_| Ok(all.clone()))?;
    }
    Ok((results, context))
}

/// `ns` with a unit that keeps 3 significant digits.
fn format_ns(ns: f64) -> String {
    if !ns.is_finite() {
        return "n/a".to_owned();
    }
    let (value, unit) = match ns {
        n if n < 1e3 => (n, "ns"),
        n if n < 1e6 => (n / 1e3, "µs"),
        n if n < 1e9 => (n / 1e6, "ms"),
        n => (n / 1e9, "s"),
    };
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} {unit}")
}

/// `kib` as KiB or MiB.
fn format_kib(kib: u64) -> String {
    if kib < 10 * 1024 { format!("{kib} KiB") } else { format!("{:.1} MiB", kib as f64 / 1024.0) }
}

/// A ratio with 2 (or, for small ones, 3) significant decimals.
fn format_ratio(r: f64) -> String {
    if !r.is_finite() {
        "n/a".to_owned()
    } else if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// Describes each workload's sample.
fn workload_caption(workload: Workload, plan_context: &RunContext) -> &'static str {
    match (workload, plan_context.builtin) {
        (Workload::Instantiate, true) => "Store::new + instantiate + touch(k) + drop; allocators recycle as usual",
        (Workload::InstantiateFresh, true) => "the same with framemap's recycling off (a fresh mapping per instance)",
        (Workload::Instantiate, false) => "Store::new + instantiate (+ call the export once) + drop",
        (Workload::InstantiateFresh, false) => "the same with framemap's recycling off",
        (Workload::Footprint, _) => "200 live instances, each having dirtied 16 pages; time per instance",
        (Workload::Compute, true) => "one call of `run`: 96 MiB of i64 loads over the image (12 passes)",
        (Workload::Compute, false) => "one call of the export",
    }
}

/// The result tables, one per workload.
fn render_tables(results: &Results, context: &RunContext, plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "framemap bench: {}", context.title);
    let _ = write!(
        out,
        "samples per row: {} (after {} warm-up samples; allocators take turns in blocks of {}); compute: {}",
        plan.samples, plan.warmup, plan.block, plan.compute_samples
    );
    if context.builtin && plan.compute_rounds > 1 {
        let _ = write!(out, " in {} rounds on freshly built engines", plan.compute_rounds);
    }
    if context.builtin {
        let _ = write!(
            out,
            "; footprint: {} round(s) of {} instances on freshly built engines",
            plan.footprint_rounds, FOOTPRINT_INSTANCES
        );
    }
    out.push('\n');
    for note in &context.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for workload in Workload::ALL {
        let rows: Vec<&Row> = results.rows.iter().filter(|r| r.workload == workload).collect();
        if rows.is_empty() {
            continue;
        }
        let footprint = workload == Workload::Footprint;
        let _ = writeln!(out, "\n{} — {}", workload.name(), workload_caption(workload, context));
        let _ = write!(out, "  {:<24} {:>4} {:>10} {:>10}", "allocator", "k", "median", "p90");
        if footprint {
            let _ = write!(out, " {:>12} {:>14}", "rss growth", "per instance");
        }
        let _ = writeln!(out, "   framemap is");
        for row in &rows {
            let framemap = rows
                .iter()
                .find(|r| r.allocator == Allocator::Framemap.name() && r.dirty_pages == row.dirty_pages)
                .map(|r| (r.summary.median_ns, r.rss_kib));
            let _ = write!(
                out,
                "  {:<24} {:>4} {:>10} {:>10}",
                row.allocator,
                row.dirty_pages,
                format_ns(row.summary.median_ns),
                format_ns(row.summary.p90_ns)
            );
            if let Some(rss) = row.rss_kib {
                let per = rss as f64 / FOOTPRINT_INSTANCES as f64;
                let _ = write!(out, " {:>12} {:>14}", format_kib(rss), format!("{per:.0} KiB"));
            }
            match framemap {
                Some(_) if row.allocator == Allocator::Framemap.name() => {
                    let _ = write!(out, "   —");
                }
                Some((time, rss)) => {
                    let _ = write!(out, "   {}× this", format_ratio(time / row.summary.median_ns));
                    if let (Some(f), Some(r)) = (rss, row.rss_kib) {
                        let _ = write!(out, " (rss {}×)", format_ratio(f as f64 / r.max(1) as f64));
                    }
                }
                None => {}
            }
            out.push('\n');
        }
        for (_, line) in context.creator_stats.iter().filter(|(w, _)| *w == workload) {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// One tracked ratio and whether it meets its target.
struct TargetCheck {
    label: String,
    value: Option<f64>,
    goal: Goal,
    detail: String,
}

/// A target on a ratio.
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
    /// At least the same ratio measured for wasmtime-pooling-best in the
    /// same run (see the reference section).
    Reference(f64),
}

impl Goal {
    fn met(self, v: f64) -> bool {
        match self {
            Goal::AtMost(max) => v <= max,
            Goal::AtLeast(min) | Goal::Reference(min) => v >= min,
        }
    }

    fn describe(self) -> String {
        match self {
            Goal::AtMost(max) => format!("≤ {max}"),
            Goal::AtLeast(min) => format!("≥ {min}"),
            Goal::Reference(min) if min.is_finite() => format!("≥ {} (pooling-best's)", format_ratio(min)),
            Goal::Reference(_) => "≥ pooling-best's".to_owned(),
        }
    }
}

/// `a / b`, if both medians were measured and `b` is positive.
fn median_ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// The two medians of a ratio, as "a / b", or "not measured".
fn show_medians(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{} / {}", format_ns(a), format_ns(b)),
        _ => "not measured".to_owned(),
    }
}

/// The ratios the project tracks, from the measured medians.
fn target_checks(results: &Results) -> Vec<TargetCheck> {
    use Allocator::*;
    use Workload::*;
    let mut checks = Vec::new();
    for k in DIRTY_PAGES {
        let (f, p) = (results.median(Instantiate, Framemap, k), results.median(Instantiate, WasmtimePoolingBest, k));
        checks.push(TargetCheck {
            label: format!("instantiate k={k}: framemap / wasmtime-pooling-best"),
            value: median_ratio(f, p),
            goal: Goal::AtMost(1.0),
            detail: show_medians(f, p),
        });
    }
    // The speed-up over on-demand at k=16 is at least what wasmtime's own
    // best pooling setup reaches in the same run: recycling that does the
    // same kernel work (a fixed "8x" assumed one machine's page-fault cost).
    let (o, f) = (results.median(Instantiate, WasmtimeOnDemand, 16), results.median(Instantiate, Framemap, 16));
    let pooling_best = median_ratio(o, results.median(Instantiate, WasmtimePoolingBest, 16));
    checks.push(TargetCheck {
        label: "instantiate k=16: wasmtime-ondemand / framemap".to_owned(),
        value: median_ratio(o, f).filter(|_| pooling_best.is_some()),
        goal: Goal::Reference(pooling_best.unwrap_or(f64::INFINITY)),
        detail: show_medians(o, f),
    });
    let (c, f) = (results.median(Instantiate, WasmtimeOnDemandCopy, 0), results.median(Instantiate, Framemap, 0));
    checks.push(TargetCheck {
        label: "instantiate k=0: wasmtime-ondemand-copy / framemap".to_owned(),
        value: median_ratio(c, f),
        goal: Goal::AtLeast(100.0),
        detail: show_medians(c, f),
    });
    for k in DIRTY_PAGES {
        let (f, o) =
            (results.median(InstantiateFresh, Framemap, k), results.median(InstantiateFresh, WasmtimeOnDemand, k));
        checks.push(TargetCheck {
            label: format!("instantiate-fresh k={k}: framemap / wasmtime-ondemand"),
            value: median_ratio(f, o),
            goal: Goal::AtMost(1.2),
            detail: show_medians(f, o),
        });
    }
    let page = framemap::host_page_size() as u64;
    let ideal_kib =
        (FOOTPRINT_INSTANCES as u64 * u64::from(FOOTPRINT_DIRTY_PAGES) * page + u64::from(builtin::IMAGE_BYTES)) / 1024;
    let rss = results.get(Footprint, Framemap, FOOTPRINT_DIRTY_PAGES).and_then(|r| r.rss_kib);
    checks.push(TargetCheck {
        label: format!(
            "footprint: framemap rss / ({FOOTPRINT_INSTANCES} × {} KiB + {} MiB image)",
            u64::from(FOOTPRINT_DIRTY_PAGES) * page / 1024,
            builtin::IMAGE_BYTES >> 20
        ),
        value: rss.map(|r| r as f64 / ideal_kib as f64),
        goal: Goal::AtMost(1.05),
        detail: match rss {
            Some(r) => format!("{} / {}", format_kib(r), format_kib(ideal_kib)),
            None => "not measured".to_owned(),
        },
    });
    let (f, o) = (results.median(Compute, Framemap, 0), results.median(Compute, WasmtimeOnDemand, 0));
    // Guest code runs no more than 2% slower (faster is no miss).
    checks.push(TargetCheck {
        label: "compute: framemap / wasmtime-ondemand".to_owned(),
        value: median_ratio(f, o),
        goal: Goal::AtMost(1.02),
        detail: show_medians(f, o),
    });
    checks
}

/// The "targets" section.
fn render_targets(results: &Results) -> String {
    let checks = target_checks(results);
    let mut out = String::from("\ntargets — ratios of the medians above\n");
    let width = checks.iter().map(|c| c.label.chars().count()).max().unwrap_or(0);
    let mut met = 0;
    for check in &checks {
        let (value, verdict) = match check.value {
            Some(v) if check.goal.met(v) => {
                met += 1;
                (format_ratio(v), "PASS")
            }
            Some(v) => (format_ratio(v), "MISS"),
            None => ("n/a".to_owned(), "MISS"),
        };
        let pad = width - check.label.chars().count();
        let _ = writeln!(
            out,
            "  {}{} {:>7}  target {:<10} {}  ({})",
            check.label,
            " ".repeat(pad),
            value,
            check.goal.describe(),
            verdict,
            check.detail
        );
    }
    let _ = writeln!(out, "  {met} of {} targets met", checks.len());
    out.push_str(&render_references(results));
    out
}

/// The same ratios that the speed-up targets take, with wasmtime's own best
/// pooling setup in framemap's place: what recycling can reach on this
/// machine when it does the same kernel work (one dirty-page scan and one
/// page copy per dirtied page). Context for the targets, not targets.
fn reference_checks(results: &Results) -> Vec<(String, Option<f64>, String)> {
    use Allocator::*;
    use Workload::Instantiate;
    let pair = |num: Allocator, den: Allocator, k: u32| {
        let (a, b) = (results.median(Instantiate, num, k), results.median(Instantiate, den, k));
        (format!("instantiate k={k}: {} / {}", num.name(), den.name()), median_ratio(a, b), show_medians(a, b))
    };
    vec![pair(WasmtimeOnDemand, WasmtimePoolingBest, 16), pair(WasmtimeOnDemandCopy, WasmtimePoolingBest, 0)]
}

/// The "reference" lines under the targets (see [`reference_checks`]).
fn render_references(results: &Results) -> String {
    let mut out = String::from("\nreference — the same ratios for wasmtime's own best pooling setup (not targets)\n");
    let refs = reference_checks(results);
    let width = refs.iter().map(|(label, ..)| label.chars().count()).max().unwrap_or(0);
    for (label, value, detail) in refs {
        let pad = width - label.chars().count();
        let value = value.map_or_else(|| "n/a".to_owned(), format_ratio);
        let _ = writeln!(out, "  {label}{} {value:>7}  ({detail})", " ".repeat(pad));
    }
    out
}

/// Escapes `s` for SVG text.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Colours of the allocators' bars, in [`Allocator::ALL`] order.
const COLOURS: [&str; 5] = ["#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d", "#59a14f"];

/// An SVG chart: grouped bars of the instantiate medians, one group per k,
/// one bar per allocator, on a log scale.
fn svg_chart(results: &Results, context: &RunContext) -> String {
    let headline = match context.builtin {
        true => "Instantiate + touch k pages + drop: median per sample (log scale)",
        false => "Instantiate (+ call the export) + drop: median per sample (log scale)",
    };
    let rows: Vec<&Row> = results.rows.iter().filter(|r| r.workload == Workload::Instantiate).collect();
    let mut ks: Vec<u32> = rows.iter().map(|r| r.dirty_pages).collect();
    ks.sort_unstable();
    ks.dedup();
    let allocators: Vec<Allocator> =
        Allocator::ALL.into_iter().filter(|a| rows.iter().any(|r| r.allocator == a.name())).collect();
    let (width, height) = (960.0_f64, 540.0_f64);
    let (left, right, top, bottom) = (90.0, 230.0, 60.0, 70.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let values: Vec<f64> = rows.iter().map(|r| r.summary.median_ns).filter(|v| *v > 0.0).collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo_exp, hi_exp) = if values.is_empty() {
        (2, 6)
    } else {
        let lo_exp = lo.log10().floor() as i32;
        (lo_exp, (hi.log10().ceil() as i32).max(lo_exp + 1))
    };
    let y = |v: f64| {
        let t = (v.max(10f64.powi(lo_exp)).log10() - f64::from(lo_exp)) / f64::from(hi_exp - lo_exp);
        top + plot_h * (1.0 - t)
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="28" font-size="17" text-anchor="middle">{headline}</text>"#, width / 2.0);
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="47" font-size="12" text-anchor="middle" fill="#555">{}</text>"##,
        width / 2.0,
        xml_escape(&context.title)
    );
    for e in lo_exp..=hi_exp {
        let v = 10f64.powi(e);
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="12" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 8.0,
            yy + 4.0,
            format_ns(v).replace(".00 ", " ").replace(".0 ", " ")
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" x2="{left}" y1="{top}" y2="{}" stroke="#333"/><line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="#333"/>"##,
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h
    );
    let group_w = plot_w / ks.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / allocators.len().max(1) as f64;
    for (g, &k) in ks.iter().enumerate() {
        let gx = left + group_w * g as f64 + group_w * 0.1;
        for (b, allocator) in allocators.iter().enumerate() {
            let Some(row) = rows.iter().find(|r| r.allocator == allocator.name() && r.dirty_pages == k) else {
                continue;
            };
            let colour = COLOURS[Allocator::ALL.iter().position(|a| a == allocator).unwrap_or(0) % COLOURS.len()];
            let x = gx + bar_w * b as f64;
            let yy = y(row.summary.median_ns);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} k={k}: median {}, p90 {}</title></rect>"#,
                bar_w * 0.92,
                (top + plot_h - yy).max(0.0),
                allocator.name(),
                format_ns(row.summary.median_ns),
                format_ns(row.summary.p90_ns)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                x + bar_w * 0.46,
                yy - 4.0,
                xml_escape(&format_ns(row.summary.median_ns))
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="14" text-anchor="middle">k = {k} dirty pages</text>"#,
            gx + group_w * 0.4,
            top + plot_h + 24.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="22" y="{:.1}" font-size="13" text-anchor="middle" transform="rotate(-90 22 {:.1})">median time per sample</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    for (i, allocator) in allocators.iter().enumerate() {
        let ly = top + 10.0 + 24.0 * i as f64;
        let lx = left + plot_w + 20.0;
        let colour = COLOURS[Allocator::ALL.iter().position(|a| a == allocator).unwrap_or(0) % COLOURS.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{ly}" width="14" height="14" fill="{colour}"/><text x="{}" y="{}" font-size="13">{}</text>"#,
            lx + 20.0,
            ly + 12.0,
            allocator.name()
        );
    }
    svg.push_str("</svg>\n");
    svg
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

    #[test]
    fn formats() {
        assert_eq!(format_ns(950.0), "950 ns");
        assert_eq!(format_ns(12_345.0), "12.3 µs");
        assert_eq!(format_ns(1_234_567.0), "1.23 ms");
        assert_eq!(format_ratio(0.4234), "0.42");
        assert_eq!(format_ratio(123.4), "123");
        assert_eq!(format_kib(20_480), "20.0 MiB");
    }

    #[test]
    fn goals() {
        assert!(Goal::AtMost(1.0).met(1.0) && !Goal::AtMost(1.0).met(1.01));
        assert!(Goal::AtLeast(100.0).met(101.0) && !Goal::AtLeast(100.0).met(99.9));
        assert!(Goal::Reference(5.8).met(5.9) && !Goal::Reference(5.8).met(5.7));
        assert_eq!(Goal::Reference(5.79).describe(), "≥ 5.79 (pooling-best's)");
    }

    #[test]
    fn the_k16_speed_up_target_is_pooling_best_s_own_ratio() {
        let row = |allocator: Allocator, workload, k, median_ns| Row {
            workload,
            allocator: allocator.name(),
            dirty_pages: k,
            summary: Summary { median_ns, p90_ns: median_ns, samples: 1 },
            rss_kib: None,
        };
        let check = |framemap_ns| {
            let results = Results {
                rows: vec![
                    row(Allocator::WasmtimeOnDemand, Workload::Instantiate, 16, 24_000.0),
                    row(Allocator::WasmtimePoolingBest, Workload::Instantiate, 16, 4_000.0),
                    row(Allocator::Framemap, Workload::Instantiate, 16, framemap_ns),
                    row(Allocator::Framemap, Workload::Compute, 0, 0.9),
                    row(Allocator::WasmtimeOnDemand, Workload::Compute, 0, 1.0),
                ],
            };
            let checks = target_checks(&results);
            let speed_up = checks.iter().find(|c| c.label == "instantiate k=16: wasmtime-ondemand / framemap").unwrap();
            let compute = checks.iter().find(|c| c.label.starts_with("compute")).unwrap();
            assert!(compute.goal.met(compute.value.unwrap()), "10% faster compute is no miss");
            speed_up.goal.met(speed_up.value.unwrap())
        };
        // pooling-best reaches 24 / 4 = 6: framemap at 3.9 us (6.15) meets it,
        // at 4.1 us (5.85) misses it.
        assert!(check(3_900.0));
        assert!(!check(4_100.0));
    }

    #[test]
    fn references_are_wasmtime_against_its_own_best_pooling() {
        let row = |allocator: Allocator, k, median_ns| Row {
            workload: Workload::Instantiate,
            allocator: allocator.name(),
            dirty_pages: k,
            summary: Summary { median_ns, p90_ns: median_ns, samples: 1 },
            rss_kib: None,
        };
        let results = Results {
            rows: vec![
                row(Allocator::WasmtimeOnDemand, 16, 30_000.0),
                row(Allocator::WasmtimePoolingBest, 16, 5_000.0),
                row(Allocator::WasmtimeOnDemandCopy, 0, 4_000_000.0),
                row(Allocator::WasmtimePoolingBest, 0, 2_000.0),
                row(Allocator::Framemap, 16, 1.0),
            ],
        };
        let refs = reference_checks(&results);
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].1, Some(6.0), "{:?}", refs[0]);
        assert_eq!(refs[1].1, Some(2000.0), "{:?}", refs[1]);
        assert!(render_references(&results).contains("(30.0 µs / 5.00 µs)"), "{}", render_references(&results));
    }

    #[test]
    fn missing_rows_are_misses_not_panics() {
        let results = Results::default();
        let text = render_targets(&results);
        assert!(text.contains("0 of 10 targets met"), "{text}");
        let reference = text.lines().find(|l| l.contains("k=16: wasmtime-ondemand / wasmtime-pooling-best"));
        assert!(reference.is_some_and(|l| l.contains(" n/a  (not measured)")), "{text}");
        let context = RunContext { builtin: true, title: "t".into(), notes: vec![], creator_stats: vec![] };
        assert!(svg_chart(&results, &context).starts_with("<svg"));
    }
}
