//! Hostile guests: every way wasmtime touches guest memory outside compiled
//! wasm code (bulk-memory libcalls, WASI host calls, `Memory::data`), aimed
//! at a page that framemap made inaccessible below the memory's size.
//!
//! Before the hole guard each of these killed the process with SIGSEGV
//! (wasmtime declines a fault at a pc outside wasm code). Each scenario runs
//! in a child process (this test binary, re-run on one test with
//! `FRAMEMAP_HOSTILE_CHILD` set), so a crash is an assertion failure here and
//! not the end of the test run. The child prints `SURVIVED` as its last act;
//! the parent asserts that it exited normally and printed it.
//!
//! The documented outcome (ARCHITECTURE.md, "the hole guard"): the access
//! completes on private zero pages, the memory is *poisoned*, its frame
//! table is reconciled with what the guard mapped (it validates), every
//! later guest memory-control call traps with `Error::Poisoned` (inside
//! `memctl::Error::Memory`), host handle operations that would change it fail with the same error, and no
//! byte reaches a revoked buffer.

use framemap::{FrameTag, Protection, SharedBuffer};
use framemap_wasmtime::memctl::{self, MemCtl};
use framemap_wasmtime::{Error, FrameMemoryCreator, MemoryHandle, configure};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::Arc;
use wasmtime::{Config, Engine, Instance, Linker, Memory, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

const PAGE: i32 = 65536;
/// The wasm page made inaccessible in every scenario.
const HOLE: i32 = PAGE;
const CHILD: &str = "FRAMEMAP_HOSTILE_CHILD";

const GUEST: &str = r#"
(module
  (import "framemap:memctl" "unmap" (func $unmap (param i32 i32)))
  (import "framemap:memctl" "protect" (func $protect (param i32 i32 i32)))
  (import "framemap:memctl" "map" (func $map (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4 8)
  (data $passive "0123456789abcdef0123456789abcdef")
  (func (export "unmap") (param i32 i32) (call $unmap (local.get 0) (local.get 1)))
  (func (export "protect") (param i32 i32 i32) (call $protect (local.get 0) (local.get 1) (local.get 2)))
  (func (export "map") (param i32 i32 i32) (result i32) (call $map (local.get 0) (local.get 1) (local.get 2)))
  (func (export "fill") (param i32 i32) (memory.fill (local.get 0) (i32.const 0x41) (local.get 1)))
  (func (export "copy") (param i32 i32 i32) (memory.copy (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init") (param i32 i32) (memory.init $passive (local.get 0) (i32.const 0) (local.get 1)))
  (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0)))
  (func (export "notify") (param i32) (result i32) (memory.atomic.notify (local.get 0) (i32.const 1)))
  (func (export "wait") (param i32) (result i32) (memory.atomic.wait32 (local.get 0) (i32.const 0) (i64.const 0)))
  ;; One iovec at 0 (pointer, length), the byte count at 8.
  (func (export "write_from") (param i32 i32) (result i32)
    (i32.store (i32.const 0) (local.get 0))
    (i32.store (i32.const 4) (local.get 1))
    (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
  (func (export "read_into") (param i32 i32) (result i32)
    (i32.store (i32.const 0) (local.get 0))
    (i32.store (i32.const 4) (local.get 1))
    (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))))
"#;

struct Host {
    memctl: MemCtl,
    wasi: WasiP1Ctx,
}

struct Guest {
    store: Store<Host>,
    instance: Instance,
    memory: Memory,
    handle: MemoryHandle,
    creator: Arc<FrameMemoryCreator>,
}

impl Guest {
    fn new() -> Guest {
        Guest::with(FrameMemoryCreator::new())
    }

    fn with(creator: Arc<FrameMemoryCreator>) -> Guest {
        let mut config = Config::new();
        configure(&mut config, creator.clone());
        let engine = Engine::new(&config).unwrap();
        let mut linker: Linker<Host> = Linker::new(&engine);
        memctl::add_to_linker(&mut linker, |h: &mut Host| &mut h.memctl).unwrap();
        p1::add_to_linker_sync(&mut linker, |h: &mut Host| &mut h.wasi).unwrap();
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new("from the host's stdin"))
            .stdout(MemoryOutputPipe::new(1 << 20))
            .build_p1();
        let module = Module::new(&engine, GUEST).unwrap();
        let mut store = Store::new(&engine, Host { memctl: MemCtl::new(creator.clone()), wasi });
        let instance = linker.instantiate(&mut store, &module).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let handle = creator.handle(&store, &memory).unwrap();
        Guest { store, instance, memory, handle, creator }
    }

    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        params: P,
    ) -> wasmtime::Result<R> {
        let f = self.instance.get_typed_func::<P, R>(&mut self.store, name).unwrap();
        f.call(&mut self.store, params)
    }

    /// The guest unmaps wasm page 1 itself.
    fn hole(mut self) -> Guest {
        self.call::<(i32, i32), ()>("unmap", (HOLE, PAGE)).unwrap();
        self
    }

    /// What every scenario checks once the hostile access is over: the
    /// memory is poisoned, its table validates against the kernel, guest
    /// memory control traps, and host changes are refused.
    fn assert_poisoned(&mut self) {
        let report = self.handle.report().unwrap();
        assert!(report.poisoned_pages > 0, "the memory is not poisoned: {report:?}");
        self.handle.validate().unwrap();
        let trap = self.call::<(i32, i32), ()>("unmap", (2 * PAGE, PAGE)).unwrap_err();
        assert!(
            matches!(trap.downcast_ref::<memctl::Error>(), Some(memctl::Error::Memory(Error::Poisoned { .. }))),
            "memctl on a poisoned memory: {trap:?}"
        );
        let refused =
            self.handle.map_zero(&mut self.store, 3 * PAGE as u64, PAGE as u64, Protection::ReadWrite).unwrap_err();
        assert!(matches!(refused, Error::Poisoned { .. }), "{refused:?}");
        // Wasm code keeps running on the other pages.
        assert_eq!(self.call::<i32, i32>("load", 3 * PAGE).unwrap(), 0);
    }
}

/// Runs `scenario` in a child process (this binary, filtered to `test`) and
/// asserts that the child survived it.
fn in_child(test: &str, scenario: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some() {
        scenario();
        println!("SURVIVED");
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("SURVIVED"),
        "the child running `{test}` did not survive: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
}

#[test]
fn wasm_load_from_a_hole_traps() {
    in_child("wasm_load_from_a_hole_traps", || {
        let mut g = Guest::new().hole();
        let trap = g.call::<i32, i32>("load", HOLE).unwrap_err();
        assert_eq!(trap.downcast_ref::<wasmtime::Trap>(), Some(&wasmtime::Trap::MemoryOutOfBounds));
        // A wasm trap is not a host access: nothing is poisoned.
        assert_eq!(g.handle.report().unwrap().poisoned_pages, 0);
    });
}

#[test]
fn memory_fill_over_a_hole() {
    in_child("memory_fill_over_a_hole", || {
        let mut g = Guest::new().hole();
        g.call::<(i32, i32), ()>("fill", (HOLE - 16, 32)).unwrap();
        g.assert_poisoned();
    });
}

#[test]
fn memory_copy_from_a_hole() {
    in_child("memory_copy_from_a_hole", || {
        let mut g = Guest::new().hole();
        g.call::<(i32, i32, i32), ()>("copy", (3 * PAGE, HOLE, 4096)).unwrap();
        // The bytes copied out of the hole are zeros, never anyone's data.
        let mut copied = vec![0xffu8; 4096];
        g.handle.read(&g.store, 3 * PAGE as u64, &mut copied).unwrap();
        assert!(copied.iter().all(|&b| b == 0));
        g.assert_poisoned();
    });
}

#[test]
fn memory_copy_into_a_read_only_page() {
    in_child("memory_copy_into_a_read_only_page", || {
        let mut g = Guest::new();
        g.call::<(i32, i32, i32), ()>("protect", (HOLE, PAGE, memctl::PROT_READ)).unwrap();
        g.call::<(i32, i32, i32), ()>("copy", (HOLE, 3 * PAGE, 4096)).unwrap();
        g.assert_poisoned();
    });
}

#[test]
fn memory_init_into_a_hole() {
    in_child("memory_init_into_a_hole", || {
        let mut g = Guest::new().hole();
        g.call::<(i32, i32), ()>("init", (HOLE + 100, 32)).unwrap();
        g.assert_poisoned();
    });
}

#[test]
fn atomics_on_a_hole() {
    in_child("atomics_on_a_hole", || {
        let mut g = Guest::new().hole();
        // On a non-shared memory wasmtime answers both without reading the
        // memory: notify wakes no one, wait traps.
        assert_eq!(g.call::<i32, i32>("notify", HOLE).unwrap(), 0);
        let trap = g.call::<i32, i32>("wait", HOLE).unwrap_err();
        assert_eq!(trap.downcast_ref::<wasmtime::Trap>(), Some(&wasmtime::Trap::AtomicWaitNonSharedMemory));
        assert_eq!(g.handle.report().unwrap().poisoned_pages, 0);
    });
}

#[test]
fn atomic_wait_on_a_hole_of_a_shared_memory() {
    in_child("atomic_wait_on_a_hole_of_a_shared_memory", || {
        let creator = FrameMemoryCreator::new();
        let mut config = Config::new();
        configure(&mut config, creator.clone()).shared_memory(true);
        let engine = Engine::new(&config).unwrap();
        let mut linker: Linker<MemCtl> = Linker::new(&engine);
        memctl::add_to_linker(&mut linker, |m: &mut MemCtl| m).unwrap();
        let module = Module::new(
            &engine,
            r#"(module
                 (import "framemap:memctl" "unmap" (func $unmap (param i32 i32)))
                 (memory (export "memory") 4 8 shared)
                 (func (export "unmap") (param i32 i32) (call $unmap (local.get 0) (local.get 1)))
                 (func (export "wait") (param i32) (result i32)
                   (memory.atomic.wait32 (local.get 0) (i32.const 0) (i64.const 0))))"#,
        )
        .unwrap();
        let mut store = Store::new(&engine, MemCtl::new(creator.clone()));
        let instance = linker.instantiate(&mut store, &module).unwrap();
        let memory = instance.get_shared_memory(&mut store, "memory").unwrap();
        let handle = creator.handle_shared(&memory).unwrap();
        instance.get_typed_func::<(i32, i32), ()>(&mut store, "unmap").unwrap().call(&mut store, (HOLE, PAGE)).unwrap();
        // The wait libcall loads the word from the hole: it reads zero, the
        // expected value, and times out at once (2).
        let wait = instance.get_typed_func::<i32, i32>(&mut store, "wait").unwrap();
        assert_eq!(wait.call(&mut store, HOLE).unwrap(), 2);
        assert_eq!(handle.report().unwrap().poisoned_pages, 1);
        handle.validate().unwrap();
    });
}

#[test]
fn wasi_fd_write_from_a_hole() {
    in_child("wasi_fd_write_from_a_hole", || {
        let mut g = Guest::new().hole();
        // WASI reads the iovec's bytes through `Memory::data`, outside wasm.
        let _errno = g.call::<(i32, i32), i32>("write_from", (HOLE, 64)).unwrap();
        g.assert_poisoned();
    });
}

#[test]
fn wasi_fd_read_into_a_hole() {
    in_child("wasi_fd_read_into_a_hole", || {
        let mut g = Guest::new().hole();
        let _errno = g.call::<(i32, i32), i32>("read_into", (HOLE, 64)).unwrap();
        g.assert_poisoned();
    });
}

#[test]
fn host_memory_data_over_a_hole() {
    in_child("host_memory_data_over_a_hole", || {
        let mut g = Guest::new().hole();
        let byte = g.memory.data(&g.store)[HOLE as usize + 5];
        assert_eq!(byte, 0);
        g.assert_poisoned();
    });
}

#[test]
fn memory_fill_after_a_host_unmap() {
    in_child("memory_fill_after_a_host_unmap", || {
        let mut g = Guest::new();
        g.handle.unmap(&mut g.store, HOLE as u64, PAGE as u64).unwrap();
        g.call::<(i32, i32), ()>("fill", (HOLE, 300)).unwrap();
        g.assert_poisoned();
    });
}

#[test]
fn memory_fill_after_make_virtual() {
    in_child("memory_fill_after_make_virtual", || {
        let mut g = Guest::new();
        g.handle.make_virtual(&mut g.store, 2 * PAGE as u64).unwrap();
        g.call::<(i32, i32), ()>("fill", (2 * PAGE - 8, 16)).unwrap();
        let report = g.handle.report().unwrap();
        assert!(report.poisoned_pages > 0, "{report:?}");
        g.handle.validate().unwrap();
    });
}

#[test]
fn memory_fill_over_a_revoked_window_reaches_no_buffer() {
    in_child("memory_fill_over_a_revoked_window_reaches_no_buffer", || {
        let mut g = Guest::new();
        // A buffer over a file this test keeps a descriptor of, to read
        // what reached the file after the buffer itself refuses access.
        let path = std::env::temp_dir().join(format!("framemap-hostile-{}", std::process::id()));
        let file = std::fs::File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file.set_len(PAGE as u64).unwrap();
        let ours = file.try_clone().unwrap();
        let buffer = SharedBuffer::from_fd(file, PAGE as u64).unwrap();
        // SAFETY: nothing borrows the memory's bytes (`Memory::data`) while the buffer is revoked below.
        unsafe { g.handle.map_buffer(&mut g.store, HOLE as u64, &buffer, 0, PAGE as u64, Protection::ReadWrite) }
            .unwrap();
        g.call::<(i32, i32), ()>("fill", (HOLE, 16)).unwrap();
        let mut seen = [0u8; 16];
        ours.read_exact_at(&mut seen, 0).unwrap();
        assert_eq!(seen, [0x41; 16], "writes through a live window reach the buffer");
        ours.write_all_at(&[0; 16], 0).unwrap();
        assert_eq!(buffer.revoke().unwrap(), 1);
        let tags: Vec<_> = g.handle.runs_in(HOLE as u64, PAGE as u64).unwrap().iter().map(|(_, f)| f.tag()).collect();
        assert_eq!(tags, [FrameTag::Unmapped]);
        g.call::<(i32, i32), ()>("fill", (HOLE, 4096)).unwrap();
        let mut after = vec![0xffu8; PAGE as usize];
        ours.read_exact_at(&mut after, 0).unwrap();
        assert!(after.iter().all(|&b| b == 0), "a write reached the buffer after revoke returned");
        g.assert_poisoned();
    });
}

#[test]
fn a_poisoned_memory_is_not_recycled() {
    in_child("a_poisoned_memory_is_not_recycled", || {
        let mut g = Guest::new().hole();
        let creator = g.creator.clone();
        g.call::<(i32, i32), ()>("fill", (HOLE, 16)).unwrap();
        drop(g);
        let stats = creator.stats();
        assert_eq!((stats.recycled, stats.released), (0, 1), "{stats:?}");
        // A fresh memory from the same creator is whole and unpoisoned.
        let mut g = Guest::with(creator);
        assert_eq!(g.call::<i32, i32>("load", HOLE).unwrap(), 0);
        assert_eq!(g.handle.report().unwrap().poisoned_pages, 0);
    });
}

/// A guest toggling the protection of every other page runs into its
/// memory's run budget and traps; the process's mappings are not exhausted,
/// and other instances keep working.
#[test]
fn a_guest_over_its_run_budget_traps() {
    let creator =
        FrameMemoryCreator::with_config(framemap_wasmtime::CreatorConfig { max_runs: 64, ..Default::default() });
    let mut config = Config::new();
    let engine = framemap_wasmtime::engine(&mut config, creator.clone()).unwrap();
    let mut linker: Linker<MemCtl> = Linker::new(&engine);
    memctl::add_to_linker(&mut linker, |m: &mut MemCtl| m).unwrap();
    let module = Module::new(
        &engine,
        r#"(module
             (import "framemap:memctl" "protect" (func $protect (param i32 i32 i32)))
             (memory (export "memory") 256)
             ;; Protects every other wasm page read-only, counting the calls
             ;; made in global 0, until one traps.
             (global $done (export "done") (mut i32) (i32.const 0))
             (func (export "toggle")
               (local $page i32)
               (loop $next
                 (call $protect (i32.mul (local.get $page) (i32.const 65536)) (i32.const 65536) (i32.const 1))
                 (global.set $done (i32.add (global.get $done) (i32.const 1)))
                 (local.set $page (i32.add (local.get $page) (i32.const 2)))
                 (br_if $next (i32.lt_u (local.get $page) (i32.const 256)))))
             (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0))))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, MemCtl::new(creator.clone()));
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let trap = instance.get_typed_func::<(), ()>(&mut store, "toggle").unwrap().call(&mut store, ()).unwrap_err();
    match trap.downcast_ref::<memctl::Error>() {
        Some(memctl::Error::Memory(Error::Window {
            source: framemap::Error::RunBudget { runs, budget: 64 }, ..
        })) => {
            assert_eq!(*runs, 65)
        }
        other => panic!("expected a run-budget trap, got {other:?} ({trap:?})"),
    }
    let done = instance.get_global(&mut store, "done").unwrap().get(&mut store).i32().unwrap();
    assert_eq!(done, 31, "the first protect makes 3 runs, each next one 2 more: 31 make 63, a 32nd would make 65");
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    let handle = creator.handle(&store, &memory).unwrap();
    let report = handle.report().unwrap();
    assert_eq!(report.runs.len(), 63, "{report}");
    handle.validate().unwrap();
    // The guest itself still runs, and so does another instance.
    assert_eq!(instance.get_typed_func::<i32, i32>(&mut store, "load").unwrap().call(&mut store, 0).unwrap(), 0);
    let mut other = Store::new(&engine, MemCtl::new(creator.clone()));
    let instance = linker.instantiate(&mut other, &module).unwrap();
    assert_eq!(instance.get_typed_func::<i32, i32>(&mut other, "load").unwrap().call(&mut other, 65536).unwrap(), 0);
}
