//! A pure model of one `LinearSpace`, written from the documentation in
//! `crates/framemap/src/space/` and `buffer.rs`, not from the code: every
//! page's frame (tag, backing page, protection), every byte (a `Shared`
//! page's bytes live in its buffer's model, so every window of one buffer
//! shows the same bytes), and the accessible length. It also says which
//! calls the space must refuse: [`Model::page_range`], [`Model::access`],
//! [`Model::layout_ok`].
//!
//! The invariant it stands for, checked by `space_replay`: after every
//! operation the real space's frame table equals [`Model::frames`] page by
//! page, its length equals [`Model::len`], every byte the model says is
//! readable reads back as [`Model::read`] says, and every live buffer holds
//! its [`ModelBuffer::bytes`]. A refused call leaves the model as it was, so
//! those checks prove the call changed nothing.
#![warn(missing_docs)]

use framemap::{BufferGrant, Frame, FrameTag, Image, PageRange, Protection, SharedBuffer};

/// A page as the model sees it; `img` and `buf` index
/// [`Backings::images`] and [`Backings::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MFrame {
    /// No backing, protection none.
    Unmapped,
    /// Private anonymous memory.
    Zero(Protection),
    /// Page `page` of image `img`, copy-on-write.
    Image {
        /// Index of the image.
        img: usize,
        /// Page of the image.
        page: u64,
        /// Protection.
        prot: Protection,
    },
    /// Page `page` of buffer `buf`, shared with the host.
    Shared {
        /// Index of the buffer.
        buf: usize,
        /// Page of the buffer.
        page: u64,
        /// Protection.
        prot: Protection,
    },
}

impl MFrame {
    /// The page's protection (`None` when unmapped).
    pub fn prot(self) -> Protection {
        match self {
            MFrame::Unmapped => Protection::None,
            MFrame::Zero(p) | MFrame::Image { prot: p, .. } | MFrame::Shared { prot: p, .. } => p,
        }
    }

    /// The same frame with another protection (`Unmapped` stays so).
    pub fn with_prot(self, prot: Protection) -> MFrame {
        match self {
            MFrame::Unmapped => MFrame::Unmapped,
            MFrame::Zero(_) => MFrame::Zero(prot),
            MFrame::Image { img, page, .. } => MFrame::Image { img, page, prot },
            MFrame::Shared { buf, page, .. } => MFrame::Shared { buf, page, prot },
        }
    }

    /// The frame's tag.
    pub fn tag(self) -> FrameTag {
        match self {
            MFrame::Unmapped => FrameTag::Unmapped,
            MFrame::Zero(_) => FrameTag::Zero,
            MFrame::Image { .. } => FrameTag::Image,
            MFrame::Shared { .. } => FrameTag::Shared,
        }
    }

    /// The `Frame` the space's table must hold for this page.
    pub fn frame(self, b: &Backings) -> Frame {
        match self {
            MFrame::Unmapped => Frame::UNMAPPED,
            MFrame::Zero(p) => Frame::zero(p),
            MFrame::Image { img, page, prot } => Frame::image(b.image(img).image.id(), page, prot),
            MFrame::Shared { buf, page, prot } => Frame::shared(b.buffer(buf).buffer.id(), page, prot),
        }
    }
}

/// A real image and the bytes the model says it holds.
pub struct ModelImage {
    /// The image.
    pub image: Image,
    /// The image's bytes, its length rounded up to whole pages.
    pub bytes: Vec<u8>,
}

/// A real buffer, its grant to the space, and the bytes the model says it
/// holds.
pub struct ModelBuffer {
    /// The buffer.
    pub buffer: SharedBuffer,
    /// Its grant to the space under test.
    pub grant: BufferGrant,
    /// The buffer's bytes (whole pages).
    pub bytes: Vec<u8>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// Images and buffers made so far (`None` where the spec was refused, as the
/// model predicted, or too big to build).
#[derive(Default)]
pub struct Backings {
    /// The images, in the order made.
    pub images: Vec<Option<ModelImage>>,
    /// The buffers, in the order made.
    pub buffers: Vec<Option<ModelBuffer>>,
}

impl Backings {
    /// Image `i` (made, or this panics).
    pub fn image(&self, i: usize) -> &ModelImage {
        self.images[i].as_ref().expect("named image exists")
    }

    /// Buffer `i` (made, or this panics).
    pub fn buffer(&self, i: usize) -> &ModelBuffer {
        self.buffers[i].as_ref().expect("named buffer exists")
    }

    /// Buffer `i`, mutably (made, or this panics).
    pub fn buffer_mut(&mut self, i: usize) -> &mut ModelBuffer {
        self.buffers[i].as_mut().expect("named buffer exists")
    }

    /// The `i`-th made image, counting around; `None` if none is made.
    pub fn pick_image(&self, i: u8) -> Option<usize> {
        pick(&self.images, i)
    }

    /// The `i`-th made buffer, counting around; `None` if none is made.
    pub fn pick_buffer(&self, i: u8) -> Option<usize> {
        pick(&self.buffers, i)
    }
}

fn pick<T>(v: &[Option<T>], i: u8) -> Option<usize> {
    let live: Vec<usize> = (0..v.len()).filter(|&k| v[k].is_some()).collect();
    (!live.is_empty()).then(|| live[usize::from(i) % live.len()])
}

/// The model of one space.
pub struct Model {
    /// Host page size in bytes.
    pub page: u64,
    /// Capacity plus guard, in pages (the table's size).
    pub total_pages: u64,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Accessible length in bytes.
    pub len: u64,
    /// Every page's frame.
    pub frames: Vec<MFrame>,
    /// Contents of every page not `Shared` (meaningless for unmapped pages).
    pub bytes: Vec<u8>,
}

impl Model {
    /// A new space as `LinearSpace::new` documents it: `len` bytes of
    /// read-write zero pages (whole pages), the rest unmapped.
    pub fn new(page: u64, total_pages: u64, capacity: u64, len: u64) -> Model {
        let accessible = len.div_ceil(page);
        Model {
            page,
            total_pages,
            capacity,
            len,
            frames: (0..total_pages)
                .map(|p| if p < accessible { MFrame::Zero(Protection::ReadWrite) } else { MFrame::Unmapped })
                .collect(),
            bytes: vec![0; (total_pages * page) as usize],
        }
    }

    /// Pages holding accessible bytes (the last one may be partly past
    /// [`Model::len`]).
    pub fn accessible_pages(&self) -> u64 {
        self.len.div_ceil(self.page)
    }

    fn page_bytes(&mut self, p: u64) -> &mut [u8] {
        let ps = self.page as usize;
        &mut self.bytes[p as usize * ps..(p as usize + 1) * ps]
    }

    /// Page `p`'s own bytes become `contents` (a page), or zeros.
    pub fn fill_page(&mut self, p: u64, contents: Option<&[u8]>) {
        let page = self.page_bytes(p);
        match contents {
            Some(c) => page.copy_from_slice(c),
            None => page.fill(0),
        }
    }

    /// Where the byte at `at` lives, and how many bytes from there stay in
    /// the same page: in the space's own bytes, or (for a `Shared` page) in
    /// its buffer's page.
    fn locate(&self, at: u64) -> (Option<usize>, usize, usize) {
        let (p, o) = (at / self.page, at % self.page);
        let left = (self.page - o) as usize;
        match self.frames[p as usize] {
            MFrame::Shared { buf, page, .. } => (Some(buf), (page * self.page + o) as usize, left),
            _ => (None, at as usize, left),
        }
    }

    /// The bytes `from..to` as the memory shows them: a `Shared` page shows
    /// its buffer's page.
    pub fn read(&self, b: &Backings, from: u64, to: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut at = from;
        while at < to {
            let (buf, i, left) = self.locate(at);
            let n = left.min((to - at) as usize);
            let src = match buf {
                Some(buf) => &b.buffer(buf).bytes,
                None => &self.bytes,
            };
            out.extend_from_slice(&src[i..i + n]);
            at += n as u64;
        }
        out
    }

    /// A write of `data` at `offset` (allowed: see [`Model::access`]); a
    /// `Shared` page's bytes land in its buffer.
    pub fn write(&mut self, b: &mut Backings, offset: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let (buf, i, left) = self.locate(offset + done as u64);
            let n = left.min(data.len() - done);
            let dst = match buf {
                Some(buf) => &mut b.buffer_mut(buf).bytes,
                None => &mut self.bytes,
            };
            dst[i..i + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    /// `LinearSpace::page_range`: a page-aligned range inside the accessible
    /// pages, or `None` if the space must refuse it.
    pub fn page_range(&self, offset: u64, len: u64) -> Option<PageRange> {
        let end = offset.checked_add(len)?;
        if !offset.is_multiple_of(self.page) || !len.is_multiple_of(self.page) {
            return None;
        }
        if end > self.accessible_pages() * self.page {
            return None;
        }
        Some(PageRange::new(offset / self.page, end / self.page))
    }

    /// Whether every byte of `offset..offset + len` may be accessed: inside
    /// the accessible length, on pages with the right protection ("refused
    /// if any of them is not readable / any target byte is not writable").
    pub fn access(&self, offset: u64, len: u64, allowed: fn(Protection) -> bool) -> bool {
        let Some(end) = offset.checked_add(len) else { return false };
        if end > self.len {
            return false;
        }
        if len == 0 {
            return true;
        }
        (offset / self.page..=(end - 1) / self.page).all(|p| allowed(self.frames[p as usize].prot()))
    }

    /// Page `p`'s own bytes become page `page` of image `img`.
    pub fn image_page(&mut self, p: u64, img: usize, page: u64, b: &Backings) {
        let ps = self.page as usize;
        let src = &b.image(img).bytes[page as usize * ps..(page as usize + 1) * ps];
        self.page_bytes(p).copy_from_slice(src);
    }

    /// `restore_dirty`: every accessible page back to its frame's initial
    /// contents; `Shared` pages (the host's) are left alone.
    pub fn restore_dirty(&mut self, b: &Backings) {
        for p in 0..self.accessible_pages() {
            match self.frames[p as usize] {
                MFrame::Unmapped | MFrame::Shared { .. } => {}
                MFrame::Zero(_) => self.fill_page(p, None),
                MFrame::Image { img, page, .. } => self.image_page(p, img, page, b),
            }
        }
    }

    /// `restore_layout`'s checks: whether it must refuse.
    pub fn layout_ok(&self, len: u64, image: Option<&ModelImage>) -> bool {
        len <= self.capacity && image.map_or(0, |i| i.bytes.len() as u64) <= len.next_multiple_of(self.page)
    }

    /// `restore_layout` once its arguments are known good: frames that
    /// already have their target keep their contents, others are fresh.
    pub fn restore_layout(&mut self, len: u64, image: Option<usize>, b: &Backings) {
        let old_end = self.accessible_pages();
        let new_end = len.div_ceil(self.page);
        for p in new_end..old_end {
            self.frames[p as usize] = MFrame::Unmapped;
        }
        let mut image_pages = 0;
        if let Some(img) = image {
            image_pages = b.image(img).bytes.len() as u64 / self.page;
            for p in 0..image_pages {
                let target = MFrame::Image { img, page: p, prot: Protection::ReadWrite };
                if self.frames[p as usize] != target {
                    self.frames[p as usize] = target;
                    self.image_page(p, img, p, b);
                }
            }
        }
        for p in image_pages..new_end {
            match self.frames[p as usize] {
                MFrame::Zero(_) => {}
                MFrame::Unmapped | MFrame::Image { .. } | MFrame::Shared { .. } => self.fill_page(p, None),
            }
            self.frames[p as usize] = MFrame::Zero(Protection::ReadWrite);
        }
        self.len = len;
    }

    /// Every window of buffer `buf` becomes `Unmapped`.
    pub fn unmap_buffer(&mut self, buf: usize) {
        for f in &mut self.frames {
            if matches!(*f, MFrame::Shared { buf: b, .. } if b == buf) {
                *f = MFrame::Unmapped;
            }
        }
    }
}
