//! Working sets through the adapter: an instance restored from a snapshot
//! with `RestoreMode::Record` runs its first call, and
//! `PreparedModule::write_working_set` writes the snapshot's state again
//! with the pages that call touched recorded (and packed); restores from
//! the new file are the snapshot, and prefetch the set, so the first call
//! takes at least 90% fewer page faults (counted); what cannot be recorded
//! faithfully is refused.

use framemap::snapshot::{GlobalValue, PageSource, Snapshot, SnapshotWriter};
use framemap::{LinearSpace, PageRange, Prefetch, SpaceConfig};
use framemap_wasmtime::{CreatorConfig, Error, FrameMemoryCreator, PreparedModule, RestoreMode, engine};
use std::sync::Arc;
use wasmtime::{Config, Engine, Instance, Store};

/// Host pages of the memory: 64 wasm pages (4 MiB).
const PAGES: u64 = 1024;

/// A 4 MiB memory with a data segment; `init` writes one host page in
/// eight (data pages, each its own run in the snapshot) and sets a global;
/// `first` (the first call after a restore) reads every other host page
/// (zero pages and data pages alike), writes pages 3 and 1001, and counts
/// its calls in a global: the state after it is not the snapshot's.
const MODULE: &str = r#"
(module
  (memory (export "memory") 64 128)
  (global $g (mut i32) (i32.const 0))
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 0) "hello")
  (func (export "init")
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 128)))
        (i32.store (i32.add (i32.mul (local.get $i) (i32.const 32768)) (i32.const 16))
                   (i32.add (local.get $i) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (global.set $g (i32.const 42)))
  (func (export "first") (result i32)
    (local $i i32) (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 1024)))
        (local.set $acc (i32.add (local.get $acc)
          (i32.load (i32.add (i32.mul (local.get $i) (i32.const 4096)) (i32.const 16)))))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $next)))
    (i32.store (i32.const 12288) (i32.const 7))
    (i32.store (i32.const 4100096) (i32.const 8))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.add (local.get $acc) (global.get $g)))
  (func (export "calls") (result i32) (global.get $calls)))
"#;

/// The host pages `first` touches.
fn first_call_pages() -> Vec<u64> {
    let p = framemap::host_page_size() as u64;
    let mut pages: Vec<u64> = (0..1024u64).step_by(2).map(|i| (i * 4096 + 16) / p).collect();
    pages.extend([12288 / p, 4_100_096 / p]);
    pages.sort_unstable();
    pages.dedup();
    pages
}

fn setup(config: CreatorConfig) -> (Arc<FrameMemoryCreator>, Engine, PreparedModule) {
    let creator = FrameMemoryCreator::with_config(config);
    let engine = engine(&mut Config::new(), creator.clone()).unwrap();
    let prepared = PreparedModule::with_snapshots(&creator, &engine, MODULE).unwrap();
    (creator, engine, prepared)
}

fn call<R: wasmtime::WasmResults>(store: &mut Store<()>, instance: &Instance, name: &str) -> R {
    instance.get_typed_func::<(), R>(&mut *store, name).unwrap().call(&mut *store, ()).unwrap()
}

/// The snapshot of an instance after `init`.
fn initialised(prepared: &PreparedModule, engine: &Engine) -> Snapshot {
    let mut store = Store::new(engine, ());
    let instance = prepared.instantiate(&mut store, &[]).unwrap();
    call::<()>(&mut store, &instance, "init");
    let mut writer = SnapshotWriter::in_memory().unwrap();
    prepared.capture(&mut store, &instance, &mut writer).unwrap();
    writer.finish_in_memory().unwrap()
}

/// `prepared` with restores for recording.
fn recording(prepared: &PreparedModule) -> PreparedModule {
    let mut recording = prepared.clone();
    recording.set_restore_mode(RestoreMode::Record);
    recording
}

/// Records the working set of `first` on an instance restored from
/// `snapshot`: the new snapshot, and the instance's state after the call
/// (its memory's bytes and its `calls`).
fn record(prepared: &PreparedModule, engine: &Engine, snapshot: &Snapshot) -> (Snapshot, Vec<PageRange>, Vec<u8>) {
    let recorder = recording(prepared);
    let mut store = Store::new(engine, ());
    let instance = recorder.instantiate_snapshot(&mut store, &[], snapshot).unwrap();
    call::<i32>(&mut store, &instance, "first");
    let mut writer = SnapshotWriter::in_memory().unwrap();
    let sets = recorder.write_working_set(&mut store, &instance, snapshot, &mut writer).unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].memory, "framemap:memory:0");
    let after = instance.get_memory(&mut store, "memory").unwrap().data(&store).to_vec();
    (writer.finish_in_memory().unwrap(), sets[0].pages.clone(), after)
}

/// Every page of `ranges`, in order.
fn pages_of(ranges: &[PageRange]) -> Vec<u64> {
    ranges.iter().flat_map(|r| r.start..r.end).collect()
}

/// A restored instance's memory bytes and `calls`.
fn restored_state(prepared: &PreparedModule, engine: &Engine, snapshot: &Snapshot) -> (Vec<u8>, i32) {
    let mut store = Store::new(engine, ());
    let instance = prepared.instantiate_snapshot(&mut store, &[], snapshot).unwrap();
    let bytes = instance.get_memory(&mut store, "memory").unwrap().data(&store).to_vec();
    (bytes, call::<i32>(&mut store, &instance, "calls"))
}

#[test]
fn the_recorded_file_is_the_snapshot_with_the_first_call_s_pages_packed() {
    let (_, engine, prepared) = setup(CreatorConfig::default());
    let snapshot = initialised(&prepared, &engine);
    assert_eq!(snapshot.working_set("framemap:memory:0").unwrap(), vec![]);
    let (recorded, set, after_call) = record(&prepared, &engine, &snapshot);
    recorded.verify().unwrap();

    // The working set: every page the call touched (and the kernel's
    // fault-around neighbours of data pages: never more than the memory).
    let touched = pages_of(&set);
    for page in first_call_pages() {
        assert!(touched.contains(&page), "page {page} was touched by the first call: {set:?}");
    }
    assert!(touched.iter().all(|&p| p < PAGES), "{set:?}");
    assert_eq!(recorded.working_set("framemap:memory:0").unwrap(), set);

    // The snapshot's state, not the state after the call.
    assert_eq!(recorded.manifest().globals, snapshot.manifest().globals);
    assert!(recorded.manifest().globals.iter().any(|g| g.value == GlobalValue::I32(42)));
    assert_eq!(recorded.data_pages(), snapshot.data_pages());
    let (original_bytes, original_calls) = restored_state(&prepared, &engine, &snapshot);
    let (recorded_bytes, recorded_calls) = restored_state(&prepared, &engine, &recorded);
    assert_eq!((recorded_calls, original_calls), (0, 0), "the call is not part of the recorded file");
    assert!(recorded_bytes == original_bytes, "the recorded file restores the snapshot's bytes");
    assert!(after_call != original_bytes, "the call changed the recording instance's memory");
    // And through the default restore of a recycled slot, once more.
    assert!(restored_state(&prepared, &engine, &recorded).0 == original_bytes);

    // Packed: the data pages of the set come first in the file.
    let mut data: Vec<(u64, u64)> = Vec::new();
    for run in &recorded.memory("framemap:memory:0").unwrap().runs {
        if let PageSource::Data { page } = run.source {
            data.extend((run.pages.start..run.pages.end).map(|p| (p, page + p - run.pages.start)));
        }
    }
    let inside: Vec<u64> = data.iter().filter(|(p, _)| touched.contains(p)).map(|&(_, d)| d).collect();
    assert!(!inside.is_empty());
    assert_eq!(inside, (0..inside.len() as u64).collect::<Vec<_>>(), "the set's data pages first");
}

/// Minor page faults this thread has taken so far.
fn minor_faults() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into the buffer it is given,
    // which is one, and aligned.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD)");
    // SAFETY: zeroed() made every byte valid, and getrusage filled it in.
    unsafe { usage.assume_init() }.ru_minflt as u64
}

/// Restores `snapshot` with `prepared` and calls `first`: the minor faults
/// of this thread during the call only.
fn faults_of_first_call(prepared: &PreparedModule, engine: &Engine, snapshot: &Snapshot) -> u64 {
    let mut store = Store::new(engine, ());
    let instance = prepared.instantiate_snapshot(&mut store, &[], snapshot).unwrap();
    let first = instance.get_typed_func::<(), i32>(&mut store, "first").unwrap();
    let before = minor_faults();
    let result = first.call(&mut store, ()).unwrap();
    let faults = minor_faults() - before;
    std::hint::black_box(result);
    faults
}

/// Whether this kernel has `MADV_POPULATE_READ` (a prefetch that only
/// advised did not).
fn populate_read_supported() -> bool {
    let p = framemap::host_page_size() as u64;
    let mut space = LinearSpace::new(SpaceConfig { capacity: p, guard: 0, initial_len: p }).unwrap();
    space.prefetch(&[PageRange::new(0, 1)], Prefetch::Read).advised == 0
}

/// The issue's target, by count, through wasmtime: the first call after a
/// restore from the recorded file takes at least 90% fewer minor faults
/// than after a restore from the snapshot it was recorded from. No slot is
/// recycled (a recycled slot keeps the pages its last memory mapped): every
/// restore lays a new reservation out.
#[test]
fn the_first_call_after_restoring_the_recorded_file_takes_90_percent_fewer_faults() {
    if !framemap::testing::feature_present(
        populate_read_supported(),
        "MADV_POPULATE_READ (Linux 5.14+)",
        "FRAMEMAP_REQUIRE_POPULATE_READ",
    ) {
        return;
    }
    let (creator, engine, prepared) = setup(CreatorConfig { max_idle_slots: 0, ..CreatorConfig::default() });
    let snapshot = initialised(&prepared, &engine);
    let (recorded, _, _) = record(&prepared, &engine, &snapshot);
    let mut writing = prepared.clone();
    writing.set_restore_mode(RestoreMode::Prefetch(Prefetch::Write));

    // Warm up: the code and data the calls use fault in once here.
    faults_of_first_call(&prepared, &engine, &snapshot);
    faults_of_first_call(&prepared, &engine, &recorded);
    faults_of_first_call(&writing, &engine, &recorded);

    let without = faults_of_first_call(&prepared, &engine, &snapshot);
    let with = faults_of_first_call(&prepared, &engine, &recorded);
    let with_write = faults_of_first_call(&writing, &engine, &recorded);
    assert_eq!(creator.stats().reused, 0, "no slot was recycled");
    println!(
        "first call after a restore (512 pages read, 2 written), minor faults: {without} from the snapshot, \
         {with} from the recorded file (Prefetch::Read), {with_write} with Prefetch::Write"
    );
    // Without: one fault per zero page read at least (256 of them: anonymous
    // memory has no fault-around).
    assert!(without >= 256, "{without} faults without a working set");
    assert!(with * 10 <= without, "{with} faults with the working set, {without} without");
    assert!(with_write * 10 <= without, "{with_write} faults with Prefetch::Write, {without} without");
}

#[test]
fn recording_what_would_be_wrong_is_refused() {
    let (creator, engine, prepared) = setup(CreatorConfig::default());
    let snapshot = initialised(&prepared, &engine);
    let recorder = recording(&prepared);
    let unavailable = |e: &Error| matches!(e, Error::WorkingSetUnavailable { .. });

    // A fresh instance: not restored.
    let mut store = Store::new(&engine, ());
    let fresh = recorder.instantiate(&mut store, &[]).unwrap();
    let mut writer = SnapshotWriter::in_memory().unwrap();
    let err = recorder.write_working_set(&mut store, &fresh, &snapshot, &mut writer).unwrap_err();
    assert!(unavailable(&err) && err.to_string().contains("not restored"), "{err}");

    // Restored with the default mode: a recycled slot's pages and a
    // prefetch would count as touched.
    let served = prepared.instantiate_snapshot(&mut store, &[], &snapshot).unwrap();
    let err = prepared.working_set(&mut store, &served, &snapshot).unwrap_err();
    assert!(unavailable(&err) && err.to_string().contains("RestoreMode::Record"), "{err}");

    // Restored for recording, from another snapshot than the one given.
    let restored = recorder.instantiate_snapshot(&mut store, &[], &snapshot).unwrap();
    call::<i32>(&mut store, &restored, "first");
    let (other, _, _) = record(&prepared, &engine, &snapshot);
    let err = recorder.working_set(&mut store, &restored, &other).unwrap_err();
    assert!(unavailable(&err) && err.to_string().contains("another snapshot"), "{err}");
    // The right one still works, and an instance restored from `other`
    // records against `other`.
    assert!(!recorder.working_set(&mut store, &restored, &snapshot).unwrap()[0].pages.is_empty());
    let from_other = recorder.instantiate_snapshot(&mut store, &[], &other).unwrap();
    assert_eq!(recorder.working_set(&mut store, &from_other, &other).unwrap()[0].pages, vec![]);

    // A module without snapshot support; an instance of another module.
    let plain = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    let err = plain.working_set(&mut store, &restored, &snapshot).unwrap_err();
    assert!(matches!(err, Error::NotSnapshottable { .. }), "{err}");
    let another = PreparedModule::new(&creator, &engine, "(module (memory 1))").unwrap();
    let instance = another.instantiate(&mut store, &[]).unwrap();
    let err = recorder.working_set(&mut store, &instance, &snapshot).unwrap_err();
    assert!(matches!(err, Error::SnapshotMismatch { .. }), "{err}");

    // Nothing was written by the refusals.
    let empty = writer.finish_in_memory().unwrap();
    assert!(empty.manifest().memories.is_empty() && empty.manifest().globals.is_empty());
}
