//! The hole guard: host code that touches a page framemap made inaccessible
//! inside a memory's size does not kill the process (ARCHITECTURE.md,
//! invariant 5 and "the hole guard").
//!
//! framemap leaves pages below a memory's size unmapped (`unmap`, virtual
//! mode, a revoked or truncated window) or protected (`protect`). Wasm code
//! touching them faults at a wasm pc and wasmtime turns the SIGSEGV into a
//! trap. But wasmtime also touches guest memory from Rust code (bulk-memory
//! and atomics libcalls, WASI host calls, `Memory::data`), where a fault is
//! not a trap site: wasmtime passes it on, and without this guard the
//! process dies.
//!
//! Invariant kept: **a SIGSEGV raised by host code (a pc inside a loaded ELF
//! object) at an address inside a registered memory's accessible pages
//! never kills the process**. The handler replaces the faulting page — that
//! page only — with a private read-write zero page (one
//! `mmap(MAP_FIXED)`), counts it against the memory (*sunk* pages), and
//! returns, so the access completes: reads see zeros, writes land in that
//! private page. The memory is thereby *poisoned*;
//! [`crate::LinearSpace::reconcile`] later makes its frame table say what the
//! kernel now has (those pages become read-write `Zero` frames). Nothing a
//! sunk page held is kept, and nothing written to it reaches any file or
//! buffer: a revoked buffer's window, once replaced, is never written again.
//!
//! Every other SIGSEGV is passed on unchanged to the action installed
//! before ours ([`super::chain`]): faults at a pc outside every loaded
//! object (wasm code: wasmtime traps them, whichever of the two handlers
//! runs first), and faults outside registered memories (a stack overflow
//! for Rust's handler, a real bug for the default action).
//!
//! Telling wasm code from host code: `_dl_find_object` (glibc 2.35+,
//! lock-free and async-signal-safe, written for unwinders) finds the loaded
//! object holding the pc. wasmtime's compiled code lives in anonymous or
//! file mappings it makes itself, never in an object the dynamic loader
//! knows, so "found" means host code.
//!
//! Races: each fault is first retried once (a thread-local remembers the
//! page), so a page that a concurrent change has just made accessible is
//! not replaced; only a fault that recurs on the same page is acted on.
//! The registry follows the SIGBUS guard's pattern: entries are atomics,
//! writers serialise on a mutex, the handler takes no lock and allocates
//! nothing, an entry being replaced by the handler (`SINKING`) is waited
//! out by a writer releasing it, and a generation in each entry's state
//! word tells a reused entry apart. The registry grows in chunks that are
//! never freed, up to [`CAPACITY`] memories per process; the handler scans
//! the used part linearly, which it does only for host-code faults.

use super::chain::{Chain, SavedErrno};
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence};

const CHUNK: usize = 1024;
const CHUNKS: usize = 1024;
/// How many memories can be guarded at once in the process.
pub(crate) const CAPACITY: usize = CHUNK * CHUNKS;

// Entry state word: generation << 8 | state.
const FREE: u64 = 0;
const ACTIVE: u64 = 1;
/// The handler is replacing a page of the memory.
const SINKING: u64 = 2;
/// A writer is releasing the entry.
const LOCKED: u64 = 3;
const STATE_MASK: u64 = 0xff;

fn state(word: u64) -> u64 {
    word & STATE_MASK
}

fn with_state(word: u64, state: u64) -> u64 {
    (word & !STATE_MASK) | state
}

struct Entry {
    word: AtomicU64,
    /// The memory's first byte.
    start: AtomicUsize,
    /// The end of its accessible pages: the handler acts in `[start, end)`.
    end: AtomicUsize,
    /// Pages the handler replaced.
    sunk: AtomicU64,
}

impl Entry {
    const fn new() -> Entry {
        Entry { word: AtomicU64::new(0), start: AtomicUsize::new(0), end: AtomicUsize::new(0), sunk: AtomicU64::new(0) }
    }
}

/// Chunks of entries, allocated on demand and never freed (the handler may
/// be reading one at any time).
static CHUNK_TABLE: [AtomicPtr<Entry>; CHUNKS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS];
/// Entries `[HIGH, CAPACITY)` have never been used: scans stop there.
static HIGH: AtomicUsize = AtomicUsize::new(0);

/// Writer-side bookkeeping (never touched by the handler).
struct Writers {
    /// Released entries, reused first.
    free: Vec<usize>,
}

static WRITERS: Mutex<Writers> = Mutex::new(Writers { free: Vec::new() });

fn writers() -> std::sync::MutexGuard<'static, Writers> {
    WRITERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Entry `index`, if its chunk exists.
fn entry(index: usize) -> Option<&'static Entry> {
    let chunk = CHUNK_TABLE.get(index / CHUNK)?.load(Ordering::Acquire);
    // SAFETY: a non-null chunk pointer is a leaked `[Entry; CHUNK]` that is
    // never freed, published with a release store after it was made.
    (!chunk.is_null()).then(|| unsafe { &*chunk.add(index % CHUNK) })
}

static CHAIN: Chain = Chain::new(libc::SIGSEGV);
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The host page size, for the handler (set by `install`).
static PAGE: AtomicUsize = AtomicUsize::new(4096);

thread_local! {
    /// The page of this thread's last fault not acted on yet (every fault
    /// is retried once). A const-initialised `Cell` without `Drop`: plain
    /// thread-local storage, no lazy initialisation in the handler.
    static LAST_FAULT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// A registered memory: entry index and the generation it was registered at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuardId {
    index: usize,
    generation: u64,
}

/// Installs the SIGSEGV handler, once per process; the previous action is
/// saved first and chained to.
pub(crate) fn install() -> io::Result<()> {
    if INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    PAGE.store(super::mman::page_size(), Ordering::Relaxed);
    CHAIN.install(on_sigsegv)?;
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

/// Whether the handler is installed.
pub(crate) fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Registers the memory starting at `start`, whose accessible pages end at
/// `end`. `None` if the registry is full (or a chunk could not be made).
pub(crate) fn register(start: usize, end: usize) -> Option<GuardId> {
    let mut w = writers();
    let index = match w.free.pop() {
        Some(index) => index,
        None => {
            let index = HIGH.load(Ordering::Relaxed);
            if index >= CAPACITY {
                return None;
            }
            let cell = &CHUNK_TABLE[index / CHUNK];
            if cell.load(Ordering::Acquire).is_null() {
                let chunk: Box<[Entry]> = (0..CHUNK).map(|_| Entry::new()).collect();
                cell.store(Box::leak(chunk).as_mut_ptr(), Ordering::Release);
            }
            index
        }
    };
    let e = entry(index)?;
    e.start.store(start, Ordering::Relaxed);
    e.end.store(end, Ordering::Relaxed);
    e.sunk.store(0, Ordering::Relaxed);
    let generation = (e.word.load(Ordering::Relaxed) >> 8).wrapping_add(1);
    // Widen the handler's scan before publishing the entry.
    HIGH.fetch_max(index + 1, Ordering::Release);
    e.word.store((generation << 8) | ACTIVE, Ordering::Release);
    Some(GuardId { index, generation })
}

/// Moves the end of the memory's accessible pages. Shrink it *before*
/// making pages inaccessible for good (the handler would otherwise replace
/// them), grow it after mapping new pages.
pub(crate) fn set_end(id: GuardId, end: usize) {
    if let Some(e) = entry(id.index)
        && e.word.load(Ordering::Acquire) >> 8 == id.generation
    {
        e.end.store(end, Ordering::Release);
    }
}

/// Pages the handler replaced in the memory so far.
pub(crate) fn sunk_pages(id: GuardId) -> u64 {
    match entry(id.index) {
        Some(e) if e.word.load(Ordering::Acquire) >> 8 == id.generation => e.sunk.load(Ordering::Acquire),
        _ => 0,
    }
}

/// Releases a registered memory, waiting out a handler replacing one of its
/// pages. Call it *before* unmapping the memory's reservation.
pub(crate) fn unregister(id: GuardId) {
    let mut w = writers();
    let Some(e) = entry(id.index) else { return };
    loop {
        let word = e.word.load(Ordering::Acquire);
        if word >> 8 != id.generation || state(word) == FREE {
            return;
        }
        if state(word) != ACTIVE {
            std::thread::yield_now();
            continue;
        }
        if e.word.compare_exchange(word, with_state(word, LOCKED), Ordering::AcqRel, Ordering::Acquire).is_ok() {
            e.word.store(with_state(word, FREE), Ordering::Release);
            w.free.push(id.index);
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// The handler.

unsafe extern "C" fn on_sigsegv(signum: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let _errno = SavedErrno::save();
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo.
    let addr = unsafe { (*info).si_addr() as usize };
    // SAFETY: and a valid ucontext.
    let pc = unsafe { fault_pc(context) };
    if is_host_code(pc) && sink(addr) {
        return;
    }
    // SAFETY: forwarding the arguments the kernel gave us.
    unsafe { CHAIN.forward(signum, info, context) }
}

/// The faulting instruction's address.
///
/// # Safety
/// `context` is the `ucontext_t` the kernel passed the handler.
unsafe fn fault_pc(context: *mut c_void) -> usize {
    let context = context.cast::<libc::ucontext_t>();
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller passes the kernel's ucontext.
    return unsafe { (*context).uc_mcontext.gregs[libc::REG_RIP as usize] as usize };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the caller passes the kernel's ucontext.
    return unsafe { (*context).uc_mcontext.pc as usize };
}

unsafe extern "C" {
    /// glibc 2.35+: fills `result` (a `struct dl_find_object`, 96 bytes on
    /// 64-bit targets) if `address` lies in a loaded object, returns 0.
    fn _dl_find_object(address: *mut c_void, result: *mut c_void) -> c_int;
}

/// Whether `pc` lies in an object the dynamic loader loaded (the
/// executable, libc, any shared library): host code, not wasm code.
fn is_host_code(pc: usize) -> bool {
    // Larger than `struct dl_find_object` on every glibc target.
    let mut result = [0u64; 32];
    // SAFETY: `_dl_find_object` is async-signal-safe and writes at most
    // `sizeof(struct dl_find_object)` bytes into `result`.
    unsafe { _dl_find_object(pc as *mut c_void, result.as_mut_ptr().cast()) == 0 }
}

/// Replaces the page holding `addr` if a registered memory's accessible
/// pages hold it and the fault recurred there (see the module docs).
/// Returns whether the access should simply be retried.
fn sink(addr: usize) -> bool {
    let page = PAGE.load(Ordering::Relaxed);
    let page_addr = addr & !(page - 1);
    'scan: loop {
        let high = HIGH.load(Ordering::Acquire);
        for index in 0..high {
            let Some(e) = entry(index) else { continue };
            let word = e.word.load(Ordering::Acquire);
            if state(word) == FREE {
                continue;
            }
            let (start, end) = (e.start.load(Ordering::Relaxed), e.end.load(Ordering::Acquire));
            fence(Ordering::Acquire);
            if e.word.load(Ordering::Relaxed) != word {
                continue 'scan; // reused or changing under us: look again
            }
            if addr < start || addr >= end {
                continue;
            }
            if state(word) != ACTIVE {
                // Another thread is replacing a page or releasing the entry.
                while e.word.load(Ordering::Acquire) == word {
                    // SAFETY: sched_yield has no preconditions and is
                    // async-signal-safe.
                    unsafe { libc::sched_yield() };
                }
                continue 'scan;
            }
            if LAST_FAULT.with(|last| last.replace(page_addr)) != page_addr {
                return true; // first fault on this page: retry once
            }
            if e.word.compare_exchange(word, with_state(word, SINKING), Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue 'scan;
            }
            LAST_FAULT.with(|last| last.set(usize::MAX));
            let ok = replace_with_private_zero(page_addr, page);
            if ok {
                e.sunk.fetch_add(1, Ordering::AcqRel);
            }
            e.word.store(word, Ordering::Release);
            return ok;
        }
        return false;
    }
}

/// One `mmap(MAP_FIXED)` of a private read-write zero page.
fn replace_with_private_zero(page_addr: usize, page: usize) -> bool {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
    // `page_addr` lies in the accessible pages of a registered memory. Its
    // owner keeps it registered only while its reservation exists and
    // releases it (waiting for this handler, which holds the entry SINKING)
    // before unmapping it; every page of a reservation is guest memory, where
    // no Rust value lives.
    // SAFETY: so this replaces one page of guest memory and nothing else.
    let ptr = unsafe { libc::mmap(page_addr as *mut c_void, page, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    ptr != libc::MAP_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_code_is_found_and_anonymous_memory_is_not() {
        assert!(is_host_code(is_host_code as *const () as usize));
        let page = super::super::mman::page_size();
        // SAFETY: a fresh anonymous mapping, unmapped below.
        let anon = unsafe {
            libc::mmap(std::ptr::null_mut(), page, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert_ne!(anon, libc::MAP_FAILED);
        assert!(!is_host_code(anon as usize));
        // SAFETY: unmapping the mapping made above, which nothing uses.
        unsafe { libc::munmap(anon, page) };
    }

    #[test]
    fn entries_are_reused_with_a_new_generation() {
        let a = register(0x1000, 0x2000).unwrap();
        unregister(a);
        let b = register(0x3000, 0x4000).unwrap();
        assert_ne!(a, b);
        assert_eq!(sunk_pages(a), 0);
        set_end(a, 0x9000); // stale: ignored
        let e = entry(b.index).unwrap();
        assert_eq!(e.end.load(Ordering::Relaxed), 0x4000);
        unregister(b);
    }
}
