//! Joining and leaving rooms. A join is a letter to the room (with the seat the
//! matchmaker promised, and the player's connections, beside it in memory): the room
//! seats the player and answers the client, then tells the session by letter
//! (`Seated`), which records the membership. A room that is full (or whose game has
//! started) sends the join back, and the session tries another, up to
//! [`JOIN_TRIES_MAX`] rooms. One join of a kind of room at a time per player: later
//! ones wait in memory.

use super::state::{HOUR_MS, SessionEvent};
use super::{
    Cx, Keyed, PlayerRequest, QUIZ_VARIANT, answer_now, connections, key_answered, not_in_room,
    take_key,
};
use crate::connections::{ConnectionId, Outbound};
use crate::mail::{
    Address, Attachment, Body, HandOff, JoinLetter, JoinRefusal, Membership, RequestReply,
    RoomSpec, Seated,
};
use crate::runtime::refusal;
use playtree_protocol::{ErrorCode, ErrorReply, ReplyBody, Request, RoomId, RoomKind};
use std::collections::VecDeque;

/// A join sent to a room and not yet answered.
#[derive(Debug)]
pub struct JoinUnderWay {
    pub since_ms: u64,
    /// The connections that follow the room with the join: others are subscribed when
    /// the seat is confirmed.
    followed: Vec<ConnectionId>,
    /// Joins of the same kind of room waiting for this one.
    queued: VecDeque<PlayerRequest>,
}

/// The kind and variant a join's request asks for.
fn membership_for(cx: &Cx<'_>, request: &Request) -> Result<Membership, ErrorReply> {
    Ok(match request {
        Request::QuickJoin {
            kind: RoomKind::Wheel,
            variant,
        } => {
            let wheel = cx
                .config()
                .wheel_or_default(variant.as_deref())
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        cx.config().wheels.iter().map(|w| w.id.as_str()).collect();
                    ErrorReply::new(
                        ErrorCode::UnknownVariant,
                        format!(
                            "there is no wheel `{}`; this server has: {}",
                            variant.as_deref().unwrap_or(""),
                            known.join(", ")
                        ),
                    )
                })?;
            Membership {
                kind: RoomKind::Wheel,
                variant: wheel.id.clone(),
            }
        }
        _ => Membership {
            kind: RoomKind::Quiz,
            variant: QUIZ_VARIANT.into(),
        },
    })
}

/// A QuickJoin, a private room opened, or one joined by code.
pub fn join(cx: &mut Cx<'_>, request: PlayerRequest) {
    let membership = match membership_for(cx, &request.request) {
        Ok(membership) => membership,
        Err(error) => return answer_now(cx, request.keyed, request.reply, Err(error)),
    };
    let slot = (membership.kind, membership.variant.clone());
    if let Some(under_way) = cx.memory.joins.get_mut(&slot) {
        let queued_max = cx.env.config.session.requests_queued_max;
        if under_way.queued.len() >= queued_max {
            metrics::counter!("playtree_rate_limited_total", "limit" => "queued_requests")
                .increment(1);
            let _ = request.reply.send(Err(ErrorReply::new(
                ErrorCode::RateLimited,
                format!("{queued_max} joins are waiting already; wait for their answers"),
            )));
        } else {
            under_way.queued.push_back(request);
        }
        return;
    }
    let PlayerRequest {
        request,
        keyed,
        reply,
        ..
    } = request;
    let target = match target(cx, &request, &membership) {
        Ok(target) => target,
        Err(error) => return answer_now(cx, keyed, reply, Err(error)),
    };
    if let Err(error) = take_key(cx, keyed) {
        let _ = reply.send(Err(error));
        return;
    }
    send_join(
        cx,
        membership,
        target,
        Vec::new(),
        keyed.map(|keyed| keyed.key),
        Some(reply),
    );
}

/// Where a join goes: the room, the spec that creates it if it is new, the seat the
/// matchmaker promised, and whether another room would do as well (a QuickJoin).
struct Target {
    room: RoomId,
    spec: Option<RoomSpec>,
    promise: Option<crate::matchmaker::Promise>,
    quick: bool,
}

fn target(
    cx: &mut Cx<'_>,
    request: &Request,
    membership: &Membership,
) -> Result<Target, ErrorReply> {
    if membership.kind == RoomKind::Quiz
        && let Some(room) = cx.state().room_of(RoomKind::Quiz, None)
    {
        return Err(ErrorReply::new(
            ErrorCode::AlreadyInRoom,
            format!("you are already in quiz room {room}; leave it first"),
        ));
    }
    match request {
        Request::CreatePrivate { .. } => create_private(cx),
        Request::JoinPrivate { code } => join_private(cx, code),
        _ => {
            // The player's own seat of that wheel first; else a seat the matchmaker
            // promises (in the fullest open room, or a new one that concurrent joins
            // then fill).
            if let Some(room) = cx
                .state()
                .room_of(membership.kind, Some(&membership.variant))
            {
                return Ok(Target {
                    room,
                    spec: None,
                    promise: None,
                    quick: true,
                });
            }
            quick_target(cx, membership, &[])
        }
    }
}

fn quick_target(
    cx: &mut Cx<'_>,
    membership: &Membership,
    tried: &[RoomId],
) -> Result<Target, ErrorReply> {
    let capacity = match membership.kind {
        RoomKind::Wheel => cx.config().rooms.wheel_players_max,
        RoomKind::Quiz => cx.config().quiz.players_max,
    };
    let ids = cx.env.ids.clone();
    let promise = cx
        .env
        .matchmaker
        .claim(
            membership.kind,
            &membership.variant,
            capacity,
            tried,
            || ids.next_id(),
        )
        .map_err(|error| ErrorReply::new(ErrorCode::StoreFailure, error.to_string()))?;
    let claim = promise
        .claim()
        .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "the matchmaker promised no seat"))?;
    Ok(Target {
        room: claim.room,
        spec: claim.create.then(|| RoomSpec {
            kind: membership.kind,
            variant: membership.variant.clone(),
            private_code: None,
        }),
        promise: Some(promise),
        quick: true,
    })
}

fn create_private(cx: &mut Cx<'_>) -> Result<Target, ErrorReply> {
    let per_hour = cx.config().rooms.private_creates_per_hour;
    if cx.state().private_creates.count_at(cx.now_ms, HOUR_MS) >= per_hour {
        metrics::counter!("playtree_rate_limited_total", "limit" => "private_rooms").increment(1);
        return Err(ErrorReply::new(
            ErrorCode::RateLimited,
            format!("at most {per_hour} private rooms per hour; try again later"),
        ));
    }
    let code = free_code(cx)?;
    let room = cx
        .env
        .ids
        .next_id()
        .map_err(|error| ErrorReply::new(ErrorCode::StoreFailure, error.to_string()))?;
    let at_ms = cx.now_ms;
    cx.emit(SessionEvent::PrivateCreated {
        at_ms,
        kept: per_hour,
    })
    .map_err(|error| refusal(&error))?;
    cx.then(|| metrics::counter!("playtree_private_rooms_created_total").increment(1));
    Ok(Target {
        room,
        spec: Some(RoomSpec {
            kind: RoomKind::Quiz,
            variant: QUIZ_VARIANT.into(),
            private_code: Some(code),
        }),
        promise: None,
        quick: false,
    })
}

/// A code no open room holds (codes are short: they can collide).
fn free_code(cx: &Cx<'_>) -> Result<String, ErrorReply> {
    let len = cx.config().rooms.private_code_len;
    for _ in 0..8 {
        let candidate = private_code(&cx.env.entropy.server_seed(), len);
        if cx.env.matchmaker.room_for_code(&candidate).is_none() {
            return Ok(candidate);
        }
        metrics::counter!("playtree_private_code_collisions_total").increment(1);
    }
    Err(ErrorReply::new(
        ErrorCode::NoRoomAvailable,
        "no free private code was found; try again",
    ))
}

/// A short code for a private room, from the letters and digits people do not confuse.
pub fn private_code(entropy: &[u8; 32], len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // 32 symbols: each byte's low five bits pick one without bias.
    entropy
        .iter()
        .take(len)
        .map(|byte| ALPHABET[(byte & 31) as usize] as char)
        .collect()
}

fn join_private(cx: &mut Cx<'_>, code: &str) -> Result<Target, ErrorReply> {
    let per_hour = cx.config().rooms.private_code_misses_per_hour;
    if cx.state().code_misses.count_at(cx.now_ms, HOUR_MS) >= per_hour {
        metrics::counter!("playtree_rate_limited_total", "limit" => "private_code_misses")
            .increment(1);
        return Err(ErrorReply::new(
            ErrorCode::RateLimited,
            format!("{per_hour} private codes matched no room in the last hour; try again later"),
        ));
    }
    let normalized = code.trim().to_ascii_uppercase();
    match cx.env.matchmaker.room_for_code(&normalized) {
        Some(room) => Ok(Target {
            room,
            spec: None,
            promise: None,
            quick: false,
        }),
        None => {
            let at_ms = cx.now_ms;
            if let Err(error) = cx.emit(SessionEvent::CodeMissed {
                at_ms,
                kept: per_hour,
            }) {
                return Err(refusal(&error));
            }
            Err(ErrorReply::new(
                ErrorCode::UnknownRoomCode,
                format!("no open private room has the code {code}"),
            ))
        }
    }
}

/// Sends the join to its room, with the client's reply, the player's connections and
/// the seat promised beside it (when a client waits: a join taken up again after a
/// restart has nobody to answer but its key, and its connections follow the room
/// once it is seated).
fn send_join(
    cx: &mut Cx<'_>,
    membership: Membership,
    target: Target,
    tried: Vec<RoomId>,
    request_key: Option<u64>,
    reply: Option<RequestReply>,
) {
    let fairness = (membership.kind == RoomKind::Wheel).then(|| {
        let player = cx.id.clone();
        cx.state().wheel(&membership.variant).info(
            &cx.env.seeds,
            &player,
            &membership.variant,
            cx.now_ms,
        )
    });
    let outbounds = if reply.is_some() {
        connections(cx)
    } else {
        Vec::new()
    };
    let followed = outbounds
        .iter()
        .map(|outbound| outbound.connection)
        .collect();
    let slot = (membership.kind, membership.variant.clone());
    let letter = JoinLetter {
        membership,
        spec: target.spec,
        fairness,
        quick: target.quick,
        tried,
        request_key,
    };
    // Noted before the room hears of them: a connection that closes meanwhile tells
    // the room, or the room finds it closed (see `Hub::connection_closed`).
    for outbound in &outbounds {
        outbound.note_room(target.room);
    }
    let attachment = reply.map(|reply| Attachment::Join {
        reply,
        outbounds,
        promise: target.promise,
    });
    if cx
        .send_answering(Address::Room(target.room), Body::Join(letter), attachment)
        .is_ok()
    {
        let queued = cx
            .memory
            .joins
            .remove(&slot)
            .map(|under_way| under_way.queued)
            .unwrap_or_default();
        cx.memory.joins.insert(
            slot,
            JoinUnderWay {
                since_ms: cx.now_ms,
                followed,
                queued,
            },
        );
    }
}

/// The room seated the player: the membership is recorded (unless the player holds
/// another seat of that wheel or a quiz seat already: then this one is given back),
/// and connections opened meanwhile follow the room too.
pub fn seated(cx: &mut Cx<'_>, seated: Seated) {
    let Seated {
        room,
        membership,
        answer,
    } = seated;
    let slot = (membership.kind, membership.variant.clone());
    let under_way = cx.memory.joins.remove(&slot);
    let variant = (membership.kind == RoomKind::Wheel).then_some(membership.variant.as_str());
    let other = cx
        .state()
        .room_of(membership.kind, variant)
        .filter(|other| *other != room);
    if let Some(other) = other {
        // Two joins seated the player twice (one before a restart): the seat the
        // records do not hold is given back.
        tracing::info!(player = %cx.id, room, other, "a second seat of one kind is given back");
        if let Err(error) = cx.send(Address::Room(room), Body::Leave) {
            tracing::warn!(player = %cx.id, room, %error, "a second seat was not given back yet");
        }
    } else if !cx.state().rooms.contains_key(&room) {
        if let Err(error) = cx.emit(SessionEvent::JoinedRoom {
            room,
            membership: membership.clone(),
        }) {
            tracing::error!(player = %cx.id, room, %error, "a seat was refused after its letter was taken");
        }
        let followed: Vec<ConnectionId> = under_way
            .as_ref()
            .map(|under_way| under_way.followed.clone())
            .unwrap_or_default();
        subscribe_others(cx, room, &followed);
    }
    if let Some((key, answer)) = answer {
        key_answered(cx, key, &answer.reply());
    }
    if let Some(under_way) = under_way {
        next_queued(cx, under_way.queued);
    }
}

/// Connections of the player that did not go with the join follow the room now.
fn subscribe_others(cx: &mut Cx<'_>, room: RoomId, followed: &[ConnectionId]) {
    let player = cx.id.clone();
    let others: Vec<Outbound> = connections(cx)
        .into_iter()
        .filter(|outbound| !followed.contains(&outbound.connection))
        .collect();
    for outbound in others {
        outbound.note_room(room);
        cx.hand_off(
            Address::Room(room),
            HandOff::Subscribe {
                player: player.clone(),
                outbound,
                position: None,
                welcome: None,
            },
        );
    }
}

/// The room could not seat the player: another room is tried, or the join ends (the
/// room answered the client).
pub fn refused(cx: &mut Cx<'_>, refusal_letter: JoinRefusal, attachment: Option<Attachment>) {
    let JoinRefusal {
        room,
        membership,
        error,
        retry,
        tried,
        request_key,
    } = refusal_letter;
    let slot = (membership.kind, membership.variant.clone());
    if retry {
        let reply = attachment.map(Attachment::into_reply);
        match quick_target(cx, &membership, &tried) {
            Ok(target) => {
                return send_join(cx, membership, target, tried, request_key, reply);
            }
            Err(error) => {
                if let Some(reply) = reply {
                    cx.reply(reply, Err(error.clone()));
                }
                end_join(cx, &slot, request_key, Err(error));
                return;
            }
        }
    }
    tracing::debug!(player = %cx.id, room, %error, "join refused");
    end_join(cx, &slot, request_key, Err(error));
}

fn end_join(
    cx: &mut Cx<'_>,
    slot: &(RoomKind, String),
    request_key: Option<u64>,
    result: Result<ReplyBody, ErrorReply>,
) {
    if let Some(key) = request_key {
        key_answered(cx, key, &result);
    }
    if let Some(under_way) = cx.memory.joins.remove(slot) {
        next_queued(cx, under_way.queued);
    }
}

/// The first of the joins that waited goes now; the rest wait for it.
fn next_queued(cx: &mut Cx<'_>, mut queued: VecDeque<PlayerRequest>) {
    while let Some(next) = queued.pop_front() {
        let slot = match membership_for(cx, &next.request) {
            Ok(membership) => (membership.kind, membership.variant),
            Err(_) => {
                join(cx, next);
                continue;
            }
        };
        join(cx, next);
        if let Some(under_way) = cx.memory.joins.get_mut(&slot) {
            under_way.queued.extend(queued);
            return;
        }
    }
}

/// A join no room has answered in `session.join_wait_ms` is forgotten here, so that
/// the player's next join goes (should the room's letter come, it still counts).
pub fn forget_overdue(cx: &mut Cx<'_>) {
    let wait_ms = cx.config().session.join_wait_ms;
    let now_ms = cx.now_ms;
    let overdue: Vec<(RoomKind, String)> = cx
        .memory
        .joins
        .iter()
        .filter(|(_, join)| join.since_ms + wait_ms <= now_ms)
        .map(|(slot, _)| slot.clone())
        .collect();
    for slot in overdue {
        metrics::counter!("playtree_session_joins_forgotten_total").increment(1);
        if let Some(under_way) = cx.memory.joins.remove(&slot) {
            next_queued(cx, under_way.queued);
        }
    }
}

/// The player gives their seat in `room` back.
pub fn leave(cx: &mut Cx<'_>, room: RoomId, keyed: Option<Keyed>, reply: RequestReply) {
    if !cx.state().rooms.contains_key(&room) {
        return answer_now(cx, keyed, reply, Err(not_in_room(room)));
    }
    let left = cx
        .emit(SessionEvent::LeftRoom { room })
        .and_then(|()| cx.send(Address::Room(room), Body::Leave))
        .map(|()| ReplyBody::RoomLeft { room })
        .map_err(|error| refusal(&error));
    answer_now(cx, keyed, reply, left);
}

/// The room gave the player's seat up (its grace passed), or is gone.
pub fn unseated(cx: &mut Cx<'_>, room: RoomId) {
    if cx.state().rooms.contains_key(&room)
        && let Err(error) = cx.emit(SessionEvent::LeftRoom { room })
    {
        tracing::warn!(player = %cx.id, room, %error, "seat loss not saved");
    }
}
