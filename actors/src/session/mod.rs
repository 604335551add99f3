//! PlayerSession: one entity per player id. It owns the wallet, the provably fair state
//! per wheel, daily quotas, room memberships, the player's place in the referral
//! system, the player's own stream and their idempotency keys. It is activated by a
//! connection, a request or a letter, and passivated when idle.
//!
//! Everything here is a pure decision. What needs another entity goes by letter, in the
//! commit of the decision that sends it: a spin is drawn here and sent to its room to be
//! paid (the room's credit comes back by letter, and the client's answer leaves with
//! it); a join is sent to the room, which seats the player and answers the client; a
//! claim is sent to the code's owner (see `crate::claim`). The session never waits for
//! another entity: what waits is the client's reply port, in memory.

mod joins;
mod keys;
mod logic;
mod msg;
mod referral;
mod state;
#[cfg(test)]
mod tests;
mod wallet;

pub use keys::{Keep, Keys, Seen};
pub use msg::{Keyed, PlayerRequest, SessionInput, SessionWelcome};
pub use state::{PlayerItem, PlayerStream, SessionEntity, SessionEvent, SessionState, WheelState};

use crate::config::GameConfig;
use crate::connections::{ConnectionId, Outbound};
use crate::mail::{
    Address, AfterAll, Attachment, Body, EntityKind, HandOff, Letter, MemberRequest, RequestReply,
    SpinKey, StoredAnswer,
};
use crate::runtime::{ActivationError, Behaviour, Decide, Effect, Env, StreamPosition, refusal};
use joins::JoinUnderWay;
use playtree_protocol::{
    ErrorCode, ErrorReply, Event, ReferralStats, ReplyBody, Request, RoomId, RoomKind, StreamId,
};
use std::collections::BTreeMap;

/// A session's decision context.
type Cx<'a> = Decide<'a, SessionEntity>;

/// The variant name of quiz rooms (there is one kind of quiz so far).
pub const QUIZ_VARIANT: &str = "quiz";

/// What a session keeps in memory only: replies that wait for a letter, and the joins
/// under way.
#[derive(Debug, Default)]
pub struct SessionMemory {
    /// Spins this incarnation drew, waiting for their prize: the client's reply.
    spin_replies: BTreeMap<SpinKey, RequestReply>,
    /// Joins under way, by kind and variant, with the requests waiting behind them.
    joins: BTreeMap<(RoomKind, String), JoinUnderWay>,
    /// Claims asked again while the player's claim is under way: they get its answer.
    claim_waiters: Vec<RequestReply>,
    /// Keyed requests sent again while under way: they get the first one's answer.
    key_waiters: BTreeMap<u64, Vec<RequestReply>>,
    /// The connections this incarnation accepted and has not seen close, as decided
    /// (the followers list changes only once effects are released).
    connections: BTreeMap<ConnectionId, Outbound>,
}

/// A session's own effects.
#[derive(Debug)]
pub enum SessionEffect {}

impl Behaviour for SessionEntity {
    type Id = String;
    type Input = SessionInput;
    type Memory = SessionMemory;
    type Effect = SessionEffect;
    type Start = ();

    const ENTITY: EntityKind = EntityKind::Session;

    fn address(player: &String) -> Address {
        Address::Session(player.clone())
    }

    fn stream(player: &String) -> StreamId {
        StreamId::Player(player.clone())
    }

    fn durable_stream(state: &SessionState) -> Option<StreamPosition> {
        let stream = &state.stream;
        Some(StreamPosition {
            epoch: stream.epoch,
            seq: stream.seq,
            recent: stream
                .recent
                .iter()
                .map(|(seq, item)| (*seq, item.event()))
                .collect(),
        })
    }

    fn history_len(config: &GameConfig) -> usize {
        config.session.stream_history_len
    }

    fn activate(_cx: &mut Cx<'_>, _start: ()) -> Result<(), ActivationError> {
        Ok(())
    }

    fn decide(cx: &mut Cx<'_>, input: SessionInput) {
        match input {
            SessionInput::Connect {
                outbound,
                resume,
                reply,
            } => connect(cx, outbound, &resume, reply),
            // The player's rooms hear of it from the hub (`Hub::connection_closed`),
            // which tells them without this session when it is passivated.
            SessionInput::Disconnect { connection } => {
                cx.memory.connections.remove(&connection);
                cx.effect(Effect::Unfollow {
                    player: cx.id.clone(),
                    connection,
                });
            }
            SessionInput::Request(request) => request_arrived(cx, *request),
            SessionInput::Conversion { kind, key, reply } => {
                referral::conversion(cx, kind, key, reply)
            }
            SessionInput::Stats { reply } => referral::stats(cx, reply),
            SessionInput::GameFinished => referral::game_finished(cx),
        }
    }

    fn receive(cx: &mut Cx<'_>, letter: Letter, attachment: Option<Attachment>) {
        let from = letter.from.clone();
        let grant_id = letter.grant_id();
        match letter.body {
            Body::Credit(credit) => wallet::credit(cx, grant_id.to_string(), credit),
            Body::SpinRefused { key, reason } => wallet::spin_refused(cx, &key, reason),
            Body::Seated(seated) => joins::seated(cx, seated),
            Body::JoinRefused(refusal) => joins::refused(cx, refusal, attachment),
            Body::Unseated { room } => joins::unseated(cx, room),
            Body::GameFinished { .. } => referral::game_finished(cx),
            Body::News(news) => wallet::news(cx, news),
            Body::AcceptReferee { referee, suspect } => {
                referral::accept_referee(cx, &from, referee, suspect, attachment)
            }
            Body::ClaimAnswered(answer) => referral::claim_answered(cx, answer),
            Body::RefereeAnswered { referee, attached } => {
                referral::referee_answered(cx, referee, attached)
            }
            other => misdirected(cx, &from, other.name()),
        }
    }

    fn handed(cx: &mut Cx<'_>, hand_off: HandOff) {
        match hand_off {
            HandOff::RoomGone { room } => joins::unseated(cx, room),
            other => {
                let name = other.name();
                other.refuse(ErrorReply::new(
                    ErrorCode::Internal,
                    format!("a player's session takes no {name} hand-off"),
                ));
            }
        }
    }

    fn on_deadline(cx: &mut Cx<'_>) {
        joins::forget_overdue(cx);
    }

    /// A join handed to a room that has not answered in `session.join_wait_ms`.
    fn next_deadline(env: &Env, _state: &SessionState, memory: &SessionMemory) -> Option<u64> {
        memory
            .joins
            .values()
            .map(|join| join.since_ms + env.config.session.join_wait_ms)
            .min()
    }

    fn is_activity(input: &SessionInput) -> bool {
        // Not a disconnect: it neither postpones passivation nor is passed on by a
        // passivating incarnation (which drops the connection itself).
        !matches!(input, SessionInput::Disconnect { .. })
    }

    fn may_passivate(_state: &SessionState, memory: &SessionMemory) -> bool {
        memory.spin_replies.is_empty()
            && memory.joins.is_empty()
            && memory.claim_waiters.is_empty()
            && memory.key_waiters.is_empty()
    }

    fn passivate_after_ms(config: &GameConfig) -> u64 {
        config.session.passivate_after_ms
    }

    /// A player who stays connected but does nothing holds no session in memory: their
    /// connections stay in the directory, and whatever reaches the player next (a
    /// request, a letter) activates the session again, whose stream goes on where it
    /// stood (it is durable). Their rooms hear of a closed connection from the hub.
    fn passivates_while_followed() -> bool {
        true
    }

    fn snapshot(cx: &Cx<'_>) -> Event {
        Event::PlayerSnapshot {
            balance: cx.state().balance,
        }
    }

    fn keeps_follower(_state: &SessionState, _player: &str) -> bool {
        // Every follower is the player.
        true
    }
}

/// A letter no session takes reached one: recorded (so it is not delivered again) and
/// logged.
fn misdirected(cx: &Cx<'_>, from: &Address, body: &str) {
    tracing::error!(player = %cx.id, %from, body, "a session got a letter it does not take");
    metrics::counter!("playtree_mail_misdirected_total", "kind" => "session").increment(1);
}

fn not_in_room(room: RoomId) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::NotInRoom,
        format!("you are not in room {room}; QuickJoin a room first"),
    )
}

/// How long and how many keys are kept.
fn keep(config: &GameConfig) -> Keep {
    Keep {
        span_ms: config.session.keys_kept_ms,
        max: config.session.keys_max,
    }
}

/// A request that changes the player's state: its key is kept durably.
fn changes_state(request: &Request) -> bool {
    matches!(
        request,
        Request::Spin { .. }
            | Request::QuickJoin { .. }
            | Request::CreatePrivate { .. }
            | Request::JoinPrivate { .. }
            | Request::LeaveRoom { .. }
            | Request::RotateSeed { .. }
            | Request::ClaimReferral { .. }
    )
}

/// Takes `keyed`'s key in this decision (before its first write, or after one: it
/// cannot then be refused). The answer comes later ([`key_answered`]).
fn take_key(cx: &mut Cx<'_>, keyed: Option<Keyed>) -> Result<(), ErrorReply> {
    let Some(keyed) = keyed else {
        return Ok(());
    };
    let keep = keep(cx.config());
    let at_ms = cx.now_ms;
    cx.emit(SessionEvent::KeyTaken {
        key: keyed.key,
        digest: keyed.digest,
        at_ms,
        keep,
    })
    .map_err(|error| refusal(&error))
}

/// Records a keyed request's first answer, and answers whoever sent it again meanwhile.
fn key_answered(cx: &mut Cx<'_>, key: u64, result: &Result<ReplyBody, ErrorReply>) {
    if cx.state().keys.is_pending(key)
        && let Some(answer) = StoredAnswer::of(result)
    {
        let at_ms = cx.now_ms;
        if let Err(error) = cx.emit(SessionEvent::KeyAnswered { key, answer, at_ms }) {
            tracing::warn!(player = %cx.id, key, %error, "a key's answer was not recorded");
        }
    }
    for waiter in cx.memory.key_waiters.remove(&key).unwrap_or_default() {
        cx.reply(waiter, result.clone());
    }
}

/// Answers a request now: a keyed one that changes the player's state keeps the answer
/// with its key, in this decision's commit.
fn answer_now(
    cx: &mut Cx<'_>,
    keyed: Option<Keyed>,
    reply: RequestReply,
    result: Result<ReplyBody, ErrorReply>,
) {
    if let Some(keyed) = keyed {
        match take_key(cx, Some(keyed)) {
            Ok(()) => key_answered(cx, keyed.key, &result),
            // Not recorded: the answer stands all the same; sent again, the request is
            // looked at afresh.
            Err(error) => {
                tracing::debug!(player = %cx.id, %error.message, "a key's answer was not kept")
            }
        }
    }
    cx.reply(reply, result);
}

/// A new connection follows the player's stream (replayed from its position, or a
/// snapshot) and the streams of the player's rooms; its welcome leaves once every room
/// has taken its subscription.
fn connect(
    cx: &mut Cx<'_>,
    outbound: Outbound,
    resume: &[playtree_protocol::StreamPosition],
    reply: ractor::RpcReplyPort<Result<SessionWelcome, ErrorReply>>,
) {
    let connections = cx.live_connections(cx.id);
    let connections_max = cx.config().session.connections_max;
    if connections >= connections_max {
        metrics::counter!("playtree_rate_limited_total", "limit" => "connections_per_player")
            .increment(1);
        cx.reply(
            reply,
            Err(ErrorReply::new(
                ErrorCode::TooManyConnections,
                format!("you already have {connections_max} live connections; close one first"),
            )),
        );
        return;
    }
    let position = |stream: &StreamId| {
        resume
            .iter()
            .find(|p| p.stream == *stream)
            .map(|p| (p.epoch, p.seq))
    };
    let frames = match position(&StreamId::Player(cx.id.clone())) {
        None => Vec::new(),
        Some((epoch, seq)) => match cx.stream.replay_after(epoch, seq) {
            Some(frames) => {
                metrics::counter!("playtree_resumes_total", "outcome" => "replayed").increment(1);
                frames
            }
            None => {
                metrics::counter!("playtree_resumes_total", "outcome" => "snapshot").increment(1);
                let balance = cx.state().balance;
                vec![cx.stream.snapshot_frame(Event::PlayerSnapshot { balance })]
            }
        },
    };
    let rooms: Vec<(RoomId, Option<(u64, u64)>)> = cx
        .state()
        .rooms
        .keys()
        .map(|room| (*room, position(&StreamId::Room(*room))))
        .collect();
    referral::first_seen(cx);
    cx.follow(cx.id.clone(), outbound.clone(), frames);
    cx.memory
        .connections
        .insert(outbound.connection, outbound.clone());
    let welcome = Ok(SessionWelcome {
        player_stream_epoch: cx.stream.epoch(),
    });
    if rooms.is_empty() {
        cx.reply(reply, welcome);
        return;
    }
    let gate = AfterAll::new(move || {
        let _ = reply.send(welcome);
    });
    let player = cx.id.clone();
    for (room, position) in rooms {
        // Noted before the room hears of it: if it closes meanwhile, the room is
        // told, or finds it closed (see `Hub::connection_closed`).
        outbound.note_room(room);
        cx.hand_off(
            Address::Room(room),
            HandOff::Subscribe {
                player: player.clone(),
                outbound: outbound.clone(),
                position,
                welcome: Some(gate.clone()),
            },
        );
    }
}

/// Answers what the session knows by itself, hands member requests to their room, and
/// starts what needs other entities (by letter).
fn request_arrived(cx: &mut Cx<'_>, request: PlayerRequest) {
    let PlayerRequest {
        request,
        keyed,
        received_ms,
        suspect_source,
        code_owner,
        reply,
    } = request;
    let keyed = keyed.filter(|_| changes_state(&request));
    if let Some(keyed) = keyed {
        let keep = keep(cx.config());
        match cx
            .state()
            .keys
            .seen(keyed.key, keyed.digest, cx.now_ms, keep)
        {
            Seen::New => {}
            Seen::Answered(answer) => {
                metrics::counter!("playtree_idempotent_replays_total").increment(1);
                cx.reply(reply, answer.reply());
                return;
            }
            Seen::Pending => {
                metrics::counter!("playtree_idempotent_replays_total").increment(1);
                let waiters = cx.memory.key_waiters.entry(keyed.key).or_default();
                if waiters.len() < cx.env.config.session.requests_queued_max {
                    waiters.push(reply);
                } else {
                    cx.reply(reply, Err(in_progress()));
                }
                return;
            }
            Seen::Reused => {
                cx.reply(
                    reply,
                    Err(ErrorReply::new(
                        ErrorCode::KeyReused,
                        "this idempotency key was given before to a different request; nothing was carried out",
                    )),
                );
                return;
            }
            Seen::Full => {
                metrics::counter!("playtree_rate_limited_total", "limit" => "idempotency_keys")
                    .increment(1);
                cx.reply(
                    reply,
                    Err(ErrorReply::new(
                        ErrorCode::RateLimited,
                        "too many idempotency keys are held; send fewer keyed requests for a while",
                    )),
                );
                return;
            }
        }
    }
    let player = cx.id.clone();
    match request {
        Request::GetWallet => {
            let balance = cx.state().balance;
            cx.reply(reply, Ok(ReplyBody::Wallet { balance }));
        }
        Request::RotateSeed { wheel } => {
            let rotated = wallet::rotate_seed(cx, wheel);
            answer_now(cx, keyed, reply, rotated);
        }
        // The gateway answers token refreshes itself; one reaching here is a bug.
        Request::RefreshToken { .. } => cx.reply(
            reply,
            Err(ErrorReply::new(
                ErrorCode::Internal,
                "token refresh is handled by the connection",
            )),
        ),
        Request::Answer { .. } | Request::Chat { .. } | Request::React { .. } => {
            match MemberRequest::from_request(&player, &request, received_ms) {
                Some(member) => {
                    let allowed = match member.room_kind() {
                        Some(kind) => member_of(cx.state(), member.room, kind).map(drop),
                        None => require_member(cx.state(), member.room).map(drop),
                    };
                    match allowed {
                        Ok(()) => cx.hand_off(
                            Address::Room(member.room),
                            HandOff::Member {
                                request: member,
                                reply,
                            },
                        ),
                        Err(error) => cx.reply(reply, Err(error)),
                    }
                }
                // Every answer, chat and reaction is a member request.
                None => cx.reply(
                    reply,
                    Err(ErrorReply::new(ErrorCode::Internal, "not a member request")),
                ),
            }
        }
        Request::GetReferralCode => {
            let code = referral::code(cx);
            cx.reply(reply, code.map(|code| ReplyBody::ReferralCode { code }));
        }
        Request::ClaimReferral { code } => {
            referral::claim(cx, &code, code_owner, suspect_source, keyed, reply)
        }
        Request::GetReferralStats => referral::stats(cx, reply),
        Request::Spin { room, client_seed } => wallet::spin(cx, room, client_seed, keyed, reply),
        Request::LeaveRoom { room } => joins::leave(cx, room, keyed, reply),
        request @ (Request::QuickJoin { .. }
        | Request::CreatePrivate { .. }
        | Request::JoinPrivate { .. }) => joins::join(
            cx,
            PlayerRequest {
                request,
                keyed,
                received_ms,
                suspect_source,
                code_owner,
                reply,
            },
        ),
        // The hub answers the leaderboard from the store, and routes partner requests
        // (to the player concerned, or a tree): a player's own session never takes them.
        Request::GetReferralLeaderboard { .. }
        | Request::ReportConversion { .. }
        | Request::GetPlayerReferralStats { .. }
        | Request::ApproveReward { .. }
        | Request::VoidReward { .. }
        | Request::Subscribe { .. }
        | Request::Ack { .. } => cx.reply(
            reply,
            Err(ErrorReply::new(
                ErrorCode::Forbidden,
                "this request is not a player's session's to answer",
            )),
        ),
    }
}

fn in_progress() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::RequestInProgress,
        "the request with this key is still being carried out; send it again with the same key for its result",
    )
}

/// The player's membership of `room`, which must be of `kind`.
fn member_of(
    state: &SessionState,
    room: RoomId,
    kind: RoomKind,
) -> Result<&crate::mail::Membership, ErrorReply> {
    let membership = require_member(state, room)?;
    if membership.kind != kind {
        return Err(ErrorReply::new(
            ErrorCode::WrongRoomKind,
            format!("room {room} is a {:?} room", membership.kind),
        ));
    }
    Ok(membership)
}

fn require_member(
    state: &SessionState,
    room: RoomId,
) -> Result<&crate::mail::Membership, ErrorReply> {
    state.rooms.get(&room).ok_or_else(|| not_in_room(room))
}

/// The player's live connections as decided so far: the ones this incarnation
/// accepted, and the ones an older incarnation left following (they share followers).
fn connections(cx: &Cx<'_>) -> Vec<Outbound> {
    let mut connections: BTreeMap<ConnectionId, Outbound> = cx
        .outbounds(cx.id)
        .into_iter()
        .map(|outbound| (outbound.connection, outbound))
        .collect();
    for (id, outbound) in &cx.memory.connections {
        connections.entry(*id).or_insert_with(|| outbound.clone());
    }
    connections
        .into_values()
        .filter(|outbound| !outbound.is_closed())
        .collect()
}

/// Referral statistics when the player is in no tree.
fn no_stats() -> ReplyBody {
    ReplyBody::ReferralStats(ReferralStats::default())
}
