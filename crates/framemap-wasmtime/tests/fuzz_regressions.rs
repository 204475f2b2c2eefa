//! Regression tests for bugs the fuzz targets (`fuzz/`) found: each replays
//! a minimised crash input.

use framemap_wasmtime::{FrameMemoryCreator, configure};
use wasmtime::{Config, Engine, Instance, Module, Store};

/// wasm_differential: with `memory_reservation(0)` and
/// `memory_guard_size(0)`, a memory of minimum size 0 instantiates on
/// wasmtime's own memories but the creator fails it: it asks `LinearSpace`
/// for a reservation of 0 bytes of capacity and 0 of guard, which
/// `LinearSpace::new` refuses ("capacity plus guard must be non-zero").
#[test]
fn empty_memory_without_reservation_or_guard() {
    let wat = r#"(module (memory (export "m") 0) (memory (export "m64") i64 0))"#;
    let tweak = |config: &mut Config| {
        config.memory_reservation(0).memory_guard_size(0).memory_may_move(false);
    };
    let mut plain = Config::new();
    tweak(&mut plain);
    let engine = Engine::new(&plain).unwrap();
    let module = Module::new(&engine, wat).unwrap();
    Instance::new(&mut Store::new(&engine, ()), &module, &[]).expect("wasmtime's own memories");

    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    tweak(&mut config);
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, wat).unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).expect("framemap memories");
    for name in ["m", "m64"] {
        let memory = instance.get_memory(&mut store, name).unwrap();
        assert_eq!(memory.data_size(&store), 0);
        assert_eq!(memory.grow(&mut store, 1).ok(), None, "no room to grow without moving");
    }
}

/// wasm_differential: a memory whose minimum is larger than
/// `memory_reservation` gets, on wasmtime's own memories, its minimum plus
/// `memory_reservation_for_growth` reserved, so it can still grow in place
/// (without moving) by that much; the creator reserves just the minimum
/// (`capacity = max(minimum, reserved)`), so the same `memory.grow` fails
/// (-1) on framemap. wasmtime does not pass `memory_reservation_for_growth`
/// to a `MemoryCreator`.
#[test]
fn memory_larger_than_its_reservation_can_grow_like_wasmtime_s() {
    let wat = r#"(module (memory (export "m") 8)
        (func (export "grow") (result i32) (memory.grow (i32.const 16))))"#;
    let tweak = |config: &mut Config| {
        config.memory_reservation(1 << 16).memory_reservation_for_growth(1 << 20).memory_may_move(false);
    };
    let grow = |engine: &Engine| {
        let module = Module::new(engine, wat).unwrap();
        let mut store = Store::new(engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let grow = instance.get_typed_func::<(), i32>(&mut store, "grow").unwrap();
        let result = grow.call(&mut store, ()).unwrap();
        (result, instance.get_memory(&mut store, "m").unwrap().data_size(&store))
    };
    let mut plain = Config::new();
    tweak(&mut plain);
    assert_eq!(grow(&Engine::new(&plain).unwrap()), (8, 24 << 16), "wasmtime's own memories");

    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    tweak(&mut config);
    configure(&mut config, creator.clone());
    assert_eq!(grow(&Engine::new(&config).unwrap()), (8, 24 << 16), "framemap memories");
}

/// prepared_module and wasm_differential: instantiation used different fuel
/// on wasmtime's own memories and on framemap's. wasmtime charges
/// `memory_init_per_byte` fuel (1 by default) for each byte of active data it
/// copies into memory at instantiation, and none for data in its own
/// copy-on-write image. A `PreparedModule` copies nothing (its cut segments
/// are empty passive ones, so wasmtime runs no data start-up code at all) and
/// must use exactly the fuel default wasmtime uses. A plain module on a
/// framemap engine has its data copied, as wasmtime does for its own
/// memories whenever it cannot use an image (`memory_init_cow(false)`, or
/// segments its heuristics leave out), and pays for every byte: documented
/// on `configure`.
#[test]
fn instantiation_fuel_matches_default_wasmtime_when_prepared() {
    use framemap_wasmtime::PreparedModule;
    let wat = r#"(module (memory (export "m") 1) (data (i32.const 16) "0123456789abcdef0123456789abcdef"))"#;
    let fuel_left = |engine: &Engine, instantiate: &dyn Fn(&mut Store<()>) -> wasmtime::Result<Instance>| {
        let mut store = Store::new(engine, ());
        store.set_fuel(1000).unwrap();
        instantiate(&mut store).unwrap();
        store.get_fuel().unwrap()
    };
    let mut plain_config = Config::new();
    plain_config.consume_fuel(true);
    let engine = Engine::new(&plain_config).unwrap();
    let module = Module::new(&engine, wat).unwrap();
    let default_left = fuel_left(&engine, &|store| Instance::new(store, &module, &[]));

    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    config.consume_fuel(true);
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config).unwrap();
    let plain = Module::new(&engine, wat).unwrap();
    let prepared = PreparedModule::new(&creator, &engine, wat).unwrap();
    assert!(prepared.not_prepared().is_none());
    let prepared_left = fuel_left(&engine, &|store| prepared.instantiate(store, &[]));
    let plain_left = fuel_left(&engine, &|store| Instance::new(store, &plain, &[]));
    assert_eq!(prepared_left, default_left, "prepared module, fuel left of 1000");
    assert!(plain_left + 32 <= default_left, "a plain module pays for its 32 data bytes: {plain_left} left");
}
