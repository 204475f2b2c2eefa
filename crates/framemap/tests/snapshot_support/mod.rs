//! Helpers of the snapshot tests (`tests/snapshot.rs`,
//! `tests/snapshot_working_set.rs`): spaces, an image, a memory with every
//! kind of run, restores, and comparing two memories as a guest sees them.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use framemap::snapshot::{Resolver, Snapshot, SnapshotWriter};
use framemap::{FrameKind, Image, LinearSpace, Protection, SharedBuffer, SpaceConfig};

/// The host page size in bytes.
pub fn page() -> u64 {
    framemap::host_page_size() as u64
}

pub fn space(pages: u64) -> LinearSpace {
    let p = page();
    LinearSpace::new(SpaceConfig { capacity: pages * p, guard: 4 * p, initial_len: pages * p }).unwrap()
}

pub fn no_names(_: &SharedBuffer) -> Option<String> {
    None
}

/// Whether the kernel tracks writes (exact checkpoints): required where
/// CI says the machine has it.
pub fn tracks_writes() -> bool {
    framemap::testing::feature_present(
        framemap::write_tracking_supported(),
        "userfaultfd write-protection",
        "FRAMEMAP_REQUIRE_UFFD_WP",
    )
}

/// A fresh directory for this test's files.
pub fn temp_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("framemap-snapshot-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every byte of every accessible page, with `None` for pages that cannot
/// be read (unmapped, or protected against reads: compared by table).
pub fn contents(s: &LinearSpace) -> Vec<Option<Vec<u8>>> {
    let p = page();
    (0..s.accessible_pages().end)
        .map(|i| {
            let (_, frame) = s.table().get(i).unwrap();
            frame.prot().readable().then(|| {
                let mut buf = vec![0; p.min(s.len() - i * p) as usize];
                s.read(i * p, &mut buf).unwrap();
                buf
            })
        })
        .collect()
}

/// What a snapshot must keep of each page's frame: unmapped or not, its
/// protection, and for windows the buffer and page (Zero and Image frames
/// may be restored as either, with the same bytes).
/// A page's shape: unmapped, its protection, and (buffer, page) for a window.
pub type Shape = (bool, Protection, Option<(u64, u64)>);

pub fn shape(s: &LinearSpace) -> Vec<Shape> {
    (0..s.accessible_pages().end)
        .map(|i| {
            let (_, f) = s.table().get(i).unwrap();
            let shared = match f.kind() {
                FrameKind::Shared { buffer, page } => Some((buffer.0, page)),
                _ => None,
            };
            (matches!(f.kind(), FrameKind::Unmapped), f.prot(), shared)
        })
        .collect()
}

pub fn assert_same_memory(a: &LinearSpace, b: &LinearSpace) {
    assert_eq!(a.len(), b.len());
    assert_eq!(shape(a), shape(b), "frames: unmapped runs, protections, windows");
    assert_eq!(contents(a), contents(b), "bytes");
    b.validate().unwrap();
}

/// A memory with every kind of run: written zero pages, an image with
/// clean and written pages, a read-only run, a hole, a written page then
/// made inaccessible, and an odd length.
pub fn varied(image: &Image) -> LinearSpace {
    let p = page();
    let mut s = LinearSpace::new(SpaceConfig { capacity: 64 * p, guard: 4 * p, initial_len: 32 * p }).unwrap();
    s.grow_to(40 * p - 5).unwrap();
    s.write(3, b"zero page written").unwrap();
    s.map_image(8 * p, image, 0, 8 * p, Protection::ReadWrite).unwrap();
    s.write(9 * p + 7, b"image page written").unwrap();
    s.protect(12 * p, 2 * p, Protection::Read).unwrap();
    s.unmap(20 * p, 2 * p).unwrap();
    s.write(25 * p, b"then hidden").unwrap();
    s.protect(25 * p, p, Protection::None).unwrap();
    s
}

pub fn image() -> Image {
    let p = page() as usize;
    let mut bytes = vec![0u8; 8 * p];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i / p + 1) as u8 ^ (i as u8);
    }
    Image::from_bytes(&bytes).unwrap()
}

pub fn restored(snapshot: &Snapshot, name: &str, resolver: &mut dyn Resolver, pages: u64) -> LinearSpace {
    let mut s = space(pages);
    s.restore(snapshot, name, resolver).unwrap();
    s
}

/// `m` captured (fully) into an in-memory snapshot as memory "0".
pub fn snapshot_of(m: &mut LinearSpace) -> Snapshot {
    let mut w = SnapshotWriter::in_memory().unwrap();
    w.capture("0", m, &no_names).unwrap();
    w.finish_in_memory().unwrap()
}
