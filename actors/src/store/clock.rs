//! Store time: the one clock every stored time comes from. It never goes backwards, not
//! even across restarts, and a step of the machine's wall clock moves it only slowly:
//! what a time decides (a conversion key kept for a week, a reward held for a day, a
//! player's spins per UTC day, the partner log's retention) cannot be cut short or
//! repeated by someone setting the clock.
//!
//! While the process runs, store time advances with the monotonic clock. Where the wall
//! clock is ahead (it was stepped forward, or the store was closed for a while), store
//! time catches up by at most `store.clock_slew_permille` of the time that passes; where
//! it is behind (stepped back), store time just goes on. Across a restart, store time
//! starts at the wall clock, but never below the highest time the store has handed out
//! (written with every commit, see `commit.rs`) and never more than
//! `store.clock_restart_forward_max_ms` beyond it.

use crate::clock::Clock;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct StoreClock {
    source: Arc<dyn Clock>,
    ticking: Mutex<Ticking>,
    slew_permille: u64,
}

#[derive(Debug)]
struct Ticking {
    /// The last time handed out.
    last_ms: u64,
    /// The monotonic reading it was handed out at.
    last_monotonic_ms: u64,
    /// How far store time may still catch up with the wall clock, in thousandths of a
    /// millisecond (it accrues with the time that passes, up to a second's worth).
    catch_up_budget: u64,
}

/// At most this much catching up is saved for later (a second, in thousandths of a
/// millisecond): a wall clock that runs ahead later is not caught up all at once.
const CATCH_UP_BUDGET_MAX: u64 = 1_000 * 1_000;

impl StoreClock {
    /// Store time for a store that last handed out `high_water_ms` (0: a new store).
    pub fn start(
        source: Arc<dyn Clock>,
        high_water_ms: u64,
        restart_forward_max_ms: u64,
        slew_permille: u64,
    ) -> StoreClock {
        let wall = source.now_ms();
        let start_ms = if high_water_ms == 0 {
            wall
        } else {
            wall.clamp(
                high_water_ms,
                high_water_ms.saturating_add(restart_forward_max_ms),
            )
        };
        if high_water_ms > 0 && start_ms != wall {
            tracing::warn!(
                wall_ms = wall,
                high_water_ms,
                start_ms,
                "the wall clock disagrees with the store's time; store time starts where it may and catches up slowly"
            );
            metrics::counter!("playtree_store_clock_corrections_total").increment(1);
        }
        let last_monotonic_ms = source.monotonic_ms();
        StoreClock {
            source,
            ticking: Mutex::new(Ticking {
                last_ms: start_ms,
                last_monotonic_ms,
                catch_up_budget: 0,
            }),
            slew_permille,
        }
    }

    /// Store time now, in milliseconds since the Unix epoch (as far as the wall clock
    /// has been trustworthy).
    pub fn now_ms(&self) -> u64 {
        let monotonic = self.source.monotonic_ms();
        let wall = self.source.now_ms();
        let mut ticking = self
            .ticking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let elapsed = monotonic.saturating_sub(ticking.last_monotonic_ms);
        let mut now = ticking.last_ms.saturating_add(elapsed);
        ticking.catch_up_budget = ticking
            .catch_up_budget
            .saturating_add(elapsed.saturating_mul(self.slew_permille))
            .min(CATCH_UP_BUDGET_MAX);
        if wall > now {
            let take = (wall - now).min(ticking.catch_up_budget / 1_000);
            now += take;
            ticking.catch_up_budget -= take * 1_000;
        }
        // Invariant: store time never goes backwards.
        assert!(now >= ticking.last_ms, "store time went backwards");
        ticking.last_ms = now;
        ticking.last_monotonic_ms = ticking.last_monotonic_ms.max(monotonic);
        now
    }
}

impl Clock for StoreClock {
    fn now_ms(&self) -> u64 {
        StoreClock::now_ms(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A wall clock that can be stepped, and a monotonic clock that only advances.
    #[derive(Debug, Default)]
    struct Steppable {
        wall: AtomicU64,
        monotonic: AtomicU64,
    }

    impl Clock for Steppable {
        fn now_ms(&self) -> u64 {
            self.wall.load(Ordering::SeqCst)
        }
        fn monotonic_ms(&self) -> u64 {
            self.monotonic.load(Ordering::SeqCst)
        }
    }

    impl Steppable {
        fn advance(&self, ms: u64) {
            self.wall.fetch_add(ms, Ordering::SeqCst);
            self.monotonic.fetch_add(ms, Ordering::SeqCst);
        }
    }

    const DAY_MS: u64 = 86_400_000;

    #[test]
    fn a_step_of_the_wall_clock_either_way_does_not_move_store_time() {
        let source = Arc::new(Steppable::default());
        source.wall.store(100 * DAY_MS, Ordering::SeqCst);
        let clock = StoreClock::start(source.clone(), 0, DAY_MS, 10);
        assert_eq!(clock.now_ms(), 100 * DAY_MS);
        // Back a day: store time goes on with the monotonic clock.
        source.wall.fetch_sub(DAY_MS, Ordering::SeqCst);
        source.advance(1_000);
        assert_eq!(clock.now_ms(), 100 * DAY_MS + 1_000);
        // Forward two days: store time catches up at 1 % of the time that passes, and
        // never more than a second's worth of saved-up catching up at once.
        source.wall.fetch_add(2 * DAY_MS, Ordering::SeqCst);
        source.advance(1_000);
        let caught_up = clock.now_ms() - (100 * DAY_MS + 2_000);
        assert!(caught_up <= 20, "caught up {caught_up} ms in one second");
        source.advance(100_000);
        let caught_up = clock.now_ms() - (100 * DAY_MS + 102_000);
        assert!(caught_up <= 1_020, "caught up {caught_up} ms in 101 s");
    }

    #[test]
    fn across_a_restart_store_time_never_goes_back_and_jumps_forward_only_so_far() {
        let source = Arc::new(Steppable::default());
        source.wall.store(50 * DAY_MS, Ordering::SeqCst);
        // The store last handed out a time a day after the wall clock's: it starts there.
        let clock = StoreClock::start(source.clone(), 51 * DAY_MS, DAY_MS, 10);
        assert_eq!(clock.now_ms(), 51 * DAY_MS);
        // The wall clock a week ahead of the store: at most a day forward.
        source.wall.store(58 * DAY_MS, Ordering::SeqCst);
        let clock = StoreClock::start(source.clone(), 51 * DAY_MS, DAY_MS, 10);
        assert_eq!(clock.now_ms(), 52 * DAY_MS);
        // A new store starts at the wall clock.
        let clock = StoreClock::start(source, 0, DAY_MS, 10);
        assert_eq!(clock.now_ms(), 58 * DAY_MS);
    }
}
