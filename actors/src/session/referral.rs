//! The session's part in referrals: the attribution window, the player's code, the
//! claim's steps that are the claimer's or the referrer's (the rules are
//! `crate::claim`'s), activation, and what the player asks of their tree.

use super::state::SessionEvent;
use super::{Cx, Keyed, answer_now, key_answered, no_stats, take_key};
use crate::claim::{self, Answered};
use crate::codes::{self, normalize};
use crate::mail::{Address, Attachment, Body, ClaimAnswer, HandOff, RequestReply};
use crate::runtime::refusal;
use crate::store::WriteOp;
use playtree_protocol::{ErrorCode, ErrorReply, ReplyBody};

/// The first connection starts the attribution window.
pub fn first_seen(cx: &mut Cx<'_>) {
    if cx.state().link.first_seen_ms == 0 {
        let at_ms = cx.now_ms;
        if let Err(error) = cx.emit(SessionEvent::FirstSeen { at_ms }) {
            // The next connection tries again; the window starts a little later.
            tracing::warn!(player = %cx.id, %error, "first connection not recorded");
        }
    }
}

/// The player's code: made on the first ask (from a number the store hands out once,
/// with its index entry in the same commit), the same ever after.
pub fn code(cx: &mut Cx<'_>) -> Result<String, ErrorReply> {
    if let Some(code) = cx.state().link.code.clone() {
        return Ok(code);
    }
    let number = cx
        .env
        .ids
        .next_id()
        .map_err(|error| ErrorReply::new(ErrorCode::StoreFailure, error.to_string()))?;
    let code = cx.env.codes.code_for(number).ok_or_else(|| {
        ErrorReply::new(
            ErrorCode::Internal,
            "every referral code has been given out",
        )
    })?;
    let player = cx.id.clone();
    cx.write(WriteOp::Put(codes::index_key(&code), player.into_bytes()))
        .and_then(|()| cx.emit(SessionEvent::CodeAssigned { code: code.clone() }))
        .map_err(|error| refusal(&error))?;
    Ok(code)
}

/// Counts a claim by its outcome (`playtree_referral_claims_total`).
pub fn count_claim(outcome: Option<ErrorCode>) {
    let outcome = match outcome {
        None => "accepted",
        Some(ErrorCode::SelfReferral) => "self_referral",
        Some(ErrorCode::UnknownReferralCode) => "unknown_code",
        Some(ErrorCode::ReferralAlreadyClaimed) => "already_claimed",
        Some(ErrorCode::AttributionWindowPassed) => "window_passed",
        Some(ErrorCode::AlreadyReferrer) => "already_referrer",
        Some(ErrorCode::ReferrerBusy) => "referrer_busy",
        Some(ErrorCode::ReferralTreeFull) => "tree_full",
        Some(_) => "failed",
    };
    metrics::counter!("playtree_referral_claims_total", "outcome" => outcome).increment(1);
}

/// Step 1: the player claims a code (`owner`: its owner, as the code index says).
pub fn claim(
    cx: &mut Cx<'_>,
    typed: &str,
    owner: Option<String>,
    suspect: bool,
    keyed: Option<Keyed>,
    reply: RequestReply,
) {
    if cx.state().link.claiming.is_some() {
        // Asked again while the claim is under way: the claim's answer is this one's.
        if cx.memory.claim_waiters.len() < cx.config().session.requests_queued_max {
            cx.memory.claim_waiters.push(reply);
        } else {
            cx.reply(reply, Err(super::in_progress()));
        }
        return;
    }
    let referrer = match referrer_of(cx, typed, owner) {
        Ok(referrer) => referrer,
        Err(error) => {
            count_claim(Some(error.code));
            return answer_now(cx, keyed, reply, Err(error));
        }
    };
    let me = cx.id.clone();
    let started = cx
        .emit(SessionEvent::ClaimStarted {
            referrer: referrer.clone(),
            suspect,
            request_key: keyed.map(|keyed| keyed.key),
        })
        .map_err(|error| refusal(&error));
    if let Err(error) = started {
        cx.reply(reply, Err(error));
        return;
    }
    if let Err(error) = take_key(cx, keyed) {
        tracing::warn!(player = %me, %error.message, "a claim's key was not kept");
    }
    let body = Body::AcceptReferee {
        referee: me,
        suspect,
    };
    if let Err(error) = cx.send_answering(
        Address::Session(referrer),
        body,
        Some(Attachment::Reply(reply)),
    ) {
        // Cannot happen after the first write; the claim stays under way.
        tracing::error!(player = %cx.id, %error, "a claim's letter was refused after it started");
    }
}

/// The referrer a typed code names, once the claim's rules allow claiming it.
fn referrer_of(cx: &Cx<'_>, typed: &str, owner: Option<String>) -> Result<String, ErrorReply> {
    let code = normalize(typed).ok_or_else(|| {
        ErrorReply::new(
            ErrorCode::UnknownReferralCode,
            format!(
                "`{typed}` is not a referral code: codes are {} letters and digits",
                codes::CODE_LEN
            ),
        )
    })?;
    if cx.state().link.code.as_deref() == Some(code.as_str()) {
        return Err(claim::self_referral());
    }
    let referrer = owner.ok_or_else(|| {
        ErrorReply::new(
            ErrorCode::UnknownReferralCode,
            format!("no player has the referral code {code}"),
        )
    })?;
    let window_ms = cx.config().referral.attribution_window_ms;
    claim::start(&cx.state().link, cx.id, &referrer, cx.now_ms, window_ms)?;
    Ok(referrer)
}

/// Step 2: another player claims this player's code.
pub fn accept_referee(
    cx: &mut Cx<'_>,
    from: &Address,
    referee: String,
    suspect: bool,
    attachment: Option<Attachment>,
) {
    if from.player() != Some(referee.as_str()) {
        // Only a player's own session claims for them.
        tracing::error!(player = %cx.id, %from, %referee, "a claim for another player was refused");
        return;
    }
    let me = cx.id.clone();
    match claim::accept(&cx.state().link, &me, &referee) {
        Ok(root) => {
            let accepted = cx
                .emit(SessionEvent::RefereeAccepting {
                    referee: referee.clone(),
                })
                .and_then(|()| {
                    cx.send_answering(
                        Address::Tree(root),
                        Body::Attach { referee, suspect },
                        attachment,
                    )
                });
            if let Err(error) = accepted {
                tracing::error!(player = %me, %error, "a referee was refused after its letter was taken");
            }
        }
        Err(error) => {
            // The claim ends here: the claimer hears it by letter, the client now.
            if let Err(failed) = cx.send(
                Address::Session(referee),
                Body::ClaimAnswered(ClaimAnswer::Refused(error.clone())),
            ) {
                tracing::error!(player = %me, error = %failed, "a claim's refusal was not sent");
            }
            if let Some(attachment) = attachment {
                cx.reply(attachment.into_reply(), Err(error));
            }
        }
    }
}

/// Step 4, the claimer's side: the claim's answer is recorded (an attachment whatever
/// the link says: the tree has the last word).
pub fn claim_answered(cx: &mut Cx<'_>, answer: ClaimAnswer) {
    let result = match &answer {
        ClaimAnswer::Attached { referrer, .. } => Ok(ReplyBody::ReferralClaimed {
            referrer: referrer.clone(),
        }),
        ClaimAnswer::Refused(error) => Err(error.clone()),
    };
    let request_key = cx
        .state()
        .link
        .claiming
        .as_ref()
        .and_then(|claiming| claiming.request_key);
    let attached = match &answer {
        ClaimAnswer::Attached { referrer, root } => Some((referrer.as_str(), root.as_str())),
        ClaimAnswer::Refused(_) => None,
    };
    let recorded = match claim::answered(&cx.state().link, attached) {
        Answered::Recorded { referrer, root } => {
            count_claim(None);
            cx.emit(SessionEvent::ClaimRecorded { referrer, root })
                .map(|()| report_activation(cx))
        }
        Answered::Dropped => {
            count_claim(result.as_ref().err().map(|error| error.code));
            cx.emit(SessionEvent::ClaimDropped)
        }
        Answered::Ignored => Ok(()),
    };
    if let Err(error) = recorded {
        tracing::error!(player = %cx.id, %error, "a claim's answer was refused after its letter was taken");
    }
    if let Some(key) = request_key {
        key_answered(cx, key, &result);
    }
    for waiter in std::mem::take(&mut cx.memory.claim_waiters) {
        cx.reply(waiter, result.clone());
    }
}

/// Step 4, the referrer's side: the tree answered for a referee this player accepted.
pub fn referee_answered(cx: &mut Cx<'_>, referee: String, attached: bool) {
    let root = cx.state().link.root_for_referees(cx.id);
    if let Err(error) = cx.emit(SessionEvent::RefereeAnswered {
        referee,
        attached,
        root,
    }) {
        tracing::error!(player = %cx.id, %error, "a referee's answer was refused after its letter was taken");
    }
}

/// The player finished a game: the first one activates them.
pub fn game_finished(cx: &mut Cx<'_>) {
    if cx.state().link.activated {
        return;
    }
    if let Err(error) = cx.emit(SessionEvent::GameFinished) {
        tracing::warn!(player = %cx.id, %error, "activation not recorded; the next game records it");
        return;
    }
    report_activation(cx);
}

/// Tells the player's tree of their activation, once both are recorded (whichever
/// comes second sends it, in its own commit).
fn report_activation(cx: &mut Cx<'_>) {
    let link = &cx.state().link;
    if !link.activated || link.referrer.is_none() {
        return;
    }
    let Some(root) = link.root.clone() else {
        return;
    };
    if let Err(error) = cx.send(Address::Tree(root), Body::Activated) {
        tracing::error!(player = %cx.id, %error, "an activation's letter was refused after its event");
    }
}

/// The player's statistics: from their tree, or empty if they are in none.
pub fn stats(cx: &mut Cx<'_>, reply: RequestReply) {
    match cx.state().link.root.clone() {
        Some(root) => {
            let player = cx.id.clone();
            cx.hand_off(Address::Tree(root), HandOff::Stats { player, reply });
        }
        None => cx.reply(reply, Ok(no_stats())),
    }
}

/// A partner's conversion report for the player goes to their tree.
pub fn conversion(
    cx: &mut Cx<'_>,
    kind: String,
    key: String,
    reply: ractor::RpcReplyPort<Result<u32, ErrorReply>>,
) {
    let link = &cx.state().link;
    match (&link.referrer, link.root.clone()) {
        (Some(_), Some(root)) => {
            let player = cx.id.clone();
            cx.hand_off(
                Address::Tree(root),
                HandOff::Conversion {
                    player,
                    kind,
                    key,
                    reply,
                },
            );
        }
        // A player nobody referred earns nobody a conversion reward.
        _ => cx.reply(reply, Ok(0)),
    }
}
