//! `framemap run --invoke CALL COMPONENT`: one exported function of a
//! component, called with WAVE arguments, its results printed in WAVE, as
//! `wasmtime run --invoke` does it (wasmtime-cli 48's
//! `RunCommand::invoke_component`), on a [`PreparedComponent`].
//!
//! - CALL is a WAVE function call, `NAME(ARG, ...)`, parsed by the
//!   `wasm-wave` crate wasmtime re-exports
//!   ([`wasmtime::component::wasm_wave`]), so the rules are wasmtime's: the
//!   parentheses are required, trailing `option` arguments may be left out,
//!   values are WAVE (`"text"`, `[1, 2]`, `{x: 1, y: 2}`, `ok(3)`, ...).
//! - NAME is a WIT item name (`wit_parser::ItemName`): `f`,
//!   `iface.f`, or `ns:pkg/iface.f[@version]`. It is looked up among the
//!   component's own exports first; a bare name not found there is searched
//!   for in every exported instance, and must be found in exactly one.
//! - The export is found and the arguments are type-checked against its
//!   component type before anything is instantiated: a bad CALL runs no
//!   guest code. Every failure is one error line (reported by `main`,
//!   status 1).
//! - The results are printed on one line of stdout with wasm-wave's
//!   `DisplayFuncResults`, exactly as wasmtime prints them: one result
//!   bare (`5`, `"text"`, `err("why")`), none as `()`, several as a tuple.
//!   A function whose parameters or results WAVE cannot write (resources,
//!   streams, futures, error contexts, maps) is refused before the call
//!   (wasmtime refuses such arguments too, but calls such a function and
//!   then panics while printing its results).
//! - Exit status, as `wasmtime run`: 0 when the call returns, **whatever it
//!   returns**: a `result` whose value is `err(...)` is printed and is still
//!   status 0 (only `wasi:cli/run`'s own `err` becomes status 1). A trap is
//!   an error line with status 134, as every trap of `framemap run`
//!   (modules, `wasi:cli/run`) and as `wasmtime run`. A WASI `exit(n)`
//!   inside the call is status `n`, as in a run.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{Context as _, Result, anyhow, bail};
use framemap_wasmtime::PreparedComponent;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
use wasmtime::component::wasm_wave::wasm::{DisplayFuncResults, DisplayType};
use wasmtime::component::wit_parser::ItemName;
use wasmtime::component::{Component, ComponentExportIndex, Linker, Type, Val};
use wasmtime::{Engine, Store};

use crate::run::guest_failure;

/// Parses `call`, finds and type-checks its function in `prepared`, then
/// instantiates `prepared` with `linker` in `store`, calls the function and
/// prints its results in WAVE. Returns the exit status (see the module docs).
pub(crate) fn invoke<T: 'static>(
    store: &mut Store<T>,
    linker: &Linker<T>,
    prepared: &PreparedComponent,
    call: &str,
) -> Result<u8> {
    let parsed = UntypedFuncCall::parse(call)
        .map_err(|err| anyhow!("`--invoke {call}` is not a WAVE function call `NAME(ARG, ...)`: {err}"))?;
    let name = parsed
        .item_name()
        .map_err(|err| anyhow!("`--invoke {call}`: `{}` is not a function name: {err:#}", parsed.name()))?;
    let (export, func_ty) =
        find_func(store.engine(), prepared.component(), &name).with_context(|| format!("`--invoke {call}`"))?;
    let param_types: Vec<Type> = func_ty.params().map(|(_, ty)| ty).collect();
    if let Some(kind) = param_types.iter().find_map(unprintable) {
        bail!("`--invoke {call}`: `{name}` takes a {kind}, which has no WAVE notation to write it in");
    }
    if let Some(kind) = func_ty.results().find_map(|ty| unprintable(&ty)) {
        bail!("`--invoke {call}`: `{name}` returns a {kind}, which has no WAVE notation to print it in");
    }
    let params = parsed.to_wasm_params::<Val>(&param_types).map_err(|err| {
        anyhow!("`--invoke {call}`: the arguments do not fit `{name}: {}`: {err}", signature(&func_ty))
    })?;
    if func_ty.async_() {
        bail!("`--invoke {call}`: `{name}` is lifted async, which `framemap run` cannot call");
    }

    let instance = prepared
        .instantiate(&mut *store, linker)
        .map_err(anyhow::Error::from)
        .context("failed to instantiate the component")?;
    let func = instance
        .get_func(&mut *store, export)
        .ok_or_else(|| anyhow!("`--invoke {call}`: the instance has no function `{name}`"))?;
    let mut results = vec![Val::Bool(false); func_ty.results().len()];
    if let Err(err) = func.call(&mut *store, &params, &mut results) {
        return guest_failure(err);
    }
    let mut line = String::new();
    writeln!(line, "{}", DisplayFuncResults(&results))
        .map_err(|_| anyhow!("`--invoke {call}`: the results of `{name}` cannot be written in WAVE"))?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes()).and_then(|()| stdout.flush()).context("cannot write the results to stdout")?;
    Ok(0)
}

/// Finds the function `name` names among `component`'s exports, as
/// wasmtime-cli 48's `search_component_funcs`: a function exported under
/// `name` itself; else, for a bare name, the one function of that name in
/// the exported instances.
fn find_func(engine: &Engine, component: &Component, name: &ItemName) -> Result<(ComponentExportIndex, ComponentFunc)> {
    let direct = component.get_export(None, name);
    if let Some((ComponentItem::ComponentFunc(func), index)) = &direct {
        return Ok((*index, func.clone()));
    }
    // For the error only: `ns:pkg/iface` alone parses as a function `iface`
    // of package `ns:pkg`, and is looked up as such, but is an instance.
    let direct = direct.or_else(|| {
        component
            .get_export(None, name.to_string().as_str())
            .filter(|(item, _)| !matches!(item, ComponentItem::ComponentFunc(_)))
    });
    let not_found = |direct: Option<(ComponentItem, ComponentExportIndex)>| match direct {
        Some((item, _)) => anyhow!("`{name}` is exported, but as {}, not as a function", describe(&item)),
        None => anyhow!("the component exports no function `{name}`"),
    };
    if name.interface.is_some() || name.package.is_some() {
        return Err(not_found(direct));
    }
    let mut found = Vec::new();
    for (instance_name, export) in component.component_type().exports(engine) {
        let ComponentItem::ComponentInstance(instance) = export.ty else { continue };
        let Some(func) = instance.exports(engine).find_map(|(leaf, item)| match item.ty {
            ComponentItem::ComponentFunc(func) if leaf == name.name => Some(func),
            _ => None,
        }) else {
            continue;
        };
        let index = component
            .get_export(None, instance_name)
            .and_then(|(_, instance)| component.get_export(Some(&instance), &name.name))
            .map(|(_, index)| index)
            .ok_or_else(|| anyhow!("the export `{instance_name}` has no function `{name}`"))?;
        found.push((index, func, instance_name.to_owned()));
    }
    match found.len() {
        0 => Err(not_found(direct)),
        1 => {
            let (index, func, _) = found.remove(0);
            Ok((index, func))
        }
        _ => {
            let candidates = found
                .iter()
                .map(|(_, _, instance)| format!("`{}`", qualified(instance, &name.name)))
                .collect::<Vec<_>>()
                .join(", ");
            bail!("more than one exported instance has a function `{name}`; name one of {candidates}")
        }
    }
}

/// `func` of the exported instance `instance` as an item name
/// (`ns:pkg/iface.func@version`), as wasmtime spells its candidates.
fn qualified(instance: &str, func: &str) -> String {
    match instance.parse::<ItemName>() {
        Ok(mut item) => {
            item.interface = Some(std::mem::take(&mut item.name));
            func.clone_into(&mut item.name);
            item.to_string()
        }
        Err(_) => format!("{instance}.{func}"),
    }
}

/// What `item` is, for an error message.
fn describe(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "a function",
        ComponentItem::CoreFunc(_) => "a core function",
        ComponentItem::Module(_) => "a core module",
        ComponentItem::Component(_) => "a component",
        ComponentItem::ComponentInstance(_) => "an instance",
        ComponentItem::Type(_) => "a type",
        ComponentItem::Resource(_) => "a resource",
    }
}

/// `func`'s type in WIT, with its parameter names: `func(a: u32) -> u32`.
fn signature(func: &ComponentFunc) -> String {
    let params = func.params().map(|(name, ty)| format!("{name}: {}", DisplayType(&ty))).collect::<Vec<_>>();
    let results = func.results().map(|ty| DisplayType(&ty).to_string()).collect::<Vec<_>>();
    match results.as_slice() {
        [] => format!("func({})", params.join(", ")),
        [one] => format!("func({}) -> {one}", params.join(", ")),
        many => format!("func({}) -> ({})", params.join(", "), many.join(", ")),
    }
}

/// The first part of `ty` that WAVE cannot write (by its WIT name), if any.
fn unprintable(ty: &Type) -> Option<&'static str> {
    match ty {
        Type::Own(_) => Some("resource"),
        Type::Borrow(_) => Some("borrowed resource"),
        Type::Stream(_) => Some("stream"),
        Type::Future(_) => Some("future"),
        Type::ErrorContext => Some("error-context"),
        Type::Map(_) => Some("map"),
        Type::List(list) => unprintable(&list.ty()),
        Type::FixedLengthList(list) => unprintable(&list.ty()),
        Type::Option(option) => unprintable(&option.ty()),
        Type::Record(record) => record.fields().find_map(|field| unprintable(&field.ty)),
        Type::Tuple(tuple) => tuple.types().find_map(|ty| unprintable(&ty)),
        Type::Variant(variant) => variant.cases().find_map(|case| case.ty.as_ref().and_then(unprintable)),
        Type::Result(result) => {
            result.ok().as_ref().and_then(unprintable).or_else(|| result.err().as_ref().and_then(unprintable))
        }
        Type::Bool
        | Type::S8
        | Type::U8
        | Type::S16
        | Type::U16
        | Type::S32
        | Type::U32
        | Type::S64
        | Type::U64
        | Type::Float32
        | Type::Float64
        | Type::Char
        | Type::String
        | Type::Enum(_)
        | Type::Flags(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_spelled_as_item_names() {
        assert_eq!(qualified("example:guest/api", "ping"), "example:guest/api.ping");
        assert_eq!(qualified("example:guest/api@0.1.0", "ping"), "example:guest/api.ping@0.1.0");
        assert_eq!(qualified("api", "ping"), "api.ping");
        assert_eq!(qualified("not an item name", "ping"), "not an item name.ping");
    }
}
