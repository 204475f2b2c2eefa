//! A WASI preview 2 command component for framemap's component tests.
//!
//! It carries a 64 KiB table in its data segments (so preparing it has an
//! image to cut), reads its arguments, one environment variable and a
//! preopened directory, dirties about a megabyte of heap, and prints what
//! it saw and a checksum of everything, so runs on different allocators can
//! be compared byte for byte. `exit N` as the first two arguments exits
//! with status N after printing.

use std::hint::black_box;
use std::io::Write as _;

const WORDS: usize = 16 * 1024;

const fn make_table() -> [u32; WORDS] {
    let mut table = [0u32; WORDS];
    let mut i = 0;
    while i < WORDS {
        table[i] = (i as u32).wrapping_mul(2_654_435_761) ^ 0x5bd1_e995;
        i += 1;
    }
    table
}

static TABLE: [u32; WORDS] = make_table();
static mut CALLS: u32 = 41;

fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let table = black_box(&TABLE);
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for word in table.iter() {
        hash = fnv(hash, &word.to_le_bytes());
    }
    // SAFETY: single-threaded guest; nothing else touches CALLS.
    let calls = unsafe {
        CALLS += 1;
        CALLS
    };
    let mut heap = vec![0u8; 1 << 20];
    for (i, byte) in heap.iter_mut().enumerate() {
        *byte = (i as u64 ^ hash) as u8;
    }
    let heap_hash = fnv(0xcbf2_9ce4_8422_2325, black_box(&heap));
    let mut out = std::io::stdout().lock();
    writeln!(out, "args {args:?}").unwrap();
    writeln!(out, "GREETING {:?}", std::env::var("GREETING").ok()).unwrap();
    writeln!(out, "table {hash:016x} heap {heap_hash:016x} calls {calls}").unwrap();
    if let Ok(entries) = std::fs::read_dir("/data") {
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        writeln!(out, "data {names:?}").unwrap();
        std::fs::write("/data/written-by-guest.txt", format!("{hash:016x}\n")).unwrap();
    }
    out.flush().unwrap();
    if args.first().map(String::as_str) == Some("exit") {
        let status = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
        std::process::exit(status);
    }
}
