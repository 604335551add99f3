//! A token bucket, with time passed in so that it is deterministic.

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

#[cfg(test)]
mod tests {
    use super::*;

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
