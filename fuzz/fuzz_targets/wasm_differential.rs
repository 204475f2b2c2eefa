//! wasmtime's own memories against framemap's: a wasm-smith module run on
//! two engines with the same `Config` (fuel, features, memory reservation,
//! guard, growth reservation and signals-based traps as the input chooses),
//! the second with `framemap_wasmtime::configure`, must agree on everything
//! a host observes (see `framemap_fuzz::wasm::observe`). The framemap side
//! runs twice on one creator, so the second run gets recycled slots; it
//! instantiates either the plain module or, as the input chooses, a
//! `PreparedModule`.
#![no_main]

use arbitrary::Unstructured;
use framemap_fuzz::wasm::{
    InstantiationFuel, assert_same, assert_same_but_instantiation_fuel, creator_config, engine_config, generate,
    observe,
};
use framemap_wasmtime::{FrameMemoryCreator, PreparedModule, configure};
use libfuzzer_sys::fuzz_target;
use wasmtime::{Engine, Instance, Module};

enum Framemap {
    Plain(Module),
    Prepared(PreparedModule),
}

fn run(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let generated = generate(&mut u)?;
    generated.dump();
    let mut config = engine_config(&generated.smith);
    let reservation = *u.choose(&[None, Some(0), Some(1 << 16), Some(1 << 20), Some(1 << 24), Some(1 << 32)])?;
    let guard = *u.choose(&[None, Some(0), Some(1 << 16), Some(1 << 20), Some(2 << 30)])?;
    let for_growth = *u.choose(&[None, Some(0), Some(1 << 16), Some(1 << 20)])?;
    let no_signals = u.ratio(1, 4)?;
    reservation.map(|bytes| config.memory_reservation(bytes));
    guard.map(|bytes| config.memory_guard_size(bytes));
    for_growth.map(|bytes| config.memory_reservation_for_growth(bytes));
    if no_signals {
        config.signals_based_traps(false);
    }
    let use_prepared: bool = u.arbitrary()?;
    let mut creator_config = creator_config(&mut u)?;
    // What wasmtime reserves for growth past a minimum larger than the
    // reservation (its default is 2 GiB); it does not tell a creator.
    creator_config.growth_reserve = for_growth.unwrap_or(2 << 30);
    if std::env::var_os("FRAMEMAP_FUZZ_TRACE").is_some() {
        eprintln!(
            "memory_reservation {reservation:?}, memory_guard_size {guard:?}, \
             memory_reservation_for_growth {for_growth:?}, signals-based traps off {no_signals}, \
             prepared {use_prepared}, {creator_config:?}"
        );
    }
    let creator = FrameMemoryCreator::with_config(creator_config);
    let mut framemap_config = config.clone();
    configure(&mut framemap_config, creator.clone());

    let engines = (Engine::new(&config), Engine::new(&framemap_config));
    let (default_engine, framemap_engine) = match engines {
        (Ok(a), Ok(b)) => (a, b),
        (Err(_), Err(_)) => return Ok(()),
        (Ok(_), Err(e)) => panic!("only the framemap engine is refused: {e:#}"),
        (Err(e), Ok(_)) => panic!("only the default engine is refused: {e:#}"),
    };
    let default_module = Module::new(&default_engine, &generated.wasm);
    let framemap_module = if use_prepared {
        PreparedModule::new(&creator, &framemap_engine, &generated.wasm)
            .map(Framemap::Prepared)
            .map_err(|e| e.to_string())
    } else {
        Module::new(&framemap_engine, &generated.wasm).map(Framemap::Plain).map_err(|e| format!("{e:#}"))
    };
    let (default_module, framemap_module) = match (default_module, framemap_module) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(_), Err(_)) => return Ok(()),
        (Ok(_), Err(e)) => panic!("only the framemap module fails to compile: {e}"),
        (Err(e), Ok(_)) => panic!("only the default module fails to compile: {e:#}"),
    };

    let expected = observe(&default_engine, None, |store| Instance::new(store, &default_module, &[]));
    let framemap_run = || {
        observe(&framemap_engine, Some(&creator), |store| match &framemap_module {
            Framemap::Prepared(prepared) => prepared.instantiate(store, &[]),
            Framemap::Plain(module) => Instance::new(store, module, &[]),
        })
    };
    let first = framemap_run();
    // A plain module on framemap copies every active segment (copy-on-write
    // initialisation is off); default wasmtime copies at most those.
    let rule = if use_prepared { InstantiationFuel::EitherSide } else { InstantiationFuel::SecondUsesAtLeastAsMuch };
    assert_same_but_instantiation_fuel("default memories", &expected, "framemap memories", &first, rule);
    let second = framemap_run();
    assert_same("framemap memories", &first, "framemap memories again", &second);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
