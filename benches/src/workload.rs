//! One allocator ready to run a guest: instantiate it (+ dirty pages or call
//! an export) and drop it, keep many instances alive, or call its compute
//! export. The CLI and the criterion benches time exactly these calls.

use crate::allocator::{Allocator, Setup};
use crate::builtin::{self, Touch};
use anyhow::{Context as _, Result, bail, ensure};
use framemap_wasmtime::{FrameMemoryCreator, PreparedInstancePre, PreparedModule};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{
    Engine, Extern, ExternType, Func, Instance, InstancePre, Linker, Module, ModuleExport, Store, TypedFunc, Val,
};

/// Which module a [`Target`] runs and what its samples call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Guest {
    /// The built-in module ([`crate::builtin`]): each instance calls
    /// `touch(k)` (or `touch_run(k)`, see [`Target::spawn_touching`]);
    /// compute calls `run`.
    Builtin,
    /// A user's module: each instance calls `export` once (if given, and it
    /// must take no parameters); compute calls it repeatedly.
    User {
        /// The export to call.
        export: Option<String>,
    },
}

/// How an allocator instantiates: wasmtime's `InstancePre`, or framemap's
/// prepared one (images mapped copy-on-write).
enum Pre {
    Wasmtime(InstancePre<()>),
    Framemap(PreparedInstancePre<()>),
}

impl Pre {
    fn instantiate(&self, store: &mut Store<()>) -> wasmtime::Result<Instance> {
        match self {
            Pre::Wasmtime(pre) => pre.instantiate(store),
            Pre::Framemap(pre) => pre.instantiate(store),
        }
    }
}

/// What each new instance runs before it counts as ready.
enum Action {
    /// The built-in `touch(k)` and `touch_run(k)`.
    Touch { scattered: ModuleExport, contiguous: ModuleExport },
    /// A user's export without parameters, returning `results` values.
    Call(ModuleExport, usize),
    /// Nothing.
    None,
}

/// A live instance and its store (dropping it drops both).
pub struct Live {
    /// The instance's store.
    pub store: Store<()>,
    /// The instance.
    pub instance: Instance,
}

/// One allocator with the guest compiled for it and its imports resolved
/// once (one `InstancePre` per allocator, alike for all).
pub struct Target {
    allocator: Allocator,
    engine: Engine,
    creator: Option<Arc<FrameMemoryCreator>>,
    module: Module,
    pre: Pre,
    action: Action,
    compute: Option<ModuleExport>,
    notes: Vec<String>,
}

impl Target {
    /// Compiles `wasm` (binary or text) for `setup`'s engine, through
    /// [`PreparedModule`] on framemap, and resolves its imports (unknown
    /// function imports trap when called).
    pub fn new(setup: Setup, wasm: &[u8], guest: &Guest) -> Result<Target> {
        let Setup { allocator, engine, creator, mut notes } = setup;
        let mut linker = Linker::<()>::new(&engine);
        let (module, pre) = match &creator {
            Some(creator) => {
                let prepared = PreparedModule::new(creator, &engine, wasm)?;
                if let Some(why) = prepared.not_prepared() {
                    notes.push(format!("module not prepared (data copied at each instantiation): {why}"));
                }
                linker.define_unknown_imports_as_traps(prepared.module())?;
                (prepared.module().clone(), Pre::Framemap(prepared.instance_pre(&linker)?))
            }
            None => {
                let module = Module::new(&engine, wasm)?;
                linker.define_unknown_imports_as_traps(&module)?;
                let pre = linker.instantiate_pre(&module)?;
                (module, Pre::Wasmtime(pre))
            }
        };
        let (action, compute) = match guest {
            Guest::Builtin => {
                let index = |name| module.get_export_index(name).with_context(|| format!("no export `{name}`"));
                let action = Action::Touch {
                    scattered: index(builtin::TOUCH_EXPORT)?,
                    contiguous: index(builtin::TOUCH_RUN_EXPORT)?,
                };
                (action, Some(index(builtin::COMPUTE_EXPORT)?))
            }
            Guest::User { export: None } => (Action::None, None),
            Guest::User { export: Some(name) } => {
                let results = check_export(&module, name)?;
                let index = module.get_export_index(name).with_context(|| format!("no export `{name}`"))?;
                (Action::Call(index, results), Some(index))
            }
        };
        Ok(Target { allocator, engine, creator, module, pre, action, compute, notes })
    }

    /// The allocator.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// framemap's creator, if this is framemap.
    pub fn creator(&self) -> Option<&Arc<FrameMemoryCreator>> {
        self.creator.as_ref()
    }

    /// The compiled module.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// What was adjusted or noticed while setting up (e.g. framemap could not
    /// prepare the module).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// A new store and instance that ran its action: `touch(k)` for the
    /// built-in module, the export (if any) for a user's.
    pub fn spawn(&self, k: u32) -> Result<Live> {
        self.spawn_touching(k, Touch::Scattered)
    }

    /// [`Target::spawn`], the built-in module dirtying its `k` pages as
    /// `touch` says (a user's module ignores `touch`).
    pub fn spawn_touching(&self, k: u32, touch: Touch) -> Result<Live> {
        let mut store = Store::new(&self.engine, ());
        let instance = self.pre.instantiate(&mut store)?;
        match &self.action {
            Action::Touch { scattered, contiguous } => {
                let export = match touch {
                    Touch::Scattered => scattered,
                    Touch::Contiguous => contiguous,
                };
                let touch: TypedFunc<i32, ()> = func(&instance, &mut store, export)?.typed(&store)?;
                touch.call(&mut store, k as i32)?;
            }
            Action::Call(export, results) => {
                let f = func(&instance, &mut store, export)?;
                let mut results = vec![Val::I32(0); *results];
                f.call(&mut store, &[], &mut results)?;
            }
            Action::None => {}
        }
        Ok(Live { store, instance })
    }

    /// One sample of the instantiate workload: `Store::new` + instantiate +
    /// action + drop, timed.
    pub fn sample(&self, k: u32) -> Result<Duration> {
        self.sample_touching(k, Touch::Scattered)
    }

    /// [`Target::sample`] with the `k` pages dirtied as `touch` says (see
    /// [`Target::spawn_touching`]).
    pub fn sample_touching(&self, k: u32, touch: Touch) -> Result<Duration> {
        let start = Instant::now();
        let live = self.spawn_touching(k, touch)?;
        drop(live);
        Ok(start.elapsed())
    }

    /// An instance ready to call its compute export repeatedly; `None` if
    /// the guest has none.
    pub fn runner(&self) -> Result<Option<Runner>> {
        let Some(export) = &self.compute else { return Ok(None) };
        let Live { mut store, instance } = self.spawn(0)?;
        let func = func(&instance, &mut store, export)?;
        let typed = func.typed::<(), i64>(&store).ok();
        let results = vec![Val::I32(0); func.ty(&store).results().len()];
        Ok(Some(Runner { store, func, typed, results }))
    }

    /// Checks that the built-in module's memory holds the image on a new
    /// instance, that `touch` and `touch_run` dirty what they should, and
    /// that the next instance (on a recycled memory, for allocators that
    /// recycle) sees the image again, not the previous instance's writes.
    pub fn verify_builtin(&self, image: &[u8]) -> Result<()> {
        let name = self.allocator.name();
        let check = |k: u32, touch: Touch, when: &str| -> Result<()> {
            let mut live = self.spawn_touching(k, touch)?;
            let memory = live
                .instance
                .get_memory(&mut live.store, builtin::MEMORY_EXPORT)
                .context("the built-in module exports no memory")?;
            let data = memory.data(&live.store);
            ensure!(data.len() == (builtin::MIN_PAGES as usize) << 16, "{name}: memory of {} bytes", data.len());
            let touched: Vec<usize> = (0..k).map(|i| touch.address(i, k) as usize).collect();
            for offset in (0..image.len()).step_by(65536).chain([image.len() - 1]) {
                let want = if touched.contains(&offset) { builtin::TOUCH_VALUE } else { image[offset] };
                ensure!(data[offset] == want, "{name}: {when}: byte {offset:#x} is {:#x}, not {want:#x}", data[offset]);
            }
            for &offset in &touched {
                ensure!(data[offset] == builtin::TOUCH_VALUE, "{name}: {when}: touch missed byte {offset:#x}");
            }
            for offset in [image.len(), image.len() + 65536, data.len() - 1] {
                ensure!(data[offset] == 0, "{name}: {when}: byte {offset:#x} past the image is not zero");
            }
            Ok(())
        };
        let (scattered, contiguous) = (Touch::Scattered, Touch::Contiguous);
        check(0, scattered, "first instance")?;
        check(256, scattered, "after touch(256)")?;
        check(0, scattered, "instance after a touched one")?;
        check(16, scattered, "after touch(16)")?;
        check(0, scattered, "instance after a touched one")?;
        check(256, contiguous, "after touch_run(256)")?;
        check(0, scattered, "instance after a touched one")
    }
}

/// `bytes` as a binary module: parsed as text unless it already is binary.
pub fn to_binary(bytes: &[u8]) -> Result<Vec<u8>> {
    Ok(wat::parse_bytes(bytes).map_err(|e| anyhow::anyhow!("{e}"))?.into_owned())
}

/// The function `export` of `instance`.
fn func(instance: &Instance, store: &mut Store<()>, export: &ModuleExport) -> Result<Func> {
    match instance.get_module_export(&mut *store, export) {
        Some(Extern::Func(f)) => Ok(f),
        _ => bail!("export is not a function"),
    }
}

/// Checks that `module` exports a function `name` without parameters, and
/// returns how many results it has.
pub fn check_export(module: &Module, name: &str) -> Result<usize> {
    match module.get_export(name) {
        None => {
            let funcs: Vec<String> = module
                .exports()
                .filter(|e| matches!(e.ty(), ExternType::Func(_)))
                .map(|e| format!("`{}`", e.name()))
                .collect();
            let known = if funcs.is_empty() { "none".to_owned() } else { funcs.join(", ") };
            bail!("the module has no export named `{name}` (exported functions: {known})")
        }
        Some(ExternType::Func(ty)) => {
            let params = ty.params().len();
            ensure!(
                params == 0,
                "export `{name}` takes {params} parameter{}; --export needs a function without parameters",
                if params == 1 { "" } else { "s" }
            );
            Ok(ty.results().len())
        }
        Some(other) => {
            let kind = match other {
                ExternType::Global(_) => "a global",
                ExternType::Table(_) => "a table",
                ExternType::Memory(_) => "a memory",
                ExternType::Tag(_) => "a tag",
                ExternType::Func(_) => "a function",
            };
            bail!("export `{name}` is {kind}, not a function")
        }
    }
}

/// A live instance whose compute export is called repeatedly.
pub struct Runner {
    store: Store<()>,
    func: Func,
    typed: Option<TypedFunc<(), i64>>,
    results: Vec<Val>,
}

impl Runner {
    /// Calls the export once; returns its `i64` result if it has exactly that.
    pub fn run(&mut self) -> Result<Option<i64>> {
        match &self.typed {
            Some(typed) => Ok(Some(typed.call(&mut self.store, ())?)),
            None => {
                self.func.call(&mut self.store, &[], &mut self.results)?;
                Ok(None)
            }
        }
    }

    /// Times one [`Runner::run`].
    pub fn sample(&mut self) -> Result<Duration> {
        let start = Instant::now();
        self.run()?;
        Ok(start.elapsed())
    }
}

/// Resident set size of this process, in bytes (`/proc/self/statm`:
/// resident pages × page size).
pub fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("cannot read /proc/self/statm")?;
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .with_context(|| format!("unexpected /proc/self/statm: {statm:?}"))?;
    Ok(resident * framemap::host_page_size() as u64)
}

/// What [`footprint`] measured.
#[derive(Clone, Debug)]
pub struct Footprint {
    /// RSS growth from just before the first instance to just after the
    /// last, in bytes (0 if RSS shrank).
    pub rss_bytes: u64,
    /// Time to create each instance (store + instantiate + touch), in ns.
    pub per_instance_ns: Vec<u64>,
}

/// Creates `instances` live instances of `target`, each having dirtied `k`
/// pages, and measures RSS growth and time per instance; drops them all
/// before returning.
pub fn footprint(target: &Target, instances: usize, k: u32) -> Result<Footprint> {
    let mut live = Vec::with_capacity(instances);
    let mut per_instance_ns = Vec::with_capacity(instances);
    let before = rss_bytes()?;
    for _ in 0..instances {
        let start = Instant::now();
        live.push(target.spawn(k)?);
        per_instance_ns.push(nanos(start.elapsed()));
    }
    let after = rss_bytes()?;
    drop(live);
    Ok(Footprint { rss_bytes: after.saturating_sub(before), per_instance_ns })
}

/// `d` in whole nanoseconds (saturating).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Samples every `i < count` in rotating blocks: each round runs, for every
/// `i` in turn (starting one further along each round, so slow drifts and
/// noise hit every `i` alike), `block` consecutive calls of `sample(i)`.
/// The first `warmup` calls of each `i` are not recorded, the next `samples`
/// are. Returns the recorded durations, in nanoseconds, per `i`.
///
/// `block` = 1 alternates the `i` call by call. Larger blocks measure each
/// `i` in its steady state: a call then follows calls of the same `i`, not
/// of another whose work (an 8 MiB copy, say) evicted its caches and TLB
/// entries, which would otherwise be charged to the next `i` in the
/// rotation.
pub fn interleaved(
    count: usize,
    warmup: usize,
    samples: usize,
    block: usize,
    mut sample: impl FnMut(usize) -> Result<Duration>,
) -> Result<Vec<Vec<u64>>> {
    let block = block.max(1);
    let total = warmup + samples;
    let mut recorded = vec![Vec::with_capacity(samples); count];
    for (round, first) in (0..total).step_by(block).enumerate() {
        let calls = first..total.min(first + block);
        for j in 0..count {
            let i = (round + j) % count;
            for call in calls.clone() {
                let took = sample(i)?;
                if call >= warmup {
                    recorded[i].push(nanos(took));
                }
            }
        }
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::EngineOptions;

    #[test]
    fn interleaved_rotates_and_skips_warmup() {
        let mut order = Vec::new();
        let got = interleaved(3, 1, 2, 1, |i| {
            order.push(i);
            Ok(Duration::from_nanos(i as u64 + 1))
        })
        .unwrap();
        assert_eq!(order, [0, 1, 2, 1, 2, 0, 2, 0, 1]);
        assert_eq!(got, vec![vec![1, 1], vec![2, 2], vec![3, 3]]);
    }

    #[test]
    fn interleaved_runs_blocks_and_a_short_last_one() {
        let mut order = Vec::new();
        let mut call = 0u64;
        let got = interleaved(2, 1, 4, 2, |i| {
            order.push(i);
            call += 1;
            Ok(Duration::from_nanos(call))
        })
        .unwrap();
        // Rounds of 2, 2 and 1 calls per i (5 in all), rotating the start.
        assert_eq!(order, [0, 0, 1, 1, 1, 1, 0, 0, 0, 1]);
        // The first call of each i is the warm-up; then 4 recorded each.
        assert_eq!(got, vec![vec![2, 7, 8, 9], vec![4, 5, 6, 10]]);
    }

    #[test]
    fn rss_is_positive() {
        assert!(rss_bytes().unwrap() > 0);
    }

    #[test]
    fn user_export_checks() {
        let engine = Engine::default();
        let module = Module::new(
            &engine,
            r#"(module (memory (export "m") 1) (func (export "ok") (result i32) i32.const 1)
                (func (export "p") (param i32)))"#,
        )
        .unwrap();
        assert_eq!(check_export(&module, "ok").unwrap(), 1);
        let err = check_export(&module, "p").unwrap_err().to_string();
        assert!(err.contains("takes 1 parameter;"), "{err}");
        let err = check_export(&module, "m").unwrap_err().to_string();
        assert!(err.contains("is a memory"), "{err}");
        let err = check_export(&module, "nope").unwrap_err().to_string();
        assert!(err.contains("no export named `nope`") && err.contains("`ok`, `p`"), "{err}");
    }

    #[test]
    fn builtin_runs_alike_on_every_allocator() {
        let wasm = builtin::wasm();
        let image = builtin::image();
        let expected = builtin::expected_compute(&image);
        for allocator in Allocator::ALL {
            let setup = allocator.setup(&EngineOptions::default()).unwrap();
            let target = Target::new(setup, &wasm, &Guest::Builtin).unwrap();
            if allocator == Allocator::Framemap {
                assert!(target.notes().is_empty(), "{:?}", target.notes());
            }
            target.verify_builtin(&image).unwrap();
            let mut runner = target.runner().unwrap().unwrap();
            assert_eq!(runner.run().unwrap(), Some(expected), "{allocator}");
        }
    }
}
