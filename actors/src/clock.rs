//! Time and randomness come in from outside, so that tests and the simulation harness can
//! drive the same code with a manual clock and seeded entropy.

use std::fmt::Debug;

/// Wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug + 'static {
    fn now_ms(&self) -> u64;
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
