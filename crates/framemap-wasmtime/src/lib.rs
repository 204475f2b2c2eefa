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

pub mod artifact;
pub mod component;
mod creator;
mod engine;
mod error;
mod handle;
mod image_plan;
pub mod memctl;
mod memory;
mod pool;
mod prepared;
mod report;
pub mod rewrite;
mod slot;
mod snapshot_buffers;
mod snapshot_plan;
pub mod state;
mod working_set;

pub use component::{PreparedComponent, PreparedComponentInstancePre};
pub use creator::{CreatorConfig, CreatorStats, FrameMemoryCreator};
pub use engine::{configure, engine};
pub use error::{Error, Result};
pub use handle::MemoryHandle;
pub use prepared::{PreparedInstancePre, PreparedModule};
pub use report::FrameReport;
pub use snapshot_buffers::SnapshotBuffers;
pub use working_set::{MemoryWorkingSet, RestoreMode};
