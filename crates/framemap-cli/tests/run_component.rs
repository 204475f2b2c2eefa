//! `framemap run` of WASI preview 2 command components, and `--invoke` of
//! core modules (components: `invoke_component.rs`).
//!
//! The component is the Rust `wasm32-wasip2` test guest of
//! framemap-wasmtime (`crates/framemap-wasmtime/tests/guests/`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FRAMEMAP: &str = env!("CARGO_BIN_EXE_framemap");

fn component() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../framemap-wasmtime/tests/guests/wasip2_command.wasm");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// Runs `framemap` with `args`; its compile cache is a scratch folder of
/// this test process, not the user's.
fn framemap(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join(format!("framemap-component-test-{}-cache", std::process::id()));
    Command::new(FRAMEMAP).args(args).env("FRAMEMAP_CACHE_DIR", cache).output().expect("failed to spawn framemap")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts status 1 and exactly one `framemap: error:` line; returns it.
fn one_line_error(out: &Output) -> String {
    one_line_failure(out, 1)
}

/// Asserts status `status` (134 for a guest trap, as `wasmtime run`) and
/// exactly one `framemap: error:` line; returns it.
fn one_line_failure(out: &Output, status: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(status), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err:?}");
    assert!(lines[0].starts_with("framemap: error: "), "{err:?}");
    lines[0].to_owned()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framemap-component-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn a_command_component_gets_args_env_and_preopens() {
    let dir = scratch_dir("preopen");
    std::fs::write(dir.join("in.txt"), "x").expect("write");
    let preopen = format!("{}::/data", dir.display());
    let out = framemap(&["run", "--env", "GREETING=hi", "--dir", &preopen, &component(), "one", "--two"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], r#"args ["one", "--two"]"#);
    assert_eq!(lines[1], r#"GREETING Some("hi")"#);
    // The table comes from the data segments (an image), the call count
    // from a static initialised to 41.
    assert!(lines[2].starts_with("table da2628e9814a6c19 ") && lines[2].ends_with(" calls 42"), "{text}");
    assert_eq!(lines[3], r#"data ["in.txt"]"#);
    let written = std::fs::read_to_string(dir.join("written-by-guest.txt")).expect("the guest wrote its file");
    assert_eq!(written, "da2628e9814a6c19\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_exit_is_status_1_after_the_output() {
    let out = framemap(&["run", &component(), "exit", "3"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).starts_with(r#"args ["exit", "3"]"#), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn component_errors_are_one_line() {
    let dir = scratch_dir("errors");
    let unsatisfied = dir.join("unsatisfied.wasm");
    let wasm = wat::parse_str(r#"(component (import "example:missing/api" (instance (export "f" (func)))))"#);
    std::fs::write(&unsatisfied, wasm.expect("wat")).expect("write");
    let line = one_line_error(&framemap(&["run", unsatisfied.to_str().expect("utf-8")]));
    assert!(line.contains("failed to instantiate the component") && line.contains("example:missing/api"), "{line}");

    let no_run = dir.join("no-run.wasm");
    std::fs::write(&no_run, wat::parse_str("(component)").expect("wat")).expect("write");
    let line = one_line_error(&framemap(&["run", no_run.to_str().expect("utf-8")]));
    assert!(line.contains("is not a WASI command component"), "{line}");

    let truncated = dir.join("truncated.wasm");
    let bytes = std::fs::read(component()).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write");
    let line = one_line_error(&framemap(&["run", truncated.to_str().expect("utf-8")]));
    assert!(line.contains("failed to load") && line.contains("invalid component"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invoke_calls_an_export_with_typed_arguments() {
    let dir = scratch_dir("invoke");
    let module = dir.join("add.wat");
    std::fs::write(
        &module,
        r#"(module (func (export "add") (param i32 i64 f64) (result i64 f64)
            local.get 1 local.get 0 i64.extend_i32_s i64.add local.get 2)
           (func (export "boom") unreachable))"#,
    )
    .expect("write");
    let module = module.to_str().expect("utf-8");
    let out = framemap(&["run", "--invoke", "add", module, "-3", "10", "2.5"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "7\n2.5\n"), "{out:?}");
    // 0xffffffff is accepted as the i32 -1, as wasmtime does.
    let out = framemap(&["run", "--invoke", "add", module, "4294967295", "1", "0"]);
    assert_eq!(stdout(&out), "0\n0\n", "{out:?}");

    let line = one_line_error(&framemap(&["run", "--invoke", "add", module, "1"]));
    assert!(line.contains("takes 3 argument(s), 1 given"), "{line}");
    let line = one_line_error(&framemap(&["run", "--invoke", "add", module, "x", "1", "2"]));
    assert!(line.contains("`x` is not a i32"), "{line}");
    let line = one_line_error(&framemap(&["run", "--invoke", "nope", module]));
    assert!(line.contains("exports no function `nope`"), "{line}");
    let line = one_line_failure(&framemap(&["run", "--invoke", "boom", module]), 134);
    assert!(line.contains("guest trapped"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A command component whose `run` succeeds only once `init` has run: it
/// checks a word of its memory (initialised by a data segment) and a
/// mutable global that `init` sets.
const NEEDS_INIT: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (global $g (mut i32) (i32.const 0))
    (data (i32.const 0) "\01\00\00\00")
    (func (export "init") (i32.store (i32.const 0) (i32.const 41)) (global.set $g (i32.const 1)))
    (func (export "run") (result i32)
      (if (result i32) (i32.and (i32.eq (i32.load (i32.const 0)) (i32.const 41)) (i32.eq (global.get $g) (i32.const 1)))
        (then (i32.const 0)) (else (i32.const 1)))))
  (core instance $i (instantiate $m))
  (func $init (canon lift (core func $i "init")))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $runinst (export "run" (func $run)))
  (export "init" (func $init))
  (export "wasi:cli/run@0.2.0" (instance $runinst)))"#;

#[test]
fn a_component_initialised_wizer_style_is_restored_by_run() {
    let dir = scratch_dir("wizer");
    let wasm = dir.join("needs-init.wasm");
    std::fs::write(&wasm, wat::parse_str(NEEDS_INIT).expect("wat")).expect("write");
    let wasm = wasm.to_str().expect("utf-8");
    let snapshot = dir.join("init.snap");
    let snapshot = snapshot.to_str().expect("utf-8");
    // Without init, run fails (status 1).
    assert_eq!(framemap(&["run", wasm]).status.code(), Some(1));
    // init, then snapshot, without running.
    let out = framemap(&["run", "--init", "init", "--snapshot-out", snapshot, wasm]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("framemap: snapshot: wrote"), "{out:?}");
    // Restored: memory and global are init's, run succeeds.
    let out = framemap(&["run", "--restore", snapshot, wasm]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // inspect shows the component's memory and global.
    let out = framemap(&["inspect", snapshot]);
    let text = stdout(&out);
    assert!(text.contains("framemap:component:memory:0"), "{text}");
    assert!(text.contains("framemap:component:instance:0:global:0"), "{text}");
    // A snapshot of another component is a one-line error.
    let line = one_line_error(&framemap(&["run", "--restore", snapshot, &component()]));
    assert!(line.contains("cannot restore"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
