//! `LinearSpace` against the real kernel: every operation keeps the frame
//! table equal to `/proc/self/maps`, and every bad input is an error that
//! changes nothing.

use framemap::{Error, Frame, FrameTag, LinearSpace, PageRange, Protection, ResetPolicy, SpaceConfig};

fn page() -> u64 {
    framemap::host_page_size() as u64
}

fn space(capacity_pages: u64, guard_pages: u64, initial_pages: u64) -> LinearSpace {
    let p = page();
    let s = LinearSpace::new(SpaceConfig {
        capacity: capacity_pages * p,
        guard: guard_pages * p,
        initial_len: initial_pages * p,
    })
    .expect("create space");
    s.validate().expect("fresh space validates");
    s
}

fn byte(s: &LinearSpace, offset: u64) -> u8 {
    let mut b = [0u8];
    s.read(offset, &mut b).expect("readable");
    b[0]
}

#[test]
fn new_space_is_zeroed_read_write_then_unmapped() {
    let p = page();
    let s = space(64, 16, 4);
    assert_eq!(s.len(), 4 * p);
    let runs: Vec<_> = s.table().runs().collect();
    assert_eq!(
        runs,
        vec![(PageRange::new(0, 4), Frame::zero(Protection::ReadWrite)), (PageRange::new(4, 80), Frame::UNMAPPED)]
    );
    assert_eq!(byte(&s, 4 * p - 1), 0);
}

#[test]
fn bad_geometry_is_rejected() {
    let p = page();
    let err = |c| LinearSpace::new(c).unwrap_err();
    assert!(matches!(err(SpaceConfig { capacity: 0, guard: 0, initial_len: 0 }), Error::InvalidSize { .. }));
    assert!(matches!(
        err(SpaceConfig { capacity: p + 1, guard: 0, initial_len: 0 }),
        Error::InvalidSize { what: "capacity", .. }
    ));
    assert!(matches!(
        err(SpaceConfig { capacity: p, guard: 3, initial_len: 0 }),
        Error::InvalidSize { what: "guard size", .. }
    ));
    assert!(matches!(err(SpaceConfig { capacity: p, guard: 0, initial_len: 2 * p }), Error::CapacityExceeded { .. }));
    let huge = u64::MAX - u64::MAX % p;
    assert!(matches!(err(SpaceConfig { capacity: huge, guard: huge, initial_len: 0 }), Error::Overflow { .. }));
    assert!(matches!(err(SpaceConfig { capacity: huge, guard: 0, initial_len: 0 }), Error::Overflow { .. }));
    // A zero-capacity memory with a guard is valid: it can never grow.
    let mut s = LinearSpace::new(SpaceConfig { capacity: 0, guard: p, initial_len: 0 }).unwrap();
    assert!(matches!(s.grow_to(1), Err(Error::CapacityExceeded { .. })));
}

#[test]
fn grow_maps_zero_pages_without_moving() {
    let p = page();
    let mut s = space(64, 4, 1);
    let base = s.base();
    s.write(0, &[7; 16]).unwrap();
    s.grow_to(10 * p).unwrap();
    assert_eq!(s.base(), base);
    assert_eq!(byte(&s, 0), 7);
    assert_eq!(byte(&s, 10 * p - 1), 0);
    s.validate().unwrap();
    assert!(
        matches!(s.grow_to(65 * p), Err(Error::CapacityExceeded { requested, capacity }) if requested == 65 * p && capacity == 64 * p)
    );
    assert!(matches!(s.grow_to(p), Err(Error::Shrink { .. })));
    assert_eq!(s.len(), 10 * p, "failed growth changes nothing");
    s.grow_to(64 * p).unwrap();
    s.validate().unwrap();
}

#[test]
fn byte_granular_sizes_map_whole_pages() {
    // Custom page sizes: a 1-byte-page memory of 3 bytes maps one host page.
    let mut s = LinearSpace::new(SpaceConfig { capacity: 4 * page(), guard: 0, initial_len: 3 }).unwrap();
    assert_eq!(s.accessible_pages(), PageRange::new(0, 1));
    s.write(0, &[1, 2, 3]).unwrap();
    assert!(matches!(s.write(3, &[4]), Err(Error::OutOfBounds { .. })));
    s.grow_to(page() + 1).unwrap();
    assert_eq!(s.accessible_pages(), PageRange::new(0, 2));
    s.validate().unwrap();
}

#[test]
fn protect_changes_access_and_keeps_contents() {
    let p = page();
    let mut s = space(16, 0, 8);
    s.write(2 * p, b"frame").unwrap();
    s.protect(2 * p, 2 * p, Protection::Read).unwrap();
    s.validate().unwrap();
    assert!(matches!(s.write(3 * p, b"x"), Err(Error::Protected { operation: "write", prot: Protection::Read, .. })));
    let mut buf = [0u8; 5];
    s.read(2 * p, &mut buf).unwrap();
    assert_eq!(&buf, b"frame");
    s.protect(2 * p, p, Protection::None).unwrap();
    assert!(matches!(s.read(2 * p, &mut buf), Err(Error::Protected { operation: "read", .. })));
    s.validate().unwrap();
    assert_eq!(s.table().run_count(), 5);
    s.protect(0, 8 * p, Protection::ReadWrite).unwrap();
    assert_eq!(s.table().run_count(), 2, "restoring protection re-coalesces");
    s.read(2 * p, &mut buf).unwrap();
    assert_eq!(&buf, b"frame");
    s.validate().unwrap();
}

#[test]
fn bad_ranges_are_rejected_and_change_nothing() {
    let p = page();
    let mut s = space(16, 4, 4);
    let before = s.table().clone();
    assert!(matches!(s.protect(1, p, Protection::Read), Err(Error::Misaligned { .. })));
    assert!(matches!(s.protect(0, p + 1, Protection::Read), Err(Error::Misaligned { .. })));
    assert!(matches!(s.protect(u64::MAX - p + 1, 2 * p, Protection::Read), Err(Error::Overflow { .. })));
    assert!(matches!(s.protect(4 * p, p, Protection::Read), Err(Error::OutOfBounds { .. })));
    assert!(matches!(s.discard(0, 5 * p), Err(Error::OutOfBounds { .. })));
    assert!(matches!(s.discard(p / 2, p), Err(Error::Misaligned { .. })));
    assert!(matches!(s.read(4 * p - 1, &mut [0u8; 2]), Err(Error::OutOfBounds { .. })));
    assert!(matches!(s.write(u64::MAX, &[1]), Err(Error::Overflow { .. })));
    assert_eq!(s.table(), &before);
    s.protect(0, 0, Protection::Read).unwrap();
    assert_eq!(s.table(), &before, "an empty range is a no-op");
    s.validate().unwrap();
}

#[test]
fn protect_past_a_reset_size_is_refused() {
    let p = page();
    let mut s = space(16, 0, 4);
    s.reset(2 * p, None, ResetPolicy::default()).unwrap();
    // Pages 2..4 are beyond the new size: out of bounds, not merely unmapped.
    assert!(matches!(s.protect(0, 4 * p, Protection::Read), Err(Error::OutOfBounds { .. })));
    s.grow_to(4 * p).unwrap();
    s.validate().unwrap();
}

#[test]
fn discard_zeroes_whatever_the_protection() {
    let p = page();
    let mut s = space(16, 0, 8);
    s.write(0, &[0xaa; 4096]).unwrap();
    s.write(5 * p, &[0xbb; 10]).unwrap();
    s.protect(5 * p, p, Protection::Read).unwrap();
    s.discard(0, 8 * p).unwrap();
    assert_eq!(byte(&s, 0), 0);
    assert_eq!(byte(&s, 5 * p), 0);
    assert_eq!(s.table().get(5).unwrap().1, Frame::zero(Protection::Read), "discard keeps protection");
    s.validate().unwrap();
}

#[test]
fn reset_zeroes_dirty_pages_and_restores_layout() {
    let p = page();
    let mut s = space(256, 16, 8);
    for i in 0..8 {
        s.write(i * p + 17, &[i as u8 + 1]).unwrap();
    }
    s.grow_to(64 * p).unwrap();
    s.write(40 * p, &[9]).unwrap();
    s.protect(3 * p, p, Protection::Read).unwrap();
    let report = s.reset(8 * p, None, ResetPolicy { keep_resident: 4 * p, ..ResetPolicy::default() }).unwrap();
    s.validate().unwrap();
    assert_eq!(s.len(), 8 * p);
    let runs: Vec<_> = s.table().runs().collect();
    assert_eq!(
        runs,
        vec![(PageRange::new(0, 8), Frame::zero(Protection::ReadWrite)), (PageRange::new(8, 272), Frame::UNMAPPED)]
    );
    for i in 0..8 {
        assert_eq!(byte(&s, i * p + 17), 0, "page {i} zeroed");
    }
    s.grow_to(64 * p).unwrap();
    assert_eq!(byte(&s, 40 * p), 0, "pages beyond the reset size come back zero");
    if report.scanned {
        // 8 written pages + page 40 (which the reset scanned before unmapping).
        assert_eq!(report.dirty, 9 * p, "{report:?}");
        assert_eq!(report.zeroed_in_place, 4 * p, "{report:?}");
        assert_eq!(report.dropped, 5 * p, "{report:?}");
    } else {
        assert_eq!(report.zeroed_in_place, 0);
    }
}

#[test]
fn reset_work_follows_dirty_pages_not_size() {
    if !framemap::testing::feature_present(
        framemap::pagemap_scan_supported(),
        "PAGEMAP_SCAN",
        "FRAMEMAP_REQUIRE_PAGEMAP_SCAN",
    ) {
        return;
    }
    let p = page();
    // A 1 GiB accessible memory with 3 dirty pages: the reset must find exactly 3.
    let gib = (1u64 << 30) / p;
    let mut s = space(gib, 0, gib);
    for i in [0, gib / 2, gib - 1] {
        s.write(i * p, &[1]).unwrap();
    }
    let mut read = [0u8];
    s.read(100 * p, &mut read).unwrap(); // a read maps the shared zero page: not dirty
    let report = s.reset(gib * p, None, ResetPolicy::default()).unwrap();
    assert_eq!(report.dirty, 3 * p);
    assert_eq!(report.zeroed_in_place, 3 * p);
    assert_eq!(s.summary().unwrap().resident[FrameTag::Zero], 3 * p, "in-place pages stay resident");
}

#[test]
fn summary_counts_runs_bytes_and_residency() {
    let p = page();
    let mut s = space(32, 8, 8);
    s.write(0, &vec![1u8; (2 * p) as usize]).unwrap();
    s.protect(4 * p, p, Protection::None).unwrap();
    let sum = s.summary().unwrap();
    let (z, u) = (FrameTag::Zero, FrameTag::Unmapped);
    assert_eq!(sum.runs[z], 3);
    assert_eq!(sum.runs[u], 1);
    assert_eq!(sum.bytes[z], 8 * p);
    assert_eq!(sum.bytes[u], 32 * p);
    assert_eq!(sum.resident[z], 2 * p);
    assert_eq!(sum.resident[u], 0);
    let text = sum.to_string();
    assert!(text.contains("zero") && text.contains("unmapped"), "{text}");
}

#[test]
fn validate_detects_a_mapping_changed_behind_the_tables_back() {
    let p = page();
    let s = space(8, 0, 4);
    // Change the kernel's view without telling the table.
    // SAFETY: the range is inside `s`'s reservation and nothing references it.
    let rc = unsafe { libc_mprotect(s.base().as_ptr(), p as usize) };
    assert_eq!(rc, 0);
    let err = s.validate().unwrap_err();
    assert!(matches!(err, Error::Diverged { start: 0, .. }), "{err}");
}

/// `mprotect(addr, len, PROT_READ)` through rustix, to desynchronise on purpose.
unsafe fn libc_mprotect(addr: *mut u8, len: usize) -> i32 {
    // SAFETY: forwarded from the caller.
    match unsafe { rustix::mm::mprotect(addr.cast(), len, rustix::mm::MprotectFlags::READ) } {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

#[test]
fn reset_without_a_dirty_scan_drops_everything_and_is_still_correct() {
    let p = page();
    let mut s = space(64, 0, 16);
    for i in 0..16 {
        s.write(i * p, &[0xcc; 64]).unwrap();
    }
    s.protect(2 * p, p, Protection::None).unwrap();
    let report = s.reset(16 * p, None, ResetPolicy { scan_dirty: false, ..ResetPolicy::default() }).unwrap();
    assert!(!report.scanned);
    assert_eq!((report.zeroed_in_place, report.dropped), (0, 16 * p));
    for i in 0..16 {
        assert_eq!(byte(&s, i * p), 0, "page {i}");
    }
    assert_eq!(s.summary().unwrap().resident[FrameTag::Zero], 0, "dropped pages are no longer resident");
    s.validate().unwrap();
}
