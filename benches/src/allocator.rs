//! The allocators compared: wasmtime's own instance allocators and framemap's
//! memory creator, each behind its own [`Engine`].

use anyhow::{Context as _, Result};
use framemap_wasmtime::{CreatorConfig, FrameMemoryCreator};
use std::sync::Arc;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Which memories an engine uses. The names ([`Allocator::name`]) are the
/// ones `framemap bench` prints and writes to its JSON rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Allocator {
    /// `wasmtime-ondemand`: wasmtime's default, `Config::new()`: on-demand
    /// allocation with copy-on-write memory images (`memory_init_cow(true)`).
    WasmtimeOnDemand,
    /// `wasmtime-ondemand-copy`: on-demand allocation with
    /// `memory_init_cow(false)`, so data segments are copied into each new
    /// memory (what wasmtime does for every custom memory creator).
    WasmtimeOnDemandCopy,
    /// `wasmtime-pooling`: the pooling allocator with its default settings
    /// (limits raised only where the module needs it).
    WasmtimePooling,
    /// `wasmtime-pooling-best`: the pooling allocator tuned for fast reuse:
    /// `linear_memory_keep_resident(16 MiB)` and `pagemap_scan(Yes)`.
    WasmtimePoolingBest,
    /// `framemap`: framemap's memory creator installed with
    /// [`framemap_wasmtime::configure`], modules instantiated through
    /// [`framemap_wasmtime::PreparedModule`] (images mapped copy-on-write).
    Framemap,
}

impl Allocator {
    /// Every allocator, wasmtime's first, in report order.
    pub const ALL: [Allocator; 5] = [
        Allocator::WasmtimeOnDemand,
        Allocator::WasmtimeOnDemandCopy,
        Allocator::WasmtimePooling,
        Allocator::WasmtimePoolingBest,
        Allocator::Framemap,
    ];

    /// wasmtime's default allocator and framemap: the pair the compute
    /// (guest speed) comparison is about.
    pub const DEFAULT_AND_FRAMEMAP: [Allocator; 2] = [Allocator::WasmtimeOnDemand, Allocator::Framemap];

    /// The allocator's name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Allocator::WasmtimeOnDemand => "wasmtime-ondemand",
            Allocator::WasmtimeOnDemandCopy => "wasmtime-ondemand-copy",
            Allocator::WasmtimePooling => "wasmtime-pooling",
            Allocator::WasmtimePoolingBest => "wasmtime-pooling-best",
            Allocator::Framemap => "framemap",
        }
    }

    /// The allocator called `name` (see [`Allocator::name`]).
    pub fn from_name(name: &str) -> Option<Allocator> {
        Allocator::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether this is one of wasmtime's pooling configurations.
    pub fn is_pooling(self) -> bool {
        matches!(self, Allocator::WasmtimePooling | Allocator::WasmtimePoolingBest)
    }

    /// An engine whose memories come from this allocator, with default
    /// [`EngineOptions`].
    pub fn engine(self) -> wasmtime::Result<Engine> {
        Ok(self.setup(&EngineOptions::default()).map_err(wasmtime::Error::from_anyhow)?.engine)
    }

    /// Builds this allocator's engine (and, for framemap, its creator).
    pub fn setup(self, options: &EngineOptions) -> Result<Setup> {
        let mut config = Config::new();
        let mut creator = None;
        let mut notes = Vec::new();
        match self {
            Allocator::WasmtimeOnDemand => {}
            Allocator::WasmtimeOnDemandCopy => {
                config.memory_init_cow(false);
            }
            Allocator::WasmtimePooling => {
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(options.pooling.config()));
            }
            Allocator::WasmtimePoolingBest => {
                let mut pooling = options.pooling.config();
                pooling.linear_memory_keep_resident(16 << 20).pagemap_scan(wasmtime::Enabled::Yes);
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
            }
            Allocator::Framemap => {
                let made = FrameMemoryCreator::with_config(CreatorConfig {
                    max_idle_slots: if options.framemap_recycling {
                        CreatorConfig::default().max_idle_slots
                    } else {
                        0
                    },
                    ..CreatorConfig::default()
                });
                framemap_wasmtime::configure(&mut config, made.clone());
                creator = Some(made);
            }
        }
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            Err(err) if self == Allocator::WasmtimePoolingBest => {
                // `pagemap_scan(Yes)` fails on kernels without PAGEMAP_SCAN
                // (before Linux 6.7): fall back to `Auto` and say so.
                let mut pooling = options.pooling.config();
                pooling.linear_memory_keep_resident(16 << 20).pagemap_scan(wasmtime::Enabled::Auto);
                config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
                notes.push(format!("pagemap_scan(Yes) refused ({err}); using pagemap_scan(Auto)"));
                Engine::new(&config).map_err(anyhow::Error::from)?
            }
            Err(err) => {
                return Err(anyhow::Error::from(err)).context(format!("cannot build the {} engine", self.name()));
            }
        };
        Ok(Setup { allocator: self, engine, creator, notes })
    }
}

impl std::fmt::Display for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of [`Allocator::setup`] beyond the allocator itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Whether framemap keeps dropped memories' slots for reuse (its normal
    /// mode); `false` maps every memory afresh (`max_idle_slots: 0`).
    pub framemap_recycling: bool,
    /// Limits of the pooling allocators.
    pub pooling: PoolingLimits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { framemap_recycling: true, pooling: PoolingLimits::default() }
    }
}

/// What the pooling allocator must hold: each limit is raised from wasmtime's
/// default only if the workload needs more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolingLimits {
    /// Instances (and memories, and tables) alive at once.
    pub instances: u32,
    /// Memories defined by the module.
    pub memories_per_module: u32,
    /// Tables defined by the module.
    pub tables_per_module: u32,
    /// Largest initial table size, in elements.
    pub table_elements: usize,
    /// Largest memory size the module may reach, in bytes.
    pub memory_bytes: usize,
}

impl Default for PoolingLimits {
    fn default() -> Self {
        PoolingLimits {
            instances: crate::FOOTPRINT_INSTANCES as u32 + 16,
            memories_per_module: 1,
            tables_per_module: 1,
            table_elements: 0,
            memory_bytes: crate::builtin::MAX_MEMORY_BYTES as usize,
        }
    }
}

impl PoolingLimits {
    /// The limits `wasm` (a binary module) needs, on top of the defaults.
    pub fn for_module(wasm: &[u8]) -> Result<PoolingLimits> {
        use wasmparser::{Parser, Payload};
        let mut limits = PoolingLimits { memory_bytes: 0, ..PoolingLimits::default() };
        let (mut memories, mut tables) = (0u32, 0u32);
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.context("invalid module")? {
                Payload::MemorySection(reader) => {
                    for memory in reader {
                        let memory = memory.context("invalid memory section")?;
                        memories += 1;
                        let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                        let pages = memory.maximum.unwrap_or(memory.initial);
                        let bytes = pages.saturating_mul(page).min(usize::MAX as u64) as usize;
                        limits.memory_bytes = limits.memory_bytes.max(bytes);
                    }
                }
                Payload::TableSection(reader) => {
                    for table in reader {
                        let table = table.context("invalid table section")?;
                        tables += 1;
                        let elements = table.ty.initial.min(usize::MAX as u64) as usize;
                        limits.table_elements = limits.table_elements.max(elements);
                    }
                }
                _ => {}
            }
        }
        limits.memories_per_module = memories.max(1);
        limits.tables_per_module = tables.max(1);
        Ok(limits)
    }

    /// wasmtime's default pooling configuration with these limits applied.
    pub fn config(&self) -> PoolingAllocationConfig {
        let mut config = PoolingAllocationConfig::default();
        // wasmtime's defaults: 1000 instances, one memory and one table of
        // 20 000 elements per module, 4 GiB memories. Raise, never lower.
        let instances = self.instances.max(1000);
        config
            .total_core_instances(instances)
            .total_memories(instances.saturating_mul(self.memories_per_module))
            .total_tables(instances.saturating_mul(self.tables_per_module))
            .max_memories_per_module(self.memories_per_module.max(1))
            .max_tables_per_module(self.tables_per_module.max(1))
            .table_elements(self.table_elements.max(20_000))
            .max_memory_size(self.memory_bytes.max(1 << 32));
        config
    }
}

/// An allocator's engine, and framemap's creator if it is framemap.
pub struct Setup {
    /// The allocator.
    pub allocator: Allocator,
    /// Its engine.
    pub engine: Engine,
    /// framemap's creator (`None` for wasmtime's allocators).
    pub creator: Option<Arc<FrameMemoryCreator>>,
    /// What was adjusted while building the engine (e.g. a fallback), for
    /// the report.
    pub notes: Vec<String>,
}
