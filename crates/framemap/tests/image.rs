//! Images: sealed, sparse, copy-on-write initial contents of memories.

use framemap::{
    Error, Frame, FrameKind, FrameTag, Image, LinearSpace, PageRange, Protection, ResetPolicy, SpaceConfig,
};
use std::io::Write;

fn page() -> u64 {
    framemap::host_page_size() as u64
}

fn space(pages: u64) -> LinearSpace {
    let p = page();
    LinearSpace::new(SpaceConfig { capacity: pages * p, guard: 4 * p, initial_len: pages * p }).unwrap()
}

fn bytes_at(s: &LinearSpace, offset: u64, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read(offset, &mut buf).unwrap();
    buf
}

#[test]
fn images_are_sparse_and_page_rounded() {
    let p = page();
    // 64 MiB image with two non-zero pages.
    let image = Image::from_segments(64 << 20, [(5 * p + 3, &b"abc"[..]), ((64 << 20) - 1, &[9][..])]).unwrap();
    assert_eq!(image.len(), 64 << 20);
    assert!(image.allocated_bytes().unwrap() <= 2 * p, "holes cost nothing: {}", image.allocated_bytes().unwrap());
    let mut buf = [0u8; 5];
    image.read(5 * p + 2, &mut buf).unwrap();
    assert_eq!(&buf, b"\0abc\0");
    assert_eq!(Image::from_bytes(&[1, 2, 3]).unwrap().len(), p);
    assert!(Image::from_bytes(&[]).unwrap().is_empty());
    let zeros = Image::from_bytes(&vec![0u8; (16 * p) as usize]).unwrap();
    assert_eq!(zeros.allocated_bytes().unwrap(), 0, "all-zero bytes are holes too");
}

#[test]
fn later_segments_overwrite_earlier_ones_even_with_zeros() {
    let p = page() as usize;
    let image = Image::from_segments(2 * p as u64, [(0, &vec![7u8; 2 * p][..]), (10, &vec![0u8; p][..])]).unwrap();
    let mut buf = vec![0u8; 2 * p];
    image.read(0, &mut buf).unwrap();
    assert!(buf[..10].iter().all(|&b| b == 7));
    assert!(buf[10..10 + p].iter().all(|&b| b == 0));
    assert!(buf[10 + p..].iter().all(|&b| b == 7));
}

#[test]
fn bad_images_are_errors() {
    let p = page();
    assert!(matches!(Image::from_segments(p, [(p - 1, &[1u8, 2][..])]), Err(Error::OutOfBounds { .. })));
    assert!(matches!(Image::from_segments(u64::MAX, []), Err(Error::InvalidSize { .. })));
    let image = Image::from_bytes(b"x").unwrap();
    assert!(matches!(image.read(p - 1, &mut [0; 2]), Err(Error::OutOfBounds { .. })));
    assert!(matches!(image.read(u64::MAX, &mut [0; 2]), Err(Error::Overflow { .. })));

    // A plain file can shrink: refused, and copyable instead.
    let path = std::env::temp_dir().join(format!("framemap-image-test-{}", std::process::id()));
    std::fs::File::create(&path).unwrap().write_all(b"file bytes").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let copy = Image::copy_of_file(&file).unwrap();
    assert!(matches!(Image::from_file(file), Err(Error::CanShrink)));
    std::fs::remove_file(&path).unwrap();
    let mut buf = [0u8; 10];
    copy.read(0, &mut buf).unwrap();
    assert_eq!(&buf, b"file bytes");
}

#[test]
fn a_sealed_memfd_is_used_directly() {
    let fd = rustix::fs::memfd_create("test", rustix::fs::MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::io::pwrite(&fd, b"sealed", 0).unwrap();
    rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).unwrap();
    let image = Image::from_file(fd).unwrap();
    assert_eq!(image.len(), page());
    let mut s = space(4);
    s.map_image(page(), &image, 0, page(), Protection::Read).unwrap();
    assert_eq!(bytes_at(&s, page(), 6), b"sealed");
    s.validate().unwrap();
}

/// An image whose file others may still write (sealed against shrinking
/// only) is restored from the file as it is now, read with `pread` rather
/// than through a view that would change under a `&[u8]`.
#[test]
fn a_writable_image_file_is_restored_from_its_current_bytes() {
    let p = page();
    let fd = rustix::fs::memfd_create("test", rustix::fs::MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::io::pwrite(&fd, b"before", 0).unwrap();
    rustix::fs::ftruncate(&fd, 2 * p).unwrap();
    rustix::fs::fcntl_add_seals(&fd, rustix::fs::SealFlags::SHRINK).unwrap();
    let writer = rustix::io::dup(&fd).unwrap();
    let image = Image::from_file(fd).unwrap();
    let mut s = space(4);
    s.restore_layout(4 * p, Some(&image)).unwrap();
    for expected in [&b"before"[..], &b"AFTER!"[..]] {
        s.write(0, b"guest!").unwrap();
        s.reset(4 * p, Some(&image), ResetPolicy::default()).unwrap();
        assert_eq!(bytes_at(&s, 0, 6), expected);
        rustix::io::pwrite(&writer, b"AFTER!", 0).unwrap();
    }
    s.validate().unwrap();
}

#[test]
fn mapped_images_are_copy_on_write_and_private() {
    let p = page();
    let image = Image::from_segments(4 * p, [(0, &b"first"[..]), (3 * p, &b"last"[..])]).unwrap();
    let mut a = space(8);
    let mut b = space(8);
    a.map_image(0, &image, 0, 4 * p, Protection::ReadWrite).unwrap();
    b.map_image(2 * p, &image, 2 * p, 2 * p, Protection::Read).unwrap();
    a.validate().unwrap();
    b.validate().unwrap();
    assert_eq!(b.table().get(2).unwrap().1, Frame::image(image.id(), 2, Protection::Read));
    a.write(0, b"FIRST").unwrap();
    assert_eq!(bytes_at(&a, 0, 5), b"FIRST");
    assert_eq!(bytes_at(&b, 3 * p, 4), b"last");
    let mut original = [0u8; 5];
    image.read(0, &mut original).unwrap();
    assert_eq!(&original, b"first", "guest writes never reach the image");
    assert!(matches!(b.write(3 * p, b"x"), Err(Error::Protected { .. })));
}

#[test]
fn bad_image_mappings_change_nothing() {
    let p = page();
    let image = Image::from_bytes(&vec![1u8; (2 * p) as usize]).unwrap();
    let mut s = space(8);
    let before = s.table().clone();
    assert!(matches!(s.map_image(0, &image, p, 2 * p, Protection::Read), Err(Error::PastBacking { .. })));
    assert!(matches!(s.map_image(0, &image, 1, p, Protection::Read), Err(Error::Misaligned { .. })));
    assert!(matches!(s.map_image(7 * p, &image, 0, 2 * p, Protection::Read), Err(Error::OutOfBounds { .. })));
    assert!(matches!(s.map_image(0, &image, u64::MAX - p + 1, 2 * p, Protection::Read), Err(Error::Overflow { .. })));
    assert_eq!(s.table(), &before);
    s.validate().unwrap();
}

#[test]
fn reset_restores_image_bytes_in_place_and_by_dropping() {
    let p = page();
    let content: Vec<u8> = (0..8 * p).map(|i| (i % 251) as u8).collect();
    let image = Image::from_bytes(&content).unwrap();
    for keep_resident in [0, 3 * p, 64 * p] {
        let mut s = space(16);
        s.restore_layout(16 * p, Some(&image)).unwrap();
        s.validate().unwrap();
        assert_eq!(bytes_at(&s, 0, (8 * p) as usize), content);
        for i in 0..16 {
            s.write(i * p + 1, &[0xee; 100]).unwrap();
        }
        let report = s.reset(16 * p, Some(&image), ResetPolicy { keep_resident, ..ResetPolicy::default() }).unwrap();
        s.validate().unwrap();
        assert_eq!(bytes_at(&s, 0, (8 * p) as usize), content, "keep_resident {keep_resident}");
        assert!(bytes_at(&s, 8 * p, (8 * p) as usize).iter().all(|&b| b == 0));
        if report.scanned {
            assert_eq!(report.dirty, 16 * p);
            assert_eq!(report.zeroed_in_place, keep_resident.min(16 * p));
        }
        let runs: Vec<_> = s.table().runs().collect();
        assert_eq!(runs[0], (PageRange::new(0, 8), Frame::image(image.id(), 0, Protection::ReadWrite)));
        assert_eq!(runs[1], (PageRange::new(8, 16), Frame::zero(Protection::ReadWrite)));
    }
}

#[test]
fn dirty_pages_inside_one_run_are_restored_from_the_right_offset() {
    let p = page();
    let content: Vec<u8> = (0..8 * p).map(|i| (i % 253 + 1) as u8).collect();
    let image = Image::from_bytes(&content).unwrap();
    let mut s = space(16);
    // Image pages 2..6 at guest pages 4..8; zero pages elsewhere.
    s.map_image(4 * p, &image, 2 * p, 4 * p, Protection::ReadWrite).unwrap();
    let policy = ResetPolicy::default();
    // Only image pages dirty (guest pages 5 and 7), then only zero pages
    // (guest pages 10 and 12), then both (runs of two frames).
    for pages in [&[5u64, 7][..], &[10, 12][..], &[1, 5, 7, 12][..]] {
        for &page in pages {
            s.write(page * p + 17, &[0; 300]).unwrap();
        }
        let report = s.restore_dirty(policy).unwrap();
        s.validate().unwrap();
        for page in 0..16u64 {
            let want: Vec<u8> = if (4..8).contains(&page) {
                content[((page - 2) * p) as usize..((page - 1) * p) as usize].to_vec()
            } else {
                vec![0; p as usize]
            };
            assert!(bytes_at(&s, page * p, p as usize) == want, "page {page} after dirtying {pages:?}");
        }
        if report.scanned {
            assert_eq!(report.dirty, pages.len() as u64 * p, "{pages:?}");
            assert_eq!(report.zeroed_in_place, pages.len() as u64 * p, "{pages:?}");
            assert_eq!(report.dropped, 0, "{pages:?}");
        }
    }
}

#[test]
fn layout_changes_between_images_and_sizes() {
    let p = page();
    let one = Image::from_bytes(&vec![1u8; (3 * p) as usize]).unwrap();
    let two = Image::from_bytes(&vec![2u8; p as usize]).unwrap();
    let mut s = space(16);
    s.restore_layout(4 * p, Some(&one)).unwrap();
    s.validate().unwrap();
    s.reset(8 * p, Some(&two), ResetPolicy::default()).unwrap();
    s.validate().unwrap();
    assert_eq!(bytes_at(&s, 0, 2), [2, 2]);
    assert_eq!(bytes_at(&s, p, 2), [0, 0], "the old image's pages are gone");
    s.reset(2 * p, None, ResetPolicy::default()).unwrap();
    s.validate().unwrap();
    assert_eq!(s.summary().unwrap().runs[FrameTag::Image], 0);
    assert!(matches!(s.restore_layout(2 * p, Some(&one)), Err(Error::PastBacking { .. })), "image larger than memory");
}

#[test]
fn discard_turns_image_pages_into_zero_pages() {
    let p = page();
    let image = Image::from_bytes(&vec![5u8; (4 * p) as usize]).unwrap();
    let mut s = space(8);
    s.map_image(0, &image, 0, 4 * p, Protection::Read).unwrap();
    s.discard(p, 2 * p).unwrap();
    s.validate().unwrap();
    assert_eq!(bytes_at(&s, 0, 1), [5]);
    assert_eq!(bytes_at(&s, p, 1), [0]);
    assert_eq!(s.table().get(1).unwrap().1.kind(), FrameKind::Zero);
    assert_eq!(s.table().get(1).unwrap().1.prot(), Protection::Read, "discard keeps protection");
    assert_eq!(bytes_at(&s, 3 * p, 1), [5]);
}

/// A memory of 64 pages over an image of 64 pages (every byte non-zero).
fn imaged_space() -> (LinearSpace, Image, Vec<u8>) {
    let p = framemap::host_page_size() as u64;
    let bytes: Vec<u8> = (0..64 * p).map(|i| (i % 251 + 1) as u8).collect();
    let image = Image::from_bytes(&bytes).unwrap();
    let mut space = LinearSpace::new(SpaceConfig { capacity: 128 * p, guard: 0, initial_len: 0 }).unwrap();
    space.restore_layout(64 * p, Some(&image)).unwrap();
    (space, image, bytes)
}

fn contents(space: &LinearSpace, len: u64) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    space.read(0, &mut out).unwrap();
    out
}

#[test]
fn a_burst_of_writes_is_not_copied_again_by_later_resets() {
    let p = framemap::host_page_size() as u64;
    let (mut space, image, bytes) = imaged_space();
    let policy = ResetPolicy::default();
    for page in 0..48 {
        space.write(page * p + 5, &[0]).unwrap();
    }
    let burst = space.reset(64 * p, Some(&image), policy).unwrap();
    assert_eq!((burst.dirty, burst.zeroed_in_place), (48 * p, 48 * p), "the burst is restored in place");
    assert_eq!(contents(&space, 64 * p), bytes);
    space.write(3 * p, &[0, 0]).unwrap();
    space.write(40 * p, &[0]).unwrap();
    let small = space.reset(64 * p, Some(&image), policy).unwrap();
    if framemap::write_tracking_supported() {
        assert_eq!(small.dirty, 2 * p, "only the pages written since the burst");
    } else {
        assert_eq!(small.dirty, 48 * p, "without write tracking every kept page counts");
    }
    assert_eq!(contents(&space, 64 * p), bytes);
    let idle = space.reset(64 * p, Some(&image), policy).unwrap();
    if framemap::write_tracking_supported() {
        assert_eq!(idle.dirty, 0, "nothing written since");
    }
    assert_eq!(contents(&space, 64 * p), bytes);
    space.validate().unwrap();
}

#[test]
fn hot_pages_are_copied_every_time_and_released_when_they_go_cold() {
    let p = framemap::host_page_size() as u64;
    let (mut space, image, bytes) = imaged_space();
    let policy = ResetPolicy::default();
    for _ in 0..5 {
        for page in [1, 2, 9] {
            space.write(page * p, &[0]).unwrap();
        }
        let report = space.reset(64 * p, Some(&image), policy).unwrap();
        assert_eq!(report.dirty, 3 * p);
        assert_eq!(contents(&space, 64 * p), bytes);
    }
    if !framemap::testing::feature_present(
        framemap::write_tracking_supported(),
        "write tracking (PAGEMAP_SCAN and userfaultfd write-protection)",
        "FRAMEMAP_REQUIRE_UFFD_WP",
    ) {
        return;
    }
    // No more writes: the hot pages are protected again within the period
    // and then no longer copied.
    let idle = (0..70).position(|_| space.reset(64 * p, Some(&image), policy).unwrap().dirty == 0);
    assert!(idle.is_some_and(|resets| resets <= 65), "cold pages still copied after {idle:?} resets");
    assert_eq!(contents(&space, 64 * p), bytes);
    space.validate().unwrap();
}

#[test]
fn a_set_that_stays_hot_is_protected_ever_more_rarely_and_released_when_cold() {
    let p = framemap::host_page_size() as u64;
    let (mut space, image, bytes) = imaged_space();
    let policy = ResetPolicy::default();
    let mut protected_at = Vec::new();
    for reset in 1..=600 {
        for page in [4, 20, 33] {
            space.write(page * p + 1, &[0]).unwrap();
        }
        let report = space.reset(64 * p, Some(&image), policy).unwrap();
        assert_eq!(report.dirty, 3 * p, "reset {reset}");
        if report.protected {
            protected_at.push(reset);
        }
    }
    assert_eq!(contents(&space, 64 * p), bytes);
    if !framemap::testing::feature_present(
        framemap::write_tracking_supported(),
        "write tracking (PAGEMAP_SCAN and userfaultfd write-protection)",
        "FRAMEMAP_REQUIRE_UFFD_WP",
    ) {
        assert!(protected_at.is_empty());
        return;
    }
    // The first reset protects the new set; each periodic protection after
    // which the same set is written again doubles the period: 64, 128, 256.
    assert_eq!(protected_at, [1, 65, 193, 449]);
    // Cold now: released at the next periodic protection (period 512 by
    // now), and from then on not copied.
    let idle = (0..600).position(|_| space.reset(64 * p, Some(&image), policy).unwrap().dirty == 0);
    assert!(idle.is_some_and(|resets| resets <= 513), "cold pages still copied after {idle:?} resets");
    // A new hot set starts again from the shortest period.
    let mut protected_at = Vec::new();
    for reset in 1..=70 {
        space.write(7 * p, &[0]).unwrap();
        if space.reset(64 * p, Some(&image), policy).unwrap().protected {
            protected_at.push(reset);
        }
    }
    assert_eq!(protected_at, [1, 65]);
    assert_eq!(contents(&space, 64 * p), bytes);
    space.validate().unwrap();
}

/// Whether this page's pagemap entry says it is swapped out (bit 62).
fn swapped_out(addr: usize) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let page = framemap::host_page_size();
    let mut file = std::fs::File::open("/proc/self/pagemap").unwrap();
    file.seek(SeekFrom::Start((addr / page * 8) as u64)).unwrap();
    let mut entry = [0u8; 8];
    file.read_exact(&mut entry).unwrap();
    u64::from_le_bytes(entry) & (1 << 62) != 0
}

/// Dirty pages the kernel swapped out are restored too (a scan that asked
/// only for present pages would leave them holding the last user's data).
/// Needs swap: without any, the test says so and checks nothing, unless
/// `FRAMEMAP_REQUIRE_SWAP=1` makes that a failure.
#[test]
fn swapped_out_dirty_pages_are_restored() {
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    if swaps.lines().count() < 2 {
        assert!(std::env::var_os("FRAMEMAP_REQUIRE_SWAP").is_none(), "FRAMEMAP_REQUIRE_SWAP is set but no swap is on");
        eprintln!("skipped: no swap device or file is on (see /proc/swaps)");
        return;
    }
    let p = page();
    let (mut s, _image, bytes) = imaged_space();
    let mut swapped = 0;
    for round in 0..20 {
        for i in [3u64, 9, 40] {
            s.write(i * p + 5, &[0u8; 64]).unwrap();
        }
        // Page 3 of the image and page 40 are swapped out before the reset.
        for i in [3u64, 40] {
            let addr = s.base().as_ptr() as usize + (i * p) as usize;
            // SAFETY: the page is mapped inside the space; MADV_PAGEOUT changes no contents.
            unsafe { rustix::mm::madvise(addr as *mut _, p as usize, rustix::mm::Advice::LinuxPageOut) }.unwrap();
            swapped += usize::from(swapped_out(addr));
        }
        s.restore_dirty(ResetPolicy::default()).unwrap();
        assert!(contents(&s, 64 * p) == bytes, "round {round}: a dirty page kept its writes");
        s.validate().unwrap();
    }
    assert!(swapped > 0, "no page was ever swapped out: the test did not test anything");
}

#[test]
fn an_image_of_a_file_range_maps_reads_and_resets_from_its_offset() {
    let p = page();
    // A file of 5 pages: page k is filled with k + 1; the image is pages 2..4.
    let path = std::env::temp_dir().join(format!("framemap-range-image-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).unwrap();
    for k in 0..5u8 {
        file.write_all(&vec![k + 1; p as usize]).unwrap();
    }
    drop(file);
    let open = || std::fs::File::open(&path).unwrap();
    // SAFETY: the test's file is not changed while the images exist.
    let image = unsafe { Image::from_file_range_unchecked(open(), 2 * p, 2 * p) }.unwrap();
    assert_eq!(image.len(), 2 * p);
    assert!(image.is_immutable(), "the contract promises the bytes never change");
    let mut buf = [0u8; 2];
    image.read(p - 1, &mut buf).unwrap();
    assert_eq!(buf, [3, 4], "reads start at the file offset");
    let mut s = space(4);
    s.restore_layout(4 * p, Some(&image)).unwrap();
    s.validate().unwrap(); // the kernel's file offsets include the image's
    assert_eq!(bytes_at(&s, 0, 1), [3]);
    assert_eq!(bytes_at(&s, p, 1), [4]);
    s.write(p, &[0xee; 8]).unwrap();
    for keep_resident in [0, 4 * p] {
        s.write(p, &[0xee; 8]).unwrap();
        s.reset(4 * p, Some(&image), ResetPolicy { keep_resident, ..ResetPolicy::default() }).unwrap();
        assert_eq!(bytes_at(&s, p, 8), [4; 8], "keep_resident {keep_resident}");
    }
    // SAFETY: as above (refused before anything maps).
    let misaligned = unsafe { Image::from_file_range_unchecked(open(), 1, p) };
    assert!(matches!(misaligned, Err(Error::Misaligned { .. })), "{misaligned:?}");
    // SAFETY: as above.
    let past_end = unsafe { Image::from_file_range_unchecked(open(), 4 * p, 2 * p) };
    assert!(matches!(past_end, Err(Error::OutOfBounds { .. })), "{past_end:?}");
    drop((s, image));
    std::fs::remove_file(&path).unwrap();
}

/// Write tracking covers every run of a fragmented layout (its runs are
/// registered together, one stretch per call): after a reset protects the
/// pages it restored, the next finds exactly the pages written since, in
/// image runs and zero runs alike.
#[test]
fn writes_are_tracked_in_every_run_of_a_fragmented_layout() {
    let p = framemap::host_page_size() as u64;
    let (mut space, _image, bytes) = imaged_space();
    for page in (1..32).step_by(2) {
        space.map_zero(page * p, p, Protection::ReadWrite).unwrap();
    }
    assert!(space.table().runs_in(PageRange::new(0, 64)).count() >= 32, "one run per page of the first 32");
    let expected = |page: u64| if page < 32 && page % 2 == 1 { 0 } else { bytes[(page * p) as usize] };
    for page in 0..32 {
        space.write(page * p, &[0xAA]).unwrap();
    }
    let policy = ResetPolicy::default();
    let first = space.restore_dirty(policy).unwrap();
    assert_eq!(first.dirty, 32 * p);
    for page in 0..64 {
        let mut b = [0u8];
        space.read(page * p, &mut b).unwrap();
        assert_eq!(b[0], expected(page), "page {page} after the first reset");
    }
    if !framemap::testing::feature_present(
        framemap::write_tracking_supported(),
        "write tracking (PAGEMAP_SCAN and userfaultfd write-protection)",
        "FRAMEMAP_REQUIRE_UFFD_WP",
    ) {
        return;
    }
    assert!(first.protected, "a new dirty set is protected at once");
    for page in [7, 30] {
        space.write(page * p, &[0x55]).unwrap();
    }
    let second = space.restore_dirty(policy).unwrap();
    assert_eq!(second.dirty, 2 * p, "only the pages written since, whichever run they are in");
    for page in 0..64 {
        let mut b = [0u8];
        space.read(page * p, &mut b).unwrap();
        assert_eq!(b[0], expected(page), "page {page} after the second reset");
    }
    space.validate().unwrap();
}
