//! Idempotency keys, while the process runs: a request a client sends again with the key
//! it gave the first time (after a timeout, or on a new connection) is not carried out
//! again; it gets the first one's result, or waits for it. A key is kept until
//! `limits.idempotency_ttl_ms` after its result came, never dropped earlier: when the
//! per-player or total cap is reached, new keys are refused rather than old ones
//! dropped. Times come from tokio's monotonic clock.
//!
//! This layer forgets everything at a restart, and a key whose request got no answer in
//! time: the player's session keeps the keys of the requests that change the player's
//! state durably (`playtree_actors::session::Keys`), so a request sent again after a
//! crash or a timeout still takes effect once and gets its first answer.

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use playtree_protocol::{ErrorCode, ErrorReply, ReplyBody};
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A request's result, once it has one.
pub type Outcome = Option<Result<ReplyBody, ErrorReply>>;

/// What the server knows of a key.
#[derive(Debug)]
pub enum Seen {
    /// New: carry the request out and [`Keys::finish`] (or [`Keys::forget`]) it.
    First(Taken),
    /// Sent before with the same request: its result (when there is one) comes here.
    Again(watch::Receiver<Outcome>),
    /// Not to be carried out: the key names another request, or no key can be taken.
    Refused(ErrorReply),
}

/// A key taken for a request that is now to be carried out.
#[derive(Debug)]
pub struct Taken {
    key: Key,
    /// The digest of the request it was taken for.
    digest: u64,
    generation: u64,
    result: watch::Sender<Outcome>,
}

impl Taken {
    /// The client's key.
    pub fn key(&self) -> u64 {
        self.key.1
    }

    /// The digest of the request the key was taken for.
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

type Key = (String, u64);

#[derive(Debug)]
struct Held {
    generation: u64,
    /// A digest of the request, so that a key is never answered for another request.
    request: u64,
    result: watch::Sender<Outcome>,
}

#[derive(Debug)]
pub struct Keys {
    entries: DashMap<Key, Held>,
    /// Keys held per player.
    per_player: DashMap<String, usize>,
    held: AtomicUsize,
    /// Keys whose result came, in that order, with when they may be forgotten.
    finished: Mutex<VecDeque<(Instant, u64, Key)>>,
    generation: AtomicU64,
    max: usize,
    per_player_max: usize,
    ttl: Duration,
}

/// A digest of a request's wire form.
pub fn digest(request: &playtree_protocol::Request) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    playtree_protocol::codec::encode_client(&playtree_protocol::ClientFrame::Request {
        req_id: 0,
        request: request.clone(),
    })
    .hash(&mut hasher);
    hasher.finish()
}

impl Keys {
    pub fn new(max: usize, per_player_max: usize, ttl: Duration) -> Keys {
        Keys {
            entries: DashMap::new(),
            per_player: DashMap::new(),
            held: AtomicUsize::new(0),
            finished: Mutex::new(VecDeque::new()),
            generation: AtomicU64::new(0),
            max,
            per_player_max,
            ttl,
        }
    }

    fn finished(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, u64, Key)>> {
        self.finished
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks `key` of `player` up for a request with digest `request`, taking it if it
    /// is new and there is room.
    pub fn begin(&self, player: &str, key: u64, request: u64) -> Seen {
        self.expire(Instant::now());
        let full = || {
            metrics::counter!("playtree_rate_limited_total", "limit" => "idempotency_keys")
                .increment(1);
            Seen::Refused(ErrorReply::new(
                ErrorCode::RateLimited,
                "too many idempotency keys are held; send fewer keyed requests for a while",
            ))
        };
        if self.held.load(Ordering::Acquire) >= self.max
            || self
                .per_player
                .get(player)
                .is_some_and(|held| *held >= self.per_player_max)
        {
            // A key already held is still answered.
            return match self.entries.get(&(player.to_owned(), key)) {
                Some(held) if held.request == request => Seen::Again(held.result.subscribe()),
                Some(_) => Seen::Refused(reused()),
                None => full(),
            };
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let seen = match self.entries.entry((player.to_owned(), key)) {
            Entry::Occupied(held) if held.get().request == request => {
                Seen::Again(held.get().result.subscribe())
            }
            Entry::Occupied(_) => Seen::Refused(reused()),
            Entry::Vacant(vacant) => {
                let (result, _) = watch::channel(None);
                vacant.insert(Held {
                    generation,
                    request,
                    result: result.clone(),
                });
                Seen::First(Taken {
                    key: (player.to_owned(), key),
                    digest: request,
                    generation,
                    result,
                })
            }
        };
        if matches!(seen, Seen::First(_)) {
            // The map's guard is gone here.
            *self.per_player.entry(player.to_owned()).or_default() += 1;
            self.held.fetch_add(1, Ordering::AcqRel);
            metrics::gauge!("playtree_idempotency_keys").increment(1.0);
        }
        seen
    }

    /// The request's result: kept for the key until the TTL has passed from now.
    pub fn finish(&self, taken: Taken, outcome: Result<ReplyBody, ErrorReply>) {
        taken.result.send_replace(Some(outcome));
        let forget_at = Instant::now() + self.ttl;
        self.finished()
            .push_back((forget_at, taken.generation, taken.key));
    }

    /// The request was refused before it was carried out, or got no answer in time
    /// (the player's session keeps its key, durably, if it changes the player's state):
    /// this layer keeps nothing, and the request may be sent again with the key.
    pub fn forget(&self, taken: Taken) {
        let Taken {
            key,
            generation,
            result,
            ..
        } = taken;
        // Whoever waits on it learns it must send again.
        result.send_replace(Some(Err(ErrorReply::new(
            ErrorCode::RequestInProgress,
            "the request with this key has no answer here yet; send it again with the same key",
        ))));
        self.remove(&key, generation);
    }

    fn remove(&self, key: &Key, generation: u64) {
        if self
            .entries
            .remove_if(key, |_, held| held.generation == generation)
            .is_some()
        {
            self.held.fetch_sub(1, Ordering::AcqRel);
            metrics::gauge!("playtree_idempotency_keys").decrement(1.0);
            let emptied = self
                .per_player
                .get_mut(&key.0)
                .map(|mut held| {
                    *held = held.saturating_sub(1);
                    *held == 0
                })
                .unwrap_or(false);
            if emptied {
                self.per_player.remove_if(&key.0, |_, held| *held == 0);
            }
        }
    }

    /// Forgets the keys whose results are older than the TTL, a bounded number per call.
    fn expire(&self, now: Instant) {
        let due: Vec<(u64, Key)> = {
            let mut finished = self.finished();
            let mut due = Vec::new();
            while due.len() < 64 {
                match finished.front() {
                    Some((forget_at, _, _)) if *forget_at <= now => {
                        if let Some((_, generation, key)) = finished.pop_front() {
                            due.push((generation, key));
                        }
                    }
                    _ => break,
                }
            }
            due
        };
        for (generation, key) in due {
            self.remove(&key, generation);
        }
    }
}

fn reused() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::KeyReused,
        "this idempotency key was given to a different request; use a fresh key per request",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);

    fn first(seen: Seen) -> Taken {
        match seen {
            Seen::First(taken) => taken,
            other => panic!("expected a new key, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_answered_with_its_first_result_until_the_ttl_after_it() {
        let keys = Keys::new(100, 10, TTL);
        let taken = first(keys.begin("alice", 1, 7));
        // Still under way: a second send waits on the same result.
        let Seen::Again(mut again) = keys.begin("alice", 1, 7) else {
            panic!("seen key")
        };
        assert!(again.borrow_and_update().is_none());
        keys.finish(taken, Ok(ReplyBody::Sent));
        assert_eq!(*again.borrow(), Some(Ok(ReplyBody::Sent)));
        // Another player's key 1 is theirs; another request under alice's key 1 is not.
        first(keys.begin("bob", 1, 7));
        assert!(
            matches!(keys.begin("alice", 1, 8), Seen::Refused(e) if e.code == ErrorCode::KeyReused)
        );
        // Kept until the TTL after the result, then forgotten.
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        assert!(matches!(keys.begin("alice", 1, 7), Seen::Again(_)));
        tokio::time::advance(Duration::from_secs(2)).await;
        first(keys.begin("alice", 1, 7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_refuses_new_keys_and_never_drops_a_held_one() {
        let keys = Keys::new(100, 2, TTL);
        let running = first(keys.begin("alice", 1, 7));
        let done = first(keys.begin("alice", 2, 7));
        keys.finish(done, Ok(ReplyBody::Sent));
        // Alice holds her two: a third is refused, the two are still answered.
        assert!(
            matches!(keys.begin("alice", 3, 7), Seen::Refused(e) if e.code == ErrorCode::RateLimited)
        );
        assert!(matches!(keys.begin("alice", 1, 7), Seen::Again(_)));
        assert!(matches!(keys.begin("alice", 2, 7), Seen::Again(_)));
        // A request refused before it ran keeps nothing: its key is free again.
        keys.forget(running);
        first(keys.begin("alice", 1, 7));
    }
}
