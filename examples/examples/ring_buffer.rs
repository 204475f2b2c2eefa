//! A magic ring buffer: one `SharedBuffer` of N host pages mapped twice, back
//! to back, into a guest's memory. Byte `i` of the second window is byte `i`
//! of the first, so a message that wraps around the end of the ring reads as
//! one contiguous run of memory: the guest walks it with a single loop and no
//! wrap-around logic, and the host writes it with no copying into the guest.

use framemap::{Protection, SharedBuffer};
use framemap_wasmtime::{FrameMemoryCreator, configure};
use wasmtime::{Config, Engine, Instance, Module, Store};

/// Host pages in the ring.
const RING_PAGES: u64 = 4;

/// `scan(ptr) -> (len, fnv1a)`: length of the NUL-terminated message at
/// `ptr` and its 32-bit FNV-1a hash, in one loop that knows nothing of rings.
const GUEST: &str = r#"
(module
  (memory (export "mem") MEMORY_PAGES)
  (func (export "scan") (param $p i32) (result i32 i32)
    (local $n i32) (local $b i32) (local $h i32)
    (local.set $h (i32.const 0x811c9dc5))
    (block $done (loop $bytes
      (local.set $b (i32.load8_u (i32.add (local.get $p) (local.get $n))))
      (br_if $done (i32.eqz (local.get $b)))
      (local.set $h (i32.mul (i32.xor (local.get $h) (local.get $b)) (i32.const 0x01000193)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br $bytes)))
    (local.get $n) (local.get $h)))
"#;

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// What the guest saw.
#[derive(Debug)]
struct Outcome {
    ring_len: u64,
    head: u64,
    message: Vec<u8>,
    guest_len: u32,
    guest_hash: u32,
    shared_runs: u64,
    report: String,
}

fn run() -> anyhow::Result<Outcome> {
    let ring_len = RING_PAGES * framemap::host_page_size() as u64;
    // Guest layout: [0, ring) ordinary memory, then the ring twice.
    let (first, second) = (ring_len, 2 * ring_len);
    let memory_pages = (3 * ring_len).div_ceil(65536);

    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config)?;
    let module = Module::new(&engine, GUEST.replace("MEMORY_PAGES", &memory_pages.to_string()))?;
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[])?;
    let memory = instance.get_memory(&mut store, "mem").expect("exported memory");
    let scan = instance.get_typed_func::<i32, (i32, i32)>(&mut store, "scan")?;

    let ring = SharedBuffer::new(ring_len)?;
    let handle = creator.handle(&store, &memory)?;
    // SAFETY: the ring's bytes change only through `ring.write` below, while
    // nothing borrows the memory's bytes (`memory.data` is never called), and
    // the ring is never revoked.
    unsafe {
        handle.map_buffer(&mut store, first, &ring, 0, ring_len, Protection::Read)?;
        handle.map_buffer(&mut store, second, &ring, 0, ring_len, Protection::Read)?;
    }

    // The producer's head sits 100 bytes before the end: the message wraps.
    let head = ring_len - 100;
    let message: Vec<u8> = b"the quick brown fox jumps over the lazy dog; ".iter().copied().cycle().take(300).collect();
    let mut framed = message.clone();
    framed.push(0);
    let (tail, wrapped) = framed.split_at((ring_len - head) as usize);
    ring.write(head, tail)?;
    ring.write(0, wrapped)?;

    // One contiguous read starting in the first window, ending in the second.
    let (len, hash) = scan.call(&mut store, (first + head) as i32)?;
    handle.validate()?;
    let report = handle.report()?;
    Ok(Outcome {
        ring_len,
        head,
        message,
        guest_len: len as u32,
        guest_hash: hash as u32,
        shared_runs: report.summary.runs[framemap::FrameTag::Shared],
        report: report.to_string(),
    })
}

fn main() -> anyhow::Result<()> {
    let o = run()?;
    let wrapped = (o.head + o.message.len() as u64 + 1) % o.ring_len;
    println!("ring of {} bytes mapped twice back to back", o.ring_len);
    println!(
        "host wrote {} bytes + NUL at ring offset {}: {} before the seam, {wrapped} after",
        o.message.len(),
        o.head,
        o.ring_len - o.head
    );
    println!("guest read {} bytes contiguously, fnv1a {:#010x}", o.guest_len, o.guest_hash);
    println!("host's fnv1a of the message:                {:#010x}", fnv1a(&o.message));
    println!("shared runs in the frame table: {}", o.shared_runs);
    print!("{}", o.report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs() {
        let o = run().unwrap();
        assert!(o.head + o.message.len() as u64 > o.ring_len, "the message wraps");
        assert_eq!(o.guest_len as usize, o.message.len());
        assert_eq!(o.guest_hash, fnv1a(&o.message));
        assert_eq!(o.shared_runs, 2, "two windows of one buffer: {}", o.report);
    }
}
