//! Making the mutable globals of a component's core instances reachable
//! from the host.
//!
//! wasmtime's component API reaches no core instance inside a component:
//! an exported core global would stay inside. So each core module gets two
//! functions per defined mutable global ([`module_with_accessors`]): a getter
//! returning its bits and a setter taking them (`f32`/`f64` as their `i32`/
//! `i64` bit patterns, so no value is canonicalised on the way), exported
//! under reserved core names; and the root component lifts each core
//! instance's accessors as component functions of types `func() -> u32|u64`
//! and `func(value: u32|u64)`, exported under reserved kebab-case names
//! ([`lift_accessors`]). Every new entity is appended after all existing
//! ones of its index space, so no existing index, and no code offset before
//! the appended function bodies, changes.

use wasm_encoder::{
    Alias, CanonicalFunctionSection, ComponentAliasSection, ComponentExportKind, ComponentExportSection,
    ComponentSectionId, ComponentTypeSection, Encode, ExportKind, PrimitiveValType,
};
use wasmparser::{Parser, Payload, TypeRef, ValType};

/// One defined mutable global a snapshot holds, and how it travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Accessed {
    /// The global's index in the module's global index space.
    pub global: u32,
    /// Its type (`i32`, `i64`, `f32` or `f64`).
    pub ty: ValType,
}

impl Accessed {
    /// Whether its bits travel as 64 bits (`i64`, `f64`).
    pub fn wide(self) -> bool {
        matches!(self.ty, ValType::I64 | ValType::F64)
    }
}

/// The core export name of global `g`'s getter.
pub(crate) fn core_getter(g: u32) -> String {
    format!("framemap:get-global:{g}")
}

/// The core export name of global `g`'s setter.
pub(crate) fn core_setter(g: u32) -> String {
    format!("framemap:set-global:{g}")
}

/// The component export name of the getter of global `g` of core instance
/// `instance` (kebab-case words, as component names must be).
pub fn component_getter(instance: u32, g: u32) -> String {
    format!("framemap-instance{instance}-global{g}-get")
}

/// The component export name of that global's setter.
pub fn component_setter(instance: u32, g: u32) -> String {
    format!("framemap-instance{instance}-global{g}-set")
}

/// The defined mutable globals of `wasm` (a valid core module); `Err` with
/// the index of one whose value cannot travel (a reference or a `v128`).
pub(crate) fn mutable_globals(wasm: &[u8]) -> Result<Result<Vec<Accessed>, u32>, wasmparser::BinaryReaderError> {
    let mut index = 0u32;
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if let TypeRef::Global(_) = import?.ty {
                        index += 1;
                    }
                }
            }
            Payload::GlobalSection(globals) => {
                for global in globals {
                    let ty = global?.ty;
                    if ty.mutable {
                        match ty.content_type {
                            ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64 => {
                                out.push(Accessed { global: index, ty: ty.content_type })
                            }
                            ValType::V128 | ValType::Ref(_) => return Ok(Err(index)),
                        }
                    }
                    index += 1;
                }
            }
            _ => {}
        }
    }
    Ok(Ok(out))
}

/// Section ids of a core module, and their required order.
const TYPE: u8 = 1;
const FUNCTION: u8 = 3;
const EXPORT: u8 = 7;
const CODE: u8 = 10;

/// The position of a non-custom section id in a module's section order.
fn rank(id: u8) -> u8 {
    match id {
        1 => 1,   // type
        2 => 2,   // import
        3 => 3,   // function
        4 => 4,   // table
        5 => 5,   // memory
        13 => 6,  // tag
        6 => 7,   // global
        7 => 8,   // export
        8 => 9,   // start
        9 => 10,  // element
        12 => 11, // data count
        10 => 12, // code
        11 => 13, // data
        _ => 0,   // custom: anywhere
    }
}

/// `wasm` (a valid core module with `types` types and `functions`
/// functions, imports included) with a getter and a setter for each of
/// `globals`, exported under [`core_getter`] and [`core_setter`].
pub(crate) fn module_with_accessors(
    wasm: &[u8],
    types: u32,
    functions: u32,
    globals: &[Accessed],
) -> Result<Vec<u8>, String> {
    if globals.is_empty() {
        return Ok(wasm.to_vec());
    }
    // The entries appended to each of the four sections.
    let mut added: [(u8, u32, Vec<u8>); 4] =
        [(TYPE, 0, Vec::new()), (FUNCTION, 0, Vec::new()), (EXPORT, 0, Vec::new()), (CODE, 0, Vec::new())];
    let (mut next_type, mut next_func) = (types, functions);
    for accessed in globals {
        // Bits travel as integers: i32 for i32/f32, i64 for i64/f64.
        let bits: u8 = if accessed.wide() { 0x7e } else { 0x7f };
        let (to_bits, from_bits): (&[u8], &[u8]) = match accessed.ty {
            ValType::F32 => (&[0xbc], &[0xbe]), // i32.reinterpret_f32, f32.reinterpret_i32
            ValType::F64 => (&[0xbd], &[0xbf]), // i64.reinterpret_f64, f64.reinterpret_i64
            _ => (&[], &[]),
        };
        let g = accessed.global;
        let [types_added, funcs_added, exports_added, code_added] = &mut added;
        // Types: () -> bits, (bits) -> ().
        types_added.1 += 2;
        types_added.2.extend_from_slice(&[0x60, 0x00, 0x01, bits, 0x60, 0x01, bits, 0x00]);
        // Functions of those types.
        funcs_added.1 += 2;
        next_type.encode(&mut funcs_added.2);
        (next_type + 1).encode(&mut funcs_added.2);
        // Exports.
        exports_added.1 += 2;
        for (name, func) in [(core_getter(g), next_func), (core_setter(g), next_func + 1)] {
            name.as_str().encode(&mut exports_added.2);
            exports_added.2.push(ExportKind::Func as u8);
            func.encode(&mut exports_added.2);
        }
        // Bodies: no locals; global.get g [; reinterpret], and local.get 0
        // [; reinterpret]; global.set g.
        code_added.1 += 2;
        let mut getter = vec![0x00, 0x23];
        g.encode(&mut getter);
        getter.extend_from_slice(to_bits);
        getter.push(0x0b);
        let mut setter = vec![0x00, 0x20, 0x00];
        setter.extend_from_slice(from_bits);
        setter.push(0x24);
        g.encode(&mut setter);
        setter.push(0x0b);
        for body in [getter, setter] {
            body.len().encode(&mut code_added.2);
            code_added.2.extend_from_slice(&body);
        }
        next_type += 2;
        next_func += 2;
    }

    let mut reader = wasmparser::BinaryReader::new(wasm, 0);
    let header = reader.read_bytes(8).map_err(|e| e.to_string())?;
    let mut out = header.to_vec();
    let mut done = [false; 4];
    let emit = |out: &mut Vec<u8>, id: u8, old: Option<&[u8]>, count: u32, extra: &[u8]| -> Result<(), String> {
        let mut body = Vec::new();
        match old {
            Some(old) => {
                let mut entries = wasmparser::BinaryReader::new(old, 0);
                let existing = entries.read_var_u32().map_err(|e| e.to_string())?;
                (existing + count).encode(&mut body);
                body.extend_from_slice(&old[entries.original_position()..]);
            }
            None => count.encode(&mut body),
        }
        body.extend_from_slice(extra);
        out.push(id);
        body.len().encode(out);
        out.extend_from_slice(&body);
        Ok(())
    };
    while !reader.eof() {
        let id = reader.read_u8().map_err(|e| e.to_string())?;
        let size = reader.read_var_u32().map_err(|e| e.to_string())?;
        let body = reader.read_bytes(size as usize).map_err(|e| e.to_string())?;
        let here = rank(id);
        if here != 0 {
            // Missing sections that come before this one, created now.
            for (slot, (target, count, extra)) in added.iter().enumerate() {
                if !done[slot] && rank(*target) < here {
                    emit(&mut out, *target, None, *count, extra)?;
                    done[slot] = true;
                }
            }
        }
        if let Some(slot) = added.iter().position(|(target, _, _)| *target == id) {
            let (target, count, extra) = &added[slot];
            emit(&mut out, *target, Some(body), *count, extra)?;
            done[slot] = true;
            continue;
        }
        out.push(id);
        size.encode(&mut out);
        out.extend_from_slice(body);
    }
    for (slot, (target, count, extra)) in added.iter().enumerate() {
        if !done[slot] {
            emit(&mut out, *target, None, *count, extra)?;
        }
    }
    Ok(out)
}

/// One core instance of the root component whose globals are lifted.
pub(crate) struct LiftedInstance<'a> {
    /// The core instance's index.
    pub instance: u32,
    /// Its module's accessed globals.
    pub globals: &'a [Accessed],
}

/// Sections to append to a root component that has `core_funcs` core
/// functions, `types` component types and `funcs` component functions,
/// lifting and exporting the accessors of `instances`.
pub(crate) fn lift_accessors(core_funcs: u32, types: u32, funcs: u32, instances: &[LiftedInstance<'_>]) -> Vec<u8> {
    let mut aliases = ComponentAliasSection::new();
    let mut type_section = ComponentTypeSection::new();
    let mut canon = CanonicalFunctionSection::new();
    let mut exports = ComponentExportSection::new();
    // Types: get32, set32, get64, set64.
    for bits in [PrimitiveValType::U32, PrimitiveValType::U64] {
        type_section.function().params::<[(&str, PrimitiveValType); 0], _>([]).result(Some(bits.into()));
        type_section.function().params([("value", bits)]).result(None);
    }
    let (mut core_func, mut func) = (core_funcs, funcs);
    for lifted in instances {
        for accessed in lifted.globals {
            let g = accessed.global;
            let wide = u32::from(accessed.wide()) * 2;
            let pairs = [
                (core_getter(g), component_getter(lifted.instance, g), types + wide),
                (core_setter(g), component_setter(lifted.instance, g), types + wide + 1),
            ];
            for (core_name, name, ty) in pairs {
                aliases.alias(Alias::CoreInstanceExport {
                    instance: lifted.instance,
                    kind: ExportKind::Func,
                    name: &core_name,
                });
                canon.lift(core_func, ty, []);
                exports.export(name.as_str(), ComponentExportKind::Func, func, None);
                core_func += 1;
                func += 1;
            }
        }
    }
    let mut out = Vec::new();
    for (id, section) in [
        (ComponentSectionId::Alias, encoded(&aliases)),
        (ComponentSectionId::Type, encoded(&type_section)),
        (ComponentSectionId::CanonicalFunction, encoded(&canon)),
        (ComponentSectionId::Export, encoded(&exports)),
    ] {
        out.push(id as u8);
        out.extend_from_slice(&section);
    }
    out
}

fn encoded(section: &impl Encode) -> Vec<u8> {
    let mut out = Vec::new();
    section.encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(wasm: &[u8]) -> wasmparser::types::Types {
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(wasm).expect("valid")
    }

    #[test]
    fn accessors_are_appended_to_existing_and_missing_sections() {
        for wat in [
            // Every section there.
            r#"(module (type (func)) (global $a (mut i32) (i32.const 7)) (global (mut f64) (f64.const 1.5))
                (func (export "f") (result i32) global.get $a) (data "x"))"#,
            // No type, function, export or code section.
            r#"(module (import "e" "g" (global i32)) (global (mut i64) (i64.const -1)) (global (mut f32) (f32.const 2)))"#,
        ] {
            let wasm = wat::parse_str(wat).expect("wat");
            let types = valid(&wasm);
            let globals = mutable_globals(&wasm).expect("scan").expect("all plain");
            let out = module_with_accessors(
                &wasm,
                types.as_ref().core_type_count_in_module(),
                types.as_ref().function_count(),
                &globals,
            )
            .expect("rewrite");
            let after = valid(&out);
            assert_eq!(after.as_ref().function_count(), types.as_ref().function_count() + 2 * globals.len() as u32);
            let mut names = Vec::new();
            for payload in Parser::new(0).parse_all(&out) {
                if let Payload::ExportSection(s) = payload.expect("payload") {
                    names.extend(s.into_iter().map(|e| e.expect("export").name.to_owned()));
                }
            }
            for accessed in &globals {
                assert!(names.contains(&core_getter(accessed.global)) && names.contains(&core_setter(accessed.global)));
            }
        }
    }

    #[test]
    fn reference_and_vector_globals_cannot_travel() {
        let wasm =
            wat::parse_str("(module (global (mut i32) (i32.const 0)) (global (mut v128) (v128.const i64x2 0 0)))")
                .expect("wat");
        assert_eq!(mutable_globals(&wasm).expect("scan"), Err(1));
        let wasm = wat::parse_str("(module (global (mut funcref) (ref.null func)))").expect("wat");
        assert_eq!(mutable_globals(&wasm).expect("scan"), Err(0));
    }
}
