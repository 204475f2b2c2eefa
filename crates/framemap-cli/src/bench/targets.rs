//! The ratios of medians the project tracks: the targets with their goals
//! (PASS/MISS), the reference ratios of wasmtime's own best pooling setup,
//! and the scattered-versus-contiguous ratios (neither is a target).

use std::fmt::Write as _;

use framemap_benches::{
    Allocator, CONTIGUOUS_DIRTY_PAGES, DIRTY_PAGES, FOOTPRINT_DIRTY_PAGES, FOOTPRINT_INSTANCES, Workload, builtin,
};

use super::Results;
use super::render::{format_kib, format_ns, format_ratio};

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

/// The "targets" section, then the reference and contiguous ratios.
pub(super) fn render_targets(results: &Results) -> String {
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
    out.push_str(&render_ratios(
        "reference — the same ratios for wasmtime's own best pooling setup (not targets)",
        &reference_checks(results),
    ));
    out.push_str(&render_ratios(
        "contiguous — the k pages dirtied as one run against scattered (not targets)",
        &contiguous_ratios(results),
    ));
    out
}

/// A ratio shown without a goal: label, value, the two medians.
type Ratio = (String, Option<f64>, String);

/// `num / den` of the `Instantiate` medians at `k`.
fn instantiate_ratio(results: &Results, num: Allocator, den: Allocator, k: u32) -> Ratio {
    let (a, b) = (results.median(Workload::Instantiate, num, k), results.median(Workload::Instantiate, den, k));
    (format!("instantiate k={k}: {} / {}", num.name(), den.name()), median_ratio(a, b), show_medians(a, b))
}

/// The same ratios that the speed-up targets take, with wasmtime's own best
/// pooling setup in framemap's place: what recycling can reach on this
/// machine when it does the same kernel work (one dirty-page scan and one
/// page copy per dirtied page). Context for the targets, not targets.
fn reference_checks(results: &Results) -> Vec<Ratio> {
    use Allocator::*;
    vec![
        instantiate_ratio(results, WasmtimeOnDemand, WasmtimePoolingBest, 16),
        instantiate_ratio(results, WasmtimeOnDemandCopy, WasmtimePoolingBest, 0),
    ]
}

/// What dirtying the k pages as one run instead of scattered changes, at
/// each k of the `instantiate-contiguous` rows ([`CONTIGUOUS_DIRTY_PAGES`]
/// if none were measured): framemap against wasmtime-pooling-best on contiguous
/// pages, and scattered / contiguous for each of the two. Measurements
/// shown as they are, not targets: the workload exists to show where
/// wasmtime's reset limit (at most 32 dirty regions restored in place)
/// stops mattering.
fn contiguous_ratios(results: &Results) -> Vec<Ratio> {
    use Allocator::{Framemap, WasmtimePoolingBest};
    use Workload::{Instantiate, InstantiateContiguous};
    let mut ks: Vec<u32> =
        results.rows.iter().filter(|r| r.workload == InstantiateContiguous).map(|r| r.dirty_pages).collect();
    ks.sort_unstable();
    ks.dedup();
    if ks.is_empty() {
        ks = CONTIGUOUS_DIRTY_PAGES.to_vec();
    }
    let mut ratios = Vec::new();
    for k in ks {
        let (f, p) = (
            results.median(InstantiateContiguous, Framemap, k),
            results.median(InstantiateContiguous, WasmtimePoolingBest, k),
        );
        ratios.push((
            format!("instantiate-contiguous k={k}: framemap / wasmtime-pooling-best"),
            median_ratio(f, p),
            show_medians(f, p),
        ));
        for allocator in [WasmtimePoolingBest, Framemap] {
            let (s, c) =
                (results.median(Instantiate, allocator, k), results.median(InstantiateContiguous, allocator, k));
            ratios.push((
                format!("k={k} scattered / contiguous: {}", allocator.name()),
                median_ratio(s, c),
                show_medians(s, c),
            ));
        }
    }
    ratios
}

/// A section of goal-less ratios under `header`.
fn render_ratios(header: &str, ratios: &[Ratio]) -> String {
    let mut out = format!("\n{header}\n");
    let width = ratios.iter().map(|(label, ..)| label.chars().count()).max().unwrap_or(0);
    for (label, value, detail) in ratios {
        let pad = width - label.chars().count();
        let value = value.map_or_else(|| "n/a".to_owned(), format_ratio);
        let _ = writeln!(out, "  {label}{} {value:>7}  ({detail})", " ".repeat(pad));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use framemap_benches::{Row, Summary};

    fn row(allocator: Allocator, workload: Workload, k: u32, median_ns: f64) -> Row {
        Row {
            workload,
            allocator: allocator.name(),
            dirty_pages: k,
            summary: Summary { median_ns, p90_ns: median_ns, samples: 1 },
            rss_kib: None,
        }
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
        let results = Results {
            rows: vec![
                row(Allocator::WasmtimeOnDemand, Workload::Instantiate, 16, 30_000.0),
                row(Allocator::WasmtimePoolingBest, Workload::Instantiate, 16, 5_000.0),
                row(Allocator::WasmtimeOnDemandCopy, Workload::Instantiate, 0, 4_000_000.0),
                row(Allocator::WasmtimePoolingBest, Workload::Instantiate, 0, 2_000.0),
                row(Allocator::Framemap, Workload::Instantiate, 16, 1.0),
            ],
        };
        let refs = reference_checks(&results);
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].1, Some(6.0), "{:?}", refs[0]);
        assert_eq!(refs[1].1, Some(2000.0), "{:?}", refs[1]);
        let text = render_targets(&results);
        assert!(text.contains("(30.0 µs / 5.00 µs)"), "{text}");
    }

    #[test]
    fn contiguous_ratios_compare_both_layouts_at_the_measured_k() {
        let results = Results {
            rows: vec![
                row(Allocator::WasmtimePoolingBest, Workload::Instantiate, 256, 120_000.0),
                row(Allocator::Framemap, Workload::Instantiate, 256, 40_000.0),
                row(Allocator::WasmtimePoolingBest, Workload::InstantiateContiguous, 256, 30_000.0),
                row(Allocator::Framemap, Workload::InstantiateContiguous, 256, 20_000.0),
            ],
        };
        let ratios = contiguous_ratios(&results);
        let value = |label: &str| ratios.iter().find(|r| r.0 == label).unwrap_or_else(|| panic!("{ratios:?}")).1;
        assert_eq!(ratios.len(), 3, "only the measured k: {ratios:?}");
        assert_eq!(value("instantiate-contiguous k=256: framemap / wasmtime-pooling-best"), Some(20.0 / 30.0));
        assert_eq!(value("k=256 scattered / contiguous: wasmtime-pooling-best"), Some(4.0));
        assert_eq!(value("k=256 scattered / contiguous: framemap"), Some(2.0));
        let text = render_targets(&results);
        assert!(text.contains("contiguous — ") && text.contains("(120 µs / 30.0 µs)"), "{text}");
        // The one PASS is the scattered k=256 target; the contiguous rows add none.
        assert!(text.contains("1 of 10 targets met"), "the contiguous rows are no targets: {text}");
    }

    #[test]
    fn missing_rows_are_misses_not_panics() {
        let results = Results::default();
        let text = render_targets(&results);
        assert!(text.contains("0 of 10 targets met"), "{text}");
        let reference = text.lines().find(|l| l.contains("k=16: wasmtime-ondemand / wasmtime-pooling-best"));
        assert!(reference.is_some_and(|l| l.contains(" n/a  (not measured)")), "{text}");
        let contiguous = text.lines().find(|l| l.contains("k=256 scattered / contiguous: framemap"));
        assert!(contiguous.is_some_and(|l| l.contains(" n/a  (not measured)")), "{text}");
    }
}
