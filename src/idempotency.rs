//! Idempotency keys: a request a client sends again with the key it gave the first time
//! (after a 5002 timeout, or on a new connection) is not carried out again; it gets the
//! first one's result, waiting for it if it is still under way. Keys are per player,
//! kept in memory for `limits.idempotency_ttl_ms`, at most `limits.idempotency_keys_max`
//! at once (the oldest go first); a server restart forgets them.

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use playtree_protocol::{ErrorReply, ReplyBody};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// A request's result, once it has one.
pub type Outcome = Option<Result<ReplyBody, ErrorReply>>;

/// What the server knows of a key.
#[derive(Debug)]
pub enum Seen {
    /// New: carry the request out and publish its result here.
    First(watch::Sender<Outcome>),
    /// Sent before: its result (when there is one) comes here.
    Again(watch::Receiver<Outcome>),
}

type Key = (String, u64);

#[derive(Debug)]
pub struct Keys {
    /// Each key's result channel, with the generation that put it there.
    entries: DashMap<Key, (u64, watch::Sender<Outcome>)>,
    /// Keys in the order they came, with when they expire.
    order: Mutex<VecDeque<(u64, u64, Key)>>,
    generation: AtomicU64,
    max: usize,
    ttl_ms: u64,
}

impl Keys {
    pub fn new(max: usize, ttl_ms: u64) -> Keys {
        Keys {
            entries: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            generation: AtomicU64::new(0),
            max,
            ttl_ms,
        }
    }

    /// Looks `key` of `player` up at `now_ms`, taking it if it is new.
    pub fn begin(&self, player: &str, key: u64, now_ms: u64) -> Seen {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let seen = match self.entries.entry((player.to_owned(), key)) {
            Entry::Occupied(entry) => Seen::Again(entry.get().1.subscribe()),
            Entry::Vacant(entry) => {
                let (sender, _) = watch::channel(None);
                entry.insert((generation, sender.clone()));
                Seen::First(sender)
            }
        };
        // The map's guard is gone: evictions below may touch any shard.
        let mut evicted = Vec::new();
        {
            let mut order = self
                .order
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if matches!(seen, Seen::First(_)) {
                order.push_back((
                    now_ms.saturating_add(self.ttl_ms),
                    generation,
                    (player.to_owned(), key),
                ));
            }
            while let Some((expires_ms, _, _)) = order.front() {
                if *expires_ms > now_ms && order.len() <= self.max {
                    break;
                }
                if let Some(oldest) = order.pop_front() {
                    evicted.push(oldest);
                }
            }
        }
        for (_, generation, key) in evicted {
            // Only the entry this record put there (a key may have been taken again).
            self.entries
                .remove_if(&key, |_, (current, _)| *current == generation);
        }
        metrics::gauge!("playtree_idempotency_keys").set(self.entries.len() as f64);
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_seen_again_until_it_expires_or_is_pushed_out() {
        let keys = Keys::new(2, 1_000);
        assert!(matches!(keys.begin("alice", 1, 0), Seen::First(_)));
        assert!(matches!(keys.begin("alice", 1, 10), Seen::Again(_)));
        // Keys are the player's own.
        assert!(matches!(keys.begin("bob", 1, 10), Seen::First(_)));
        // A third key pushes the oldest out.
        assert!(matches!(keys.begin("alice", 2, 20), Seen::First(_)));
        assert!(matches!(keys.begin("alice", 1, 30), Seen::First(_)));
        // Expired keys are forgotten.
        assert!(matches!(keys.begin("carol", 9, 5_000), Seen::First(_)));
        assert!(matches!(keys.begin("alice", 2, 5_000), Seen::First(_)));
    }

    #[test]
    fn a_second_sender_gets_the_first_result() {
        let keys = Keys::new(10, 1_000);
        let Seen::First(first) = keys.begin("alice", 7, 0) else {
            panic!("new key")
        };
        let Seen::Again(mut again) = keys.begin("alice", 7, 1) else {
            panic!("seen key")
        };
        assert!(again.borrow_and_update().is_none(), "still under way");
        first.send_replace(Some(Ok(ReplyBody::Sent)));
        assert_eq!(*again.borrow(), Some(Ok(ReplyBody::Sent)));
    }
}
