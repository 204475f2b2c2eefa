//! Formatting numbers (times, sizes, ratios) and rendering the result
//! tables, one per workload, and the progress lines.

use std::fmt::Write as _;

use framemap_benches::{Allocator, FOOTPRINT_INSTANCES, Row, Workload};

use super::{Plan, Results, RunContext};

/// `ns` with a unit that keeps 3 significant digits.
pub(super) fn format_ns(ns: f64) -> String {
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
pub(super) fn format_kib(kib: u64) -> String {
    if kib < 10 * 1024 { format!("{kib} KiB") } else { format!("{:.1} MiB", kib as f64 / 1024.0) }
}

/// A ratio with 2 (or, for small ones, 3) significant decimals.
pub(super) fn format_ratio(r: f64) -> String {
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

/// The progress line of a measured row.
pub(super) fn progress_line(row: &Row) -> String {
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

/// Describes each workload's sample.
fn workload_caption(workload: Workload, plan_context: &RunContext) -> &'static str {
    match (workload, plan_context.builtin) {
        (Workload::Instantiate, true) => "Store::new + instantiate + touch(k) + drop; allocators recycle as usual",
        (Workload::InstantiateContiguous, _) => "the same, the k pages dirtied as one run (the image's first k pages)",
        (Workload::InstantiateFresh, true) => "the same with framemap's recycling off (a fresh mapping per instance)",
        (Workload::Instantiate, false) => "Store::new + instantiate (+ call the export once) + drop",
        (Workload::InstantiateFresh, false) => "the same with framemap's recycling off",
        (Workload::Footprint, _) => "200 live instances, each having dirtied 16 pages; time per instance",
        (Workload::Compute, true) => "one call of `run`: 96 MiB of i64 loads over the image (12 passes)",
        (Workload::Compute, false) => "one call of the export",
    }
}

/// Why `instantiate-contiguous` exists, under its caption: the limit of
/// wasmtime 48's pooling reset (`reset_with_pagemap` in
/// `runtime/vm/sys/unix/pagemap.rs`, `MAX_REGIONS = 32`).
const CONTIGUOUS_WHY: &str = concat!(
    "  why: wasmtime's pooling reset with PAGEMAP_SCAN (pooling-best) takes at most 32 dirty\n",
    "  regions per reset (wasmtime 48's MAX_REGIONS), restores those in place and decommits\n",
    "  the memory past them, where the next instance's writes fault again. touch(256) dirties\n",
    "  256 separate regions, a run is one: the scattered k=256 rows above meet that limit,\n",
    "  these rows show the case wasmtime's reset handles in one region. framemap's scan has\n",
    "  no region limit.\n",
);

/// The result tables, one per workload.
pub(super) fn render_tables(results: &Results, context: &RunContext, plan: &Plan) -> String {
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
        if workload == Workload::InstantiateContiguous {
            out.push_str(CONTIGUOUS_WHY);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_contiguous_table_follows_the_scattered_one_and_says_why() {
        use framemap_benches::Summary;
        let row = |workload, allocator: Allocator| Row {
            workload,
            allocator: allocator.name(),
            dirty_pages: 256,
            summary: Summary { median_ns: 2_000.0, p90_ns: 3_000.0, samples: 3 },
            rss_kib: None,
        };
        let results = Results {
            rows: vec![
                row(Workload::InstantiateContiguous, Allocator::WasmtimePoolingBest),
                row(Workload::InstantiateContiguous, Allocator::Framemap),
                row(Workload::Instantiate, Allocator::Framemap),
            ],
        };
        let context = RunContext { builtin: true, title: "t".into(), notes: vec![], creator_stats: vec![] };
        let plan = Plan {
            allocators: Allocator::ALL.to_vec(),
            warmup: 1,
            samples: 3,
            block: 50,
            compute_warmup: 1,
            compute_samples: 3,
            compute_rounds: 1,
            footprint_rounds: 1,
        };
        let text = render_tables(&results, &context, &plan);
        let (scattered, contiguous) = (text.find("\ninstantiate — "), text.find("\ninstantiate-contiguous — "));
        assert!(scattered.is_some() && scattered < contiguous, "{text}");
        let section: Vec<&str> = text[contiguous.unwrap() + 1..].lines().skip(1).collect();
        assert!(section[0].starts_with("  why: ") && section[0].contains("32 dirty"), "{text}");
        assert!(section.iter().all(|l| l.starts_with("  ")), "indented under its heading: {text}");
        assert!(section.iter().any(|l| l.contains("wasmtime-pooling-best") && l.ends_with("1.00× this")), "{text}");
    }
}
