//! framemap's runnable examples live in `examples/` of this package, one per
//! capability; run one with `cargo run -p framemap-examples --example NAME`.
//!
//! This library only makes the README's code blocks doctests, so the example
//! the README shows is compiled and run by `cargo test`.

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}
