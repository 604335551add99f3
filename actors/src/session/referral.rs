//! The session's part in referrals: the attribution window, the player's code, claims
//! (checked here, serialized with the referees the player accepts, so that a player
//! with referees never joins another tree), activation, and news from the tree.
//! Pure decisions; the flows that ask other players and trees are in
//! [`super::flows`].

use super::msg::{FlowTag, RequestReply};
use super::state::{Claim, SessionEvent};
use super::{Cx, SessionEffect, running, store_error};
use crate::referral::code::{self, normalize};
use crate::store::WriteOp;
use playtree_protocol::{ErrorCode, ErrorReply, Event, ReferralStats, ReplyBody};

/// The claim a `ClaimReferral` request starts: a fresh one (the code to look up), or
/// the one under way since before a crash.
#[derive(Debug)]
pub enum ClaimPlan {
    /// `suspect`: from an address past its hourly claims limit (rewards flagged).
    Lookup {
        code: String,
        suspect: bool,
    },
    Resume(Claim),
}

/// The first connection starts the attribution window.
pub fn first_seen(cx: &mut Cx<'_>) {
    if cx.state().referral.first_seen_ms == 0 {
        let at_ms = cx.now_ms;
        if let Err(error) = cx.emit(SessionEvent::FirstSeen { at_ms }) {
            // The next connection tries again; the window starts a little later.
            tracing::warn!(player = %cx.id, %error, "first connection not recorded");
        }
    }
}

/// The player's code if made, else `None` (a flow makes it).
pub fn code(cx: &Cx<'_>) -> Option<String> {
    cx.state().referral.code.clone()
}

/// Keeps the code a flow made, with its index entry in the same commit; answers the
/// code kept (the first one, if two were made).
pub fn code_made(cx: &mut Cx<'_>, flow: FlowTag, made: String) -> Result<String, ErrorReply> {
    running(cx, flow)?;
    if let Some(code) = cx.state().referral.code.clone() {
        return Ok(code);
    }
    let player = cx.id.clone();
    cx.write(WriteOp::Put(code::index_key(&made), player.into_bytes()))
        .map_err(store_error)?;
    cx.emit(SessionEvent::CodeAssigned { code: made.clone() })
        .map_err(store_error)?;
    Ok(made)
}

/// The rules a claim must pass, checked when it is asked and again before the tree is.
fn claim_allowed(cx: &Cx<'_>) -> Result<(), ErrorReply> {
    let link = &cx.state().referral;
    if let Some(referrer) = &link.referrer {
        return Err(ErrorReply::new(
            ErrorCode::ReferralAlreadyClaimed,
            format!(
                "you have claimed a referral code already (your referrer is {referrer}); a player claims once"
            ),
        ));
    }
    if link.has_referees {
        return Err(ErrorReply::new(
            ErrorCode::AlreadyReferrer,
            "you have referees of your own, so you cannot join another player's tree",
        ));
    }
    let window_ms = cx.config().referral.attribution_window_ms;
    if link.first_seen_ms > 0 && cx.now_ms.saturating_sub(link.first_seen_ms) > window_ms {
        return Err(ErrorReply::new(
            ErrorCode::AttributionWindowPassed,
            format!(
                "codes can be claimed within {} hours of your first connection",
                window_ms / 3_600_000
            ),
        ));
    }
    Ok(())
}

/// What a `ClaimReferral { code }` will do, once its checks pass.
pub fn plan_claim(cx: &Cx<'_>, typed: &str, suspect: bool) -> Result<ClaimPlan, ErrorReply> {
    if let Some(claim) = cx.state().referral.claiming.clone() {
        return Ok(ClaimPlan::Resume(claim));
    }
    claim_allowed(cx)?;
    let code = normalize(typed).ok_or_else(|| {
        ErrorReply::new(
            ErrorCode::UnknownReferralCode,
            format!(
                "`{typed}` is not a referral code: codes are {} letters and digits",
                code::CODE_LEN
            ),
        )
    })?;
    if cx.state().referral.code.as_deref() == Some(code.as_str()) {
        return Err(self_referral());
    }
    Ok(ClaimPlan::Lookup { code, suspect })
}

/// Counts a claim by its outcome (`playtree_referral_claims_total`).
pub fn count_claim(outcome: ErrorCode) {
    let outcome = match outcome {
        ErrorCode::SelfReferral => "self_referral",
        ErrorCode::UnknownReferralCode => "unknown_code",
        ErrorCode::ReferralAlreadyClaimed => "already_claimed",
        ErrorCode::AttributionWindowPassed => "window_passed",
        ErrorCode::AlreadyReferrer => "already_referrer",
        ErrorCode::ReferrerBusy => "referrer_busy",
        ErrorCode::ReferralTreeFull => "tree_full",
        _ => "failed",
    };
    metrics::counter!("playtree_referral_claims_total", "outcome" => outcome).increment(1);
}

pub fn self_referral() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::SelfReferral,
        "that is your own referral code; claim a friend's",
    )
}

/// Another player claims this player's code: accepted unless this player is joining a
/// tree right now. Answers the root of this player's tree.
pub fn accept_referee(cx: &mut Cx<'_>, referee: &str) -> Result<String, ErrorReply> {
    if *cx.id == referee {
        return Err(self_referral());
    }
    let link = &cx.state().referral;
    if link.claiming.is_some() {
        return Err(ErrorReply::new(
            ErrorCode::ReferrerBusy,
            "the owner of this code is joining a referral tree right now; try again in a moment",
        ));
    }
    let root = link.tree_root.clone().unwrap_or_else(|| cx.id.clone());
    if !link.has_referees {
        cx.emit(SessionEvent::RefereeAccepted { root: root.clone() })
            .map_err(store_error)?;
    }
    Ok(root)
}

/// The claim flow found the code's owner: the rules are checked again (a referee may
/// have been accepted meanwhile) and the claim recorded as under way. From then on the
/// player accepts no referee, so the owner can be asked safely.
pub fn claim_starting(
    cx: &mut Cx<'_>,
    flow: FlowTag,
    referrer: String,
    suspect: bool,
) -> Result<(), ErrorReply> {
    running(cx, flow)?;
    if cx.state().referral.claiming.is_some() {
        return Err(ErrorReply::new(
            ErrorCode::ReferralAlreadyClaimed,
            "another claim of yours is under way",
        ));
    }
    claim_allowed(cx)?;
    cx.memory.last_claim_attempt_ms = cx.now_ms;
    cx.emit(SessionEvent::ClaimStarted { referrer, suspect })
        .map_err(store_error)
}

/// The claim under way for `referrer`, if that is the one under way.
fn claim_for<'s>(cx: &'s Cx<'_>, referrer: &str) -> Result<&'s Claim, ErrorReply> {
    cx.state()
        .referral
        .claiming
        .as_ref()
        .filter(|claim| claim.referrer == referrer)
        .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "no such claim is under way"))
}

/// The claim under way was answered for good (by whichever flow asked: the answer
/// belongs to the claim recorded in the state, not to one request).
pub fn claim_settled(
    cx: &mut Cx<'_>,
    referrer: &str,
    root: Option<String>,
    outcome: Result<(), ErrorReply>,
) -> Result<(), ErrorReply> {
    claim_for(cx, referrer)?;
    match (outcome, root) {
        (Ok(()), Some(root)) => {
            cx.emit(SessionEvent::ClaimRecorded { root })
                .map_err(store_error)?;
            report_activation(cx);
            Ok(())
        }
        (Ok(()), None) => Err(ErrorReply::new(
            ErrorCode::Internal,
            "a claim was recorded without its tree",
        )),
        (Err(error), _) => {
            cx.emit(SessionEvent::ClaimDropped).map_err(store_error)?;
            Err(error)
        }
    }
}

/// The claim under way, for a flow that takes it up again (after a crash, a given-up
/// flow or a failed answer), unless one does already.
pub fn claim_to_resume(cx: &mut Cx<'_>) -> Option<Claim> {
    let claim = cx.state().referral.claiming.clone()?;
    cx.memory.last_claim_attempt_ms = cx.now_ms;
    Some(claim)
}

/// The player finished a game: the first one activates them.
pub fn game_finished(cx: &mut Cx<'_>) {
    if cx.state().referral.activated {
        return;
    }
    if let Err(error) = cx.emit(SessionEvent::GameFinished) {
        tracing::warn!(player = %cx.id, %error, "activation not recorded; the next game records it");
        return;
    }
    report_activation(cx);
}

/// Tells the player's tree of their activation, if it has not recorded it yet (again at
/// each retry until it has).
pub fn report_activation(cx: &mut Cx<'_>) {
    let link = &cx.state().referral;
    if !link.activation_unreported() {
        return;
    }
    let Some(root) = link.tree_root.clone() else {
        return;
    };
    cx.memory.last_activation_report_ms = cx.now_ms;
    cx.own(SessionEffect::ReportActivation { root });
}

pub fn activation_recorded(cx: &mut Cx<'_>) {
    if cx.state().referral.activation_unreported()
        && let Err(error) = cx.emit(SessionEvent::ActivationReported)
    {
        tracing::warn!(player = %cx.id, %error, "activation report not recorded; it is sent again");
    }
}

/// The player's statistics: from their tree, or empty if they are in none.
pub fn stats(cx: &mut Cx<'_>, reply: RequestReply) {
    match cx.state().referral.tree_root.clone() {
        Some(root) => cx.own(SessionEffect::AskStats { root, reply }),
        None => cx.reply(
            reply,
            Ok(ReplyBody::ReferralStats(ReferralStats::default())),
        ),
    }
}

/// News for the player's stream.
pub fn news(cx: &mut Cx<'_>, event: Event) {
    if matches!(event, Event::FriendJoined { .. } | Event::ReferralReward(_)) {
        cx.publish(event);
    }
}

/// When an unreported activation is told to the tree again.
pub fn next_report_ms(
    state: &super::SessionState,
    memory: &super::SessionMemory,
    retry_ms: u64,
) -> Option<u64> {
    let report = state
        .referral
        .activation_unreported()
        .then(|| memory.last_activation_report_ms + retry_ms);
    let resume = state
        .referral
        .claiming
        .as_ref()
        .map(|_| memory.last_claim_attempt_ms + retry_ms);
    crate::timers::earliest([report, resume])
}
