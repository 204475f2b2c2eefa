//! Prepared against unprepared instantiation on one framemap engine: a
//! wasm-smith module run as a `PreparedModule` (data segments mapped from
//! copy-on-write images) and as a plain `Module` (segments copied by
//! wasmtime) must agree on everything a host observes: the instantiation's
//! outcome, every exported memory's bytes, global and table, and every
//! exported call without parameters (results or trap, with the same fuel),
//! memories compared again after each call.
//!
//! The four runs share one creator, in the order plain, prepared, prepared,
//! plain, so its pool hands each a slot the previous one dirtied: a zeroed
//! slot gets an image, a slot that served the image gets it back, and one
//! that served it goes back to zero.
#![no_main]

use arbitrary::Unstructured;
use framemap_fuzz::wasm::{
    InstantiationFuel::SecondUsesAtLeastAsMuch, assert_same, assert_same_but_instantiation_fuel, creator_config,
    engine_config, generate, observe,
};
use framemap_wasmtime::{FrameMemoryCreator, PreparedModule, configure};
use libfuzzer_sys::fuzz_target;
use wasmtime::{Engine, Instance, Module};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(generated) = generate(&mut u) else { return };
    generated.dump();
    let Ok(creator_config) = creator_config(&mut u) else { return };
    let prefault = u.arbitrary::<bool>().unwrap_or(false);
    let creator = FrameMemoryCreator::with_config(creator_config);
    let mut config = engine_config(&generated.smith);
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config).expect("a framemap engine");

    let prepared = PreparedModule::new(&creator, &engine, &generated.wasm);
    let plain = Module::new(&engine, &generated.wasm);
    let (prepared, plain) = match (prepared, plain) {
        (Ok(prepared), Ok(plain)) => (prepared, plain),
        (Err(_), Err(_)) => return,
        (Ok(_), Err(e)) => panic!("only the plain module fails to compile: {e:#}"),
        (Err(e), Ok(_)) => panic!("only the prepared module fails to compile: {e}"),
    };
    if std::env::var_os("FRAMEMAP_FUZZ_TRACE").is_some() {
        eprintln!("not prepared: {:?}", prepared.not_prepared());
    }
    prepared.prefault_working_set(prefault);

    let plain_run = || observe(&engine, Some(&creator), |store| Instance::new(store, &plain, &[]));
    let prepared_run = || observe(&engine, Some(&creator), |store| prepared.instantiate(store, &[]));
    let unprepared = plain_run();
    let first = prepared_run();
    // The plain module copies every segment the prepared one does, and more.
    assert_same_but_instantiation_fuel("prepared", &first, "plain", &unprepared, SecondUsesAtLeastAsMuch);
    let second = prepared_run();
    assert_same("prepared", &first, "prepared again", &second);
    let last = plain_run();
    assert_same("plain", &unprepared, "plain after prepared", &last);
    if std::env::var_os("FRAMEMAP_FUZZ_TRACE").is_some() {
        for (what, o) in
            [("plain", &unprepared), ("prepared", &first), ("prepared again", &second), ("plain again", &last)]
        {
            eprintln!("{what}: instantiation {:?} {}, {} calls", o.instantiation, o.message, o.calls.len());
        }
    }
});
