//! Windows: host-shared buffers, images and zero pages mapped at arbitrary
//! page offsets of one memory, unmapped and revoked, with the frame table
//! equal to the kernel after every operation.

mod common;

use common::{host, page, shared_space};
use framemap::{
    Error, Frame, FrameKind, FrameTag, LinearSpace, PageRange, Protection, ResetPolicy, SharedBuffer, SpaceConfig,
};

fn read(s: &LinearSpace, offset: u64, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read(offset, &mut buf).unwrap();
    buf
}

#[test]
fn windows_share_bytes_with_the_host_and_each_other() {
    let p = page();
    let buffer = SharedBuffer::new(4 * p).unwrap();
    let space = shared_space(16);
    let grant = buffer.grant(host(&space)).unwrap();
    let mut s = space.lock().unwrap();
    // The same buffer page at two guest offsets, and a second range elsewhere.
    s.map_buffer(2 * p, &grant, 0, p, Protection::ReadWrite).unwrap();
    s.map_buffer(9 * p, &grant, 0, 2 * p, Protection::Read).unwrap();
    s.validate().unwrap();
    buffer.write(10, b"from host").unwrap();
    assert_eq!(read(&s, 2 * p + 10, 9), b"from host");
    assert_eq!(read(&s, 9 * p + 10, 9), b"from host");
    s.write(2 * p + 100, b"from guest").unwrap();
    let mut back = [0u8; 10];
    buffer.read(100, &mut back).unwrap();
    assert_eq!(&back, b"from guest", "guest writes reach the host");
    assert_eq!(read(&s, 9 * p + 100, 10), b"from guest", "and every other window");
    assert!(matches!(s.write(9 * p, b"x"), Err(Error::Protected { .. })));
    assert_eq!(s.table().get(10).unwrap().1, Frame::shared(buffer.id(), 1, Protection::Read));
}

#[test]
fn a_magic_ring_buffer_reads_across_the_seam() {
    let p = page();
    let buffer = SharedBuffer::new(2 * p).unwrap();
    let space = shared_space(8);
    let grant = buffer.grant(host(&space)).unwrap();
    let mut s = space.lock().unwrap();
    s.map_buffer(0, &grant, 0, 2 * p, Protection::ReadWrite).unwrap();
    s.map_buffer(2 * p, &grant, 0, 2 * p, Protection::ReadWrite).unwrap();
    s.validate().unwrap();
    assert_eq!(s.table().run_count(), 4, "two windows of one buffer stay two runs (offsets restart), then zero, guard");
    buffer.write(2 * p - 3, b"end").unwrap();
    buffer.write(0, b"start").unwrap();
    assert_eq!(read(&s, 2 * p - 3, 8), b"endstart", "one contiguous read across the seam");
}

#[test]
fn revocation_unmaps_every_window_in_every_memory() {
    let p = page();
    let buffer = SharedBuffer::new(2 * p).unwrap();
    let (a, b) = (shared_space(8), shared_space(8));
    let (ga, gb) = (buffer.grant(host(&a)).unwrap(), buffer.grant(host(&b)).unwrap());
    a.lock().unwrap().map_buffer(p, &ga, 0, 2 * p, Protection::ReadWrite).unwrap();
    b.lock().unwrap().map_buffer(4 * p, &gb, p, p, Protection::Read).unwrap();
    buffer.write(p, b"shared").unwrap();
    assert_eq!(read(&b.lock().unwrap(), 4 * p, 6), b"shared");

    assert_eq!(buffer.revoke().unwrap(), 2);
    for (space, window) in [(&a, PageRange::new(1, 3)), (&b, PageRange::new(4, 5))] {
        let s = space.lock().unwrap();
        s.validate().unwrap();
        for (run, frame) in s.table().runs_in(window) {
            assert_eq!(frame, Frame::UNMAPPED, "{run}");
        }
        assert_eq!(s.summary().unwrap().runs[FrameTag::Shared], 0);
        assert!(matches!(s.read(window.start * p, &mut [0]), Err(Error::Protected { .. })));
    }
    assert!(matches!(buffer.read(0, &mut [0]), Err(Error::Revoked { .. })));
    assert!(matches!(buffer.write(0, b"x"), Err(Error::Revoked { .. })));
    assert!(matches!(buffer.grant(host(&a)), Err(Error::Revoked { .. })));
    assert!(matches!(a.lock().unwrap().map_buffer(0, &ga, 0, p, Protection::Read), Err(Error::Revoked { .. })));
}

#[test]
fn unmap_and_map_zero_make_holes_and_fill_them() {
    let p = page();
    let mut s = LinearSpace::new(SpaceConfig { capacity: 16 * p, guard: 0, initial_len: 8 * p }).unwrap();
    s.write(3 * p, b"gone").unwrap();
    s.unmap(2 * p, 2 * p).unwrap();
    s.validate().unwrap();
    assert_eq!(s.table().get(3).unwrap().1, Frame::UNMAPPED);
    assert_eq!(s.len(), 8 * p, "unmapping does not change the size");
    assert!(matches!(s.protect(0, 4 * p, Protection::Read), Err(Error::WrongFrames { tag: FrameTag::Unmapped, .. })));
    s.discard(0, 8 * p).unwrap();
    s.map_zero(3 * p, p, Protection::Read).unwrap();
    s.validate().unwrap();
    assert_eq!(read(&s, 3 * p, 4), [0; 4], "fresh zero pages, not the old bytes");
    s.reset(8 * p, None, ResetPolicy::default()).unwrap();
    s.validate().unwrap();
    assert_eq!(s.table().run_count(), 2, "reset fills holes back in");
}

#[test]
fn bad_window_requests_change_nothing() {
    let p = page();
    let buffer = SharedBuffer::new(2 * p).unwrap();
    let space = shared_space(8);
    let grant = buffer.grant(host(&space)).unwrap();
    let mut s = space.lock().unwrap();
    s.map_buffer(0, &grant, 0, p, Protection::ReadWrite).unwrap();
    let before = s.table().clone();
    assert!(matches!(s.map_buffer(p, &grant, p, 2 * p, Protection::Read), Err(Error::PastBacking { .. })));
    assert!(matches!(s.map_buffer(p, &grant, 1, p, Protection::Read), Err(Error::Misaligned { .. })));
    assert!(matches!(s.map_buffer(7 * p, &grant, 0, 2 * p, Protection::Read), Err(Error::OutOfBounds { .. })));
    assert!(matches!(s.map_buffer(p, &grant, u64::MAX - p + 1, 2 * p, Protection::Read), Err(Error::Overflow { .. })));
    assert!(matches!(s.discard(0, 2 * p), Err(Error::WrongFrames { tag: FrameTag::Shared, .. })));
    assert!(matches!(s.unmap(p / 2, p), Err(Error::Misaligned { .. })));
    assert!(matches!(s.map_zero(0, 9 * p, Protection::Read), Err(Error::OutOfBounds { .. })));
    assert_eq!(s.table(), &before);
    s.validate().unwrap();
    assert!(matches!(SharedBuffer::new(0), Err(Error::InvalidSize { .. })));
    assert!(matches!(buffer.read(2 * p - 1, &mut [0; 2]), Err(Error::PastBacking { .. })));
}

#[test]
fn buffers_images_and_zero_pages_coexist_in_one_reservation() {
    let p = page();
    let image = framemap::Image::from_bytes(&vec![7u8; (4 * p) as usize]).unwrap();
    let buffers: Vec<_> = (0..3).map(|_| SharedBuffer::new(4 * p).unwrap()).collect();
    let space = shared_space(64);
    let mut s = space.lock().unwrap();
    for (i, buffer) in buffers.iter().enumerate() {
        let grant = buffer.grant(host(&space)).unwrap();
        buffer.write(0, &[i as u8 + 1]).unwrap();
        s.map_buffer((10 + 8 * i as u64) * p, &grant, 0, 4 * p, Protection::ReadWrite).unwrap();
    }
    s.map_image(40 * p, &image, p, 2 * p, Protection::Read).unwrap();
    s.validate().unwrap();
    for (i, _) in buffers.iter().enumerate() {
        assert_eq!(read(&s, (10 + 8 * i as u64) * p, 1), [i as u8 + 1]);
    }
    assert_eq!(read(&s, 40 * p, 1), [7]);
    let tags: Vec<_> = s.table().runs().map(|(_, f)| f.tag()).collect();
    assert_eq!(tags.iter().filter(|t| **t == FrameTag::Shared).count(), 3);
    assert!(matches!(s.table().get(41).unwrap().1.kind(), FrameKind::Image { page: 2, .. }));
    // Replacing a window in place (one mmap over the old one, no hole).
    let grant = buffers[0].grant(host(&space)).unwrap();
    s.map_buffer(18 * p, &grant, 0, 4 * p, Protection::ReadWrite).unwrap();
    assert_eq!(read(&s, 18 * p, 1), [1]);
    s.validate().unwrap();
}

/// A grant is bound to the host it was issued for: another space refuses
/// it, since revoking the buffer would never reach a window made there.
#[test]
fn a_grant_for_one_memory_is_refused_by_another() {
    let p = page();
    let (a, b) = (shared_space(4), shared_space(4));
    let buffer = SharedBuffer::new(p).unwrap();
    let for_a = buffer.grant(host(&a)).unwrap();
    let err = b.lock().unwrap().map_buffer(0, &for_a, 0, p, Protection::Read).unwrap_err();
    assert!(matches!(err, Error::ForeignGrant { .. }), "{err:?}");
    b.lock().unwrap().validate().unwrap();
    // A space with no window host accepts no grant at all.
    let mut lone = LinearSpace::new(SpaceConfig { capacity: 4 * p, guard: 0, initial_len: 4 * p }).unwrap();
    assert!(matches!(lone.map_buffer(0, &for_a, 0, p, Protection::Read), Err(Error::ForeignGrant { .. })));
    a.lock().unwrap().map_buffer(0, &for_a, 0, p, Protection::Read).unwrap();
    assert_eq!(buffer.revoke().unwrap(), 1);
    assert_eq!(a.lock().unwrap().table().get(0).unwrap().1, Frame::UNMAPPED);
}
