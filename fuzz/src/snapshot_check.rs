//! The `snapshot_file` target's oracle (ARCHITECTURE.md, "Checkpoints and
//! snapshots"): `Snapshot::open` returns `Ok` or `Err`, never panics or
//! allocates past the file's size (the target runs with
//! `-rss_limit_mb=2048`); the unmutated file opens. An opened file has the
//! header's sizes, both CRCs right, an id that is the SHA-256 of its
//! manifest, and a manifest that encodes back to its bytes (the decoder
//! accepts only what the encoder writes). `verify` passes exactly when the
//! data section hashes to the manifest's digest. Every memory restores into
//! a fresh `LinearSpace` (holding a few bytes, and sometimes the image,
//! before) exactly when everything it needs is there (size, image by hash
//! and inside it, no buffer, the parent and its pages), and then holds
//! exactly what its runs say: each page's protection, `Unmapped` where they
//! say so, and the bytes of its source (zeros, the image's page, the file's
//! data page `n` at byte `(n + 1) * page`, or the parent's page), and
//! validates against the kernel; a refused restore leaves the space as it
//! was. Unmutated, a restored memory equals the memory that was captured.

use crate::snapshot_make::{Built, RESTORE_PAGES, build, chance, dir, dir_path, ps, trace};
use crate::snapshot_mutate::{edit_manifest, encode, manifest_at, mutate_bytes};
use arbitrary::{Result as AResult, Unstructured};
use framemap::snapshot::{Digest, PageSource, RestoreOptions, Snapshot};
use framemap::{Frame, FrameKind, LinearSpace, PageRange, Protection, SpaceConfig};

/// Runs the target on one input: builds, mutates, opens, verifies and
/// restores, panicking at the first thing the oracle refuses.
pub fn run(data: &[u8]) {
    /// Nothing stays behind in /dev/shm after the run, nor after a panic
    /// the crate's tests catch (libFuzzer aborts at a panic: its files stay).
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(dir_path());
        }
    }
    let _cleanup = Cleanup;
    // Inputs end early all the time: `Unstructured` then reads zeros, so
    // every stage still runs.
    let _ = run_stages(&mut Unstructured::new(data));
}

fn run_stages(u: &mut Unstructured) -> AResult<()> {
    let mut built = build(u)?;
    let original = built.file.clone();
    let opened = Snapshot::open(dir().join("source")).expect("a file just written opens");
    assert_eq!(encode(opened.manifest()), original[manifest_at(&original)..], "the target's encoder is the format's");
    let edited = chance(u, 1, 2)?;
    let mut file = if edited { edit_manifest(u, &built, opened.manifest())? } else { original.clone() };
    drop(opened);
    mutate_bytes(u, &mut file)?;
    let path = dir().join("mutated");
    std::fs::write(&path, &file).expect("writing the mutated file");
    if trace() {
        let changed = file != original;
        eprintln!("file of {} bytes (manifest edited: {edited}, changed: {changed})", file.len());
    }
    let snapshot = match Snapshot::open(&path) {
        Ok(s) => s,
        Err(e) => {
            if trace() {
                eprintln!("refused: {e}");
            }
            assert_ne!(file, original, "the unmutated file is refused: {e}");
            return Ok(());
        }
    };
    check_opened(&snapshot, &file);
    if trace() {
        eprintln!("opened: {:#?}", snapshot.manifest());
    }
    let snapshot = attach_parent(snapshot, &built);
    // `verify` reads the data section: it must pass exactly when the data
    // hashes to the manifest's digest (the parent is unmutated and passes).
    let data = &file[ps() as usize..manifest_at(&file)];
    let digest_ok = Digest::of(data) == snapshot.manifest().data_digest;
    match snapshot.verify() {
        Ok(()) => assert!(digest_ok, "verify passed a data section that does not match its digest"),
        Err(e) => assert!(!digest_ok, "verify refused a data section that matches its digest: {e}"),
    }
    let unmutated = file == original;
    let mut spaces = std::mem::take(&mut built.spaces);
    let names: Vec<String> = snapshot.manifest().memories.iter().map(|m| m.name.clone()).collect();
    for name in names {
        // Unmutated, the restored memory must also be the captured one.
        let source = spaces.iter_mut().find(|(n, _)| unmutated && *n == name).map(|(_, s)| s);
        check_restore(u, &snapshot, &name, &file, &built, source)?;
    }
    Ok(())
}

/// What an opened file must be: its header's sizes, both CRCs right, its id
/// the manifest's SHA-256, a manifest that encodes back to its bytes.
fn check_opened(snapshot: &Snapshot, file: &[u8]) {
    let p = ps();
    let u64_at = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
    assert_eq!(&file[0..8], b"FRAMEMAP");
    assert_eq!(snapshot.data_pages(), u64_at(24));
    assert_eq!(snapshot.file_len(), file.len() as u64);
    let moff = manifest_at(file);
    assert_eq!(moff as u64, (1 + u64_at(24)) * p, "the manifest follows the data");
    assert_eq!(u64_at(40), (file.len() - moff) as u64, "the manifest reaches the file's end");
    let manifest = &file[moff..];
    assert_eq!(crc32fast::hash(&file[..56]), u32_at(56), "opened with a wrong header CRC");
    assert_eq!(crc32fast::hash(manifest), u32_at(48), "opened with a wrong manifest CRC");
    assert_eq!(snapshot.id(), Digest::of(manifest));
    assert_eq!(encode(snapshot.manifest()), manifest, "decoded into a manifest that encodes differently");
}

/// Attaches the input's parent where the snapshot names it; naming another
/// one, the parent must be refused.
fn attach_parent(snapshot: Snapshot, built: &Built) -> Snapshot {
    let Some((parent, _)) = &built.parent else { return snapshot };
    match snapshot.with_parent(parent.clone()) {
        Ok(attached) => {
            assert_eq!(snapshot.parent_id(), Some(parent.id()));
            attached.check_chain().expect("an attached chain");
            attached
        }
        Err(_) => {
            assert_ne!(snapshot.parent_id(), Some(parent.id()), "the right parent is refused");
            snapshot
        }
    }
}

/// One page as the file describes it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Content<'a> {
    Unmapped,
    Zero,
    Bytes(&'a [u8]),
}

/// The pages of memory `name` as the snapshot describes them, with the
/// protection of each; `None` where a restore must refuse (too large, an
/// image it does not have or a page past it, a buffer, a missing parent or
/// parent page).
fn expected<'a>(
    snapshot: &Snapshot,
    name: &str,
    file: &'a [u8],
    built: &'a Built,
) -> Option<Vec<(Protection, Content<'a>)>> {
    let p = ps();
    let record = snapshot.memory(name).expect("a memory of the manifest");
    if record.len > RESTORE_PAGES * p {
        return None;
    }
    let page_of = |bytes: &'a [u8], n: u64| &bytes[(n * p) as usize..((n + 1) * p) as usize];
    // Where a page of a concrete source comes from (`from` holds its data pages).
    let concrete = |source: PageSource, from: &'a [u8]| -> Option<Content<'a>> {
        match source {
            PageSource::Unmapped => Some(Content::Unmapped),
            PageSource::Zero => Some(Content::Zero),
            PageSource::Data { page } => Some(Content::Bytes(page_of(from, page + 1))),
            PageSource::Image { image, page } => (image == built.img.hash && page < built.img.pages())
                .then(|| Content::Bytes(page_of(&built.img.bytes, page))),
            PageSource::Shared { .. } | PageSource::Parent => None,
        }
    };
    let mut pages = Vec::new();
    for run in &record.runs {
        for i in 0..run.pages.len() {
            let content = match run.source.advanced(i) {
                PageSource::Parent => {
                    let parent = snapshot.parent()?;
                    let (_, parent_file) = built.parent.as_ref().expect("an attached parent is the input's");
                    let at = run.pages.start + i;
                    let prun = parent.memory(name).ok()?.runs.iter().find(|r| r.pages.contains(at))?;
                    match concrete(prun.source.advanced(at - prun.pages.start), parent_file)? {
                        // A child never takes a hole from its parent.
                        Content::Unmapped => return None,
                        c => c,
                    }
                }
                source => concrete(source, file)?,
            };
            pages.push((run.prot, content));
        }
    }
    Some(pages)
}

/// Restores memory `name` into a fresh space and checks it against
/// `expected`, and against `source` (the captured memory) if given.
fn check_restore(
    u: &mut Unstructured,
    snapshot: &Snapshot,
    name: &str,
    file: &[u8],
    built: &Built,
    mut source: Option<&mut LinearSpace>,
) -> AResult<()> {
    let p = ps();
    // A fresh space, not empty: a restore replaces everything in it, or
    // (refused) changes nothing.
    let initial = u.int_in_range(0..=8u64)? * p;
    let config = SpaceConfig { capacity: RESTORE_PAGES * p, guard: 2 * p, initial_len: initial };
    let mut space = LinearSpace::new(config).expect("a space");
    if initial > 0 {
        space.write(0, b"before the restore").expect("a write");
    }
    if initial > p && chance(u, 1, 3)? {
        space.map_image(p, &built.img.image, 0, p, Protection::Read).expect("an image");
    }
    let before: Vec<(PageRange, Frame)> = space.table().runs().collect();
    let before_len = space.len();
    let expect = expected(snapshot, name, file, built);
    // Merged or not (`RestoreOptions::merge_gaps`), a restore is the same
    // memory.
    let merge_gaps = [0, 1, 4, 16][u.int_in_range(0..=3usize)?];
    let options = RestoreOptions { merge_gaps, ..RestoreOptions::default() };
    let restored = space.restore_with(snapshot, name, &mut vec![built.img.image.clone()], options).map(drop);
    if trace() {
        let outcome = restored.as_ref().map_err(ToString::to_string);
        eprintln!("memory {name:?}: restore {outcome:?}, expected {}", if expect.is_some() { "Ok" } else { "Err" });
    }
    match (restored, expect) {
        (Err(e), None) => {
            assert_eq!(space.len(), before_len, "a refused restore changed the size: {e}");
            assert_eq!(space.table().runs().collect::<Vec<_>>(), before, "a refused restore changed the table: {e}");
            space.validate().expect("a refused restore leaves the space valid");
            if initial > 0 {
                let mut buf = [0u8; 18];
                space.read(0, &mut buf).expect("the page written before");
                assert_eq!(&buf, b"before the restore");
            }
            assert!(source.is_none(), "memory {name:?}: the unmutated file's restore was refused");
            Ok(())
        }
        (Err(e), Some(_)) => panic!("memory {name:?}: refused a restore it has everything for: {e}"),
        (Ok(()), None) => panic!("memory {name:?}: restored what it should have refused"),
        (Ok(()), Some(pages)) => {
            let record = snapshot.memory(name).expect("a memory");
            assert_eq!(space.len(), record.len);
            assert_eq!(space.accessible_pages(), PageRange::new(0, pages.len() as u64));
            space.validate().expect("a restored space validates");
            for (i, (prot, content)) in pages.iter().enumerate() {
                let (_, frame) = space.table().get(i as u64).expect("a page of the table");
                assert_eq!(frame.prot(), *prot, "memory {name:?}, page {i}: protection");
                let unmapped = matches!(frame.kind(), FrameKind::Unmapped);
                assert_eq!(unmapped, *content == Content::Unmapped, "memory {name:?}, page {i}: {frame:?}");
                if let Some(source) = &source {
                    let (_, captured) = source.table().get(i as u64).expect("a page of the captured memory");
                    assert_eq!(captured.prot(), frame.prot(), "memory {name:?}, page {i}: the captured protection");
                    let hole = matches!(captured.kind(), FrameKind::Unmapped);
                    assert_eq!(hole, unmapped, "memory {name:?}, page {i}: captured {captured:?}, restored {frame:?}");
                }
            }
            if let Some(source) = &source {
                assert_eq!(source.len(), space.len(), "memory {name:?}: the captured size");
            }
            for (i, (prot, content)) in pages.iter().enumerate() {
                let expected = match content {
                    Content::Unmapped => continue,
                    Content::Zero => &vec![0u8; p as usize][..],
                    Content::Bytes(b) => b,
                };
                let at = i as u64 * p;
                if !prot.readable() {
                    space.protect(at, p, Protection::Read).expect("a restored page made readable");
                }
                let n = p.min(space.len() - at) as usize;
                let mut buf = vec![0u8; n];
                space.read(at, &mut buf).expect("a readable page");
                assert!(buf == expected[..n], "memory {name:?}, page {i}: bytes differ from the file's {content:?}");
                if let Some(source) = source.as_deref_mut() {
                    if !prot.readable() {
                        source.protect(at, p, Protection::Read).expect("a captured page made readable");
                    }
                    let mut captured = vec![0u8; n];
                    source.read(at, &mut captured).expect("a readable page");
                    assert!(buf == captured, "memory {name:?}, page {i}: the restored bytes are not the captured ones");
                }
            }
            Ok(())
        }
    }
}
