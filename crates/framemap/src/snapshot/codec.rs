//! The manifest's field encodings (format version 2): LEB128 varints,
//! zigzag deltas, fixed little-endian fields and length-prefixed names,
//! each with a checked, canonical decoder (a value has exactly one
//! encoding: a varint with a redundant last byte is refused).

use super::format::{Digest, FormatError, MAX_NAME_LEN};

/// An encoder of the manifest's fields.
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u64_le(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    pub(crate) fn digest(&mut self, d: &Digest) {
        self.0.extend_from_slice(&d.0);
    }
    /// Unsigned LEB128: seven bits a byte, low first, the high bit set on
    /// every byte but the last.
    pub(crate) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    /// `value - expected` (wrapping), zigzag-encoded as a varint: one byte
    /// for steps of less than 64 pages either way.
    pub(crate) fn delta(&mut self, value: u64, expected: u64) {
        self.varint(zigzag(value.wrapping_sub(expected)));
    }
    pub(crate) fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// A difference (wrapping) as an unsigned number, small either way: 0, -1,
/// 1, -2, ... become 0, 1, 2, 3, ...
fn zigzag(d: u64) -> u64 {
    let d = d as i64;
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(z: u64) -> u64 {
    (z >> 1) ^ (z & 1).wrapping_neg()
}

/// A checked decoder of the manifest's fields.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn left(&self) -> usize {
        self.bytes.len() - self.at
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end =
            end.ok_or_else(|| FormatError::Malformed(format!("manifest ends inside a field at byte {}", self.at)))?;
        let field = &self.bytes[self.at..end];
        self.at = end;
        Ok(field)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn u64_le(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn digest(&mut self) -> Result<Digest, FormatError> {
        Ok(Digest(self.array()?))
    }
    /// A canonical unsigned LEB128 varint of at most 64 bits: no redundant
    /// zero last byte, nothing past bit 63.
    pub(crate) fn varint(&mut self) -> Result<u64, FormatError> {
        let start = self.at;
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(FormatError::Malformed(format!("a varint at byte {start} overflows 64 bits")));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(FormatError::Malformed(format!("a varint at byte {start} is not minimal")));
                }
                return Ok(v);
            }
        }
        Err(FormatError::Malformed(format!("a varint at byte {start} overflows 64 bits")))
    }
    /// The value a [`Writer::delta`] from `expected` encodes; a delta of 0
    /// is refused (the format says "continues" in the run's tag instead).
    pub(crate) fn delta(&mut self, expected: u64) -> Result<u64, FormatError> {
        let start = self.at;
        match self.varint()? {
            0 => Err(FormatError::Malformed(format!("a delta of 0 at byte {start}"))),
            z => Ok(expected.wrapping_add(unzigzag(z))),
        }
    }
    /// A count of items of at least `min_item` bytes each: bounded by the
    /// bytes left, so no count can make the decoder allocate past the file.
    pub(crate) fn count(&mut self, min_item: usize) -> Result<usize, FormatError> {
        let n = self.varint()?;
        let left = self.left();
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_item) <= left => Ok(n),
            _ => Err(FormatError::Malformed(format!("{n} items cannot fit in the {left} bytes left"))),
        }
    }
    pub(crate) fn str(&mut self) -> Result<String, FormatError> {
        let n = self.count(1)?;
        if n > MAX_NAME_LEN {
            return Err(FormatError::Malformed(format!("a name of {n} bytes (at most {MAX_NAME_LEN})")));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| FormatError::Malformed("a name is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<u64, FormatError> {
        let mut r = Reader { bytes, at: 0 };
        let v = r.varint()?;
        assert_eq!(r.at, bytes.len(), "{bytes:?}: bytes left after the varint");
        Ok(v)
    }

    #[test]
    fn varints_round_trip_and_only_minimal_ones_decode() {
        for v in [0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u64::from(u32::MAX), u64::MAX >> 1, u64::MAX] {
            let mut w = Writer(Vec::new());
            w.varint(v);
            assert_eq!(read(&w.0), Ok(v), "{v}");
            assert_eq!(w.0.len(), (64 - v.leading_zeros() as usize).div_ceil(7).max(1), "{v}: length");
        }
        // Redundant last bytes, bits past 63, a varint without an end.
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0x80, 0x00],
            &[0xff; 9],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
        let mut r = Reader { bytes: &[0xff; 11], at: 0 };
        assert!(r.varint().is_err());
    }

    #[test]
    fn deltas_round_trip_in_either_direction_and_small_steps_take_one_byte() {
        for d in [0, 1, 2, 63, u64::MAX, u64::MAX / 2, 1 << 63] {
            assert_eq!(unzigzag(zigzag(d)), d, "{d}");
        }
        let mut r = Reader { bytes: &[0], at: 0 };
        assert!(r.delta(5).is_err(), "a delta of 0");
        for (value, expected) in [(6, 5), (4, 5), (0, u64::MAX), (u64::MAX, 0), (1 << 40, 3), (3, 1 << 40)] {
            let mut w = Writer(Vec::new());
            w.delta(value, expected);
            if value.abs_diff(expected) < 64 {
                assert_eq!(w.0.len(), 1, "{value} from {expected}");
            }
            let mut r = Reader { bytes: &w.0, at: 0 };
            assert_eq!(r.delta(expected), Ok(value), "{value} from {expected}");
        }
    }
}
