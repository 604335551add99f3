//! One directory per entity kind: `id → actor`, with get-or-activate in one atomic step so
//! that two activations of one entity never exist, and the restart bookkeeping that the
//! kind's supervisor consults.
//!
//! Passivation: an entity marks its slot as draining, then drains its mailbox and stops.
//! A lookup that meets a draining slot waits for that actor to stop before activating a
//! fresh one, so the old and the new instance never journal side by side; a send that
//! fails because its target stopped re-resolves here.

use crate::error::HubError;
use dashmap::DashMap;
use ractor::{ActorId, ActorRef, Message};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;

#[derive(Debug)]
struct Slot<M: Message> {
    actor: OnceCell<ActorRef<M>>,
    draining: AtomicBool,
}

impl<M: Message> Slot<M> {
    fn new() -> Self {
        Slot {
            actor: OnceCell::new(),
            draining: AtomicBool::new(false),
        }
    }

    fn holds(&self, actor_id: ActorId) -> bool {
        self.actor.get().map(|actor| actor.get_id()) == Some(actor_id)
    }
}

/// What the supervisor should do about a failed child.
#[derive(Debug, PartialEq, Eq)]
pub enum RestartDecision {
    Restart {
        id: String,
    },
    GiveUp {
        id: String,
        failures: usize,
    },
    /// The actor was not (or no longer) in this directory.
    Unknown,
}

/// Restart intensity: at most `restarts_max` restarts within `window_ms`.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub restarts_max: usize,
    pub window_ms: u64,
}

impl RestartPolicy {
    /// Records a failure at `now_ms` in `history` (timestamps of recent failures) and
    /// says whether one more restart is allowed.
    pub fn allows_restart(&self, history: &mut VecDeque<u64>, now_ms: u64) -> bool {
        while history
            .front()
            .is_some_and(|&at| now_ms.saturating_sub(at) >= self.window_ms)
        {
            history.pop_front();
        }
        history.push_back(now_ms);
        history.len() <= self.restarts_max
    }
}

#[derive(Debug)]
pub struct Directory<M: Message> {
    kind: &'static str,
    entities_max: usize,
    slots: DashMap<String, Arc<Slot<M>>>,
    ids_by_actor: DashMap<ActorId, String>,
    failures: DashMap<String, VecDeque<u64>>,
    unavailable_until_ms: DashMap<String, u64>,
    policy: RestartPolicy,
}

impl<M: Message> Directory<M> {
    pub fn new(kind: &'static str, entities_max: usize, policy: RestartPolicy) -> Self {
        Directory {
            kind,
            entities_max,
            slots: DashMap::new(),
            ids_by_actor: DashMap::new(),
            failures: DashMap::new(),
            unavailable_until_ms: DashMap::new(),
            policy,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The live actor for `id`, if one is active and not draining.
    pub fn get(&self, id: &str) -> Option<ActorRef<M>> {
        let slot = self.slots.get(id)?.clone();
        if slot.draining.load(Ordering::Acquire) {
            return None;
        }
        slot.actor.get().cloned()
    }

    /// Every active actor (for shutdown).
    pub fn actors(&self) -> Vec<ActorRef<M>> {
        self.slots
            .iter()
            .filter_map(|entry| entry.value().actor.get().cloned())
            .collect()
    }

    /// Returns the actor for `id`, spawning it with `spawn` if none is active. Concurrent
    /// callers for one id share one spawn.
    pub async fn get_or_activate<F, Fut>(
        &self,
        id: &str,
        now_ms: u64,
        stop_wait: Duration,
        spawn: F,
    ) -> Result<ActorRef<M>, HubError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<ActorRef<M>, HubError>>,
    {
        // Bounded: each pass either returns or waits for one draining actor to stop.
        for _ in 0..4 {
            if let Some(until) = self.unavailable_until_ms.get(id).map(|until| *until) {
                if now_ms < until {
                    return Err(HubError::Unavailable {
                        kind: self.kind,
                        id: id.to_owned(),
                        restarts: self.policy.restarts_max,
                    });
                }
                self.unavailable_until_ms.remove(id);
            }
            let slot = match self.slots.get(id) {
                Some(slot) => slot.clone(),
                None => {
                    if self.slots.len() >= self.entities_max {
                        return Err(HubError::TooManyEntities {
                            kind: self.kind,
                            max: self.entities_max,
                        });
                    }
                    self.slots
                        .entry(id.to_owned())
                        .or_insert_with(|| Arc::new(Slot::new()))
                        .clone()
                }
            };
            if slot.draining.load(Ordering::Acquire) {
                if let Some(old) = slot.actor.get() {
                    // The old instance finishes its queue and snapshots; it must be gone
                    // before a new one reads the store.
                    let _ = old.wait(Some(stop_wait)).await;
                }
                self.slots
                    .remove_if(id, |_, current| Arc::ptr_eq(current, &slot));
                continue;
            }
            let result = slot
                .actor
                .get_or_try_init(|| async {
                    let actor = spawn().await?;
                    self.ids_by_actor.insert(actor.get_id(), id.to_owned());
                    Ok::<_, HubError>(actor)
                })
                .await;
            return match result {
                Ok(actor) => Ok(actor.clone()),
                Err(error) => {
                    self.slots.remove_if(id, |_, current| {
                        Arc::ptr_eq(current, &slot) && current.actor.get().is_none()
                    });
                    Err(error)
                }
            };
        }
        Err(HubError::Timeout {
            kind: self.kind,
            id: id.to_owned(),
            timeout_ms: stop_wait.as_millis() as u64,
        })
    }

    /// Called by an entity that is about to drain and stop.
    pub fn mark_draining(&self, actor_id: ActorId) {
        if let Some(id) = self.ids_by_actor.get(&actor_id).map(|id| id.clone())
            && let Some(slot) = self.slots.get(&id)
            && slot.holds(actor_id)
        {
            slot.draining.store(true, Ordering::Release);
        }
    }

    /// Drops the slot of an actor a caller found stopped, so the next lookup activates
    /// a fresh one. The actor's id mapping stays for its supervisor, which decides about
    /// restarts when the stop event arrives.
    pub fn discard(&self, actor_id: ActorId) {
        if let Some(id) = self.ids_by_actor.get(&actor_id).map(|id| id.clone()) {
            self.slots.remove_if(&id, |_, slot| slot.holds(actor_id));
        }
    }

    /// Removes a stopped actor from the directory (its supervisor calls this).
    pub fn forget(&self, actor_id: ActorId) -> Option<String> {
        let (_, id) = self.ids_by_actor.remove(&actor_id)?;
        self.slots.remove_if(&id, |_, slot| slot.holds(actor_id));
        Some(id)
    }

    /// Removes a failed actor and applies the restart intensity.
    pub fn on_failed(&self, actor_id: ActorId, now_ms: u64) -> RestartDecision {
        let Some(id) = self.forget(actor_id) else {
            return RestartDecision::Unknown;
        };
        let mut history = self.failures.entry(id.clone()).or_default();
        if self.policy.allows_restart(&mut history, now_ms) {
            RestartDecision::Restart { id }
        } else {
            let failures = history.len();
            self.unavailable_until_ms
                .insert(id.clone(), now_ms + self.policy.window_ms);
            RestartDecision::GiveUp { id, failures }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_intensity_allows_n_restarts_per_window() {
        let policy = RestartPolicy {
            restarts_max: 2,
            window_ms: 1_000,
        };
        let mut history = VecDeque::new();
        assert!(policy.allows_restart(&mut history, 0));
        assert!(policy.allows_restart(&mut history, 10));
        assert!(!policy.allows_restart(&mut history, 20));
        // Once the window has passed, the old failures no longer count.
        assert!(policy.allows_restart(&mut history, 1_500));
    }
}
