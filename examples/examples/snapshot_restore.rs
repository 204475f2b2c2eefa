//! Initialise once, serve from the snapshot: a module whose `init` builds a
//! 16 MiB lookup table (tens of milliseconds) is initialised once, its
//! instance captured into a snapshot (every memory and mutable global,
//! exported or not), and then 1 000 requests are served, each by a new
//! instance restored from the snapshot — against re-running `init` in every
//! new instance, as an embedder without snapshots must. Both ways must give
//! the same replies; the example prints instances per second for both.
//!
//! ```sh
//! cargo run --release -p framemap-examples --example snapshot_restore
//! ```

use anyhow::{Result, ensure};
use framemap::snapshot::SnapshotWriter;
use framemap_wasmtime::{FrameMemoryCreator, PreparedModule, engine};
use std::time::Instant;
use wasmtime::{Config, Instance, Store};

/// Requests served from the snapshot.
const FROM_SNAPSHOT: u32 = 1000;
/// Requests served by re-running `init` (each takes tens of milliseconds).
const FROM_INIT: u32 = 40;

/// `init` fills 4 Mi 32-bit entries (16 MiB) with a mixing function and
/// keeps a checksum in an unexported mutable global; `handle(request)`
/// reads a few entries, writes one page, and returns a reply that depends
/// on the table, the checksum and the request.
const MODULE: &str = r#"
(module
  (memory 257 257)
  (global $checksum (mut i32) (i32.const 0))
  (global $served (mut i32) (i32.const 0))
  (func (export "init")
    (local $i i32) (local $x i32)
    (local.set $x (i32.const 0x12345678))
    (loop $fill
      ;; xorshift32, three rounds per entry
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 13))))
      (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 17))))
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 5))))
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 13))))
      (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 17))))
      (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 5))))
      (i32.store (i32.shl (local.get $i) (i32.const 2)) (local.get $x))
      (global.set $checksum (i32.add (global.get $checksum) (local.get $x)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 4194304)))))
  (func (export "handle") (param $request i32) (result i32)
    (local $slot i32)
    (global.set $served (i32.add (global.get $served) (i32.const 1)))
    (local.set $slot (i32.and (i32.mul (local.get $request) (i32.const 2654435761)) (i32.const 4194303)))
    ;; scratch page past the table
    (i32.store (i32.const 16777216) (local.get $request))
    (i32.add
      (i32.add (i32.load (i32.shl (local.get $slot) (i32.const 2))) (global.get $checksum))
      (i32.add (i32.load (i32.const 16777216)) (global.get $served)))))
"#;

fn handle(store: &mut Store<()>, instance: &Instance, request: i32) -> Result<i32> {
    Ok(instance.get_typed_func::<i32, i32>(&mut *store, "handle")?.call(&mut *store, request)?)
}

fn main() -> Result<()> {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&mut Config::new(), creator.clone())?;
    let prepared = PreparedModule::with_snapshots(&creator, &engine, MODULE)?;

    // Initialise once and capture.
    let mut store = Store::new(&engine, ());
    let instance = prepared.instantiate(&mut store, &[])?;
    let started = Instant::now();
    instance.get_typed_func::<(), ()>(&mut store, "init")?.call(&mut store, ())?;
    let init_time = started.elapsed();
    let started = Instant::now();
    let mut writer = SnapshotWriter::in_memory()?;
    prepared.capture(&mut store, &instance, &mut writer)?;
    let snapshot = writer.finish_in_memory()?;
    let capture_time = started.elapsed();
    drop(store);
    println!(
        "init: {init_time:?}; snapshot: {capture_time:?}, {} data pages ({} MiB)",
        snapshot.data_pages(),
        (snapshot.data_pages() * framemap::host_page_size() as u64) >> 20
    );

    // Serve from the snapshot: a new instance per request.
    let mut replies = Vec::with_capacity(FROM_SNAPSHOT as usize);
    let started = Instant::now();
    for request in 0..FROM_SNAPSHOT as i32 {
        let mut store = Store::new(&engine, ());
        let instance = prepared.instantiate_snapshot(&mut store, &[], &snapshot)?;
        replies.push(handle(&mut store, &instance, request)?);
    }
    let restored = FROM_SNAPSHOT as f64 / started.elapsed().as_secs_f64();

    // Serve by re-running init in every new instance.
    let started = Instant::now();
    for request in 0..FROM_INIT as i32 {
        let mut store = Store::new(&engine, ());
        let instance = prepared.instantiate(&mut store, &[])?;
        instance.get_typed_func::<(), ()>(&mut store, "init")?.call(&mut store, ())?;
        let reply = handle(&mut store, &instance, request)?;
        ensure!(
            reply == replies[request as usize],
            "request {request}: {reply} from init, not {}",
            replies[request as usize]
        );
    }
    let reinit = FROM_INIT as f64 / started.elapsed().as_secs_f64();

    println!("restored from the snapshot: {restored:.0} instances/s ({FROM_SNAPSHOT} requests)");
    println!("init re-run per instance:   {reinit:.1} instances/s ({FROM_INIT} requests)");
    println!("snapshot / re-init: {:.0}x", restored / reinit);
    let stats = creator.stats();
    println!("slots created {}, reused {}", stats.created, stats.reused);
    Ok(())
}
