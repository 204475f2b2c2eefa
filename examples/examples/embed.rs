//! The README's embedding example: run a module on framemap memories and look
//! at its frame table.

use framemap_wasmtime::FrameMemoryCreator;
use wasmtime::{Config, Instance, Module, Store};

fn main() -> anyhow::Result<()> {
    let creator = FrameMemoryCreator::new();
    // Every memory of this engine is a framemap reservation.
    let engine = framemap_wasmtime::engine(&mut Config::new(), creator.clone())?;
    let module = Module::new(
        &engine,
        r#"(module (memory (export "mem") 1)
        (func (export "run") (i32.store (i32.const 0) (i32.const 42)) (drop (memory.grow (i32.const 3)))))"#,
    )?;
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[])?;
    instance.get_typed_func::<(), ()>(&mut store, "run")?.call(&mut store, ())?;
    let memory = instance.get_memory(&mut store, "mem").expect("exported memory");
    print!("{}", creator.handle(&store, &memory)?.report()?); // runs per tag, resident bytes
    Ok(())
}
