//! `framemap run`: execute a WASI preview1 command module on framemap memories
//! (preview 2 command components go to [`crate::run_component`]).
//!
//! The module (`.wasm` binary or `.wat` text) is compiled by an engine whose
//! [`Config`] was prepared by [`framemap_wasmtime::configure`], so every
//! linear memory it defines is created by a [`FrameMemoryCreator`]. The guest
//! gets the host's stdio, the `--env` variables, the `--dir` preopens and the
//! arguments `[MODULE, ARGS...]`; its exit status becomes ours.
//!
//! Snapshots (`--snapshot-out`, `--init`, `--restore`) run the module as a
//! [`PreparedModule::with_snapshots`]: `--init EXPORT --snapshot-out FILE`
//! calls EXPORT and writes the instance's state (every memory and mutable
//! global) to FILE, Wizer-style, without running `_start`;
//! `--snapshot-out FILE` alone writes it when the guest exits normally;
//! `--restore FILE` starts from FILE's state instead of a fresh instance
//! (no start function, no data segments) and runs `_start`. WASI state
//! (open files, preopens) is not part of a snapshot: a restored guest gets
//! this run's.
//!
//! Without snapshots the module is a plain [`PreparedModule`] from the
//! compile cache ([`crate::cache`]; `--no-cache` compiles it every time).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use framemap::snapshot::{Durability, Snapshot, SnapshotWriter};
use framemap_wasmtime::{FrameMemoryCreator, MemoryWorkingSet, PreparedModule, RestoreMode};
use wasmtime::{Config, Engine, ExternType, Instance, Linker, Module, Store, Trap, Val, ValType, WasmBacktrace};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// Arguments of `framemap run`.
#[derive(Debug, Args)]
#[command(override_usage = "framemap run [OPTIONS] <MODULE> [ARGS]...")]
pub struct RunArgs {
    /// Preopen a host directory for the guest: `HOST::GUEST`, or `PATH` for
    /// the same path on both sides. Repeatable.
    #[arg(long = "dir", value_name = "HOST::GUEST", value_parser = parse_dir)]
    pub dirs: Vec<DirMapping>,

    /// Set an environment variable in the guest: `KEY=VALUE`. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub envs: Vec<(String, String)>,

    /// At exit, print a frame report for every live framemap memory to stderr.
    #[arg(long)]
    pub stats: bool,

    /// Write a snapshot of the instance (every memory and mutable global)
    /// to FILE: right after `--init EXPORT` if given, else when the guest
    /// exits normally. Written atomically and synced.
    #[arg(long, value_name = "FILE")]
    pub snapshot_out: Option<PathBuf>,

    /// Call EXPORT (no parameters, no results) instead of `_start`, then
    /// write the snapshot (Wizer-style initialisation). Needs
    /// `--snapshot-out`.
    #[arg(long, value_name = "EXPORT", requires = "snapshot_out")]
    pub init: Option<String>,

    /// Call EXPORT instead of `_start`, with the arguments after MODULE as
    /// its parameters (numbers: i32, i64, f32, f64), and print each result
    /// on a line of stdout. For a component, as `wasmtime run --invoke`: a
    /// WAVE function call such as `'add(1, 2)'` or `'ns:pkg/iface.f("x")'`
    /// instead of `wasi:cli/run`, its results printed in WAVE; the
    /// arguments after the component go to the guest's argv.
    #[arg(long, value_name = "EXPORT", conflicts_with_all = ["init", "restore", "snapshot_out"])]
    pub invoke: Option<String>,

    /// Start from the snapshot in FILE (written by `--snapshot-out` for the
    /// same module) instead of a fresh instance, then run `_start`.
    #[arg(long, value_name = "FILE", conflicts_with = "init")]
    pub restore: Option<PathBuf>,

    /// Compile the module or component without the compile cache (neither
    /// read nor written). The cache is `$FRAMEMAP_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/framemap`, else `~/.cache/framemap`; not used with
    /// the snapshot flags.
    #[arg(long)]
    pub no_cache: bool,

    /// With `--restore FILE`: record the pages this run touches (its
    /// working set) and write OUT, a copy of FILE's state (not the state
    /// the run leaves) with that working set recorded and packed first:
    /// restores from OUT prefetch it, so their first call takes no page
    /// fault on it. The restore maps every page fresh and prefetches
    /// nothing, to see what the run touches. Written when the guest exits
    /// normally.
    #[arg(long, value_name = "OUT", requires = "restore")]
    pub working_set_out: Option<PathBuf>,

    /// The WASI command to run: a preview 1 module (`.wasm` binary or `.wat`
    /// text) or a preview 2 command component (`.wasm`),
    /// followed by the arguments passed to the guest after its own name.
    /// Everything after MODULE goes to the guest, even if it looks like a
    /// flag: put framemap's own flags before MODULE.
    #[arg(value_name = "MODULE", required = true, trailing_var_arg = true)]
    pub module_and_args: Vec<String>,
}

impl RunArgs {
    /// Path of the module to run (the first of `module_and_args`).
    pub fn module(&self) -> &Path {
        Path::new(self.module_and_args.first().map_or("", String::as_str))
    }
}

/// One `--dir` preopen: a host directory and the name the guest sees it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirMapping {
    /// Directory on the host.
    pub host: PathBuf,
    /// Path under which the guest finds the directory.
    pub guest: String,
}

/// Parses a `--dir` value: `HOST::GUEST`, or `PATH` meaning `PATH::PATH`.
fn parse_dir(value: &str) -> Result<DirMapping, String> {
    let (host, guest) = value.split_once("::").unwrap_or((value, value));
    if host.is_empty() || guest.is_empty() {
        return Err(format!("expected HOST::GUEST or PATH, got `{value}`"));
    }
    Ok(DirMapping { host: PathBuf::from(host), guest: guest.to_owned() })
}

/// Parses an `--env` value: `KEY=VALUE` with a non-empty `KEY`.
pub(crate) fn parse_env(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, val)) if !key.is_empty() => Ok((key.to_owned(), val.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{value}`")),
    }
}

/// Runs `framemap run`, returning the guest's exit status.
///
/// `proc_exit(n)` yields `n`, a normal return from `_start` yields 0. Traps
/// and every other failure are errors (reported by `main` with status
/// [`crate::EXIT_ERROR`]).
pub fn run(args: RunArgs) -> Result<u8> {
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    framemap_wasmtime::configure(&mut config, Arc::clone(&creator));
    let engine = Engine::new(&config).map_err(anyhow::Error::from).context("failed to create the wasmtime engine")?;
    if crate::run_component::is_component(args.module())? {
        return crate::run_component::run(&creator, &engine, &args);
    }

    let snapshots = args.snapshot_out.is_some() || args.restore.is_some();
    let prepared = match snapshots {
        true => load_prepared(&creator, &engine, args.module())?,
        false => crate::cache::load(&creator, &engine, args.module(), !args.no_cache)?,
    };
    let module = prepared.module().clone();
    if args.init.is_none() && args.invoke.is_none() {
        check_command(&module, &args)?;
    }

    let wasi = build_wasi(&args)?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;

    let mut store = Store::new(&engine, wasi);
    let outcome = match &args.invoke {
        Some(export) => invoke(&mut store, &linker, &prepared, export, &args.module_and_args[1..]),
        None => execute_with_snapshots(&mut store, &linker, &prepared, &args),
    };
    if args.stats {
        // Memories belong to the store: report while it is still alive.
        print_stats(&creator);
    }
    drop(store);
    outcome
}

/// Reads and prepares the module at `path` for snapshots.
fn load_prepared(creator: &Arc<FrameMemoryCreator>, engine: &Engine, path: &Path) -> Result<PreparedModule> {
    let bytes = std::fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    PreparedModule::with_snapshots(creator, engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("failed to load `{}`", path.display()))
}

/// Runs the prepared module: from `--restore`'s snapshot or fresh, then
/// `--init`'s export or `_start`, then writes `--snapshot-out`'s if given.
fn execute_with_snapshots(
    store: &mut Store<WasiP1Ctx>,
    linker: &Linker<WasiP1Ctx>,
    prepared: &PreparedModule,
    args: &RunArgs,
) -> Result<u8> {
    let recorder = args.working_set_out.as_ref().map(|_| recording(prepared));
    let prepared = recorder.as_ref().unwrap_or(prepared);
    let mut restored = None;
    let instance = match &args.restore {
        Some(file) => {
            let snapshot =
                Snapshot::open(file).with_context(|| format!("cannot read the snapshot `{}`", file.display()))?;
            let instance = prepared
                .instantiate_snapshot_with(linker, &mut *store, &snapshot)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot restore `{}`", file.display()))?;
            restored = Some(snapshot);
            instance
        }
        None => prepared
            .instantiate_with(linker, &mut *store)
            .map_err(anyhow::Error::from)
            .context("failed to instantiate the module")?,
    };
    let entry = args.init.as_deref().unwrap_or("_start");
    let func = instance
        .get_typed_func::<(), ()>(&mut *store, entry)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("bad `{entry}` export (it must take and return nothing)"))?;
    let code = match func.call(&mut *store, ()) {
        Ok(()) => 0,
        Err(err) => guest_failure(err)?,
    };
    if let Some(file) = &args.snapshot_out {
        if code != 0 {
            bail!("guest exited with status {code}: no snapshot written");
        }
        write_snapshot(store, prepared, &instance, file)?;
    }
    if let (Some(out), Some(snapshot)) = (&args.working_set_out, &restored) {
        if code != 0 {
            bail!("guest exited with status {code}: no working set written");
        }
        write_working_set(store, prepared, &instance, snapshot, out)?;
    }
    Ok(code)
}

/// Captures `instance` into the snapshot file `file`.
fn write_snapshot(
    store: &mut Store<WasiP1Ctx>,
    prepared: &PreparedModule,
    instance: &Instance,
    file: &Path,
) -> Result<()> {
    write_snapshot_file(file, |writer| prepared.capture(&mut *store, instance, writer))
}

/// Writes a synced snapshot file at `file` with what `capture` puts in the
/// writer, and says so on stderr: the one way every `--snapshot-out` is
/// written, for modules and components alike.
pub(crate) fn write_snapshot_file(
    file: &Path,
    capture: impl FnOnce(&mut SnapshotWriter) -> framemap_wasmtime::Result<()>,
) -> Result<()> {
    let context = || format!("cannot write the snapshot `{}`", file.display());
    let mut writer = SnapshotWriter::to_path(file, Durability::Synced).with_context(context)?;
    capture(&mut writer).with_context(context)?;
    let info = writer.finish().with_context(context)?;
    eprintln!(
        "framemap: snapshot: wrote `{}` ({} data pages, {} bytes, id {})",
        file.display(),
        info.data_pages,
        info.file_len,
        info.id
    );
    Ok(())
}

/// Rejects modules that are not WASI commands (no `_start` function) before
/// anything is instantiated, with a clearer message than a failed lookup.
fn check_command(module: &Module, args: &RunArgs) -> Result<()> {
    match module.get_export("_start") {
        Some(ExternType::Func(_)) => Ok(()),
        Some(_) => bail!("`{}` is not a WASI command: its `_start` export is not a function", args.module().display()),
        None => bail!("`{}` is not a WASI command: it does not export a `_start` function", args.module().display()),
    }
}

/// Builds the guest's preview 1 WASI context.
fn build_wasi(args: &RunArgs) -> Result<WasiP1Ctx> {
    Ok(wasi_builder(args)?.build_p1())
}

/// The guest's WASI context, preview 1 or 2: stdio, arguments, environment,
/// preopens.
pub(crate) fn wasi_builder(args: &RunArgs) -> Result<WasiCtxBuilder> {
    let mut builder = WasiCtxBuilder::new();
    builder.inherit_stdio().allow_blocking_current_thread(true);
    // argv = [MODULE as given on the command line, ARGS...]
    builder.args(&args.module_and_args);
    builder.envs(&args.envs);
    for dir in &args.dirs {
        builder
            .preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("failed to preopen `--dir {}::{}`", dir.host.display(), dir.guest))?;
    }
    Ok(builder)
}

/// Instantiates the prepared module, calls its export `name` with `params` parsed as
/// its parameter types, and prints the results, one per line.
fn invoke(
    store: &mut Store<WasiP1Ctx>,
    linker: &Linker<WasiP1Ctx>,
    prepared: &PreparedModule,
    name: &str,
    params: &[String],
) -> Result<u8> {
    let instance = prepared
        .instantiate_with(linker, &mut *store)
        .map_err(anyhow::Error::from)
        .context("failed to instantiate the module")?;
    let Some(func) = instance.get_func(&mut *store, name) else {
        bail!("`--invoke {name}`: the module exports no function `{name}`");
    };
    let ty = func.ty(&*store);
    if ty.params().len() != params.len() {
        bail!("`--invoke {name}` takes {} argument(s), {} given", ty.params().len(), params.len());
    }
    let values = ty.params().zip(params).map(|(ty, text)| parse_value(&ty, text)).collect::<Result<Vec<_>>>()?;
    let mut results = vec![Val::I32(0); ty.results().len()];
    if let Err(err) = func.call(&mut *store, &values, &mut results) {
        return guest_failure(err);
    }
    for result in results {
        match result {
            Val::I32(v) => println!("{v}"),
            Val::I64(v) => println!("{v}"),
            Val::F32(bits) => println!("{}", f32::from_bits(bits)),
            Val::F64(bits) => println!("{}", f64::from_bits(bits)),
            Val::V128(v) => println!("{:#034x}", v.as_u128()),
            other => println!("{other:?}"),
        }
    }
    Ok(0)
}

/// Parses one `--invoke` argument as a value of type `ty`.
fn parse_value(ty: &ValType, text: &str) -> Result<Val> {
    let bad = || format!("`--invoke` argument `{text}` is not a {ty}");
    Ok(match ty {
        ValType::I32 => Val::I32(match text.parse::<i32>() {
            Ok(v) => v,
            Err(_) => text.parse::<u32>().with_context(bad)? as i32,
        }),
        ValType::I64 => Val::I64(match text.parse::<i64>() {
            Ok(v) => v,
            Err(_) => text.parse::<u64>().with_context(bad)? as i64,
        }),
        ValType::F32 => Val::F32(text.parse::<f32>().with_context(bad)?.to_bits()),
        ValType::F64 => Val::F64(text.parse::<f64>().with_context(bad)?.to_bits()),
        _ => bail!("`--invoke` cannot pass a {ty} from the command line"),
    })
}

/// Classifies an error raised while the guest runs: a WASI exit, a trap, or
/// some other host-side failure.
pub(crate) fn guest_failure(err: wasmtime::Error) -> Result<u8> {
    if let Some(&I32Exit(status)) = err.downcast_ref::<I32Exit>() {
        // WASI preview1 restricts `proc_exit` statuses to [0, 126).
        return match u8::try_from(status) {
            Ok(code) => Ok(code),
            Err(_) => bail!("guest exited with out-of-range status {status}"),
        };
    }
    let location = err.downcast_ref::<WasmBacktrace>().map(TrapLocation);
    if let Some(trap) = err.downcast_ref::<Trap>() {
        let message = format!("guest trapped: {trap}{}", location.map(|l| l.to_string()).unwrap_or_default());
        return Err(crate::GuestTrapped(message).into());
    }
    // Host-side failures carry the wasm backtrace as their outermost context;
    // the root cause is the part worth one line.
    let message = match location {
        Some(_) => err.root_cause().to_string(),
        None => format!("{err:#}"),
    };
    bail!("guest failed: {message}")
}

/// Formats the innermost wasm frame of a backtrace as ` (in wasm function
/// `name`)`, or nothing if the frame has no name.
struct TrapLocation<'a>(&'a WasmBacktrace);

impl fmt::Display for TrapLocation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.frames().first().and_then(|frame| frame.func_name()) {
            Some(name) => write!(f, " (in wasm function `{name}`)"),
            None => Ok(()),
        }
    }
}

/// Prints the creator's frame report for every live memory to stderr.
pub(crate) fn print_stats(creator: &FrameMemoryCreator) {
    let reports = creator.live_reports();
    eprintln!("framemap: stats: {} live frame report(s)", reports.len());
    for report in reports {
        eprintln!("{report}");
    }
}

/// `prepared` restoring snapshots for recording working sets
/// (`--working-set-out`): no prefetch, every page mapped fresh.
fn recording(prepared: &PreparedModule) -> PreparedModule {
    let mut recorder = prepared.clone();
    recorder.set_restore_mode(RestoreMode::Record);
    recorder
}

/// Writes `out`: `snapshot`'s state with the working set `instance` (restored
/// from it for recording) touched since, packed first (`--working-set-out`).
fn write_working_set(
    store: &mut Store<WasiP1Ctx>,
    prepared: &PreparedModule,
    instance: &Instance,
    snapshot: &Snapshot,
    out: &Path,
) -> Result<()> {
    write_working_set_file(out, |writer| prepared.write_working_set(&mut *store, instance, snapshot, writer))
}

/// Writes a synced snapshot file at `out` with the working sets `record`
/// puts in the writer, and says so on stderr: the one way every
/// `--working-set-out` is written, for modules and components alike.
pub(crate) fn write_working_set_file(
    out: &Path,
    record: impl FnOnce(&mut SnapshotWriter) -> framemap_wasmtime::Result<Vec<MemoryWorkingSet>>,
) -> Result<()> {
    let context = || format!("cannot write the working set `{}`", out.display());
    let mut writer = SnapshotWriter::to_path(out, Durability::Synced).with_context(context)?;
    let sets = record(&mut writer).with_context(context)?;
    let info = writer.finish().with_context(context)?;
    let pages: u64 = sets.iter().flat_map(|s| &s.pages).map(|r| r.len()).sum();
    eprintln!(
        "framemap: working set: wrote `{}` ({pages} pages in {} memories, {} data pages, id {})",
        out.display(),
        sets.len(),
        info.data_pages,
        info.id
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_forms() {
        assert_eq!(parse_dir("a::b"), Ok(DirMapping { host: "a".into(), guest: "b".into() }));
        assert_eq!(parse_dir("/tmp/x"), Ok(DirMapping { host: "/tmp/x".into(), guest: "/tmp/x".into() }));
        assert!(parse_dir("::b").is_err());
        assert!(parse_dir("a::").is_err());
        assert!(parse_dir("").is_err());
    }

    #[test]
    fn env_forms() {
        assert_eq!(parse_env("K=V=W"), Ok(("K".into(), "V=W".into())));
        assert_eq!(parse_env("K="), Ok(("K".into(), String::new())));
        assert!(parse_env("K").is_err());
        assert!(parse_env("=V").is_err());
    }
}
