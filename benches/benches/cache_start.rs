//! Start-up of a large module from a warm compile cache: framemap's
//! artifact (`PreparedModule::load_artifact`, what a `framemap run` cache hit
//! does) against wasmtime 48's own cache (`Config::cache`, what `wasmtime
//! run` does with its cache on), in this process and as whole processes.
//!
//! `cargo bench -j2 -p framemap-benches --bench cache_start -- [MIB]`
//! generates a module with about MIB MiB of code (default 24) plus a 4 MiB
//! data image, and prints medians of:
//! - in process: a fresh engine, the module loaded from the warm cache,
//!   instantiated, its `_start` called;
//! - as processes (this binary re-run with `once-*`): the same, from exec to
//!   exit;
//! - `framemap run` (if `FRAMEMAP_BIN` names the binary): a cold start
//!   (empty cache: compile and write) and warm starts (hits), of the module
//!   and of a `wasi:cli/run` command component around the same module;
//! - `wasmtime run` (if `WASMTIME_BIN` names a wasmtime 48.0.8 CLI, e.g.
//!   from `cargo install wasmtime-cli@48.0.8`; not in CI): the same, its
//!   cache in a directory of its own (`-C cache-config`).
//!
//! No assertion: it reports.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framemap_wasmtime::{FrameMemoryCreator, PreparedModule, configure};
use wasm_encoder::{
    CodeSection, ConstExpr, DataSection, ExportKind, ExportSection, Function, FunctionSection, Instruction,
    MemorySection, MemoryType, Module as Encoder, TypeSection, ValType,
};
use wasmtime::{Cache, CacheConfig, Config, Engine, Instance, Module, Store};

const SAMPLES: usize = 15;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    match args.first().map(String::as_str) {
        Some("once-wasmtime") => return once_wasmtime(Path::new(&args[1]), Path::new(&args[2])).map(drop),
        Some("once-framemap") => return once_framemap(Path::new(&args[1])).map(drop),
        _ => {}
    }
    let mib: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(24);
    let dir = std::env::temp_dir().join(format!("framemap-cache-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let wasm = dir.join("big.wasm");
    let bytes = generate(mib << 20);
    std::fs::write(&wasm, &bytes)?;
    println!("module: {} bytes ({:.1} MiB), 4 MiB data image", bytes.len(), bytes.len() as f64 / 1048576.0);

    // wasmtime's cache: the first load compiles and stores (zstd), the rest hit.
    let wasmtime_cache = dir.join("wasmtime-cache");
    let cold = Instant::now();
    once_wasmtime(&wasm, &wasmtime_cache)?;
    println!("wasmtime cache, cold (compile + store):   {:>10.1} ms", ms(cold.elapsed()));
    // framemap's artifact: compile and save once.
    let artifact = dir.join("big.fmart");
    let cold = Instant::now();
    let creator = FrameMemoryCreator::new();
    let engine = framemap_engine(&creator)?;
    PreparedModule::new(&creator, &engine, &bytes)?.save_artifact(&artifact)?;
    println!("framemap artifact, cold (compile + save): {:>10.1} ms", ms(cold.elapsed()));
    println!("artifact file: {} bytes", std::fs::metadata(&artifact)?.len());

    let wasmtime_in = median((0..SAMPLES).map(|_| once_wasmtime(&wasm, &wasmtime_cache)).collect::<Result<_, _>>()?);
    let framemap_in = median((0..SAMPLES).map(|_| once_framemap(&artifact)).collect::<Result<_, _>>()?);
    println!(
        "in process, warm: wasmtime cache {:.2} ms, framemap artifact {:.2} ms, framemap/wasmtime {:.3}",
        ms(wasmtime_in),
        ms(framemap_in),
        ratio(framemap_in, wasmtime_in)
    );

    let me = std::env::current_exe()?;
    let process = |args: &[&Path]| -> anyhow::Result<Duration> {
        let start = Instant::now();
        let status = Command::new(&me).args(args).status()?;
        anyhow::ensure!(status.success(), "{args:?} failed");
        Ok(start.elapsed())
    };
    let mode_w = Path::new("once-wasmtime");
    let mode_f = Path::new("once-framemap");
    let mut wasmtime_proc = Vec::new();
    let mut framemap_proc = Vec::new();
    for _ in 0..SAMPLES {
        wasmtime_proc.push(process(&[mode_w, &wasm, &wasmtime_cache])?);
        framemap_proc.push(process(&[mode_f, &artifact])?);
    }
    let (wasmtime_proc, framemap_proc) = (median(wasmtime_proc), median(framemap_proc));
    println!(
        "as processes, warm: wasmtime cache {:.2} ms, framemap artifact {:.2} ms, framemap/wasmtime {:.3}",
        ms(wasmtime_proc),
        ms(framemap_proc),
        ratio(framemap_proc, wasmtime_proc)
    );

    let mut framemap_hit = None;
    if let Some(bin) = std::env::var_os("FRAMEMAP_BIN") {
        let cache = dir.join("framemap-cache");
        let run_file = |wasm: &Path, cache: &Path| -> anyhow::Result<Duration> {
            let start = Instant::now();
            let out = Command::new(&bin).arg("run").arg(wasm).env("FRAMEMAP_CACHE_DIR", cache).output()?;
            anyhow::ensure!(out.status.success(), "framemap run failed: {}", String::from_utf8_lossy(&out.stderr));
            Ok(start.elapsed())
        };
        let run = |cache: &Path| run_file(&wasm, cache);
        let first = run(&cache)?;
        let warm = median((0..SAMPLES).map(|_| run(&cache)).collect::<Result<_, _>>()?);
        let no_cache = {
            let start = Instant::now();
            let out = Command::new(&bin).args(["run", "--no-cache"]).arg(&wasm).output()?;
            anyhow::ensure!(out.status.success(), "framemap run --no-cache failed");
            start.elapsed()
        };
        println!(
            "framemap run: first start (cold cache) {:.1} ms, second start (hit, median of {SAMPLES}) {:.2} ms, first/second {:.1}x; --no-cache {:.1} ms",
            ms(first),
            ms(warm),
            first.as_secs_f64() / warm.as_secs_f64(),
            ms(no_cache)
        );
        println!("framemap run hit / wasmtime-cache-warm process: {:.3}", ratio(warm, wasmtime_proc));
        framemap_hit = Some(warm);

        // The same module inside a command component.
        let component = dir.join("big-component.wasm");
        std::fs::write(&component, generate_component(&bytes))?;
        let cache = dir.join("framemap-component-cache");
        let first = run_file(&component, &cache)?;
        let warm = median((0..SAMPLES).map(|_| run_file(&component, &cache)).collect::<Result<_, _>>()?);
        println!(
            "framemap run COMPONENT: first start (cold cache) {:.1} ms, second start (hit, median of {SAMPLES}) {:.2} ms, first/second {:.1}x",
            ms(first),
            ms(warm),
            first.as_secs_f64() / warm.as_secs_f64()
        );
    }
    // The real `wasmtime run`, its cache in a directory of its own.
    if let Some(wasmtime_bin) = std::env::var_os("WASMTIME_BIN") {
        let config = dir.join("wasmtime-cache.toml");
        std::fs::write(&config, format!("[cache]\ndirectory = {:?}\n", dir.join("wasmtime-cli-cache")))?;
        let run = || -> anyhow::Result<Duration> {
            let start = Instant::now();
            let out = Command::new(&wasmtime_bin)
                .arg("run")
                .arg(format!("-Ccache-config={}", config.display()))
                .arg(&wasm)
                .output()?;
            anyhow::ensure!(out.status.success(), "wasmtime run failed: {}", String::from_utf8_lossy(&out.stderr));
            Ok(start.elapsed())
        };
        let first = run()?;
        let warm = median((0..SAMPLES).map(|_| run()).collect::<Result<_, _>>()?);
        println!(
            "wasmtime run (the CLI): first start (cold cache) {:.1} ms, second start (hit, median of {SAMPLES}) {:.2} ms",
            ms(first),
            ms(warm)
        );
        if let Some(hit) = framemap_hit {
            println!(
                "framemap run hit / wasmtime run hit: {:.3} (target <= 1.1: {})",
                ratio(hit, warm),
                if ratio(hit, warm) <= 1.1 { "met" } else { "MISSED" }
            );
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A fresh engine with wasmtime's cache in `cache_dir`, the module loaded
/// (a hit once warm), instantiated, `_start` called: the elapsed time.
fn once_wasmtime(wasm: &Path, cache_dir: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut config = Config::new();
    let mut cache = CacheConfig::new();
    cache.with_directory(cache_dir);
    config.cache(Some(Cache::new(cache)?));
    let engine = Engine::new(&config)?;
    let module = Module::from_file(&engine, wasm)?;
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[])?;
    instance.get_typed_func::<(), ()>(&mut store, "_start")?.call(&mut store, ())?;
    Ok(start.elapsed())
}

/// A fresh framemap engine, the artifact loaded, instantiated, `_start`
/// called: the elapsed time.
fn once_framemap(artifact: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let creator = FrameMemoryCreator::new();
    let engine = framemap_engine(&creator)?;
    // SAFETY: this program wrote the artifact and does not change it.
    let prepared = unsafe { PreparedModule::load_artifact(&creator, &engine, artifact) }?;
    let mut store = Store::new(&engine, ());
    let instance = prepared.instantiate(&mut store, &[])?;
    instance.get_typed_func::<(), ()>(&mut store, "_start")?.call(&mut store, ())?;
    Ok(start.elapsed())
}

fn framemap_engine(creator: &Arc<FrameMemoryCreator>) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    Ok(Engine::new(&config)?)
}

/// A WASI command (no imports) with about `code_bytes` of code in functions
/// of a few KiB of arithmetic each, a 4 MiB non-zero data image, a
/// `_start` that calls the first function and stores its result, and a
/// `run` (for [`generate_component`]) that calls `_start` and returns 0.
fn generate(code_bytes: usize) -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    types.ty().function([], []);
    types.ty().function([], [ValType::I32]);
    let mut body = Function::new([(1, ValType::I32)]);
    for i in 0..400 {
        body.instruction(&Instruction::LocalGet(0));
        body.instruction(&Instruction::I32Const(i * 7 + 1));
        body.instruction(&Instruction::I32Mul);
        body.instruction(&Instruction::LocalGet(1));
        body.instruction(&Instruction::I32Xor);
        body.instruction(&Instruction::LocalSet(1));
    }
    body.instruction(&Instruction::LocalGet(1));
    body.instruction(&Instruction::End);
    let mut encoded = Vec::new();
    wasm_encoder::Encode::encode(&body, &mut encoded);
    let body_len = encoded.len();
    let count = (code_bytes / body_len).max(1) as u32;
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    for _ in 0..count {
        functions.function(0);
        code.function(&body);
    }
    functions.function(1);
    let mut start = Function::new([]);
    start.instruction(&Instruction::I32Const(0));
    start.instruction(&Instruction::I32Const(3));
    start.instruction(&Instruction::Call(0));
    start.instruction(&Instruction::I32Store(wasm_encoder::MemArg { offset: 0, align: 2, memory_index: 0 }));
    start.instruction(&Instruction::End);
    code.function(&start);
    functions.function(2);
    let mut run = Function::new([]);
    run.instruction(&Instruction::Call(count));
    run.instruction(&Instruction::I32Const(0));
    run.instruction(&Instruction::End);
    code.function(&run);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType { minimum: 128, maximum: None, memory64: false, shared: false, page_size_log2: None });
    let mut exports = ExportSection::new();
    exports.export("_start", ExportKind::Func, count);
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("run", ExportKind::Func, count + 1);
    let mut data = DataSection::new();
    let image: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8 | 1).collect();
    data.active(0, &ConstExpr::i32_const(65536), image);
    let mut module = Encoder::new();
    module.section(&types).section(&functions).section(&memories).section(&exports).section(&code).section(&data);
    module.finish()
}

/// A command component around the core `module` from [`generate`]: its
/// `run` lifted as `wasi:cli/run`'s `run: func() -> result` (0 is `ok`).
fn generate_component(module: &[u8]) -> Vec<u8> {
    use wasm_encoder::{
        Alias, CanonicalFunctionSection, CanonicalOption, Component, ComponentAliasSection, ComponentExportKind,
        ComponentExportSection, ComponentInstanceSection, ComponentTypeSection, ComponentValType, InstanceSection,
        ModuleArg, RawSection,
    };
    let mut component = Component::new();
    // A module section (id 1) holding the module's bytes.
    component.section(&RawSection { id: 1, data: module });
    let mut instances = InstanceSection::new();
    instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    component.section(&instances);
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::CoreInstanceExport { instance: 0, kind: ExportKind::Func, name: "run" });
    component.section(&aliases);
    let mut types = ComponentTypeSection::new();
    types.defined_type().result(None, None);
    types.function().params(Vec::<(&str, ComponentValType)>::new()).result(Some(ComponentValType::Type(0)));
    component.section(&types);
    let mut lifts = CanonicalFunctionSection::new();
    lifts.lift(0, 1, Vec::<CanonicalOption>::new());
    component.section(&lifts);
    let mut exported = ComponentInstanceSection::new();
    exported.export_items([("run", ComponentExportKind::Func, 0)]);
    component.section(&exported);
    let mut exports = ComponentExportSection::new();
    exports.export("wasi:cli/run@0.2.0", ComponentExportKind::Instance, 0, None);
    component.section(&exports);
    component.finish()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
