//! [`PreparedModule`]: instantiation from copy-on-write images.
//!
//! A module's active data segments with constant, in-bounds offsets are cut
//! into one [`Image`] per defined memory ([`crate::prepare`]); the module is
//! compiled with those segments turned into empty passive ones (same indices).
//! Instantiating it through
//! this type hands the images to the [`FrameMemoryCreator`] (see
//! [`crate::pending`]), which maps them copy-on-write: instantiation costs
//! the same whatever the images' sizes, and a recycled slot that served the
//! same image is reset to it by dropping (or rewriting) only the pages the
//! guest dirtied. A module that cannot be prepared is compiled unchanged and
//! instantiates exactly as with plain wasmtime; [`PreparedModule::not_prepared`]
//! says why.

use crate::creator::FrameMemoryCreator;
use crate::error::{Error, Result};
use crate::image_plan::{MemoryFacts, MemoryPlan, Pending, WithPlan};
use crate::rewrite::{MemoryInit, NotPrepared, Preparation, defined_memories, prepare};
use crate::snapshot_buffers::SnapshotBuffers;
use crate::snapshot_plan::{PlanSources, snapshot_plan};
use crate::state::{StateLayout, export_state, global_export, memory_export, restore_variant};
use crate::working_set::RestoreMode;
use framemap::Image;
use framemap::snapshot::{GlobalValue, Snapshot, SnapshotWriter};
use std::sync::Arc;
use wasmtime::{AsContextMut, Engine, Extern, Instance, InstancePre, Linker, Module, Val};

/// A module compiled for instantiation from images, bound to the
/// [`FrameMemoryCreator`] installed in its engine.
#[derive(Clone, Debug)]
pub struct PreparedModule {
    pub(crate) module: Module,
    pub(crate) creator: Arc<FrameMemoryCreator>,
    /// One entry per defined memory; `None` if images cannot be handed to
    /// the module's memories (see [`PreparedModule::not_prepared`]).
    /// Shared with every instantiation in flight (no copy per instantiation).
    pub(crate) plan: Option<Arc<[MemoryPlan]>>,
    pub(crate) not_prepared: Option<NotPrepared>,
    /// What instance snapshots need, for a module made with
    /// [`PreparedModule::with_snapshots`]. (Fields are the crate's for
    /// `artifact/`, which saves and loads the plain prepared form.)
    pub(crate) snapshots: Option<Arc<SnapshotSupport>>,
    /// How snapshot restores lay memories out ([`PreparedModule::set_restore_mode`]).
    pub(crate) restore_mode: RestoreMode,
    /// The buffers windows are named from and re-bound to
    /// ([`PreparedModule::set_snapshot_buffers`]).
    pub(crate) buffers: Arc<SnapshotBuffers>,
}

/// What capturing and restoring instances of a module needs.
#[derive(Debug)]
pub(crate) struct SnapshotSupport {
    /// The state the rewritten module exports, and what blocks snapshots.
    pub(crate) layout: StateLayout,
    /// The module restores instantiate: no start function, no active data.
    restore_module: Module,
    /// The type facts of each defined memory, in order.
    facts: Vec<MemoryFacts>,
}

impl PreparedModule {
    /// Prepares and compiles `wasm` (binary or text) for `engine`, whose
    /// `Config` must have `creator` installed with [`crate::configure`].
    pub fn new(creator: &Arc<FrameMemoryCreator>, engine: &Engine, wasm: impl AsRef<[u8]>) -> Result<PreparedModule> {
        let text_or_binary = wasm.as_ref();
        let binary = wat::parse_bytes(text_or_binary).map_err(|e| Error::InvalidModule(e.to_string()))?;
        let compile = |bytes: &[u8]| Module::new(engine, bytes).map_err(|e| Error::InvalidModule(format!("{e:#}")));
        let preparation = prepare(&binary).map_err(|e| Error::InvalidModule(e.to_string()))?;
        // The bytes to compile, the defined memories to plan for, and why the
        // module is not prepared (`None`: it is).
        let (wasm, memories, not_prepared) = match preparation {
            Preparation::Prepared(prepared) => (prepared.wasm, Some(prepared.memories), None),
            // Nothing to cut: the bytes stay as they are, but the memories can
            // still be given images (snapshots) with `set_image`.
            Preparation::Unprepared { reason: reason @ NotPrepared::NoDataSegments } => {
                let memories = defined_memories(&binary).map_err(|e| Error::InvalidModule(e.to_string()))?;
                (binary.to_vec(), memories, Some(reason))
            }
            Preparation::Unprepared { reason } => (binary.to_vec(), None, Some(reason)),
        };
        let mut plan = Vec::new();
        for memory in memories.iter().flatten() {
            plan.push(MemoryPlan { facts: facts(memory), image: segments_image(memory)?, snapshot: None });
        }
        let first_memory = memories.as_deref().and_then(<[MemoryInit]>::first).map_or(0, |m| m.memory_index);
        let (module, plan, not_prepared) = match (memories, gc_heap_ambiguity(&binary, &plan, first_memory)) {
            // An engine that rejects the rewrite (passive segments need bulk
            // memory) but accepts the original runs the original.
            (Some(_), None) => match Module::new(engine, &wasm) {
                Ok(module) => (module, Some(Arc::from(plan)), not_prepared),
                Err(error) => {
                    let module = compile(&binary)?;
                    (module, None, Some(NotPrepared::RewriteRejected { message: format!("{error:#}") }))
                }
            },
            (Some(_), Some(reason)) => (compile(&binary)?, None, Some(reason)),
            (None, _) => (compile(&binary)?, None, not_prepared),
        };
        Ok(PreparedModule {
            module,
            creator: creator.clone(),
            plan,
            not_prepared,
            snapshots: None,
            restore_mode: RestoreMode::default(),
            buffers: Arc::default(),
        })
    }

    /// As [`PreparedModule::new`], and ready for instance snapshots
    /// ([`PreparedModule::capture`], [`PreparedModule::instantiate_snapshot`]):
    /// every defined memory and mutable global is also exported, under the
    /// reserved names of [`crate::state`], so a capture misses nothing; and
    /// the module restores instantiate (no start function, no active data:
    /// the snapshot holds their effects) is compiled too, which doubles the
    /// compile time. Instances of a module with a [`crate::state::Blocker`]
    /// (tables it may change, dropped segments, shared or imported memories,
    /// reference globals) still run; capturing them is refused.
    pub fn with_snapshots(
        creator: &Arc<FrameMemoryCreator>,
        engine: &Engine,
        wasm: impl AsRef<[u8]>,
    ) -> Result<PreparedModule> {
        let binary = wat::parse_bytes(wasm.as_ref()).map_err(|e| Error::InvalidModule(e.to_string()))?;
        let invalid = |e: &dyn std::fmt::Display| Error::InvalidModule(e.to_string());
        prepare(&binary).map_err(|e| invalid(&e))?; // validates, refuses components
        let (exported, layout) = export_state(&binary).map_err(|e| invalid(&e))?;
        let mut prepared = PreparedModule::new(creator, engine, &exported)?;
        let restore = restore_variant(&exported).map_err(|e| invalid(&e))?;
        let restore_module = Module::new(engine, &restore).map_err(|e| Error::InvalidModule(format!("{e:#}")))?;
        let memories = defined_memories(&exported).map_err(|e| invalid(&e))?;
        let facts = memories.ok_or(Error::NotSnapshottable { reason: "a memory's size overflows".into() })?;
        let facts = facts.iter().map(self::facts).collect();
        prepared.snapshots = Some(Arc::new(SnapshotSupport { layout, restore_module, facts }));
        Ok(prepared)
    }

    /// The snapshot support, if instances of this module can be captured.
    pub(crate) fn snapshot_support(&self) -> Result<&SnapshotSupport> {
        let support = self.snapshots.as_deref().ok_or_else(|| Error::NotSnapshottable {
            reason: "the module was not prepared with PreparedModule::with_snapshots".into(),
        })?;
        if !support.layout.blockers.is_empty() {
            let reasons: Vec<String> = support.layout.blockers.iter().map(ToString::to_string).collect();
            return Err(Error::NotSnapshottable { reason: reasons.join("; ") });
        }
        Ok(support)
    }

    /// Captures `instance` (an instance of this module in `store`) into
    /// `writer`: every defined memory, as `framemap:memory:N`, and every
    /// mutable global, as `framemap:global:N` (see [`crate::state`]). With
    /// an incremental writer, each memory stores only what changed since the
    /// parent was captured (or since the instance was restored from it).
    /// Windows of host buffers are recorded by the names the module's
    /// [`SnapshotBuffers`] give them ([`PreparedModule::set_snapshot_buffers`]);
    /// a window of a buffer it does not name is refused. The guest must not
    /// be running (the store is borrowed mutably).
    pub fn capture(
        &self,
        mut store: impl AsContextMut,
        instance: &Instance,
        writer: &mut SnapshotWriter,
    ) -> Result<()> {
        let support = self.snapshot_support()?;
        let missing = |name: &str| Error::SnapshotMismatch {
            detail: format!("the instance has no export {name:?}: is it an instance of this module?"),
        };
        for &index in &support.layout.memories {
            let name = memory_export(index);
            let memory = instance.get_memory(&mut store, &name).ok_or_else(|| missing(&name))?;
            let handle = self.creator.handle(&store, &memory)?;
            self.buffers.capture(&handle, &mut store, writer, &name)?;
        }
        for &index in &support.layout.globals {
            let name = global_export(index);
            let global = instance.get_global(&mut store, &name).ok_or_else(|| missing(&name))?;
            let value = match global.get(&mut store) {
                Val::I32(v) => GlobalValue::I32(v),
                Val::I64(v) => GlobalValue::I64(v),
                Val::F32(bits) => GlobalValue::F32(bits),
                Val::F64(bits) => GlobalValue::F64(bits),
                Val::V128(v) => GlobalValue::V128(v.as_u128()),
                _ => return Err(Error::NotSnapshottable { reason: format!("global {index} holds a reference") }),
            };
            writer.add_global(&name, value).map_err(Error::Snapshot)?;
        }
        Ok(())
    }

    /// Instantiates the module from `snapshot` (its parents attached): its
    /// memories are the snapshot's, mapped lazily (copy-on-write from the
    /// snapshot's file and the module's images), its mutable globals the
    /// snapshot's, its start function not run again and no data segment
    /// applied (the snapshot holds their effects); tables are rebuilt from
    /// the module's element segments (a module that changes tables cannot be
    /// captured). Windows are re-bound to the buffers of the module's
    /// [`SnapshotBuffers`]. Refused if the snapshot does not fit the module
    /// or names a buffer the module's `SnapshotBuffers` lack. Each
    /// memory's recorded working set is prefetched as the module's
    /// [`RestoreMode`] says ([`PreparedModule::set_restore_mode`]).
    pub fn instantiate_snapshot(
        &self,
        mut store: impl AsContextMut,
        imports: &[Extern],
        snapshot: &Snapshot,
    ) -> wasmtime::Result<Instance> {
        self.restore_sync(&mut store, snapshot, |store, module| Instance::new(store, module, imports))
    }

    /// [`PreparedModule::instantiate_snapshot`] with imports resolved by
    /// `linker`.
    pub fn instantiate_snapshot_with<T: 'static>(
        &self,
        linker: &Linker<T>,
        mut store: impl AsContextMut<Data = T>,
        snapshot: &Snapshot,
    ) -> wasmtime::Result<Instance> {
        self.restore_sync(&mut store, snapshot, |store, module| linker.instantiate(store, module))
    }

    /// Asynchronous [`PreparedModule::instantiate_snapshot_with`], for stores
    /// of async engines; the future may move between threads.
    pub async fn instantiate_snapshot_with_async<T: Send + 'static>(
        &self,
        linker: &Linker<T>,
        mut store: impl AsContextMut<Data = T>,
        snapshot: &Snapshot,
    ) -> wasmtime::Result<Instance> {
        let (support, mut pending) = self.restore_plan(snapshot)?;
        let instance =
            WithPlan::new(linker.instantiate_async(&mut store, &support.restore_module), &mut pending).await?;
        check_served(&pending)?;
        restore_globals(&support.layout, &mut store, &instance, snapshot)?;
        Ok(instance)
    }

    /// A synchronous restore: plans `snapshot`'s memories, runs
    /// `instantiate` with the restore variant, checks every memory was
    /// served, then sets the globals.
    fn restore_sync<S: AsContextMut>(
        &self,
        store: &mut S,
        snapshot: &Snapshot,
        instantiate: impl FnOnce(&mut S, &Module) -> wasmtime::Result<Instance>,
    ) -> wasmtime::Result<Instance> {
        let (support, mut pending) = self.restore_plan(snapshot)?;
        let instance = pending.run(|| instantiate(&mut *store, &support.restore_module))?;
        check_served(&pending)?;
        restore_globals(&support.layout, &mut *store, &instance, snapshot)?;
        Ok(instance)
    }

    /// Checks that `snapshot` fits this module and plans its memories.
    fn restore_plan(&self, snapshot: &Snapshot) -> Result<(&SnapshotSupport, Pending)> {
        let support = self.snapshot_support()?;
        let names = support.layout.memories.iter().map(|&i| memory_export(i)).collect();
        let globals = support.layout.globals.iter().map(|&i| global_export(i));
        let images: Vec<Image> = self.images().into_iter().flatten().collect();
        let sources = PlanSources { images: &images, buffers: &self.buffers, mode: self.restore_mode };
        let plan = snapshot_plan(snapshot, "module", &support.facts, names, globals, sources)?;
        Ok((support, Pending::new(self.creator.id(), Arc::from(plan))))
    }

    /// The compiled module (with its cut data segments made empty and passive,
    /// if prepared):
    /// instantiate it through this type, or its memories start zeroed.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Why the module runs unprepared (its data segments copied at each
    /// instantiation, as in plain wasmtime), or `None` if it is prepared.
    pub fn not_prepared(&self) -> Option<&NotPrepared> {
        self.not_prepared.as_ref()
    }

    /// The image of each defined memory, in defined-memory order (`None` for
    /// a memory without one, and for every memory of an unprepared module).
    pub fn images(&self) -> Vec<Option<Image>> {
        self.plan.as_deref().map_or_else(Vec::new, |plan| plan.iter().map(|m| m.image.clone()).collect())
    }

    /// Turns working-set prefaulting on or off for every image of the module
    /// (see [`FrameMemoryCreator::prefault_working_set`]).
    pub fn prefault_working_set(&self, enable: bool) {
        for image in self.images().into_iter().flatten() {
            self.creator.prefault_working_set(&image, enable);
        }
    }

    /// Instantiates the module with `imports`, its memories starting from
    /// their images.
    pub fn instantiate(&self, mut store: impl AsContextMut, imports: &[Extern]) -> wasmtime::Result<Instance> {
        self.run(|| Instance::new(&mut store, &self.module, imports))
    }

    /// Asynchronous [`PreparedModule::instantiate`], for stores of async
    /// engines; the future may move between threads.
    pub async fn instantiate_async(
        &self,
        mut store: impl AsContextMut<Data: Send>,
        imports: &[Extern],
    ) -> wasmtime::Result<Instance> {
        self.run_async(Instance::new_async(&mut store, &self.module, imports)).await
    }

    /// Instantiates the module with imports resolved by `linker`.
    pub fn instantiate_with<T: 'static>(
        &self,
        linker: &Linker<T>,
        mut store: impl AsContextMut<Data = T>,
    ) -> wasmtime::Result<Instance> {
        self.run(|| linker.instantiate(&mut store, &self.module))
    }

    /// Asynchronous [`PreparedModule::instantiate_with`].
    pub async fn instantiate_with_async<T: Send + 'static>(
        &self,
        linker: &Linker<T>,
        mut store: impl AsContextMut<Data = T>,
    ) -> wasmtime::Result<Instance> {
        self.run_async(linker.instantiate_async(&mut store, &self.module)).await
    }

    /// Resolves imports with `linker` once, for many fast instantiations.
    pub fn instance_pre<T: 'static>(&self, linker: &Linker<T>) -> wasmtime::Result<PreparedInstancePre<T>> {
        let restore_pre = match self.snapshots.as_deref() {
            Some(support) => Some(linker.instantiate_pre(&support.restore_module)?),
            None => None,
        };
        Ok(PreparedInstancePre { pre: linker.instantiate_pre(&self.module)?, restore_pre, prepared: self.clone() })
    }

    /// Makes `image` the initial contents of defined memory `memory` (in
    /// defined-memory order) instead of the module's own data: an
    /// embedder-provided snapshot or file, say, mapped copy-on-write like any
    /// image; `None` starts the memory zeroed. The module's data segments for
    /// that memory are not applied on top (they were cut). Refused if the
    /// image is larger than the memory's initial size, if others may still
    /// write its file ([`Error::MutableImage`]: the memory's bytes could
    /// change under a borrow of them), or if the module's segments could not
    /// be cut (then instantiation copies them itself).
    pub fn set_image(&mut self, memory: usize, image: Option<Image>) -> Result<()> {
        let reason = self.not_prepared.clone();
        let plan = self.plan.as_mut().ok_or(Error::NotPrepared { reason })?;
        // Copies the plan only if an instantiation in flight still holds it.
        let plan = Arc::make_mut(plan);
        let count = plan.len();
        let planned = plan.get_mut(memory).ok_or(Error::NoSuchMemory { memory, count })?;
        let limit = planned.facts.minimum_bytes.next_multiple_of(framemap::host_page_size() as u64);
        if let Some(image) = &image {
            if image.len() > limit {
                return Err(Error::ImageTooLarge { memory, image: image.len(), limit });
            }
            if !image.is_immutable() {
                return Err(Error::MutableImage { image: image.id() });
            }
        }
        planned.image = image;
        Ok(())
    }

    fn pending(&self) -> Option<Pending> {
        self.plan.as_ref().map(|plan| Pending::new(self.creator.id(), plan.clone()))
    }

    fn run(&self, instantiate: impl FnOnce() -> wasmtime::Result<Instance>) -> wasmtime::Result<Instance> {
        run_planned(self.pending(), instantiate)
    }

    async fn run_async(
        &self,
        instantiate: impl Future<Output = wasmtime::Result<Instance>>,
    ) -> wasmtime::Result<Instance> {
        run_planned_async(self.pending(), instantiate).await
    }
}

/// A [`PreparedModule`] whose imports are resolved: the fastest way to
/// instantiate it many times.
pub struct PreparedInstancePre<T: 'static> {
    pre: InstancePre<T>,
    /// The restore variant's, for a module made with
    /// [`PreparedModule::with_snapshots`].
    restore_pre: Option<InstancePre<T>>,
    prepared: PreparedModule,
}

impl<T: 'static> Clone for PreparedInstancePre<T> {
    fn clone(&self) -> Self {
        PreparedInstancePre {
            pre: self.pre.clone(),
            restore_pre: self.restore_pre.clone(),
            prepared: self.prepared.clone(),
        }
    }
}

impl<T: 'static> PreparedInstancePre<T> {
    /// Instantiates the module in `store`, its memories starting from their
    /// images.
    pub fn instantiate(&self, mut store: impl AsContextMut<Data = T>) -> wasmtime::Result<Instance> {
        self.prepared.run(|| self.pre.instantiate(&mut store))
    }

    /// Asynchronous [`PreparedInstancePre::instantiate`].
    pub async fn instantiate_async(&self, mut store: impl AsContextMut<Data = T>) -> wasmtime::Result<Instance>
    where
        T: Send,
    {
        self.prepared.run_async(self.pre.instantiate_async(&mut store)).await
    }

    /// Instantiates the module from `snapshot` in `store` (see
    /// [`PreparedModule::instantiate_snapshot`]), with the imports resolved
    /// once.
    pub fn instantiate_snapshot(
        &self,
        mut store: impl AsContextMut<Data = T>,
        snapshot: &Snapshot,
    ) -> wasmtime::Result<Instance> {
        let pre = self.restore_pre.as_ref().ok_or_else(|| Error::NotSnapshottable {
            reason: "the module was not prepared with PreparedModule::with_snapshots".into(),
        })?;
        self.prepared.restore_sync(&mut store, snapshot, |store, _| pre.instantiate(store))
    }

    /// Asynchronous [`PreparedInstancePre::instantiate_snapshot`].
    pub async fn instantiate_snapshot_async(
        &self,
        mut store: impl AsContextMut<Data = T>,
        snapshot: &Snapshot,
    ) -> wasmtime::Result<Instance>
    where
        T: Send,
    {
        let (support, mut pending) = self.prepared.restore_plan(snapshot)?;
        let pre = self.restore_pre.as_ref().ok_or_else(|| Error::NotSnapshottable {
            reason: "the module was not prepared with PreparedModule::with_snapshots".into(),
        })?;
        let instance = WithPlan::new(pre.instantiate_async(&mut store), &mut pending).await?;
        check_served(&pending)?;
        restore_globals(&support.layout, &mut store, &instance, snapshot)?;
        Ok(instance)
    }

    /// The prepared module.
    pub fn prepared(&self) -> &PreparedModule {
        &self.prepared
    }
}

/// Sets the mutable globals of a just restored `instance` to `snapshot`'s.
fn restore_globals(
    layout: &StateLayout,
    mut store: impl AsContextMut,
    instance: &Instance,
    snapshot: &Snapshot,
) -> wasmtime::Result<()> {
    for &index in &layout.globals {
        let name = global_export(index);
        let global = instance.get_global(&mut store, &name).ok_or_else(|| Error::SnapshotMismatch {
            detail: format!("the restored instance has no export {name:?}"),
        })?;
        let record = snapshot.manifest().globals.iter().find(|g| g.name == name);
        let value = record.ok_or_else(|| Error::SnapshotMismatch { detail: format!("global {name:?} is missing") })?;
        let value = match value.value {
            GlobalValue::I32(v) => Val::I32(v),
            GlobalValue::I64(v) => Val::I64(v),
            GlobalValue::F32(bits) => Val::F32(bits),
            GlobalValue::F64(bits) => Val::F64(bits),
            GlobalValue::V128(v) => Val::V128(v.into()),
        };
        global
            .set(&mut store, value)
            .map_err(|e| Error::SnapshotMismatch { detail: format!("global {name:?}: {e}") })?;
    }
    Ok(())
}

/// The type facts of a planned memory.
pub(crate) fn facts(memory: &MemoryInit) -> MemoryFacts {
    MemoryFacts {
        minimum_bytes: memory.minimum_bytes,
        maximum_bytes: memory.maximum_bytes,
        shared: memory.shared,
        memory64: memory.memory64,
        page_size_log2: memory.page_size_log2 as u8,
    }
}

/// The image of a memory's cut segments (`None` if it has none).
pub(crate) fn segments_image(memory: &MemoryInit) -> Result<Option<Image>> {
    let Some(end) = memory.segments.iter().map(|(o, b)| o + b.len() as u64).max() else { return Ok(None) };
    Image::from_segments(end, memory.segments.iter().map(|(o, b)| (*o, b.as_slice())))
        .map(Some)
        .map_err(|source| Error::Image { memory: memory.memory_index, source })
}

/// Runs the synchronous instantiation `instantiate` with `pending`
/// installed (if there is a plan), then checks that every planned memory
/// was served.
pub(crate) fn run_planned<R>(
    pending: Option<Pending>,
    instantiate: impl FnOnce() -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let Some(mut pending) = pending else { return instantiate() };
    let instantiated = pending.run(instantiate)?;
    check_served(&pending)?;
    Ok(instantiated)
}

/// The asynchronous [`run_planned`]: the plan is installed around every
/// poll of `instantiate`.
pub(crate) async fn run_planned_async<R>(
    pending: Option<Pending>,
    instantiate: impl Future<Output = wasmtime::Result<R>>,
) -> wasmtime::Result<R> {
    let Some(mut pending) = pending else { return instantiate.await };
    let instantiated = WithPlan::new(instantiate, &mut pending).await?;
    check_served(&pending)?;
    Ok(instantiated)
}

/// Fails unless every planned memory was served, in order.
pub(crate) fn check_served(pending: &Pending) -> wasmtime::Result<()> {
    pending.finish().map_err(|(served, planned)| wasmtime::Error::new(Error::ImagesNotServed { served, planned }))
}

/// wasmtime allocates a module's GC heap (if it needs one) just before its
/// memories, through the same creator, with the type of a 32-bit, unshared,
/// maximum-less memory of 64 KiB pages. If the first defined memory has that
/// shape too and the module may need a GC heap, the two requests could not be
/// told apart, so such a module is left unprepared. "May need a GC heap" is
/// decided as wasmtime's engines without a collector decide it: the module
/// does not validate without wasmparser's GC types (nor exceptions, whose
/// objects live in the GC heap).
fn gc_heap_ambiguity(wasm: &[u8], plan: &[MemoryPlan], first_memory: u32) -> Option<NotPrepared> {
    let first = plan.first()?.facts;
    let gc_shaped = !first.memory64 && !first.shared && first.maximum_bytes.is_none() && first.page_size_log2 == 16;
    match gc_shaped && may_need_gc_heap(wasm) {
        true => Some(NotPrepared::GcHeapShapedMemory { memory: first_memory }),
        false => None,
    }
}

/// Whether instantiating the core module `wasm` may allocate a GC heap: as
/// wasmtime's engines without a collector decide it, the module does not
/// validate without wasmparser's GC types (nor exceptions, whose objects
/// live in the GC heap).
pub(crate) fn may_need_gc_heap(wasm: &[u8]) -> bool {
    use wasmparser::{Validator, WasmFeatures};
    let without_gc = WasmFeatures::all()
        - WasmFeatures::GC_TYPES
        - WasmFeatures::GC
        - WasmFeatures::EXCEPTIONS
        - WasmFeatures::LEGACY_EXCEPTIONS
        - WasmFeatures::STACK_SWITCHING;
    Validator::new_with_features(without_gc).validate_all(wasm).is_err()
}
