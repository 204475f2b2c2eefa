//! The frame table against a naive per-page model: after every operation the
//! two hold the same frame for every page, and the table is coalesced and
//! gap-free (`FrameTable::check`).
#![no_main]

use arbitrary::Arbitrary;
use framemap::{BackingId, Frame, FrameTable, PageRange, Protection};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Prot {
    None,
    Read,
    ReadWrite,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FrameChoice {
    Unmapped,
    Zero(Prot),
    Image { id: u8, page: u16, prot: Prot },
    Shared { id: u8, page: u16, prot: Prot },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Set { start: u16, end: u16, frame: FrameChoice },
    Get { page: u16 },
    RunsIn { start: u16, end: u16 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    pages: u8,
    ops: Vec<Op>,
}

fn prot(p: Prot) -> Protection {
    match p {
        Prot::None => Protection::None,
        Prot::Read => Protection::Read,
        Prot::ReadWrite => Protection::ReadWrite,
    }
}

fn frame(choice: FrameChoice) -> Frame {
    match choice {
        FrameChoice::Unmapped => Frame::UNMAPPED,
        FrameChoice::Zero(p) => Frame::zero(prot(p)),
        // Few ids and small offsets, so that contiguous runs (which must
        // coalesce) actually occur.
        FrameChoice::Image { id, page, prot: p } => {
            Frame::image(BackingId(u64::from(id % 3)), u64::from(page % 64), prot(p))
        }
        FrameChoice::Shared { id, page, prot: p } => {
            Frame::shared(BackingId(u64::from(id % 3)), u64::from(page % 64), prot(p))
        }
    }
}

fuzz_target!(|input: Input| {
    let pages = u64::from(input.pages);
    let mut table = FrameTable::new(pages, Frame::UNMAPPED);
    let mut model = vec![Frame::UNMAPPED; pages as usize];
    for op in input.ops {
        match op {
            Op::Set { start, end, frame: choice } => {
                let range = PageRange::new(u64::from(start % 300), u64::from(end % 300));
                let f = frame(choice);
                let predicted = table.run_count_after_set(range, f);
                table.set(range, f);
                assert_eq!(table.run_count(), predicted, "run_count_after_set({range:?}, {f:?})");
                for p in range.start..range.end.min(pages) {
                    model[p as usize] = f.advanced(p - range.start);
                }
            }
            Op::Get { page } => {
                let page = u64::from(page % 300);
                let got = table.get(page).map(|(run, f)| {
                    assert!(run.contains(page));
                    f
                });
                assert_eq!(got, model.get(page as usize).copied(), "page {page}");
            }
            Op::RunsIn { start, end } => {
                let range = PageRange::new(u64::from(start % 300), u64::from(end % 300));
                let mut next = range.start.min(pages);
                for (run, f) in table.runs_in(range) {
                    assert_eq!(run.start, next, "runs_in leaves no gap");
                    for p in run.start..run.end {
                        assert_eq!(f.advanced(p - run.start), model[p as usize], "page {p}");
                    }
                    next = run.end;
                }
                assert_eq!(next, range.end.min(pages).max(range.start.min(pages)), "runs_in covers the range");
            }
        }
        if let Err(e) = table.check() {
            panic!("table invariant broken: {e}");
        }
    }
    let mut page = 0;
    for (run, f) in table.runs() {
        for p in run.start..run.end {
            assert_eq!(f.advanced(p - run.start), model[p as usize]);
        }
        page = run.end;
    }
    assert_eq!(page, pages);
});
