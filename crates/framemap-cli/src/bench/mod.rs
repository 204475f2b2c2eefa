//! `framemap bench`: instantiation speed, memory footprint and guest speed of
//! framemap against wasmtime's own allocators, measured in one process.
//!
//! This module holds the arguments, the plan of a run and its entry point
//! [`bench`]; [`runs`] says what a run measures in which order, [`measure`]
//! times it, [`render`] writes the tables, [`targets`] the tracked ratios and
//! [`chart`] the SVG chart.
//!
//! The built-in workload ([`framemap_benches::builtin`]: a 16 MiB memory
//! whose first 8 MiB are a dense data image) runs on five allocators
//! ([`Allocator::ALL`]); the samples of a (workload, k) group are taken in
//! blocks of [`INSTANTIATE_BLOCK`] consecutive samples per allocator, the
//! blocks rotating across allocators round by round so noise and drift hit
//! all alike (see [`framemap_benches::interleaved`]), and every group runs on
//! freshly built engines (a pool keeps state from what it served, which
//! would otherwise carry over from one k to the next). The workloads:
//!
//! - `instantiate`: `Store::new` + instantiate + `touch(k)` + drop, k in
//!   {0, 16, 256}, each allocator recycling as it normally does;
//! - `instantiate-contiguous`: the same with the k pages dirtied as one
//!   contiguous run (`touch_run(k)`), k in {16, 256}: wasmtime's pooling
//!   reset restores at most 32 dirty regions in place, so scattered and
//!   contiguous pages cost it differently;
//! - `instantiate-fresh`: the same with framemap's recycling off, against
//!   `wasmtime-ondemand`;
//! - `footprint`: RSS growth and time per instance of 200 live instances
//!   that each dirtied 16 pages (each round on freshly built engines, so no
//!   pool left over from earlier work hides or adds resident memory);
//! - `compute`: one call of the guest's summing loop (12 passes over the
//!   image, about 5 ms), in rounds on freshly built engines (see
//!   [`measure::measure_compute`]).
//!
//! Results go to stdout as tables and a "targets" section (the ratios the
//! project tracks, computed from the measured medians, then reference and
//! contiguous ratios that are not targets), or as JSON lines
//! with `--json`; progress goes to stderr. `--module` benchmarks a user's
//! module the same way (no footprint, no targets).

mod chart;
mod measure;
mod render;
mod runs;
mod targets;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::Args;
use framemap_benches::{Allocator, Row, Workload};

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
    /// engines (see [`measure::measure_compute`]).
    compute_rounds: usize,
    /// Footprint rounds (each measures
    /// [`framemap_benches::FOOTPRINT_INSTANCES`] instances per allocator).
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
/// [`framemap_benches::interleaved`]): long enough that a block measures the
/// allocator's steady state, short enough (about a millisecond at k = 0)
/// that 50 turns per row spread drift over every allocator.
const INSTANTIATE_BLOCK: usize = 50;

/// Compute rounds of a full run on the built-in workload, each on freshly
/// built engines (see [`measure::measure_compute`]).
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
        progress(&render::progress_line(&row));
        self.rows.push(row);
    }
}

/// Runs `framemap bench`.
pub fn bench(args: BenchArgs) -> Result<u8> {
    let started = Instant::now();
    let plan = Plan::new(&args);
    let (results, context) = match &args.module {
        Some(path) => runs::bench_module(path, args.export.as_deref(), &plan)?,
        None => runs::bench_builtin(&plan)?,
    };
    let elapsed = started.elapsed();
    if let Some(path) = &args.plot {
        std::fs::write(path, chart::svg_chart(&results, &context))
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
        out.push_str(&render::render_tables(&results, &context, &plan));
        if context.builtin {
            out.push_str(&targets::render_targets(&results));
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
