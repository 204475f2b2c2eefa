//! The guest compute loop of the criterion `compute` bench: sums 64 MiB.

use crate::allocator::Allocator;
use std::sync::Arc;
use wasmtime::{Engine, Instance, Module, Store, TypedFunc};

/// Bytes the compute workload sums.
pub const COMPUTE_BYTES: u64 = 64 << 20;

/// A memory-heavy guest loop: sums 64 MiB of memory with `i64` loads. Its
/// speed depends on how the compiled code reaches memory (bounds-check
/// elision, base-pointer reloads), which is what the memory manager can
/// change.
pub struct Compute {
    store: Store<()>,
    sum: TypedFunc<(), i64>,
    _engine: Arc<Engine>,
}

const COMPUTE_WAT: &str = r#"
(module
  (memory (export "memory") 1024)
  (func (export "fill")
    (local $i i32)
    (loop $l
      (i64.store (local.get $i) (i64.extend_i32_u (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 8)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 67108864)))))
  (func (export "sum") (result i64)
    (local $i i32) (local $acc i64)
    (loop $l
      (local.set $acc (i64.add (local.get $acc) (i64.load (local.get $i))))
      (local.set $acc (i64.add (local.get $acc) (i64.load offset=8 (local.get $i))))
      (local.set $acc (i64.add (local.get $acc) (i64.load offset=16 (local.get $i))))
      (local.set $acc (i64.add (local.get $acc) (i64.load offset=24 (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 32)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 67108864))))
    (local.get $acc)))
"#;

impl Compute {
    /// Instantiates the workload on `allocator`'s memories and fills them.
    pub fn new(allocator: Allocator) -> wasmtime::Result<Compute> {
        let engine = Arc::new(allocator.engine()?);
        let module = Module::new(&engine, COMPUTE_WAT)?;
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[])?;
        instance.get_typed_func::<(), ()>(&mut store, "fill")?.call(&mut store, ())?;
        let sum = instance.get_typed_func::<(), i64>(&mut store, "sum")?;
        Ok(Compute { store, sum, _engine: engine })
    }

    /// Runs the sum once and returns it.
    pub fn run(&mut self) -> wasmtime::Result<i64> {
        self.sum.call(&mut self.store, ())
    }

    /// The value [`Compute::run`] must return.
    pub fn expected() -> i64 {
        // The memory holds, at every 8-byte offset i, the value i.
        let n = (COMPUTE_BYTES / 8) as i64;
        8 * (n * (n - 1) / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_sums_the_same_on_every_allocator() {
        for allocator in Allocator::ALL {
            let mut w = Compute::new(allocator).unwrap();
            assert_eq!(w.run().unwrap(), Compute::expected(), "{}", allocator.name());
        }
    }
}
