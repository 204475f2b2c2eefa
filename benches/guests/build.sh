#!/bin/sh
# Rebuilds the committed benchmark guests from their sources (needs
# `rustup target add wasm32-wasip1`). Run from anywhere.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/compute"
cargo build --release --target wasm32-wasip1
cp target/wasm32-wasip1/release/compute.wasm "$here/compute.wasm"
