//! Prepared components: the same results and memories as unprepared
//! components and as wasmtime's own allocator, images mapped copy-on-write,
//! recycled slots reset to them.
//!
//! `tests/guests/wasip2_command.wasm` is real toolchain output: Rust for
//! `wasm32-wasip2` (a command component with wit-component's adapter and
//! shim modules around the program's own), rebuilt by `tests/guests/build.sh`.

use std::sync::Arc;

use framemap::FrameTag;
use framemap_wasmtime::component::ComponentNotPrepared;
use framemap_wasmtime::{FrameMemoryCreator, PreparedComponent, configure};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, ResourceTable, WasiCtx, WasiCtxView, WasiView};

const COMMAND: &[u8] = include_bytes!("guests/wasip2_command.wasm");

struct Host {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

fn framemap_engine() -> (Arc<FrameMemoryCreator>, Engine) {
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    (creator, Engine::new(&config).expect("engine"))
}

fn new_store(engine: &Engine, args: &[&str]) -> (Store<Host>, MemoryOutputPipe) {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let mut ctx = WasiCtx::builder();
    ctx.stdout(stdout.clone()).args(args).env("GREETING", "hello");
    (Store::new(engine, Host { ctx: ctx.build(), table: ResourceTable::new() }), stdout)
}

fn linker(engine: &Engine) -> Linker<Host> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
    linker
}

/// Runs the command in `store`; returns its exit status and stdout.
fn run(mut store: Store<Host>, stdout: MemoryOutputPipe, instance: wasmtime::component::Instance) -> (i32, String) {
    let command = Command::new(&mut store, &instance).expect("command");
    let status = match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(error) => error.downcast_ref::<I32Exit>().expect("only exits trap").0,
    };
    drop(store);
    (status, String::from_utf8(stdout.contents().to_vec()).expect("utf-8"))
}

/// The output of the guest on wasmtime's own allocator (no framemap).
fn reference(args: &[&str]) -> (i32, String) {
    let engine = Engine::default();
    let component = Component::new(&engine, COMMAND).expect("component");
    let (mut store, stdout) = new_store(&engine, args);
    let instance = linker(&engine).instantiate(&mut store, &component).expect("instantiate");
    run(store, stdout, instance)
}

#[test]
fn a_real_command_component_is_prepared_and_runs_as_on_wasmtime() {
    let (creator, engine) = framemap_engine();
    let prepared = PreparedComponent::new(&creator, &engine, COMMAND).expect("prepare");
    assert_eq!(prepared.not_prepared(), None);
    assert!(prepared.planned_memories() >= 1, "the program's own memory is planned");
    let expected = reference(&["cmd", "a", "b"]);
    assert!(expected.1.contains("calls 42"), "{}", expected.1);

    // Prepared: the 64 KiB table is an image, mapped, not copied.
    let (mut store, stdout) = new_store(&engine, &["cmd", "a", "b"]);
    let instance = prepared.instantiate(&mut store, &linker(&engine)).expect("instantiate");
    let image_bytes: u64 = creator.live_reports().iter().map(|r| r.summary.bytes[FrameTag::Image]).sum();
    assert!(image_bytes >= 64 * 1024, "the data segments are mapped as an image ({image_bytes} bytes)");
    assert_eq!(run(store, stdout, instance), expected);

    // Unprepared on the same engine: wasmtime copies the segments itself.
    let component = Component::new(&engine, COMMAND).expect("component");
    let (mut store, stdout) = new_store(&engine, &["cmd", "a", "b"]);
    let instance = linker(&engine).instantiate(&mut store, &component).expect("instantiate");
    let image_bytes: u64 = creator.live_reports().iter().map(|r| r.summary.bytes[FrameTag::Image]).sum();
    assert_eq!(image_bytes, 0);
    assert_eq!(run(store, stdout, instance), expected);
}

#[test]
fn recycled_slots_start_from_the_image_again() {
    let (creator, engine) = framemap_engine();
    let prepared = PreparedComponent::new(&creator, &engine, COMMAND).expect("prepare");
    let pre = prepared.instance_pre(&linker(&engine)).expect("pre");
    let expected = reference(&["cmd"]);
    for round in 0..4 {
        let (mut store, stdout) = new_store(&engine, &["cmd"]);
        let instance = pre.instantiate(&mut store).expect("instantiate");
        // The guest counts its calls in a static: 42 every time means every
        // instance starts from the image, whatever the last one wrote.
        assert_eq!(run(store, stdout, instance), expected, "round {round}");
    }
    let stats = creator.stats();
    assert!(stats.reused >= 3, "slots were recycled: {stats:?}");
}

#[test]
fn exit_status_and_arguments_pass_through() {
    let (creator, engine) = framemap_engine();
    let prepared = PreparedComponent::new(&creator, &engine, COMMAND).expect("prepare");
    let (mut store, stdout) = new_store(&engine, &["cmd", "exit", "7"]);
    let instance = prepared.instantiate(&mut store, &linker(&engine)).expect("instantiate");
    let (status, out) = run(store, stdout, instance);
    // wasi:cli/exit without the unstable `exit-with-code` says only "failed".
    assert_eq!((status, out.as_str()), (1, reference(&["cmd", "exit", "7"]).1.as_str()));
    assert!(out.starts_with("args [\"exit\", \"7\"]"), "{out}");
}

#[test]
fn async_instantiation_matches() {
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config).expect("engine");
    let prepared = PreparedComponent::new(&creator, &engine, COMMAND).expect("prepare");
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let out = runtime.block_on(async {
        let (mut store, stdout) = new_store(&engine, &["cmd", "x"]);
        let instance = prepared.instantiate_async(&mut store, &linker).await.expect("instantiate");
        let pre = prepared.instance_pre(&linker).expect("pre");
        let command = wasmtime_wasi::p2::bindings::Command::new(&mut store, &instance).expect("command");
        command.wasi_cli_run().call_run(&mut store).await.expect("run").expect("ok");
        // A second instance through the InstancePre, in another store.
        let (mut second, second_out) = new_store(&engine, &["cmd", "x"]);
        let instance = pre.instantiate_async(&mut second).await.expect("instantiate");
        let command = wasmtime_wasi::p2::bindings::Command::new(&mut second, &instance).expect("command");
        command.wasi_cli_run().call_run(&mut second).await.expect("run").expect("ok");
        (stdout.contents(), second_out.contents())
    });
    let expected = reference(&["cmd", "x"]).1;
    assert_eq!(String::from_utf8_lossy(&out.0), expected);
    assert_eq!(String::from_utf8_lossy(&out.1), expected);
}

/// A component whose core instances read their own memory through lifted
/// functions: nested components, a module instantiated twice, modules
/// passed as arguments. Each `read` returns the first word of its memory.
const NESTED: &str = r#"(component
    (core module $a (memory (export "m") 1) (data (i32.const 0) "\11\00\00\00")
        (func (export "read") (result i32) (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1))) (i32.load (i32.const 0))))
    (core module $b (memory (export "m") 1) (data (i32.const 0) "\22\00\00\00")
        (func (export "read") (result i32) (i32.load (i32.const 0))))
    (component $inner
        (import "m" (core module $m (export "m" (memory 1)) (export "read" (func (result i32)))))
        (core module $c (memory (export "m") 1) (data (i32.const 0) "\33\00\00\00")
            (func (export "read") (result i32) (i32.load (i32.const 0))))
        (core instance $c1 (instantiate $c))
        (core instance $m1 (instantiate $m))
        (func (export "c") (result u32) (canon lift (core func $c1 "read")))
        (func (export "m") (result u32) (canon lift (core func $m1 "read"))))
    (core instance $a1 (instantiate $a))
    (instance $i1 (instantiate $inner (with "m" (core module $b))))
    (core instance $a2 (instantiate $a))
    (instance $i2 (instantiate $inner (with "m" (core module $a))))
    (func (export "a1") (result u32) (canon lift (core func $a1 "read")))
    (func (export "a2") (result u32) (canon lift (core func $a2 "read")))
    (export "i1" (instance $i1))
    (export "i2" (instance $i2)))"#;

/// Every lifted function's result, in a fixed order, twice (the `a`
/// modules count their calls in memory).
fn nested_results(engine: &Engine, instantiate: impl Fn(&mut Store<()>) -> wasmtime::component::Instance) -> Vec<u32> {
    let mut store = Store::new(engine, ());
    let instance = instantiate(&mut store);
    let mut results = Vec::new();
    let paths: [&[&str]; 6] = [&["a1"], &["a2"], &["i1", "c"], &["i1", "m"], &["i2", "c"], &["i2", "m"]];
    for _ in 0..2 {
        for path in paths {
            let mut index = None;
            for name in path {
                index = Some(instance.get_export_index(&mut store, index.as_ref(), name).expect("export"));
            }
            let func = instance.get_typed_func::<(), (u32,)>(&mut store, index.expect("path")).expect("func");
            let (value,) = func.call(&mut store, ()).expect("call");
            results.push(value);
        }
    }
    results
}

#[test]
fn nested_components_get_each_image_in_its_own_memory() {
    let (creator, engine) = framemap_engine();
    let prepared = PreparedComponent::new(&creator, &engine, NESTED).expect("prepare");
    assert_eq!(prepared.not_prepared(), None);
    // $a1, $c (i1), $b (i1), $a2, $c (i2), $a (i2).
    assert_eq!(prepared.planned_memories(), 6);
    let linker = Linker::new(&engine);
    let got = nested_results(&engine, |store| prepared.instantiate(store, &linker).expect("instantiate"));
    let plain = Engine::default();
    let component = Component::new(&plain, NESTED).expect("component");
    let want = nested_results(&plain, |store| Linker::new(&plain).instantiate(store, &component).expect("instantiate"));
    assert_eq!(want, [0x12, 0x12, 0x33, 0x22, 0x33, 0x12, 0x13, 0x13, 0x33, 0x22, 0x33, 0x13]);
    assert_eq!(got, want);
}

#[test]
fn components_whose_memories_cannot_be_attributed_stay_unprepared() {
    let (creator, engine) = framemap_engine();
    let imports_a_module = r#"(component
        (import "m" (core module $m (export "m" (memory 1))))
        (core module $own (memory 1) (data (i32.const 0) "x"))
        (core instance (instantiate $own))
        (core instance (instantiate $m)))"#;
    let prepared = PreparedComponent::new(&creator, &engine, imports_a_module).expect("compile unchanged");
    assert!(matches!(prepared.not_prepared(), Some(ComponentNotPrepared::Order(_))), "{:?}", prepared.not_prepared());
    assert_eq!(prepared.planned_memories(), 0);

    let no_data = r#"(component (core module $m (memory 1)) (core instance (instantiate $m)))"#;
    let prepared = PreparedComponent::new(&creator, &engine, no_data).expect("compile unchanged");
    assert_eq!(prepared.not_prepared(), Some(&ComponentNotPrepared::NothingToCut));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let (creator, engine) = framemap_engine();
    for bad in [&b""[..], b"\0asm", b"\0asm\x0d\x00\x01\x00\x01\xff", &COMMAND[..COMMAND.len() / 2]] {
        let error = PreparedComponent::new(&creator, &engine, bad).expect_err("refused");
        assert!(error.to_string().starts_with("invalid component"), "{error}");
    }
    let module = PreparedComponent::new(&creator, &engine, "(module)").expect_err("a module is not a component");
    assert!(module.to_string().contains("core module"), "{module}");
}
