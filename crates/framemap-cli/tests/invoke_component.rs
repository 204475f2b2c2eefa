//! `framemap run --invoke CALL COMPONENT`: WAVE calls of a component's
//! exports, as `wasmtime run --invoke`.
//!
//! The guest is `tests/guests/invoke.wat` (its header lists the exports),
//! parsed here with the `wat` crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FRAMEMAP: &str = env!("CARGO_BIN_EXE_framemap");

fn framemap(args: &[&str]) -> Output {
    Command::new(FRAMEMAP).args(args).output().expect("failed to spawn framemap")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts status 1, nothing on stdout and exactly one `framemap: error:`
/// line; returns it.
fn one_line_error(out: &Output) -> String {
    one_line_failure(out, 1)
}

/// [`one_line_error`] for a guest trap: status 134, as `wasmtime run`.
fn one_line_trap(out: &Output) -> String {
    one_line_failure(out, 134)
}

fn one_line_failure(out: &Output, status: i32) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(status), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(out));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err:?}");
    assert!(lines[0].starts_with("framemap: error: "), "{err:?}");
    lines[0].to_owned()
}

/// A scratch directory for one test, holding the guest as `invoke.wasm`.
struct Guest {
    dir: PathBuf,
    wasm: String,
}

impl Guest {
    fn new(name: &str) -> Guest {
        let dir = std::env::temp_dir().join(format!("framemap-invoke-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guests/invoke.wat");
        let wasm = dir.join("invoke.wasm");
        std::fs::write(&wasm, wat::parse_file(&source).expect("invoke.wat parses")).expect("write");
        let wasm = wasm.to_str().expect("UTF-8 path").to_owned();
        Guest { dir, wasm }
    }

    /// `framemap run [flags] --invoke CALL invoke.wasm`.
    fn invoke(&self, flags: &[&str], call: &str) -> Output {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--invoke", call, &self.wasm]);
        framemap(&args)
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts that `call` succeeds (status 0, nothing on stderr) and prints
/// exactly `expected` and a newline.
fn assert_prints(guest: &Guest, call: &str, expected: &str) {
    let out = guest.invoke(&[], call);
    assert_eq!(out.status.code(), Some(0), "{call}: {out:?}");
    assert_eq!(stdout(&out), format!("{expected}\n"), "{call}: {out:?}");
    assert!(out.stderr.is_empty(), "{call}: {}", stderr(&out));
}

#[test]
fn results_of_every_type_are_printed_in_wave() {
    let guest = Guest::new("types");
    for (call, expected) in [
        ("add(2, 3)", "5"),
        ("add(4294967295, 1)", "0"),
        ("neg(-9000000000)", "9000000000"),
        ("neg(0)", "0"),
        ("half(5)", "2.5"),
        ("half(-0.25)", "-0.125"),
        ("third(1)", "0.33333334"),
        ("third(nan)", "nan"),
        (r#"greet("frames")"#, r#""hello, frames""#),
        (r#"greet("é\n\"q\"")"#, r#""hello, é\n\"q\"""#),
        ("sum([1, 2, 39])", "42"),
        ("sum([])", "0"),
        ("swap({x: 1, y: -2})", "{x: -2, y: 1}"),
        ("classify(-5)", "negative(5)"),
        ("classify(0)", "zero"),
        ("classify(7)", "positive(7)"),
        ("checked-div(7, 2)", "ok(3)"),
        ("nothing()", "()"),
    ] {
        assert_prints(&guest, call, expected);
    }
}

#[test]
fn data_segments_are_read_from_the_prepared_image() {
    let guest = Guest::new("image");
    assert_prints(&guest, "motto()", r#""framemap maps frames""#);
    assert_prints(&guest, "primes()", "[2, 3, 5, 7, 11, 13]");
    // The memory is a framemap memory whose data segments became an image.
    let out = guest.invoke(&["--stats"], "motto()");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = stderr(&out);
    assert!(report.contains("framemap: stats: 1 live frame report(s)"), "{report}");
    let image = report.lines().find(|line| line.trim_start().starts_with("image")).unwrap_or_default();
    assert!(image.contains(" 1 run "), "{report}");
}

#[test]
fn a_returned_err_is_printed_and_is_status_0() {
    // As `wasmtime run --invoke`: the call returned, whatever its value.
    let guest = Guest::new("err");
    assert_prints(&guest, "checked-div(1, 0)", r#"err("division by zero")"#);
}

#[test]
fn a_trap_is_one_line_and_status_134() {
    let guest = Guest::new("trap");
    let line = one_line_trap(&guest.invoke(&[], "boom()"));
    assert!(line.contains("guest trapped") && line.contains("unreachable"), "{line}");
}

#[test]
fn functions_of_exported_instances_are_found_by_full_or_bare_name() {
    let guest = Guest::new("instances");
    assert_prints(&guest, "example:guest/api.double(21)", "42");
    assert_prints(&guest, "double(21)", "42");
    assert_prints(&guest, "example:guest/other.ping()", "2");
    // A bare name in two instances is ambiguous; the candidates are named.
    let line = one_line_error(&guest.invoke(&[], "ping()"));
    assert!(
        line.contains("more than one exported instance has a function `ping`")
            && line.contains("`example:guest/api.ping`, `example:guest/other.ping`"),
        "{line}"
    );
    // A qualified name is not searched for elsewhere.
    let line = one_line_error(&guest.invoke(&[], "example:guest/other.double(1)"));
    assert!(line.contains("exports no function `example:guest/other.double`"), "{line}");
}

#[test]
fn wasi_cli_run_is_not_called_by_invoke() {
    // The guest's `wasi:cli/run` traps: every call above succeeded without
    // it, and naming it calls it.
    let guest = Guest::new("run");
    let line = one_line_trap(&guest.invoke(&[], "wasi:cli/run.run@0.2.0()"));
    assert!(line.contains("guest trapped"), "{line}");
    let line = one_line_trap(&framemap(&["run", &guest.wasm]));
    assert!(line.contains("guest trapped"), "{line}");
}

#[test]
fn a_command_component_gets_its_arguments_as_argv() {
    // As wasmtime: with --invoke, the arguments after the component are
    // still the guest's argv, and `run` is found in `wasi:cli/run` by its
    // bare name. Its `result` (no payloads) prints as `ok`.
    let command = Path::new(env!("CARGO_MANIFEST_DIR")).join("../framemap-wasmtime/tests/guests/wasip2_command.wasm");
    let out = framemap(&["run", "--invoke", "run()", command.to_str().expect("UTF-8 path"), "one", "--two"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&r#"args ["one", "--two"]"#), "{text}");
    assert_eq!(lines.last(), Some(&"ok"), "{text}");
}

#[test]
fn bad_calls_are_one_line_errors_before_anything_runs() {
    let guest = Guest::new("errors");
    for (call, expected) in [
        // Malformed expressions.
        ("add", "`--invoke add` is not a WAVE function call `NAME(ARG, ...)`"),
        ("add(1, ", "`--invoke add(1, ` is not a WAVE function call"),
        ("add(1 2)", "is not a WAVE function call"),
        ("(1)", "is not a WAVE function call"),
        ("a:b(1)", "is not a WAVE function call"),
        // Lexed as a name by WAVE, refused by WIT: a version needs a package.
        ("add@1.0.0(1, 2)", "`add@1.0.0` is not a function name"),
        // No such export, or not a function.
        ("nope()", "`--invoke nope()`: the component exports no function `nope`"),
        ("example:guest/api.nope()", "exports no function `example:guest/api.nope`"),
        ("point()", "`point` is exported, but as a type, not as a function"),
        ("example:guest/api()", "`example:guest/api` is exported, but as an instance, not as a function"),
        // Wrong argument count or type, against the function's type.
        ("add(1)", "the arguments do not fit `add: func(a: u32, b: u32) -> u32`: invalid params: missing required"),
        ("add(1, 2, 3)", "the arguments do not fit `add: func(a: u32, b: u32) -> u32`: invalid params: more param"),
        (r#"add("1", 2)"#, "the arguments do not fit `add: func(a: u32, b: u32) -> u32`"),
        ("add(-1, 2)", "the arguments do not fit"),
        ("add(4294967296, 2)", "the arguments do not fit"),
        ("swap({x: 1})", "the arguments do not fit `swap: func(p: record { x: s32, y: s32 }) -> record"),
        ("sum([1, -1])", "the arguments do not fit `sum: func(xs: list<u32>) -> u32`"),
        ("nothing(1)", "the arguments do not fit `nothing: func()`"),
    ] {
        let line = one_line_error(&guest.invoke(&[], call));
        assert!(line.contains(expected), "{call}: expected {expected:?} in {line:?}");
    }
}

#[test]
fn invoke_conflicts_with_the_snapshot_flags() {
    // As for modules: clap refuses the combination.
    let guest = Guest::new("flags");
    let snapshot = guest.dir.join("x.snap");
    let snapshot = snapshot.to_str().expect("UTF-8 path");
    for flags in [["--restore", snapshot], ["--snapshot-out", snapshot]] {
        let line = one_line_error(&guest.invoke(&flags, "add(1, 2)"));
        assert!(line.contains("cannot be used with"), "{flags:?}: {line}");
    }
    let line = one_line_error(&guest.invoke(&["--init", "nothing", "--snapshot-out", snapshot], "add(1, 2)"));
    assert!(line.contains("cannot be used with"), "{line}");
}

#[test]
fn resources_are_refused_before_the_call() {
    // WAVE has no notation for a resource: neither argument nor result. The
    // function would trap if it were called.
    let guest = Guest::new("resources");
    let wasm = guest.dir.join("resource.wasm");
    let component = wat::parse_str(
        r#"(component
          (type $r (resource (rep i32)))
          (export $r-t "r" (type $r))
          (core module $m
            (func (export "make") (result i32) unreachable)
            (func (export "take") (param i32) unreachable))
          (core instance $i (instantiate $m))
          (func (export "make") (result (own $r-t)) (canon lift (core func $i "make")))
          (func (export "take") (param "r" (own $r-t)) (canon lift (core func $i "take"))))"#,
    );
    std::fs::write(&wasm, component.expect("wat")).expect("write");
    let wasm = wasm.to_str().expect("UTF-8 path");
    let line = one_line_error(&framemap(&["run", "--invoke", "make()", wasm]));
    assert!(line.contains("`make` returns a resource, which has no WAVE notation"), "{line}");
    let line = one_line_error(&framemap(&["run", "--invoke", "take(1)", wasm]));
    assert!(line.contains("`take` takes a resource, which has no WAVE notation"), "{line}");
}
