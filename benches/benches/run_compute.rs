//! `framemap run` of a compute-heavy program against `wasmtime run`, as
//! whole processes: the Rust `wasm32-wasip1` command in
//! `benches/guests/compute` (a sieve over 60 MB, 60 M random reads and
//! writes over 32 MiB, floating-point loops; about 1.5 s) run with its
//! scale argument 3, both runners with their compile caches on and warm
//! (one unmeasured run each first), alternating for `ROUNDS` rounds.
//! Reported: medians of wall time and of CPU time (user + system, from
//! `getrusage(RUSAGE_CHILDREN)`), and their ratios. Target: framemap within
//! 2% of wasmtime. Both must print the same checksum line.
//!
//! Needs the release binary and a `wasmtime` CLI (48.0.8, e.g. from
//! `cargo install wasmtime-cli@48.0.8`; not in CI):
//! `FRAMEMAP_BIN=target/release/framemap WASMTIME_BIN=/path/to/wasmtime
//! cargo bench -p framemap-benches --bench run_compute`. Without either it
//! says so and measures nothing. Relative paths are the workspace's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GUEST: &str = "guests/compute.wasm";
const SCALE: &str = "3";
const ROUNDS: usize = 11;

/// The binary named by the environment variable `var`, relative paths
/// taken from the workspace root.
fn binary(var: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(var)?);
    Some(match path.is_relative() {
        true => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path),
        false => path,
    })
}

/// CPU time (user + system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` into the buffer it is given,
    // which is one, and aligned.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_CHILDREN)");
    // SAFETY: zeroed() made every byte valid, and getrusage filled it in.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Runs `command`, checks it succeeded, and returns (wall, cpu, stdout).
fn timed(command: &mut Command) -> (Duration, Duration, String) {
    let (cpu, start) = (children_cpu(), Instant::now());
    let out = command.output().expect("spawn");
    let wall = start.elapsed();
    let cpu = children_cpu() - cpu;
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    (wall, cpu, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let (Some(framemap), Some(wasmtime)) = (binary("FRAMEMAP_BIN"), binary("WASMTIME_BIN")) else {
        println!(
            "run_compute: set FRAMEMAP_BIN to a release `framemap` and WASMTIME_BIN to a `wasmtime` CLI to run this \
             benchmark; nothing measured"
        );
        return;
    };
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join(GUEST);
    let cache = std::env::temp_dir().join(format!("framemap-run-compute-{}", std::process::id()));
    let framemap_run = || {
        let mut c = Command::new(&framemap);
        c.env("FRAMEMAP_CACHE_DIR", &cache).arg("run").arg(&guest).arg(SCALE);
        c
    };
    // wasmtime's cache is on by default, in its own directory.
    let wasmtime_run = || {
        let mut c = Command::new(&wasmtime);
        c.arg("run").arg(&guest).arg(SCALE);
        c
    };
    let version = Command::new(&wasmtime).arg("--version").output().expect("wasmtime --version");
    println!("wasmtime: {}", String::from_utf8_lossy(&version.stdout).trim());
    // Warm both caches.
    let expected = timed(&mut framemap_run()).2;
    assert_eq!(timed(&mut wasmtime_run()).2, expected, "both print the same checksum");
    let mut sides: [(&str, Vec<Duration>, Vec<Duration>); 2] =
        [("framemap run", Vec::new(), Vec::new()), ("wasmtime run", Vec::new(), Vec::new())];
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (wall, cpu, out) = timed(&mut if i == 0 { framemap_run() } else { wasmtime_run() });
            assert_eq!(out, expected, "{}", sides[i].0);
            sides[i].1.push(wall);
            sides[i].2.push(cpu);
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
    println!("compute-heavy program ({GUEST} {SCALE}; medians of {ROUNDS} alternating runs, caches warm):");
    let medians: Vec<(Duration, Duration)> = sides
        .iter()
        .map(|(name, wall, cpu)| (name, median(wall.clone()), median(cpu.clone())))
        .map(|(name, w, c)| {
            println!("  {name}: wall {w:?}, cpu {c:?}");
            (w, c)
        })
        .collect();
    let wall = medians[0].0.as_secs_f64() / medians[1].0.as_secs_f64();
    let cpu = medians[0].1.as_secs_f64() / medians[1].1.as_secs_f64();
    println!(
        "  framemap / wasmtime: wall {wall:.4}x, cpu {cpu:.4}x (target within 2%: {})",
        if wall <= 1.02 { "met" } else { "MISSED" }
    );
}
