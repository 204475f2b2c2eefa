//! The SVG chart of `--plot`: grouped bars of the `instantiate` medians
//! (scattered touch), one group per k, one bar per allocator, on a log scale.

use std::fmt::Write as _;

use framemap_benches::{Allocator, Row, Workload};

use super::render::format_ns;
use super::{Results, RunContext};

/// Escapes `s` for SVG text.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Colours of the allocators' bars, in [`Allocator::ALL`] order.
const COLOURS: [&str; 5] = ["#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d", "#59a14f"];

/// An SVG chart: grouped bars of the instantiate medians, one group per k,
/// one bar per allocator, on a log scale.
pub(super) fn svg_chart(results: &Results, context: &RunContext) -> String {
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
    fn an_empty_run_still_draws_a_chart() {
        let context = RunContext { builtin: true, title: "a < b".into(), notes: vec![], creator_stats: vec![] };
        let svg = svg_chart(&Results::default(), &context);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("a &lt; b"), "{svg}");
    }
}
