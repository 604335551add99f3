//! Flows: what a player's request does when it needs rooms (a join, a spin, a leave, a
//! retry of unsettled spins). A flow is a task, not part of the session: it asks rooms
//! and the matchmaker, then reports back to the session with an input
//! ([`SessionMsg::Joined`], [`SessionMsg::Settled`], ...), which decides as usual. The
//! session's mailbox never waits on a room; one flow runs at a time per player, and
//! every flow tells the session when it ends ([`SessionMsg::FlowDone`]), however it ends.

use super::msg::{FlowTag, JoinRecord, RequestReply};
use super::referral::ClaimPlan;
use super::state::{Claim, Membership, PendingSpin};
use super::{QUIZ_VARIANT, SessionMsg, SessionWelcome};
use crate::HubError;
use crate::connections::Outbound;
use crate::hub::Hub;
use crate::referral::TreeMsg;
use crate::room::{Position, RoomError, RoomMsg, RoomSpec, RoomView};
use playtree_protocol::{
    ErrorCode, ErrorReply, QuizJoined, ReplyBody, RoomId, RoomJoined, RoomKind, SpinOutcome,
};
use ractor::ActorRef;

/// Rooms one QuickJoin tries before it gives up (each may have filled meanwhile).
const JOIN_TRIES_MAX: usize = 4;

/// Which room a join looks for.
#[derive(Debug)]
pub enum JoinTarget {
    /// An open public room; `current` first (the player's seat for that wheel).
    Quick { current: Option<RoomId> },
    /// A new private room with this code.
    Create { code: String },
    /// The open private room with this code.
    Code { code: String },
}

#[derive(Debug)]
pub enum Flow {
    Join {
        target: JoinTarget,
        membership: Membership,
        /// The player's connections when the join was decided: they follow the room.
        outbounds: Vec<Outbound>,
        reply: RequestReply,
    },
    Leave {
        room: RoomId,
        reply: RequestReply,
    },
    /// Settles `earlier` spins of the wheel first, then draws and settles a new one.
    Spin {
        room: RoomId,
        client_seed: String,
        earlier: Vec<PendingSpin>,
        reply: RequestReply,
    },
    Retry {
        spins: Vec<PendingSpin>,
    },
    /// Makes the player's referral code.
    AssignCode {
        reply: RequestReply,
    },
    /// Claims a referral code: finds its owner, records the claim as under way, has
    /// the owner accept the player (answering their tree), then the tree attach them.
    /// Without `reply`, it takes up a claim under way that nobody waits for.
    Claim {
        plan: ClaimPlan,
        reply: Option<RequestReply>,
    },
}

/// Tells the incarnation that started the flow that it ended, when dropped: also if the
/// flow panics or its task is cancelled, so that a player's requests never wait behind
/// a lost flow. Straight to that incarnation's actor (not by name): it may still be
/// activating, and a newer incarnation has forgotten the flow anyway.
#[derive(Debug)]
pub struct Done {
    session: ActorRef<SessionMsg>,
    tag: FlowTag,
}

impl Done {
    pub fn new(session: ActorRef<SessionMsg>, tag: FlowTag) -> Done {
        Done { session, tag }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        // A stopped incarnation has nobody waiting.
        let _ = self.session.cast(SessionMsg::FlowDone {
            epoch: self.tag.epoch,
            flow: self.tag.number,
        });
    }
}

pub async fn run(hub: Hub, player: String, flow: Flow, done: Done) {
    let tag = done.tag;
    let _done = done;
    match flow {
        Flow::Join {
            target,
            membership,
            outbounds,
            reply,
        } => {
            let joined = join(&hub, &player, tag, target, membership, &outbounds).await;
            let _ = reply.send(joined);
        }
        Flow::Leave { room, reply } => {
            let left = leave(&hub, &player, tag, room).await;
            let _ = reply.send(left);
        }
        Flow::Spin {
            room,
            client_seed,
            earlier,
            reply,
        } => {
            for spin in earlier {
                if let Err(error) = settle(&hub, &player, &spin).await {
                    tracing::warn!(%player, nonce = spin.nonce, room = spin.room, %error, "earlier spin not settled yet");
                }
            }
            let spun = spin(&hub, &player, tag, room, client_seed).await;
            let _ = reply.send(spun);
        }
        Flow::Retry { spins } => {
            for spin in spins {
                if let Err(error) = settle(&hub, &player, &spin).await {
                    tracing::warn!(%player, nonce = spin.nonce, room = spin.room, %error, "spin not settled yet; will retry");
                }
            }
        }
        Flow::AssignCode { reply } => {
            let code = assign_code(&hub, &player, tag).await;
            let _ = reply.send(code.map(|code| ReplyBody::ReferralCode { code }));
        }
        Flow::Claim { plan, reply } => {
            let claimed = claim(&hub, &player, tag, plan).await;
            match &claimed {
                Ok(_) => {
                    metrics::counter!("playtree_referral_claims_total", "outcome" => "accepted")
                        .increment(1);
                }
                Err(error) => super::referral::count_claim(error.code),
            }
            if let Some(reply) = reply {
                let _ = reply.send(claimed.map(|referrer| ReplyBody::ReferralClaimed { referrer }));
            }
        }
    }
}

/// Makes a code from a number the store hands out once, and has the session keep it
/// (with its index entry).
async fn assign_code(hub: &Hub, player: &str, tag: FlowTag) -> Result<String, ErrorReply> {
    let number = hub.store.generate_id().map_err(store_failure)?;
    let code = hub.codes.code_for(number).ok_or_else(|| {
        ErrorReply::new(
            ErrorCode::Internal,
            "every referral code has been given out",
        )
    })?;
    ask(hub, player, |reply| SessionMsg::CodeMade {
        flow: tag,
        code: code.clone(),
        reply,
    })
    .await
}

fn store_failure(error: crate::store::StoreError) -> ErrorReply {
    ErrorReply::new(ErrorCode::StoreFailure, error.to_string())
}

/// Claims a code; answers the referrer. Each step is recorded in the session before the
/// next is taken, so a claim interrupted anywhere (a crash, a timeout) is taken up
/// again from where it stands, by the session itself, with the same referrer and tree.
async fn claim(
    hub: &Hub,
    player: &str,
    tag: FlowTag,
    plan: ClaimPlan,
) -> Result<String, ErrorReply> {
    let claim = match plan {
        ClaimPlan::Resume(claim) => claim,
        ClaimPlan::Lookup { code, suspect } => {
            let owner = hub
                .store
                .get_raw(crate::referral::code::index_key(&code))
                .await
                .map_err(store_failure)?
                .ok_or_else(|| {
                    ErrorReply::new(
                        ErrorCode::UnknownReferralCode,
                        format!("no player has the referral code {code}"),
                    )
                })?;
            let referrer = String::from_utf8(owner).map_err(|_| {
                ErrorReply::new(ErrorCode::Internal, "a referral code's owner is unreadable")
            })?;
            if referrer == player {
                return Err(super::referral::self_referral());
            }
            ask(hub, player, |reply| SessionMsg::ClaimStarting {
                flow: tag,
                referrer: referrer.clone(),
                suspect,
                reply,
            })
            .await?;
            Claim { referrer, suspect }
        }
    };
    let (referrer, suspect) = (claim.referrer, claim.suspect);
    let settle = |root: Option<String>, outcome: Result<(), ErrorReply>| {
        let referrer = referrer.clone();
        async move {
            ask(hub, player, |reply| SessionMsg::ClaimSettled {
                referrer: referrer.clone(),
                root: root.clone(),
                outcome: outcome.clone(),
                reply,
            })
            .await
        }
    };
    // Asked again when a claim is taken up: the referrer answers the same root once it
    // has accepted the player (so the root needs no commit of its own here).
    let accepted = hub
        .call_session(&referrer, |reply| SessionMsg::AcceptReferee {
            referee: player.to_owned(),
            reply,
        })
        .await?;
    let root = match accepted {
        Ok(root) => root,
        Err(refusal) if refusal.code == ErrorCode::StoreFailure => return Err(refusal),
        // The owner refused (they are claiming themselves, or it is this player): the
        // claim ends here.
        Err(refusal) => {
            settle(None, Err(refusal.clone())).await.ok();
            return Err(refusal);
        }
    };
    let attached = hub
        .call_tree(&root, |reply| TreeMsg::Attach {
            referrer: referrer.clone(),
            referee: player.to_owned(),
            suspect,
            reply,
        })
        .await?;
    if let Err(error) = &attached
        && error.code == ErrorCode::StoreFailure
    {
        // Not an answer: the claim stays under way, and is taken up again.
        return Err(error.clone());
    }
    settle(Some(root), attached).await?;
    Ok(referrer)
}

/// Tells the player's tree of their activation; the session records that it did.
pub fn report_activation(hub: &Hub, player: &str, root: String) {
    let (hub, player) = (hub.clone(), player.to_owned());
    tokio::spawn(async move {
        let recorded = hub
            .call_tree(&root, |reply| TreeMsg::Activated {
                player: player.clone(),
                reply,
            })
            .await;
        match recorded {
            Ok(Ok(())) => hub.send_to_session(player, SessionMsg::ActivationRecorded),
            // The session tries again at its next deadline.
            Ok(Err(error)) => tracing::warn!(%player, %root, %error, "activation not recorded"),
            Err(error) => tracing::warn!(%player, %root, %error, "activation not recorded"),
        }
    });
}

/// Passes a partner's conversion report for the player to their tree.
pub fn convert(
    hub: &Hub,
    player: &str,
    root: String,
    kind: String,
    key: String,
    reply: ractor::RpcReplyPort<Result<u32, ErrorReply>>,
) {
    let (hub, player) = (hub.clone(), player.to_owned());
    tokio::spawn(async move {
        let made = hub
            .call_tree(&root, |reply| TreeMsg::Conversion {
                player: player.clone(),
                kind: kind.clone(),
                key: key.clone(),
                reply,
            })
            .await;
        let _ = reply.send(made.unwrap_or_else(|error| Err(error.to_reply())));
    });
}

/// Answers the top `limit` referrers, from the store's leaderboard index.
pub fn leaderboard(hub: &Hub, limit: usize, reply: RequestReply) {
    let hub = hub.clone();
    tokio::spawn(async move {
        let top = crate::referral::leaderboard::top(&hub.store, limit).await;
        let _ = reply.send(
            top.map(|entries| ReplyBody::ReferralLeaderboard { entries })
                .map_err(store_failure),
        );
    });
}

/// Answers the player's referral statistics from their tree.
pub fn ask_stats(hub: &Hub, player: &str, root: String, reply: RequestReply) {
    let (hub, player) = (hub.clone(), player.to_owned());
    tokio::spawn(async move {
        let stats = hub
            .call_tree(&root, |reply| TreeMsg::Stats {
                player: player.clone(),
                reply,
            })
            .await;
        let _ = reply.send(
            stats
                .map(ReplyBody::ReferralStats)
                .map_err(|error| error.to_reply()),
        );
    });
}

/// Asks the player's own session, which decides.
async fn ask<R: Send + 'static>(
    hub: &Hub,
    player: &str,
    build: impl Fn(ractor::RpcReplyPort<Result<R, ErrorReply>>) -> SessionMsg,
) -> Result<R, ErrorReply> {
    hub.call_session(player, build).await?
}

async fn join(
    hub: &Hub,
    player: &str,
    flow: FlowTag,
    target: JoinTarget,
    membership: Membership,
    outbounds: &[Outbound],
) -> Result<ReplyBody, ErrorReply> {
    let kind = membership.kind;
    let (room, view) = match target {
        JoinTarget::Quick { mut current } => {
            let mut tried = Vec::new();
            let mut joined = None;
            let capacity = match kind {
                RoomKind::Wheel => hub.config.rooms.wheel_players_max,
                RoomKind::Quiz => hub.config.quiz.players_max,
            };
            for _ in 0..JOIN_TRIES_MAX {
                // The player's own seat first; else a seat the matchmaker promises (in
                // the fullest open room, or a new one that concurrent joins then fill).
                let (room, claim) = match current.take() {
                    Some(room) => (room, None),
                    None => {
                        let claim = hub.matchmaker.claim(
                            kind,
                            &membership.variant,
                            capacity,
                            &tried,
                            || new_room_id(hub),
                        )?;
                        (claim.claim.room, Some(claim))
                    }
                };
                let create = claim.as_ref().is_some_and(|claim| claim.claim.create);
                let spec = create.then(|| RoomSpec {
                    kind,
                    variant: membership.variant.clone(),
                    private_code: None,
                });
                let seated = seat(hub, player, room, spec, outbounds).await;
                // The promise is settled now that the room has answered (and, should
                // anything above fail or this task be cancelled, when it is dropped).
                drop(claim);
                match seated {
                    Ok(Ok(view)) => {
                        joined = Some((room, view));
                        break;
                    }
                    // Filled up or started since it was listed: try another.
                    // (A room stopping after a failed commit answers `Store`.)
                    Ok(Err(
                        RoomError::Full { .. } | RoomError::GameInProgress | RoomError::Store(_),
                    ))
                    | Err(HubError::UnknownRoom(_)) => tried.push(room),
                    Ok(Err(error)) => return Err(error.into()),
                    Err(error) => return Err(error.into()),
                }
            }
            joined.ok_or_else(|| {
                ErrorReply::new(
                    ErrorCode::NoRoomAvailable,
                    format!(
                        "every `{}` room tried was full; try again shortly",
                        membership.variant
                    ),
                )
            })?
        }
        JoinTarget::Create { code } => {
            let code = free_code(hub, code)?;
            let room = new_room_id(hub)?;
            let spec = RoomSpec {
                kind: RoomKind::Quiz,
                variant: QUIZ_VARIANT.into(),
                private_code: Some(code),
            };
            let view = seat(hub, player, room, Some(spec), outbounds).await??;
            metrics::counter!("playtree_private_rooms_created_total").increment(1);
            (room, view)
        }
        JoinTarget::Code { code } => {
            let Some(room) = hub.matchmaker.room_for_code(&code) else {
                // Told before this flow ends, so counted before the next JoinPrivate.
                hub.send_to_session(player.to_owned(), SessionMsg::CodeMissed);
                return Err(ErrorReply::new(
                    ErrorCode::UnknownRoomCode,
                    format!("no open private room has the code {code}"),
                ));
            };
            let view = seat(hub, player, room, None, outbounds).await??;
            (room, view)
        }
    };
    let followed: Vec<_> = outbounds
        .iter()
        .map(|outbound| outbound.connection)
        .collect();
    let recorded = hub
        .call_session(player, |reply| SessionMsg::Joined {
            flow,
            room,
            membership: membership.clone(),
            followed: followed.clone(),
            reply,
        })
        .await?;
    let fairness = match recorded {
        JoinRecord::Recorded(fairness) => fairness,
        JoinRecord::Refused { error, give_back } => {
            // The session did not record the seat (another seat of that kind was taken
            // meanwhile, the flow was given up, or the store refused). A seat this join
            // gave and the records do not hold is given back rather than kept unknown
            // to the player; one the player held before stays.
            if give_back
                && view.seated_now
                && let Err(leave) = hub
                    .call_room(room, None, |reply| RoomMsg::Leave {
                        player: player.to_owned(),
                        reply,
                    })
                    .await
            {
                tracing::warn!(%player, room, error = %leave, "an unrecorded seat was not given back");
            }
            return Err(error);
        }
    };
    Ok(match (kind, fairness) {
        (RoomKind::Wheel, Some(fairness)) => {
            let wheel = hub
                .config
                .wheel(&membership.variant)
                .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "wheel gone after join"))?;
            ReplyBody::RoomJoined(RoomJoined {
                room,
                kind,
                stream_epoch: view.stream_epoch,
                stream_seq: view.stream_seq,
                wheel: wheel.info(),
                fairness,
                members: view.members,
            })
        }
        _ => ReplyBody::QuizJoined(QuizJoined {
            room,
            stream_epoch: view.stream_epoch,
            stream_seq: view.stream_seq,
            code: view.private_code,
            snapshot: view.snapshot,
        }),
    })
}

/// `code`, or a fresh one if an open room holds it already (codes are short: they can
/// collide).
fn free_code(hub: &Hub, code: String) -> Result<String, ErrorReply> {
    let len = code.len();
    let mut candidate = code;
    for _ in 0..8 {
        if hub.matchmaker.room_for_code(&candidate).is_none() {
            return Ok(candidate);
        }
        metrics::counter!("playtree_private_code_collisions_total").increment(1);
        candidate = super::private_code(&hub.entropy.server_seed(), len);
    }
    Err(ErrorReply::new(
        ErrorCode::NoRoomAvailable,
        "no free private code was found; try again",
    ))
}

fn new_room_id(hub: &Hub) -> Result<RoomId, ErrorReply> {
    hub.store
        .generate_id()
        .map_err(|error| ErrorReply::new(ErrorCode::StoreFailure, error.to_string()))
}

/// Seats the player in `room` (opening it with `spec` if new); the player's live
/// connections follow it from then on.
async fn seat(
    hub: &Hub,
    player: &str,
    room: RoomId,
    spec: Option<RoomSpec>,
    outbounds: &[Outbound],
) -> Result<Result<RoomView, RoomError>, HubError> {
    // Noted before the room hears of them: a connection that closes meanwhile tells
    // the room, or the room finds it closed (see `Hub::connection_closed`).
    let newly_noted: Vec<&Outbound> = outbounds
        .iter()
        .filter(|outbound| !outbound.follows_room(room))
        .collect();
    for outbound in &newly_noted {
        outbound.note_room(room);
    }
    let seated = hub
        .call_room(room, spec, |reply| RoomMsg::Join {
            player: player.to_owned(),
            outbounds: outbounds.to_vec(),
            reply,
        })
        .await;
    // Forgotten only when the room surely does not follow them: it refused, or does not
    // exist. After a timeout it may have seated the player all the same.
    if matches!(seated, Ok(Err(_)) | Err(HubError::UnknownRoom(_))) {
        for outbound in newly_noted {
            outbound.forget_room(room);
        }
    }
    seated
}

async fn leave(
    hub: &Hub,
    player: &str,
    flow: FlowTag,
    room: RoomId,
) -> Result<ReplyBody, ErrorReply> {
    match hub
        .call_room(room, None, |reply| RoomMsg::Leave {
            player: player.to_owned(),
            reply,
        })
        .await
    {
        Ok(result) => result.map_err(ErrorReply::from)?,
        // A room that no longer exists has no seat to give back.
        Err(HubError::UnknownRoom(_)) => {}
        Err(error) => return Err(error.into()),
    }
    ask(hub, player, |reply| SessionMsg::Left { flow, room, reply }).await?;
    Ok(ReplyBody::RoomLeft { room })
}

async fn spin(
    hub: &Hub,
    player: &str,
    flow: FlowTag,
    room: RoomId,
    client_seed: String,
) -> Result<ReplyBody, ErrorReply> {
    let spin = ask(hub, player, |reply| SessionMsg::DrawSpin {
        flow,
        room,
        client_seed: client_seed.clone(),
        reply,
    })
    .await?;
    match settle(hub, player, &spin).await {
        Ok(Some(outcome)) => Ok(ReplyBody::Spun(outcome)),
        Ok(None) => Err(ErrorReply::new(
            ErrorCode::Timeout,
            format!(
                "spin {} was settled by a redelivery while its answer was on the way; its prize is in your wallet",
                spin.nonce
            ),
        )),
        Err(Unsettled { error, abandoned }) => {
            let fate = if abandoned {
                "cannot be settled; it is recorded for an operator"
            } else {
                "is drawn and will be settled; its prize arrives as a wallet event"
            };
            Err(ErrorReply::new(
                error.code,
                format!("spin {} {fate} ({})", spin.nonce, error.message),
            ))
        }
    }
}

/// Why a spin is not settled: `abandoned` if it never will be.
#[derive(Debug)]
struct Unsettled {
    error: ErrorReply,
    abandoned: bool,
}

impl std::fmt::Display for Unsettled {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.error)
    }
}

impl From<ErrorReply> for Unsettled {
    fn from(error: ErrorReply) -> Self {
        Unsettled {
            error,
            abandoned: false,
        }
    }
}

/// Asks the spin's room to settle it and has the session credit the grant that comes
/// back. A settlement that can never succeed abandons the spin, with a dead letter
/// written first; `None` if the spin turned out settled already (a redelivered grant
/// reached the wallet meanwhile).
async fn settle(
    hub: &Hub,
    player: &str,
    spin: &PendingSpin,
) -> Result<Option<SpinOutcome>, Unsettled> {
    let answer = hub
        .call_room(spin.room, None, |reply| RoomMsg::Settle {
            player: player.to_owned(),
            spin: spin.clone(),
            reply,
        })
        .await;
    let permanent = match &answer {
        Err(error @ HubError::UnknownRoom(_)) => Some(error.to_string()),
        Ok(Err(error)) if error.is_permanent() => Some(error.to_string()),
        // Defence in depth: the room answered with someone else's grant. Never credit
        // it, and stop retrying a settlement that keeps doing that.
        Ok(Ok(settled)) if settled.grant.beneficiary != player => {
            Some("the room settled it with another player's grant".to_owned())
        }
        _ => None,
    };
    if let Some(reason) = permanent {
        let abandoned = ask(hub, player, |reply| SessionMsg::Abandon {
            spin: spin.clone(),
            reason: reason.clone(),
            reply,
        })
        .await?;
        if !abandoned {
            // "Already delivered" to a wallet that has it: nothing to abandon.
            return Ok(None);
        }
        return Err(Unsettled {
            error: ErrorReply::new(ErrorCode::Internal, reason),
            abandoned: true,
        });
    }
    let settled = answer
        .map_err(ErrorReply::from)?
        .map_err(ErrorReply::from)?;
    let outcome = ask(hub, player, |reply| SessionMsg::Settled {
        spin: spin.clone(),
        settled: settled.clone(),
        reply,
    })
    .await?;
    Ok(Some(outcome))
}

/// A new connection follows the player's rooms, then is welcome: straight into the
/// mailboxes of rooms in memory, in order with what the session does next; rooms that
/// must be activated first are followed from a task, and the welcome waits for them.
pub fn follow_rooms(
    hub: &Hub,
    player: &str,
    rooms: Vec<(RoomId, Option<Position>)>,
    outbound: Outbound,
    welcome: ractor::RpcReplyPort<Result<SessionWelcome, ErrorReply>>,
    epoch: u64,
) {
    let subscribe = |position| RoomMsg::Subscribe {
        player: player.to_owned(),
        outbound: outbound.clone(),
        position,
    };
    // Noted before the rooms hear of it: if it closes meanwhile, they are told, or
    // find it closed (see `Hub::connection_closed`).
    for (room, _) in &rooms {
        outbound.note_room(*room);
    }
    let mut inactive = Vec::new();
    for (room, position) in rooms {
        match hub.active_room(room) {
            Some(actor) => match actor.cast(subscribe(position)) {
                Ok(()) => {}
                Err(_) => inactive.push((room, position)),
            },
            None => inactive.push((room, position)),
        }
    }
    let welcome_value = Ok(SessionWelcome {
        player_stream_epoch: epoch,
    });
    if inactive.is_empty() {
        let _ = welcome.send(welcome_value);
        return;
    }
    let (hub, player) = (hub.clone(), player.to_owned());
    tokio::spawn(async move {
        for (room, position) in inactive {
            let message = RoomMsg::Subscribe {
                player: player.clone(),
                outbound: outbound.clone(),
                position,
            };
            match hub.cast_room(room, message).await {
                Ok(()) => {}
                Err(HubError::UnknownRoom(_)) => {
                    outbound.forget_room(room);
                    hub.send_to_session(player.clone(), SessionMsg::RemovedFromRoom { room });
                }
                Err(error) => {
                    tracing::warn!(%player, room, %error, "could not follow the room")
                }
            }
        }
        let _ = welcome.send(welcome_value);
    });
}

/// Hands a member's request to its room, which answers the client; a room that cannot
/// be reached answers through here.
pub fn relay(hub: &Hub, room: RoomId, message: RoomMsg) {
    let message = match hub.active_room(room) {
        Some(actor) => match actor.cast(message) {
            Ok(()) => return,
            Err(ractor::MessagingErr::SendErr(message)) => message,
            Err(_) => return,
        },
        None => message,
    };
    let hub = hub.clone();
    tokio::spawn(async move {
        let actor = match hub.room(room, None).await {
            Ok(actor) => actor,
            Err(error) => return message.refuse(error.to_reply()),
        };
        if let Err(ractor::MessagingErr::SendErr(message)) = actor.cast(message) {
            message.refuse(ErrorReply::new(
                ErrorCode::EntityUnavailable,
                format!("room {room} is restarting; try again"),
            ));
        }
    });
}
