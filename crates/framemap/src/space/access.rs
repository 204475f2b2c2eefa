//! Host access: copying bytes out of and into the memory.
//!
//! A host read or write is checked against the frame table before any byte
//! moves: every byte must lie below the accessible size on frames whose
//! protection allows the access (the table equals the kernel, invariant 1,
//! so the copy cannot fault). While windows of unsealed buffers exist in
//! the process, the parts of an access inside them go through the buffer's
//! host view, which survives a truncation, and a window the SIGBUS guard
//! demoted is refused (invariant 6).

use super::LinearSpace;
use crate::buffer::SharedBuffer;
use crate::error::{Error, Result};
use crate::frame::{FrameKind, Protection};
use crate::page::PageRange;
use crate::sys::{self, sigbus};

/// Part of a host access: made directly, or through a buffer's host view.
#[derive(Clone, Copy, Debug)]
struct Piece<'a> {
    /// Offset in the memory of the piece's first byte.
    offset: u64,
    /// Bytes in the piece.
    len: u64,
    /// For a window of an unsealed buffer, where to reach its bytes in the
    /// buffer instead; `None` for bytes accessed directly.
    via: Option<BufferAt<'a>>,
}

/// A byte offset in a buffer.
#[derive(Clone, Copy, Debug)]
struct BufferAt<'a> {
    /// The buffer.
    buffer: &'a SharedBuffer,
    /// Byte offset in the buffer.
    offset: u64,
}

impl LinearSpace {
    /// Copies `buf.len()` bytes at `offset` out of the memory. Refused if any
    /// of them is not readable, or lies in a window of a buffer found
    /// truncated ([`Error::BufferTruncated`]).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_access(offset, buf.len() as u64, "read", Protection::readable)?;
        if sigbus::windows_guarded() {
            // Windows of unsealed buffers are read through the buffer's host
            // view, which survives a truncation (invariant 6).
            for Piece { offset: at, len: n, via } in self.guarded_pieces(offset, buf.len() as u64)? {
                let part = &mut buf[(at - offset) as usize..(at - offset + n) as usize];
                match via {
                    Some(BufferAt { buffer, offset: from }) => buffer.read(from, part)?,
                    // SAFETY: as below, for this part of the range.
                    None => unsafe {
                        std::ptr::copy_nonoverlapping(
                            self.base().as_ptr().add(at as usize),
                            part.as_mut_ptr(),
                            part.len(),
                        )
                    },
                }
            }
            return Ok(());
        }
        // SAFETY: `check_access` proved the bytes lie inside the reservation on
        // readable frames (invariant 1: the kernel agrees), and `buf` is a
        // distinct Rust allocation, so the copy neither faults nor overlaps.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base().as_ptr().add(offset as usize), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `data` into the memory at `offset`. Refused if any target byte is
    /// not writable, or lies in a window of a buffer found truncated
    /// ([`Error::BufferTruncated`]).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_access(offset, data.len() as u64, "write", Protection::writable)?;
        if sigbus::windows_guarded() {
            // As in `read`: windows of unsealed buffers go through the view.
            for Piece { offset: at, len: n, via } in self.guarded_pieces(offset, data.len() as u64)? {
                let part = &data[(at - offset) as usize..(at - offset + n) as usize];
                match via {
                    Some(BufferAt { buffer, offset: from }) => buffer.write(from, part)?,
                    // SAFETY: as below, for this part of the range.
                    None => unsafe {
                        std::ptr::copy_nonoverlapping(part.as_ptr(), self.base().as_ptr().add(at as usize), part.len())
                    },
                }
            }
            return Ok(());
        }
        // SAFETY: as in `read`, with writable frames; `&mut self` means no
        // other host access through this space runs concurrently.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base().as_ptr().add(offset as usize), data.len()) };
        Ok(())
    }

    /// Splits `offset..offset + len` (checked by `check_access`) into parts
    /// read or written directly and parts inside windows of unsealed buffers,
    /// which go through the buffer's host view at the given buffer offset.
    /// Refused if a window the range touches was demoted.
    fn guarded_pieces(&self, offset: u64, len: u64) -> Result<Vec<Piece<'_>>> {
        let end = offset + len;
        let pages = PageRange::new(offset / self.page, end.div_ceil(self.page));
        let (start, stop) = (self.addr_of(pages.start) as usize, self.addr_of(pages.end) as usize);
        if let Some(&(s, _)) = sigbus::demoted_windows(start, stop).first() {
            let id = match self.table.get(self.page_of(s.max(start))).map(|(_, f)| f.kind()) {
                Some(FrameKind::Shared { buffer, .. }) => buffer.0,
                _ => 0,
            };
            return Err(Error::BufferTruncated { id });
        }
        let mut pieces = Vec::new();
        for (run, frame) in self.table.runs_in(pages) {
            let (s, e) = ((run.start * self.page).max(offset), (run.end * self.page).min(end));
            let via = match frame.kind() {
                FrameKind::Shared { buffer, page } => self
                    .buffers
                    .get(&buffer)
                    .filter(|b| b.guarded())
                    .map(|b| BufferAt { buffer: b, offset: page * self.page + (s - run.start * self.page) }),
                FrameKind::Unmapped | FrameKind::Zero | FrameKind::Image { .. } => None,
            };
            if e > s {
                pieces.push(Piece { offset: s, len: e - s, via });
            }
        }
        Ok(pieces)
    }

    /// Checks that `offset..offset + len` lies below the accessible size, on
    /// frames whose protection `allowed` accepts.
    /// Copies whole pages from `offset` (page aligned) into `buf` (a whole
    /// number of pages), whatever their protection, for a snapshot: the
    /// pages must be accessible `Zero` or `Image` frames. Readable runs are
    /// copied directly, the others through `/proc/self/mem`, which reads
    /// them without touching their protection.
    pub(crate) fn read_for_snapshot(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        let pages = self.page_range(offset, len)?;
        for (run, frame) in self.table.runs_in(pages) {
            let (from, to) = ((run.start - pages.start) * self.page, (run.end - pages.start) * self.page);
            let part = &mut buf[from as usize..to as usize];
            let addr = self.addr_of(run.start);
            match frame.kind() {
                FrameKind::Zero | FrameKind::Image { .. } if frame.prot().readable() => {
                    // The run is a readable Zero or Image run of this
                    // reservation (table == kernel, invariant 1), and `part`
                    // is a distinct allocation.
                    // SAFETY: so the copy neither faults nor overlaps.
                    unsafe { std::ptr::copy_nonoverlapping(addr, part.as_mut_ptr(), part.len()) };
                }
                FrameKind::Zero | FrameKind::Image { .. } => {
                    sys::procmem::read(addr as usize, part).map_err(|source| Error::Kernel {
                        syscall: "pread(/proc/self/mem)",
                        start: run.start * self.page,
                        end: run.end * self.page,
                        source,
                    })?;
                }
                FrameKind::Unmapped | FrameKind::Shared { .. } => {
                    return Err(self.wrong_frames("snapshot read", frame.tag(), run));
                }
            }
        }
        Ok(())
    }

    fn check_access(
        &self,
        offset: u64,
        len: u64,
        operation: &'static str,
        allowed: fn(Protection) -> bool,
    ) -> Result<()> {
        let end = offset.checked_add(len).ok_or(Error::Overflow { start: offset, len })?;
        if end > self.len {
            return Err(Error::OutOfBounds { start: offset, end, accessible: self.len });
        }
        if len == 0 {
            return Ok(());
        }
        let pages = PageRange::new(offset / self.page, end.div_ceil(self.page));
        match self.table.runs_in(pages).find(|(_, f)| !allowed(f.prot())) {
            Some((run, frame)) => Err(Error::Protected {
                operation,
                prot: frame.prot(),
                start: run.start * self.page,
                end: run.end * self.page,
            }),
            None => Ok(()),
        }
    }
}
