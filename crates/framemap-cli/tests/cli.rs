//! Integration tests of the `framemap` binary: run the bundled guests in
//! `examples/wasm/` and check output, exit statuses and error reporting.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `framemap` binary under test.
const FRAMEMAP: &str = env!("CARGO_BIN_EXE_framemap");

/// Path of a bundled guest module in `examples/wasm/`.
fn guest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/wasm")
        .join(name)
        .to_str()
        .expect("UTF-8 path")
        .to_owned()
}

/// Runs `framemap` with `args` and returns its output. Its compile cache is
/// a scratch folder of this test process, not the user's.
fn framemap(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join(format!("framemap-cli-test-{}-cache", std::process::id()));
    Command::new(FRAMEMAP).args(args).env("FRAMEMAP_CACHE_DIR", cache).output().expect("failed to spawn framemap")
}

/// The process exit status, failing the test if it died from a signal.
fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("framemap killed by a signal: {out:?}"))
}

/// Stdout as text.
fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as text.
fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `out` failed with status 1 and exactly one
/// `framemap: error: ...` line on stderr (no panic, no backtrace), and
/// returns that line.
fn assert_one_line_error(out: &Output) -> String {
    assert_one_line_failure(out, 1)
}

/// [`assert_one_line_error`] with exit status `status` (134 for a guest
/// trap, as `wasmtime run`).
fn assert_one_line_failure(out: &Output, status: i32) -> String {
    let err = stderr(out);
    assert_eq!(code(out), status, "exit status; stderr: {err}");
    assert!(!err.contains("panicked"), "panic on stderr: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "backtrace hint on stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got: {err:?}");
    assert!(lines[0].starts_with("framemap: error: "), "unexpected stderr: {err:?}");
    assert!(lines[0].len() > "framemap: error: ".len(), "empty message: {err:?}");
    lines[0].to_owned()
}

/// Number of primes below `limit`, by an independent sieve.
fn primes_below(limit: usize) -> usize {
    if limit < 3 {
        return 0;
    }
    let mut composite = vec![false; limit];
    let mut i = 2;
    while i * i < limit {
        if !composite[i] {
            for j in (i * i..limit).step_by(i) {
                composite[j] = true;
            }
        }
        i += 1;
    }
    (2..limit).filter(|&n| !composite[n]).count()
}

/// The line `hello.wat` must print for `limit`.
fn hello_line(limit: usize) -> String {
    format!("hello from framemap: sieve found {} primes below {limit}\n", primes_below(limit))
}

/// A fresh, empty scratch directory under the system temp dir.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framemap-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn reference_sieve_is_right() {
    assert_eq!(primes_below(2), 0);
    assert_eq!(primes_below(3), 1);
    assert_eq!(primes_below(10), 4);
    assert_eq!(primes_below(100), 25);
    assert_eq!(primes_below(1_000_000), 78_498);
}

#[test]
fn hello_prints_the_sieve_result() {
    let out = framemap(&["run", &guest("hello.wat")]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), hello_line(1_000_000));
    assert_eq!(stderr(&out), "");
}

#[test]
fn hello_takes_its_limit_from_argv() {
    for limit in [2, 3, 10, 65_536, 65_537, 5_000_000] {
        let out = framemap(&["run", &guest("hello.wat"), &limit.to_string()]);
        assert_eq!(code(&out), 0, "limit {limit}; stderr: {}", stderr(&out));
        assert_eq!(stdout(&out), hello_line(limit), "limit {limit}");
    }
}

#[test]
fn guest_exit_status_from_its_own_usage_error() {
    let out = framemap(&["run", &guest("hello.wat"), "not-a-number"]);
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).starts_with("hello: usage:"), "stderr: {}", stderr(&out));
}

#[test]
fn everything_after_the_module_goes_to_the_guest() {
    // `--stats` after MODULE is a guest argument, not ours: hello rejects it.
    let out = framemap(&["run", &guest("hello.wat"), "--stats"]);
    assert_eq!(code(&out), 2, "stderr: {}", stderr(&out));
    assert!(stderr(&out).starts_with("hello: usage:"), "stderr: {}", stderr(&out));
}

#[test]
fn proc_exit_status_propagates() {
    let out = framemap(&["run", &guest("exit.wat")]);
    assert_eq!(code(&out), 7, "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn env_is_visible_to_the_guest() {
    for status in [0, 42, 125] {
        let env = format!("EXIT_CODE={status}");
        let out = framemap(&["run", "--env", "OTHER=x", "--env", &env, &guest("exit.wat")]);
        assert_eq!(code(&out), status, "stderr: {}", stderr(&out));
    }
}

#[test]
fn out_of_range_exit_status_is_an_error() {
    let out = framemap(&["run", "--env", "EXIT_CODE=200", &guest("exit.wat")]);
    let line = assert_one_line_error(&out);
    assert!(line.contains("exit status"), "{line}");
}

#[test]
fn trap_is_one_line_and_fails() {
    let out = framemap(&["run", &guest("trap.wat")]);
    let line = assert_one_line_failure(&out, 134);
    assert!(line.starts_with("framemap: error: guest trapped: "), "{line}");
    assert!(line.contains("integer divide by zero"), "{line}");
    // Output the guest produced before trapping is still delivered.
    assert_eq!(stdout(&out), "trap: about to divide by zero\n");
}

#[test]
fn missing_module_is_one_line_error() {
    let missing = std::env::temp_dir().join(format!("framemap-cli-test-{}-missing.wasm", std::process::id()));
    let out = framemap(&["run", missing.to_str().unwrap()]);
    let line = assert_one_line_error(&out);
    assert!(line.contains("missing.wasm"), "{line}");
}

#[test]
fn invalid_wasm_is_one_line_error() {
    let dir = scratch_dir("invalid");
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, [0xde, 0xad, 0xbe, 0xef, 0xff, 0x00, 0x13, 0x37, 0x80, 0x81]).unwrap();
    let truncated = dir.join("truncated.wasm");
    std::fs::write(&truncated, b"\0asm\x01\0\0\0\x01\x05").unwrap();
    let ill_typed = dir.join("ill_typed.wat");
    std::fs::write(&ill_typed, "(module (func (export \"_start\") i32.add))").unwrap();
    let bad_syntax = dir.join("bad_syntax.wat");
    std::fs::write(&bad_syntax, "(module\n  (func (export \"_start\")\n    i32.frob))\n").unwrap();
    for path in [&garbage, &truncated, &ill_typed, &bad_syntax] {
        let out = framemap(&["run", path.to_str().unwrap()]);
        assert_one_line_error(&out);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn module_without_start_is_one_line_error() {
    let dir = scratch_dir("nostart");
    let module = dir.join("reactor.wat");
    std::fs::write(&module, "(module (memory (export \"memory\") 1) (func (export \"work\")))").unwrap();
    let out = framemap(&["run", module.to_str().unwrap()]);
    let line = assert_one_line_error(&out);
    assert!(line.contains("_start"), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_import_is_one_line_error() {
    let dir = scratch_dir("import");
    let module = dir.join("import.wat");
    std::fs::write(&module, "(module (import \"env\" \"nope\" (func)) (func (export \"_start\")))").unwrap();
    let out = framemap(&["run", module.to_str().unwrap()]);
    let line = assert_one_line_error(&out);
    assert!(line.contains("env::nope"), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags_are_one_line_errors() {
    let hello = guest("hello.wat");
    let cases: [&[&str]; 7] = [
        &["run", "--env", "NO_EQUALS_SIGN", &hello],
        &["run", "--env", "=value", &hello],
        &["run", "--dir", "::guest", &hello],
        &["run", "--dir", "host::", &hello],
        &["run", "--no-such-flag", &hello],
        &["run"],
        &["no-such-subcommand"],
    ];
    for args in cases {
        let out = framemap(args);
        assert_one_line_error(&out);
        assert_eq!(stdout(&out), "", "{args:?}");
    }
    assert_one_line_error(&framemap(&[]));
}

#[test]
fn missing_preopen_dir_is_one_line_error() {
    let missing = std::env::temp_dir().join(format!("framemap-cli-test-{}-no-such-dir", std::process::id()));
    let dir = format!("{}::out", missing.display());
    let out = framemap(&["run", "--dir", &dir, &guest("write_file.wat")]);
    assert_one_line_error(&out);
}

#[test]
fn preopened_dir_is_writable_by_the_guest() {
    let host = scratch_dir("preopen");
    for dir_flag in [format!("{}::out", host.display()), host.display().to_string()] {
        let _ = std::fs::remove_file(host.join("hello.txt"));
        let out = framemap(&["run", "--dir", &dir_flag, &guest("write_file.wat")]);
        assert_eq!(code(&out), 0, "--dir {dir_flag}; stderr: {}", stderr(&out));
        let written = std::fs::read_to_string(host.join("hello.txt")).unwrap();
        assert_eq!(written, "written by a framemap guest\n");
    }
    std::fs::remove_dir_all(&host).unwrap();
}

#[test]
fn no_preopen_means_no_filesystem() {
    // Without --dir there is no fd 3: path_open fails with EBADF (8).
    let out = framemap(&["run", &guest("write_file.wat")]);
    assert_eq!(code(&out), 8, "stderr: {}", stderr(&out));
}

#[test]
fn help_succeeds() {
    for args in [&["--help"][..], &["run", "--help"], &["--version"]] {
        let out = framemap(args);
        assert_eq!(code(&out), 0, "{args:?}");
        assert!(!stdout(&out).is_empty(), "{args:?}");
    }
}

/// Pending the framemap-wasmtime implementation: the stub creator reports no
/// live memories, so this fails until the real `live_reports` lands.
#[test]
fn stats_prints_a_report_per_memory() {
    let out = framemap(&["run", "--stats", &guest("hello.wat")]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), hello_line(1_000_000));
    let err = stderr(&out);
    // Lines of the reports themselves, not framemap's own header line.
    let report_lines: Vec<&str> = err.lines().filter(|line| !line.starts_with("framemap:")).collect();
    assert!(
        report_lines.iter().any(|line| line.to_lowercase().contains("memory")),
        "expected a frame report mentioning `memory` on stderr, got: {err:?}"
    );
}

/// A WASI command whose `_start` prints a line held in memory (its length
/// in a mutable, unexported global), and whose `init` export replaces that
/// line and grows the memory: what a fresh run and a restored run print
/// tells which state they started from.
const SNAPSHOT_GUEST: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 4)
  (global $len (mut i32) (i32.const 6))
  (global $starts (mut i32) (i32.const 0))
  (data (i32.const 100) "fresh\n")
  (data (i32.const 200) "initialised\n")
  (func $start (global.set $starts (i32.add (global.get $starts) (i32.const 1))))
  (start $start)
  (func (export "init")
    (memory.copy (i32.const 100) (i32.const 200) (i32.const 12))
    (global.set $len (i32.const 12))
    (drop (memory.grow (i32.const 1)))
    (i32.store (i32.const 70000) (i32.const 1)))
  (func (export "_start")
    ;; The start function ran once (fresh) or never again (restored).
    (if (i32.ne (global.get $starts) (i32.const 1)) (then unreachable))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (global.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

#[test]
fn a_snapshot_taken_after_init_is_restored_by_run_and_shown_by_inspect() {
    let dir = scratch_dir("snapshot");
    let module = dir.join("guest.wat");
    std::fs::write(&module, SNAPSHOT_GUEST).unwrap();
    let module = module.to_str().unwrap();
    let snap = dir.join("guest.snap");
    let snap = snap.to_str().unwrap();

    let fresh = framemap(&["run", module]);
    assert_eq!((code(&fresh), stdout(&fresh).as_str()), (0, "fresh\n"), "{}", stderr(&fresh));

    let init = framemap(&["run", "--init", "init", "--snapshot-out", snap, module]);
    assert_eq!(code(&init), 0, "{}", stderr(&init));
    assert_eq!(stdout(&init), "", "--init does not run _start");
    assert!(stderr(&init).contains("framemap: snapshot: wrote"), "{}", stderr(&init));

    let restored = framemap(&["run", "--restore", snap, module]);
    assert_eq!((code(&restored), stdout(&restored).as_str()), (0, "initialised\n"), "{}", stderr(&restored));

    let shown = framemap(&["inspect", snap]);
    assert_eq!(code(&shown), 0, "{}", stderr(&shown));
    let text = stdout(&shown);
    assert!(text.contains("checksum  ok"), "{text}");
    assert!(text.contains("memory \"framemap:memory:0\": 128.0 KiB (32 pages)"), "{text}");
    assert!(text.contains("parent    none"), "{text}");

    let json = framemap(&["inspect", "--json", snap]);
    assert_eq!(code(&json), 0);
    let json = stdout(&json);
    assert!(json.starts_with('{') && json.trim_end().ends_with('}'), "{json}");
    assert!(json.contains("\"checksum\":\"ok\"") && json.contains("\"parent\":null"), "{json}");
    assert!(json.contains("\"len\":131072"), "{json}");

    // A damaged data page: inspect prints the verdict and fails.
    let mut bytes = std::fs::read(snap).unwrap();
    bytes[framemap::host_page_size() + 1] ^= 0xff;
    let damaged = dir.join("damaged.snap");
    std::fs::write(&damaged, &bytes).unwrap();
    let out = framemap(&["inspect", damaged.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("checksum  FAILED"), "{}", stdout(&out));
}

#[test]
fn bad_snapshots_are_one_line_errors() {
    let dir = scratch_dir("bad-snapshot");
    let module = dir.join("guest.wat");
    std::fs::write(&module, SNAPSHOT_GUEST).unwrap();
    let module = module.to_str().unwrap();
    let junk = dir.join("junk.snap");
    std::fs::write(&junk, b"not a snapshot at all").unwrap();
    let junk = junk.to_str().unwrap();
    let line = assert_one_line_error(&framemap(&["run", "--restore", junk, module]));
    assert!(line.contains("not a framemap snapshot"), "{line}");
    let line = assert_one_line_error(&framemap(&["inspect", junk]));
    assert!(line.contains("not a framemap snapshot"), "{line}");
    assert_one_line_error(&framemap(&["inspect", dir.join("missing.snap").to_str().unwrap()]));

    // Another module's snapshot.
    let snap = dir.join("hello.snap");
    let out = framemap(&["run", "--snapshot-out", snap.to_str().unwrap(), &guest("hello.wat")]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let line = assert_one_line_error(&framemap(&["run", "--restore", snap.to_str().unwrap(), module]));
    assert!(line.contains("does not fit"), "{line}");
    // --init needs --snapshot-out.
    assert_one_line_error(&framemap(&["run", "--init", "init", module]));
}
