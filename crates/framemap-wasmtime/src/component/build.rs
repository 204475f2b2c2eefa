//! Building a [`PreparedComponent`]: each core module cut (and, for
//! snapshots, given global accessors and a restore variant), the component
//! re-encoded around them, the memory plan laid out in instantiation order.

use super::accessors::{self, Accessed, LiftedInstance};
use super::shape::ComponentShape;
use super::{ComponentNotPrepared, ComponentSnapshots, PreparedComponent, encode};
use crate::creator::FrameMemoryCreator;
use crate::error::{Error, Result};
use crate::image_plan::MemoryPlan;
use crate::prepared::{facts, may_need_gc_heap, segments_image};
use crate::rewrite::{NotPrepared, Preparation, defined_memories, prepare};
use crate::state::{Blocker, export_state, restore_variant};
use std::sync::Arc;
use wasmparser::{Validator, WasmFeatures};
use wasmtime::Engine;
use wasmtime::component::Component;

fn invalid(error: &dyn std::fmt::Display) -> Error {
    Error::InvalidComponent(error.to_string())
}

fn validate(wasm: &[u8]) -> Result<wasmparser::types::Types> {
    Validator::new_with_features(WasmFeatures::all()).validate_all(wasm).map_err(|e| invalid(&e))
}

fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component> {
    Component::new(engine, wasm).map_err(|e| Error::InvalidComponent(format!("{e:#}")))
}

/// What one core module becomes.
struct ModuleOutcome {
    /// The bytes in the component (`None`: unchanged).
    bytes: Option<Vec<u8>>,
    /// The bytes in the restore variant (snapshots only).
    restore: Option<Vec<u8>>,
    /// Its defined memories' plans.
    plan: Vec<MemoryPlan>,
    /// Its mutable globals (snapshots only).
    globals: Vec<Accessed>,
}

/// Builds the component `wasm` (text or binary); with `snapshots`, ready
/// for instance snapshots, or an error saying why it cannot be.
pub(super) fn build(
    creator: &Arc<FrameMemoryCreator>,
    engine: &Engine,
    wasm: &[u8],
    snapshots: bool,
) -> Result<PreparedComponent> {
    let binary = wat::parse_bytes(wasm).map_err(|e| invalid(&e))?;
    if !wasmparser::Parser::is_component(&binary) {
        return Err(invalid(&"the bytes are a core module, not a component"));
    }
    validate(&binary)?;
    let unchanged = |reason: ComponentNotPrepared| -> Result<PreparedComponent> {
        if snapshots {
            return Err(Error::NotSnapshottable { reason: reason.to_string() });
        }
        Ok(PreparedComponent {
            component: compile(engine, &binary)?,
            creator: creator.clone(),
            plan: None,
            not_prepared: Some(reason),
            unprepared_modules: Vec::new(),
            snapshots: None,
            buffers: Arc::default(),
            restore_mode: crate::RestoreMode::default(),
        })
    };
    let shape = ComponentShape::scan(&binary).map_err(|e| invalid(&e))?;
    let order = match &shape.order {
        Ok(order) => order.clone(),
        Err(reason) => return unchanged(reason.clone().into()),
    };
    let mut modules = Vec::with_capacity(shape.modules.len());
    let mut unprepared_modules = Vec::new();
    let mut blockers = Vec::new();
    for (index, range) in shape.modules.iter().enumerate() {
        let module = binary.get(range.clone()).ok_or_else(|| invalid(&"a module section is out of bounds"))?;
        if may_need_gc_heap(module) {
            return unchanged(ComponentNotPrepared::GcHeap { module: index });
        }
        let (cut, memories) = match prepare(module).map_err(|e| invalid(&e))? {
            Preparation::Prepared(prepared) => (Some(prepared.wasm), prepared.memories),
            Preparation::Unprepared { reason } => {
                let Some(memories) = defined_memories(module).map_err(|e| invalid(&e))? else {
                    return unchanged(ComponentNotPrepared::MemoryTooLarge { module: index });
                };
                if reason != NotPrepared::NoDataSegments {
                    unprepared_modules.push((index, reason));
                }
                (None, memories)
            }
        };
        let mut plan = Vec::with_capacity(memories.len());
        for memory in &memories {
            plan.push(MemoryPlan { facts: facts(memory), image: segments_image(memory)?, snapshot: None });
        }
        let mut outcome = ModuleOutcome { bytes: cut, restore: None, plan, globals: Vec::new() };
        if snapshots {
            snapshot_module(index, module, &mut outcome, &mut blockers)?;
        }
        modules.push(outcome);
    }
    if !snapshots && modules.iter().all(|m| m.bytes.is_none()) {
        return unchanged(ComponentNotPrepared::NothingToCut);
    }
    let replaced: Vec<Option<Vec<u8>>> = modules.iter().map(|m| m.bytes.clone()).collect();
    let mut component_bytes = encode::with_modules(&binary, &replaced).map_err(|e| invalid(&e))?;
    let plan: Arc<[MemoryPlan]> = order.iter().flat_map(|&module| modules[module].plan.iter().cloned()).collect();

    let mut support = None;
    if snapshots {
        if shape.nests {
            blockers.push("a nested component instantiates core modules, whose state the root cannot reach".into());
        }
        if plan.iter().any(|p| p.facts.shared) {
            blockers.push("a core memory is shared".into());
        }
        let lifted: Vec<(u32, Vec<Accessed>)> = (0u32..)
            .zip(&shape.root_instances)
            .filter_map(|(instance, module)| {
                let globals = &modules[(*module)?].globals;
                (!globals.is_empty()).then(|| (instance, globals.clone()))
            })
            .collect();
        let instances: Vec<LiftedInstance<'_>> =
            lifted.iter().map(|(instance, globals)| LiftedInstance { instance: *instance, globals }).collect();
        let types = validate(&component_bytes)?;
        let root = types.as_ref();
        let appended = accessors::lift_accessors(
            root.function_count(),
            root.component_type_count(),
            root.component_function_count(),
            &instances,
        );
        component_bytes.extend_from_slice(&appended);
        let restore: Vec<Option<Vec<u8>>> = modules.iter().map(|m| m.restore.clone()).collect();
        let mut restore_bytes = encode::with_modules(&binary, &restore).map_err(|e| invalid(&e))?;
        restore_bytes.extend_from_slice(&appended);
        let facts = plan.iter().map(|p| p.facts).collect();
        support =
            Some(Arc::new(ComponentSnapshots { restore: compile(engine, &restore_bytes)?, lifted, blockers, facts }));
    }
    match Component::new(engine, &component_bytes) {
        Ok(component) => Ok(PreparedComponent {
            component,
            creator: creator.clone(),
            plan: Some(plan),
            not_prepared: None,
            unprepared_modules,
            snapshots: support,
            buffers: Arc::default(),
            restore_mode: crate::RestoreMode::default(),
        }),
        Err(error) if !snapshots => unchanged(ComponentNotPrepared::RewriteRejected { message: format!("{error:#}") }),
        Err(error) => Err(Error::InvalidComponent(format!("{error:#}"))),
    }
}

/// Adds what snapshots need to one module's outcome: global accessors in
/// its bytes, a restore variant, and the blockers it has in a component.
fn snapshot_module(
    index: usize,
    original: &[u8],
    outcome: &mut ModuleOutcome,
    blockers: &mut Vec<String>,
) -> Result<()> {
    let current = outcome.bytes.clone().unwrap_or_else(|| original.to_vec());
    // In a component, tables and globals imported or exported between core
    // instances are the component's own (the host reaches none of them),
    // and an imported memory is captured by the instance that defines it:
    // what remains are the module-level blockers.
    let (_, layout) = export_state(&current).map_err(|e| invalid(&e))?;
    for blocker in layout.blockers {
        match blocker {
            Blocker::TableChange(_) | Blocker::DataDrop | Blocker::ReferenceGlobal(_) => {
                blockers.push(format!("core module {index}: {blocker}"))
            }
            _ => {}
        }
    }
    let globals = match accessors::mutable_globals(&current).map_err(|e| invalid(&e))? {
        Ok(globals) => globals,
        Err(global) => {
            blockers.push(format!("core module {index}: mutable global {global} holds a reference or a v128"));
            Vec::new()
        }
    };
    let types = validate(&current)?;
    let types = types.as_ref();
    let with_accessors =
        accessors::module_with_accessors(&current, types.core_type_count_in_module(), types.function_count(), &globals)
            .map_err(|e| invalid(&e))?;
    outcome.restore = Some(restore_variant(&with_accessors).map_err(|e| invalid(&e))?);
    outcome.bytes = Some(with_accessors);
    outcome.globals = globals;
    Ok(())
}
