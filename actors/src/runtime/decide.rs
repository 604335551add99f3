//! The entity contract: a kind is a pure state machine. [`Behaviour::decide`] reads the
//! state and an input and, through a [`Decide`] context, emits events (applied at once,
//! journaled by the runtime) and effects (interpreted by the runtime once the events
//! before them are durable). It never awaits, does no I/O, reads no clock (`now_ms`
//! comes in) and draws no randomness of its own (`env.entropy` is handed in, seeded in
//! tests). Unit tests drive it with no actor, socket or store.

use crate::clock::Entropy;
use crate::config::GameConfig;
use crate::connections::{ConnectionId, Outbound};
use crate::directory::{Followers, followers_of};
use crate::hub::{EntityKind, Hub};
use crate::questions::QuestionBank;
use crate::referral::TreeMsg;
use crate::release::Deferred;
use crate::room::RoomMsg;
use crate::session::SessionMsg;
use crate::store::{CommitSlot, DeadLetter, Entity, StoreError, WriteOp, encode_value};
use crate::stream::Stream;
use bytes::Bytes;
use playtree_protocol::{Event, RoomId, StreamId};
use ractor::ActorId;
use std::fmt::{self, Debug, Display};
use std::sync::Arc;

/// What decisions may read besides the state: read-only, the same for every entity.
#[derive(Debug, Clone)]
pub struct Env {
    pub config: Arc<GameConfig>,
    pub questions: Arc<QuestionBank>,
    /// Server seeds (operating-system randomness in production, seeded in tests).
    pub entropy: Arc<dyn Entropy>,
}

impl Env {
    pub fn of(hub: &Hub) -> Env {
        Env {
            config: hub.config.clone(),
            questions: hub.questions.clone(),
            entropy: hub.entropy.clone(),
        }
    }
}

/// One kind of entity, run by [`super::EntityRuntime`].
pub trait Behaviour: Entity + Sized {
    /// The entity's id (a player name, a room number).
    type Id: Clone + Display + Debug + Send + Sync + 'static;
    /// Everything the entity takes: requests, answers to what it asked, its deadline.
    type Msg: ractor::Message;
    /// What the entity keeps in memory only; an activation starts it afresh.
    type Memory: Default + Send + Sync + Debug + 'static;
    /// Effects only this kind has; the runtime hands them back to [`Behaviour::perform`].
    type Effect: Send + Debug + 'static;
    /// What an activation is given besides the id (a new room's spec).
    type Start: Send + Debug + 'static;

    const ENTITY: EntityKind;

    /// The entity's own event stream.
    fn stream(id: &Self::Id) -> StreamId;

    /// Whether activation with `start` may only find the entity, not create it.
    fn must_exist(_start: &Self::Start) -> bool {
        false
    }

    /// A new incarnation: emits what creates the entity if the store had nothing, and
    /// sets up its memory. An error refuses the activation.
    fn activate(cx: &mut Decide<'_, Self>, start: Self::Start) -> Result<(), ActivationError>;

    /// Handles one input.
    fn decide(cx: &mut Decide<'_, Self>, input: Self::Msg);

    /// The earliest moment the entity has something to do on its own (quinn-proto's
    /// `poll_timeout`); the runtime sends it [`Behaviour::deadline`] then.
    fn next_deadline(env: &Env, state: &Self::State, memory: &Self::Memory) -> Option<u64>;

    /// The input that tells the entity its deadline came.
    fn deadline() -> Self::Msg;

    /// Whether `input` is [`Behaviour::deadline`]'s.
    fn is_deadline(input: &Self::Msg) -> bool;

    /// Whether `input` shows the entity is in use (it postpones passivation).
    fn is_activity(input: &Self::Msg) -> bool;

    /// Whether the entity may passivate once nobody follows it and it was idle long
    /// enough: it owes nothing and waits for nothing.
    fn may_passivate(state: &Self::State, memory: &Self::Memory) -> bool;

    /// Whether the entity may passivate while connections still follow it: they stay
    /// in the directory, and its next incarnation resyncs them with a snapshot in a new
    /// epoch. Such a kind must not need to hear of a follower's connection closing (the
    /// hub then only drops the connection from the directory).
    fn passivates_while_followed() -> bool {
        false
    }

    /// How long the entity stays in memory unused.
    fn passivate_after_ms(config: &GameConfig) -> u64;

    /// How many events its stream keeps for resuming clients.
    fn history_len(config: &GameConfig) -> usize {
        config.rooms.history_len
    }

    /// What a follower that lost track of the stream gets: where the entity stands.
    fn snapshot(cx: &Decide<'_, Self>) -> Event;

    /// Whether `player`'s connections still follow the entity in a new incarnation.
    fn keeps_follower(state: &Self::State, player: &str) -> bool;

    /// `outbound` now follows the entity, or no longer does (the connection keeps
    /// track of what it follows, for when it closes).
    fn followed(_id: &Self::Id, _outbound: &Outbound) {}
    fn unfollowed(_id: &Self::Id, _outbound: &Outbound) {}

    /// Sends `message` to the entity's next incarnation: this one is passivating and
    /// must not start anything new (a flow it started would end in an incarnation that
    /// has forgotten it). The directory makes the send wait until this one has stopped.
    fn redirect(hub: &Hub, id: &Self::Id, message: Self::Msg);

    /// Carries out one of the kind's own effects, once the events before it are durable;
    /// `myself` is the incarnation that decided it.
    fn perform(
        hub: &Hub,
        id: &Self::Id,
        myself: &ractor::ActorRef<Self::Msg>,
        effect: Self::Effect,
    );

    /// The incarnation `actor` is stopping or has failed: it leaves every index it was
    /// listed in.
    fn unlist(_hub: &Hub, _id: &Self::Id, _actor: ActorId) {}
}

/// Why an entity could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("{0} does not exist")]
    Unknown(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an effect does; all of them happen once the events before them are durable,
/// in the order they were pushed.
pub enum Effect<B: Behaviour> {
    /// A frame published on the entity's stream, for every follower of this epoch.
    Publish {
        frame: Bytes,
        epoch: u64,
    },
    /// An answer to a request.
    Reply(Deferred),
    /// `outbound` follows the stream for `player`: `frames` (a replay or a snapshot)
    /// first, then every later frame; a newer incarnation asks it to resume instead.
    Follow {
        player: String,
        outbound: Outbound,
        frames: Vec<Bytes>,
        epoch: u64,
    },
    /// One connection stops following.
    Unfollow {
        player: String,
        connection: ConnectionId,
    },
    /// Every connection of `player` stops following.
    UnfollowPlayer {
        player: String,
    },
    ToSession {
        player: String,
        message: SessionMsg,
    },
    ToRoom {
        room: RoomId,
        message: RoomMsg,
    },
    /// To the referral tree whose root is `root`.
    ToTree {
        root: String,
        message: TreeMsg,
    },
    /// Bookkeeping that must count only what became durable (metrics).
    Then(Deferred),
    Own(B::Effect),
    /// One of the kind's own effects on an advisory index (the matchmaker), performed as
    /// soon as the decision is made, not once durable: a listing must not lag behind
    /// the seats a room has given, or concurrent joins pile onto a room already full.
    /// Nothing relies on it being durable; the entity checks every request itself.
    Index(B::Effect),
}

impl<B: Behaviour> Debug for Effect<B> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Publish { epoch, frame } => {
                write!(formatter, "Publish({epoch}, {} bytes)", frame.len())
            }
            Effect::Reply(_) => formatter.write_str("Reply"),
            Effect::Follow { player, frames, .. } => {
                write!(formatter, "Follow({player}, {} frames)", frames.len())
            }
            Effect::Unfollow { player, connection } => {
                write!(formatter, "Unfollow({player}, {connection:?})")
            }
            Effect::UnfollowPlayer { player } => write!(formatter, "UnfollowPlayer({player})"),
            Effect::ToSession { player, message } => {
                write!(formatter, "ToSession({player}, {message:?})")
            }
            Effect::ToRoom { room, message } => write!(formatter, "ToRoom({room}, {message:?})"),
            Effect::ToTree { root, message } => write!(formatter, "ToTree({root}, {message:?})"),
            Effect::Then(_) => formatter.write_str("Then"),
            Effect::Own(effect) => write!(formatter, "Own({effect:?})"),
            Effect::Index(effect) => write!(formatter, "Index({effect:?})"),
        }
    }
}

/// Where the first event of an input takes its place in the commit queue.
pub(crate) enum Gate<'a> {
    /// The entity's journal: a full queue, a failed store or a stopped journal refuse
    /// the input before anything changes.
    Store(&'a crate::store::Store),
    /// The journal must not take more (fenced or diverged).
    Closed,
    /// No store (unit tests): every event is taken.
    Open,
}

/// The context of one decision: what it may read, and where its events and effects go.
pub struct Decide<'a, B: Behaviour> {
    pub id: &'a B::Id,
    pub env: &'a Env,
    pub now_ms: u64,
    /// This incarnation's actor (the owner of its index listings).
    pub actor: ActorId,
    state: &'a mut B::State,
    pub memory: &'a mut B::Memory,
    /// The entity's stream: its history for replays; publish through [`Decide::publish`].
    pub stream: &'a mut Stream,
    followers: &'a Followers,
    gate: Gate<'a>,
    slot: Option<CommitSlot>,
    events: Vec<B::Event>,
    encoded: Vec<Vec<u8>>,
    letters: Vec<DeadLetter>,
    writes: Vec<WriteOp>,
    effects: Vec<Effect<B>>,
}

impl<B: Behaviour> Debug for Decide<'_, B> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Decide")
            .field("id", self.id)
            .field("now_ms", &self.now_ms)
            .field("events", &self.events)
            .field("effects", &self.effects)
            .finish_non_exhaustive()
    }
}

/// What one decision produced.
#[derive(Debug)]
pub struct Decided<B: Behaviour> {
    pub events: Vec<B::Event>,
    /// Dead letters filed in the same commit as the events.
    pub letters: Vec<DeadLetter>,
    /// Index entries written in the same commit as the events.
    pub writes: Vec<WriteOp>,
    pub effects: Vec<Effect<B>>,
    pub(crate) encoded: Vec<Vec<u8>>,
    pub(crate) slot: Option<CommitSlot>,
}

impl<'a, B: Behaviour> Decide<'a, B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: &'a B::Id,
        env: &'a Env,
        now_ms: u64,
        actor: ActorId,
        state: &'a mut B::State,
        memory: &'a mut B::Memory,
        stream: &'a mut Stream,
        followers: &'a Followers,
        gate: Gate<'a>,
    ) -> Self {
        Decide {
            id,
            env,
            now_ms,
            actor,
            state,
            memory,
            stream,
            followers,
            gate,
            slot: None,
            events: Vec::new(),
            encoded: Vec::new(),
            letters: Vec::new(),
            writes: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// A context with no store behind it, for unit tests of `decide`.
    #[allow(clippy::too_many_arguments)]
    pub fn detached(
        id: &'a B::Id,
        env: &'a Env,
        now_ms: u64,
        state: &'a mut B::State,
        memory: &'a mut B::Memory,
        stream: &'a mut Stream,
        followers: &'a Followers,
    ) -> Self {
        Self::new(
            id,
            env,
            now_ms,
            ActorId::Local(0),
            state,
            memory,
            stream,
            followers,
            Gate::Open,
        )
    }

    pub fn state(&self) -> &B::State {
        self.state
    }

    pub fn config(&self) -> &GameConfig {
        &self.env.config
    }

    /// Applies `event` at once (later reads see it) and journals it with the input's
    /// other events. Only the first event of an input can be refused (the store is
    /// overloaded or has failed), and then nothing has changed: decide every check
    /// before the first emit.
    pub fn emit(&mut self, event: B::Event) -> Result<(), StoreError> {
        self.take_place()?;
        let encoded = encode_value(&event)?;
        B::apply(self.state, &event);
        self.events.push(event);
        self.encoded.push(encoded);
        Ok(())
    }

    /// Files `letter` in the same commit as the input's events: atomic with what it
    /// records (a spin abandoned and its letter are durable together or not at all).
    /// Refused like a first [`Decide::emit`], before anything changed.
    pub fn dead_letter(&mut self, letter: DeadLetter) -> Result<(), StoreError> {
        self.take_place()?;
        self.letters.push(letter);
        Ok(())
    }

    /// Writes `op` (an index entry kept beside the entity, such as a referral code's
    /// owner) in the same commit as the input's events. Refused like a first
    /// [`Decide::emit`], before anything changed.
    pub fn write(&mut self, op: WriteOp) -> Result<(), StoreError> {
        self.take_place()?;
        self.writes.push(op);
        Ok(())
    }

    /// Reserves the input's place in the commit queue on its first write.
    fn take_place(&mut self) -> Result<(), StoreError> {
        if !self.events.is_empty() || !self.letters.is_empty() || !self.writes.is_empty() {
            return Ok(());
        }
        self.slot = match &self.gate {
            Gate::Store(store) => Some(store.reserve()?),
            Gate::Closed => {
                return Err(StoreError::FailStopped(
                    "this incarnation's journal is ahead of the store; it is stopping".into(),
                ));
            }
            Gate::Open => None,
        };
        Ok(())
    }

    /// Emits several events (see [`Decide::emit`]).
    pub fn emit_all(
        &mut self,
        events: impl IntoIterator<Item = B::Event>,
    ) -> Result<(), StoreError> {
        events.into_iter().try_for_each(|event| self.emit(event))
    }

    /// Publishes `event` on the entity's stream: numbered and encoded now (kept for
    /// resumes), sent to every follower once what came before is durable.
    pub fn publish(&mut self, event: Event) {
        let frame = self.stream.publish(event);
        let epoch = self.stream.epoch();
        self.effects.push(Effect::Publish { frame, epoch });
    }

    /// Answers a request once what it did is durable.
    pub fn reply<T: Send + 'static>(&mut self, port: ractor::RpcReplyPort<T>, value: T) {
        self.effects.push(Effect::Reply(Box::new(move || {
            // A caller that stopped waiting has nothing left to tell.
            let _ = port.send(value);
        })));
    }

    /// `outbound` follows the stream for `player` from here: `frames` first.
    pub fn follow(&mut self, player: String, outbound: Outbound, frames: Vec<Bytes>) {
        let epoch = self.stream.epoch();
        self.effects.push(Effect::Follow {
            player,
            outbound,
            frames,
            epoch,
        });
    }

    /// Counts or records something once the events so far are durable.
    pub fn then(&mut self, action: impl FnOnce() + Send + 'static) {
        self.effects.push(Effect::Then(Box::new(action)));
    }

    pub fn effect(&mut self, effect: Effect<B>) {
        self.effects.push(effect);
    }

    pub fn own(&mut self, effect: B::Effect) {
        self.effects.push(Effect::Own(effect));
    }

    /// Updates an advisory index at once (see [`Effect::Index`]).
    pub fn index(&mut self, effect: B::Effect) {
        self.effects.push(Effect::Index(effect));
    }

    /// The live connections of `player` following the entity (its runtime's own list).
    pub fn outbounds(&self, player: &str) -> Vec<Outbound> {
        followers_of(self.followers).outbounds(player)
    }

    /// How many live connections `player` has on the entity's stream.
    pub fn live_connections(&self, player: &str) -> usize {
        followers_of(self.followers).live(player)
    }

    /// Whether any connection follows the entity.
    pub fn is_followed(&self) -> bool {
        !followers_of(self.followers).is_empty()
    }

    pub fn finish(self) -> Decided<B> {
        Decided {
            events: self.events,
            letters: self.letters,
            writes: self.writes,
            effects: self.effects,
            encoded: self.encoded,
            slot: self.slot,
        }
    }
}
