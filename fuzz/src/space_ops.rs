//! The operations of the `memory_ops` target and how they decode from fuzz
//! input: what a host does to a `LinearSpace` (grow, map an image, a buffer
//! window or zero pages, unmap, protect, discard, write, read, reset,
//! `restore_dirty`, `restore_layout`, populate, summary) and to the images and
//! host-shared buffers around it (make, write, read, unmap everywhere,
//! revoke).
//!
//! It models no state and checks nothing itself. Its invariant: any byte
//! string decodes to an [`Input`] (tested in `space_tests`), dense and near
//! the space. Every enum decodes from a one-byte tag (derived `Arbitrary`
//! spends four on every variant choice), an [`Input`] reads operations until
//! its bytes end, and the sizes ([`Pages`], [`Bytes`]) scale to the space's
//! [`Geometry`] (mostly whole pages just around its size, sometimes
//! misaligned or huge), so random ranges overlap often. Changing the
//! decoding changes what every corpus file means.
#![warn(missing_docs)]

use arbitrary::{Arbitrary, Unstructured};
use framemap::{Protection, ResetPolicy};

/// Most pages a space may have (capacity).
pub const MAX_CAPACITY_PAGES: u64 = 64;
/// Most inputs get at most this capacity, so that random ranges overlap
/// each other often and the checks after each step stay cheap.
pub const SMALL_CAPACITY_PAGES: u64 = 16;
/// Most guard pages.
pub const MAX_GUARD_PAGES: u64 = 8;
/// Most images one input makes (later [`Op::Image`]s are ignored).
pub const MAX_IMAGES: usize = 4;
/// Most pages in one image (bigger specs are not built).
pub const MAX_IMAGE_PAGES: u64 = 12;
/// Most buffers one input makes (later [`Op::Buffer`]s are ignored).
pub const MAX_BUFFERS: usize = 3;
/// Most pages in one buffer (bigger ones are not made).
pub const MAX_BUFFER_PAGES: u64 = 10;

/// A protection, decoded from one byte.
#[derive(Debug, Clone, Copy)]
pub enum Prot {
    /// `Protection::None`.
    None,
    /// `Protection::Read`.
    Read,
    /// `Protection::ReadWrite`.
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
/// pages near the space's size, sometimes misaligned or huge (see
/// [`Geometry::pages`]).
#[derive(Debug, Clone, Copy)]
pub enum Pages {
    /// Whole pages, modulo the space's pages plus two.
    Pages(u8),
    /// Whole pages as in [`Pages::Pages`] plus 1 to page size - 1 bytes.
    Misaligned(u8, u16),
    /// Exactly these bytes.
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

/// A byte offset or length for reads, writes and lengths (see
/// [`Geometry::bytes`]).
#[derive(Debug, Clone, Copy)]
pub enum Bytes {
    /// Whole pages, modulo the given pages plus two.
    Pages(u8),
    /// Pages as in [`Bytes::Pages`] plus a few bytes (modulo the page size).
    At(u8, u16),
    /// Exactly these bytes.
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

/// One data segment of an image: [`pattern`] bytes at an offset.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Segment {
    /// Where in the image (scaled to [`MAX_IMAGE_PAGES`] - 2 pages).
    pub offset: Bytes,
    /// How many bytes (modulo two pages plus one).
    pub len: u16,
    /// The [`pattern`] seed of its bytes.
    pub seed: u8,
}

/// An image to build with `Image::from_segments`.
#[derive(Arbitrary, Debug)]
pub struct ImageSpec {
    /// Its length (scaled to [`MAX_IMAGE_PAGES`] - 2 pages).
    pub len: Bytes,
    /// Its segments, in order (the first 8 are used).
    pub segments: Vec<Segment>,
}

/// A `ResetPolicy` (see [`Geometry::policy`]).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Policy {
    /// Chooses `keep_resident` among 0, 1 page, 3 pages, 3 pages + 1 byte,
    /// 1 MiB and `u64::MAX`.
    pub keep: u8,
    /// `scan_dirty`.
    pub scan: bool,
}

/// One operation. Images and buffers are named by `u8`s counting around
/// the ones made so far (see `Backings::pick_image`); an operation naming
/// one when none is made is skipped.
#[derive(Debug)]
pub enum Op {
    /// Makes the next image (up to [`MAX_IMAGES`]; later ones are ignored).
    Image(ImageSpec),
    /// Makes the next buffer of this length and grants it to the space (up
    /// to [`MAX_BUFFERS`]).
    Buffer(Bytes),
    /// `LinearSpace::grow_to` this length.
    Grow(Bytes),
    /// `LinearSpace::protect`.
    Protect {
        /// Offset in the space.
        offset: Pages,
        /// Length.
        len: Pages,
        /// New protection.
        prot: Prot,
    },
    /// `LinearSpace::discard`.
    Discard {
        /// Offset in the space.
        offset: Pages,
        /// Length.
        len: Pages,
    },
    /// `LinearSpace::map_image`.
    MapImage {
        /// Offset in the space.
        offset: Pages,
        /// Which image.
        image: u8,
        /// Offset in the image.
        image_offset: Pages,
        /// Length.
        len: Pages,
        /// Protection of the window.
        prot: Prot,
    },
    /// `LinearSpace::map_buffer` (a window of a host-shared buffer).
    MapBuffer {
        /// Offset in the space.
        offset: Pages,
        /// Which buffer.
        buffer: u8,
        /// Offset in the buffer.
        buffer_offset: Pages,
        /// Length.
        len: Pages,
        /// Protection of the window.
        prot: Prot,
    },
    /// `LinearSpace::map_zero`.
    MapZero {
        /// Offset in the space.
        offset: Pages,
        /// Length.
        len: Pages,
        /// Protection of the fresh pages.
        prot: Prot,
    },
    /// `LinearSpace::unmap`.
    Unmap {
        /// Offset in the space.
        offset: Pages,
        /// Length.
        len: Pages,
    },
    /// `LinearSpace::unmap_buffer` of this buffer (a multiple of 8, or no
    /// buffer made: an id no buffer has).
    UnmapBuffer(u8),
    /// `SharedBuffer::revoke` of this buffer.
    Revoke(u8),
    /// `LinearSpace::write` of [`pattern`] bytes.
    Write {
        /// Offset in the space.
        offset: Bytes,
        /// Length (modulo three pages).
        len: u16,
        /// The [`pattern`] seed.
        seed: u8,
    },
    /// `LinearSpace::read`.
    Read {
        /// Offset in the space.
        offset: Bytes,
        /// Length (modulo three pages).
        len: u16,
    },
    /// `SharedBuffer::write` of [`pattern`] bytes.
    BufferWrite {
        /// Which buffer.
        buffer: u8,
        /// Offset in the buffer.
        offset: Bytes,
        /// Length (modulo two pages).
        len: u16,
        /// The [`pattern`] seed.
        seed: u8,
    },
    /// `SharedBuffer::read`.
    BufferRead {
        /// Which buffer.
        buffer: u8,
        /// Offset in the buffer.
        offset: Bytes,
        /// Length (modulo two pages).
        len: u16,
    },
    /// `LinearSpace::reset`.
    Reset {
        /// The new length.
        len: Bytes,
        /// The image to restore, if any (and if one is made).
        image: Option<u8>,
        /// The reset policy.
        policy: Policy,
    },
    /// `LinearSpace::restore_dirty`.
    RestoreDirty(Policy),
    /// `LinearSpace::restore_layout`.
    RestoreLayout {
        /// The new length.
        len: Bytes,
        /// The image to lay out, if any (and if one is made).
        image: Option<u8>,
    },
    /// `LinearSpace::populate` of up to four page ranges (start, end; modulo
    /// the space's pages plus four, so some are inverted or past its end).
    Populate(Vec<(u8, u8)>),
    /// `LinearSpace::summary`.
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
            16 => Op::RestoreDirty(u.arbitrary()?),
            17 => Op::RestoreLayout { len: u.arbitrary()?, image: u.arbitrary()? },
            18 => Op::Populate(u.arbitrary()?),
            _ => Op::Summary,
        })
    }
}

/// One input: the space's configuration, then operations until the bytes
/// end (no "one more?" byte before each).
#[derive(Debug)]
pub struct Input {
    /// Capacity in pages: below 224, modulo [`SMALL_CAPACITY_PAGES`] + 1;
    /// else modulo [`MAX_CAPACITY_PAGES`] + 1.
    pub capacity_pages: u8,
    /// Guard pages, modulo [`MAX_GUARD_PAGES`] + 1.
    pub guard_pages: u8,
    /// The initial length (scaled to the capacity).
    pub initial_len: Bytes,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let (capacity_pages, guard_pages, initial_len) = (u.arbitrary()?, u.arbitrary()?, u.arbitrary()?);
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

impl Input {
    /// The input the target sees for these bytes, as `fuzz_target!` decodes
    /// it (`None`: the target returns without running anything).
    pub fn decode(data: &[u8]) -> Option<Input> {
        if data.len() < <Input as Arbitrary>::size_hint(0).0 {
            return None;
        }
        Input::arbitrary_take_rest(Unstructured::new(data)).ok()
    }
}

/// A space's geometry, to which the decoded sizes scale.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Host page size in bytes.
    pub page: u64,
    /// Capacity plus guard, in pages.
    pub total_pages: u64,
    /// Capacity in pages.
    pub capacity_pages: u64,
}

impl Geometry {
    /// The geometry an input asks for on a host with `page`-byte pages.
    pub fn of(input: &Input, page: u64) -> Geometry {
        let capacity_pages = match input.capacity_pages {
            c @ 0..224 => u64::from(c) % (SMALL_CAPACITY_PAGES + 1),
            c => u64::from(c) % (MAX_CAPACITY_PAGES + 1),
        };
        let guard_pages = u64::from(input.guard_pages) % (MAX_GUARD_PAGES + 1);
        Geometry { page, total_pages: capacity_pages + guard_pages, capacity_pages }
    }

    /// Bytes of a page-granular offset or length.
    pub fn pages(&self, v: Pages) -> u64 {
        match v {
            Pages::Pages(n) => u64::from(n) % (self.total_pages + 2) * self.page,
            Pages::Misaligned(n, b) => {
                u64::from(n) % (self.total_pages + 2) * self.page + u64::from(b) % (self.page - 1) + 1
            }
            Pages::Raw(x) => x,
        }
    }

    /// Bytes of an offset or length, scaled to `pages` pages.
    pub fn bytes(&self, v: Bytes, pages: u64) -> u64 {
        match v {
            Bytes::Pages(n) => u64::from(n) % (pages + 2) * self.page,
            Bytes::At(n, b) => u64::from(n) % (pages + 2) * self.page + u64::from(b) % self.page,
            Bytes::Raw(x) => x,
        }
    }

    /// The reset policy `p` chooses.
    pub fn policy(&self, p: Policy) -> ResetPolicy {
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

/// Bytes a fuzz seed expands to: varying along the buffer (and never 0), so
/// misplaced pages or offsets show.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)).wrapping_add((i >> 8) as u8) | 1).collect()
}
