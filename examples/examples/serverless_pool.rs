//! A serverless-style request loop: every request gets a new `Store` and a
//! new instance of a module whose memory starts from a 4 MiB data image; a
//! handler dirties a few pages, computes a reply, and the store is dropped.
//!
//! The loop runs for about two seconds on framemap (memories recycled, the
//! image mapped copy-on-write through `PreparedModule`) and on wasmtime's
//! default on-demand allocator, then prints requests per second for both.
//!
//! ```sh
//! cargo run --release -p framemap-examples --example serverless_pool
//! ```

use anyhow::{Context as _, Result, ensure};
use framemap_wasmtime::{FrameMemoryCreator, PreparedModule, configure};
use std::time::{Duration, Instant};
use wasmtime::{Config, Engine, Linker, Module, Store};

/// Size of the module's data image.
const IMAGE_BYTES: usize = 4 << 20;
/// How long each side serves requests.
const RUN_FOR: Duration = Duration::from_secs(2);

/// The image byte at `offset`: never zero, so the handler's reply depends on
/// the image really being there.
fn image_byte(offset: usize) -> u8 {
    (offset.wrapping_mul(31) % 251 + 1) as u8
}

/// The module: a 64-page (4 MiB) memory filled by one data segment, and
/// `handle(request) -> i32`, which writes the request id into 4 pages spread
/// over the image and returns the sum of the image bytes it overwrote plus
/// the id.
fn module_text() -> String {
    let mut wat = String::with_capacity(IMAGE_BYTES * 3 + 1024);
    wat.push_str(
        r#"(module
  (memory (export "memory") 64 64)
  (func (export "handle") (param $request i32) (result i32)
    (local $page i32) (local $addr i32) (local $sum i32)
    (loop $next
      (local.set $addr (i32.add (i32.mul (local.get $page) (i32.const 1048576))
                                (i32.mul (i32.and (local.get $request) (i32.const 15)) (i32.const 4096))))
      (local.set $sum (i32.add (local.get $sum) (i32.load8_u (local.get $addr))))
      (i32.store8 (local.get $addr) (local.get $request))
      (local.set $page (i32.add (local.get $page) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $page) (i32.const 4))))
    (i32.add (local.get $sum) (local.get $request)))
  (data (i32.const 0) ""#,
    );
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for offset in 0..IMAGE_BYTES {
        let byte = image_byte(offset);
        wat.push('\\');
        wat.push(char::from(HEX[usize::from(byte >> 4)]));
        wat.push(char::from(HEX[usize::from(byte & 15)]));
    }
    wat.push_str("\"))\n");
    wat
}

/// What `handle(request)` must return on a fresh image.
fn expected_reply(request: i32) -> i32 {
    let slot = (request & 15) as usize * 4096;
    (0..4).map(|page| i32::from(image_byte(page * (1 << 20) + slot))).sum::<i32>() + request
}

/// Serves requests for [`RUN_FOR`] with `serve(request)`, checking each
/// reply; returns the number served and the time taken.
fn serve_for(mut serve: impl FnMut(i32) -> Result<i32>) -> Result<(u64, Duration)> {
    let start = Instant::now();
    let mut served = 0u64;
    while start.elapsed() < RUN_FOR {
        let request = (served % 1000) as i32;
        let reply = serve(request)?;
        ensure!(
            reply == expected_reply(request),
            "request {request}: reply {reply}, expected {}",
            expected_reply(request)
        );
        served += 1;
    }
    Ok((served, start.elapsed()))
}

fn main() -> Result<()> {
    let wat = module_text();

    // framemap: the creator recycles memories; PreparedModule maps the
    // image copy-on-write instead of copying it at every instantiation.
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config)?;
    let prepared = PreparedModule::new(&creator, &engine, &wat)?;
    if let Some(why) = prepared.not_prepared() {
        println!("note: framemap could not prepare the module: {why}");
    }
    let pre = prepared.instance_pre(&Linker::new(&engine))?;
    let (framemap_served, framemap_took) = serve_for(|request| {
        let mut store = Store::new(&engine, ());
        let instance = pre.instantiate(&mut store)?;
        let handle = instance.get_typed_func::<i32, i32>(&mut store, "handle")?;
        Ok(handle.call(&mut store, request)?)
    })
    .context("framemap")?;
    let stats = creator.stats();

    // wasmtime's default: on-demand allocation, copy-on-write images.
    let engine = Engine::new(&Config::new())?;
    let module = Module::new(&engine, &wat)?;
    let pre = Linker::new(&engine).instantiate_pre(&module)?;
    let (wasmtime_served, wasmtime_took) = serve_for(|request| {
        let mut store = Store::new(&engine, ());
        let instance = pre.instantiate(&mut store)?;
        let handle = instance.get_typed_func::<i32, i32>(&mut store, "handle")?;
        Ok(handle.call(&mut store, request)?)
    })
    .context("wasmtime on-demand")?;

    let framemap_rps = framemap_served as f64 / framemap_took.as_secs_f64();
    let wasmtime_rps = wasmtime_served as f64 / wasmtime_took.as_secs_f64();
    println!("each request: new Store + instantiate (4 MiB image) + handle() dirtying 4 pages + drop");
    println!("framemap:            {framemap_rps:>10.0} requests/s ({framemap_served} in {framemap_took:.2?})");
    println!("wasmtime on-demand:  {wasmtime_rps:>10.0} requests/s ({wasmtime_served} in {wasmtime_took:.2?})");
    println!("framemap / wasmtime: {:.2}× the requests per second", framemap_rps / wasmtime_rps);
    println!("framemap creator: {} memories created, {} reused from its pool", stats.created, stats.reused);
    Ok(())
}
