//! Requests only partners may send (token role `partner`, or `admin`): conversion
//! reports, any player's referral statistics, and decisions on held or flagged rewards.
//! The gateway routes them to the player concerned or straight to a referral tree,
//! never to the partner's own session.

use playtree_actors::Hub;
use playtree_actors::referral::TreeMsg;
use playtree_actors::session::SessionMsg;
use playtree_protocol::{ErrorCode, ErrorReply, ReplyBody, Request, Role};

/// Longest idempotency key of a conversion report, in bytes.
const CONVERSION_KEY_BYTES_MAX: usize = 128;

/// Whether `role` may send partner requests.
pub fn allowed(role: Role) -> bool {
    matches!(role, Role::Partner | Role::Admin)
}

pub fn forbidden(request: &Request) -> ErrorReply {
    metrics::counter!("playtree_forbidden_requests_total", "request" => request.kind_name())
        .increment(1);
    ErrorReply::new(
        ErrorCode::Forbidden,
        format!(
            "{} is a partner request: it needs a token with role `partner` or `admin`",
            request.kind_name()
        ),
    )
}

fn invalid(message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::MalformedFrame, message)
}

/// Carries out a partner request.
pub async fn carry_out(hub: &Hub, request: Request) -> Result<ReplyBody, ErrorReply> {
    match request {
        Request::ReportConversion {
            player,
            kind,
            value: _,
            idempotency_key,
        } => {
            if player.is_empty() || kind.is_empty() {
                return Err(invalid("a conversion names its player and its kind"));
            }
            if idempotency_key.is_empty() || idempotency_key.len() > CONVERSION_KEY_BYTES_MAX {
                return Err(invalid(format!(
                    "an idempotency key is 1 to {CONVERSION_KEY_BYTES_MAX} bytes"
                )));
            }
            let rewards = hub
                .call_session(&player, |reply| SessionMsg::Conversion {
                    kind: kind.clone(),
                    key: idempotency_key.clone(),
                    reply,
                })
                .await??;
            Ok(ReplyBody::ConversionReported { rewards })
        }
        Request::GetPlayerReferralStats { player } => {
            if player.is_empty() {
                return Err(invalid("name the player"));
            }
            hub.call_session(&player, |reply| SessionMsg::Request {
                request: Request::GetReferralStats,
                reply,
            })
            .await?
        }
        Request::ApproveReward { tree, reward } | Request::VoidReward { tree, reward }
            if tree.is_empty() =>
        {
            Err(invalid(format!("name the tree of reward {reward}")))
        }
        Request::ApproveReward { tree, reward } => decide(hub, &tree, reward, true).await,
        Request::VoidReward { tree, reward } => decide(hub, &tree, reward, false).await,
        other => Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("{} is not a partner request", other.kind_name()),
        )),
    }
}

async fn decide(
    hub: &Hub,
    tree: &str,
    reward: u64,
    approve: bool,
) -> Result<ReplyBody, ErrorReply> {
    let state = hub
        .call_tree(tree, |reply| TreeMsg::Decide {
            reward,
            approve,
            reply,
        })
        .await??;
    Ok(ReplyBody::RewardDecided { state })
}
