//! The metadata block of an artifact. Every artifact starts it with its
//! plan: the image table (each image's byte range in the file, once however
//! many memories use it) and, if images can be handed to the memories, each
//! planned memory's type facts and image. Then a module's not-prepared
//! reason, or a component's not-prepared reason and its unprepared core
//! modules. Decoding accepts only what encoding produces, every count
//! bounded by the bytes left.

use super::file::page;
use crate::component::{ComponentNotPrepared, OrderUnknown};
use crate::image_plan::{MemoryFacts, MemoryPlan};
use crate::rewrite::NotPrepared;

/// A decoded plan.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PlanMeta {
    /// Each image's (offset, length) in the file, in file order.
    pub images: Vec<(u64, u64)>,
    /// Each planned memory's facts and image (an index into `images`);
    /// `None`: images cannot be handed to the memories.
    pub memories: Option<Vec<(MemoryFacts, Option<usize>)>>,
}

/// A component's not-prepared reason and its unprepared core modules.
pub(super) type ComponentReasons = (Option<ComponentNotPrepared>, Vec<(usize, NotPrepared)>);

/// Bytes of one image range and of one memory record.
const IMAGE_RECORD: u64 = 16;
const MEMORY_RECORD: u64 = 24;

fn u64s(out: &mut Vec<u8>, values: &[u64]) {
    values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
}

fn text(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes the plan: the image table (`ranges`, in file order), then plan
/// presence and each memory's facts and index into the table (`refs`, from
/// [`super::file::image_table`]).
pub(super) fn encode_plan(out: &mut Vec<u8>, plan: Option<&[MemoryPlan]>, refs: &[Option<u32>], ranges: &[(u64, u64)]) {
    out.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for &(offset, len) in ranges {
        u64s(out, &[offset, len]);
    }
    let Some(plan) = plan else {
        out.push(0);
        return;
    };
    out.push(1);
    out.extend_from_slice(&(plan.len() as u32).to_le_bytes());
    for (planned, image) in plan.iter().zip(refs) {
        let f = planned.facts;
        u64s(out, &[f.minimum_bytes]);
        out.push(u8::from(f.maximum_bytes.is_some()));
        u64s(out, &[f.maximum_bytes.unwrap_or(0)]);
        out.extend_from_slice(&[u8::from(f.shared), u8::from(f.memory64), f.page_size_log2]);
        // 0: no image; i + 1: image i of the table.
        out.extend_from_slice(&image.map_or(0, |i| i + 1).to_le_bytes());
    }
}

/// Encodes a module's (or a core module's) not-prepared reason.
pub(super) fn encode_not_prepared(out: &mut Vec<u8>, reason: Option<&NotPrepared>) {
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
            u64s(out, &[*offset, *length, *minimum_bytes]);
        }
        Some(NotPrepared::GcHeapShapedMemory { memory }) => {
            out.push(4);
            out.extend_from_slice(&memory.to_le_bytes());
        }
        Some(NotPrepared::RewriteRejected { message }) => {
            out.push(5);
            text(out, message);
        }
        Some(NotPrepared::MemoryTooLarge { memory }) => {
            out.push(6);
            out.extend_from_slice(&memory.to_le_bytes());
        }
    }
}

/// Encodes a component's not-prepared reason and its core modules left
/// unchanged (with theirs).
pub(super) fn encode_component(
    out: &mut Vec<u8>,
    reason: Option<&ComponentNotPrepared>,
    unprepared: &[(usize, NotPrepared)],
) {
    let index = |out: &mut Vec<u8>, module: usize| u64s(out, &[module as u64]);
    match reason {
        None => out.push(0),
        Some(ComponentNotPrepared::NothingToCut) => out.push(1),
        Some(ComponentNotPrepared::Order(OrderUnknown::ImportedModule { name })) => {
            out.push(2);
            text(out, name);
        }
        Some(ComponentNotPrepared::Order(OrderUnknown::Untraceable { what })) => {
            out.push(3);
            text(out, what);
        }
        Some(ComponentNotPrepared::Order(OrderUnknown::TooDeep { limit })) => {
            out.push(4);
            index(out, *limit);
        }
        Some(ComponentNotPrepared::GcHeap { module }) => {
            out.push(5);
            index(out, *module);
        }
        Some(ComponentNotPrepared::MemoryTooLarge { module }) => {
            out.push(6);
            index(out, *module);
        }
        Some(ComponentNotPrepared::RewriteRejected { message }) => {
            out.push(7);
            text(out, message);
        }
    }
    out.extend_from_slice(&(unprepared.len() as u32).to_le_bytes());
    for (module, why) in unprepared {
        index(out, *module);
        encode_not_prepared(out, Some(why));
    }
}

/// A bounds-checked reader of the metadata.
pub(super) struct Cursor<'a>(pub &'a [u8]);

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
    fn index(&mut self) -> Result<usize, String> {
        let value = self.u64()?;
        usize::try_from(value).map_err(|_| format!("index {value} does not fit"))
    }
    fn text(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "a message is not UTF-8".into())
    }
    /// A count of records of `size` bytes, refused if they cannot fit in
    /// the bytes left (damage, not a huge allocation).
    fn count(&mut self, size: u64, what: &str) -> Result<usize, String> {
        let count = self.u32()?;
        if u64::from(count) * size > self.0.len() as u64 {
            return Err(format!("{count} {what} in {} bytes", self.0.len()));
        }
        Ok(count as usize)
    }

    /// Decodes the plan, checking every image range lies page-aligned in
    /// `images_start..images_end`, in order and without overlap, and every
    /// image is some memory's.
    pub(super) fn plan(&mut self, (images_start, images_end): (u64, u64)) -> Result<PlanMeta, String> {
        let count = self.count(IMAGE_RECORD, "images")?;
        let mut images = Vec::with_capacity(count);
        let mut next = images_start;
        for image in 0..count {
            let (offset, len) = (self.u64()?, self.u64()?);
            let end = offset.checked_add(len).filter(|&e| e <= images_end);
            if offset < next || !offset.is_multiple_of(page()) || !len.is_multiple_of(page()) || end.is_none() {
                return Err(format!("image {image} ({len:#x} bytes at {offset:#x}) is out of place"));
            }
            next = offset + len;
            images.push((offset, len));
        }
        if !self.flag()? {
            if !images.is_empty() {
                return Err(format!("{} images without a plan", images.len()));
            }
            return Ok(PlanMeta { images, memories: None });
        }
        let count = self.count(MEMORY_RECORD, "memories")?;
        let mut memories = Vec::with_capacity(count);
        let mut used = vec![false; images.len()];
        for memory in 0..count {
            let minimum_bytes = self.u64()?;
            let (has_max, max) = (self.flag()?, self.u64()?);
            let (shared, memory64, page_size_log2) = (self.flag()?, self.flag()?, self.u8()?);
            let facts =
                MemoryFacts { minimum_bytes, maximum_bytes: has_max.then_some(max), shared, memory64, page_size_log2 };
            let image = match self.u32()? {
                0 => None,
                i if (i as usize) <= images.len() => Some(i as usize - 1),
                i => return Err(format!("memory {memory} names image {}, of {}", i - 1, images.len())),
            };
            if let Some(i) = image {
                used[i] = true;
            }
            memories.push((facts, image));
        }
        if let Some(unused) = used.iter().position(|&u| !u) {
            return Err(format!("image {unused} belongs to no memory"));
        }
        Ok(PlanMeta { images, memories: Some(memories) })
    }

    /// Decodes a not-prepared reason.
    pub(super) fn not_prepared(&mut self) -> Result<Option<NotPrepared>, String> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(NotPrepared::NoDataSegments),
            2 => Some(NotPrepared::NonConstantOffset { segment: self.u32()? }),
            3 => Some(NotPrepared::OutOfBounds {
                segment: self.u32()?,
                memory: self.u32()?,
                offset: self.u64()?,
                length: self.u64()?,
                minimum_bytes: self.u64()?,
            }),
            4 => Some(NotPrepared::GcHeapShapedMemory { memory: self.u32()? }),
            5 => Some(NotPrepared::RewriteRejected { message: self.text()? }),
            6 => Some(NotPrepared::MemoryTooLarge { memory: self.u32()? }),
            other => return Err(format!("unknown not-prepared reason {other}")),
        })
    }

    /// Decodes what [`encode_component`] wrote.
    pub(super) fn component(&mut self) -> Result<ComponentReasons, String> {
        let reason = match self.u8()? {
            0 => None,
            1 => Some(ComponentNotPrepared::NothingToCut),
            2 => Some(OrderUnknown::ImportedModule { name: self.text()? }.into()),
            3 => {
                let what = match self.text()?.as_str() {
                    "core module" => "core module",
                    "component" => "component",
                    other => return Err(format!("unknown untraceable item `{other}`")),
                };
                Some(OrderUnknown::Untraceable { what }.into())
            }
            4 => Some(OrderUnknown::TooDeep { limit: self.index()? }.into()),
            5 => Some(ComponentNotPrepared::GcHeap { module: self.index()? }),
            6 => Some(ComponentNotPrepared::MemoryTooLarge { module: self.index()? }),
            7 => Some(ComponentNotPrepared::RewriteRejected { message: self.text()? }),
            other => return Err(format!("unknown component not-prepared reason {other}")),
        };
        // Each entry is at least a module index and a reason byte.
        let count = self.count(9, "unprepared modules")?;
        let mut unprepared = Vec::with_capacity(count);
        for _ in 0..count {
            let module = self.index()?;
            let why = self.not_prepared()?.ok_or("an unprepared module without a reason")?;
            unprepared.push((module, why));
        }
        Ok((reason, unprepared))
    }

    /// Refuses bytes after the metadata.
    pub(super) fn finish(self) -> Result<(), String> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the metadata")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::file::image_table;
    use framemap::Image;

    fn not_prepared_reasons() -> Vec<Option<NotPrepared>> {
        vec![
            None,
            Some(NotPrepared::NoDataSegments),
            Some(NotPrepared::NonConstantOffset { segment: 7 }),
            Some(NotPrepared::OutOfBounds { segment: 1, memory: 2, offset: 3, length: 4, minimum_bytes: 5 }),
            Some(NotPrepared::GcHeapShapedMemory { memory: 9 }),
            Some(NotPrepared::RewriteRejected { message: "no bulk memory ✓".into() }),
            Some(NotPrepared::MemoryTooLarge { memory: 3 }),
        ]
    }

    #[test]
    fn every_not_prepared_reason_round_trips() {
        for reason in not_prepared_reasons() {
            let mut bytes = Vec::new();
            encode_plan(&mut bytes, None, &[], &[]);
            encode_not_prepared(&mut bytes, reason.as_ref());
            let mut c = Cursor(&bytes);
            assert_eq!(c.plan((0, 0)).expect("plan"), PlanMeta { images: Vec::new(), memories: None });
            assert_eq!(c.not_prepared().expect("decodes"), reason);
            c.finish().expect("nothing after");
            let mut short = Cursor(&bytes[..bytes.len() - 1]);
            let cut = short.plan((0, 0)).and_then(|_| short.not_prepared()).and_then(|_| short.finish());
            assert!(cut.is_err(), "{reason:?} cut short is refused");
        }
    }

    #[test]
    fn every_component_reason_and_unprepared_modules_round_trip() {
        let reasons = [
            None,
            Some(ComponentNotPrepared::NothingToCut),
            Some(OrderUnknown::ImportedModule { name: "wasi:x/y".into() }.into()),
            Some(OrderUnknown::Untraceable { what: "core module" }.into()),
            Some(OrderUnknown::Untraceable { what: "component" }.into()),
            Some(OrderUnknown::TooDeep { limit: 64 }.into()),
            Some(ComponentNotPrepared::GcHeap { module: 3 }),
            Some(ComponentNotPrepared::MemoryTooLarge { module: 4 }),
            Some(ComponentNotPrepared::RewriteRejected { message: "nope".into() }),
        ];
        let unprepared: Vec<(usize, NotPrepared)> =
            not_prepared_reasons().into_iter().flatten().enumerate().map(|(i, r)| (i * 3, r)).collect();
        for reason in reasons {
            for modules in [&[][..], &unprepared[..]] {
                let mut bytes = Vec::new();
                encode_component(&mut bytes, reason.as_ref(), modules);
                let mut c = Cursor(&bytes);
                assert_eq!(c.component().expect("decodes"), (reason.clone(), modules.to_vec()));
                c.finish().expect("nothing after");
                let mut short = Cursor(&bytes[..bytes.len() - 1]);
                assert!(short.component().and_then(|_| short.finish()).is_err(), "{reason:?} cut short");
            }
        }
        let mut bytes = Vec::new();
        encode_component(&mut bytes, Some(&OrderUnknown::Untraceable { what: "table" }.into()), &[]);
        assert!(Cursor(&bytes).component().is_err(), "an untraceable item no encoder writes");
    }

    #[test]
    fn plans_round_trip_sharing_images_and_bad_ranges_are_refused() {
        let p = page();
        let (a, b) = (Image::from_bytes(&[1, 2, 3]).expect("image"), Image::from_bytes(&[4]).expect("image"));
        let facts = |min| MemoryFacts {
            minimum_bytes: min,
            maximum_bytes: Some(2 * min),
            shared: false,
            memory64: true,
            page_size_log2: 16,
        };
        let planned =
            |min, image: Option<&Image>| MemoryPlan { facts: facts(min), image: image.cloned(), snapshot: None };
        // A component instantiating one module twice plans its image twice.
        let plan = [planned(p, Some(&a)), planned(3 * p, None), planned(p, Some(&b)), planned(p, Some(&a))];
        let (images, refs) = image_table(Some(&plan));
        assert_eq!(
            images.iter().map(|(memory, image)| (*memory, image.id())).collect::<Vec<_>>(),
            [(0, a.id()), (2, b.id())]
        );
        assert_eq!(refs, [Some(0), None, Some(1), Some(0)]);
        let ranges = [(p, p), (2 * p, p)];
        let mut bytes = Vec::new();
        encode_plan(&mut bytes, Some(&plan), &refs, &ranges);
        let mut c = Cursor(&bytes);
        let meta = c.plan((p, 3 * p)).expect("decodes");
        c.finish().expect("nothing after");
        assert_eq!(meta.images, ranges);
        let expect = vec![(facts(p), Some(0)), (facts(3 * p), None), (facts(p), Some(1)), (facts(p), Some(0))];
        assert_eq!(meta.memories, Some(expect));

        let bad_ranges =
            [[(0, p), (2 * p, p)], [(p + 1, p), (2 * p, p)], [(p, 2 * p), (2 * p, p)], [(p, p), (2 * p, 2 * p)]];
        for bad in bad_ranges {
            let mut bytes = Vec::new();
            encode_plan(&mut bytes, Some(&plan), &refs, &bad);
            assert!(Cursor(&bytes).plan((p, 3 * p)).is_err(), "{bad:?}");
        }
        for bad_refs in [[Some(0), None, Some(2), Some(0)], [Some(0), None, None, Some(0)]] {
            let mut bytes = Vec::new();
            encode_plan(&mut bytes, Some(&plan), &bad_refs, &ranges);
            assert!(Cursor(&bytes).plan((p, 3 * p)).is_err(), "{bad_refs:?}");
        }
    }
}
