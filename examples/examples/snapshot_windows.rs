//! Snapshots of instances that see a host buffer: a guest's memory has a
//! window of a host buffer (a config table the host keeps up to date), the
//! instance is captured after its init, and new instances restored from the
//! snapshot see the buffer as it is *now* through the same window — the
//! snapshot names the buffer and the range, it never copies the bytes.
//!
//! ```sh
//! cargo run -p framemap-examples --example snapshot_windows
//! ```

use anyhow::{Result, ensure};
use framemap::snapshot::SnapshotWriter;
use framemap::{Protection, SharedBuffer};
use framemap_wasmtime::{FrameMemoryCreator, PreparedModule, SnapshotBuffers, engine};
use wasmtime::{Config, Store};

/// The window: the guest's second wasm page, one host page long.
const WINDOW: u64 = 65536;

/// `init` computes a value into its own memory (the state worth
/// snapshotting); `reply` adds it to the config word the host keeps at the
/// start of the window, and counts requests in the window's second word.
const MODULE: &str = r#"
(module
  (memory (export "mem") 2)
  (func (export "init") (i32.store (i32.const 64) (i32.const 1000)))
  (func (export "reply") (result i32)
    (i32.store (i32.const 65540) (i32.add (i32.load (i32.const 65540)) (i32.const 1)))
    (i32.add (i32.load (i32.const 64)) (i32.load (i32.const 65536)))))
"#;

fn main() -> Result<()> {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&mut Config::new(), creator.clone())?;
    let mut prepared = PreparedModule::with_snapshots(&creator, &engine, MODULE)?;
    let config = SharedBuffer::new(4096)?;
    config.write(0, &7i32.to_le_bytes())?;
    let mut buffers = SnapshotBuffers::new();
    buffers.insert("config", config.clone())?;
    // SAFETY: the host writes `config` only between calls, never while it
    // holds a borrow of a guest memory's bytes.
    unsafe { prepared.set_snapshot_buffers(buffers) };

    // Initialise one instance with the window mapped, and capture it.
    let mut store = Store::new(&engine, ());
    let instance = prepared.instantiate(&mut store, &[])?;
    let memory = instance.get_memory(&mut store, "mem").expect("exported memory");
    let handle = creator.handle(&store, &memory)?;
    // SAFETY: as above.
    unsafe { handle.map_buffer(&mut store, WINDOW, &config, 0, 4096, Protection::ReadWrite)? };
    instance.get_typed_func::<(), ()>(&mut store, "init")?.call(&mut store, ())?;
    let mut writer = SnapshotWriter::in_memory()?;
    prepared.capture(&mut store, &instance, &mut writer)?;
    let snapshot = writer.finish_in_memory()?;
    drop(store);

    // The host changes the config; instances restored later see the change.
    for (round, value) in [(1, 7i32), (2, 42), (3, 100)] {
        config.write(0, &value.to_le_bytes())?;
        let mut store = Store::new(&engine, ());
        let restored = prepared.instantiate_snapshot(&mut store, &[], &snapshot)?;
        let reply = restored.get_typed_func::<(), i32>(&mut store, "reply")?.call(&mut store, ())?;
        let mut count = [0u8; 4];
        config.read(4, &mut count)?;
        println!(
            "instance {round}: config {value} -> reply {reply}; requests counted in the buffer: {}",
            i32::from_le_bytes(count)
        );
        ensure!(reply == 1000 + value, "the restored instance sees its init's state and the buffer as it is now");
        ensure!(i32::from_le_bytes(count) == round, "its writes through the window reach the buffer");
    }
    Ok(())
}
