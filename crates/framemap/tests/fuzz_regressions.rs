//! Regression tests for bugs the fuzz targets (`fuzz/`) found: each replays
//! the operations of a minimised crash input.

use framemap::{LinearSpace, Protection, ResetPolicy, SpaceConfig};

fn page() -> u64 {
    framemap::host_page_size() as u64
}

fn space(capacity_pages: u64, initial_pages: u64) -> LinearSpace {
    let p = page();
    LinearSpace::new(SpaceConfig { capacity: capacity_pages * p, guard: 0, initial_len: initial_pages * p })
        .expect("create space")
}

/// memory_ops: a `reset` whose length exceeds the capacity is refused, but
/// only after it has zeroed the dirty pages, so the refused call changed the
/// memory's contents (space/mod.rs: "a rejected call changes nothing").
#[test]
fn refused_reset_changes_nothing() {
    let p = page();
    let mut s = space(4, 2);
    s.write(0, b"kept").unwrap();
    for policy in [ResetPolicy::default(), ResetPolicy { keep_resident: 0, scan_dirty: false }] {
        assert!(s.reset(5 * p, None, policy).is_err(), "a length past the capacity is refused");
        let mut buf = [0u8; 4];
        s.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"kept", "the refused reset ({policy:?}) left the contents alone");
    }
}

/// memory_ops: an empty write is refused when its offset falls inside a page
/// that is not writable, though it targets no byte (`write`: "Refused if any
/// target byte is not writable"); at a page-aligned offset it is accepted.
#[test]
fn empty_access_targets_no_page() {
    let p = page();
    let mut s = space(4, 2);
    s.protect(0, p, Protection::None).unwrap();
    assert!(s.write(0, &[]).is_ok());
    assert!(s.write(1, &[]).is_ok(), "an empty write touches no byte");
    assert!(s.read(1, &mut []).is_ok(), "an empty read touches no byte");
}
