//! An instance's whole state, made reachable and restorable: two pure wasm
//! rewrites for instance snapshots.
//!
//! wasmtime reaches an instance's memories and globals only through its
//! exports, and most toolchains export neither every memory nor their
//! mutable globals (`__stack_pointer` is never exported). [`export_state`]
//! adds an export for every defined memory (`framemap:memory:N`) and every
//! defined mutable global (`framemap:global:N`, N its index in the module's
//! index space), so that a capture misses nothing; it re-encodes the export
//! section only (code offsets move with it; DWARF addresses are relative to
//! the code section and indices do not change). It also lists what a
//! snapshot cannot capture faithfully ([`Blocker`]): tables that may change
//! after instantiation, dropped segments, shared or imported memories,
//! mutable globals of reference type, imported mutable globals.
//!
//! [`restore_variant`] is the module a snapshot is restored into: its start
//! function is removed (the snapshot was taken after it ran) and every active
//! data segment becomes an empty passive one at the same index (the memories
//! come from the snapshot). That is exact for the same reason as
//! [`crate::rewrite`]'s cut: after instantiation an active segment is
//! dropped, and behaves like an empty passive one. Active element segments
//! are kept: with no table-changing instruction and no table import or
//! export (blockers), re-applying them rebuilds the tables the snapshot's
//! instance had.

use wasm_encoder::{DataSection, Encode, ExportKind, ExportSection, SectionId};
use wasmparser::{DataKind, ExternalKind, Operator, Parser, Payload, TypeRef, ValType};

/// The export name of defined memory `index` (in the memory index space).
pub fn memory_export(index: u32) -> String {
    format!("framemap:memory:{index}")
}

/// The export name of mutable global `index` (in the global index space).
pub fn global_export(index: u32) -> String {
    format!("framemap:global:{index}")
}

/// Why an instance of a module cannot be snapshot faithfully.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// An instruction that changes a table (`table.set`, `table.grow`,
    /// `table.fill`, `table.copy`, `table.init`, `elem.drop`): a table's
    /// contents after instantiation are not captured.
    TableChange(&'static str),
    /// A table imported or exported: the host may change it.
    SharedTable,
    /// `data.drop`: which passive segments were dropped is not captured.
    DataDrop,
    /// A shared or imported memory: not the instance's alone.
    ForeignMemory(u32),
    /// A mutable global of reference type: references cannot be saved.
    ReferenceGlobal(u32),
    /// An imported mutable global: the host's.
    ImportedMutableGlobal,
    /// A name the rewrite needs is already exported.
    ReservedName(String),
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocker::TableChange(op) => write!(f, "the module changes tables after instantiation ({op})"),
            Blocker::SharedTable => write!(f, "the module imports or exports a table, which the host may change"),
            Blocker::DataDrop => write!(f, "the module drops data segments (data.drop)"),
            Blocker::ForeignMemory(i) => write!(f, "memory {i} is shared or imported"),
            Blocker::ReferenceGlobal(i) => write!(f, "mutable global {i} holds a reference"),
            Blocker::ImportedMutableGlobal => write!(f, "the module imports a mutable global"),
            Blocker::ReservedName(name) => write!(f, "the module already exports {name:?}"),
        }
    }
}

/// The state a snapshot of an instance holds, as the rewritten module
/// exports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateLayout {
    /// Defined memories, by index in the memory index space.
    pub memories: Vec<u32>,
    /// Defined mutable globals, by index in the global index space.
    pub globals: Vec<u32>,
    /// What makes a faithful snapshot impossible (empty: none).
    pub blockers: Vec<Blocker>,
}

/// `wasm` (a valid core module) with every defined memory and mutable
/// global exported under its reserved name, and the layout of that state.
pub fn export_state(wasm: &[u8]) -> Result<(Vec<u8>, StateLayout), wasmparser::BinaryReaderError> {
    let mut layout = StateLayout::default();
    let (mut memories, mut globals) = (0u32, 0u32);
    let mut exports: Vec<(String, ExternalKind, u32)> = Vec::new();
    let mut export_section: Option<std::ops::Range<usize>> = None;
    // Where the export section goes if there is none: before the first
    // section that must follow it.
    let mut insert_at: Option<usize> = None;
    let mut section_start = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload?;
        if let Payload::Version { range, .. } = &payload {
            section_start = range.end;
        }
        let this_section = payload.as_section().map(|(_, range)| section_start..range.end);
        match &payload {
            Payload::StartSection { .. }
            | Payload::ElementSection(_)
            | Payload::DataCountSection { .. }
            | Payload::CodeSectionStart { .. }
            | Payload::DataSection(_) => {
                insert_at.get_or_insert(section_start);
            }
            _ => {}
        }
        match payload {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    match import?.ty {
                        TypeRef::Memory(_) => {
                            layout.blockers.push(Blocker::ForeignMemory(memories));
                            memories += 1;
                        }
                        TypeRef::Global(g) => {
                            if g.mutable {
                                layout.blockers.push(Blocker::ImportedMutableGlobal);
                            }
                            globals += 1;
                        }
                        TypeRef::Table(_) => layout.blockers.push(Blocker::SharedTable),
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(section) => {
                for ty in section {
                    if ty?.shared {
                        layout.blockers.push(Blocker::ForeignMemory(memories));
                    } else {
                        layout.memories.push(memories);
                    }
                    memories += 1;
                }
            }
            Payload::GlobalSection(section) => {
                for global in section {
                    let ty = global?.ty;
                    if ty.mutable {
                        match ty.content_type {
                            ValType::Ref(_) => layout.blockers.push(Blocker::ReferenceGlobal(globals)),
                            _ => layout.globals.push(globals),
                        }
                    }
                    globals += 1;
                }
            }
            Payload::ExportSection(section) => {
                for export in section {
                    let export = export?;
                    if export.kind == ExternalKind::Table {
                        layout.blockers.push(Blocker::SharedTable);
                    }
                    exports.push((export.name.to_string(), export.kind, export.index));
                }
                export_section = this_section.clone();
            }
            Payload::CodeSectionEntry(body) => {
                let mut reader = body.get_operators_reader()?;
                while !reader.eof() {
                    let blocker = match reader.read()? {
                        Operator::TableSet { .. } => Some(Blocker::TableChange("table.set")),
                        Operator::TableGrow { .. } => Some(Blocker::TableChange("table.grow")),
                        Operator::TableFill { .. } => Some(Blocker::TableChange("table.fill")),
                        Operator::TableCopy { .. } => Some(Blocker::TableChange("table.copy")),
                        Operator::TableInit { .. } => Some(Blocker::TableChange("table.init")),
                        Operator::ElemDrop { .. } => Some(Blocker::TableChange("elem.drop")),
                        Operator::DataDrop { .. } => Some(Blocker::DataDrop),
                        _ => None,
                    };
                    if let Some(blocker) = blocker
                        && !layout.blockers.contains(&blocker)
                    {
                        layout.blockers.push(blocker);
                    }
                }
            }
            _ => {}
        }
        if let Some(range) = this_section {
            section_start = range.end;
        }
    }
    let mut section = ExportSection::new();
    for (name, kind, index) in &exports {
        let kind = match kind {
            ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
            ExternalKind::Table => ExportKind::Table,
            ExternalKind::Memory => ExportKind::Memory,
            ExternalKind::Global => ExportKind::Global,
            ExternalKind::Tag => ExportKind::Tag,
        };
        section.export(name, kind, *index);
    }
    let added = layout
        .memories
        .iter()
        .map(|&i| (memory_export(i), ExportKind::Memory, i))
        .chain(layout.globals.iter().map(|&i| (global_export(i), ExportKind::Global, i)));
    for (name, kind, index) in added {
        if exports.iter().any(|(n, _, _)| *n == name) {
            layout.blockers.push(Blocker::ReservedName(name));
            continue;
        }
        section.export(&name, kind, index);
    }
    let at = export_section.clone().unwrap_or_else(|| {
        let at = insert_at.unwrap_or(wasm.len());
        at..at
    });
    let mut out = wasm[..at.start].to_vec();
    out.push(SectionId::Export as u8);
    section.encode(&mut out);
    out.extend_from_slice(&wasm[at.end..]);
    Ok((out, layout))
}

/// `wasm` (a valid core module) without its start function and with every
/// active data segment made an empty passive one at the same index: the
/// module a snapshot of it is restored into (see the module docs).
pub fn restore_variant(wasm: &[u8]) -> Result<Vec<u8>, wasmparser::BinaryReaderError> {
    let mut out = Vec::with_capacity(wasm.len());
    let mut section_start = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload?;
        if let Payload::Version { range, .. } = &payload {
            out.extend_from_slice(&wasm[..range.end]);
            section_start = range.end;
            continue;
        }
        let Some((_, range)) = payload.as_section() else { continue };
        let whole = section_start..range.end;
        section_start = range.end;
        match payload {
            Payload::StartSection { .. } => {}
            Payload::DataSection(segments) => {
                let mut data = DataSection::new();
                for segment in segments {
                    let segment = segment?;
                    match segment.kind {
                        DataKind::Active { .. } => data.raw(&[0x01, 0x00]),
                        DataKind::Passive => data.raw(&wasm[segment.range.clone()]),
                    };
                }
                out.push(SectionId::Data as u8);
                data.encode(&mut out);
            }
            _ => out.extend_from_slice(&wasm[whole]),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports(wasm: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            if let Payload::ExportSection(s) = payload.unwrap() {
                names.extend(s.into_iter().map(|e| e.unwrap().name.to_string()));
            }
        }
        names
    }

    fn valid(wasm: &[u8]) {
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(wasm).unwrap();
    }

    #[test]
    fn every_memory_and_mutable_global_is_exported() {
        let wasm = wat::parse_str(
            r#"(module
                (import "env" "g" (global i32))
                (memory 1) (memory $m 2)
                (global $sp (mut i32) (i32.const 1024))
                (global $c i64 (i64.const 5))
                (global $h (mut f64) (f64.const 1))
                (func (export "f") (result i32) global.get $sp)
                (func $s)
                (start $s)
                (data (memory 1) (i32.const 0) "x"))"#,
        )
        .unwrap();
        let (out, layout) = export_state(&wasm).unwrap();
        valid(&out);
        assert_eq!(layout, StateLayout { memories: vec![0, 1], globals: vec![1, 3], blockers: vec![] });
        assert_eq!(
            exports(&out),
            ["f", "framemap:memory:0", "framemap:memory:1", "framemap:global:1", "framemap:global:3"]
        );
    }

    #[test]
    fn a_module_without_exports_gets_a_section_in_the_right_place() {
        let wasm = wat::parse_str("(module (memory 1) (global (mut i32) (i32.const 0)) (func) (start 0))").unwrap();
        let (out, _) = export_state(&wasm).unwrap();
        valid(&out);
        assert_eq!(exports(&out), ["framemap:memory:0", "framemap:global:0"]);
    }

    #[test]
    fn what_cannot_be_captured_is_listed() {
        let wasm = wat::parse_str(
            r#"(module
                (import "env" "m" (memory 1))
                (import "env" "g" (global (mut i32)))
                (table (export "t") 1 funcref)
                (memory 1 1 shared)
                (global (mut externref) (ref.null extern))
                (data "p")
                (func table.size 0 drop (table.set 0 (i32.const 0) (ref.null func)) (data.drop 0)))"#,
        )
        .unwrap();
        let (_, layout) = export_state(&wasm).unwrap();
        for blocker in [
            Blocker::ForeignMemory(0),
            Blocker::ImportedMutableGlobal,
            Blocker::SharedTable,
            Blocker::ForeignMemory(1),
            Blocker::ReferenceGlobal(1),
            Blocker::TableChange("table.set"),
            Blocker::DataDrop,
        ] {
            assert!(layout.blockers.contains(&blocker), "{blocker:?} missing from {:?}", layout.blockers);
        }
    }

    #[test]
    fn the_restore_variant_has_no_start_and_no_active_data() {
        let wasm = wat::parse_str(
            r#"(module (memory 1) (func) (start 0)
                (data (i32.const 0) "active") (data "passive") (data (i32.const 8) "again"))"#,
        )
        .unwrap();
        let out = restore_variant(&wasm).unwrap();
        valid(&out);
        let mut segments = Vec::new();
        for payload in Parser::new(0).parse_all(&out) {
            match payload.unwrap() {
                Payload::StartSection { .. } => panic!("start kept"),
                Payload::DataSection(s) => segments.extend(s.into_iter().map(|d| {
                    let d = d.unwrap();
                    (matches!(d.kind, DataKind::Passive), d.data.to_vec())
                })),
                _ => {}
            }
        }
        assert_eq!(segments, [(true, vec![]), (true, b"passive".to_vec()), (true, vec![])]);
    }
}
