//! Kernel failures never leave the frame table lying (ARCHITECTURE.md,
//! invariant 6; `LinearSpace` invariant 8): for every public operation that
//! makes system calls, and for every N, the N-th call fails (`ENOMEM`,
//! `EAGAIN`, `EINTR`), and the table must then equal `/proc/self/maps`, and
//! the space must keep working.
//!
//! Runs with the `fault-injection` feature, which this crate's own
//! dev-dependency on itself turns on for its tests.

mod common;

use common::{host, page, shared_space};
use framemap::fault_injection::{disarm, fail_nth, fired};
use framemap::snapshot::{Digest, Resolver, RestoreOptions, Snapshot, SnapshotWriter};
use framemap::{BufferGrant, Image, LinearSpace, PageRange, Prefetch, Protection, ResetPolicy, SharedBuffer};
use std::sync::{Arc, Mutex};

struct Fixture {
    space: Arc<Mutex<LinearSpace>>,
    image: Image,
    sealed: SharedBuffer,
    unsealed: SharedBuffer,
    grants: Vec<BufferGrant>,
    /// The space as the fixture made it.
    snapshot: Snapshot,
    /// The same, with a working set over every kind of run.
    with_working_set: Snapshot,
}

impl Fixture {
    /// Names the fixture's two buffers.
    fn name(&self, buffer: &SharedBuffer) -> Option<String> {
        [(&self.sealed, "sealed"), (&self.unsealed, "unsealed")]
            .iter()
            .find(|(b, _)| b.id() == buffer.id())
            .map(|(_, n)| n.to_string())
    }
}

impl Resolver for &Fixture {
    fn image(&mut self, _: &Digest) -> Option<Image> {
        Some(self.image.clone())
    }
    fn buffer(&mut self, name: &str) -> Option<BufferGrant> {
        Some(self.grants[if name == "sealed" { 0 } else { 1 }].clone())
    }
}

/// A space of 32 accessible pages (room for 48) holding one of everything:
/// image pages (one dirtied), a sealed and an unsealed buffer window, a
/// read-only run, a hole, and written zero pages.
fn fixture() -> Fixture {
    let p = page();
    let space = shared_space(48);
    let image = Image::from_segments(8 * p, [(0, &b"image bytes"[..]), (5 * p, &[7u8; 100][..])]).unwrap();
    let sealed = SharedBuffer::new(4 * p).unwrap();
    let file = tempfile();
    file.set_len(4 * p).unwrap();
    let unsealed = SharedBuffer::from_fd(file, 4 * p).unwrap();
    let grants = vec![sealed.grant(host(&space)).unwrap(), unsealed.grant(host(&space)).unwrap()];
    {
        let mut s = space.lock().unwrap();
        s.restore_layout(32 * p, Some(&image)).unwrap();
        s.map_buffer(8 * p, &grants[0], 0, 4 * p, Protection::ReadWrite).unwrap();
        s.map_buffer(12 * p, &grants[1], 0, 4 * p, Protection::ReadWrite).unwrap();
        s.protect(16 * p, 2 * p, Protection::Read).unwrap();
        s.unmap(20 * p, 2 * p).unwrap();
        s.write(0, b"dirty").unwrap();
        s.write(24 * p, b"written").unwrap();
        s.validate().unwrap();
    }
    let ids = (sealed.id(), unsealed.id());
    let names = move |b: &SharedBuffer| match b.id() {
        id if id == ids.0 => Some("sealed".to_string()),
        id if id == ids.1 => Some("unsealed".to_string()),
        _ => None,
    };
    let mut writer = SnapshotWriter::in_memory().unwrap();
    writer.capture("0", &mut space.lock().unwrap(), &names).unwrap();
    let snapshot = writer.finish_in_memory().unwrap();
    let mut writer = SnapshotWriter::in_memory().unwrap();
    let working_set = [PageRange::new(0, 4), PageRange::new(10, 26)];
    writer.capture_with_working_set("0", &mut space.lock().unwrap(), &names, &working_set).unwrap();
    let with_working_set = writer.finish_in_memory().unwrap();
    Fixture { space, image, sealed, unsealed, grants, snapshot, with_working_set }
}

fn tempfile() -> std::fs::File {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("framemap-inject-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let path = std::env::temp_dir().join(name);
    let file = std::fs::File::options().read(true).write(true).create_new(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

type Op = fn(&Fixture) -> framemap::Result<()>;

fn ops() -> Vec<(&'static str, Op)> {
    vec![
        ("grow_to", |f| f.space.lock().unwrap().grow_to(40 * page())),
        ("protect across runs", |f| f.space.lock().unwrap().protect(4 * page(), 12 * page(), Protection::Read)),
        ("protect inside a run", |f| f.space.lock().unwrap().protect(page(), page(), Protection::None)),
        ("map_image", |f| {
            f.space.lock().unwrap().map_image(2 * page(), &f.image, 0, 4 * page(), Protection::ReadWrite)
        }),
        ("map_buffer sealed", |f| {
            f.space.lock().unwrap().map_buffer(22 * page(), &f.grants[0], 0, 4 * page(), Protection::Read)
        }),
        ("map_buffer unsealed over a window", |f| {
            f.space.lock().unwrap().map_buffer(10 * page(), &f.grants[1], 0, 4 * page(), Protection::ReadWrite)
        }),
        ("map_zero over everything", |f| f.space.lock().unwrap().map_zero(0, 32 * page(), Protection::ReadWrite)),
        ("unmap", |f| f.space.lock().unwrap().unmap(10 * page(), 6 * page())),
        ("unmap_buffer", |f| {
            let id = f.unsealed.id();
            f.space.lock().unwrap().unmap_buffer(id)
        }),
        ("revoke", |f| f.sealed.revoke().map(drop)),
        ("discard", |f| f.space.lock().unwrap().discard(0, 8 * page())),
        ("restore_dirty", |f| f.space.lock().unwrap().restore_dirty(ResetPolicy::default()).map(drop)),
        ("restore_dirty without scan", |f| {
            let policy = ResetPolicy { scan_dirty: false, ..ResetPolicy::default() };
            f.space.lock().unwrap().restore_dirty(policy).map(drop)
        }),
        ("reset", |f| f.space.lock().unwrap().reset(16 * page(), Some(&f.image), ResetPolicy::default()).map(drop)),
        ("restore_layout", |f| f.space.lock().unwrap().restore_layout(16 * page(), Some(&f.image))),
        ("checkpoint", |f| f.space.lock().unwrap().checkpoint().map(drop)),
        ("capture", |f| {
            let mut writer = SnapshotWriter::in_memory()?;
            f.space.lock().unwrap().write(5 * page(), b"more")?;
            writer.capture("0", &mut f.space.lock().unwrap(), &|b| f.name(b))?;
            writer.finish_in_memory().map(drop)
        }),
        ("restore", |f| {
            let mut resolver = f;
            f.space.lock().unwrap().restore(&f.snapshot, "0", &mut resolver)
        }),
        ("populate", |f| f.space.lock().unwrap().populate(&[PageRange::new(0, 8), PageRange::new(24, 30)]).map(drop)),
        ("restore prefetching a working set", |f| {
            let mut resolver = f;
            let report = f.space.lock().unwrap().restore_with(
                &f.with_working_set,
                "0",
                &mut resolver,
                RestoreOptions::default(),
            )?;
            // A failed prefetch is reported, never the restore's failure.
            assert!(report.error.is_some() || report.complete(), "{report:?}");
            Ok(())
        }),
        ("prefetch for writing", |f| {
            let report = f.space.lock().unwrap().prefetch(&[PageRange::new(0, 32)], Prefetch::Write);
            report.error.map_or(Ok(()), Err)
        }),
        ("touched_pages", |f| f.space.lock().unwrap().touched_pages().map(drop)),
    ]
}

#[test]
fn every_kernel_failure_leaves_a_true_table() {
    let mut pairs = 0;
    for errno in [libc_enomem(), libc_eagain(), libc_eintr()] {
        for (name, op) in ops() {
            let mut n = 1;
            loop {
                let f = fixture();
                fail_nth(n, errno);
                let result = op(&f);
                let hit = fired();
                let calls = disarm();
                assert!(calls > 0, "{name} made no system call that can fail");
                let context = format!("{name}, call {n} of {calls} failing with errno {errno} ({result:?})");
                let mut space = f.space.lock().unwrap();
                space.reconcile().unwrap_or_else(|e| panic!("{context}: reconcile: {e}"));
                space.validate().unwrap_or_else(|e| panic!("{context}: {e}"));
                // The space still works: every accessible page can be mapped
                // again, and the table still equals the kernel.
                let len = space.len();
                space.map_zero(0, len.next_multiple_of(page()), Protection::ReadWrite).unwrap();
                space.write(0, b"alive").unwrap();
                space.validate().unwrap_or_else(|e| panic!("{context}, then map_zero: {e}"));
                drop(space);
                if !hit {
                    break; // N is past the operation's last call
                }
                pairs += 1;
                n += 1;
            }
        }
    }
    println!("fault injection: {pairs} (operation, N, errno) failures injected, table validated after each");
    assert!(pairs >= 3 * ops().len(), "{pairs} failures injected");
}

#[test]
fn a_failed_replacement_leaves_the_range_unmapped() {
    let f = fixture();
    let p = page();
    fail_nth(1, libc_enomem());
    let error = f.space.lock().unwrap().map_image(24 * p, &f.image, 0, 4 * p, Protection::ReadWrite).unwrap_err();
    disarm();
    assert!(matches!(error, framemap::Error::Kernel { syscall: "mmap", .. }), "{error:?}");
    let space = f.space.lock().unwrap();
    let tags: Vec<_> = space.table().runs_in(PageRange::new(24, 28)).map(|(_, f)| f.tag()).collect();
    assert_eq!(tags, [framemap::FrameTag::Unmapped]);
    space.validate().unwrap();
}

/// A backing attached for a mapping that failed in the kernel is not kept
/// (no leak): a fresh image, never mapped before, is let go.
#[test]
fn a_failed_mapping_keeps_no_backing_it_attached() {
    let f = fixture();
    let p = page();
    let fresh = Image::from_bytes(b"fresh").unwrap();
    fail_nth(1, libc_enomem());
    let error = f.space.lock().unwrap().map_image(24 * p, &fresh, 0, p, Protection::ReadWrite).unwrap_err();
    disarm();
    assert!(matches!(error, framemap::Error::Kernel { syscall: "mmap", .. }), "{error:?}");
    let mut space = f.space.lock().unwrap();
    assert!(!space.holds_image(fresh.id()), "a failed mapping kept its image");
    assert!(space.holds_image(f.image.id()), "the image still mapped is kept");
    space.validate().unwrap();
    space.map_image(24 * p, &fresh, 0, p, Protection::ReadWrite).unwrap();
    assert!(space.holds_image(fresh.id()));
}

#[test]
fn a_failed_protect_changes_nothing() {
    let f = fixture();
    let p = page();
    let before: Vec<_> = f.space.lock().unwrap().table().runs().collect();
    fail_nth(1, libc_enomem());
    let error = f.space.lock().unwrap().protect(4 * p, 12 * p, Protection::Read).unwrap_err();
    disarm();
    assert!(matches!(error, framemap::Error::Kernel { syscall: "mprotect", .. }), "{error:?}");
    let space = f.space.lock().unwrap();
    assert_eq!(space.table().runs().collect::<Vec<_>>(), before);
    space.validate().unwrap();
}

#[test]
fn a_revocation_that_fails_in_the_kernel_still_removes_the_window() {
    let f = fixture();
    fail_nth(1, libc_enomem());
    let error = f.sealed.revoke().unwrap_err();
    disarm();
    assert!(matches!(error, framemap::Error::Revocation { failed: 1, told: 1, .. }), "{error:?}");
    let space = f.space.lock().unwrap();
    let tags: Vec<_> = space.table().runs_in(PageRange::new(8, 12)).map(|(_, f)| f.tag()).collect();
    assert_eq!(tags, [framemap::FrameTag::Unmapped]);
    space.validate().unwrap();
}

fn libc_enomem() -> i32 {
    rustix::io::Errno::NOMEM.raw_os_error()
}

fn libc_eagain() -> i32 {
    rustix::io::Errno::AGAIN.raw_os_error()
}

fn libc_eintr() -> i32 {
    rustix::io::Errno::INTR.raw_os_error()
}

/// A checkpoint's scan is one walk per stretch (an image run, then a long
/// zero run with the anonymous query): whichever of its system calls fails,
/// after earlier stretches were already write-protected or not, no written
/// page is hidden, neither from the next checkpoint nor from a reset.
#[test]
fn a_checkpoint_failing_in_any_stretch_hides_no_written_page() {
    if !framemap::testing::feature_present(
        framemap::pagemap_scan_supported(),
        "PAGEMAP_SCAN",
        "FRAMEMAP_REQUIRE_PAGEMAP_SCAN",
    ) {
        return;
    }
    let p = page();
    let initial = |page: u64| if page < 4 { 7u8 } else { 0 };
    let mut n = 1;
    loop {
        let image = Image::from_bytes(&vec![7u8; 4 * p as usize]).unwrap();
        let mut space =
            LinearSpace::new(framemap::SpaceConfig { capacity: 1024 * p, guard: 0, initial_len: 1024 * p }).unwrap();
        space.map_image(0, &image, 0, 4 * p, Protection::ReadWrite).unwrap();
        space.checkpoint().unwrap();
        for page in [1, 600] {
            space.write(page * p, b"before").unwrap();
        }
        fail_nth(n, libc_enomem());
        let result = space.checkpoint();
        let hit = fired();
        disarm();
        let context = format!("call {n} of the checkpoint failing ({result:?})");
        if let Ok(checkpoint) = result {
            for page in [2, 700] {
                space.write(page * p, b"after").unwrap();
            }
            let changed = space.changed_since(&checkpoint).unwrap();
            for page in [2, 700] {
                assert!(
                    changed.iter().any(|r| r.start <= page && page < r.end),
                    "{context}: {page} not in {changed:?}"
                );
            }
        }
        space.restore_dirty(ResetPolicy::default()).unwrap();
        for page in [1, 2, 600, 700] {
            let mut byte = [0u8];
            space.read(page * p, &mut byte).unwrap();
            assert_eq!(byte[0], initial(page), "{context}: page {page} kept its written bytes after a reset");
        }
        space.validate().unwrap_or_else(|e| panic!("{context}: {e}"));
        if !hit {
            break;
        }
        n += 1;
    }
    println!("checkpoint: {} system calls, each failed in turn", n - 1);
    assert!(n > 2, "the checkpoint made {} system calls: its scan was not split", n - 1);
}
