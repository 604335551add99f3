//! The hub wires the actor system together: the store, the clock, the directories and
//! supervisors of each entity kind, the question bank and the matchmaker. Every actor gets
//! a clone of it; the server talks to actors only through it.

use crate::clock::{Clock, Entropy};
use crate::config::GameConfig;
use crate::connections::Outbound;
use crate::directory::{Directory, RestartDecision, RestartPolicy};
use crate::error::HubError;
use crate::matchmaker::Matchmaker;
use crate::questions::QuestionBank;
use crate::referral::{TreeEntity, TreeMsg};
use crate::room::{RoomEntity, RoomMsg, RoomSpec};
use crate::runtime::{ActivationError, Behaviour, EntityArgs, EntityRuntime};
use crate::session::{SessionEntity, SessionMsg};
use crate::store::Store;
use crate::supervisor::{Supervisor, SupervisorArgs, SupervisorMsg};
use playtree_protocol::RoomId;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorRef, Message, MessagingErr, RpcReplyPort};
use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    Session,
    Room,
    Tree,
}

impl EntityKind {
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Session => "session",
            EntityKind::Room => "room",
            EntityKind::Tree => "tree",
        }
    }
}

#[derive(Debug)]
pub struct HubInner {
    pub config: Arc<GameConfig>,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    pub questions: Arc<QuestionBank>,
    pub matchmaker: Matchmaker,
    /// Makes referral codes (with the key kept in the store).
    pub codes: crate::referral::code::CodeMaker,
    /// The one timer that drives every entity's deadline.
    pub timers: crate::timers::Timers,
    pub(crate) sessions: Directory<SessionMsg>,
    pub(crate) rooms: Directory<RoomMsg>,
    pub(crate) trees: Directory<TreeMsg>,
    session_supervisor: OnceLock<ActorRef<SupervisorMsg>>,
    room_supervisor: OnceLock<ActorRef<SupervisorMsg>>,
    tree_supervisor: OnceLock<ActorRef<SupervisorMsg>>,
    shutting_down: AtomicBool,
}

/// Cheap to clone; every actor holds one.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl Deref for Hub {
    type Target = HubInner;
    fn deref(&self) -> &HubInner {
        &self.inner
    }
}

impl Hub {
    pub(crate) fn from_inner(inner: Arc<HubInner>) -> Hub {
        Hub { inner }
    }

    /// Builds the hub and starts one supervisor per entity kind. Entities themselves are
    /// activated lazily, on first use.
    pub async fn start(
        config: GameConfig,
        store: Store,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        questions: Arc<QuestionBank>,
    ) -> Result<Hub, HubError> {
        // A config built in code is held to the same limits as one loaded from a file
        // (a velocity limit past what its count keeps would never trigger).
        config.validate()?;
        let policy = RestartPolicy {
            restarts_max: config.actors.restarts_max,
            window_ms: config.actors.restart_window_ms,
        };
        let codes = crate::referral::code::CodeMaker::load_or_create(&store, &*entropy).await?;
        let inner = Arc::new(HubInner {
            sessions: Directory::new("session", config.actors.sessions_max, policy),
            rooms: Directory::new("room", config.rooms.rooms_max, policy),
            trees: Directory::new("tree", config.referral.trees_max, policy),
            timers: crate::timers::Timers::start(clock.clone(), config.actors.timer_poll_ms),
            config: Arc::new(config),
            store,
            clock,
            entropy,
            questions,
            matchmaker: Matchmaker::default(),
            codes,
            session_supervisor: OnceLock::new(),
            room_supervisor: OnceLock::new(),
            tree_supervisor: OnceLock::new(),
            shutting_down: AtomicBool::new(false),
        });
        for (kind, slot) in [
            (EntityKind::Session, &inner.session_supervisor),
            (EntityKind::Room, &inner.room_supervisor),
            (EntityKind::Tree, &inner.tree_supervisor),
        ] {
            let args = SupervisorArgs {
                kind,
                hub: Arc::downgrade(&inner),
            };
            let (supervisor, _) = Actor::spawn(None, Supervisor, args)
                .await
                .map_err(|error| HubError::Spawn {
                    kind: "supervisor",
                    id: kind.name().into(),
                    reason: error.to_string(),
                })?;
            // Invariant: each slot is set exactly once, here, before the hub is shared.
            let _ = slot.set(supervisor);
        }
        let hub = Hub { inner };
        let owed = hub.clone();
        tokio::spawn(async move {
            if let Err(error) = owed.activate_owing_rooms().await {
                tracing::error!(%error, "could not read the outbox index; grants wait for their rooms' next activation");
            }
            if let Err(error) = owed.activate_owing_trees().await {
                tracing::error!(%error, "could not read the outbox index; grants wait for their trees' next activation");
            }
            if let Err(error) = owed.activate_owing_sessions().await {
                tracing::error!(%error, "could not read the outbox index; claims and activations wait for their players");
            }
        });
        Ok(hub)
    }

    /// Activates every entity of `kind` that the outbox index says owes grants (or, for
    /// a session, work of its own: a referral claim under way, an activation its tree has
    /// not recorded), so that it finishes without waiting for traffic. Reads only the
    /// index, no entity. Returns how many it activated.
    async fn activate_owing<F, Fut, A>(
        &self,
        kind: EntityKind,
        activate: F,
    ) -> Result<usize, HubError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<A, HubError>>,
    {
        let owing = self.store.owing(kind.name()).await?;
        let mut activated = 0;
        for id in owing {
            match activate(id.clone()).await {
                Ok(_) => activated += 1,
                Err(error) => {
                    tracing::warn!(kind = kind.name(), %id, %error, "an entity that owes did not activate")
                }
            }
        }
        metrics::counter!("playtree_owing_entities_activated_total", "kind" => kind.name())
            .increment(activated as u64);
        Ok(activated)
    }

    pub async fn activate_owing_rooms(&self) -> Result<usize, HubError> {
        self.activate_owing(EntityKind::Room, |id| async move {
            let room = id.parse::<RoomId>().map_err(|_| {
                tracing::error!(%id, "outbox index names a room id that is not a number");
                HubError::Spawn {
                    kind: "room",
                    id: id.clone(),
                    reason: "the outbox index names a room id that is not a number".into(),
                }
            })?;
            self.room(room, None).await
        })
        .await
    }

    pub async fn activate_owing_trees(&self) -> Result<usize, HubError> {
        self.activate_owing(
            EntityKind::Tree,
            |root| async move { self.tree(&root).await },
        )
        .await
    }

    pub async fn activate_owing_sessions(&self) -> Result<usize, HubError> {
        self.activate_owing(EntityKind::Session, |player| async move {
            self.session(&player).await
        })
        .await
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.config.actors.call_timeout_ms)
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn check_running(&self) -> Result<(), HubError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(HubError::ShuttingDown);
        }
        Ok(())
    }

    /// The session of `player`, activated from the store if it is not in memory.
    pub async fn session(&self, player: &str) -> Result<ActorRef<SessionMsg>, HubError> {
        self.activate::<SessionEntity>(
            &self.sessions,
            &self.session_supervisor,
            player.to_owned(),
            (),
            || None,
        )
        .await
    }

    /// The room `room`, activated from the store if needed. `spec` creates the room when
    /// the store has never heard of it.
    pub async fn room(
        &self,
        room: RoomId,
        spec: Option<RoomSpec>,
    ) -> Result<ActorRef<RoomMsg>, HubError> {
        self.activate::<RoomEntity>(&self.rooms, &self.room_supervisor, room, spec, move || {
            Some(HubError::UnknownRoom(room))
        })
        .await
    }

    /// The referral tree whose root is `root`, activated from the store if needed (an
    /// empty tree if the store has never heard of it).
    pub async fn tree(&self, root: &str) -> Result<ActorRef<TreeMsg>, HubError> {
        self.activate::<TreeEntity>(
            &self.trees,
            &self.tree_supervisor,
            root.to_owned(),
            (),
            || None,
        )
        .await
    }

    /// The entity `id` of kind `B`, from `directory` or activated under `supervisor`;
    /// `unknown` is the error for an entity its activation found not to exist.
    async fn activate<B: Behaviour>(
        &self,
        directory: &Directory<B::Msg>,
        supervisor: &OnceLock<ActorRef<SupervisorMsg>>,
        id: B::Id,
        start: B::Start,
        unknown: impl FnOnce() -> Option<HubError> + Send + 'static,
    ) -> Result<ActorRef<B::Msg>, HubError> {
        self.check_running()?;
        let key = id.to_string();
        let hub = self.clone();
        let supervisor = supervisor.get().cloned();
        directory
            .get_or_activate(&key, self.now_ms(), self.call_timeout(), move || async move {
                let supervisor = supervisor.ok_or(HubError::ShuttingDown)?;
                let followers = hub.followers_of(B::ENTITY, &id.to_string());
                let spawned = hub.spawn_entity::<B>(&supervisor, id.clone(), start, followers);
                spawned.await.map_err(|error| {
                    let not_found = matches!(
                        &error,
                        ractor::SpawnErr::StartupFailed(inner)
                            if matches!(inner.downcast_ref::<ActivationError>(), Some(ActivationError::Unknown(_)))
                    );
                    not_found.then(unknown).flatten().unwrap_or_else(|| HubError::Spawn {
                        kind: B::KIND,
                        id: id.to_string(),
                        reason: error.to_string(),
                    })
                })
            })
            .await
    }

    /// Request/response with a referral tree, re-resolving if it stopped meanwhile.
    pub async fn call_tree<R: Send + 'static>(
        &self,
        root: &str,
        build: impl Fn(RpcReplyPort<R>) -> TreeMsg,
    ) -> Result<R, HubError> {
        let timeout = self.call_timeout();
        call_with_retry(
            || self.tree(root),
            build,
            timeout,
            "tree",
            root,
            |actor| self.trees.discard_stopped(actor),
        )
        .await
    }

    /// Casts to a tree now if it is in memory, or from a task that activates it first.
    pub(crate) fn send_to_tree(&self, root: String, message: TreeMsg) {
        self.send_now_or_later(
            EntityKind::Tree,
            self.trees.get(&root),
            message,
            |hub, message| async move {
                let timeout = hub.call_timeout();
                cast_with_retry(
                    || hub.tree(&root),
                    message,
                    timeout,
                    "tree",
                    &root,
                    |actor| hub.trees.discard_stopped(actor),
                )
                .await
                .map_err(|error| (root.clone(), error))
            },
        );
    }

    /// Spawns an incarnation of `B` under `supervisor` and counts the activation.
    async fn spawn_entity<B: Behaviour>(
        &self,
        supervisor: &ActorRef<SupervisorMsg>,
        id: B::Id,
        start: B::Start,
        followers: crate::directory::Followers,
    ) -> Result<ActorRef<B::Msg>, ractor::SpawnErr> {
        let args = EntityArgs::<B> {
            id,
            start,
            followers,
            hub: self.clone(),
        };
        let (actor, _) = Actor::spawn_linked(
            None,
            EntityRuntime::<B>::default(),
            args,
            supervisor.get_cell(),
        )
        .await?;
        metrics::counter!("playtree_actor_activations_total", "kind" => B::KIND).increment(1);
        Ok(actor)
    }

    /// Request/response with a player's session, re-resolving if it stopped meanwhile.
    pub async fn call_session<R: Send + 'static>(
        &self,
        player: &str,
        build: impl Fn(RpcReplyPort<R>) -> SessionMsg,
    ) -> Result<R, HubError> {
        let timeout = self.call_timeout();
        call_with_retry(
            || self.session(player),
            build,
            timeout,
            "session",
            player,
            |actor| self.sessions.discard_stopped(actor),
        )
        .await
    }

    pub async fn call_room<R: Send + 'static>(
        &self,
        room: RoomId,
        spec: Option<RoomSpec>,
        build: impl Fn(RpcReplyPort<R>) -> RoomMsg,
    ) -> Result<R, HubError> {
        let timeout = self.call_timeout();
        let id = room.to_string();
        call_with_retry(
            || self.room(room, spec.clone()),
            build,
            timeout,
            "room",
            &id,
            |actor| self.rooms.discard_stopped(actor),
        )
        .await
    }

    /// Fire-and-forget to a session, activating it if needed (e.g. a reward for an
    /// offline player).
    pub async fn cast_session(&self, player: &str, message: SessionMsg) -> Result<(), HubError> {
        let timeout = self.call_timeout();
        cast_with_retry(
            || self.session(player),
            message,
            timeout,
            "session",
            player,
            |actor| self.sessions.discard_stopped(actor),
        )
        .await
    }

    pub async fn cast_room(&self, room: RoomId, message: RoomMsg) -> Result<(), HubError> {
        let timeout = self.call_timeout();
        let id = room.to_string();
        cast_with_retry(
            || self.room(room, None),
            message,
            timeout,
            "room",
            &id,
            |actor| self.rooms.discard_stopped(actor),
        )
        .await
    }

    /// Casts to a session now if it is in memory (in order with what the sender does
    /// next), or from a task that activates it first.
    pub(crate) fn send_to_session(&self, player: String, message: SessionMsg) {
        self.send_now_or_later(
            EntityKind::Session,
            self.active_session(&player),
            message,
            |hub, message| async move {
                hub.cast_session(&player, message)
                    .await
                    .map_err(|error| (player, error))
            },
        );
    }

    /// Casts to a room now if it is in memory, or from a task that activates it first.
    pub(crate) fn send_to_room(&self, room: RoomId, message: RoomMsg) {
        self.send_now_or_later(
            EntityKind::Room,
            self.active_room(room),
            message,
            move |hub, message| async move {
                hub.cast_room(room, message)
                    .await
                    .map_err(|error| (room.to_string(), error))
            },
        );
    }

    /// Casts `message` to `actor` now if there is one in memory that takes it, else
    /// from a task that runs `later` (which activates the entity first); a failure
    /// there is logged, and the sender retries as it does for any lost message.
    fn send_now_or_later<M, F, Fut>(
        &self,
        kind: EntityKind,
        actor: Option<ActorRef<M>>,
        message: M,
        later: F,
    ) where
        M: Message,
        F: FnOnce(Hub, M) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), (String, HubError)>> + Send + 'static,
    {
        let message = match actor {
            Some(actor) => match actor.cast(message) {
                Ok(()) => return,
                Err(MessagingErr::SendErr(message)) => message,
                Err(_) => return,
            },
            None => message,
        };
        let hub = self.clone();
        tokio::spawn(async move {
            if let Err((id, error)) = later(hub, message).await {
                tracing::warn!(kind = kind.name(), %id, %error, "message not delivered; its sender retries");
            }
        });
    }

    /// The followers of entity `id` of `kind`, shared by its incarnations.
    fn followers_of(&self, kind: EntityKind, id: &str) -> crate::directory::Followers {
        match kind {
            EntityKind::Session => self.sessions.followers(id),
            EntityKind::Room => self.rooms.followers(id),
            EntityKind::Tree => self.trees.followers(id),
        }
    }

    /// A new incarnation is ready to serve (from its activation).
    pub(crate) fn register(&self, kind: EntityKind, actor: ActorId, id: &str) {
        match kind {
            EntityKind::Session => self.sessions.register(actor, id),
            EntityKind::Room => self.rooms.register(actor, id),
            EntityKind::Tree => self.trees.register(actor, id),
        }
    }

    /// An entity about to passivate: later lookups wait for it to stop, then reactivate.
    pub(crate) fn mark_draining(&self, kind: EntityKind, actor: ActorId) {
        match kind {
            EntityKind::Session => self.sessions.mark_draining(actor),
            EntityKind::Room => self.rooms.mark_draining(actor),
            EntityKind::Tree => self.trees.mark_draining(actor),
        }
    }

    pub(crate) fn child_stopped(&self, kind: EntityKind, actor: ActorId) {
        match kind {
            EntityKind::Session => self.sessions.stopped(actor),
            EntityKind::Room => self.rooms.stopped(actor),
            EntityKind::Tree => self.trees.stopped(actor),
        }
    }

    pub(crate) fn child_failed(&self, kind: EntityKind, actor: ActorId, error: String) {
        let now_ms = self.now_ms();
        let decision = match kind {
            EntityKind::Session => self.sessions.on_failed(actor, now_ms),
            EntityKind::Room => self.rooms.on_failed(actor, now_ms),
            EntityKind::Tree => self.trees.on_failed(actor, now_ms),
        };
        // A failed room no longer runs its `post_stop` (ractor skips it after a panic):
        // unlist it here, so QuickJoin does not send players to it. A restarted room
        // lists itself again.
        if kind == EntityKind::Room
            && let RestartDecision::Restart { id } | RestartDecision::GiveUp { id, .. } = &decision
            && let Ok(room) = id.parse::<RoomId>()
            && let Some(listing) = self.matchmaker.remove(room, actor)
        {
            metrics::gauge!("playtree_rooms_open", "kind" => crate::room::kind_name(listing.kind))
                .decrement(1.0);
        }
        match decision {
            RestartDecision::Restart { id } => {
                tracing::warn!(kind = kind.name(), %id, %error, "entity failed; restarting from its persisted state");
                metrics::counter!("playtree_actor_restarts_total", "kind" => kind.name())
                    .increment(1);
                // Reactivate now rather than on next use, so that outboxes and pending
                // settlements are redelivered without waiting for traffic.
                let hub = self.clone();
                tokio::spawn(async move {
                    let result = match kind {
                        EntityKind::Session => hub.session(&id).await.map(|_| ()),
                        EntityKind::Room => match id.parse::<RoomId>() {
                            Ok(room) => hub.room(room, None).await.map(|_| ()),
                            Err(_) => Ok(()),
                        },
                        EntityKind::Tree => hub.tree(&id).await.map(|_| ()),
                    };
                    if let Err(error) = result {
                        tracing::error!(kind = kind.name(), %id, %error, "restart failed");
                    }
                });
            }
            RestartDecision::GiveUp { id, failures } => {
                // A caller may have activated a fresh instance meanwhile; it goes too.
                let racing = match kind {
                    EntityKind::Session => self.sessions.get(&id).map(|a| a.get_cell()),
                    EntityKind::Room => self.rooms.get(&id).map(|a| a.get_cell()),
                    EntityKind::Tree => self.trees.get(&id).map(|a| a.get_cell()),
                };
                if let Some(actor) = racing {
                    actor.stop(Some("restart intensity exceeded".into()));
                }
                tracing::error!(kind = kind.name(), %id, %error, failures, "entity failed too often; stopped for the restart window");
                metrics::counter!("playtree_actor_given_up_total", "kind" => kind.name())
                    .increment(1);
            }
            RestartDecision::Unknown => {}
        }
    }

    /// Stops every entity gracefully (each drains its mailbox and snapshots), then the
    /// supervisors, then flushes the store. New activations are refused from the start.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let wait = Some(self.call_timeout());
        for session in self.sessions.actors() {
            let _ = session.drain_and_wait(wait).await;
        }
        for room in self.rooms.actors() {
            let _ = room.drain_and_wait(wait).await;
        }
        for tree in self.trees.actors() {
            let _ = tree.drain_and_wait(wait).await;
        }
        for supervisor in [
            self.session_supervisor.get(),
            self.room_supervisor.get(),
            self.tree_supervisor.get(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = supervisor.stop_and_wait(None, wait).await;
        }
        if let Err(error) = self.store.flush().await {
            tracing::error!(%error, "final store flush failed");
        }
    }

    /// `player`'s connection `outbound` has closed (its receiver already dropped): the
    /// rooms noted on it are told (a quiz room starts the seat's grace), and the
    /// player's session forgets it, or, if the session is not in memory, the directory
    /// does. Nothing is activated, so many connections closing at once (a shutdown, a
    /// network blip) cost no activations.
    pub fn connection_closed(&self, player: &str, outbound: &Outbound) {
        let connection = outbound.connection;
        let unsubscribe = || RoomMsg::Unsubscribe {
            player: player.to_owned(),
            connection,
        };
        for room in outbound.rooms() {
            let sent = self
                .active_room(room)
                .is_some_and(|actor| actor.cast(unsubscribe()).is_ok());
            // A room not in memory is not activated for it: its next incarnation counts
            // every member away until they subscribe again; the connection only leaves
            // its followers.
            if !sent {
                self.rooms
                    .drop_follower(&room.to_string(), player, connection);
            }
        }
        let told = self
            .active_session(player)
            .is_some_and(|session| session.cast(SessionMsg::Disconnect { connection }).is_ok());
        if !told {
            self.sessions.drop_follower(player, player, connection);
        }
    }

    /// Whether `player` has a connection (their session need not be in memory).
    pub fn is_online(&self, player: &str) -> bool {
        self.sessions.is_followed(player)
    }

    /// The session of `player` if it is active in memory (not activating it).
    pub fn active_session(&self, player: &str) -> Option<ActorRef<SessionMsg>> {
        self.sessions.get(player)
    }

    /// The room if it is active in memory (not activating it).
    pub fn active_room(&self, room: RoomId) -> Option<ActorRef<RoomMsg>> {
        self.rooms.get(&room.to_string())
    }

    /// True once `shutdown` has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

/// Casts to the entity `resolve` finds; if it stopped before taking the message, waits
/// for it to be gone, drops it from the directory and resolves again.
async fn cast_with_retry<M, Resolve, Fut>(
    resolve: Resolve,
    message: M,
    timeout: Duration,
    kind: &'static str,
    id: &str,
    discard: impl Fn(ActorId),
) -> Result<(), HubError>
where
    M: Message,
    Resolve: Fn() -> Fut,
    Fut: Future<Output = Result<ActorRef<M>, HubError>>,
{
    let mut message = message;
    for _ in 0..3 {
        let actor = resolve().await?;
        match actor.cast(message) {
            Ok(()) => return Ok(()),
            Err(MessagingErr::SendErr(returned)) => {
                message = returned;
                // Only a stopped actor's slot may be freed: one still draining must not
                // see a second incarnation start beside it.
                if actor.wait(Some(timeout)).await.is_err() {
                    break;
                }
                discard(actor.get_id());
            }
            Err(_) => return Err(HubError::ShuttingDown),
        }
    }
    Err(HubError::Timeout {
        kind,
        id: id.to_owned(),
        timeout_ms: timeout.as_millis() as u64,
    })
}

async fn call_with_retry<M, R, Resolve, Fut>(
    resolve: Resolve,
    build: impl Fn(RpcReplyPort<R>) -> M,
    timeout: Duration,
    kind: &'static str,
    id: &str,
    discard: impl Fn(ActorId),
) -> Result<R, HubError>
where
    M: Message,
    R: Send + 'static,
    Resolve: Fn() -> Fut,
    Fut: Future<Output = Result<ActorRef<M>, HubError>>,
{
    let timeout_error = || HubError::Timeout {
        kind,
        id: id.to_owned(),
        timeout_ms: timeout.as_millis() as u64,
    };
    for _ in 0..3 {
        let actor = resolve().await?;
        match actor.call(&build, Some(timeout)).await {
            Ok(CallResult::Success(reply)) => return Ok(reply),
            Ok(CallResult::Timeout) => return Err(timeout_error()),
            // The actor dropped the reply port: it failed while handling the request.
            // The request may have been partly done, so it is not repeated.
            Ok(CallResult::SenderError) => {
                return Err(HubError::Spawn {
                    kind,
                    id: id.to_owned(),
                    reason: "the entity failed while handling the request; it restarts from its last durable state".into(),
                });
            }
            // The actor stopped before taking the message: resolve again, once it is
            // gone for sure.
            Err(_) => {
                if actor.wait(Some(timeout)).await.is_err() {
                    return Err(timeout_error());
                }
                discard(actor.get_id());
            }
        }
    }
    Err(timeout_error())
}
