//! Idempotency keys, kept durably in the player's session: a keyed request that changes
//! the player's state (a spin, a join, a leave, a seed rotation, a referral code or
//! claim) is recorded with its key in the commit of its first durable step, and its
//! first answer is recorded with the key when it comes. The same key sent again, on any
//! connection and after any crash, gets that answer (or waits for it) and is not carried
//! out twice. A key is forgotten `limits.idempotency_ttl_ms` after its answer, never
//! while its request is under way; past `limits.idempotency_keys_per_player` keys kept,
//! a new one is refused rather than an old one forgotten early.

use crate::mail::StoredAnswer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long answered keys are kept, and how many keys at most: the event that takes a
/// key carries it, so that replay forgets the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keep {
    pub span_ms: u64,
    pub max: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    by_key: BTreeMap<u64, KeyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyEntry {
    /// Names the request the key was taken for.
    digest: u64,
    /// The first answer, and when it came.
    answer: Option<(u64, StoredAnswer)>,
}

/// What a keyed request finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A key not held: carry the request out.
    New,
    /// Its first answer.
    Answered(StoredAnswer),
    /// Taken and under way: its answer is still to come.
    Pending,
    /// The key was taken for another request.
    Reused,
    /// No key can be taken now (too many held).
    Full,
}

impl Keys {
    fn expired(entry: &KeyEntry, now_ms: u64, keep: Keep) -> bool {
        entry
            .answer
            .as_ref()
            .is_some_and(|(answered_ms, _)| answered_ms.saturating_add(keep.span_ms) <= now_ms)
    }

    pub fn seen(&self, key: u64, digest: u64, now_ms: u64, keep: Keep) -> Seen {
        match self.by_key.get(&key) {
            Some(entry) if !Self::expired(entry, now_ms, keep) => {
                if entry.digest != digest {
                    Seen::Reused
                } else {
                    match &entry.answer {
                        Some((_, answer)) => Seen::Answered(answer.clone()),
                        None => Seen::Pending,
                    }
                }
            }
            _ => {
                let held = self
                    .by_key
                    .values()
                    .filter(|entry| !Self::expired(entry, now_ms, keep))
                    .count();
                if held >= keep.max.max(1) {
                    Seen::Full
                } else {
                    Seen::New
                }
            }
        }
    }

    /// Whether `key` waits for its answer.
    pub fn is_pending(&self, key: u64) -> bool {
        self.by_key
            .get(&key)
            .is_some_and(|entry| entry.answer.is_none())
    }

    pub(super) fn take(&mut self, key: u64, digest: u64, at_ms: u64, keep: Keep) {
        self.by_key
            .retain(|_, entry| !Self::expired(entry, at_ms, keep));
        self.by_key.insert(
            key,
            KeyEntry {
                digest,
                answer: None,
            },
        );
    }

    /// The key's first answer (a later one changes nothing).
    pub(super) fn answer(&mut self, key: u64, answer: StoredAnswer, at_ms: u64) {
        if let Some(entry) = self.by_key.get_mut(&key)
            && entry.answer.is_none()
        {
            entry.answer = Some((at_ms, answer));
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Keep = Keep {
        span_ms: 1_000,
        max: 2,
    };

    #[test]
    fn a_key_keeps_its_first_answer_until_its_time_and_never_goes_while_pending() {
        let mut keys = Keys::default();
        assert_eq!(keys.seen(7, 70, 0, KEEP), Seen::New);
        keys.take(7, 70, 0, KEEP);
        assert_eq!(
            keys.seen(7, 70, 5_000, KEEP),
            Seen::Pending,
            "pending keys stay"
        );
        assert_eq!(keys.seen(7, 71, 5_000, KEEP), Seen::Reused);
        keys.answer(7, StoredAnswer(vec![1]), 5_000);
        keys.answer(7, StoredAnswer(vec![2]), 5_001);
        assert_eq!(
            keys.seen(7, 70, 5_999, KEEP),
            Seen::Answered(StoredAnswer(vec![1]))
        );
        assert_eq!(
            keys.seen(7, 70, 6_000, KEEP),
            Seen::New,
            "forgotten after its time"
        );
    }

    #[test]
    fn a_full_set_refuses_new_keys_rather_than_forget_one_early() {
        let mut keys = Keys::default();
        keys.take(1, 10, 0, KEEP);
        keys.take(2, 20, 0, KEEP);
        assert_eq!(keys.seen(3, 30, 0, KEEP), Seen::Full);
        keys.answer(1, StoredAnswer(vec![]), 0);
        assert_eq!(keys.seen(3, 30, 999, KEEP), Seen::Full);
        assert_eq!(keys.seen(3, 30, 1_000, KEEP), Seen::New);
        keys.take(3, 30, 1_000, KEEP);
        assert_eq!(keys.len(), 2, "the expired key went");
    }
}
