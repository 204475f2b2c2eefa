//! Workloads shared by framemap's criterion benches and `framemap bench`:
//! each one is set up identically on wasmtime's own allocators and on
//! framemap's, so they can be timed in the same process.
//!
//! - [`Allocator`]: the five allocators compared, each behind its own engine
//!   ([`Allocator::setup`]).
//! - [`builtin`]: the built-in guest: a 16 MiB memory with a dense 8 MiB
//!   data image, `touch(k)` and a compute loop.
//! - [`Target`]: one allocator with a guest compiled and its imports
//!   resolved; [`Target::sample`] is one instantiate sample (store +
//!   instantiate + touch + drop; [`Target::sample_touching`] dirties the
//!   pages as one contiguous run instead), [`footprint`] keeps many alive,
//!   [`Target::runner`] calls the compute export.
//! - [`interleaved`]: round-robin sampling across allocators.
//! - [`stats`] and [`report`]: median / p90 and the JSON rows.
//! - [`Compute`]: the 64 MiB summing loop of the `compute` criterion bench.

pub mod allocator;
pub mod builtin;
mod compute;
pub mod report;
pub mod stats;
pub mod workload;

pub use allocator::{Allocator, EngineOptions, PoolingLimits, Setup};
pub use builtin::Touch;
pub use compute::{COMPUTE_BYTES, Compute};
pub use report::{Row, Workload};
pub use stats::{Summary, median, p90, percentile};
pub use workload::{Footprint, Guest, Live, Runner, Target, footprint, interleaved, nanos, rss_bytes, to_binary};

/// Pages each instance dirties in the instantiate workloads (k).
pub const DIRTY_PAGES: [u32; 3] = [0, 16, 256];
/// Pages each instance dirties as one contiguous run in the
/// `instantiate-contiguous` workload (k = 0 would repeat `instantiate`).
pub const CONTIGUOUS_DIRTY_PAGES: [u32; 2] = [16, 256];
/// Instances alive at once in the footprint workload.
pub const FOOTPRINT_INSTANCES: usize = 200;
/// Pages each footprint instance dirties.
pub const FOOTPRINT_DIRTY_PAGES: u32 = 16;
