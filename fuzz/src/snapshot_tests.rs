//! Regression tests of the `snapshot_file` target: a replay of every input
//! in `corpus/snapshot_file/` and `artifacts/snapshot_file/` (without a
//! sanitizer), of the input that found a restore bug, and of pseudo-random
//! byte strings. `run` panics at the first thing the oracle refuses.

use crate::snapshot_check::run;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::Path;

/// `run`, naming `what` if the oracle refuses it.
fn run_named(what: &str, data: &[u8]) {
    catch_unwind(AssertUnwindSafe(|| run(data))).unwrap_or_else(|panic| {
        eprintln!("{what}: the snapshot_file oracle refused it");
        resume_unwind(panic)
    })
}

/// Runs every file in `dir` as the target would; how many, `None` if `dir`
/// does not exist.
fn run_dir(dir: &Path) -> Option<usize> {
    let mut files: Vec<_> = std::fs::read_dir(dir).ok()?.map(|e| e.expect("read a directory entry").path()).collect();
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        run_named(&file.display().to_string(), &data);
    }
    Some(files.len())
}

#[test]
fn fuzz_inputs_pass_the_snapshot_oracle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["corpus/snapshot_file", "artifacts/snapshot_file"] {
        match run_dir(&root.join(dir)) {
            None => eprintln!("fuzz/{dir}: missing, nothing to replay"),
            Some(0) => eprintln!("fuzz/{dir}: empty, nothing to replay"),
            Some(n) => eprintln!("fuzz/{dir}: {n} inputs replayed"),
        }
    }
}

/// The input that found the restore that let go of an image a later run
/// named (see `a_restore_keeps_an_image_the_memory_showed_elsewhere` in
/// `crates/framemap/src/snapshot/restore.rs`): unmutated, a memory whose
/// last page shows image page 1, restored into a space showing the image on
/// its page 1.
#[test]
fn the_input_that_found_the_image_let_go_too_early() {
    run_named("the image input", FOUND_IMAGE_LET_GO);
}

#[test]
fn pseudo_random_inputs_pass_the_snapshot_oracle() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..200 {
        let data: Vec<u8> = (0..len % 150)
            .map(|_| {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        run_named(&format!("{data:?}"), &data);
    }
}

const FOUND_IMAGE_LET_GO: &[u8] =
    &[1, 7, 0, 16, 61, 190, 110, 255, 255, 35, 239, 220, 207, 255, 2, 49, 255, 0, 72, 255, 255, 137, 129, 136, 137];
