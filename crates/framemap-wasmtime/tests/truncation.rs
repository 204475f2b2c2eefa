//! Truncation safety under a running guest (ARCHITECTURE.md, invariant 3):
//! a guest loops reading a window of a buffer over a plain file, the host
//! truncates the file from another thread, and the guest's load traps as a
//! memory fault instead of killing the process with SIGBUS. Run with the
//! SIGBUS guard installed after and before wasmtime's signal handlers.

use framemap::{FrameKind, FrameTag, Protection, SharedBuffer};
use framemap_wasmtime::{FrameMemoryCreator, configure};
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmtime::{Config, Engine, Instance, Module, Store, Trap};

const CHILD: &str = "FRAMEMAP_WASMTIME_TRUNCATION_CHILD";
const WINDOW: u64 = 32768;
const PATTERN: u64 = 0x1111_1111_1111_1111;

/// Scans the two host pages at 32768 word by word, forever: a word that is
/// not the pattern bumps the counter at 8, every finished scan the one at
/// 16. It ends only by trapping.
const READER: &str = r#"
(module
  (import "env" "m" (memory 16 16 shared))
  (func (export "scan") (param $bytes i32)
    (local $i i32) (local $w i64)
    (loop $forever
      (local.set $i (i32.const 0))
      (loop $words
        (local.set $w (i64.load (i32.add (i32.const 32768) (local.get $i))))
        (if (i64.ne (local.get $w) (i64.const 0x1111111111111111))
          (then (drop (i32.atomic.rmw.add (i32.const 8) (i32.const 1)))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br_if $words (i32.lt_u (local.get $i) (local.get $bytes))))
      (drop (i32.atomic.rmw.add (i32.const 16) (i32.const 1)))
      (br $forever))))
"#;

/// An unlinked file of `pages` host pages of the pattern.
fn temp_file(pages: u64) -> File {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("framemap-wasmtime-truncation-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let path = std::env::temp_dir().join(name);
    let mut file = File::options().read(true).write(true).create_new(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let page = framemap::host_page_size();
    file.write_all(&PATTERN.to_le_bytes().repeat(pages as usize * page / 8)).unwrap();
    file
}

fn counter(shared: &wasmtime::SharedMemory, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| {
        // SAFETY: a plain read of a counter the guest only bumps atomically;
        // a stale value is fine for the checks below.
        unsafe { *shared.data()[offset + i].get() }
    });
    u32::from_le_bytes(bytes)
}

fn truncation_while_a_guest_reads(guard_first: bool) {
    if guard_first {
        // The first unsealed buffer installs the SIGBUS guard, before any
        // Engine installs wasmtime's handlers.
        let early = SharedBuffer::from_fd(temp_file(1), 1).unwrap();
        assert!(!early.is_sealed());
    }
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    config.wasm_threads(true).shared_memory(true);
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config).unwrap();
    let owner = Module::new(&engine, r#"(module (memory (export "m") 16 16 shared))"#).unwrap();
    let reader = Module::new(&engine, READER).unwrap();
    let mut store = Store::new(&engine, ());
    let shared = Instance::new(&mut store, &owner, &[]).unwrap().get_shared_memory(&mut store, "m").unwrap();
    let handle = creator.handle_shared(&shared).unwrap();

    let page = framemap::host_page_size() as u64;
    let file = temp_file(2);
    let buffer = SharedBuffer::from_fd(file.try_clone().unwrap(), 2 * page).unwrap();
    assert!(!buffer.is_sealed());
    assert!(framemap::sigbus_guard_installed());
    // SAFETY: the memory is shared: wasmtime lends its bytes only as `UnsafeCell`s.
    unsafe { handle.map_buffer(&mut store, WINDOW, &buffer, 0, 2 * page, Protection::Read) }.unwrap();
    handle.validate().unwrap();

    let error = std::thread::scope(|s| {
        let guest = {
            let (engine, reader, shared) = (&engine, &reader, shared.clone());
            s.spawn(move || {
                let mut store = Store::new(engine, ());
                let instance = Instance::new(&mut store, reader, &[shared.into()]).unwrap();
                let scan = instance.get_typed_func::<i32, ()>(&mut store, "scan").unwrap();
                scan.call(&mut store, 2 * page as i32).unwrap_err()
            })
        };
        while counter(&shared, 16) < 3 {
            std::thread::yield_now();
        }
        // The truncation comes from another host thread while the guest reads.
        s.spawn(|| file.set_len(0).unwrap()).join().unwrap();
        guest.join().unwrap()
    });
    println!(
        "guard {}: {} full scans, then the truncation trapped the guest ({} SIGBUS absorbed)",
        if guard_first { "first" } else { "after the engine" },
        counter(&shared, 16),
        buffer.truncation_events()
    );
    assert_eq!(error.downcast_ref::<Trap>(), Some(&Trap::MemoryOutOfBounds), "{error:?}");
    assert_eq!(counter(&shared, 8), 0, "the guest never read anything but the file's bytes");
    assert!(buffer.truncation_events() >= 1);
    assert!(buffer.is_truncated());

    // The table follows the kernel: the demoted window reads as unmapped.
    handle.validate().unwrap();
    let report = handle.report().unwrap();
    assert_eq!(report.summary.bytes[FrameTag::Shared], 0, "{report}");
    // The next change folds the demotion into the table for good.
    handle.map_zero(&mut store, 0, page, Protection::ReadWrite).unwrap();
    let report = handle.report().unwrap();
    let window = (WINDOW / page)..(WINDOW / page + 2);
    for (run, frame) in &report.runs {
        if run.start < window.end && run.end > window.start {
            assert_eq!(frame.kind(), FrameKind::Unmapped, "{run:?}");
        }
    }
    handle.validate().unwrap();
    // SAFETY: as above.
    let truncated = unsafe { handle.map_buffer(&mut store, WINDOW, &buffer, 0, page, Protection::Read) };
    assert!(truncated.is_err(), "truncated: no new window");
    // The process is alive and wasmtime still works.
    let again = Instance::new(&mut store, &owner, &[]).unwrap();
    assert!(again.get_shared_memory(&mut store, "m").is_some());
}

fn run_child(mode: &str) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["a_guest_reading_a_truncated_file_traps_and_the_process_survives", "--exact", "--nocapture"])
        .env(CHILD, mode)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "child {mode}: {:?}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Each install order runs in a process of its own (the guard is installed
/// once per process).
#[test]
fn a_guest_reading_a_truncated_file_traps_and_the_process_survives() {
    match std::env::var(CHILD).as_deref() {
        Ok("engine-first") => truncation_while_a_guest_reads(false),
        Ok("guard-first") => truncation_while_a_guest_reads(true),
        _ => {
            run_child("engine-first");
            run_child("guard-first");
        }
    }
}
