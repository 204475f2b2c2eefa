//! Windows on live wasmtime memories: host buffers remapped under running
//! guest threads, revocation, and refused requests.

use framemap::{FrameTag, Protection, SharedBuffer};
use framemap_wasmtime::{FrameMemoryCreator, configure};
use std::sync::Arc;
use wasmtime::{Config, Engine, Instance, Module, Store, Trap};

const PATTERN_A: u64 = 0x1111_1111_1111_1111;
const PATTERN_B: u64 = 0x2222_2222_2222_2222;
const WINDOW: u64 = 32768;

fn engine(creator: &Arc<FrameMemoryCreator>) -> Engine {
    let mut config = Config::new();
    config.wasm_threads(true).shared_memory(true);
    configure(&mut config, creator.clone());
    Engine::new(&config).unwrap()
}

fn patterned(word: u64) -> SharedBuffer {
    let page = framemap::host_page_size();
    let buffer = SharedBuffer::new(page as u64).unwrap();
    buffer.write(0, &word.to_le_bytes().repeat(page / 8)).unwrap();
    buffer
}

/// Each call scans the window's page word by word, forever: a word that is
/// neither pattern bumps the counter at 8; every finished scan bumps the one
/// at 16. It ends only by trapping.
const READER: &str = r#"
(module
  (import "env" "m" (memory 16 16 shared))
  (func (export "scan")
    (local $i i32) (local $w i64)
    (loop $forever
      (local.set $i (i32.const 0))
      (loop $words
        (local.set $w (i64.load (i32.add (i32.const 32768) (local.get $i))))
        (if (i32.and (i64.ne (local.get $w) (i64.const 0x1111111111111111))
                     (i64.ne (local.get $w) (i64.const 0x2222222222222222)))
          (then (drop (i32.atomic.rmw.add (i32.const 8) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br_if $words (i32.lt_u (local.get $i) (i32.const 4096))))
      (drop (i32.atomic.rmw.add (i32.const 16) (i32.const 1)))
      (br $forever))))
"#;

fn counter(shared: &wasmtime::SharedMemory, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| {
        // SAFETY: a plain read of a counter the guests only bump atomically;
        // a stale value is fine for the checks below.
        unsafe { *shared.data()[offset + i].get() }
    });
    u32::from_le_bytes(bytes)
}

#[test]
fn guests_read_whole_pages_while_the_host_remaps_then_trap_on_revocation() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let owner = Module::new(&engine, r#"(module (memory (export "m") 16 16 shared))"#).unwrap();
    let reader = Module::new(&engine, READER).unwrap();
    let mut store = Store::new(&engine, ());
    let shared = Instance::new(&mut store, &owner, &[]).unwrap().get_shared_memory(&mut store, "m").unwrap();
    let handle = creator.handle_shared(&shared).unwrap();
    let (a, b) = (patterned(PATTERN_A), patterned(PATTERN_B));
    let page = framemap::host_page_size() as u64;
    handle.map_buffer(WINDOW, &a, 0, page, Protection::Read).unwrap();

    const REMAPS: usize = 5000;
    let outcomes = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (engine, reader, shared) = (&engine, &reader, shared.clone());
                s.spawn(move || {
                    let mut store = Store::new(engine, ());
                    let instance = Instance::new(&mut store, reader, &[shared.into()]).unwrap();
                    let scan = instance.get_typed_func::<(), ()>(&mut store, "scan").unwrap();
                    scan.call(&mut store, ()).unwrap_err()
                })
            })
            .collect();
        while counter(&shared, 16) == 0 {
            std::thread::yield_now();
        }
        for i in 0..REMAPS {
            let buffer = if i % 2 == 0 { &b } else { &a };
            handle.map_buffer(WINDOW, buffer, 0, page, Protection::Read).unwrap();
        }
        let scans_while_remapping = counter(&shared, 16);
        handle.validate().unwrap();
        a.revoke().unwrap();
        b.revoke().unwrap();
        let errors: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        (scans_while_remapping, errors)
    });
    let (scans, errors) = outcomes;
    println!("{REMAPS} remaps under 2 reader threads; {scans} full-page scans; both readers trapped after revocation");
    assert!(scans > 2, "the readers ran during the remaps");
    assert_eq!(counter(&shared, 8), 0, "every load saw one whole pattern, never zeros or a mix");
    for error in errors {
        assert_eq!(error.downcast_ref::<Trap>(), Some(&Trap::MemoryOutOfBounds), "{error:?}");
    }
    handle.validate().unwrap();
    let report = handle.report().unwrap();
    assert_eq!(report.summary.runs[FrameTag::Shared.index()], 0, "revocation left no shared frame");
}

#[test]
fn window_requests_on_a_live_memory_are_checked() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let module = Module::new(
        &engine,
        r#"(module (memory (export "m") 1 2)
             (func (export "peek") (param i32) (result i32) (i32.load8_u (local.get 0))))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let memory = instance.get_memory(&mut store, "m").unwrap();
    let handle = creator.handle(&store, &memory).unwrap();
    let peek = instance.get_typed_func::<i32, i32>(&mut store, "peek").unwrap();
    let page = framemap::host_page_size() as u64;
    let buffer = patterned(PATTERN_B);

    handle.map_buffer(page, &buffer, 0, page, Protection::Read).unwrap();
    assert_eq!(peek.call(&mut store, page as i32).unwrap(), 0x22);
    let before = handle.report().unwrap();
    assert!(handle.map_buffer(65536, &buffer, 0, page, Protection::Read).is_err(), "past the memory's size");
    assert!(handle.map_buffer(0, &buffer, 0, 2 * page, Protection::Read).is_err(), "past the buffer's end");
    assert!(handle.map_buffer(1, &buffer, 0, page, Protection::Read).is_err(), "unaligned");
    assert!(handle.discard(page, page).is_err(), "shared frames are the host's");
    assert_eq!(handle.report().unwrap(), before, "refused requests change nothing");

    handle.unmap(2 * page, page).unwrap();
    let trap = peek.call(&mut store, 2 * page as i32).unwrap_err();
    assert_eq!(trap.downcast_ref::<Trap>(), Some(&Trap::MemoryOutOfBounds));
    assert!(handle.protect(2 * page, page, Protection::Read).is_err(), "unmapped pages have no protection");
    handle.map_zero(2 * page, page, Protection::ReadWrite).unwrap();
    assert_eq!(peek.call(&mut store, 2 * page as i32).unwrap(), 0);
    // Checked host access: through the window, and refused on holes.
    let mut word = [0u8; 8];
    handle.read(page, &mut word).unwrap();
    assert_eq!(u64::from_le_bytes(word), PATTERN_B);
    assert!(handle.write(page, &[1]).is_err(), "a read-only window");
    handle.write(2 * page + 3, &[9]).unwrap();
    assert_eq!(peek.call(&mut store, 2 * page as i32 + 3).unwrap(), 9);
    buffer.revoke().unwrap();
    assert!(peek.call(&mut store, page as i32).is_err(), "a revoked window traps");
    assert!(handle.read(page, &mut word).is_err(), "the host is refused where the guest traps");
    assert!(handle.read(65536 - 4, &mut word).is_err(), "past the memory's size");
    assert!(handle.map_buffer(0, &buffer, 0, page, Protection::Read).is_err(), "revoked buffers cannot be mapped");
    handle.validate().unwrap();
}
