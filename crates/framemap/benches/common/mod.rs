//! What the snapshot benches share: sizes, memories, medians, the
//! temporary directory and the part filter.

// Each bench binary uses its own subset of these.
#![allow(dead_code)]

use framemap::{LinearSpace, SharedBuffer, SpaceConfig};
use std::path::PathBuf;
use std::time::Duration;

/// One gibibyte.
pub const GIB: u64 = 1 << 30;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// The host page size.
pub fn page() -> u64 {
    framemap::host_page_size() as u64
}

/// A name for no host buffer (these benches map none).
pub fn no_names(_: &SharedBuffer) -> Option<String> {
    None
}

/// A memory of `bytes`, all accessible.
pub fn space(bytes: u64) -> LinearSpace {
    LinearSpace::new(SpaceConfig { capacity: bytes, guard: 64 * 1024, initial_len: bytes }).expect("space")
}

/// The median of `v`.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// This process's temporary directory for snapshot files.
pub fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framemap-bench-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Whether to run the part called `part`: yes, unless the first argument
/// that is not a flag names something else (see the module's docs).
pub fn wants(part: &str) -> bool {
    std::env::args().skip(1).find(|a| !a.starts_with('-')).is_none_or(|filter| part.contains(filter.as_str()))
}
