//! Time and randomness come in from outside, so that tests and the simulation harness can
//! drive the same code with a manual clock and seeded entropy. Entities read store time
//! (`store::StoreClock`), which is made from a [`Clock`].

use std::fmt::Debug;

/// The machine's clocks.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Wall-clock milliseconds since the Unix epoch (may be stepped either way).
    fn now_ms(&self) -> u64;

    /// Milliseconds on a clock that never goes backwards and is never stepped (its
    /// origin is arbitrary). A clock without one uses its wall clock.
    fn monotonic_ms(&self) -> u64 {
        self.now_ms()
    }
}

/// Unpredictable bytes for server seeds. Production draws from the operating system;
/// tests use a seeded ChaCha generator.
pub trait Entropy: Send + Sync + Debug + 'static {
    fn server_seed(&self) -> [u8; 32];
}

pub const MS_PER_DAY: u64 = 86_400_000;

/// The UTC day number (days since the Unix epoch) of a timestamp.
pub fn utc_day(now_ms: u64) -> u32 {
    u32::try_from(now_ms / MS_PER_DAY).unwrap_or(u32::MAX)
}

/// A clock that stands still at its reading (tests that pass `now` themselves, tools
/// that read a store).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
}
