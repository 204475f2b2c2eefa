//! Guest-facing memory control: `map`, `map_buffer`, `unmap`, `protect` and
//! `discard` as host imports, modelled on the WebAssembly memory-control
//! proposal (`WebAssembly/memory-control`, files
//! `proposals/memory-control/virtual.md` and `proposals/memory-control/discard.md`).
//!
//! [`add_to_linker`] defines the imports below in the module namespace
//! [`MODULE`] (`"framemap:memctl"`). Each acts on the *calling instance's*
//! memory export named `"memory"` (see [`MemCtl::with_memory_export`]), which
//! must have been created by the [`FrameMemoryCreator`] the [`MemCtl`] holds.
//! Addresses and sizes are `i32` values read as unsigned (`u32`) byte counts.
//!
//! | import | type | proposal |
//! |---|---|---|
//! | `page_size` | `() -> i32` | the rounding unit, in bytes |
//! | `map` | `(addr, size, prot) -> i32` | `memory.map $prot`: anonymous zero pages, returns the aligned start |
//! | `map_buffer` | `(addr, size, prot, handle, offset) -> i32` | a host-granted buffer (the proposal leaves file mapping to host APIs), returns the aligned start |
//! | `unmap` | `(addr, size)` | `memory.unmap` |
//! | `protect` | `(addr, size, prot)` | `memory.protect $prot` |
//! | `discard` | `(addr, size)` | `memory.discard` |
//!
//! `prot` encodes the proposal's three protections as POSIX-style bits:
//! [`PROT_NONE`] = 0, [`PROT_READ`] = 1, [`PROT_READ_WRITE`] = 3 (read 1 |
//! write 2). Any other value (write-only 2, unknown bits) traps.
//!
//! # Rounding
//!
//! As the proposal says (virtual.md, "The address and size will be aligned
//! down and up respectively to the page size"; discard.md likewise, and its
//! design note: the runtime aligns rather than traps), `addr` is rounded down
//! and `addr + size` rounded up to the unit, so the range covers every page
//! holding a requested byte (rounding `size` alone could leave the last
//! requested bytes out). The unit is the memory's page size (64 KiB, or its
//! custom page size), but never less than the host page size (the frame
//! table's granule): `page_size` returns it. With 64 KiB wasm pages a guest
//! thus sees the same rounding on 4 KiB and 16 KiB hosts, which is what the
//! proposal's "the runtime aligns these parameters" asks for. `map_buffer`'s
//! buffer `offset` is not rounded: like `mmap(2)`'s file offset it must be a
//! multiple of the unit, and buffer byte `offset` appears at the returned
//! start. Grant buffers whose length is a multiple of the unit, or their
//! tail cannot be mapped.
//!
//! # Traps, never error codes
//!
//! The proposal's instructions report every failure by trapping ("Traps if …
//! the host disallows it for any other reason"), and so do these imports.
//! The trap carries a memory-control [`Error`] naming the rule broken (or,
//! as [`Error::Memory`], what the memory underneath refused, e.g. that it is
//! poisoned); the host gets it back from the export call with
//! `error.downcast_ref::<framemap_wasmtime::memctl::Error>()`.
//! The rules (after rounding, `start..end` is the range):
//!
//! - `map`, `map_buffer`, `protect`: a `prot` other than 0, 1, 3 traps
//!   ([`Error::BadProtection`]), checked first.
//! - all: `size == 0` traps ([`Error::EmptyRange`]) except for
//!   `discard`, where it does nothing (discard.md lists only out-of-bounds);
//!   `addr + size` past 2³² traps ([`Error::Overflow`]); `end` past the
//!   memory's current size traps ([`Error::OutOfBounds`]).
//! - `map`, `map_buffer`: any page of the range already mapped traps
//!   ([`Error::AlreadyMapped`]; virtual.md: "Overlapping mappings are
//!   not allowed"). In an ordinary memory every page is mapped, so a guest
//!   `unmap`s first, or the host makes part of the memory virtual
//!   ([`MemoryHandle::make_virtual`]).
//! - `map_buffer`: a handle never granted ([`Error::NotGranted`]), one
//!   the host took back ([`Error::HandleRevoked`]), a buffer the host
//!   revoked ([`Error::BufferRevoked`]), a protection beyond the grant
//!   ([`Error::AccessDenied`]), a misaligned buffer offset
//!   ([`Error::MisalignedOffset`]), a range past the buffer's end
//!   ([`Error::PastBuffer`]), or a refusal by the host's
//!   [`MemCtlPolicy`] ([`Error::PolicyDenied`]) trap, checked in that
//!   order, after the range rules and before the overlap rule (so the policy
//!   sees every well-formed request, even one over mapped pages).
//! - `unmap`: never traps on the state of the pages (unmapping unmapped
//!   pages, or a buffer window, is allowed).
//! - `protect`: any `Unmapped` page traps ([`Error::NotMapped`]);
//!   raising the protection of a buffer window past what a live grant of
//!   that buffer allows traps ([`Error::ProtectDenied`]; virtual.md:
//!   "attempting to make read-only host memory writable"). Lowering is always
//!   allowed.
//! - `discard`: `Shared` pages trap ([`Error::SharedFrames`]: the host
//!   owns them, see ARCHITECTURE.md); `Unmapped` pages stay unmapped, image
//!   pages become zero pages.
//!
//! # Invariant
//!
//! A rejected call changes nothing: every rule above is checked before the
//! memory is touched, and the framemap core applies each accepted change to
//! the frame table and the kernel's mappings together (a change it refuses
//! leaves both as they were). A guest can map only buffers the host granted
//! to its store's [`MemCtl`], never with more access than the grant, and
//! only where the policy agrees.
//!
//! The "already mapped" and "protect a window" checks read the frame table
//! before the change is made: two stores driving one shared memory at once
//! can interleave between check and change (memory-safe either way; each
//! store's own calls are serialised by the store).
//!
//! # Virtual mode
//!
//! [`MemoryHandle::make_virtual`] unmaps a memory's pages from some offset on, so
//! they trap until a guest (or the host, through a
//! [`crate::MemoryHandle`]) maps them: the proposal's `virtual` mode for the
//! part of the memory above that offset. Pages later added by `memory.grow`
//! are ordinary zero pages. Host code must not read unmapped pages through
//! `wasmtime::Memory::data` (a WASI call, say): it would fault outside wasm.

use crate::creator::FrameMemoryCreator;
use crate::handle::MemoryHandle;
use framemap::{FrameKind, Protection, SharedBuffer};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use wasmtime::{Caller, Extern, Linker};

mod error;

pub use error::{Error, Result};

/// The import module namespace the functions are defined in.
pub const MODULE: &str = "framemap:memctl";

/// `prot` value: no access (the pages stay mapped, but every touch traps).
pub const PROT_NONE: i32 = 0;
/// `prot` value: loads only.
pub const PROT_READ: i32 = 1;
/// `prot` value: loads and stores (read 1 | write 2).
pub const PROT_READ_WRITE: i32 = 3;

/// Decodes a guest `prot` value (see [`PROT_NONE`], [`PROT_READ`],
/// [`PROT_READ_WRITE`]).
pub fn decode_protection(prot: i32) -> Result<Protection> {
    match prot {
        PROT_NONE => Ok(Protection::None),
        PROT_READ => Ok(Protection::Read),
        PROT_READ_WRITE => Ok(Protection::ReadWrite),
        flags => Err(Error::BadProtection { flags }),
    }
}

/// The most a guest may do with a granted buffer's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Map it (and protect it) `none` or `read` only.
    Read,
    /// Map it with any protection.
    ReadWrite,
}

impl Access {
    /// Whether a window with protection `prot` stays within this access.
    pub fn allows(self, prot: Protection) -> bool {
        match self {
            Access::Read => !prot.writable(),
            Access::ReadWrite => true,
        }
    }
}

/// A guest's request to map a granted buffer, as shown to the
/// [`MemCtlPolicy`]. Ranges are in bytes, after rounding.
#[derive(Clone, Copy, Debug)]
pub struct BufferRequest<'a> {
    /// The handle the guest passed.
    pub handle: u32,
    /// The buffer it names.
    pub buffer: &'a SharedBuffer,
    /// The access it was granted with (already checked against `prot`).
    pub access: Access,
    /// Guest address of the window (aligned).
    pub addr: u64,
    /// Length of the window (aligned).
    pub len: u64,
    /// Offset in the buffer of the window's first byte.
    pub offset: u64,
    /// The protection asked for.
    pub prot: Protection,
}

/// The host's say on which granted buffers a guest may map, where and how.
/// It can only narrow what the grant allows: a request beyond the grant's
/// [`Access`] is refused before the policy is asked.
///
/// Any `Fn(&BufferRequest) -> bool + Send + Sync + 'static` is a policy.
pub trait MemCtlPolicy: Send + Sync + 'static {
    /// Whether the guest may map this window.
    fn may_map(&self, request: &BufferRequest<'_>) -> bool;
}

impl<F> MemCtlPolicy for F
where
    F: Fn(&BufferRequest<'_>) -> bool + Send + Sync + 'static,
{
    fn may_map(&self, request: &BufferRequest<'_>) -> bool {
        self(request)
    }
}

/// The default policy: every granted buffer, anywhere, within its access.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowGranted;

impl MemCtlPolicy for AllowGranted {
    fn may_map(&self, _request: &BufferRequest<'_>) -> bool {
        true
    }
}

struct Grant {
    buffer: SharedBuffer,
    access: Access,
}

/// Per-store memory-control state: the creator whose memories guests may
/// control, the buffers granted to the store's guests (by handle), and the
/// policy. Put it in (or reach it from) the store's data and pass an
/// accessor to [`add_to_linker`].
pub struct MemCtl {
    creator: Arc<FrameMemoryCreator>,
    export: Arc<str>,
    grants: BTreeMap<u32, Grant>,
    next_handle: u32,
    policy: Box<dyn MemCtlPolicy>,
}

impl fmt::Debug for MemCtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grants: Vec<_> = self.grants.iter().map(|(h, g)| (*h, g.buffer.id(), g.access)).collect();
        f.debug_struct("MemCtl")
            .field("export", &self.export)
            .field("grants", &grants)
            .field("next_handle", &self.next_handle)
            .finish_non_exhaustive()
    }
}

impl MemCtl {
    /// State for guests whose memories `creator` makes, with no grants, the
    /// [`AllowGranted`] policy and the memory export `"memory"`.
    pub fn new(creator: Arc<FrameMemoryCreator>) -> MemCtl {
        MemCtl {
            creator,
            export: Arc::from("memory"),
            grants: BTreeMap::new(),
            next_handle: 1,
            policy: Box::new(AllowGranted),
        }
    }

    /// Uses `policy` to decide which granted buffers guests may map.
    pub fn with_policy(mut self, policy: impl MemCtlPolicy) -> MemCtl {
        self.policy = Box::new(policy);
        self
    }

    /// Makes the imports act on the caller's memory export `name`.
    pub fn with_memory_export(mut self, name: &str) -> MemCtl {
        self.export = Arc::from(name);
        self
    }

    /// The memory export the imports act on.
    pub fn memory_export(&self) -> &str {
        &self.export
    }

    /// The creator whose memories guests may control.
    pub fn creator(&self) -> &Arc<FrameMemoryCreator> {
        &self.creator
    }

    /// Grants `buffer` to this store's guests with `access`, returning the
    /// handle they pass to `map_buffer`. Handles are positive `i32`s, never
    /// reused. Granting the same buffer twice gives two handles.
    ///
    /// # Safety
    ///
    /// The guest may map the buffer into its memory, so the caller takes on
    /// the contract of [`MemoryHandle::map_buffer`] for every non-shared
    /// memory of this store: the buffer's bytes do not change (host writes,
    /// other windows, other processes, revocation) while host code holds a
    /// borrow of that memory's bytes from `wasmtime::Memory::data` or
    /// `data_mut`.
    pub unsafe fn grant(&mut self, buffer: SharedBuffer, access: Access) -> Result<u32> {
        let handle = self.next_handle;
        if handle > i32::MAX as u32 {
            return Err(Error::HandlesExhausted);
        }
        self.next_handle = handle + 1;
        self.grants.insert(handle, Grant { buffer, access });
        Ok(handle)
    }

    /// Takes back `handle`: guests can no longer map it (nor raise the
    /// protection of its windows through it). Windows already mapped stay
    /// until the guest unmaps them or the host revokes the buffer itself
    /// ([`SharedBuffer::revoke`] unmaps every window everywhere). Returns the
    /// buffer, or `None` if the handle was not granted.
    pub fn revoke_handle(&mut self, handle: u32) -> Option<SharedBuffer> {
        self.grants.remove(&handle).map(|g| g.buffer)
    }

    /// The buffer and access granted under `handle`.
    pub fn granted(&self, handle: u32) -> Option<(&SharedBuffer, Access)> {
        self.grants.get(&handle).map(|g| (&g.buffer, g.access))
    }

    fn grant_for(&self, handle: u32) -> Result<&Grant> {
        self.grants.get(&handle).ok_or(if handle != 0 && handle < self.next_handle {
            Error::HandleRevoked { handle }
        } else {
            Error::NotGranted { handle }
        })
    }

    fn map_buffer(&self, t: &Target, addr: u32, size: u32, prot: i32, handle: u32, offset: u32) -> Result<u32> {
        let prot = decode_protection(prot)?;
        let (start, end) = t.range(addr, size)?;
        let grant = self.grant_for(handle)?;
        if grant.buffer.is_revoked() {
            return Err(Error::BufferRevoked { handle });
        }
        if !grant.access.allows(prot) {
            return Err(Error::AccessDenied { handle, access: grant.access, prot });
        }
        let (offset, len) = (u64::from(offset), end - start);
        if !offset.is_multiple_of(t.unit) {
            return Err(Error::MisalignedOffset { offset, page_size: t.unit });
        }
        if offset + len > grant.buffer.len() {
            return Err(Error::PastBuffer { handle, offset, len, buffer_len: grant.buffer.len() });
        }
        let request =
            BufferRequest { handle, buffer: &grant.buffer, access: grant.access, addr: start, len, offset, prot };
        if !self.policy.may_map(&request) {
            return Err(Error::PolicyDenied { handle, addr: start, len, prot });
        }
        t.check_unmapped(start, end)?;
        t.handle.map_buffer_checked(None, start, &grant.buffer, offset, len, prot).map_err(|e| match e {
            crate::Error::Window { source: framemap::Error::Revoked { .. }, .. } => Error::BufferRevoked { handle },
            e => Error::Memory(e),
        })?;
        Ok(start as u32)
    }

    fn protect(&self, t: &Target, addr: u32, size: u32, prot: i32) -> Result<()> {
        let prot = decode_protection(prot)?;
        let (start, end) = t.range(addr, size)?;
        for (run_start, run_end, frame) in t.runs(start, end)? {
            match frame.kind() {
                FrameKind::Unmapped => return Err(Error::NotMapped { start: run_start, end: run_end }),
                FrameKind::Shared { buffer, .. } if prot > frame.prot() => {
                    let granted = self
                        .grants
                        .values()
                        .any(|g| g.buffer.id() == buffer && !g.buffer.is_revoked() && g.access.allows(prot));
                    if !granted {
                        return Err(Error::ProtectDenied { start: run_start, end: run_end, buffer, prot });
                    }
                }
                FrameKind::Zero | FrameKind::Image { .. } | FrameKind::Shared { .. } => {}
            }
        }
        t.handle.change_in_call(|space| space.protect(start, end - start, prot)).map_err(translate)
    }
}

/// The caller's memory, as the imports see it. Its handle's changes run
/// while the guest's call holds the store, so no borrow of the memory's bytes
/// can be alive (the borrow rule of [`crate::handle`]).
struct Target {
    handle: MemoryHandle,
    size: u64,
    unit: u64,
}

impl Target {
    fn of<T: 'static>(caller: &mut Caller<'_, T>, get: impl Fn(&mut T) -> &mut MemCtl) -> Result<Target> {
        let memctl = get(caller.data_mut());
        let (export, creator) = (memctl.export.clone(), memctl.creator.clone());
        let host_page = framemap::host_page_size() as u64;
        let (handle, size, page) = match caller.get_export(&export) {
            Some(Extern::Memory(m)) => {
                (creator.handle(&*caller, &m), m.data_size(&*caller) as u64, m.ty(&*caller).page_size())
            }
            Some(Extern::SharedMemory(m)) => (creator.handle_shared(&m), m.data_size() as u64, m.ty().page_size()),
            _ => return Err(Error::NoMemory { export: export.to_string() }),
        };
        let handle = handle?;
        Ok(Target { handle, size, unit: page.max(host_page) })
    }

    /// The rounded range `start..end` of `addr`, `size`, checked against
    /// the memory's size.
    fn range(&self, addr: u32, size: u32) -> Result<(u64, u64)> {
        let (addr, size) = (u64::from(addr), u64::from(size));
        if size == 0 {
            return Err(Error::EmptyRange { addr });
        }
        self.rounded(addr, size)
    }

    fn rounded(&self, addr: u64, size: u64) -> Result<(u64, u64)> {
        let end = addr + size;
        if end > 1 << 32 {
            return Err(Error::Overflow { addr, size });
        }
        let start = addr - addr % self.unit;
        let end = end.div_ceil(self.unit) * self.unit;
        if end > self.size {
            return Err(Error::OutOfBounds { start, end, size: self.size });
        }
        Ok((start, end))
    }

    /// The frame table's runs in `start..end`, as clipped byte ranges.
    fn runs(&self, start: u64, end: u64) -> Result<Vec<(u64, u64, framemap::Frame)>> {
        let page = framemap::host_page_size() as u64;
        Ok(self
            .handle
            .runs_in(start, end - start)?
            .into_iter()
            .map(|(run, frame)| ((run.start * page).max(start), (run.end * page).min(end), frame))
            .filter(|(s, e, _)| s < e)
            .collect())
    }

    fn check_unmapped(&self, start: u64, end: u64) -> Result<()> {
        match self.runs(start, end)?.into_iter().find(|(_, _, f)| f.kind() != FrameKind::Unmapped) {
            Some((start, end, _)) => Err(Error::AlreadyMapped { start, end }),
            None => Ok(()),
        }
    }

    fn map_zero(&self, addr: u32, size: u32, prot: i32) -> Result<u32> {
        let prot = decode_protection(prot)?;
        let (start, end) = self.range(addr, size)?;
        self.check_unmapped(start, end)?;
        self.handle.change_in_call(|space| space.map_zero(start, end - start, prot))?;
        Ok(start as u32)
    }

    fn unmap(&self, addr: u32, size: u32) -> Result<()> {
        let (start, end) = self.range(addr, size)?;
        Ok(self.handle.change_in_call(|space| space.unmap(start, end - start))?)
    }

    fn discard(&self, addr: u32, size: u32) -> Result<()> {
        let (addr, size) = (u64::from(addr), u64::from(size));
        if size == 0 {
            // discard.md traps only on out-of-bounds ranges: an empty range
            // is out of bounds only past the memory's end.
            if addr > self.size {
                return Err(Error::OutOfBounds { start: addr, end: addr, size: self.size });
            }
            return Ok(());
        }
        let (start, end) = self.rounded(addr, size)?;
        self.handle.change_in_call(|space| space.discard(start, end - start)).map_err(translate)
    }
}

/// Names the core's refusals by the rule they enforce.
fn translate(e: crate::Error) -> Error {
    use framemap::{Error::WrongFrames, FrameTag};
    match e {
        crate::Error::Window { source: WrongFrames { tag: FrameTag::Shared, start, end, .. }, .. } => {
            Error::SharedFrames { start, end }
        }
        crate::Error::Window { source: WrongFrames { tag: FrameTag::Unmapped, start, end, .. }, .. } => {
            Error::NotMapped { start, end }
        }
        e => Error::Memory(e),
    }
}

fn trap(e: Error) -> wasmtime::Error {
    wasmtime::Error::new(e)
}

/// Defines the memory-control imports (see the [module docs](self)) in
/// `linker` under [`MODULE`]. `get` reaches the store's [`MemCtl`] from its
/// data.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: impl Fn(&mut T) -> &mut MemCtl + Send + Sync + Copy + 'static,
) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "page_size", move |mut caller: Caller<'_, T>| -> wasmtime::Result<i32> {
        let t = Target::of(&mut caller, get).map_err(trap)?;
        Ok(i32::try_from(t.unit).unwrap_or(i32::MAX))
    })?;
    linker.func_wrap(
        MODULE,
        "map",
        move |mut caller: Caller<'_, T>, addr: i32, size: i32, prot: i32| -> wasmtime::Result<i32> {
            let t = Target::of(&mut caller, get).map_err(trap)?;
            Ok(t.map_zero(addr as u32, size as u32, prot).map_err(trap)? as i32)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "map_buffer",
        move |mut caller: Caller<'_, T>,
              addr: i32,
              size: i32,
              prot: i32,
              handle: i32,
              offset: i32|
              -> wasmtime::Result<i32> {
            let t = Target::of(&mut caller, get).map_err(trap)?;
            let memctl = get(caller.data_mut());
            let start =
                memctl.map_buffer(&t, addr as u32, size as u32, prot, handle as u32, offset as u32).map_err(trap)?;
            Ok(start as i32)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "unmap",
        move |mut caller: Caller<'_, T>, addr: i32, size: i32| -> wasmtime::Result<()> {
            Target::of(&mut caller, get).and_then(|t| t.unmap(addr as u32, size as u32)).map_err(trap)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "protect",
        move |mut caller: Caller<'_, T>, addr: i32, size: i32, prot: i32| -> wasmtime::Result<()> {
            let t = Target::of(&mut caller, get).map_err(trap)?;
            get(caller.data_mut()).protect(&t, addr as u32, size as u32, prot).map_err(trap)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "discard",
        move |mut caller: Caller<'_, T>, addr: i32, size: i32| -> wasmtime::Result<()> {
            Target::of(&mut caller, get).and_then(|t| t.discard(addr as u32, size as u32)).map_err(trap)
        },
    )?;
    Ok(())
}
