//! Helpers shared by the integration tests that map windows into spaces
//! shared with a `WindowOwner` registration.

use framemap::{LinearSpace, SpaceConfig, WindowOwner};
use std::sync::{Arc, Mutex, Weak};

/// The host page size in bytes.
pub fn page() -> u64 {
    framemap::host_page_size() as u64
}

/// A space of `pages` accessible pages (and 4 guard pages) that can be
/// registered as a window host.
pub fn shared_space(pages: u64) -> Arc<Mutex<LinearSpace>> {
    let p = page();
    let space = Arc::new(Mutex::new(
        LinearSpace::new(SpaceConfig { capacity: pages * p, guard: 4 * p, initial_len: pages * p }).unwrap(),
    ));
    space.lock().unwrap().set_window_owner(host(&space));
    space
}

/// `space` as the window host a buffer grant is given to.
pub fn host(space: &Arc<Mutex<LinearSpace>>) -> Weak<dyn WindowOwner> {
    let weak: Weak<Mutex<LinearSpace>> = Arc::downgrade(space);
    weak
}
