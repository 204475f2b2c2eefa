//! The error type of framemap-wasmtime.

/// What can go wrong between framemap and wasmtime. Each variant names the
/// memory (by base address) or sizes involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// wasmtime asked for a memory framemap cannot create.
    #[error("cannot create a memory of {minimum:#x} bytes (reservation {reserved:#x}, guard {guard:#x}): {source}")]
    Create {
        /// Initial size asked for.
        minimum: u64,
        /// Reservation size used.
        reserved: u64,
        /// Guard size asked for.
        guard: u64,
        /// Why the core refused.
        #[source]
        source: framemap::Error,
    },
    /// A memory could not grow.
    #[error("memory at {base:#x} cannot grow to {requested:#x} bytes: {source}")]
    Grow {
        /// The memory's base address.
        base: usize,
        /// The size asked for.
        requested: u64,
        /// Why the core refused.
        #[source]
        source: framemap::Error,
    },
    /// A size does not fit the host's address space.
    #[error("{what} of {value:#x} bytes does not fit this host's address space")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// The wasmtime memory was not created by this creator, or is gone.
    #[error("no live framemap memory at {base:#x} (not created by this creator, or already dropped)")]
    NotFramemap {
        /// The address looked up.
        base: usize,
    },
    /// The memory is poisoned: host code (a wasmtime libcall such as
    /// `memory.fill`, a WASI call, `Memory::data`) touched pages of it that
    /// were inaccessible, and the hole guard replaced them with private zero
    /// pages (see ARCHITECTURE.md, "the hole guard"). Its mappings are no
    /// longer changed: guest memory control traps with this error, and host
    /// handles refuse changes; reports, reads and writes still work. The
    /// memory is never recycled.
    #[error("the memory at {base:#x} is poisoned: host code touched {pages} inaccessible page(s) of it")]
    Poisoned {
        /// The memory's base address.
        base: usize,
        /// Pages the hole guard replaced.
        pages: u64,
    },
    /// A handle's change or byte copy was given the context of a store
    /// that does not own its memory (see [`crate::MemoryHandle`]).
    #[error("the memory at {base:#x} belongs to another store than the one given")]
    WrongStore {
        /// The memory's base address.
        base: usize,
    },
    /// A handle found by enumeration ([`crate::FrameMemoryCreator::live_memories`])
    /// cannot change or copy its memory's bytes: its store is unknown. Get
    /// one with [`crate::FrameMemoryCreator::handle`].
    #[error(
        "the memory at {base:#x} was found without its store: get a handle with FrameMemoryCreator::handle to change it"
    )]
    StoreUnknown {
        /// The memory's base address.
        base: usize,
    },
    /// An image whose file others may still write cannot back a memory
    /// whose bytes wasmtime lends out as `&[u8]` (see
    /// [`framemap::Image::is_immutable`]; [`framemap::Image::copy_of_file`]
    /// makes an immutable copy).
    #[error("image {image:?} is not sealed against writes: its bytes could change under a borrow of the memory's")]
    MutableImage {
        /// The image.
        image: framemap::BackingId,
    },
    /// A wasmtime setting voids framemap's guarantees (see [`crate::engine`]).
    #[error("{setting} cannot be used with framemap: {reason}")]
    Misconfigured {
        /// The setting.
        setting: &'static str,
        /// What it would break.
        reason: &'static str,
    },
    /// wasmtime refused to build the engine.
    #[error("wasmtime could not build the engine: {0}")]
    Engine(String),
    /// The bytes are not a module this engine can compile.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The bytes are not a component this engine can compile.
    #[error("invalid component: {0}")]
    InvalidComponent(String),
    /// Images cannot be given to this module's memories: its data segments
    /// could not be cut (`reason`), so instantiation copies them itself.
    #[error("the module's memories cannot be given images{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    NotPrepared {
        /// Why the module is not prepared.
        reason: Option<crate::rewrite::NotPrepared>,
    },
    /// A defined-memory index past the module's defined memories.
    #[error("the module defines {count} memories; there is no memory {memory}")]
    NoSuchMemory {
        /// The index asked for.
        memory: usize,
        /// How many memories the module defines.
        count: usize,
    },
    /// An image larger than the memory it would initialise.
    #[error("an image of {image:#x} bytes does not fit memory {memory}, whose initial size is {limit:#x} bytes")]
    ImageTooLarge {
        /// The memory (defined-memory order).
        memory: usize,
        /// The image's length.
        image: u64,
        /// The memory's initial size, rounded up to whole host pages.
        limit: u64,
    },
    /// A memory's image could not be built.
    #[error("cannot build the image of memory {memory}: {source}")]
    Image {
        /// The memory (index space including imports).
        memory: u32,
        /// Why.
        #[source]
        source: framemap::Error,
    },
    /// An instantiation with images did not hand every image to its memory
    /// (the engine's creator is not this module's, or wasmtime allocated
    /// memories in an unexpected order). The instance is not returned.
    #[error(
        "only {served} of {planned} memories received their images: is the module's creator installed in its engine?"
    )]
    ImagesNotServed {
        /// Memories served.
        served: usize,
        /// Memories planned.
        planned: usize,
    },
    /// A window operation on a live memory was refused (nothing changed).
    #[error("window operation on memory at {base:#x} refused: {source}")]
    Window {
        /// The memory's base address.
        base: usize,
        /// Why.
        #[source]
        source: framemap::Error,
    },
    /// Reading a memory's frame table or residency failed.
    #[error("cannot report on memory at {base:#x}: {source}")]
    Report {
        /// The memory's base address.
        base: usize,
        /// What failed.
        #[source]
        source: framemap::Error,
    },
    /// An instance of this module cannot be snapshot faithfully, or the
    /// module was not prepared for snapshots
    /// ([`crate::PreparedModule::with_snapshots`]).
    #[error("instances of this module cannot be snapshot: {reason}")]
    NotSnapshottable {
        /// Why, in words (every blocker found).
        reason: String,
    },
    /// A snapshot does not fit this module or instance: a memory or global
    /// the module has is missing from it, or it holds one the module lacks.
    #[error("the snapshot does not fit this module: {detail}")]
    SnapshotMismatch {
        /// What does not fit.
        detail: String,
    },
    /// The working set of an instance's memory cannot be recorded against
    /// the snapshot given ([`crate::PreparedModule::working_set`]): the
    /// memory was not restored from that snapshot, or not for recording
    /// ([`crate::RestoreMode::Record`]).
    #[error("cannot record the working set of memory {memory:?}: {reason}")]
    WorkingSetUnavailable {
        /// The memory's name in the snapshot.
        memory: String,
        /// Why, in words.
        reason: String,
    },
    /// A buffer cannot take this name in a [`crate::SnapshotBuffers`].
    #[error("buffer name {name:?} refused: {reason}")]
    BufferName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A snapshot's window names a buffer the module's or component's
    /// [`crate::SnapshotBuffers`] lacks: it cannot be restored (never with
    /// zero pages in the window's place).
    #[error(
        "memory {memory:?} of the snapshot has a window of buffer {name:?}, which the snapshot buffers do not name"
    )]
    MissingBuffer {
        /// The memory in the snapshot.
        memory: String,
        /// The buffer's name.
        name: String,
    },
    /// Capturing or opening a snapshot failed in the core.
    #[error("snapshot: {0}")]
    Snapshot(#[source] framemap::Error),
    /// A range reaches past the memory's current size
    /// ([`crate::MemoryHandle::make_virtual`]).
    #[error("range {start:#x}..{end:#x} is outside the memory's {size:#x} bytes")]
    OutOfBounds {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
        /// The memory's size.
        size: u64,
    },
    /// A compile-cache artifact ([`crate::artifact`]) could not be read or
    /// written: the file system's error (a read-only or full directory shows
    /// here, as the `source`'s kind).
    #[error("artifact `{}`: {source}", path.display())]
    ArtifactIo {
        /// The artifact file (or its temporary file, when writing).
        path: std::path::PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a framemap artifact (no trailer magic, no ELF start).
    #[error("`{}` is not a framemap artifact", path.display())]
    ArtifactNotFramemap {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The artifact is shorter (or longer) than its trailer records, or too
    /// short to hold a trailer at all (`expected` is then `None`).
    #[error("artifact `{}` is truncated: {len} bytes{}", path.display(), expected.map(|e| format!(", its trailer records {e}")).unwrap_or_else(|| ", no trailer".into()))]
    ArtifactTruncated {
        /// The file.
        path: std::path::PathBuf,
        /// Its length.
        len: u64,
        /// The length its trailer records.
        expected: Option<u64>,
    },
    /// The artifact was written in another format version
    /// ([`crate::artifact::ARTIFACT_FORMAT_VERSION`]).
    #[error("artifact `{}` has format version {found}, this build reads {expected}", path.display())]
    ArtifactVersion {
        /// The file.
        path: std::path::PathBuf,
        /// The version it records.
        found: u32,
        /// The version this build writes and reads.
        expected: u32,
    },
    /// A CRC-32 does not match: the artifact's bytes changed since it was
    /// written (a flipped bit, a torn write).
    #[error("artifact `{}`: the {part} checksum does not match (stored {stored:#010x}, computed {computed:#010x})", path.display())]
    ArtifactChecksum {
        /// The file.
        path: std::path::PathBuf,
        /// `"trailer"` or `"contents"`.
        part: &'static str,
        /// The CRC-32 the file records.
        stored: u32,
        /// The CRC-32 of its bytes.
        computed: u32,
    },
    /// The artifact's trailer or metadata is inconsistent (lengths, offsets,
    /// page size, encodings) although its checksums match.
    #[error("artifact `{}` is malformed: {detail}", path.display())]
    ArtifactMalformed {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The artifact holds the other kind of compiled code: a module where a
    /// component was asked for, or the reverse.
    #[error("artifact `{}` holds a compiled {found}, not a {expected}", path.display())]
    ArtifactKind {
        /// The file.
        path: std::path::PathBuf,
        /// What it holds: `"module"` or `"component"`.
        found: &'static str,
        /// What the load asked for.
        expected: &'static str,
    },
    /// The artifact was compiled by an engine whose settings differ from
    /// this one's ([`crate::artifact::engine_fingerprint`]).
    #[error("artifact `{}` was compiled for another engine configuration", path.display())]
    ArtifactEngineMismatch {
        /// The file.
        path: std::path::PathBuf,
    },
    /// wasmtime refused the artifact's compiled module or component.
    #[error("artifact `{}`: wasmtime cannot load its compiled code: {message}", path.display())]
    ArtifactDeserialize {
        /// The file.
        path: std::path::PathBuf,
        /// wasmtime's error.
        message: String,
    },
    /// wasmtime could not serialize the compiled module or component.
    #[error("cannot serialize the compiled code: {message}")]
    ArtifactSerialize {
        /// wasmtime's error.
        message: String,
    },
    /// The module or component cannot be saved as an artifact.
    #[error("this cannot be saved as an artifact: {reason}")]
    ArtifactUnsupported {
        /// Why.
        reason: &'static str,
    },
    /// A memory's image could not be read (saving) or made from the
    /// artifact's range (loading).
    #[error("artifact `{}`: the image of memory {memory}: {source}", path.display())]
    ArtifactImage {
        /// The file.
        path: std::path::PathBuf,
        /// The memory (a module's defined-memory order, a component's
        /// plan order).
        memory: usize,
        /// Why.
        #[source]
        source: framemap::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
