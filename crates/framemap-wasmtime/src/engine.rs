//! [`configure`] and [`engine`]: from a `wasmtime::Config` to an `Engine` whose every
//! memory is a framemap memory, refusing the settings that would void
//! framemap's guarantees.
//!
//! Invariant kept: an engine this module returns hands every linear memory
//! to the creator (the on-demand allocator: the pooling allocator ignores a
//! memory creator silently), turns guest faults into traps with signal
//! handlers (without them a guest touching a hole it unmapped would fault
//! at a wasm pc that nothing handles), and reserves room for growth the way
//! the creator was told to.
//!
//! wasmtime 48 has no getters for most `Config` settings; the ones checked
//! here are read back from the engine (`pooling_allocator_metrics`) or from
//! the `Config`'s `Debug` output, which lists every tunable set explicitly
//! (wasmtime is pinned to one version, and a test pins this reading).

use crate::creator::FrameMemoryCreator;
use crate::error::{Error, Result};
use std::sync::Arc;
use wasmtime::{Config, Engine};

/// Makes `config` create every memory with `creator`, and sets what that
/// requires:
///
/// - `memory_init_cow(false)`: wasmtime 48's copy-on-write initialisation
///   assumes memories it allocated itself and panics on a custom creator's
///   (wasmtime issue #10740); with it off, data segments are copied into the
///   memory at instantiation. With fuel on, wasmtime charges
///   `memory_init_per_byte` fuel for each byte it copies, so a plain module
///   uses more instantiation fuel on a framemap engine than on wasmtime's
///   copy-on-write memories; a [`PreparedModule`] copies nothing and uses the
///   same fuel as the latter.
///
/// A memory whose minimum exceeds `memory_reservation` gets its minimum plus
/// [`CreatorConfig::growth_reserve`] reserved, as wasmtime's own memories get
/// their minimum plus `memory_reservation_for_growth` (which wasmtime does not
/// pass to a creator: [`engine`] copies it over; with `configure` alone, keep
/// the two equal for identical growth behaviour).
///
/// Prefer [`engine`], which calls this after everything else the caller set
/// and refuses the settings that void framemap's guarantees (the pooling
/// allocator, traps without signal handlers).
/// - `memory_may_move(false)` and `gc_heap_may_move(false)`: framemap memories
///   never move, and saying so lets compiled code keep the base pointer in a
///   register across growth.
pub fn configure(config: &mut wasmtime::Config, creator: Arc<FrameMemoryCreator>) -> &mut wasmtime::Config {
    config.with_host_memory(creator).memory_init_cow(false).memory_may_move(false).gc_heap_may_move(false)
}

/// Applies [`configure`] to `config` (after everything the caller
/// set), checks the result, and builds the engine.
///
/// Refused with [`Error::Misconfigured`]:
/// - the pooling allocation strategy: wasmtime would then allocate memories
///   itself and never call `creator`;
/// - `signals_based_traps(false)`: guest memory control, windows and
///   revocation leave pages inside a memory's size inaccessible, and only
///   wasmtime's signal handlers turn a guest's fault there into a trap.
///
/// `memory_reservation_for_growth`, if set, becomes the creator's growth
/// reserve (see [`crate::CreatorConfig::growth_reserve`]), so framemap
/// memories grow as wasmtime's own would.
pub fn engine(config: &mut Config, creator: Arc<FrameMemoryCreator>) -> Result<Engine> {
    configure(config, creator.clone());
    let settings = format!("{config:?}");
    if setting(&settings, "signals_based_traps") == Some("false") {
        return Err(Error::Misconfigured {
            setting: "signals_based_traps(false)",
            reason: "pages framemap makes inaccessible inside a memory would fault with no trap handler",
        });
    }
    if let Some(bytes) = setting(&settings, "memory_reservation_for_growth").and_then(|v| v.parse().ok()) {
        creator.set_growth_reserve(bytes);
    }
    let engine = Engine::new(config).map_err(|e| Error::Engine(e.to_string()))?;
    if engine.pooling_allocator_metrics().is_some() {
        return Err(Error::Misconfigured {
            setting: "InstanceAllocationStrategy::Pooling",
            reason: "the pooling allocator allocates memories itself and never calls a memory creator",
        });
    }
    Ok(engine)
}

/// The value of `name` in a `Debug` struct listing (`name: value`).
fn setting<'a>(debug: &'a str, name: &str) -> Option<&'a str> {
    let at = debug.find(&format!("{name}: "))? + name.len() + 2;
    let rest = &debug[at..];
    let end = rest.find([',', ' ', '}']).unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

    #[test]
    fn defaults_are_accepted() {
        let creator = FrameMemoryCreator::new();
        engine(&mut Config::new(), creator.clone()).unwrap();
        assert_eq!(creator.growth_reserve(), 2 << 30);
    }

    #[test]
    fn pooling_is_refused() {
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(PoolingAllocationConfig::default()));
        let error = engine(&mut config, FrameMemoryCreator::new()).unwrap_err();
        assert!(matches!(error, Error::Misconfigured { setting: "InstanceAllocationStrategy::Pooling", .. }));
    }

    #[test]
    fn traps_without_signals_are_refused() {
        let mut config = Config::new();
        config.signals_based_traps(false);
        let error = engine(&mut config, FrameMemoryCreator::new()).unwrap_err();
        assert!(matches!(error, Error::Misconfigured { setting: "signals_based_traps(false)", .. }), "{error}");
        // Explicitly on is fine.
        config.signals_based_traps(true);
        engine(&mut config, FrameMemoryCreator::new()).unwrap();
    }

    #[test]
    fn the_growth_reservation_reaches_the_creator() {
        let creator = FrameMemoryCreator::new();
        let mut config = Config::new();
        config.memory_reservation_for_growth(3 << 20);
        engine(&mut config, creator.clone()).unwrap();
        assert_eq!(creator.growth_reserve(), 3 << 20);
    }
}
