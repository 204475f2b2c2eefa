//! Cutting a module's data segments out into per-memory initial contents.
//!
//! (At about 750 lines this file is over the project's ~600-line rule: about
//! half is the one decision "is this module provably exact to cut" and its
//! reasons, which read best in one place; splitting the section re-encoder
//! from it is the next step when the file grows.)
//!
//! [`prepare`] takes a core wasm module and, when it is safe, moves the bytes
//! of the active data segments of each *defined, non-shared* memory out of
//! the module and into a [`MemoryInit`] per defined memory, which the caller
//! maps as that memory's initial contents. The rewritten module keeps every
//! data segment at the same index; each cut segment becomes an *empty passive*
//! segment, every other segment is kept byte for byte, so `memory.init`,
//! `data.drop` and the data count section behave exactly as in the original.
//! Only the data section is re-encoded: every byte before and after it
//! (custom sections and names included) is copied unchanged, and since the
//! data section is the last non-custom section, every code offset stays the
//! same.
//!
//! Why this is exact: after instantiation an active segment is dropped, and a
//! dropped segment behaves for `memory.init` and `data.drop` exactly like an
//! empty passive one (only a zero-length `memory.init` at source offset 0
//! succeeds, within the memory's bounds). A module is only prepared when
//! *every* active data segment has a constant offset and provably fits its
//! memory's declared minimum size, so instantiation of the original never
//! traps at a data segment: the instantiation-time bounds check the passive
//! segment no longer performs always passed. The memory contents at the end
//! of instantiation (before the start function) are therefore the caller's
//! image. Anything that cannot be shown safe leaves the module
//! [`Unprepared`](Preparation::Unprepared), with the [`NotPrepared`] reason.
//!
//! Making the cut segments passive rather than empty active ones also means a
//! prepared module copies nothing at instantiation: wasmtime then needs no
//! start-up code for data segments, and charges no instantiation fuel for
//! them, as with its own copy-on-write images.
//!
//! Offsets may be `i32.const`/`i64.const`, or extended-const arithmetic
//! (`add`, `sub`, `mul`) of constants; a `global.get` anywhere in an active
//! segment's offset makes the whole module unprepared.

use std::ops::Range;

use wasm_encoder::{DataSection, Encode, SectionId};
use wasmparser::{
    ConstExpr, Data, DataKind, Encoding, MemoryType, Operator, Parser, Payload, TypeRef, Validator, WasmFeatures,
};

/// The outcome of preparing a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preparation {
    /// The module was rewritten: run [`PreparedWasm::wasm`] and map each
    /// memory's [`MemoryInit`] as its initial contents.
    Prepared(PreparedWasm),
    /// The module cannot be prepared safely (or there is nothing to gain):
    /// run the original bytes unchanged.
    Unprepared {
        /// Why, for the caller to log or show.
        reason: NotPrepared,
    },
}

/// A rewritten module and the initial contents of its defined memories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedWasm {
    /// The re-encoded module: the original with each cut data segment turned
    /// into an empty passive segment.
    pub wasm: Vec<u8>,
    /// One entry per *defined* memory, in defined-memory order (imported
    /// memories excluded), including memories none of whose segments were
    /// cut.
    pub memories: Vec<MemoryInit>,
}

/// The initial contents of one defined memory, with the type facts needed to
/// match it to the memory wasmtime asks for at allocation time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryInit {
    /// Index in the module's memory index space (imports included).
    pub memory_index: u32,
    /// The memory's initial size in bytes: minimum pages times page size.
    pub minimum_bytes: u64,
    /// The memory's declared maximum size in bytes, or `None` if it declares
    /// none or the product does not fit in a `u64` (such a maximum can never
    /// be reached anyway).
    pub maximum_bytes: Option<u64>,
    /// Whether the memory is shared. A shared memory's segments are never cut,
    /// so its `segments` are always empty.
    pub shared: bool,
    /// Whether the memory is indexed with `i64` (memory64).
    pub memory64: bool,
    /// Log2 of the memory's page size: 16 by default, 0 for the custom page
    /// size of one byte.
    pub page_size_log2: u32,
    /// `(byte offset, bytes)` of each cut segment, in segment order; later
    /// segments overwrite earlier ones where they overlap. Every range lies
    /// within `minimum_bytes`; empty segments are left out. Bytes no segment
    /// covers are zero.
    pub segments: Vec<(u64, Vec<u8>)>,
}

/// Why a module was not prepared.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotPrepared {
    /// No active data segment with bytes targets a defined, non-shared
    /// memory, so there is nothing to cut.
    #[error(
        "the module has no non-empty active data segment for a defined, non-shared memory, so there is nothing to cut"
    )]
    NoDataSegments,
    /// An active data segment's offset is not a constant expression (it reads
    /// a global), so whether instantiation traps at it cannot be known ahead
    /// of time.
    #[error(
        "active data segment {segment} has an offset that is not a constant expression, so its bounds cannot be checked ahead of instantiation"
    )]
    NonConstantOffset {
        /// The segment's index in the data index space.
        segment: u32,
    },
    /// An active data segment does not provably fit within its memory's
    /// declared minimum size, so instantiation may trap part-way through
    /// initialising memory.
    #[error(
        "active data segment {segment} ({length:#x} bytes at offset {offset:#x}) does not provably fit within the {minimum_bytes:#x} initial bytes of memory {memory}, so instantiation may trap part-way"
    )]
    OutOfBounds {
        /// The segment's index in the data index space.
        segment: u32,
        /// The memory it targets (index space including imports).
        memory: u32,
        /// The segment's constant offset.
        offset: u64,
        /// The segment's length in bytes.
        length: u64,
        /// The memory's declared minimum size in bytes.
        minimum_bytes: u64,
    },
    /// The module may need a GC heap, and its first defined memory has the
    /// GC heap's memory type shape, so the two allocation requests could not
    /// be told apart (see `PreparedModule`).
    #[error(
        "the module may need a GC heap and memory {memory} has the GC heap's shape (32-bit, unshared, no maximum), so its image could not be handed over reliably"
    )]
    GcHeapShapedMemory {
        /// The memory (index space including imports).
        memory: u32,
    },
    /// The engine does not accept the rewritten module although it accepts
    /// the original (its empty passive segments need the bulk-memory
    /// feature, which the engine has turned off).
    #[error(
        "the engine rejects the rewritten module (its cut segments are passive, which needs bulk memory): {message}"
    )]
    RewriteRejected {
        /// The engine's compilation error.
        message: String,
    },
    /// A memory's declared minimum size in bytes does not fit in a `u64`, so
    /// the module can never be instantiated.
    #[error("memory {memory}'s minimum size in bytes does not fit in 64 bits")]
    MemoryTooLarge {
        /// The memory (index space including imports).
        memory: u32,
    },
}

/// Why [`prepare`] could not even look at a module.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The bytes are not a valid core wasm module.
    #[error("invalid wasm module: {message} (at byte offset {offset:#x})")]
    Invalid {
        /// The parser's or validator's message.
        message: String,
        /// Where in the bytes it stopped.
        offset: usize,
    },
    /// The bytes are a component, not a core module.
    #[error("the bytes are a wasm component, not a core module")]
    Component,
}

impl From<wasmparser::BinaryReaderError> for PrepareError {
    fn from(error: wasmparser::BinaryReaderError) -> Self {
        PrepareError::Invalid { message: error.message().to_owned(), offset: error.offset() }
    }
}

/// Prepares `wasm`: validates it (every wasm feature enabled), then, if every
/// active data segment has a constant offset that provably fits its memory,
/// cuts the segments of the defined, non-shared memories out into
/// [`MemoryInit`]s and returns the rewritten module. See the
/// [module documentation](self) for the exact rules.
///
/// # Errors
///
/// [`PrepareError`] if `wasm` is not a valid core module.
pub fn prepare(wasm: &[u8]) -> Result<Preparation, PrepareError> {
    if let Some(Ok(Payload::Version { encoding: Encoding::Component, .. })) = Parser::new(0).parse_all(wasm).next() {
        return Err(PrepareError::Component);
    }
    Validator::new_with_features(WasmFeatures::all()).validate_all(wasm)?;

    let module = scan(wasm)?;
    let plan = match plan(&module) {
        Ok(plan) => plan,
        Err(reason) => return Ok(Preparation::Unprepared { reason }),
    };
    let wasm = encode(wasm, &module, &plan.cut);
    Ok(Preparation::Prepared(PreparedWasm { wasm, memories: plan.memories }))
}

/// A memory of the module, imported or defined.
struct Memory {
    ty: MemoryType,
    imported: bool,
}

/// What [`prepare`] needs to know about a (valid) module.
struct Module<'a> {
    /// Every memory, in memory index order.
    memories: Vec<Memory>,
    /// Every data segment, in data index order.
    segments: Vec<Data<'a>>,
    /// The whole data section, from its id byte to its end, if there is one.
    data_section: Option<Range<usize>>,
}

/// Collects the memories and data segments of an already validated module.
fn scan(wasm: &[u8]) -> Result<Module<'_>, PrepareError> {
    let mut module = Module { memories: Vec::new(), segments: Vec::new(), data_section: None };
    // Where the previous section ended: the next one's id byte.
    let mut section_start = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload?;
        if let Payload::Version { range, .. } = &payload {
            section_start = range.end;
        }
        if let (Payload::DataSection(_), Some((_, range))) = (&payload, payload.as_section()) {
            module.data_section = Some(section_start..range.end);
        }
        if let Some((_, range)) = payload.as_section() {
            section_start = range.end;
        }
        match payload {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if let TypeRef::Memory(ty) = import?.ty {
                        module.memories.push(Memory { ty, imported: true });
                    }
                }
            }
            Payload::MemorySection(memories) => {
                for ty in memories {
                    module.memories.push(Memory { ty: ty?, imported: false });
                }
            }
            Payload::DataSection(segments) => {
                for segment in segments {
                    module.segments.push(segment?);
                }
            }
            _ => {}
        }
    }
    Ok(module)
}

/// An entry for defined memory `memory_index`, with no segments yet.
fn memory_init(memory_index: u32, memory: &Memory, minimum_bytes: u64) -> MemoryInit {
    MemoryInit {
        memory_index,
        minimum_bytes,
        maximum_bytes: memory.ty.maximum.and_then(|max| max.checked_mul(1u64.checked_shl(memory.ty.page_size_log2())?)),
        shared: memory.ty.shared,
        memory64: memory.ty.memory64,
        page_size_log2: memory.ty.page_size_log2(),
        segments: Vec::new(),
    }
}

/// The defined memories of `wasm` (a valid module), in defined-memory order,
/// each with no segments: what a module with nothing to cut needs so that
/// images can still be given to its memories. `None` if a memory's minimum
/// size in bytes overflows.
pub fn defined_memories(wasm: &[u8]) -> Result<Option<Vec<MemoryInit>>, PrepareError> {
    let module = scan(wasm)?;
    let mut out = Vec::new();
    for (index, memory) in (0u32..).zip(&module.memories) {
        let bytes = 1u64.checked_shl(memory.ty.page_size_log2()).and_then(|page| memory.ty.initial.checked_mul(page));
        match bytes {
            Some(bytes) if !memory.imported => out.push(memory_init(index, memory, bytes)),
            Some(_) => {}
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// What to do with a module that can be prepared.
struct Plan {
    /// Per data segment: whether its bytes are cut.
    cut: Vec<bool>,
    /// The initial contents of each defined memory.
    memories: Vec<MemoryInit>,
}

/// Decides which segments to cut, or why the module cannot be prepared.
fn plan(module: &Module<'_>) -> Result<Plan, NotPrepared> {
    let mut minimum_bytes = Vec::with_capacity(module.memories.len());
    for (index, memory) in (0u32..).zip(&module.memories) {
        let page_size = 1u64.checked_shl(memory.ty.page_size_log2());
        match page_size.and_then(|page_size| memory.ty.initial.checked_mul(page_size)) {
            Some(bytes) => minimum_bytes.push(bytes),
            None => return Err(NotPrepared::MemoryTooLarge { memory: index }),
        }
    }

    let mut memories: Vec<Option<MemoryInit>> = (0u32..)
        .zip(&module.memories)
        .zip(&minimum_bytes)
        .map(|((memory_index, memory), &minimum_bytes)| {
            (!memory.imported).then(|| memory_init(memory_index, memory, minimum_bytes))
        })
        .collect();

    let mut cut = Vec::with_capacity(module.segments.len());
    let mut any_cut = false;
    for (index, segment) in (0u32..).zip(&module.segments) {
        let DataKind::Active { memory_index, offset_expr } = &segment.kind else {
            cut.push(false);
            continue;
        };
        let memory = *memory_index as usize;
        let offset = constant_offset(offset_expr).ok_or(NotPrepared::NonConstantOffset { segment: index })?;
        let length = segment.data.len() as u64;
        let minimum = minimum_bytes[memory];
        if offset.checked_add(length).is_none_or(|end| end > minimum) {
            return Err(NotPrepared::OutOfBounds {
                segment: index,
                memory: *memory_index,
                offset,
                length,
                minimum_bytes: minimum,
            });
        }
        let init = memories[memory].as_mut().filter(|init| !init.shared && length > 0);
        cut.push(init.is_some());
        if let Some(init) = init {
            init.segments.push((offset, segment.data.to_vec()));
            any_cut = true;
        }
    }
    if !any_cut {
        return Err(NotPrepared::NoDataSegments);
    }
    Ok(Plan { cut, memories: memories.into_iter().flatten().collect() })
}

/// The value of a data segment's offset expression, if it is made of
/// constants only: `i32.const`/`i64.const` and extended-const `add`, `sub`,
/// `mul`. An `i32` result is taken as unsigned, as memory32 addresses are.
fn constant_offset(expr: &ConstExpr<'_>) -> Option<u64> {
    // The module is valid, so operand types match; i32 values are kept
    // zero-extended and i32 arithmetic wraps at 32 bits.
    fn binary(stack: &mut Vec<u64>, op: impl FnOnce(u64, u64) -> u64) -> Option<()> {
        let rhs = stack.pop()?;
        let lhs = stack.pop()?;
        stack.push(op(lhs, rhs));
        Some(())
    }
    fn i32(op: fn(u32, u32) -> u32) -> impl FnOnce(u64, u64) -> u64 {
        move |lhs, rhs| u64::from(op(lhs as u32, rhs as u32))
    }

    let mut stack = Vec::new();
    let mut ops = expr.get_operators_reader();
    loop {
        match ops.read().ok()? {
            Operator::I32Const { value } => stack.push(u64::from(value as u32)),
            Operator::I64Const { value } => stack.push(value as u64),
            Operator::I32Add => binary(&mut stack, i32(u32::wrapping_add))?,
            Operator::I32Sub => binary(&mut stack, i32(u32::wrapping_sub))?,
            Operator::I32Mul => binary(&mut stack, i32(u32::wrapping_mul))?,
            Operator::I64Add => binary(&mut stack, u64::wrapping_add)?,
            Operator::I64Sub => binary(&mut stack, u64::wrapping_sub)?,
            Operator::I64Mul => binary(&mut stack, u64::wrapping_mul)?,
            Operator::End => break,
            _ => return None,
        }
    }
    match (stack.as_slice(), ops.eof()) {
        (&[value], true) => Some(value),
        _ => None,
    }
}

/// The original module with the data section rebuilt: each cut segment
/// becomes an empty passive segment at the same index; every other segment
/// is copied as is, and so is every byte before and after the data section
/// (so every offset up to the data section, code offsets included, is
/// unchanged).
fn encode(wasm: &[u8], module: &Module<'_>, cut: &[bool]) -> Vec<u8> {
    let mut data = DataSection::new();
    for (segment, &cut) in module.segments.iter().zip(cut) {
        match &segment.kind {
            // Flags 1 (passive), then a vec(byte) of length 0.
            DataKind::Active { .. } if cut => data.raw(&[0x01, 0x00]),
            _ => data.raw(&wasm[segment.range.clone()]),
        };
    }

    let section = module.data_section.clone().unwrap_or(wasm.len()..wasm.len());
    debug_assert!(section.is_empty() || wasm[section.start] == SectionId::Data as u8);
    let mut out = wasm[..section.start].to_vec();
    out.push(SectionId::Data as u8);
    data.encode(&mut out);
    out.extend_from_slice(&wasm[section.end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmparser::{Payload, Validator};

    fn prepared(wat: &str) -> PreparedWasm {
        let wasm = wat::parse_str(wat).unwrap();
        match prepare(&wasm).unwrap() {
            Preparation::Prepared(prepared) => {
                check_rewrite(&wasm, &prepared);
                prepared
            }
            Preparation::Unprepared { reason } => panic!("not prepared: {reason}"),
        }
    }

    fn unprepared(wat: &str) -> NotPrepared {
        let wasm = wat::parse_str(wat).unwrap();
        match prepare(&wasm).unwrap() {
            Preparation::Prepared(prepared) => panic!("prepared: {prepared:?}"),
            Preparation::Unprepared { reason } => reason,
        }
    }

    /// Every section but the data section, as (id, bytes).
    fn other_sections(wasm: &[u8]) -> Vec<(u8, Vec<u8>)> {
        Parser::new(0)
            .parse_all(wasm)
            .map(Result::unwrap)
            .filter(|payload| !matches!(payload, Payload::DataSection(_)))
            .filter_map(|payload| payload.as_section())
            .map(|(id, range)| (id, wasm[range].to_vec()))
            .collect()
    }

    fn segments(wasm: &[u8]) -> Vec<Data<'_>> {
        scan(wasm).unwrap().segments
    }

    fn header<'a>(wasm: &'a [u8], data: &Data<'a>) -> (Option<u32>, Option<&'a [u8]>) {
        match &data.kind {
            DataKind::Passive => (None, None),
            DataKind::Active { memory_index, offset_expr } => {
                (Some(*memory_index), Some(&wasm[offset_expr.get_binary_reader().range()]))
            }
        }
    }

    /// The output validates, keeps every other section byte for byte, and
    /// either keeps a segment as it is or makes it an empty passive one and
    /// has its bytes in the right `MemoryInit`.
    fn check_rewrite(original: &[u8], prepared: &PreparedWasm) {
        Validator::new_with_features(WasmFeatures::all()).validate_all(&prepared.wasm).unwrap();
        assert_eq!(other_sections(original), other_sections(&prepared.wasm));
        // Byte for byte before and after the data section.
        let old = scan(original).unwrap().data_section.unwrap();
        let new = scan(&prepared.wasm).unwrap().data_section.unwrap();
        assert_eq!(original[..old.start], prepared.wasm[..new.start]);
        assert_eq!(original[old.end..], prepared.wasm[new.end..]);
        let before = segments(original);
        let after = segments(&prepared.wasm);
        assert_eq!(before.len(), after.len());
        let mut expected: Vec<Vec<(u64, Vec<u8>)>> = prepared.memories.iter().map(|_| Vec::new()).collect();
        for (old, new) in before.iter().zip(&after) {
            if old.data == new.data {
                assert_eq!(header(original, old), header(&prepared.wasm, new), "an uncut segment is kept as is");
            } else {
                assert!(new.data.is_empty());
                assert!(matches!(new.kind, DataKind::Passive), "a cut segment becomes passive");
                let DataKind::Active { memory_index, offset_expr } = &old.kind else { panic!("passive cut") };
                let init = prepared.memories.iter().position(|m| m.memory_index == *memory_index).unwrap();
                expected[init].push((constant_offset(offset_expr).unwrap(), old.data.to_vec()));
            }
        }
        let actual: Vec<_> = prepared.memories.iter().map(|m| m.segments.clone()).collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn single_memory_overlapping_segments() {
        let p = prepared(
            r#"(module
                (memory (export "m") 2 3)
                (data (i32.const 0) "abcdef")
                (data (i32.const 2) "XY")
                (data (i32.const 0x1fffe) "zz")
                (func (export "f") (result i32) (i32.load8_u (i32.const 2))))"#,
        );
        assert_eq!(p.memories.len(), 1);
        let m = &p.memories[0];
        assert_eq!(m.memory_index, 0);
        assert_eq!(m.minimum_bytes, 2 << 16);
        assert_eq!(m.maximum_bytes, Some(3 << 16));
        assert!(!m.shared && !m.memory64);
        assert_eq!(m.page_size_log2, 16);
        assert_eq!(m.segments, vec![(0, b"abcdef".to_vec()), (2, b"XY".to_vec()), (0x1fffe, b"zz".to_vec())]);
        assert!(segments(&p.wasm).iter().all(|s| s.data.is_empty()));
    }

    #[test]
    fn multi_memory_with_an_imported_memory() {
        let p = prepared(
            r#"(module
                (import "env" "mem" (memory $imp 1))
                (memory $a 1)
                (memory $b 2 2)
                (data (memory $imp) (i32.const 8) "imported")
                (data (memory $b) (i32.const 0x10000) "b")
                (data (memory $a) (i32.const 1) "a"))"#,
        );
        assert_eq!(p.memories.iter().map(|m| m.memory_index).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(p.memories[0].segments, vec![(1, b"a".to_vec())]);
        assert_eq!(p.memories[1].segments, vec![(0x10000, b"b".to_vec())]);
        assert_eq!(p.memories[1].maximum_bytes, Some(2 << 16));
        let after = segments(&p.wasm);
        assert_eq!(after[0].data, b"imported");
        assert!(after[1].data.is_empty() && after[2].data.is_empty());
    }

    #[test]
    fn memory_with_no_segments_still_listed() {
        let p = prepared(r#"(module (memory 0) (memory 1) (data (memory 1) (i32.const 0) "x"))"#);
        assert_eq!(p.memories.len(), 2);
        assert_eq!((p.memories[0].minimum_bytes, p.memories[0].segments.len()), (0, 0));
        assert_eq!(p.memories[1].segments, vec![(0, b"x".to_vec())]);
    }

    #[test]
    fn memory64() {
        let p = prepared(
            r#"(module (memory i64 1 (pagesize 65536))
                (data (i64.const 0xfff0) "0123456789abcdef"))"#,
        );
        let m = &p.memories[0];
        assert!(m.memory64);
        assert_eq!(m.maximum_bytes, None);
        assert_eq!(m.segments, vec![(0xfff0, b"0123456789abcdef".to_vec())]);
        assert!(matches!(
            unprepared(r#"(module (memory i64 1) (data (i64.const -1) "x"))"#),
            NotPrepared::OutOfBounds { offset: u64::MAX, length: 1, minimum_bytes: 65536, .. }
        ));
    }

    #[test]
    fn custom_page_size_one() {
        let p = prepared(r#"(module (memory 10 20 (pagesize 1)) (data (i32.const 6) "wxyz"))"#);
        let m = &p.memories[0];
        assert_eq!((m.minimum_bytes, m.maximum_bytes, m.page_size_log2), (10, Some(20), 0));
        assert_eq!(m.segments, vec![(6, b"wxyz".to_vec())]);
        assert_eq!(
            unprepared(r#"(module (memory 10 (pagesize 1)) (data (i32.const 7) "wxyz"))"#),
            NotPrepared::OutOfBounds { segment: 0, memory: 0, offset: 7, length: 4, minimum_bytes: 10 }
        );
    }

    #[test]
    fn passive_segments_and_bulk_memory_kept() {
        let wat = r#"(module
            (memory 1)
            (data $p "passive")
            (data $a (i32.const 16) "active")
            (data $e (i32.const 65536) "")
            (func (export "init") (memory.init $p (i32.const 0) (i32.const 0) (i32.const 7)))
            (func (export "drop") (data.drop $p) (data.drop $a))
            (func (export "reinit") (memory.init $a (i32.const 0) (i32.const 0) (i32.const 0))))"#;
        let original = wat::parse_str(wat).unwrap();
        let p = prepared(wat);
        let data_count = |wasm: &[u8]| {
            Parser::new(0).parse_all(wasm).map(Result::unwrap).find_map(|payload| match payload {
                Payload::DataCountSection { count, .. } => Some(count),
                _ => None,
            })
        };
        assert_eq!(data_count(&original), Some(3));
        assert_eq!(data_count(&p.wasm), Some(3));
        let after = segments(&p.wasm);
        assert_eq!(after.len(), 3);
        assert!(matches!(after[0].kind, DataKind::Passive));
        assert_eq!(after[0].data, b"passive");
        assert!(after[1].data.is_empty());
        assert_eq!(p.memories[0].segments, vec![(16, b"active".to_vec())]);
    }

    #[test]
    fn extended_const_offsets() {
        let p = prepared(
            r#"(module (memory 1)
                (data (i32.add (i32.const 100) (i32.mul (i32.const 3) (i32.const 4))) "a")
                (data (i32.sub (i32.const 0) (i32.const -8)) "b"))"#,
        );
        assert_eq!(p.memories[0].segments, vec![(112, b"a".to_vec()), (8, b"b".to_vec())]);
        // Wraps at 32 bits: 0xffffffff + 2 = 1.
        let p = prepared(r#"(module (memory 1) (data (i32.add (i32.const -1) (i32.const 2)) "c"))"#);
        assert_eq!(p.memories[0].segments, vec![(1, b"c".to_vec())]);
    }

    #[test]
    fn non_constant_offset_is_unprepared() {
        assert_eq!(
            unprepared(
                r#"(module (global i32 (i32.const 0)) (memory 1)
                    (data (i32.const 0) "ok") (data (global.get 0) "x"))"#
            ),
            NotPrepared::NonConstantOffset { segment: 1 }
        );
        // Even when the segment is for an imported memory.
        assert_eq!(
            unprepared(
                r#"(module (import "env" "g" (global i32)) (import "env" "m" (memory 1)) (memory 1)
                    (data (memory 1) (i32.const 0) "ok") (data (memory 0) (global.get 0) "x"))"#
            ),
            NotPrepared::NonConstantOffset { segment: 1 }
        );
        assert_eq!(
            unprepared(
                r#"(module (global i32 (i32.const 0)) (memory 1)
                    (data (i32.add (global.get 0) (i32.const 1)) "x"))"#
            ),
            NotPrepared::NonConstantOffset { segment: 0 }
        );
    }

    #[test]
    fn out_of_bounds_is_unprepared() {
        assert_eq!(
            unprepared(r#"(module (memory 1) (data (i32.const 0) "ok") (data (i32.const 65535) "xy"))"#),
            NotPrepared::OutOfBounds { segment: 1, memory: 0, offset: 65535, length: 2, minimum_bytes: 65536 }
        );
        // An empty segment just past the end still traps.
        assert!(matches!(
            unprepared(r#"(module (memory 1) (data (i32.const 0) "ok") (data (i32.const 65537) ""))"#),
            NotPrepared::OutOfBounds { segment: 1, .. }
        ));
        // Negative i32 offsets are large unsigned ones.
        assert!(matches!(
            unprepared(r#"(module (memory 1) (data (i32.const -1) "x"))"#),
            NotPrepared::OutOfBounds { offset: 0xffff_ffff, .. }
        ));
        // Imported memories are checked against their declared minimum.
        assert!(matches!(
            unprepared(
                r#"(module (import "env" "m" (memory 0)) (memory 1)
                    (data (memory 1) (i32.const 0) "ok") (data (memory 0) (i32.const 0) "x"))"#
            ),
            NotPrepared::OutOfBounds { segment: 1, memory: 0, .. }
        ));
        // An empty segment exactly at the end is fine.
        prepared(r#"(module (memory 1) (data (i32.const 0) "ok") (data (i32.const 65536) ""))"#);
    }

    #[test]
    fn shared_memory_segments_untouched() {
        let p = prepared(
            r#"(module (memory $s 1 1 shared) (memory $p 1)
                (data (memory $s) (i32.const 0) "shared") (data (memory $p) (i32.const 0) "private"))"#,
        );
        assert!(p.memories[0].shared);
        assert!(p.memories[0].segments.is_empty());
        assert_eq!(p.memories[1].segments, vec![(0, b"private".to_vec())]);
        assert_eq!(segments(&p.wasm)[0].data, b"shared");
        assert_eq!(
            unprepared(r#"(module (memory 1 1 shared) (data (i32.const 0) "shared"))"#),
            NotPrepared::NoDataSegments
        );
    }

    #[test]
    fn nothing_to_cut() {
        for wat in [
            "(module)",
            "(module (memory 1))",
            r#"(module (memory 1) (data "passive"))"#,
            r#"(module (memory 1) (data (i32.const 0) ""))"#,
            r#"(module (import "env" "m" (memory 1)) (data (i32.const 0) "imported"))"#,
        ] {
            assert_eq!(unprepared(wat), NotPrepared::NoDataSegments, "{wat}");
        }
    }

    #[test]
    fn memory_too_large() {
        // 2^48 pages of 64 KiB is 2^64 bytes.
        assert_eq!(
            unprepared(r#"(module (memory i64 0x1000000000000) (data (i64.const 0) "x"))"#),
            NotPrepared::MemoryTooLarge { memory: 0 }
        );
        let p = prepared(r#"(module (memory i64 1 0x1000000000000) (data (i64.const 0) "x"))"#);
        assert_eq!(p.memories[0].maximum_bytes, None);
    }

    #[test]
    fn custom_sections_and_names_preserved() {
        let p = prepared(
            r#"(module $named (@custom "before" (before first) "1") (memory $mem 1)
                (func $f (export "f") (local $l i32))
                (data $d (i32.const 0) "x") (@custom "after" (after data) "2"))"#,
        );
        let names: Vec<_> = Parser::new(0)
            .parse_all(&p.wasm)
            .map(Result::unwrap)
            .filter_map(|payload| match payload {
                Payload::CustomSection(section) => Some(section.name().to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["before", "after", "name"]);
    }

    #[test]
    fn invalid_bytes_are_errors() {
        assert!(matches!(prepare(b"not wasm"), Err(PrepareError::Invalid { .. })));
        assert!(matches!(prepare(b""), Err(PrepareError::Invalid { .. })));
        let invalid = wat::parse_str(r#"(module (func (result i32)))"#).unwrap();
        let error = prepare(&invalid).unwrap_err();
        assert!(error.to_string().starts_with("invalid wasm module: "), "{error}");
        let component = wat::parse_str("(component)").unwrap();
        assert_eq!(prepare(&component), Err(PrepareError::Component));
    }

    #[test]
    fn reasons_read_as_sentences() {
        let reasons = [
            NotPrepared::NoDataSegments,
            NotPrepared::NonConstantOffset { segment: 3 },
            NotPrepared::OutOfBounds { segment: 1, memory: 0, offset: 65535, length: 2, minimum_bytes: 65536 },
            NotPrepared::MemoryTooLarge { memory: 2 },
            NotPrepared::GcHeapShapedMemory { memory: 0 },
            NotPrepared::RewriteRejected { message: "bulk memory support is not enabled".into() },
        ];
        for reason in reasons {
            let text = reason.to_string();
            assert!(!text.ends_with('.') && !text.contains('\n'), "{text}");
        }
    }
}
