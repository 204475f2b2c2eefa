//! A hostile guest driving guest memory control: sequences of `map`,
//! `map_buffer`, `unmap`, `protect`, `discard` calls made *from wasm code*
//! (the `framemap:memctl` imports), interleaved with what wasmtime does to
//! guest memory outside wasm code (`memory.fill`, `memory.copy`,
//! `memory.init` libcalls, host reads through `Memory::data`), wasm loads and
//! stores, and host grants and revocations of buffers.
//!
//! The oracle is the one a host needs: the process survives every step (a
//! crash is a finding), every call ends in a result or a trap, the memory's
//! frame table validates against the kernel after each step (guards folded
//! in), a poisoned memory stays poisoned and refuses memory control, and no
//! byte reaches a buffer after its revocation returned.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use framemap::SharedBuffer;
use framemap_wasmtime::memctl::{self, Access, MemCtl};
use framemap_wasmtime::{Error, FrameMemoryCreator};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use wasmtime::{Config, Engine, Linker, Module, Store};

const PAGES: u32 = 16;
const PAGE: u32 = 65536;

const GUEST: &str = r#"
(module
  (import "framemap:memctl" "map" (func $map (param i32 i32 i32) (result i32)))
  (import "framemap:memctl" "map_buffer" (func $map_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "framemap:memctl" "unmap" (func $unmap (param i32 i32)))
  (import "framemap:memctl" "protect" (func $protect (param i32 i32 i32)))
  (import "framemap:memctl" "discard" (func $discard (param i32 i32)))
  (memory (export "memory") 16)
  (data $bytes "passive segment bytes, 32 long!!")
  (func (export "map") (param i32 i32 i32) (drop (call $map (local.get 0) (local.get 1) (local.get 2))))
  (func (export "map_buffer") (param i32 i32 i32 i32 i32)
    (drop (call $map_buffer (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4))))
  (func (export "unmap") (param i32 i32) (call $unmap (local.get 0) (local.get 1)))
  (func (export "protect") (param i32 i32 i32) (call $protect (local.get 0) (local.get 1) (local.get 2)))
  (func (export "discard") (param i32 i32) (call $discard (local.get 0) (local.get 1)))
  (func (export "fill") (param i32 i32 i32) (memory.fill (local.get 0) (local.get 2) (local.get 1)))
  (func (export "copy") (param i32 i32 i32) (memory.copy (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init") (param i32 i32) (memory.init $bytes (local.get 0) (i32.const 0) (local.get 1)))
  (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0)))
  (func (export "store") (param i32 i32) (i32.store8 (local.get 0) (local.get 1))))
"#;

#[derive(Arbitrary, Debug)]
enum Op {
    Map { page: u8, pages: u8, prot: u8 },
    MapBuffer { page: u8, pages: u8, prot: u8, handle: u8, offset: u8 },
    Unmap { page: u8, pages: u8 },
    Protect { page: u8, pages: u8, prot: u8 },
    Discard { page: u8, pages: u8 },
    Fill { at: u32, len: u16, byte: u8 },
    Copy { to: u32, from: u32, len: u16 },
    Init { at: u32, len: u8 },
    Load { at: u32 },
    Store { at: u32, byte: u8 },
    HostRead { at: u32, len: u16 },
    Grant { pages: u8, read_only: bool },
    Revoke { handle: u8 },
}

/// A page count of the memory from a fuzz byte: mostly in bounds, sometimes
/// just past them.
fn page_of(b: u8) -> u32 {
    u32::from(b) % (PAGES + 2)
}

fn prot_of(b: u8) -> i32 {
    match b % 5 {
        0 => memctl::PROT_NONE,
        1 => memctl::PROT_READ,
        2 | 3 => memctl::PROT_READ_WRITE,
        _ => i32::from(b), // mostly invalid
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(ops) = u.arbitrary::<Vec<Op>>() else { return };
    // One creator, engine and module for every input: memories are
    // recycled between inputs (a poisoned one never is).
    static SETUP: OnceLock<(Arc<FrameMemoryCreator>, Engine, Linker<MemCtl>, Module)> = OnceLock::new();
    let (creator, engine, linker, module) = SETUP.get_or_init(|| {
        let creator = FrameMemoryCreator::new();
        let engine = framemap_wasmtime::engine(&mut Config::new(), creator.clone()).expect("a framemap engine");
        let mut linker: Linker<MemCtl> = Linker::new(&engine);
        memctl::add_to_linker(&mut linker, |m: &mut MemCtl| m).unwrap();
        let module = Module::new(&engine, GUEST).unwrap();
        (creator, engine, linker, module)
    });
    let mut store = Store::new(engine, MemCtl::new(creator.clone()));
    let instance = linker.instantiate(&mut store, module).unwrap();
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    let handle = creator.handle(&store, &memory).unwrap();
    // Granted buffers: their handle, the buffer, a descriptor of its file
    // (readable after revocation), and the file's bytes when revoke returned.
    let mut buffers: Vec<(u32, SharedBuffer, std::fs::File, Option<Vec<u8>>)> = Vec::new();
    let mut poisoned = false;
    for (step, op) in ops.into_iter().take(64).enumerate() {
        if std::env::var_os("FRAMEMAP_FUZZ_TRACE").is_some() {
            eprintln!("step {step}: {op:?}");
        }
        let result: wasmtime::Result<()> = match op {
            Op::Map { page, pages, prot } => instance
                .get_typed_func::<(i32, i32, i32), ()>(&mut store, "map")
                .unwrap()
                .call(&mut store, ((page_of(page) * PAGE) as i32, (page_of(pages) * PAGE) as i32, prot_of(prot))),
            Op::MapBuffer { page, pages, prot, handle: h, offset } => {
                let handle = buffers.get(usize::from(h) % buffers.len().max(1)).map_or(99, |b| b.0);
                instance.get_typed_func::<(i32, i32, i32, i32, i32), ()>(&mut store, "map_buffer").unwrap().call(
                    &mut store,
                    (
                        (page_of(page) * PAGE) as i32,
                        (page_of(pages) * PAGE) as i32,
                        prot_of(prot),
                        handle as i32,
                        (u32::from(offset % 4) * PAGE) as i32,
                    ),
                )
            }
            Op::Unmap { page, pages } => instance
                .get_typed_func::<(i32, i32), ()>(&mut store, "unmap")
                .unwrap()
                .call(&mut store, ((page_of(page) * PAGE) as i32, (page_of(pages) * PAGE) as i32)),
            Op::Protect { page, pages, prot } => instance
                .get_typed_func::<(i32, i32, i32), ()>(&mut store, "protect")
                .unwrap()
                .call(&mut store, ((page_of(page) * PAGE) as i32, (page_of(pages) * PAGE) as i32, prot_of(prot))),
            Op::Discard { page, pages } => instance
                .get_typed_func::<(i32, i32), ()>(&mut store, "discard")
                .unwrap()
                .call(&mut store, ((page_of(page) * PAGE) as i32, (page_of(pages) * PAGE) as i32)),
            Op::Fill { at, len, byte } => instance
                .get_typed_func::<(i32, i32, i32), ()>(&mut store, "fill")
                .unwrap()
                .call(&mut store, ((at % (PAGES * PAGE + 8)) as i32, i32::from(len), i32::from(byte))),
            Op::Copy { to, from, len } => instance
                .get_typed_func::<(i32, i32, i32), ()>(&mut store, "copy")
                .unwrap()
                .call(&mut store, ((to % (PAGES * PAGE)) as i32, (from % (PAGES * PAGE)) as i32, i32::from(len))),
            Op::Init { at, len } => instance
                .get_typed_func::<(i32, i32), ()>(&mut store, "init")
                .unwrap()
                .call(&mut store, ((at % (PAGES * PAGE)) as i32, i32::from(len % 33))),
            Op::Load { at } => instance
                .get_typed_func::<i32, i32>(&mut store, "load")
                .unwrap()
                .call(&mut store, (at % (PAGES * PAGE + 8)) as i32)
                .map(drop),
            Op::Store { at, byte } => instance
                .get_typed_func::<(i32, i32), ()>(&mut store, "store")
                .unwrap()
                .call(&mut store, ((at % (PAGES * PAGE + 8)) as i32, i32::from(byte))),
            Op::HostRead { at, len } => {
                // What a WASI call does: read guest memory from host code.
                let data = memory.data(&store);
                let at = (at as usize) % data.len();
                let end = (at + usize::from(len)).min(data.len());
                std::hint::black_box(data[at..end].iter().fold(0u8, |a, &b| a ^ b));
                Ok(())
            }
            Op::Grant { pages, read_only } => {
                let len = u64::from(pages % 4 + 1) * u64::from(PAGE);
                let file = tempfile();
                file.set_len(len).unwrap();
                let ours = file.try_clone().unwrap();
                let buffer = SharedBuffer::from_fd(file, len).unwrap();
                let access = if read_only { Access::Read } else { Access::ReadWrite };
                // SAFETY: the buffer changes only by guest stores and by
                // `Revoke` below, never while `HostRead`'s borrow of the
                // memory's bytes lives (each step ends it).
                let h = unsafe { store.data_mut().grant(buffer.clone(), access) }.unwrap();
                buffers.push((h, buffer, ours, None));
                Ok(())
            }
            Op::Revoke { handle: h } => {
                let count = buffers.len().max(1);
                if let Some(entry) = buffers.get_mut(usize::from(h) % count)
                    && entry.3.is_none()
                {
                    // No kernel failure is injected here: revocation succeeds.
                    entry.1.revoke().expect("revocation");
                    entry.3 = Some(contents(&entry.2));
                }
                Ok(())
            }
        };
        // Every call ends in a result or a trap; a trap from memory control
        // carries framemap's error.
        if let Err(e) = &result
            && e.downcast_ref::<wasmtime::Trap>().is_none()
            && e.downcast_ref::<memctl::Error>().is_none()
        {
            panic!("step {step}: neither a trap nor a framemap error: {e:?}");
        }
        handle.validate().unwrap_or_else(|e| panic!("step {step}: the table lies: {e}"));
        let pages = handle.poisoned_pages().unwrap();
        assert!(!poisoned || pages > 0, "step {step}: a poisoned memory became unpoisoned");
        poisoned = pages > 0;
        if poisoned {
            let trap = instance
                .get_typed_func::<(i32, i32), ()>(&mut store, "discard")
                .unwrap()
                .call(&mut store, (0, PAGE as i32))
                .expect_err("memory control on a poisoned memory traps");
            let reason = trap.downcast_ref::<memctl::Error>();
            assert!(matches!(reason, Some(memctl::Error::Memory(Error::Poisoned { .. }))), "step {step}: {trap:?}");
        }
        // No byte reaches a buffer after its revocation returned.
        for (h, buffer, file, at_revocation) in &buffers {
            if let Some(bytes) = at_revocation {
                assert!(buffer.is_revoked());
                assert!(contents(file) == *bytes, "step {step}: buffer {h} changed after its revocation");
            }
        }
    }
});

fn contents(file: &std::fs::File) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0; file.metadata().unwrap().len() as usize];
    file.read_exact_at(&mut bytes, 0).unwrap();
    bytes
}

/// An unlinked file in the temporary directory.
fn tempfile() -> std::fs::File {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("framemap-fuzz-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let path = std::env::temp_dir().join(name);
    let file = std::fs::File::options().read(true).write(true).create_new(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}
