//! framemap for wasmtime: every wasm memory a framemap reservation.
//!
//! [`FrameMemoryCreator`] implements wasmtime's `MemoryCreator`; [`configure`]
//! installs it in a `wasmtime::Config`. Memories keep exactly the reservation
//! and guard wasmtime asks for (so compiled code keeps its bounds-check
//! elision), never move, and are recycled through a bounded pool whose reset
//! costs time proportional to the pages the guest touched. A
//! [`MemoryHandle`] shows a live memory's frame table.
//!
//! ```
//! use framemap_wasmtime::{FrameMemoryCreator, configure};
//! use wasmtime::{Config, Engine, Instance, Module, Store};
//!
//! let creator = FrameMemoryCreator::new();
//! let mut config = Config::new();
//! configure(&mut config, creator.clone());
//! let engine = Engine::new(&config)?;
//! let module = Module::new(&engine, r#"(module (memory (export "m") 1))"#)?;
//! let mut store = Store::new(&engine, ());
//! let instance = Instance::new(&mut store, &module, &[])?;
//! let memory = instance.get_memory(&mut store, "m").unwrap();
//! let report = creator.handle(&store, &memory)?.report()?;
//! assert_eq!(report.summary.len, 65536);
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

mod creator;
mod engine;
mod error;
pub mod memctl;
mod memory;
mod pending;
mod pool;
pub mod prepare;
mod prepared;
mod report;

pub use creator::{CreatorConfig, CreatorStats, FrameMemoryCreator};
pub use engine::engine;
pub use error::{Error, Result};
pub use prepared::{PreparedInstancePre, PreparedModule};
pub use report::{FrameReport, MemoryHandle};

use std::sync::Arc;

/// Makes `config` create every memory with `creator`, and sets what that
/// requires:
///
/// - `memory_init_cow(false)`: wasmtime 48's copy-on-write initialisation
///   assumes memories it allocated itself and panics on a custom creator's
///   (wasmtime issue #10740); with it off, data segments are copied into the
///   memory at instantiation. With fuel on, wasmtime charges
///   `memory_init_per_byte` fuel for each byte it copies, so a plain module
///   uses more instantiation fuel on a framemap engine than on wasmtime's
///   copy-on-write memories; a [`PreparedModule`] copies nothing and uses the
///   same fuel as the latter.
///
/// A memory whose minimum exceeds `memory_reservation` gets its minimum plus
/// [`CreatorConfig::growth_reserve`] reserved, as wasmtime's own memories get
/// their minimum plus `memory_reservation_for_growth` (which wasmtime does not
/// pass to a creator: [`engine`] copies it over; with `configure` alone, keep
/// the two equal for identical growth behaviour).
///
/// Prefer [`engine`], which calls this after everything else the caller set
/// and refuses the settings that void framemap's guarantees (the pooling
/// allocator, traps without signal handlers).
/// - `memory_may_move(false)` and `gc_heap_may_move(false)`: framemap memories
///   never move, and saying so lets compiled code keep the base pointer in a
///   register across growth.
pub fn configure(config: &mut wasmtime::Config, creator: Arc<FrameMemoryCreator>) -> &mut wasmtime::Config {
    config.with_host_memory(creator).memory_init_cow(false).memory_may_move(false).gc_heap_may_move(false)
}
