//! The SIGBUS guard: truncation safety for files framemap cannot seal
//! (ARCHITECTURE.md, invariant 3).
//!
//! A `MAP_SHARED` page past the end of its file raises SIGBUS, and nothing
//! in a wasmtime process handles SIGBUS on Linux (wasmtime installs its
//! SIGBUS handler on macOS and FreeBSD only). framemap's own files are sealed
//! against shrinking, so they never need this module; a buffer made from a
//! file that cannot be sealed ([`crate::SharedBuffer::from_fd`]) registers
//! every range it is mapped at here, and this module's handler turns a
//! SIGBUS inside a registered range into something the process survives.
//!
//! Invariant kept: **a SIGBUS raised by an access to a registered range
//! never kills the process**. The handler replaces the whole registered
//! range (not just the faulting page: one state per range keeps the handler
//! and the frame table simple, and a truncated window has no trustworthy
//! contents left anyway) with one `mmap(MAP_FIXED)` of anonymous memory, and
//! returns, so the access is retried on the new pages:
//! - a guest window ([`Guard::Window`]) becomes `PROT_NONE`: the retried
//!   access raises SIGSEGV, which wasmtime turns into a wasm trap
//!   (`Trap::MemoryOutOfBounds`) when the faulting instruction is wasm code.
//!   The range is marked *demoted*; [`crate::LinearSpace::reconcile`] later
//!   turns its frames into `Unmapped` in the frame table (until then
//!   `validate` and `summary` read demoted pages as `Unmapped`).
//! - a buffer's host view ([`Guard::HostView`]) becomes private read-write
//!   zero pages: host code copying through it finishes (reads zero, writes
//!   are lost), and the buffer reports [`crate::Error::BufferTruncated`].
//!
//! Any other SIGBUS goes to the action installed before ours, exactly as
//! wasmtime chains its own handlers: an `SA_SIGINFO` handler is called with
//! the same arguments, a plain handler with the signal number; `SIG_DFL` is
//! restored and the signal re-raised (the process dies of SIGBUS as it
//! would have without us); `SIG_IGN` is restored and the handler returns (a
//! fault then kills, as the kernel does for an ignored synchronous SIGBUS).
//!
//! Attribution: a `BUS_ADRERR` fault is acted on only if a registered range
//! holds the address *and* that range's file (checked with `fstat`, which is
//! async-signal-safe) now ends before the faulting page. While a window is
//! remapped, the old and the new range are both registered for a moment,
//! and a fault the kernel decided on the old mapping may reach the handler
//! after the new one is in place: the file check keeps the handler from
//! demoting the new mapping and blaming its buffer. A fault in registered
//! ranges whose files are long enough, or outside every range, is retried
//! once (per thread, remembered in a thread-local: a stale fault does not
//! recur); if it recurs at the same address, a registered range is demoted
//! anyway (an I/O error broke it) and anything else is chained. The
//! thread-local is a const-initialised `Cell`, plain TLS when framemap is
//! linked into the executable or a library loaded at start-up; inside a
//! library loaded with `dlopen` its first use on a thread may allocate.
//!
//! Order with wasmtime: on Linux wasmtime installs SIGSEGV, SIGILL and SIGFPE
//! handlers only, so whichever of an `Engine` and the first unsealed buffer
//! comes first, this handler is the only framemap-or-wasmtime SIGBUS handler
//! and a truncation is seen here first; wasmtime only sees the SIGSEGV of
//! the retried guest access. (Rust's standard library installs a SIGBUS
//! handler for stack-overflow reporting at start-up: it is our "previous"
//! action, and it behaves as `SIG_DFL` for any fault that is not a stack
//! guard hit.) Both orders are tested (`framemap-wasmtime/tests/truncation.rs`).
//! Where wasmtime does handle SIGBUS (macOS, FreeBSD; framemap itself is
//! Linux-only), installing this guard after the `Engine` would make it run
//! first and chain to wasmtime; installing it before would make wasmtime
//! run first, turn a guest's fault in wasm code into a trap itself and
//! chain to the guard for faults outside wasm code.
//!
//! The registry is a fixed array of slots made of atomics. Writers
//! (registration, release) serialise on a mutex; the handler takes no lock,
//! allocates nothing and only makes `mmap`, `fstat` and `sched_yield`
//! calls, all async-signal-safe. Each slot's state word carries a generation, so a
//! handler that read a slot being reused notices and looks again.

use super::chain::{Chain, SavedErrno};
use rustix::fd::{AsRawFd, BorrowedFd};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{c_int, c_void};
use std::io;
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering, fence};

/// How many ranges can be guarded at once in the process.
pub(crate) const CAPACITY: usize = 4096;

/// What a guarded range is, which decides what the handler maps over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Guard {
    /// A window of a buffer in a linear memory: demoted to `PROT_NONE`.
    Window,
    /// A buffer's host view: demoted to private read-write zero pages.
    HostView,
}

// Slot state word: generation << 16 | kind << 8 | state.
const FREE: u64 = 0;
const ACTIVE: u64 = 1;
/// The handler is replacing the range.
const DEMOTING: u64 = 2;
/// The handler replaced the range; its owner has not released it yet.
const DEMOTED: u64 = 3;
/// A writer is releasing or splitting the slot.
const LOCKED: u64 = 4;
const STATE_MASK: u64 = 0xff;
const KIND_HOST_VIEW: u64 = 1 << 8;

fn state(word: u64) -> u64 {
    word & STATE_MASK
}

fn with_state(word: u64, state: u64) -> u64 {
    (word & !STATE_MASK) | state
}

fn kind(word: u64) -> Guard {
    if word & KIND_HOST_VIEW != 0 { Guard::HostView } else { Guard::Window }
}

struct Slot {
    word: AtomicU64,
    start: AtomicUsize,
    end: AtomicUsize,
    buffer: AtomicU64,
    /// The mapped file (kept open by the range's owner while registered)
    /// and the file offset mapped at `start`.
    fd: AtomicI32,
    offset: AtomicU64,
    /// SIGBUS faults the handler absorbed in this range.
    events: AtomicU64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            word: AtomicU64::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            buffer: AtomicU64::new(0),
            fd: AtomicI32::new(-1),
            offset: AtomicU64::new(0),
            events: AtomicU64::new(0),
        }
    }
}

static SLOTS: [Slot; CAPACITY] = [const { Slot::new() }; CAPACITY];
/// Slots `[HIGH, CAPACITY)` have never been used: scans stop there.
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// Non-free window slots: lets linear spaces skip the registry when no
/// window is guarded anywhere.
static WINDOWS: AtomicUsize = AtomicUsize::new(0);

/// Writer-side bookkeeping (never touched by the handler).
struct Writers {
    /// Non-free slots.
    live: usize,
    /// Slots promised to outstanding [`Ticket`]s.
    reserved: usize,
    /// Events of released slots, per buffer.
    retired: BTreeMap<u64, u64>,
}

static WRITERS: Mutex<Writers> = Mutex::new(Writers { live: 0, reserved: 0, retired: BTreeMap::new() });

fn writers() -> std::sync::MutexGuard<'static, Writers> {
    WRITERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a slot records: `[start, end)` maps the file `fd` from `offset`,
/// for buffer `buffer`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Range {
    /// First byte.
    pub start: usize,
    /// End (exclusive).
    pub end: usize,
    /// What the range is.
    pub guard: Guard,
    /// The buffer's id.
    pub buffer: u64,
    /// The mapped file, open for as long as the range is registered.
    pub fd: i32,
    /// File offset mapped at `start`.
    pub offset: u64,
}

impl Range {
    /// `[start, end)` of `fd` from `offset`, for `buffer`.
    pub(crate) fn new(start: usize, end: usize, guard: Guard, buffer: u64, fd: BorrowedFd<'_>, offset: u64) -> Range {
        Range { start, end, guard, buffer, fd: fd.as_raw_fd(), offset }
    }
}

/// A registered range: slot index and the generation it was registered at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotId {
    index: usize,
    generation: u64,
}

/// Slots set aside so that a registration or split cannot fail half-way
/// through a change the caller already made in the kernel.
#[derive(Debug)]
pub(crate) struct Ticket {
    left: usize,
}

/// Sets `n` slots aside, or `None` if the registry is full.
pub(crate) fn reserve(n: usize) -> Option<Ticket> {
    let mut w = writers();
    if CAPACITY - w.live - w.reserved < n {
        return None;
    }
    w.reserved += n;
    Some(Ticket { left: n })
}

impl Drop for Ticket {
    fn drop(&mut self) {
        writers().reserved -= self.left;
    }
}

/// Takes a free slot (from `ticket` if it has one left) and publishes
/// `[start, end)` in it with `state`. Called with the writer lock held.
fn alloc(w: &mut Writers, ticket: Option<&mut Ticket>, range: Range, state: u64) -> Option<SlotId> {
    let Range { start, end, guard, buffer, fd, offset } = range;
    match ticket {
        Some(t) if t.left > 0 => {
            t.left -= 1;
            w.reserved -= 1;
        }
        _ if CAPACITY - w.live - w.reserved > 0 => {}
        _ => return None,
    }
    let index = SLOTS.iter().position(|s| self::state(s.word.load(Ordering::Relaxed)) == FREE)?;
    let slot = &SLOTS[index];
    slot.start.store(start, Ordering::Relaxed);
    slot.end.store(end, Ordering::Relaxed);
    slot.buffer.store(buffer, Ordering::Relaxed);
    slot.fd.store(fd, Ordering::Relaxed);
    slot.offset.store(offset, Ordering::Relaxed);
    slot.events.store(0, Ordering::Relaxed);
    let old = slot.word.load(Ordering::Relaxed);
    let generation = (old >> 16).wrapping_add(1);
    let kind = if guard == Guard::HostView { KIND_HOST_VIEW } else { 0 };
    let word = (generation << 16) | kind | state;
    // Widen the handler's scan before publishing the slot.
    HIGH.fetch_max(index + 1, Ordering::Release);
    slot.word.store(word, Ordering::Release);
    w.live += 1;
    if guard == Guard::Window {
        WINDOWS.fetch_add(1, Ordering::Release);
    }
    Some(SlotId { index, generation })
}

/// Frees a slot the caller holds `LOCKED` (whose word before locking was
/// `word`), moving its events to the buffer's retired count.
fn free_locked(w: &mut Writers, index: usize, word: u64) {
    let slot = &SLOTS[index];
    let events = slot.events.load(Ordering::Relaxed);
    if events > 0 {
        *w.retired.entry(slot.buffer.load(Ordering::Relaxed)).or_default() += events;
    }
    slot.word.store(with_state(word, FREE), Ordering::Release);
    w.live -= 1;
    if kind(word) == Guard::Window {
        WINDOWS.fetch_sub(1, Ordering::Release);
    }
}

/// Locks slot `index` if its word is still of generation `generation` (any
/// generation if `None`) and not free, waiting out a handler that is
/// demoting it. Returns the word before locking.
fn lock_slot(index: usize, generation: Option<u64>) -> Option<u64> {
    let slot = &SLOTS[index];
    loop {
        let word = slot.word.load(Ordering::Acquire);
        if state(word) == FREE || generation.is_some_and(|g| word >> 16 != g) {
            return None;
        }
        match state(word) {
            DEMOTING | LOCKED => std::thread::yield_now(),
            _ => {
                if slot
                    .word
                    .compare_exchange(word, with_state(word, LOCKED), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Some(word);
                }
            }
        }
    }
}

/// Whether some window range is guarded anywhere in the process (cheap).
pub(crate) fn windows_guarded() -> bool {
    WINDOWS.load(Ordering::Acquire) > 0
}

/// Registers `[start, end)` (page aligned) as guarded, taking a slot from
/// `ticket`. Register a range *before* mapping a file there, so no access
/// can precede the registration.
/// The file descriptor must stay open until the range is released.
pub(crate) fn guard(ticket: &mut Ticket, range: Range) -> Option<SlotId> {
    let mut w = writers();
    alloc(&mut w, Some(ticket), range, ACTIVE)
}

/// Releases one registered range, whatever its state. Call it *before*
/// unmapping the range.
pub(crate) fn unguard(id: SlotId) {
    let mut w = writers();
    if let Some(word) = lock_slot(id.index, Some(id.generation)) {
        free_locked(&mut w, id.index, word);
    }
}

/// Whether the handler demoted the range `id` (or it was released).
pub(crate) fn is_demoted(id: SlotId) -> bool {
    let word = SLOTS[id.index].word.load(Ordering::Acquire);
    word >> 16 != id.generation || matches!(state(word), DEMOTING | DEMOTED)
}

/// Releases the parts of guarded windows inside `[start, end)` (except
/// `except`), which the caller has just replaced with one `mmap(MAP_FIXED)`:
/// parts of a window outside the range stay registered (in their state).
/// Returns the sub-ranges of `[start, end)` that the handler had demoted:
/// its `mmap` may have landed after the caller's, so the caller must map
/// them again (no handler can touch them any more).
pub(crate) fn unguard_windows(
    mut ticket: Option<&mut Ticket>,
    start: usize,
    end: usize,
    except: Option<SlotId>,
) -> Vec<(usize, usize)> {
    let mut redo = Vec::new();
    if !windows_guarded() {
        return redo;
    }
    let mut w = writers();
    for (index, slot) in SLOTS.iter().enumerate().take(HIGH.load(Ordering::Acquire)) {
        if except.is_some_and(|e| e.index == index) {
            continue;
        }
        let word = slot.word.load(Ordering::Acquire);
        let (s, e) = (slot.start.load(Ordering::Relaxed), slot.end.load(Ordering::Relaxed));
        // Writers hold the lock, so only the handler changes words now, and
        // it never changes bounds: this read is stable.
        if state(word) == FREE || kind(word) != Guard::Window || e <= start || s >= end {
            continue;
        }
        let Some(word) = lock_slot(index, None) else { continue };
        let prior = state(word);
        let (buffer, fd, offset) =
            (slot.buffer.load(Ordering::Relaxed), slot.fd.load(Ordering::Relaxed), slot.offset.load(Ordering::Relaxed));
        if prior == DEMOTED {
            redo.push((s.max(start), e.min(end)));
        }
        let pieces = [(s, start), (end, e)];
        for (ps, pe) in pieces.into_iter().filter(|&(ps, pe)| ps < pe) {
            // With no slot left the piece stays unguarded: reserve with
            // `reserve(2)` before the kernel call to rule that out.
            let piece =
                Range { start: ps, end: pe, guard: Guard::Window, buffer, fd, offset: offset + (ps - s) as u64 };
            let _ = alloc(&mut w, ticket.as_deref_mut(), piece, prior);
        }
        free_locked(&mut w, index, word);
    }
    redo
}

/// The window ranges overlapping `[start, end)` that the handler demoted
/// (or is demoting), whole and sorted by start.
pub(crate) fn demoted_windows(start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if !windows_guarded() {
        return out;
    }
    let _w = writers();
    for slot in &SLOTS[..HIGH.load(Ordering::Acquire)] {
        let word = slot.word.load(Ordering::Acquire);
        let (s, e) = (slot.start.load(Ordering::Relaxed), slot.end.load(Ordering::Relaxed));
        if kind(word) == Guard::Window && matches!(state(word), DEMOTING | DEMOTED) && s < end && e > start {
            out.push((s, e));
        }
    }
    out.sort_unstable();
    out
}

/// SIGBUS faults absorbed so far in ranges of `buffer` (its host view and
/// windows), released ranges included.
pub(crate) fn events(buffer: u64) -> u64 {
    let w = writers();
    let live: u64 = SLOTS[..HIGH.load(Ordering::Acquire)]
        .iter()
        .filter(|s| state(s.word.load(Ordering::Acquire)) != FREE && s.buffer.load(Ordering::Relaxed) == buffer)
        .map(|s| s.events.load(Ordering::Relaxed))
        .sum();
    w.retired.get(&buffer).copied().unwrap_or(0) + live
}

/// Forgets the retired events of a buffer that is going away.
pub(crate) fn forget_buffer(buffer: u64) {
    writers().retired.remove(&buffer);
}

// ---------------------------------------------------------------------------
// The handler.

/// SIGBUS's handler chain: the action installed before ours.
static CHAIN: Chain = Chain::new(libc::SIGBUS);
/// The host page size, for the handler (set by `install`).
static PAGE: AtomicUsize = AtomicUsize::new(4096);

thread_local! {
    /// The address of this thread's last SIGBUS not acted on yet (every
    /// fault is retried once). A const-initialised `Cell` without `Drop`:
    /// plain thread-local storage, no lazy initialisation in the handler.
    static LAST_FAULT: Cell<usize> = const { Cell::new(0) };
}

/// Installs the SIGBUS handler, once per process; the previous action is
/// saved first and chained to (see [`super::chain`]).
pub(crate) fn install() -> io::Result<()> {
    PAGE.store(super::mman::page_size(), Ordering::Relaxed);
    CHAIN.install(on_sigbus)
}

/// Whether the handler is installed.
pub(crate) fn installed() -> bool {
    CHAIN.installed()
}

unsafe extern "C" fn on_sigbus(signum: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let _errno = SavedErrno::save();
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == libc::BUS_ADRERR {
        match demote(addr, false) {
            Found::Demoted => {
                LAST_FAULT.with(|last| last.set(0));
                return;
            }
            // Stale (see the module docs): retry once.
            Found::Intact | Found::Nothing if LAST_FAULT.with(|last| last.replace(addr)) != addr => return,
            // A fault that recurs in a range whose file is long enough (an
            // I/O error): the mapping is broken all the same.
            Found::Intact => {
                LAST_FAULT.with(|last| last.set(0));
                if matches!(demote(addr, true), Found::Demoted) {
                    return;
                }
            }
            Found::Nothing => LAST_FAULT.with(|last| last.set(0)),
        }
    }
    // SAFETY: forwarding the arguments the kernel gave us.
    unsafe { CHAIN.forward(signum, info, context) }
}

/// What [`demote`] found at an address.
enum Found {
    /// A registered range whose file no longer covers the faulting page:
    /// it is replaced now.
    Demoted,
    /// Registered ranges whose files still cover the page: the fault is
    /// stale (or an I/O error).
    Intact,
    /// No registered range (or the `mmap` failed).
    Nothing,
}

/// Replaces the registered range holding `addr` whose file ends before the
/// faulting page (any range holding it if `force`) with anonymous memory.
/// Checking the file attributes the fault to the right mapping when a remap
/// races it (the old and the new range are both registered for a moment).
fn demote(addr: usize, force: bool) -> Found {
    'scan: loop {
        let mut found = Found::Nothing;
        for slot in &SLOTS[..HIGH.load(Ordering::Acquire)] {
            let word = slot.word.load(Ordering::Acquire);
            if state(word) == FREE {
                continue;
            }
            let (start, end) = (slot.start.load(Ordering::Relaxed), slot.end.load(Ordering::Relaxed));
            let (fd, offset) = (slot.fd.load(Ordering::Relaxed), slot.offset.load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if slot.word.load(Ordering::Relaxed) != word {
                continue 'scan; // reused or changing under us: look again
            }
            if addr < start || addr >= end {
                continue;
            }
            if matches!(state(word), DEMOTING | LOCKED) {
                // Another thread is replacing or releasing the range.
                while slot.word.load(Ordering::Acquire) == word {
                    // SAFETY: sched_yield has no preconditions and is
                    // async-signal-safe.
                    unsafe { libc::sched_yield() };
                }
                continue 'scan;
            }
            if !force && !file_ends_before(fd, offset + (addr - start) as u64) {
                found = Found::Intact;
                continue;
            }
            if slot
                .word
                .compare_exchange(word, with_state(word, DEMOTING), Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue 'scan;
            }
            let ok = replace_with_anonymous(start, end - start, kind(word));
            if state(word) == ACTIVE {
                slot.events.fetch_add(1, Ordering::Relaxed);
            }
            slot.word.store(with_state(word, DEMOTED), Ordering::Release);
            return if ok { Found::Demoted } else { Found::Nothing };
        }
        return found;
    }
}

/// Whether file `fd` ends before the page holding byte `offset` (an access
/// there raises SIGBUS). False if `fstat` fails.
fn file_ends_before(fd: i32, offset: u64) -> bool {
    let page = PAGE.load(Ordering::Relaxed) as u64;
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // `fd` is the file of a registered range, open while it is registered
    // (if the range was released meanwhile, the answer is discarded: the
    // CAS on the slot's word then fails).
    // SAFETY: fstat is async-signal-safe and writes only `stat`.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so it filled `stat`.
    let size = u64::try_from(unsafe { stat.assume_init() }.st_size).unwrap_or(0);
    offset / page * page >= size.div_ceil(page) * page
}

/// One `mmap(MAP_FIXED)` of anonymous memory over a registered range.
fn replace_with_anonymous(start: usize, len: usize, guard: Guard) -> bool {
    let prot = match guard {
        Guard::Window => libc::PROT_NONE,
        Guard::HostView => libc::PROT_READ | libc::PROT_WRITE,
    };
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
    // `[start, start + len)` is a registered range: a window inside a
    // reservation its space owns, or a buffer's host view. Its owner keeps
    // it registered only while that mapping exists, and releases it (taking
    // the slot LOCKED, which waits for this handler) before reusing or
    // unmapping the range.
    // SAFETY: so this replaces only the pages of that mapping, as a
    // truncated file's pages: no Rust value lives there.
    let ptr = unsafe { libc::mmap(start as *mut c_void, len, prot, flags, -1, 0) };
    ptr != libc::MAP_FAILED
}
