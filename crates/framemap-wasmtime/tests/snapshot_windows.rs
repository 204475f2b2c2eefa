//! Instance snapshots of memories with windows of host buffers: a window is
//! captured by the buffer's name (from the module's `SnapshotBuffers`) and
//! range, never its bytes, and every restore shows the same buffer range
//! again, shared (writes reach the buffer), granted to the new memory (so
//! revocation reaches it), recycled slots included. A window whose buffer has
//! no name is not captured, and a snapshot naming a buffer the host lacks is
//! not restored: both refused with the name or buffer they miss.

use framemap::snapshot::{PageSource, Snapshot, SnapshotWriter};
use framemap::{FrameTag, Protection, SharedBuffer};
use framemap_wasmtime::{Error, FrameMemoryCreator, PreparedModule, SnapshotBuffers, engine};
use std::sync::Arc;
use wasmtime::{Config, Engine, Instance, Store};

const WASM_PAGE: u64 = 65536;
/// Where the window starts in the guest's memory: its second wasm page.
const WINDOW: u64 = WASM_PAGE;
const WINDOW_LEN: u64 = 2 * 4096;

const MODULE: &str = r#"
(module
  (memory (export "mem") 3)
  (data (i32.const 16) "image bytes")
  (global $calls (mut i32) (i32.const 0))
  (func (export "load") (param i32) (result i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.load (local.get 0)))
  (func (export "store") (param i32 i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store (local.get 0) (local.get 1)))
  (func (export "calls") (result i32) (global.get $calls)))
"#;

fn setup() -> (Arc<FrameMemoryCreator>, Engine, PreparedModule) {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&mut Config::new(), creator.clone()).unwrap();
    let prepared = PreparedModule::with_snapshots(&creator, &engine, MODULE).unwrap();
    (creator, engine, prepared)
}

fn load(store: &mut Store<()>, instance: &Instance, at: u64) -> i32 {
    let f = instance.get_typed_func::<i32, i32>(&mut *store, "load").unwrap();
    f.call(&mut *store, at as i32).unwrap()
}

fn store_i32(store: &mut Store<()>, instance: &Instance, at: u64, value: i32) {
    let f = instance.get_typed_func::<(i32, i32), ()>(&mut *store, "store").unwrap();
    f.call(&mut *store, (at as i32, value)).unwrap();
}

fn buffer_i32(buffer: &SharedBuffer, at: u64) -> i32 {
    let mut bytes = [0u8; 4];
    buffer.read(at, &mut bytes).unwrap();
    i32::from_le_bytes(bytes)
}

/// A buffer holding 0x1111 at byte 100, and an instance of `prepared` with a
/// read-write window of it at [`WINDOW`], in which the guest wrote 0x2222
/// at byte 200 (it reaches the buffer) and 0x3333 below the window.
fn instance_with_window(
    creator: &FrameMemoryCreator,
    engine: &Engine,
    prepared: &PreparedModule,
    buffer: &SharedBuffer,
) -> (Store<()>, Instance) {
    buffer.write(100, &0x1111i32.to_le_bytes()).unwrap();
    let mut store = Store::new(engine, ());
    let instance = prepared.instantiate(&mut store, &[]).unwrap();
    let memory = instance.get_memory(&mut store, "mem").unwrap();
    let handle = creator.handle(&store, &memory).unwrap();
    // SAFETY: no host code holds a borrow of the memory's bytes while the
    // buffer is written or revoked in this test.
    unsafe { handle.map_buffer(&mut store, WINDOW, buffer, 0, WINDOW_LEN, Protection::ReadWrite) }.unwrap();
    store_i32(&mut store, &instance, WINDOW + 200, 0x2222);
    store_i32(&mut store, &instance, 4096, 0x3333);
    assert_eq!(buffer_i32(buffer, 200), 0x2222, "the window is the buffer");
    (store, instance)
}

fn named(name: &str, buffer: &SharedBuffer) -> SnapshotBuffers {
    let mut buffers = SnapshotBuffers::new();
    buffers.insert(name, buffer.clone()).unwrap();
    buffers
}

fn capture(prepared: &PreparedModule, store: &mut Store<()>, instance: &Instance) -> Result<Snapshot, Error> {
    let mut writer = SnapshotWriter::in_memory().unwrap();
    prepared.capture(&mut *store, instance, &mut writer)?;
    Ok(writer.finish_in_memory().unwrap())
}

/// The tag of the frames at the window in `instance`'s memory.
fn window_tag(creator: &FrameMemoryCreator, store: &mut Store<()>, instance: &Instance) -> FrameTag {
    let memory = instance.get_memory(&mut *store, "mem").unwrap();
    let handle = creator.handle(&*store, &memory).unwrap();
    let runs = handle.runs_in(WINDOW, WINDOW_LEN).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].1.tag()
}

#[test]
fn a_window_is_captured_by_name_and_restored_shared_with_its_buffer() {
    let (creator, engine, mut prepared) = setup();
    let buffer = SharedBuffer::new(WINDOW_LEN).unwrap();
    let (mut store, instance) = instance_with_window(&creator, &engine, &prepared, &buffer);
    // SAFETY: as in `instance_with_window`: no borrow of a memory's bytes
    // is held while the buffer changes.
    unsafe { prepared.set_snapshot_buffers(named("state", &buffer)) };
    let snapshot = capture(&prepared, &mut store, &instance).unwrap();

    // The snapshot names the buffer and the range, and stores none of its bytes.
    let memory = snapshot
        .manifest()
        .memories
        .iter()
        .find(|m| m.runs.iter().any(|r| matches!(r.source, PageSource::Shared { .. })))
        .unwrap();
    let window: Vec<_> = memory.runs.iter().filter(|r| matches!(r.source, PageSource::Shared { .. })).collect();
    assert_eq!(window.len(), 1);
    assert_eq!(window[0].source, PageSource::Shared { buffer: "state".into(), page: 0 });
    assert_eq!(window[0].pages.start * 4096, WINDOW);
    assert_eq!(window[0].pages.len() * 4096, WINDOW_LEN);
    assert_eq!(window[0].prot, Protection::ReadWrite);
    assert_eq!(snapshot.data_pages(), 1, "only the page written below the window is stored");

    // A restore shows the buffer as it is now, shared.
    buffer.write(100, &0x4444i32.to_le_bytes()).unwrap();
    for round in 0..3 {
        let mut restored_store = Store::new(&engine, ());
        let restored = prepared.instantiate_snapshot(&mut restored_store, &[], &snapshot).unwrap();
        assert_eq!(window_tag(&creator, &mut restored_store, &restored), FrameTag::Shared);
        assert_eq!(load(&mut restored_store, &restored, WINDOW + 100), 0x4444, "round {round}");
        assert_eq!(load(&mut restored_store, &restored, WINDOW + 200), 0x2222 + round);
        assert_eq!(load(&mut restored_store, &restored, 4096), 0x3333, "stored pages restored");
        assert_eq!(load(&mut restored_store, &restored, 16), i32::from_le_bytes(*b"imag"), "image pages");
        // Its writes reach the buffer, and the original instance's window.
        store_i32(&mut restored_store, &restored, WINDOW + 200, 0x2223 + round);
        assert_eq!(buffer_i32(&buffer, 200), 0x2223 + round);
        assert_eq!(load(&mut store, &instance, WINDOW + 200), 0x2223 + round);
        // Writes below the window stay its own.
        store_i32(&mut restored_store, &restored, 4096, -1);
        assert_eq!(load(&mut store, &instance, 4096), 0x3333);
    }
    let stats = creator.stats();
    assert!(stats.reused >= 2, "later rounds restore into recycled slots: {stats:?}");
}

#[test]
fn revocation_reaches_restored_windows() {
    let (creator, engine, mut prepared) = setup();
    let buffer = SharedBuffer::new(WINDOW_LEN).unwrap();
    let (mut store, instance) = instance_with_window(&creator, &engine, &prepared, &buffer);
    // SAFETY: no borrow of a memory's bytes is held while the buffer changes.
    unsafe { prepared.set_snapshot_buffers(named("state", &buffer)) };
    let snapshot = capture(&prepared, &mut store, &instance).unwrap();
    drop(store);
    let mut restored_store = Store::new(&engine, ());
    let restored = prepared.instantiate_snapshot(&mut restored_store, &[], &snapshot).unwrap();
    assert_eq!(load(&mut restored_store, &restored, WINDOW + 200), 0x2222);
    buffer.revoke().unwrap();
    assert_eq!(window_tag(&creator, &mut restored_store, &restored), FrameTag::Unmapped, "revoked: a hole");
    let f = restored.get_typed_func::<i32, i32>(&mut restored_store, "load").unwrap();
    assert!(f.call(&mut restored_store, (WINDOW + 200) as i32).is_err(), "reading the hole traps");
    drop(restored_store);
    // A revoked buffer cannot be shown again: the restore is refused.
    let mut again = Store::new(&engine, ());
    let err = prepared.instantiate_snapshot(&mut again, &[], &snapshot).unwrap_err();
    assert!(format!("{err:?}").contains("state"), "{err:?}");
}

#[test]
fn a_window_without_a_name_is_not_captured() {
    let (creator, engine, mut prepared) = setup();
    let buffer = SharedBuffer::new(WINDOW_LEN).unwrap();
    let (mut store, instance) = instance_with_window(&creator, &engine, &prepared, &buffer);
    let err = capture(&prepared, &mut store, &instance).unwrap_err();
    assert!(err.to_string().contains("buffer"), "{err}");
    // Another buffer's name does not name this one.
    let other = SharedBuffer::new(WINDOW_LEN).unwrap();
    // SAFETY: no borrow of a memory's bytes is held while a buffer changes.
    unsafe { prepared.set_snapshot_buffers(named("other", &other)) };
    let err = capture(&prepared, &mut store, &instance).unwrap_err();
    assert!(err.to_string().contains("buffer"), "{err}");
    // The failed captures changed nothing: the instance still runs and
    // captures once the buffer is named.
    assert_eq!(load(&mut store, &instance, WINDOW + 200), 0x2222);
    // SAFETY: as above.
    unsafe { prepared.set_snapshot_buffers(named("state", &buffer)) };
    capture(&prepared, &mut store, &instance).unwrap();
}

#[test]
fn a_snapshot_naming_a_missing_buffer_is_not_restored() {
    let (creator, engine, mut prepared) = setup();
    let buffer = SharedBuffer::new(WINDOW_LEN).unwrap();
    let (mut store, instance) = instance_with_window(&creator, &engine, &prepared, &buffer);
    // SAFETY: no borrow of a memory's bytes is held while the buffer changes.
    unsafe { prepared.set_snapshot_buffers(named("state", &buffer)) };
    let snapshot = capture(&prepared, &mut store, &instance).unwrap();
    let before = creator.stats();
    for buffers in [SnapshotBuffers::new(), named("not-state", &buffer)] {
        let mut other = prepared.clone();
        // SAFETY: as above.
        unsafe { other.set_snapshot_buffers(buffers) };
        let mut restored_store = Store::new(&engine, ());
        let err = other.instantiate_snapshot(&mut restored_store, &[], &snapshot).unwrap_err();
        match err.downcast_ref::<Error>() {
            Some(Error::MissingBuffer { name, .. }) => assert_eq!(name, "state"),
            _ => panic!("expected MissingBuffer, got {err:?}"),
        }
    }
    let after = creator.stats();
    assert_eq!((after.created, after.reused), (before.created, before.reused), "refused before any memory was made");
}

#[test]
fn buffer_names_are_one_to_one() {
    let (a, b) = (SharedBuffer::new(4096).unwrap(), SharedBuffer::new(4096).unwrap());
    let mut buffers = SnapshotBuffers::new();
    buffers.insert("a", a.clone()).unwrap();
    let refused = |r: Result<(), Error>| matches!(r, Err(Error::BufferName { .. }));
    assert!(refused(buffers.insert("a", b.clone())), "a name names one buffer");
    assert!(refused(buffers.insert("b", a.clone())), "a buffer has one name");
    assert!(refused(buffers.insert("", b.clone())), "empty name");
    assert!(refused(buffers.insert("x".repeat(framemap::snapshot::MAX_NAME_LEN + 1), b.clone())), "long name");
    buffers.insert("b", b.clone()).unwrap();
    assert_eq!(buffers.len(), 2);
    assert_eq!(buffers.name_of(&b), Some("b"));
    assert_eq!(buffers.get("a").map(SharedBuffer::id), Some(a.id()));
}
