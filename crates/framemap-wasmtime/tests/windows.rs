//! Windows on live wasmtime memories: host buffers remapped under running
//! guest threads, revocation, and refused requests.

use framemap::{FrameTag, Image, Protection, SharedBuffer};
use framemap_wasmtime::{Error, FrameMemoryCreator, PreparedModule, configure};
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
    // SAFETY: the memory is shared, or nothing borrows its bytes (`Memory::data`) while the buffer changes.
    unsafe { handle.map_buffer(&mut store, WINDOW, &a, 0, page, Protection::Read) }.unwrap();

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
            // SAFETY: as above.
            unsafe { handle.map_buffer(&mut store, WINDOW, buffer, 0, page, Protection::Read) }.unwrap();
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
    assert_eq!(report.summary.runs[FrameTag::Shared], 0, "revocation left no shared frame");
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

    // SAFETY: the memory is shared, or nothing borrows its bytes (`Memory::data`) while the buffer changes.
    unsafe { handle.map_buffer(&mut store, page, &buffer, 0, page, Protection::Read) }.unwrap();
    assert_eq!(peek.call(&mut store, page as i32).unwrap(), 0x22);
    let before = handle.report().unwrap();
    let mut map = |offset, len| {
        // SAFETY: nothing borrows the memory's bytes (`Memory::data`) while
        // the buffer changes.
        unsafe { handle.map_buffer(&mut store, offset, &buffer, 0, len, Protection::Read) }
    };
    assert!(map(65536, page).is_err(), "past the memory's size");
    assert!(map(0, 2 * page).is_err(), "past the buffer's end");
    assert!(map(1, page).is_err(), "unaligned");
    assert!(handle.discard(&mut store, page, page).is_err(), "shared frames are the host's");
    assert_eq!(handle.report().unwrap(), before, "refused requests change nothing");

    handle.unmap(&mut store, 2 * page, page).unwrap();
    let trap = peek.call(&mut store, 2 * page as i32).unwrap_err();
    assert_eq!(trap.downcast_ref::<Trap>(), Some(&Trap::MemoryOutOfBounds));
    assert!(handle.protect(&mut store, 2 * page, page, Protection::Read).is_err(), "unmapped pages have no protection");
    handle.map_zero(&mut store, 2 * page, page, Protection::ReadWrite).unwrap();
    assert_eq!(peek.call(&mut store, 2 * page as i32).unwrap(), 0);
    // Checked host access: through the window, and refused on holes.
    let mut word = [0u8; 8];
    handle.read(&store, page, &mut word).unwrap();
    assert_eq!(u64::from_le_bytes(word), PATTERN_B);
    assert!(handle.write(&mut store, page, &[1]).is_err(), "a read-only window");
    handle.write(&mut store, 2 * page + 3, &[9]).unwrap();
    assert_eq!(peek.call(&mut store, 2 * page as i32 + 3).unwrap(), 9);
    buffer.revoke().unwrap();
    assert!(peek.call(&mut store, page as i32).is_err(), "a revoked window traps");
    assert!(handle.read(&store, page, &mut word).is_err(), "the host is refused where the guest traps");
    assert!(handle.read(&store, 65536 - 4, &mut word).is_err(), "past the memory's size");
    // SAFETY: as above.
    let revoked = unsafe { handle.map_buffer(&mut store, 0, &buffer, 0, page, Protection::Read) };
    assert!(revoked.is_err(), "revoked buffers cannot be mapped");
    handle.validate().unwrap();
}

/// The borrow rule (ARCHITECTURE.md, "borrows of guest memory"): a handle
/// changes or copies its memory's bytes only with the store that owns it
/// (a live `Memory::data` borrow of that store then cannot exist; the
/// compile-time half is the `compile_fail` example on `MemoryHandle`), a
/// handle found without its store only inspects, and an image whose file
/// others may still write never backs a memory wasmtime lends as `&[u8]`.
#[test]
fn handles_change_memories_only_through_the_store_that_owns_them() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let module = Module::new(&engine, r#"(module (memory (export "m") 1))"#).unwrap();
    let page = framemap::host_page_size() as u64;
    let mut owner = Store::new(&engine, ());
    let memory = Instance::new(&mut owner, &module, &[]).unwrap().get_memory(&mut owner, "m").unwrap();
    let mut stranger = Store::new(&engine, ());
    let _other = Instance::new(&mut stranger, &module, &[]).unwrap();
    let handle = creator.handle(&owner, &memory).unwrap();
    let before = handle.report().unwrap();

    let wrong = |r: framemap_wasmtime::Result<()>| matches!(r, Err(Error::WrongStore { .. }));
    assert!(wrong(handle.unmap(&mut stranger, 0, page)));
    assert!(wrong(handle.protect(&mut stranger, 0, page, Protection::Read)));
    assert!(wrong(handle.discard(&mut stranger, 0, page)));
    assert!(wrong(handle.map_zero(&mut stranger, 0, page, Protection::ReadWrite)));
    assert!(wrong(handle.write(&mut stranger, 0, &[1])));
    assert!(wrong(handle.read(&stranger, 0, &mut [0])));
    assert!(wrong(handle.make_virtual(&mut stranger, 0)));
    let buffer = patterned(PATTERN_A);
    // SAFETY: refused before anything is mapped.
    assert!(wrong(unsafe { handle.map_buffer(&mut stranger, 0, &buffer, 0, page, Protection::Read) }));
    assert_eq!(handle.report().unwrap(), before, "a refused store changed the memory");
    assert_eq!(memory.data(&owner)[0], 0);

    // Found by enumeration: the store is unknown, so it only inspects.
    let listed = creator.live_memories().into_iter().find(|h| h.base() == handle.base()).unwrap();
    assert_eq!(listed.report().unwrap(), before);
    listed.validate().unwrap();
    let unknown = listed.write(&mut owner, 0, &[1]);
    assert!(matches!(unknown, Err(Error::StoreUnknown { .. })), "{unknown:?}");

    // The owner changes it.
    handle.write(&mut owner, 0, &[7]).unwrap();
    assert_eq!(memory.data(&owner)[0], 7);

    // An image over a file others may still write (sealed against shrinking
    // only) is refused; an immutable copy of it is accepted.
    let fd = rustix::fs::memfd_create("writable", rustix::fs::MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::io::pwrite(&fd, b"image", 0).unwrap();
    rustix::fs::ftruncate(&fd, page).unwrap();
    rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).unwrap();
    let copy = Image::copy_of_file(&fd).unwrap();
    let writable = Image::from_file(fd).unwrap();
    assert!(!writable.is_immutable() && copy.is_immutable());
    let refused = handle.map_image(&mut owner, 0, &writable, 0, page, Protection::ReadWrite);
    assert!(matches!(refused, Err(Error::MutableImage { .. })), "{refused:?}");
    handle.map_image(&mut owner, 0, &copy, 0, page, Protection::ReadWrite).unwrap();
    assert_eq!(&memory.data(&owner)[..5], b"image");
    let mut prepared = PreparedModule::new(&creator, &engine, r#"(module (memory (export "m") 1))"#).unwrap();
    let refused = prepared.set_image(0, Some(writable));
    assert!(matches!(refused, Err(Error::MutableImage { .. })), "{refused:?}");
    prepared.set_image(0, Some(copy)).unwrap();
    handle.validate().unwrap();
}
