//! [`Error`]: why a memory-control call trapped (guest calls) or failed
//! (host calls on [`super::MemCtl`]).

/// A rule of the memory-control imports that a call broke (see the
/// [module docs](super) for the rules and their order), or a failure of the
/// memory underneath. A guest call that fails traps with this value: the
/// host gets it back with `error.downcast_ref::<framemap_wasmtime::memctl::Error>()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
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
    /// A buffer handle the host took back ([`super::MemCtl::revoke_handle`]).
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
        access: super::Access,
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
    /// The host's [`super::MemCtlPolicy`] refused the window.
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
    /// The memory refused or failed (it is poisoned, it is gone, or the
    /// framemap core refused the change: see [`crate::Error`]).
    #[error(transparent)]
    Memory(#[from] crate::Error),
}

/// What memory-control calls return.
pub type Result<T> = std::result::Result<T, Error>;
