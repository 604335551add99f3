//! One directory per entity kind: `id → actor`, with activation as an explicit slot
//! state machine so that two incarnations of one entity are never alive at once, and the
//! restart bookkeeping that the kind's supervisor consults.
//!
//! A slot is `Activating` (one activator, everyone else waits for it), `Active`, or
//! `Draining` (the entity is passivating: it finishes its queue and stops). A lookup
//! that meets a draining slot waits for that actor to stop before activating anew; if
//! the wait runs out it answers `Timeout` and activates nothing. The slot goes when its
//! actor has stopped. The store fences every commit with the incarnation number as well,
//! so even a bug here could not let two instances write one journal.

use crate::connections::ConnectionId;
use crate::error::HubError;
use crate::stream::Subscribers;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use ractor::{ActorId, ActorRef, ActorStatus, Message};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug)]
enum Slot<M: Message> {
    /// Being activated; the activator drops the sender when it is done either way.
    Activating(watch::Receiver<()>),
    Active(ActorRef<M>),
    Draining(ActorRef<M>),
}

impl<M: Message> Slot<M> {
    fn holds(&self, actor_id: ActorId) -> bool {
        match self {
            Slot::Active(actor) | Slot::Draining(actor) => actor.get_id() == actor_id,
            Slot::Activating(_) => false,
        }
    }
}

/// The live connections following an entity's streams. They outlive the entity's
/// incarnations, so that a restarted entity can tell them it is back (a snapshot with
/// the new epoch) instead of leaving them silent.
pub type Followers = Arc<Mutex<Subscribers>>;

/// Locks an entity's followers. A panic while holding the lock leaves a subscriber
/// list that is still consistent (every mutation is a single map operation).
pub fn followers_of(followers: &Followers) -> std::sync::MutexGuard<'_, Subscribers> {
    followers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    slots: Arc<DashMap<String, Slot<M>>>,
    ids_by_actor: Arc<DashMap<ActorId, String>>,
    followers: Arc<DashMap<String, Followers>>,
    failures: DashMap<String, VecDeque<u64>>,
    unavailable_until_ms: DashMap<String, u64>,
    policy: RestartPolicy,
}

/// What a lookup found in the slot, taken out of the map's lock before awaiting.
enum Found<M: Message> {
    Ready(ActorRef<M>),
    ActivationUnderWay(watch::Receiver<()>),
    Draining(ActorRef<M>),
    YoursToActivate(watch::Sender<()>),
}

impl<M: Message> Directory<M> {
    pub fn new(kind: &'static str, entities_max: usize, policy: RestartPolicy) -> Self {
        Directory {
            kind,
            entities_max,
            slots: Arc::new(DashMap::new()),
            ids_by_actor: Arc::new(DashMap::new()),
            followers: Arc::new(DashMap::new()),
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
        match self.slots.get(id)?.value() {
            Slot::Active(actor) => Some(actor.clone()),
            Slot::Activating(_) | Slot::Draining(_) => None,
        }
    }

    /// Every actor alive (for shutdown).
    pub fn actors(&self) -> Vec<ActorRef<M>> {
        self.slots
            .iter()
            .filter_map(|entry| match entry.value() {
                Slot::Active(actor) | Slot::Draining(actor) => Some(actor.clone()),
                Slot::Activating(_) => None,
            })
            .collect()
    }

    /// The connections following entity `id`, shared by all its incarnations.
    pub fn followers(&self, id: &str) -> Followers {
        self.followers.entry(id.to_owned()).or_default().clone()
    }

    fn check_available(&self, id: &str, now_ms: u64) -> Result<(), HubError> {
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
        Ok(())
    }

    fn find(&self, id: &str) -> Result<Found<M>, HubError> {
        // Checked before taking the entry: `len` reads every shard, the entry holds one.
        let full = self.slots.len() >= self.entities_max;
        Ok(match self.slots.entry(id.to_owned()) {
            Entry::Occupied(mut slot) => match slot.get() {
                Slot::Active(actor) => Found::Ready(actor.clone()),
                Slot::Activating(done) if done.has_changed().is_err() => {
                    // Its activator is gone without a word (its task was cancelled at
                    // shutdown): the slot is stale, and this caller takes it over.
                    let (done, waiting) = watch::channel(());
                    slot.insert(Slot::Activating(waiting));
                    Found::YoursToActivate(done)
                }
                Slot::Activating(done) => Found::ActivationUnderWay(done.clone()),
                Slot::Draining(actor) => Found::Draining(actor.clone()),
            },
            Entry::Vacant(vacant) => {
                if full {
                    return Err(HubError::TooManyEntities {
                        kind: self.kind,
                        max: self.entities_max,
                    });
                }
                let (done, waiting) = watch::channel(());
                vacant.insert(Slot::Activating(waiting));
                Found::YoursToActivate(done)
            }
        })
    }

    /// Returns the actor for `id`, spawning it with `spawn` if none is alive. Concurrent
    /// callers for one id share one activation; nothing is activated while an older
    /// incarnation is alive: past `wait` the answer is `Timeout`.
    pub async fn get_or_activate<F, Fut>(
        &self,
        id: &str,
        now_ms: u64,
        wait: Duration,
        spawn: F,
    ) -> Result<ActorRef<M>, HubError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<ActorRef<M>, HubError>> + Send + 'static,
    {
        let timeout = || HubError::Timeout {
            kind: self.kind,
            id: id.to_owned(),
            timeout_ms: wait.as_millis() as u64,
        };
        let mut spawn = Some(spawn);
        let lookup = async {
            loop {
                self.check_available(id, now_ms)?;
                match self.find(id)? {
                    Found::Ready(actor) => return Ok(actor),
                    Found::ActivationUnderWay(mut done) => {
                        // Resolves when the activator drops its sender, however it ended.
                        let _ = done.changed().await;
                    }
                    Found::Draining(old) => {
                        // The old incarnation finishes its queue and snapshots; it must
                        // be gone before a new one reads the store.
                        let _ = old.wait(None).await;
                        self.slots.remove_if(id, |_, slot| {
                            matches!(slot, Slot::Draining(actor) if actor.get_id() == old.get_id())
                        });
                    }
                    Found::YoursToActivate(done) => {
                        let Some(spawn) = spawn.take() else {
                            // Only reachable if an activation of ours failed and the loop
                            // came round again, which returns before looping.
                            return Err(timeout());
                        };
                        return self.activate(id, spawn, done).await;
                    }
                }
            }
        };
        tokio::time::timeout(wait, lookup)
            .await
            .unwrap_or_else(|_| Err(timeout()))
    }

    /// Runs `spawn` in a task of its own, so that a caller that gives up cannot leave
    /// the slot `Activating` forever, and records the outcome in the slot.
    async fn activate<F, Fut>(
        &self,
        id: &str,
        spawn: F,
        done: watch::Sender<()>,
    ) -> Result<ActorRef<M>, HubError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<ActorRef<M>, HubError>> + Send + 'static,
    {
        let slots = self.slots.clone();
        let ids_by_actor = self.ids_by_actor.clone();
        let followers = self.followers.clone();
        let key = id.to_owned();
        let kind = self.kind;
        let activation = tokio::spawn(async move {
            let result = spawn().await;
            match &result {
                Ok(actor) => {
                    ids_by_actor.insert(actor.get_id(), key.clone());
                    slots.insert(key.clone(), Slot::Active(actor.clone()));
                    // It may have failed already, before its slot said Active (its
                    // supervisor then found nothing to remove): free the slot, so the
                    // next lookup activates a fresh incarnation instead of a dead one.
                    if matches!(
                        actor.get_status(),
                        ActorStatus::Stopping | ActorStatus::Stopped
                    ) {
                        slots.remove_if(&key, |_, slot| slot.holds(actor.get_id()));
                    }
                }
                Err(_) => {
                    if let Entry::Occupied(slot) = slots.entry(key.clone())
                        && matches!(slot.get(), Slot::Activating(_))
                    {
                        slot.remove();
                        // No incarnation took the followers entry created for it.
                        followers
                            .remove_if(&key, |_, followers| followers_of(followers).is_empty());
                    }
                }
            }
            drop(done);
            result
        });
        activation.await.map_err(|error| HubError::Spawn {
            kind,
            id: id.to_owned(),
            reason: format!("activation task failed: {error}"),
        })?
    }

    /// Called by an entity from its `pre_start`, so that a failure in its very first
    /// message already finds its id (the activation records it only afterwards).
    pub fn register(&self, actor_id: ActorId, id: &str) {
        self.ids_by_actor.insert(actor_id, id.to_owned());
    }

    /// Called by an entity that is about to drain and stop.
    pub fn mark_draining(&self, actor_id: ActorId) {
        if let Some(id) = self.ids_by_actor.get(&actor_id).map(|id| id.clone())
            && let Some(mut slot) = self.slots.get_mut(&id)
            && let Slot::Active(actor) = slot.value()
            && actor.get_id() == actor_id
        {
            let actor = actor.clone();
            *slot = Slot::Draining(actor);
        }
    }

    /// Drops the slot of an actor that a caller saw stop, so the next lookup activates
    /// a fresh one. Only for actors known to have stopped. The actor's id mapping stays
    /// for its supervisor, which decides about restarts when the stop event arrives.
    pub fn discard_stopped(&self, actor_id: ActorId) {
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

    /// Whether a live connection follows `id` (changes nothing).
    pub fn is_followed(&self, id: &str) -> bool {
        self.followers.get(id).is_some_and(|followers| {
            let followers = followers_of(&followers);
            !followers.is_empty() && followers.any_live()
        })
    }

    /// Drops `player`'s `connection` from the followers of `id`, which need not be in
    /// memory (nothing is activated). With no incarnation, the followers entry goes
    /// once empty.
    pub fn drop_follower(&self, id: &str, player: &str, connection: ConnectionId) {
        // The slot comes first in every lock order; a vacant one held keeps an
        // activation from taking the followers entry while it is removed.
        match self.slots.entry(id.to_owned()) {
            Entry::Vacant(_no_activation) => {
                self.followers.remove_if(id, |_, followers| {
                    let mut followers = followers_of(followers);
                    followers.remove_connection(player, connection);
                    followers.prune_all_closed();
                    followers.is_empty()
                });
            }
            Entry::Occupied(_incarnation) => {
                if let Some(followers) = self.followers.get(id) {
                    followers_of(&followers).remove_connection(player, connection);
                }
            }
        }
    }

    /// Removes an actor that stopped normally. Its followers go with it if there are
    /// none left (a kind that passivates while followed leaves them to its next
    /// incarnation).
    pub fn stopped(&self, actor_id: ActorId) {
        if let Some(id) = self.forget(actor_id)
            && let Entry::Vacant(_no_activation) = self.slots.entry(id.clone())
        {
            // Holding the vacant slot keeps an activation from taking the followers
            // entry while it is removed (the slot comes first in every lock order).
            // Connections that closed unseen (a passivated entity sends them nothing)
            // are not kept for the next incarnation.
            self.followers.remove_if(&id, |_, followers| {
                let mut followers = followers_of(followers);
                followers.prune_all_closed();
                followers.is_empty()
            });
        }
    }

    /// Forgets the failures of entities that have not failed within the restart window
    /// (and their unavailability once it is over), so the records do not grow with
    /// every entity that ever failed.
    pub fn prune_failures(&self, now_ms: u64) {
        let window_ms = self.policy.window_ms;
        self.failures.retain(|_, history| {
            history
                .back()
                .is_some_and(|last| now_ms.saturating_sub(*last) < window_ms)
        });
        self.unavailable_until_ms.retain(|_, until| now_ms < *until);
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
    use ractor::{Actor, ActorProcessingErr, ActorStatus};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    const WAIT: Duration = Duration::from_secs(10);

    /// A test entity: it can be held inside a handler, passivated, or made to panic.
    struct Probe;

    enum ProbeMsg {
        Hold(Arc<Notify>),
        Passivate,
        Panic,
        Ping,
    }

    impl ractor::Message for ProbeMsg {}

    struct ProbeArgs {
        directory: Arc<Directory<ProbeMsg>>,
    }

    impl Actor for Probe {
        type Msg = ProbeMsg;
        type State = Arc<Directory<ProbeMsg>>;
        type Arguments = ProbeArgs;

        async fn pre_start(
            &self,
            _myself: ActorRef<ProbeMsg>,
            args: ProbeArgs,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(args.directory)
        }

        async fn handle(
            &self,
            myself: ActorRef<ProbeMsg>,
            message: ProbeMsg,
            directory: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            match message {
                ProbeMsg::Hold(release) => release.notified().await,
                ProbeMsg::Passivate => {
                    directory.mark_draining(myself.get_id());
                    let _ = myself.drain();
                }
                ProbeMsg::Panic => panic!("probe fails on purpose"),
                ProbeMsg::Ping => {}
            }
            Ok(())
        }
    }

    fn directory() -> Arc<Directory<ProbeMsg>> {
        Arc::new(Directory::new(
            "probe",
            100,
            RestartPolicy {
                restarts_max: 1_000,
                window_ms: 1,
            },
        ))
    }

    type Spawning =
        std::pin::Pin<Box<dyn Future<Output = Result<ActorRef<ProbeMsg>, HubError>> + Send>>;

    /// Spawns a probe after checking that every earlier incarnation has stopped.
    fn spawner(
        directory: &Arc<Directory<ProbeMsg>>,
        spawned: &Arc<Mutex<Vec<ActorRef<ProbeMsg>>>>,
    ) -> impl FnOnce() -> Spawning + Send + 'static {
        let directory = directory.clone();
        let spawned = spawned.clone();
        move || {
            Box::pin(async move {
                let alive = spawned
                    .lock()
                    .expect("spawned")
                    .iter()
                    .filter(|earlier| earlier.get_status() != ActorStatus::Stopped)
                    .count();
                assert_eq!(alive, 0, "an earlier incarnation is still alive");
                let (actor, _) = Actor::spawn(None, Probe, ProbeArgs { directory })
                    .await
                    .map_err(|error| HubError::Spawn {
                        kind: "probe",
                        id: "x".into(),
                        reason: error.to_string(),
                    })?;
                spawned.lock().expect("spawned").push(actor.clone());
                Ok(actor)
            })
        }
    }

    #[tokio::test]
    async fn nothing_activates_beside_a_draining_incarnation_however_long_it_takes() {
        let directory = directory();
        let spawned = Arc::new(Mutex::new(Vec::new()));
        let first = directory
            .get_or_activate("x", 0, WAIT, spawner(&directory, &spawned))
            .await
            .expect("activates");
        // The first incarnation is busy, then asked to passivate: it drains slowly.
        let release = Arc::new(Notify::new());
        first.cast(ProbeMsg::Hold(release.clone())).expect("hold");
        first.cast(ProbeMsg::Passivate).expect("passivate");
        directory.mark_draining(first.get_id());
        let short = Duration::from_millis(50);
        let meanwhile = directory
            .get_or_activate("x", 0, short, spawner(&directory, &spawned))
            .await;
        assert!(
            matches!(meanwhile, Err(HubError::Timeout { .. })),
            "{meanwhile:?}"
        );
        assert_eq!(spawned.lock().expect("spawned").len(), 1, "no second spawn");
        release.notify_one();
        let second = directory
            .get_or_activate("x", 0, WAIT, spawner(&directory, &spawned))
            .await
            .expect("activates once the first is gone");
        assert_ne!(second.get_id(), first.get_id());
        assert_eq!(first.get_status(), ActorStatus::Stopped);
    }

    #[tokio::test]
    async fn a_failed_activation_does_not_strand_or_duplicate_waiters() {
        let directory = directory();
        let spawned = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let failing = {
            let attempts = attempts.clone();
            move || async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                Err::<ActorRef<ProbeMsg>, _>(HubError::ShuttingDown)
            }
        };
        let (failed, retried) = tokio::join!(
            directory.get_or_activate("x", 0, WAIT, failing),
            directory.get_or_activate("x", 0, WAIT, spawner(&directory, &spawned)),
        );
        assert!(failed.is_err());
        let retried = retried.expect("the waiter activates after the failure");
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        let again = directory
            .get_or_activate("x", 0, WAIT, spawner(&directory, &spawned))
            .await
            .expect("active");
        assert_eq!(again.get_id(), retried.get_id(), "one incarnation");
        assert_eq!(spawned.lock().expect("spawned").len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hammering_activation_passivation_and_failure_keeps_one_incarnation_at_a_time() {
        let directory = directory();
        let spawned = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..16u64 {
            let directory = directory.clone();
            let spawned = spawned.clone();
            tasks.spawn(async move {
                for step in 0..60u64 {
                    let actor = directory
                        .get_or_activate("x", 0, WAIT, spawner(&directory, &spawned))
                        .await
                        .expect("activates");
                    let (message, stops) = match (task * 7 + step) % 11 {
                        0 => (ProbeMsg::Passivate, true),
                        5 => (ProbeMsg::Panic, true),
                        _ => (ProbeMsg::Ping, false),
                    };
                    let sent = actor.cast(message).is_ok();
                    if sent && stops {
                        // Let the stop happen before this task goes on, so that the
                        // hammer goes through many incarnations.
                        actor.wait(Some(WAIT)).await.expect("stops");
                    }
                    if !sent {
                        // Stopped under us: as the hub does, free its slot once it is
                        // gone for sure.
                        actor.wait(Some(WAIT)).await.expect("stops");
                        directory.discard_stopped(actor.get_id());
                    }
                }
            });
        }
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(result) = tasks.join_next().await {
                result.expect("no task panicked");
            }
        })
        .await
        .expect("the hammer finishes");
        let spawned = spawned.lock().expect("spawned");
        assert!(spawned.len() >= 10, "{} incarnations", spawned.len());
        let alive = spawned
            .iter()
            .filter(|actor| actor.get_status() != ActorStatus::Stopped)
            .count();
        assert!(alive <= 1, "{alive} alive at the end");
    }

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
