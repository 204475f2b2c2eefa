#!/bin/sh
# Rebuilds the committed test guests from their sources (needs
# `rustup target add wasm32-wasip2`). Run from anywhere.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/wasip2-command"
cargo build --release --target wasm32-wasip2
cp target/wasm32-wasip2/release/wasip2-command.wasm "$here/wasip2_command.wasm"
