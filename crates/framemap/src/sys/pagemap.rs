//! `/proc/self/pagemap`: which pages of a range the guest dirtied or keeps resident.
//!
//! On Linux 6.7 and later the `PAGEMAP_SCAN` ioctl reports whole runs of
//! matching pages, so a query costs time proportional to the page tables that
//! exist, not to the size of the range. Support is probed once at run time;
//! without it callers fall back (resets drop the whole range, statistics read
//! one pagemap entry per page).
//!
//! The pagemap file is opened once per process and reopened after a `fork`
//! (a wipe-on-fork page tells, without a system call, that no fork happened;
//! otherwise the pid is compared), so a child never reads its parent's map.

use super::fork::ForkSentinel;
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, opcode};
use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, OnceLock};

/// The page categories of `PAGEMAP_SCAN` (`include/uapi/linux/fs.h`).
mod category {
    pub(super) const WRITTEN: u64 = 1 << 1;
    pub(super) const FILE: u64 = 1 << 2;
    pub(super) const PRESENT: u64 = 1 << 3;
    pub(super) const SWAPPED: u64 = 1 << 4;
    pub(super) const PFNZERO: u64 = 1 << 5;
}

/// What a scan looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Query {
    /// Pages whose contents may differ from what the mapping would read back
    /// after a discard: private pages that are present or swapped out, are
    /// neither the shared zero page nor an unmodified file page, and were
    /// written since they were last write-protected (see [`super::uffd`]; a
    /// page never protected counts as written).
    Dirty,
    /// [`Query::Dirty`] without its file-page test: exactly the same pages
    /// in anonymous mappings (whose pages are never file pages), a superset
    /// (unmodified file pages included) elsewhere. The file-page test reads
    /// each present page's `struct page`, a cache miss per page: over
    /// anonymous memory with many resident pages this query is several
    /// times faster (262 144 resident pages, 7 written: 0.8 ms against
    /// 8.3 ms on Linux 6.18).
    DirtyAnonymous,
    /// Pages that occupy memory: present and not the shared zero page.
    Resident,
    /// Pages that have a page-table entry: present (the shared zero page
    /// included) or swapped out. After a fresh mapping, the pages used since
    /// (read or written), plus the file pages the kernel mapped around a
    /// faulting one ("fault-around", up to 64 KiB by default).
    Populated,
}

impl Query {
    /// `(category_mask, category_inverted, category_anyof_mask)`.
    fn masks(self) -> (u64, u64, u64) {
        use category::*;
        match self {
            Query::Dirty => (WRITTEN | PFNZERO | FILE, PFNZERO | FILE, PRESENT | SWAPPED),
            Query::DirtyAnonymous => (WRITTEN | PFNZERO, PFNZERO, PRESENT | SWAPPED),
            Query::Resident => (PRESENT | PFNZERO, PFNZERO, 0),
            Query::Populated => (0, 0, PRESENT | SWAPPED),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// One `PAGEMAP_SCAN` call: the argument block plus the region buffer it fills.
struct Scan<'a> {
    arg: PmScanArg,
    _regions: std::marker::PhantomData<&'a mut [MaybeUninit<PageRegion>]>,
}

// SAFETY: the opcode is `_IOWR('f', 16, struct pm_scan_arg)`, the argument is
// a correctly laid out `pm_scan_arg` whose `vec`/`vec_len` describe a buffer
// borrowed for the lifetime `'a` (or are 0 and null), and the kernel writes
// only `walk_end` and at most `vec_len` regions into that buffer.
unsafe impl Ioctl for Scan<'_> {
    type Output = (usize, u64);
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        opcode::read_write::<PmScanArg>(b'f', 16)
    }

    fn as_ptr(&mut self) -> *mut c_void {
        (&raw mut self.arg).cast()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, arg: *mut c_void) -> rustix::io::Result<(usize, u64)> {
        // SAFETY: `arg` is the `PmScanArg` handed out by `as_ptr` (trait contract).
        let walk_end = unsafe { (*arg.cast::<PmScanArg>()).walk_end };
        let count = usize::try_from(out).map_err(|_| rustix::io::Errno::INVAL)?;
        Ok((count, walk_end))
    }
}

/// `/proc/self/pagemap` as opened by this very process: the file describes
/// the address space of the process that opened it, so a fork child must
/// open its own.
struct PagemapFile {
    pid: rustix::process::Pid,
    file: File,
}

/// The file every scan uses, published once opened. Files are leaked, never
/// freed: a thread may still be reading through a pointer it loaded, and a
/// replacement happens at most once per fork (the old file then describes the
/// parent and is only kept open, never used).
static PAGEMAP: AtomicPtr<PagemapFile> = AtomicPtr::new(std::ptr::null_mut());
/// Serialises opening and replacing the file (not its use).
static OPENING: Mutex<()> = Mutex::new(());

fn with_pagemap<T>(f: impl FnOnce(&File) -> io::Result<T>) -> io::Result<T> {
    static SENTINEL: OnceLock<ForkSentinel> = OnceLock::new();
    let sentinel = SENTINEL.get_or_init(ForkSentinel::new);
    // Fast path, no lock: the sentinel is armed (Release) only after the file
    // of this very process was published, so seeing it armed (Acquire) means
    // `PAGEMAP` holds that file or a later one of this process.
    if sentinel.untouched() {
        // SAFETY: a non-null pointer in `PAGEMAP` comes from `Box::into_raw`
        // below and is never freed, so it stays valid for the process's life.
        if let Some(open) = unsafe { PAGEMAP.load(Ordering::Acquire).as_ref() } {
            return f(&open.file);
        }
    }
    let _opening = OPENING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let pid = rustix::process::getpid();
    // SAFETY: as above.
    let open = match unsafe { PAGEMAP.load(Ordering::Acquire).as_ref() } {
        Some(open) if open.pid == pid => open,
        _ => {
            let opened = Box::new(PagemapFile { pid, file: File::open("/proc/self/pagemap")? });
            let opened: &'static PagemapFile = Box::leak(opened);
            PAGEMAP.store(std::ptr::from_ref(opened).cast_mut(), Ordering::Release);
            opened
        }
    };
    sentinel.arm();
    f(&open.file)
}

/// Whether this kernel supports `PAGEMAP_SCAN` (probed once).
pub(crate) fn scan_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let probe = [0u8; 1];
        let addr = probe.as_ptr() as usize;
        let page = super::mman::page_size();
        let start = addr & !(page - 1);
        scan(start, start + page, Query::Resident, |_, _| {}).is_ok()
    })
}

/// Reports every run of pages in `[start, end)` that matches `query`, in
/// address order, as `visit(run_start, run_end)`. `start` and `end` must be
/// page aligned. Only reads page tables: no memory is touched.
pub(crate) fn scan(start: usize, end: usize, query: Query, visit: impl FnMut(usize, usize)) -> io::Result<()> {
    walk(start, end, query, 0, visit)
}

/// `PM_SCAN_WP_MATCHING`: also write-protect every matching page.
const WP_MATCHING: u64 = 1 << 0;
/// Write-protects every [`Query::Dirty`] page of `[start, end)` in one walk,
/// so each reads as not written until its next write. Pages of mappings not
/// registered with [`super::uffd::register`] are left as they are (and keep
/// reading as written). Changes no contents.
///
/// Only the matching pages are touched: the walk asks for their runs (and
/// throws them away) because without an output vector the kernel takes its
/// "exclusive write-protect" fast path, which protects every entry of the
/// range, installing a marker in each empty one. Every later scan then has
/// to read those markers: across a 16 MiB memory whose few dirty pages lie
/// far apart, that made each reset's scan several times slower.
pub(crate) fn protect_dirty(start: usize, end: usize) -> io::Result<()> {
    walk(start, end, Query::Dirty, WP_MATCHING, |_, _| {})
}

/// Reports every run of `[start, end)` that `query` ([`Query::Dirty`] or
/// [`Query::DirtyAnonymous`]) matches, like [`scan`], and write-protects
/// those pages in the same walk (see [`protect_dirty`]): afterwards each reads as
/// not written until its next write, so the next walk reports exactly the
/// pages written in between (in mappings registered with
/// [`super::uffd::register`]; others always read written).
pub(crate) fn scan_and_protect(
    start: usize,
    end: usize,
    query: Query,
    visit: impl FnMut(usize, usize),
) -> io::Result<()> {
    walk(start, end, query, WP_MATCHING, visit)
}

fn walk(start: usize, end: usize, query: Query, flags: u64, mut visit: impl FnMut(usize, usize)) -> io::Result<()> {
    super::inject::check()?;
    const REGIONS: usize = 64;
    let (mask, inverted, anyof) = query.masks();
    let mut regions = [MaybeUninit::<PageRegion>::uninit(); REGIONS];
    let mut cursor = start as u64;
    let end = end as u64;
    with_pagemap(|file| {
        while cursor < end {
            let scan = Scan {
                arg: PmScanArg {
                    size: size_of::<PmScanArg>() as u64,
                    flags,
                    start: cursor,
                    end,
                    walk_end: 0,
                    vec: regions.as_mut_ptr() as u64,
                    vec_len: REGIONS as u64,
                    max_pages: 0,
                    category_inverted: inverted,
                    category_mask: mask,
                    category_anyof_mask: anyof,
                    return_mask: 0,
                },
                _regions: std::marker::PhantomData,
            };
            // SAFETY: see the `Ioctl` impl of `Scan`; the fd is the pagemap
            // of this very process, whose page tables the ioctl reads (and,
            // with WP_MATCHING, write-protects: no byte of memory changes).
            let (count, walk_end) = unsafe { rustix::ioctl::ioctl(file, scan) }?;
            for region in &regions[..count.min(REGIONS)] {
                // SAFETY: the kernel initialised the first `count` entries.
                let region = unsafe { region.assume_init() };
                visit(region.start as usize, region.end as usize);
            }
            if walk_end <= cursor {
                return Err(io::Error::other("PAGEMAP_SCAN made no progress"));
            }
            cursor = walk_end;
        }
        Ok(())
    })
}

/// Pagemap entry bit: the page is present.
const ENTRY_PRESENT: u64 = 1 << 63;
/// Pagemap entry bit: the page is swapped out.
const ENTRY_SWAPPED: u64 = 1 << 62;

/// Reads the pagemap entry of every page of `[start, end)` (page aligned),
/// 512 per read, and hands each to `visit(page_address, entry)`.
fn entries(start: usize, end: usize, mut visit: impl FnMut(usize, u64)) -> io::Result<()> {
    super::inject::check()?;
    let page = super::mman::page_size();
    let mut buf = vec![0u8; 8 * 512];
    let mut addr = start;
    with_pagemap(|file| {
        while addr < end {
            let pages = ((end - addr) / page).min(512);
            let bytes = &mut buf[..pages * 8];
            file.read_exact_at(bytes, (addr / page * 8) as u64)?;
            for (i, entry) in bytes.chunks_exact(8).enumerate() {
                visit(addr + i * page, u64::from_le_bytes(entry.try_into().unwrap_or_default()));
            }
            addr += pages * page;
        }
        Ok(())
    })
}

/// Counts the resident pages of `[start, end)` the slow way, one pagemap
/// entry per page (bit 63: present), for kernels without `PAGEMAP_SCAN`.
/// The shared zero page is counted too: the entry does not tell it apart
/// without privileges.
pub(crate) fn count_present_by_entries(start: usize, end: usize) -> io::Result<u64> {
    let mut count = 0u64;
    entries(start, end, |_, entry| count += u64::from(entry & ENTRY_PRESENT != 0))?;
    Ok(count)
}

/// Reports the runs of [`Query::Populated`] pages of `[start, end)` the slow
/// way, one pagemap entry per page (present or swapped), for kernels
/// without `PAGEMAP_SCAN`: the same pages [`scan`] reports (the entry bits
/// need no privileges for this query), in time proportional to the range.
pub(crate) fn populated_by_entries(start: usize, end: usize, mut visit: impl FnMut(usize, usize)) -> io::Result<()> {
    let page = super::mman::page_size();
    let mut run: Option<(usize, usize)> = None;
    entries(start, end, |addr, entry| {
        if entry & (ENTRY_PRESENT | ENTRY_SWAPPED) == 0 {
            return;
        }
        match &mut run {
            Some((_, e)) if *e == addr => *e = addr + page,
            _ => {
                if let Some((s, e)) = run.replace((addr, addr + page)) {
                    visit(s, e);
                }
            }
        }
    })?;
    if let Some((s, e)) = run {
        visit(s, e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_and_scanned_residency_agree() {
        let page = crate::sys::mman::page_size();
        let base = crate::sys::mman::reserve(16 * page).unwrap().as_ptr();
        // SAFETY: the range was just reserved by this test and nothing else uses it.
        unsafe { crate::sys::mman::protect(base, 16 * page, crate::frame::Protection::ReadWrite).unwrap() };
        for i in [0, 3, 4, 15] {
            // SAFETY: page `i` is inside the read-write range above.
            unsafe { base.add(i * page).write_volatile(1) };
        }
        let (start, end) = (base as usize, base as usize + 16 * page);
        assert_eq!(count_present_by_entries(start, end).unwrap(), 4);
        if scan_supported() {
            let mut runs = Vec::new();
            scan(start, end, Query::Resident, |s, e| runs.push(((s - start) / page, (e - start) / page))).unwrap();
            assert_eq!(runs, vec![(0, 1), (3, 5), (15, 16)]);
            let mut dirty = 0;
            scan(start, end, Query::Dirty, |s, e| dirty += (e - s) / page).unwrap();
            assert_eq!(dirty, 4);
        }
        // A page only read maps the shared zero page: populated, not resident.
        // SAFETY: page 7 is inside the read-write range above.
        let _ = unsafe { base.add(7 * page).read_volatile() };
        let mut slow = Vec::new();
        populated_by_entries(start, end, |s, e| slow.push(((s - start) / page, (e - start) / page))).unwrap();
        assert_eq!(slow, vec![(0, 1), (3, 5), (7, 8), (15, 16)]);
        if scan_supported() {
            let mut fast = Vec::new();
            scan(start, end, Query::Populated, |s, e| fast.push(((s - start) / page, (e - start) / page))).unwrap();
            assert_eq!(fast, slow);
        }
        // SAFETY: the test owns the range and is done with it.
        unsafe { crate::sys::mman::release(base, 16 * page).unwrap() };
    }

    /// The anonymous query reports what the full one does over anonymous
    /// memory, and more (unmodified file pages) only over a file mapping.
    #[test]
    fn the_anonymous_dirty_query_differs_only_on_file_pages() {
        if !crate::testing::feature_present(
            crate::sys::pagemap::scan_supported(),
            "PAGEMAP_SCAN",
            "FRAMEMAP_REQUIRE_PAGEMAP_SCAN",
        ) {
            return;
        }
        let page = crate::sys::mman::page_size();
        let pages_of = |start: usize, query: Query, len: usize| {
            let mut runs = Vec::new();
            scan(start, start + len * page, query, |s, e| runs.push(((s - start) / page, (e - start) / page))).unwrap();
            runs
        };
        let base = crate::sys::mman::reserve(16 * page).unwrap().as_ptr();
        // SAFETY: the range was just reserved by this test and nothing else uses it.
        unsafe { crate::sys::mman::protect(base, 16 * page, crate::frame::Protection::ReadWrite).unwrap() };
        for i in [0, 3, 4] {
            // SAFETY: page `i` is inside the read-write range above.
            unsafe { base.add(i * page).write_volatile(1) };
        }
        // SAFETY: as above; a read maps the shared zero page.
        let _ = unsafe { base.add(9 * page).read_volatile() };
        let anonymous = pages_of(base as usize, Query::Dirty, 16);
        assert_eq!(anonymous, vec![(0, 1), (3, 5)]);
        assert_eq!(pages_of(base as usize, Query::DirtyAnonymous, 16), anonymous);
        // SAFETY: the test owns the range and is done with it.
        unsafe { crate::sys::mman::release(base, 16 * page).unwrap() };

        // A private mapping of a file: a page only read is a file page.
        let fd = crate::sys::memfd::create("framemap-test-dirty-query").unwrap();
        crate::sys::memfd::write_all_at(&fd, &vec![7u8; 16 * page], 0).unwrap();
        // SAFETY: a new mapping at an address the kernel picks, of a file
        // this test owns; nothing else refers to it.
        let file = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                16 * page,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
                &fd,
                0,
            )
        }
        .unwrap()
        .cast::<u8>();
        // SAFETY: pages 2 and 8 lie inside the mapping above.
        unsafe {
            file.add(2 * page).write_volatile(1);
            let _ = file.add(8 * page).read_volatile();
        }
        assert_eq!(pages_of(file as usize, Query::Dirty, 16), vec![(2, 3)]);
        let superset = pages_of(file as usize, Query::DirtyAnonymous, 16);
        let covers = |p: usize| superset.iter().any(|&(s, e)| s <= p && p < e);
        assert!(covers(2) && covers(8), "{superset:?}");
        // SAFETY: the mapping made above, no longer used.
        unsafe { rustix::mm::munmap(file.cast(), 16 * page).unwrap() };
    }
}
