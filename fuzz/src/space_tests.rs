//! Regression tests of the `memory_ops` model against the real space:
//! hand-written operation sequences, each with the outcome (accepted,
//! refused, skipped) it must have step by step, and a replay of every input
//! in `corpus/memory_ops/` and `artifacts/memory_ops/`. `replay` panics at
//! the first disagreement between the model and the space, so each case
//! checks everything the fuzz target checks after every step. Also: any
//! byte string decodes to an input (none is wasted on the fuzzer).

use crate::space_ops::{Bytes, ImageSpec, Input, Op, Pages, Policy, Prot, Segment};
use crate::space_replay::{Outcome, Replay, replay};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::Path;

use Outcome::{Accepted as A, Refused as R, Skipped as S};

/// 8 pages of capacity, 2 guard pages, 4 pages accessible (so
/// `Pages::Pages(n)` is `n % 12` pages and `Bytes::Pages(n)` in a length is
/// `n % 10` pages).
fn input(ops: Vec<Op>) -> Input {
    Input { capacity_pages: 8, guard_pages: 2, initial_len: Bytes::Pages(4), ops }
}

fn p(n: u8) -> Pages {
    Pages::Pages(n)
}

fn policy(keep: u8, scan: bool) -> Policy {
    Policy { keep, scan }
}

/// A case: its name, its input, and the outcome of each step (`None`: the
/// space must be refused at creation).
type Case = (&'static str, Input, Option<Vec<Outcome>>);

fn images() -> Case {
    let segment = |offset, len, seed| Segment { offset, len, seed };
    let ops = vec![
        // 3 pages, two segments.
        Op::Image(ImageSpec {
            len: Bytes::Pages(3),
            segments: vec![segment(Bytes::At(0, 100), 5000, 7), segment(Bytes::Pages(2), 10, 9)],
        }),
        // A segment past the end.
        Op::Image(ImageSpec { len: Bytes::Pages(1), segments: vec![segment(Bytes::Pages(1), 1, 1)] }),
        Op::MapImage { offset: p(1), image: 0, image_offset: p(0), len: p(3), prot: Prot::ReadWrite },
        // Past the image's end; a misaligned image offset.
        Op::MapImage { offset: p(0), image: 1, image_offset: p(1), len: p(3), prot: Prot::ReadWrite },
        Op::MapImage { offset: p(0), image: 0, image_offset: Pages::Misaligned(0, 0), len: p(1), prot: Prot::Read },
        // Copy-on-write over two image pages, then reads across them.
        Op::Write { offset: Bytes::At(1, 10), len: 5000, seed: 3 },
        Op::Read { offset: Bytes::At(1, 50), len: 9000 },
        Op::Discard { offset: p(2), len: p(2) },
        Op::RestoreDirty(policy(0, false)),
        Op::Write { offset: Bytes::At(3, 1), len: 20, seed: 4 },
        Op::RestoreDirty(policy(2, true)),
        Op::Reset { len: Bytes::Pages(5), image: Some(0), policy: policy(2, true) },
        // The image (3 pages) does not fit in 2.
        Op::Reset { len: Bytes::Pages(2), image: Some(0), policy: policy(4, true) },
        Op::RestoreLayout { len: Bytes::At(6, 7), image: Some(0) },
        Op::Summary,
    ];
    ("images", input(ops), Some(vec![A, R, A, R, R, A, A, A, A, A, A, A, R, A, A]))
}

fn buffers() -> Case {
    let rw = Prot::ReadWrite;
    let ops = vec![
        Op::Buffer(Bytes::Pages(2)),
        // Empty.
        Op::Buffer(Bytes::Pages(0)),
        // Two windows of one buffer, the second read-only.
        Op::MapBuffer { offset: p(0), buffer: 0, buffer_offset: p(0), len: p(2), prot: rw },
        Op::MapBuffer { offset: p(2), buffer: 0, buffer_offset: p(1), len: p(1), prot: Prot::Read },
        // Written through the first, seen through the second and the host.
        Op::Write { offset: Bytes::At(1, 7), len: 40, seed: 5 },
        Op::Write { offset: Bytes::Pages(2), len: 1, seed: 5 },
        Op::BufferWrite { buffer: 0, offset: Bytes::At(0, 3), len: 20, seed: 11 },
        Op::BufferRead { buffer: 0, offset: Bytes::Pages(1), len: 64 },
        Op::BufferRead { buffer: 0, offset: Bytes::Pages(2), len: 1 },
        // Shared pages are never discarded, nor touched by restore_dirty.
        Op::Discard { offset: p(0), len: p(1) },
        Op::RestoreDirty(policy(1, true)),
        // A buffer the space never saw, then this one.
        Op::UnmapBuffer(8),
        Op::UnmapBuffer(1),
        Op::MapBuffer { offset: p(1), buffer: 0, buffer_offset: p(0), len: p(1), prot: rw },
        Op::Revoke(0),
        Op::MapBuffer { offset: p(0), buffer: 0, buffer_offset: p(0), len: p(1), prot: rw },
        Op::BufferWrite { buffer: 0, offset: Bytes::Pages(0), len: 1, seed: 1 },
        Op::Revoke(0),
        // Too long to round up; then one buffer too many.
        Op::Buffer(Bytes::Raw(u64::MAX)),
        Op::Buffer(Bytes::Pages(1)),
    ];
    ("buffers", input(ops), Some(vec![A, R, A, A, A, R, A, A, R, R, A, A, A, A, A, R, R, A, R, S]))
}

fn reset_over_windows() -> Case {
    let ops = vec![
        Op::Buffer(Bytes::Pages(1)),
        Op::MapBuffer { offset: p(3), buffer: 0, buffer_offset: p(0), len: p(1), prot: Prot::ReadWrite },
        Op::Write { offset: Bytes::At(2, 4000), len: 200, seed: 8 },
        // The window is the host's: kept by restore_dirty, replaced by a reset.
        Op::Reset { len: Bytes::Pages(4), image: None, policy: policy(0, false) },
        Op::BufferRead { buffer: 0, offset: Bytes::Pages(0), len: 300 },
        Op::Reset { len: Bytes::At(1, 1), image: None, policy: policy(3, true) },
    ];
    ("reset over windows", input(ops), Some(vec![A, A, A, A, A, A]))
}

fn protect_unmap_grow() -> Case {
    let ops = vec![
        Op::Protect { offset: p(0), len: p(2), prot: Prot::Read },
        Op::Write { offset: Bytes::Pages(1), len: 1, seed: 0 },
        Op::Read { offset: Bytes::Pages(1), len: 10 },
        Op::Protect { offset: p(1), len: p(1), prot: Prot::None },
        Op::Read { offset: Bytes::Pages(1), len: 1 },
        Op::Unmap { offset: p(3), len: p(1) },
        // Over an unmapped page; misaligned; overflowing; past the length.
        Op::Protect { offset: p(2), len: p(2), prot: Prot::ReadWrite },
        Op::Protect { offset: Pages::Misaligned(0, 5), len: p(1), prot: Prot::ReadWrite },
        Op::Protect { offset: p(1), len: Pages::Raw(u64::MAX), prot: Prot::ReadWrite },
        Op::Unmap { offset: p(4), len: p(1) },
        // Grow to 6 pages and 100 bytes; not shrink, not past the capacity.
        Op::Grow(Bytes::At(6, 100)),
        Op::Grow(Bytes::Pages(5)),
        Op::Grow(Bytes::Pages(9)),
        Op::Write { offset: Bytes::At(6, 50), len: 60, seed: 2 },
        Op::Write { offset: Bytes::At(6, 40), len: 60, seed: 2 },
        Op::MapZero { offset: p(3), len: p(1), prot: Prot::ReadWrite },
        Op::Populate(vec![(0, 3), (2, 7), (5, 2)]),
        Op::Summary,
        Op::RestoreLayout { len: Bytes::Pages(3), image: None },
        Op::RestoreLayout { len: Bytes::Pages(9), image: None },
        Op::RestoreDirty(policy(5, true)),
    ];
    ("protect, unmap, grow", input(ops), Some(vec![A, R, A, A, R, A, R, R, R, R, A, R, R, R, A, A, A, A, A, R, A]))
}

fn nothing_to_name() -> Case {
    let ops = vec![
        Op::MapImage { offset: p(0), image: 0, image_offset: p(0), len: p(1), prot: Prot::Read },
        Op::MapBuffer { offset: p(0), buffer: 0, buffer_offset: p(0), len: p(1), prot: Prot::Read },
        Op::Revoke(0),
        Op::BufferRead { buffer: 0, offset: Bytes::Pages(0), len: 1 },
        Op::BufferWrite { buffer: 0, offset: Bytes::Pages(0), len: 1, seed: 0 },
        // No image made: a reset without one.
        Op::Reset { len: Bytes::Pages(2), image: Some(0), policy: policy(4, true) },
        Op::UnmapBuffer(3),
    ];
    ("nothing to name", input(ops), Some(vec![S, S, S, S, S, A, A]))
}

fn spaces() -> Vec<Case> {
    vec![
        // No pages at all; a length past the capacity (3 pages in 2).
        (
            "empty space",
            Input { capacity_pages: 0, guard_pages: 0, initial_len: Bytes::Pages(0), ops: vec![Op::Summary] },
            None,
        ),
        (
            "length past capacity",
            Input { capacity_pages: 2, guard_pages: 1, initial_len: Bytes::Pages(3), ops: vec![] },
            None,
        ),
        // Only a guard page: nothing to grow into.
        (
            "guard only",
            Input {
                capacity_pages: 0,
                guard_pages: 1,
                initial_len: Bytes::Pages(0),
                ops: vec![Op::Summary, Op::Grow(Bytes::Pages(1)), Op::Grow(Bytes::Pages(0))],
            },
            Some(vec![A, R, A]),
        ),
    ]
}

fn cases() -> Vec<Case> {
    let mut cases = vec![images(), buffers(), reset_over_windows(), protect_unmap_grow(), nothing_to_name()];
    cases.extend(spaces());
    cases
}

/// `replay`, naming `what` if the model and the space disagree (the panic
/// message above says where).
fn replay_named(what: &str, input: Input) -> Replay {
    catch_unwind(AssertUnwindSafe(|| replay(input))).unwrap_or_else(|panic| {
        eprintln!("{what}: the model and the space disagree");
        resume_unwind(panic)
    })
}

/// Replays every file in `dir` as the target would: how many files and
/// steps, `None` if `dir` does not exist.
fn replay_dir(dir: &Path) -> Option<(usize, usize)> {
    let mut files: Vec<_> = std::fs::read_dir(dir).ok()?.map(|e| e.expect("read a directory entry").path()).collect();
    files.sort();
    let mut steps = 0;
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if let Some(input) = Input::decode(&data) {
            steps += replay_named(&file.display().to_string(), input).outcomes.len();
        }
    }
    Some((files.len(), steps))
}

#[test]
fn hand_written_sequences_and_fuzz_inputs_agree_with_the_model() {
    let mut ran = 0;
    for (name, input, want) in cases() {
        let got = replay_named(name, input);
        let want = match want {
            Some(outcomes) => Replay { created: true, outcomes },
            None => Replay { created: false, outcomes: vec![] },
        };
        assert_eq!(got, want, "case {name}");
        ran += 1;
    }
    assert!(ran >= 8, "only {ran} hand-written cases ran");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["corpus/memory_ops", "artifacts/memory_ops"] {
        match replay_dir(&root.join(dir)) {
            None => eprintln!("fuzz/{dir}: missing, nothing to replay"),
            Some((0, _)) => eprintln!("fuzz/{dir}: empty, nothing to replay"),
            Some((n, steps)) => eprintln!("fuzz/{dir}: {n} inputs replayed ({steps} steps)"),
        }
    }
    eprintln!("{ran} hand-written cases ran");
}

#[test]
fn every_byte_string_decodes() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut ops = 0;
    for len in 0..2000 {
        let data: Vec<u8> = (0..len % 300)
            .map(|_| {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let input = Input::decode(&data).unwrap_or_else(|| panic!("{data:?} does not decode"));
        ops += input.ops.len();
    }
    assert!(ops > 2000, "only {ops} operations decoded");
}
