//! A reservation: one fixed range of address space, owned exclusively.
//!
//! Invariant: from creation to drop the range `[base, base + len)` is mapped
//! by this process and used by nothing but the owner of this value; the range
//! never moves. Dropping it unmaps the whole range.

use crate::error::{Error, Result};
use crate::sys::mman;
use std::ptr::NonNull;

/// A fixed, exclusively owned range of address space, released on drop.
#[derive(Debug)]
pub struct Reservation {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a reservation is an address range; it holds no thread-bound state,
// and every access to the memory behind it goes through raw pointers whose
// synchronisation is the user's (exactly as for wasm linear memories).
unsafe impl Send for Reservation {}
// SAFETY: as for `Send`: `&Reservation` only exposes the base and length.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Reserves `len` bytes (a non-zero multiple of the host page size) of
    /// inaccessible address space that commits no memory.
    pub fn new(len: usize) -> Result<Reservation> {
        let page = crate::host_page_size();
        if len == 0 || !len.is_multiple_of(page) {
            return Err(Error::InvalidSize {
                what: "reservation size",
                value: len as u64,
                reason: "must be a non-zero multiple of the host page size",
            });
        }
        let base = mman::reserve(len).map_err(|source| Error::Kernel {
            syscall: "mmap",
            start: 0,
            end: len as u64,
            source,
        })?;
        Ok(Reservation { base, len })
    }

    /// First byte of the reservation.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a reservation holds at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: the reservation owns `[base, base + len)` (module invariant)
        // and is being dropped, so nothing uses the range afterwards.
        let result = unsafe { mman::release(self.base.as_ptr(), self.len) };
        debug_assert!(result.is_ok(), "munmap of a reservation failed: {result:?}");
    }
}
