//! The snapshot file format, version 1: encoding and checked decoding, no I/O.
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
//! The snapshot's id is the SHA-256 of its manifest, which holds the SHA-256
//! of the data section: an id names the whole content, and an incremental
//! snapshot names its parent by id. Opening checks both CRCs (metadata
//! only, never the data, so a restore stays lazy); [`super::Snapshot::verify`]
//! checks the data's digest.
//!
//! Invariant: [`Manifest::decode`] accepts only what [`Manifest::encode`]
//! can produce from a well-formed manifest: runs sorted, non-empty, disjoint
//! and covering exactly the memory's pages, `Unmapped` runs without access,
//! data pages inside the data section, `Parent` runs only with a parent,
//! names valid UTF-8 of bounded length; every count is bounded by the bytes
//! left, so a hostile file cannot make it allocate more than its own size.

use crate::frame::Protection;
use crate::page::PageRange;
use std::fmt;

/// The file's first bytes.
pub(crate) const MAGIC: [u8; 8] = *b"FRAMEMAP";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
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
    fn code(&self) -> u8 {
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

/// An encoder of little-endian fields.
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn digest(&mut self, d: &Digest) {
        self.0.extend_from_slice(&d.0);
    }
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.count(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// A checked decoder of little-endian fields.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| FormatError::Malformed(format!("manifest ends inside a field at byte {}", self.at)))?;
        let field = &self.bytes[self.at..end];
        self.at = end;
        Ok(field)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn u128(&mut self) -> Result<u128, FormatError> {
        Ok(u128::from_le_bytes(self.take(16)?.try_into().expect("16 bytes")))
    }
    fn digest(&mut self) -> Result<Digest, FormatError> {
        Ok(Digest(self.take(32)?.try_into().expect("32 bytes")))
    }
    /// A count of items of at least `min_item` bytes each: bounded by the
    /// bytes left, so no count can make the decoder allocate past the file.
    fn count(&mut self, min_item: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        let left = self.bytes.len() - self.at;
        if n.saturating_mul(min_item) > left {
            return Err(FormatError::Malformed(format!("{n} items cannot fit in the {left} bytes left")));
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<String, FormatError> {
        let n = self.count(1)?;
        if n > MAX_NAME_LEN {
            return Err(FormatError::Malformed(format!("a name of {n} bytes (at most {MAX_NAME_LEN})")));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| FormatError::Malformed("a name is not UTF-8".into()))
    }
}

fn prot_code(prot: Protection) -> u8 {
    match prot {
        Protection::None => 0,
        Protection::Read => 1,
        Protection::ReadWrite => 2,
    }
}

impl Manifest {
    /// The manifest's bytes.
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
        w.count(self.memories.len());
        for m in &self.memories {
            w.str(&m.name);
            w.u64(m.len);
            w.u64(m.checkpoint);
            w.count(m.runs.len());
            for run in &m.runs {
                w.u64(run.pages.start);
                w.u64(run.pages.len());
                w.u8(prot_code(run.prot));
                w.u8(run.source.code());
                match &run.source {
                    PageSource::Data { page } => w.u64(*page),
                    PageSource::Image { image, page } => {
                        w.digest(image);
                        w.u64(*page);
                    }
                    PageSource::Shared { buffer, page } => {
                        w.str(buffer);
                        w.u64(*page);
                    }
                    PageSource::Unmapped | PageSource::Zero | PageSource::Parent => {}
                }
            }
        }
        w.count(self.globals.len());
        for g in &self.globals {
            w.str(&g.name);
            let (code, bits) = match g.value {
                GlobalValue::I32(v) => (0, u128::from(v as u32)),
                GlobalValue::I64(v) => (1, u128::from(v as u64)),
                GlobalValue::F32(v) => (2, u128::from(v)),
                GlobalValue::F64(v) => (3, u128::from(v)),
                GlobalValue::V128(v) => (4, v),
            };
            w.u8(code);
            w.0.extend_from_slice(&bits.to_le_bytes());
        }
        w.count(self.working_set.len());
        for ws in &self.working_set {
            w.u32(ws.memory);
            w.u64(ws.pages.start);
            w.u64(ws.pages.len());
        }
        w.0
    }

    /// Decodes and checks a manifest whose data section holds `data_pages`
    /// pages of `page_size` bytes (see the module's invariant).
    pub(crate) fn decode(bytes: &[u8], page_size: u64, data_pages: u64) -> Result<Manifest, FormatError> {
        let mut r = Reader { bytes, at: 0 };
        let bad = |what: String| FormatError::Malformed(what);
        let parent = match r.u8()? {
            0 => None,
            1 => Some(r.digest()?),
            other => return Err(bad(format!("parent flag {other}"))),
        };
        let data_digest = r.digest()?;
        let mut memories = Vec::with_capacity(r.count(24)?);
        for _ in 0..memories.capacity() {
            let name = r.str()?;
            let len = r.u64()?;
            let checkpoint = r.u64()?;
            let pages = len.div_ceil(page_size);
            let mut runs = Vec::with_capacity(r.count(18)?);
            let mut next = 0u64;
            for _ in 0..runs.capacity() {
                let start = r.u64()?;
                let count = r.u64()?;
                let end = start.checked_add(count).ok_or_else(|| bad(format!("memory {name:?}: a run overflows")))?;
                if start != next || count == 0 || end > pages {
                    return Err(bad(format!(
                        "memory {name:?}: run {start}+{count} does not follow page {next} inside its {pages} pages"
                    )));
                }
                next = end;
                let prot = match r.u8()? {
                    0 => Protection::None,
                    1 => Protection::Read,
                    2 => Protection::ReadWrite,
                    other => return Err(bad(format!("memory {name:?}: protection code {other}"))),
                };
                let source = match r.u8()? {
                    0 => PageSource::Unmapped,
                    1 => PageSource::Zero,
                    2 => PageSource::Data { page: r.u64()? },
                    3 => PageSource::Image { image: r.digest()?, page: r.u64()? },
                    4 => PageSource::Shared { buffer: r.str()?, page: r.u64()? },
                    5 => PageSource::Parent,
                    other => return Err(bad(format!("memory {name:?}: page source code {other}"))),
                };
                match &source {
                    PageSource::Unmapped if prot != Protection::None => {
                        return Err(bad(format!("memory {name:?}: an unmapped run at page {start} is accessible")));
                    }
                    PageSource::Data { page } if page.checked_add(count).is_none_or(|e| e > data_pages) => {
                        return Err(bad(format!(
                            "memory {name:?}: data pages {page}+{count} past the {data_pages} the file holds"
                        )));
                    }
                    PageSource::Image { page, .. } | PageSource::Shared { page, .. }
                        if page.checked_add(count).is_none_or(|e| e.checked_mul(page_size).is_none()) =>
                    {
                        return Err(bad(format!("memory {name:?}: backing pages {page}+{count} overflow")));
                    }
                    PageSource::Parent if parent.is_none() => {
                        return Err(bad(format!("memory {name:?}: pages from a parent, but the snapshot has none")));
                    }
                    _ => {}
                }
                runs.push(RunRecord { pages: PageRange::new(start, end), prot, source });
            }
            if next != pages {
                return Err(bad(format!("memory {name:?}: runs cover {next} of its {pages} pages")));
            }
            if memories.iter().any(|m: &MemoryRecord| m.name == name) {
                return Err(bad(format!("memory {name:?} appears twice")));
            }
            memories.push(MemoryRecord { name, len, checkpoint, runs });
        }
        let mut globals = Vec::with_capacity(r.count(21)?);
        for _ in 0..globals.capacity() {
            let name = r.str()?;
            let code = r.u8()?;
            let bits = r.u128()?;
            let value = match code {
                0 if bits <= u128::from(u32::MAX) => GlobalValue::I32(bits as u32 as i32),
                1 if bits <= u128::from(u64::MAX) => GlobalValue::I64(bits as u64 as i64),
                2 if bits <= u128::from(u32::MAX) => GlobalValue::F32(bits as u32),
                3 if bits <= u128::from(u64::MAX) => GlobalValue::F64(bits as u64),
                4 => GlobalValue::V128(bits),
                _ => return Err(bad(format!("global {name:?}: type code {code} with value {bits:#x}"))),
            };
            if globals.iter().any(|g: &GlobalRecord| g.name == name) {
                return Err(bad(format!("global {name:?} appears twice")));
            }
            globals.push(GlobalRecord { name, value });
        }
        let mut working_set = Vec::with_capacity(r.count(20)?);
        for _ in 0..working_set.capacity() {
            let memory = r.u32()?;
            let (start, count) = (r.u64()?, r.u64()?);
            let pages = memories
                .get(memory as usize)
                .map(|m| m.len.div_ceil(page_size))
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
    use super::*;

    fn sample() -> Manifest {
        let r = PageRange::new;
        Manifest {
            parent: Some(Digest([7; 32])),
            data_digest: Digest::of(b"data"),
            memories: vec![MemoryRecord {
                name: "0".into(),
                len: 10 * 4096 - 5,
                checkpoint: 99,
                runs: vec![
                    RunRecord { pages: r(0, 2), prot: Protection::ReadWrite, source: PageSource::Data { page: 0 } },
                    RunRecord {
                        pages: r(2, 4),
                        prot: Protection::Read,
                        source: PageSource::Image { image: Digest([1; 32]), page: 2 },
                    },
                    RunRecord { pages: r(4, 5), prot: Protection::None, source: PageSource::Unmapped },
                    RunRecord {
                        pages: r(5, 6),
                        prot: Protection::ReadWrite,
                        source: PageSource::Shared { buffer: "ring".into(), page: 0 },
                    },
                    RunRecord { pages: r(6, 8), prot: Protection::ReadWrite, source: PageSource::Parent },
                    RunRecord { pages: r(8, 10), prot: Protection::ReadWrite, source: PageSource::Zero },
                ],
            }],
            globals: vec![
                GlobalRecord { name: "g0".into(), value: GlobalValue::I32(-3) },
                GlobalRecord { name: "g1".into(), value: GlobalValue::V128(u128::MAX) },
            ],
            working_set: vec![WorkingSetRecord { memory: 0, pages: r(1, 3) }],
        }
    }

    #[test]
    fn a_manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode(), 4096, 2), Ok(m));
    }

    #[test]
    fn every_truncation_of_a_manifest_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len], 4096, 2).is_err(), "{len}");
        }
    }

    #[test]
    fn every_single_byte_change_is_refused_or_decodes_to_a_manifest_that_encodes_back() {
        // The decoder's invariant: whatever it accepts, the encoder writes
        // back byte for byte (nothing is silently dropped or normalised).
        let bytes = sample().encode();
        for at in 0..bytes.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                if let Ok(m) = Manifest::decode(&b, 4096, 2) {
                    assert_eq!(m.encode(), b, "byte {at} ^ {flip:#x}");
                }
            }
        }
    }

    #[test]
    fn data_past_the_section_is_refused() {
        assert!(Manifest::decode(&sample().encode(), 4096, 1).is_err());
    }
}
