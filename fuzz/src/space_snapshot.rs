//! Snapshot round trips of a replayed space, against the model: the
//! property `restore(snapshot(m)) == m`, for full and incremental snapshots
//! and for flattened chains.
//!
//! A snapshot may restore a page under another tag than it had (a written
//! `Zero` page comes back as an `Image` page of the snapshot's file), so
//! the comparison is what a guest can observe: the length, which pages are
//! unmapped, every page's protection, which buffer page every window shows,
//! and every readable byte (the model's).
#![warn(missing_docs)]

use crate::space_model::{Backings, MFrame, Model};
use framemap::snapshot::{Digest, Resolver, RestoreOptions, Snapshot, SnapshotWriter};
use framemap::{BufferGrant, FrameKind, Image, LinearSpace, SharedBuffer, SpaceConfig, WindowOwner};
use std::sync::{Arc, Mutex, Weak};

/// The name a buffer of the replay is recorded by.
fn buffer_name(b: &Backings, buffer: &SharedBuffer) -> Option<String> {
    b.buffers.iter().enumerate().find_map(|(i, m)| match m {
        Some(m) if m.buffer.id() == buffer.id() => Some(format!("buffer {i}")),
        _ => None,
    })
}

/// Supplies the replay's images, and grants of its buffers to the restored
/// space's host.
struct Backed<'a> {
    b: &'a Backings,
    host: Weak<dyn WindowOwner>,
}

impl Resolver for Backed<'_> {
    fn image(&mut self, hash: &Digest) -> Option<Image> {
        let images = self.b.images.iter().flatten();
        images.map(|m| &m.image).find(|i| i.content_hash().is_ok_and(|h| h == *hash)).cloned()
    }

    fn buffer(&mut self, name: &str) -> Option<BufferGrant> {
        let i: usize = name.strip_prefix("buffer ")?.parse().ok()?;
        self.b.buffers.get(i)?.as_ref()?.buffer.grant(self.host.clone()).ok()
    }
}

/// Captures `space` (incrementally to `parent` when it continues from it)
/// and checks that restoring the snapshot, and its flattened chain, gives
/// the model's memory; returns the snapshot, its parents attached.
pub fn round_trip(
    space: &mut LinearSpace,
    model: &Model,
    b: &Backings,
    parent: Option<&Snapshot>,
    step: usize,
) -> Snapshot {
    let names = |buffer: &SharedBuffer| buffer_name(b, buffer);
    // An incremental capture continues only from the parent's checkpoint: a
    // reset since ends it, and the capture is then a full one.
    let continues = parent.filter(|p| {
        let token = p.memory("m").map(|m| m.checkpoint).ok();
        space.latest_checkpoint().map(|c| c.token()) == token
    });
    let mut writer = SnapshotWriter::in_memory().expect("in-memory snapshot");
    if let Some(parent) = continues {
        writer = writer.incremental_to(parent);
    }
    writer.capture("m", space, &names).unwrap_or_else(|e| panic!("step {step}: capture: {e}"));
    let mut snapshot = writer.finish_in_memory().unwrap_or_else(|e| panic!("step {step}: finish: {e}"));
    if let Some(parent) = continues {
        snapshot = snapshot.with_parent(parent.clone()).unwrap_or_else(|e| panic!("step {step}: parent: {e}"));
    }
    compare_restored(&snapshot, model, b, step, "snapshot");
    if continues.is_some() {
        let mut flat = SnapshotWriter::in_memory().expect("in-memory snapshot");
        flat.add_flattened(&snapshot).unwrap_or_else(|e| panic!("step {step}: flatten: {e}"));
        let flat = flat.finish_in_memory().unwrap_or_else(|e| panic!("step {step}: finish flat: {e}"));
        assert_eq!(flat.parent_id(), None);
        compare_restored(&flat, model, b, step, "flattened chain");
    }
    snapshot
}

/// Restores memory "m" of `snapshot` into a fresh space and compares it
/// with the model (see the module docs).
fn compare_restored(snapshot: &Snapshot, model: &Model, b: &Backings, step: usize, what: &str) {
    let ps = model.page;
    let config =
        SpaceConfig { capacity: model.capacity, guard: (model.total_pages * ps) - model.capacity, initial_len: 0 };
    let fresh = Arc::new(Mutex::new(LinearSpace::new(config).expect("a space like the replay's")));
    let host: Weak<dyn WindowOwner> = Arc::downgrade(&fresh) as Weak<dyn WindowOwner>;
    let mut r = fresh.lock().unwrap();
    r.set_window_owner(host.clone());
    // Every other step merges the stored runs (`RestoreOptions::merge_gaps`):
    // the same memory either way.
    let options = RestoreOptions { merge_gaps: if step % 2 == 0 { 0 } else { 4 }, ..RestoreOptions::default() };
    r.restore_with(snapshot, "m", &mut Backed { b, host }, options)
        .unwrap_or_else(|e| panic!("step {step}: restore {what}: {e}"));
    r.validate().unwrap_or_else(|e| panic!("step {step}: restored {what} diverges from the kernel: {e}"));
    assert_eq!(r.len(), model.len, "step {step}: restored {what}: length");
    for p in 0..model.accessible_pages() {
        let (_, frame) = r.table().get(p).expect("page in the table");
        let want = model.frames[p as usize];
        assert_eq!(frame.prot(), want.prot(), "step {step}: restored {what}: protection of page {p}");
        match (want, frame.kind()) {
            (MFrame::Unmapped, FrameKind::Unmapped) => {}
            (MFrame::Shared { buf, page, .. }, FrameKind::Shared { buffer, page: got }) => {
                assert_eq!(buffer, b.buffer(buf).buffer.id(), "step {step}: restored {what}: buffer of page {p}");
                assert_eq!(got, page, "step {step}: restored {what}: buffer page of page {p}");
            }
            (MFrame::Zero(_) | MFrame::Image { .. }, FrameKind::Zero | FrameKind::Image { .. }) => {}
            (want, got) => panic!("step {step}: restored {what}: page {p} is {got:?}, the model says {want:?}"),
        }
        if want.prot().readable() {
            let (from, to) = (p * ps, ((p + 1) * ps).min(model.len));
            let mut buf = vec![0u8; (to - from) as usize];
            r.read(from, &mut buf).unwrap_or_else(|e| panic!("step {step}: restored {what}: read page {p}: {e}"));
            assert!(buf == model.read(b, from, to), "step {step}: restored {what}: bytes of page {p}");
        }
    }
}
