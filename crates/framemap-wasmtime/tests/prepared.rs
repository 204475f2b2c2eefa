//! Prepared modules: instantiation from images gives exactly the memory the
//! unprepared module would, maps it copy-on-write, and recycles slots back to
//! the image.

use framemap::{FrameKind, FrameTag};
use framemap_wasmtime::rewrite::NotPrepared;
use framemap_wasmtime::{CreatorConfig, FrameMemoryCreator, PreparedModule, configure};
use std::sync::Arc;
use wasmtime::{Config, Engine, Instance, Linker, Module, Store};

const WASM_PAGE: usize = 65536;

fn engine(creator: &Arc<FrameMemoryCreator>) -> Engine {
    let mut config = Config::new();
    configure(&mut config, creator.clone());
    Engine::new(&config).unwrap()
}

/// 8 MiB of memory with data spread over it, a function that dirties pages,
/// and one that reads a byte.
const MODULE: &str = r#"
(module
  (memory (export "m") 128 256)
  (data (i32.const 0) "start of image")
  (data (i32.const 4000) "straddles a page boundary ............................................................................................")
  (data (i32.const 1048576) "one mebibyte")
  (data (i32.const 8388600) "the end")
  (data (i32.const 10) "OVERWRITE")
  (func (export "dirty") (param $pages i32)
    (local $i i32)
    (loop $l
      (i32.store8 (i32.mul (local.get $i) (i32.const 65536)) (i32.const 0xff))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $pages)))))
  (func (export "byte") (param i32) (result i32) (i32.load8_u (local.get 0))))
"#;

fn contents(store: &mut Store<()>, instance: &Instance) -> Vec<u8> {
    instance.get_memory(&mut *store, "m").unwrap().data(&*store).to_vec()
}

#[test]
fn prepared_memory_equals_the_unprepared_one() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let prepared = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    assert_eq!(prepared.not_prepared(), None);
    let images = prepared.images();
    assert_eq!(images.len(), 1);
    let image = images[0].clone().expect("memory 0 has an image");
    assert!(image.allocated_bytes().unwrap() <= 4 * 4096, "the image is sparse");

    let mut store = Store::new(&engine, ());
    let with_image = prepared.instantiate(&mut store, &[]).unwrap();
    let mut plain_store = Store::new(&engine, ());
    let plain = Instance::new(&mut plain_store, &Module::new(&engine, MODULE).unwrap(), &[]).unwrap();
    let a = contents(&mut store, &with_image);
    let b = contents(&mut plain_store, &plain);
    assert_eq!(a.len(), 128 * WASM_PAGE);
    assert!(a == b, "prepared and unprepared memories differ");
    assert_eq!(&a[10..19], b"OVERWRITE");

    let memory = with_image.get_memory(&mut store, "m").unwrap();
    let handle = creator.handle(&store, &memory).unwrap();
    handle.validate().unwrap();
    let report = handle.report().unwrap();
    let (first, frame) = report.runs[0];
    assert_eq!(first.start, 0);
    assert_eq!(frame.kind(), FrameKind::Image { image: image.id(), page: 0 });
    assert!(report.summary.bytes[FrameTag::Image] >= 8 * 1024 * 1024 - 4096);
}

#[test]
fn recycled_slots_come_back_as_the_image() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let prepared = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    let mut bases = std::collections::HashSet::new();
    for round in 0..50 {
        let mut store = Store::new(&engine, ());
        let instance = prepared.instantiate(&mut store, &[]).unwrap();
        let memory = instance.get_memory(&mut store, "m").unwrap();
        bases.insert(memory.data_ptr(&store) as usize);
        let byte = instance.get_typed_func::<i32, i32>(&mut store, "byte").unwrap();
        assert_eq!(byte.call(&mut store, 0).unwrap(), i32::from(b's'), "round {round}");
        assert_eq!(byte.call(&mut store, 65536).unwrap(), 0, "round {round}");
        assert_eq!(byte.call(&mut store, 1048576).unwrap(), i32::from(b'o'), "round {round}");
        // Dirty pages of the image and beyond it.
        let dirty = instance.get_typed_func::<i32, ()>(&mut store, "dirty").unwrap();
        dirty.call(&mut store, 128).unwrap();
        assert_eq!(byte.call(&mut store, 0).unwrap(), 0xff);
    }
    let stats = creator.stats();
    assert_eq!(bases.len(), 1, "one slot serves every instance");
    assert_eq!((stats.created, stats.reused), (1, 49));
}

#[test]
fn unpreparable_modules_fall_back_and_say_why() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let imported_offset = r#"(module (global $g (import "env" "g") i32) (memory (export "m") 1)
                                (data (global.get $g) "from a global"))"#;
    let prepared = PreparedModule::new(&creator, &engine, imported_offset).unwrap();
    assert!(matches!(prepared.not_prepared(), Some(NotPrepared::NonConstantOffset { segment: 0 })));
    let mut store = Store::new(&engine, ());
    let g = wasmtime::Global::new(
        &mut store,
        wasmtime::GlobalType::new(wasmtime::ValType::I32, wasmtime::Mutability::Const),
        100.into(),
    )
    .unwrap();
    let instance = prepared.instantiate(&mut store, &[g.into()]).unwrap();
    let memory = instance.get_memory(&mut store, "m").unwrap();
    assert_eq!(&memory.data(&store)[100..113], b"from a global");

    let out_of_bounds = r#"(module (memory 1) (data (i32.const 65530) "too long for the memory"))"#;
    let prepared = PreparedModule::new(&creator, &engine, out_of_bounds).unwrap();
    assert!(matches!(prepared.not_prepared(), Some(NotPrepared::OutOfBounds { .. })));
    let mut store = Store::new(&engine, ());
    assert!(prepared.instantiate(&mut store, &[]).is_err(), "traps exactly as the original");

    let no_data = PreparedModule::new(&creator, &engine, "(module (memory 1))").unwrap();
    assert!(matches!(no_data.not_prepared(), Some(NotPrepared::NoDataSegments)));

    let gc = r#"(module (type $s (struct (field i32))) (memory 1) (data (i32.const 0) "x")
                  (func (export "f") (result i32) (struct.get $s 0 (struct.new $s (i32.const 5)))))"#;
    let prepared = PreparedModule::new(&creator, &engine, gc).unwrap();
    assert!(matches!(prepared.not_prepared(), Some(NotPrepared::GcHeapShapedMemory { memory: 0 })));
    let gc_with_max = gc.replace("(memory 1)", "(memory 1 2)");
    let prepared = PreparedModule::new(&creator, &engine, gc_with_max).unwrap();
    assert_eq!(prepared.not_prepared(), None, "a memory with a maximum cannot be mistaken for a GC heap");
    let mut store = Store::new(&engine, ());
    let instance = prepared.instantiate(&mut store, &[]).unwrap();
    assert_eq!(instance.get_typed_func::<(), i32>(&mut store, "f").unwrap().call(&mut store, ()).unwrap(), 5);

    assert!(matches!(
        PreparedModule::new(&creator, &engine, b"\0asm garbage"),
        Err(framemap_wasmtime::Error::InvalidModule(_))
    ));
    assert!(matches!(
        PreparedModule::new(&creator, &engine, "(module (oops"),
        Err(framemap_wasmtime::Error::InvalidModule(_))
    ));
}

#[test]
fn images_need_the_creator_installed_in_the_engine() {
    let creator = FrameMemoryCreator::new();
    let other = FrameMemoryCreator::new();
    let engine = engine(&other);
    let prepared = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    let mut store = Store::new(&engine, ());
    let err = prepared.instantiate(&mut store, &[]).unwrap_err();
    assert!(format!("{err:#}").contains("received their images"), "{err:#}");
}

#[test]
fn linker_instance_pre_and_multi_memory() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let wat = r#"(module
        (import "host" "base" (global i32))
        (memory $a (export "a") 1 1)
        (memory $b (export "b") 2 2)
        (data (memory $b) (i32.const 70000) "in b")
        (data (memory $a) (i32.const 5) "in a")
        (func (export "read_b") (result i32) (i32.load8_u $b (i32.const 70000))))"#;
    let prepared = PreparedModule::new(&creator, &engine, wat).unwrap();
    assert_eq!(prepared.images().iter().filter(|i| i.is_some()).count(), 2);
    let mut linker = Linker::new(&engine);
    let mut store = Store::new(&engine, ());
    let base = wasmtime::Global::new(
        &mut store,
        wasmtime::GlobalType::new(wasmtime::ValType::I32, wasmtime::Mutability::Const),
        0.into(),
    )
    .unwrap();
    linker.define(&mut store, "host", "base", base).unwrap();
    let instance = prepared.instantiate_with(&linker, &mut store).unwrap();
    assert_eq!(&instance.get_memory(&mut store, "a").unwrap().data(&store)[5..9], b"in a");
    let pre = prepared.instance_pre(&linker).unwrap();
    for _ in 0..3 {
        let instance = pre.instantiate(&mut store).unwrap();
        let read_b = instance.get_typed_func::<(), i32>(&mut store, "read_b").unwrap();
        assert_eq!(read_b.call(&mut store, ()).unwrap(), i32::from(b'i'));
    }
}

#[test]
fn async_instantiation_carries_its_images_across_threads() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let prepared = Arc::new(PreparedModule::new(&creator, &engine, MODULE).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (engine, prepared) = (engine.clone(), prepared.clone());
            tasks.push(tokio::spawn(async move {
                let mut store = Store::new(&engine, ());
                let instance = prepared.instantiate_async(&mut store, &[]).await.unwrap();
                tokio::task::yield_now().await;
                let memory = instance.get_memory(&mut store, "m").unwrap();
                memory.data(&store)[1048576..1048588].to_vec()
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), b"one mebibyte");
        }
    });
}

#[test]
fn fresh_slots_start_with_the_last_working_set_prefaulted() {
    let creator = FrameMemoryCreator::with_config(CreatorConfig { max_idle_slots: 0, ..CreatorConfig::default() });
    let engine = engine(&creator);
    let prepared = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    let page = framemap::host_page_size() as u64;
    // Instantiates on a fresh slot, returns the resident bytes before the
    // guest runs, then dirties 32 pages (64 KiB apart) and drops the store.
    let run = || {
        let mut store = Store::new(&engine, ());
        let instance = prepared.instantiate(&mut store, &[]).unwrap();
        let memory = instance.get_memory(&mut store, "m").unwrap();
        let resident = creator.handle(&store, &memory).unwrap().report().unwrap().summary.total_resident();
        instance.get_typed_func::<i32, ()>(&mut store, "dirty").unwrap().call(&mut store, 32).unwrap();
        resident
    };
    assert!(run() < 4 * page, "without prefaulting a fresh slot starts cold");
    prepared.prefault_working_set(true);
    run(); // its reset records the working set
    let warm = run();
    assert!(warm >= 32 * page, "the 32 dirtied pages were prefaulted: {warm} bytes resident");
    assert_eq!(creator.stats().prefaulted, 32 * page);
    assert_eq!(creator.stats().reused, 0, "every slot was fresh");
    prepared.prefault_working_set(false);
    assert!(run() < 4 * page);
}

#[test]
fn embedders_can_supply_their_own_images() {
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    // A module without data: its memory can still start from a snapshot.
    let mut blank = PreparedModule::new(&creator, &engine, r#"(module (memory (export "m") 2 4))"#).unwrap();
    assert!(matches!(blank.not_prepared(), Some(NotPrepared::NoDataSegments)));
    let snapshot = framemap::Image::from_segments(2 * 65536, [(70000, &b"snapshot"[..])]).unwrap();
    blank.set_image(0, Some(snapshot.clone())).unwrap();
    for _ in 0..3 {
        let mut store = Store::new(&engine, ());
        let instance = blank.instantiate(&mut store, &[]).unwrap();
        let memory = instance.get_memory(&mut store, "m").unwrap();
        assert_eq!(&memory.data(&store)[70000..70008], b"snapshot");
        memory.data_mut(&mut store)[70000] = b'S';
    }

    // A prepared module's own data is replaced, not layered.
    let mut prepared = PreparedModule::new(&creator, &engine, MODULE).unwrap();
    prepared.set_image(0, Some(snapshot)).unwrap();
    let mut store = Store::new(&engine, ());
    let instance = prepared.instantiate(&mut store, &[]).unwrap();
    let data = instance.get_memory(&mut store, "m").unwrap().data(&store).to_vec();
    assert_eq!(&data[70000..70008], b"snapshot");
    assert_eq!(&data[0..5], &[0; 5], "the module's own segments are not applied on top");

    let too_big = framemap::Image::from_bytes(&vec![1u8; 2 * 65536 + 1]).unwrap();
    assert!(matches!(blank.set_image(0, Some(too_big)), Err(framemap_wasmtime::Error::ImageTooLarge { .. })));
    assert!(matches!(blank.set_image(1, None), Err(framemap_wasmtime::Error::NoSuchMemory { memory: 1, count: 1 })));
    let mut uncut = PreparedModule::new(
        &creator,
        &engine,
        r#"(module (global $g (import "env" "g") i32) (memory 1) (data (global.get $g) "x"))"#,
    )
    .unwrap();
    assert!(matches!(uncut.set_image(0, None), Err(framemap_wasmtime::Error::NotPrepared { .. })));
}

#[test]
fn engines_without_bulk_memory_run_the_original() {
    let creator = FrameMemoryCreator::new();
    let mut config = Config::new();
    config.wasm_reference_types(false).wasm_bulk_memory(false);
    configure(&mut config, creator.clone());
    let engine = Engine::new(&config).unwrap();
    let wat = r#"(module (memory (export "m") 1) (data (i32.const 5) "kept"))"#;
    let prepared = PreparedModule::new(&creator, &engine, wat).unwrap();
    assert!(
        matches!(prepared.not_prepared(), Some(NotPrepared::RewriteRejected { .. })),
        "{:?}",
        prepared.not_prepared()
    );
    let mut store = Store::new(&engine, ());
    let instance = prepared.instantiate(&mut store, &[]).unwrap();
    let memory = instance.get_memory(&mut store, "m").unwrap();
    assert_eq!(&memory.data(&store)[5..9], b"kept");
}

/// An instantiation suspended in the middle (an async limiter that yields as
/// each memory is created) and resumed on another thread still gives each of
/// its two memories its own image: the image plan travels with the future,
/// not with the thread.
#[test]
fn an_instantiation_suspended_between_memories_resumes_on_another_thread() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    /// Answers every growth "yes", after returning `Pending` once.
    struct YieldingLimiter {
        yields: usize,
    }

    #[async_trait::async_trait]
    impl wasmtime::ResourceLimiterAsync for YieldingLimiter {
        async fn memory_growing(&mut self, _: usize, _: usize, _: Option<usize>) -> wasmtime::Result<bool> {
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    return Poll::Ready(());
                }
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            })
            .await;
            self.yields += 1;
            Ok(true)
        }

        async fn table_growing(&mut self, _: usize, _: usize, _: Option<usize>) -> wasmtime::Result<bool> {
            Ok(true)
        }
    }

    const TWO_MEMORIES: &str = r#"
      (module
        (memory (export "a") 2)
        (memory (export "b") 3)
        (data (memory 0) (i32.const 5) "in a")
        (data (memory 1) (i32.const 70000) "in b"))"#;
    let creator = FrameMemoryCreator::new();
    let engine = engine(&creator);
    let prepared = PreparedModule::new(&creator, &engine, TWO_MEMORIES).unwrap();
    assert_eq!(prepared.not_prepared(), None);
    let prepared = &prepared;
    for _ in 0..3 {
        let mut store = Store::new(&engine, YieldingLimiter { yields: 0 });
        store.limiter_async(|l| l as &mut dyn wasmtime::ResourceLimiterAsync);
        let (instance, store) = {
            let mut future: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(async move {
                let instance = prepared.instantiate_async(&mut store, &[]).await;
                (instance, store)
            });
            let mut cx = Context::from_waker(Waker::noop());
            // Suspended in the first memory's limiter call, on this thread...
            assert!(future.as_mut().poll(&mut cx).is_pending());
            let here = std::thread::current().id();
            // ...and driven to the end on another one (suspending again for
            // the second memory).
            std::thread::scope(|scope| {
                scope
                    .spawn(move || {
                        assert_ne!(std::thread::current().id(), here);
                        let mut cx = Context::from_waker(Waker::noop());
                        let mut polls = 0;
                        loop {
                            polls += 1;
                            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                                assert!(polls >= 2, "the second memory's limiter call suspended too");
                                break out;
                            }
                        }
                    })
                    .join()
                    .unwrap()
            })
        };
        let mut store = store;
        let instance = instance.unwrap();
        assert_eq!(store.data().yields, 2, "the limiter suspended once per memory");
        assert_eq!(&instance.get_memory(&mut store, "a").unwrap().data(&store)[5..9], b"in a");
        assert_eq!(&instance.get_memory(&mut store, "b").unwrap().data(&store)[70000..70004], b"in b");
    }
}
