//! The snapshot file's header (format version 2): page 0's first 64
//! bytes, checked before anything else is read (see `format.rs` for the
//! layout of the whole file).

use super::format::{FORMAT_VERSION, FormatError, HEADER_LEN, MAGIC};

/// The header's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) page_size: u32,
    pub(crate) data_pages: u64,
    pub(crate) manifest_len: u64,
    pub(crate) manifest_crc: u32,
}

impl Header {
    pub(crate) fn data_offset(&self) -> u64 {
        u64::from(self.page_size)
    }

    pub(crate) fn manifest_offset(&self) -> Option<u64> {
        self.data_pages.checked_mul(u64::from(self.page_size))?.checked_add(self.data_offset())
    }

    /// The whole file's length.
    pub(crate) fn file_len(&self) -> Option<u64> {
        self.manifest_offset()?.checked_add(self.manifest_len)
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.page_size.to_le_bytes());
        h[16..24].copy_from_slice(&self.data_offset().to_le_bytes());
        h[24..32].copy_from_slice(&self.data_pages.to_le_bytes());
        h[32..40].copy_from_slice(&self.manifest_offset().unwrap_or(u64::MAX).to_le_bytes());
        h[40..48].copy_from_slice(&self.manifest_len.to_le_bytes());
        h[48..52].copy_from_slice(&self.manifest_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..56]);
        h[56..60].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub(crate) fn decode(h: &[u8]) -> Result<Header, FormatError> {
        if h.len() < 8 || h[0..8] != MAGIC {
            return Err(FormatError::NotASnapshot);
        }
        if h.len() < HEADER_LEN {
            return Err(FormatError::Truncated { len: h.len() as u64, needed: HEADER_LEN as u64 });
        }
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if crc32fast::hash(&h[..56]) != u32_at(56) {
            // A version from the future may lay its header out differently:
            // say so rather than "corrupt" when the version field says it.
            if version != FORMAT_VERSION {
                return Err(FormatError::Version(version));
            }
            return Err(FormatError::Checksum("header"));
        }
        if version != FORMAT_VERSION {
            return Err(FormatError::Version(version));
        }
        let header = Header {
            page_size: u32_at(12),
            data_pages: u64_at(24),
            manifest_len: u64_at(40),
            manifest_crc: u32_at(48),
        };
        let malformed = |what: &str| Err(FormatError::Malformed(what.to_string()));
        if !header.page_size.is_power_of_two() || (header.page_size as usize) < HEADER_LEN {
            return malformed("page size is not a power of two of at least 64 bytes");
        }
        if u64_at(16) != header.data_offset() || Some(u64_at(32)) != header.manifest_offset() {
            return malformed("data or manifest offset is not where the layout puts it");
        }
        if u32_at(52) != 0 || u32_at(60) != 0 || header.file_len().is_none() {
            return malformed("reserved header bytes are not zero, or the sizes overflow");
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_each_field_is_checked() {
        let h = Header { page_size: 4096, data_pages: 3, manifest_len: 100, manifest_crc: 5 };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        assert_eq!(Header::decode(b"NOTASNAP"), Err(FormatError::NotASnapshot));
        assert!(matches!(Header::decode(&bytes[..40]), Err(FormatError::Truncated { .. })));
        let mut b = bytes;
        b[30] ^= 1;
        assert_eq!(Header::decode(&b), Err(FormatError::Checksum("header")));
        let mut future = Header { page_size: 4096, data_pages: 0, manifest_len: 0, manifest_crc: 0 }.encode();
        future[8] = 3;
        assert_eq!(Header::decode(&future), Err(FormatError::Version(3)));
        // A version 1 file (its header laid out the same, CRC right) is
        // refused by its version, not as corrupt.
        let mut v1 = h.encode();
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32fast::hash(&v1[..56]);
        v1[56..60].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Header::decode(&v1), Err(FormatError::Version(1)));
    }
}
