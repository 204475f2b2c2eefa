//! Code the fuzz targets share.

#[cfg(feature = "wasm")]
pub mod wasm;
