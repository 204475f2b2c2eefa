//! Guest-facing memory control: the `framemap:memctl` imports, their
//! rounding, their traps, and that a rejected call changes nothing.

use framemap::{FrameKind, FrameTag, Protection, SharedBuffer};
use framemap_wasmtime::memctl::Error;
use framemap_wasmtime::memctl::{self, Access, BufferRequest, MemCtl};
use framemap_wasmtime::{FrameMemoryCreator, MemoryHandle, configure};
use std::sync::Arc;
use wasmtime::{Config, Engine, Instance, Linker, Memory, Module, Store, Trap};

const PAGE: u64 = 65536;
const R: i32 = memctl::PROT_READ;
const RW: i32 = memctl::PROT_READ_WRITE;

/// Four wasm pages; every import re-exported under its own name, plus byte
/// loads and stores.
const GUEST: &str = r#"
(module
  (import "framemap:memctl" "page_size" (func $page_size (result i32)))
  (import "framemap:memctl" "map" (func $map (param i32 i32 i32) (result i32)))
  (import "framemap:memctl" "map_buffer" (func $map_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "framemap:memctl" "unmap" (func $unmap (param i32 i32)))
  (import "framemap:memctl" "protect" (func $protect (param i32 i32 i32)))
  (import "framemap:memctl" "discard" (func $discard (param i32 i32)))
  (memory (export "memory") 4 8)
  (data (i32.const 0) "data segment")
  (func (export "page_size") (result i32) (call $page_size))
  (func (export "map") (param i32 i32 i32) (result i32) (call $map (local.get 0) (local.get 1) (local.get 2)))
  (func (export "map_buffer") (param i32 i32 i32 i32 i32) (result i32)
    (call $map_buffer (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "unmap") (param i32 i32) (call $unmap (local.get 0) (local.get 1)))
  (func (export "protect") (param i32 i32 i32) (call $protect (local.get 0) (local.get 1) (local.get 2)))
  (func (export "discard") (param i32 i32) (call $discard (local.get 0) (local.get 1)))
  (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0)))
  (func (export "store") (param i32 i32) (i32.store8 (local.get 0) (local.get 1))))
"#;

struct Guest {
    creator: Arc<FrameMemoryCreator>,
    store: Store<MemCtl>,
    instance: Instance,
    memory: Memory,
}

fn framemap_engine(creator: &Arc<FrameMemoryCreator>) -> Engine {
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    Engine::new(&config).unwrap()
}

fn instantiate(engine: &Engine, creator: &Arc<FrameMemoryCreator>, wat: &str, memctl: MemCtl) -> Guest {
    let mut linker = Linker::new(engine);
    memctl::add_to_linker(&mut linker, |m: &mut MemCtl| m).unwrap();
    let module = Module::new(engine, wat).unwrap();
    let mut store = Store::new(engine, memctl);
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    Guest { creator: creator.clone(), store, instance, memory }
}

fn guest_with(policy: impl memctl::MemCtlPolicy) -> Guest {
    let creator = FrameMemoryCreator::new();
    let engine = framemap_engine(&creator);
    instantiate(&engine, &creator, GUEST, MemCtl::new(creator.clone()).with_policy(policy))
}

fn guest() -> Guest {
    guest_with(memctl::AllowGranted)
}

impl Guest {
    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        params: P,
    ) -> wasmtime::Result<R> {
        let f = self.instance.get_typed_func::<P, R>(&mut self.store, name).unwrap();
        f.call(&mut self.store, params)
    }

    fn map(&mut self, addr: u64, size: u64, prot: i32) -> wasmtime::Result<u64> {
        self.call::<_, i32>("map", (addr as i32, size as i32, prot)).map(|a| a as u32 as u64)
    }

    fn map_buffer(&mut self, addr: u64, size: u64, prot: i32, handle: u32, offset: u64) -> wasmtime::Result<u64> {
        self.call::<_, i32>("map_buffer", (addr as i32, size as i32, prot, handle as i32, offset as i32))
            .map(|a| a as u32 as u64)
    }

    fn unmap(&mut self, addr: u64, size: u64) -> wasmtime::Result<()> {
        self.call("unmap", (addr as i32, size as i32))
    }

    fn protect(&mut self, addr: u64, size: u64, prot: i32) -> wasmtime::Result<()> {
        self.call("protect", (addr as i32, size as i32, prot))
    }

    fn discard(&mut self, addr: u64, size: u64) -> wasmtime::Result<()> {
        self.call("discard", (addr as i32, size as i32))
    }

    fn load(&mut self, addr: u64) -> wasmtime::Result<u8> {
        self.call::<_, i32>("load", addr as i32).map(|v| v as u8)
    }

    fn store(&mut self, addr: u64, value: u8) -> wasmtime::Result<()> {
        self.call("store", (addr as i32, i32::from(value)))
    }

    fn handle(&self) -> MemoryHandle {
        self.creator.handle(&self.store, &self.memory).unwrap()
    }

    /// The frame at byte `addr`.
    fn frame(&self, addr: u64) -> framemap::Frame {
        let page = addr / framemap::host_page_size() as u64;
        let report = self.handle().report().unwrap();
        report.runs.iter().find(|(run, _)| run.contains(page)).map(|(_, f)| *f).unwrap()
    }
}

fn out_of_bounds(error: wasmtime::Error) {
    assert_eq!(error.downcast_ref::<Trap>(), Some(&Trap::MemoryOutOfBounds), "{error:?}");
}

fn memctl_error(error: &wasmtime::Error) -> &Error {
    error.downcast_ref::<Error>().unwrap_or_else(|| panic!("not a memctl trap: {error:?}"))
}

fn patterned(len: u64) -> SharedBuffer {
    let buffer = SharedBuffer::new(len).unwrap();
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
    buffer.write(0, &bytes).unwrap();
    buffer
}

#[test]
fn page_size_is_the_wasm_page_on_this_host() {
    let mut g = guest();
    let unit = g.call::<(), i32>("page_size", ()).unwrap() as u64;
    assert_eq!(unit, PAGE.max(framemap::host_page_size() as u64));
}

#[test]
fn anonymous_pages_read_zero_and_take_writes_after_rounding() {
    let mut g = guest();
    g.store(PAGE + 7, 9).unwrap();
    // Rounded to pages 1 and 2 (the range's last byte is on page 2).
    g.unmap(PAGE + 100, PAGE).unwrap();
    out_of_bounds(g.load(PAGE + 7).unwrap_err());
    out_of_bounds(g.load(3 * PAGE - 1).unwrap_err());
    // An unaligned request maps every page holding a byte of it.
    let start = g.map(PAGE + 0x10, PAGE, RW).unwrap();
    assert_eq!(start, PAGE, "the address is rounded down");
    assert_eq!(g.frame(2 * PAGE).kind(), FrameKind::Zero, "the end is rounded up");
    assert_eq!(g.load(PAGE + 7).unwrap(), 0, "fresh pages read zero");
    g.store(PAGE + 7, 42).unwrap();
    g.store(3 * PAGE - 1, 43).unwrap();
    assert_eq!((g.load(PAGE + 7).unwrap(), g.load(3 * PAGE - 1).unwrap()), (42, 43));
    g.handle().validate().unwrap();
}

#[test]
fn a_granted_buffer_is_shared_both_ways() {
    let mut g = guest();
    let buffer = patterned(2 * PAGE);
    // SAFETY: the test never borrows the memory's bytes (`Memory::data`) while the buffer is written or revoked.
    let handle = unsafe { g.store.data_mut().grant(buffer.clone(), Access::ReadWrite) }.unwrap();
    g.unmap(2 * PAGE, PAGE).unwrap();
    // The second page of the buffer, at wasm page 2.
    assert_eq!(g.map_buffer(2 * PAGE + 3, 1, RW, handle, PAGE).unwrap(), 2 * PAGE);
    let mut host = [0u8; 4];
    buffer.read(PAGE, &mut host).unwrap();
    assert_eq!(g.load(2 * PAGE).unwrap(), host[0], "the guest sees the host's bytes");
    assert_eq!(g.load(2 * PAGE + 3).unwrap(), host[3]);
    g.store(2 * PAGE + 1, 0xee).unwrap();
    buffer.read(PAGE, &mut host).unwrap();
    assert_eq!(host[1], 0xee, "the host sees the guest's write without a copy");
    buffer.write(PAGE + 2, &[0x77]).unwrap();
    assert_eq!(g.load(2 * PAGE + 2).unwrap(), 0x77);
    let frame = g.frame(2 * PAGE);
    assert!(matches!(frame.kind(), FrameKind::Shared { buffer: b, .. } if b == buffer.id()), "{frame}");
    // Unmapping the window leaves the buffer to the host.
    g.unmap(2 * PAGE, PAGE).unwrap();
    out_of_bounds(g.load(2 * PAGE).unwrap_err());
    buffer.read(PAGE, &mut host).unwrap();
    assert_eq!(host[1], 0xee);
    assert_eq!(g.handle().report().unwrap().summary.runs[FrameTag::Shared], 0);
    g.handle().validate().unwrap();
}

#[test]
fn unmapped_pages_trap_and_unmapping_twice_is_allowed() {
    let mut g = guest();
    g.unmap(PAGE, 2 * PAGE).unwrap();
    out_of_bounds(g.load(PAGE).unwrap_err());
    out_of_bounds(g.store(3 * PAGE - 1, 1).unwrap_err());
    assert_eq!(g.load(3 * PAGE).unwrap(), 0, "pages past the range stay");
    g.unmap(PAGE, PAGE).unwrap();
    assert_eq!(g.frame(PAGE), framemap::Frame::UNMAPPED);
    g.handle().validate().unwrap();
}

#[test]
fn read_only_pages_trap_on_writes_only() {
    let mut g = guest();
    g.store(PAGE, 5).unwrap();
    g.protect(PAGE, 1, R).unwrap();
    assert_eq!(g.load(PAGE).unwrap(), 5);
    out_of_bounds(g.store(PAGE, 6).unwrap_err());
    assert_eq!(g.load(PAGE).unwrap(), 5, "the trapped store wrote nothing");
    g.protect(PAGE, 1, memctl::PROT_NONE).unwrap();
    out_of_bounds(g.load(PAGE).unwrap_err());
    assert_eq!(g.frame(PAGE), framemap::Frame::zero(Protection::None), "mapped, with no access");
    g.protect(PAGE, 1, RW).unwrap();
    g.store(PAGE, 6).unwrap();
    assert_eq!(g.load(PAGE).unwrap(), 6);
    g.handle().validate().unwrap();
}

#[test]
fn discard_zeroes_and_an_empty_discard_does_nothing() {
    let mut g = guest();
    g.store(0, 1).unwrap();
    g.store(2 * PAGE + 5, 7).unwrap();
    g.discard(2 * PAGE + 5, 1).unwrap();
    assert_eq!(g.load(2 * PAGE + 5).unwrap(), 0);
    assert_eq!(g.load(0).unwrap(), 1, "other pages keep their contents");
    g.store(2 * PAGE, 3).unwrap();
    g.discard(2 * PAGE, 0).unwrap();
    g.discard(4 * PAGE, 0).unwrap();
    assert_eq!(g.load(2 * PAGE).unwrap(), 3);
    // Unmapped pages stay unmapped.
    g.unmap(3 * PAGE, PAGE).unwrap();
    g.discard(2 * PAGE, 2 * PAGE).unwrap();
    assert_eq!(g.load(2 * PAGE).unwrap(), 0);
    assert_eq!(g.frame(3 * PAGE), framemap::Frame::UNMAPPED);
    g.handle().validate().unwrap();
}

#[test]
fn virtual_pages_trap_until_mapped() {
    let mut g = guest();
    g.handle().make_virtual(&mut g.store, PAGE).unwrap();
    assert_eq!(g.load(0).unwrap(), b'd', "below the virtual part, the data segment stays");
    for addr in [PAGE, 2 * PAGE + 9, 4 * PAGE - 1] {
        out_of_bounds(g.load(addr).unwrap_err());
    }
    assert_eq!(g.map(2 * PAGE, 8, RW).unwrap(), 2 * PAGE);
    g.store(2 * PAGE + 9, 1).unwrap();
    out_of_bounds(g.load(PAGE).unwrap_err());
    let report = g.handle().report().unwrap();
    assert_eq!(report.summary.bytes[FrameTag::Zero], 2 * PAGE);
    // Bad arguments are specific errors on the host side too.
    let past = g.handle().make_virtual(&mut g.store, 5 * PAGE).unwrap_err();
    assert!(matches!(past, framemap_wasmtime::Error::OutOfBounds { .. }), "{past}");
    let misaligned = g.handle().make_virtual(&mut g.store, 3).unwrap_err();
    let misaligned_source =
        matches!(&misaligned, framemap_wasmtime::Error::Window { source: framemap::Error::Misaligned { .. }, .. });
    assert!(misaligned_source, "{misaligned}");
    assert_eq!(g.handle().report().unwrap(), report, "refused host calls change nothing");
    g.handle().make_virtual(&mut g.store, 4 * PAGE).unwrap();
    g.handle().validate().unwrap();
}

/// One rejected guest call: what it is, and the error it must trap with.
struct Case {
    what: &'static str,
    call: fn(&mut Guest, &Handles) -> wasmtime::Result<()>,
    expect: fn(&Error) -> bool,
}

/// The handles the rejection cases use.
struct Handles {
    read_only: u32,
    read_write: u32,
    taken_back: u32,
    revoked: u32,
    denied: u32,
}

fn cases() -> Vec<Case> {
    use Error as E;
    macro_rules! case {
        ($what:expr, |$g:ident, $h:ident| $call:expr, $pat:pat) => {
            Case {
                what: $what,
                call: |$g: &mut Guest, $h: &Handles| {
                    let _ = $h;
                    $call.map(drop)
                },
                expect: |e| matches!(e, $pat),
            }
        };
    }
    vec![
        case!("map of size 0", |g, h| g.map(3 * PAGE, 0, RW), E::EmptyRange { .. }),
        case!("unmap of size 0", |g, h| g.unmap(0, 0), E::EmptyRange { .. }),
        case!("protect of size 0", |g, h| g.protect(0, 0, R), E::EmptyRange { .. }),
        case!("map_buffer of size 0", |g, h| g.map_buffer(3 * PAGE, 0, R, h.read_only, 0), E::EmptyRange { .. }),
        case!("overflowing map", |g, h| g.map(0xffff_0000, 0x2_0000, RW), E::Overflow { .. }),
        case!("overflowing unmap", |g, h| g.unmap(0xffff_fff0, 0x20), E::Overflow { .. }),
        case!("overflowing discard", |g, h| g.discard(2, 0xffff_ffff), E::Overflow { .. }),
        case!("map past the size", |g, h| g.map(4 * PAGE, 1, RW), E::OutOfBounds { start: 0x40000, end: 0x50000, .. }),
        case!("map whose rounding passes the size", |g, h| g.map(4 * PAGE - 1, 2, RW), E::OutOfBounds { .. }),
        case!("unmap past the size", |g, h| g.unmap(3 * PAGE, PAGE + 1), E::OutOfBounds { .. }),
        case!("protect past the size", |g, h| g.protect(5 * PAGE, 1, R), E::OutOfBounds { .. }),
        case!("discard past the size", |g, h| g.discard(4 * PAGE, 1), E::OutOfBounds { .. }),
        case!("empty discard past the size", |g, h| g.discard(4 * PAGE + 1, 0), E::OutOfBounds { .. }),
        case!("map over mapped pages", |g, h| g.map(0, PAGE, RW), E::AlreadyMapped { start: 0, .. }),
        case!(
            "map overlapping the window's mapped neighbour",
            |g, h| g.map(PAGE, 2 * PAGE, RW),
            E::AlreadyMapped { start: 0x20000, end: 0x30000 }
        ),
        case!(
            "map_buffer over mapped pages",
            |g, h| g.map_buffer(3 * PAGE, PAGE, R, h.read_only, 0),
            E::AlreadyMapped { .. }
        ),
        case!("write-only protection", |g, h| g.map(2 * PAGE, 1, 2), E::BadProtection { flags: 2 }),
        case!("unknown protection bits", |g, h| g.protect(0, 1, 7), E::BadProtection { flags: 7 }),
        case!("protect unmapped pages", |g, h| g.protect(PAGE, PAGE, R), E::NotMapped { start: 0x10000, .. }),
        case!("protect partly unmapped pages", |g, h| g.protect(0, 2 * PAGE, R), E::NotMapped { .. }),
        case!("discard shared pages", |g, h| g.discard(2 * PAGE, PAGE), E::SharedFrames { start: 0x20000, .. }),
        case!(
            "raise a read-only window to read-write",
            |g, h| g.protect(2 * PAGE, PAGE, RW),
            E::ProtectDenied { prot: Protection::ReadWrite, .. }
        ),
        case!("a handle never granted", |g, h| g.map_buffer(PAGE, PAGE, R, 999, 0), E::NotGranted { handle: 999 }),
        case!("a negative handle", |g, h| g.map_buffer(PAGE, PAGE, R, u32::MAX, 0), E::NotGranted { .. }),
        case!("handle 0", |g, h| g.map_buffer(PAGE, PAGE, R, 0, 0), E::NotGranted { handle: 0 }),
        case!(
            "a handle the host took back",
            |g, h| g.map_buffer(PAGE, PAGE, R, h.taken_back, 0),
            E::HandleRevoked { .. }
        ),
        case!("a revoked buffer", |g, h| g.map_buffer(PAGE, PAGE, R, h.revoked, 0), E::BufferRevoked { .. }),
        case!(
            "a read-only grant mapped read-write",
            |g, h| g.map_buffer(PAGE, PAGE, RW, h.read_only, 0),
            E::AccessDenied { access: Access::Read, prot: Protection::ReadWrite, .. }
        ),
        case!(
            "past the end of the buffer",
            |g, h| g.map_buffer(PAGE, PAGE, R, h.read_write, 2 * PAGE),
            E::PastBuffer { offset: 0x20000, len: 0x10000, buffer_len: 0x20000, .. }
        ),
        case!(
            "a window whose rounding passes the end of the buffer",
            |g, h| g.map_buffer(PAGE, PAGE + 1, R, h.read_write, PAGE),
            E::PastBuffer { len: 0x20000, .. }
        ),
        case!(
            "a misaligned buffer offset",
            |g, h| g.map_buffer(PAGE, PAGE, R, h.read_write, 4096),
            E::MisalignedOffset { offset: 4096, .. }
        ),
        case!("a buffer the policy refuses", |g, h| g.map_buffer(PAGE, PAGE, R, h.denied, 0), E::PolicyDenied { .. }),
    ]
}

#[test]
fn rejected_calls_trap_with_their_rule_and_change_nothing() {
    // The policy refuses every buffer longer than two wasm pages.
    let mut g = guest_with(|r: &BufferRequest<'_>| r.buffer.len() <= 2 * PAGE);
    let read_only = patterned(PAGE);
    let memctl = g.store.data_mut();
    // SAFETY: the test never borrows the memory's bytes (`Memory::data`) while the buffer is written or revoked.
    let handles = unsafe {
        Handles {
            read_only: memctl.grant(read_only.clone(), Access::Read).unwrap(),
            read_write: memctl.grant(patterned(2 * PAGE), Access::ReadWrite).unwrap(),
            taken_back: memctl.grant(patterned(PAGE), Access::ReadWrite).unwrap(),
            revoked: memctl.grant(patterned(PAGE), Access::ReadWrite).unwrap(),
            denied: memctl.grant(patterned(4 * PAGE), Access::ReadWrite).unwrap(),
        }
    };
    assert!(memctl.revoke_handle(handles.taken_back).is_some());
    assert!(memctl.revoke_handle(handles.taken_back).is_none());
    memctl.granted(handles.revoked).unwrap().0.revoke().unwrap();
    // Layout: page 0 mapped (data), page 1 unmapped, page 2 a read-only
    // window, page 3 mapped.
    g.unmap(PAGE, 2 * PAGE).unwrap();
    g.map_buffer(2 * PAGE, PAGE, R, handles.read_only, 0).unwrap();
    g.store(3 * PAGE, 1).unwrap();

    let before = g.handle().report().unwrap();
    let cases = cases();
    for case in &cases {
        let error = (case.call)(&mut g, &handles).expect_err(case.what);
        let reason = memctl_error(&error);
        assert!((case.expect)(reason), "{}: wrong error {reason:?}", case.what);
        assert_eq!(g.handle().report().unwrap(), before, "{}: a rejected call changed the memory", case.what);
        g.handle().validate().unwrap();
    }
    println!("{} rejected calls, each trapped with its rule and left the frame table as it was", cases.len());
    // The store and the instance stay usable after the traps.
    assert_eq!(g.load(3 * PAGE).unwrap(), 1);
    assert_eq!(g.load(0).unwrap(), b'd');
    // A read-write grant of the same buffer lets the guest raise its window.
    // SAFETY: the test never borrows the memory's bytes (`Memory::data`) while the buffer is written or revoked.
    let rw = unsafe { g.store.data_mut().grant(read_only.clone(), Access::ReadWrite) }.unwrap();
    g.protect(2 * PAGE, PAGE, RW).unwrap();
    g.store(2 * PAGE, 0x55).unwrap();
    let mut byte = [0u8];
    read_only.read(0, &mut byte).unwrap();
    assert_eq!(byte, [0x55]);
    assert!(g.store.data_mut().revoke_handle(rw).is_some());
    // Lowering needs no grant.
    g.protect(2 * PAGE, PAGE, R).unwrap();
}

#[test]
fn revoking_a_mapped_buffer_makes_its_window_trap() {
    let mut g = guest();
    let buffer = patterned(PAGE);
    // SAFETY: the test never borrows the memory's bytes (`Memory::data`) while the buffer is written or revoked.
    let handle = unsafe { g.store.data_mut().grant(buffer.clone(), Access::Read) }.unwrap();
    g.unmap(PAGE, PAGE).unwrap();
    g.map_buffer(PAGE, PAGE, R, handle, 0).unwrap();
    assert_eq!(g.load(PAGE).unwrap(), 1);
    buffer.revoke().unwrap();
    out_of_bounds(g.load(PAGE).unwrap_err());
    let error = g.map_buffer(PAGE, PAGE, R, handle, 0).unwrap_err();
    assert!(matches!(memctl_error(&error), Error::BufferRevoked { .. }), "{error:?}");
    // The guest can put its own pages back.
    g.map(PAGE, PAGE, RW).unwrap();
    assert_eq!(g.load(PAGE).unwrap(), 0);
    g.handle().validate().unwrap();
}

#[test]
fn handles_are_positive_and_never_reused() {
    let creator = FrameMemoryCreator::new();
    let mut memctl = MemCtl::new(creator);
    let buffer = SharedBuffer::new(PAGE).unwrap();
    // SAFETY: no memory exists: the grants are never mapped.
    let a = unsafe { memctl.grant(buffer.clone(), Access::Read) }.unwrap();
    memctl.revoke_handle(a).unwrap();
    // SAFETY: as above.
    let b = unsafe { memctl.grant(buffer.clone(), Access::ReadWrite) }.unwrap();
    assert!(a > 0 && b > a, "{a} {b}");
    assert_eq!(memctl.granted(b).map(|(buf, access)| (buf.id(), access)), Some((buffer.id(), Access::ReadWrite)));
    assert!(memctl.granted(a).is_none());
    assert_eq!(memctl.memory_export(), "memory");
}

#[test]
fn memories_framemap_did_not_make_trap() {
    // wasmtime's own memories: the MemCtl's creator does not know them.
    let creator = FrameMemoryCreator::new();
    let engine = Engine::default();
    let mut g = instantiate(&engine, &creator, GUEST, MemCtl::new(creator.clone()));
    let error = g.unmap(0, 1).unwrap_err();
    assert!(matches!(memctl_error(&error), Error::Memory(framemap_wasmtime::Error::NotFramemap { .. })), "{error:?}");
    assert_eq!(g.load(0).unwrap(), b'd', "nothing changed");

    // A framemap memory, but the MemCtl looks for another export name.
    let engine = framemap_engine(&creator);
    let mut g = instantiate(&engine, &creator, GUEST, MemCtl::new(creator.clone()).with_memory_export("heap"));
    let error = g.unmap(0, 1).unwrap_err();
    assert!(matches!(memctl_error(&error), Error::NoMemory { export } if export == "heap"), "{error:?}");
}

#[test]
fn the_memory_export_name_is_configurable() {
    let creator = FrameMemoryCreator::new();
    let engine = framemap_engine(&creator);
    let wat = GUEST.replace(r#"(export "memory")"#, r#"(export "heap")"#);
    let memctl = MemCtl::new(creator.clone()).with_memory_export("heap");
    let mut linker = Linker::new(&engine);
    memctl::add_to_linker(&mut linker, |m: &mut MemCtl| m).unwrap();
    let mut store = Store::new(&engine, memctl);
    let instance = linker.instantiate(&mut store, &Module::new(&engine, wat).unwrap()).unwrap();
    let unmap = instance.get_typed_func::<(i32, i32), ()>(&mut store, "unmap").unwrap();
    unmap.call(&mut store, (PAGE as i32, 1)).unwrap();
    let load = instance.get_typed_func::<i32, i32>(&mut store, "load").unwrap();
    out_of_bounds(load.call(&mut store, PAGE as i32).unwrap_err());
}

#[test]
fn shared_memories_are_controlled_too() {
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    config.wasm_threads(true).shared_memory(true);
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config).unwrap();
    let wat = GUEST.replace("(memory (export \"memory\") 4 8)", "(memory (export \"memory\") 4 8 shared)");
    let mut linker = Linker::new(&engine);
    memctl::add_to_linker(&mut linker, |m: &mut MemCtl| m).unwrap();
    let mut store = Store::new(&engine, MemCtl::new(creator.clone()));
    let instance = linker.instantiate(&mut store, &Module::new(&engine, wat).unwrap()).unwrap();
    let shared = instance.get_shared_memory(&mut store, "memory").unwrap();
    let unmap = instance.get_typed_func::<(i32, i32), ()>(&mut store, "unmap").unwrap();
    let map = instance.get_typed_func::<(i32, i32, i32), i32>(&mut store, "map").unwrap();
    let load = instance.get_typed_func::<i32, i32>(&mut store, "load").unwrap();
    unmap.call(&mut store, (PAGE as i32, PAGE as i32)).unwrap();
    out_of_bounds(load.call(&mut store, PAGE as i32).unwrap_err());
    let error = map.call(&mut store, (0, 1, RW)).unwrap_err();
    assert!(matches!(memctl_error(&error), Error::AlreadyMapped { .. }), "{error:?}");
    assert_eq!(map.call(&mut store, (PAGE as i32, 1, R)).unwrap(), PAGE as i32);
    assert_eq!(load.call(&mut store, PAGE as i32).unwrap(), 0);
    creator.handle_shared(&shared).unwrap().validate().unwrap();
}

#[test]
fn memctl_can_live_in_any_store() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<MemCtl>();
    send_sync::<Error>();
}
