//! Handing images to the creator during one instantiation.
//!
//! `MemoryCreator::new_memory` is not told which module or memory it serves.
//! An instantiation with images therefore installs a [`Pending`] plan in a
//! thread-local for exactly the duration of the (synchronous) instantiate
//! call, or of each `poll` of an asynchronous one ([`WithPlan`]), so a
//! future that moves between threads carries its plan with it. wasmtime
//! allocates a module's defined memories in index order (after the GC heap,
//! when the module needs one); the creator gives the next planned image to a
//! request only if its memory type equals the plan's, and the caller checks
//! afterwards that every planned memory was served ([`Pending::finish`]):
//! an image is applied to the right memory or the instantiation fails, never
//! silently wrong.

use framemap::Image;
use framemap::snapshot::Snapshot;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime::MemoryType;

/// The type facts of a memory that a request must match exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MemoryFacts {
    pub minimum_bytes: u64,
    pub maximum_bytes: Option<u64>,
    pub shared: bool,
    pub memory64: bool,
    pub page_size_log2: u8,
}

impl MemoryFacts {
    /// The facts of a wasmtime memory type (`None` if a size overflows).
    pub fn of(ty: &MemoryType) -> Option<MemoryFacts> {
        let page = 1u64.checked_shl(u32::from(ty.page_size_log2()))?;
        Some(MemoryFacts {
            minimum_bytes: ty.minimum().checked_mul(page)?,
            maximum_bytes: match ty.maximum() {
                Some(max) => Some(max.checked_mul(page)?),
                None => None,
            },
            shared: ty.is_shared(),
            memory64: ty.is_64(),
            page_size_log2: ty.page_size_log2(),
        })
    }
}

/// One defined memory of a prepared module: its type and initial image,
/// or the snapshot it is restored from.
#[derive(Clone, Debug)]
pub(crate) struct MemoryPlan {
    pub facts: MemoryFacts,
    pub image: Option<Image>,
    pub snapshot: Option<SnapshotStart>,
}

/// A memory to be restored from a snapshot.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotStart {
    /// The snapshot (its parents attached).
    pub snapshot: Snapshot,
    /// The memory's name in it.
    pub memory: String,
    /// The images its clean pages may name (the module's own).
    pub images: Vec<Image>,
    /// The buffers its windows may name.
    pub buffers: Arc<crate::SnapshotBuffers>,
    /// How the memory is laid out and its working set brought in.
    pub mode: crate::RestoreMode,
}

/// The images still to hand out in one instantiation.
#[derive(Debug)]
pub(crate) struct Pending {
    creator: usize,
    /// `None` only while installed in the thread-local (during [`Pending::run`]).
    plan: Option<Arc<[MemoryPlan]>>,
    next: usize,
    len: usize,
    /// Every request of this creator must be the next planned memory (a
    /// component's plan: its core instances' memories are the only ones
    /// wasmtime creates); one that is not ends the plan and fails
    /// [`Pending::finish`].
    strict: bool,
    /// A strict plan met a request it did not foresee.
    diverged: bool,
    /// For a strict plan: each memory served, as (slot base, generation),
    /// in order.
    served: Vec<(usize, u64)>,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Puts the previously installed plan back and hands the installed one back
/// to its owner when dropped, so a panic inside the instantiation cannot
/// leave a stale plan that a later instantiation on this thread would follow.
struct Installed<'a> {
    owner: &'a mut Pending,
    previous: Option<Pending>,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if let Some(after) = PENDING.replace(self.previous.take()) {
            self.owner.plan = after.plan;
            self.owner.next = after.next;
            self.owner.diverged = after.diverged;
            self.owner.served = after.served;
        }
    }
}

impl Pending {
    pub fn new(creator: usize, plan: Arc<[MemoryPlan]>) -> Pending {
        let len = plan.len();
        Pending { creator, plan: Some(plan), next: 0, len, strict: false, diverged: false, served: Vec::new() }
    }

    /// A strict plan: every memory request of `creator` while it is
    /// installed must match the next planned memory, in order.
    pub fn strict(creator: usize, plan: Arc<[MemoryPlan]>) -> Pending {
        Pending { strict: true, ..Pending::new(creator, plan) }
    }

    /// Runs `f` with this plan installed for the current thread (moved there
    /// and back: no copy, and restored even if `f` panics).
    pub fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let plan = Pending {
            plan: self.plan.take(),
            served: std::mem::take(&mut self.served),
            creator: self.creator,
            next: self.next,
            len: self.len,
            strict: self.strict,
            diverged: self.diverged,
        };
        let previous = PENDING.replace(Some(plan));
        let _installed = Installed { owner: self, previous };
        f()
    }

    /// The memories a strict plan served, as (slot base, generation), in
    /// plan order.
    pub fn served(&self) -> &[(usize, u64)] {
        &self.served
    }

    /// Whether every planned memory was served; otherwise how many were.
    pub fn finish(&self) -> Result<(), (usize, usize)> {
        if self.next == self.len && !self.diverged { Ok(()) } else { Err((self.next, self.len)) }
    }
}

/// Called by the creator for each memory request: runs `f` with the planned
/// image of the next memory if a plan of `creator` is installed and `ty` is
/// that memory's type (advancing the plan), with `None` otherwise. The image
/// is lent, not copied; `f` must not instantiate (the plan is borrowed).
#[cfg(test)]
pub(crate) fn with_image<R>(creator: usize, ty: &MemoryType, f: impl FnOnce(Option<&Image>) -> R) -> R {
    with_plan(creator, ty, |planned| f(planned.and_then(|p| p.image.as_ref())))
}

/// As [`with_image`], with the whole plan of the memory served (its image,
/// or the snapshot it is restored from).
pub(crate) fn with_plan<R>(creator: usize, ty: &MemoryType, f: impl FnOnce(Option<&MemoryPlan>) -> R) -> R {
    PENDING.with_borrow_mut(|pending| {
        let planned = pending.as_mut().filter(|p| p.creator == creator).and_then(|pending| {
            let plan = pending.plan.as_ref()?;
            let planned = plan.get(pending.next).filter(|p| Some(p.facts) == MemoryFacts::of(ty));
            if planned.is_none() || pending.diverged {
                pending.diverged |= pending.strict;
                return None;
            }
            pending.next += 1;
            planned
        });
        f(planned)
    })
}

/// Called by the creator after it made a memory for a request: a strict
/// plan of `creator` installed on this thread records it.
pub(crate) fn note_served(creator: usize, identity: (usize, u64)) {
    PENDING.with_borrow_mut(|pending| {
        if let Some(pending) = pending.as_mut().filter(|p| p.creator == creator && p.strict) {
            pending.served.push(identity);
        }
    });
}

/// A future that installs its plan around every poll of `inner`.
pub(crate) struct WithPlan<'a, F> {
    inner: Pin<Box<F>>,
    pending: &'a mut Pending,
}

impl<'a, F> WithPlan<'a, F> {
    pub fn new(inner: F, pending: &'a mut Pending) -> Self {
        WithPlan { inner: Box::pin(inner), pending }
    }
}

impl<F: Future> Future for WithPlan<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.pending.run(|| inner.as_mut().poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(ty: &MemoryType) -> Arc<[MemoryPlan]> {
        let image = Image::from_bytes(&[1u8; 16]).expect("image");
        Arc::from(vec![MemoryPlan { facts: MemoryFacts::of(ty).expect("facts"), image: Some(image), snapshot: None }])
    }

    #[test]
    fn a_plan_is_served_once_and_only_while_installed() {
        let ty = MemoryType::new(1, None);
        let mut pending = Pending::new(7, plan(&ty));
        assert!(with_image(7, &ty, |image| image.is_none()), "nothing is installed outside `run`");
        let served = pending.run(|| {
            let other_creator = with_image(8, &ty, |image| image.is_some());
            let other_type = with_image(7, &MemoryType::new(2, None), |image| image.is_some());
            let first = with_image(7, &ty, |image| image.map(Image::len));
            let second = with_image(7, &ty, |image| image.is_some());
            (other_creator, other_type, first, second)
        });
        assert_eq!(served, (false, false, Some(framemap::host_page_size() as u64), false), "one page-rounded image");
        assert_eq!(pending.finish(), Ok(()));
        assert!(with_image(7, &ty, |image| image.is_none()));
    }

    #[test]
    fn a_panicking_instantiation_leaves_no_plan_behind() {
        let ty = MemoryType::new(1, None);
        let mut pending = Pending::new(7, plan(&ty));
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pending.run(|| panic!("instantiation"))));
        assert!(outcome.is_err());
        assert!(with_image(7, &ty, |image| image.is_none()), "a stale plan would hand its image to the next memory");
        // The plan came back to its owner, unserved.
        assert_eq!(pending.finish(), Err((0, 1)));
        assert!(pending.run(|| with_image(7, &ty, |image| image.is_some())));
    }

    #[test]
    fn a_strict_plan_fails_at_the_first_unforeseen_request() {
        let ty = MemoryType::new(1, None);
        let other = MemoryType::new(2, None);
        let two: Arc<[MemoryPlan]> = plan(&ty).iter().chain(plan(&ty).iter()).cloned().collect();
        // Lenient: a request of another type is served plain, the plan goes on.
        let mut lenient = Pending::new(7, two.clone());
        let served = lenient.run(|| [&other, &ty, &ty].map(|t| with_image(7, t, |image| image.is_some())));
        assert_eq!((served, lenient.finish()), ([false, true, true], Ok(())));
        // Strict: the same request ends the plan; nothing after it gets an image.
        let mut strict = Pending::strict(7, two.clone());
        let served = strict.run(|| [&ty, &other, &ty].map(|t| with_image(7, t, |image| image.is_some())));
        assert_eq!((served, strict.finish()), ([true, false, false], Err((1, 2))));
        // Strict: a request past the end of the plan fails it too.
        let mut strict = Pending::strict(7, two);
        let served = strict.run(|| [&ty, &ty, &ty].map(|t| with_image(7, t, |image| image.is_some())));
        assert_eq!((served, strict.finish()), ([true, true, false], Err((2, 2))));
        // Another creator's requests are not this plan's business.
        let mut strict = Pending::strict(7, plan(&ty));
        let served = strict.run(|| [with_image(8, &other, |i| i.is_some()), with_image(7, &ty, |i| i.is_some())]);
        assert_eq!((served, strict.finish()), ([false, true], Ok(())));
    }
}
