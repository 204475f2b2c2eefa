//! Zero-copy frames: the host writes a 64 KiB frame into a `SharedBuffer`,
//! maps it as a window into a guest's linear memory, the guest processes it in
//! place (inverts every pixel and writes a checksum into the frame's header),
//! and the host reads the result straight out of the buffer. No byte is copied
//! between host and guest memory: both see the same pages.

use framemap::{Protection, SharedBuffer};
use framemap_wasmtime::{FrameMemoryCreator, configure};
use wasmtime::{Config, Engine, Instance, Module, Store};

/// Frame size: one wasm page.
const FRAME: u64 = 64 << 10;
/// Header: magic, pixel count, checksum (written by the guest), flags.
const HEADER: usize = 16;
/// Where the window sits in guest memory (wasm page 1).
const WINDOW: u64 = 64 << 10;
const MAGIC: u32 = 0x4652_4d30; // "FRM0"

/// `process(frame)`: inverts the pixels after the header in place, stores the
/// sum of the inverted pixels at `frame + 8` and sets flag 1 at `frame + 12`.
const GUEST: &str = r#"
(module
  (memory (export "mem") 2)
  (func (export "process") (param $frame i32) (result i32)
    (local $p i32) (local $end i32) (local $v i32) (local $sum i32)
    (if (i32.ne (i32.load (local.get $frame)) (i32.const 0x46524d30)) (then (return (i32.const -1))))
    (local.set $p (i32.add (local.get $frame) (i32.const 16)))
    (local.set $end (i32.add (local.get $p) (i32.load offset=4 (local.get $frame))))
    (block $done (loop $pixels
      (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
      (local.set $v (i32.xor (i32.load8_u (local.get $p)) (i32.const 0xff)))
      (i32.store8 (local.get $p) (local.get $v))
      (local.set $sum (i32.add (local.get $sum) (local.get $v)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $pixels)))
    (i32.store offset=8 (local.get $frame) (local.get $sum))
    (i32.store offset=12 (local.get $frame) (i32.const 1))
    (i32.const 0)))
"#;

/// What one round trip did.
#[derive(Debug)]
struct Outcome {
    pixels: usize,
    checksum: u32,
    expected_checksum: u32,
    flags: u32,
    all_inverted: bool,
    shared_runs: u64,
    report: String,
}

fn run() -> anyhow::Result<Outcome> {
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config)?;
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &Module::new(&engine, GUEST)?, &[])?;
    let memory = instance.get_memory(&mut store, "mem").expect("exported memory");
    let process = instance.get_typed_func::<i32, i32>(&mut store, "process")?;

    // The host produces a frame (a gradient) directly in the shared buffer.
    let buffer = SharedBuffer::new(FRAME)?;
    let pixels: Vec<u8> = (0..FRAME as usize - HEADER).map(|i| (i % 251) as u8).collect();
    let header = [MAGIC, pixels.len() as u32, 0, 0].map(u32::to_le_bytes).concat();
    buffer.write(0, &header)?;
    buffer.write(HEADER as u64, &pixels)?;

    // Map it into the guest's memory and let the guest work on it in place.
    let handle = creator.handle(&store, &memory)?;
    // SAFETY: the host writes the buffer before the window exists and reads
    // it after the guest's call; nothing borrows the guest's memory
    // (`Memory::data` is never called); the buffer is never revoked.
    unsafe { handle.map_buffer(&mut store, WINDOW, &buffer, 0, FRAME, Protection::ReadWrite) }?;
    anyhow::ensure!(process.call(&mut store, WINDOW as i32)? == 0, "guest rejected the frame");

    // The result is already in the host's buffer.
    let mut header = [0u8; HEADER];
    buffer.read(0, &mut header)?;
    let word = |i: usize| u32::from_le_bytes(header[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let mut result = vec![0u8; pixels.len()];
    buffer.read(HEADER as u64, &mut result)?;
    handle.validate()?;
    let report = handle.report()?;
    Ok(Outcome {
        pixels: pixels.len(),
        checksum: word(2),
        expected_checksum: pixels.iter().map(|&p| u32::from(!p)).sum(),
        flags: word(3),
        all_inverted: result.iter().zip(&pixels).all(|(&r, &p)| r == !p),
        shared_runs: report.summary.runs[framemap::FrameTag::Shared],
        report: report.to_string(),
    })
}

fn main() -> anyhow::Result<()> {
    let o = run()?;
    println!("host wrote a {} KiB frame ({} pixels) into a shared buffer", FRAME >> 10, o.pixels);
    println!("guest inverted it in place at guest offset {WINDOW:#x}; flags = {}", o.flags);
    println!("checksum written by the guest: {:#x} (host computes {:#x})", o.checksum, o.expected_checksum);
    println!("every pixel inverted, seen by the host without a copy: {}", o.all_inverted);
    println!("shared runs in the frame table: {}", o.shared_runs);
    print!("{}", o.report);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs() {
        let o = super::run().unwrap();
        assert_eq!(o.checksum, o.expected_checksum);
        assert_eq!(o.flags, 1);
        assert!(o.all_inverted);
        assert_eq!(o.shared_runs, 1, "one window: {}", o.report);
    }
}
