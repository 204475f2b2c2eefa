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
    /// Images cannot be given to this module's memories: its data segments
    /// could not be cut (`reason`), so instantiation copies them itself.
    #[error("the module's memories cannot be given images{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    NotPrepared {
        /// Why the module is not prepared.
        reason: Option<crate::prepare::NotPrepared>,
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
    // Memory-control calls (`crate::memctl`): a guest call that breaks one
    // of these rules traps with it; host calls return it.
    /// The calling instance exports no memory of that name.
    #[error("the calling instance exports no memory named {export:?}")]
    NoMemory {
        /// The export name looked for.
        export: String,
    },
    /// A `prot` value other than 0, 1 or 3.
    #[error("protection flags {flags:#x} are none of 0 (none), 1 (read), 3 (read-write)")]
    BadProtection {
        /// The value given.
        flags: i32,
    },
    /// A zero size where the proposal traps on one.
    #[error("empty range at {addr:#x}")]
    EmptyRange {
        /// The address given.
        addr: u64,
    },
    /// `addr + size` wraps around the 32-bit index space.
    #[error("range {addr:#x}+{size:#x} overflows the 32-bit index space")]
    Overflow {
        /// The address given.
        addr: u64,
        /// The size given.
        size: u64,
    },
    /// The rounded range reaches past the memory's current size.
    #[error("range {start:#x}..{end:#x} is outside the memory's {size:#x} bytes")]
    OutOfBounds {
        /// Start of the rounded range.
        start: u64,
        /// End of the rounded range.
        end: u64,
        /// The memory's size.
        size: u64,
    },
    /// `map` over pages that are mapped (the proposal forbids overlapping
    /// mappings).
    #[error("pages {start:#x}..{end:#x} are already mapped: unmap them first")]
    AlreadyMapped {
        /// Start of the first mapped run in the range.
        start: u64,
        /// End of that run (clipped to the range).
        end: u64,
    },
    /// `protect` over `Unmapped` pages.
    #[error("pages {start:#x}..{end:#x} are unmapped and have no protection to change")]
    NotMapped {
        /// Start of the first unmapped run in the range.
        start: u64,
        /// End of that run (clipped to the range).
        end: u64,
    },
    /// `discard` over a host buffer's pages.
    #[error("pages {start:#x}..{end:#x} belong to a host buffer and cannot be discarded")]
    SharedFrames {
        /// Start of the first shared run in the range.
        start: u64,
        /// End of that run.
        end: u64,
    },
    /// `protect` raising a buffer window past every live grant of the buffer.
    #[error("pages {start:#x}..{end:#x} show buffer #{} and no live grant allows them {prot:?}", buffer.0)]
    ProtectDenied {
        /// Start of the window's run in the range.
        start: u64,
        /// End of that run (clipped to the range).
        end: u64,
        /// The buffer.
        buffer: framemap::BackingId,
        /// The protection asked for.
        prot: framemap::Protection,
    },
    /// A buffer handle this store was never granted.
    #[error("buffer handle {handle} was never granted")]
    NotGranted {
        /// The handle given.
        handle: u32,
    },
    /// A buffer handle the host took back ([`crate::memctl::MemCtl::revoke_handle`]).
    #[error("buffer handle {handle} was revoked by the host")]
    HandleRevoked {
        /// The handle given.
        handle: u32,
    },
    /// The handle's buffer was revoked ([`framemap::SharedBuffer::revoke`]).
    #[error("the buffer of handle {handle} was revoked")]
    BufferRevoked {
        /// The handle given.
        handle: u32,
    },
    /// A protection beyond the handle's grant.
    #[error("buffer handle {handle} is granted {access:?}, not {prot:?}")]
    AccessDenied {
        /// The handle given.
        handle: u32,
        /// What the grant allows.
        access: crate::memctl::Access,
        /// What was asked for.
        prot: framemap::Protection,
    },
    /// A buffer offset that is not a multiple of the rounding unit.
    #[error("buffer offset {offset:#x} is not a multiple of the page size {page_size:#x}")]
    MisalignedOffset {
        /// The offset given.
        offset: u64,
        /// The rounding unit.
        page_size: u64,
    },
    /// A window reaching past the end of its buffer.
    #[error("window {offset:#x}+{len:#x} reaches past the end of buffer handle {handle} ({buffer_len:#x} bytes)")]
    PastBuffer {
        /// The handle given.
        handle: u32,
        /// Offset in the buffer.
        offset: u64,
        /// Length of the window (rounded).
        len: u64,
        /// The buffer's length.
        buffer_len: u64,
    },
    /// The host's [`crate::memctl::MemCtlPolicy`] refused the window.
    #[error("the host's policy refuses buffer handle {handle} at {addr:#x}+{len:#x} as {prot:?}")]
    PolicyDenied {
        /// The handle given.
        handle: u32,
        /// Guest address of the window.
        addr: u64,
        /// Length of the window.
        len: u64,
        /// The protection asked for.
        prot: framemap::Protection,
    },
    /// No handle is left to grant (handles are positive `i32`s and never
    /// reused).
    #[error("no buffer handle left to grant")]
    HandlesExhausted,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
