//! The compile cache of `framemap run`: a miss writes an entry and a hit
//! uses it; `--no-cache` writes nothing; damaged entries are rebuilt with
//! one notice; an unwritable cache runs without caching; the bound evicts
//! the least recently used; concurrent runs of a new module both succeed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

const FRAMEMAP: &str = env!("CARGO_BIN_EXE_framemap");

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framemap-cache-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A WASI command printing `message` (from a data segment), with `filler`
/// more bytes of data at 64 KiB (a larger module and image).
fn guest(message: &str, filler: usize) -> String {
    let pages = 2 + filler / 65536;
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") {pages})
  (data (i32.const 100) "{message}\n")
  (data (i32.const 65536) "{}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const {}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        "x".repeat(filler),
        message.len() + 1
    )
}

/// Writes `text` to `path` with an mtime an hour ago (settled, so the stat
/// index records it).
fn write_module(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600)).unwrap();
}

fn run(cache: &Path, extra: &[&str], module: &Path) -> Output {
    run_with(cache, extra, module, &[])
}

fn run_with(cache: &Path, extra: &[&str], module: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(FRAMEMAP);
    command.arg("run").args(extra).arg(module).env("FRAMEMAP_CACHE_DIR", cache);
    command.env_remove("FRAMEMAP_CACHE_MAX_BYTES").envs(env.iter().copied());
    command.output().expect("spawn framemap")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the run succeeded printing `message`, and returns its stderr.
fn ok(out: &Output, message: &str) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    assert_eq!(stdout(out), format!("{message}\n"));
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The cache's entry files (and any temporary files among them).
fn entries(cache: &Path) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(cache.join("v1/entries")) else { return Vec::new() };
    let mut found: Vec<PathBuf> = listing.map(|e| e.unwrap().path()).collect();
    found.sort();
    found
}

/// Asserts `err` is exactly one `framemap: notice:` line containing `word`.
fn one_notice(err: &str, word: &str) {
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one notice line: {err:?}");
    assert!(lines[0].starts_with("framemap: notice: ") && lines[0].contains(word), "{err:?}");
}

#[test]
fn a_miss_writes_an_entry_and_the_next_run_hits_it() {
    let dir = scratch("hit");
    let (cache, module) = (dir.join("cache"), dir.join("m.wat"));
    write_module(&module, &guest("first", 70_000));
    assert_eq!(ok(&run(&cache, &[], &module), "first"), "");
    let found = entries(&cache);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].extension().is_some_and(|e| e == "fmart"), "{found:?}");
    let index: Vec<_> = std::fs::read_dir(cache.join("v1/index")).unwrap().collect();
    assert_eq!(index.len(), 1, "the settled module is indexed by its stat");

    // Age the entry: a hit touches it and keeps its file (same inode).
    let entry = std::fs::File::options().write(true).open(&found[0]).unwrap();
    entry.set_modified(SystemTime::now() - Duration::from_secs(7200)).unwrap();
    let before = std::fs::metadata(&found[0]).unwrap();
    assert_eq!(ok(&run(&cache, &[], &module), "first"), "");
    let after = std::fs::metadata(&found[0]).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(before.ino(), after.ino(), "the entry was used, not rewritten");
    assert!(after.modified().unwrap() > before.modified().unwrap(), "a hit marks the entry as recently used");

    // Same size, other bytes: the stat index sees the change.
    write_module(&module, &guest("other", 70_000));
    assert_eq!(ok(&run(&cache, &[], &module), "other"), "");
    assert_eq!(entries(&cache).len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_cache_writes_nothing() {
    let dir = scratch("no-cache");
    let (cache, module) = (dir.join("cache"), dir.join("m.wat"));
    write_module(&module, &guest("uncached", 0));
    assert_eq!(ok(&run(&cache, &["--no-cache"], &module), "uncached"), "");
    assert!(!cache.exists(), "--no-cache created the cache directory");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_entries_are_rebuilt_with_one_notice() {
    let dir = scratch("damaged");
    let (cache, module) = (dir.join("cache"), dir.join("m.wat"));
    write_module(&module, &guest("healed", 70_000));
    ok(&run(&cache, &[], &module), "healed");
    let entry = entries(&cache).pop().unwrap();
    let whole = std::fs::read(&entry).unwrap();
    let mut flipped = whole.clone();
    flipped[whole.len() / 2] ^= 0x10;
    let damages: [(&str, Vec<u8>); 3] =
        [("flipped", flipped), ("truncated", whole[..whole.len() / 3].to_vec()), ("empty", Vec::new())];
    for (what, bytes) in damages {
        std::fs::write(&entry, bytes).unwrap();
        let err = ok(&run(&cache, &[], &module), "healed");
        one_notice(&err, "rebuilding");
        assert_eq!(std::fs::read(&entry).unwrap(), whole, "{what}: the entry is rewritten whole");
        assert_eq!(ok(&run(&cache, &[], &module), "healed"), "", "{what}: then hit quietly");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_cache_runs_without_caching_with_one_notice() {
    let dir = scratch("unwritable");
    let module = dir.join("m.wat");
    write_module(&module, &guest("still runs", 0));
    // A cache path that is a file: the folders cannot be made.
    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    one_notice(&ok(&run(&file, &[], &module), "still runs"), "without caching");

    // A read-only entries folder: enforced for users other than root.
    let cache = dir.join("read-only");
    for sub in ["v1/entries", "v1/index"] {
        std::fs::create_dir_all(cache.join(sub)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt as _;
    let entries_dir = cache.join("v1/entries");
    std::fs::set_permissions(&entries_dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(entries_dir.join("probe"), "").is_ok() {
        eprintln!("permissions are not enforced for this user (root): the read-only folder case is not run");
    } else {
        one_notice(&ok(&run(&cache, &[], &module), "still runs"), "without caching");
        assert!(entries(&cache).is_empty());
    }
    std::fs::set_permissions(&entries_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_or_read_only_file_system_runs_without_caching_with_one_notice() {
    let dir = scratch("tmpfs");
    let module = dir.join("m.wat");
    write_module(&module, &guest("no room", 150_000));
    let mount = dir.join("tiny");
    std::fs::create_dir_all(&mount).unwrap();
    // A 64 KiB tmpfs: room for the folders, not for the entry. Mounting
    // needs root (as CI runs); elsewhere this case is not run.
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(&mount).output();
    if !mounted.is_ok_and(|out| out.status.success()) {
        eprintln!("cannot mount a tmpfs here (not root?): the full and read-only cases are not run");
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    }
    let cache = mount.join("cache");
    let full = run(&cache, &[], &module);
    let remount = Command::new("mount").args(["-o", "remount,ro"]).arg(&mount).status();
    let read_only = run(&cache, &[], &module);
    let unmounted = Command::new("umount").arg(&mount).status();
    one_notice(&ok(&full, "no room"), "No space left on device");
    assert!(remount.unwrap().success());
    one_notice(&ok(&read_only, "no room"), "Read-only file system");
    assert!(unmounted.unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eviction_keeps_the_cache_within_its_bound() {
    let dir = scratch("evict");
    let cache = dir.join("cache");
    let bound: u64 = 400 << 10;
    let bound_text = bound.to_string();
    let env = [("FRAMEMAP_CACHE_MAX_BYTES", bound_text.as_str())];
    for i in 0..6 {
        let module = dir.join(format!("m{i}.wat"));
        write_module(&module, &guest(&format!("module {i}"), 150_000));
        assert_eq!(ok(&run_with(&cache, &[], &module, &env), &format!("module {i}")), "");
        use std::os::unix::fs::MetadataExt as _;
        let used: u64 = entries(&cache).iter().map(|e| std::fs::metadata(e).unwrap().blocks() * 512).sum();
        assert!(used <= bound, "after module {i}: {used} bytes of entries, bound {bound}");
    }
    let kept = entries(&cache).len();
    assert!((1..6).contains(&kept), "{kept} entries kept of 6");
    // The most recent module hits (its entry was kept): no rewrite.
    let newest = dir.join("m5.wat");
    let before = entries(&cache);
    assert_eq!(ok(&run_with(&cache, &[], &newest, &env), "module 5"), "");
    assert_eq!(entries(&cache), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn concurrent_runs_of_a_new_module_both_succeed() {
    let dir = scratch("concurrent");
    let (cache, module) = (dir.join("cache"), dir.join("m.wat"));
    write_module(&module, &guest("together", 2 << 20));
    for round in 0..3 {
        let _ = std::fs::remove_dir_all(&cache);
        let spawn = || {
            Command::new(FRAMEMAP)
                .arg("run")
                .arg(&module)
                .env("FRAMEMAP_CACHE_DIR", &cache)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert_eq!(ok(&out, "together"), "", "round {round}");
        }
        let found = entries(&cache);
        assert_eq!(found.len(), 1, "round {round}: one entry, no temporary file: {found:?}");
    }
    assert_eq!(ok(&run(&cache, &[], &module), "together"), "");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_large_module_is_announced_once_when_compiled() {
    let dir = scratch("large");
    let (cache, module) = (dir.join("cache"), dir.join("big.wat"));
    write_module(&module, &guest("big", 5 << 20));
    let err = ok(&run(&cache, &[], &module), "big");
    one_notice(&err, "(5 MiB), cached for next time");
    assert_eq!(ok(&run(&cache, &[], &module), "big"), "", "a hit compiles nothing");
    one_notice(&ok(&run(&cache, &["--no-cache"], &module), "big"), "compiling");
    std::fs::remove_dir_all(&dir).unwrap();
}
