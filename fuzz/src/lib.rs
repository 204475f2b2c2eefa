//! Code the fuzz targets share: the `memory_ops` target's operations, model
//! and replay, and the `snapshot_file` target's stages (also replayed by
//! this crate's tests, `cargo test --lib`, which builds no wasmtime), and,
//! behind the `wasm` feature, what the wasmtime targets share.

pub mod snapshot_check;
mod snapshot_make;
mod snapshot_mutate;
#[cfg(test)]
mod snapshot_tests;
pub mod space_model;
pub mod space_ops;
pub mod space_replay;
pub mod space_snapshot;
#[cfg(test)]
mod space_tests;
#[cfg(feature = "wasm")]
pub mod wasm;
