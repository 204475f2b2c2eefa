//! `/proc/self/mem`: reading this process's own pages whatever their
//! protection (the kernel reads them for us, with `FOLL_FORCE`), for
//! snapshots of pages a guest made inaccessible. Reading changes no page's
//! contents or protection; a page never touched reads as zero (or as its
//! file's bytes).

use std::io;
use std::os::unix::fs::FileExt;

/// Copies `buf.len()` bytes at address `addr` of this process into `buf`.
pub(crate) fn read(addr: usize, buf: &mut [u8]) -> io::Result<()> {
    super::inject::check()?;
    // Opened per call: a fork child must read its own memory, not its
    // parent's (snapshots of inaccessible pages are rare).
    let file = std::fs::File::open("/proc/self/mem")?;
    file.read_exact_at(buf, addr as u64)
}
