//! Which core modules a component holds, and in which order wasmtime
//! instantiates them.
//!
//! wasmtime's component translator inlines a component into one flat list of
//! core instantiations: it walks the component's sections in order, and
//! each nested component instantiation is walked, depth first, at the point
//! where it appears (`wasmtime-environ`'s `inline.rs`, whose
//! `SideEffect::Instance` list is the order `GlobalInitializer::InstantiateModule`
//! runs in). [`ComponentShape::scan`] replays that walk over the component's
//! index spaces of core modules and components, and yields the *static*
//! modules (the module sections, numbered in document order) in the order
//! they are instantiated. Whatever the replay cannot follow exactly (a core
//! module the component imports and instantiates, a module or component
//! reached through an instance's export, an import an argument does not
//! satisfy by name) makes the order [`Unknown`](OrderUnknown): a component
//! is only prepared when every memory request can be attributed.

use std::collections::HashMap;
use std::ops::Range;

use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentInstance, ComponentOuterAliasKind, ComponentTypeRef, Instance,
    Parser, Payload,
};

/// Why the instantiation order of a component's core modules is not known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderUnknown {
    /// The component instantiates a core module it imports: its memories
    /// are not known ahead of instantiation.
    #[error("the component instantiates a core module it imports (import `{name}`)")]
    ImportedModule {
        /// The import's name.
        name: String,
    },
    /// A module or component comes from an export of an instance, or from
    /// an import no instantiation argument provides by name.
    #[error("the component instantiates a {what} that preparation cannot follow to its definition")]
    Untraceable {
        /// `"core module"` or `"component"`.
        what: &'static str,
    },
    /// Components nest deeper than preparation follows.
    #[error("components nest more than {limit} deep")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
}

/// A component's core modules and their instantiation order.
#[derive(Clone, Debug)]
pub(crate) struct ComponentShape {
    /// Each core module section's bytes (ranges of the component), in
    /// document order: module *i* is the *i*-th module section met, at any
    /// nesting depth.
    pub modules: Vec<Range<usize>>,
    /// The static modules in the order wasmtime instantiates them (a module
    /// instantiated twice appears twice).
    pub order: Result<Vec<usize>, OrderUnknown>,
    /// The root component's core instances, by index: the static module
    /// each instantiates (`None` for one made of exports, or of a module
    /// that is not a definition of this file).
    pub root_instances: Vec<Option<usize>>,
    /// Whether a nested component (not the root) instantiates core modules:
    /// its core instances are out of the root's reach.
    pub nests: bool,
}

/// Nesting beyond which the replay gives up (wasmtime's own limits are
/// far lower in practice; this only bounds the recursion).
const MAX_DEPTH: usize = 64;

/// An entry of a core module or component index space.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    /// A definition in this file: a module number or a component body.
    Static(usize),
    /// An import of the enclosing component, by name.
    Import(String),
    /// Defined some way the replay does not follow.
    Untraceable,
}

/// What a component body does that matters for core instantiation order.
#[derive(Clone, Debug)]
enum Event {
    /// A core `instantiate` of module-space entry `module`.
    Module(Slot),
    /// A component `instantiate` of component `component`, with the
    /// modules and components passed by argument name.
    Component(Slot, Vec<(String, Arg)>),
}

/// A module or component instantiation argument.
#[derive(Clone, Debug)]
enum Arg {
    Module(Slot),
    Component(Slot),
}

/// One component body: its index spaces as far as they matter, and events.
#[derive(Debug, Default)]
struct Body {
    modules: Vec<Slot>,
    components: Vec<Slot>,
    events: Vec<Event>,
    /// The core instance index space: the module slot each instantiates.
    core_instances: Vec<Option<Slot>>,
}

/// A frame of the parse: a component body, or a core module being skipped.
enum Frame {
    Component(Body),
    Module,
}

impl ComponentShape {
    /// Scans `wasm`, a component that validated.
    pub fn scan(wasm: &[u8]) -> Result<ComponentShape, wasmparser::BinaryReaderError> {
        let mut modules = Vec::new();
        let mut bodies: Vec<Body> = Vec::new();
        let mut frames: Vec<Frame> = Vec::new();
        let mut root = None;
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload?;
            if let Payload::End(_) = payload {
                match frames.pop() {
                    Some(Frame::Component(body)) => {
                        let id = bodies.len();
                        bodies.push(body);
                        match frames.last_mut() {
                            Some(Frame::Component(parent)) => parent.components.push(Slot::Static(id)),
                            Some(Frame::Module) => {}
                            None => root = Some(id),
                        }
                    }
                    Some(Frame::Module) | None => {}
                }
                continue;
            }
            if let Payload::Version { encoding, .. } = payload {
                frames.push(match encoding {
                    wasmparser::Encoding::Component => Frame::Component(Body::default()),
                    wasmparser::Encoding::Module => Frame::Module,
                });
                continue;
            }
            let Some((current, enclosing)) = frames.split_last_mut() else { continue };
            let Frame::Component(body) = current else { continue };
            match payload {
                Payload::ModuleSection { unchecked_range, .. } => {
                    body.modules.push(Slot::Static(modules.len()));
                    modules.push(unchecked_range);
                }
                Payload::ComponentImportSection(reader) => {
                    for import in reader {
                        let import = import?;
                        let name = import.name.name.to_owned();
                        match import.ty {
                            ComponentTypeRef::Module(_) => body.modules.push(Slot::Import(name)),
                            ComponentTypeRef::Component(_) => body.components.push(Slot::Import(name)),
                            _ => {}
                        }
                    }
                }
                Payload::ComponentExportSection(reader) => {
                    for export in reader {
                        let export = export?;
                        let index = export.index as usize;
                        match export.kind {
                            ComponentExternalKind::Module => body.modules.push(slot(&body.modules, index)),
                            ComponentExternalKind::Component => body.components.push(slot(&body.components, index)),
                            _ => {}
                        }
                    }
                }
                Payload::ComponentAliasSection(reader) => {
                    for alias in reader {
                        match alias? {
                            ComponentAlias::InstanceExport { kind: ComponentExternalKind::Module, .. } => {
                                body.modules.push(Slot::Untraceable)
                            }
                            ComponentAlias::InstanceExport { kind: ComponentExternalKind::Component, .. } => {
                                body.components.push(Slot::Untraceable)
                            }
                            ComponentAlias::Outer { kind, count, index } => {
                                let (count, index) = (count as usize, index as usize);
                                // The space `count` components up, as far as it
                                // has been read (which is all an alias can name).
                                let space = |pick: fn(&Body) -> &[Slot], body: &Body| -> Slot {
                                    let outer = match count {
                                        0 => Some(body),
                                        _ => enclosing.len().checked_sub(count).and_then(|at| match &enclosing[at] {
                                            Frame::Component(outer) => Some(outer),
                                            Frame::Module => None,
                                        }),
                                    };
                                    // An import of the enclosing component differs
                                    // from one of its instantiations to the next.
                                    match outer.and_then(|outer| pick(outer).get(index)) {
                                        Some(Slot::Static(id)) if count > 0 => Slot::Static(*id),
                                        Some(slot) if count == 0 => slot.clone(),
                                        _ => Slot::Untraceable,
                                    }
                                };
                                match kind {
                                    ComponentOuterAliasKind::CoreModule => {
                                        let resolved = space(|b| &b.modules, body);
                                        body.modules.push(resolved);
                                    }
                                    ComponentOuterAliasKind::Component => {
                                        let resolved = space(|b| &b.components, body);
                                        body.components.push(resolved);
                                    }
                                    _ => {}
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Payload::InstanceSection(reader) => {
                    for instance in reader {
                        match instance? {
                            Instance::Instantiate { module_index, .. } => {
                                let module = slot(&body.modules, module_index as usize);
                                body.core_instances.push(Some(module.clone()));
                                body.events.push(Event::Module(module));
                            }
                            Instance::FromExports(_) => body.core_instances.push(None),
                        }
                    }
                }
                Payload::ComponentInstanceSection(reader) => {
                    for instance in reader {
                        if let ComponentInstance::Instantiate { component_index, args } = instance? {
                            let component = slot(&body.components, component_index as usize);
                            let args = args
                                .iter()
                                .filter_map(|arg| {
                                    let index = arg.index as usize;
                                    let value = match arg.kind {
                                        ComponentExternalKind::Module => Arg::Module(slot(&body.modules, index)),
                                        ComponentExternalKind::Component => {
                                            Arg::Component(slot(&body.components, index))
                                        }
                                        _ => return None,
                                    };
                                    Some((arg.name.to_owned(), value))
                                })
                                .collect();
                            body.events.push(Event::Component(component, args));
                        }
                    }
                }
                _ => {}
            }
        }
        let order = match root {
            Some(root) => {
                let mut order = Vec::new();
                replay(&bodies, root, &HashMap::new(), &mut order, 0).map(|()| order)
            }
            // Not a component: nothing is instantiated through this path.
            None => Ok(Vec::new()),
        };
        let root_instances = root
            .map(|root| {
                let statics = |slot: &Option<Slot>| match slot {
                    Some(Slot::Static(id)) => Some(*id),
                    _ => None,
                };
                bodies[root].core_instances.iter().map(statics).collect()
            })
            .unwrap_or_default();
        let nests = (0..bodies.len())
            .any(|id| Some(id) != root && bodies[id].events.iter().any(|e| matches!(e, Event::Module(..))));
        Ok(ComponentShape { modules, order, root_instances, nests })
    }
}

/// The entry `index` of an index space (`Untraceable` past its end, which a
/// validated component never reaches).
fn slot(space: &[Slot], index: usize) -> Slot {
    space.get(index).cloned().unwrap_or(Slot::Untraceable)
}

/// Appends the static modules `body` instantiates, in order, given the
/// modules and components its imports are bound to.
fn replay(
    bodies: &[Body],
    body: usize,
    args: &HashMap<String, Arg>,
    order: &mut Vec<usize>,
    depth: usize,
) -> Result<(), OrderUnknown> {
    if depth > MAX_DEPTH {
        return Err(OrderUnknown::TooDeep { limit: MAX_DEPTH });
    }
    let resolve_module = |slot: &Slot| -> Result<Slot, OrderUnknown> {
        match slot {
            Slot::Import(name) => match args.get(name) {
                Some(Arg::Module(bound)) => Ok(bound.clone()),
                _ => Err(OrderUnknown::ImportedModule { name: name.clone() }),
            },
            other => Ok(other.clone()),
        }
    };
    let resolve_component = |slot: &Slot| -> Slot {
        match slot {
            Slot::Import(name) => match args.get(name) {
                Some(Arg::Component(bound)) => bound.clone(),
                _ => Slot::Untraceable,
            },
            other => other.clone(),
        }
    };
    for event in &bodies[body].events {
        match event {
            Event::Module(module) => match resolve_module(module)? {
                Slot::Static(id) => order.push(id),
                Slot::Import(name) => return Err(OrderUnknown::ImportedModule { name }),
                Slot::Untraceable => return Err(OrderUnknown::Untraceable { what: "core module" }),
            },
            Event::Component(component, inner_args) => {
                let Slot::Static(inner) = resolve_component(component) else {
                    return Err(OrderUnknown::Untraceable { what: "component" });
                };
                // The arguments, as this body's bindings resolve them.
                let mut bound = HashMap::new();
                for (name, arg) in inner_args {
                    let value = match arg {
                        Arg::Module(slot) => Arg::Module(match slot {
                            Slot::Import(_) => resolve_module(slot).unwrap_or(Slot::Untraceable),
                            other => other.clone(),
                        }),
                        Arg::Component(slot) => Arg::Component(resolve_component(slot)),
                    };
                    bound.insert(name.clone(), value);
                }
                replay(bodies, inner, &bound, order, depth + 1)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(wat: &str) -> (usize, Result<Vec<usize>, OrderUnknown>) {
        let wasm = wat::parse_str(wat).expect("wat");
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&wasm)
            .expect("valid component");
        let shape = ComponentShape::scan(&wasm).expect("scan");
        (shape.modules.len(), shape.order)
    }

    #[test]
    fn core_instantiations_follow_section_order() {
        let (modules, order) = order(
            r#"(component
                (core module $a (memory 1))
                (core module $b (memory 2))
                (core instance (instantiate $b))
                (core instance (instantiate $a))
                (core instance (instantiate $b)))"#,
        );
        assert_eq!((modules, order), (2, Ok(vec![1, 0, 1])));
    }

    #[test]
    fn nested_components_are_walked_depth_first_where_instantiated() {
        let (modules, order) = order(
            r#"(component
                (core module $outer (memory 1))
                (component $inner
                    (import "m" (core module $m))
                    (core module $own (memory 1))
                    (core instance (instantiate $own))
                    (core instance (instantiate $m)))
                (core instance (instantiate $outer))
                (instance (instantiate $inner (with "m" (core module $outer))))
                (core module $last (memory 1))
                (core instance (instantiate $last))
                (instance (instantiate $inner (with "m" (core module $last)))))"#,
        );
        // Document order: $outer 0, $own 1 (inside $inner), $last 2.
        assert_eq!((modules, order), (3, Ok(vec![0, 1, 0, 2, 1, 2])));
    }

    #[test]
    fn outer_aliases_and_exports_keep_the_module() {
        let (_, order) = order(
            r#"(component
                (core module $a (memory 1))
                (export "a" (core module $a))
                (component $inner
                    (alias outer 1 0 (core module $m))
                    (core instance (instantiate $m)))
                (instance (instantiate $inner))
                (core instance (instantiate 1)))"#,
        );
        assert_eq!(order, Ok(vec![0, 0]));
    }

    #[test]
    fn an_instantiated_import_is_unknown() {
        let (_, order) = order(
            r#"(component
                (import "m" (core module $m))
                (core instance (instantiate $m)))"#,
        );
        assert_eq!(order, Err(OrderUnknown::ImportedModule { name: "m".into() }));
    }

    #[test]
    fn a_module_from_an_instance_export_is_untraceable() {
        let (_, order) = order(
            r#"(component
                (component $c (core module $m) (export "m" (core module $m)))
                (instance $i (instantiate $c))
                (alias export $i "m" (core module $m))
                (core instance (instantiate $m)))"#,
        );
        assert_eq!(order, Err(OrderUnknown::Untraceable { what: "core module" }));
    }
}
