//! Frames: what one host page of a linear memory is, as an explicit variant tag.
//!
//! Every peeker (reset, snapshot, statistics, validation) dispatches on
//! [`FrameKind`] exhaustively; a page's meaning is never inferred from a
//! combination of protections and reference counts (see the frame tag table in
//! ARCHITECTURE.md). Protection is a separate attribute, and an
//! [`FrameKind::Unmapped`] frame always has [`Protection::None`]: the
//! constructors make any other combination unrepresentable.

use std::fmt;
use std::ops::{Index, IndexMut};

/// Access the guest (and the host, through the memory) has to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protection {
    /// No access: any touch traps.
    None,
    /// Loads only.
    Read,
    /// Loads and stores.
    ReadWrite,
}

impl Protection {
    /// Whether loads are allowed.
    pub fn readable(self) -> bool {
        !matches!(self, Protection::None)
    }

    /// Whether stores are allowed.
    pub fn writable(self) -> bool {
        matches!(self, Protection::ReadWrite)
    }
}

/// Names one backing object (an image or a host-shared buffer); unique in
/// the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackingId(pub u64);

impl BackingId {
    /// A process-wide unique id.
    pub(crate) fn fresh() -> BackingId {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        BackingId(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// The variant tag of a frame: what backs the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// No backing; the page is `PROT_NONE` and any access traps.
    Unmapped,
    /// Private anonymous memory: reads zero until written.
    Zero,
    /// Page `page` of a sealed copy-on-write image, mapped `MAP_PRIVATE`.
    Image {
        /// The image.
        image: BackingId,
        /// Host page index inside the image.
        page: u64,
    },
    /// Page `page` of a host buffer, mapped `MAP_SHARED`: writes reach the host.
    Shared {
        /// The buffer.
        buffer: BackingId,
        /// Host page index inside the buffer.
        page: u64,
    },
}

/// The tag of a [`FrameKind`] without its backing details: what statistics
/// and reports group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameTag {
    /// See [`FrameKind::Unmapped`].
    Unmapped,
    /// See [`FrameKind::Zero`].
    Zero,
    /// See [`FrameKind::Image`].
    Image,
    /// See [`FrameKind::Shared`].
    Shared,
}

impl FrameTag {
    /// All tags, in table order.
    pub const ALL: [FrameTag; 4] = [FrameTag::Unmapped, FrameTag::Zero, FrameTag::Image, FrameTag::Shared];

    /// Position of the tag in [`FrameTag::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One value per [`FrameTag`], indexed by the tag (`per_tag[FrameTag::Zero]`):
/// what statistics and reports keep per tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PerTag<T>([T; 4]);

impl<T> PerTag<T> {
    /// The value `f(tag)` for each tag.
    pub fn from_fn(f: impl FnMut(FrameTag) -> T) -> PerTag<T> {
        PerTag(FrameTag::ALL.map(f))
    }

    /// Each tag with its value, in [`FrameTag::ALL`] order.
    pub fn iter(&self) -> PerTagIter<'_, T> {
        FrameTag::ALL.into_iter().zip(self.0.iter())
    }

    /// The values, in [`FrameTag::ALL`] order.
    pub fn values(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

/// The iterator of [`PerTag::iter`]: each tag with its value.
pub type PerTagIter<'a, T> = std::iter::Zip<std::array::IntoIter<FrameTag, 4>, std::slice::Iter<'a, T>>;

impl<T> Index<FrameTag> for PerTag<T> {
    type Output = T;

    fn index(&self, tag: FrameTag) -> &T {
        &self.0[tag.index()]
    }
}

impl<T> IndexMut<FrameTag> for PerTag<T> {
    fn index_mut(&mut self, tag: FrameTag) -> &mut T {
        &mut self.0[tag.index()]
    }
}

impl<'a, T> IntoIterator for &'a PerTag<T> {
    type Item = (FrameTag, &'a T);
    type IntoIter = PerTagIter<'a, T>;

    fn into_iter(self) -> PerTagIter<'a, T> {
        self.iter()
    }
}

impl fmt::Display for FrameTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameTag::Unmapped => "unmapped",
            FrameTag::Zero => "zero",
            FrameTag::Image => "image",
            FrameTag::Shared => "shared",
        })
    }
}

/// One page's variant tag together with its protection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    kind: FrameKind,
    prot: Protection,
}

impl Frame {
    /// An unmapped frame (always [`Protection::None`]).
    pub const UNMAPPED: Frame = Frame { kind: FrameKind::Unmapped, prot: Protection::None };

    /// A zero frame with protection `prot`.
    pub const fn zero(prot: Protection) -> Frame {
        Frame { kind: FrameKind::Zero, prot }
    }

    /// Page `page` of image `image`, with protection `prot`.
    pub const fn image(image: BackingId, page: u64, prot: Protection) -> Frame {
        Frame { kind: FrameKind::Image { image, page }, prot }
    }

    /// Page `page` of host buffer `buffer`, with protection `prot`.
    pub const fn shared(buffer: BackingId, page: u64, prot: Protection) -> Frame {
        Frame { kind: FrameKind::Shared { buffer, page }, prot }
    }

    /// What backs the frame.
    pub fn kind(self) -> FrameKind {
        self.kind
    }

    /// The frame's protection.
    pub fn prot(self) -> Protection {
        self.prot
    }

    /// The frame's variant tag.
    pub fn tag(self) -> FrameTag {
        match self.kind {
            FrameKind::Unmapped => FrameTag::Unmapped,
            FrameKind::Zero => FrameTag::Zero,
            FrameKind::Image { .. } => FrameTag::Image,
            FrameKind::Shared { .. } => FrameTag::Shared,
        }
    }

    /// The same backing with protection `prot`, or `None` for an unmapped
    /// frame, which has no protection to change.
    pub fn with_prot(self, prot: Protection) -> Option<Frame> {
        match self.kind {
            FrameKind::Unmapped => None,
            FrameKind::Zero | FrameKind::Image { .. } | FrameKind::Shared { .. } => {
                Some(Frame { kind: self.kind, prot })
            }
        }
    }

    /// The frame `pages` host pages further along the same run: backing page
    /// offsets advance, everything else stays.
    pub fn advanced(self, pages: u64) -> Frame {
        let kind = match self.kind {
            FrameKind::Unmapped => FrameKind::Unmapped,
            FrameKind::Zero => FrameKind::Zero,
            FrameKind::Image { image, page } => FrameKind::Image { image, page: page + pages },
            FrameKind::Shared { buffer, page } => FrameKind::Shared { buffer, page: page + pages },
        };
        Frame { kind, prot: self.prot }
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prot = match self.prot {
            Protection::None => "---",
            Protection::Read => "r--",
            Protection::ReadWrite => "rw-",
        };
        match self.kind {
            FrameKind::Unmapped => write!(f, "unmapped {prot}"),
            FrameKind::Zero => write!(f, "zero     {prot}"),
            FrameKind::Image { image, page } => write!(f, "image    {prot} #{}+{page}", image.0),
            FrameKind::Shared { buffer, page } => write!(f, "shared   {prot} #{}+{page}", buffer.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmapped_has_no_protection_to_change() {
        assert_eq!(Frame::UNMAPPED.with_prot(Protection::ReadWrite), None);
        assert_eq!(Frame::UNMAPPED.prot(), Protection::None);
        let z = Frame::zero(Protection::Read).with_prot(Protection::ReadWrite).unwrap();
        assert_eq!(z, Frame::zero(Protection::ReadWrite));
    }

    #[test]
    fn advancing_moves_backing_offsets_only() {
        let img = Frame::image(BackingId(3), 10, Protection::Read);
        assert_eq!(img.advanced(5), Frame::image(BackingId(3), 15, Protection::Read));
        assert_eq!(Frame::zero(Protection::None).advanced(7), Frame::zero(Protection::None));
        let buf = Frame::shared(BackingId(1), 0, Protection::ReadWrite);
        assert_eq!(buf.advanced(2).kind(), FrameKind::Shared { buffer: BackingId(1), page: 2 });
        assert_eq!(FrameTag::ALL.map(FrameTag::index), [0, 1, 2, 3]);
    }

    #[test]
    fn per_tag_keeps_one_value_per_tag() {
        let mut per_tag = PerTag::<u64>::default();
        for (i, tag) in FrameTag::ALL.into_iter().enumerate() {
            per_tag[tag] += 10 * (i as u64 + 1);
        }
        for (i, tag) in FrameTag::ALL.into_iter().enumerate() {
            assert_eq!(per_tag[tag], 10 * (i as u64 + 1), "{tag}");
        }
        let pairs: Vec<(FrameTag, u64)> = per_tag.iter().map(|(tag, &v)| (tag, v)).collect();
        assert_eq!(pairs, FrameTag::ALL.map(|tag| (tag, per_tag[tag])));
        assert_eq!(per_tag.values().sum::<u64>(), 100);
        assert_eq!(PerTag::from_fn(|tag| tag), PerTag(FrameTag::ALL));
        assert_eq!((&per_tag).into_iter().count(), 4);
    }
}
