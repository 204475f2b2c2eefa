//! The metadata block of an artifact: whether images can be handed to the
//! module's memories, each memory's type facts and image range, and the
//! not-prepared reason. Decoding accepts only what encoding produces, every
//! count bounded by the bytes left.

use super::page;
use crate::image_plan::{MemoryFacts, MemoryPlan};
use crate::rewrite::NotPrepared;

/// A memory's type facts and its image's byte range in the file, if any.
pub(super) type MemoryRecord = (MemoryFacts, Option<(u64, u64)>);

/// The decoded metadata.
pub(super) struct Meta {
    /// Each memory's facts and image range; `None`: images cannot be handed
    /// to the module's memories.
    pub memories: Option<Vec<MemoryRecord>>,
    pub not_prepared: Option<NotPrepared>,
}

/// Encodes the metadata: plan presence, memories, the not-prepared reason.
pub(super) fn encode_meta(
    plan: Option<&[MemoryPlan]>,
    ranges: &[Option<(u64, u64)>],
    reason: Option<&NotPrepared>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let u64s = |out: &mut Vec<u8>, values: &[u64]| values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    match plan {
        None => out.push(0),
        Some(plan) => {
            out.push(1);
            out.extend_from_slice(&(plan.len() as u32).to_le_bytes());
            for (planned, range) in plan.iter().zip(ranges) {
                let f = planned.facts;
                u64s(&mut out, &[f.minimum_bytes]);
                out.push(u8::from(f.maximum_bytes.is_some()));
                u64s(&mut out, &[f.maximum_bytes.unwrap_or(0)]);
                out.extend_from_slice(&[u8::from(f.shared), u8::from(f.memory64), f.page_size_log2]);
                out.push(u8::from(range.is_some()));
                let (offset, len) = range.unwrap_or_default();
                u64s(&mut out, &[offset, len]);
            }
        }
    }
    let text = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    match reason {
        None => out.push(0),
        Some(NotPrepared::NoDataSegments) => out.push(1),
        Some(NotPrepared::NonConstantOffset { segment }) => {
            out.push(2);
            out.extend_from_slice(&segment.to_le_bytes());
        }
        Some(NotPrepared::OutOfBounds { segment, memory, offset, length, minimum_bytes }) => {
            out.push(3);
            out.extend_from_slice(&segment.to_le_bytes());
            out.extend_from_slice(&memory.to_le_bytes());
            u64s(&mut out, &[*offset, *length, *minimum_bytes]);
        }
        Some(NotPrepared::GcHeapShapedMemory { memory }) => {
            out.push(4);
            out.extend_from_slice(&memory.to_le_bytes());
        }
        Some(NotPrepared::RewriteRejected { message }) => {
            out.push(5);
            text(&mut out, message);
        }
        Some(NotPrepared::MemoryTooLarge { memory }) => {
            out.push(6);
            out.extend_from_slice(&memory.to_le_bytes());
        }
    }
    out
}

/// A bounds-checked reader of the metadata.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("the metadata ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("flag byte {other}")),
        }
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

/// Decodes the metadata, checking every image range lies page-aligned in
/// `images_start..images_end`, in order and without overlap.
pub(super) fn decode_meta(bytes: &[u8], images_start: u64, images_end: u64) -> Result<Meta, String> {
    let mut c = Cursor(bytes);
    let memories = match c.flag()? {
        false => None,
        true => {
            let count = c.u32()?;
            // Each memory record is 37 bytes: a count past the bytes left is damage.
            if u64::from(count) * 37 > c.0.len() as u64 {
                return Err(format!("{count} memories in {} bytes", c.0.len()));
            }
            let mut next = images_start;
            let mut memories = Vec::with_capacity(count as usize);
            for memory in 0..count {
                let minimum_bytes = c.u64()?;
                let (has_max, max) = (c.flag()?, c.u64()?);
                let (shared, memory64, page_size_log2) = (c.flag()?, c.flag()?, c.u8()?);
                let (has_image, offset, len) = (c.flag()?, c.u64()?, c.u64()?);
                let facts = MemoryFacts {
                    minimum_bytes,
                    maximum_bytes: has_max.then_some(max),
                    shared,
                    memory64,
                    page_size_log2,
                };
                let range = match has_image {
                    false => None,
                    true => {
                        let end = offset.checked_add(len).filter(|&e| e <= images_end);
                        if offset < next
                            || !offset.is_multiple_of(page())
                            || !len.is_multiple_of(page())
                            || end.is_none()
                        {
                            return Err(format!(
                                "memory {memory}'s image {len:#x} bytes at {offset:#x} is out of place"
                            ));
                        }
                        next = offset + len;
                        Some((offset, len))
                    }
                };
                memories.push((facts, range));
            }
            Some(memories)
        }
    };
    let not_prepared = match c.u8()? {
        0 => None,
        1 => Some(NotPrepared::NoDataSegments),
        2 => Some(NotPrepared::NonConstantOffset { segment: c.u32()? }),
        3 => Some(NotPrepared::OutOfBounds {
            segment: c.u32()?,
            memory: c.u32()?,
            offset: c.u64()?,
            length: c.u64()?,
            minimum_bytes: c.u64()?,
        }),
        4 => Some(NotPrepared::GcHeapShapedMemory { memory: c.u32()? }),
        5 => {
            let len = c.u32()? as usize;
            let message = String::from_utf8(c.take(len)?.to_vec()).map_err(|_| "a message is not UTF-8")?;
            Some(NotPrepared::RewriteRejected { message })
        }
        6 => Some(NotPrepared::MemoryTooLarge { memory: c.u32()? }),
        other => return Err(format!("unknown not-prepared reason {other}")),
    };
    if !c.0.is_empty() {
        return Err(format!("{} bytes after the metadata", c.0.len()));
    }
    Ok(Meta { memories, not_prepared })
}

#[cfg(test)]
mod tests {
    use super::*;
    use framemap::Image;

    #[test]
    fn every_not_prepared_reason_round_trips() {
        let reasons = [
            None,
            Some(NotPrepared::NoDataSegments),
            Some(NotPrepared::NonConstantOffset { segment: 7 }),
            Some(NotPrepared::OutOfBounds { segment: 1, memory: 2, offset: 3, length: 4, minimum_bytes: 5 }),
            Some(NotPrepared::GcHeapShapedMemory { memory: 9 }),
            Some(NotPrepared::RewriteRejected { message: "no bulk memory ✓".into() }),
            Some(NotPrepared::MemoryTooLarge { memory: 3 }),
        ];
        for reason in reasons {
            let bytes = encode_meta(None, &[], reason.as_ref());
            let meta = decode_meta(&bytes, 0, 0).expect("decodes");
            assert_eq!(meta.not_prepared, reason);
            assert!(meta.memories.is_none());
            assert!(decode_meta(&bytes[..bytes.len() - 1], 0, 0).is_err(), "{reason:?} cut short is refused");
        }
    }

    #[test]
    fn memories_round_trip_and_bad_ranges_are_refused() {
        let p = page();
        let image = Image::from_bytes(&[1, 2, 3]).expect("image");
        let facts = |min| MemoryFacts {
            minimum_bytes: min,
            maximum_bytes: Some(2 * min),
            shared: false,
            memory64: true,
            page_size_log2: 16,
        };
        let plan = [
            MemoryPlan { facts: facts(p), image: Some(image.clone()), snapshot: None },
            MemoryPlan { facts: facts(3 * p), image: None, snapshot: None },
        ];
        let ranges = [Some((p, p)), None];
        let bytes = encode_meta(Some(&plan), &ranges, None);
        let meta = decode_meta(&bytes, p, 2 * p).expect("decodes");
        assert_eq!(meta.memories, Some(vec![(facts(p), Some((p, p))), (facts(3 * p), None)]));
        for bad in [[Some((0, p)), None], [Some((p + 1, p)), None], [Some((p, 2 * p)), None]] {
            let bytes = encode_meta(Some(&plan), &bad, None);
            assert!(decode_meta(&bytes, p, 2 * p).is_err(), "{bad:?}");
        }
    }
}
