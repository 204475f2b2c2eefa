//! Result rows of `framemap bench` and their JSON form.

use crate::stats::Summary;
use std::fmt::Write as _;

/// What a row measured. The names ([`Workload::name`]) are the JSON
/// `workload` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// `instantiate`: `Store::new` + instantiate + dirty k pages + drop,
    /// memories recycled as each allocator normally does.
    Instantiate,
    /// `instantiate-contiguous`: the same, the k pages dirtied as one
    /// contiguous run instead of scattered.
    InstantiateContiguous,
    /// `instantiate-fresh`: the same loop with framemap's recycling off.
    InstantiateFresh,
    /// `footprint`: RSS growth and time per instance of many live instances.
    Footprint,
    /// `compute`: one call of the guest's compute loop.
    Compute,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 5] = [
        Workload::Instantiate,
        Workload::InstantiateContiguous,
        Workload::InstantiateFresh,
        Workload::Footprint,
        Workload::Compute,
    ];

    /// The workload's name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Instantiate => "instantiate",
            Workload::InstantiateContiguous => "instantiate-contiguous",
            Workload::InstantiateFresh => "instantiate-fresh",
            Workload::Footprint => "footprint",
            Workload::Compute => "compute",
        }
    }

    /// The workload called `name`.
    pub fn from_name(name: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// One measured (workload, allocator, dirty pages) combination.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What was measured.
    pub workload: Workload,
    /// The allocator's name (see [`crate::Allocator::name`]).
    pub allocator: &'static str,
    /// Pages dirtied per instance (k; 0 for compute).
    pub dirty_pages: u32,
    /// The timings.
    pub summary: Summary,
    /// RSS growth in KiB (footprint rows only).
    pub rss_kib: Option<u64>,
}

impl Row {
    /// The row as one JSON object on one line, keys in a fixed order:
    /// `workload`, `allocator`, `dirty_pages`, `median_ns`, `p90_ns`,
    /// `samples`, then `rss_kib` if present. Times are whole nanoseconds.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        let _ = write!(out, "\"workload\":{}", json_string(self.workload.name()));
        let _ = write!(out, ",\"allocator\":{}", json_string(self.allocator));
        let _ = write!(out, ",\"dirty_pages\":{}", self.dirty_pages);
        let _ = write!(out, ",\"median_ns\":{}", whole_nanos(self.summary.median_ns));
        let _ = write!(out, ",\"p90_ns\":{}", whole_nanos(self.summary.p90_ns));
        let _ = write!(out, ",\"samples\":{}", self.summary.samples);
        if let Some(rss) = self.rss_kib {
            let _ = write!(out, ",\"rss_kib\":{rss}");
        }
        out.push('}');
        out
    }
}

/// `ns` rounded to a whole, non-negative number of nanoseconds.
fn whole_nanos(ns: f64) -> u64 {
    if ns.is_finite() && ns > 0.0 { ns.round() as u64 } else { 0 }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rss_kib: Option<u64>) -> Row {
        Row {
            workload: Workload::Footprint,
            allocator: "framemap",
            dirty_pages: 16,
            summary: Summary { median_ns: 1234.5, p90_ns: 2000.0, samples: 200 },
            rss_kib,
        }
    }

    #[test]
    fn json_row_has_exact_keys_in_order() {
        assert_eq!(
            row(Some(20480)).to_json(),
            r#"{"workload":"footprint","allocator":"framemap","dirty_pages":16,"median_ns":1235,"p90_ns":2000,"samples":200,"rss_kib":20480}"#
        );
        let mut compute = row(None);
        compute.workload = Workload::Compute;
        compute.dirty_pages = 0;
        assert_eq!(
            compute.to_json(),
            r#"{"workload":"compute","allocator":"framemap","dirty_pages":0,"median_ns":1235,"p90_ns":2000,"samples":200}"#
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        assert_eq!(json_string("wasmtime-pooling-best"), r#""wasmtime-pooling-best""#);
    }

    #[test]
    fn odd_times_become_zero() {
        assert_eq!(whole_nanos(f64::NAN), 0);
        assert_eq!(whole_nanos(-3.0), 0);
        assert_eq!(whole_nanos(2.5), 3);
    }

    #[test]
    fn workload_names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Some(w));
        }
    }
}
