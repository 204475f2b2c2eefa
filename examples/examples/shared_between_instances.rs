//! One host buffer, two guests: each instance (in its own `Store`, with its
//! own linear memory) gets a window of the same `SharedBuffer`, at a different
//! offset. What instance A stores through its window, instance B loads
//! through its own, with no host involvement. Then the host revokes the
//! buffer: every window in every memory becomes unmapped at once, and B's
//! next load traps instead of seeing the buffer.

use framemap::{Protection, SharedBuffer};
use framemap_wasmtime::{FrameMemoryCreator, configure};
use wasmtime::{Config, Engine, Instance, Module, Store, Trap};

const GUEST: &str = r#"
(module $guest
  (memory (export "mem") 1)
  (func $put (export "put") (param i32 i64) (i64.store (local.get 0) (local.get 1)))
  (func $get (export "get") (param i32) (result i64) (i64.load (local.get 0))))
"#;

const VALUE: i64 = 0x0123_4567_89ab_cdef;

/// What each side saw.
#[derive(Debug)]
struct Outcome {
    seen_by_b: i64,
    seen_by_host: i64,
    memories_told: usize,
    trap: Option<Trap>,
    trap_message: String,
    report_b: String,
}

fn run() -> anyhow::Result<Outcome> {
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config)?;
    let module = Module::new(&engine, GUEST)?;
    let page = framemap::host_page_size() as u64;
    let buffer = SharedBuffer::new(page)?;

    // Two independent instances; the window sits at page 2 in A, page 5 in B.
    let (window_a, window_b) = (2 * page, 5 * page);
    let mut store_a = Store::new(&engine, ());
    let a = Instance::new(&mut store_a, &module, &[])?;
    let memory_a = a.get_memory(&mut store_a, "mem").expect("exported memory");
    let handle_a = creator.handle(&store_a, &memory_a)?;
    // SAFETY: the buffer changes only when guest A writes it, on this thread,
    // while nothing borrows B's memory (`Memory::data` is never called); it
    // is never revoked. Likewise for B's window below.
    unsafe { handle_a.map_buffer(&mut store_a, window_a, &buffer, 0, page, Protection::ReadWrite) }?;
    let mut store_b = Store::new(&engine, ());
    let b = Instance::new(&mut store_b, &module, &[])?;
    let memory_b = b.get_memory(&mut store_b, "mem").expect("exported memory");
    let handle_b = creator.handle(&store_b, &memory_b)?;
    // SAFETY: as for A's window above.
    unsafe { handle_b.map_buffer(&mut store_b, window_b, &buffer, 0, page, Protection::Read) }?;

    // A writes 8 bytes into the buffer's page; B reads them from its window.
    let put = a.get_typed_func::<(i32, i64), ()>(&mut store_a, "put")?;
    put.call(&mut store_a, (window_a as i32 + 64, VALUE))?;
    let get = b.get_typed_func::<i32, i64>(&mut store_b, "get")?;
    let seen_by_b = get.call(&mut store_b, window_b as i32 + 64)?;
    let mut bytes = [0u8; 8];
    buffer.read(64, &mut bytes)?;

    // Revocation unmaps both windows; B's next load traps.
    let memories_told = buffer.revoke()?;
    let error = get.call(&mut store_b, window_b as i32 + 64).expect_err("a revoked window traps");
    handle_b.validate()?;
    Ok(Outcome {
        seen_by_b,
        seen_by_host: i64::from_le_bytes(bytes),
        memories_told,
        trap: error.downcast_ref::<Trap>().copied(),
        trap_message: error.chain().map(|cause| cause.to_string()).collect::<Vec<_>>().join("\n  caused by: "),
        report_b: handle_b.report()?.to_string(),
    })
}

fn main() -> anyhow::Result<()> {
    let o = run()?;
    println!("instance A stored {VALUE:#x} through its window");
    println!("instance B loaded {:#x} through its own window; the host reads {:#x}", o.seen_by_b, o.seen_by_host);
    println!("revoke() unmapped the windows of {} memories", o.memories_told);
    println!("instance B's next load trapped ({:?}): {}", o.trap, o.trap_message);
    print!("B's memory after revocation: {}", o.report_b);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs() {
        let o = super::run().unwrap();
        assert_eq!(o.seen_by_b, super::VALUE);
        assert_eq!(o.seen_by_host, super::VALUE);
        assert_eq!(o.memories_told, 2);
        assert_eq!(o.trap, Some(wasmtime::Trap::MemoryOutOfBounds), "{}", o.trap_message);
    }
}
