#!/bin/sh
# Rebuilds the committed wasi:http test guests from their source (needs
# `rustup target add wasm32-wasip2`). Run from anywhere.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/http-handler"
cargo build --release --target wasm32-wasip2
cp target/wasm32-wasip2/release/http_handler.wasm "$here/http_hello.wasm"
cargo build --release --target wasm32-wasip2 --features image
cp target/wasm32-wasip2/release/http_handler.wasm "$here/http_image.wasm"
cargo build --release --target wasm32-wasip2 --features proxy
cp target/wasm32-wasip2/release/http_handler.wasm "$here/http_proxy.wasm"
