//! Frames a client sends, grouped by session phase: the handshake, then requests.

use crate::ids::{RoomId, StreamId};
use serde::{Deserialize, Serialize};

/// Every binary websocket message from a client decodes to one `ClientFrame`.
/// New variants go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// Must be the first frame of a connection.
    Hello(Hello),
    /// A request; the server answers with `ServerFrame::Reply` carrying the same `req_id`.
    Request { req_id: u32, request: Request },
    /// A request with an idempotency key chosen by the client: a request sent again with
    /// the same key (on any connection of the same player, while the server keeps the
    /// key) is not carried out again; it is answered with the first one's result.
    Keyed {
        req_id: u32,
        key: u64,
        request: Request,
    },
}

/// Handshake: protocol version, bearer token (in the frame, never in the URL, because
/// URLs get logged) and the last position seen per stream, for resuming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub token: String,
    pub resume: Vec<StreamPosition>,
}

/// The last event a client saw on one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub stream: StreamId,
    pub epoch: u64,
    pub seq: u64,
}

/// The kinds of game room. New kinds go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum RoomKind {
    Wheel,
    Quiz,
}

/// Requests a client may make once welcomed. New variants go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Join an open room of this kind with space, or open one. `variant` names the wheel
    /// (or later, the quiz category); `None` takes the server's default.
    QuickJoin {
        kind: RoomKind,
        variant: Option<String>,
    },
    /// Leave a room this player is in.
    LeaveRoom { room: RoomId },
    /// Spin the wheel of a room this player is in, with a client seed of the client's
    /// choosing (1..=64 printable ASCII bytes, no spaces).
    Spin { room: RoomId, client_seed: String },
    /// Reveal the current server seed for a wheel and commit to a fresh one.
    RotateSeed { wheel: String },
    /// Read the player's wallet.
    GetWallet,
    /// Open a private room; the reply carries a short code to share with friends.
    CreatePrivate {
        kind: RoomKind,
        variant: Option<String>,
    },
    /// Join a private room by its code.
    JoinPrivate { code: String },
    /// Answer the current quiz question (`question` is its index in the game).
    Answer {
        room: RoomId,
        question: u32,
        choice: u32,
    },
    /// Send a short chat line to a room.
    Chat { room: RoomId, text: String },
    /// Send a reaction (one of the server's configured emoji) to a room.
    React { room: RoomId, emoji: String },
    /// Replace the connection's token before it expires.
    RefreshToken { token: String },
    /// The player's own referral code (made on first ask, then always the same).
    GetReferralCode,
    /// Become the referee of the player whose referral code this is (once, within the
    /// attribution window of the player's first connection, and only while the player
    /// has no referees of their own).
    ClaimReferral { code: String },
    /// The player's referral statistics.
    GetReferralStats,
    /// Partner: `player` converted (a purchase, say) with `value`; pays the configured
    /// conversion rewards up their tree. A repeated `idempotency_key` (per player)
    /// answers the first result and pays nothing more.
    ReportConversion {
        player: String,
        kind: String,
        value: u64,
        idempotency_key: String,
    },
    /// Partner: any player's referral statistics.
    GetPlayerReferralStats { player: String },
    /// Partner: pay a flagged (or held) reward now.
    ApproveReward { tree: String, reward: u64 },
    /// Partner: never pay a flagged (or held) reward.
    VoidReward { tree: String, reward: u64 },
    /// Partner: follow the event log from `from_offset` (none: right after this
    /// partner's last `Ack`). Entries arrive as `ServerFrame::Log`, in order.
    Subscribe { from_offset: Option<u64> },
    /// Partner: every entry up to `offset` is processed; a later `Subscribe` with no
    /// offset starts after it.
    Ack { offset: u64 },
    /// The top referrers (at most `limit`, capped by the server).
    GetReferralLeaderboard { limit: u32 },
}

impl Request {
    /// A short stable name for logs and metrics labels.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Request::QuickJoin { .. } => "quick_join",
            Request::LeaveRoom { .. } => "leave_room",
            Request::Spin { .. } => "spin",
            Request::RotateSeed { .. } => "rotate_seed",
            Request::GetWallet => "get_wallet",
            Request::CreatePrivate { .. } => "create_private",
            Request::JoinPrivate { .. } => "join_private",
            Request::Answer { .. } => "answer",
            Request::Chat { .. } => "chat",
            Request::React { .. } => "react",
            Request::RefreshToken { .. } => "refresh_token",
            Request::GetReferralCode => "get_referral_code",
            Request::ClaimReferral { .. } => "claim_referral",
            Request::GetReferralStats => "get_referral_stats",
            Request::ReportConversion { .. } => "report_conversion",
            Request::GetPlayerReferralStats { .. } => "get_player_referral_stats",
            Request::ApproveReward { .. } => "approve_reward",
            Request::VoidReward { .. } => "void_reward",
            Request::Subscribe { .. } => "subscribe",
            Request::Ack { .. } => "ack",
            Request::GetReferralLeaderboard { .. } => "get_referral_leaderboard",
        }
    }

    /// Whether only a partner (or an admin) may send it.
    pub fn is_partner_only(&self) -> bool {
        matches!(
            self,
            Request::ReportConversion { .. }
                | Request::GetPlayerReferralStats { .. }
                | Request::ApproveReward { .. }
                | Request::VoidReward { .. }
                | Request::Subscribe { .. }
                | Request::Ack { .. }
        )
    }
}

impl ClientFrame {
    /// A short stable name for logs and metrics labels.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ClientFrame::Hello(_) => "hello",
            ClientFrame::Request { request, .. } | ClientFrame::Keyed { request, .. } => {
                request.kind_name()
            }
        }
    }
}
