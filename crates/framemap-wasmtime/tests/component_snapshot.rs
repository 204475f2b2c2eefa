//! Instance snapshots of components: every core memory and every mutable
//! global of every core instance (none of them exported) captured, and
//! restored into new instances without re-running core start functions;
//! recycled slots, incremental captures, a real toolchain component, and
//! what cannot be captured faithfully refused.

use framemap::snapshot::{Snapshot, SnapshotWriter};
use framemap_wasmtime::component::TrackedInstance;
use framemap_wasmtime::{Error, FrameMemoryCreator, PreparedComponent, engine};
use std::sync::Arc;
use wasmtime::component::{Linker, TypedFunc};
use wasmtime::{Config, Engine, Store};

fn setup() -> (Arc<FrameMemoryCreator>, Engine) {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&mut Config::new(), creator.clone()).expect("engine");
    (creator, engine)
}

/// Two core instances of two modules: state in memories (with data
/// segments), in globals of all four types, and in a start function's
/// count; one module imports the other's memory and writes into it.
const COMPONENT: &str = r#"(component
  (core module $a
    (memory (export "mem") 1 4)
    (global $sp (mut i32) (i32.const 1024))
    (global $starts (mut i32) (i32.const 0))
    (global $wide (mut i64) (i64.const 7))
    (global $f (mut f32) (f32.const 1.5))
    (global $d (mut f64) (f64.const -2.25))
    (data (i32.const 16) "\2a\00\00\00")
    (func $start (global.set $starts (i32.add (global.get $starts) (i32.const 1))))
    (start $start)
    (func (export "step") (result i32)
      (global.set $sp (i32.add (global.get $sp) (i32.const 1)))
      (global.set $wide (i64.mul (global.get $wide) (i64.const 3)))
      (global.set $f (f32.mul (global.get $f) (f32.const 2)))
      (global.set $d (f64.sub (global.get $d) (f64.const 1)))
      (i32.store (i32.const 16) (i32.add (i32.load (i32.const 16)) (i32.const 1)))
      (drop (memory.grow (i32.const 1)))
      (i32.store (i32.const 70000) (global.get $sp))
      (global.get $sp))
    (func (export "state") (result i64)
      (i64.add
        (i64.add (i64.extend_i32_u (i32.mul (global.get $starts) (i32.const 1000000)))
                 (i64.add (global.get $wide) (i64.extend_i32_u (global.get $sp))))
        (i64.add
          (i64.add (i64.trunc_f32_s (global.get $f)) (i64.trunc_f64_s (f64.mul (global.get $d) (f64.const 4))))
          (i64.extend_i32_u (i32.add (i32.add (i32.load (i32.const 16)) (memory.size))
                                     (i32.load (i32.const 70000))))))))
  (core module $b
    (import "a" "mem" (memory 1))
    (memory $own 1)
    (global $n (mut i32) (i32.const 5))
    (data $own (i32.const 0) "\09\00\00\00")
    (func (export "poke") (result i32)
      (global.set $n (i32.add (global.get $n) (i32.load $own (i32.const 0))))
      (i32.store $own (i32.const 0) (i32.add (i32.load $own (i32.const 0)) (i32.const 1)))
      (i32.store 0 (i32.const 100) (global.get $n))
      (global.get $n))
    (func (export "peek") (result i32) (i32.add (i32.load 0 (i32.const 100)) (global.get $n))))
  (core instance $ia (instantiate $a))
  (core instance $ib (instantiate $b (with "a" (instance $ia))))
  (func (export "step") (result u32) (canon lift (core func $ia "step")))
  (func (export "state") (result s64) (canon lift (core func $ia "state")))
  (func (export "poke") (result u32) (canon lift (core func $ib "poke")))
  (func (export "peek") (result u32) (canon lift (core func $ib "peek"))))"#;

fn func<R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift + 'static>(
    store: &mut Store<()>,
    tracked: &TrackedInstance,
    name: &str,
) -> TypedFunc<(), R> {
    tracked.instance().get_typed_func::<(), R>(&mut *store, name).expect("export")
}

fn call_u32(store: &mut Store<()>, tracked: &TrackedInstance, name: &str) -> u32 {
    func::<(u32,)>(store, tracked, name).call(&mut *store, ()).expect("call").0
}

fn state(store: &mut Store<()>, tracked: &TrackedInstance) -> (i64, u32) {
    let state = func::<(i64,)>(store, tracked, "state").call(&mut *store, ()).expect("call").0;
    (state, call_u32(store, tracked, "peek"))
}

fn capture(prepared: &PreparedComponent, store: &mut Store<()>, tracked: &TrackedInstance) -> Snapshot {
    let mut writer = SnapshotWriter::in_memory().expect("writer");
    prepared.capture(&mut *store, tracked, &mut writer).expect("capture");
    writer.finish_in_memory().expect("finish")
}

#[test]
fn a_restored_component_has_every_core_memory_and_global_and_skips_start() {
    let (creator, engine) = setup();
    let prepared = PreparedComponent::with_snapshots(&creator, &engine, COMPONENT).expect("prepare");
    let linker = Linker::new(&engine);
    let mut store = Store::new(&engine, ());
    let tracked = prepared.instantiate_tracked(&mut store, &linker).expect("instantiate");
    assert_eq!(tracked.memories().len(), 2, "$a's memory and $b's own");
    for _ in 0..2 {
        call_u32(&mut store, &tracked, "step");
        call_u32(&mut store, &tracked, "poke");
    }
    let expected = state(&mut store, &tracked);
    let snapshot = capture(&prepared, &mut store, &tracked);
    assert_eq!(snapshot.manifest().memories.len(), 2);
    assert_eq!(snapshot.manifest().globals.len(), 6, "five of $a's, one of $b's");

    // The original goes on; what it does next is what restored ones must do.
    let next = (call_u32(&mut store, &tracked, "step"), call_u32(&mut store, &tracked, "poke"));
    let after = state(&mut store, &tracked);
    for round in 0..3 {
        let mut restored_store = Store::new(&engine, ());
        let restored = prepared.instantiate_snapshot(&mut restored_store, &linker, &snapshot).expect("restore");
        assert_eq!(state(&mut restored_store, &restored), expected, "round {round}: the captured state");
        let went_on =
            (call_u32(&mut restored_store, &restored, "step"), call_u32(&mut restored_store, &restored, "poke"));
        assert_eq!(went_on, next, "round {round}");
        assert_eq!(state(&mut restored_store, &restored), after, "round {round}");
    }
    assert!(creator.stats().reused > 0, "restores reused recycled slots");
}

#[test]
fn a_restored_component_captures_incrementally() {
    let (_creator, engine) = setup();
    let prepared = PreparedComponent::with_snapshots(&_creator, &engine, COMPONENT).expect("prepare");
    let linker = Linker::new(&engine);
    let mut store = Store::new(&engine, ());
    let tracked = prepared.instantiate_tracked(&mut store, &linker).expect("instantiate");
    call_u32(&mut store, &tracked, "step");
    let base = capture(&prepared, &mut store, &tracked);

    let mut second = Store::new(&engine, ());
    let restored = prepared.instantiate_snapshot(&mut second, &linker, &base).expect("restore");
    call_u32(&mut second, &restored, "poke");
    let expected = state(&mut second, &restored);
    let mut writer = SnapshotWriter::in_memory().expect("writer").incremental_to(&base);
    prepared.capture(&mut second, &restored, &mut writer).expect("incremental capture");
    let child = writer.finish_in_memory().expect("finish").with_parent(base.clone()).expect("parent");
    // poke wrote one page of each memory.
    assert_eq!(child.data_pages(), 2, "only the pages poke wrote are stored");

    let mut third = Store::new(&engine, ());
    let again = prepared.instantiate_snapshot(&mut third, &linker, &child).expect("restore the chain");
    assert_eq!(state(&mut third, &again), expected);
}

#[test]
fn the_real_command_component_restores_after_a_run() {
    use wasmtime_wasi::p2::bindings::sync::Command;
    use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
    use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};
    struct Host(WasiCtx, ResourceTable, MemoryOutputPipe);
    impl WasiView for Host {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView { ctx: &mut self.0, table: &mut self.1 }
        }
    }
    let new_store = |engine: &Engine| {
        let out = MemoryOutputPipe::new(1 << 16);
        let ctx = WasiCtx::builder().stdout(out.clone()).args(&["cmd"]).build();
        Store::new(engine, Host(ctx, ResourceTable::new(), out))
    };
    let run = |store: &mut Store<Host>, tracked: &TrackedInstance| -> wasmtime::Result<String> {
        let command = Command::new(&mut *store, &tracked.instance()).expect("command");
        let before = store.data().2.contents().len();
        command.wasi_cli_run().call_run(&mut *store)?.expect("ok");
        Ok(String::from_utf8_lossy(&store.data().2.contents()[before..]).into_owned())
    };
    let capture = |prepared: &PreparedComponent, store: &mut Store<Host>, tracked: &TrackedInstance| {
        let mut writer = SnapshotWriter::in_memory().expect("writer");
        prepared.capture(&mut *store, tracked, &mut writer).expect("capture");
        writer.finish_in_memory().expect("finish")
    };
    let (creator, engine) = setup();
    let wasm = include_bytes!("guests/wasip2_command.wasm");
    let prepared = PreparedComponent::with_snapshots(&creator, &engine, wasm).expect("prepare");
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");

    // Captured before the run: a restored instance runs as a fresh one.
    let mut store = new_store(&engine);
    let tracked = prepared.instantiate_tracked(&mut store, &linker).expect("instantiate");
    let fresh = capture(&prepared, &mut store, &tracked);
    let output = run(&mut store, &tracked).expect("run");
    assert!(output.ends_with("calls 42\n"), "{output}");
    for _ in 0..2 {
        let mut restored_store = new_store(&engine);
        let restored = prepared.instantiate_snapshot(&mut restored_store, &linker, &fresh).expect("restore");
        assert_eq!(run(&mut restored_store, &restored).expect("run"), output);
    }

    // Captured after the run: wasi-libc's `_start` traps when called a
    // second time (it records in memory that it started), and so does the
    // restored instance: the snapshot holds that memory.
    let after = capture(&prepared, &mut store, &tracked);
    let again = run(&mut store, &tracked).expect_err("a second run traps");
    let mut restored_store = new_store(&engine);
    let restored = prepared.instantiate_snapshot(&mut restored_store, &linker, &after).expect("restore");
    let restored_again = run(&mut restored_store, &restored).expect_err("so does the restored instance's");
    let trap = |e: &wasmtime::Error| e.downcast_ref::<wasmtime::Trap>().copied();
    assert_eq!(trap(&restored_again), trap(&again));
    assert_eq!(trap(&again), Some(wasmtime::Trap::UnreachableCodeReached));
}

#[test]
fn what_cannot_be_captured_faithfully_is_refused() {
    let (creator, engine) = setup();
    let changes_a_table = r#"(component
        (core module $m (table 1 funcref) (memory 1) (global (mut i32) (i32.const 0))
            (func (export "f") (table.set (i32.const 0) (ref.null func))))
        (core instance $i (instantiate $m))
        (func (export "f") (canon lift (core func $i "f"))))"#;
    let prepared = PreparedComponent::with_snapshots(&creator, &engine, changes_a_table).expect("it still runs");
    let mut store = Store::new(&engine, ());
    let linker = Linker::new(&engine);
    let err = prepared.instantiate_tracked(&mut store, &linker).expect_err("nothing to track for");
    assert!(err.to_string().contains("table.set"), "{err}");
    let instance = prepared.instantiate(&mut store, &linker).expect("plain instantiation works");
    instance.get_typed_func::<(), ()>(&mut store, "f").expect("f").call(&mut store, ()).expect("runs");

    let imports_a_module = r#"(component (import "m" (core module $m)) (core instance (instantiate $m)))"#;
    let err = PreparedComponent::with_snapshots(&creator, &engine, imports_a_module).expect_err("unattributable");
    assert!(matches!(err, Error::NotSnapshottable { .. }), "{err}");

    // Not with_snapshots: capture says so.
    let plain = PreparedComponent::new(&creator, &engine, COMPONENT).expect("prepare");
    let err = plain.instantiate_tracked(&mut store, &linker).expect_err("no snapshot support");
    assert!(err.to_string().contains("with_snapshots"), "{err}");
}

#[test]
fn a_snapshot_of_another_component_is_refused() {
    let (creator, engine) = setup();
    let prepared = PreparedComponent::with_snapshots(&creator, &engine, COMPONENT).expect("prepare");
    let other = r#"(component
        (core module $m (memory 1) (global (mut i32) (i32.const 0)))
        (core instance (instantiate $m)))"#;
    let other = PreparedComponent::with_snapshots(&creator, &engine, other).expect("prepare");
    let linker = Linker::new(&engine);
    let mut store = Store::new(&engine, ());
    let tracked = other.instantiate_tracked(&mut store, &linker).expect("instantiate");
    let snapshot = capture(&other, &mut store, &tracked);
    let mut fresh = Store::new(&engine, ());
    let err = prepared.instantiate_snapshot(&mut fresh, &linker, &snapshot).expect_err("does not fit");
    assert!(matches!(err.downcast_ref::<Error>(), Some(Error::SnapshotMismatch { .. })), "{err}");
    // A tracked instance of another component is refused by capture too.
    let mut writer = SnapshotWriter::in_memory().expect("writer");
    let err = prepared.capture(&mut store, &tracked, &mut writer).expect_err("not this component's");
    assert!(matches!(err, Error::SnapshotMismatch { .. }), "{err}");
}

/// A window of a host buffer in a core memory of a component is captured by
/// the buffer's name and restored shared, as for modules
/// (`tests/snapshot_windows.rs`); a component without the name refuses it.
#[test]
fn a_window_in_a_component_memory_is_restored_shared() {
    use framemap::{Protection, SharedBuffer};
    use framemap_wasmtime::SnapshotBuffers;
    let (_creator, engine) = setup();
    let mut prepared = PreparedComponent::with_snapshots(&_creator, &engine, COMPONENT).expect("prepare");
    let linker = Linker::new(&engine);
    let mut store = Store::new(&engine, ());
    let tracked = prepared.instantiate_tracked(&mut store, &linker).expect("instantiate");
    let buffer = SharedBuffer::new(4096).expect("buffer");
    // SAFETY: no host code holds a borrow of the memory's bytes while the
    // buffer is written in this test.
    unsafe { tracked.memories()[0].map_buffer(&mut store, 0, &buffer, 0, 4096, Protection::ReadWrite) }
        .expect("window over $a's first page");
    let n = call_u32(&mut store, &tracked, "poke");
    let read = |at: u64| {
        let mut bytes = [0u8; 4];
        buffer.read(at, &mut bytes).expect("read");
        u32::from_le_bytes(bytes)
    };
    assert_eq!(read(100), n, "`poke` wrote through the window");
    let mut writer = SnapshotWriter::in_memory().expect("writer");
    assert!(prepared.capture(&mut store, &tracked, &mut writer).is_err(), "the buffer has no name yet");
    let mut buffers = SnapshotBuffers::new();
    buffers.insert("shared", buffer.clone()).expect("name");
    // SAFETY: as above.
    unsafe { prepared.set_snapshot_buffers(buffers) };
    let snapshot = capture(&prepared, &mut store, &tracked);
    buffer.write(100, &1000u32.to_le_bytes()).expect("host write");
    let mut restored_store = Store::new(&engine, ());
    let restored = prepared.instantiate_snapshot(&mut restored_store, &linker, &snapshot).expect("restore");
    assert_eq!(call_u32(&mut restored_store, &restored, "peek"), 1000 + n, "the buffer as it is now, plus $b's global");
    let again = call_u32(&mut restored_store, &restored, "poke");
    assert_eq!(read(100), again, "the restored window is the buffer");
    // Without the name, the restore is refused before anything is made.
    let mut unnamed = prepared.clone();
    // SAFETY: as above.
    unsafe { unnamed.set_snapshot_buffers(SnapshotBuffers::new()) };
    let err = unnamed.instantiate_snapshot(&mut Store::new(&engine, ()), &linker, &snapshot).expect_err("no buffer");
    assert!(
        matches!(err.downcast_ref::<Error>(), Some(Error::MissingBuffer { name, .. }) if name == "shared"),
        "{err:?}"
    );
}

/// Restores through a `PreparedComponentInstancePre` (imports resolved
/// once), sync and async, give what the `Linker` path gives; tracked
/// instances made through it capture.
#[test]
fn instance_pre_restores_match_the_linker_path() {
    let (creator, engine) = setup();
    let prepared = PreparedComponent::with_snapshots(&creator, &engine, COMPONENT).expect("prepare");
    let linker = Linker::new(&engine);
    let pre = prepared.instance_pre(&linker).expect("pre");
    let mut store = Store::new(&engine, ());
    let tracked = pre.instantiate_tracked(&mut store).expect("tracked through the pre");
    for _ in 0..2 {
        call_u32(&mut store, &tracked, "step");
        call_u32(&mut store, &tracked, "poke");
    }
    let expected = state(&mut store, &tracked);
    let snapshot = capture(&prepared, &mut store, &tracked);
    let next = (call_u32(&mut store, &tracked, "step"), call_u32(&mut store, &tracked, "poke"));
    let after = state(&mut store, &tracked);
    for round in 0..3 {
        let mut restored_store = Store::new(&engine, ());
        let restored = pre.instantiate_snapshot(&mut restored_store, &snapshot).expect("restore");
        assert_eq!(state(&mut restored_store, &restored), expected, "round {round}");
        let went_on =
            (call_u32(&mut restored_store, &restored, "step"), call_u32(&mut restored_store, &restored, "poke"));
        assert_eq!(went_on, next, "round {round}");
        assert_eq!(state(&mut restored_store, &restored), after, "round {round}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let (restored_state, tracked_state) = runtime.block_on(async {
        let mut restored_store = Store::new(&engine, ());
        let restored = pre.instantiate_snapshot_async(&mut restored_store, &snapshot).await.expect("restore");
        let restored_state = state(&mut restored_store, &restored);
        let mut fresh_store = Store::new(&engine, ());
        let fresh = pre.instantiate_tracked_async(&mut fresh_store).await.expect("tracked");
        assert_eq!(fresh.memories().len(), 2);
        (restored_state, call_u32(&mut fresh_store, &fresh, "peek"))
    });
    assert_eq!(restored_state, expected, "async restore through the pre");
    let mut fresh_store = Store::new(&engine, ());
    let fresh = prepared.instantiate_tracked(&mut fresh_store, &linker).expect("tracked");
    let fresh_peek = call_u32(&mut fresh_store, &fresh, "peek");
    assert_eq!(tracked_state, fresh_peek, "async tracked instance through the pre is fresh");
    assert!(creator.stats().reused > 0, "restores reused recycled slots");
    // A component without snapshot support has no restore path.
    let plain = PreparedComponent::new(&creator, &engine, COMPONENT).expect("prepare");
    let plain_pre = plain.instance_pre(&linker).expect("pre");
    let err = plain_pre.instantiate_snapshot(&mut Store::new(&engine, ()), &snapshot).expect_err("no support");
    assert!(matches!(err.downcast_ref::<Error>(), Some(Error::NotSnapshottable { .. })), "{err:?}");
}

/// A component's working set: recorded from a restore made for recording,
/// written with the snapshot's state, and prefetched by later restores
/// (which then start in the snapshot's state); asked of an instance not
/// restored for recording, refused.
#[test]
fn a_component_working_set_is_recorded_and_restores() {
    use framemap_wasmtime::RestoreMode;
    let (_creator, engine) = setup();
    let prepared = PreparedComponent::with_snapshots(&_creator, &engine, COMPONENT).expect("prepare");
    let linker = Linker::new(&engine);
    let mut store = Store::new(&engine, ());
    let tracked = prepared.instantiate_tracked(&mut store, &linker).expect("instantiate");
    call_u32(&mut store, &tracked, "step");
    call_u32(&mut store, &tracked, "poke");
    let expected = state(&mut store, &tracked);
    let snapshot = capture(&prepared, &mut store, &tracked);

    let mut recorder = prepared.clone();
    recorder.set_restore_mode(RestoreMode::Record);
    assert_eq!(recorder.restore_mode(), RestoreMode::Record);
    let mut recording = Store::new(&engine, ());
    let restored = recorder.instantiate_snapshot(&mut recording, &linker, &snapshot).expect("restore to record");
    // `peek` reads the word at 100 of $a's memory (page 0): the first call.
    call_u32(&mut recording, &restored, "peek");
    let mut writer = SnapshotWriter::in_memory().expect("writer");
    let sets = recorder.write_working_set(&restored, &snapshot, &mut writer).expect("record");
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0].memory, framemap_wasmtime::component::memory_name(0));
    assert!(sets[0].pages.iter().any(|r| r.contains(0)), "page 0 of $a's memory was touched: {sets:?}");
    let with_set = writer.finish_in_memory().expect("finish");
    assert!(!with_set.working_set(&sets[0].memory).expect("set").is_empty(), "the file records the set");

    // Served with the default mode: prefetched, and the snapshot's state,
    // not the state the recording calls left.
    let mut served = Store::new(&engine, ());
    let from_set = prepared.instantiate_snapshot(&mut served, &linker, &with_set).expect("restore");
    assert_eq!(state(&mut served, &from_set), expected);
    let err = prepared.working_set(&from_set, &with_set).expect_err("not restored for recording");
    assert!(matches!(err, Error::WorkingSetUnavailable { .. }), "{err:?}");
}
