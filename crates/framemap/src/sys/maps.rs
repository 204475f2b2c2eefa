//! `/proc/self/maps`: what the kernel really has mapped in a range.

use std::io;

/// One line of `/proc/self/maps`, clipped to nothing: the kernel's own view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Vma {
    pub start: usize,
    pub end: usize,
    /// The four permission characters, e.g. `rw-p`.
    pub perms: [u8; 4],
    /// Inode of the backing file, 0 for anonymous memory.
    pub inode: u64,
    /// Offset into the backing file, in bytes.
    pub offset: u64,
}

/// The mappings that intersect `[start, end)`, in address order.
///
/// `/proc/self/maps` is read in several `read(2)` calls, and (since Linux
/// 6.16) without holding the mmap lock across them: when another thread
/// maps or unmaps meanwhile, lines can repeat or go back in address order.
/// Lines of `[start, end)`, which only the caller changes, are right
/// whenever they appear; a torn read shows as lines out of order, and is
/// read again (a few times, then the lines are kept in order, each address
/// once).
pub(crate) fn vmas_in(start: usize, end: usize) -> io::Result<Vec<Vma>> {
    const ATTEMPTS: usize = 8;
    let mut attempt = 0;
    loop {
        let (vmas, ordered) = read_once(start, end)?;
        attempt += 1;
        if ordered {
            return Ok(vmas);
        }
        if attempt == ATTEMPTS {
            return Ok(in_order(vmas));
        }
    }
}

/// One read of `/proc/self/maps`: the lines intersecting `[start, end)`,
/// and whether every line of the file came in address order.
fn read_once(start: usize, end: usize) -> io::Result<(Vec<Vma>, bool)> {
    let text = std::fs::read_to_string("/proc/self/maps")?;
    let mut out = Vec::new();
    let (mut ordered, mut last_end) = (true, 0usize);
    for line in text.lines() {
        let vma = parse_line(line)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unparsable maps line: {line}")))?;
        ordered &= vma.start >= last_end;
        last_end = last_end.max(vma.end);
        if vma.end > start && vma.start < end {
            out.push(vma);
        }
    }
    Ok((out, ordered))
}

/// `vmas` without the lines that go back in address order.
fn in_order(vmas: Vec<Vma>) -> Vec<Vma> {
    let mut last_end = 0usize;
    vmas.into_iter()
        .filter(|vma| {
            let keep = vma.start >= last_end;
            last_end = last_end.max(vma.end);
            keep
        })
        .collect()
}

fn parse_line(line: &str) -> Option<Vma> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms: [u8; 4] = fields.next()?.as_bytes().try_into().ok()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _device = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    Some(Vma {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        perms,
        inode,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_anonymous_and_file_lines() {
        let anon = parse_line("7f0000000000-7f0000002000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!((anon.start, anon.end, &anon.perms, anon.inode), (0x7f00_0000_0000, 0x7f00_0000_2000, b"rw-p", 0));
        let file = parse_line("55d0-55e0 r--s 00003000 00:01 1234     /memfd:img (deleted)").unwrap();
        assert_eq!((file.perms, file.inode, file.offset), (*b"r--s", 1234, 0x3000));
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn a_torn_read_keeps_each_address_once_in_order() {
        let vma = |start, end| Vma { start, end, perms: *b"---p", inode: 0, offset: 0 };
        // What a read torn by another thread's mmap looked like: a range
        // repeated after the lines that followed it.
        let torn = vec![vma(0x0, 0x1000), vma(0x1000, 0x5000), vma(0x5000, 0x9000), vma(0x1000, 0x5000)];
        assert_eq!(in_order(torn), [vma(0x0, 0x1000), vma(0x1000, 0x5000), vma(0x5000, 0x9000)]);
    }
}
