//! PlayerSession: one entity per player id. It owns the wallet, the provably fair state
//! per wheel, daily quotas and room memberships; it is activated by a connection or by a
//! reward for an offline player, and passivated after `session.passivate_after_ms`
//! without a connection.
//!
//! Everything here is a pure decision. A request that needs a room's answer (a join, a
//! spin, a leave) starts a flow ([`flows`]): a task that asks the rooms and reports back
//! to the session with the inputs below, so the session's mailbox never waits on a room.
//! One flow runs at a time per player; later requests wait their turn in order.

mod flows;
mod logic;
mod msg;
mod referral;
mod state;
#[cfg(test)]
mod tests;

pub use msg::{FlowTag, JoinRecord, RequestReply, SessionMsg, SessionWelcome};
pub use state::{
    Membership, PendingSpin, SessionEntity, SessionEvent, SessionState, WheelFairness,
};

use crate::config::GameConfig;
use crate::connections::{ConnectionId, Outbound};
use crate::grant::{Grant, GrantSource};
use crate::hub::{EntityKind, Hub};
use crate::rate::TokenBucket;
use crate::referral::TreeMsg;
use crate::room::{MemberRequest, Position, RoomMsg, Settled};
use crate::runtime::{ActivationError, Behaviour, Decide, Effect, Env};
use crate::store::{DeadLetter, StoreError};
use flows::{Flow, JoinTarget};
use playtree_protocol::{
    ErrorCode, ErrorReply, Event, FairnessInfo, ReplyBody, Request, RoomId, RoomKind, SeedReveal,
    SpinOutcome, StreamId, fairness,
};
use std::collections::{BTreeMap, VecDeque};

/// A session's decision context.
type Cx<'a> = Decide<'a, SessionEntity>;

/// The variant name of quiz rooms (there is one kind of quiz so far).
pub const QUIZ_VARIANT: &str = "quiz";

/// What a session keeps in memory only.
#[derive(Debug, Default)]
pub struct SessionMemory {
    /// The flow under way, if one is.
    flow: Option<Running>,
    flows_started: u64,
    /// What waits for the flow under way to end, in arrival order.
    queued: VecDeque<Job>,
    /// A retry of unsettled spins is queued or under way.
    retrying: bool,
    /// When unsettled spins were last retried.
    last_retry_ms: u64,
    /// The connections this incarnation accepted and has not seen close, as decided
    /// (the followers list changes only once effects are released).
    connections: BTreeMap<ConnectionId, Outbound>,
    /// Private rooms opened lately (`rooms.private_creates_per_hour`).
    private_creates: Option<TokenBucket>,
    /// Private codes tried lately that matched no room
    /// (`rooms.private_code_misses_per_hour`).
    code_misses: Option<TokenBucket>,
    /// When the player's tree was last told of their activation.
    last_activation_report_ms: u64,
    /// When the claim under way was last started or taken up again.
    last_claim_attempt_ms: u64,
    /// A flow taking up the claim under way is queued or running.
    resuming_claim: bool,
}

#[cfg(test)]
impl SessionMemory {
    /// How many flows this incarnation started.
    pub(crate) fn flows_started(&self) -> u64 {
        self.flows_started
    }
}

/// The flow under way: its number in this incarnation, and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Running {
    number: u64,
    started_ms: u64,
}

/// A request that runs as a flow, or the session's own retry, waiting its turn.
#[derive(Debug)]
enum Job {
    Request {
        request: Request,
        reply: msg::RequestReply,
        /// A referral claim from an address past its hourly limit.
        suspect_source: bool,
    },
    RetryPending,
    /// Takes up the claim under way (no client waits for it).
    ResumeClaim,
}

/// A session's own effects.
#[derive(Debug)]
pub enum SessionEffect {
    /// Starts flow number `flow` of incarnation `epoch`.
    Run { flow: Flow, epoch: u64, number: u64 },
    /// A new connection follows the player's rooms (replaying from the positions given),
    /// then learns it is welcome.
    FollowRooms {
        rooms: Vec<(RoomId, Option<Position>)>,
        outbound: Outbound,
        welcome: ractor::RpcReplyPort<Result<SessionWelcome, ErrorReply>>,
        epoch: u64,
    },
    /// A member's request the room answers itself (chat, reactions, quiz answers).
    Relay { room: RoomId, message: RoomMsg },
    /// Tells the player's tree (rooted at `root`) that they finished a first game.
    ReportActivation { root: String },
    /// Answers the player's referral statistics from their tree.
    AskStats {
        root: String,
        reply: msg::RequestReply,
    },
    /// Answers the top `limit` referrers.
    Leaderboard {
        limit: usize,
        reply: msg::RequestReply,
    },
    /// Passes a partner's conversion report to the player's tree.
    Convert {
        root: String,
        kind: String,
        key: String,
        reply: ractor::RpcReplyPort<Result<u32, ErrorReply>>,
    },
}

impl Behaviour for SessionEntity {
    type Id = String;
    type Msg = SessionMsg;
    type Memory = SessionMemory;
    type Effect = SessionEffect;
    type Start = ();

    const ENTITY: EntityKind = EntityKind::Session;

    fn stream(player: &String) -> StreamId {
        StreamId::Player(player.clone())
    }

    fn activate(cx: &mut Cx<'_>, _start: ()) -> Result<(), ActivationError> {
        cx.memory.last_retry_ms = cx.now_ms;
        if !cx.state().pending_spins.is_empty() {
            // Spins drawn before a crash or a passivation settle now, not at the first
            // retry deadline.
            queue_retry(cx);
        }
        referral::report_activation(cx);
        resume_claim(cx);
        Ok(())
    }

    fn decide(cx: &mut Cx<'_>, message: SessionMsg) {
        match message {
            SessionMsg::Connect {
                outbound,
                resume,
                reply,
            } => connect(cx, outbound, &resume, reply),
            // The player's rooms hear of it from the hub (`Hub::connection_closed`),
            // which tells them without this session when it is passivated.
            SessionMsg::Disconnect { connection } => {
                cx.memory.connections.remove(&connection);
                cx.effect(Effect::Unfollow {
                    player: cx.id.clone(),
                    connection,
                });
            }
            SessionMsg::RemovedFromRoom { room } => {
                if cx.state().rooms.contains_key(&room)
                    && let Err(error) = cx.emit(SessionEvent::LeftRoom { room })
                {
                    tracing::warn!(player = %cx.id, room, %error, "seat loss not saved");
                }
            }
            SessionMsg::Request { request, reply } => {
                let now_ms = cx.now_ms;
                request_arrived(cx, request, reply, now_ms, false);
            }
            SessionMsg::Stamped {
                request,
                received_ms,
                suspect_source,
                reply,
            } => request_arrived(cx, request, reply, received_ms, suspect_source),
            SessionMsg::Credit { grant, source } => {
                // A failure is logged where it happens; the source redelivers.
                let _ = credit(cx, grant, source);
            }
            SessionMsg::Deadline => {
                give_up_overdue_flow(cx);
                let retry_ms = cx.config().referral.outbox_retry_ms;
                if cx.state().referral.activation_unreported()
                    && cx.now_ms >= cx.memory.last_activation_report_ms + retry_ms
                {
                    referral::report_activation(cx);
                }
                if cx.now_ms >= cx.memory.last_claim_attempt_ms + retry_ms {
                    resume_claim(cx);
                }
                let retry_ms = cx.config().session.pending_retry_ms;
                if !cx.state().pending_spins.is_empty()
                    && cx.now_ms >= cx.memory.last_retry_ms + retry_ms
                {
                    queue_retry(cx);
                }
            }
            SessionMsg::Joined {
                flow,
                room,
                membership,
                followed,
                reply,
            } => {
                let record = match running(cx, flow)
                    .and_then(|()| joined(cx, room, membership, &followed))
                {
                    Ok(fairness) => JoinRecord::Recorded(fairness),
                    Err(error) => JoinRecord::Refused {
                        error,
                        // Never the seat the player holds in the records.
                        give_back: !cx.state().rooms.contains_key(&room),
                    },
                };
                cx.reply(reply, record);
            }
            SessionMsg::Left { flow, room, reply } => {
                let left = running(cx, flow).and_then(|()| {
                    if cx.state().rooms.contains_key(&room) {
                        cx.emit(SessionEvent::LeftRoom { room })
                            .map_err(store_error)
                    } else {
                        Ok(())
                    }
                });
                cx.reply(reply, left);
            }
            SessionMsg::DrawSpin {
                flow,
                room,
                client_seed,
                reply,
            } => {
                let drawn = running(cx, flow).and_then(|()| draw_spin(cx, room, &client_seed));
                cx.reply(reply, drawn);
            }
            SessionMsg::News { event } => referral::news(cx, event),
            SessionMsg::CodeMade { flow, code, reply } => {
                let kept = referral::code_made(cx, flow, code);
                cx.reply(reply, kept);
            }
            SessionMsg::AcceptReferee { referee, reply } => {
                let accepted = referral::accept_referee(cx, &referee);
                cx.reply(reply, accepted);
            }
            SessionMsg::ClaimStarting {
                flow,
                referrer,
                suspect,
                reply,
            } => {
                let started = referral::claim_starting(cx, flow, referrer, suspect);
                cx.reply(reply, started);
            }
            SessionMsg::ClaimSettled {
                referrer,
                root,
                outcome,
                reply,
            } => {
                let settled = referral::claim_settled(cx, &referrer, root, outcome);
                cx.reply(reply, settled);
            }
            SessionMsg::ActivationRecorded => referral::activation_recorded(cx),
            SessionMsg::GameFinished => referral::game_finished(cx),
            SessionMsg::Conversion { kind, key, reply } => {
                match cx.state().referral.tree_root.clone() {
                    Some(root) if cx.state().referral.referrer.is_some() => {
                        cx.own(SessionEffect::Convert {
                            root,
                            kind,
                            key,
                            reply,
                        });
                    }
                    // A player nobody referred earns nobody a conversion reward.
                    _ => cx.reply(reply, Ok(0)),
                }
            }
            SessionMsg::Settled {
                spin,
                settled,
                reply,
            } => {
                let outcome = settled_spin(cx, spin, settled);
                cx.reply(reply, outcome);
            }
            SessionMsg::Abandon {
                spin,
                reason,
                reply,
            } => {
                let abandoned = abandon(cx, &spin, reason);
                cx.reply(reply, abandoned);
            }
            SessionMsg::CodeMissed => {
                let (now_ms, per_hour) =
                    (cx.now_ms, cx.config().rooms.private_code_misses_per_hour);
                cx.memory
                    .code_misses
                    .get_or_insert_with(|| TokenBucket::per_period(per_hour, 3_600_000, now_ms))
                    .try_take(now_ms);
            }
            SessionMsg::FlowDone { epoch, flow } => {
                if epoch == cx.stream.epoch()
                    && cx.memory.flow.is_some_and(|running| running.number == flow)
                {
                    cx.memory.flow = None;
                    next_job(cx);
                }
            }
            #[cfg(feature = "fault-injection")]
            SessionMsg::InjectFault => panic!("injected fault in session {}", cx.id),
        }
    }

    /// Retrying unsettled spins, giving up an overdue flow (passivation is the
    /// runtime's).
    fn next_deadline(env: &Env, state: &SessionState, memory: &SessionMemory) -> Option<u64> {
        let config = &env.config.session;
        let retry = (!state.pending_spins.is_empty())
            .then(|| memory.last_retry_ms + config.pending_retry_ms);
        let overdue = memory
            .flow
            .map(|running| running.started_ms + config.flow_timeout_ms);
        let report = referral::next_report_ms(state, memory, env.config.referral.outbox_retry_ms);
        crate::timers::earliest([retry, overdue, report])
    }

    fn deadline() -> SessionMsg {
        SessionMsg::Deadline
    }

    fn is_deadline(message: &SessionMsg) -> bool {
        matches!(message, SessionMsg::Deadline)
    }

    fn is_activity(message: &SessionMsg) -> bool {
        matches!(
            message,
            // Not a disconnect: it neither postpones passivation nor is passed on by a
            // passivating incarnation (which drops the connection itself).
            SessionMsg::Connect { .. } | SessionMsg::Request { .. } | SessionMsg::Stamped { .. }
        )
    }

    fn may_passivate(state: &SessionState, memory: &SessionMemory) -> bool {
        state.pending_spins.is_empty()
            && memory.flow.is_none()
            && memory.queued.is_empty()
            && !state.referral.owes_work()
    }

    fn passivate_after_ms(config: &GameConfig) -> u64 {
        config.session.passivate_after_ms
    }

    /// A player who stays connected but does nothing holds no session in memory: their
    /// connections stay in the directory, and whatever reaches the player next (a
    /// request, a credit) activates the session again, which resyncs them (a
    /// `PlayerSnapshot` in the new epoch). Their rooms hear of a closed connection
    /// from the hub, not from the session.
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

    fn redirect(hub: &Hub, player: &String, message: SessionMsg) {
        let (hub, player) = (hub.clone(), player.clone());
        tokio::spawn(async move {
            // On failure the message (and any reply port in it) is dropped: its caller
            // hears that the session was unavailable.
            if let Err(error) = hub.cast_session(&player, message).await {
                tracing::warn!(%player, %error, "a message for a passivating session was not passed on");
            }
        });
    }

    fn perform(
        hub: &Hub,
        player: &String,
        myself: &ractor::ActorRef<SessionMsg>,
        effect: SessionEffect,
    ) {
        match effect {
            SessionEffect::Run {
                flow,
                epoch,
                number,
            } => {
                let done = flows::Done::new(myself.clone(), FlowTag { epoch, number });
                tokio::spawn(flows::run(hub.clone(), player.clone(), flow, done));
            }
            SessionEffect::FollowRooms {
                rooms,
                outbound,
                welcome,
                epoch,
            } => flows::follow_rooms(hub, player, rooms, outbound, welcome, epoch),
            SessionEffect::Relay { room, message } => flows::relay(hub, room, message),
            SessionEffect::ReportActivation { root } => {
                flows::report_activation(hub, player, root);
            }
            SessionEffect::AskStats { root, reply } => flows::ask_stats(hub, player, root, reply),
            SessionEffect::Leaderboard { limit, reply } => flows::leaderboard(hub, limit, reply),
            SessionEffect::Convert {
                root,
                kind,
                key,
                reply,
            } => flows::convert(hub, player, root, kind, key, reply),
        }
    }
}

fn store_error(error: StoreError) -> ErrorReply {
    ErrorReply::new(ErrorCode::StoreFailure, error.to_string())
}

fn not_in_room(room: RoomId) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::NotInRoom,
        format!("you are not in room {room}; QuickJoin a room first"),
    )
}

/// A new connection follows the player's stream (replayed from its position, or a
/// snapshot) and the streams of the player's rooms.
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
        Some((epoch, seq)) => cx.stream.replay_after(epoch, seq).unwrap_or_else(|| {
            let balance = cx.state().balance;
            vec![cx.stream.snapshot_frame(Event::PlayerSnapshot { balance })]
        }),
    };
    let rooms = cx
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
    let epoch = cx.stream.epoch();
    cx.own(SessionEffect::FollowRooms {
        rooms,
        outbound,
        welcome: reply,
        epoch,
    });
}

/// Answers what the session knows by itself, relays what a room answers, and queues
/// the rest as flows.
fn request_arrived(
    cx: &mut Cx<'_>,
    request: Request,
    reply: msg::RequestReply,
    received_ms: u64,
    suspect_source: bool,
) {
    let player = cx.id.clone();
    match request {
        Request::GetWallet => {
            let balance = cx.state().balance;
            cx.reply(reply, Ok(ReplyBody::Wallet { balance }));
        }
        Request::RotateSeed { wheel } => {
            let rotated = rotate_seed(cx, wheel);
            cx.reply(reply, rotated);
        }
        // The gateway answers token refreshes itself; one reaching here is a bug.
        Request::RefreshToken { .. } => {
            cx.reply(
                reply,
                Err(ErrorReply::new(
                    ErrorCode::Internal,
                    "token refresh is handled by the connection",
                )),
            );
        }
        Request::Answer { .. } | Request::Chat { .. } | Request::React { .. } => {
            match MemberRequest::from_request(&player, &request, received_ms) {
                Some(member) => {
                    let allowed = match member.room_kind() {
                        Some(kind) => member_of(cx.state(), member.room, kind).map(drop),
                        None => require_member(cx.state(), member.room).map(drop),
                    };
                    relay(cx, member.room, allowed, reply, |reply| {
                        member.message(reply)
                    });
                }
                // Every answer, chat and reaction is a member request.
                None => cx.reply(
                    reply,
                    Err(ErrorReply::new(ErrorCode::Internal, "not a member request")),
                ),
            }
        }
        Request::GetReferralCode if referral::code(cx).is_some() => {
            let code = referral::code(cx).unwrap_or_default();
            cx.reply(reply, Ok(ReplyBody::ReferralCode { code }));
        }
        Request::GetReferralStats => referral::stats(cx, reply),
        Request::GetReferralLeaderboard { limit } => {
            let limit = limit.min(cx.config().referral.leaderboard_max) as usize;
            cx.own(SessionEffect::Leaderboard { limit, reply });
        }
        // The gateway routes these (to the player concerned, or a tree): a player's own
        // session never takes them.
        Request::ReportConversion { .. }
        | Request::GetPlayerReferralStats { .. }
        | Request::ApproveReward { .. }
        | Request::VoidReward { .. }
        | Request::Subscribe { .. }
        | Request::Ack { .. } => cx.reply(
            reply,
            Err(ErrorReply::new(
                ErrorCode::Forbidden,
                "partner requests are not a player's own",
            )),
        ),
        request @ (Request::QuickJoin { .. }
        | Request::CreatePrivate { .. }
        | Request::JoinPrivate { .. }
        | Request::LeaveRoom { .. }
        | Request::Spin { .. }
        | Request::GetReferralCode
        | Request::ClaimReferral { .. }) => queue(
            cx,
            Job::Request {
                request,
                reply,
                suspect_source,
            },
        ),
    }
}

/// Passes a member's request to its room, which answers the client itself.
fn relay(
    cx: &mut Cx<'_>,
    room: RoomId,
    allowed: Result<(), ErrorReply>,
    reply: msg::RequestReply,
    message: impl FnOnce(msg::RequestReply) -> RoomMsg,
) {
    match allowed {
        Ok(()) => cx.own(SessionEffect::Relay {
            room,
            message: message(reply),
        }),
        Err(error) => cx.reply(reply, Err(error)),
    }
}

fn require_member(state: &SessionState, room: RoomId) -> Result<&Membership, ErrorReply> {
    state.rooms.get(&room).ok_or_else(|| not_in_room(room))
}

fn member_of(
    state: &SessionState,
    room: RoomId,
    kind: RoomKind,
) -> Result<&Membership, ErrorReply> {
    let membership = require_member(state, room)?;
    if membership.kind != kind {
        return Err(ErrorReply::new(
            ErrorCode::WrongRoomKind,
            format!("room {room} is a {:?} room", membership.kind),
        ));
    }
    Ok(membership)
}

/// Starts `job` if no flow is under way, or queues it behind the one that is.
fn queue(cx: &mut Cx<'_>, job: Job) {
    if cx.memory.flow.is_none() && cx.memory.queued.is_empty() {
        begin(cx, job);
        return;
    }
    let queued_max = cx.config().session.requests_queued_max;
    // Requests whose clients stopped waiting hold no place.
    cx.memory.queued.retain(|job| match job {
        Job::Request { reply, .. } => !reply.is_closed(),
        Job::RetryPending | Job::ResumeClaim => true,
    });
    match job {
        Job::Request { reply, .. } if cx.memory.queued.len() >= queued_max => {
            metrics::counter!("playtree_rate_limited_total", "limit" => "requests_queued")
                .increment(1);
            cx.reply(
                reply,
                Err(ErrorReply::new(
                    ErrorCode::RateLimited,
                    format!(
                        "{queued_max} of your requests are already waiting for a join, spin or leave to finish; wait for their answers"
                    ),
                )),
            );
        }
        job => cx.memory.queued.push_back(job),
    }
}

/// The flow under way ended: starts the next job that needs one.
fn next_job(cx: &mut Cx<'_>) {
    while cx.memory.flow.is_none() {
        let Some(job) = cx.memory.queued.pop_front() else {
            return;
        };
        begin(cx, job);
    }
}

/// Checks a job against the state as it is now; starts its flow, or answers it at once
/// (a request the checks refuse, a retry with nothing left to settle). A request whose
/// client stopped waiting (it was told "timeout") is not run at all.
fn begin(cx: &mut Cx<'_>, job: Job) {
    let flow = match job {
        Job::Request { reply, .. } if reply.is_closed() => {
            metrics::counter!("playtree_session_requests_dropped_total").increment(1);
            return;
        }
        Job::ResumeClaim => {
            cx.memory.resuming_claim = false;
            let Some(claim) = referral::claim_to_resume(cx) else {
                return;
            };
            Flow::Claim {
                plan: referral::ClaimPlan::Resume(claim),
                reply: None,
            }
        }
        Job::RetryPending => {
            cx.memory.retrying = false;
            cx.memory.last_retry_ms = cx.now_ms;
            let spins: Vec<PendingSpin> = cx.state().pending_spins.values().cloned().collect();
            if spins.is_empty() {
                return;
            }
            Flow::Retry { spins }
        }
        // Made by a request queued before this one.
        Job::Request {
            request: Request::GetReferralCode,
            reply,
            ..
        } if referral::code(cx).is_some() => {
            let code = referral::code(cx).unwrap_or_default();
            cx.reply(reply, Ok(ReplyBody::ReferralCode { code }));
            return;
        }
        Job::Request {
            request,
            reply,
            suspect_source,
        } => match plan(cx, request, suspect_source) {
            Ok(planned) => planned(reply),
            Err(error) => {
                cx.reply(reply, Err(error));
                return;
            }
        },
    };
    cx.memory.flows_started += 1;
    let number = cx.memory.flows_started;
    cx.memory.flow = Some(Running {
        number,
        started_ms: cx.now_ms,
    });
    let epoch = cx.stream.epoch();
    cx.own(SessionEffect::Run {
        flow,
        epoch,
        number,
    });
}

type Planned = Box<dyn FnOnce(msg::RequestReply) -> Flow>;

/// What a request that needs rooms will do, once its checks pass.
fn plan(cx: &mut Cx<'_>, request: Request, suspect_source: bool) -> Result<Planned, ErrorReply> {
    let state = cx.state();
    let config = cx.config();
    Ok(match request {
        Request::QuickJoin {
            kind: RoomKind::Wheel,
            variant,
        } => {
            let wheel = config
                .wheel_or_default(variant.as_deref())
                .ok_or_else(|| unknown_wheel(config, variant.as_deref().unwrap_or_default()))?;
            // Rejoining the room this player is already in for that wheel keeps one seat.
            let current = state.room_of(RoomKind::Wheel, Some(&wheel.id));
            let membership = Membership {
                kind: RoomKind::Wheel,
                variant: wheel.id.clone(),
            };
            let outbounds = connections(cx);
            Box::new(move |reply| Flow::Join {
                target: JoinTarget::Quick { current },
                membership,
                outbounds,
                reply,
            })
        }
        Request::QuickJoin {
            kind: RoomKind::Quiz,
            variant,
        } => {
            if variant.as_deref().is_some_and(|v| v != QUIZ_VARIANT) {
                return Err(ErrorReply::new(
                    ErrorCode::UnknownVariant,
                    "quiz rooms have no variants; send none",
                ));
            }
            already_in_quiz(state)?;
            let outbounds = connections(cx);
            Box::new(|reply| Flow::Join {
                target: JoinTarget::Quick { current: None },
                membership: quiz_membership(),
                outbounds,
                reply,
            })
        }
        Request::CreatePrivate { kind, variant } => {
            if kind != RoomKind::Quiz || variant.is_some() {
                return Err(ErrorReply::new(
                    ErrorCode::WrongRoomKind,
                    "private rooms are quiz rooms, with no variant",
                ));
            }
            already_in_quiz(state)?;
            // Drawn here, from the entropy handed in, like every other seed.
            let code = private_code(&cx.env.entropy.server_seed(), config.rooms.private_code_len);
            // Counted only for a creation that passed every other check.
            if !may_create_private(cx) {
                let per_hour = cx.config().rooms.private_creates_per_hour;
                metrics::counter!("playtree_rate_limited_total", "limit" => "private_creates")
                    .increment(1);
                return Err(ErrorReply::new(
                    ErrorCode::RateLimited,
                    format!("at most {per_hour} private rooms per hour; join one instead"),
                ));
            }
            let outbounds = connections(cx);
            Box::new(move |reply| Flow::Join {
                target: JoinTarget::Create { code },
                membership: quiz_membership(),
                outbounds,
                reply,
            })
        }
        Request::JoinPrivate { code } => {
            already_in_quiz(state)?;
            if !may_try_code(cx) {
                let per_hour = cx.config().rooms.private_code_misses_per_hour;
                metrics::counter!("playtree_rate_limited_total", "limit" => "private_code_misses")
                    .increment(1);
                return Err(ErrorReply::new(
                    ErrorCode::RateLimited,
                    format!(
                        "{per_hour} private codes you tried within the hour matched no room; try again later"
                    ),
                ));
            }
            let code = code.trim().to_ascii_uppercase();
            let outbounds = connections(cx);
            Box::new(move |reply| Flow::Join {
                target: JoinTarget::Code { code },
                membership: quiz_membership(),
                outbounds,
                reply,
            })
        }
        Request::LeaveRoom { room } => {
            require_member(state, room)?;
            Box::new(move |reply| Flow::Leave { room, reply })
        }
        Request::Spin { room, client_seed } => {
            let wheel = spin_wheel(cx, room)?;
            // Spins settle in nonce order: an earlier spin still unsettled goes first.
            let earlier: Vec<PendingSpin> = state
                .pending_spins
                .values()
                .filter(|spin| spin.wheel == wheel)
                .cloned()
                .collect();
            Box::new(move |reply| Flow::Spin {
                room,
                client_seed,
                earlier,
                reply,
            })
        }
        Request::GetReferralCode => Box::new(|reply| Flow::AssignCode { reply }),
        Request::ClaimReferral { code } => {
            let plan = referral::plan_claim(cx, &code, suspect_source).inspect_err(|error| {
                referral::count_claim(error.code);
            })?;
            Box::new(move |reply| Flow::Claim {
                plan,
                reply: Some(reply),
            })
        }
        other => {
            return Err(ErrorReply::new(
                ErrorCode::Internal,
                format!("{other:?} is not a request that runs as a flow"),
            ));
        }
    })
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

/// Whether the player may try a private code: not if the codes that matched no room
/// used up the hour's allowance (so that codes cannot be enumerated, whatever the
/// number of connections).
fn may_try_code(cx: &mut Cx<'_>) -> bool {
    let (now_ms, per_hour) = (cx.now_ms, cx.config().rooms.private_code_misses_per_hour);
    cx.memory
        .code_misses
        .get_or_insert_with(|| TokenBucket::per_period(per_hour, 3_600_000, now_ms))
        .has_token(now_ms)
}

/// Takes one of the player's private-room openings for the hour, if one is left.
fn may_create_private(cx: &mut Cx<'_>) -> bool {
    let (now_ms, per_hour) = (cx.now_ms, cx.config().rooms.private_creates_per_hour);
    cx.memory
        .private_creates
        .get_or_insert_with(|| TokenBucket::per_period(per_hour, 3_600_000, now_ms))
        .try_take(now_ms)
}

/// Only the flow under way may change seats or draw spins: not one given up by the
/// watchdog, nor one an older incarnation started.
fn running(cx: &Cx<'_>, flow: FlowTag) -> Result<(), ErrorReply> {
    let current = flow.epoch == cx.stream.epoch()
        && cx
            .memory
            .flow
            .is_some_and(|running| running.number == flow.number);
    if current {
        Ok(())
    } else {
        Err(ErrorReply::new(
            ErrorCode::Timeout,
            "the request was given up before it finished (it took longer than the session allows, or the session restarted); nothing more of it is recorded",
        ))
    }
}

/// Stops waiting for a spin that can never settle (its room or wheel is gone, or the
/// room says it was delivered already), if it still waits, with its dead letter in the
/// same commit; says whether it did. It would otherwise be retried forever, block the
/// player's next spin and keep the session from passivating.
fn abandon(cx: &mut Cx<'_>, spin: &PendingSpin, reason: String) -> Result<bool, ErrorReply> {
    if !cx.state().pending_spins.contains_key(&spin.key()) {
        // Settled meanwhile (a redelivered grant reached the wallet): nothing to abandon.
        return Ok(false);
    }
    cx.dead_letter(DeadLetter {
        kind: "spin".into(),
        id: cx.id.clone(),
        what: format!(
            "spin {} of wheel {} in room {} (segment {})",
            spin.nonce, spin.wheel, spin.room, spin.segment
        ),
        reason,
    })
    .map_err(store_error)?;
    cx.emit(SessionEvent::SpinAbandoned { spin: spin.key() })
        .map_err(store_error)?;
    Ok(true)
}

fn quiz_membership() -> Membership {
    Membership {
        kind: RoomKind::Quiz,
        variant: QUIZ_VARIANT.into(),
    }
}

fn already_in_quiz(state: &SessionState) -> Result<(), ErrorReply> {
    match state.room_of(RoomKind::Quiz, None) {
        Some(room) => Err(ErrorReply::new(
            ErrorCode::AlreadyInRoom,
            format!("you are already in quiz room {room}; leave it first"),
        )),
        None => Ok(()),
    }
}

fn unknown_wheel(config: &GameConfig, name: &str) -> ErrorReply {
    let known: Vec<&str> = config.wheels.iter().map(|w| w.id.as_str()).collect();
    ErrorReply::new(
        ErrorCode::UnknownVariant,
        format!(
            "there is no wheel `{name}`; this server has: {}",
            known.join(", ")
        ),
    )
}

/// The wheel a member spins in `room`, if it still exists.
fn spin_wheel(cx: &Cx<'_>, room: RoomId) -> Result<String, ErrorReply> {
    let wheel = member_of(cx.state(), room, RoomKind::Wheel)?
        .variant
        .clone();
    if cx.config().wheel(&wheel).is_none() {
        return Err(unknown_wheel(cx.config(), &wheel));
    }
    Ok(wheel)
}

/// A flow that has not ended after `session.flow_timeout_ms` is given up (its late end
/// is ignored), so that one lost flow cannot wedge the player's requests for good.
fn give_up_overdue_flow(cx: &mut Cx<'_>) {
    let timeout_ms = cx.config().session.flow_timeout_ms;
    let Some(running) = cx.memory.flow else {
        return;
    };
    if cx.now_ms < running.started_ms + timeout_ms {
        return;
    }
    tracing::warn!(player = %cx.id, flow = running.number, "a flow did not end in time; the next request goes ahead");
    metrics::counter!("playtree_session_flows_timed_out_total").increment(1);
    cx.memory.flow = None;
    next_job(cx);
}

/// Queues a retry of every unsettled spin, unless one is queued or under way.
/// Queues taking up the claim under way, if there is one and nothing does already.
fn resume_claim(cx: &mut Cx<'_>) {
    if cx.state().referral.claiming.is_some() && !cx.memory.resuming_claim {
        cx.memory.resuming_claim = true;
        cx.memory.last_claim_attempt_ms = cx.now_ms;
        queue(cx, Job::ResumeClaim);
    }
}

fn queue_retry(cx: &mut Cx<'_>) {
    cx.memory.last_retry_ms = cx.now_ms;
    if !cx.memory.retrying {
        cx.memory.retrying = true;
        queue(cx, Job::RetryPending);
    }
}

/// A flow seated the player in `room`: the membership (and a first server seed for a
/// wheel) are journaled; the wheel's fairness is the answer. The rules the request was
/// checked against are checked again: a flow of an older incarnation may have seated
/// the player meanwhile.
fn joined(
    cx: &mut Cx<'_>,
    room: RoomId,
    membership: Membership,
    followed: &[ConnectionId],
) -> Result<Option<FairnessInfo>, ErrorReply> {
    let variant = (membership.kind == RoomKind::Wheel).then_some(membership.variant.as_str());
    if let Some(other) = cx.state().room_of(membership.kind, variant)
        && other != room
    {
        return Err(ErrorReply::new(
            ErrorCode::AlreadyInRoom,
            format!(
                "you are already in {:?} room {other}; leave it first",
                membership.kind
            ),
        ));
    }
    let mut events = Vec::new();
    if membership.kind == RoomKind::Wheel && !cx.state().wheels.contains_key(&membership.variant) {
        events.push(SessionEvent::SeedCommitted {
            wheel: membership.variant.clone(),
            server_seed: cx.env.entropy.server_seed(),
        });
    }
    if !cx.state().rooms.contains_key(&room) {
        events.push(SessionEvent::JoinedRoom {
            room,
            membership: membership.clone(),
        });
    }
    cx.emit_all(events).map_err(store_error)?;
    // Connections opened while the flow was seating the player follow the room too.
    let player = cx.id.clone();
    for outbound in connections(cx) {
        if !followed.contains(&outbound.connection) {
            // Noted before the room hears of it (see `Hub::connection_closed`).
            let noted = outbound.clone();
            cx.then(move || noted.note_room(room));
            cx.effect(Effect::ToRoom {
                room,
                message: RoomMsg::Subscribe {
                    player: player.clone(),
                    outbound,
                    position: None,
                },
            });
        }
    }
    if membership.kind != RoomKind::Wheel {
        return Ok(None);
    }
    let fairness = cx
        .state()
        .wheels
        .get(&membership.variant)
        .map(|f| f.info(cx.now_ms))
        .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "seed missing after commit"))?;
    Ok(Some(fairness))
}

/// Draws the next spin in `room` once no earlier spin of its wheel waits to settle.
fn draw_spin(cx: &mut Cx<'_>, room: RoomId, client_seed: &str) -> Result<PendingSpin, ErrorReply> {
    let wheel_id = spin_wheel(cx, room)?;
    if cx
        .state()
        .pending_spins
        .keys()
        .any(|(wheel, _)| *wheel == wheel_id)
    {
        return Err(ErrorReply::new(
            ErrorCode::Timeout,
            "your previous spin is still being settled; try again in a few seconds",
        ));
    }
    let wheel = cx
        .config()
        .wheel(&wheel_id)
        .ok_or_else(|| unknown_wheel(cx.config(), &wheel_id))?;
    let (spin, day) = logic::draw_spin(cx.state(), wheel, room, client_seed, cx.now_ms)?;
    cx.emit(SessionEvent::SpinDrawn {
        spin: spin.clone(),
        day,
    })
    .map_err(store_error)?;
    cx.then(move || metrics::counter!("playtree_spins_total", "wheel" => wheel_id).increment(1));
    Ok(spin)
}

/// A room settled `spin`: its grant is credited, and the player learns the outcome.
fn settled_spin(
    cx: &mut Cx<'_>,
    spin: PendingSpin,
    settled: Settled,
) -> Result<SpinOutcome, ErrorReply> {
    credit(cx, settled.grant, GrantSource::Room(spin.room))?;
    // A settled spin is a finished game: the first one activates the player.
    referral::game_finished(cx);
    let spins_left_today = cx
        .config()
        .wheel(&spin.wheel)
        .map_or(0, |wheel| logic::spins_left(cx.state(), wheel, cx.now_ms));
    Ok(SpinOutcome {
        room: spin.room,
        wheel: spin.wheel,
        nonce: spin.nonce,
        client_seed: spin.client_seed,
        commitment: spin.commitment,
        segment: spin.segment,
        label: settled.label,
        prize: settled.prize,
        inventory_exhausted: settled.inventory_exhausted,
        balance: cx.state().balance,
        spins_left_today,
    })
}

/// Credits `grant` unless it was credited before, then acknowledges it to its room
/// either way (an acknowledgement can be lost, so duplicates are acknowledged too).
fn credit(cx: &mut Cx<'_>, grant: Grant, source: GrantSource) -> Result<(), ErrorReply> {
    let decision = logic::decide_credit(cx.state(), cx.id, &grant);
    match decision {
        logic::CreditDecision::Misaddressed => {
            // Never credited and never acknowledged: the grant stays with its source.
            metrics::counter!("playtree_rewards_misaddressed_total").increment(1);
            let letter = DeadLetter {
                kind: "grant".into(),
                id: cx.id.clone(),
                what: format!("grant {} for {}", grant.id, grant.beneficiary),
                reason: "delivered to another player's wallet".into(),
            };
            if let Err(error) = cx.dead_letter(letter) {
                tracing::error!(player = %cx.id, grant = %grant.id, %error, "misaddressed grant not recorded");
            }
            return Err(ErrorReply::new(
                ErrorCode::Internal,
                format!(
                    "grant {} is for {}, not you; nothing was credited and the fault goes to the dead letters",
                    grant.id, grant.beneficiary
                ),
            ));
        }
        logic::CreditDecision::Credit(event) => {
            if let Err(error) = cx.emit(event) {
                // Not acknowledged: the room keeps the grant and delivers it again.
                tracing::error!(player = %cx.id, grant = %grant.id, %error, "credit not saved");
                return Err(store_error(error));
            }
            let amount = grant.amount;
            cx.then(move || {
                // Counted once durable, like everything the credit implies.
                metrics::counter!("playtree_rewards_credited_total").increment(1);
                metrics::counter!("playtree_reward_coins_credited_total").increment(amount);
            });
            if grant.amount > 0 {
                let balance = cx.state().balance;
                cx.publish(Event::WalletCredited {
                    grant_id: grant.id.to_string(),
                    amount: grant.amount,
                    balance,
                    reason: grant.reason.clone(),
                });
            }
        }
        logic::CreditDecision::Duplicate => {
            metrics::counter!("playtree_rewards_duplicates_total").increment(1);
        }
    }
    cx.effect(match source {
        GrantSource::Room(room) => Effect::ToRoom {
            room,
            message: RoomMsg::GrantAcked { grant: grant.id },
        },
        GrantSource::Tree(root) => Effect::ToTree {
            root,
            message: TreeMsg::GrantAcked { grant: grant.id },
        },
    });
    Ok(())
}

fn rotate_seed(cx: &mut Cx<'_>, wheel: String) -> Result<ReplyBody, ErrorReply> {
    if cx.config().wheel(&wheel).is_none() {
        return Err(unknown_wheel(cx.config(), &wheel));
    }
    let entropy = cx.env.entropy.clone();
    let (events, revealed_seed) = logic::decide_rotation(
        cx.state(),
        &wheel,
        || entropy.server_seed(),
        entropy.server_seed(),
    );
    cx.emit_all(events).map_err(store_error)?;
    let current = cx
        .state()
        .wheels
        .get(&wheel)
        .cloned()
        .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "seed missing after rotation"))?;
    Ok(ReplyBody::SeedRotated(SeedReveal {
        wheel,
        revealed_seed,
        revealed_commitment: fairness::commitment(&revealed_seed),
        next_commitment: current.commitment,
        next_nonce: current.next_nonce,
    }))
}

/// A short code for a private room, from the letters and digits people do not confuse.
fn private_code(entropy: &[u8; 32], len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // 32 symbols: each byte's low five bits pick one without bias.
    entropy
        .iter()
        .take(len)
        .map(|byte| ALPHABET[(byte & 31) as usize] as char)
        .collect()
}
