//! Instance snapshots of components: every core memory and mutable global
//! of a component instance, captured and restored.
//!
//! A component made with [`PreparedComponent::with_snapshots`] has a strict
//! plan that also records which memory the creator made for each planned
//! request ([`TrackedInstance`]): memory *k* of the plan is captured as
//! [`memory_name`]`(k)`. Each root core instance's mutable globals are read
//! and written through the accessors the build lifted
//! ([`super::accessors`]), and captured as [`global_name`]`(i, g)`. A
//! restore instantiates the component's restore variant (every core
//! module without its start function and active data, as
//! [`crate::state::restore_variant`] makes them) with each memory planned
//! from the snapshot, then sets the globals; element segments rebuild the
//! tables, which no module may change (a blocker otherwise).

use super::accessors::{component_getter, component_setter};
use super::{PreparedComponent, PreparedComponentInstancePre};
use crate::error::{Error, Result};
use crate::handle::MemoryHandle;
use crate::image_plan::{Pending, WithPlan};
use crate::prepared::check_served;
use crate::snapshot_plan::{PlanSources, snapshot_plan};
use framemap::Image;
use framemap::snapshot::{GlobalValue, Snapshot, SnapshotWriter};
use std::sync::Arc;
use wasmparser::ValType;
use wasmtime::AsContextMut;
use wasmtime::component::{Component, Instance, Linker};

/// The name of the plan's memory `k` in a component snapshot.
pub fn memory_name(k: usize) -> String {
    format!("framemap:component:memory:{k}")
}

/// The name of mutable global `g` of root core instance `instance` in a
/// component snapshot.
pub fn global_name(instance: u32, g: u32) -> String {
    format!("framemap:component:instance:{instance}:global:{g}")
}

/// A component instance with the memories framemap made for it, in plan
/// order: what [`PreparedComponent::capture`] needs.
#[derive(Clone, Debug)]
pub struct TrackedInstance {
    instance: Instance,
    memories: Vec<MemoryHandle>,
}

impl TrackedInstance {
    /// The wasmtime component instance.
    pub fn instance(&self) -> Instance {
        self.instance
    }

    /// Its core memories, in the order the component creates them.
    pub fn memories(&self) -> &[MemoryHandle] {
        &self.memories
    }
}

impl PreparedComponent {
    /// As [`PreparedComponent::new`], and ready for instance snapshots
    /// ([`PreparedComponent::capture`],
    /// [`PreparedComponent::instantiate_snapshot`]): each core module gets
    /// accessors for its mutable globals, lifted as component exports under
    /// reserved names, and the restore variant is compiled too (twice the
    /// compile time). Refused ([`Error::NotSnapshottable`]) if the
    /// component's core memories cannot be attributed; a component with a
    /// blocker (a module that changes tables or drops data segments, a
    /// shared memory, nested component instances) still runs, and capturing
    /// it is refused.
    pub fn with_snapshots(
        creator: &Arc<crate::FrameMemoryCreator>,
        engine: &wasmtime::Engine,
        wasm: impl AsRef<[u8]>,
    ) -> Result<PreparedComponent> {
        super::build::build(creator, engine, wasm.as_ref(), true)
    }

    pub(super) fn snapshot_support(&self) -> Result<&super::ComponentSnapshots> {
        let support = self.snapshots.as_deref().ok_or_else(|| Error::NotSnapshottable {
            reason: "the component was not prepared with PreparedComponent::with_snapshots".into(),
        })?;
        if !support.blockers.is_empty() {
            return Err(Error::NotSnapshottable { reason: support.blockers.join("; ") });
        }
        Ok(support)
    }

    /// Instantiates the component as [`PreparedComponent::instantiate`]
    /// does, keeping its memories for [`PreparedComponent::capture`].
    pub fn instantiate_tracked<T: 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        linker: &Linker<T>,
    ) -> wasmtime::Result<TrackedInstance> {
        let pending = self.tracking_plan()?;
        self.track_sync(&mut store, pending, |store, component| linker.instantiate(store, component), false)
    }

    /// Asynchronous [`PreparedComponent::instantiate_tracked`].
    pub async fn instantiate_tracked_async<T: Send + 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        linker: &Linker<T>,
    ) -> wasmtime::Result<TrackedInstance> {
        let mut pending = self.tracking_plan()?;
        let instance = WithPlan::new(linker.instantiate_async(&mut store, &self.component), &mut pending).await?;
        self.tracked(&store, instance, &pending)
    }

    /// Captures `tracked` (an instance of this component in `store`) into
    /// `writer`: every core memory, as [`memory_name`], and every mutable
    /// global of its core instances, as [`global_name`]. With an
    /// incremental writer, each memory stores only what changed since the
    /// parent was captured (or since the instance was restored from it).
    /// Windows are named as for modules, from the component's
    /// [`crate::SnapshotBuffers`] ([`PreparedComponent::set_snapshot_buffers`]).
    pub fn capture(
        &self,
        mut store: impl AsContextMut,
        tracked: &TrackedInstance,
        writer: &mut SnapshotWriter,
    ) -> Result<()> {
        let support = self.snapshot_support()?;
        if tracked.memories.len() != support.facts.len() {
            return Err(Error::SnapshotMismatch {
                detail: format!(
                    "the instance has {} memories, the component {}: is it an instance of this component?",
                    tracked.memories.len(),
                    support.facts.len()
                ),
            });
        }
        for (k, memory) in tracked.memories.iter().enumerate() {
            self.buffers.capture(memory, &mut store, writer, &memory_name(k))?;
        }
        for (instance, globals) in &support.lifted {
            for accessed in globals {
                let name = component_getter(*instance, accessed.global);
                let missing = |e: wasmtime::Error| Error::SnapshotMismatch { detail: format!("{name}: {e:#}") };
                let bits = match accessed.wide() {
                    false => {
                        let get = tracked.instance.get_typed_func::<(), (u32,)>(&mut store, &name).map_err(missing)?;
                        u64::from(get.call(&mut store, ()).map_err(missing)?.0)
                    }
                    true => {
                        let get = tracked.instance.get_typed_func::<(), (u64,)>(&mut store, &name).map_err(missing)?;
                        get.call(&mut store, ()).map_err(missing)?.0
                    }
                };
                let value = match accessed.ty {
                    ValType::I32 => GlobalValue::I32(bits as u32 as i32),
                    ValType::I64 => GlobalValue::I64(bits as i64),
                    ValType::F32 => GlobalValue::F32(bits as u32),
                    _ => GlobalValue::F64(bits),
                };
                writer.add_global(&global_name(*instance, accessed.global), value).map_err(Error::Snapshot)?;
            }
        }
        Ok(())
    }

    /// Instantiates the component from `snapshot` (its parents attached):
    /// every core memory is the snapshot's, mapped lazily, every mutable
    /// global the snapshot's, no core start function runs and no data
    /// segment is applied. Refused if the snapshot does not fit the
    /// component.
    pub fn instantiate_snapshot<T: 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        linker: &Linker<T>,
        snapshot: &Snapshot,
    ) -> wasmtime::Result<TrackedInstance> {
        let (restore, pending) = self.restore_plan(snapshot)?;
        let tracked = self.track_sync(&mut store, pending, |store, _| linker.instantiate(store, restore), true)?;
        self.restore_globals(&mut store, &tracked, snapshot)?;
        Ok(tracked)
    }

    /// Asynchronous [`PreparedComponent::instantiate_snapshot`].
    pub async fn instantiate_snapshot_async<T: Send + 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        linker: &Linker<T>,
        snapshot: &Snapshot,
    ) -> wasmtime::Result<TrackedInstance> {
        let (restore, mut pending) = self.restore_plan(snapshot)?;
        let instance = WithPlan::new(linker.instantiate_async(&mut store, restore), &mut pending).await?;
        let tracked = self.tracked(&store, instance, &pending)?;
        self.restore_globals(&mut store, &tracked, snapshot)?;
        Ok(tracked)
    }

    /// The plan of a tracked instantiation (the component's own).
    fn tracking_plan(&self) -> Result<Pending> {
        self.snapshot_support()?;
        let plan = self.plan.clone().ok_or(Error::NotSnapshottable { reason: "the component has no plan".into() })?;
        Ok(Pending::strict(self.creator.id(), plan))
    }

    fn track_sync<S: AsContextMut>(
        &self,
        store: &mut S,
        mut pending: Pending,
        instantiate: impl FnOnce(&mut S, &Component) -> wasmtime::Result<Instance>,
        restore: bool,
    ) -> wasmtime::Result<TrackedInstance> {
        let component = match restore {
            true => &self.snapshot_support()?.restore,
            false => &self.component,
        };
        let instance = pending.run(|| instantiate(&mut *store, component))?;
        self.tracked(&*store, instance, &pending)
    }

    /// The tracked instance of a finished instantiation.
    fn tracked(
        &self,
        store: &impl wasmtime::AsContext,
        instance: Instance,
        pending: &Pending,
    ) -> wasmtime::Result<TrackedInstance> {
        check_served(pending)?;
        let memories =
            pending.served().iter().map(|&identity| self.creator.handle_of(store, identity)).collect::<Result<_>>()?;
        Ok(TrackedInstance { instance, memories })
    }

    /// Checks that `snapshot` fits this component and plans its memories.
    fn restore_plan(&self, snapshot: &Snapshot) -> Result<(&Component, Pending)> {
        let support = self.snapshot_support()?;
        let names = (0..support.facts.len()).map(memory_name).collect();
        let globals = support
            .lifted
            .iter()
            .flat_map(|(instance, globals)| globals.iter().map(move |a| global_name(*instance, a.global)));
        let own = self.plan.as_deref().unwrap_or_default();
        let images: Vec<Image> = own.iter().filter_map(|p| p.image.clone()).collect();
        let plan = snapshot_plan(
            snapshot,
            "component",
            &support.facts,
            names,
            globals,
            PlanSources { images: &images, buffers: &self.buffers, mode: self.restore_mode },
        )?;
        Ok((&support.restore, Pending::strict(self.creator.id(), Arc::from(plan))))
    }

    /// Sets the mutable globals of a just restored instance to `snapshot`'s.
    fn restore_globals(
        &self,
        mut store: impl AsContextMut,
        tracked: &TrackedInstance,
        snapshot: &Snapshot,
    ) -> Result<()> {
        let support = self.snapshot_support()?;
        for (instance, globals) in &support.lifted {
            for accessed in globals {
                let name = global_name(*instance, accessed.global);
                let record = snapshot.manifest().globals.iter().find(|g| g.name == name);
                let value =
                    record.ok_or_else(|| Error::SnapshotMismatch { detail: format!("global {name:?} is missing") })?;
                let bits = match (value.value, accessed.ty) {
                    (GlobalValue::I32(v), ValType::I32) => u64::from(v as u32),
                    (GlobalValue::I64(v), ValType::I64) => v as u64,
                    (GlobalValue::F32(bits), ValType::F32) => u64::from(bits),
                    (GlobalValue::F64(bits), ValType::F64) => bits,
                    (held, _) => {
                        return Err(Error::SnapshotMismatch {
                            detail: format!(
                                "global {name:?} is a {} in the component, {held:?} in the snapshot",
                                accessed.ty
                            ),
                        });
                    }
                };
                let setter = component_setter(*instance, accessed.global);
                let failed = |e: wasmtime::Error| Error::SnapshotMismatch { detail: format!("{setter}: {e:#}") };
                match accessed.wide() {
                    false => {
                        let set = tracked.instance.get_typed_func::<(u32,), ()>(&mut store, &setter).map_err(failed)?;
                        set.call(&mut store, (bits as u32,)).map_err(failed)?;
                    }
                    true => {
                        let set = tracked.instance.get_typed_func::<(u64,), ()>(&mut store, &setter).map_err(failed)?;
                        set.call(&mut store, (bits,)).map_err(failed)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl<T: 'static> PreparedComponentInstancePre<T> {
    /// The pre-linked restore variant, or why there is none.
    fn restore_pre(&self) -> Result<&wasmtime::component::InstancePre<T>> {
        self.prepared.snapshot_support()?;
        self.restore_pre.as_ref().ok_or_else(|| Error::NotSnapshottable {
            reason: "the component was not prepared with PreparedComponent::with_snapshots".into(),
        })
    }

    /// Instantiates the component in `store` as
    /// [`PreparedComponent::instantiate_tracked`] does, with the imports
    /// resolved once.
    pub fn instantiate_tracked(&self, mut store: impl AsContextMut<Data = T>) -> wasmtime::Result<TrackedInstance> {
        let pending = self.prepared.tracking_plan()?;
        self.prepared.track_sync(&mut store, pending, |store, _| self.pre.instantiate(store), false)
    }

    /// Asynchronous [`PreparedComponentInstancePre::instantiate_tracked`].
    pub async fn instantiate_tracked_async(
        &self,
        mut store: impl AsContextMut<Data = T>,
    ) -> wasmtime::Result<TrackedInstance>
    where
        T: Send,
    {
        let mut pending = self.prepared.tracking_plan()?;
        let instance = WithPlan::new(self.pre.instantiate_async(&mut store), &mut pending).await?;
        self.prepared.tracked(&store, instance, &pending)
    }

    /// Instantiates the component from `snapshot` in `store` (see
    /// [`PreparedComponent::instantiate_snapshot`]), with the imports
    /// resolved once.
    pub fn instantiate_snapshot(
        &self,
        mut store: impl AsContextMut<Data = T>,
        snapshot: &Snapshot,
    ) -> wasmtime::Result<TrackedInstance> {
        let pre = self.restore_pre()?;
        let (_, pending) = self.prepared.restore_plan(snapshot)?;
        let tracked = self.prepared.track_sync(&mut store, pending, |store, _| pre.instantiate(store), true)?;
        self.prepared.restore_globals(&mut store, &tracked, snapshot)?;
        Ok(tracked)
    }

    /// Asynchronous [`PreparedComponentInstancePre::instantiate_snapshot`].
    pub async fn instantiate_snapshot_async(
        &self,
        mut store: impl AsContextMut<Data = T>,
        snapshot: &Snapshot,
    ) -> wasmtime::Result<TrackedInstance>
    where
        T: Send,
    {
        let pre = self.restore_pre()?;
        let (_, mut pending) = self.prepared.restore_plan(snapshot)?;
        let instance = WithPlan::new(pre.instantiate_async(&mut store), &mut pending).await?;
        let tracked = self.prepared.tracked(&store, instance, &pending)?;
        self.prepared.restore_globals(&mut store, &tracked, snapshot)?;
        Ok(tracked)
    }
}
