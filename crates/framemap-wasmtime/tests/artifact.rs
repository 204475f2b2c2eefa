//! Compile-cache artifacts: a saved and loaded prepared module instantiates
//! exactly as the fresh one, its images mapped from the file; truncated,
//! damaged and foreign artifacts are refused with their own errors.

use framemap::{FrameKind, FrameTag};
use framemap_wasmtime::artifact::engine_fingerprint;
use framemap_wasmtime::rewrite::NotPrepared;
use framemap_wasmtime::{Error, FrameMemoryCreator, PreparedModule, configure};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::{Config, Engine, Instance, Store};

fn engine(creator: &Arc<FrameMemoryCreator>, tweak: impl FnOnce(&mut Config)) -> Engine {
    let mut config = Config::new();
    tweak(&mut config);
    configure(&mut config, creator.clone());
    Engine::new(&config).unwrap()
}

/// Two defined memories: the first with data spread over 8 MiB (two
/// non-zero pages more than a mebibyte apart), the second with none.
const MODULE: &str = r#"
(module
  (memory (export "m") 128 256)
  (memory (export "n") 2)
  (data (i32.const 0) "start of image")
  (data (i32.const 4000) "straddles a page boundary ..........................................................")
  (data (i32.const 1048576) "one mebibyte")
  (data (i32.const 8388600) "the end")
  (func (export "poke") (i32.store8 (i32.const 5) (i32.const 0x2a))))
"#;

/// A fresh scratch directory.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("framemap-artifact-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn memories(store: &mut Store<()>, instance: &Instance) -> Vec<Vec<u8>> {
    ["m", "n"].iter().map(|name| instance.get_memory(&mut *store, name).unwrap().data(&*store).to_vec()).collect()
}

/// Loads `path` for `engine` (the tests' files are only changed between loads).
fn load(creator: &Arc<FrameMemoryCreator>, engine: &Engine, path: &Path) -> Result<PreparedModule, Error> {
    // SAFETY: the file was written by this crate (or damaged on purpose,
    // which the load must refuse) and is not changed while loaded.
    unsafe { PreparedModule::load_artifact(creator, engine, path) }
}

#[test]
fn a_loaded_artifact_instantiates_as_the_fresh_module() {
    let dir = scratch("round-trip");
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator, |_| {});
    let fresh = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    let path = dir.join("module.fmart");
    let info = fresh.save_artifact(&path).unwrap();
    assert_eq!(info.file_len, std::fs::metadata(&path).unwrap().len());
    assert_eq!(info.image_bytes, 8 << 20, "one 8 MiB image, whole pages");
    let allocated = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap()) * 512;
    assert!(allocated < info.code_len + (1 << 20), "image holes stay holes: {allocated} bytes allocated");
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["module.fmart"], "no temporary file left");

    let loaded = load(&creator, &engine, &path).unwrap();
    assert_eq!(loaded.not_prepared(), None);
    let images = loaded.images();
    assert_eq!(images.len(), 2);
    let image = images[0].clone().expect("memory 0 has an image");
    assert!(images[1].is_none());
    assert!(image.is_immutable());

    for round in 0..3 {
        let mut a = Store::new(&engine, ());
        let from_file = loaded.instantiate(&mut a, &[]).unwrap();
        let mut b = Store::new(&engine, ());
        let from_fresh = fresh.instantiate(&mut b, &[]).unwrap();
        let (got, want) = (memories(&mut a, &from_file), memories(&mut b, &from_fresh));
        assert!(got == want, "round {round}: the loaded module's memories differ from the fresh one's");
        assert_eq!(&got[0][4000..4009], b"straddles");
        let memory = from_file.get_memory(&mut a, "m").unwrap();
        let handle = creator.handle(&a, &memory).unwrap();
        handle.validate().unwrap(); // the kernel maps the artifact at the image's offset
        let report = handle.report().unwrap();
        assert_eq!(report.runs[0].1.kind(), FrameKind::Image { image: image.id(), page: 0 });
        assert!(report.summary.bytes[FrameTag::Image] >= 8 << 20);
        // Guest writes stay private: the next round starts from the file.
        from_file.get_typed_func::<(), ()>(&mut a, "poke").unwrap().call(&mut a, ()).unwrap();
        assert_eq!(memory.data(&a)[5], 0x2a);
    }
    let mut check = [0u8; 5];
    image.read(0, &mut check).unwrap();
    assert_eq!(&check, b"start", "the file's bytes never change");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unprepared_modules_and_their_reasons_round_trip() {
    let dir = scratch("unprepared");
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator, |_| {});
    let module = r#"(module (global $g (import "env" "g") i32) (memory (export "m") 1)
        (data (global.get $g) "moved"))"#;
    let fresh = PreparedModule::new(&creator, &engine, module).unwrap();
    assert!(matches!(fresh.not_prepared(), Some(NotPrepared::NonConstantOffset { segment: 0 })));
    let path = dir.join("unprepared.fmart");
    assert_eq!(fresh.save_artifact(&path).unwrap().image_bytes, 0);
    let loaded = load(&creator, &engine, &path).unwrap();
    assert_eq!(loaded.not_prepared(), fresh.not_prepared());
    assert!(loaded.images().is_empty());
    let mut store = Store::new(&engine, ());
    let global = wasmtime::Global::new(
        &mut store,
        wasmtime::GlobalType::new(wasmtime::ValType::I32, wasmtime::Mutability::Const),
        7.into(),
    )
    .unwrap();
    let instance = loaded.instantiate(&mut store, &[global.into()]).unwrap();
    let memory = instance.get_memory(&mut store, "m").unwrap();
    assert_eq!(&memory.data(&store)[7..12], b"moved", "wasmtime copies the segment itself");

    // No data at all: the memories can still be given images later.
    let empty = PreparedModule::new(&creator, &engine, "(module (memory 1))").unwrap();
    empty.save_artifact(&path).unwrap();
    let mut loaded = load(&creator, &engine, &path).unwrap();
    assert_eq!(loaded.not_prepared(), Some(&NotPrepared::NoDataSegments));
    loaded.set_image(0, Some(framemap::Image::from_bytes(b"given").unwrap())).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_artifacts_are_refused_at_every_cut() {
    let dir = scratch("truncated");
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator, |_| {});
    let path = dir.join("whole.fmart");
    let info = PreparedModule::new(&creator, &engine, MODULE).unwrap().save_artifact(&path).unwrap();
    let whole = std::fs::read(&path).unwrap();
    let len = whole.len() as u64;
    let page = framemap::host_page_size() as u64;
    let module_end = info.code_len.next_multiple_of(page);
    let mut cuts = vec![0, 1, 3, 4, 5, 63, 64, 4096, info.code_len - 1, info.code_len, module_end, module_end + 1];
    cuts.extend([len - 97, len - 96, len - 95, len - 12, len - 1]);
    cuts.extend((1..40).map(|i| len * i / 40));
    let cut = dir.join("cut.fmart");
    for at in cuts {
        std::fs::write(&cut, &whole[..at as usize]).unwrap();
        match load(&creator, &engine, &cut) {
            Err(Error::ArtifactTruncated { len: found, .. }) => assert_eq!(found, at),
            Err(Error::ArtifactNotFramemap { .. }) => assert!(at < 4, "cut at {at}: an ELF start was kept"),
            other => panic!("cut at {at} of {len}: {other:?}"),
        }
    }
    let mut longer = whole.clone();
    longer.push(0);
    std::fs::write(&cut, &longer).unwrap();
    let longer = load(&creator, &engine, &cut);
    assert!(matches!(longer, Err(Error::ArtifactNotFramemap { .. } | Error::ArtifactTruncated { .. })), "{longer:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flipped_bytes_are_refused() {
    let dir = scratch("flipped");
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator, |_| {});
    let path = dir.join("whole.fmart");
    let info = PreparedModule::new(&creator, &engine, MODULE).unwrap().save_artifact(&path).unwrap();
    let whole = std::fs::read(&path).unwrap();
    let len = whole.len();
    let page = framemap::host_page_size();
    let module_end = (info.code_len as usize).next_multiple_of(page);
    // The ELF header, code, padding, both image pages, metadata, trailer fields.
    let body = [0, 17, info.code_len as usize / 2, module_end - 1, module_end, module_end + (1 << 20), len - 97];
    let trailer = [len - 96, len - 90, len - 70, len - 30, len - 14, len - 10, len - 1];
    let bad = dir.join("bad.fmart");
    for at in body.into_iter().chain(trailer) {
        for bit in [0x01, 0x80] {
            let mut flipped = whole.clone();
            flipped[at] ^= bit;
            std::fs::write(&bad, &flipped).unwrap();
            let outcome = load(&creator, &engine, &bad);
            if at < len - 96 {
                assert!(
                    matches!(outcome, Err(Error::ArtifactChecksum { part: "contents", .. })),
                    "byte {at} of {len}: {outcome:?}"
                );
            } else {
                assert!(
                    matches!(
                        outcome,
                        Err(Error::ArtifactChecksum { part: "trailer", .. }
                            | Error::ArtifactNotFramemap { .. }
                            | Error::ArtifactTruncated { .. })
                    ),
                    "trailer byte {at} of {len}: {outcome:?}"
                );
            }
        }
    }
    std::fs::write(&bad, b"not an artifact, just some text that is longer than a trailer ........................")
        .unwrap();
    assert!(matches!(load(&creator, &engine, &bad), Err(Error::ArtifactNotFramemap { .. })));
    let missing = load(&creator, &engine, &dir.join("missing.fmart"));
    assert!(matches!(missing, Err(Error::ArtifactIo { .. })), "{missing:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn another_engine_configuration_is_refused() {
    let dir = scratch("engine");
    let creator = FrameMemoryCreator::new();
    let engine_a = engine(&creator, |_| {});
    let path = dir.join("a.fmart");
    PreparedModule::new(&creator, &engine_a, MODULE).unwrap().save_artifact(&path).unwrap();
    let engine_b = engine(&creator, |config| {
        config.consume_fuel(true);
    });
    assert_ne!(engine_fingerprint(&engine_a), engine_fingerprint(&engine_b));
    let refused = load(&creator, &engine_b, &path);
    assert!(matches!(refused, Err(Error::ArtifactEngineMismatch { .. })), "{refused:?}");
    // The same settings in another engine load it.
    let engine_c = engine(&creator, |_| {});
    assert_eq!(engine_fingerprint(&engine_a), engine_fingerprint(&engine_c));
    load(&creator, &engine_c, &path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_cannot_be_saved_is_refused_and_leaves_nothing() {
    let dir = scratch("refused");
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator, |_| {});
    let snapshots = PreparedModule::with_snapshots(&creator, &engine, MODULE).unwrap();
    let refused = snapshots.save_artifact(&dir.join("snap.fmart"));
    assert!(matches!(refused, Err(Error::ArtifactUnsupported { .. })), "{refused:?}");
    let plain = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    let no_dir = plain.save_artifact(&dir.join("no-such-dir").join("x.fmart"));
    match no_dir {
        Err(Error::ArtifactIo { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();
}
