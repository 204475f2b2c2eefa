//! `framemap run --restore FILE --working-set-out OUT`: records the pages a
//! restored run touches and writes FILE's state again with that working
//! set; `framemap inspect` shows it, and a restore from OUT runs as one
//! from FILE.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `framemap` binary under test with `args`.
fn framemap(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_framemap")).args(args).output().expect("failed to spawn framemap")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or_else(|| panic!("framemap killed by a signal: {out:?}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh directory for this test's files.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framemap-cli-ws-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A WASI command: `init` writes one 4 KiB page in eight of a 1 MiB memory
/// and replaces the line `_start` prints; `_start` reads 64 pages (every
/// other one of the first 128), prints the line with a count of how many
/// held init's mark, and counts its runs in a global.
const GUEST: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 16)
  (global $runs (mut i32) (i32.const 0))
  (data (i32.const 100) "fresh    \n")
  (func (export "init")
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 32)))
        (i32.store (i32.add (i32.mul (local.get $i) (i32.const 32768)) (i32.const 16)) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i64.store (i32.const 100) (i64.const 0x203a74696e69)))
  (func (export "_start")
    (local $i i32) (local $marks i32)
    (if (i32.ne (global.get $runs) (i32.const 0)) (then unreachable))
    (global.set $runs (i32.const 1))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (i32.const 128)))
        (local.set $marks (i32.add (local.get $marks)
          (i32.load (i32.add (i32.mul (local.get $i) (i32.const 4096)) (i32.const 16)))))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $next)))
    ;; The count as two decimal digits after the line's first six bytes.
    (i32.store8 (i32.const 106) (i32.add (i32.const 48) (i32.div_u (local.get $marks) (i32.const 10))))
    (i32.store8 (i32.const 107) (i32.add (i32.const 48) (i32.rem_u (local.get $marks) (i32.const 10))))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 10))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"#;

/// `(pages, ranges)` of memory 0's working set, from inspect's text.
fn working_set_of(inspect_text: &str) -> (u64, u64) {
    let line = inspect_text.lines().find(|l| l.trim_start().starts_with("working set:")).expect("a working set line");
    let words: Vec<&str> = line.split_whitespace().collect();
    // "working set: N pages in M ranges"
    (words[2].parse().expect("pages"), words[5].parse().expect("ranges"))
}

#[test]
fn a_restored_run_records_its_working_set_into_a_copy_of_the_snapshot() {
    let dir = scratch_dir("record");
    let module = dir.join("guest.wat");
    std::fs::write(&module, GUEST).unwrap();
    let module = module.to_str().unwrap();
    let (snap, ws) = (dir.join("guest.snap"), dir.join("guest.ws.snap"));
    let (snap, ws) = (snap.to_str().unwrap(), ws.to_str().unwrap());

    let init = framemap(&["run", "--init", "init", "--snapshot-out", snap, module]);
    assert_eq!(code(&init), 0, "{}", stderr(&init));
    // 16 of the 64 pages read hold init's mark (one page in eight written).
    let expected = "init: 16 \n";

    let recorded = framemap(&["run", "--restore", snap, "--working-set-out", ws, module]);
    assert_eq!((code(&recorded), stdout(&recorded).as_str()), (0, expected), "{}", stderr(&recorded));
    assert!(stderr(&recorded).contains("framemap: working set: wrote"), "{}", stderr(&recorded));

    let original = stdout(&framemap(&["inspect", snap]));
    let shown = framemap(&["inspect", ws]);
    assert_eq!(code(&shown), 0, "{}", stderr(&shown));
    let text = stdout(&shown);
    assert!(text.contains("checksum  ok"), "{text}");
    assert_eq!(working_set_of(&original), (0, 0), "{original}");
    let (pages, ranges) = working_set_of(&text);
    // At least the 64 pages read and the 2 written (the line and the iovec
    // share page 0); at most the memory's 256 pages.
    assert!((64..=256).contains(&pages) && ranges >= 1, "{text}");
    // The same state: the same data pages, the same global (0 runs: the
    // snapshot's, not the run's 1).
    let data_pages = |t: &str| {
        let line = t.lines().find(|l| l.contains("data pages")).expect("a format line").to_owned();
        line.split(", ").find(|part| part.ends_with("data pages")).map(str::to_owned)
    };
    assert_eq!(data_pages(&text), data_pages(&original));
    assert_eq!(data_pages(&text).as_deref(), Some("32 data pages"), "{text}");
    assert!(text.contains("\"framemap:global:0\": i32 0"), "{text}");
    let json = stdout(&framemap(&["inspect", "--json", ws]));
    assert!(json.contains(&format!("\"working_set_pages\":{pages}")), "{json}");

    // A restore from the recorded file runs as one from the snapshot (its
    // `_start` traps if the run counter is not the snapshot's 0).
    let again = framemap(&["run", "--restore", ws, module]);
    assert_eq!((code(&again), stdout(&again).as_str()), (0, expected), "{}", stderr(&again));

    // The flag needs --restore: a one-line error.
    let out = framemap(&["run", "--working-set-out", ws, module]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.starts_with("framemap: error: ") && err.lines().count() == 1 && err.contains("--restore"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A command component whose `run` succeeds only once `init` has run: it
/// reads 8 pages of its 1 MiB memory (every fourth of the first 32) and
/// checks that `init` marked them.
const COMPONENT: &str = r#"(component
  (core module $m
    (memory (export "memory") 16)
    (func (export "init")
      (local $i i32)
      (loop $next
        (i32.store (i32.mul (local.get $i) (i32.const 4096)) (i32.const 41))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $i) (i32.const 256)))))
    (func (export "run") (result i32)
      (local $i i32) (local $ok i32)
      (local.set $ok (i32.const 1))
      (loop $next
        (local.set $ok (i32.and (local.get $ok)
          (i32.eq (i32.load (i32.mul (local.get $i) (i32.const 16384))) (i32.const 41))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $next (i32.lt_u (local.get $i) (i32.const 8))))
      (i32.eqz (local.get $ok))))
  (core instance $i (instantiate $m))
  (func $init (canon lift (core func $i "init")))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $runinst (export "run" (func $run)))
  (export "init" (func $init))
  (export "wasi:cli/run@0.2.0" (instance $runinst)))"#;

#[test]
fn a_restored_component_records_its_working_set() {
    let dir = scratch_dir("component");
    let wasm = dir.join("guest.wasm");
    std::fs::write(&wasm, wat::parse_str(COMPONENT).expect("component text")).unwrap();
    let wasm = wasm.to_str().unwrap();
    let (snap, ws) = (dir.join("guest.snap"), dir.join("guest.ws.snap"));
    let (snap, ws) = (snap.to_str().unwrap(), ws.to_str().unwrap());
    let init = framemap(&["run", "--init", "init", "--snapshot-out", snap, wasm]);
    assert_eq!(code(&init), 0, "{}", stderr(&init));
    let recorded = framemap(&["run", "--restore", snap, "--working-set-out", ws, wasm]);
    assert_eq!(code(&recorded), 0, "{}", stderr(&recorded));
    assert!(stderr(&recorded).contains("framemap: working set: wrote"), "{}", stderr(&recorded));
    let original = stdout(&framemap(&["inspect", snap]));
    let shown = stdout(&framemap(&["inspect", ws]));
    assert_eq!(working_set_of(&original), (0, 0), "{original}");
    let (pages, _) = working_set_of(&shown);
    // The 8 pages `run` read, at least; at most the memory's 256.
    assert!((8..=256).contains(&pages), "{shown}");
    // A restore from the recorded file runs as one from the snapshot.
    let again = framemap(&["run", "--restore", ws, wasm]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let _ = std::fs::remove_dir_all(&dir);
}
