//! Rate limits, with time passed in so that they are deterministic: a token bucket for
//! request rates, and a sliding count for velocity limits ("at most N per hour").

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    last_ms: u64,
    per_second: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket holding `burst` tokens, refilled at `per_second`.
    pub fn new(per_second: u32, burst: u32, now_ms: u64) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            last_ms: now_ms,
            per_second: f64::from(per_second),
            burst: f64::from(burst),
        }
    }

    /// A full bucket of `count` tokens, refilled at `count` per `period_ms` (for limits
    /// such as "10 per hour").
    pub fn per_period(count: u32, period_ms: u64, now_ms: u64) -> Self {
        TokenBucket {
            tokens: f64::from(count),
            last_ms: now_ms,
            per_second: f64::from(count) * 1000.0 / period_ms.max(1) as f64,
            burst: f64::from(count),
        }
    }

    /// Whether a token is there, without taking it.
    pub fn has_token(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.tokens >= 1.0
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed_s = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed_s * self.per_second).min(self.burst);
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Most events a [`SlidingCount`] remembers, so the largest limit it counts exactly.
pub const SLIDING_EVENTS_MAX: usize = 1024;

/// Events within the last `span_ms`, counted exactly: the times of the latest events are
/// kept (at most `kept` of them, and none older than the span), so a limit of N per span
/// holds over every span-long stretch, not only within fixed windows (which let 2N
/// through across a window's end).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlidingCount {
    times_ms: VecDeque<u64>,
}

impl SlidingCount {
    /// Events in the span that ends at `at_ms` (those after `at_ms - span_ms`).
    pub fn count_at(&self, at_ms: u64, span_ms: u64) -> u32 {
        let recent = self
            .times_ms
            .iter()
            .rev()
            .take_while(|time| time.saturating_add(span_ms) > at_ms)
            .count();
        u32::try_from(recent).unwrap_or(u32::MAX)
    }

    /// Records an event at `at_ms`, forgetting events older than the span and all but the
    /// latest `kept`: a count past `kept` reads as `kept`, enough to compare against a
    /// limit of `kept`. `kept` 0 (no limit) keeps nothing.
    pub fn record(&mut self, at_ms: u64, span_ms: u64, kept: usize) {
        if kept == 0 {
            self.times_ms = VecDeque::new();
            return;
        }
        while self
            .times_ms
            .front()
            .is_some_and(|time| time.saturating_add(span_ms) <= at_ms)
        {
            self.times_ms.pop_front();
        }
        self.times_ms.push_back(at_ms);
        while self.times_ms.len() > kept {
            self.times_ms.pop_front();
        }
    }

    /// No event within the span that ends at `at_ms` (only the latest is looked at).
    pub fn is_idle(&self, at_ms: u64, span_ms: u64) -> bool {
        self.times_ms
            .back()
            .is_none_or(|time| time.saturating_add(span_ms) <= at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliding_count_holds_its_limit_across_what_would_be_a_window_boundary() {
        const SPAN: u64 = 1_000;
        let mut count = SlidingCount::default();
        // Two events late in one "window", two early in the next: fixed windows count
        // them 2 and 2; every stretch of SPAN ms holding all four counts 4.
        for at in [900, 950, 1_000, 1_050] {
            count.record(at, SPAN, 16);
        }
        assert_eq!(count.count_at(1_050, SPAN), 4);
        assert_eq!(
            count.count_at(1_899, SPAN),
            4,
            "900 is within the span until 1,900"
        );
        assert_eq!(count.count_at(1_900, SPAN), 3, "900 has left the span");
        assert_eq!(count.count_at(2_049, SPAN), 1);
        assert!(count.is_idle(2_050, SPAN));
    }

    #[test]
    fn a_sliding_count_keeps_at_most_what_it_is_told() {
        let mut count = SlidingCount::default();
        for at in 0..100 {
            count.record(at, 1_000, 10);
        }
        assert_eq!(count.count_at(100, 1_000), 10, "saturates at what is kept");
        assert_eq!(count.times_ms.len(), 10);
        count.record(5_000, 1_000, 10);
        assert_eq!(
            count.times_ms.len(),
            1,
            "events older than the span are forgotten"
        );
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut bucket = TokenBucket::new(2, 3, 0);
        assert!((0..3).all(|_| bucket.try_take(0)));
        assert!(!bucket.try_take(0));
        assert!(!bucket.try_take(499));
        assert!(
            bucket.try_take(500),
            "half a second refills one token at 2/s"
        );
        assert!(!bucket.try_take(500));
        assert!(
            (0..3).all(|_| bucket.try_take(60_000)),
            "refills up to the burst only"
        );
        assert!(!bucket.try_take(60_000));
    }
}
