//! The production clock and entropy source (the actors take them injected).

use playtree_actors::{Clock, Entropy};
use rand::TryRng;
use rand::rngs::SysRng;

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place the server reads the wall clock; actors receive it injected.
    #[allow(clippy::disallowed_methods)]
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64)
    }
}

/// Seconds since the Unix epoch, for token timestamps.
pub fn now_s() -> u64 {
    SystemClock.now_ms() / 1000
}

/// Server seeds from the operating system's randomness.
#[derive(Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn server_seed(&self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        if let Err(error) = fill_random(&mut seed) {
            // Without OS randomness a seed would be guessable: better to stop serving.
            panic!("the operating system's random source failed: {error}");
        }
        seed
    }
}

pub fn fill_random(bytes: &mut [u8]) -> Result<(), String> {
    SysRng
        .try_fill_bytes(bytes)
        .map_err(|error| error.to_string())
}
