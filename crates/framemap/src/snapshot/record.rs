//! A memory record's encoding in the manifest (format version 2, laid out
//! in `format.rs`'s docs): its image and buffer tables, and its runs, each a
//! tag byte (kind, "continues", length) and what the tag says follows.

use super::codec::{Reader, Writer};
use super::format::{Digest, FormatError, MemoryRecord, PageSource, RunRecord};
use crate::frame::Protection;
use crate::page::PageRange;

fn prot_code(prot: Protection) -> u8 {
    match prot {
        Protection::None => 0,
        Protection::Read => 1,
        Protection::ReadWrite => 2,
    }
}

/// A run's tag: bits 0-3 its kind (source and protection), bit 4
/// [`CONTINUES`], bits 5-6 the low bits of its length less one, bit 7
/// [`LONG`].
const KIND_BITS: u8 = 0x0f;
/// In a tag: the run's backing page is the one its source expects (see
/// `Cursors`), so no delta follows.
pub(crate) const CONTINUES: u8 = 0x10;
/// In a tag: the length less one is 4 or more, and a varint of its bits
/// past the low two follows.
pub(crate) const LONG: u8 = 0x80;

/// The tag's kind: 0 for `Unmapped` (never accessible), else `1 + 3 *
/// source + protection` with sources Zero, Data, Image, Shared, Parent.
fn kind(prot: Protection, source: &PageSource) -> u8 {
    match source {
        PageSource::Unmapped => 0,
        other => 1 + 3 * (other.code() - 1) + prot_code(prot),
    }
}

/// A memory's image and buffer tables: every image hash and buffer name
/// its runs name, once each, sorted.
fn tables(m: &MemoryRecord) -> (Vec<Digest>, Vec<&str>) {
    let mut images: Vec<Digest> = Vec::new();
    let mut buffers: Vec<&str> = Vec::new();
    for run in &m.runs {
        match &run.source {
            PageSource::Image { image, .. } => images.push(*image),
            PageSource::Shared { buffer, .. } => buffers.push(buffer),
            _ => {}
        }
    }
    images.sort_unstable();
    images.dedup();
    buffers.sort_unstable();
    buffers.dedup();
    (images, buffers)
}

/// Which backing page each source expects a run to start at: a run whose
/// page is that one says so in its tag ([`CONTINUES`]); any other page is
/// written as a delta from it.
struct Cursors {
    /// Data: the end of the manifest's last data run (the data section is
    /// written in capture order, shared by every memory); 0 at first.
    data: u64,
    /// Image and Shared: per entry of the memory's table, the last run's
    /// backing page less its memory page (wrapping), 0 at first: a backing
    /// mapped straight continues at the same offset across gaps.
    images: Vec<u64>,
    buffers: Vec<u64>,
}

impl Cursors {
    fn new(data: u64, images: usize, buffers: usize) -> Cursors {
        Cursors { data, images: vec![0; images], buffers: vec![0; buffers] }
    }

    /// The page a run of `source` at memory page `start` is expected at,
    /// if it has one (`index`: its table entry).
    fn expected(&self, code: u8, index: usize, start: u64) -> Option<u64> {
        match code {
            2 => Some(self.data),
            3 => Some(start.wrapping_add(self.images[index])),
            4 => Some(start.wrapping_add(self.buffers[index])),
            _ => None,
        }
    }

    /// Records a run of `code` at `start..start + len` whose backing
    /// starts at `page`.
    fn advance(&mut self, code: u8, index: usize, start: u64, len: u64, page: u64) {
        match code {
            2 => self.data = page.wrapping_add(len),
            3 => self.images[index] = page.wrapping_sub(start),
            4 => self.buffers[index] = page.wrapping_sub(start),
            _ => {}
        }
    }
}

/// Appends memory record `m`; `data_cursor` is where the manifest's next
/// data run is expected to start.
pub(crate) fn encode_memory(w: &mut Writer, m: &MemoryRecord, data_cursor: &mut u64) {
    w.str(&m.name);
    w.varint(m.len);
    w.u64_le(m.checkpoint);
    let (images, buffers) = tables(m);
    w.varint(images.len() as u64);
    images.iter().for_each(|d| w.digest(d));
    w.varint(buffers.len() as u64);
    buffers.iter().for_each(|b| w.str(b));
    let mut cursors = Cursors::new(*data_cursor, images.len(), buffers.len());
    for run in &m.runs {
        let (start, len) = (run.pages.start, run.pages.len());
        let code = run.source.code();
        let (index, table_len, page) = match &run.source {
            PageSource::Data { page } => (0, 0, *page),
            PageSource::Image { image, page } => (images.binary_search(image).unwrap_or(0), images.len(), *page),
            PageSource::Shared { buffer, page } => {
                (buffers.binary_search(&buffer.as_str()).unwrap_or(0), buffers.len(), *page)
            }
            PageSource::Unmapped | PageSource::Zero | PageSource::Parent => (0, 0, 0),
        };
        let expected = cursors.expected(code, index, start);
        let rest = len.wrapping_sub(1) >> 2;
        let mut tag = kind(run.prot, &run.source) | ((len.wrapping_sub(1) & 3) as u8) << 5;
        if expected == Some(page) {
            tag |= CONTINUES;
        }
        if rest > 0 {
            tag |= LONG;
        }
        w.u8(tag);
        if rest > 0 {
            w.varint(rest);
        }
        // The index of an entry of a table of one is left out.
        if table_len > 1 {
            w.varint(index as u64);
        }
        if let Some(expected) = expected.filter(|&e| e != page) {
            w.delta(page, expected);
        }
        cursors.advance(code, index, start, len, page);
    }
    *data_cursor = cursors.data;
}

pub(crate) fn bad(what: String) -> FormatError {
    FormatError::Malformed(what)
}

/// Decodes one memory record: `data_cursor` is where the manifest's next
/// data run is expected to start.
pub(crate) fn decode_memory(
    r: &mut Reader<'_>,
    has_parent: bool,
    page_size: u64,
    data_pages: u64,
    data_cursor: &mut u64,
) -> Result<MemoryRecord, FormatError> {
    let name = r.str()?;
    let len = r.varint()?;
    let checkpoint = r.u64_le()?;
    let pages = len.div_ceil(page_size);
    let mut images: Vec<Digest> = Vec::with_capacity(r.count(32)?);
    for _ in 0..images.capacity() {
        let image = r.digest()?;
        if images.last().is_some_and(|last| *last >= image) {
            return Err(bad(format!("memory {name:?}: image table not sorted, or an image twice")));
        }
        images.push(image);
    }
    let mut buffers: Vec<String> = Vec::with_capacity(r.count(1)?);
    for _ in 0..buffers.capacity() {
        let buffer = r.str()?;
        if buffers.last().is_some_and(|last| *last >= buffer) {
            return Err(bad(format!("memory {name:?}: buffer table not sorted, or a buffer twice")));
        }
        buffers.push(buffer);
    }
    let mut cursors = Cursors::new(*data_cursor, images.len(), buffers.len());
    let (mut images_used, mut buffers_used) = (vec![false; images.len()], vec![false; buffers.len()]);
    let mut runs = Vec::new();
    let mut next = 0u64;
    while next < pages {
        let start = next;
        let tag = r.u8()?;
        let low = u64::from(tag >> 5 & 3);
        let count = if tag & LONG == 0 {
            Some(1 + low)
        } else {
            match r.varint()? {
                0 => return Err(bad(format!("memory {name:?}: a run's long length is short at page {start}"))),
                rest => rest.checked_mul(4).and_then(|n| n.checked_add(1 + low)),
            }
        };
        let end = count
            .and_then(|c| start.checked_add(c))
            .filter(|&e| e <= pages)
            .ok_or_else(|| bad(format!("memory {name:?}: the run at page {start} reaches past its {pages} pages")))?;
        let count = end - start;
        next = end;
        let (code, prot) = match tag & KIND_BITS {
            0 => (0, Protection::None),
            k => {
                let prot = [Protection::None, Protection::Read, Protection::ReadWrite][usize::from((k - 1) % 3)];
                (1 + (k - 1) / 3, prot)
            }
        };
        let (table_len, used) = match code {
            3 => (images.len(), &mut images_used),
            4 => (buffers.len(), &mut buffers_used),
            _ => (0, &mut images_used),
        };
        let index = match (code, table_len) {
            (3 | 4, 0) => return Err(bad(format!("memory {name:?}: a run at page {start} names an empty table"))),
            (3 | 4, 1) => 0,
            (3 | 4, _) => r.varint()?,
            _ => 0,
        };
        let index = usize::try_from(index).ok().filter(|&i| i < table_len.max(1)).ok_or_else(|| {
            bad(format!("memory {name:?}: table index {index} of {table_len} entries at page {start}"))
        })?;
        if code == 3 || code == 4 {
            used[index] = true;
        }
        let page = match cursors.expected(code, index, start) {
            Some(expected) if tag & CONTINUES != 0 => expected,
            Some(expected) => r.delta(expected)?,
            None if tag & CONTINUES != 0 => {
                return Err(bad(format!("memory {name:?}: a run at page {start} continues no backing")));
            }
            None => 0,
        };
        cursors.advance(code, index, start, count, page);
        let source = match code {
            0 => PageSource::Unmapped,
            1 => PageSource::Zero,
            2 => PageSource::Data { page },
            3 => PageSource::Image { image: images[index], page },
            4 => PageSource::Shared { buffer: buffers[index].clone(), page },
            _ => PageSource::Parent,
        };
        match &source {
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
            PageSource::Parent if !has_parent => {
                return Err(bad(format!("memory {name:?}: pages from a parent, but the snapshot has none")));
            }
            _ => {}
        }
        runs.push(RunRecord { pages: PageRange::new(start, end), prot, source });
    }
    if images_used.contains(&false) || buffers_used.contains(&false) {
        return Err(bad(format!("memory {name:?}: a table entry no run names")));
    }
    *data_cursor = cursors.data;
    Ok(MemoryRecord { name, len, checkpoint, runs })
}
