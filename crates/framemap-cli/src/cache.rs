//! The compile cache of `framemap run` and `framemap serve` (on by default;
//! `--no-cache` turns it off), for core modules ([`PreparedModule`]) and
//! components ([`PreparedComponent`]) alike ([`Cacheable`]).
//!
//! An entry is one artifact file ([`framemap_wasmtime::artifact`]): the
//! compiled module or component, uncompressed, and the images of its
//! memories, which a hit maps straight from the file, nothing compiled,
//! decompressed or copied. Where: `$FRAMEMAP_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/framemap`, else `$HOME/.cache/framemap`; inside it
//! `v1/entries/<key>.fmart` and `v1/index/<name>`. Modules and components
//! share the folder and the key: their bytes differ, and an entry of the
//! other kind would be refused by its artifact kind (and rebuilt), never
//! loaded.
//!
//! - **Key**: SHA-256 over the engine's compatibility fingerprint
//!   ([`engine_fingerprint`]), [`ARTIFACT_FORMAT_VERSION`] and the module
//!   or component file's bytes. Another wasmtime, another engine setting
//!   (`run`'s and `serve`'s engines differ: `serve`'s is async) or another
//!   artifact format never meets an old entry.
//! - **Stat fast path**: an index file per (engine, canonical module path)
//!   records the file's device, inode, size, mtime and ctime (nanoseconds)
//!   and its key, so an unchanged file is neither read nor hashed. A file
//!   whose mtime is less than [`RACY_SECS`] old is not indexed (a write in
//!   the same clock tick could keep the same times), so it is hashed again
//!   next time.
//! - **Writes** are atomic (temporary file in the entries folder, fsync,
//!   rename): concurrent runs of the same new module both compile and both
//!   succeed, the last rename wins, and a reader keeps the file it opened.
//!   No entry is ever changed in place, which is what makes mapping it safe.
//! - **Bound**: after each insert, entries are removed least recently used
//!   first (a hit touches its entry's mtime) until their disk usage is at
//!   most `$FRAMEMAP_CACHE_MAX_BYTES` (default 1 GiB); temporary files of
//!   crashed runs older than an hour go too.
//! - **Self-healing**: an entry that fails its checks (truncated, a flipped
//!   bit, another format) gets one `framemap: notice:` line, is deleted,
//!   and the module or component is compiled and the entry written again.
//! - **Unwritable cache** (read-only, full, not a directory): one notice
//!   line, and the run goes on without caching.
//! - **Large modules and components** (files over [`LARGE_MODULE`] bytes)
//!   get one notice line when compiled; on a terminal, a progress line
//!   every [`PROGRESS_EVERY`] once compiling has taken that long (nothing
//!   is printed for small files, nor progress when stderr is not a
//!   terminal).

use std::fs::{self, File};
use std::io::IsTerminal as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use framemap_wasmtime::artifact::{ARTIFACT_FORMAT_VERSION, ArtifactInfo, engine_fingerprint};
use framemap_wasmtime::{Error, FrameMemoryCreator, PreparedComponent, PreparedModule};
use sha2::{Digest as _, Sha256};
use wasmtime::Engine;

/// Modules and components larger than this get a notice when they are
/// compiled.
pub const LARGE_MODULE: u64 = 4 << 20;
/// How long compiling may take before a progress line, and between them.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// A module file changed this recently is not indexed by its stat.
pub const RACY_SECS: u64 = 2;
/// The default bound on the entries' disk usage.
const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Temporary files older than this are a crashed run's.
const STALE_TEMP: Duration = Duration::from_secs(3600);
/// The cache's layout version (its folder name).
const LAYOUT: &str = "v1";

/// What the cache holds: a prepared module or component, built from its
/// file's bytes, saved to and loaded from an artifact.
pub trait Cacheable: Sized {
    /// Prepares and compiles `bytes`.
    fn build(creator: &Arc<FrameMemoryCreator>, engine: &Engine, bytes: &[u8]) -> Result<Self, Error>;
    /// Saves `self` as the artifact `path`.
    fn save(&self, path: &Path) -> Result<ArtifactInfo, Error>;
    /// Loads the artifact `path`.
    ///
    /// # Safety
    /// As for `load_artifact`: a file `save` wrote, never changed while
    /// loaded.
    unsafe fn load(creator: &Arc<FrameMemoryCreator>, engine: &Engine, path: &Path) -> Result<Self, Error>;
}

impl Cacheable for PreparedModule {
    fn build(creator: &Arc<FrameMemoryCreator>, engine: &Engine, bytes: &[u8]) -> Result<Self, Error> {
        PreparedModule::new(creator, engine, bytes)
    }
    fn save(&self, path: &Path) -> Result<ArtifactInfo, Error> {
        self.save_artifact(path)
    }
    unsafe fn load(creator: &Arc<FrameMemoryCreator>, engine: &Engine, path: &Path) -> Result<Self, Error> {
        // SAFETY: the caller upholds `load_artifact`'s contract (this one's).
        unsafe { PreparedModule::load_artifact(creator, engine, path) }
    }
}

impl Cacheable for PreparedComponent {
    fn build(creator: &Arc<FrameMemoryCreator>, engine: &Engine, bytes: &[u8]) -> Result<Self, Error> {
        PreparedComponent::new(creator, engine, bytes)
    }
    fn save(&self, path: &Path) -> Result<ArtifactInfo, Error> {
        self.save_artifact(path)
    }
    unsafe fn load(creator: &Arc<FrameMemoryCreator>, engine: &Engine, path: &Path) -> Result<Self, Error> {
        // SAFETY: the caller upholds `load_artifact`'s contract (this one's).
        unsafe { PreparedComponent::load_artifact(creator, engine, path) }
    }
}

/// Loads the module or component at `path` as a `P`: from the cache if
/// `use_cache` and it holds it, else compiled (and then cached).
pub fn load<P: Cacheable>(
    creator: &Arc<FrameMemoryCreator>,
    engine: &Engine,
    path: &Path,
    use_cache: bool,
) -> Result<P> {
    let read = || fs::read(path).with_context(|| format!("failed to read `{}`", path.display()));
    if !use_cache {
        return compile(creator, engine, path, &read()?, false);
    }
    let cache = match Cache::open() {
        Ok(cache) => cache,
        Err(reason) => {
            notice(&format!("{reason}; running without caching"));
            return compile(creator, engine, path, &read()?, false);
        }
    };
    let fingerprint = engine_fingerprint(engine);
    let stat = fs::canonicalize(path)
        .and_then(|canonical| Ok((fs::metadata(&canonical)?, canonical)))
        .with_context(|| format!("failed to read `{}`", path.display()))?;
    let (metadata, canonical) = stat;
    let index = cache.index_path(&fingerprint, &canonical);
    let stamp = Stamp::of(&metadata);
    let (key, mut bytes) = match cache.indexed_key(&index, &stamp) {
        Some(key) => (key, None),
        None => {
            let bytes = read()?;
            (content_key(&fingerprint, &bytes), Some(bytes))
        }
    };
    let entry = cache.entry_path(&key);
    // SAFETY: cache entries are only ever written by `save_artifact`
    // (whole files renamed into place, never changed afterwards; eviction
    // unlinks, which leaves an open file intact), for the engine whose
    // fingerprint their key and trailer hold; a damaged one fails its
    // checksum before wasmtime sees it. Like wasmtime's own cache, this
    // trusts whoever can write the cache directory.
    let loaded = unsafe { P::load(creator, engine, &entry) };
    match loaded {
        Ok(prepared) => {
            touch(&entry);
            if bytes.is_some() {
                cache.write_index(&index, &stamp, &key);
            }
            return Ok(prepared);
        }
        Err(Error::ArtifactIo { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(damage) => {
            notice(&format!("cache entry `{}` is unusable ({damage}): rebuilding it", entry.display()));
            let _ = fs::remove_file(&entry);
        }
    }
    // A miss: compile the bytes read now (and key them by what was read).
    let bytes = match bytes.take() {
        Some(bytes) => bytes,
        None => read()?,
    };
    let key = content_key(&fingerprint, &bytes);
    let entry = cache.entry_path(&key);
    let prepared: P = compile(creator, engine, path, &bytes, true)?;
    match prepared.save(&entry) {
        Ok(_) => {
            cache.write_index(&index, &stamp, &key);
            cache.evict(&entry);
        }
        Err(error) => notice(&format!(
            "cannot write to the compile cache in `{}` ({}); running without caching",
            cache.root.display(),
            write_failure(&error)
        )),
    }
    Ok(prepared)
}

/// Compiles `bytes` (the module or component at `path`), with a notice
/// for a large one and progress lines on a terminal.
fn compile<P: Cacheable>(
    creator: &Arc<FrameMemoryCreator>,
    engine: &Engine,
    path: &Path,
    bytes: &[u8],
    cached: bool,
) -> Result<P> {
    let large = bytes.len() as u64 > LARGE_MODULE;
    let shown = path.display();
    if large {
        let then = if cached { ", cached for next time" } else { "" };
        notice(&format!("compiling `{shown}` ({} MiB){then}", bytes.len() >> 20));
    }
    let build = || {
        P::build(creator, engine, bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("failed to load `{shown}`"))
    };
    if !large || !std::io::stderr().is_terminal() {
        return build();
    }
    let (done, finished) = mpsc::channel::<()>();
    let shown = &shown;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let start = Instant::now();
            while let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(PROGRESS_EVERY) {
                notice(&format!("still compiling `{shown}` ({} s)", start.elapsed().as_secs()));
            }
        });
        let outcome = build();
        drop(done);
        outcome
    })
}

/// The cache directory and its bound.
struct Cache {
    /// The directory the user named (or the default).
    root: PathBuf,
    /// `root/v1/entries`.
    entries: PathBuf,
    /// `root/v1/index`.
    index: PathBuf,
    max_bytes: u64,
}

impl Cache {
    /// The cache named by the environment, its folders created; `Err` with
    /// a reason to show when it cannot be used.
    fn open() -> Result<Cache, String> {
        let root = match std::env::var_os("FRAMEMAP_CACHE_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => match (std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()), std::env::var_os("HOME")) {
                (Some(xdg), _) => Path::new(&xdg).join("framemap"),
                (None, Some(home)) if !home.is_empty() => Path::new(&home).join(".cache/framemap"),
                _ => return Err("no cache directory (set FRAMEMAP_CACHE_DIR or HOME)".into()),
            },
        };
        let max_bytes = match std::env::var("FRAMEMAP_CACHE_MAX_BYTES") {
            Err(_) => DEFAULT_MAX_BYTES,
            Ok(value) => value.trim().parse().map_err(|_| {
                format!("FRAMEMAP_CACHE_MAX_BYTES={value:?} is not a number of bytes, so the cache is not used")
            })?,
        };
        let entries = root.join(LAYOUT).join("entries");
        let index = root.join(LAYOUT).join("index");
        for dir in [&entries, &index] {
            fs::create_dir_all(dir)
                .map_err(|e| format!("cannot use the compile cache in `{}` ({e})", root.display()))?;
        }
        Ok(Cache { root, entries, index, max_bytes })
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.entries.join(format!("{key}.fmart"))
    }

    /// The index file of the module at `canonical` for this engine.
    fn index_path(&self, fingerprint: &[u8; 32], canonical: &Path) -> PathBuf {
        let mut hasher = Sha256::new();
        hasher.update(fingerprint);
        hasher.update(canonical.as_os_str().as_encoded_bytes());
        self.index.join(&hex(&hasher.finalize())[..32])
    }

    /// The key the index holds for a file with `stamp`, if it does.
    fn indexed_key(&self, index: &Path, stamp: &Stamp) -> Option<String> {
        let text = fs::read_to_string(index).ok()?;
        let (recorded, key) = text.strip_prefix("framemap-cache-index 1\n")?.trim_end().rsplit_once(' ')?;
        let valid = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && recorded == stamp.to_string()).then(|| key.to_owned())
    }

    /// Records `key` for a file with `stamp` (best effort, atomic; skipped
    /// for a racily recent file).
    fn write_index(&self, index: &Path, stamp: &Stamp, key: &str) {
        if !stamp.settled() {
            return;
        }
        let temp = self.index.join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let text = format!("framemap-cache-index 1\n{stamp} {key}\n");
        if fs::write(&temp, text).and_then(|()| fs::rename(&temp, index)).is_err() {
            let _ = fs::remove_file(&temp);
        }
    }

    /// Removes least recently used entries until the entries' disk usage
    /// is within the bound, and crashed runs' temporary files.
    fn evict(&self, inserted: &Path) {
        let Ok(listing) = fs::read_dir(&self.entries) else { return };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        for item in listing.flatten() {
            let (path, Ok(metadata)) = (item.path(), item.metadata()) else { continue };
            let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if item.file_name().to_string_lossy().contains(".tmp-") {
                if now.duration_since(modified).is_ok_and(|age| age > STALE_TEMP) {
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            entries.push((modified, metadata.blocks() * 512, path));
        }
        let mut total: u64 = entries.iter().map(|(_, bytes, _)| bytes).sum();
        entries.sort();
        for (_, bytes, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path == inserted {
                notice(&format!(
                    "the cache entry ({} MiB) exceeds the cache bound FRAMEMAP_CACHE_MAX_BYTES ({} MiB): not kept",
                    bytes >> 20,
                    self.max_bytes >> 20
                ));
            }
            if fs::remove_file(&path).is_ok() {
                total -= bytes;
            }
        }
    }
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(metadata: &fs::Metadata) -> Stamp {
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Stamp {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// Whether the file's mtime is at least [`RACY_SECS`] old: a write sets
    /// the mtime to the current time, so any later write to a settled file
    /// changes its stamp, while a write within the same clock tick as a
    /// recent one might not.
    fn settled(&self) -> bool {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        now - self.mtime_ns >= i128::from(RACY_SECS) * 1_000_000_000
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} {} {}", self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns)
    }
}

/// The cache key of module `bytes` for the engine with `fingerprint`.
fn content_key(fingerprint: &[u8; 32], bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"framemap-cache-key\0");
    hasher.update(fingerprint);
    hasher.update(ARTIFACT_FORMAT_VERSION.to_le_bytes());
    hasher.update(bytes);
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A number unique to this call in this process.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Marks `entry` as just used (best effort: a read-only cache still hits).
fn touch(entry: &Path) {
    if let Ok(file) = File::options().write(true).open(entry) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Why writing an entry failed, in words: the file system's error for I/O.
fn write_failure(error: &Error) -> String {
    match error {
        Error::ArtifactIo { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Prints one `framemap: notice: ...` line on stderr.
fn notice(message: &str) {
    eprintln!("framemap: notice: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_engine_and_bytes() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        assert_eq!(content_key(&a, b"x"), content_key(&a, b"x"));
        assert_ne!(content_key(&a, b"x"), content_key(&b, b"x"));
        assert_ne!(content_key(&a, b"x"), content_key(&a, b"y"));
        assert_eq!(content_key(&a, b"x").len(), 64);
    }

    #[test]
    fn only_settled_files_are_indexed() {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as i128;
        let stamp = |ns| Stamp { dev: 1, ino: 2, size: 3, mtime_ns: ns, ctime_ns: ns };
        assert!(!stamp(now).settled());
        assert!(stamp(now - 10_000_000_000).settled());
        assert_eq!(stamp(5).to_string(), "1 2 3 5 5");
    }
}
