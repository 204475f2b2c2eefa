//! Guest-driven memory control: the host grants a guest a buffer of text
//! (read-write, by handle); the guest maps it into the virtual part of its own
//! memory with the `framemap:memctl` imports, upper-cases it in place, and
//! unmaps it again. The host reads the result straight out of its buffer, no
//! byte copied, and the guest's memory ends as it began: the window's pages
//! unmapped. A host policy confines buffer windows to the virtual part, and a
//! guest asking for more than it was granted traps.

use framemap::{FrameTag, SharedBuffer};
use framemap_wasmtime::memctl::Error;
use framemap_wasmtime::memctl::{self, Access, BufferRequest, MemCtl};
use framemap_wasmtime::{FrameMemoryCreator, configure};
use wasmtime::{Config, Engine, Linker, Module, Store};

/// Wasm page size; the guest's memory holds 1 ordinary page, then 3 virtual.
const PAGE: u64 = 64 << 10;
/// Where the guest maps the buffer.
const WINDOW: u64 = 2 * PAGE;

/// `upcase(handle, len) -> changed`: maps `len` bytes of buffer `handle`
/// read-write at 0x20000, upper-cases ASCII letters in place, unmaps the
/// window and returns how many bytes it changed. `poke(handle)` maps the
/// buffer read-write at 0, which the host forbids.
const GUEST: &str = r#"
(module
  (import "framemap:memctl" "map_buffer" (func $map_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "framemap:memctl" "unmap" (func $unmap (param i32 i32)))
  (memory (export "memory") 4)
  (func (export "upcase") (param $handle i32) (param $len i32) (result i32)
    (local $p i32) (local $end i32) (local $b i32) (local $changed i32)
    ;; prot 3 = read-write; buffer offset 0.
    (local.set $p (call $map_buffer (i32.const 0x20000) (local.get $len) (i32.const 3) (local.get $handle) (i32.const 0)))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done (loop $bytes
      (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
      (local.set $b (i32.load8_u (local.get $p)))
      (if (i32.lt_u (i32.sub (local.get $b) (i32.const 0x61)) (i32.const 26))
        (then
          (i32.store8 (local.get $p) (i32.sub (local.get $b) (i32.const 0x20)))
          (local.set $changed (i32.add (local.get $changed) (i32.const 1)))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $bytes)))
    (call $unmap (i32.const 0x20000) (local.get $len))
    (local.get $changed))
  (func (export "poke") (param $handle i32)
    (drop (call $map_buffer (i32.const 0) (i32.const 1) (i32.const 3) (local.get $handle) (i32.const 0)))))
"#;

/// What the round trip did.
#[derive(Debug)]
struct Outcome {
    text: String,
    changed: i32,
    window_unmapped: bool,
    shared_runs: u64,
    refusal: String,
    refusal_is_policy: bool,
    report: String,
}

fn run() -> anyhow::Result<Outcome> {
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config)?;

    // Guests may map buffers only in the virtual part of their memory.
    let policy = |request: &BufferRequest<'_>| request.addr >= PAGE;
    let mut memctl = MemCtl::new(creator.clone()).with_policy(policy);
    let text = "the quick brown fox jumps over the lazy dog; framemap maps it, the guest shouts it.";
    let buffer = SharedBuffer::new(PAGE)?;
    buffer.write(0, text.as_bytes())?;
    // SAFETY: the buffer is written only before the guest runs and read
    // after, while nothing borrows the guest's memory (`Memory::data` is never
    // called), and it is never revoked.
    let handle = unsafe { memctl.grant(buffer.clone(), Access::ReadWrite) }?;

    let mut linker = Linker::new(&engine);
    memctl::add_to_linker(&mut linker, |m: &mut MemCtl| m)?;
    let mut store = Store::new(&engine, memctl);
    let instance = linker.instantiate(&mut store, &Module::new(&engine, GUEST)?)?;
    let memory = instance.get_memory(&mut store, "memory").expect("exported memory");
    // Everything above the first wasm page traps until the guest maps it.
    creator.handle(&store, &memory)?.make_virtual(&mut store, PAGE)?;

    let upcase = instance.get_typed_func::<(i32, i32), i32>(&mut store, "upcase")?;
    let changed = upcase.call(&mut store, (handle as i32, text.len() as i32))?;

    let mut bytes = vec![0u8; text.len()];
    buffer.read(0, &mut bytes)?;
    let handle_to_memory = creator.handle(&store, &memory)?;
    handle_to_memory.validate()?;
    let report = handle_to_memory.report()?;
    let page = framemap::host_page_size() as u64;
    let window_unmapped =
        report.runs.iter().any(|(run, frame)| run.contains(WINDOW / page) && frame.tag() == FrameTag::Unmapped);

    // Mapping over the guest's ordinary page is against the policy: a trap.
    let poke = instance.get_typed_func::<i32, ()>(&mut store, "poke")?;
    let error = poke.call(&mut store, handle as i32).expect_err("the policy refuses");
    let reason = error.downcast_ref::<Error>();
    Ok(Outcome {
        text: String::from_utf8(bytes)?,
        changed,
        window_unmapped,
        shared_runs: report.summary.runs[FrameTag::Shared],
        refusal: reason.map_or_else(|| error.to_string(), ToString::to_string),
        refusal_is_policy: matches!(reason, Some(Error::PolicyDenied { .. })),
        report: report.to_string(),
    })
}

fn main() -> anyhow::Result<()> {
    let o = run()?;
    println!("the guest mapped the granted buffer at {WINDOW:#x}, changed {} bytes in place, unmapped it", o.changed);
    println!("the host's buffer now reads: {}", o.text);
    println!("window pages unmapped again: {}; shared runs left: {}", o.window_unmapped, o.shared_runs);
    let by = if o.refusal_is_policy { "the host's policy" } else { "something else" };
    println!("a guest mapping the buffer over its ordinary page was stopped by {by}: {}", o.refusal);
    print!("{}", o.report);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs() {
        let o = super::run().unwrap();
        assert_eq!(o.text, o.text.to_ascii_uppercase());
        assert!(o.text.starts_with("THE QUICK BROWN FOX"), "{}", o.text);
        assert_eq!(o.changed, o.text.bytes().filter(u8::is_ascii_alphabetic).count() as i32);
        assert!(o.window_unmapped, "{}", o.report);
        assert_eq!(o.shared_runs, 0, "{}", o.report);
        assert!(o.refusal_is_policy, "{}", o.refusal);
    }
}
