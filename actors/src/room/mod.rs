//! Room: one entity per game room, of kind `wheel` or `quiz`. It holds the members and the
//! game state, owns the room's event stream, and is the source of the grants that pay
//! its prizes (outbox, redelivered until acknowledged). Everything here is a pure
//! decision ([`Behaviour::decide`]); the entity runtime does the rest.

mod logic;
mod msg;
pub mod quiz;
mod state;
#[cfg(test)]
mod tests;
mod view;

pub use msg::{MemberRequest, Position, RoomError, RoomMsg, RoomSpec, RoomView, Settled};
pub use state::{RoomEntity, RoomEvent, RoomSetup, RoomState};

use crate::config::GameConfig;
use crate::connections::{ConnectionId, Outbound};
use crate::grant::{Grant, GrantSource};
use crate::hub::{EntityKind, Hub};
use crate::matchmaker::Listing;
use crate::rate::TokenBucket;
use crate::runtime::{ActivationError, Behaviour, Decide, Effect, Env};
use crate::session::{PendingSpin, SessionMsg};
use crate::store::StoreError;
use playtree_protocol::{
    ErrorCode, ErrorReply, Event, GrantId, ReplyBody, RoomId, RoomKind, SpinResult, StreamId,
};
use quiz::{QuizEvent, Stage};
use ractor::ActorId;
use std::collections::{BTreeMap, HashMap};

/// A room's decision context.
type Cx<'a> = Decide<'a, RoomEntity>;

/// What a room keeps in memory only.
#[derive(Debug, Default)]
pub struct RoomMemory {
    /// Members with no live connection, since when (their seat is kept for a grace time).
    away_since_ms: BTreeMap<String, u64>,
    chat_buckets: HashMap<String, TokenBucket>,
    /// When the outbox was last redelivered.
    last_redeliver_ms: u64,
}

/// A room's own effects: its place in the matchmaker (advisory, see [`Effect::Index`]).
#[derive(Debug)]
pub enum RoomEffect {
    List(Listing),
    RegisterCode(String),
}

/// The name of a room kind in metrics.
pub fn kind_name(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Wheel => "wheel",
        RoomKind::Quiz => "quiz",
    }
}

/// Quiz steps one input may take at most (lobby → game → question is the longest chain).
const QUIZ_STEPS_PER_TICK_MAX: usize = 4;

impl Behaviour for RoomEntity {
    type Id = RoomId;
    type Msg = RoomMsg;
    type Memory = RoomMemory;
    type Effect = RoomEffect;
    /// A new room's spec; `None` only finds an existing room.
    type Start = Option<RoomSpec>;

    const ENTITY: EntityKind = EntityKind::Room;

    fn stream(id: &RoomId) -> StreamId {
        StreamId::Room(*id)
    }

    fn must_exist(start: &Option<RoomSpec>) -> bool {
        start.is_none()
    }

    fn activate(cx: &mut Cx<'_>, spec: Option<RoomSpec>) -> Result<(), ActivationError> {
        if cx.state().setup.is_none() {
            let spec = spec.ok_or_else(|| ActivationError::Unknown(format!("room {}", cx.id)))?;
            let inventory = match spec.kind {
                RoomKind::Wheel => {
                    logic::initial_inventory(cx.config().wheel(&spec.variant).ok_or_else(|| {
                        ActivationError::Refused(
                            RoomError::MissingWheel(spec.variant.clone()).to_string(),
                        )
                    })?)
                }
                RoomKind::Quiz => BTreeMap::new(),
            };
            let seed_bytes = cx.env.entropy.server_seed();
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&seed_bytes[..8]);
            cx.emit(RoomEvent::Created {
                inventory,
                setup: RoomSetup {
                    kind: spec.kind,
                    variant: spec.variant,
                    seed: u64::from_le_bytes(seed),
                    private_code: spec.private_code,
                },
            })?;
        }
        let now_ms = cx.now_ms;
        // After an activation nobody is connected yet: every seat starts its grace time.
        cx.memory.away_since_ms = cx
            .state()
            .members
            .iter()
            .map(|m| (m.clone(), now_ms))
            .collect();
        if cx.state().outbox.is_empty() {
            cx.memory.last_redeliver_ms = now_ms;
        } else {
            redeliver(cx);
        }
        update_listing(cx);
        let kind = room_kind(cx.state());
        cx.then(move || {
            metrics::gauge!("playtree_rooms_open", "kind" => kind_name(kind)).increment(1.0);
        });
        Ok(())
    }

    fn decide(cx: &mut Cx<'_>, message: RoomMsg) {
        match message {
            RoomMsg::Join {
                player,
                outbounds,
                reply,
            } => {
                let joined = join(cx, player, outbounds);
                cx.reply(reply, joined);
            }
            RoomMsg::Leave { player, reply } => {
                let left = leave(cx, &player);
                // The one who left may have been the last to answer.
                tick(cx);
                cx.reply(reply, left);
            }
            RoomMsg::Subscribe {
                player,
                outbound,
                position,
            } => subscribe(cx, player, outbound, position),
            RoomMsg::Unsubscribe { player, connection } => unsubscribe(cx, &player, connection),
            RoomMsg::Settle {
                player,
                spin,
                reply,
            } => {
                let settled = settle(cx, player, spin);
                cx.reply(reply, settled);
            }
            RoomMsg::Answer {
                player,
                question,
                choice,
                received_ms,
                reply,
            } => {
                let room = *cx.id;
                let answered = answer(cx, &player, question, choice, received_ms)
                    .map(|()| ReplyBody::AnswerTaken { room, question });
                cx.reply(reply, answered);
            }
            RoomMsg::Chat {
                player,
                text,
                reply,
            } => {
                let sent = chat(cx, &player, text).map(|()| ReplyBody::Sent);
                cx.reply(reply, sent);
            }
            RoomMsg::React {
                player,
                emoji,
                reply,
            } => {
                let sent = react(cx, &player, emoji).map(|()| ReplyBody::Sent);
                cx.reply(reply, sent);
            }
            RoomMsg::GrantAcked { grant } => grant_acked(cx, grant),
            RoomMsg::Deadline => deadline(cx),
            #[cfg(feature = "fault-injection")]
            RoomMsg::InjectFault => panic!("injected fault in room {}", cx.id),
        }
    }

    /// The quiz clock, a seat whose grace time ends, or redelivering the outbox.
    fn next_deadline(env: &Env, state: &RoomState, memory: &RoomMemory) -> Option<u64> {
        let config = &env.config;
        let (quiz, seat) = if room_kind(state) == RoomKind::Quiz {
            let seat = memory
                .away_since_ms
                .values()
                .min()
                .map(|since| since + config.quiz.seat_grace_ms);
            (quiz::next_deadline(&state.quiz), seat)
        } else {
            (None, None)
        };
        let redeliver = (!state.outbox.is_empty())
            .then(|| memory.last_redeliver_ms + config.rooms.outbox_retry_ms);
        crate::timers::earliest([quiz, seat, redeliver])
    }

    fn deadline() -> RoomMsg {
        RoomMsg::Deadline
    }

    fn is_deadline(message: &RoomMsg) -> bool {
        matches!(message, RoomMsg::Deadline)
    }

    fn is_activity(message: &RoomMsg) -> bool {
        matches!(message, RoomMsg::Join { .. } | RoomMsg::Settle { .. })
    }

    fn may_passivate(state: &RoomState, _memory: &RoomMemory) -> bool {
        state.outbox.is_empty()
    }

    fn passivate_after_ms(config: &GameConfig) -> u64 {
        config.rooms.passivate_after_ms
    }

    fn snapshot(cx: &Cx<'_>) -> Event {
        Event::RoomSnapshot(view::snapshot(*cx.id, cx.state(), cx.env))
    }

    fn keeps_follower(state: &RoomState, player: &str) -> bool {
        state.members.contains(player)
    }

    fn followed(room: &RoomId, outbound: &Outbound) {
        outbound.note_room(*room);
    }

    fn unfollowed(room: &RoomId, outbound: &Outbound) {
        outbound.forget_room(*room);
    }

    fn redirect(hub: &Hub, room: &RoomId, message: RoomMsg) {
        let (hub, room) = (hub.clone(), *room);
        tokio::spawn(async move {
            if let Err(error) = hub.cast_room(room, message).await {
                tracing::warn!(room, %error, "a message for a passivating room was not passed on");
            }
        });
    }

    fn perform(hub: &Hub, id: &RoomId, _myself: &ractor::ActorRef<RoomMsg>, effect: RoomEffect) {
        match effect {
            RoomEffect::List(listing) => hub.matchmaker.update(*id, listing),
            RoomEffect::RegisterCode(code) => {
                if !hub.matchmaker.register_code(&code, *id) {
                    // The flow that opened the room checked the code was free; two
                    // rooms opened at once drew the same one. This room cannot be joined
                    // by code; its creator is in it and may leave.
                    tracing::error!(room = id, %code, "private code already held by another room");
                    metrics::counter!("playtree_private_code_collisions_total").increment(1);
                }
            }
        }
    }

    fn unlist(hub: &Hub, id: &RoomId, actor: ActorId) {
        if let Some(listing) = hub.matchmaker.remove(*id, actor) {
            metrics::gauge!("playtree_rooms_open", "kind" => kind_name(listing.kind))
                .decrement(1.0);
        }
    }
}

fn room_kind(state: &RoomState) -> RoomKind {
    state.setup.as_ref().map_or(RoomKind::Wheel, |s| s.kind)
}

fn setup<'s>(cx: &'s Cx<'_>) -> Result<&'s RoomSetup, RoomError> {
    // Invariant: activation refuses to start a room without its Created event.
    cx.state().setup.as_ref().ok_or(RoomError::NotSetUp)
}

fn capacity(cx: &Cx<'_>) -> usize {
    match room_kind(cx.state()) {
        RoomKind::Wheel => cx.config().rooms.wheel_players_max,
        RoomKind::Quiz => cx.config().quiz.players_max,
    }
}

fn persist_error(error: StoreError) -> RoomError {
    RoomError::Store(error.to_string())
}

/// Listed for QuickJoin: public rooms; for quizzes, only while in the lobby.
fn update_listing(cx: &mut Cx<'_>) {
    let state = cx.state();
    let Some(setup) = &state.setup else { return };
    let open = setup.private_code.is_none()
        && (setup.kind == RoomKind::Wheel || state.quiz.stage == Stage::Lobby);
    let listing = Listing {
        kind: setup.kind,
        variant: setup.variant.clone(),
        members: state.members.len(),
        capacity: capacity(cx),
        open,
        owner: cx.actor,
    };
    if let Some(code) = setup.private_code.clone() {
        cx.index(RoomEffect::RegisterCode(code));
    }
    cx.index(RoomEffect::List(listing));
}

fn join(cx: &mut Cx<'_>, player: String, outbounds: Vec<Outbound>) -> Result<RoomView, RoomError> {
    let setup = setup(cx)?.clone();
    let joined = logic::decide_join(
        cx.state(),
        capacity(cx),
        cx.config().quiz.join_started,
        &player,
    )?;
    let seated_now = joined.is_some();
    cx.emit_all(joined).map_err(persist_error)?;
    // A connection that closed on the way is not followed; if all of them did and no
    // other connection of the player follows the room, the player is away from the
    // start (a quiz seat's grace runs).
    let all_closed = !outbounds.is_empty()
        && outbounds.iter().all(Outbound::is_closed)
        && !cx
            .outbounds(&player)
            .iter()
            .any(|outbound| !outbound.is_closed());
    for outbound in outbounds
        .into_iter()
        .filter(|outbound| !outbound.is_closed())
    {
        cx.follow(player.clone(), outbound, Vec::new());
    }
    if all_closed {
        let now_ms = cx.now_ms;
        cx.memory.away_since_ms.insert(player.clone(), now_ms);
    } else {
        cx.memory.away_since_ms.remove(&player);
    }
    let room = *cx.id;
    cx.publish(Event::MemberJoined { room, player });
    if setup.kind == RoomKind::Quiz {
        // The game may start right away now that one more player is here.
        tick(cx);
    }
    update_listing(cx);
    Ok(RoomView {
        seated_now,
        kind: setup.kind,
        variant: setup.variant,
        stream_epoch: cx.stream.epoch(),
        stream_seq: cx.stream.seq(),
        members: cx.state().members.iter().cloned().collect(),
        private_code: setup.private_code,
        snapshot: view::snapshot(room, cx.state(), cx.env),
    })
}

fn leave(cx: &mut Cx<'_>, player: &str) -> Result<(), RoomError> {
    if !cx.state().members.contains(player) {
        return Ok(());
    }
    cx.emit(RoomEvent::MemberLeft {
        player: player.to_owned(),
    })
    .map_err(persist_error)?;
    let room = *cx.id;
    cx.publish(Event::MemberLeft {
        room,
        player: player.to_owned(),
    });
    cx.effect(Effect::UnfollowPlayer {
        player: player.to_owned(),
    });
    cx.memory.away_since_ms.remove(player);
    cx.memory.chat_buckets.remove(player);
    update_listing(cx);
    Ok(())
}

fn subscribe(cx: &mut Cx<'_>, player: String, outbound: Outbound, position: Option<Position>) {
    let room = *cx.id;
    if outbound.is_closed() {
        // It closed on its way here, and its notice may have come first (the gateway
        // closes a connection before it tells the rooms noted on it).
        return unsubscribe(cx, &player, outbound.connection);
    }
    if !cx.state().members.contains(&player) {
        // The seat is gone (grace time over): the session learns it.
        cx.effect(Effect::ToSession {
            player,
            message: SessionMsg::RemovedFromRoom { room },
        });
        return;
    }
    let replay = position.and_then(|(epoch, seq)| cx.stream.replay_after(epoch, seq));
    let frames = match replay {
        Some(frames) => {
            metrics::counter!("playtree_resumes_total", "outcome" => "replayed").increment(1);
            frames
        }
        None => {
            metrics::counter!("playtree_resumes_total", "outcome" => "snapshot").increment(1);
            let snapshot = Event::RoomSnapshot(view::snapshot(room, cx.state(), cx.env));
            vec![cx.stream.snapshot_frame(snapshot)]
        }
    };
    cx.memory.away_since_ms.remove(&player);
    cx.follow(player, outbound, frames);
}

fn unsubscribe(cx: &mut Cx<'_>, player: &str, connection: ConnectionId) {
    let connected = cx
        .outbounds(player)
        .iter()
        .any(|outbound| outbound.connection != connection && !outbound.is_closed());
    // In its turn after a follow decided earlier and still on its way, so that a
    // closed connection is not put back.
    cx.effect(Effect::Unfollow {
        player: player.to_owned(),
        connection,
    });
    if !connected && cx.state().members.contains(player) {
        let now_ms = cx.now_ms;
        cx.memory.away_since_ms.insert(player.to_owned(), now_ms);
    }
}

/// Seat grace, then the quiz clock.
fn tick(cx: &mut Cx<'_>) {
    // Seats are kept and expire in quizzes only (a wheel seat waits for its player).
    if room_kind(cx.state()) != RoomKind::Quiz {
        return;
    }
    expire_seats(cx);
    // One step can make the next one due at once (a podium ending into a lobby that
    // is already full starts the next game): advance until nothing is due now.
    for _ in 0..QUIZ_STEPS_PER_TICK_MAX {
        if !advance_quiz(cx) {
            break;
        }
    }
    update_listing(cx);
}

fn expire_seats(cx: &mut Cx<'_>) {
    let grace_ms = cx.config().quiz.seat_grace_ms;
    let now_ms = cx.now_ms;
    let expired: Vec<String> = cx
        .memory
        .away_since_ms
        .iter()
        .filter(|(_, since)| now_ms.saturating_sub(**since) >= grace_ms)
        .map(|(player, _)| player.clone())
        .collect();
    let room = *cx.id;
    for player in expired {
        if leave(cx, &player).is_ok() {
            cx.effect(Effect::ToSession {
                player,
                message: SessionMsg::RemovedFromRoom { room },
            });
        }
    }
}

/// One step of the quiz clock; says whether anything happened.
fn advance_quiz(cx: &mut Cx<'_>) -> bool {
    let Some(seed) = cx.state().setup.as_ref().map(|s| s.seed) else {
        return false;
    };
    let events = quiz::advance(
        &cx.state().quiz,
        cx.now_ms,
        &cx.config().quiz,
        &cx.state().members,
        seed,
        &cx.env.questions,
    );
    if events.is_empty() {
        return false;
    }
    let finished = events
        .iter()
        .any(|e| matches!(e, QuizEvent::GameFinished { .. }));
    let mut to_persist: Vec<RoomEvent> = events.iter().cloned().map(RoomEvent::Quiz).collect();
    // The players who played the game to its end (a first one activates a referee).
    let played: Vec<String> = if finished {
        quiz::standings(&cx.state().quiz)
            .into_iter()
            .map(|standing| standing.player)
            .collect()
    } else {
        Vec::new()
    };
    if finished {
        let grants = podium_grants(cx);
        if !grants.is_empty() {
            to_persist.push(RoomEvent::GrantsIssued { grants });
        }
    }
    if let Err(error) = cx.emit_all(to_persist) {
        // Refused before anything changed (the store is overloaded or has failed): the
        // clock tries again at the next deadline.
        tracing::error!(room = cx.id, %error, "quiz step not saved");
        return false;
    }
    let room = *cx.id;
    for event in &events {
        if let Some(wire) = view::wire_event(room, cx.state(), cx.env, event) {
            cx.publish(wire);
        }
    }
    if finished {
        cx.then(|| metrics::counter!("playtree_quiz_games_finished_total").increment(1));
        redeliver(cx);
        for player in played {
            cx.effect(Effect::ToSession {
                player,
                message: SessionMsg::GameFinished,
            });
        }
    }
    true
}

/// The room's grants come from one source, numbered by its `GrantCounter`.
fn grant_source(room: RoomId) -> String {
    format!("room:{room}")
}

fn podium_grants(cx: &Cx<'_>) -> Vec<Grant> {
    let state = cx.state();
    let standings = quiz::standings(&state.quiz);
    let source = grant_source(*cx.id);
    let mut counter = state.grants.clone();
    quiz::prizes_for(&standings, &cx.config().quiz.prizes)
        .into_iter()
        .map(|(standing, prize)| {
            let (id, previous) = counter.next(&source, &standing.player);
            let grant = Grant {
                id,
                previous,
                beneficiary: standing.player.clone(),
                amount: prize,
                reason: format!(
                    "quiz rank {} in room {} game {}",
                    standing.rank, cx.id, state.quiz.game_no
                ),
                settles: None,
            };
            counter.issued(&grant);
            grant
        })
        .collect()
}

/// Takes an answer timed at `received_ms` (when it reached the server; never later than
/// now).
fn answer(
    cx: &mut Cx<'_>,
    player: &str,
    question: u32,
    choice: u32,
    received_ms: u64,
) -> Result<(), ErrorReply> {
    if room_kind(cx.state()) != RoomKind::Quiz {
        return Err(ErrorReply::new(
            ErrorCode::WrongRoomKind,
            "this room is not a quiz",
        ));
    }
    let event = quiz::answer(
        &cx.state().quiz,
        player,
        question,
        choice,
        received_ms.min(cx.now_ms),
        &cx.config().quiz,
        &cx.env.questions,
    )?;
    cx.emit(RoomEvent::Quiz(event))
        .map_err(|error| ErrorReply::new(ErrorCode::StoreFailure, error.to_string()))?;
    // When this was the last answer, the reveal comes now rather than at the deadline.
    tick(cx);
    Ok(())
}

fn check_chat_allowed(cx: &mut Cx<'_>, player: &str) -> Result<(), ErrorReply> {
    if !cx.state().members.contains(player) {
        return Err(ErrorReply::new(
            ErrorCode::NotInRoom,
            format!("you are not in room {}", cx.id),
        ));
    }
    let now_ms = cx.now_ms;
    let (per_second, burst) = (
        cx.config().rooms.chat_per_second,
        cx.config().rooms.chat_burst,
    );
    let bucket = cx
        .memory
        .chat_buckets
        .entry(player.to_owned())
        .or_insert_with(|| TokenBucket::new(per_second, burst, now_ms));
    if !bucket.try_take(now_ms) {
        metrics::counter!("playtree_rate_limited_total", "limit" => "chat").increment(1);
        return Err(ErrorReply::new(
            ErrorCode::RateLimited,
            format!("at most {per_second} chat lines or reactions per second; slow down"),
        ));
    }
    Ok(())
}

fn chat(cx: &mut Cx<'_>, player: &str, text: String) -> Result<(), ErrorReply> {
    logic::validate_chat(&text, cx.config().rooms.chat_chars_max)?;
    check_chat_allowed(cx, player)?;
    let room = *cx.id;
    cx.publish(Event::Chat {
        room,
        player: player.to_owned(),
        text,
    });
    cx.then(|| metrics::counter!("playtree_chat_messages_total").increment(1));
    Ok(())
}

fn react(cx: &mut Cx<'_>, player: &str, emoji: String) -> Result<(), ErrorReply> {
    if !cx.config().rooms.reactions.contains(&emoji) {
        return Err(ErrorReply::new(
            ErrorCode::InvalidReaction,
            format!("reactions are: {}", cx.config().rooms.reactions.join(" ")),
        ));
    }
    check_chat_allowed(cx, player)?;
    let room = *cx.id;
    cx.publish(Event::Reaction {
        room,
        player: player.to_owned(),
        emoji,
    });
    Ok(())
}

fn settle(cx: &mut Cx<'_>, player: String, spin: PendingSpin) -> Result<Settled, RoomError> {
    let variant = setup(cx)?.variant.clone();
    let decided = logic::decide_settle(
        cx.state(),
        cx.config().wheel(&variant),
        &grant_source(*cx.id),
        &player,
        &spin,
    )?;
    let Some(event) = decided.event else {
        // A retry of a spin settled before: the same grant, nothing new to journal.
        return Ok(decided.settled);
    };
    cx.emit(event).map_err(persist_error)?;
    let settled = decided.settled;
    let prize = settled.prize;
    cx.then(move || {
        metrics::counter!("playtree_rewards_granted_total", "source" => "wheel").increment(1);
        metrics::counter!("playtree_reward_coins_granted_total", "source" => "wheel")
            .increment(prize);
    });
    let room = *cx.id;
    cx.publish(Event::Spin(SpinResult {
        room,
        player,
        wheel: spin.wheel,
        nonce: spin.nonce,
        client_seed: spin.client_seed,
        commitment: spin.commitment,
        segment: spin.segment,
        label: settled.label.clone(),
        prize: settled.prize,
    }));
    Ok(settled)
}

fn grant_acked(cx: &mut Cx<'_>, grant: GrantId) {
    if !cx.state().outbox.contains_key(&grant) {
        return;
    }
    if let Err(error) = cx.emit(RoomEvent::GrantDelivered {
        grant: grant.clone(),
    }) {
        // The grant stays in the outbox and is redelivered; the wallet dedups it.
        tracing::warn!(room = cx.id, %grant, %error, "delivery not recorded");
    }
}

/// Sends every unacknowledged grant to its wallet once the grants are durable.
fn redeliver(cx: &mut Cx<'_>) {
    cx.memory.last_redeliver_ms = cx.now_ms;
    let room = *cx.id;
    let grants: Vec<Grant> = cx.state().outbox.values().cloned().collect();
    for grant in grants {
        cx.effect(Effect::ToSession {
            player: grant.beneficiary.clone(),
            message: SessionMsg::Credit {
                grant,
                source: GrantSource::Room(room),
            },
        });
    }
}

/// The quiz clock and seat grace; the outbox when its retry time has come.
fn deadline(cx: &mut Cx<'_>) {
    tick(cx);
    let retry_ms = cx.config().rooms.outbox_retry_ms;
    if !cx.state().outbox.is_empty() && cx.now_ms >= cx.memory.last_redeliver_ms + retry_ms {
        redeliver(cx);
    }
}
