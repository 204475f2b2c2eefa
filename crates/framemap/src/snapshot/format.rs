//! The snapshot file format, version 2: encoding and checked decoding, no I/O.
//!
//! ```text
//! page 0          header (64 bytes, then zero up to one host page)
//! pages 1..=n     data: the pages captured by content, page aligned, so
//!                 the file maps MAP_PRIVATE as an image
//! after the data  manifest: memories (runs of page sources), globals,
//!                 working set, parent id, data digest
//! ```
//!
//! Header, all little-endian: magic `FRAMEMAP` (8 bytes), format version
//! (u32), page size (u32), data offset (u64, one page), data pages (u64),
//! manifest offset (u64, right after the data), manifest length (u64),
//! manifest CRC-32 (u32), zero (u32), header CRC-32 of the 56 bytes before
//! it (u32), zero (u32). The file ends right after the manifest.
//!
//! Manifest (version 2; `varint`: unsigned LEB128, minimal; `name`: varint
//! length, then UTF-8):
//!
//! ```text
//! parent flag (u8: 0 or 1), parent id (32 bytes, if 1), data digest (32)
//! varint memory count, then per memory:
//!   name, varint length in bytes, checkpoint token (u64)
//!   image table: varint count, content hashes (32 bytes each), sorted
//!   buffer table: varint count, names, sorted
//!   runs, in page order, until they cover the memory's pages; per run:
//!     tag (u8): bits 0-3 kind: 0 Unmapped, else 1 + 3 * source + protection
//!         (sources Zero, Data, Image, Shared, Parent; protections None,
//!         Read, ReadWrite); bit 4 CONTINUES (Data, Image, Shared only);
//!         bits 5-6 (length - 1) & 3; bit 7 LONG
//!     if LONG: varint (length - 1) >> 2, not 0
//!     Image, Shared: varint table index, if the table has 2 entries or more
//!     Data, Image, Shared, unless CONTINUES: the first backing page as a
//!         zigzag varint of its difference (wrapping, not 0) from the
//!         expected page: for Data the end of the manifest's last data run
//!         (0 at first), for Image and Shared the run's memory page plus the
//!         offset (backing page - memory page) of the last run of the same
//!         table entry (0 at first)
//! varint global count, then per global: name, type (u8: i32, i64, f32,
//!   f64, v128), the value's bits (4, 8, 4, 8 or 16 bytes, little-endian)
//! varint working-set count, then per record: varint memory index,
//!   varint first page, varint pages
//! ```
//!
//! A run's first page is where the last one ended (the first run's is 0),
//! so it is not written, and runs can neither overlap nor be empty. An
//! incremental snapshot of scattered writes (a data page, then parent or
//! image pages, alternately) takes 1 byte for each data run and 1 to 3 for
//! each other run (measured: 1.5 bytes a run). Version 1 files
//! (fixed-width fields, 18 to 58 bytes a run) are refused with the version
//! error: the crate had no release that wrote them.
//!
//! The snapshot's id is the SHA-256 of its manifest, which holds the SHA-256
//! of the data section: an id names the whole content, and an incremental
//! snapshot names its parent by id. Opening checks both CRCs (metadata
//! only, never the data, so a restore stays lazy); [`super::Snapshot::verify`]
//! checks the data's digest.
//!
//! Invariant: [`Manifest::decode`] accepts only what [`Manifest::encode`]
//! can produce from a well-formed manifest: runs non-empty and covering
//! exactly the memory's pages, lengths of at most 7 in the tag, minimal
//! varints, tables sorted with every entry named by a run, table indices in
//! range, `Unmapped` runs without access, data pages inside the data
//! section, `Parent` runs only with a parent, names valid UTF-8 of bounded
//! length and distinct, no byte after the end; every count is bounded by
//! the bytes left, so a hostile file cannot make it allocate more than its
//! own size.
//!
//! (At about 600 lines this file is at the project's limit: the layout's
//! specification above and the decoder's tests, which flip every bit and cut
//! every length, are half of it; run records and varints already live in
//! `record.rs` and `codec.rs`.)

use super::codec::{Reader, Writer};
use super::record::{bad, decode_memory, encode_memory};
use crate::frame::Protection;
use crate::page::PageRange;
use std::collections::HashSet;
use std::fmt;

/// The file's first bytes.
pub(crate) const MAGIC: [u8; 8] = *b"FRAMEMAP";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of the header proper (the rest of page 0 is zero).
pub(crate) const HEADER_LEN: usize = 64;
/// Longest name (of a memory, a global or a buffer), in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// A SHA-256 digest: a snapshot's id, or an image's content hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(sha2::Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 bytes are enough to tell digests apart in messages.
        self.0[..8].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Where the pages of a run of a captured memory come from at restore.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PageSource {
    /// No backing: the pages trap.
    Unmapped,
    /// Zero pages (never written, or written with zeros only).
    Zero,
    /// Captured by content: page `page` of this file's data section (and
    /// the following ones, one per page of the run).
    Data {
        /// First page, counted from the start of the data section.
        page: u64,
    },
    /// Clean pages of an image, named by the SHA-256 of its content (the
    /// restorer supplies the image).
    Image {
        /// The image's content hash.
        image: Digest,
        /// First page inside the image.
        page: u64,
    },
    /// A window of a host buffer, by name and page only: never its contents.
    Shared {
        /// The buffer's name, as the capturing host named it.
        buffer: String,
        /// First page inside the buffer.
        page: u64,
    },
    /// Unchanged since the parent snapshot was captured: the pages are the
    /// parent's (incremental snapshots only).
    Parent,
}

impl PageSource {
    pub(crate) fn code(&self) -> u8 {
        match self {
            PageSource::Unmapped => 0,
            PageSource::Zero => 1,
            PageSource::Data { .. } => 2,
            PageSource::Image { .. } => 3,
            PageSource::Shared { .. } => 4,
            PageSource::Parent => 5,
        }
    }

    /// The source of the pages `skip` pages into a run of this source.
    pub fn advanced(&self, skip: u64) -> PageSource {
        match self {
            PageSource::Data { page } => PageSource::Data { page: page + skip },
            PageSource::Image { image, page } => PageSource::Image { image: *image, page: page + skip },
            PageSource::Shared { buffer, page } => PageSource::Shared { buffer: buffer.clone(), page: page + skip },
            other => other.clone(),
        }
    }
}

/// One run of pages of a captured memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RunRecord {
    /// The pages, from the memory's base.
    pub pages: PageRange,
    /// Their protection.
    pub prot: Protection,
    /// Where their contents come from.
    pub source: PageSource,
}

/// One captured memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemoryRecord {
    /// The memory's name in the snapshot (e.g. its index in the instance).
    pub name: String,
    /// Its accessible size in bytes.
    pub len: u64,
    /// The token of the checkpoint taken when it was captured (see
    /// [`crate::Checkpoint::token`]): an incremental snapshot of the same
    /// memory must start from it.
    pub checkpoint: u64,
    /// Its pages, `[0, ceil(len / page))`, in order.
    pub runs: Vec<RunRecord>,
}

/// A captured global's value, by its bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GlobalValue {
    /// `i32`.
    I32(i32),
    /// `i64`.
    I64(i64),
    /// `f32`, by its bits.
    F32(u32),
    /// `f64`, by its bits.
    F64(u64),
    /// `v128`.
    V128(u128),
}

/// One captured global.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GlobalRecord {
    /// The global's name in the snapshot.
    pub name: String,
    /// Its value.
    pub value: GlobalValue,
}

/// Pages a memory touched first after a restore: restore prefetches them.
/// A memory's records may come in any order and overlap: its working set
/// is their union ([`super::Snapshot::working_set`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkingSetRecord {
    /// Index of the memory in [`Manifest::memories`].
    pub memory: u32,
    /// The pages.
    pub pages: PageRange,
}

/// Everything a snapshot file says besides its data pages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Manifest {
    /// The snapshot whose pages `Parent` runs refer to.
    pub parent: Option<Digest>,
    /// SHA-256 of the data section.
    pub data_digest: Digest,
    /// The memories.
    pub memories: Vec<MemoryRecord>,
    /// The globals.
    pub globals: Vec<GlobalRecord>,
    /// The working set.
    pub working_set: Vec<WorkingSetRecord>,
}

/// What is wrong with a file that is not a snapshot this code can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FormatError {
    /// Not a framemap snapshot (magic).
    NotASnapshot,
    /// A version this code does not read.
    Version(u32),
    /// A checksum does not match: `part` is "header" or "manifest".
    Checksum(&'static str),
    /// The file is shorter than its header says.
    Truncated { len: u64, needed: u64 },
    /// A field's value breaks the format's rules.
    Malformed(String),
}

impl Manifest {
    /// The manifest's bytes (format version 2, see the module's docs).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::new());
        match &self.parent {
            Some(parent) => {
                w.u8(1);
                w.digest(parent);
            }
            None => w.u8(0),
        }
        w.digest(&self.data_digest);
        w.varint(self.memories.len() as u64);
        let mut data_cursor = 0u64;
        for m in &self.memories {
            encode_memory(&mut w, m, &mut data_cursor);
        }
        w.varint(self.globals.len() as u64);
        for g in &self.globals {
            w.str(&g.name);
            match g.value {
                GlobalValue::I32(v) => {
                    w.u8(0);
                    w.bytes(&v.to_le_bytes());
                }
                GlobalValue::I64(v) => {
                    w.u8(1);
                    w.bytes(&v.to_le_bytes());
                }
                GlobalValue::F32(v) => {
                    w.u8(2);
                    w.bytes(&v.to_le_bytes());
                }
                GlobalValue::F64(v) => {
                    w.u8(3);
                    w.bytes(&v.to_le_bytes());
                }
                GlobalValue::V128(v) => {
                    w.u8(4);
                    w.bytes(&v.to_le_bytes());
                }
            }
        }
        w.varint(self.working_set.len() as u64);
        for ws in &self.working_set {
            w.varint(u64::from(ws.memory));
            w.varint(ws.pages.start);
            w.varint(ws.pages.len());
        }
        w.0
    }

    /// Decodes and checks a manifest whose data section holds `data_pages`
    /// pages of `page_size` bytes (see the module's invariant).
    pub(crate) fn decode(bytes: &[u8], page_size: u64, data_pages: u64) -> Result<Manifest, FormatError> {
        let mut r = Reader { bytes, at: 0 };
        let parent = match r.u8()? {
            0 => None,
            1 => Some(r.digest()?),
            other => return Err(bad(format!("parent flag {other}"))),
        };
        let data_digest = r.digest()?;
        // A memory takes at least its name's length, its length, its
        // checkpoint and its two tables' counts: 12 bytes.
        let mut memories = Vec::with_capacity(r.count(12)?);
        let mut names = HashSet::with_capacity(memories.capacity());
        let mut data_cursor = 0u64;
        for _ in 0..memories.capacity() {
            let memory = decode_memory(&mut r, parent.is_some(), page_size, data_pages, &mut data_cursor)?;
            if !names.insert(memory.name.clone()) {
                return Err(bad(format!("memory {:?} appears twice", memory.name)));
            }
            memories.push(memory);
        }
        // A global takes at least a name's length, a type and 4 bytes.
        let mut globals = Vec::with_capacity(r.count(6)?);
        let mut names = HashSet::with_capacity(globals.capacity());
        for _ in 0..globals.capacity() {
            let name = r.str()?;
            let value = match r.u8()? {
                0 => GlobalValue::I32(i32::from_le_bytes(r.array()?)),
                1 => GlobalValue::I64(i64::from_le_bytes(r.array()?)),
                2 => GlobalValue::F32(u32::from_le_bytes(r.array()?)),
                3 => GlobalValue::F64(u64::from_le_bytes(r.array()?)),
                4 => GlobalValue::V128(u128::from_le_bytes(r.array()?)),
                code => return Err(bad(format!("global {name:?}: type code {code}"))),
            };
            if !names.insert(name.clone()) {
                return Err(bad(format!("global {name:?} appears twice")));
            }
            globals.push(GlobalRecord { name, value });
        }
        let mut working_set = Vec::with_capacity(r.count(3)?);
        for _ in 0..working_set.capacity() {
            let memory = r.varint()?;
            let (start, count) = (r.varint()?, r.varint()?);
            let index = u32::try_from(memory).ok().filter(|&i| (i as usize) < memories.len());
            let (memory, pages) = index
                .map(|i| (i, memories[i as usize].len.div_ceil(page_size)))
                .ok_or_else(|| bad(format!("working set names memory {memory} of {}", memories.len())))?;
            if start.checked_add(count).is_none_or(|e| e > pages) {
                return Err(bad(format!("working set pages {start}+{count} past memory {memory}'s {pages}")));
            }
            working_set.push(WorkingSetRecord { memory, pages: PageRange::new(start, start + count) });
        }
        if r.at != bytes.len() {
            return Err(bad(format!("{} bytes after the manifest's end", bytes.len() - r.at)));
        }
        Ok(Manifest { parent, data_digest, memories, globals, working_set })
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{CONTINUES, LONG};
    use super::*;

    fn r(start: u64, end: u64) -> PageRange {
        PageRange::new(start, end)
    }

    fn run(pages: PageRange, prot: Protection, source: PageSource) -> RunRecord {
        RunRecord { pages, prot, source }
    }

    /// One run of each source, with a parent.
    fn sample() -> Manifest {
        let rw = Protection::ReadWrite;
        Manifest {
            parent: Some(Digest([7; 32])),
            data_digest: Digest::of(b"data"),
            memories: vec![MemoryRecord {
                name: "0".into(),
                len: 10 * 4096 - 5,
                checkpoint: 99,
                runs: vec![
                    run(r(0, 2), rw, PageSource::Data { page: 0 }),
                    run(r(2, 4), Protection::Read, PageSource::Image { image: Digest([1; 32]), page: 2 }),
                    run(r(4, 5), Protection::None, PageSource::Unmapped),
                    run(r(5, 6), rw, PageSource::Shared { buffer: "ring".into(), page: 0 }),
                    run(r(6, 8), rw, PageSource::Parent),
                    run(r(8, 10), rw, PageSource::Zero),
                ],
            }],
            globals: vec![
                GlobalRecord { name: "g0".into(), value: GlobalValue::I32(-3) },
                GlobalRecord { name: "g1".into(), value: GlobalValue::V128(u128::MAX) },
            ],
            working_set: vec![WorkingSetRecord { memory: 0, pages: r(1, 3) }],
        }
    }

    /// What `sample` leaves out: two memories sharing the data section,
    /// tables of several entries, runs long enough for a varint length,
    /// backing pages that do not continue (data packed out of order, an
    /// image and a buffer at shifted offsets), every global type; no
    /// parent.
    fn sample2() -> Manifest {
        let (rw, ro) = (Protection::ReadWrite, Protection::Read);
        let (a, b) = (Digest([0xa0; 32]), Digest([0x0b; 32]));
        let image = |image, page| PageSource::Image { image, page };
        let shared = |buffer: &str, page| PageSource::Shared { buffer: buffer.into(), page };
        Manifest {
            parent: None,
            data_digest: Digest([3; 32]),
            memories: vec![
                MemoryRecord {
                    name: "é".into(),
                    len: 70_400 * 4096,
                    checkpoint: u64::MAX,
                    runs: vec![
                        run(r(0, 4), rw, PageSource::Data { page: 5 }),
                        run(r(4, 9), ro, image(a, 4)),
                        run(r(9, 10), rw, PageSource::Data { page: 0 }),
                        run(r(10, 310), ro, image(a, 10)),
                        run(r(310, 311), Protection::None, image(b, 0)),
                        run(r(311, 312), rw, image(a, 400)),
                        run(r(312, 320), rw, shared("z", 3)),
                        run(r(320, 322), rw, shared("a", 320)),
                        run(r(322, 324), rw, shared("z", 13)),
                        run(r(324, 400), Protection::None, PageSource::Zero),
                        run(r(400, 70_400), rw, PageSource::Zero),
                    ],
                },
                MemoryRecord {
                    name: "1".into(),
                    len: 4096,
                    checkpoint: 0,
                    runs: vec![run(r(0, 1), rw, PageSource::Data { page: 1 })],
                },
                MemoryRecord { name: "empty".into(), len: 0, checkpoint: 1, runs: vec![] },
            ],
            globals: vec![
                GlobalRecord { name: "i64".into(), value: GlobalValue::I64(i64::MIN) },
                GlobalRecord { name: "f32".into(), value: GlobalValue::F32(0x7fc0_0001) },
                GlobalRecord { name: "f64".into(), value: GlobalValue::F64(1) },
            ],
            working_set: vec![
                WorkingSetRecord { memory: 1, pages: r(0, 1) },
                WorkingSetRecord { memory: 0, pages: r(200, 70_400) },
            ],
        }
    }

    /// Both samples, with the data pages they need.
    fn samples() -> [(Manifest, u64); 2] {
        [(sample(), 2), (sample2(), 9)]
    }

    #[test]
    fn a_manifest_round_trips() {
        for (m, data_pages) in samples() {
            assert_eq!(Manifest::decode(&m.encode(), 4096, data_pages), Ok(m));
        }
    }

    #[test]
    fn every_truncation_of_a_manifest_is_refused() {
        for (m, data_pages) in samples() {
            let bytes = m.encode();
            for len in 0..bytes.len() {
                assert!(Manifest::decode(&bytes[..len], 4096, data_pages).is_err(), "{len}");
            }
        }
    }

    #[test]
    fn every_single_byte_change_is_refused_or_decodes_to_a_manifest_that_encodes_back() {
        // The decoder's invariant: whatever it accepts, the encoder writes
        // back byte for byte (nothing is silently dropped or normalised).
        for (m, data_pages) in samples() {
            let bytes = m.encode();
            for at in 0..bytes.len() {
                for flip in [1u8, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0xff] {
                    let mut b = bytes.clone();
                    b[at] ^= flip;
                    if let Ok(m) = Manifest::decode(&b, 4096, data_pages) {
                        assert_eq!(m.encode(), b, "byte {at} ^ {flip:#x}");
                    }
                }
            }
        }
    }

    #[test]
    fn data_past_the_section_is_refused() {
        assert!(Manifest::decode(&sample().encode(), 4096, 1).is_err());
        assert!(Manifest::decode(&sample2().encode(), 4096, 8).is_err());
    }

    /// A manifest of one memory of `pages` pages named "m" with image
    /// table `images`, no buffer, then `runs` (raw bytes), no global and
    /// no working set.
    fn raw(pages: u8, images: &[Digest], runs: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8];
        b.extend_from_slice(&[0; 32]);
        b.extend_from_slice(&[1, 1, b'm']); // memory count, name
        let mut len = Writer(Vec::new());
        len.varint(u64::from(pages) * 4096);
        b.extend_from_slice(&len.0);
        b.extend_from_slice(&7u64.to_le_bytes());
        b.push(images.len() as u8);
        images.iter().for_each(|d| b.extend_from_slice(&d.0));
        b.push(0);
        b.extend_from_slice(runs);
        b.extend_from_slice(&[0, 0]);
        b
    }

    #[test]
    fn only_canonical_encodings_decode() {
        let decode = |b: &[u8]| Manifest::decode(b, 4096, 4);
        // The kinds: Zero ReadWrite is 3, Data ReadWrite 6, Image Read 8.
        let (zero, data, image) = (3u8, 6u8, 8u8);
        let (one, two) = (Digest([1; 32]), Digest([2; 32]));
        // Well formed: a zero page, two data pages continuing, an image
        // page of a table of one at its own page (3), one at page 0 (a
        // delta of -4, zigzag 7).
        let good = raw(5, &[one], &[zero, data | CONTINUES | 1 << 5, image | CONTINUES, image, 0x07]);
        let m = decode(&good).expect("the well-formed manifest");
        assert_eq!(m.encode(), good);
        assert_eq!(m.memories[0].runs[2].source, PageSource::Image { image: one, page: 3 });
        assert_eq!(m.memories[0].runs[3].source, PageSource::Image { image: one, page: 0 });
        // Anything else of the same meaning, and each broken rule.
        let refused = [
            ("a delta of 0 instead of continuing", raw(1, &[], &[data, 0])),
            ("continuing a source without a backing", raw(1, &[], &[zero | CONTINUES])),
            ("a long length that fits in the tag", raw(1, &[], &[zero | LONG, 0])),
            ("a non-minimal varint length", raw(9, &[], &[zero | LONG, 0x82, 0x00])),
            ("a run past the memory", raw(1, &[], &[zero | 1 << 5])),
            ("runs short of the memory", raw(2, &[], &[zero])),
            ("an image run with an empty table", raw(1, &[], &[image | CONTINUES])),
            ("an unsorted table", raw(2, &[two, one], &[image | CONTINUES, 0, image | CONTINUES, 1])),
            ("a table entry twice", raw(2, &[one, one], &[image | CONTINUES, 0, image | CONTINUES, 1])),
            ("a table entry no run names", raw(1, &[one, two], &[image | CONTINUES, 0])),
            ("a table index out of range", raw(1, &[one, two], &[image | CONTINUES, 2])),
            ("a parent run without a parent", raw(1, &[], &[15])),
        ];
        for (what, bytes) in refused {
            assert!(decode(&bytes).is_err(), "{what}: {bytes:?}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode(&long).is_err(), "a byte after the end");
    }

    /// An incremental snapshot of a 1 GiB memory (4 KiB pages) with `n`
    /// pages written, evenly spread: data and parent runs alternate, over
    /// a parent or (`over_image`) an image mapped straight.
    fn scattered(n: u64, over_image: bool) -> Manifest {
        let pages = (1u64 << 30) / 4096;
        let stride = pages / n;
        let rest = if over_image {
            |at: u64| PageSource::Image { image: Digest([9; 32]), page: at }
        } else {
            |_| PageSource::Parent
        };
        let mut runs = Vec::new();
        for i in 0..n {
            let at = i * stride;
            runs.push(run(r(at, at + 1), Protection::ReadWrite, PageSource::Data { page: i }));
            let end = if i + 1 == n { pages } else { at + stride };
            runs.push(run(r(at + 1, end), Protection::ReadWrite, rest(at + 1)));
        }
        Manifest {
            parent: Some(Digest([5; 32])),
            data_digest: Digest([6; 32]),
            memories: vec![MemoryRecord { name: "0".into(), len: pages * 4096, checkpoint: 1, runs }],
            globals: vec![],
            working_set: vec![],
        }
    }

    #[test]
    fn scattered_writes_take_under_a_page_of_manifest_per_1000_dirty_runs() {
        // The size target: at most one page of metadata per 1000 runs,
        // counting only the dirty runs (each comes with a run of the
        // parent or the image, also counted here).
        for n in [1000, 10_000] {
            for over_image in [false, true] {
                let m = scattered(n, over_image);
                let bytes = m.encode();
                assert_eq!(Manifest::decode(&bytes, 4096, n).as_ref(), Ok(&m));
                let per_1000 = bytes.len() as u64 * 1000 / n;
                assert!(per_1000 <= 4096, "{n} dirty pages (over an image: {over_image}): {} bytes", bytes.len());
            }
        }
    }
}
