//! The compile cache of `framemap run` for preview 2 command components:
//! a miss writes an entry and the next run hits it; a damaged entry (or a
//! module's entry where the component's should be) is rebuilt with one
//! notice; an unwritable cache runs without caching; `--no-cache` and the
//! snapshot flags leave the cache alone.
//!
//! The component is framemap-wasmtime's test guest
//! (`crates/framemap-wasmtime/tests/guests/wasip2_command.wasm`).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

const FRAMEMAP: &str = env!("CARGO_BIN_EXE_framemap");

/// A fresh scratch directory holding a copy of the command component, its
/// mtime an hour ago (settled, so the stat index records it).
fn scratch(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("framemap-component-cache-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../framemap-wasmtime/tests/guests/wasip2_command.wasm");
    let component = dir.join("command.wasm");
    std::fs::copy(guest, &component).expect("copy the guest");
    let file = std::fs::File::options().write(true).open(&component).expect("open");
    file.set_modified(SystemTime::now() - Duration::from_secs(3600)).expect("age");
    (dir, component)
}

fn run(cache: &Path, extra: &[&str], component: &Path) -> Output {
    let mut command = Command::new(FRAMEMAP);
    command.arg("run").args(extra).arg(component).arg("cached");
    command.env("FRAMEMAP_CACHE_DIR", cache).env_remove("FRAMEMAP_CACHE_MAX_BYTES");
    command.output().expect("spawn framemap")
}

/// Asserts the guest ran to its end (its output starts with its arguments
/// and counts 42 calls: it started from its image), and returns stderr.
fn ok(out: &Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stdout.starts_with("args [\"cached\"]\n") && stdout.contains(" calls 42\n"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.into_owned()
}

/// The cache's entry files (and any temporary files among them).
fn entries(cache: &Path) -> Vec<PathBuf> {
    let Ok(listing) = std::fs::read_dir(cache.join("v1/entries")) else { return Vec::new() };
    let mut found: Vec<PathBuf> = listing.map(|e| e.expect("entry").path()).collect();
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
fn a_component_is_compiled_once_and_then_mapped_from_the_cache() {
    let (dir, component) = scratch("hit");
    let cache = dir.join("cache");
    assert_eq!(ok(&run(&cache, &[], &component)), "");
    let found = entries(&cache);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].extension().is_some_and(|e| e == "fmart"), "{found:?}");
    let index: Vec<_> = std::fs::read_dir(cache.join("v1/index")).expect("index").collect();
    assert_eq!(index.len(), 1, "the settled component is indexed by its stat");

    // Age the entry: a hit touches it and keeps its file (same inode).
    let entry = std::fs::File::options().write(true).open(&found[0]).expect("open entry");
    entry.set_modified(SystemTime::now() - Duration::from_secs(7200)).expect("age");
    let before = std::fs::metadata(&found[0]).expect("stat");
    assert_eq!(ok(&run(&cache, &[], &component)), "");
    let after = std::fs::metadata(&found[0]).expect("stat");
    assert_eq!(before.ino(), after.ino(), "the entry was used, not rewritten");
    assert!(after.modified().expect("mtime") > before.modified().expect("mtime"), "a hit marks the entry as used");
    assert_eq!(entries(&cache), found);

    // `--no-cache` and the snapshot flags (a `with_snapshots` component)
    // neither read nor write the cache.
    let unused = dir.join("unused");
    assert_eq!(ok(&run(&unused, &["--no-cache"], &component)), "");
    let snapshot = dir.join("after.snap");
    let snapshot_flag = ["--snapshot-out", snapshot.to_str().expect("utf-8")];
    let err = ok(&run(&unused, &snapshot_flag, &component));
    assert!(err.starts_with("framemap: snapshot: wrote") && !err.contains("notice"), "{err}");
    assert!(!unused.exists(), "the cache was created");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_damaged_component_entry_is_rebuilt_with_one_notice() {
    let (dir, component) = scratch("damaged");
    let cache = dir.join("cache");
    ok(&run(&cache, &[], &component));
    let entry = entries(&cache).pop().expect("an entry");
    let whole = std::fs::read(&entry).expect("read");

    // A module's entry where the component's should be: refused by its kind.
    let module = dir.join("m.wat");
    std::fs::write(&module, r#"(module (memory (export "memory") 1) (func (export "_start")))"#).expect("write");
    let module_cache = dir.join("module-cache");
    let out = run(&module_cache, &[], &module);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let module_entry = std::fs::read(entries(&module_cache).pop().expect("module entry")).expect("read");

    let mut flipped = whole.clone();
    flipped[whole.len() / 3] ^= 0x10;
    let damages: [(&str, Vec<u8>, &str); 4] = [
        ("flipped", flipped, "checksum"),
        ("truncated", whole[..whole.len() / 2].to_vec(), "truncated"),
        ("empty", Vec::new(), "rebuilding"),
        ("a module's", module_entry, "holds a compiled module, not a component"),
    ];
    for (what, bytes, word) in damages {
        std::fs::write(&entry, bytes).expect("damage");
        let err = ok(&run(&cache, &[], &component));
        one_notice(&err, "rebuilding");
        assert!(err.contains(word), "{what}: {err}");
        let rebuilt = std::fs::read(&entry).expect("read");
        assert_eq!(rebuilt.len(), whole.len(), "{what}: the entry is rewritten whole");
        assert_eq!(ok(&run(&cache, &[], &component)), "", "{what}: then hit quietly");
    }
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn an_unwritable_cache_runs_the_component_without_caching() {
    let (dir, component) = scratch("unwritable");
    // A cache path that is a file: the folders cannot be made.
    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    one_notice(&ok(&run(&file, &[], &component)), "without caching");

    // A read-only entries folder: enforced for users other than root.
    let cache = dir.join("read-only");
    for sub in ["v1/entries", "v1/index"] {
        std::fs::create_dir_all(cache.join(sub)).expect("mkdir");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let entries_dir = cache.join("v1/entries");
    std::fs::set_permissions(&entries_dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    if std::fs::write(entries_dir.join("probe"), "").is_ok() {
        eprintln!("permissions are not enforced for this user (root): the read-only folder case is not run");
    } else {
        one_notice(&ok(&run(&cache, &[], &component)), "without caching");
        assert!(entries(&cache).is_empty());
    }
    std::fs::set_permissions(&entries_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_full_or_read_only_file_system_runs_the_component_without_caching() {
    let (dir, component) = scratch("tmpfs");
    let mount = dir.join("tiny");
    std::fs::create_dir_all(&mount).expect("mkdir");
    // A 64 KiB tmpfs: room for the folders, not for the entry. Mounting
    // needs root (as CI runs); elsewhere this case is not run.
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(&mount).output();
    if !mounted.is_ok_and(|out| out.status.success()) {
        eprintln!("cannot mount a tmpfs here (not root?): the full and read-only cases are not run");
        std::fs::remove_dir_all(&dir).expect("clean up");
        return;
    }
    let cache = mount.join("cache");
    let full = run(&cache, &[], &component);
    let remount = Command::new("mount").args(["-o", "remount,ro"]).arg(&mount).status();
    let read_only = run(&cache, &[], &component);
    let unmounted = Command::new("umount").arg(&mount).status();
    one_notice(&ok(&full), "No space left on device");
    assert!(remount.expect("remount").success());
    one_notice(&ok(&read_only), "Read-only file system");
    assert!(unmounted.expect("umount").success());
    std::fs::remove_dir_all(&dir).expect("clean up");
}
