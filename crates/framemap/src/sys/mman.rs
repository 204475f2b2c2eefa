//! Address-space calls: reserve, replace, protect, discard, populate,
//! prefetch and release ranges.
//!
//! Every function takes a raw address range. The caller guarantees that the
//! range lies inside a reservation it owns (so no other Rust object lives
//! there) and is host-page aligned; under that precondition replacing,
//! protecting or discarding the range cannot invalidate any Rust reference.

use crate::frame::Protection;
use rustix::mm::{self, Advice, MapFlags, MprotectFlags, ProtFlags};
use std::ffi::c_void;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

fn prot_flags(prot: Protection) -> ProtFlags {
    match prot {
        Protection::None => ProtFlags::empty(),
        Protection::Read => ProtFlags::READ,
        Protection::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
    }
}

fn mprotect_flags(prot: Protection) -> MprotectFlags {
    match prot {
        Protection::None => MprotectFlags::empty(),
        Protection::Read => MprotectFlags::READ,
        Protection::ReadWrite => MprotectFlags::READ | MprotectFlags::WRITE,
    }
}

/// Reserves `len` bytes of inaccessible, unbacked address space anywhere.
pub(crate) fn reserve(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a non-fixed anonymous mapping at a kernel-chosen address cannot
    // overlap any existing object; the new range belongs to the caller alone.
    let ptr = unsafe {
        mm::mmap_anonymous(std::ptr::null_mut(), len, ProtFlags::empty(), MapFlags::PRIVATE | MapFlags::NORESERVE)
    }?;
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned a null address"))
}

/// Replaces `[addr, addr + len)` with fresh zero-filled anonymous memory of
/// protection `prot`, in one `mmap(MAP_FIXED)`: a concurrent reader sees the
/// old page or the new one, never a hole.
///
/// # Safety
/// `[addr, addr + len)` must lie inside a reservation owned by the caller,
/// with no live Rust reference into it.
pub(crate) unsafe fn replace_with_zero(addr: *mut u8, len: usize, prot: Protection) -> io::Result<()> {
    // SAFETY: the caller owns the range (function contract).
    super::inject::check().inspect_err(|_| unsafe { injected_map_damage(addr, len) })?;
    // SAFETY: the caller owns the range (function contract); MAP_FIXED over it
    // only replaces pages of that reservation.
    unsafe {
        mm::mmap_anonymous(
            addr.cast::<c_void>(),
            len,
            prot_flags(prot),
            MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE,
        )
    }?;
    Ok(())
}

/// What an injected failure of a replacement leaves (see
/// [`super::inject`]): the worst a failed `mmap(MAP_FIXED)` can do is drop
/// the old mapping; the range becomes inaccessible anonymous memory (not a
/// real hole: another thread's mapping could land in one).
///
/// # Safety
/// As [`replace_with_zero`].
unsafe fn injected_map_damage(addr: *mut u8, len: usize) {
    let flags = MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE;
    // SAFETY: the caller owns the range (function contract).
    let _ = unsafe { mm::mmap_anonymous(addr.cast::<c_void>(), len, ProtFlags::empty(), flags) };
}

/// Replaces `[addr, addr + len)` with the file's bytes from `offset`, in one
/// `mmap(MAP_FIXED)`: `MAP_PRIVATE` (copy-on-write) unless `shared`, in which
/// case writes reach the file. Private mappings are `MAP_NORESERVE`: like
/// anonymous guest memory, their copied pages are not charged to the commit
/// limit up front (a large image mapped whole would otherwise ask for its
/// full length in accountable memory before the guest writes a byte).
///
/// # Safety
/// As [`replace_with_zero`]; and `[offset, offset + len)` must lie inside the
/// file, which must not shrink while mapped (a page past its end would raise
/// SIGBUS).
pub(crate) unsafe fn replace_with_file(
    addr: *mut u8,
    len: usize,
    prot: Protection,
    fd: rustix::fd::BorrowedFd<'_>,
    offset: u64,
    shared: bool,
) -> io::Result<()> {
    // SAFETY: the caller owns the range (function contract).
    super::inject::check().inspect_err(|_| unsafe { injected_map_damage(addr, len) })?;
    let sharing = if shared { MapFlags::SHARED } else { MapFlags::PRIVATE };
    let reserve = if shared { MapFlags::empty() } else { MapFlags::NORESERVE };
    // SAFETY: the caller owns the range and guarantees the file covers it and
    // cannot shrink (function contract); MAP_FIXED replaces only that range.
    unsafe { mm::mmap(addr.cast::<c_void>(), len, prot_flags(prot), sharing | reserve | MapFlags::FIXED, fd, offset) }?;
    Ok(())
}

/// A shared mapping of a whole file at a kernel-chosen address (a host's view
/// of an image or buffer), unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is an address range of a file; accesses go through raw
// pointers whose synchronisation is the owner's.
unsafe impl Send for Mapping {}
// SAFETY: as for `Send`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of the file, shared, with protection `prot`.
    ///
    /// # Safety
    /// The file must cover `len` bytes and never shrink while mapped.
    pub(crate) unsafe fn of_file(fd: rustix::fd::BorrowedFd<'_>, len: usize, prot: Protection) -> io::Result<Mapping> {
        // SAFETY: the same contract, at offset 0.
        unsafe { Mapping::of_file_at(fd, 0, len, prot) }
    }

    /// Maps `len` bytes of the file from byte `offset` (page-aligned),
    /// shared, with protection `prot`.
    ///
    /// # Safety
    /// The file must cover `offset..offset + len` and never shrink while mapped.
    pub(crate) unsafe fn of_file_at(
        fd: rustix::fd::BorrowedFd<'_>,
        offset: u64,
        len: usize,
        prot: Protection,
    ) -> io::Result<Mapping> {
        // SAFETY: a non-fixed mapping cannot overlap existing objects; the
        // file covers the range and cannot shrink (function contract).
        let ptr = unsafe { mm::mmap(std::ptr::null_mut(), len, prot_flags(prot), MapFlags::SHARED, fd, offset) }?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(Mapping { ptr, len })
    }

    /// First byte.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping owns its range and is going away.
        let _ = unsafe { release(self.ptr.as_ptr(), self.len) };
    }
}

/// Changes the protection of `[addr, addr + len)`, keeping its contents.
///
/// # Safety
/// As [`replace_with_zero`].
pub(crate) unsafe fn protect(addr: *mut u8, len: usize, prot: Protection) -> io::Result<()> {
    super::inject::check().inspect_err(|_| {
        // A failed mprotect may have changed the first mappings already.
        let page = page_size();
        if len > page {
            // SAFETY: the caller owns the range (function contract).
            let _ = unsafe { mm::mprotect(addr.cast::<c_void>(), page, mprotect_flags(prot)) };
        }
    })?;
    // SAFETY: the caller owns the range (function contract).
    unsafe { mm::mprotect(addr.cast::<c_void>(), len, mprotect_flags(prot)) }?;
    Ok(())
}

/// Drops the private pages of `[addr, addr + len)`: anonymous pages read back
/// as zero, private file pages as the file's bytes.
///
/// # Safety
/// As [`replace_with_zero`].
pub(crate) unsafe fn discard(addr: *mut u8, len: usize) -> io::Result<()> {
    super::inject::check()?;
    // SAFETY: the caller owns the range (function contract); dropping pages
    // does not change the mapping, only its contents.
    unsafe { mm::madvise(addr.cast::<c_void>(), len, Advice::LinuxDontNeed) }?;
    Ok(())
}

/// Faults `[addr, addr + len)` in for writing in one call
/// (`MADV_POPULATE_WRITE`, Linux 5.14+): anonymous pages are allocated,
/// private file pages are copied, as if each had been written.
///
/// # Safety
/// As [`replace_with_zero`]; the range must be mapped writable.
pub(crate) unsafe fn populate_write(addr: *mut u8, len: usize) -> io::Result<()> {
    super::inject::check()?;
    // SAFETY: the caller owns the writable range (function contract);
    // populating changes no byte's value.
    unsafe { mm::madvise(addr.cast::<c_void>(), len, Advice::LinuxPopulateWrite) }?;
    Ok(())
}

/// Faults `[addr, addr + len)` in for reading in one call
/// (`MADV_POPULATE_READ`, Linux 5.14+): every page gets its page-table
/// entry as if it had been read: private file pages map the file's page
/// (no copy), anonymous pages the shared zero page, so a guest reading
/// them takes no page fault. A later write still takes one (copy-on-write).
/// `EINVAL` where the kernel lacks it.
///
/// # Safety
/// As [`replace_with_zero`]; the range must be mapped readable.
pub(crate) unsafe fn populate_read(addr: *mut u8, len: usize) -> io::Result<()> {
    super::inject::check()?;
    // SAFETY: the caller owns the readable range (function contract);
    // populating for reading changes no byte and no mapping.
    unsafe { mm::madvise(addr.cast::<c_void>(), len, Advice::LinuxPopulateRead) }?;
    Ok(())
}

/// Tells the kernel `[addr, addr + len)` will be needed soon
/// (`MADV_WILLNEED`): file pages are read ahead into the page cache (and
/// swapped-out anonymous pages read back), but no page-table entry is made,
/// so each page still costs a (minor) fault on first access.
///
/// # Safety
/// As [`replace_with_zero`].
pub(crate) unsafe fn will_need(addr: *mut u8, len: usize) -> io::Result<()> {
    super::inject::check()?;
    // SAFETY: the caller owns the range (function contract); the advice
    // changes no byte and no mapping.
    unsafe { mm::madvise(addr.cast::<c_void>(), len, Advice::WillNeed) }?;
    Ok(())
}

/// How [`prefetch_read`] brought a range in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefetched {
    /// `MADV_POPULATE_READ`: every page is mapped.
    Populated,
    /// `MADV_WILLNEED` only (the kernel lacks `MADV_POPULATE_READ`): read
    /// ahead, not mapped.
    Advised,
}

/// Set once a `MADV_POPULATE_READ` failed with `EINVAL`: the kernel lacks it
/// (before 5.14; framemap never maps `VM_PFNMAP` or `VM_IO` ranges, the
/// other cause).
static POPULATE_READ_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Prefetches `[addr, addr + len)` for reading: [`populate_read`], or
/// [`will_need`] where the kernel turned out not to support it (detected at
/// run time, on the first `EINVAL`, and remembered for the process).
///
/// # Safety
/// As [`populate_read`].
pub(crate) unsafe fn prefetch_read(addr: *mut u8, len: usize) -> io::Result<Prefetched> {
    if !POPULATE_READ_UNSUPPORTED.load(Ordering::Relaxed) {
        // SAFETY: the function contract.
        match unsafe { populate_read(addr, len) } {
            Ok(()) => return Ok(Prefetched::Populated),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                POPULATE_READ_UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    // SAFETY: the function contract.
    unsafe { will_need(addr, len) }?;
    Ok(Prefetched::Advised)
}

/// Releases `[addr, addr + len)` back to the kernel.
///
/// # Safety
/// The caller must own the whole range, and nothing may use it afterwards.
pub(crate) unsafe fn release(addr: *mut u8, len: usize) -> io::Result<()> {
    // SAFETY: the caller owns the range and gives it up (function contract).
    unsafe { mm::munmap(addr.cast::<c_void>(), len) }?;
    Ok(())
}

/// The host page size, in bytes.
pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}
