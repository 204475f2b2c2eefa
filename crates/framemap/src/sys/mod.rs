//! Every system call framemap makes lives below this module.
//!
//! The rest of the crate works in terms of page ranges and frames; this module
//! turns those into `mmap`, `mprotect`, `madvise`, `munmap` and the
//! `PAGEMAP_SCAN` ioctl through `rustix`, and installs the SIGBUS guard and the hole guard
//! (`sigaction` through `libc`, which rustix does not wrap; see [`sigbus`],
//! [`hole_guard`] and the chaining they share, [`chain`]).
//! Each `unsafe` block states why the call cannot break memory safety: the
//! address ranges passed in here always lie inside a reservation that the
//! caller owns exclusively (see [`crate::Reservation`]) or a host view the
//! caller owns, which is the single precondition all the raw functions below
//! rely on.

pub(crate) mod chain;
pub(crate) mod fork;
pub(crate) mod hole_guard;
pub(crate) mod inject;
pub(crate) mod maps;
pub(crate) mod memfd;
pub(crate) mod mman;
pub(crate) mod pagemap;
pub(crate) mod procmem;
pub(crate) mod sigbus;
pub(crate) mod uffd;
