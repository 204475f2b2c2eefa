//! Restores that merge stored pages scattered through an image
//! (`RestoreOptions::merge_gaps`): a few runs instead of one per stored
//! run, the same bytes and shape as the unmerged restore, resets back to the
//! snapshot, the merged image made once per snapshot memory and reused, and
//! captures of a merged memory identical to captures of the unmerged one
//! (full and incremental): nothing names the merged file.

mod snapshot_support;

use framemap::snapshot::{RestoreOptions, Snapshot, SnapshotWriter};
use framemap::{FrameKind, Image, LinearSpace, PageRange, Protection, ResetPolicy};
use snapshot_support::*;

const PAGES: u64 = 64;

/// A 64-page image with distinct bytes in every page.
fn big_image() -> Image {
    let p = page() as usize;
    let bytes: Vec<u8> = (0..PAGES as usize * p).map(|i| (i / p + 1) as u8 ^ (i % 251) as u8).collect();
    Image::from_bytes(&bytes).unwrap()
}

/// A memory over `image` with one page in four written from page 1 (gaps
/// of three clean image pages), pages 50..52 read-only, and the last four
/// pages zero; and its snapshot.
fn scattered(image: &Image) -> (LinearSpace, Snapshot) {
    let p = page();
    let mut m = space(PAGES + 4);
    m.restore_layout((PAGES + 4) * p, Some(image)).unwrap();
    for pg in (1..48).step_by(4) {
        m.write(pg * p + 3, &[0xEE, pg as u8]).unwrap();
    }
    m.write(51 * p, b"read-only soon").unwrap();
    m.protect(50 * p, 2 * p, Protection::Read).unwrap();
    let snap = snapshot_of(&mut m);
    (m, snap)
}

fn restored_with(snap: &Snapshot, image: &Image, merge_gaps: u64) -> LinearSpace {
    let mut s = space(PAGES + 4);
    let options = RestoreOptions { merge_gaps, ..RestoreOptions::default() };
    s.restore_with(snap, "0", &mut vec![image.clone()], options).unwrap();
    s
}

/// The backings of the table's Image runs.
fn image_backings(s: &LinearSpace) -> Vec<u64> {
    s.table()
        .runs_in(PageRange::new(0, PAGES + 4))
        .filter_map(|(_, f)| match f.kind() {
            FrameKind::Image { image, .. } => Some(image.0),
            _ => None,
        })
        .collect()
}

fn run_count(s: &LinearSpace) -> usize {
    s.table().runs_in(PageRange::new(0, PAGES + 4)).count()
}

fn capture_full(s: &mut LinearSpace) -> Snapshot {
    snapshot_of(s)
}

#[test]
fn a_merged_restore_reads_as_the_unmerged_one_with_few_runs() {
    let image = big_image();
    let (m, snap) = scattered(&image);
    let plain = restored_with(&snap, &image, 0);
    let merged = restored_with(&snap, &image, 8);
    assert_same_memory(&m, &plain);
    assert_same_memory(&m, &merged);
    assert!(run_count(&plain) >= 24, "one run per stored page and gap: {}", run_count(&plain));
    // The stored pages of 1..46 and their gaps are one run; page 0, the
    // image's 46..50, the two read-only pages (one stored, so not merged:
    // no other stored run with that protection), the image after them and
    // the zero tail are the other six.
    assert_eq!(run_count(&merged), 7, "{:?}", merged.table());
    // A gap longer than allowed is not merged.
    let unmerged = restored_with(&snap, &image, 2);
    assert_eq!(run_count(&unmerged), run_count(&plain));
    assert_same_memory(&m, &unmerged);
}

#[test]
fn the_merged_image_is_made_once_and_recycled_slots_keep_it() {
    let image = big_image();
    let (m, snap) = scattered(&image);
    let a = restored_with(&snap, &image, 8);
    let b = restored_with(&snap, &image, 8);
    assert_eq!(image_backings(&a), image_backings(&b), "the same merged image serves every restore");
    // A reset brings a merged memory back to the snapshot.
    let mut a = a;
    let p = page();
    for pg in [0, 1, 2, 9, 33, 47, 60] {
        a.write(pg * p + 1, b"scribble").unwrap();
    }
    a.restore_dirty(ResetPolicy::default()).unwrap();
    assert_same_memory(&m, &a);
    // Restoring again over it with kept frames changes no mapping.
    let before = image_backings(&a);
    let options = RestoreOptions { merge_gaps: 8, keep_reset_frames: true, ..RestoreOptions::default() };
    a.restore_with(&snap, "0", &mut vec![image.clone()], options).unwrap();
    assert_eq!(image_backings(&a), before);
    assert_same_memory(&m, &a);
}

#[test]
fn captures_of_a_merged_memory_equal_captures_of_the_unmerged_one() {
    let image = big_image();
    let (_, snap) = scattered(&image);
    let mut plain = restored_with(&snap, &image, 0);
    let mut merged = restored_with(&snap, &image, 8);
    // Full captures: the same runs (clean image pages named by the image's
    // hash, stored pages by content), never the merged file.
    let (full_plain, full_merged) = (capture_full(&mut plain), capture_full(&mut merged));
    let runs = |s: &Snapshot| s.memory("0").unwrap().runs.clone();
    assert_eq!(runs(&full_merged), runs(&full_plain));
    assert_eq!(full_merged.data_pages(), full_plain.data_pages());
    let restored = restored_with(&full_merged, &image, 0);
    assert_same_memory(&plain, &restored);

    // Incremental captures after the same writes: the same child.
    let p = page();
    let mut plain = restored_with(&snap, &image, 0);
    let mut merged = restored_with(&snap, &image, 8);
    for s in [&mut plain, &mut merged] {
        s.write(2 * p, b"after the restore").unwrap();
        s.write(5 * p + 9, b"a stored page again").unwrap();
    }
    let child = |s: &mut LinearSpace| {
        let mut w = SnapshotWriter::in_memory().unwrap().incremental_to(&snap);
        w.capture("0", s, &no_names).unwrap();
        w.finish_in_memory().unwrap().with_parent(snap.clone()).unwrap()
    };
    let (child_plain, child_merged) = (child(&mut plain), child(&mut merged));
    assert_eq!(runs(&child_merged), runs(&child_plain));
    assert!(child_merged.data_pages() <= 2 + 1, "only the written pages: {}", child_merged.data_pages());
    // The chain restores (merged or not) to the written memory.
    assert_same_memory(&plain, &restored_with(&child_merged, &image, 8));
    assert_same_memory(&plain, &restored_with(&child_merged, &image, 0));
}
