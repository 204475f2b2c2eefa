//! `LinearSpace` against a pure model: arbitrary sequences of grow,
//! map_image, map_buffer (windows of host-shared buffers), map_zero, unmap,
//! unmap_buffer, buffer revocation, protect, discard, host writes and reads
//! (through the space and through the buffers), reset, zero_dirty,
//! restore_layout and populate on a small real space. The model holds every
//! page's frame (tag, backing page, protection), every byte (a `Shared`
//! page's bytes live in its buffer's model, seen by every window of it), and
//! the accessible length, as `space.rs` and `buffer.rs` document them.
//!
//! After every step: the space validates against `/proc/self/maps`, its
//! frame table equals the model page by page, its length equals the model's,
//! every byte the model says is readable reads back as the model's (the
//! checks never touch a page the model says is unreadable), and every live
//! buffer holds the model's bytes. An operation the model rejects must
//! return `Err`; since the model is left as it was, the checks after it
//! prove the call changed nothing.
//!
//! (Over the project's ~600-line rule: its model moves to `fuzz/src/`, where
//! regression tests can replay against it, with the house issue.)
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use framemap::{
    BackingId, BufferGrant, Frame, FrameTag, Image, LinearSpace, PageRange, Protection, ResetPolicy, SharedBuffer,
    SpaceConfig, WindowHost,
};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex, Weak};

// The enums decode from a one-byte tag (derived `Arbitrary` spends four on
// every variant choice), so that short inputs already hold long sequences of
// operations.

#[derive(Debug, Clone, Copy)]
enum Prot {
    None,
    Read,
    ReadWrite,
}

impl<'a> Arbitrary<'a> for Prot {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok([Prot::None, Prot::Read, Prot::ReadWrite][usize::from(u8::arbitrary(u)? % 3)])
    }
}

impl From<Prot> for Protection {
    fn from(p: Prot) -> Protection {
        match p {
            Prot::None => Protection::None,
            Prot::Read => Protection::Read,
            Prot::ReadWrite => Protection::ReadWrite,
        }
    }
}

/// A byte offset or length for the page-granular operations: mostly whole
/// pages near the space's size, sometimes misaligned or huge.
#[derive(Debug, Clone, Copy)]
enum Pages {
    Pages(u8),
    Misaligned(u8, u16),
    Raw(u64),
}

impl<'a> Arbitrary<'a> for Pages {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u8::arbitrary(u)? % 16 {
            0 => Pages::Misaligned(u.arbitrary()?, u.arbitrary()?),
            1 => Pages::Raw(u.arbitrary()?),
            _ => Pages::Pages(u.arbitrary()?),
        })
    }
}

/// A byte offset or length for reads, writes and lengths.
#[derive(Debug, Clone, Copy)]
enum Bytes {
    /// Whole pages.
    Pages(u8),
    /// Pages plus a few bytes.
    At(u8, u16),
    Raw(u64),
}

impl<'a> Arbitrary<'a> for Bytes {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u8::arbitrary(u)? % 8 {
            0..=3 => Bytes::Pages(u.arbitrary()?),
            7 => Bytes::Raw(u.arbitrary()?),
            _ => Bytes::At(u.arbitrary()?, u.arbitrary()?),
        })
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Segment {
    offset: Bytes,
    len: u16,
    seed: u8,
}

#[derive(Arbitrary, Debug)]
struct ImageSpec {
    len: Bytes,
    segments: Vec<Segment>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Policy {
    keep: u8,
    scan: bool,
}

#[derive(Debug)]
enum Op {
    /// Makes the next image (up to `MAX_IMAGES`; later ones are ignored).
    Image(ImageSpec),
    /// Makes the next buffer and grants it to the space (up to
    /// `MAX_BUFFERS`).
    Buffer(Bytes),
    Grow(Bytes),
    Protect {
        offset: Pages,
        len: Pages,
        prot: Prot,
    },
    Discard {
        offset: Pages,
        len: Pages,
    },
    MapImage {
        offset: Pages,
        image: u8,
        image_offset: Pages,
        len: Pages,
        prot: Prot,
    },
    MapBuffer {
        offset: Pages,
        buffer: u8,
        buffer_offset: Pages,
        len: Pages,
        prot: Prot,
    },
    MapZero {
        offset: Pages,
        len: Pages,
        prot: Prot,
    },
    Unmap {
        offset: Pages,
        len: Pages,
    },
    UnmapBuffer(u8),
    Revoke(u8),
    Write {
        offset: Bytes,
        len: u16,
        seed: u8,
    },
    Read {
        offset: Bytes,
        len: u16,
    },
    BufferWrite {
        buffer: u8,
        offset: Bytes,
        len: u16,
        seed: u8,
    },
    BufferRead {
        buffer: u8,
        offset: Bytes,
        len: u16,
    },
    Reset {
        len: Bytes,
        image: Option<u8>,
        policy: Policy,
    },
    ZeroDirty(Policy),
    RestoreLayout {
        len: Bytes,
        image: Option<u8>,
    },
    Populate(Vec<(u8, u8)>),
    Summary,
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u8::arbitrary(u)? % 20 {
            0 => Op::Image(u.arbitrary()?),
            1 => Op::Buffer(u.arbitrary()?),
            2 => Op::Grow(u.arbitrary()?),
            3 => Op::Protect { offset: u.arbitrary()?, len: u.arbitrary()?, prot: u.arbitrary()? },
            4 => Op::Discard { offset: u.arbitrary()?, len: u.arbitrary()? },
            5 => Op::MapImage {
                offset: u.arbitrary()?,
                image: u.arbitrary()?,
                image_offset: u.arbitrary()?,
                len: u.arbitrary()?,
                prot: u.arbitrary()?,
            },
            6 => Op::MapBuffer {
                offset: u.arbitrary()?,
                buffer: u.arbitrary()?,
                buffer_offset: u.arbitrary()?,
                len: u.arbitrary()?,
                prot: u.arbitrary()?,
            },
            7 => Op::MapZero { offset: u.arbitrary()?, len: u.arbitrary()?, prot: u.arbitrary()? },
            8 => Op::Unmap { offset: u.arbitrary()?, len: u.arbitrary()? },
            9 => Op::UnmapBuffer(u.arbitrary()?),
            10 => Op::Revoke(u.arbitrary()?),
            11 => Op::Write { offset: u.arbitrary()?, len: u.arbitrary()?, seed: u.arbitrary()? },
            12 => Op::Read { offset: u.arbitrary()?, len: u.arbitrary()? },
            13 => Op::BufferWrite {
                buffer: u.arbitrary()?,
                offset: u.arbitrary()?,
                len: u.arbitrary()?,
                seed: u.arbitrary()?,
            },
            14 => Op::BufferRead { buffer: u.arbitrary()?, offset: u.arbitrary()?, len: u.arbitrary()? },
            15 => Op::Reset { len: u.arbitrary()?, image: u.arbitrary()?, policy: u.arbitrary()? },
            16 => Op::ZeroDirty(u.arbitrary()?),
            17 => Op::RestoreLayout { len: u.arbitrary()?, image: u.arbitrary()? },
            18 => Op::Populate(u.arbitrary()?),
            _ => Op::Summary,
        })
    }
}

#[derive(Debug)]
struct Input {
    capacity_pages: u8,
    guard_pages: u8,
    initial_len: Bytes,
    ops: Vec<Op>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let (capacity_pages, guard_pages, initial_len) = (u.arbitrary()?, u.arbitrary()?, u.arbitrary()?);
        // Operations until the input ends (no "one more?" byte before each).
        let mut ops = Vec::new();
        while !u.is_empty() {
            ops.push(u.arbitrary()?);
        }
        Ok(Input { capacity_pages, guard_pages, initial_len, ops })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

/// Most pages a space may have (capacity), and most guard pages. Most
/// inputs get at most `SMALL_CAPACITY_PAGES`, so that random ranges overlap
/// each other often and the checks after each step stay cheap.
const MAX_CAPACITY_PAGES: u64 = 64;
const SMALL_CAPACITY_PAGES: u64 = 16;
const MAX_GUARD_PAGES: u64 = 8;
/// Most images, and most pages in one.
const MAX_IMAGES: usize = 4;
const MAX_IMAGE_PAGES: u64 = 12;
/// Most buffers, and most pages in one.
const MAX_BUFFERS: usize = 3;
const MAX_BUFFER_PAGES: u64 = 10;

/// A page as the model sees it; `img` and `buf` index the images and
/// buffers made so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MFrame {
    Unmapped,
    Zero(Protection),
    Image { img: usize, page: u64, prot: Protection },
    Shared { buf: usize, page: u64, prot: Protection },
}

impl MFrame {
    fn prot(self) -> Protection {
        match self {
            MFrame::Unmapped => Protection::None,
            MFrame::Zero(p) | MFrame::Image { prot: p, .. } | MFrame::Shared { prot: p, .. } => p,
        }
    }

    fn with_prot(self, prot: Protection) -> MFrame {
        match self {
            MFrame::Unmapped => MFrame::Unmapped,
            MFrame::Zero(_) => MFrame::Zero(prot),
            MFrame::Image { img, page, .. } => MFrame::Image { img, page, prot },
            MFrame::Shared { buf, page, .. } => MFrame::Shared { buf, page, prot },
        }
    }

    fn tag(self) -> FrameTag {
        match self {
            MFrame::Unmapped => FrameTag::Unmapped,
            MFrame::Zero(_) => FrameTag::Zero,
            MFrame::Image { .. } => FrameTag::Image,
            MFrame::Shared { .. } => FrameTag::Shared,
        }
    }
}

struct ModelImage {
    image: Image,
    /// The image's bytes, its length rounded up to whole pages.
    bytes: Vec<u8>,
}

struct ModelBuffer {
    buffer: SharedBuffer,
    grant: BufferGrant,
    /// The buffer's bytes (whole pages).
    bytes: Vec<u8>,
    revoked: bool,
}

/// Images and buffers made so far (`None` where the spec was refused, as the
/// model predicted).
#[derive(Default)]
struct Backings {
    images: Vec<Option<ModelImage>>,
    buffers: Vec<Option<ModelBuffer>>,
}

impl Backings {
    fn image(&self, i: usize) -> &ModelImage {
        self.images[i].as_ref().expect("named image exists")
    }

    fn buffer(&self, i: usize) -> &ModelBuffer {
        self.buffers[i].as_ref().expect("named buffer exists")
    }

    /// The `i`-th made image, counting around.
    fn pick_image(&self, i: u8) -> Option<usize> {
        pick(&self.images, i)
    }

    fn pick_buffer(&self, i: u8) -> Option<usize> {
        pick(&self.buffers, i)
    }
}

fn pick<T>(v: &[Option<T>], i: u8) -> Option<usize> {
    let live: Vec<usize> = (0..v.len()).filter(|&k| v[k].is_some()).collect();
    (!live.is_empty()).then(|| live[usize::from(i) % live.len()])
}

struct Model {
    page: u64,
    total_pages: u64,
    capacity: u64,
    len: u64,
    frames: Vec<MFrame>,
    /// Contents of every page not `Shared` (meaningless for unmapped pages).
    bytes: Vec<u8>,
}

impl Model {
    fn accessible_pages(&self) -> u64 {
        self.len.div_ceil(self.page)
    }

    fn page_bytes(&mut self, p: u64) -> &mut [u8] {
        let ps = self.page as usize;
        &mut self.bytes[p as usize * ps..(p as usize + 1) * ps]
    }

    fn fill_page(&mut self, p: u64, contents: Option<&[u8]>) {
        let page = self.page_bytes(p);
        match contents {
            Some(c) => page.copy_from_slice(c),
            None => page.fill(0),
        }
    }

    /// Where the byte at `at` lives, and how many bytes from there stay in
    /// the same page: in the space's own bytes, or (for a `Shared` page) in
    /// its buffer's page.
    fn locate(&self, at: u64) -> (Option<usize>, usize, usize) {
        let (p, o) = (at / self.page, at % self.page);
        let left = (self.page - o) as usize;
        match self.frames[p as usize] {
            MFrame::Shared { buf, page, .. } => (Some(buf), (page * self.page + o) as usize, left),
            _ => (None, at as usize, left),
        }
    }

    /// The bytes `from..to` as the memory shows them: a `Shared` page shows
    /// its buffer's page.
    fn read(&self, b: &Backings, from: u64, to: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut at = from;
        while at < to {
            let (buf, i, left) = self.locate(at);
            let n = left.min((to - at) as usize);
            let src = match buf {
                Some(buf) => &b.buffer(buf).bytes,
                None => &self.bytes,
            };
            out.extend_from_slice(&src[i..i + n]);
            at += n as u64;
        }
        out
    }

    fn write(&mut self, b: &mut Backings, offset: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let (buf, i, left) = self.locate(offset + done as u64);
            let n = left.min(data.len() - done);
            let dst = match buf {
                Some(buf) => &mut b.buffers[buf].as_mut().expect("named buffer exists").bytes,
                None => &mut self.bytes,
            };
            dst[i..i + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    /// `LinearSpace::page_range`: a page-aligned range inside the accessible
    /// pages, or `None` if the space must refuse it.
    fn page_range(&self, offset: u64, len: u64) -> Option<PageRange> {
        let end = offset.checked_add(len)?;
        if !offset.is_multiple_of(self.page) || !len.is_multiple_of(self.page) {
            return None;
        }
        if end > self.accessible_pages() * self.page {
            return None;
        }
        Some(PageRange::new(offset / self.page, end / self.page))
    }

    /// Whether every byte of `offset..offset + len` may be accessed: inside
    /// the accessible length, on pages with the right protection ("refused
    /// if any of them is not readable / any target byte is not writable").
    fn access(&self, offset: u64, len: u64, allowed: fn(Protection) -> bool) -> bool {
        let Some(end) = offset.checked_add(len) else { return false };
        if end > self.len {
            return false;
        }
        if len == 0 {
            return true;
        }
        (offset / self.page..=(end - 1) / self.page).all(|p| allowed(self.frames[p as usize].prot()))
    }

    fn image_page(&mut self, p: u64, img: usize, page: u64, b: &Backings) {
        let ps = self.page as usize;
        let src = &b.image(img).bytes[page as usize * ps..(page as usize + 1) * ps];
        self.page_bytes(p).copy_from_slice(src);
    }

    /// `zero_dirty`: every accessible page back to its frame's initial
    /// contents; `Shared` pages (the host's) are left alone.
    fn zero_dirty(&mut self, b: &Backings) {
        for p in 0..self.accessible_pages() {
            match self.frames[p as usize] {
                MFrame::Unmapped | MFrame::Shared { .. } => {}
                MFrame::Zero(_) => self.fill_page(p, None),
                MFrame::Image { img, page, .. } => self.image_page(p, img, page, b),
            }
        }
    }

    /// `restore_layout`'s checks: whether it must refuse.
    fn layout_ok(&self, len: u64, image: Option<&ModelImage>) -> bool {
        len <= self.capacity && image.map_or(0, |i| i.bytes.len() as u64) <= len.next_multiple_of(self.page)
    }

    /// `restore_layout` once its arguments are known good: frames that
    /// already have their target keep their contents, others are fresh.
    fn restore_layout(&mut self, len: u64, image: Option<usize>, b: &Backings) {
        let old_end = self.accessible_pages();
        let new_end = len.div_ceil(self.page);
        for p in new_end..old_end {
            self.frames[p as usize] = MFrame::Unmapped;
        }
        let mut image_pages = 0;
        if let Some(img) = image {
            image_pages = b.image(img).bytes.len() as u64 / self.page;
            for p in 0..image_pages {
                let target = MFrame::Image { img, page: p, prot: Protection::ReadWrite };
                if self.frames[p as usize] != target {
                    self.frames[p as usize] = target;
                    self.image_page(p, img, p, b);
                }
            }
        }
        for p in image_pages..new_end {
            match self.frames[p as usize] {
                MFrame::Zero(_) => {}
                MFrame::Unmapped | MFrame::Image { .. } | MFrame::Shared { .. } => self.fill_page(p, None),
            }
            self.frames[p as usize] = MFrame::Zero(Protection::ReadWrite);
        }
        self.len = len;
    }

    /// Every window of buffer `buf` becomes `Unmapped`.
    fn unmap_buffer(&mut self, buf: usize) {
        for f in &mut self.frames {
            if matches!(*f, MFrame::Shared { buf: b, .. } if b == buf) {
                *f = MFrame::Unmapped;
            }
        }
    }
}

struct Ctx {
    page: u64,
    total_pages: u64,
    capacity_pages: u64,
}

impl Ctx {
    fn pages(&self, v: Pages) -> u64 {
        match v {
            Pages::Pages(n) => u64::from(n) % (self.total_pages + 2) * self.page,
            Pages::Misaligned(n, b) => {
                u64::from(n) % (self.total_pages + 2) * self.page + u64::from(b) % (self.page - 1) + 1
            }
            Pages::Raw(x) => x,
        }
    }

    fn bytes(&self, v: Bytes, pages: u64) -> u64 {
        match v {
            Bytes::Pages(n) => u64::from(n) % (pages + 2) * self.page,
            Bytes::At(n, b) => u64::from(n) % (pages + 2) * self.page + u64::from(b) % self.page,
            Bytes::Raw(x) => x,
        }
    }

    fn policy(&self, p: Policy) -> ResetPolicy {
        let keep_resident = match p.keep % 6 {
            0 => 0,
            1 => self.page,
            2 => 3 * self.page,
            3 => 3 * self.page + 1,
            4 => u64::MAX,
            _ => 1 << 20,
        };
        ResetPolicy { keep_resident, scan_dirty: p.scan }
    }
}

/// Bytes a fuzz seed expands to: varying along the buffer, so misplaced
/// pages or offsets show.
fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)).wrapping_add((i >> 8) as u8) | 1).collect()
}

fn trace() -> bool {
    std::env::var_os("FRAMEMAP_FUZZ_TRACE").is_some()
}

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

fn frame_of(f: MFrame, b: &Backings) -> Frame {
    match f {
        MFrame::Unmapped => Frame::UNMAPPED,
        MFrame::Zero(p) => Frame::zero(p),
        MFrame::Image { img, page, prot } => Frame::image(b.image(img).image.id(), page, prot),
        MFrame::Shared { buf, page, prot } => Frame::shared(b.buffer(buf).buffer.id(), page, prot),
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
            let want = frame_of(model.frames[p as usize], b);
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

fn make_image(spec: &ImageSpec, ctx: &Ctx) -> Option<ModelImage> {
    let len = ctx.bytes(spec.len, MAX_IMAGE_PAGES - 2);
    let segments: Vec<(u64, Vec<u8>)> = spec
        .segments
        .iter()
        .take(8)
        .map(|s| {
            let len = usize::from(s.len) % (2 * ctx.page as usize + 1);
            (ctx.bytes(s.offset, MAX_IMAGE_PAGES - 2), pattern(s.seed, len))
        })
        .collect();
    let rounded = len.checked_next_multiple_of(ctx.page);
    if rounded.is_some_and(|r| r > MAX_IMAGE_PAGES * ctx.page) {
        return None; // too big to bother with (and to build quickly)
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
            Some(ModelImage { image, bytes })
        }
        (None, Err(_)) => None,
        (Some(_), Err(e)) => panic!("image refused: {e}"),
        (None, Ok(image)) => panic!("image with a segment past its end accepted: {image:?}"),
    }
}

fn make_buffer(len: u64, ctx: &Ctx, host: &Weak<dyn WindowHost>) -> Option<ModelBuffer> {
    let rounded = len.checked_next_multiple_of(ctx.page);
    if rounded.is_some_and(|r| r > MAX_BUFFER_PAGES * ctx.page) {
        return None; // too big to bother with
    }
    let ok = rounded.is_some_and(|r| r > 0);
    let buffer = expect("SharedBuffer::new", ok, SharedBuffer::new(len))?;
    let bytes = vec![0u8; rounded.unwrap() as usize];
    assert_eq!(buffer.len(), bytes.len() as u64, "buffer length");
    let grant = buffer.grant(host.clone()).expect("grant a new buffer");
    Some(ModelBuffer { buffer, grant, bytes, revoked: false })
}

fuzz_target!(|input: Input| {
    let page = framemap::host_page_size() as u64;
    let capacity_pages = match input.capacity_pages {
        c @ 0..224 => u64::from(c) % (SMALL_CAPACITY_PAGES + 1),
        c => u64::from(c) % (MAX_CAPACITY_PAGES + 1),
    };
    let guard_pages = u64::from(input.guard_pages) % (MAX_GUARD_PAGES + 1);
    let total_pages = capacity_pages + guard_pages;
    let ctx = Ctx { page, total_pages, capacity_pages };
    let capacity = capacity_pages * page;
    let initial_len = ctx.bytes(input.initial_len, capacity_pages);
    let config = SpaceConfig { capacity, guard: guard_pages * page, initial_len };
    let space = match LinearSpace::new(config) {
        Ok(space) => {
            assert!(total_pages > 0 && initial_len <= capacity, "{config:?} accepted");
            space
        }
        Err(e) => {
            assert!(total_pages == 0 || initial_len > capacity, "{config:?} refused: {e}");
            return;
        }
    };
    // The space behind a mutex is the buffers' window host: revocation
    // reaches it through the grant.
    let space = Arc::new(Mutex::new(space));
    let host: Weak<dyn WindowHost> = Arc::downgrade(&space) as Weak<dyn WindowHost>;
    space.lock().unwrap().set_window_host(host.clone());
    let accessible = initial_len.div_ceil(page);
    let mut model = Model {
        page,
        total_pages,
        capacity,
        len: initial_len,
        frames: (0..total_pages)
            .map(|p| if p < accessible { MFrame::Zero(Protection::ReadWrite) } else { MFrame::Unmapped })
            .collect(),
        bytes: vec![0; (total_pages * page) as usize],
    };
    let mut b = Backings::default();
    check(&space.lock().unwrap(), &model, &b, 0);

    for (step, op) in input.ops.into_iter().enumerate() {
        let step = step + 1;
        if trace() {
            eprintln!("step {step}: {op:?} (len {:#x})", model.len);
        }
        match op {
            Op::Image(spec) => {
                if b.images.len() < MAX_IMAGES {
                    b.images.push(make_image(&spec, &ctx));
                }
            }
            Op::Buffer(len) => {
                if b.buffers.len() < MAX_BUFFERS {
                    let buffer = make_buffer(ctx.bytes(len, MAX_BUFFER_PAGES - 2), &ctx, &host);
                    b.buffers.push(buffer);
                }
            }
            Op::Revoke(i) => {
                let Some(buf) = b.pick_buffer(i) else { continue };
                let m = b.buffers[buf].as_mut().unwrap();
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
            }
            Op::BufferWrite { buffer, offset, len, seed } => {
                let Some(buf) = b.pick_buffer(buffer) else { continue };
                let offset = ctx.bytes(offset, MAX_BUFFER_PAGES);
                let data = pattern(seed, usize::from(len) % (2 * page as usize));
                let m = b.buffers[buf].as_mut().unwrap();
                let ok = !m.revoked && offset.checked_add(data.len() as u64).is_some_and(|e| e <= m.bytes.len() as u64);
                if expect("SharedBuffer::write", ok, m.buffer.write(offset, &data)).is_some() {
                    m.bytes[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                }
            }
            Op::BufferRead { buffer, offset, len } => {
                let Some(buf) = b.pick_buffer(buffer) else { continue };
                let offset = ctx.bytes(offset, MAX_BUFFER_PAGES);
                let mut data = vec![0u8; usize::from(len) % (2 * page as usize)];
                let m = b.buffer(buf);
                let ok = !m.revoked && offset.checked_add(data.len() as u64).is_some_and(|e| e <= m.bytes.len() as u64);
                if expect("SharedBuffer::read", ok, m.buffer.read(offset, &mut data)).is_some() {
                    assert!(data == m.bytes[offset as usize..offset as usize + data.len()], "step {step}: buffer read");
                }
            }
            op => {
                let mut space = space.lock().unwrap();
                space_op(&mut space, op, &mut model, &mut b, &ctx, step);
            }
        }
        check(&space.lock().unwrap(), &model, &b, step);
    }
});

/// One operation on the space itself (its lock held).
fn space_op(space: &mut LinearSpace, op: Op, model: &mut Model, b: &mut Backings, ctx: &Ctx, step: usize) {
    let page = ctx.page;
    match op {
        Op::Image(_) | Op::Buffer(_) | Op::Revoke(_) | Op::BufferWrite { .. } | Op::BufferRead { .. } => {
            unreachable!("handled without the lock")
        }
        Op::Grow(len) => {
            let new_len = ctx.bytes(len, ctx.capacity_pages);
            let ok = new_len >= model.len && new_len <= model.capacity;
            if expect("grow_to", ok, space.grow_to(new_len)).is_some() {
                for p in model.accessible_pages()..new_len.div_ceil(page) {
                    model.frames[p as usize] = MFrame::Zero(Protection::ReadWrite);
                    model.fill_page(p, None);
                }
                model.len = new_len;
            }
        }
        Op::Protect { offset, len, prot } => {
            let (offset, len, prot) = (ctx.pages(offset), ctx.pages(len), Protection::from(prot));
            let range = model
                .page_range(offset, len)
                .filter(|r| (r.start..r.end).all(|p| model.frames[p as usize] != MFrame::Unmapped));
            if expect("protect", range.is_some(), space.protect(offset, len, prot)).is_some() {
                let r = range.unwrap();
                for p in r.start..r.end {
                    model.frames[p as usize] = model.frames[p as usize].with_prot(prot);
                }
            }
        }
        Op::Discard { offset, len } => {
            let (offset, len) = (ctx.pages(offset), ctx.pages(len));
            let range = model
                .page_range(offset, len)
                .filter(|r| (r.start..r.end).all(|p| model.frames[p as usize].tag() != FrameTag::Shared));
            if expect("discard", range.is_some(), space.discard(offset, len)).is_some() {
                let r = range.unwrap();
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
        }
        Op::MapImage { offset, image, image_offset, len, prot } => {
            let Some(img) = b.pick_image(image) else { return };
            let (offset, image_offset, len, prot) =
                (ctx.pages(offset), ctx.pages(image_offset), ctx.pages(len), Protection::from(prot));
            let m = b.image(img);
            let ok_image = image_offset
                .checked_add(len)
                .is_some_and(|end| image_offset.is_multiple_of(page) && end <= m.bytes.len() as u64);
            let range = model.page_range(offset, len).filter(|_| ok_image);
            let result = space.map_image(offset, &m.image, image_offset, len, prot);
            if expect("map_image", range.is_some(), result).is_some() {
                let r = range.unwrap();
                for (i, p) in (r.start..r.end).enumerate() {
                    let ipage = image_offset / page + i as u64;
                    model.frames[p as usize] = MFrame::Image { img, page: ipage, prot };
                    model.image_page(p, img, ipage, b);
                }
            }
        }
        Op::MapBuffer { offset, buffer, buffer_offset, len, prot } => {
            let Some(buf) = b.pick_buffer(buffer) else { return };
            let (offset, buffer_offset, len, prot) =
                (ctx.pages(offset), ctx.pages(buffer_offset), ctx.pages(len), Protection::from(prot));
            let m = b.buffer(buf);
            let ok_buffer = !m.revoked
                && buffer_offset
                    .checked_add(len)
                    .is_some_and(|end| buffer_offset.is_multiple_of(page) && end <= m.bytes.len() as u64);
            let range = model.page_range(offset, len).filter(|_| ok_buffer);
            let result = space.map_buffer(offset, &m.grant, buffer_offset, len, prot);
            if expect("map_buffer", range.is_some(), result).is_some() {
                let r = range.unwrap();
                for (i, p) in (r.start..r.end).enumerate() {
                    model.frames[p as usize] = MFrame::Shared { buf, page: buffer_offset / page + i as u64, prot };
                }
            }
        }
        Op::MapZero { offset, len, prot } => {
            let (offset, len, prot) = (ctx.pages(offset), ctx.pages(len), Protection::from(prot));
            let range = model.page_range(offset, len);
            if expect("map_zero", range.is_some(), space.map_zero(offset, len, prot)).is_some() {
                let r = range.unwrap();
                for p in r.start..r.end {
                    model.frames[p as usize] = MFrame::Zero(prot);
                    model.fill_page(p, None);
                }
            }
        }
        Op::Unmap { offset, len } => {
            let (offset, len) = (ctx.pages(offset), ctx.pages(len));
            let range = model.page_range(offset, len);
            if expect("unmap", range.is_some(), space.unmap(offset, len)).is_some() {
                let r = range.unwrap();
                for p in r.start..r.end {
                    model.frames[p as usize] = MFrame::Unmapped;
                }
            }
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
        }
        Op::Write { offset, len, seed } => {
            let offset = ctx.bytes(offset, ctx.total_pages);
            let data = pattern(seed, usize::from(len) % (3 * page as usize));
            let ok = model.access(offset, data.len() as u64, Protection::writable);
            if expect("write", ok, space.write(offset, &data)).is_some() {
                model.write(b, offset, &data);
            }
        }
        Op::Read { offset, len } => {
            let offset = ctx.bytes(offset, ctx.total_pages);
            let mut buf = vec![0u8; usize::from(len) % (3 * page as usize)];
            let ok = model.access(offset, buf.len() as u64, Protection::readable);
            // The space checks before it touches anything: reading a range
            // the model says is unreadable must be refused, not fault.
            if expect("read", ok, space.read(offset, &mut buf)).is_some() {
                assert!(buf == model.read(b, offset, offset + buf.len() as u64), "step {step}: read");
            }
        }
        Op::Reset { len, image, policy } => {
            let len = ctx.bytes(len, ctx.capacity_pages);
            let img = image.and_then(|i| b.pick_image(i));
            let policy = ctx.policy(policy);
            let ok = model.layout_ok(len, img.map(|i| b.image(i)));
            let result = space.reset(len, img.map(|i| &b.image(i).image), policy);
            if let Some(report) = expect("reset", ok, result) {
                check_report(&report, policy);
                model.zero_dirty(b);
                model.restore_layout(len, img, b);
            }
        }
        Op::ZeroDirty(policy) => {
            let policy = ctx.policy(policy);
            let report = expect("zero_dirty", true, space.zero_dirty(policy)).unwrap();
            check_report(&report, policy);
            model.zero_dirty(b);
        }
        Op::RestoreLayout { len, image } => {
            let len = ctx.bytes(len, ctx.capacity_pages);
            let img = image.and_then(|i| b.pick_image(i));
            let ok = model.layout_ok(len, img.map(|i| b.image(i)));
            let result = space.restore_layout(len, img.map(|i| &b.image(i).image));
            if expect("restore_layout", ok, result).is_some() {
                model.restore_layout(len, img, b);
            }
        }
        Op::Populate(ranges) => {
            let total = ctx.total_pages;
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
        }
        Op::Summary => {
            let summary = expect("summary", true, space.summary()).unwrap();
            let guard = (ctx.total_pages - ctx.capacity_pages) * page;
            assert_eq!((summary.len, summary.capacity, summary.guard), (model.len, model.capacity, guard));
            for tag in FrameTag::ALL {
                let pages = model.frames.iter().filter(|f| f.tag() == tag).count() as u64;
                let i = tag.index();
                assert_eq!(summary.bytes[i], pages * page, "step {step}: {tag} bytes");
                assert!(summary.resident[i] <= summary.bytes[i], "step {step}: {tag} resident");
            }
            assert_eq!(summary.resident[FrameTag::Unmapped.index()], 0, "step {step}: unmapped resident");
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
