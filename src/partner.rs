//! Requests only partners may send (token role `partner`, or `admin`): conversion
//! reports, any player's referral statistics, and decisions on held or flagged rewards.
//! The gateway routes them to the player concerned or straight to a referral tree,
//! never to the partner's own session.

use playtree_actors::referral::decode_log;
use playtree_actors::store::{StoreError, WriteOp, log_key};
use playtree_actors::{Hub, Outbound};
use playtree_protocol::codec::encode_server;
use playtree_protocol::{ErrorCode, ErrorReply, ReplyBody, Request, Role, ServerFrame};
use std::time::Duration;

/// Longest idempotency key of a conversion report, in bytes.
const CONVERSION_KEY_BYTES_MAX: usize = 128;
/// Player and tree ids, as a token's `sub`: 1 to 128 bytes.
const ID_BYTES_MAX: usize = 128;

fn check_id(what: &str, id: &str) -> Result<(), ErrorReply> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(invalid(format!("a {what} id is 1 to {ID_BYTES_MAX} bytes")));
    }
    Ok(())
}

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

/// Carries out a partner request from `partner` (a `Subscribe` is the gateway's).
pub async fn carry_out(
    hub: &Hub,
    partner: &str,
    request: Request,
) -> Result<ReplyBody, ErrorReply> {
    match request {
        Request::Ack { offset } => ack(hub, partner, offset).await,
        Request::ReportConversion {
            player,
            kind,
            value: _,
            idempotency_key,
        } => {
            check_id("player", &player)?;
            if kind.is_empty() || kind.len() > ID_BYTES_MAX {
                return Err(invalid(format!(
                    "a conversion kind is 1 to {ID_BYTES_MAX} bytes"
                )));
            }
            if idempotency_key.is_empty() || idempotency_key.len() > CONVERSION_KEY_BYTES_MAX {
                return Err(invalid(format!(
                    "an idempotency key is 1 to {CONVERSION_KEY_BYTES_MAX} bytes"
                )));
            }
            known_player(hub, &player).await?;
            let rewards = hub
                .report_conversion(&player, &kind, &idempotency_key)
                .await?;
            Ok(ReplyBody::ConversionReported { rewards })
        }
        Request::GetPlayerReferralStats { player } => {
            check_id("player", &player)?;
            known_player(hub, &player).await?;
            hub.player_stats(&player).await
        }
        Request::ApproveReward { tree, .. } | Request::VoidReward { tree, .. }
            if check_id("tree", &tree).is_err() =>
        {
            Err(invalid(format!("a tree id is 1 to {ID_BYTES_MAX} bytes")))
        }
        Request::ApproveReward { tree, reward } => decide(hub, &tree, reward, true).await,
        Request::VoidReward { tree, reward } => decide(hub, &tree, reward, false).await,
        other => Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("{} is not a partner request", other.kind_name()),
        )),
    }
}

/// A player named by a partner must have connected once: a mistyped id is refused,
/// not given a session of its own.
async fn known_player(hub: &Hub, player: &str) -> Result<(), ErrorReply> {
    // A session in memory is a player who connected, also one whose first write is
    // still on its way to the store.
    if hub.active_session(player).is_some()
        || hub
            .store
            .exists("session", player)
            .await
            .map_err(store_failure)?
    {
        return Ok(());
    }
    metrics::counter!("playtree_partner_unknown_players_total").increment(1);
    Err(ErrorReply::new(
        ErrorCode::UnknownPlayer,
        format!("no player `{player}` has ever connected to this server; check the id"),
    ))
}

async fn decide(
    hub: &Hub,
    tree: &str,
    reward: u64,
    approve: bool,
) -> Result<ReplyBody, ErrorReply> {
    // A tree nobody ever referred into is not made up by a mistyped id.
    if !hub
        .store
        .exists("tree", tree)
        .await
        .map_err(store_failure)?
    {
        return Err(ErrorReply::new(
            ErrorCode::UnknownReward,
            format!("there is no referral tree rooted at {tree}"),
        ));
    }
    let state = hub.decide_reward(tree, reward, approve).await?;
    Ok(ReplyBody::RewardDecided { state })
}

/// Log entries read from the store at a time.
const LOG_BATCH: usize = 256;

fn store_failure(error: StoreError) -> ErrorReply {
    ErrorReply::new(ErrorCode::StoreFailure, error.to_string())
}

fn not_retained(message: String) -> ErrorReply {
    ErrorReply::new(ErrorCode::OffsetNotRetained, message)
}

/// Where a partner's position in the event log is kept.
fn ack_key(partner: &str) -> Vec<u8> {
    let mut key = vec![b'a'];
    key.extend_from_slice(partner.as_bytes());
    key
}

/// Acks read and write a partner's position under this lock, so that two pipelined
/// acks cannot store the lower one last. (Acks are rare: one lock for all partners.)
static ACKS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn acked(hub: &Hub, partner: &str) -> Result<Option<u64>, ErrorReply> {
    match hub
        .store
        .get_raw(ack_key(partner))
        .await
        .map_err(store_failure)?
    {
        Some(bytes) => {
            let acked: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                ErrorReply::new(ErrorCode::Internal, "a partner's position is unreadable")
            })?;
            Ok(Some(u64::from_be_bytes(acked)))
        }
        None => Ok(None),
    }
}

/// Records that `partner` processed every log entry up to `offset`. The position only
/// moves forward: an older ack is answered with the position kept.
pub async fn ack(hub: &Hub, partner: &str, offset: u64) -> Result<ReplyBody, ErrorReply> {
    let head = *hub.store.log_head().borrow();
    if offset >= head {
        return Err(not_retained(format!(
            "offset {offset} has not been written yet (the next entry is {head})"
        )));
    }
    let _one_at_a_time = ACKS.lock().await;
    if let Some(kept) = acked(hub, partner).await?
        && kept >= offset
    {
        return Ok(ReplyBody::Acked { offset: kept });
    }
    hub.store
        .commit(vec![WriteOp::Put(
            ack_key(partner),
            offset.to_be_bytes().to_vec(),
        )])
        .await
        .map_err(store_failure)?;
    Ok(ReplyBody::Acked { offset })
}

/// The oldest durable entry's offset (`head` when there is none).
async fn first_retained(hub: &Hub, head: u64) -> Result<u64, ErrorReply> {
    Ok(hub
        .store
        .log_entries(0, 1)
        .await
        .map_err(store_failure)?
        .first()
        .map_or(head, |(offset, _)| (*offset).min(head)))
}

/// The offset a subscription starts at (`from`, or after the partner's last ack), and
/// the log's head; refused if the log no longer holds it (or has not reached it).
pub async fn subscription_start(
    hub: &Hub,
    partner: &str,
    from: Option<u64>,
) -> Result<(u64, u64), ErrorReply> {
    let head = *hub.store.log_head().borrow();
    let first = first_retained(hub, head).await?;
    let start = match from {
        Some(offset) => offset,
        None => acked(hub, partner).await?.map_or(first, |acked| acked + 1),
    };
    if start < first || start > head {
        let hint = if start < first {
            format!(
                ": entries were trimmed past retention; subscribe from {first} to continue with what is left"
            )
        } else {
            String::new()
        };
        return Err(not_retained(format!(
            "the event log holds offsets {first} to {} (next: {head}); {start} is not among them{hint}",
            head.saturating_sub(1)
        )));
    }
    Ok((start.max(first), head))
}

/// Sends the log's entries from `cursor` to `outbound`, in order, then each new one as
/// it becomes durable, until the connection goes. Never more than half the connection's
/// queue at once, so a partner that reads slowly is paced rather than closed.
pub async fn stream_log(hub: Hub, outbound: Outbound, mut cursor: u64) {
    let mut head = hub.store.log_head();
    let room = (outbound.frames_max() / 2).max(1);
    while !outbound.is_closed() {
        // Only below the head: an entry beyond it may be visible before it is durable.
        let durable = *head.borrow_and_update();
        if cursor >= durable {
            if head.wait_for(|next| *next > cursor).await.is_err() {
                return;
            }
            continue;
        }
        let batch = LOG_BATCH.min(room).min((durable - cursor) as usize);
        let entries = match hub.store.log_entries(cursor, batch).await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::error!(%error, "the event log could not be read; the subscription ends");
                outbound.close_for_resync();
                return;
            }
        };
        if entries.first().map(|(offset, _)| *offset) != Some(cursor) {
            // Trimmed under this subscription (it fell behind retention): it ends
            // rather than skip; subscribing again says what is left.
            metrics::counter!("playtree_log_subscriptions_overtaken_total").increment(1);
            outbound.close_for_resync();
            return;
        }
        for (offset, value) in entries {
            if offset >= durable {
                break;
            }
            let entry = match decode_log(offset, &value) {
                Ok(entry) => entry,
                Err(error) => {
                    // Corrupt on disk: it cannot be sent to anyone.
                    metrics::counter!("playtree_log_unreadable_total").increment(1);
                    tracing::error!(offset, %error, "an event log entry is unreadable; skipped");
                    cursor = offset + 1;
                    continue;
                }
            };
            while outbound.queued_frames() >= room {
                if outbound.is_closed() {
                    return;
                }
                // Paced by the writer: it drains the queue within a write timeout.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !outbound.push("log", encode_server(&ServerFrame::Log(entry)).into()) {
                return;
            }
            cursor = offset + 1;
        }
    }
}

/// Deletes the log entries older than `referral.log_retention_ms`, a batch at a time;
/// answers how many it deleted.
pub async fn trim_log(hub: &Hub) -> Result<usize, StoreError> {
    let cutoff = hub
        .now_ms()
        .saturating_sub(hub.config.referral.log_retention_ms);
    let head = *hub.store.log_head().borrow();
    let mut deleted = 0;
    loop {
        let entries = hub.store.log_entries(0, 1024).await?;
        let expired: Vec<WriteOp> = entries
            .iter()
            .take_while(|(offset, value)| {
                // The newest entry stays, so that offsets continue after a restart; an
                // unreadable one goes (it could never be sent, and must not stall this).
                *offset + 1 < head
                    && decode_log(*offset, value).map_or(true, |entry| entry.at_ms < cutoff)
            })
            .map(|(offset, _)| WriteOp::Delete(log_key(*offset)))
            .collect();
        if expired.is_empty() {
            return Ok(deleted);
        }
        deleted += expired.len();
        hub.store.commit(expired).await?;
    }
}
