//! A child forked from a process with live and recycled framemap memories
//! instantiates, resets and scans correctly: its pagemap file, write
//! tracking and slots are its own (ARCHITECTURE.md, "the fork sentinel").
//!
//! Alone in its test binary: fork copies only the calling thread, so no other
//! test may hold a lock at that moment.

use framemap_wasmtime::{FrameMemoryCreator, PreparedModule};
use wasmtime::{Config, Store};

const MODULE: &str = r#"
(module
  (memory (export "m") 64)
  (data (i32.const 0) "image bytes")
  (data (i32.const 300000) "far away")
  (func (export "dirty") (param $pages i32)
    (local $i i32)
    (loop $l
      (i32.store8 (i32.mul (local.get $i) (i32.const 65536)) (i32.const 0xff))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $pages))))))
"#;

/// Instantiates, checks the memory starts from the image, dirties `pages`
/// pages, and drops the instance (its slot is reset and recycled).
fn round(prepared: &PreparedModule, engine: &wasmtime::Engine, pages: i32) -> Result<(), String> {
    let mut store = Store::new(engine, ());
    let instance = prepared.instantiate(&mut store, &[]).map_err(|e| e.to_string())?;
    let memory = instance.get_memory(&mut store, "m").ok_or("no memory")?;
    let data = memory.data(&store);
    if &data[..11] != b"image bytes" || &data[300000..300008] != b"far away" || data[65536] != 0 {
        return Err(format!("the memory does not start from the image: {:?}", &data[..16]));
    }
    let dirty = instance.get_typed_func::<i32, ()>(&mut store, "dirty").map_err(|e| e.to_string())?;
    dirty.call(&mut store, pages).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn a_forked_child_recycles_and_resets_correctly() {
    let creator = FrameMemoryCreator::new();
    let engine = framemap_wasmtime::engine(&mut Config::new(), creator.clone()).unwrap();
    let prepared = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    // One memory alive across the fork, and a recycled slot in the pool.
    let mut live = Store::new(&engine, ());
    let kept = prepared.instantiate(&mut live, &[]).unwrap();
    kept.get_typed_func::<i32, ()>(&mut live, "dirty").unwrap().call(&mut live, 4).unwrap();
    for _ in 0..3 {
        round(&prepared, &engine, 8).unwrap();
    }
    assert!(creator.stats().idle > 0, "a recycled slot waits in the pool");

    // SAFETY: this test binary runs this one test, so the child has no
    // thread-held lock to inherit; it only runs framemap and wasmtime code
    // and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let outcome = (|| {
            for pages in [8, 16, 2, 32] {
                round(&prepared, &engine, pages)?;
            }
            let memory = kept.get_memory(&mut live, "m").ok_or("no memory")?;
            let handle = creator.handle(&live, &memory).map_err(|e| e.to_string())?;
            handle.validate().map_err(|e| e.to_string())?;
            if creator.stats().reused == 0 {
                return Err("the child reused no slot".to_string());
            }
            Ok::<(), String>(())
        })();
        if let Err(e) = &outcome {
            eprintln!("child: {e}");
        }
        // SAFETY: leaving the child without running the parent's exit
        // handlers or the test harness.
        unsafe { libc::_exit(i32::from(outcome.is_err())) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child failed: status {status:#x}");
    // The parent's memories are untouched by the child's work.
    for pages in [8, 1] {
        round(&prepared, &engine, pages).unwrap();
    }
    let memory = kept.get_memory(&mut live, "m").unwrap();
    assert_eq!(memory.data(&live)[4 * 65536 - 65536], 0xff);
    creator.handle(&live, &memory).unwrap().validate().unwrap();
}
