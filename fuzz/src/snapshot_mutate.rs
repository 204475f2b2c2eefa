//! The `snapshot_file` target's second stage: the file mutated by the rest
//! of the input, on two levels: edits of the manifest that keep the
//! format's shape (so that they reach the restore), re-encoded by the
//! format's rules (`crates/framemap/src/snapshot/format.rs`), and byte
//! mutations of the whole file, with the CRCs fixed up or not.
//!
//! The manifest encoder here is written apart from `format.rs` on purpose:
//! it is the oracle's own reading of the format, so an encoder bug in
//! framemap shows as a disagreement instead of being copied.

use crate::snapshot_make::{Built, IMAGE_PAGES, RESTORE_PAGES, chance, global, prot, ps};
use arbitrary::{Result as AResult, Unstructured};
use framemap::snapshot::{
    Digest, GlobalRecord, GlobalValue, Manifest, MemoryRecord, PageSource, RunRecord, WorkingSetRecord,
};
use framemap::{PageRange, Protection};

/// The header's length.
pub(crate) const HEADER_LEN: usize = 64;

/// Byte offset of the manifest of a file whose header is well formed.
pub(crate) fn manifest_at(file: &[u8]) -> usize {
    u64::from_le_bytes(file[32..40].try_into().unwrap()) as usize
}

/// The manifest's bytes, as the format (version 2) lays them out: see
/// `format.rs`'s docs; written from the layout, not from its code.
pub(crate) fn encode(m: &Manifest) -> Vec<u8> {
    use std::collections::BTreeSet;
    fn leb(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let low = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(low);
                return;
            }
            out.push(low | 0x80);
        }
    }
    fn name(out: &mut Vec<u8>, s: &str) {
        leb(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    /// Zigzag of the wrapping difference `to - from`.
    fn step(out: &mut Vec<u8>, to: u64, from: u64) {
        let d = to.wrapping_sub(from) as i64;
        leb(out, if d < 0 { (!(d as u64)) * 2 + 1 } else { d as u64 * 2 });
    }
    let mut out = Vec::new();
    out.push(m.parent.is_some() as u8);
    if let Some(d) = &m.parent {
        out.extend_from_slice(&d.0);
    }
    out.extend_from_slice(&m.data_digest.0);
    leb(&mut out, m.memories.len() as u64);
    // Where the next data run continues: the end of the last one, over
    // every memory.
    let mut next_data = 0u64;
    for mem in &m.memories {
        name(&mut out, &mem.name);
        leb(&mut out, mem.len);
        out.extend_from_slice(&mem.checkpoint.to_le_bytes());
        let images: BTreeSet<[u8; 32]> = mem
            .runs
            .iter()
            .filter_map(|r| match &r.source {
                PageSource::Image { image, .. } => Some(image.0),
                _ => None,
            })
            .collect();
        let buffers: BTreeSet<&str> = mem
            .runs
            .iter()
            .filter_map(|r| match &r.source {
                PageSource::Shared { buffer, .. } => Some(buffer.as_str()),
                _ => None,
            })
            .collect();
        let images: Vec<[u8; 32]> = images.into_iter().collect();
        let buffers: Vec<&str> = buffers.into_iter().collect();
        leb(&mut out, images.len() as u64);
        for d in &images {
            out.extend_from_slice(d);
        }
        leb(&mut out, buffers.len() as u64);
        for b in &buffers {
            name(&mut out, b);
        }
        // Per table entry: backing page minus memory page of its last run.
        let mut image_shift = vec![0u64; images.len()];
        let mut buffer_shift = vec![0u64; buffers.len()];
        for run in &mem.runs {
            let (start, len) = (run.pages.start, run.pages.len());
            let prot = match run.prot {
                Protection::None => 0u8,
                Protection::Read => 1,
                Protection::ReadWrite => 2,
            };
            // (kind, table entry and its table's size, backing page and
            // the page the source expects).
            let (kind, entry, page, expected) = match &run.source {
                PageSource::Unmapped => (0u8, None, None, 0),
                PageSource::Zero => (1 + prot, None, None, 0),
                PageSource::Data { page } => (4 + prot, None, Some(*page), next_data),
                PageSource::Image { image, page } => {
                    let i = images.iter().position(|d| *d == image.0).unwrap();
                    (7 + prot, Some((i, images.len())), Some(*page), start.wrapping_add(image_shift[i]))
                }
                PageSource::Shared { buffer, page } => {
                    let i = buffers.iter().position(|b| *b == buffer.as_str()).unwrap();
                    (10 + prot, Some((i, buffers.len())), Some(*page), start.wrapping_add(buffer_shift[i]))
                }
                PageSource::Parent => (13 + prot, None, None, 0),
            };
            let less_one = len.wrapping_sub(1);
            let mut tag = kind | ((less_one % 4) as u8) << 5;
            if page == Some(expected) {
                tag |= 0x10;
            }
            if less_one >= 4 {
                tag |= 0x80;
            }
            out.push(tag);
            if less_one >= 4 {
                leb(&mut out, less_one / 4);
            }
            if let Some((i, n)) = entry
                && n > 1
            {
                leb(&mut out, i as u64);
            }
            if let Some(page) = page
                && page != expected
            {
                step(&mut out, page, expected);
            }
            match &run.source {
                PageSource::Data { page } => next_data = page.wrapping_add(len),
                PageSource::Image { page, .. } => image_shift[entry.unwrap().0] = page.wrapping_sub(start),
                PageSource::Shared { page, .. } => buffer_shift[entry.unwrap().0] = page.wrapping_sub(start),
                _ => {}
            }
        }
    }
    leb(&mut out, m.globals.len() as u64);
    for g in &m.globals {
        name(&mut out, &g.name);
        match g.value {
            GlobalValue::I32(v) => out.extend([0].into_iter().chain(v.to_le_bytes())),
            GlobalValue::I64(v) => out.extend([1].into_iter().chain(v.to_le_bytes())),
            GlobalValue::F32(v) => out.extend([2].into_iter().chain(v.to_le_bytes())),
            GlobalValue::F64(v) => out.extend([3].into_iter().chain(v.to_le_bytes())),
            GlobalValue::V128(v) => out.extend([4].into_iter().chain(v.to_le_bytes())),
        }
    }
    leb(&mut out, m.working_set.len() as u64);
    for ws in &m.working_set {
        leb(&mut out, u64::from(ws.memory));
        leb(&mut out, ws.pages.start);
        leb(&mut out, ws.pages.len());
    }
    out
}

/// A whole file: header, data pages, manifest, with both CRCs right.
pub(crate) fn assemble(data: &[u8], manifest: &[u8]) -> Vec<u8> {
    let p = ps() as usize;
    let data_pages = (data.len() / p) as u64;
    let manifest_at = (p + data.len()) as u64;
    let mut file = vec![0u8; p];
    file[0..8].copy_from_slice(b"FRAMEMAP");
    file[8..12].copy_from_slice(&2u32.to_le_bytes());
    file[12..16].copy_from_slice(&(p as u32).to_le_bytes());
    file[16..24].copy_from_slice(&(p as u64).to_le_bytes());
    file[24..32].copy_from_slice(&data_pages.to_le_bytes());
    file[32..40].copy_from_slice(&manifest_at.to_le_bytes());
    file[40..48].copy_from_slice(&(manifest.len() as u64).to_le_bytes());
    file.extend_from_slice(data);
    file.extend_from_slice(manifest);
    fix_crcs(&mut file, false);
    file
}

/// Sets the manifest CRC (over what the header's offset and length name, if
/// inside the file) and the header CRC; with `fix_len`, first makes the
/// header's manifest length reach the file's end.
pub(crate) fn fix_crcs(file: &mut [u8], fix_len: bool) {
    if file.len() < HEADER_LEN {
        return;
    }
    let at = u64::from_le_bytes(file[32..40].try_into().unwrap());
    if fix_len && at <= file.len() as u64 {
        let len = file.len() as u64 - at;
        file[40..48].copy_from_slice(&len.to_le_bytes());
    }
    let len = u64::from_le_bytes(file[40..48].try_into().unwrap());
    if let Some(end) = at.checked_add(len).filter(|&e| e <= file.len() as u64) {
        let crc = crc32fast::hash(&file[at as usize..end as usize]);
        file[48..52].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32fast::hash(&file[..56]);
    file[56..60].copy_from_slice(&crc.to_le_bytes());
}

/// Edits of the manifest (and the data section) that keep the format's
/// shape, so that they reach the restore: a new, well-formed file (or one
/// breaking exactly one rule, now and then).
pub(crate) fn edit_manifest(u: &mut Unstructured, built: &Built, m: &Manifest) -> AResult<Vec<u8>> {
    let p = ps() as usize;
    let mut m = m.clone();
    let at = manifest_at(&built.file);
    let mut data = built.file[p..at].to_vec();
    for _ in 0..u.int_in_range(1..=6)? {
        let data_pages = (data.len() / p) as u64;
        let op = u.int_in_range(0u8..=13)?;
        if op >= 10 {
            match op {
                10 => {
                    m.parent = match u.int_in_range(0u8..=2)? {
                        0 => None,
                        1 => built.parent.as_ref().map(|(s, _)| s.id()).or(Some(Digest(u.arbitrary()?))),
                        _ => Some(Digest(u.arbitrary()?)),
                    }
                }
                11 => {
                    if chance(u, 1, 2)? || m.globals.is_empty() {
                        let name =
                            if chance(u, 1, 4)? { "g0".to_string() } else { format!("h{}", u.arbitrary::<u8>()?) };
                        m.globals.push(GlobalRecord { name, value: global(u)? });
                    } else {
                        let i = u.choose_index(m.globals.len())?;
                        m.globals.remove(i);
                    }
                }
                12 => {
                    if chance(u, 1, 2)? || m.working_set.is_empty() {
                        let memory = u.int_in_range(0..=m.memories.len() as u32)?;
                        let start = u.int_in_range(0..=RESTORE_PAGES)?;
                        let end = u.int_in_range(start..=RESTORE_PAGES)?;
                        m.working_set.push(WorkingSetRecord { memory, pages: PageRange::new(start, end) });
                    } else {
                        let i = u.choose_index(m.working_set.len())?;
                        m.working_set.remove(i);
                    }
                }
                _ => match u.int_in_range(0u8..=3)? {
                    0 => data.extend((0..p).map(|i| (i as u8) ^ 0x5a)),
                    1 => data.truncate(data.len().saturating_sub(p)),
                    2 if data_pages > 0 => {
                        let page = u.int_in_range(0..=data_pages - 1)? as usize;
                        let off = u.int_in_range(0..=p - 1)?;
                        data[page * p + off] ^= u.int_in_range(1..=255u8)?;
                    }
                    _ => m.data_digest = Digest(u.arbitrary()?),
                },
            }
            continue;
        }
        if m.memories.is_empty() {
            continue;
        }
        let mi = u.choose_index(m.memories.len())?;
        if op >= 7 {
            match op {
                7 => {
                    let extra = if chance(u, 1, 2)? { 0 } else { u.int_in_range(1..=ps() - 1)? };
                    let len = (u.int_in_range(0..=RESTORE_PAGES + 1)? * ps()).saturating_sub(extra);
                    set_len(&mut m.memories[mi], len);
                }
                8 => {
                    let mut copy = m.memories[mi].clone();
                    copy.name = if chance(u, 1, 3)? { "0".into() } else { format!("copy{}", m.memories.len()) };
                    m.memories.push(copy);
                }
                _ => {
                    if chance(u, 1, 2)? {
                        m.memories.remove(mi);
                    } else {
                        m.memories[mi].name = ["0", "1", "x", ""][u.choose_index(4)?].into();
                    }
                }
            }
            continue;
        }
        let mem = &mut m.memories[mi];
        if mem.runs.is_empty() {
            continue;
        }
        let ri = u.choose_index(mem.runs.len())?;
        match op {
            0 => {
                // An accessible Unmapped run (1 in 8) has no encoding in
                // version 2 (the tag's kind 0 has no protection): it is
                // written, and opens, as an inaccessible one.
                mem.runs[ri].prot = prot(u)?;
                if mem.runs[ri].source == PageSource::Unmapped && !chance(u, 1, 8)? {
                    mem.runs[ri].prot = Protection::None;
                }
            }
            1 => {
                let source = match u.int_in_range(0u8..=6)? {
                    0 => PageSource::Unmapped,
                    1 => PageSource::Zero,
                    2 => PageSource::Data { page: u.int_in_range(0..=data_pages)? },
                    3 => PageSource::Image { image: built.img.hash, page: u.int_in_range(0..=IMAGE_PAGES)? },
                    4 => PageSource::Image { image: Digest(u.arbitrary()?), page: 0 },
                    5 => PageSource::Shared { buffer: "ring".into(), page: u.int_in_range(0..=3)? },
                    _ => PageSource::Parent,
                };
                let run = &mut mem.runs[ri];
                if source == PageSource::Unmapped && !chance(u, 1, 8)? {
                    run.prot = Protection::None;
                }
                // Keep data pages inside the section most of the time.
                run.source = match source {
                    PageSource::Data { page } if page + run.pages.len() > data_pages && !chance(u, 1, 8)? => {
                        if run.pages.len() > data_pages {
                            PageSource::Zero
                        } else {
                            PageSource::Data { page: data_pages - run.pages.len() }
                        }
                    }
                    other => other,
                };
            }
            2 => {
                let run = &mut mem.runs[ri];
                let delta = u.int_in_range(0..=4u64)?;
                let down = u.arbitrary::<bool>()?;
                let shift = |page: u64| if down { page.saturating_sub(delta) } else { page + delta };
                run.source = match run.source.clone() {
                    PageSource::Data { page } => PageSource::Data { page: shift(page) },
                    PageSource::Image { image, page } => PageSource::Image { image, page: shift(page) },
                    PageSource::Shared { buffer, page } => PageSource::Shared { buffer, page: shift(page) },
                    other => other,
                };
            }
            3 => {
                let run = mem.runs[ri].clone();
                if run.pages.len() > 1 {
                    let cut = u.int_in_range(1..=run.pages.len() - 1)?;
                    let second = RunRecord {
                        pages: PageRange::new(run.pages.start + cut, run.pages.end),
                        prot: run.prot,
                        source: run.source.advanced(cut),
                    };
                    mem.runs[ri].pages.end = run.pages.start + cut;
                    mem.runs.insert(ri + 1, second);
                }
            }
            4 => {
                if ri + 1 < mem.runs.len() {
                    let next = mem.runs.remove(ri + 1);
                    mem.runs[ri].pages.end = next.pages.end;
                }
            }
            5 => {
                // Swap two runs' sources (lengths may then disagree with
                // what the source holds).
                let rj = u.choose_index(mem.runs.len())?;
                let (a, b) = (mem.runs[ri].source.clone(), mem.runs[rj].source.clone());
                mem.runs[ri].source = b;
                mem.runs[rj].source = a;
            }
            _ => mem.checkpoint = u.arbitrary()?,
        }
    }
    if !chance(u, 1, 4)? {
        m.data_digest = Digest::of(&data);
    }
    Ok(assemble(&data, &encode(&m)))
}

/// Sets a memory's length, cutting or extending (with zero pages) its runs
/// so that they still cover it.
pub(crate) fn set_len(mem: &mut MemoryRecord, len: u64) {
    let pages = len.div_ceil(ps());
    mem.len = len;
    mem.runs.retain(|r| r.pages.start < pages);
    if let Some(last) = mem.runs.last_mut() {
        last.pages.end = last.pages.end.min(pages);
    }
    let end = mem.runs.last().map_or(0, |r| r.pages.end);
    if end < pages {
        mem.runs.push(RunRecord {
            pages: PageRange::new(end, pages),
            prot: Protection::ReadWrite,
            source: PageSource::Zero,
        });
    }
}

/// Byte mutations of the whole file, then (mostly) the CRCs fixed up.
pub(crate) fn mutate_bytes(u: &mut Unstructured, file: &mut Vec<u8>) -> AResult<()> {
    let p = ps() as usize;
    let moff = manifest_at(file);
    for _ in 0..u.int_in_range(0..=8)? {
        if file.is_empty() {
            break;
        }
        // Where: the header, the manifest, the rest of page 0 and the data,
        // or anywhere.
        let (lo, hi) = match u.int_in_range(0u8..=3)? {
            0 => (0, HEADER_LEN),
            1 => (moff, file.len()),
            2 => (HEADER_LEN, moff),
            _ => (0, file.len()),
        };
        let hi = hi.min(file.len()).max(1);
        let at = u.int_in_range(lo.min(hi - 1)..=hi - 1)?;
        match u.int_in_range(0u8..=7)? {
            0 => file[at] ^= 1 << u.int_in_range(0..=7)?,
            1 => file[at] = u.arbitrary()?,
            2 => {
                let n = u.int_in_range(1..=16usize)?.min(file.len() - at).min(u.len());
                let bytes = u.bytes(n)?;
                file[at..at + bytes.len()].copy_from_slice(bytes);
            }
            3 => {
                // A little-endian field set to an edge value.
                let old = file.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
                let value = match u.int_in_range(0u8..=9)? {
                    0 => 0,
                    1 => 1,
                    2 => p as u64,
                    3 => u64::from(u32::MAX),
                    4 => u64::MAX,
                    5 => u64::MAX / p as u64,
                    6 => file.len() as u64,
                    7 => old.wrapping_add(u.int_in_range(1..=4)?),
                    8 => old.wrapping_sub(u.int_in_range(1..=4)?),
                    _ => u.arbitrary()?,
                };
                let width = if u.arbitrary()? { 8 } else { 4 };
                let n = width.min(file.len() - at);
                file[at..at + n].copy_from_slice(&value.to_le_bytes()[..n]);
            }
            4 => {
                let n = u.int_in_range(1..=16usize)?.min(u.len());
                let bytes = u.bytes(n)?.to_vec();
                file.splice(at..at, bytes);
            }
            5 => {
                let n = u.int_in_range(1..=16usize)?.min(file.len() - at);
                file.drain(at..at + n);
            }
            6 => file.truncate(at),
            _ => {
                let n = u.int_in_range(1..=2 * p)?;
                let byte: u8 = u.arbitrary()?;
                file.resize(file.len() + n, byte);
            }
        }
    }
    if !chance(u, 1, 4)? {
        let fix_len = u.arbitrary()?;
        fix_crcs(file, fix_len);
    }
    Ok(())
}
