//! `framemap serve` against wasmtime's `serve` configuration, run the same
//! way: the same server (`framemap serve`) with `--allocator framemap`
//! (prepared component, recycled framemap slots) and `--allocator
//! wasmtime-pooling` (the unchanged component on wasmtime's default pooling
//! allocator, as `wasmtime serve` has it), loopback only. Two components
//! from framemap-cli's tests: the hello-world handler, and the handler with
//! a 16 MiB data image that dirties 16 pages per request.
//!
//! Load: `CLIENTS` threads, each on one keep-alive HTTP/1.1 connection,
//! sending requests back to back; one warm-up second, then `SECONDS`
//! measured; the two allocators alternate twice per component. Reported:
//! requests per second, p50 and p99 latency, and the ratios. Targets:
//! framemap ≥ 1.2× the requests/s on the 16 MiB-image handler, ≥ 1.0× on
//! hello-world, p99 no worse.
//!
//! Needs the release binary: `cargo build --release -p framemap-cli`, then
//! `FRAMEMAP_BIN=target/release/framemap cargo bench -p framemap-benches
//! --bench serve`. Without `FRAMEMAP_BIN` it says so and measures nothing.
//! With `WASMTIME_BIN` naming a `wasmtime` CLI (48.0.8, e.g. from `cargo
//! install wasmtime-cli@48.0.8`; not in CI), the real `wasmtime serve` is a
//! third side, loaded the same way.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const SECONDS: u64 = 5;
const COMPONENTS: [(&str, &str); 2] = [
    ("hello", "../crates/framemap-cli/tests/guests/http_hello.wasm"),
    ("16MiB-image", "../crates/framemap-cli/tests/guests/http_image.wasm"),
];

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server: `framemap serve` with `allocator`, or (`allocator`
/// "wasmtime-serve") the `wasmtime serve` CLI at `wasmtime`.
fn start(bin: &str, wasmtime: Option<&str>, allocator: &str, component: &str) -> Server {
    let mut command = match (allocator, wasmtime) {
        ("wasmtime-serve", Some(wasmtime)) => {
            let mut c = Command::new(wasmtime);
            // `-Scli`: the guests import wasi:cli (environment, stdio), which
            // `framemap serve` always provides.
            c.args(["serve", "-Scli", "--addr", "127.0.0.1:0", component]);
            c
        }
        _ => {
            let mut c = Command::new(bin);
            c.args(["serve", "--addr", "127.0.0.1:0", "--max-concurrency", "64", "--allocator", allocator, component]);
            c
        }
    };
    let mut child = command.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn the server");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    // framemap prints "framemap: serve: listening on http://ADDR/", wasmtime
    // "Serving HTTP on http://ADDR/".
    let mut line = String::new();
    while !line.contains("http://") {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).expect("stderr line"), 0, "the server exited before listening");
    }
    let addr = line.trim().split("http://").nth(1).unwrap_or_default().trim_end_matches('/').to_owned();
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Server(child, addr)
}

/// Reads one response (status line, headers, chunked or sized body).
fn read_response(reader: &mut BufReader<TcpStream>) -> u16 {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (mut chunked, mut length) = (false, 0usize);
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        chunked |= header == "transfer-encoding: chunked";
        if let Some(n) = header.strip_prefix("content-length: ") {
            length = n.parse().unwrap_or(0);
        }
    }
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).expect("chunk size");
            let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            if size == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
    }
    status
}

/// Drives `addr` for `warmup` then `measure`; returns latencies (ns) of
/// the measured requests.
fn load(addr: &str, warmup: Duration, measure: Duration) -> Vec<u64> {
    let start = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let addr = addr.to_owned();
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                let mut latencies = Vec::new();
                let mut n = client;
                while start.elapsed() < warmup + measure {
                    let sent = Instant::now();
                    write!(writer, "GET /{n} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
                    let status = read_response(&mut reader);
                    assert_eq!(status, 200, "a request failed");
                    if sent.duration_since(start) >= warmup {
                        latencies.push(sent.elapsed().as_nanos() as u64);
                    }
                    n += CLIENTS;
                }
                latencies
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().expect("client")).collect()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn main() {
    let Ok(bin) = std::env::var("FRAMEMAP_BIN") else {
        println!("serve: set FRAMEMAP_BIN to a release `framemap` binary to run this benchmark; nothing measured");
        return;
    };
    // Benches run in `benches/`: a relative path is the workspace's.
    let bin = match std::path::Path::new(&bin).is_relative() {
        true => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&bin).to_string_lossy().into_owned(),
        false => bin,
    };
    let wasmtime = std::env::var("WASMTIME_BIN").ok().map(|w| match std::path::Path::new(&w).is_relative() {
        true => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&w).to_string_lossy().into_owned(),
        false => w,
    });
    for (name, path) in COMPONENTS {
        let component = concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + path;
        let mut results: Vec<(&str, Vec<u64>)> = vec![("framemap", Vec::new()), ("wasmtime-pooling", Vec::new())];
        if wasmtime.is_some() {
            results.push(("wasmtime-serve", Vec::new()));
        }
        for _round in 0..2 {
            for (allocator, latencies) in results.iter_mut() {
                let server = start(&bin, wasmtime.as_deref(), allocator, &component);
                latencies.extend(load(&server.1, Duration::from_secs(1), Duration::from_secs(SECONDS)));
            }
        }
        let mut summary = Vec::new();
        for (allocator, latencies) in &mut results {
            latencies.sort_unstable();
            let rps = latencies.len() as f64 / (2 * SECONDS) as f64;
            let (p50, p99) = (percentile(latencies, 0.50), percentile(latencies, 0.99));
            println!("serve/{name}/{allocator}: {rps:.0} requests/s, p50 {p50:.0} us, p99 {p99:.0} us");
            summary.push((rps, p99));
        }
        for (i, other) in results.iter().enumerate().skip(1) {
            println!(
                "serve/{name}: framemap / {}: requests/s {:.2}x, p99 {:.2}x",
                other.0,
                summary[0].0 / summary[i].0,
                summary[0].1 / summary[i].1
            );
        }
    }
}
