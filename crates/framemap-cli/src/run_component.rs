//! `framemap run` of a WASI preview 2 command component.
//!
//! The component is always instantiated as a [`PreparedComponent`]: the data
//! segments of its core modules are copy-on-write images, never copied at
//! instantiation. The guest gets the host's stdio, the `--env` variables,
//! the `--dir` preopens and the arguments `[COMPONENT, ARGS...]`, as with a
//! preview 1 module. Its `wasi:cli/run` export is called; as with
//! `wasmtime run`, a return of `ok` is status 0 and `err` (including
//! `exit(err)`, which is what a non-zero `std::process::exit` becomes without
//! the unstable `exit-with-code`) status 1.
//!
//! `--invoke CALL` calls one exported function instead of `wasi:cli/run`
//! (which is then not called, as with `wasmtime run --invoke`): CALL is a
//! WAVE function call such as `add(1, 2)` or `ns:pkg/iface.f("x")`, the
//! results are printed in WAVE, and the arguments after the component still
//! go to the guest's argv. The component is instantiated exactly as for a
//! run (prepared, same WASI context); see [`crate::invoke_component`] for
//! the lookup, type checks and exit status (a returned `err(...)` is status
//! 0, as in wasmtime). As for modules, `--invoke` conflicts with `--init`,
//! `--snapshot-out` and `--restore` (clap refuses the combination): a call
//! with arguments and results is not an initialiser, and an invoked export
//! of a restored instance is not offered yet.
//!
//! Without snapshot flags the component comes from the compile cache
//! ([`crate::cache`], as modules do; `--no-cache` compiles it every time).
//! Snapshots work as for modules, through
//! [`PreparedComponent::with_snapshots`]: `--init EXPORT --snapshot-out FILE`
//! calls the component's export EXPORT (no parameters, no results) and writes
//! every core memory and core global to FILE without running
//! `wasi:cli/run`; `--snapshot-out FILE` alone writes them after a run that
//! returned `ok`; `--restore FILE` starts from FILE, then runs, and with
//! `--working-set-out OUT` records the pages the run touches and writes
//! FILE's state with them as OUT, as for modules. (A wasi-libc
//! command records in memory that it has run, and traps if run again: a
//! snapshot taken after its run restores into an instance that traps the
//! same way, faithfully.) Those runs compile the component afresh, as
//! modules' do: a `with_snapshots` component is not an artifact.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use framemap::snapshot::Snapshot;
use framemap_wasmtime::component::TrackedInstance;
use framemap_wasmtime::{FrameMemoryCreator, PreparedComponent, RestoreMode};
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::run::{RunArgs, guest_failure, print_stats, wasi_builder, write_snapshot_file, write_working_set_file};

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

/// Captures `tracked` into the snapshot file `file`.
fn write_snapshot(
    store: &mut Store<Host>,
    prepared: &PreparedComponent,
    tracked: &TrackedInstance,
    file: &Path,
) -> Result<()> {
    write_snapshot_file(file, |writer| prepared.capture(&mut *store, tracked, writer))
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
    let snapshots = args.snapshot_out.is_some() || args.restore.is_some();
    let prepared = match snapshots {
        true => {
            let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
            PreparedComponent::with_snapshots(creator, engine, &bytes)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("failed to load `{}`", path.display()))?
        }
        false => crate::cache::load::<PreparedComponent>(creator, engine, path, !args.no_cache)?,
    };
    // `--working-set-out` (needs `--restore`): restore for recording.
    let recorder = args.working_set_out.as_ref().map(|_| {
        let mut recorder = prepared.clone();
        recorder.set_restore_mode(RestoreMode::Record);
        recorder
    });
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let ctx = wasi_builder(args)?.build();
    let mut store = Store::new(engine, Host { ctx, table: ResourceTable::new() });
    if let Some(call) = &args.invoke {
        // `--invoke` conflicts with the snapshot flags (as for modules).
        let outcome = crate::invoke_component::invoke(&mut store, &linker, &prepared, call);
        if args.stats {
            print_stats(creator);
        }
        drop(store);
        return outcome;
    }
    let mut restored_from = None;
    let tracked = match (&args.restore, snapshots) {
        (Some(file), _) => {
            let snapshot =
                Snapshot::open(file).with_context(|| format!("cannot read the snapshot `{}`", file.display()))?;
            let restored = recorder.as_ref().unwrap_or(&prepared).instantiate_snapshot(&mut store, &linker, &snapshot);
            let restored = restored
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot restore `{}`", file.display()))?;
            restored_from = Some(snapshot);
            Some(restored)
        }
        (None, true) => Some(
            prepared
                .instantiate_tracked(&mut store, &linker)
                .map_err(anyhow::Error::from)
                .context("failed to instantiate the component")?,
        ),
        (None, false) => None,
    };
    let instance = match &tracked {
        Some(tracked) => tracked.instance(),
        None => prepared
            .instantiate(&mut store, &linker)
            .map_err(anyhow::Error::from)
            .context("failed to instantiate the component")?,
    };
    let outcome = match &args.init {
        Some(export) => {
            let func = instance
                .get_typed_func::<(), ()>(&mut store, export.as_str())
                .map_err(anyhow::Error::from)
                .with_context(|| format!("bad `{export}` export (it must take and return nothing)"))?;
            match func.call(&mut store, ()) {
                Ok(()) => Ok(0),
                Err(err) => guest_failure(err),
            }
        }
        None => {
            let command = Command::new(&mut store, &instance).map_err(anyhow::Error::from).with_context(|| {
                format!("`{}` is not a WASI command component: it does not export `wasi:cli/run`", path.display())
            })?;
            match command.wasi_cli_run().call_run(&mut store) {
                Ok(Ok(())) => Ok(0),
                Ok(Err(())) => Ok(1),
                Err(err) => guest_failure(err),
            }
        }
    };
    if let (Some(file), Some(tracked), Ok(code)) = (&args.snapshot_out, &tracked, &outcome) {
        if *code != 0 {
            bail!("guest exited with status {code}: no snapshot written");
        }
        write_snapshot(&mut store, &prepared, tracked, file)?;
    }
    if let (Some(out), Some(tracked), Some(snapshot), Ok(code)) =
        (&args.working_set_out, &tracked, &restored_from, &outcome)
    {
        if *code != 0 {
            bail!("guest exited with status {code}: no working set written");
        }
        let recorder = recorder.as_ref().unwrap_or(&prepared);
        write_working_set_file(out, |writer| recorder.write_working_set(tracked, snapshot, writer))?;
    }
    if args.stats {
        print_stats(creator);
    }
    drop(store);
    outcome
}
