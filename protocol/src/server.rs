//! Frames the server sends: the handshake answer, replies to requests, and events.

use crate::client::RoomKind;
use crate::error::ErrorReply;
use crate::ids::{RoomId, StreamId};
use serde::{Deserialize, Serialize};

/// Every binary websocket message from the server decodes to one `ServerFrame`.
/// New variants go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The answer to a valid `Hello`.
    Welcome(Welcome),
    /// The answer to `ClientFrame::Request` with the same `req_id`.
    Reply {
        req_id: u32,
        result: Result<ReplyBody, ErrorReply>,
    },
    /// An event on one of the streams the connection follows.
    Event(EventEnvelope),
    /// A connection-level error. When the code has a close code, the server closes the
    /// websocket with it right after this frame.
    Error(ErrorReply),
    /// An entry of the partner event log, for a connection that subscribed (partners).
    Log(LogEntry),
}

impl ServerFrame {
    /// A short stable name for logs and metrics labels.
    pub fn kind_name(&self) -> &'static str {
        match self {
            ServerFrame::Welcome(_) => "welcome",
            ServerFrame::Reply { .. } => "reply",
            ServerFrame::Event(_) => "event",
            ServerFrame::Error(_) => "error",
            ServerFrame::Log(_) => "log",
        }
    }
}

/// Who the token says the peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Player,
    Partner,
    Admin,
}

/// The server's answer to a valid `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol_version: u16,
    pub player_id: String,
    pub role: Role,
    /// The epoch of the player's own stream (`StreamId::Player`).
    pub player_stream_epoch: u64,
    /// Server wall clock, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    /// The server pings at this interval; a silent connection is closed after a few.
    pub heartbeat_interval_ms: u32,
    /// The token's expiry, milliseconds since the Unix epoch.
    pub token_expires_ms: u64,
}

/// An event and its position in its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub stream: StreamId,
    /// Changes when the stream's sequence restarts (e.g. the room was reactivated).
    pub epoch: u64,
    /// Starts at 1 in each epoch and rises by one per event.
    pub seq: u64,
    pub event: Event,
}

/// Events. New variants go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A player joined the room (room stream).
    MemberJoined { room: RoomId, player: String },
    /// A player left the room (room stream).
    MemberLeft { room: RoomId, player: String },
    /// A member spun the room's wheel (room stream).
    Spin(SpinResult),
    /// The player's wallet was credited (player stream).
    WalletCredited {
        grant_id: String,
        amount: u64,
        balance: u64,
        reason: String,
    },
    /// The quiz lobby changed: who is waiting, and when the game starts if it is
    /// counting down (room stream).
    QuizLobby(QuizLobby),
    /// A quiz question, without its answer (room stream).
    Question(QuizQuestion),
    /// The answer to a question, and the standings after it (room stream).
    Reveal(QuizReveal),
    /// The final standings and prizes of a quiz game (room stream).
    Podium(QuizPodium),
    /// A chat line (room stream).
    Chat {
        room: RoomId,
        player: String,
        text: String,
    },
    /// A reaction (room stream).
    Reaction {
        room: RoomId,
        player: String,
        emoji: String,
    },
    /// The stream could not be replayed from where the client left off: this is its
    /// state now; events continue after this event's seq (room stream).
    RoomSnapshot(RoomSnapshot),
    /// The player stream could not be replayed: the wallet as it is now (player stream).
    PlayerSnapshot { balance: u64 },
    /// Someone joined the player's referral tree, `level` steps below the player (1: the
    /// player's own referee) (player stream).
    FriendJoined { friend: String, level: u32 },
    /// A referral reward for the player changed state (player stream).
    ReferralReward(ReferralReward),
}

/// One entry of the durable partner event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Rises by one per entry, in the order entries became durable.
    pub offset: u64,
    /// Server time the entry was written.
    pub at_ms: u64,
    pub event: LogEvent,
}

/// What the partner event log records. New variants go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogEvent {
    /// `referee` joined the tree rooted at `tree`, below `referrer`.
    ReferralClaimed {
        tree: String,
        referrer: String,
        referee: String,
    },
    /// A reward was made or changed state (`Pending`, `Flagged`, `Credited`, `Voided`).
    Reward {
        beneficiary: String,
        reward: ReferralReward,
    },
    /// A referee finished a first game (their ancestors' activation rewards follow).
    GameFinished { tree: String, player: String },
    /// A partner's conversion report made `rewards` rewards.
    ConversionReported {
        tree: String,
        player: String,
        kind: String,
        idempotency_key: String,
        rewards: u32,
    },
}

/// Why a referral reward is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RewardTrigger {
    /// A referee claimed a code (paid up the tree).
    Signup,
    /// The referee's own bonus for claiming a code.
    Welcome,
    /// A referee finished a first game (paid up the tree).
    Activation,
    /// A partner reported a conversion of the referee (paid up the tree).
    Conversion,
}

/// Where a referral reward stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RewardState {
    /// Held until its hold time passes (then credited), unless voided first.
    Pending,
    /// In the wallet.
    Credited,
    /// Held by a velocity limit until a partner approves or voids it.
    Flagged,
    /// Never paid.
    Voided,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralReward {
    /// The referral tree (its root player) and the reward's number in it: together they
    /// name the reward to a partner's `ApproveReward` / `VoidReward`.
    pub tree: String,
    pub reward: u64,
    /// The player whose signup or activation earned it.
    pub friend: String,
    /// How many steps below the beneficiary the friend is (0 for a welcome bonus).
    pub level: u32,
    pub trigger: RewardTrigger,
    pub amount: u64,
    pub state: RewardState,
}

/// A player's referral statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralStats {
    /// The player's referrer, if they claimed a code.
    pub referrer: Option<String>,
    /// Referees at each level below the player: index 0 counts level 1.
    pub referees_by_level: Vec<u64>,
    /// Referees (any level) who finished a first game.
    pub activated: u64,
    /// Rewards credited to the player, pending, and flagged (coins).
    pub earned: u64,
    pub pending: u64,
    pub flagged: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuizLobby {
    pub room: RoomId,
    pub players: Vec<String>,
    pub min_players: u32,
    /// Server time the game starts, when a countdown runs.
    pub starts_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuizQuestion {
    pub room: RoomId,
    /// 0-based index of the question in this game.
    pub index: u32,
    pub total: u32,
    pub category: String,
    pub text: String,
    pub choices: Vec<String>,
    /// Server time the question was asked and the time answers stop being accepted.
    pub asked_at_ms: u64,
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    pub player: String,
    /// 1-based; players with equal scores share a rank.
    pub rank: u32,
    pub score: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuizReveal {
    pub room: RoomId,
    pub index: u32,
    pub correct_choice: u32,
    /// What each player scored on this question (0 for wrong or no answer).
    pub points: Vec<(String, u64)>,
    /// The top five.
    pub top: Vec<Standing>,
    /// Every player's standing, so that each finds its own rank.
    pub standings: Vec<Standing>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodiumPlace {
    pub standing: Standing,
    pub prize: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuizPodium {
    pub room: RoomId,
    pub places: Vec<PodiumPlace>,
    pub standings: Vec<Standing>,
}

/// A room's state for a client that lost track of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    pub room: RoomId,
    pub kind: RoomKind,
    pub members: Vec<String>,
    /// The quiz phase, for quiz rooms.
    pub quiz: Option<QuizPhase>,
}

/// Where a quiz room stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuizPhase {
    Lobby(QuizLobby),
    Asking {
        question: QuizQuestion,
        standings: Vec<Standing>,
    },
    Revealed(QuizReveal),
    Finished(QuizPodium),
}

/// Successful replies. New variants go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyBody {
    RoomJoined(RoomJoined),
    RoomLeft {
        room: RoomId,
    },
    Spun(SpinOutcome),
    SeedRotated(SeedReveal),
    Wallet {
        balance: u64,
    },
    /// A quiz room was joined (by QuickJoin, or by code).
    QuizJoined(QuizJoined),
    /// Reserved, never sent: `CreatePrivate` is answered `QuizJoined` with its code (kept
    /// so that the variant numbers after it stay as documented).
    PrivateCreated {
        room: RoomId,
        code: String,
    },
    /// The answer was taken; points are told at the reveal.
    AnswerTaken {
        room: RoomId,
        question: u32,
    },
    /// A chat line or reaction was accepted and broadcast.
    Sent,
    /// The token was replaced; the connection now expires at this time.
    TokenRefreshed {
        expires_ms: u64,
    },
    /// The player's referral code.
    ReferralCode {
        code: String,
    },
    /// The claim is recorded: `referrer` is the player's referrer from now on.
    ReferralClaimed {
        referrer: String,
    },
    ReferralStats(ReferralStats),
    /// The conversion was taken: this many rewards were made for it (0 if the player is
    /// in no tree, or for a repeated key: the first report's rewards stand).
    ConversionReported {
        rewards: u32,
    },
    /// The reward's state after an `ApproveReward` or `VoidReward`.
    RewardDecided {
        state: RewardState,
    },
    /// The connection follows the partner event log from `from_offset`; `head` is the
    /// offset the next entry written will get.
    Subscribed {
        from_offset: u64,
        head: u64,
    },
    /// The partner's position is recorded.
    Acked {
        offset: u64,
    },
    /// The top referrers, best first.
    ReferralLeaderboard {
        entries: Vec<LeaderboardEntry>,
    },
}

/// A referrer on the leaderboard: by referees of their own (level 1), and among equals,
/// whoever reached that number first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    pub player: String,
    pub referees: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuizJoined {
    pub room: RoomId,
    pub stream_epoch: u64,
    /// The room stream's seq that `snapshot` reflects: apply the snapshot, then only
    /// events of this epoch with a higher seq.
    pub stream_seq: u64,
    /// The private code, for private rooms.
    pub code: Option<String>,
    pub snapshot: RoomSnapshot,
}

/// A wheel as clients see it: enough to draw it and to verify every spin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WheelInfo {
    pub id: String,
    pub segments: Vec<SegmentInfo>,
    pub spins_per_day: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub label: String,
    pub prize: u64,
    pub weight: u32,
}

/// The player's provably fair state on one wheel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FairnessInfo {
    /// SHA-256 of the current server seed; the seed itself is revealed on rotation.
    pub commitment: [u8; 32],
    /// The nonce the next spin will use.
    pub next_nonce: u64,
    /// Spins used today (UTC day).
    pub spins_today: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomJoined {
    pub room: RoomId,
    pub kind: RoomKind,
    /// The epoch of the room's stream (`StreamId::Room`).
    pub stream_epoch: u64,
    /// The room stream's seq that `members` reflects: events of this epoch with a higher
    /// seq come after it.
    pub stream_seq: u64,
    pub wheel: WheelInfo,
    pub fairness: FairnessInfo,
    pub members: Vec<String>,
}

/// The reply to the player who spun.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpinOutcome {
    pub room: RoomId,
    pub wheel: String,
    pub nonce: u64,
    pub client_seed: String,
    /// The commitment of the server seed this spin used.
    pub commitment: [u8; 32],
    /// Index into `WheelInfo::segments`.
    pub segment: u32,
    pub label: String,
    /// What was credited: the segment's prize, or 0 when its inventory ran out.
    pub prize: u64,
    pub inventory_exhausted: bool,
    /// The wallet balance after this spin's prize was credited.
    pub balance: u64,
    pub spins_left_today: u32,
}

/// A spin as the room sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpinResult {
    pub room: RoomId,
    pub player: String,
    pub wheel: String,
    pub nonce: u64,
    pub client_seed: String,
    pub commitment: [u8; 32],
    pub segment: u32,
    pub label: String,
    pub prize: u64,
}

/// The answer to `RotateSeed`: the old seed in the clear, and the next commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedReveal {
    pub wheel: String,
    pub revealed_seed: [u8; 32],
    /// Equals SHA-256(`revealed_seed`); the commitment clients saw before.
    pub revealed_commitment: [u8; 32],
    pub next_commitment: [u8; 32],
    /// The nonce the next spin (under the new seed) will use.
    pub next_nonce: u64,
}
