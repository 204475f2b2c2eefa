//! The error type of the framemap core.

use crate::frame::FrameTag;
use std::io;

/// Everything that can go wrong in the framemap core. Each variant names the
/// range, size or limit involved, in bytes relative to the memory's base
/// unless it says otherwise. A rejected call changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size argument is zero where it must not be, or too large to represent.
    #[error("invalid {what}: {value:#x} bytes ({reason})")]
    InvalidSize {
        /// Which size.
        what: &'static str,
        /// The value given.
        value: u64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A range does not start or end on a host page boundary.
    #[error("range {start:#x}+{len:#x} is not aligned to the host page size ({page_size:#x} bytes)")]
    Misaligned {
        /// Start of the range.
        start: u64,
        /// Length of the range.
        len: u64,
        /// The host page size.
        page_size: usize,
    },
    /// `start + len` overflows.
    #[error("range {start:#x}+{len:#x} overflows the address space")]
    Overflow {
        /// Start of the range.
        start: u64,
        /// Length of the range.
        len: u64,
    },
    /// A range reaches past the memory's accessible size.
    #[error("range {start:#x}..{end:#x} is outside the memory's accessible {accessible:#x} bytes")]
    OutOfBounds {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
        /// The memory's accessible size (rounded up to whole host pages).
        accessible: u64,
    },
    /// Growth past the reservation: framemap memories never move.
    #[error(
        "cannot grow to {requested:#x} bytes: the reservation holds {capacity:#x} bytes and a framemap memory never moves"
    )]
    CapacityExceeded {
        /// The size asked for.
        requested: u64,
        /// The reservation's size, excluding its guard.
        capacity: u64,
    },
    /// A request to make a memory smaller than it is.
    #[error("cannot shrink a memory from {current:#x} to {requested:#x} bytes")]
    Shrink {
        /// The current accessible size.
        current: u64,
        /// The size asked for.
        requested: u64,
    },
    /// The operation needs frames of a kind the range does not (only) hold.
    #[error("{operation} refused on {tag} frames at {start:#x}..{end:#x}")]
    WrongFrames {
        /// The operation, e.g. `protect`.
        operation: &'static str,
        /// The tag found in the range that the operation refuses.
        tag: FrameTag,
        /// Start of the offending run.
        start: u64,
        /// End of the offending run.
        end: u64,
    },
    /// The range holds frames whose protection forbids the access.
    #[error("{operation} refused at {start:#x}..{end:#x}: frames there are {prot:?}")]
    Protected {
        /// The access, `read` or `write`.
        operation: &'static str,
        /// The protection found.
        prot: crate::frame::Protection,
        /// Start of the offending run.
        start: u64,
        /// End of the offending run.
        end: u64,
    },
    /// A file offered as an image backing can shrink under a mapping.
    #[error(
        "the file can shrink (it has no F_SEAL_SHRINK seal): mapping it could raise SIGBUS; use Image::copy_of_file"
    )]
    CanShrink,
    /// A range reaches past the end of a backing object.
    #[error("range {start:#x}..{end:#x} reaches past the end of backing #{id} ({len:#x} bytes)")]
    PastBacking {
        /// The backing.
        id: u64,
        /// Start of the range, in the backing.
        start: u64,
        /// End of the range, in the backing.
        end: u64,
        /// The backing's length.
        len: u64,
    },
    /// The buffer was revoked: it can no longer be mapped or accessed.
    #[error("buffer #{id} was revoked")]
    Revoked {
        /// The buffer.
        id: u64,
    },
    /// The buffer's file shrank under a mapping (it was not sealed, see
    /// [`crate::SharedBuffer::from_fd`]): the SIGBUS guard replaced the
    /// affected pages, whose contents are lost, and the buffer can no longer
    /// be read, written or mapped.
    #[error("buffer #{id} was truncated under a mapping: its pages are gone")]
    BufferTruncated {
        /// The buffer.
        id: u64,
    },
    /// A file offered as a buffer is shorter than the length asked for.
    #[error("the file holds {file_len:#x} bytes, fewer than the {len:#x} asked for")]
    FileTooShort {
        /// The length asked for.
        len: u64,
        /// The file's length.
        file_len: u64,
    },
    /// Every slot of the SIGBUS guard's registry is in use: no more ranges
    /// of unsealed buffers can be mapped until some are unmapped.
    #[error("the SIGBUS guard already guards {capacity} ranges of unsealed buffers")]
    GuardFull {
        /// How many ranges the guard holds.
        capacity: usize,
    },
    /// A frame names a backing object this memory does not hold.
    #[error("backing #{id} is not attached to this memory")]
    UnknownBacking {
        /// The backing's id.
        id: u64,
    },
    /// The grant was issued for another memory's host (or this space has no
    /// window host): revoking the buffer would not reach a window made with
    /// it.
    #[error("buffer #{id}: the grant was issued for another memory's host")]
    ForeignGrant {
        /// The buffer.
        id: u64,
    },
    /// This space already holds its share of the SIGBUS guard's registry:
    /// no more windows of unsealed buffers can be mapped in it until some
    /// are unmapped (see [`crate::GUARD_SHARE`]).
    #[error("the memory already holds {held} windows of unsealed buffers, its share of the SIGBUS guard ({share})")]
    GuardShare {
        /// Windows held.
        held: usize,
        /// The share.
        share: usize,
    },
    /// The hole guard's registry holds as many memories as it can: no more
    /// linear spaces can be made until some are dropped.
    #[error("the hole guard already guards {capacity} memories")]
    HoleGuardFull {
        /// How many memories the guard holds.
        capacity: usize,
    },
    /// The change would leave the space's frame table with more runs (each
    /// at least one kernel mapping) than its budget allows (see
    /// [`crate::LinearSpace::set_run_budget`]).
    #[error("the change would need {runs} runs, over the memory's budget of {budget}")]
    RunBudget {
        /// Runs the table would hold.
        runs: usize,
        /// The budget.
        budget: usize,
    },
    /// Revoking a buffer failed in some memories: a window of it may have
    /// survived there.
    #[error("revoking buffer #{id}: {failed} of {told} memories may keep a window: {source}")]
    Revocation {
        /// The buffer.
        id: u64,
        /// Memories whose windows could not all be unmapped.
        failed: usize,
        /// Memories told.
        told: usize,
        /// The first failure.
        source: Box<Error>,
    },
    /// A system call failed.
    #[error("{syscall} failed on {start:#x}..{end:#x}: {source}")]
    Kernel {
        /// The call.
        syscall: &'static str,
        /// Start of the range it was made on.
        start: u64,
        /// End of that range.
        end: u64,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// The frame table and the kernel's mappings disagree.
    #[error("frame table and kernel disagree at {start:#x}..{end:#x}: {detail}")]
    Diverged {
        /// Start of the first disagreement.
        start: u64,
        /// End of the first disagreement.
        end: u64,
        /// What differs.
        detail: String,
    },
    /// A checkpoint that is not the memory's latest of its current life
    /// (a later one was taken, the memory was reset since, or it is
    /// another memory's).
    #[error(
        "checkpoint {index} of memory #{space} is not current (the memory's latest is {latest}; 0: none since its last reset)"
    )]
    StaleCheckpoint {
        /// The memory the checkpoint was taken on.
        space: u64,
        /// Which checkpoint it is.
        index: u64,
        /// The memory's latest checkpoint of this life, if it is that memory.
        latest: u64,
    },
    /// Reading or writing a snapshot file failed.
    #[error("snapshot file {path}: {source}")]
    SnapshotIo {
        /// The file (or "(in memory)").
        path: String,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file is not a snapshot this version can read, or it is damaged:
    /// not a snapshot, another format version, a checksum that does not
    /// match, a truncated file, or a field that breaks the format's rules.
    #[error("snapshot file {path} is unusable: {detail}")]
    SnapshotInvalid {
        /// The file.
        path: String,
        /// What is wrong, in words.
        detail: String,
        /// Which kind of damage.
        kind: SnapshotDamage,
    },
    /// The snapshot was taken on a machine with another page size.
    #[error("the snapshot's pages are {snapshot} bytes, this host's {host}")]
    SnapshotPageSize {
        /// The snapshot's page size.
        snapshot: u64,
        /// This host's.
        host: u64,
    },
    /// The snapshot holds no memory of that name.
    #[error("the snapshot holds no memory named {name:?}")]
    NoSuchMemory {
        /// The name asked for.
        name: String,
    },
    /// An incremental snapshot's parent is not attached, or another
    /// snapshot was offered in its place.
    #[error("snapshot {child} needs parent {parent}{}", if *wrong { ", not the snapshot offered" } else { ", which is not attached" })]
    MissingParent {
        /// The incremental snapshot.
        child: crate::snapshot::Digest,
        /// The parent it names (or, for a snapshot with no parent, the one
        /// offered).
        parent: crate::snapshot::Digest,
        /// Whether another snapshot was offered in its place.
        wrong: bool,
    },
    /// An incremental capture that does not continue from its parent: the
    /// memory was not captured into the parent, or was reset, restored or
    /// checkpointed since.
    #[error("memory {name:?} was not captured into the parent snapshot at its latest checkpoint")]
    NotFromParent {
        /// The memory's name in the snapshot.
        name: String,
    },
    /// Restoring needs an image the resolver did not supply, or supplied
    /// with other contents.
    #[error("the snapshot needs image {hash}{}", if *wrong { " (the image supplied has other contents)" } else { "" })]
    MissingImage {
        /// The image's content hash.
        hash: crate::snapshot::Digest,
        /// Whether an image was supplied, with another content hash.
        wrong: bool,
    },
    /// Restoring needs a buffer the resolver did not supply.
    #[error("the snapshot needs a window of buffer {name:?}, which the resolver does not have")]
    MissingBuffer {
        /// The buffer's name.
        name: String,
    },
    /// Capturing a window of a buffer the namer gave no name.
    #[error("buffer #{id} has a window in the memory but no name to record it by")]
    UnnamedBuffer {
        /// The buffer.
        id: u64,
    },
    /// A name (of a memory, a global or a buffer) longer than the format
    /// allows, or given twice.
    #[error("name {name:?} is {reason}")]
    BadName {
        /// The name (cut to 64 bytes).
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// Which kind of damage makes a snapshot file unusable
/// ([`Error::SnapshotInvalid`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotDamage {
    /// Not a framemap snapshot at all.
    NotASnapshot,
    /// A format version this code does not read.
    Version,
    /// The header's or the manifest's checksum, or the data's digest, does
    /// not match.
    Checksum,
    /// Shorter (or longer) than its header says.
    Truncated,
    /// A field breaks the format's rules.
    Malformed,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
