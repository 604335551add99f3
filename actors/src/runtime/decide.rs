//! The entity contract: a kind is a pure state machine. [`Behaviour::decide`] (and its
//! siblings for letters and hand-offs) reads the state and an input and, through a
//! [`Decide`] context, emits events (applied at once, journaled by the runtime in one
//! commit), sends letters (into the outbox, in the same commit) and effects
//! (interpreted by the runtime once the commit before them is durable). It never
//! awaits, does no I/O, reads no clock (`now_ms` comes in) and draws no randomness of
//! its own (`env.entropy` is handed in, seeded in tests). Unit tests drive it with no
//! actor, socket or store.

use super::durable::Stored;
use crate::clock::Entropy;
use crate::codes::CodeMaker;
use crate::config::GameConfig;
use crate::connections::{ConnectionId, Outbound};
use crate::directory::{Followers, followers_of};
use crate::mail::{
    Address, Attachment, Body, Delivery, EntityKind, HandOff, Letter, Post, PostEvent,
};
use crate::matchmaker::Matchmaker;
use crate::questions::QuestionBank;
use crate::release::Deferred;
use crate::seeds::SeedMaker;
use crate::store::{CommitSlot, DeadLetter, Entity, StoreError, WriteOp};
use crate::stream::Stream;
use bytes::Bytes;
use playtree_protocol::{ErrorCode, ErrorReply, Event, StreamId};
use ractor::ActorId;
use std::collections::BTreeSet;
use std::fmt::{self, Debug, Display};
use std::sync::Arc;

/// The answer to a client whose request the store refused before anything changed.
pub fn refusal(error: &StoreError) -> ErrorReply {
    match error {
        StoreError::Overloaded { .. } => ErrorReply::new(
            ErrorCode::RateLimited,
            format!("the server is busy ({error}); nothing was done: try again in a moment"),
        ),
        _ => ErrorReply::new(ErrorCode::StoreFailure, error.to_string()),
    }
}

/// Fresh numbers, unique across restarts (room ids, referral code numbers).
pub trait Ids: Send + Sync + Debug + 'static {
    fn next_id(&self) -> Result<u64, StoreError>;
}

impl Ids for crate::store::Store {
    fn next_id(&self) -> Result<u64, StoreError> {
        self.generate_id()
    }
}

/// What decisions may read besides the state: read-only, the same for every entity.
#[derive(Debug, Clone)]
pub struct Env {
    pub config: Arc<GameConfig>,
    pub questions: Arc<QuestionBank>,
    /// Server seeds and room seeds (operating-system randomness in production, seeded
    /// in tests).
    pub entropy: Arc<dyn Entropy>,
    /// The open rooms QuickJoin picks from: an advisory index, kept by the rooms.
    pub matchmaker: Arc<Matchmaker>,
    /// Makes referral codes (with the key kept in the store).
    pub codes: Arc<CodeMaker>,
    /// Derives players' server seeds (with the key kept in the store).
    pub seeds: Arc<SeedMaker>,
    pub ids: Arc<dyn Ids>,
}

/// Where a stream kept in an entity's state stands: its epoch, its last seq, and its
/// latest events (seq, event) for a client that resumes.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPosition {
    pub epoch: u64,
    pub seq: u64,
    pub recent: Vec<(u64, Event)>,
}

/// One kind of entity, run by [`super::EntityRuntime`].
pub trait Behaviour: Entity + Sized {
    /// The entity's id (a player name, a room number).
    type Id: Clone + Display + Debug + Send + Sync + 'static;
    /// The inputs of the kind's own (from connections, partners, the hub).
    type Input: Send + Debug + 'static;
    /// What the entity keeps in memory only; an activation starts it afresh.
    type Memory: Default + Send + Sync + Debug + 'static;
    /// Effects only this kind has; the runtime hands them back to [`Behaviour::perform`].
    type Effect: Send + Debug + 'static;
    /// What an activation is given besides the id (a new room's spec).
    type Start: Send + Debug + 'static;

    const ENTITY: EntityKind;

    fn address(id: &Self::Id) -> Address;

    /// The entity's own event stream.
    fn stream(id: &Self::Id) -> StreamId;

    /// Whether the entity has a stream that connections follow (a tree has none).
    fn has_stream() -> bool {
        true
    }

    /// A stream kept durably in the state: its epoch, seq and latest events, so that
    /// it goes on across incarnations. `None`: the stream lives in memory and each
    /// incarnation starts a new epoch (its incarnation number, written before the
    /// incarnation publishes anything).
    fn durable_stream(_state: &Self::State) -> Option<StreamPosition> {
        None
    }

    /// Whether activation with `start` may only find the entity, not create it.
    fn must_exist(_start: &Self::Start) -> bool {
        false
    }

    /// A new incarnation: emits what creates the entity if the store had nothing, and
    /// sets up its memory. An error refuses the activation.
    fn activate(cx: &mut Decide<'_, Self>, start: Self::Start) -> Result<(), ActivationError>;

    /// Handles one input of the kind's own.
    fn decide(cx: &mut Decide<'_, Self>, input: Self::Input);

    /// Takes a letter (exactly once: the runtime has checked and records it), with
    /// what travelled beside its first delivery.
    fn receive(cx: &mut Decide<'_, Self>, letter: Letter, attachment: Option<Attachment>);

    /// Takes a hand-off.
    fn handed(cx: &mut Decide<'_, Self>, hand_off: HandOff);

    /// A letter of this entity could never be delivered (its receiver does not exist);
    /// it has left the outbox. By default it goes to the dead letters.
    fn returned(cx: &mut Decide<'_, Self>, letter: Letter, reason: String) {
        let dead = DeadLetter {
            kind: Self::KIND.into(),
            id: cx.id.to_string(),
            what: format!(
                "letter {} ({}) to {}",
                letter.seq,
                letter.body.name(),
                letter.to
            ),
            reason,
        };
        if let Err(error) = cx.dead_letter(dead) {
            tracing::error!(kind = Self::KIND, id = %cx.id, %error, "a returned letter was not filed");
        }
    }

    /// The entity's deadline came (whatever of the runtime's own is due is done first).
    fn on_deadline(_cx: &mut Decide<'_, Self>) {}

    /// The earliest moment the entity has something to do on its own (quinn-proto's
    /// `poll_timeout`); the runtime calls [`Behaviour::on_deadline`] then.
    fn next_deadline(_env: &Env, _state: &Self::State, _memory: &Self::Memory) -> Option<u64> {
        None
    }

    /// Whether `input` shows the entity is in use (it postpones passivation).
    fn is_activity(input: &Self::Input) -> bool;

    /// Whether the entity may passivate once nobody follows it and it was idle long
    /// enough: it waits for nothing (the runtime checks its post office itself).
    fn may_passivate(_state: &Self::State, _memory: &Self::Memory) -> bool {
        true
    }

    /// Whether a passivating entity is gone for good: its storage is collected
    /// instead of snapshotted (a room nobody is in).
    fn collectable(_state: &Self::State) -> bool {
        false
    }

    /// Whether the entity may passivate while connections still follow it: they stay
    /// in the directory, and its next incarnation takes them over. Such a kind must not
    /// need to hear of a follower's connection closing (the hub then only drops the
    /// connection from the directory).
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

    /// Carries out one of the kind's own effects, once the events before it are durable
    /// (or at once, for an [`Effect::Index`]).
    fn perform(_services: &EffectServices, _id: &Self::Id, _effect: Self::Effect) {}

    /// The incarnation `actor` is stopping or has failed: it leaves every index it was
    /// listed in.
    fn unlist(_env: &Env, _id: &Self::Id, _actor: ActorId) {}
}

/// What a kind's own effects may use.
#[derive(Debug, Clone)]
pub struct EffectServices {
    pub env: Env,
    pub store: crate::store::Store,
    pub postman: Arc<dyn crate::mail::Postman>,
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

/// What an effect does; all of them happen once the commits before them are durable,
/// in the order they were pushed (but [`Effect::Index`]).
#[allow(
    clippy::large_enum_variant,
    reason = "effects live only until their commit is durable; most are deliveries"
)]
pub enum Effect<B: Behaviour> {
    /// A frame published on the entity's stream, for every follower of this
    /// incarnation's.
    Publish {
        frame: Bytes,
    },
    /// An answer to a request.
    Reply(Deferred),
    /// `outbound` follows the stream for `player`: `frames` (a replay or a snapshot)
    /// first, then every later frame.
    Follow {
        player: String,
        outbound: Outbound,
        frames: Vec<Bytes>,
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
    /// A letter's first delivery (it is in the outbox of the commit before it).
    Deliver(Delivery),
    /// Tells `sender` its letters `seqs` are recorded here.
    Acknowledge {
        sender: Address,
        seqs: Vec<u64>,
    },
    /// A hand-off to another entity.
    HandOff {
        to: Address,
        hand_off: HandOff,
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
            Effect::Publish { frame } => write!(formatter, "Publish({} bytes)", frame.len()),
            Effect::Reply(_) => formatter.write_str("Reply"),
            Effect::Follow { player, frames, .. } => {
                write!(formatter, "Follow({player}, {} frames)", frames.len())
            }
            Effect::Unfollow { player, connection } => {
                write!(formatter, "Unfollow({player}, {connection:?})")
            }
            Effect::UnfollowPlayer { player } => write!(formatter, "UnfollowPlayer({player})"),
            Effect::Deliver(delivery) => write!(
                formatter,
                "Deliver({} #{} to {})",
                delivery.letter.body.name(),
                delivery.letter.seq,
                delivery.letter.to
            ),
            Effect::Acknowledge { sender, seqs } => {
                write!(formatter, "Acknowledge({sender}, {seqs:?})")
            }
            Effect::HandOff { to, hand_off } => {
                write!(formatter, "HandOff({}, {to})", hand_off.name())
            }
            Effect::Then(_) => formatter.write_str("Then"),
            Effect::Own(effect) => write!(formatter, "Own({effect:?})"),
            Effect::Index(effect) => write!(formatter, "Index({effect:?})"),
        }
    }
}

/// Where the first write of an input takes its place in the commit queue.
pub(crate) enum Gate<'a> {
    /// The entity's journal: a full queue, a failed store or a stopped journal refuse
    /// the input before anything changes.
    Store(&'a crate::store::Store),
    /// The journal must not take more (fenced or diverged).
    Closed,
    /// No store (unit tests): every write is taken.
    #[cfg_attr(not(test), allow(dead_code))]
    Open,
}

/// The context of one decision: what it may read, and where its events, letters and
/// effects go.
pub struct Decide<'a, B: Behaviour> {
    pub id: &'a B::Id,
    pub address: &'a Address,
    pub env: &'a Env,
    pub now_ms: u64,
    /// This incarnation's actor (the owner of its index listings).
    pub actor: ActorId,
    stored: &'a mut Stored<B::State>,
    dirty: &'a mut BTreeSet<String>,
    pub memory: &'a mut B::Memory,
    /// The entity's stream: its history for replays; publish through [`Decide::publish`].
    pub stream: &'a mut Stream,
    followers: &'a Followers,
    gate: Gate<'a>,
    slot: Option<CommitSlot>,
    events: Vec<B::Event>,
    post: Vec<PostEvent>,
    letters: Vec<DeadLetter>,
    writes: Vec<WriteOp>,
    effects: Vec<Effect<B>>,
    /// A write of this decision was refused (the store is overloaded or has failed).
    refused: bool,
}

impl<B: Behaviour> Debug for Decide<'_, B> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Decide")
            .field("id", self.id)
            .field("now_ms", &self.now_ms)
            .field("events", &self.events)
            .field("post", &self.post)
            .field("effects", &self.effects)
            .finish_non_exhaustive()
    }
}

/// What one decision produced.
#[derive(Debug)]
pub struct Decided<B: Behaviour> {
    pub events: Vec<B::Event>,
    pub post: Vec<PostEvent>,
    /// Dead letters filed in the same commit as the events.
    pub letters: Vec<DeadLetter>,
    /// Index entries written in the same commit as the events.
    pub writes: Vec<WriteOp>,
    pub effects: Vec<Effect<B>>,
    pub refused: bool,
    pub(crate) slot: Option<CommitSlot>,
}

impl<B: Behaviour> Decided<B> {
    /// The letters this decision sent.
    pub fn sent(&self) -> Vec<&Letter> {
        self.post
            .iter()
            .filter_map(|event| match event {
                PostEvent::Sent(letter) => Some(letter),
                _ => None,
            })
            .collect()
    }
}

impl<'a, B: Behaviour> Decide<'a, B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: &'a B::Id,
        address: &'a Address,
        env: &'a Env,
        now_ms: u64,
        actor: ActorId,
        stored: &'a mut Stored<B::State>,
        dirty: &'a mut BTreeSet<String>,
        memory: &'a mut B::Memory,
        stream: &'a mut Stream,
        followers: &'a Followers,
        gate: Gate<'a>,
    ) -> Self {
        Decide {
            id,
            address,
            env,
            now_ms,
            actor,
            stored,
            dirty,
            memory,
            stream,
            followers,
            gate,
            slot: None,
            events: Vec::new(),
            post: Vec::new(),
            letters: Vec::new(),
            writes: Vec::new(),
            effects: Vec::new(),
            refused: false,
        }
    }

    /// A context with no store behind it, for unit tests of the kinds' decisions.
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub fn detached(
        id: &'a B::Id,
        address: &'a Address,
        env: &'a Env,
        now_ms: u64,
        stored: &'a mut Stored<B::State>,
        dirty: &'a mut BTreeSet<String>,
        memory: &'a mut B::Memory,
        stream: &'a mut Stream,
        followers: &'a Followers,
    ) -> Self {
        Self::new(
            id,
            address,
            env,
            now_ms,
            ActorId::Local(0),
            stored,
            dirty,
            memory,
            stream,
            followers,
            Gate::Open,
        )
    }

    pub fn state(&self) -> &B::State {
        &self.stored.state
    }

    /// The entity's post office (its outbox and marks).
    pub fn post(&self) -> &Post {
        &self.stored.post
    }

    pub fn config(&self) -> &GameConfig {
        &self.env.config
    }

    /// Applies `event` at once (later reads see it) and journals it with the input's
    /// other events. Only the first write of an input can be refused (the store is
    /// overloaded or has failed), and then nothing has changed: decide every check
    /// before the first emit.
    pub fn emit(&mut self, event: B::Event) -> Result<(), StoreError> {
        self.take_place()?;
        B::apply(&mut self.stored.state, &event);
        B::touched(&self.stored.state, &event, self.dirty);
        self.events.push(event);
        Ok(())
    }

    /// Emits several events (see [`Decide::emit`]).
    pub fn emit_all(
        &mut self,
        events: impl IntoIterator<Item = B::Event>,
    ) -> Result<(), StoreError> {
        events.into_iter().try_for_each(|event| self.emit(event))
    }

    /// Sends `body` to `to`: the letter goes into the outbox in this decision's commit
    /// and is delivered once that is durable (then again until acknowledged). Refused
    /// like a first [`Decide::emit`], or when the outbox is full, before anything
    /// changed.
    pub fn send(&mut self, to: Address, body: Body) -> Result<(), StoreError> {
        self.send_answering(to, body, None)
    }

    /// [`Decide::send`], with what travels beside the letter's first delivery, in
    /// memory (the reply port of the client whose request it carries on).
    pub fn send_answering(
        &mut self,
        to: Address,
        body: Body,
        attachment: Option<Attachment>,
    ) -> Result<(), StoreError> {
        // A full outbox refuses a decision before it changes anything; once a decision
        // has written, its letters all go (an outbox may pass its limit by what one
        // decision sends, never by more).
        let room = if self.writes_anything() {
            Ok(())
        } else {
            self.outbox_room().and_then(|()| self.take_place())
        };
        if let Err(error) = room {
            // Nothing was done: whoever waits hears so.
            self.refused = true;
            if let Some(attachment) = attachment {
                attachment.answer(Err(refusal(&error)));
            }
            return Err(error);
        }
        let letter = self
            .stored
            .post
            .letter(self.address.clone(), to, self.now_ms, body);
        let event = PostEvent::Sent(letter.clone());
        self.stored.post.apply(&event);
        self.post.push(event);
        self.effects
            .push(Effect::Deliver(Delivery { letter, attachment }));
        Ok(())
    }

    /// Refuses a first write while the outbox is full: the entity takes nothing that
    /// could make it send more until its receivers have caught up.
    fn outbox_room(&mut self) -> Result<(), StoreError> {
        let outbox_max = self.env.config.mail.outbox_max;
        if self.stored.post.outbox.len() >= outbox_max {
            metrics::counter!("playtree_mail_outbox_full_total", "kind" => B::KIND).increment(1);
            self.refused = true;
            return Err(StoreError::Overloaded { max: outbox_max });
        }
        Ok(())
    }

    /// Records (in this decision's commit) that `letter` was taken; the runtime does it
    /// before handing the letter to the kind (the first write: refused before anything
    /// changed when the store or the outbox is full, and the sender delivers it again).
    pub(crate) fn record(&mut self, letter: &Letter) -> Result<(), StoreError> {
        self.outbox_room()?;
        self.take_place()?;
        self.post_event(PostEvent::Received {
            from: letter.from.clone(),
            seq: letter.seq,
            previous: letter.previous,
            at_ms: self.now_ms,
        });
        Ok(())
    }

    /// Applies and journals one of the runtime's own post events (after a first write
    /// took the place, or as the first).
    pub(crate) fn post_event(&mut self, event: PostEvent) {
        self.stored.post.apply(&event);
        self.post.push(event);
    }

    /// Takes the decision's place in the commit queue, for the runtime's own writes.
    pub(crate) fn take_place_for_post(&mut self) -> Result<(), StoreError> {
        self.take_place()
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

    /// Whether this decision writes anything.
    pub fn writes_anything(&self) -> bool {
        self.slot.is_some()
            || !self.events.is_empty()
            || !self.post.is_empty()
            || !self.letters.is_empty()
            || !self.writes.is_empty()
    }

    /// Reserves the input's place in the commit queue on its first write.
    fn take_place(&mut self) -> Result<(), StoreError> {
        if self.writes_anything() {
            return Ok(());
        }
        let taken = match &self.gate {
            Gate::Store(store) => store.reserve().map(Some),
            Gate::Closed => Err(StoreError::FailStopped(
                "this incarnation's journal is ahead of the store; it is stopping".into(),
            )),
            Gate::Open => Ok(None),
        };
        match taken {
            Ok(slot) => {
                // No slot without a store (unit tests): the writes themselves show
                // that the decision writes.
                self.slot = slot;
                Ok(())
            }
            Err(error) => {
                self.refused = true;
                Err(error)
            }
        }
    }

    /// Publishes `event` on the entity's stream: numbered and encoded now (kept for
    /// resumes), sent to every follower once what came before is durable.
    pub fn publish(&mut self, event: Event) {
        let frame = self.stream.publish(event);
        self.effects.push(Effect::Publish { frame });
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
        self.effects.push(Effect::Follow {
            player,
            outbound,
            frames,
        });
    }

    /// Passes `hand_off` to `to` once what this decision did is durable.
    pub fn hand_off(&mut self, to: Address, hand_off: HandOff) {
        self.effects.push(Effect::HandOff { to, hand_off });
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
            post: self.post,
            letters: self.letters,
            writes: self.writes,
            effects: self.effects,
            refused: self.refused,
            slot: self.slot,
        }
    }
}
