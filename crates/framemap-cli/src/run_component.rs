//! `framemap run` of a WASI preview 2 command component.
//!
//! The component is always instantiated as a [`PreparedComponent`]: the data
//! segments of its core modules are copy-on-write images, never copied at
//! instantiation. The guest gets the host's stdio, the `--env` variables,
//! the `--dir` preopens and the arguments `[COMPONENT, ARGS...]`, as with a
//! preview 1 module. Its `wasi:cli/run` export is called; as with
//! `wasmtime run`, a return of `ok` is status 0 and `err` (including
//! `exit(err)`, which is what a non-zero `std::process::exit` becomes without
//! the unstable `exit-with-code`) status 1. Snapshots and `--invoke` are not
//! available for components: asking for them is an error, not a silent run.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use framemap_wasmtime::{FrameMemoryCreator, PreparedComponent};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::run::{RunArgs, guest_failure, print_stats, wasi_builder};

/// Whether the file at `path` is a component (by its binary header; a
/// `.wat` text file is a module).
pub fn is_component(path: &Path) -> Result<bool> {
    let mut header = [0u8; 8];
    let mut file = std::fs::File::open(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("failed to read `{}`", path.display())),
        }
    }
    // `\0asm`, then a version field whose layer half (bytes 6 and 7) is 1
    // for components and 0 for modules.
    Ok(read == header.len() && header[..4] == *b"\0asm" && header[6..8] == [1, 0])
}

/// The store's data: the preview 2 WASI context and its resource table.
struct Host {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

/// Runs the command component named by `args`, returning its exit status.
pub fn run(creator: &Arc<FrameMemoryCreator>, engine: &Engine, args: &RunArgs) -> Result<u8> {
    let path = args.module();
    if args.snapshot_out.is_some() || args.restore.is_some() || args.init.is_some() {
        bail!("snapshots (`--snapshot-out`, `--init`, `--restore`) are not available for components yet");
    }
    if args.invoke.is_some() {
        bail!("`--invoke` is not available for components yet: it calls a core module's export");
    }
    let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let prepared = PreparedComponent::new(creator, engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("failed to load `{}`", path.display()))?;
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let ctx = wasi_builder(args)?.build();
    let mut store = Store::new(engine, Host { ctx, table: ResourceTable::new() });
    let instance = prepared
        .instantiate(&mut store, &linker)
        .map_err(anyhow::Error::from)
        .context("failed to instantiate the component")?;
    let command = Command::new(&mut store, &instance).map_err(anyhow::Error::from).with_context(|| {
        format!("`{}` is not a WASI command component: it does not export `wasi:cli/run`", path.display())
    })?;
    let outcome = match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => Ok(0),
        Ok(Err(())) => Ok(1),
        Err(err) => guest_failure(err),
    };
    if args.stats {
        print_stats(creator);
    }
    drop(store);
    outcome
}
