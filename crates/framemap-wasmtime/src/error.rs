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
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
