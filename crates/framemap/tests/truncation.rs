//! Truncation safety (ARCHITECTURE.md, invariant 3): buffers over files
//! framemap cannot seal, truncated for real under their host view and under
//! windows; the process survives, the host sees errors, and the frame table
//! follows the kernel. Foreign SIGBUSes still reach the previous handler.

mod common;

use common::{host, page, shared_space};
use framemap::{Error, FrameKind, FrameTag, Protection, SharedBuffer};
use std::fs::File;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};

const CHILD: &str = "FRAMEMAP_TRUNCATION_CHILD";

/// An unlinked file in the temporary directory holding `pages` pages, page
/// `i` filled with byte `i + 1`.
fn temp_file(pages: u64) -> File {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("framemap-truncation-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let path = std::env::temp_dir().join(name);
    let mut file = File::options().read(true).write(true).create_new(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    for i in 0..pages {
        file.write_all(&vec![i as u8 + 1; page() as usize]).unwrap();
    }
    file
}

#[test]
fn a_file_shorter_than_asked_is_refused() {
    let file = temp_file(2);
    let err = SharedBuffer::from_fd(file, 3 * page()).unwrap_err();
    assert!(matches!(err, Error::FileTooShort { len, file_len } if len == 3 * page() && file_len == 2 * page()));
}

#[test]
fn a_sealable_memfd_is_sealed_and_behaves_like_new() {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create("sealable", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, 2 * page()).unwrap();
    let mine = rustix::io::fcntl_dupfd_cloexec(&fd, 0).unwrap();
    let buffer = SharedBuffer::from_fd(fd, 2 * page()).unwrap();
    assert!(buffer.is_sealed());
    assert!(rustix::fs::fcntl_get_seals(&mine).unwrap().contains(SealFlags::SHRINK));
    assert!(rustix::fs::ftruncate(&mine, 0).is_err(), "nobody can shrink it any more");
    buffer.write(10, b"sealed").unwrap();
    assert!(!buffer.is_truncated());
    assert_eq!(buffer.truncation_events(), 0);
}

#[test]
fn a_truncated_host_view_reports_errors_instead_of_crashing() {
    let p = page();
    let file = temp_file(4);
    let buffer = SharedBuffer::from_fd(file.try_clone().unwrap(), 4 * p).unwrap();
    assert!(!buffer.is_sealed(), "a regular file cannot be sealed");
    assert!(framemap::sigbus_guard_installed());
    let mut bytes = [0u8; 8];
    buffer.read(2 * p, &mut bytes).unwrap();
    assert_eq!(bytes, [3; 8]);
    assert!(!buffer.is_truncated());

    file.set_len(p).unwrap();
    assert!(buffer.is_truncated(), "the file is shorter than the buffer");
    buffer.read(0, &mut bytes).unwrap();
    assert_eq!(bytes, [1; 8], "pages still inside the file read normally until a fault");
    let err = buffer.read(2 * p, &mut bytes).unwrap_err();
    assert!(matches!(err, Error::BufferTruncated { id } if id == buffer.id().0), "{err}");
    assert_eq!(bytes, [0; 8], "the faulting pages read as zero");
    assert!(buffer.truncation_events() >= 1);
    assert!(matches!(buffer.read(0, &mut bytes), Err(Error::BufferTruncated { .. })), "the whole view is gone");
    assert!(matches!(buffer.write(3 * p, b"lost"), Err(Error::BufferTruncated { .. })));

    let space = shared_space(8);
    let grant = buffer.grant(host(&space)).unwrap();
    let err = space.lock().unwrap().map_buffer(0, &grant, 0, p, Protection::Read).unwrap_err();
    assert!(matches!(err, Error::BufferTruncated { .. }), "no new window of a truncated buffer");
    assert_eq!(buffer.revoke().unwrap(), 1, "revocation still works");
}

/// A stand-in for a guest load: reads one byte at an address, returning
/// `None` if the access faults with SIGSEGV (the way wasmtime turns a fault
/// in wasm code into a trap).
#[cfg(target_arch = "x86_64")]
mod probe {
    use std::ffi::c_void;
    use std::sync::Once;

    std::arch::global_asm!(
        ".text",
        ".globl framemap_test_probe_read",
        "framemap_test_probe_read:",
        "movzx eax, byte ptr [rdi]",
        "ret",
        ".globl framemap_test_probe_fault",
        "framemap_test_probe_fault:",
        "mov eax, -1",
        "ret",
    );

    unsafe extern "C" {
        fn framemap_test_probe_read(addr: *const u8) -> u32;
        fn framemap_test_probe_fault() -> u32;
    }

    // SAFETY: an all-zero sigaction is a valid value (SIG_DFL, no flags).
    static mut PREVIOUS: libc::sigaction = unsafe { std::mem::zeroed() };

    unsafe extern "C" fn on_sigsegv(signum: i32, info: *mut libc::siginfo_t, context: *mut c_void) {
        // SAFETY: the kernel passes a valid ucontext to an SA_SIGINFO handler.
        let cx = unsafe { &mut *context.cast::<libc::ucontext_t>() };
        let pc = &mut cx.uc_mcontext.gregs[libc::REG_RIP as usize];
        if *pc as usize == framemap_test_probe_read as *const () as usize {
            *pc = framemap_test_probe_fault as *const () as usize as i64;
            return;
        }
        // SAFETY: PREVIOUS was written by `install` before this handler ran.
        let previous = unsafe { (&raw const PREVIOUS).read() };
        if previous.sa_flags & libc::SA_SIGINFO != 0 && previous.sa_sigaction > libc::SIG_IGN {
            // SAFETY: an SA_SIGINFO handler, called with the kernel's arguments.
            let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut c_void) =
                unsafe { std::mem::transmute(previous.sa_sigaction) };
            f(signum, info, context);
        } else {
            // SAFETY: restore the previous disposition; the fault re-executes.
            unsafe { libc::sigaction(signum, &previous, std::ptr::null_mut()) };
        }
    }

    fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: a zeroed sigaction is valid; PREVIOUS is written once here.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_sigsegv as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
                libc::sigemptyset(&mut action.sa_mask);
                assert_eq!(libc::sigaction(libc::SIGSEGV, &action, &raw mut PREVIOUS), 0);
            }
        });
    }

    pub fn read(addr: *const u8) -> Option<u8> {
        install();
        // SAFETY: the probe only loads from `addr`; a fault lands on the
        // probe's own fault path, which returns u32::MAX.
        let value = unsafe { framemap_test_probe_read(addr) };
        u8::try_from(value).ok()
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_window_of_a_truncated_file_is_demoted_and_the_table_follows() {
    let p = page();
    let file = temp_file(4);
    let buffer = SharedBuffer::from_fd(file.try_clone().unwrap(), 4 * p).unwrap();
    let space = shared_space(16);
    let grant = buffer.grant(host(&space)).unwrap();
    let mut s = space.lock().unwrap();
    s.map_buffer(2 * p, &grant, 0, 2 * p, Protection::ReadWrite).unwrap();
    s.map_buffer(8 * p, &grant, 3 * p, p, Protection::Read).unwrap();
    s.validate().unwrap();
    let window = s.base().as_ptr().wrapping_add(2 * p as usize);
    assert_eq!(probe::read(window.wrapping_add(p as usize)), Some(2), "the guest sees the file");
    let mut bytes = [0u8; 4];
    s.read(8 * p, &mut bytes).unwrap();
    assert_eq!(bytes, [4; 4]);
    s.write(2 * p, b"host").unwrap();

    file.set_len(0).unwrap();
    // The guest touches the window: SIGBUS, demoted to PROT_NONE, SIGSEGV.
    assert_eq!(probe::read(window), None, "the guest's load faults instead of killing the process");
    assert_eq!(probe::read(window.wrapping_add(p as usize)), None, "the whole window is gone");
    assert!(buffer.truncation_events() >= 1);
    s.validate().unwrap();
    let summary = s.summary().unwrap();
    assert_eq!(summary.bytes[FrameTag::Shared], p, "only the untouched window still counts as shared");
    assert!(
        matches!(s.read(2 * p, &mut bytes), Err(Error::BufferTruncated { id }) if id == buffer.id().0),
        "host reads of a demoted window fail"
    );
    assert!(matches!(s.write(2 * p, b"x"), Err(Error::BufferTruncated { .. })));
    // The untouched window still maps the file; host access through the
    // space goes through the buffer's view, which survives the fault.
    assert!(matches!(s.read(8 * p, &mut bytes), Err(Error::BufferTruncated { .. })));
    assert!(buffer.is_truncated());

    assert_eq!(s.reconcile().unwrap(), 2, "the demoted window's two pages");
    for page in 2..4 {
        assert_eq!(s.table().get(page).unwrap().1.kind(), FrameKind::Unmapped, "page {page}");
    }
    assert!(matches!(s.table().get(8).unwrap().1.kind(), FrameKind::Shared { .. }));
    s.validate().unwrap();
    assert_eq!(s.reconcile().unwrap(), 0);

    // Later changes work as usual, the window's pages can be reused.
    s.map_zero(2 * p, 2 * p, Protection::ReadWrite).unwrap();
    s.write(2 * p, b"fresh").unwrap();
    s.validate().unwrap();
    drop(s);
    assert_eq!(buffer.revoke().unwrap(), 1);
    let s = space.lock().unwrap();
    assert_eq!(s.summary().unwrap().bytes[FrameTag::Shared], 0);
    s.validate().unwrap();
}

/// A reader thread loads from a window (like a guest, without the space's
/// lock) while the host remaps it between two unsealed buffers, one of
/// whose files is truncated half-way: every load sees a file's byte or
/// faults, never kills, and the table ends equal to the kernel.
#[cfg(target_arch = "x86_64")]
#[test]
fn remaps_racing_a_truncation_keep_the_table_equal_to_the_kernel() {
    use std::sync::atomic::AtomicBool;
    let p = page();
    let (fa, fb) = (temp_file(1), temp_file(1));
    let a = SharedBuffer::from_fd(fa.try_clone().unwrap(), p).unwrap();
    let b = SharedBuffer::from_fd(fb, p).unwrap();
    b.write(0, &[7; 64]).unwrap();
    let space = shared_space(8);
    let (ga, gb) = (a.grant(host(&space)).unwrap(), b.grant(host(&space)).unwrap());
    let window = space.lock().unwrap().base().as_ptr().wrapping_add(2 * p as usize) as usize;
    space.lock().unwrap().map_buffer(2 * p, &ga, 0, p, Protection::Read).unwrap();
    let stop = AtomicBool::new(false);
    /// Stops the reader however the host loop ends (a panic included).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let (seen, faults) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut seen, mut faults) = (std::collections::BTreeSet::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                match probe::read(window as *const u8) {
                    Some(v) => {
                        seen.insert(v);
                    }
                    None => faults += 1,
                }
            }
            (seen, faults)
        });
        let stopper = Stop(&stop);
        for i in 0..4000 {
            if i == 2000 {
                fa.set_len(0).unwrap();
            }
            let mut s = space.lock().unwrap();
            let grant = if i % 2 == 0 { &gb } else { &ga };
            match s.map_buffer(2 * p, grant, 0, p, Protection::Read) {
                Ok(()) => {}
                Err(Error::BufferTruncated { id }) if id == a.id().0 && i > 2000 => {
                    s.unmap(2 * p, p).unwrap();
                }
                Err(e) => panic!("remap {i}: {e}"),
            }
            if i % 500 == 0 {
                s.validate().unwrap();
            }
        }
        drop(stopper);
        reader.join().unwrap()
    });
    assert!(seen.iter().all(|v| [1, 7].contains(v)), "only file bytes: {seen:?}");
    println!("loads saw {seen:?}, {faults} faulted; {} SIGBUS absorbed", a.truncation_events());
    let mut s = space.lock().unwrap();
    s.validate().unwrap();
    s.reconcile().unwrap();
    s.validate().unwrap();
    assert!(b.truncation_events() == 0 && !b.is_truncated(), "the other buffer is untouched");
}

#[test]
fn windows_of_unsealed_buffers_split_and_release_cleanly() {
    let p = page();
    let file = temp_file(8);
    let buffer = SharedBuffer::from_fd(file, 8 * p).unwrap();
    let space = shared_space(16);
    let grant = buffer.grant(host(&space)).unwrap();
    let mut s = space.lock().unwrap();
    s.map_buffer(0, &grant, 0, 8 * p, Protection::ReadWrite).unwrap();
    s.unmap(3 * p, 2 * p).unwrap();
    s.map_buffer(4 * p, &grant, 0, p, Protection::Read).unwrap();
    s.write(7 * p, b"through the view").unwrap();
    let mut back = [0u8; 16];
    buffer.read(7 * p, &mut back).unwrap();
    assert_eq!(&back, b"through the view");
    s.read(4 * p, &mut back[..4]).unwrap();
    assert_eq!(back[..4], [1; 4]);
    s.validate().unwrap();
    s.unmap_buffer(buffer.id()).unwrap();
    assert_eq!(s.summary().unwrap().bytes[FrameTag::Shared], 0);
    s.validate().unwrap();
    assert!(!buffer.is_truncated());
}

/// Re-runs this test binary's test `name` in a child process in mode `mode`.
fn run_child(name: &str, mode: &str) -> std::process::ExitStatus {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
}

/// Maps one page of a file of our own (not registered with the guard),
/// truncates the file and touches the page: a SIGBUS that is not framemap's.
fn foreign_sigbus() {
    let file = temp_file(1);
    // SAFETY: a fresh shared mapping of our own file at a kernel-chosen address.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            page() as usize,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            &file,
            0,
        )
    }
    .unwrap();
    file.set_len(0).unwrap();
    // SAFETY: the page is mapped; reading it past the file's end raises SIGBUS.
    let _ = unsafe { std::ptr::read_volatile(ptr.cast::<u8>()) };
}

/// The guard survives its own faults, then a foreign fault: with no handler
/// before ours but Rust's (which acts as SIG_DFL here), the child dies of
/// SIGBUS as it would have without framemap.
#[test]
fn a_foreign_sigbus_still_kills_with_sigbus() {
    if std::env::var(CHILD).as_deref() == Ok("default") {
        let file = temp_file(2);
        let buffer = SharedBuffer::from_fd(file.try_clone().unwrap(), 2 * page()).unwrap();
        file.set_len(0).unwrap();
        assert!(matches!(buffer.read(page(), &mut [0u8; 4]), Err(Error::BufferTruncated { .. })));
        foreign_sigbus();
        std::process::exit(0); // not reached
    }
    let status = run_child("a_foreign_sigbus_still_kills_with_sigbus", "default");
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}

/// A SIGBUS handler installed before the guard still sees foreign faults.
#[test]
fn a_foreign_sigbus_reaches_the_previous_handler() {
    extern "C" fn previous(_: i32, info: *mut libc::siginfo_t, _: *mut std::ffi::c_void) {
        // SAFETY: a valid siginfo from the kernel (forwarded by the guard).
        let code = unsafe { (*info).si_code };
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(if code == libc::BUS_ADRERR { 42 } else { 43 }) };
    }
    if std::env::var(CHILD).as_deref() == Ok("previous") {
        // SAFETY: installing a plain SA_SIGINFO handler in this child.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = previous as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()), 0);
        }
        let file = temp_file(2);
        let buffer = SharedBuffer::from_fd(file.try_clone().unwrap(), 2 * page()).unwrap();
        file.set_len(0).unwrap();
        assert!(matches!(buffer.write(0, b"x"), Err(Error::BufferTruncated { .. })), "ours are still absorbed");
        foreign_sigbus();
        std::process::exit(0); // not reached
    }
    let status = run_child("a_foreign_sigbus_reaches_the_previous_handler", "previous");
    assert_eq!(status.code(), Some(42), "{status:?}");
}

/// One memory cannot take the SIGBUS guard's whole registry: past its share
/// of windows of unsealed buffers it is refused, and another memory can still
/// map them.
#[test]
fn one_memory_holds_at_most_its_share_of_guarded_windows() {
    let share = framemap::GUARD_SHARE as u64;
    let greedy = shared_space(2 * share + 4);
    let buffer = SharedBuffer::from_fd(temp_file(1), page()).unwrap();
    assert!(!buffer.is_sealed());
    let grant = buffer.grant(host(&greedy)).unwrap();
    let mut space = greedy.lock().unwrap();
    // Every other page: separate runs, each one registered range.
    for i in 0..share {
        space.map_buffer(2 * i * page(), &grant, 0, page(), Protection::Read).unwrap();
    }
    let err = space.map_buffer(2 * share * page(), &grant, 0, page(), Protection::Read).unwrap_err();
    assert!(matches!(err, Error::GuardShare { held, share: s } if held == share as usize && s == share as usize));
    space.validate().unwrap();
    // Unmapping one window gives its range back.
    space.unmap(0, page()).unwrap();
    space.map_buffer(2 * share * page(), &grant, 0, page(), Protection::Read).unwrap();
    drop(space);
    let other = shared_space(4);
    let grant = buffer.grant(host(&other)).unwrap();
    other.lock().unwrap().map_buffer(0, &grant, 0, page(), Protection::Read).unwrap();
}
