//! The hub wires the actor system together: the store, the directories and supervisors
//! of each entity kind, and the services every entity is given. It is the [`Postman`]:
//! it knows where every entity lives (activating it if needed) and carries letters,
//! acknowledgements and hand-offs between them. The server talks to entities only
//! through it.

use crate::clock::Entropy;
use crate::codes::CodeMaker;
use crate::config::GameConfig;
use crate::connections::Outbound;
use crate::directory::{Directory, RestartDecision, RestartPolicy};
use crate::error::HubError;
use crate::mail::{
    Address, Body, Delivery, EntityKind, HandOff, MemberRequest, Msg, Postman, RoomSpec,
};
use crate::matchmaker::Matchmaker;
use crate::questions::QuestionBank;
use crate::referral::{TreeEntity, TreeInput};
use crate::room::{RoomEntity, RoomInput};
use crate::runtime::{
    ActivationError, Behaviour, EntityArgs, EntityRuntime, Env, Registry, Services,
};
use crate::seeds::SeedMaker;
use crate::session::{Keyed, PlayerRequest, SessionEntity, SessionInput, SessionWelcome};
use crate::store::Store;
use crate::supervisor::{Children, Supervisor, SupervisorMsg};
use crate::timers::Timers;
use playtree_protocol::{
    ErrorCode, ErrorReply, ReplyBody, Request, RewardState, RoomId, StreamPosition,
};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorRef, MessagingErr, RpcReplyPort};
use std::fmt::Debug;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// One kind's directory, supervisor and the services its entities are given.
#[derive(Debug)]
pub struct Kind<B: Behaviour> {
    pub(crate) directory: Directory<Msg<B::Input>>,
    supervisor: OnceLock<ActorRef<SupervisorMsg>>,
    services: Arc<Services<B::Input>>,
}

#[derive(Debug)]
pub struct HubInner {
    pub config: Arc<GameConfig>,
    pub store: Store,
    /// What decisions read: config, questions, entropy, the matchmaker, the keys.
    pub env: Env,
    /// The one timer that drives every entity's deadline.
    pub timers: Timers,
    sessions: Kind<SessionEntity>,
    rooms: Kind<RoomEntity>,
    trees: Kind<TreeEntity>,
    shutting_down: AtomicBool,
}

/// Cheap to clone.
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

/// What the hub needs of a kind besides its behaviour: where it keeps it, how its ids
/// read back from keys, and what activates it.
pub trait Hosted: Behaviour {
    fn kind(hub: &HubInner) -> &Kind<Self>;
    /// The id a directory key names.
    fn parse(key: &str) -> Option<Self::Id>;
    /// What activates an entity that must already exist (to restart it, to deliver
    /// what it is sent).
    fn finding() -> Self::Start;
    /// What activates the receiver of `message` (a join that opens a room creates it).
    fn start_for(message: &Msg<Self::Input>) -> Self::Start {
        let _ = message;
        Self::finding()
    }
    /// The error for an entity that does not exist.
    fn unknown(_id: &Self::Id) -> Option<HubError> {
        None
    }
}

impl Hosted for SessionEntity {
    fn kind(hub: &HubInner) -> &Kind<Self> {
        &hub.sessions
    }
    fn parse(key: &str) -> Option<String> {
        Some(key.to_owned())
    }
    fn finding() {}
}

impl Hosted for RoomEntity {
    fn kind(hub: &HubInner) -> &Kind<Self> {
        &hub.rooms
    }
    fn parse(key: &str) -> Option<RoomId> {
        key.parse().ok()
    }
    fn finding() -> Option<RoomSpec> {
        None
    }
    fn start_for(message: &Msg<RoomInput>) -> Option<RoomSpec> {
        match message {
            Msg::Letter(Delivery { letter, .. }) => match &letter.body {
                Body::Join(join) => join.spec.clone(),
                _ => None,
            },
            _ => None,
        }
    }
    fn unknown(id: &RoomId) -> Option<HubError> {
        Some(HubError::UnknownRoom(*id))
    }
}

impl Hosted for TreeEntity {
    fn kind(hub: &HubInner) -> &Kind<Self> {
        &hub.trees
    }
    fn parse(key: &str) -> Option<String> {
        Some(key.to_owned())
    }
    fn finding() {}
}

/// The hub as the runtime sees it: a postman, and each kind's registry and children.
#[derive(Debug)]
struct Link(Weak<HubInner>);

impl Link {
    fn hub(&self) -> Option<Hub> {
        self.0.upgrade().map(|inner| Hub { inner })
    }
}

impl Postman for Link {
    fn deliver(&self, delivery: Delivery) {
        if let Some(hub) = self.hub() {
            hub.deliver(delivery);
        }
    }

    fn acknowledge(&self, sender: &Address, by: Address, seqs: Vec<u64>) {
        if let Some(hub) = self.hub() {
            hub.acknowledge(sender, by, seqs);
        }
    }

    fn hand_off(&self, to: Address, hand_off: HandOff) {
        match self.hub() {
            Some(hub) => hub.hand_off(to, hand_off),
            None => hand_off.refuse(HubError::ShuttingDown.to_reply()),
        }
    }
}

/// One kind's registry and children, for its runtime and supervisor.
struct KindLink<B>(Weak<HubInner>, std::marker::PhantomData<fn() -> B>);

impl<B> Debug for KindLink<B> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("KindLink")
    }
}

impl<B: Hosted> Registry<B::Input> for KindLink<B> {
    fn register(&self, actor: ActorId, id: &str) {
        if let Some(hub) = self.0.upgrade() {
            B::kind(&hub).directory.register(actor, id);
        }
    }

    fn mark_draining(&self, actor: ActorId) {
        if let Some(hub) = self.0.upgrade() {
            B::kind(&hub).directory.mark_draining(actor);
        }
    }

    fn redirect(&self, id: &str, message: Msg<B::Input>) {
        if let (Some(inner), Some(id)) = (self.0.upgrade(), B::parse(id)) {
            Hub { inner }.send::<B>(id, message);
        }
    }
}

impl<B: Hosted> Children for KindLink<B> {
    fn failed(&self, actor: ActorId, error: String) {
        if let Some(inner) = self.0.upgrade() {
            Hub { inner }.child_failed::<B>(actor, error);
        }
    }

    fn stopped(&self, actor: ActorId) {
        if let Some(hub) = self.0.upgrade() {
            B::kind(&hub).directory.stopped(actor);
        }
    }
}

/// How often the hub tidies up after itself (dead letters, failure records).
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);

impl Hub {
    /// Builds the hub and starts one supervisor per entity kind. Entities themselves are
    /// activated lazily, on first use, but for those the outbox index says owe letters.
    pub async fn start(
        config: GameConfig,
        store: Store,
        entropy: Arc<dyn Entropy>,
        questions: Arc<QuestionBank>,
    ) -> Result<Hub, HubError> {
        // A config built in code is held to the same limits as one loaded from a file.
        config.validate()?;
        let policy = RestartPolicy {
            restarts_max: config.actors.restarts_max,
            window_ms: config.actors.restart_window_ms,
        };
        let codes = CodeMaker::load_or_create(&store, &*entropy).await?;
        let seeds = SeedMaker::load_or_create(&store, &*entropy).await?;
        let config = Arc::new(config);
        let env = Env {
            config: config.clone(),
            questions,
            entropy,
            matchmaker: Arc::new(Matchmaker::default()),
            codes: Arc::new(codes),
            seeds: Arc::new(seeds),
            ids: Arc::new(store.clone()),
        };
        let timers = Timers::start(store.clock().clone(), config.actors.timer_poll_ms);
        let inner = Arc::new_cyclic(|weak: &Weak<HubInner>| {
            let postman: Arc<dyn Postman> = Arc::new(Link(weak.clone()));
            /// What every kind's entities share.
            struct Shared<'a> {
                weak: &'a Weak<HubInner>,
                env: &'a Env,
                store: &'a Store,
                timers: &'a Timers,
                postman: &'a Arc<dyn Postman>,
            }
            fn kind<B: Hosted>(
                name: &'static str,
                entities_max: usize,
                policy: RestartPolicy,
                shared: &Shared<'_>,
            ) -> Kind<B> {
                Kind {
                    directory: Directory::new(name, entities_max, policy),
                    supervisor: OnceLock::new(),
                    services: Arc::new(Services {
                        env: shared.env.clone(),
                        store: shared.store.clone(),
                        timers: shared.timers.clone(),
                        postman: shared.postman.clone(),
                        registry: Arc::new(KindLink::<B>(
                            shared.weak.clone(),
                            std::marker::PhantomData,
                        )),
                    }),
                }
            }
            let shared = Shared {
                weak,
                env: &env,
                store: &store,
                timers: &timers,
                postman: &postman,
            };
            HubInner {
                sessions: kind("session", config.actors.sessions_max, policy, &shared),
                rooms: kind("room", config.rooms.rooms_max, policy, &shared),
                trees: kind("tree", config.referral.trees_max, policy, &shared),
                config: config.clone(),
                store: store.clone(),
                env,
                timers,
                shutting_down: AtomicBool::new(false),
            }
        });
        let hub = Hub { inner };
        hub.start_supervisor::<SessionEntity>().await?;
        hub.start_supervisor::<RoomEntity>().await?;
        hub.start_supervisor::<TreeEntity>().await?;
        let owed = hub.clone();
        tokio::spawn(async move {
            owed.activate_owing::<RoomEntity>().await;
            owed.activate_owing::<TreeEntity>().await;
            owed.activate_owing::<SessionEntity>().await;
        });
        let tidy = Arc::downgrade(&hub.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(MAINTENANCE_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(inner) = tidy.upgrade() else {
                    return;
                };
                Hub { inner }.maintain().await;
            }
        });
        Ok(hub)
    }

    async fn start_supervisor<B: Hosted>(&self) -> Result<(), HubError> {
        let children: Arc<dyn Children> = Arc::new(KindLink::<B>(
            Arc::downgrade(&self.inner),
            std::marker::PhantomData,
        ));
        let (supervisor, _) = Actor::spawn(None, Supervisor, children)
            .await
            .map_err(|error| HubError::Spawn {
                kind: "supervisor",
                id: B::KIND.into(),
                reason: error.to_string(),
            })?;
        // Invariant: each kind's supervisor is set exactly once, here, at start.
        let _ = B::kind(self).supervisor.set(supervisor);
        Ok(())
    }

    /// What the hub tidies every minute: dead letters beyond what is kept, and the
    /// failure records of entities that have not failed within the restart window.
    async fn maintain(&self) {
        if let Err(error) = self
            .store
            .trim_dead_letters(self.config.store.dead_letters_max)
            .await
        {
            tracing::warn!(%error, "dead letters not trimmed");
        }
        let now_ms = self.now_ms();
        self.sessions.directory.prune_failures(now_ms);
        self.rooms.directory.prune_failures(now_ms);
        self.trees.directory.prune_failures(now_ms);
    }

    /// Activates every entity of kind `B` that the outbox index says owes letters, so
    /// that it delivers them without waiting for traffic. Reads only the index.
    async fn activate_owing<B: Hosted>(&self) -> usize {
        let owing = match self.store.owing(B::KIND).await {
            Ok(owing) => owing,
            Err(error) => {
                tracing::error!(kind = B::KIND, %error, "could not read the outbox index; letters wait for their senders' next activation");
                return 0;
            }
        };
        let mut activated = 0;
        for key in owing {
            let Some(id) = B::parse(&key) else {
                tracing::error!(kind = B::KIND, %key, "the outbox index names an id that does not parse");
                continue;
            };
            match self.activate::<B>(id, B::finding()).await {
                Ok(_) => activated += 1,
                Err(error) => {
                    tracing::warn!(kind = B::KIND, %key, %error, "an entity that owes did not activate")
                }
            }
        }
        metrics::counter!("playtree_owing_entities_activated_total", "kind" => B::KIND)
            .increment(activated as u64);
        activated
    }

    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.config.actors.call_timeout_ms)
    }

    /// Store time now.
    pub fn now_ms(&self) -> u64 {
        self.store.now_ms()
    }

    fn check_running(&self) -> Result<(), HubError> {
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(HubError::ShuttingDown);
        }
        Ok(())
    }

    /// The entity `id` of kind `B`, from its directory or activated with `start`.
    pub async fn activate<B: Hosted>(
        &self,
        id: B::Id,
        start: B::Start,
    ) -> Result<ActorRef<Msg<B::Input>>, HubError> {
        self.check_running()?;
        let kind = B::kind(self);
        let key = id.to_string();
        let followers = kind.directory.followers(&key);
        let services = kind.services.clone();
        let supervisor = kind.supervisor.get().cloned();
        kind.directory
            .get_or_activate(&key, self.now_ms(), self.call_timeout(), move || async move {
                let supervisor = supervisor.ok_or(HubError::ShuttingDown)?;
                let args = EntityArgs::<B> {
                    id: id.clone(),
                    start,
                    followers,
                    services,
                };
                let spawned = Actor::spawn_linked(
                    None,
                    EntityRuntime::<B>::default(),
                    args,
                    supervisor.get_cell(),
                )
                .await;
                match spawned {
                    Ok((actor, _)) => {
                        metrics::counter!("playtree_actor_activations_total", "kind" => B::KIND)
                            .increment(1);
                        Ok(actor)
                    }
                    Err(error) => {
                        let not_found = matches!(
                            &error,
                            ractor::SpawnErr::StartupFailed(inner)
                                if matches!(inner.downcast_ref::<ActivationError>(), Some(ActivationError::Unknown(_)))
                        );
                        Err(not_found
                            .then(|| B::unknown(&id))
                            .flatten()
                            .unwrap_or_else(|| HubError::Spawn {
                                kind: B::KIND,
                                id: id.to_string(),
                                reason: error.to_string(),
                            }))
                    }
                }
            })
            .await
    }

    /// The session of `player`, activated from the store if it is not in memory.
    pub async fn session(&self, player: &str) -> Result<ActorRef<Msg<SessionInput>>, HubError> {
        self.activate::<SessionEntity>(player.to_owned(), ()).await
    }

    /// The room `room`, activated from the store if needed; `spec` creates it when the
    /// store has never heard of it.
    pub async fn room(
        &self,
        room: RoomId,
        spec: Option<RoomSpec>,
    ) -> Result<ActorRef<Msg<RoomInput>>, HubError> {
        self.activate::<RoomEntity>(room, spec).await
    }

    /// The referral tree rooted at `root`, activated from the store if needed.
    pub async fn tree(&self, root: &str) -> Result<ActorRef<Msg<TreeInput>>, HubError> {
        self.activate::<TreeEntity>(root.to_owned(), ()).await
    }

    /// Sends `message` to entity `id` now if it is in memory (in order with what the
    /// sender does next), or from a task that activates it first; what cannot be
    /// delivered is answered or returned (see [`Hub::undeliverable`]).
    pub fn send<B: Hosted>(&self, id: B::Id, message: Msg<B::Input>) {
        let active = B::kind(self).directory.get(&id.to_string());
        let message = match active {
            Some(actor) => match actor.cast(message) {
                Ok(()) => return,
                Err(MessagingErr::SendErr(message)) => message,
                Err(_) => return,
            },
            None => message,
        };
        let hub = self.clone();
        tokio::spawn(async move {
            let mut message = message;
            let mut error = None;
            for _ in 0..3 {
                let actor = match hub.activate::<B>(id.clone(), B::start_for(&message)).await {
                    Ok(actor) => actor,
                    Err(failed) => {
                        error = Some(failed);
                        break;
                    }
                };
                match actor.cast(message) {
                    Ok(()) => return,
                    Err(MessagingErr::SendErr(returned)) => {
                        message = returned;
                        // Only a stopped actor's slot may be freed: one still draining
                        // must not see a second incarnation start beside it.
                        if actor.wait(Some(hub.call_timeout())).await.is_err() {
                            break;
                        }
                        B::kind(&hub).directory.discard_stopped(actor.get_id());
                    }
                    Err(_) => return,
                }
            }
            let error = error.unwrap_or(HubError::Timeout {
                kind: B::KIND,
                id: id.to_string(),
                timeout_ms: hub.call_timeout().as_millis() as u64,
            });
            hub.undeliverable::<B>(&id, message, error);
        });
    }

    /// A message no incarnation of its entity took: a letter to an entity that does not
    /// exist goes back to its sender; a letter that may yet be delivered waits for its
    /// sender's next delivery; a hand-off is answered with the error.
    fn undeliverable<B: Hosted>(&self, id: &B::Id, message: Msg<B::Input>, error: HubError) {
        let gone = matches!(error, HubError::UnknownRoom(_));
        match message {
            Msg::Letter(Delivery { letter, attachment }) => {
                if gone {
                    if let Some(attachment) = attachment {
                        attachment.answer(Err(error.to_reply()));
                    }
                    self.returned(&letter.from, letter.seq, error.to_string());
                } else {
                    tracing::debug!(kind = B::KIND, %id, %error, "a letter was not delivered; its sender delivers it again");
                    if let Some(attachment) = attachment {
                        attachment.answer(Err(ErrorReply::new(
                            ErrorCode::Timeout,
                            format!("{error}; what you asked is still carried out: send it again with the same key for its result"),
                        )));
                    }
                }
            }
            Msg::HandOff(HandOff::Subscribe { player, .. }) if gone => {
                if let Ok(room) = id.to_string().parse() {
                    self.hand_off(Address::Session(player), HandOff::RoomGone { room });
                }
            }
            other => {
                tracing::debug!(kind = B::KIND, %id, %error, "a message was not delivered");
                other.refuse(error.to_reply());
            }
        }
    }

    /// Carries a letter to the entity it names (one attempt: its sender delivers it
    /// again until acknowledged). Entities' letters come through here; tests and tools
    /// may put their own in.
    pub fn deliver(&self, delivery: Delivery) {
        match delivery.letter.to.clone() {
            Address::Session(player) => self.send::<SessionEntity>(player, Msg::Letter(delivery)),
            Address::Room(room) => self.send::<RoomEntity>(room, Msg::Letter(delivery)),
            Address::Tree(root) => self.send::<TreeEntity>(root, Msg::Letter(delivery)),
        }
    }

    /// Tells `sender`, if it is in memory, that `by` recorded its letters. (One not in
    /// memory delivers them again when it comes back, and hears again then.)
    fn acknowledge(&self, sender: &Address, by: Address, seqs: Vec<u64>) {
        fn tell<I: Send + Debug + 'static>(
            directory: &Directory<Msg<I>>,
            key: &str,
            by: Address,
            seqs: Vec<u64>,
        ) {
            if let Some(actor) = directory.get(key) {
                let _ = actor.cast(Msg::Acked { by, seqs });
            }
        }
        let key = sender.key();
        match sender.kind() {
            EntityKind::Session => tell(&self.sessions.directory, &key, by, seqs),
            EntityKind::Room => tell(&self.rooms.directory, &key, by, seqs),
            EntityKind::Tree => tell(&self.trees.directory, &key, by, seqs),
        }
    }

    /// Tells `sender` that its letter `seq` can never be delivered.
    fn returned(&self, sender: &Address, seq: u64, reason: String) {
        match sender.clone() {
            Address::Session(player) => {
                self.send::<SessionEntity>(player, Msg::Returned { seq, reason })
            }
            Address::Room(room) => self.send::<RoomEntity>(room, Msg::Returned { seq, reason }),
            Address::Tree(root) => self.send::<TreeEntity>(root, Msg::Returned { seq, reason }),
        }
    }

    fn hand_off(&self, to: Address, hand_off: HandOff) {
        match to {
            Address::Session(player) => self.send::<SessionEntity>(player, Msg::HandOff(hand_off)),
            Address::Room(room) => self.send::<RoomEntity>(room, Msg::HandOff(hand_off)),
            Address::Tree(root) => self.send::<TreeEntity>(root, Msg::HandOff(hand_off)),
        }
    }

    /// Request and answer with entity `id` of kind `B`, re-resolving if it stopped
    /// meanwhile. For the edge (connections, partners, tests): entities never call.
    pub async fn call<B: Hosted, R: Send + 'static>(
        &self,
        id: B::Id,
        build: impl Fn(RpcReplyPort<R>) -> Msg<B::Input>,
    ) -> Result<R, HubError> {
        let timeout = self.call_timeout();
        let timeout_error = || HubError::Timeout {
            kind: B::KIND,
            id: id.to_string(),
            timeout_ms: timeout.as_millis() as u64,
        };
        for _ in 0..3 {
            let actor = self.activate::<B>(id.clone(), B::finding()).await?;
            match actor.call(&build, Some(timeout)).await {
                Ok(CallResult::Success(reply)) => return Ok(reply),
                Ok(CallResult::Timeout) => return Err(timeout_error()),
                // The reply port was dropped: the entity failed while handling the
                // request, which may have been partly done, so it is not repeated.
                Ok(CallResult::SenderError) => {
                    return Err(HubError::Spawn {
                        kind: B::KIND,
                        id: id.to_string(),
                        reason: "the entity failed while handling the request; it restarts from its last durable state".into(),
                    });
                }
                // The actor stopped before taking the message: resolve again, once it
                // is gone for sure.
                Err(_) => {
                    if actor.wait(Some(timeout)).await.is_err() {
                        return Err(timeout_error());
                    }
                    B::kind(self).directory.discard_stopped(actor.get_id());
                }
            }
        }
        Err(timeout_error())
    }

    /// A connection of `player` opened: it follows the player's stream and rooms.
    pub async fn connect(
        &self,
        player: &str,
        outbound: &Outbound,
        resume: Vec<StreamPosition>,
    ) -> Result<SessionWelcome, ErrorReply> {
        self.call::<SessionEntity, _>(player.to_owned(), |reply| {
            Msg::Input(SessionInput::Connect {
                outbound: outbound.clone(),
                resume: resume.clone(),
                reply,
            })
        })
        .await?
    }

    /// A player's request, answered by whichever entity decides it last.
    pub async fn request(
        &self,
        player: &str,
        request: Request,
        keyed: Option<Keyed>,
        received_ms: u64,
        suspect_source: bool,
    ) -> Result<ReplyBody, ErrorReply> {
        // The leaderboard is an index in the store: no entity needs to wake for it.
        if let Request::GetReferralLeaderboard { limit } = request {
            let limit = limit.min(self.config.referral.leaderboard_max) as usize;
            return crate::referral::leaderboard::top(&self.store, limit)
                .await
                .map(|entries| ReplyBody::ReferralLeaderboard { entries })
                .map_err(|error| ErrorReply::new(ErrorCode::StoreFailure, error.to_string()));
        }
        let code_owner = match &request {
            Request::ClaimReferral { code } => self.code_owner(code).await?,
            _ => None,
        };
        self.call::<SessionEntity, _>(player.to_owned(), |reply| {
            Msg::Input(SessionInput::Request(Box::new(PlayerRequest {
                request: request.clone(),
                keyed,
                received_ms,
                suspect_source,
                code_owner: code_owner.clone(),
                reply,
            })))
        })
        .await?
    }

    /// The player whose referral code `typed` is, if any (from the code index).
    async fn code_owner(&self, typed: &str) -> Result<Option<String>, ErrorReply> {
        let Some(code) = crate::codes::normalize(typed) else {
            return Ok(None);
        };
        let owner = self
            .store
            .get_raw(crate::codes::index_key(&code))
            .await
            .map_err(|error| ErrorReply::new(ErrorCode::StoreFailure, error.to_string()))?;
        owner
            .map(|owner| {
                String::from_utf8(owner).map_err(|_| {
                    ErrorReply::new(ErrorCode::Internal, "a referral code's owner is unreadable")
                })
            })
            .transpose()
    }

    /// A member's chat, reaction or quiz answer, straight to the room (which checks
    /// membership itself).
    pub async fn member_request(&self, member: MemberRequest) -> Result<ReplyBody, ErrorReply> {
        self.call::<RoomEntity, _>(member.room, |reply| {
            Msg::HandOff(HandOff::Member {
                request: member.clone(),
                reply,
            })
        })
        .await?
    }

    /// A partner's conversion report for `player`: how many rewards it made.
    pub async fn report_conversion(
        &self,
        player: &str,
        kind: &str,
        key: &str,
    ) -> Result<u32, ErrorReply> {
        self.call::<SessionEntity, _>(player.to_owned(), |reply| {
            Msg::Input(SessionInput::Conversion {
                kind: kind.to_owned(),
                key: key.to_owned(),
                reply,
            })
        })
        .await?
    }

    /// `player`'s referral statistics, for a partner.
    pub async fn player_stats(&self, player: &str) -> Result<ReplyBody, ErrorReply> {
        self.call::<SessionEntity, _>(player.to_owned(), |reply| {
            Msg::Input(SessionInput::Stats { reply })
        })
        .await?
    }

    /// A partner approves or voids reward `reward` of the tree rooted at `root`.
    pub async fn decide_reward(
        &self,
        root: &str,
        reward: u64,
        approve: bool,
    ) -> Result<RewardState, ErrorReply> {
        self.call::<TreeEntity, _>(root.to_owned(), |reply| {
            Msg::Input(TreeInput::Decide {
                reward,
                approve,
                reply,
            })
        })
        .await?
    }

    /// The player finished a game played outside this server's rooms (benchmarks and
    /// tests): it activates them.
    pub fn game_finished(&self, player: &str) {
        self.send::<SessionEntity>(player.to_owned(), Msg::Input(SessionInput::GameFinished));
    }

    /// Sends a message to a room (tests: its deadline, an injected fault).
    pub fn send_to_room(&self, room: RoomId, message: Msg<RoomInput>) {
        self.send::<RoomEntity>(room, message);
    }

    fn child_failed<B: Hosted>(&self, actor: ActorId, error: String) {
        let kind = B::kind(self);
        let now_ms = self.now_ms();
        let decision = kind.directory.on_failed(actor, now_ms);
        // A failed entity no longer runs its `post_stop` (ractor skips it after a
        // panic): it leaves its indexes here (a room, the matchmaker, so that QuickJoin
        // does not send players to it). A restarted one lists itself again.
        if let RestartDecision::Restart { id } | RestartDecision::GiveUp { id, .. } = &decision
            && let Some(id) = B::parse(id)
        {
            B::unlist(&kind.services.env, &id, actor);
        }
        match decision {
            RestartDecision::Restart { id } => {
                tracing::warn!(kind = B::KIND, %id, %error, "entity failed; restarting from its persisted state");
                metrics::counter!("playtree_actor_restarts_total", "kind" => B::KIND).increment(1);
                // Reactivate now rather than on next use, so that outboxes are
                // delivered again without waiting for traffic.
                let hub = self.clone();
                tokio::spawn(async move {
                    let Some(parsed) = B::parse(&id) else {
                        return;
                    };
                    if let Err(error) = hub.activate::<B>(parsed, B::finding()).await {
                        tracing::error!(kind = B::KIND, %id, %error, "restart failed");
                    }
                });
            }
            RestartDecision::GiveUp { id, failures } => {
                // A caller may have activated a fresh instance meanwhile; it goes too.
                if let Some(actor) = kind.directory.get(&id) {
                    actor.stop(Some("restart intensity exceeded".into()));
                }
                tracing::error!(kind = B::KIND, %id, %error, failures, "entity failed too often; stopped for the restart window");
                metrics::counter!("playtree_actor_given_up_total", "kind" => B::KIND).increment(1);
            }
            RestartDecision::Unknown => {}
        }
    }

    /// Stops every entity gracefully (each drains its mailbox and snapshots, all at
    /// once), then the supervisors, then flushes the store. New activations are
    /// refused from the start.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let wait = Some(self.call_timeout());
        async fn drain_all<I: Send + Debug + 'static>(
            directory: &Directory<Msg<I>>,
            wait: Option<Duration>,
        ) {
            let mut draining = tokio::task::JoinSet::new();
            for actor in directory.actors() {
                draining.spawn(async move {
                    let _ = actor.drain_and_wait(wait).await;
                });
            }
            while draining.join_next().await.is_some() {}
        }
        drain_all(&self.sessions.directory, wait).await;
        drain_all(&self.rooms.directory, wait).await;
        drain_all(&self.trees.directory, wait).await;
        for supervisor in [
            self.sessions.supervisor.get(),
            self.rooms.supervisor.get(),
            self.trees.supervisor.get(),
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
        for room in outbound.rooms() {
            let sent = self.active_room(room).is_some_and(|actor| {
                actor
                    .cast(Msg::HandOff(HandOff::Unsubscribe {
                        player: player.to_owned(),
                        connection,
                    }))
                    .is_ok()
            });
            // A room not in memory is not activated for it: its next incarnation counts
            // every member away until they subscribe again; the connection only leaves
            // its followers.
            if !sent {
                self.rooms
                    .directory
                    .drop_follower(&room.to_string(), player, connection);
            }
        }
        let told = self.active_session(player).is_some_and(|session| {
            session
                .cast(Msg::Input(SessionInput::Disconnect { connection }))
                .is_ok()
        });
        if !told {
            self.sessions
                .directory
                .drop_follower(player, player, connection);
        }
    }

    /// Whether `player` has a connection (their session need not be in memory).
    pub fn is_online(&self, player: &str) -> bool {
        self.sessions.directory.is_followed(player)
    }

    /// The session of `player` if it is active in memory (not activating it).
    pub fn active_session(&self, player: &str) -> Option<ActorRef<Msg<SessionInput>>> {
        self.sessions.directory.get(player)
    }

    /// The room if it is active in memory (not activating it).
    pub fn active_room(&self, room: RoomId) -> Option<ActorRef<Msg<RoomInput>>> {
        self.rooms.directory.get(&room.to_string())
    }

    /// The referral tree if it is active in memory (not activating it).
    pub fn active_tree(&self, root: &str) -> Option<ActorRef<Msg<TreeInput>>> {
        self.trees.directory.get(root)
    }

    /// True once `shutdown` has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// The matchmaker's open rooms.
    pub fn matchmaker(&self) -> &Matchmaker {
        &self.env.matchmaker
    }
}
