//! The `snapshot_file` target's first stage: a valid snapshot file made
//! from the input's first bytes (one or two small memories with writes, an
//! image mapped, protections, holes, odd lengths; captured full, all pages,
//! or incremental to a parent), and the helpers every stage shares.

use arbitrary::{Result as AResult, Unstructured};
use framemap::snapshot::{Digest, Durability, GlobalValue, Snapshot, SnapshotWriter};
use framemap::{Image, LinearSpace, PageRange, Protection, SharedBuffer, SpaceConfig};
use std::path::{Path, PathBuf};

/// Pages of a captured memory's capacity.
pub(crate) const SOURCE_PAGES: u64 = 16;
/// Pages of a restored memory's capacity (a mutated length may grow).
pub(crate) const RESTORE_PAGES: u64 = 32;
/// Most pages of the image.
pub(crate) const IMAGE_PAGES: u64 = 4;

pub(crate) fn ps() -> u64 {
    framemap::host_page_size() as u64
}

/// This thread's directory for the target's files: in `/dev/shm` where
/// there is one (a rename over a file on ext4 flushes it to the disk, which
/// made the target ten times slower), else in the temporary directory. Made
/// by every call, removed after every run (a crash leaves it, with the
/// crashing input's files). One per thread: the crate's tests run in
/// parallel.
pub(crate) fn dir() -> &'static Path {
    let dir = dir_path();
    std::fs::create_dir_all(dir).expect("a temporary directory");
    dir
}

pub(crate) fn dir_path() -> &'static Path {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    thread_local! {
        static DIR: &'static Path = {
            let shm = Path::new("/dev/shm");
            let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir: PathBuf = base.join(format!("framemap-fuzz-snapshot-{}-{n}", std::process::id()));
            Box::leak(dir.into_boxed_path())
        };
    }
    DIR.with(|d| *d)
}

/// `FRAMEMAP_FUZZ_TRACE=1`: print what each run made, and each outcome.
pub(crate) fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FRAMEMAP_FUZZ_TRACE").is_some())
}

pub(crate) fn no_names(_: &SharedBuffer) -> Option<String> {
    None
}

/// True with probability `n / d`, false once the input ran out (so that an
/// input's end means the usual case).
pub(crate) fn chance(u: &mut Unstructured, n: u32, d: u32) -> AResult<bool> {
    Ok(u.int_in_range(1..=d)? > d - n)
}

pub(crate) fn prot(u: &mut Unstructured) -> AResult<Protection> {
    Ok(match u.int_in_range(0u8..=2)? {
        0 => Protection::None,
        1 => Protection::Read,
        _ => Protection::ReadWrite,
    })
}

/// The image every snapshot of an input may refer to, and its bytes.
pub(crate) struct Img {
    pub(crate) image: Image,
    pub(crate) bytes: Vec<u8>,
    pub(crate) hash: Digest,
}

impl Img {
    pub(crate) fn pages(&self) -> u64 {
        self.bytes.len() as u64 / ps()
    }
}

/// What the snapshot under test was made from.
pub(crate) struct Built {
    pub(crate) img: Img,
    /// The captured memories, as they were at the capture, by name.
    pub(crate) spaces: Vec<(String, LinearSpace)>,
    /// The file.
    pub(crate) file: Vec<u8>,
    /// The parent of an incremental snapshot, and its file.
    pub(crate) parent: Option<(Snapshot, Vec<u8>)>,
}

/// Builds the spaces and the snapshot file from the input's first bytes.
pub(crate) fn build(u: &mut Unstructured) -> AResult<Built> {
    let p = ps();
    let image_pages = u.int_in_range(1..=IMAGE_PAGES)?;
    let seed: u8 = u.arbitrary()?;
    let bytes: Vec<u8> =
        (0..image_pages * p).map(|i| ((i / p) as u8 + 1).wrapping_mul(seed | 1) ^ (i % 251) as u8).collect();
    let image = Image::from_bytes(&bytes).expect("an image");
    let hash = image.content_hash().expect("an image's hash");
    let img = Img { image, bytes, hash };

    let mut spaces = Vec::new();
    for i in 0..u.int_in_range(1..=2)? {
        let pages = u.int_in_range(0..=SOURCE_PAGES)?;
        let mut len = pages * p;
        if pages > 0 && chance(u, 1, 4)? {
            len -= u.int_in_range(1..=p - 1)?;
        }
        let config = SpaceConfig { capacity: SOURCE_PAGES * p, guard: 2 * p, initial_len: len };
        let mut space = LinearSpace::new(config).expect("a space");
        for _ in 0..u.int_in_range(0..=8)? {
            space_op(u, &mut space, &img)?;
        }
        let name = if chance(u, 1, 8)? { format!("memory é{i}") } else { i.to_string() };
        spaces.push((name, space));
    }

    let (mut writer, parent) = if chance(u, 1, 4)? {
        // Incremental: a parent captured first, changes, then the child.
        let mut w = SnapshotWriter::to_path(dir().join("parent"), Durability::Unsynced).expect("a writer");
        for (name, space) in &mut spaces {
            w.capture(name, space, &no_names).expect("a capture");
        }
        w.finish().expect("the parent written");
        let parent_file = std::fs::read(dir().join("parent")).expect("the parent file");
        let parent = Snapshot::open(dir().join("parent")).expect("the parent opens");
        for (_, space) in &mut spaces {
            for _ in 0..u.int_in_range(0..=6)? {
                space_op(u, space, &img)?;
            }
        }
        let w = SnapshotWriter::to_path(dir().join("source"), Durability::Unsynced).expect("a writer");
        (w.incremental_to(&parent), Some((parent, parent_file)))
    } else {
        (SnapshotWriter::to_path(dir().join("source"), Durability::Unsynced).expect("a writer"), None)
    };
    let all_pages = parent.is_none() && chance(u, 1, 5)?;
    for (name, space) in &mut spaces {
        if all_pages {
            writer.capture_all_pages(name, space, &no_names).expect("a capture");
        } else {
            writer.capture(name, space, &no_names).expect("a capture");
        }
    }
    for i in 0..u.int_in_range(0..=2)? {
        writer.add_global(&format!("g{i}"), global(u)?).expect("a global");
    }
    if chance(u, 1, 3)? {
        let (name, space) = &spaces[0];
        let pages = space.accessible_pages().end;
        let start = u.int_in_range(0..=pages)?;
        let end = u.int_in_range(start..=pages)?;
        writer.add_working_set(name, PageRange::new(start, end)).expect("a working set");
    }
    writer.finish().expect("the snapshot written");
    let file = std::fs::read(dir().join("source")).expect("the snapshot file");
    Ok(Built { img, spaces, file, parent })
}

pub(crate) fn global(u: &mut Unstructured) -> AResult<GlobalValue> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 => GlobalValue::I32(u.arbitrary()?),
        1 => GlobalValue::I64(u.arbitrary()?),
        2 => GlobalValue::F32(u.arbitrary()?),
        3 => GlobalValue::F64(u.arbitrary()?),
        _ => GlobalValue::V128(u.arbitrary()?),
    })
}

/// One change to a memory before its capture; refusals are ignored (the
/// snapshot captures whatever the memory holds).
pub(crate) fn space_op(u: &mut Unstructured, space: &mut LinearSpace, img: &Img) -> AResult<()> {
    let p = ps();
    let op = u.int_in_range(0u8..=5)?;
    let pages = space.accessible_pages().end;
    if pages == 0 {
        return Ok(());
    }
    let start = u.int_in_range(0..=pages - 1)?;
    let count = u.int_in_range(1..=pages - start)?;
    match op {
        0 | 1 => {
            let offset = u.int_in_range(0..=space.len() - 1)?;
            let n = u.int_in_range(1..=256u64)?.min(space.len() - offset);
            let byte: u8 = u.arbitrary()?;
            let _ = space.write(offset, &vec![byte; n as usize]);
        }
        2 => {
            let count = count.min(img.pages());
            let from = u.int_in_range(0..=img.pages() - count)?;
            let _ = space.map_image(start * p, &img.image, from * p, count * p, prot(u)?);
        }
        3 => {
            let _ = space.protect(start * p, count * p, prot(u)?);
        }
        4 => {
            let _ = space.unmap(start * p, count * p);
        }
        _ => {
            let _ = space.map_zero(start * p, count * p, prot(u)?);
        }
    }
    Ok(())
}
