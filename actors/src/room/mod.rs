//! Room: one entity per game room, of kind `wheel` or `quiz`. It holds the members and the
//! game state and owns the room's event stream. Players' sessions reach it by letter
//! (a join, a spin to pay, a seat given back); it pays prizes by letter (a credit to
//! the winner's session, in the commit of the decision), and it answers the clients
//! whose joins it decides. Everything here is a pure decision; the runtime does the
//! rest.

mod logic;
mod msg;
pub mod quiz;
mod state;
#[cfg(test)]
mod tests;
mod view;

pub use logic::Prize;
pub use msg::{RoomError, RoomInput};
pub use state::{RoomEntity, RoomEvent, RoomSetup, RoomState};

use crate::config::GameConfig;
use crate::connections::{ConnectionId, Outbound};
use crate::mail::{
    Address, Attachment, Body, Credit, EntityKind, HandOff, JOIN_TRIES_MAX, JoinLetter,
    JoinRefusal, Letter, MemberAction, MemberRequest, Position, RequestReply, Seated, SpinDraw,
    SpinPaid, StoredAnswer,
};
use crate::matchmaker::{Listing, Promise};
use crate::rate::TokenBucket;
use crate::runtime::{ActivationError, Behaviour, Decide, Effect, EffectServices, Env, refusal};
use playtree_protocol::{
    ErrorCode, ErrorReply, Event, QuizJoined, ReplyBody, RoomId, RoomJoined, RoomKind, SpinResult,
    StreamId,
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
    /// Chat and reaction rates, per member (a member's goes when they leave).
    chat_buckets: HashMap<String, TokenBucket>,
}

/// A room's own effects: its place in the matchmaker (advisory, see [`Effect::Index`]).
#[derive(Debug)]
pub enum RoomEffect {
    /// The room's listing, with the promise of the join it just decided (settled in
    /// the same step).
    List(Listing, Option<Promise>),
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
    type Input = RoomInput;
    type Memory = RoomMemory;
    type Effect = RoomEffect;
    /// A new room's spec; `None` only finds an existing room.
    type Start = Option<crate::mail::RoomSpec>;

    const ENTITY: EntityKind = EntityKind::Room;

    fn address(id: &RoomId) -> Address {
        Address::Room(*id)
    }

    fn stream(id: &RoomId) -> StreamId {
        StreamId::Room(*id)
    }

    fn must_exist(start: &Option<crate::mail::RoomSpec>) -> bool {
        start.is_none()
    }

    fn activate(
        cx: &mut Cx<'_>,
        spec: Option<crate::mail::RoomSpec>,
    ) -> Result<(), ActivationError> {
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
        update_listing(cx, None);
        let kind = room_kind(cx.state());
        cx.then(move || {
            metrics::gauge!("playtree_rooms_open", "kind" => kind_name(kind)).increment(1.0);
        });
        Ok(())
    }

    fn decide(_cx: &mut Cx<'_>, input: RoomInput) {
        match input {}
    }

    fn receive(cx: &mut Cx<'_>, letter: Letter, attachment: Option<Attachment>) {
        let Some(player) = letter.from.player().map(str::to_owned) else {
            tracing::error!(room = cx.id, from = %letter.from, "a room takes letters from sessions only");
            return;
        };
        match letter.body {
            Body::Join(join) => join_letter(cx, player, join, attachment),
            Body::Settle(spin) => settle(cx, player, spin),
            Body::Leave => {
                let _ = leave(cx, &player);
                // The one who left may have been the last to answer.
                tick(cx);
            }
            other => {
                tracing::error!(
                    room = cx.id,
                    body = other.name(),
                    "a room got a letter it does not take"
                );
                metrics::counter!("playtree_mail_misdirected_total", "kind" => "room").increment(1);
            }
        }
    }

    fn handed(cx: &mut Cx<'_>, hand_off: HandOff) {
        match hand_off {
            HandOff::Member { request, reply } => member(cx, request, reply),
            HandOff::Subscribe {
                player,
                outbound,
                position,
                welcome,
            } => {
                subscribe(cx, player, outbound, position);
                // The connection's welcome leaves once every room took its subscription.
                drop(welcome);
            }
            HandOff::Unsubscribe { player, connection } => unsubscribe(cx, &player, connection),
            other => {
                let name = other.name();
                other.refuse(ErrorReply::new(
                    ErrorCode::Internal,
                    format!("a room takes no {name} hand-off"),
                ));
            }
        }
    }

    fn on_deadline(cx: &mut Cx<'_>) {
        tick(cx);
    }

    /// The quiz clock, or a seat whose grace time ends.
    fn next_deadline(env: &Env, state: &RoomState, memory: &RoomMemory) -> Option<u64> {
        if room_kind(state) != RoomKind::Quiz {
            return None;
        }
        let seat = memory
            .away_since_ms
            .values()
            .min()
            .map(|since| since + env.config.quiz.seat_grace_ms);
        crate::timers::earliest([quiz::next_deadline(&state.quiz), seat])
    }

    fn is_activity(input: &RoomInput) -> bool {
        match *input {}
    }

    /// A room nobody is in is gone for good once it passivates: nothing refers to it
    /// any more (a session lists only rooms it holds a seat in), so its storage is
    /// collected.
    fn collectable(state: &RoomState) -> bool {
        state.members.is_empty()
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

    fn perform(services: &EffectServices, id: &RoomId, effect: RoomEffect) {
        let matchmaker = &services.env.matchmaker;
        match effect {
            RoomEffect::List(listing, promise) => matchmaker.update_settling(*id, listing, promise),
            RoomEffect::RegisterCode(code) => {
                if !matchmaker.register_code(&code, *id) {
                    // The session that opened the room checked the code was free; two
                    // rooms opened at once drew the same one. This room cannot be joined
                    // by code; its creator is in it and may leave.
                    tracing::error!(room = id, %code, "private code already held by another room");
                    metrics::counter!("playtree_private_code_collisions_total").increment(1);
                }
            }
        }
    }

    fn unlist(env: &Env, id: &RoomId, actor: ActorId) {
        if let Some(listing) = env.matchmaker.remove(*id, actor) {
            metrics::gauge!("playtree_rooms_open", "kind" => kind_name(listing.kind))
                .decrement(1.0);
        }
    }
}

fn room_kind(state: &RoomState) -> RoomKind {
    state.setup.as_ref().map_or(RoomKind::Wheel, |s| s.kind)
}

fn capacity(cx: &Cx<'_>) -> usize {
    match room_kind(cx.state()) {
        RoomKind::Wheel => cx.config().rooms.wheel_players_max,
        RoomKind::Quiz => cx.config().quiz.players_max,
    }
}

/// Listed for QuickJoin: public rooms; for quizzes, only while in the lobby. `promise`:
/// the seat of the join just decided, settled in the same step.
fn update_listing(cx: &mut Cx<'_>, promise: Option<Promise>) {
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
    cx.index(RoomEffect::List(listing, promise));
}

/// A join by letter from the player's session: seated (the client is answered from
/// here, the session by letter), or refused (sent back to the session, which tries
/// another room when this one was full).
fn join_letter(cx: &mut Cx<'_>, player: String, join: JoinLetter, attachment: Option<Attachment>) {
    let (reply, outbounds, promise) = match attachment {
        Some(Attachment::Join {
            reply,
            outbounds,
            promise,
        }) => (Some(reply), outbounds, promise),
        Some(Attachment::Reply(reply)) => (Some(reply), Vec::new(), None),
        None => (None, Vec::new(), None),
    };
    match seat(cx, &player, &join, outbounds, promise) {
        Ok(answer) => {
            let room = *cx.id;
            let result = Ok(answer);
            let seated = Seated {
                room,
                membership: join.membership,
                answer: join
                    .request_key
                    .and_then(|key| StoredAnswer::of(&result).map(|answer| (key, answer))),
            };
            if let Err(error) = cx.send(Address::Session(player), Body::Seated(seated)) {
                tracing::error!(room, %error, "a seat's letter was refused after its letter was taken");
            }
            if let Some(reply) = reply {
                cx.reply(reply, result);
            }
        }
        Err(error) => refuse_join(cx, player, join, reply, error),
    }
}

/// Sends a join this room cannot take back to the player's session.
fn refuse_join(
    cx: &mut Cx<'_>,
    player: String,
    join: JoinLetter,
    reply: Option<RequestReply>,
    error: RoomError,
) {
    let room = *cx.id;
    let mut tried = join.tried;
    tried.push(room);
    let retry = join.quick && error.another_may() && tried.len() < JOIN_TRIES_MAX;
    let error: ErrorReply = if join.quick && error.another_may() && !retry {
        ErrorReply::new(
            ErrorCode::NoRoomAvailable,
            format!(
                "every `{}` room tried was full; try again shortly",
                join.membership.variant
            ),
        )
    } else {
        error.into()
    };
    let refusal_letter = JoinRefusal {
        room,
        membership: join.membership,
        error: error.clone(),
        retry,
        tried,
        request_key: join.request_key,
    };
    // When another room may take the player, the client's reply goes back with the
    // join; otherwise the client hears from here.
    let (attachment, reply) = if retry {
        (reply.map(Attachment::Reply), None)
    } else {
        (None, reply)
    };
    if let Err(failed) = cx.send_answering(
        Address::Session(player),
        Body::JoinRefused(refusal_letter),
        attachment,
    ) {
        tracing::error!(room, error = %failed, "a refused join's letter was refused after its letter was taken");
    }
    if let Some(reply) = reply {
        cx.reply(reply, Err(error));
    }
}

/// Seats `player` if the room's rules allow: the seat, the connections that follow the
/// room with the join, and the answer for the client.
fn seat(
    cx: &mut Cx<'_>,
    player: &str,
    join: &JoinLetter,
    outbounds: Vec<Outbound>,
    promise: Option<Promise>,
) -> Result<ReplyBody, RoomError> {
    let setup = cx.state().setup.clone().ok_or(RoomError::NotSetUp)?;
    if setup.kind != join.membership.kind
        || (setup.kind == RoomKind::Wheel && setup.variant != join.membership.variant)
    {
        return Err(RoomError::WrongKind);
    }
    let joined = logic::decide_join(
        cx.state(),
        capacity(cx),
        cx.config().quiz.join_started,
        player,
    )?;
    if let Some(event) = joined
        && let Err(error) = cx.emit(event)
    {
        // Refused before anything changed: the session hears it and may try again.
        tracing::warn!(room = cx.id, %error, "a seat was not recorded");
        return Err(RoomError::Full {
            capacity: capacity(cx),
        });
    }
    // A connection that closed on the way is not followed; if all of them did and no
    // other connection of the player follows the room, the player is away from the
    // start (a quiz seat's grace runs).
    let all_closed = !outbounds.is_empty()
        && outbounds.iter().all(Outbound::is_closed)
        && !cx
            .outbounds(player)
            .iter()
            .any(|outbound| !outbound.is_closed());
    for outbound in outbounds
        .into_iter()
        .filter(|outbound| !outbound.is_closed())
    {
        cx.follow(player.to_owned(), outbound, Vec::new());
    }
    let now_ms = cx.now_ms;
    if all_closed {
        cx.memory.away_since_ms.insert(player.to_owned(), now_ms);
    } else {
        cx.memory.away_since_ms.remove(player);
    }
    let room = *cx.id;
    cx.publish(Event::MemberJoined {
        room,
        player: player.to_owned(),
    });
    if setup.kind == RoomKind::Quiz {
        // The game may start right away now that one more player is here.
        tick(cx);
    }
    update_listing(cx, promise);
    let stream_epoch = cx.stream.epoch();
    let stream_seq = cx.stream.seq();
    Ok(match setup.kind {
        RoomKind::Wheel => {
            let wheel = cx
                .config()
                .wheel(&setup.variant)
                .ok_or_else(|| RoomError::MissingWheel(setup.variant.clone()))?
                .info();
            let fairness = join.fairness.clone().ok_or(RoomError::WrongKind)?;
            ReplyBody::RoomJoined(RoomJoined {
                room,
                kind: RoomKind::Wheel,
                stream_epoch,
                stream_seq,
                wheel,
                fairness,
                members: cx.state().members.iter().cloned().collect(),
            })
        }
        RoomKind::Quiz => ReplyBody::QuizJoined(QuizJoined {
            room,
            stream_epoch,
            stream_seq,
            code: setup.private_code,
            snapshot: view::snapshot(room, cx.state(), cx.env),
        }),
    })
}

fn leave(cx: &mut Cx<'_>, player: &str) -> Result<(), ErrorReply> {
    if !cx.state().members.contains(player) {
        return Ok(());
    }
    cx.emit(RoomEvent::MemberLeft {
        player: player.to_owned(),
    })
    .map_err(|error| refusal(&error))?;
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
    update_listing(cx, None);
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
        outbound.forget_room(room);
        if let Err(error) = cx.send(Address::Session(player), Body::Unseated { room }) {
            tracing::warn!(room, %error, "a lost seat was not told");
        }
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
    update_listing(cx, None);
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
        if leave(cx, &player).is_ok()
            && let Err(error) = cx.send(Address::Session(player), Body::Unseated { room })
        {
            tracing::warn!(room, %error, "an expired seat was not told");
        }
    }
}

/// One step of the quiz clock; says whether anything happened. A finished game's prizes
/// (credits) and the players' activations (`GameFinished`) are letters in the commit
/// of its podium: a crash cannot separate them.
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
    // Prizes and the players who played to the end, from the standings before the
    // game is closed.
    let (prizes, played) = if finished {
        let standings = quiz::standings(&cx.state().quiz);
        let played: Vec<String> = standings.iter().map(|s| s.player.clone()).collect();
        let game_no = cx.state().quiz.game_no;
        let prizes: Vec<(String, u64, String)> =
            quiz::prizes_for(&standings, &cx.config().quiz.prizes)
                .into_iter()
                .map(|(standing, prize)| {
                    let reason = format!(
                        "quiz rank {} in room {} game {game_no}",
                        standing.rank, cx.id
                    );
                    (standing.player, prize, reason)
                })
                .collect();
        (prizes, played)
    } else {
        (Vec::new(), Vec::new())
    };
    if let Err(error) = cx.emit_all(events.iter().cloned().map(RoomEvent::Quiz)) {
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
        for (player, amount, reason) in prizes {
            pay(cx, player, amount, reason, None, "quiz");
        }
        for player in played {
            if let Err(error) = cx.send(Address::Session(player), Body::GameFinished { room }) {
                tracing::error!(room, %error, "an activation's letter was refused after the podium");
            }
        }
    }
    true
}

/// Pays `amount` to `player`'s wallet by letter.
fn pay(
    cx: &mut Cx<'_>,
    player: String,
    amount: u64,
    reason: String,
    spin: Option<SpinPaid>,
    source: &'static str,
) {
    let credit = Credit {
        amount,
        reason,
        spin,
        news: Vec::new(),
    };
    if let Err(error) = cx.send(Address::Session(player), Body::Credit(credit)) {
        tracing::error!(room = cx.id, %error, "a prize's letter was refused after its decision");
        return;
    }
    cx.then(move || {
        metrics::counter!("playtree_rewards_granted_total", "source" => source).increment(1);
        metrics::counter!("playtree_reward_coins_granted_total", "source" => source)
            .increment(amount);
    });
}

fn member(cx: &mut Cx<'_>, request: MemberRequest, reply: RequestReply) {
    let room = *cx.id;
    let MemberRequest {
        player,
        received_ms,
        action,
        ..
    } = request;
    let result = match action {
        MemberAction::Answer { question, choice } => {
            answer(cx, &player, question, choice, received_ms)
                .map(|()| ReplyBody::AnswerTaken { room, question })
        }
        MemberAction::Chat { text } => chat(cx, &player, text).map(|()| ReplyBody::Sent),
        MemberAction::React { emoji } => react(cx, &player, emoji).map(|()| ReplyBody::Sent),
    };
    cx.reply(reply, result);
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
    if !cx.state().members.contains(player) {
        return Err(ErrorReply::new(
            ErrorCode::NotInRoom,
            format!("you are not in room {}", cx.id),
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
        .map_err(|error| refusal(&error))?;
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

/// Pays a spin the player's session drew: its prize as the room's stock stands, by
/// letter, in the commit that counts the stock down. A spin this room can never pay
/// goes back refused (the session abandons it).
fn settle(cx: &mut Cx<'_>, player: String, spin: SpinDraw) {
    let variant = cx
        .state()
        .setup
        .as_ref()
        .map(|setup| setup.variant.clone())
        .unwrap_or_default();
    let prize = match logic::decide_prize(cx.state(), cx.config().wheel(&variant), &spin) {
        Ok(prize) => prize,
        Err(error) => {
            let body = Body::SpinRefused {
                key: spin.key(),
                reason: error.to_string(),
            };
            if let Err(failed) = cx.send(Address::Session(player), body) {
                tracing::error!(room = cx.id, error = %failed, "a refused spin's letter was refused");
            }
            return;
        }
    };
    if let Err(error) = cx.emit(RoomEvent::SpinSettled {
        player: player.clone(),
        segment: spin.segment,
        inventory_exhausted: prize.inventory_exhausted,
    }) {
        tracing::error!(room = cx.id, %error, "a spin was refused after its letter was taken");
        return;
    }
    let paid = SpinPaid {
        key: spin.key(),
        label: prize.label.clone(),
        inventory_exhausted: prize.inventory_exhausted,
    };
    let reason = format!("wheel {} spin {}: {}", spin.wheel, spin.nonce, prize.label);
    pay(
        cx,
        player.clone(),
        prize.amount,
        reason,
        Some(paid),
        "wheel",
    );
    let room = *cx.id;
    cx.publish(Event::Spin(SpinResult {
        room,
        player,
        wheel: spin.wheel,
        nonce: spin.nonce,
        client_seed: spin.client_seed,
        commitment: spin.commitment,
        segment: spin.segment,
        label: prize.label,
        prize: prize.amount,
    }));
}
