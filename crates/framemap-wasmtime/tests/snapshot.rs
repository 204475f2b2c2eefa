//! Instance snapshots: a prepared module's instance captured (every memory
//! and mutable global, exported or not) and restored into new instances
//! whose state is the snapshot's, without re-running the start function,
//! recycled slots included; incremental captures of restored instances; and
//! what cannot be captured faithfully refused.

use framemap::snapshot::{Snapshot, SnapshotWriter};
use framemap_wasmtime::{Error, FrameMemoryCreator, PreparedModule, engine};
use std::sync::Arc;
use wasmtime::{Config, Engine, Instance, Linker, Store};

fn setup() -> (Arc<FrameMemoryCreator>, Engine) {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&mut Config::new(), creator.clone()).unwrap();
    (creator, engine)
}

/// State in an unexported memory, an exported one, unexported mutable
/// globals (like `__stack_pointer`), a start function that counts its runs,
/// and an init that changes all of it (growing a memory too).
const MODULE: &str = r#"
(module
  (memory $hidden 2 8)
  (memory $shown (export "shown") 1 4)
  (global $sp (mut i32) (i32.const 1024))
  (global $starts (mut i32) (i32.const 0))
  (global $wide (mut i64) (i64.const 7))
  (global $v (mut v128) (v128.const i32x4 1 2 3 4))
  (global $fixed i32 (i32.const 99))
  (data $hidden (i32.const 0) "hidden data")
  (data $shown (i32.const 100) "shown data")
  (func $start (global.set $starts (i32.add (global.get $starts) (i32.const 1))))
  (start $start)
  (func (export "init")
    (drop (memory.grow $hidden (i32.const 1)))
    (i32.store $hidden (i32.const 140000) (i32.const 0xabcdef))
    (i32.store8 $hidden (i32.const 3) (i32.const 0x21))
    (i32.store $shown (i32.const 5000) (i32.const 77))
    (global.set $sp (i32.const 4096))
    (global.set $wide (i64.const -5))
    (global.set $v (v128.const i32x4 9 9 9 9)))
  (func (export "bump") (param $at i32) (result i32)
    (global.set $sp (i32.add (global.get $sp) (i32.const 1)))
    (i32.store $hidden (local.get $at) (global.get $sp))
    (global.get $sp))
  (func (export "state") (result i64)
    ;; A fingerprint of everything: globals, sizes and bytes of both memories.
    (i64.add
      (i64.add
        (i64.extend_i32_u (i32.add (global.get $sp) (i32.mul (global.get $starts) (i32.const 1000000))))
        (i64.mul (global.get $wide) (i64.const 3)))
      (i64.add
        (i64.extend_i32_u
          (i32.add (i32.add (memory.size $hidden) (i32.mul (memory.size $shown) (i32.const 16)))
                   (i32.add (i32x4.extract_lane 2 (global.get $v)) (global.get $fixed))))
        (i64.extend_i32_u
          (i32.add (i32.add (i32.load $hidden (i32.const 140000)) (i32.load8_u $hidden (i32.const 3)))
                   (i32.add (i32.load $shown (i32.const 5000)) (i32.load8_u $shown (i32.const 100))))))))
  (func (export "starts") (result i32) (global.get $starts))
  (func (export "sp") (result i32) (global.get $sp))
  (func (export "hidden") (param i32) (result i32) (i32.load $hidden (local.get 0))))
"#;

fn call<R: wasmtime::WasmResults>(store: &mut Store<()>, instance: &Instance, name: &str) -> R {
    instance.get_typed_func::<(), R>(&mut *store, name).unwrap().call(&mut *store, ()).unwrap()
}

fn bump(store: &mut Store<()>, instance: &Instance, at: i32) -> i32 {
    instance.get_typed_func::<i32, i32>(&mut *store, "bump").unwrap().call(&mut *store, at).unwrap()
}

fn hidden(store: &mut Store<()>, instance: &Instance, at: i32) -> i32 {
    instance.get_typed_func::<i32, i32>(&mut *store, "hidden").unwrap().call(&mut *store, at).unwrap()
}

/// An initialised instance and its snapshot.
fn initialised(prepared: &PreparedModule, engine: &Engine) -> (Store<()>, Instance, Snapshot) {
    let mut store = Store::new(engine, ());
    let instance = prepared.instantiate(&mut store, &[]).unwrap();
    call::<()>(&mut store, &instance, "init");
    let mut writer = SnapshotWriter::in_memory().unwrap();
    prepared.capture(&mut store, &instance, &mut writer).unwrap();
    let snapshot = writer.finish_in_memory().unwrap();
    (store, instance, snapshot)
}

#[test]
fn a_restored_instance_has_the_snapshot_s_memories_and_globals_and_skips_start() {
    let (creator, engine) = setup();
    let prepared = PreparedModule::with_snapshots(&creator, &engine, MODULE).unwrap();
    let (mut store, instance, snapshot) = initialised(&prepared, &engine);
    let expected: i64 = call(&mut store, &instance, "state");
    assert_eq!(call::<i32>(&mut store, &instance, "starts"), 1);
    // Two memories and four mutable globals, none of them forgotten.
    assert_eq!(snapshot.manifest().memories.len(), 2);
    assert_eq!(snapshot.manifest().globals.len(), 4);

    for _ in 0..3 {
        let mut restored_store = Store::new(&engine, ());
        let restored = prepared.instantiate_snapshot(&mut restored_store, &[], &snapshot).unwrap();
        assert_eq!(call::<i64>(&mut restored_store, &restored, "state"), expected);
        assert_eq!(call::<i32>(&mut restored_store, &restored, "starts"), 1, "the start function did not run again");
        assert_eq!(
            hidden(&mut restored_store, &restored, 150_000),
            0,
            "no write of an earlier restored instance shows"
        );
        // The restored instance runs on, privately.
        assert_eq!(bump(&mut restored_store, &restored, 150_000), 4097);
        assert_eq!(hidden(&mut restored_store, &restored, 150_000), 4097);
        assert_eq!(call::<i32>(&mut store, &instance, "sp"), 4096, "the original is untouched");
        // Dropped: its slots go back to the pool, and the next restore
        // (recycled) must not see its writes.
    }
    assert!(creator.stats().reused > 0, "restores reused recycled slots");
}

#[test]
fn restores_go_through_a_linker_an_instance_pre_and_asynchronously() {
    let (creator, engine) = setup();
    let prepared = PreparedModule::with_snapshots(&creator, &engine, MODULE).unwrap();
    let (mut store, instance, snapshot) = initialised(&prepared, &engine);
    let expected: i64 = call(&mut store, &instance, "state");
    let linker = Linker::new(&engine);
    let mut s = Store::new(&engine, ());
    let restored = prepared.instantiate_snapshot_with(&linker, &mut s, &snapshot).unwrap();
    assert_eq!(call::<i64>(&mut s, &restored, "state"), expected);
    let pre = prepared.instance_pre(&linker).unwrap();
    for _ in 0..3 {
        let mut s = Store::new(&engine, ());
        let restored = pre.instantiate_snapshot(&mut s, &snapshot).unwrap();
        assert_eq!(call::<i64>(&mut s, &restored, "state"), expected);
        assert_eq!(hidden(&mut s, &restored, 150_000), 0, "no write of an earlier restored instance shows");
        bump(&mut s, &restored, 150_000);
    }
    // The same InstancePre still instantiates fresh instances.
    let fresh = pre.instantiate(&mut s).unwrap();
    assert_eq!(call::<i32>(&mut s, &fresh, "sp"), 1024);

    let async_creator = FrameMemoryCreator::new();
    let async_engine = framemap_wasmtime::engine(&mut Config::new(), async_creator.clone()).unwrap();
    let prepared = PreparedModule::with_snapshots(&async_creator, &async_engine, MODULE).unwrap();
    let mut s = Store::new(&async_engine, ());
    let linker = Linker::new(&async_engine);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let state = runtime.block_on(async {
        let restored = prepared.instantiate_snapshot_with_async(&linker, &mut s, &snapshot).await.unwrap();
        let state = restored.get_typed_func::<(), i64>(&mut s, "state").unwrap();
        state.call_async(&mut s, ()).await.unwrap()
    });
    assert_eq!(state, expected, "a snapshot from one engine restores in another with the same module");
}

#[test]
fn a_restored_instance_is_captured_incrementally_against_its_snapshot() {
    let (creator, engine) = setup();
    let prepared = PreparedModule::with_snapshots(&creator, &engine, MODULE).unwrap();
    let (_, _, base) = initialised(&prepared, &engine);
    let mut store = Store::new(&engine, ());
    let restored = prepared.instantiate_snapshot(&mut store, &[], &base).unwrap();
    bump(&mut store, &restored, 190_000);
    let expected: i64 = call(&mut store, &restored, "state");
    let mut writer = SnapshotWriter::in_memory().unwrap().incremental_to(&base);
    prepared.capture(&mut store, &restored, &mut writer).unwrap();
    let child = writer.finish_in_memory().unwrap();
    if framemap::write_tracking_supported() {
        assert_eq!(child.data_pages(), 1, "one page written since the restore");
    }
    let child = child.with_parent(base.clone()).unwrap();
    let mut s = Store::new(&engine, ());
    let again = prepared.instantiate_snapshot(&mut s, &[], &child).unwrap();
    assert_eq!(call::<i64>(&mut s, &again, "state"), expected);
    assert_eq!(hidden(&mut s, &again, 190_000), 4097);
}

#[test]
fn what_cannot_be_captured_or_restored_is_refused() {
    let (creator, engine) = setup();
    // A module that changes a table.
    let tables = r#"(module (memory 1) (table 1 funcref)
        (func (export "f") (table.set (i32.const 0) (ref.null func))))"#;
    let prepared = PreparedModule::with_snapshots(&creator, &engine, tables).unwrap();
    let mut store = Store::new(&engine, ());
    let instance = prepared.instantiate(&mut store, &[]).unwrap();
    let mut writer = SnapshotWriter::in_memory().unwrap();
    let err = prepared.capture(&mut store, &instance, &mut writer).unwrap_err();
    assert!(matches!(&err, Error::NotSnapshottable { reason } if reason.contains("table.set")), "{err}");

    // A module prepared without snapshot support.
    let plain = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    let instance = plain.instantiate(&mut store, &[]).unwrap();
    assert!(matches!(plain.capture(&mut store, &instance, &mut writer), Err(Error::NotSnapshottable { .. })));

    // Another module's snapshot, and another module's instance.
    let prepared = PreparedModule::with_snapshots(&creator, &engine, MODULE).unwrap();
    let other = PreparedModule::with_snapshots(&creator, &engine, "(module (memory 1))").unwrap();
    let (_, _, snapshot) = initialised(&prepared, &engine);
    let mut s = Store::new(&engine, ());
    let err = other.instantiate_snapshot(&mut s, &[], &snapshot).unwrap_err();
    assert!(matches!(err.downcast_ref::<Error>(), Some(Error::SnapshotMismatch { .. })), "{err:#}");
    let other_instance = other.instantiate(&mut s, &[]).unwrap();
    let mut writer = SnapshotWriter::in_memory().unwrap();
    assert!(matches!(prepared.capture(&mut s, &other_instance, &mut writer), Err(Error::SnapshotMismatch { .. })));

    // An incremental snapshot without its parent.
    let mut store = Store::new(&engine, ());
    let restored = prepared.instantiate_snapshot(&mut store, &[], &snapshot).unwrap();
    let mut writer = SnapshotWriter::in_memory().unwrap().incremental_to(&snapshot);
    prepared.capture(&mut store, &restored, &mut writer).unwrap();
    let orphan = writer.finish_in_memory().unwrap();
    let err = prepared.instantiate_snapshot(&mut Store::new(&engine, ()), &[], &orphan).unwrap_err();
    assert!(
        matches!(err.downcast_ref::<Error>(), Some(Error::Snapshot(framemap::Error::MissingParent { .. }))),
        "{err:#}"
    );
}
