//! A compute-heavy WASI preview 1 command for comparing `framemap run` with
//! `wasmtime run`: memory-bound and arithmetic-bound work in one run, then a
//! checksum on stdout (so nothing is optimised away and both runners can be
//! checked to agree).
//!
//! `compute [SCALE]`: SCALE (default 1) multiplies the work.

use std::hint::black_box;

/// Primes below `limit`, by a byte sieve (memory-bound: `limit` bytes).
fn sieve(limit: usize) -> u64 {
    let mut composite = vec![false; limit];
    let mut count = 0u64;
    for i in 2..limit {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < limit {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

/// Random reads and writes over a table of `words` u64 (cache-hostile).
fn scatter(words: usize, rounds: usize) -> u64 {
    let mut table: Vec<u64> = (0..words as u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut acc = 0u64;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x as usize) % words;
        acc = acc.wrapping_add(table[i]);
        table[i] = acc ^ x;
    }
    acc ^ table.iter().fold(0u64, |a, &v| a.rotate_left(5) ^ v)
}

/// Floating-point work: a damped oscillator integrated with small steps.
fn oscillators(n: usize, steps: usize) -> u64 {
    let mut pos: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
    let mut vel = vec![0.0f64; n];
    let dt = 1e-3;
    for _ in 0..steps {
        for i in 0..n {
            let k = 1.0 + (i % 7) as f64;
            let a = -k * pos[i] - 0.01 * vel[i];
            vel[i] += a * dt;
            pos[i] += vel[i] * dt;
        }
    }
    pos.iter().fold(0u64, |h, p| h.rotate_left(7) ^ p.to_bits())
}

fn main() {
    let scale: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let primes = sieve(black_box(20_000_000 * scale));
    let scattered = scatter(black_box(4 << 20), black_box(20_000_000 * scale));
    let osc = oscillators(black_box(4096), black_box(4_000 * scale));
    println!("primes {primes} scatter {scattered:016x} oscillators {osc:016x}");
}
