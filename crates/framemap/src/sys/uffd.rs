//! Write tracking with userfaultfd write-protection in asynchronous mode.
//!
//! A range registered here (`UFFDIO_REGISTER_MODE_WP`) can have its written
//! pages protected again by one `PAGEMAP_SCAN` call
//! ([`super::pagemap::protect_dirty`]); the next write to such a page takes
//! a minor fault that the kernel resolves by itself (`UFFD_FEATURE_WP_ASYNC`:
//! no handler thread, no message is ever read from the descriptor) and the
//! page counts as written again. Until then `PAGEMAP_SCAN` reports it as not
//! written, so a reset finds exactly the pages written since the last one,
//! not every page it kept resident.
//!
//! Invariant: tracking only ever makes a page look *clean* if it was
//! protected and not written since. A page that is not protected (never
//! protected, in a range that is not registered, or in a fork child, whose
//! copies of the mappings lose their registration) always looks written, so
//! losing track can only make a reset do more work, never miss a page.
//!
//! One descriptor serves the whole process (registrations are per range of
//! address space); it is made again in a fork child, whose inherited
//! descriptor still names the parent's address space.

use super::fork::ForkSentinel;
use rustix::fd::OwnedFd;
use rustix::ioctl::{Ioctl, IoctlOutput, Opcode, opcode};
use std::ffi::c_void;
use std::io;
use std::sync::{Mutex, OnceLock};

const UFFDIO: u8 = 0xAA;
const UFFD_API: u64 = 0xAA;
/// `UFFD_USER_MODE_ONLY`, which rustix does not name.
const UFFD_USER_MODE_ONLY: u32 = 1;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// Asynchronous write-protection, markers for unpopulated anonymous pages
/// (without them `PAGEMAP_SCAN` refuses to protect anonymous ranges), and
/// support for shmem-backed mappings (image and buffer frames).
const FEATURES: u64 = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

/// `UFFDIO_API`: the handshake; on return `features` holds what the kernel
/// supports (when asked for none) or agreed to.
struct Api(UffdioApi);

// SAFETY: the opcode is `_IOWR(UFFDIO, 0x3F, struct uffdio_api)` and the
// argument is a correctly laid out `uffdio_api` the kernel reads and writes.
unsafe impl Ioctl for Api {
    type Output = u64;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        opcode::read_write::<UffdioApi>(UFFDIO, 0x3F)
    }

    fn as_ptr(&mut self) -> *mut c_void {
        (&raw mut self.0).cast()
    }

    unsafe fn output_from_ptr(_: IoctlOutput, arg: *mut c_void) -> rustix::io::Result<u64> {
        // SAFETY: `arg` is the `uffdio_api` passed in, written by the kernel.
        Ok(unsafe { arg.cast::<UffdioApi>().read() }.features)
    }
}

/// `UFFDIO_REGISTER` in write-protect mode.
struct Register(UffdioRegister);

// SAFETY: the opcode is `_IOWR(UFFDIO, 0x00, struct uffdio_register)` and the
// argument is a correctly laid out `uffdio_register`; registering changes no
// memory contents, only how later write faults in the range are handled.
unsafe impl Ioctl for Register {
    type Output = ();
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        opcode::read_write::<UffdioRegister>(UFFDIO, 0x00)
    }

    fn as_ptr(&mut self) -> *mut c_void {
        (&raw mut self.0).cast()
    }

    unsafe fn output_from_ptr(_: IoctlOutput, _: *mut c_void) -> rustix::io::Result<()> {
        Ok(())
    }
}

/// A userfaultfd descriptor that agreed to [`FEATURES`].
struct Descriptor(OwnedFd);

impl Descriptor {
    fn open() -> io::Result<OwnedFd> {
        use rustix::mm::{UserfaultfdFlags, userfaultfd};
        let flags = UserfaultfdFlags::CLOEXEC | UserfaultfdFlags::NONBLOCK;
        // SAFETY: the descriptor is only used for asynchronous write
        // protection, which never blocks a faulting thread or changes what
        // memory reads as (module docs).
        match unsafe { userfaultfd(flags) } {
            // Without CAP_SYS_PTRACE and vm.unprivileged_userfaultfd=0, only
            // user-mode faults may be handled; asynchronous protection is
            // resolved in the fault path either way.
            Err(rustix::io::Errno::PERM) => {
                // SAFETY: as above.
                Ok(unsafe { userfaultfd(flags | UserfaultfdFlags::from_bits_retain(UFFD_USER_MODE_ONLY)) }?)
            }
            other => Ok(other?),
        }
    }

    fn new() -> io::Result<Descriptor> {
        // The handshake can be made once per descriptor: ask what the kernel
        // supports on a first one, then agree to the features on a second.
        let probe = Descriptor::open()?;
        // SAFETY: see the `Ioctl` impl of `Api`.
        let supported =
            unsafe { rustix::ioctl::ioctl(&probe, Api(UffdioApi { api: UFFD_API, ..Default::default() })) }?;
        if supported & FEATURES != FEATURES {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "userfaultfd asynchronous write-protection"));
        }
        let fd = Descriptor::open()?;
        let api = Api(UffdioApi { api: UFFD_API, features: FEATURES, ioctls: 0 });
        // SAFETY: see the `Ioctl` impl of `Api`.
        unsafe { rustix::ioctl::ioctl(&fd, api) }?;
        Ok(Descriptor(fd))
    }
}

struct Process {
    pid: rustix::process::Pid,
    descriptor: Option<Descriptor>,
}

static PROCESS: Mutex<Option<Process>> = Mutex::new(None);

/// Runs `f` with this process's descriptor, made on first use (and again in
/// a fork child); fails where the kernel offers no asynchronous
/// write-protection (then remembered: no new handshake per call).
fn with_descriptor<T>(f: impl FnOnce(&Descriptor) -> io::Result<T>) -> io::Result<T> {
    static SENTINEL: OnceLock<ForkSentinel> = OnceLock::new();
    let sentinel = SENTINEL.get_or_init(ForkSentinel::new);
    let mut process = PROCESS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let current = process.as_ref().is_some_and(|p| sentinel.untouched() || p.pid == rustix::process::getpid());
    if !current {
        // A new process (or the first use): a descriptor of its own.
        *process = Some(Process { pid: rustix::process::getpid(), descriptor: Descriptor::new().ok() });
    }
    sentinel.arm();
    let descriptor = process.as_ref().and_then(|p| p.descriptor.as_ref());
    f(descriptor
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "userfaultfd asynchronous write-protection"))?)
}

/// Whether this kernel offers asynchronous write-protection to this process.
pub(crate) fn supported() -> bool {
    with_descriptor(|_| Ok(())).is_ok()
}

/// Registers `[addr, addr + len)` for write tracking. Fails (and nothing is
/// tracked) where the kernel lacks the feature or refuses the range's
/// mappings (a regular file shared mapping, say); callers then treat every
/// present page as written.
///
/// # Safety
///
/// The range must be page aligned and mapped by the caller, who owns it
/// exclusively (as every range passed to `sys` functions is).
pub(crate) unsafe fn register(addr: *mut u8, len: usize) -> io::Result<()> {
    super::inject::check()?;
    let range = UffdioRegister { start: addr as u64, len: len as u64, mode: UFFDIO_REGISTER_MODE_WP, ioctls: 0 };
    with_descriptor(|descriptor| {
        // SAFETY: see the `Ioctl` impl of `Register`; the range is the caller's.
        unsafe { rustix::ioctl::ioctl(&descriptor.0, Register(range)) }?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sys::{memfd, mman, pagemap};

    /// The pages of `[addr, addr + 8 pages)` that a reset would find dirty.
    fn dirty(addr: *mut u8, page: usize) -> Vec<usize> {
        let mut pages = Vec::new();
        pagemap::scan(addr as usize, addr as usize + 8 * page, pagemap::Query::Dirty, |s, e| {
            pages.extend((s - addr as usize) / page..(e - addr as usize) / page)
        })
        .unwrap();
        pages
    }

    /// Writes, protects, and writes again on a mapping made by `map`: only
    /// the pages written since the protection look dirty.
    fn written_since_protection(map: impl FnOnce(*mut u8, usize)) {
        let page = mman::page_size();
        let addr = mman::reserve(8 * page).unwrap().as_ptr();
        map(addr, 8 * page);
        // SAFETY: `addr..+8 pages` is the read-write mapping just made, owned
        // by this test.
        unsafe {
            register(addr, 8 * page).unwrap();
            for p in [0, 2, 5] {
                addr.add(p * page).write_volatile(7);
            }
            let _ = addr.add(6 * page).read_volatile();
            let _ = addr.add(3 * page).read_volatile();
            assert_eq!(dirty(addr, page), [0, 2, 5], "never protected: every written page");
            pagemap::protect_dirty(addr as usize, addr as usize + 8 * page).unwrap();
            assert_eq!(dirty(addr, page), [] as [usize; 0], "all protected");
            assert_eq!(addr.add(2 * page).read_volatile(), 7, "contents unchanged");
            addr.add(2 * page).write_volatile(8);
            addr.add(7 * page).write_volatile(8);
            assert_eq!(dirty(addr, page), [2, 7], "written since");
            mman::release(addr, 8 * page).unwrap();
        }
    }

    #[test]
    fn anonymous_pages_written_since_protection() {
        if !crate::testing::feature_present(
            supported(),
            "asynchronous userfaultfd write-protection",
            "FRAMEMAP_REQUIRE_UFFD_WP",
        ) {
            return;
        }
        // SAFETY: replaces the test's own reservation.
        written_since_protection(|addr, len| unsafe {
            mman::replace_with_zero(addr, len, crate::Protection::ReadWrite).unwrap()
        });
    }

    #[test]
    fn private_file_pages_written_since_protection() {
        if !crate::testing::feature_present(
            supported(),
            "asynchronous userfaultfd write-protection",
            "FRAMEMAP_REQUIRE_UFFD_WP",
        ) {
            return;
        }
        let page = mman::page_size();
        let file = memfd::create("uffd-test").unwrap();
        memfd::set_len(&file, 8 * page as u64).unwrap();
        // Image pages: reads come from the file, writes make private copies.
        rustix::io::pwrite(&file, &[1u8; 64], 3 * page as u64).unwrap();
        // SAFETY: replaces the test's own reservation with a private view of
        // a file of the same length.
        written_since_protection(|addr, len| unsafe {
            mman::replace_with_file(addr, len, crate::Protection::ReadWrite, rustix::fd::AsFd::as_fd(&file), 0, false)
                .unwrap()
        });
    }

    #[test]
    fn unregistered_mappings_are_never_protected() {
        if !crate::testing::feature_present(
            supported(),
            "asynchronous userfaultfd write-protection",
            "FRAMEMAP_REQUIRE_UFFD_WP",
        ) {
            return;
        }
        let page = mman::page_size();
        let addr = mman::reserve(8 * page).unwrap().as_ptr();
        // SAFETY: the test's own reservation, remapped and written in place.
        unsafe {
            mman::replace_with_zero(addr, 8 * page, crate::Protection::ReadWrite).unwrap();
            mman::replace_with_zero(addr.add(3 * page), 2 * page, crate::Protection::None).unwrap();
            register(addr, 3 * page).unwrap();
            register(addr.add(7 * page), page).unwrap();
            for p in [0, 2, 5, 6, 7] {
                addr.add(p * page).write_volatile(7);
            }
            assert_eq!(dirty(addr, page), [0, 2, 5, 6, 7]);
            pagemap::protect_dirty(addr as usize, addr as usize + 8 * page).unwrap();
            assert_eq!(dirty(addr, page), [5, 6], "pages 5 and 6 are not registered: still written");
            mman::release(addr, 8 * page).unwrap();
        }
    }
}
