//! Re-encoding a component around rewritten core modules.
//!
//! [`with_modules`] copies a component section by section, byte for byte,
//! except each core module section, whose bytes become the rewritten module
//! given for it (module sections are numbered in document order, at any
//! nesting depth, as [`super::shape`] numbers them), and each nested
//! component section, re-encoded the same way. Only section sizes change:
//! every index space, name and custom section stays as it was.

use wasm_encoder::Encode;
use wasmparser::BinaryReader;

/// The core module section id in a component.
const CORE_MODULE: u8 = 1;
/// The nested component section id.
const COMPONENT: u8 = 4;
/// Magic number and version/layer fields.
const HEADER_LEN: usize = 8;

/// `component` with module section *i* replaced by `modules[i]` where that
/// is `Some` (module sections past the end of `modules` are kept).
pub(crate) fn with_modules(component: &[u8], modules: &[Option<Vec<u8>>]) -> Result<Vec<u8>, String> {
    let mut next = modules.iter();
    reencode(component, 0, &mut next)
}

fn reencode(
    component: &[u8],
    offset: usize,
    modules: &mut std::slice::Iter<'_, Option<Vec<u8>>>,
) -> Result<Vec<u8>, String> {
    let mut reader = BinaryReader::new(component, offset);
    let header = reader.read_bytes(HEADER_LEN).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(component.len());
    out.extend_from_slice(header);
    while !reader.eof() {
        let id = reader.read_u8().map_err(|e| e.to_string())?;
        let size = reader.read_var_u32().map_err(|e| e.to_string())?;
        let start = reader.original_position();
        let body = reader.read_bytes(size as usize).map_err(|e| e.to_string())?;
        let nested;
        let body = match id {
            CORE_MODULE => match modules.next() {
                Some(Some(rewritten)) => rewritten.as_slice(),
                _ => body,
            },
            COMPONENT => {
                nested = reencode(body, start, modules)?;
                nested.as_slice()
            }
            _ => body,
        };
        out.push(id);
        let len =
            u32::try_from(body.len()).map_err(|_| format!("a rewritten section at byte {start:#x} exceeds 4 GiB"))?;
        len.encode(&mut out);
        out.extend_from_slice(body);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_modules_give_the_same_bytes() {
        let wasm = wat::parse_str(
            r#"(component
                (core module (memory 1) (data (i32.const 0) "a"))
                (component (core module (memory 1)) (core module))
                (core module))"#,
        )
        .expect("wat");
        assert_eq!(with_modules(&wasm, &[]).expect("encode"), wasm);
        assert_eq!(with_modules(&wasm, &[None, None, None, None]).expect("encode"), wasm);
    }

    #[test]
    fn modules_are_replaced_in_document_order_at_any_depth() {
        let wasm = wat::parse_str(
            r#"(component
                (core module $a)
                (component (core module $b (memory 1)))
                (core module $c (memory 2)))"#,
        )
        .expect("wat");
        let replacement = |pages: u32| wat::parse_str(format!("(module (memory {pages}) (func))")).expect("module");
        let out = with_modules(&wasm, &[None, Some(replacement(3)), Some(replacement(4))]).expect("encode");
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all()).validate_all(&out).expect("valid");
        let shape = super::super::shape::ComponentShape::scan(&out).expect("scan");
        let modules: Vec<&[u8]> = shape.modules.iter().map(|r| &out[r.clone()]).collect();
        assert_eq!(modules[1], replacement(3).as_slice());
        assert_eq!(modules[2], replacement(4).as_slice());
        let original = super::super::shape::ComponentShape::scan(&wasm).expect("scan");
        assert_eq!(modules[0], &wasm[original.modules[0].clone()]);
    }
}
