//! What the wasmtime targets share: generating a module with wasm-smith,
//! configuring engines for it, and running an instance while recording
//! everything a host can observe of it.

use arbitrary::{Arbitrary, Unstructured};
use framemap::ResetPolicy;
use framemap_wasmtime::{CreatorConfig, FrameMemoryCreator};
use std::fmt;
use wasmtime::{Engine, Extern, Instance, Memory, SharedMemory, Store, StoreLimits, StoreLimitsBuilder, Trap, Val};

/// Fuel for instantiation (the start function) and for each exported call.
pub const FUEL: u64 = 50_000;
/// Most bytes any one memory may grow to (a store limit, the same on every
/// side: growth past it fails with -1).
pub const MAX_MEMORY_BYTES: usize = 4 << 20;
/// Most bytes of a memory's declared minimum and maximum.
const MAX_DECLARED_BYTES: u64 = 1 << 20;

/// A wasm-smith module and the configuration it was generated with.
pub struct Generated {
    pub smith: wasm_smith::Config,
    pub wasm: Vec<u8>,
}

impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes of wasm (FRAMEMAP_FUZZ_WASM=<file> writes them out)", self.wasm.len())
    }
}

impl Generated {
    /// Writes the module to the file `FRAMEMAP_FUZZ_WASM` names, if set: to
    /// look at a crash's module (`wasm-tools print`) or turn it into a test.
    /// With the `.prepared.wasm` suffix, the module `prepare` rewrites it to
    /// (if it does).
    pub fn dump(&self) {
        if let Some(path) = std::env::var_os("FRAMEMAP_FUZZ_WASM") {
            std::fs::write(&path, &self.wasm).expect("write FRAMEMAP_FUZZ_WASM");
            if let Ok(framemap_wasmtime::rewrite::Preparation::Prepared(p)) =
                framemap_wasmtime::rewrite::prepare(&self.wasm)
            {
                let mut path = path;
                path.push(".prepared.wasm");
                std::fs::write(&path, &p.wasm).expect("write FRAMEMAP_FUZZ_WASM.prepared.wasm");
            }
        }
    }
}

/// Generates a module: memories (2 or more allowed, 32- and 64-bit, custom
/// page sizes sometimes) with data segments, bulk memory, everything
/// exported, no imports, small limits.
pub fn generate(u: &mut Unstructured<'_>) -> arbitrary::Result<Generated> {
    let mut c = wasm_smith::Config::arbitrary(u)?;
    c.available_imports = None;
    c.exports = None;
    c.module_shape = None;
    c.max_imports = 0;
    c.min_imports = 0;
    c.export_everything = true;
    c.allow_invalid_funcs = false;
    c.min_memories = 1;
    c.max_memories = c.max_memories.clamp(2, 3);
    c.memory64_enabled = true;
    c.bulk_memory_enabled = true;
    c.max_memory32_bytes = MAX_DECLARED_BYTES;
    c.max_memory64_bytes = u128::from(MAX_DECLARED_BYTES);
    c.custom_page_sizes_enabled = u.arbitrary()?;
    // Data segments are what prepared modules are about: always some.
    c.max_data_segments = c.max_data_segments.clamp(1, 8);
    c.min_data_segments = u.int_in_range(1..=c.max_data_segments)?;
    c.max_funcs = c.max_funcs.min(8);
    c.max_instructions = c.max_instructions.min(80);
    c.max_types = c.max_types.min(16);
    c.max_globals = c.max_globals.min(16);
    c.max_tables = c.max_tables.min(2);
    c.max_table_elements = c.max_table_elements.min(1000);
    c.max_element_segments = c.max_element_segments.min(8);
    c.max_elements = c.max_elements.min(32);
    c.max_tags = c.max_tags.min(4);
    c.shared_everything_threads_enabled = false;
    c.wide_arithmetic_enabled = false;
    c.custom_descriptors_enabled = false;
    let module = wasm_smith::Module::new(c.clone(), u)?;
    Ok(Generated { smith: c, wasm: module.to_bytes() })
}

/// A creator configuration: pool size and reset policy vary.
pub fn creator_config(u: &mut Unstructured<'_>) -> arbitrary::Result<CreatorConfig> {
    let max_idle_slots = *u.choose(&[64, 0, 1, 4])?;
    let keep_resident = *u.choose(&[1 << 20, 0, 4096, 3 << 12, u64::MAX])?;
    let scan_dirty = u.arbitrary()?;
    Ok(CreatorConfig { max_idle_slots, reset: ResetPolicy { keep_resident, scan_dirty }, ..CreatorConfig::default() })
}

/// An engine configuration that accepts everything `smith` generates, with
/// fuel on and memories that never move (framemap's never do; saying so on
/// both sides keeps growth limits the same).
pub fn engine_config(smith: &wasm_smith::Config) -> wasmtime::Config {
    let mut c = wasmtime::Config::new();
    c.consume_fuel(true)
        .parallel_compilation(false)
        .wasm_custom_page_sizes(smith.custom_page_sizes_enabled)
        .wasm_threads(smith.threads_enabled)
        .shared_memory(smith.threads_enabled)
        .memory_may_move(false)
        .gc_heap_may_move(false);
    c
}

/// How a call or an instantiation ended, as far as it must agree between
/// two runs: a trap's code, or that it failed otherwise (messages may name
/// addresses and differ).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Trap(Trap),
    Error,
}

pub fn outcome_of(e: &wasmtime::Error) -> Outcome {
    match e.downcast_ref::<Trap>() {
        Some(t) => Outcome::Trap(*t),
        None => Outcome::Error,
    }
}

/// A value as it must agree: numbers bit for bit, references by nullness.
pub fn value(v: &Val) -> String {
    match v {
        Val::I32(x) => format!("i32 {x}"),
        Val::I64(x) => format!("i64 {x}"),
        Val::F32(x) => format!("f32 bits {x:#x}"),
        Val::F64(x) => format!("f64 bits {x:#x}"),
        Val::V128(x) => format!("v128 {:#x}", x.as_u128()),
        other => match other.ref_() {
            Some(r) if r.is_null() => "null ref".to_string(),
            Some(_) => "non-null ref".to_string(),
            None => format!("{other:?}"),
        },
    }
}

/// Everything a host observes of one instance, in export order.
#[derive(Clone)]
pub struct Observations {
    /// The instantiation's outcome (with its message, not compared).
    pub instantiation: Outcome,
    pub message: String,
    /// Fuel left after instantiation (what the start function used).
    pub fuel_left: u64,
    /// Exports before any call, then after each call, then at the end.
    pub snapshots: Vec<Snapshot>,
    /// Each exported function without parameters, in export order.
    pub calls: Vec<(String, Outcome, Vec<String>)>,
}

/// Equal if everything but the message is: messages carry backtraces,
/// whose code offsets differ between a module and its prepared rewrite
/// when the rewrite changes a section's length.
impl PartialEq for Observations {
    fn eq(&self, other: &Self) -> bool {
        self.instantiation == other.instantiation
            && self.fuel_left == other.fuel_left
            && self.snapshots == other.snapshots
            && self.calls == other.calls
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub when: String,
    pub memories: Vec<(String, Vec<u8>)>,
    pub globals: Vec<(String, String)>,
    pub tables: Vec<(String, u64)>,
}

impl fmt::Debug for Observations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "instantiation: {:?} {} (fuel left {})", self.instantiation, self.message, self.fuel_left)?;
        for (name, outcome, results) in &self.calls {
            writeln!(f, "call {name:?}: {outcome:?} {results:?}")?;
        }
        for s in &self.snapshots {
            let sizes: Vec<_> = s.memories.iter().map(|(n, m)| (n, m.len())).collect();
            writeln!(f, "{}: memories {sizes:?} globals {:?} tables {:?}", s.when, s.globals, s.tables)?;
        }
        Ok(())
    }
}

/// Which side of a comparison may use more instantiation fuel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstantiationFuel {
    /// Either side (one may copy data segments the other maps or puts in a
    /// copy-on-write image, and which one copies depends on wasmtime's own
    /// image heuristics).
    EitherSide,
    /// The second side never uses less than the first (it copies every
    /// active segment the first copies, and maybe more).
    SecondUsesAtLeastAsMuch,
}

/// `assert_same` for runs whose data segments reach memory differently
/// (copied by wasmtime, mapped from a prepared module's image, or put in
/// wasmtime's own copy-on-write image). wasmtime charges fuel for each byte
/// (and each segment) it copies at instantiation and none otherwise: a
/// documented difference (see `framemap_wasmtime::configure`; a prepared
/// module's exact equality with default wasmtime is pinned by
/// `instantiation_fuel_matches_default_wasmtime_when_prepared` in
/// `crates/framemap-wasmtime/tests/fuzz_regressions.rs`). So the fuel left
/// after instantiation is only checked against `rule`, and a pair of runs
/// where exactly one instantiation ran out of fuel (a start function near
/// the limit) is not compared further; everything else is compared exactly,
/// every call's fuel included.
pub fn assert_same_but_instantiation_fuel(
    what_a: &str,
    a: &Observations,
    what_b: &str,
    b: &Observations,
    rule: InstantiationFuel,
) {
    let out_of_fuel = Outcome::Trap(Trap::OutOfFuel);
    let (a_out, b_out) = (a.instantiation == out_of_fuel, b.instantiation == out_of_fuel);
    if rule == InstantiationFuel::SecondUsesAtLeastAsMuch {
        assert!(
            a_out || b.fuel_left <= a.fuel_left,
            "{what_b} used less instantiation fuel ({} left) than {what_a} ({} left)\n{what_a}:\n{a:?}\n{what_b}:\n{b:?}",
            b.fuel_left,
            a.fuel_left
        );
        assert!(
            !a_out || b_out,
            "only {what_a}, which uses less fuel, ran out of it\n{what_a}:\n{a:?}\n{what_b}:\n{b:?}"
        );
    }
    if a_out != b_out {
        return;
    }
    let b = Observations { fuel_left: a.fuel_left, ..b.clone() };
    assert_same(what_a, a, what_b, &b);
}

/// Panics with the first difference between `a` and `b`.
pub fn assert_same(what_a: &str, a: &Observations, what_b: &str, b: &Observations) {
    if a == b {
        return;
    }
    let context = format!("{what_a}:\n{a:?}\n{what_b}:\n{b:?}");
    assert_eq!(a.instantiation, b.instantiation, "instantiation outcome differs\n{context}");
    assert_eq!(a.fuel_left, b.fuel_left, "fuel left after instantiation differs\n{context}");
    assert_eq!(a.calls, b.calls, "calls differ\n{context}");
    assert_eq!(a.snapshots.len(), b.snapshots.len(), "{context}");
    for (sa, sb) in a.snapshots.iter().zip(&b.snapshots) {
        assert_eq!(sa.globals, sb.globals, "globals differ {}\n{context}", sa.when);
        assert_eq!(sa.tables, sb.tables, "tables differ {}\n{context}", sa.when);
        assert_eq!(sa.memories.len(), sb.memories.len(), "{context}");
        for ((na, ma), (nb, mb)) in sa.memories.iter().zip(&sb.memories) {
            assert_eq!(na, nb, "{context}");
            assert_eq!(ma.len(), mb.len(), "memory {na:?} sizes differ {}\n{context}", sa.when);
            if let Some(at) = ma.iter().zip(mb).position(|(x, y)| x != y) {
                panic!(
                    "memory {na:?} differs {} at byte {at:#x}: {what_a} has {:#04x}, {what_b} {:#04x}\n{context}",
                    sa.when, ma[at], mb[at]
                );
            }
        }
    }
    panic!("observations differ\n{context}");
}

pub type Limits = StoreLimits;

/// A store with fuel and the memory limits every side shares.
pub fn store(engine: &Engine) -> Store<Limits> {
    let limits = StoreLimitsBuilder::new()
        .memory_size(MAX_MEMORY_BYTES)
        .table_elements(10_000)
        .instances(4)
        .memories(8)
        .tables(8)
        .build();
    let mut store = Store::new(engine, limits);
    store.limiter(|l| l);
    store
}

fn shared_bytes(m: &SharedMemory) -> Vec<u8> {
    // SAFETY: no wasm thread runs: the only accesses to the memory are this
    // thread's, so reading its cells races with nothing.
    m.data().iter().map(|c| unsafe { *c.get() }).collect()
}

/// Instantiates with `instantiate` in a fresh store and records
/// everything: exports before and after every exported call without
/// parameters. If `creator` is given, every exported memory must be one of
/// its memories, validate against the kernel, and report its size; once the
/// store is dropped, none of its memories may be left alive.
pub fn observe(
    engine: &Engine,
    creator: Option<&FrameMemoryCreator>,
    instantiate: impl FnOnce(&mut Store<Limits>) -> wasmtime::Result<Instance>,
) -> Observations {
    let mut obs = Observations {
        instantiation: Outcome::Ok,
        message: String::new(),
        fuel_left: 0,
        snapshots: Vec::new(),
        calls: Vec::new(),
    };
    {
        let mut store = store(engine);
        store.set_fuel(FUEL).expect("fuel is on");
        let instance = instantiate(&mut store);
        obs.fuel_left = store.get_fuel().expect("fuel is on");
        let instance = match instance {
            Ok(instance) => instance,
            Err(e) => {
                obs.instantiation = outcome_of(&e);
                obs.message = format!("{e:#}");
                drop(store);
                check_released(creator);
                return obs;
            }
        };
        let exports: Vec<(String, Extern)> =
            instance.exports(&mut store).map(|e| (e.name().to_string(), e.into_extern())).collect();
        obs.snapshots.push(snapshot(&mut store, &exports, creator, "after instantiation"));
        for (name, ext) in &exports {
            let Extern::Func(func) = ext else { continue };
            let ty = func.ty(&store);
            if ty.params().len() != 0 {
                continue;
            }
            let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
            store.set_fuel(FUEL).expect("fuel is on");
            let outcome = match func.call(&mut store, &[], &mut results) {
                Ok(()) => Outcome::Ok,
                Err(e) => {
                    results.clear();
                    outcome_of(&e)
                }
            };
            obs.calls.push((name.clone(), outcome, results.iter().map(value).collect()));
            obs.snapshots.push(snapshot(&mut store, &exports, creator, &format!("after calling {name:?}")));
        }
    }
    check_released(creator);
    obs
}

fn check_released(creator: Option<&FrameMemoryCreator>) {
    if let Some(creator) = creator {
        let stats = creator.stats();
        assert_eq!(stats.live, 0, "memories left alive after their store was dropped: {stats:?}");
    }
}

fn snapshot(
    store: &mut Store<Limits>,
    exports: &[(String, Extern)],
    creator: Option<&FrameMemoryCreator>,
    when: &str,
) -> Snapshot {
    let mut s = Snapshot { when: when.to_string(), memories: Vec::new(), globals: Vec::new(), tables: Vec::new() };
    for (name, ext) in exports {
        match ext {
            Extern::Memory(m) => {
                if let Some(creator) = creator {
                    check_frame_memory(store, creator, m, name);
                }
                s.memories.push((name.clone(), m.data(&*store).to_vec()));
            }
            Extern::SharedMemory(m) => {
                if let Some(creator) = creator {
                    let handle = creator.handle_shared(m).unwrap_or_else(|e| panic!("shared memory {name:?}: {e}"));
                    handle.validate().unwrap_or_else(|e| panic!("shared memory {name:?}: {e}"));
                }
                s.memories.push((name.clone(), shared_bytes(m)));
            }
            Extern::Global(g) => s.globals.push((name.clone(), value(&g.get(&mut *store)))),
            Extern::Table(t) => s.tables.push((name.clone(), t.size(&*store))),
            _ => {}
        }
    }
    s
}

fn check_frame_memory(store: &Store<Limits>, creator: &FrameMemoryCreator, m: &Memory, name: &str) {
    let handle = creator.handle(store, m).unwrap_or_else(|e| panic!("memory {name:?} is not framemap's: {e}"));
    handle.validate().unwrap_or_else(|e| panic!("memory {name:?}: {e}"));
    let report = handle.report().unwrap_or_else(|e| panic!("memory {name:?}: {e}"));
    assert_eq!(report.summary.len, m.data_size(store) as u64, "memory {name:?}: framemap and wasmtime sizes");
}
