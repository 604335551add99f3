//! One timer for every entity of the hub. Each entity states its next deadline (quinn's
//! `poll_timeout`: the earliest moment it has something to do on its own, from its state)
//! and the timer casts it a message then; an entity with nothing due costs one map entry,
//! not a task and not a wake-up per interval.
//!
//! Deadlines are read on the injected clock. The timer sleeps until the earliest one, but
//! never longer than `poll_ms`, so a clock that jumps (a manual clock in tests, a
//! corrected system clock) is noticed within that bound.

use crate::clock::Clock;
use ractor::ActorId;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// What to do when a deadline comes: in practice, cast a message to the entity.
pub type Wake = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    /// `(due_ms, token)`, earliest first.
    by_due: BTreeSet<(u64, u64)>,
    /// token → its owner and what to do.
    entries: HashMap<u64, (ActorId, Wake)>,
    /// owner → its one scheduled `(due_ms, token)`.
    by_owner: HashMap<ActorId, (u64, u64)>,
    next_token: u64,
}

impl Queue {
    fn remove_owner(&mut self, owner: ActorId) {
        if let Some((due, token)) = self.by_owner.remove(&owner) {
            self.by_due.remove(&(due, token));
            self.entries.remove(&token);
        }
    }

    /// Takes every entry due at `now_ms`.
    fn take_due(&mut self, now_ms: u64) -> Vec<Wake> {
        let mut due = Vec::new();
        while let Some(&(at, token)) = self.by_due.first() {
            if at > now_ms {
                break;
            }
            self.by_due.remove(&(at, token));
            if let Some((owner, wake)) = self.entries.remove(&token) {
                self.by_owner.remove(&owner);
                due.push(wake);
            }
        }
        due
    }
}

/// Cheap to clone; one per hub.
#[derive(Clone)]
pub struct Timers {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Mutex<Queue>,
    changed: Notify,
    clock: Arc<dyn Clock>,
    poll: Duration,
}

impl fmt::Debug for Timers {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queue = lock(&self.inner.queue);
        formatter
            .debug_struct("Timers")
            .field("scheduled", &queue.by_owner.len())
            .finish()
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // Every mutation is a few map operations that cannot panic halfway.
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Timers {
    /// Starts the timer task on the current tokio runtime.
    pub fn start(clock: Arc<dyn Clock>, poll_ms: u64) -> Timers {
        let timers = Timers {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue::default()),
                changed: Notify::new(),
                clock,
                poll: Duration::from_millis(poll_ms.max(1)),
            }),
        };
        let inner = timers.inner.clone();
        tokio::spawn(async move {
            // Ends once every `Timers` handle is gone (the task holds the last one).
            while Arc::strong_count(&inner) > 1 {
                let now_ms = inner.clock.now_ms();
                let (due, next) = {
                    let mut queue = lock(&inner.queue);
                    let due = queue.take_due(now_ms);
                    (due, queue.by_due.first().map(|(at, _)| *at))
                };
                for wake in due {
                    wake();
                }
                let sleep = next.map_or(inner.poll, |at| {
                    Duration::from_millis(at.saturating_sub(now_ms)).min(inner.poll)
                });
                let changed = inner.changed.notified();
                tokio::select! {
                    _ = tokio::time::sleep(sleep) => {}
                    _ = changed => {}
                }
            }
        });
        timers
    }

    /// Sets `owner`'s one deadline (replacing the one it had), or clears it with `None`.
    pub fn schedule(&self, owner: ActorId, due_ms: Option<u64>, wake: impl FnOnce() -> Wake) {
        let mut queue = lock(&self.inner.queue);
        let current = queue.by_owner.get(&owner).map(|(at, _)| *at);
        if current == due_ms {
            return;
        }
        queue.remove_owner(owner);
        let Some(at) = due_ms else { return };
        let earliest = queue.by_due.first().is_none_or(|(first, _)| at < *first);
        let token = queue.next_token;
        queue.next_token += 1;
        queue.by_due.insert((at, token));
        queue.entries.insert(token, (owner, wake()));
        queue.by_owner.insert(owner, (at, token));
        drop(queue);
        if earliest {
            self.inner.changed.notify_one();
        }
    }

    /// Forgets `owner`'s deadline (it stopped).
    pub fn cancel(&self, owner: ActorId) {
        lock(&self.inner.queue).remove_owner(owner);
    }

    /// `owner`'s deadline, if it has one.
    pub fn deadline_of(&self, owner: ActorId) -> Option<u64> {
        lock(&self.inner.queue)
            .by_owner
            .get(&owner)
            .map(|(due, _)| *due)
    }

    /// How many entities have a deadline.
    pub fn scheduled(&self) -> usize {
        lock(&self.inner.queue).by_owner.len()
    }
}

/// The earliest of some optional deadlines.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    deadlines.into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug)]
    struct Manual(AtomicU64);

    impl Clock for Manual {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn deadlines_fire_in_order_once_and_can_be_moved_or_cleared() {
        let clock = Arc::new(Manual(AtomicU64::new(1_000)));
        let timers = Timers::start(clock.clone(), 5);
        let fired = Arc::new(Mutex::new(Vec::new()));
        let wake = |name: &'static str| {
            let fired = fired.clone();
            move || -> Wake { Box::new(move || fired.lock().expect("log").push(name)) }
        };
        timers.schedule(ActorId::Local(1), Some(1_300), wake("a"));
        timers.schedule(ActorId::Local(2), Some(1_100), wake("b"));
        timers.schedule(ActorId::Local(3), Some(1_200), wake("c"));
        timers.schedule(ActorId::Local(3), Some(1_250), wake("c moved"));
        timers.schedule(ActorId::Local(4), Some(1_050), wake("d"));
        timers.schedule(ActorId::Local(4), None, wake("d"));
        assert_eq!(timers.scheduled(), 3);
        clock.0.store(1_260, Ordering::SeqCst);
        let wait = Duration::from_secs(10);
        tokio::time::timeout(wait, async {
            while fired.lock().expect("log").len() < 2 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("due deadlines fire");
        assert_eq!(*fired.lock().expect("log"), vec!["b", "c moved"]);
        assert_eq!(timers.scheduled(), 1, "a is still ahead");
    }
}
