//! framemap memories inside wasmtime: every memory kind wasmtime 48 sends
//! through a creator, recycling, handles, and clean errors.

use framemap::{Frame, FrameTag, PageRange, Protection};
use framemap_wasmtime::{CreatorConfig, FrameMemoryCreator, configure};
use std::collections::HashSet;
use std::sync::Arc;
use wasmtime::{Config, Engine, Instance, Module, Store};

const WASM_PAGE: u64 = 65536;

fn engine_with(creator: &Arc<FrameMemoryCreator>, tweak: impl FnOnce(&mut Config)) -> Engine {
    let mut config = Config::new();
    tweak(&mut config);
    configure(&mut config, creator.clone());
    Engine::new(&config).expect("engine")
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm.split_whitespace().nth(1).expect("rss field").parse().expect("number");
    pages * framemap::host_page_size() as u64
}

#[test]
fn memory_is_zeroed_grows_in_place_and_reports_its_frames() {
    let creator = FrameMemoryCreator::new();
    let engine = engine_with(&creator, |_| {});
    let module = Module::new(
        &engine,
        r#"(module (memory (export "m") 2 10)
             (func (export "poke") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
             (func (export "peek") (param i32) (result i32) (i32.load (local.get 0)))
             (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let memory = instance.get_memory(&mut store, "m").unwrap();
    let poke = instance.get_typed_func::<(i32, i32), ()>(&mut store, "poke").unwrap();
    let peek = instance.get_typed_func::<i32, i32>(&mut store, "peek").unwrap();
    let grow = instance.get_typed_func::<i32, i32>(&mut store, "grow").unwrap();

    assert!(memory.data(&store).iter().all(|&b| b == 0));
    let base = memory.data_ptr(&store);
    poke.call(&mut store, (70000, 42)).unwrap();
    assert_eq!(grow.call(&mut store, 3).unwrap(), 2);
    assert_eq!(memory.data_ptr(&store), base, "growth never moves a framemap memory");
    assert_eq!(peek.call(&mut store, 70000).unwrap(), 42);
    assert_eq!(peek.call(&mut store, 5 * 65536 - 4).unwrap(), 0);
    assert!(peek.call(&mut store, 5 * 65536).is_err(), "past the size traps");
    assert_eq!(grow.call(&mut store, 6).unwrap(), -1, "growth past the maximum fails cleanly");

    let handle = creator.handle(&store, &memory).unwrap();
    handle.validate().unwrap();
    let report = handle.report().unwrap();
    let pages = 5 * WASM_PAGE / framemap::host_page_size() as u64;
    assert_eq!(report.summary.len, 5 * WASM_PAGE);
    assert_eq!(report.runs[0], (PageRange::new(0, pages), Frame::zero(Protection::ReadWrite)));
    assert_eq!(report.summary.capacity, 4 << 30, "the reservation is exactly wasmtime's default 4 GiB");
    assert_eq!(report.summary.guard, 32 << 20, "and the guard exactly its 32 MiB");
    assert!(report.summary.resident[FrameTag::Zero] >= framemap::host_page_size() as u64);
    drop(store);
    assert!(handle.report().is_err(), "a handle does not keep a dropped memory alive");
}

#[test]
fn recycling_reuses_one_reservation_across_1000_instantiations() {
    let creator = FrameMemoryCreator::new();
    let engine = engine_with(&creator, |_| {});
    // Each instance checks that the 16 pages it is about to dirty read zero,
    // dirties them, and grows the memory by one page (so resets also shrink).
    let module = Module::new(
        &engine,
        r#"(module (memory (export "m") 17)
             (func (export "run") (result i32)
               (local $i i32) (local $dirty i32)
               (loop $l
                 (local.set $dirty (i32.or (local.get $dirty) (i32.load (i32.mul (local.get $i) (i32.const 65536)))))
                 (i32.store (i32.mul (local.get $i) (i32.const 65536)) (i32.const -1))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if $l (i32.lt_u (local.get $i) (i32.const 16))))
               (drop (memory.grow (i32.const 1)))
               (i32.store (i32.const 1114112) (i32.const 7))
               (local.get $dirty)))"#,
    )
    .unwrap();
    let mut bases = HashSet::new();
    let mut rss_after_warmup = 0;
    for i in 0..1000 {
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let memory = instance.get_memory(&mut store, "m").unwrap();
        assert_eq!(memory.data_size(&store), 17 * 65536, "iteration {i}: size restored");
        bases.insert(memory.data_ptr(&store) as usize);
        let run = instance.get_typed_func::<(), i32>(&mut store, "run").unwrap();
        assert_eq!(run.call(&mut store, ()).unwrap(), 0, "iteration {i}: memory was not zero");
        drop(store);
        if i == 10 {
            rss_after_warmup = resident_bytes();
        }
    }
    let rss_end = resident_bytes();
    let stats = creator.stats();
    println!(
        "1000 instantiations: {} reservation(s), created {}, reused {}, RSS after 10: {} KiB, after 1000: {} KiB",
        bases.len(),
        stats.created,
        stats.reused,
        rss_after_warmup / 1024,
        rss_end / 1024
    );
    assert_eq!(bases.len(), 1, "one reservation serves every instance");
    assert_eq!(stats.created, 1);
    assert_eq!(stats.reused, 999);
    assert_eq!(stats.idle, 1);
    // 990 more instances, each dirtying 17 pages (1 MiB+): without recycling
    // and resets RSS would grow by ~1 GiB. Allow 8 MiB of allocator noise.
    assert!(rss_end < rss_after_warmup + (8 << 20), "RSS grew from {rss_after_warmup} to {rss_end}");
}

#[test]
fn a_handle_names_one_memory_not_the_slot_that_served_it() {
    let creator = FrameMemoryCreator::new();
    let engine = engine_with(&creator, |_| {});
    let module = Module::new(&engine, r#"(module (memory (export "m") 1))"#).unwrap();
    let mut first = Store::new(&engine, ());
    let instance = Instance::new(&mut first, &module, &[]).unwrap();
    let memory = instance.get_memory(&mut first, "m").unwrap();
    let base = memory.data_ptr(&first) as usize;
    let stale = creator.handle(&first, &memory).unwrap();
    stale.write(&mut first, 0, &[1, 2, 3]).unwrap();
    // A store that owns nothing: a stale handle is refused as gone before
    // its store is even looked at.
    let mut other = Store::new(&engine, ());
    assert_eq!(creator.live_memories().len(), 1);
    assert_eq!(creator.stats().live, 1);
    drop(first);
    // The slot is idle in the pool: no handle reaches it, and it is not live.
    assert!(matches!(stale.read(&other, 0, &mut [0; 3]), Err(framemap_wasmtime::Error::NotFramemap { .. })));
    assert!(creator.live_memories().is_empty(), "an idle slot is listed as live");
    assert_eq!(creator.stats().live, 0);
    assert_eq!(creator.stats().idle, 1);
    // The same slot serves the next memory: the old handle still fails, a new
    // handle works, and it sees the reset contents.
    let mut second = Store::new(&engine, ());
    let instance = Instance::new(&mut second, &module, &[]).unwrap();
    let memory = instance.get_memory(&mut second, "m").unwrap();
    assert_eq!(memory.data_ptr(&second) as usize, base, "the slot was recycled");
    assert!(matches!(stale.write(&mut second, 0, &[9]), Err(framemap_wasmtime::Error::NotFramemap { .. })));
    assert!(stale.report().is_err() && stale.validate().is_err() && stale.runs_in(0, 1).is_err());
    assert!(stale.map_zero(&mut other, 0, WASM_PAGE, Protection::ReadWrite).is_err());
    let fresh = creator.handle(&second, &memory).unwrap();
    let mut bytes = [7u8; 3];
    fresh.read(&second, 0, &mut bytes).unwrap();
    assert_eq!(bytes, [0, 0, 0], "the recycled memory was reset");
    assert_eq!(memory.data(&second)[..3], [0, 0, 0], "the stale handle wrote into the new memory");
    let live = creator.live_memories();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].base(), base);
    // Clearing the pool while the slot serves a memory changes nothing for it.
    creator.clear_pool();
    fresh.write(&mut second, 0, &[5]).unwrap();
    drop(second);
    creator.clear_pool();
    let stats = creator.stats();
    assert_eq!((stats.created, stats.reused, stats.recycled, stats.idle, stats.live), (1, 1, 2, 0, 0));
    assert!(fresh.read(&other, 0, &mut bytes).is_err());
}

#[test]
fn recycling_off_releases_every_reservation() {
    let creator = FrameMemoryCreator::with_config(CreatorConfig { max_idle_slots: 0, ..CreatorConfig::default() });
    let engine = engine_with(&creator, |_| {});
    let module = Module::new(&engine, r#"(module (memory 1))"#).unwrap();
    for _ in 0..5 {
        let mut store = Store::new(&engine, ());
        Instance::new(&mut store, &module, &[]).unwrap();
    }
    let stats = creator.stats();
    assert_eq!((stats.created, stats.reused, stats.released, stats.idle), (5, 0, 5, 0));
}

#[test]
fn slots_are_matched_by_exact_geometry() {
    let creator = FrameMemoryCreator::new();
    let small = engine_with(&creator, |c| {
        c.memory_reservation(1 << 20).memory_guard_size(64 << 10);
    });
    let large = engine_with(&creator, |_| {});
    for engine in [&small, &large, &small] {
        let module = Module::new(engine, r#"(module (memory (export "m") 1))"#).unwrap();
        let mut store = Store::new(engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let memory = instance.get_memory(&mut store, "m").unwrap();
        let report = creator.handle(&store, &memory).unwrap().report().unwrap();
        let want = if std::ptr::eq(engine, &large) { (4 << 30, 32 << 20) } else { (1 << 20, 64 << 10) };
        assert_eq!((report.summary.capacity, report.summary.guard), want);
    }
    let stats = creator.stats();
    assert_eq!((stats.created, stats.reused), (2, 1));
}

#[test]
fn growth_past_the_reservation_fails_cleanly() {
    let creator = FrameMemoryCreator::new();
    let engine = engine_with(&creator, |c| {
        c.memory_reservation(4 * WASM_PAGE).memory_guard_size(0);
    });
    let module = Module::new(
        &engine,
        r#"(module (memory (export "m") 1)
             (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let grow = instance.get_typed_func::<i32, i32>(&mut store, "grow").unwrap();
    assert_eq!(grow.call(&mut store, 3).unwrap(), 1);
    assert_eq!(grow.call(&mut store, 1).unwrap(), -1, "the reservation is full: framemap memories never move");
    let memory = instance.get_memory(&mut store, "m").unwrap();
    assert!(memory.grow(&mut store, 1).is_err());
    assert_eq!(memory.data_size(&store), 4 * WASM_PAGE as usize);
}

#[test]
fn a_memory_too_large_for_the_host_is_an_error_not_a_panic() {
    let creator = FrameMemoryCreator::new();
    let engine = engine_with(&creator, |c| {
        c.wasm_memory64(true);
    });
    // 2^40 pages of 64 KiB = 2^56 bytes: more address space than x86-64 has.
    let module = Module::new(&engine, r#"(module (memory i64 1099511627776))"#).unwrap();
    let mut store = Store::new(&engine, ());
    let err = Instance::new(&mut store, &module, &[]).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("cannot create a memory"), "{text}");
    assert_eq!(creator.stats().live, 0);
}

#[test]
fn memory64_multi_memory_and_custom_page_sizes() {
    let creator = FrameMemoryCreator::new();
    let engine = engine_with(&creator, |c| {
        c.wasm_memory64(true).wasm_multi_memory(true).wasm_custom_page_sizes(true);
    });
    let module = Module::new(
        &engine,
        r#"(module
             (memory $a (export "a") i64 1)
             (memory $b (export "b") 3 (pagesize 1))
             (memory $c (export "c") 0 (pagesize 1))
             (func (export "run") (result i64)
               (drop (memory.grow $a (i64.const 2)))
               (i64.store $a (i64.const 196600) (i64.const 0x1122334455667788))
               (i32.store8 $b (i32.const 2) (i32.const 9))
               (drop (memory.grow $c (i32.const 5)))
               (i32.store8 $c (i32.const 4) (i32.const 1))
               (i64.add (i64.load $a (i64.const 196600)) (i64.extend_i32_u (i32.load8_u $b (i32.const 2))))))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let run = instance.get_typed_func::<(), i64>(&mut store, "run").unwrap();
    assert_eq!(run.call(&mut store, ()).unwrap(), 0x1122334455667788 + 9);
    assert_eq!(creator.stats().live, 3, "every memory of the instance is a framemap memory");
    for (name, len) in [("a", 3 * WASM_PAGE), ("b", 3), ("c", 5)] {
        let memory = instance.get_memory(&mut store, name).unwrap();
        let handle = creator.handle(&store, &memory).unwrap();
        handle.validate().unwrap();
        assert_eq!(handle.report().unwrap().summary.len, len, "memory {name}");
    }
}

#[test]
fn shared_memories_are_framemap_memories() {
    let creator = FrameMemoryCreator::new();
    let engine = engine_with(&creator, |c| {
        c.wasm_threads(true).shared_memory(true);
    });
    let owner = Module::new(&engine, r#"(module (memory (export "m") 1 4 shared))"#).unwrap();
    let user = Module::new(
        &engine,
        r#"(module (import "env" "m" (memory 1 4 shared))
             (func (export "add_many") (param i32)
               (loop $l
                 (drop (i32.atomic.rmw.add (i32.const 64) (i32.const 1)))
                 (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
                 (br_if $l (local.get 0)))))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &owner, &[]).unwrap();
    let shared = instance.get_shared_memory(&mut store, "m").unwrap();
    let handle = creator.handle_shared(&shared).unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (engine, user, shared) = (&engine, &user, shared.clone());
            s.spawn(move || {
                let mut store = Store::new(engine, ());
                let instance = Instance::new(&mut store, user, &[shared.into()]).unwrap();
                let add = instance.get_typed_func::<i32, ()>(&mut store, "add_many").unwrap();
                add.call(&mut store, 10_000).unwrap();
            });
        }
    });
    let word: [u8; 4] = std::array::from_fn(|i| {
        // SAFETY: reading bytes of a shared memory no thread writes any more.
        unsafe { *shared.data()[64 + i].get() }
    });
    assert_eq!(u32::from_le_bytes(word), 20_000, "atomic adds from two threads all landed");
    assert_eq!(shared.grow(2).unwrap(), 1);
    handle.validate().unwrap();
    assert_eq!(handle.report().unwrap().summary.len, 3 * WASM_PAGE);
    assert_eq!(creator.stats().live, 1, "imports share the one framemap memory");
}

#[test]
fn gc_heaps_are_framemap_memories() {
    let creator = FrameMemoryCreator::new();
    let engine = engine_with(&creator, |c| {
        c.wasm_gc(true).wasm_function_references(true);
    });
    let module = Module::new(
        &engine,
        r#"(module
             (type $pair (struct (field (mut i32)) (field (mut i32))))
             (func (export "run") (result i32)
               (local $p (ref null $pair)) (local $i i32) (local $sum i32)
               (loop $l
                 (local.set $p (struct.new $pair (local.get $i) (i32.const 1)))
                 (local.set $sum (i32.add (local.get $sum) (struct.get $pair 0 (local.get $p))))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if $l (i32.lt_u (local.get $i) (i32.const 10000))))
               (local.get $sum)))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let run = instance.get_typed_func::<(), i32>(&mut store, "run").unwrap();
    assert_eq!(run.call(&mut store, ()).unwrap(), (0..10000).sum::<i32>());
    assert!(creator.stats().live >= 1, "the GC heap came from the creator: {:?}", creator.stats());
    for handle in creator.live_memories() {
        handle.validate().unwrap();
    }
}
