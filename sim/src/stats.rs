//! What the sim measures while it runs: latency histograms (HDR, in microseconds) per
//! operation and for fanout, a per-second series for the chart, counters, and errors
//! by code. Thousands of tasks record at once: the fanout histograms are sharded so that
//! they do not all wait on one lock.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latencies are kept from 1 µs to 10 minutes, to three significant digits.
const HIGHEST_US: u64 = 600_000_000;
const SHARDS: usize = 16;

fn histogram() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's limits (low ≥ 1, high ≥ 2·low, 3 digits).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A histogram stays usable if a recording task panicked.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A histogram spread over shards; `shard` is any number (a player's index).
#[derive(Debug)]
pub struct Sharded {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Sharded {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
        }
    }
}

impl Sharded {
    pub fn record(&self, shard: usize, micros: u64) {
        let _ = lock(&self.shards[shard % SHARDS]).record(micros.clamp(1, HIGHEST_US));
    }

    /// Everything recorded so far, merged; with `reset`, the shards start empty again.
    pub fn merged(&self, reset: bool) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            let mut shard = lock(shard);
            let _ = all.add(&*shard);
            if reset {
                shard.reset();
            }
        }
        all
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// One second of the run, for the chart.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub second: u64,
    pub fanout: Percentiles,
    pub requests: Percentiles,
    pub errors: u64,
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Every delivery of the run, merged in from `fanout_second` at each tick.
    fanout: Mutex<Option<Histogram<u64>>>,
    fanout_second: Sharded,
    requests: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    requests_second: Sharded,
    pub requests_sent: AtomicU64,
    pub events: AtomicU64,
    pub deliveries: AtomicU64,
    pub errors: AtomicU64,
    errors_second: AtomicU64,
    by_code: Mutex<BTreeMap<String, u64>>,
    pub reconnects: AtomicU64,
    series: Mutex<Vec<Second>>,
    /// Requests the server carried out, by kind.
    acknowledged: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// A request of kind `op` answered (or failed) after `micros`.
    pub fn request(&self, shard: usize, op: &'static str, micros: u64) {
        self.requests_sent.fetch_add(1, Ordering::Relaxed);
        self.requests_second.record(shard, micros);
        let _ = lock(&self.requests)
            .entry(op)
            .or_insert_with(histogram)
            .record(micros.clamp(1, HIGHEST_US));
    }

    /// A request of kind `op` was carried out.
    pub fn acknowledged(&self, op: &'static str) {
        *lock(&self.acknowledged).entry(op).or_default() += 1;
    }

    pub fn acknowledged_by_op(&self) -> BTreeMap<String, u64> {
        lock(&self.acknowledged)
            .iter()
            .map(|(op, count)| ((*op).to_owned(), *count))
            .collect()
    }

    /// A chat line reached a room member `micros` after it was sent.
    pub fn delivery(&self, shard: usize, micros: u64) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.fanout_second.record(shard, micros);
    }

    /// Every delivery recorded so far (those of the second under way included).
    pub fn fanout(&self) -> Histogram<u64> {
        let mut all = lock(&self.fanout).clone().unwrap_or_else(histogram);
        let _ = all.add(self.fanout_second.merged(false));
        all
    }

    /// An error, by the code the server gave or the way the request failed.
    pub fn error(&self, code: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.errors_second.fetch_add(1, Ordering::Relaxed);
        *lock(&self.by_code).entry(code).or_default() += 1;
    }

    /// Closes second `second` of the series.
    pub fn tick(&self, second: u64) {
        let this_second = self.fanout_second.merged(true);
        let _ = lock(&self.fanout)
            .get_or_insert_with(histogram)
            .add(&this_second);
        let point = Second {
            second,
            fanout: Percentiles::of(&this_second),
            requests: Percentiles::of(&self.requests_second.merged(true)),
            errors: self.errors_second.swap(0, Ordering::Relaxed),
        };
        lock(&self.series).push(point);
    }

    pub fn series(&self) -> Vec<Second> {
        lock(&self.series).clone()
    }

    pub fn errors_by_code(&self) -> BTreeMap<String, u64> {
        lock(&self.by_code).clone()
    }

    pub fn requests_by_op(&self) -> BTreeMap<String, Percentiles> {
        lock(&self.requests)
            .iter()
            .map(|(op, histogram)| ((*op).to_owned(), Percentiles::of(histogram)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_every_shard_and_a_tick_starts_the_second_afresh() {
        let stats = Stats::default();
        for player in 0..100u64 {
            stats.delivery(player as usize, (player + 1) * 1_000);
        }
        let all = Percentiles::of(&stats.fanout());
        assert_eq!(all.count, 100);
        assert!((all.p50_ms - 50.0).abs() < 0.1, "{all:?}");
        assert!((all.max_ms - 100.0).abs() < 0.1, "{all:?}");
        stats.tick(0);
        stats.tick(1);
        let series = stats.series();
        assert_eq!(series[0].fanout.count, 100);
        assert_eq!(series[1].fanout.count, 0, "the second second saw nothing");
        stats.delivery(3, 5_000);
        assert_eq!(
            Percentiles::of(&stats.fanout()).count,
            101,
            "the run's histogram keeps everything, the second under way included"
        );
    }
}
