//! Compile-cache artifacts of components: a saved and loaded
//! `PreparedComponent` instantiates exactly as the freshly built one (same
//! plan, same images' bytes, mapped from the file; same output); damaged,
//! truncated, old-format and other-kind artifacts are refused with their
//! own errors.
//!
//! `tests/guests/wasip2_command.wasm` is real toolchain output (Rust for
//! `wasm32-wasip2`), rebuilt by `tests/guests/build.sh`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use framemap::{FrameKind, FrameTag};
use framemap_wasmtime::component::ComponentNotPrepared;
use framemap_wasmtime::rewrite::NotPrepared;
use framemap_wasmtime::{Error, FrameMemoryCreator, FrameReport, PreparedComponent, PreparedModule, configure};
use wasmtime::component::{Instance, Linker};
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

/// A fresh scratch directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framemap-component-artifact-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Loads `path` (the tests' files are only changed between loads).
fn load(creator: &Arc<FrameMemoryCreator>, engine: &Engine, path: &Path) -> Result<PreparedComponent, Error> {
    // SAFETY: the file was written by this crate (or damaged on purpose,
    // which the load must refuse) and is not changed while loaded.
    unsafe { PreparedComponent::load_artifact(creator, engine, path) }
}

fn linker(engine: &Engine) -> Linker<Host> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
    linker
}

/// The frame table of every live memory, image ids replaced by the order
/// in which they first appear (two artifacts' images have other ids).
fn layouts(creator: &FrameMemoryCreator) -> Vec<Vec<(framemap::PageRange, String)>> {
    let mut ids = HashMap::new();
    let reports: Vec<FrameReport> = creator.live_reports();
    reports
        .iter()
        .map(|report| {
            report
                .runs
                .iter()
                .map(|(range, frame)| {
                    let kind = match frame.kind() {
                        FrameKind::Image { image, page } => {
                            let next = ids.len();
                            format!("image #{} page {page}", ids.entry(image).or_insert(next))
                        }
                        other => format!("{other:?}"),
                    };
                    (*range, format!("{kind} {:?}", frame.prot()))
                })
                .collect()
        })
        .collect()
}

/// Instantiates `prepared`, notes the memories' layouts, runs the command:
/// (layouts, exit status, stdout).
fn run(
    creator: &FrameMemoryCreator,
    engine: &Engine,
    prepared: &PreparedComponent,
    args: &[&str],
) -> (Vec<Vec<(framemap::PageRange, String)>>, i32, String) {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let mut ctx = WasiCtx::builder();
    ctx.stdout(stdout.clone()).args(args);
    let mut store = Store::new(engine, Host { ctx: ctx.build(), table: ResourceTable::new() });
    let instance: Instance = prepared.instantiate(&mut store, &linker(engine)).expect("instantiate");
    for memory in creator.live_memories() {
        memory.validate().expect("the kernel maps what the table says");
    }
    let layout = layouts(creator);
    let command = Command::new(&mut store, &instance).expect("command");
    let status = match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(error) => error.downcast_ref::<I32Exit>().expect("only exits trap").0,
    };
    drop(store);
    (layout, status, String::from_utf8(stdout.contents().to_vec()).expect("utf-8"))
}

/// Each image's bytes, in plan order.
fn image_bytes(prepared: &PreparedComponent) -> Vec<Option<Vec<u8>>> {
    let read = |image: &framemap::Image| {
        let mut bytes = vec![0u8; image.len() as usize];
        image.read(0, &mut bytes).expect("read");
        bytes
    };
    prepared.images().iter().map(|image| image.as_ref().map(read)).collect()
}

#[test]
fn a_loaded_command_component_runs_as_the_fresh_one() {
    let dir = scratch("round-trip");
    let (creator, engine) = framemap_engine();
    let fresh = PreparedComponent::new(&creator, &engine, COMMAND).expect("prepare");
    assert_eq!(fresh.not_prepared(), None);
    let path = dir.join("command.fmart");
    let info = fresh.save_artifact(&path).expect("save");
    assert_eq!(info.file_len, std::fs::metadata(&path).expect("stat").len());
    let names: Vec<_> = std::fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, ["command.fmart"], "no temporary file left");

    let loaded = load(&creator, &engine, &path).expect("load");
    assert_eq!(loaded.not_prepared(), fresh.not_prepared());
    assert_eq!(loaded.unprepared_modules(), fresh.unprepared_modules());
    assert_eq!(loaded.planned_memories(), fresh.planned_memories());
    assert_eq!(image_bytes(&loaded), image_bytes(&fresh), "the same images, byte for byte");
    let images: Vec<_> = loaded.images().into_iter().flatten().collect();
    assert!(!images.is_empty(), "the program's data is an image");
    assert_eq!(info.image_bytes, images.iter().map(|i| i.len()).sum::<u64>());
    assert!(images.iter().all(framemap::Image::is_immutable));

    for (round, args) in [&["cmd", "a", "b"][..], &["cmd"], &["cmd", "exit", "7"], &["cmd"]].iter().enumerate() {
        let from_file = run(&creator, &engine, &loaded, args);
        let from_fresh = run(&creator, &engine, &fresh, args);
        assert_eq!(from_file, from_fresh, "round {round}: layouts, status and output");
        assert!(from_file.2.contains("calls 42"), "round {round}: every instance starts from the image");
    }
    // The loaded component's memories map its own images (ranges of the file).
    let stdout = MemoryOutputPipe::new(1 << 20);
    let mut ctx = WasiCtx::builder();
    ctx.stdout(stdout);
    let mut store = Store::new(&engine, Host { ctx: ctx.build(), table: ResourceTable::new() });
    let _instance = loaded.instantiate(&mut store, &linker(&engine)).expect("instantiate");
    let mapped: Vec<_> = creator
        .live_reports()
        .iter()
        .flat_map(|r| r.runs.iter().map(|(_, frame)| frame.kind()).collect::<Vec<_>>())
        .filter_map(|kind| match kind {
            FrameKind::Image { image, .. } => Some(image),
            _ => None,
        })
        .collect();
    assert!(!mapped.is_empty() && mapped.iter().all(|id| images.iter().any(|i| i.id() == *id)), "{mapped:?}");
    let image_total: u64 = creator.live_reports().iter().map(|r| r.summary.bytes[FrameTag::Image]).sum();
    assert!(image_total >= 64 * 1024, "{image_total} bytes of image frames");
    drop(store);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_module_instantiated_three_times_keeps_one_image_and_its_order() {
    let dir = scratch("shared");
    let (creator, engine) = framemap_engine();
    // $a is instantiated three times (twice in the root, once through a
    // nested component); each `read` returns the first word of its memory
    // (`a`'s adds one each call).
    let nested = r#"(component
        (core module $a (memory (export "m") 1) (data (i32.const 0) "\11\00\00\00")
            (func (export "read") (result i32) (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1))) (i32.load (i32.const 0))))
        (core module $b (memory (export "m") 1) (data (i32.const 0) "\22\00\00\00")
            (func (export "read") (result i32) (i32.load (i32.const 0))))
        (component $inner
            (import "m" (core module $m (export "m" (memory 1)) (export "read" (func (result i32)))))
            (core instance $m1 (instantiate $m))
            (func (export "m") (result u32) (canon lift (core func $m1 "read"))))
        (core instance $a1 (instantiate $a))
        (core instance $b1 (instantiate $b))
        (core instance $a2 (instantiate $a))
        (instance $i (instantiate $inner (with "m" (core module $a))))
        (func (export "a1") (result u32) (canon lift (core func $a1 "read")))
        (func (export "b1") (result u32) (canon lift (core func $b1 "read")))
        (func (export "a2") (result u32) (canon lift (core func $a2 "read")))
        (export "i" (instance $i)))"#;
    let fresh = PreparedComponent::new(&creator, &engine, nested).expect("prepare");
    assert_eq!(fresh.planned_memories(), 4);
    let path = dir.join("nested.fmart");
    let info = fresh.save_artifact(&path).expect("save");
    let page = framemap::host_page_size() as u64;
    assert_eq!(info.image_bytes, 2 * page, "the image of $a is stored once");
    let loaded = load(&creator, &engine, &path).expect("load");
    let ids: Vec<_> = loaded.images().iter().map(|i| i.as_ref().expect("every memory has data").id()).collect();
    assert_eq!((ids[0] == ids[2], ids[2] == ids[3], ids[0] == ids[1]), (true, true, false), "{ids:?}");

    let results = |prepared: &PreparedComponent| {
        let mut store = Store::new(&engine, ());
        let instance = prepared.instantiate(&mut store, &Linker::new(&engine)).expect("instantiate");
        let mut out = Vec::new();
        for path in [&["a1"][..], &["b1"], &["a2"], &["i", "m"], &["a1"]] {
            let mut index = None;
            for name in path {
                index = Some(instance.get_export_index(&mut store, index.as_ref(), name).expect("export"));
            }
            let func = instance.get_typed_func::<(), (u32,)>(&mut store, index.expect("path")).expect("func");
            out.push(func.call(&mut store, ()).expect("call").0);
        }
        out
    };
    assert_eq!(results(&fresh), [0x12, 0x22, 0x12, 0x12, 0x13]);
    for round in 0..3 {
        assert_eq!(results(&loaded), results(&fresh), "round {round}");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn unprepared_components_and_modules_round_trip_with_their_reasons() {
    let dir = scratch("unprepared");
    let (creator, engine) = framemap_engine();
    let path = dir.join("c.fmart");
    let round_trip = |wasm: &str| {
        let fresh = PreparedComponent::new(&creator, &engine, wasm).expect("prepare");
        fresh.save_artifact(&path).expect("save");
        let loaded = load(&creator, &engine, &path).expect("load");
        assert_eq!(loaded.not_prepared(), fresh.not_prepared());
        assert_eq!(loaded.unprepared_modules(), fresh.unprepared_modules());
        assert_eq!(loaded.planned_memories(), fresh.planned_memories());
        assert_eq!(image_bytes(&loaded), image_bytes(&fresh));
        let mut store = Store::new(&engine, ());
        loaded.instantiate(&mut store, &Linker::new(&engine)).expect("instantiate");
        loaded
    };
    let no_data = round_trip(r#"(component (core module $m (memory 1)) (core instance (instantiate $m)))"#);
    assert_eq!(no_data.not_prepared(), Some(&ComponentNotPrepared::NothingToCut));

    // One module cut, one left unchanged (its offset reads a global).
    let mixed = round_trip(
        r#"(component
        (core module $cut (memory 1) (data (i32.const 0) "cut"))
        (core module $kept (global $g (import "env" "g") i32) (memory 1) (data (global.get $g) "kept"))
        (core module $env (global (export "g") i32 (i32.const 8)))
        (core instance (instantiate $cut))
        (core instance $env (instantiate $env))
        (core instance (instantiate $kept (with "env" (instance $env)))))"#,
    );
    assert_eq!(mixed.not_prepared(), None);
    assert_eq!(mixed.unprepared_modules(), [(1, NotPrepared::NonConstantOffset { segment: 0 })]);
    let images = mixed.images();
    assert!(images[0].is_some() && images[1].is_none(), "{images:?}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn flipped_bytes_and_cuts_are_refused_before_wasmtime_reads_the_file() {
    let dir = scratch("damaged");
    let (creator, engine) = framemap_engine();
    let path = dir.join("whole.fmart");
    let fresh = PreparedComponent::new(&creator, &engine, COMMAND).expect("prepare");
    let info = fresh.save_artifact(&path).expect("save");
    let whole = std::fs::read(&path).expect("read");
    let len = whole.len();
    let page = framemap::host_page_size();
    let code_end = (info.code_len as usize).next_multiple_of(page);
    let bad = dir.join("bad.fmart");
    // The ELF header, code, padding, the first image page, metadata.
    for at in [0, 17, info.code_len as usize / 2, code_end - 1, code_end, len - 97] {
        let mut flipped = whole.clone();
        flipped[at] ^= 0x04;
        std::fs::write(&bad, &flipped).expect("write");
        let outcome = load(&creator, &engine, &bad);
        assert!(matches!(outcome, Err(Error::ArtifactChecksum { part: "contents", .. })), "byte {at}: {outcome:?}");
    }
    // The fingerprint, the kind, the contents CRC (the magics are checked first).
    for at in [len - 76, len - 30, len - 14] {
        let mut flipped = whole.clone();
        flipped[at] ^= 0x04;
        std::fs::write(&bad, &flipped).expect("write");
        let outcome = load(&creator, &engine, &bad);
        assert!(matches!(outcome, Err(Error::ArtifactChecksum { part: "trailer", .. })), "byte {at}: {outcome:?}");
    }
    let mut cuts = vec![1, 4, 5, info.code_len - 1, info.code_len, code_end as u64 + 1];
    cuts.extend([len as u64 - 96, len as u64 - 95, len as u64 - 1]);
    for at in cuts {
        std::fs::write(&bad, &whole[..at as usize]).expect("write");
        match load(&creator, &engine, &bad) {
            Err(Error::ArtifactTruncated { len: found, .. }) => assert_eq!(found, at),
            Err(Error::ArtifactNotFramemap { .. }) => assert!(at < 4, "cut at {at}: an ELF start was kept"),
            other => panic!("cut at {at} of {len}: {other:?}"),
        }
    }
    // A format-1 artifact (the same trailer place for magic and version).
    let mut old = whole.clone();
    old[len - 88..len - 84].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32fast::hash(&old[len - 96..len - 12]);
    old[len - 12..len - 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&bad, &old).expect("write");
    let outcome = load(&creator, &engine, &bad);
    assert!(matches!(outcome, Err(Error::ArtifactVersion { found: 1, expected: 2, .. })), "{outcome:?}");
    // Whole again: it loads.
    std::fs::write(&bad, &whole).expect("write");
    load(&creator, &engine, &bad).expect("the undamaged copy loads");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn module_and_component_artifacts_are_never_confused() {
    let dir = scratch("kind");
    let (creator, engine) = framemap_engine();
    let (module_path, component_path) = (dir.join("module.fmart"), dir.join("component.fmart"));
    let module = PreparedModule::new(&creator, &engine, r#"(module (memory 1) (data (i32.const 0) "m"))"#);
    module.expect("module").save_artifact(&module_path).expect("save module");
    PreparedComponent::new(&creator, &engine, COMMAND).expect("prepare").save_artifact(&component_path).expect("save");
    let as_component = load(&creator, &engine, &module_path);
    assert!(
        matches!(as_component, Err(Error::ArtifactKind { found: "module", expected: "component", .. })),
        "{as_component:?}"
    );
    // SAFETY: written by this crate above, not changed while loaded.
    let as_module = unsafe { PreparedModule::load_artifact(&creator, &engine, &component_path) };
    assert!(
        matches!(as_module, Err(Error::ArtifactKind { found: "component", expected: "module", .. })),
        "{as_module:?}"
    );
    let message = as_module.expect_err("refused").to_string();
    assert!(message.contains("holds a compiled component, not a module"), "{message}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn components_made_for_snapshots_are_not_saved() {
    let dir = scratch("snapshots");
    let (creator, engine) = framemap_engine();
    let snapshots = PreparedComponent::with_snapshots(&creator, &engine, COMMAND).expect("prepare");
    let refused = snapshots.save_artifact(&dir.join("snap.fmart"));
    assert!(matches!(refused, Err(Error::ArtifactUnsupported { .. })), "{refused:?}");
    assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 0, "nothing written");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_loaded_component_outlives_its_path() {
    let dir = scratch("unlinked");
    let (creator, engine) = framemap_engine();
    let path = dir.join("c.fmart");
    let fresh = PreparedComponent::new(&creator, &engine, COMMAND).expect("prepare");
    fresh.save_artifact(&path).expect("save");
    let loaded = load(&creator, &engine, &path).expect("load");
    // Another artifact renamed over the path, then the path unlinked: the
    // loaded component keeps the file it checked.
    let other = PreparedComponent::new(&creator, &engine, r#"(component (core module (memory 1)))"#).expect("other");
    other.save_artifact(&path).expect("save over");
    std::fs::remove_file(&path).expect("unlink");
    let (_, status, out) = run(&creator, &engine, &loaded, &["cmd", "z"]);
    let (_, _, expected) = run(&creator, &engine, &fresh, &["cmd", "z"]);
    assert_eq!((status, out), (0, expected));
    std::fs::remove_dir_all(&dir).expect("clean up");
}
