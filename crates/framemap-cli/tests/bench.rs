//! Integration tests of `framemap bench`: the JSON rows of a quick run, its
//! tables (with the contiguous-touch section), the SVG chart, `--module` on a
//! small module and its one-line errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of the `framemap` binary under test.
const FRAMEMAP: &str = env!("CARGO_BIN_EXE_framemap");

/// Every allocator name a built-in run reports.
const ALLOCATORS: [&str; 5] =
    ["wasmtime-ondemand", "wasmtime-ondemand-copy", "wasmtime-pooling", "wasmtime-pooling-best", "framemap"];

/// Runs `framemap` with `args` and returns its output.
fn framemap(args: &[&str]) -> Output {
    Command::new(FRAMEMAP).args(args).output().expect("failed to spawn framemap")
}

/// Stdout and stderr as text.
fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A fresh path under the target directory's temporary area.
fn temp_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir.join(name)
}

/// The value of a flat JSON object: a string or a non-negative integer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Str(String),
    Int(u64),
}

/// Parses one line holding a flat JSON object of string and integer values
/// (what `framemap bench --json` writes), strictly: panics on anything else.
fn parse_object(line: &str) -> BTreeMap<String, Value> {
    let mut chars = line.trim().chars().peekable();
    let mut object = BTreeMap::new();
    let string = |chars: &mut std::iter::Peekable<std::str::Chars>| -> String {
        assert_eq!(chars.next(), Some('"'), "expected a string in {line}");
        let mut s = String::new();
        loop {
            match chars.next().unwrap_or_else(|| panic!("unterminated string in {line}")) {
                '"' => return s,
                '\\' => match chars.next() {
                    Some(c @ ('"' | '\\' | '/')) => s.push(c),
                    Some('n') => s.push('\n'),
                    other => panic!("unsupported escape {other:?} in {line}"),
                },
                c => s.push(c),
            }
        }
    };
    assert_eq!(chars.next(), Some('{'), "not an object: {line}");
    loop {
        let key = string(&mut chars);
        assert_eq!(chars.next(), Some(':'), "expected ':' in {line}");
        let value = if chars.peek() == Some(&'"') {
            Value::Str(string(&mut chars))
        } else {
            let mut digits = String::new();
            while let Some(c) = chars.peek().copied().filter(char::is_ascii_digit) {
                digits.push(c);
                chars.next();
            }
            Value::Int(digits.parse().unwrap_or_else(|_| panic!("bad number for {key} in {line}")))
        };
        assert!(object.insert(key.clone(), value).is_none(), "duplicate key {key} in {line}");
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("unexpected {other:?} in {line}"),
        }
    }
    assert_eq!(chars.next(), None, "trailing characters in {line}");
    object
}

fn int(row: &BTreeMap<String, Value>, key: &str) -> u64 {
    match row.get(key) {
        Some(Value::Int(n)) => *n,
        other => panic!("{key} is {other:?} in {row:?}"),
    }
}

fn string<'a>(row: &'a BTreeMap<String, Value>, key: &str) -> &'a str {
    match row.get(key) {
        Some(Value::Str(s)) => s,
        other => panic!("{key} is {other:?} in {row:?}"),
    }
}

#[test]
fn quick_json_has_every_row() {
    let out = framemap(&["bench", "--quick", "--json"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "bench failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut seen = BTreeSet::new();
    for line in stdout.lines() {
        let row = parse_object(line);
        let keys: BTreeSet<&str> = row.keys().map(String::as_str).collect();
        let workload = string(&row, "workload").to_owned();
        let mut want: BTreeSet<&str> =
            ["workload", "allocator", "dirty_pages", "median_ns", "p90_ns", "samples"].into_iter().collect();
        if workload == "footprint" {
            want.insert("rss_kib");
            assert!(int(&row, "rss_kib") > 0, "{line}");
            assert!(int(&row, "samples") >= 200, "footprint measures 200 instances: {line}");
        }
        assert_eq!(keys, want, "keys of {line}");
        let (median, p90) = (int(&row, "median_ns"), int(&row, "p90_ns"));
        assert!(int(&row, "samples") > 0, "{line}");
        assert!(median > 0 && median <= p90, "{line}");
        assert!(p90 < 60_000_000_000, "implausible time: {line}");
        let key = (workload, string(&row, "allocator").to_owned(), int(&row, "dirty_pages"));
        assert!(seen.insert(key.clone()), "duplicate row {key:?}");
    }
    let mut required = BTreeSet::new();
    for k in [0, 16, 256] {
        for allocator in ALLOCATORS {
            required.insert(("instantiate".to_owned(), allocator.to_owned(), k));
        }
        for allocator in ["wasmtime-ondemand", "framemap"] {
            required.insert(("instantiate-fresh".to_owned(), allocator.to_owned(), k));
        }
    }
    for allocator in ALLOCATORS {
        for k in [16, 256] {
            required.insert(("instantiate-contiguous".to_owned(), allocator.to_owned(), k));
        }
        required.insert(("footprint".to_owned(), allocator.to_owned(), 16));
    }
    for allocator in ["wasmtime-ondemand", "framemap"] {
        required.insert(("compute".to_owned(), allocator.to_owned(), 0));
    }
    let missing: Vec<_> = required.difference(&seen).collect();
    assert!(missing.is_empty(), "missing rows: {missing:?}\n{stdout}");
    // Progress goes to stderr, one line per row.
    assert!(stderr.lines().filter(|l| l.starts_with("framemap bench: ")).count() >= seen.len(), "{stderr}");
}

#[test]
fn quick_plot_writes_svg_and_tables() {
    let path = temp_path("chart.svg");
    let out = framemap(&["bench", "--quick", "--plot", path.to_str().expect("UTF-8 path")]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "bench failed: {stderr}");
    let svg = std::fs::read_to_string(&path).expect("the plot was written");
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    for name in ALLOCATORS {
        assert!(svg.contains(name), "legend lacks {name}");
        assert!(stdout.contains(name), "table lacks {name}: {stdout}");
    }
    assert!(stdout.contains("targets"), "{stdout}");
    assert!(stdout.contains("PASS") || stdout.contains("MISS"), "{stdout}");

    // The contiguous-touch table: its own section after the scattered one,
    // saying why it exists, with a row per allocator at k=16 and k=256.
    let scattered = stdout.find("\ninstantiate — ").expect("an instantiate section");
    let contiguous = stdout.find("\ninstantiate-contiguous — ").expect("an instantiate-contiguous section");
    assert!(scattered < contiguous, "{stdout}");
    let section: Vec<&str> = stdout[contiguous + 1..].lines().take_while(|l| !l.is_empty()).collect();
    assert!(section.iter().any(|l| l.contains("why:") && l.contains("32 dirty")), "{stdout}");
    for name in ALLOCATORS {
        for k in ["16", "256"] {
            let row = section
                .iter()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|w| w.get(..2) == Some(&[name, k][..]));
            assert!(row.is_some(), "no k={k} row for {name}: {stdout}");
        }
    }
    // Its ratios, measured and shown without a verdict.
    for label in [
        "instantiate-contiguous k=256: framemap / wasmtime-pooling-best",
        "k=256 scattered / contiguous: wasmtime-pooling-best",
        "k=256 scattered / contiguous: framemap",
    ] {
        let line = stdout.lines().find(|l| l.trim_start().starts_with(label));
        let shown = |l: &&str| !l.contains("n/a") && !l.contains("PASS") && !l.contains("MISS");
        assert!(line.is_some_and(|l| shown(&l)), "{label}: {stdout}");
    }
}

/// Asserts a failed run with exactly one `framemap: error: ...` line and
/// exit status 1; returns the line.
fn one_line_error(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("framemap bench: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].starts_with("framemap: error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0].to_owned()
}

#[test]
fn module_errors_are_one_line() {
    let line = one_line_error(&framemap(&["bench", "--quick", "--module", "missing.wasm"]));
    assert!(line.contains("missing.wasm"), "{line}");

    let path = temp_path("params.wat");
    std::fs::write(
        &path,
        r#"(module (memory 1) (func (export "f") (param i32)) (global (export "g") i32 (i32.const 0)))"#,
    )
    .expect("write module");
    let module = path.to_str().expect("UTF-8 path");
    let line = one_line_error(&framemap(&["bench", "--quick", "--module", module, "--export", "f"]));
    assert!(line.contains("takes 1 parameter"), "{line}");
    let line = one_line_error(&framemap(&["bench", "--quick", "--module", module, "--export", "nope"]));
    assert!(line.contains("no export named `nope`"), "{line}");
    let line = one_line_error(&framemap(&["bench", "--quick", "--module", module, "--export", "g"]));
    assert!(line.contains("not a function"), "{line}");

    let bad = temp_path("bad.wat");
    std::fs::write(&bad, "(module (func (export \"f\") i32.add))").expect("write module");
    one_line_error(&framemap(&["bench", "--quick", "--module", bad.to_str().expect("UTF-8 path")]));
    one_line_error(&framemap(&["bench", "--samples", "0"]));
}

#[test]
fn module_runs_on_every_allocator() {
    let path = temp_path("small.wat");
    std::fs::write(
        &path,
        r#"(module
             (import "env" "unused" (func))
             (memory (export "memory") 2 4)
             (data (i32.const 0) "framemap bench test image")
             (data (i32.const 65536) "second page")
             (func (export "run") (result i32)
               (i32.store8 (i32.const 70000) (i32.const 1))
               (i32.load8_u (i32.const 0))))"#,
    )
    .expect("write module");
    let module = path.to_str().expect("UTF-8 path");
    let out = framemap(&["bench", "--quick", "--json", "--module", module, "--export", "run"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "bench failed: {stderr}");
    let rows: Vec<_> = stdout.lines().map(parse_object).collect();
    for allocator in ALLOCATORS {
        for workload in ["instantiate", "compute"] {
            assert!(
                rows.iter().any(|r| string(r, "workload") == workload && string(r, "allocator") == allocator),
                "no {workload} row for {allocator}: {stdout}"
            );
        }
    }
    assert!(rows.iter().any(|r| string(r, "workload") == "instantiate-fresh" && string(r, "allocator") == "framemap"));
    assert!(rows.iter().all(|r| int(r, "median_ns") <= int(r, "p90_ns") && int(r, "samples") > 0));

    // Without --export: instantiate rows only, and a readable table.
    let out = framemap(&["bench", "--quick", "--module", module]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "bench failed: {stderr}");
    assert!(stdout.contains("instantiate") && !stdout.contains("compute —"), "{stdout}");
}

#[test]
fn parser_accepts_what_bench_writes() {
    let row = parse_object(r#"{"workload":"footprint","allocator":"a\"b","dirty_pages":16,"rss_kib":3}"#);
    assert_eq!(string(&row, "allocator"), "a\"b");
    assert_eq!(int(&row, "rss_kib"), 3);
}
