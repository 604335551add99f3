//! What an incarnation keeps in memory about its mail: when each letter in its outbox
//! is next delivered (with backoff), and the acknowledgements it has had but not yet
//! journaled. Both are rebuilt safely after a restart: every letter still in the
//! journaled outbox is delivered again (its receiver acknowledges a duplicate without
//! taking it twice).

use crate::config::GameConfig;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Mailroom {
    /// `(due_ms, seq)` of every letter awaiting its next delivery.
    due: BTreeSet<(u64, u64)>,
    /// Per letter: when it is due and how many deliveries it has had.
    letters: BTreeMap<u64, (u64, u32)>,
    /// Acknowledged letters still in the journaled outbox.
    acked: Vec<u64>,
    /// When the acknowledgements are journaled at the latest.
    acks_due_ms: Option<u64>,
}

/// A retry's delay: `first_ms`, then twice as long each time, up to `max_ms`.
pub fn backoff_ms(first_ms: u64, max_ms: u64, attempts: u32) -> u64 {
    first_ms
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(32))
        .min(max_ms)
        .max(first_ms.min(max_ms))
}

impl Mailroom {
    /// A letter was delivered (its first delivery, or one after a restart) at `now_ms`.
    pub fn delivered(&mut self, seq: u64, now_ms: u64, config: &GameConfig) {
        let attempts = self.letters.get(&seq).map_or(0, |(_, attempts)| *attempts) + 1;
        let due_ms = now_ms
            + backoff_ms(
                config.mail.redeliver_ms,
                config.mail.redeliver_max_ms,
                attempts,
            );
        if let Some((old_due, _)) = self.letters.insert(seq, (due_ms, attempts)) {
            self.due.remove(&(old_due, seq));
        }
        self.due.insert((due_ms, seq));
    }

    /// The letters due for delivery again at `now_ms` (each is rescheduled by
    /// [`Mailroom::delivered`] when delivered).
    pub fn due(&self, now_ms: u64) -> Vec<u64> {
        self.due
            .iter()
            .take_while(|(due_ms, _)| *due_ms <= now_ms)
            .map(|(_, seq)| *seq)
            .collect()
    }

    /// The receiver has the letters `seqs` (each in the journaled outbox, not yet
    /// acknowledged): they are no longer delivered, and leave the journaled outbox with
    /// the next commit (by `acks_flush_ms` at the latest).
    pub fn acked(&mut self, seqs: &[u64], now_ms: u64, config: &GameConfig) {
        for seq in seqs {
            if let Some((due_ms, _)) = self.letters.remove(seq) {
                self.due.remove(&(due_ms, *seq));
            }
            if !self.acked.contains(seq) {
                self.acked.push(*seq);
            }
        }
        if !self.acked.is_empty() && self.acks_due_ms.is_none() {
            self.acks_due_ms = Some(now_ms + config.mail.acks_flush_ms);
        }
    }

    /// A letter that left the outbox otherwise (returned undeliverable).
    pub fn forget(&mut self, seq: u64) {
        if let Some((due_ms, _)) = self.letters.remove(&seq) {
            self.due.remove(&(due_ms, seq));
        }
    }

    /// Whether acknowledgements wait to be journaled, and are due at `now_ms`.
    pub fn acks_due(&self, now_ms: u64) -> bool {
        self.acks_due_ms.is_some_and(|due| due <= now_ms)
    }

    pub fn has_acks(&self) -> bool {
        !self.acked.is_empty()
    }

    /// The acknowledged letters, for the commit that journals them.
    pub fn take_acked(&mut self) -> Vec<u64> {
        self.acks_due_ms = None;
        std::mem::take(&mut self.acked)
    }

    /// The next moment something is due.
    pub fn next_due(&self) -> Option<u64> {
        let delivery = self.due.first().map(|(due_ms, _)| *due_ms);
        crate::timers::earliest([delivery, self.acks_due_ms])
    }
}

/// Retries of what the store refused at a deadline: their delay doubles each time.
#[derive(Debug, Default)]
pub struct Backoff {
    /// Refusals in a row.
    refusals: u32,
    /// Deadlines wait until then.
    until_ms: u64,
}

impl Backoff {
    /// The store refused, or the deadline came round again at once: wait longer.
    pub fn refused(&mut self, now_ms: u64, first_ms: u64, max_ms: u64) {
        self.refusals = self.refusals.saturating_add(1);
        self.until_ms = now_ms + backoff_ms(first_ms, max_ms, self.refusals);
    }

    pub fn succeeded(&mut self) {
        self.refusals = 0;
    }

    /// `due_ms`, held back while backing off.
    pub fn hold(&self, due_ms: u64) -> u64 {
        due_ms.max(self.until_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_backs_off_to_its_maximum() {
        assert_eq!(backoff_ms(1_000, 60_000, 1), 1_000);
        assert_eq!(backoff_ms(1_000, 60_000, 2), 2_000);
        assert_eq!(backoff_ms(1_000, 60_000, 6), 32_000);
        assert_eq!(backoff_ms(1_000, 60_000, 7), 60_000);
        assert_eq!(backoff_ms(1_000, 60_000, 90), 60_000);
    }

    #[test]
    fn an_acknowledged_letter_is_not_delivered_again_and_waits_to_be_journaled() {
        let config = GameConfig::default();
        let mut mailroom = Mailroom::default();
        mailroom.delivered(1, 0, &config);
        mailroom.delivered(2, 0, &config);
        assert_eq!(mailroom.due(999), Vec::<u64>::new());
        assert_eq!(mailroom.due(1_000), vec![1, 2]);
        mailroom.acked(&[1], 1_000, &config);
        mailroom.acked(&[1], 1_010, &config);
        assert_eq!(mailroom.due(1_000), vec![2]);
        assert!(!mailroom.acks_due(1_050));
        assert!(mailroom.acks_due(1_100));
        assert_eq!(
            mailroom.take_acked(),
            vec![1],
            "once, however often acknowledged"
        );
        mailroom.delivered(2, 1_000, &config);
        assert_eq!(
            mailroom.next_due(),
            Some(3_000),
            "the second delivery waits twice as long"
        );
    }
}
