//! Runs one [`Input`] on a small real `LinearSpace` and on its
//! [`Model`], side by side: the body of the `memory_ops` target, and what
//! the regression tests replay.
//!
//! What it checks, after every step: the space validates against
//! `/proc/self/maps`, its frame table equals the model page by page, its
//! length equals the model's, every byte the model says is readable reads
//! back as the model's (the checks never touch a page the model says is
//! unreadable), and every live buffer holds the model's bytes. During a
//! step: an operation the model refuses must return `Err` and one it
//! accepts must succeed; since a refusal leaves the model as it was, the
//! checks after it prove the call changed nothing. Images, buffers, reset
//! reports, `populate` and `summary` are checked against what their
//! documentation promises. Halfway and at the end, the space is captured
//! into a snapshot (the second incremental to the first) and restored into
//! a fresh space, which must equal the model (`space_snapshot`). Any
//! disagreement panics.
#![warn(missing_docs)]

use crate::space_model::{Backings, MFrame, Model, ModelBuffer, ModelImage};
use crate::space_ops::{
    Geometry, ImageSpec, Input, MAX_BUFFER_PAGES, MAX_BUFFERS, MAX_IMAGE_PAGES, MAX_IMAGES, Op, pattern,
};
use crate::space_snapshot::round_trip;
use framemap::{
    BackingId, FrameTag, Image, LinearSpace, PageRange, Protection, ResetPolicy, SharedBuffer, SpaceConfig, WindowOwner,
};
use std::sync::{Arc, Mutex, Weak};

/// What one operation did (model and space agreeing, or the step panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both accepted it.
    Accepted,
    /// Both refused it.
    Refused,
    /// Nothing called: no image or buffer made to name, the most images or
    /// buffers already made, or an image or buffer too big to bother with.
    Skipped,
}

impl Outcome {
    fn of(accepted: bool) -> Outcome {
        if accepted { Outcome::Accepted } else { Outcome::Refused }
    }
}

/// What a whole replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Whether `LinearSpace::new` accepted the configuration (if it refused,
    /// as the model said it must, no operation ran).
    pub created: bool,
    /// Each operation's outcome, in order.
    pub outcomes: Vec<Outcome>,
}

fn trace() -> bool {
    std::env::var_os("FRAMEMAP_FUZZ_TRACE").is_some()
}

/// The space's result where the model accepts (`model_ok`) or refuses the
/// call; panics if they disagree.
fn expect<T: std::fmt::Debug>(what: &str, model_ok: bool, result: Result<T, framemap::Error>) -> Option<T> {
    if trace() {
        eprintln!("  {what}: model {}, space {result:?}", if model_ok { "accepts" } else { "refuses" });
    }
    match (model_ok, result) {
        (true, Ok(v)) => Some(v),
        (false, Err(_)) => None,
        (true, Err(e)) => panic!("{what}: the model accepts it, the space refused: {e}"),
        (false, Ok(v)) => panic!("{what}: the model refuses it, the space accepted it ({v:?})"),
    }
}

fn check(space: &LinearSpace, model: &Model, b: &Backings, step: usize) {
    if let Err(e) = space.validate() {
        panic!("step {step}: table and kernel diverge: {e}");
    }
    assert_eq!(space.len(), model.len, "step {step}: length");
    let table = space.table();
    assert_eq!(table.pages(), model.total_pages, "step {step}: table size");
    let mut next = 0;
    for (run, f) in table.runs() {
        assert_eq!(run.start, next, "step {step}: table gap");
        for p in run.start..run.end {
            let want = model.frames[p as usize].frame(b);
            assert_eq!(f.advanced(p - run.start), want, "step {step}: frame of page {p}");
        }
        next = run.end;
    }
    assert_eq!(next, model.total_pages, "step {step}: table end");
    // Every readable byte, in stretches of readable pages; bytes of the last
    // page past `len` cannot be read through the space.
    let ps = model.page;
    let mut p = 0;
    while p < model.accessible_pages() {
        if !model.frames[p as usize].prot().readable() {
            p += 1;
            continue;
        }
        let start = p;
        while p < model.accessible_pages() && model.frames[p as usize].prot().readable() {
            p += 1;
        }
        let (from, to) = (start * ps, (p * ps).min(model.len));
        let mut buf = vec![0u8; (to - from) as usize];
        space.read(from, &mut buf).unwrap_or_else(|e| panic!("step {step}: read {from:#x}..{to:#x}: {e}"));
        let want = model.read(b, from, to);
        if buf != want {
            let at = buf.iter().zip(&want).position(|(x, y)| x != y).unwrap() as u64 + from;
            panic!(
                "step {step}: byte {at:#x} (page {}, {:?}) reads {:#04x}, the model says {:#04x}",
                at / ps,
                model.frames[(at / ps) as usize],
                buf[(at - from) as usize],
                want[(at - from) as usize]
            );
        }
    }
    for (i, m) in b.buffers.iter().enumerate() {
        let Some(m) = m else { continue };
        let mut got = vec![0u8; m.bytes.len()];
        let result = m.buffer.read(0, &mut got);
        assert_eq!(m.buffer.is_revoked(), m.revoked, "step {step}: buffer {i} revocation");
        if m.revoked {
            assert!(result.is_err(), "step {step}: revoked buffer {i} still readable");
        } else {
            result.unwrap_or_else(|e| panic!("step {step}: buffer {i}: {e}"));
            assert!(got == m.bytes, "step {step}: buffer {i} contents");
        }
    }
}

fn make_image(spec: &ImageSpec, geo: &Geometry) -> (Option<ModelImage>, Outcome) {
    let len = geo.bytes(spec.len, MAX_IMAGE_PAGES - 2);
    let segments: Vec<(u64, Vec<u8>)> = spec
        .segments
        .iter()
        .take(8)
        .map(|s| {
            let len = usize::from(s.len) % (2 * geo.page as usize + 1);
            (geo.bytes(s.offset, MAX_IMAGE_PAGES - 2), pattern(s.seed, len))
        })
        .collect();
    let rounded = len.checked_next_multiple_of(geo.page);
    if rounded.is_some_and(|r| r > MAX_IMAGE_PAGES * geo.page) {
        return (None, Outcome::Skipped); // too big to bother with (and to build quickly)
    }
    // The model: zero, then each segment in order; any segment past the
    // (rounded) length makes the image fail.
    let model = rounded.and_then(|r| {
        let mut bytes = vec![0u8; r as usize];
        for (offset, data) in &segments {
            let end = offset.checked_add(data.len() as u64).filter(|&e| e <= r)?;
            bytes[*offset as usize..end as usize].copy_from_slice(data);
        }
        Some(bytes)
    });
    let result = Image::from_segments(len, segments.iter().map(|(o, b)| (*o, b.as_slice())));
    match (model, result) {
        (Some(bytes), Ok(image)) => {
            assert_eq!(image.len(), bytes.len() as u64, "image length");
            let mut got = vec![0u8; bytes.len()];
            image.read(0, &mut got).expect("read whole image");
            assert!(got == bytes, "image contents differ from its segments");
            assert!(image.read(image.len(), &mut [0u8]).is_err(), "image read past its end");
            (Some(ModelImage { image, bytes }), Outcome::Accepted)
        }
        (None, Err(_)) => (None, Outcome::Refused),
        (Some(_), Err(e)) => panic!("image refused: {e}"),
        (None, Ok(image)) => panic!("image with a segment past its end accepted: {image:?}"),
    }
}

fn make_buffer(len: u64, geo: &Geometry, host: &Weak<dyn WindowOwner>) -> (Option<ModelBuffer>, Outcome) {
    let rounded = len.checked_next_multiple_of(geo.page);
    if rounded.is_some_and(|r| r > MAX_BUFFER_PAGES * geo.page) {
        return (None, Outcome::Skipped); // too big to bother with
    }
    let ok = rounded.is_some_and(|r| r > 0);
    let Some(buffer) = expect("SharedBuffer::new", ok, SharedBuffer::new(len)) else {
        return (None, Outcome::Refused);
    };
    let bytes = vec![0u8; rounded.unwrap() as usize];
    assert_eq!(buffer.len(), bytes.len() as u64, "buffer length");
    let grant = buffer.grant(host.clone()).expect("grant a new buffer");
    (Some(ModelBuffer { buffer, grant, bytes, revoked: false }), Outcome::Accepted)
}

/// Runs `input` on a new space and its model, checking them after every
/// step (see the module doc); panics at the first disagreement.
pub fn replay(input: Input) -> Replay {
    let page = framemap::host_page_size() as u64;
    let geo = Geometry::of(&input, page);
    let capacity = geo.capacity_pages * page;
    let initial_len = geo.bytes(input.initial_len, geo.capacity_pages);
    let guard = (geo.total_pages - geo.capacity_pages) * page;
    let config = SpaceConfig { capacity, guard, initial_len };
    let space = match LinearSpace::new(config) {
        Ok(space) => {
            assert!(geo.total_pages > 0 && initial_len <= capacity, "{config:?} accepted");
            space
        }
        Err(e) => {
            assert!(geo.total_pages == 0 || initial_len > capacity, "{config:?} refused: {e}");
            return Replay { created: false, outcomes: Vec::new() };
        }
    };
    // The space behind a mutex is the buffers' window host: revocation
    // reaches it through the grant.
    let space = Arc::new(Mutex::new(space));
    let host: Weak<dyn WindowOwner> = Arc::downgrade(&space) as Weak<dyn WindowOwner>;
    space.lock().unwrap().set_window_owner(host.clone());
    let mut model = Model::new(page, geo.total_pages, capacity, initial_len);
    let mut b = Backings::default();
    check(&space.lock().unwrap(), &model, &b, 0);

    let mut outcomes = Vec::with_capacity(input.ops.len());
    // Snapshot round trips: a full one halfway, then one incremental to it
    // (or full, after a reset) at the end (see `space_snapshot`).
    let halfway = input.ops.len() / 2;
    let mut parent = None;
    for (step, op) in input.ops.into_iter().enumerate() {
        if step == halfway {
            parent = Some(round_trip(&mut space.lock().unwrap(), &model, &b, None, step));
        }
        let step = step + 1;
        if trace() {
            eprintln!("step {step}: {op:?} (len {:#x})", model.len);
        }
        let outcome = match op {
            Op::Image(spec) if b.images.len() < MAX_IMAGES => {
                let (image, outcome) = make_image(&spec, &geo);
                b.images.push(image);
                outcome
            }
            Op::Buffer(len) if b.buffers.len() < MAX_BUFFERS => {
                let (buffer, outcome) = make_buffer(geo.bytes(len, MAX_BUFFER_PAGES - 2), &geo, &host);
                b.buffers.push(buffer);
                outcome
            }
            Op::Image(_) | Op::Buffer(_) => Outcome::Skipped,
            Op::Revoke(i) => match b.pick_buffer(i) {
                None => Outcome::Skipped,
                Some(buf) => {
                    let m = b.buffer_mut(buf);
                    // Not holding the space's lock: revocation takes it.
                    let told = m.buffer.revoke().unwrap();
                    assert_eq!(told, usize::from(!m.revoked), "step {step}: memories told of the revocation");
                    m.revoked = true;
                    model.unmap_buffer(buf);
                    let mut space = space.lock().unwrap();
                    let (offset, len) = (0, model.accessible_pages() * page);
                    expect(
                        "map_buffer of a revoked buffer",
                        false,
                        space.map_buffer(offset, &b.buffer(buf).grant, 0, len.min(page), Protection::Read),
                    );
                    assert!(b.buffer(buf).buffer.grant(host.clone()).is_err(), "step {step}: grant after revocation");
                    Outcome::Accepted
                }
            },
            Op::BufferWrite { buffer, offset, len, seed } => match b.pick_buffer(buffer) {
                None => Outcome::Skipped,
                Some(buf) => {
                    let offset = geo.bytes(offset, MAX_BUFFER_PAGES);
                    let data = pattern(seed, usize::from(len) % (2 * page as usize));
                    let m = b.buffer_mut(buf);
                    let ok =
                        !m.revoked && offset.checked_add(data.len() as u64).is_some_and(|e| e <= m.bytes.len() as u64);
                    let done = expect("SharedBuffer::write", ok, m.buffer.write(offset, &data)).is_some();
                    if done {
                        m.bytes[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                    }
                    Outcome::of(done)
                }
            },
            Op::BufferRead { buffer, offset, len } => match b.pick_buffer(buffer) {
                None => Outcome::Skipped,
                Some(buf) => {
                    let offset = geo.bytes(offset, MAX_BUFFER_PAGES);
                    let mut data = vec![0u8; usize::from(len) % (2 * page as usize)];
                    let m = b.buffer(buf);
                    let ok =
                        !m.revoked && offset.checked_add(data.len() as u64).is_some_and(|e| e <= m.bytes.len() as u64);
                    let done = expect("SharedBuffer::read", ok, m.buffer.read(offset, &mut data)).is_some();
                    if done {
                        let want = &m.bytes[offset as usize..offset as usize + data.len()];
                        assert!(data == want, "step {step}: buffer read");
                    }
                    Outcome::of(done)
                }
            },
            op => space_op(&mut space.lock().unwrap(), op, &mut model, &mut b, &geo, step),
        };
        // A skipped step changed nothing: the last check stands.
        if outcome != Outcome::Skipped {
            check(&space.lock().unwrap(), &model, &b, step);
        }
        outcomes.push(outcome);
    }
    round_trip(&mut space.lock().unwrap(), &model, &b, parent.as_ref(), outcomes.len());
    Replay { created: true, outcomes }
}

/// One operation on the space itself (its lock held).
fn space_op(
    space: &mut LinearSpace,
    op: Op,
    model: &mut Model,
    b: &mut Backings,
    geo: &Geometry,
    step: usize,
) -> Outcome {
    let page = geo.page;
    match op {
        Op::Image(_) | Op::Buffer(_) | Op::Revoke(_) | Op::BufferWrite { .. } | Op::BufferRead { .. } => {
            unreachable!("handled without the lock")
        }
        Op::Grow(len) => {
            let new_len = geo.bytes(len, geo.capacity_pages);
            let ok = new_len >= model.len && new_len <= model.capacity;
            let done = expect("grow_to", ok, space.grow_to(new_len)).is_some();
            if done {
                for p in model.accessible_pages()..new_len.div_ceil(page) {
                    model.frames[p as usize] = MFrame::Zero(Protection::ReadWrite);
                    model.fill_page(p, None);
                }
                model.len = new_len;
            }
            Outcome::of(done)
        }
        Op::Protect { offset, len, prot } => {
            let (offset, len, prot) = (geo.pages(offset), geo.pages(len), Protection::from(prot));
            let range = model
                .page_range(offset, len)
                .filter(|r| (r.start..r.end).all(|p| model.frames[p as usize] != MFrame::Unmapped));
            let done = expect("protect", range.is_some(), space.protect(offset, len, prot)).is_some();
            if let Some(r) = range.filter(|_| done) {
                for p in r.start..r.end {
                    model.frames[p as usize] = model.frames[p as usize].with_prot(prot);
                }
            }
            Outcome::of(done)
        }
        Op::Discard { offset, len } => {
            let (offset, len) = (geo.pages(offset), geo.pages(len));
            let range = model
                .page_range(offset, len)
                .filter(|r| (r.start..r.end).all(|p| model.frames[p as usize].tag() != FrameTag::Shared));
            let done = expect("discard", range.is_some(), space.discard(offset, len)).is_some();
            if let Some(r) = range.filter(|_| done) {
                for p in r.start..r.end {
                    match model.frames[p as usize] {
                        MFrame::Unmapped => {}
                        MFrame::Shared { .. } => unreachable!(),
                        MFrame::Zero(_) => model.fill_page(p, None),
                        MFrame::Image { prot, .. } => {
                            model.frames[p as usize] = MFrame::Zero(prot);
                            model.fill_page(p, None);
                        }
                    }
                }
            }
            Outcome::of(done)
        }
        Op::MapImage { offset, image, image_offset, len, prot } => {
            let Some(img) = b.pick_image(image) else { return Outcome::Skipped };
            let (offset, image_offset, len, prot) =
                (geo.pages(offset), geo.pages(image_offset), geo.pages(len), Protection::from(prot));
            let m = b.image(img);
            let ok_image = image_offset
                .checked_add(len)
                .is_some_and(|end| image_offset.is_multiple_of(page) && end <= m.bytes.len() as u64);
            let range = model.page_range(offset, len).filter(|_| ok_image);
            let result = space.map_image(offset, &m.image, image_offset, len, prot);
            let done = expect("map_image", range.is_some(), result).is_some();
            if let Some(r) = range.filter(|_| done) {
                for (i, p) in (r.start..r.end).enumerate() {
                    let ipage = image_offset / page + i as u64;
                    model.frames[p as usize] = MFrame::Image { img, page: ipage, prot };
                    model.image_page(p, img, ipage, b);
                }
            }
            Outcome::of(done)
        }
        Op::MapBuffer { offset, buffer, buffer_offset, len, prot } => {
            let Some(buf) = b.pick_buffer(buffer) else { return Outcome::Skipped };
            let (offset, buffer_offset, len, prot) =
                (geo.pages(offset), geo.pages(buffer_offset), geo.pages(len), Protection::from(prot));
            let m = b.buffer(buf);
            let ok_buffer = !m.revoked
                && buffer_offset
                    .checked_add(len)
                    .is_some_and(|end| buffer_offset.is_multiple_of(page) && end <= m.bytes.len() as u64);
            let range = model.page_range(offset, len).filter(|_| ok_buffer);
            let result = space.map_buffer(offset, &m.grant, buffer_offset, len, prot);
            let done = expect("map_buffer", range.is_some(), result).is_some();
            if let Some(r) = range.filter(|_| done) {
                for (i, p) in (r.start..r.end).enumerate() {
                    model.frames[p as usize] = MFrame::Shared { buf, page: buffer_offset / page + i as u64, prot };
                }
            }
            Outcome::of(done)
        }
        Op::MapZero { offset, len, prot } => {
            let (offset, len, prot) = (geo.pages(offset), geo.pages(len), Protection::from(prot));
            let range = model.page_range(offset, len);
            let done = expect("map_zero", range.is_some(), space.map_zero(offset, len, prot)).is_some();
            if let Some(r) = range.filter(|_| done) {
                for p in r.start..r.end {
                    model.frames[p as usize] = MFrame::Zero(prot);
                    model.fill_page(p, None);
                }
            }
            Outcome::of(done)
        }
        Op::Unmap { offset, len } => {
            let (offset, len) = (geo.pages(offset), geo.pages(len));
            let range = model.page_range(offset, len);
            let done = expect("unmap", range.is_some(), space.unmap(offset, len)).is_some();
            if let Some(r) = range.filter(|_| done) {
                for p in r.start..r.end {
                    model.frames[p as usize] = MFrame::Unmapped;
                }
            }
            Outcome::of(done)
        }
        Op::UnmapBuffer(i) => {
            // A buffer the space never mapped (or no buffer at all) is fine.
            let (id, buf) = match b.pick_buffer(i) {
                Some(buf) if i % 8 != 0 => (b.buffer(buf).buffer.id(), Some(buf)),
                _ => (BackingId(u64::MAX), None),
            };
            expect("unmap_buffer", true, space.unmap_buffer(id));
            if let Some(buf) = buf {
                model.unmap_buffer(buf);
            }
            Outcome::Accepted
        }
        Op::Write { offset, len, seed } => {
            let offset = geo.bytes(offset, geo.total_pages);
            let data = pattern(seed, usize::from(len) % (3 * page as usize));
            let ok = model.access(offset, data.len() as u64, Protection::writable);
            let done = expect("write", ok, space.write(offset, &data)).is_some();
            if done {
                model.write(b, offset, &data);
            }
            Outcome::of(done)
        }
        Op::Read { offset, len } => {
            let offset = geo.bytes(offset, geo.total_pages);
            let mut buf = vec![0u8; usize::from(len) % (3 * page as usize)];
            let ok = model.access(offset, buf.len() as u64, Protection::readable);
            // The space checks before it touches anything: reading a range
            // the model says is unreadable must be refused, not fault.
            let done = expect("read", ok, space.read(offset, &mut buf)).is_some();
            if done {
                assert!(buf == model.read(b, offset, offset + buf.len() as u64), "step {step}: read");
            }
            Outcome::of(done)
        }
        Op::Reset { len, image, policy } => {
            let len = geo.bytes(len, geo.capacity_pages);
            let img = image.and_then(|i| b.pick_image(i));
            let policy = geo.policy(policy);
            let ok = model.layout_ok(len, img.map(|i| b.image(i)));
            let result = space.reset(len, img.map(|i| &b.image(i).image), policy);
            let report = expect("reset", ok, result);
            if let Some(report) = &report {
                check_report(report, policy);
                model.restore_dirty(b);
                model.restore_layout(len, img, b);
            }
            Outcome::of(report.is_some())
        }
        Op::RestoreDirty(policy) => {
            let policy = geo.policy(policy);
            let report = expect("restore_dirty", true, space.restore_dirty(policy)).unwrap();
            check_report(&report, policy);
            model.restore_dirty(b);
            Outcome::Accepted
        }
        Op::RestoreLayout { len, image } => {
            let len = geo.bytes(len, geo.capacity_pages);
            let img = image.and_then(|i| b.pick_image(i));
            let ok = model.layout_ok(len, img.map(|i| b.image(i)));
            let result = space.restore_layout(len, img.map(|i| &b.image(i).image));
            let done = expect("restore_layout", ok, result).is_some();
            if done {
                model.restore_layout(len, img, b);
            }
            Outcome::of(done)
        }
        Op::Populate(ranges) => {
            let total = geo.total_pages;
            let ranges: Vec<PageRange> = ranges
                .iter()
                .take(4)
                .map(|&(x, y)| PageRange::new(u64::from(x) % (total + 4), u64::from(y) % (total + 4)))
                .collect();
            let populated = expect("populate", true, space.populate(&ranges)).unwrap();
            // The writable Zero and Image pages of the ranges, clipped to
            // the accessible ones: counted once (union) or once per range.
            let acc = model.accessible_pages();
            let writable = |p: u64| {
                p < acc
                    && matches!(model.frames[p as usize], MFrame::Zero(_) | MFrame::Image { .. })
                    && model.frames[p as usize].prot().writable()
            };
            let union = (0..acc).filter(|&p| writable(p) && ranges.iter().any(|r| r.contains(p))).count() as u64;
            let sum: u64 = ranges.iter().map(|r| (r.start..r.end).filter(|&p| writable(p)).count() as u64).sum();
            assert!(
                (union * page..=sum * page).contains(&populated),
                "step {step}: populate says {populated} bytes, {union}..={sum} pages are writable"
            );
            Outcome::Accepted
        }
        Op::Summary => {
            let summary = expect("summary", true, space.summary()).unwrap();
            let guard = (geo.total_pages - geo.capacity_pages) * page;
            assert_eq!((summary.len, summary.capacity, summary.guard), (model.len, model.capacity, guard));
            for tag in FrameTag::ALL {
                let pages = model.frames.iter().filter(|f| f.tag() == tag).count() as u64;
                assert_eq!(summary.bytes[tag], pages * page, "step {step}: {tag} bytes");
                assert!(summary.resident[tag] <= summary.bytes[tag], "step {step}: {tag} resident");
            }
            assert_eq!(summary.resident[FrameTag::Unmapped], 0, "step {step}: unmapped resident");
            Outcome::Accepted
        }
    }
}

/// What `ResetPolicy` documents about a reset's report.
fn check_report(report: &framemap::ResetReport, policy: ResetPolicy) {
    if !policy.scan_dirty {
        assert!(!report.scanned, "scanned though told not to");
    }
    if !report.scanned {
        assert_eq!(report.zeroed_in_place, 0, "zeroed in place without a scan");
    }
    assert!(report.zeroed_in_place <= policy.keep_resident, "{report:?} zeroed more than {policy:?} keeps");
}
