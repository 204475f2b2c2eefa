//! A summary of one linear space: runs, mapped and resident bytes per tag.

use crate::frame::PerTag;
use std::fmt;

/// Runs, bytes and resident bytes of a memory, per [`FrameTag`](crate::FrameTag)
/// (each a [`PerTag`], indexed by the tag: `summary.runs[FrameTag::Zero]`).
/// The `Unmapped` figures include the growable rest of the reservation and
/// its guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceSummary {
    /// Address of the memory's first byte.
    pub base: usize,
    /// Accessible bytes.
    pub len: u64,
    /// Bytes the memory may grow to without moving.
    pub capacity: u64,
    /// Guard bytes after the capacity.
    pub guard: u64,
    /// Number of runs per tag.
    pub runs: PerTag<u64>,
    /// Bytes per tag.
    pub bytes: PerTag<u64>,
    /// Resident bytes per tag (the shared zero page excluded where the kernel
    /// can tell it apart).
    pub resident: PerTag<u64>,
}

impl SpaceSummary {
    /// Resident bytes over all tags.
    pub fn total_resident(&self) -> u64 {
        self.resident.values().sum()
    }

    /// Runs over all tags.
    pub fn total_runs(&self) -> u64 {
        self.runs.values().sum()
    }
}

/// Formats a byte count with a binary unit, e.g. `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

impl fmt::Display for SpaceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "memory at {:#x}: {} accessible, {} reserved + {} guard, {} runs, {} resident",
            self.base,
            human_bytes(self.len),
            human_bytes(self.capacity),
            human_bytes(self.guard),
            self.total_runs(),
            human_bytes(self.total_resident()),
        )?;
        for (tag, &count) in &self.runs {
            if count > 0 {
                let runs = if count == 1 { "run" } else { "runs" };
                writeln!(
                    f,
                    "  {:<9}{:>6} {runs:<5}{:>12} {:>12} resident",
                    tag.to_string(),
                    count,
                    human_bytes(self.bytes[tag]),
                    human_bytes(self.resident[tag])
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(4 << 30), "4.0 GiB");
    }
}
