//! [`PreparedComponent`]: components instantiated from copy-on-write images.
//!
//! A component's core modules are prepared one by one as
//! [`PreparedModule`](crate::PreparedModule) prepares a module
//! ([`crate::rewrite::prepare`]): each module's active data segments are cut
//! into one [`Image`] per defined memory and turned into empty passive
//! segments, and the component is re-encoded around the rewritten modules
//! (every other section is copied byte for byte). wasmtime hands a
//! component's core memories to the [`FrameMemoryCreator`] one core
//! instantiation after another, in the order [`shape`] replays from the
//! component's structure; instantiating through this type installs a
//! *strict* plan of those memories (see [`crate::image_plan`]): each request
//! must be the next planned memory, of the planned type, or the
//! instantiation fails. An image goes to the memory it was cut for, or
//! nothing is instantiated: never a memory with another module's data.
//!
//! A module that cannot be cut (see [`NotPrepared`]) stays unchanged inside
//! the component: its memories are planned without an image and wasmtime
//! copies its data segments as usual. A component whose core instantiation
//! order cannot be replayed exactly, or whose modules may need a GC heap
//! (which wasmtime allocates through the same creator, at a point the plan
//! cannot foresee), is compiled unchanged and instantiates exactly as with
//! plain wasmtime; [`PreparedComponent::not_prepared`] says why.
//!
//! A component made with [`PreparedComponent::new`] can be saved as a
//! compile-cache artifact and loaded back without compiling
//! ([`PreparedComponent::save_artifact`],
//! [`PreparedComponent::load_artifact`]; see [`crate::artifact`]).

mod accessors;
mod build;
mod encode;
mod shape;
mod snapshot;
mod working_set;

pub use accessors::{component_getter, component_setter};
pub use shape::OrderUnknown;
pub use snapshot::{TrackedInstance, global_name, memory_name};

use crate::creator::FrameMemoryCreator;
use crate::error::Result;
use crate::image_plan::{MemoryFacts, MemoryPlan, Pending};
use crate::prepared::{run_planned, run_planned_async};
use crate::rewrite::NotPrepared;
use accessors::Accessed;
use framemap::Image;
use std::sync::Arc;
use wasmtime::component::{Component, Instance, InstancePre, Linker};
use wasmtime::{AsContextMut, Engine};

/// Why a component was compiled unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentNotPrepared {
    /// No core module of the component has data to cut.
    #[error("no core module of the component has an active data segment to cut")]
    NothingToCut,
    /// The order in which wasmtime creates the component's core memories
    /// cannot be replayed exactly.
    #[error("the order of the component's core instantiations is not known: {0}")]
    Order(#[from] OrderUnknown),
    /// A core module may need a GC heap, which wasmtime allocates through the
    /// memory creator at a point a plan cannot foresee.
    #[error("core module {module} may need a GC heap, whose allocation a plan cannot foresee")]
    GcHeap {
        /// The module (module sections numbered in document order).
        module: usize,
    },
    /// A core memory's size in bytes overflows.
    #[error("a memory of core module {module} has a minimum size that does not fit in 64 bits")]
    MemoryTooLarge {
        /// The module (module sections numbered in document order).
        module: usize,
    },
    /// The engine rejects the re-encoded component although it accepts the
    /// original (its cut segments are passive, which needs bulk memory).
    #[error("the engine rejects the rewritten component: {message}")]
    RewriteRejected {
        /// The engine's compilation error.
        message: String,
    },
}

/// A component compiled for instantiation from images, bound to the
/// [`FrameMemoryCreator`] installed in its engine.
#[derive(Clone, Debug)]
pub struct PreparedComponent {
    pub(crate) component: Component,
    pub(crate) creator: Arc<FrameMemoryCreator>,
    /// Every core memory wasmtime creates for one instantiation, in order;
    /// `None` if the component is not prepared.
    pub(crate) plan: Option<Arc<[MemoryPlan]>>,
    pub(crate) not_prepared: Option<ComponentNotPrepared>,
    /// The core modules left unchanged inside a prepared component, and why.
    pub(crate) unprepared_modules: Vec<(usize, NotPrepared)>,
    /// What instance snapshots need, for a component made with
    /// [`PreparedComponent::with_snapshots`]. (Fields are the crate's for
    /// `artifact/`, which saves and loads the plain prepared form.)
    pub(crate) snapshots: Option<Arc<ComponentSnapshots>>,
    /// The buffers windows are named from and re-bound to
    /// ([`PreparedComponent::set_snapshot_buffers`]).
    pub(crate) buffers: Arc<crate::SnapshotBuffers>,
    /// How snapshot restores lay memories out
    /// ([`PreparedComponent::set_restore_mode`]).
    pub(crate) restore_mode: crate::RestoreMode,
}

/// What capturing and restoring instances of a component needs.
#[derive(Debug)]
pub(crate) struct ComponentSnapshots {
    /// The component restores instantiate: no core start function, no
    /// active data.
    restore: Component,
    /// The root core instances whose mutable globals are lifted, by index.
    lifted: Vec<(u32, Vec<Accessed>)>,
    /// Why a capture would not be faithful (empty: none).
    blockers: Vec<String>,
    /// The type facts of every planned memory, in plan order.
    facts: Vec<MemoryFacts>,
}

impl PreparedComponent {
    /// Prepares and compiles the component `wasm` (binary or text) for
    /// `engine`, whose `Config` must have `creator` installed with
    /// [`crate::configure`] and the component model enabled.
    pub fn new(
        creator: &Arc<FrameMemoryCreator>,
        engine: &Engine,
        wasm: impl AsRef<[u8]>,
    ) -> Result<PreparedComponent> {
        build::build(creator, engine, wasm.as_ref(), false)
    }

    /// The compiled component (prepared or, see
    /// [`PreparedComponent::not_prepared`], unchanged). Instantiating it
    /// directly rather than through this type gives its memories no images:
    /// their data would be missing.
    pub fn component(&self) -> &Component {
        &self.component
    }

    /// Why the component is not prepared (`None` if it is).
    pub fn not_prepared(&self) -> Option<&ComponentNotPrepared> {
        self.not_prepared.as_ref()
    }

    /// The core modules of a prepared component left unchanged (numbered in
    /// document order), and why: their memories get no image and wasmtime
    /// copies their data at every instantiation.
    pub fn unprepared_modules(&self) -> &[(usize, NotPrepared)] {
        &self.unprepared_modules
    }

    /// The image of each planned core memory, in plan order (`None` for a
    /// memory without one; empty if the component is not prepared). A core
    /// module instantiated twice has its memories' images listed twice.
    pub fn images(&self) -> Vec<Option<Image>> {
        self.plan.as_deref().map_or_else(Vec::new, |plan| plan.iter().map(|m| m.image.clone()).collect())
    }

    /// How many core memories one instantiation creates with a plan (`0` if
    /// the component is not prepared).
    pub fn planned_memories(&self) -> usize {
        self.plan.as_deref().map_or(0, <[MemoryPlan]>::len)
    }

    /// Instantiates the component in `store`, with imports from `linker`.
    pub fn instantiate<T: 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        linker: &Linker<T>,
    ) -> wasmtime::Result<Instance> {
        run_planned(self.pending(), || linker.instantiate(&mut store, &self.component))
    }

    /// Asynchronous [`PreparedComponent::instantiate`] (for a `Config` with
    /// async support).
    pub async fn instantiate_async<T: Send + 'static>(
        &self,
        mut store: impl AsContextMut<Data = T>,
        linker: &Linker<T>,
    ) -> wasmtime::Result<Instance> {
        run_planned_async(self.pending(), linker.instantiate_async(&mut store, &self.component)).await
    }

    /// Resolves imports with `linker` once, for many fast instantiations
    /// (and, for a component made with
    /// [`PreparedComponent::with_snapshots`], restores).
    pub fn instance_pre<T: 'static>(&self, linker: &Linker<T>) -> wasmtime::Result<PreparedComponentInstancePre<T>> {
        let restore_pre = match self.snapshots.as_deref() {
            Some(support) => Some(linker.instantiate_pre(&support.restore)?),
            None => None,
        };
        Ok(PreparedComponentInstancePre {
            pre: linker.instantiate_pre(&self.component)?,
            restore_pre,
            prepared: self.clone(),
        })
    }

    fn pending(&self) -> Option<Pending> {
        self.plan.as_ref().map(|plan| Pending::strict(self.creator.id(), plan.clone()))
    }
}

/// A [`PreparedComponent`] whose imports are resolved: the fastest way to
/// instantiate it many times.
pub struct PreparedComponentInstancePre<T: 'static> {
    pre: InstancePre<T>,
    /// The restore variant, pre-linked (components with snapshot support).
    restore_pre: Option<InstancePre<T>>,
    prepared: PreparedComponent,
}

impl<T: 'static> Clone for PreparedComponentInstancePre<T> {
    fn clone(&self) -> Self {
        PreparedComponentInstancePre {
            pre: self.pre.clone(),
            restore_pre: self.restore_pre.clone(),
            prepared: self.prepared.clone(),
        }
    }
}

impl<T: 'static> PreparedComponentInstancePre<T> {
    /// Instantiates the component in `store`.
    pub fn instantiate(&self, mut store: impl AsContextMut<Data = T>) -> wasmtime::Result<Instance> {
        run_planned(self.prepared.pending(), || self.pre.instantiate(&mut store))
    }

    /// Asynchronous [`PreparedComponentInstancePre::instantiate`].
    pub async fn instantiate_async(&self, mut store: impl AsContextMut<Data = T>) -> wasmtime::Result<Instance>
    where
        T: Send,
    {
        run_planned_async(self.prepared.pending(), self.pre.instantiate_async(&mut store)).await
    }

    /// The prepared component.
    pub fn prepared(&self) -> &PreparedComponent {
        &self.prepared
    }
}
