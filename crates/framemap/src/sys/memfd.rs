//! Memory files: anonymous `memfd`s framemap fills and seals, and the seals
//! of files handed to it.
//!
//! A file framemap maps must never shrink under a mapping (a page past its
//! end raises SIGBUS, which wasmtime does not handle): its own images are
//! memfds sealed against shrinking, growing and writing before anything maps
//! them.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, MemfdFlags, SealFlags};
use std::io;

/// A new, empty, sealable memfd named `name` (the name shows in
/// `/proc/self/maps`).
pub(crate) fn create(name: &str) -> io::Result<OwnedFd> {
    Ok(fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?)
}

/// Sets the file's length; a grown file reads zero (and stays sparse).
pub(crate) fn set_len(fd: impl AsFd, len: u64) -> io::Result<()> {
    Ok(fs::ftruncate(fd, len)?)
}

/// Writes all of `bytes` at `offset`.
pub(crate) fn write_all_at(fd: impl AsFd, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
    let fd = fd.as_fd();
    while !bytes.is_empty() {
        let n = rustix::io::pwrite(fd, bytes, offset)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote nothing"));
        }
        bytes = &bytes[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes at `offset`; bytes past the end of the
/// file read as zero.
pub(crate) fn read_exact_at(fd: impl AsFd, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    let fd = fd.as_fd();
    while !buf.is_empty() {
        let n = rustix::io::pread(fd, &mut *buf, offset)?;
        if n == 0 {
            buf.fill(0);
            return Ok(());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Seals the file for good: it can no longer shrink, grow or be written, and
/// no seal can be added or removed.
pub(crate) fn seal_immutable(fd: impl AsFd) -> io::Result<()> {
    Ok(fs::fcntl_add_seals(fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL)?)
}

/// Whether the file is sealed against shrinking (false for files that cannot
/// carry seals at all).
pub(crate) fn cannot_shrink(fd: impl AsFd) -> bool {
    fs::fcntl_get_seals(fd).is_ok_and(|seals| seals.contains(SealFlags::SHRINK))
}

/// Whether the file is sealed against writes (`F_SEAL_WRITE`): its bytes can
/// never change again (seals are never removed).
pub(crate) fn cannot_be_written(fd: impl AsFd) -> bool {
    fs::fcntl_get_seals(fd).is_ok_and(|seals| seals.contains(SealFlags::WRITE))
}

/// The file's length in bytes.
pub(crate) fn len(fd: impl AsFd) -> io::Result<u64> {
    let stat = fs::fstat(fd)?;
    u64::try_from(stat.st_size).map_err(|_| io::Error::other("negative file size"))
}
