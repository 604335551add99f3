//! Letters: what one entity tells another, durably. A letter is written into its
//! sender's outbox in the commit of the decision that sends it, delivered at least once
//! (redelivered until its receiver acknowledges it), and taken exactly once: the
//! receiver records it in the commit of what it does about it, and a letter it has
//! recorded before is only acknowledged again (see [`super::post`]).

use super::Address;
use playtree_protocol::fairness::Commitment;
use playtree_protocol::{ErrorReply, GrantId, RewardState, RewardTrigger, RoomId, RoomKind};
use serde::{Deserialize, Serialize};

/// Identifies a spin: its wheel and the player's nonce on it.
pub type SpinKey = (String, u64);

/// Rooms one QuickJoin tries before it gives up (each may have filled meanwhile).
pub const JOIN_TRIES_MAX: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Letter {
    pub from: Address,
    pub to: Address,
    /// The sender's number for it: rising, never reused.
    pub seq: u64,
    /// The sender's previous letter to the same receiver that was not yet acknowledged
    /// when this one was sent; 0 when every earlier one was (see [`super::Mark`]).
    pub previous: u64,
    /// When it was first sent (the sender's store clock): a receiver refuses a letter
    /// older than it remembers senders for.
    pub sent_ms: u64,
    pub body: Body,
}

impl Letter {
    /// The grant id of a credit: its sender and its number.
    pub fn grant_id(&self) -> GrantId {
        GrantId {
            source: self.from.to_string(),
            seq: self.seq,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    // To a player's session.
    /// Coins for the wallet, from a room (a spin's prize, a podium) or a tree (a
    /// referral reward). The only way coins reach a wallet.
    Credit(Credit),
    /// The player holds a seat in `room` (a join the room decided).
    Seated(Seated),
    /// The room could not seat the player.
    JoinRefused(JoinRefusal),
    /// The room gave the player's seat up (its grace passed, or the player left).
    Unseated { room: RoomId },
    /// The room can never pay the spin `key` (its wheel is gone, or it is not this
    /// room's wheel): the spin is abandoned.
    SpinRefused { key: SpinKey, reason: String },
    /// The player played a quiz game in `room` to its podium.
    GameFinished { room: RoomId },
    /// News for the player's own stream, from their tree, in order.
    News(Vec<PlayerNews>),
    /// From a claimer's session to the session of the code's owner: take `referee` as
    /// a referee (step 2 of a claim, see `crate::claim`).
    AcceptReferee { referee: String, suspect: bool },
    /// To a claimer's session: how their claim ended (step 4).
    ClaimAnswered(ClaimAnswer),
    /// From a tree to a referrer's session: the referee it accepted was attached, or
    /// refused (step 4, the referrer's side).
    RefereeAnswered { referee: String, attached: bool },

    // To a room.
    /// Settle a spin the sender's session drew: decide its prize and pay it.
    Settle(SpinDraw),
    /// Seat the sender's player.
    Join(JoinLetter),
    /// The sender's player gives their seat back.
    Leave,

    // To a tree.
    /// From a referrer's session: attach `referee` below the sender (step 3).
    Attach { referee: String, suspect: bool },
    /// From a player's session: the player finished a first game.
    Activated,
}

impl Body {
    /// The body's name in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Credit(_) => "credit",
            Body::Seated(_) => "seated",
            Body::JoinRefused(_) => "join_refused",
            Body::Unseated { .. } => "unseated",
            Body::SpinRefused { .. } => "spin_refused",
            Body::GameFinished { .. } => "game_finished",
            Body::News(_) => "news",
            Body::AcceptReferee { .. } => "accept_referee",
            Body::ClaimAnswered(_) => "claim_answered",
            Body::RefereeAnswered { .. } => "referee_answered",
            Body::Settle(_) => "settle",
            Body::Join(_) => "join",
            Body::Leave => "leave",
            Body::Attach { .. } => "attach",
            Body::Activated => "activated",
        }
    }

    /// Coins this letter pays, if it is a credit.
    pub fn coins(&self) -> u64 {
        match self {
            Body::Credit(credit) => credit.amount,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    pub amount: u64,
    pub reason: String,
    /// The spin this pays, when it is a spin's prize.
    pub spin: Option<SpinPaid>,
    /// What the player's stream says besides the credit (a friend who joined, the
    /// referral reward it pays), in order.
    pub news: Vec<PlayerNews>,
}

/// What a room decided for a drawn spin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpinPaid {
    pub key: SpinKey,
    pub label: String,
    /// The segment's prize ran out: the spin pays 0.
    pub inventory_exhausted: bool,
}

/// A drawn spin: its outcome is fixed; its prize is the room's to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpinDraw {
    pub room: RoomId,
    pub wheel: String,
    pub nonce: u64,
    pub client_seed: String,
    pub commitment: Commitment,
    pub segment: u32,
    /// The idempotency key of the keyed request that drew it: the prize's answer is
    /// kept for it.
    pub request_key: Option<u64>,
}

impl SpinDraw {
    pub fn key(&self) -> SpinKey {
        (self.wheel.clone(), self.nonce)
    }
}

/// A room the player is in: its kind and variant (the wheel id, or "quiz").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub kind: RoomKind,
    pub variant: String,
}

/// What a new room is, given by the join that opens it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSpec {
    pub kind: RoomKind,
    /// The wheel id for wheel rooms; "quiz" for quiz rooms.
    pub variant: String,
    pub private_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seated {
    pub room: RoomId,
    pub membership: Membership,
    /// The join's answer, for a keyed join: the key and the answer kept for it.
    pub answer: Option<(u64, StoredAnswer)>,
}

/// A join: a QuickJoin, a new private room, or one joined by code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinLetter {
    pub membership: Membership,
    /// Creates the room if it does not exist yet.
    pub spec: Option<RoomSpec>,
    /// The player's fairness on the room's wheel, for the answer.
    pub fairness: Option<playtree_protocol::FairnessInfo>,
    /// A QuickJoin (any room of the kind will do: one that is full sends it back to be
    /// tried elsewhere), or a join of this room only (by code, or opening it).
    pub quick: bool,
    /// Rooms this QuickJoin found full already.
    pub tried: Vec<RoomId>,
    /// The idempotency key of a keyed join: the room's answer comes back with it, in
    /// `Seated` (or the refusal), to be kept for the key.
    pub request_key: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRefusal {
    pub room: RoomId,
    pub membership: Membership,
    pub error: ErrorReply,
    /// Another room may take the player (this one was full, or its game started).
    pub retry: bool,
    /// The rooms the join tried, this one included.
    pub tried: Vec<RoomId>,
    pub request_key: Option<u64>,
}

/// A reply to a client, encoded, as kept for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer(pub Vec<u8>);

impl StoredAnswer {
    pub fn of(answer: &Result<playtree_protocol::ReplyBody, ErrorReply>) -> Option<StoredAnswer> {
        playtree_protocol::codec::encode_record(answer)
            .ok()
            .map(StoredAnswer)
    }

    pub fn reply(&self) -> Result<playtree_protocol::ReplyBody, ErrorReply> {
        playtree_protocol::codec::decode_record(&self.0).unwrap_or_else(|error| {
            Err(ErrorReply::new(
                playtree_protocol::ErrorCode::Internal,
                format!("the answer kept for this key is unreadable: {error}"),
            ))
        })
    }
}

/// How a claim ended, as its tree (or the code's owner) answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimAnswer {
    /// The claimer is attached below `referrer` in the tree rooted at `root`.
    Attached {
        referrer: String,
        root: String,
    },
    Refused(ErrorReply),
}

/// What a player's stream carries from their referral tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlayerNews {
    FriendJoined { friend: String, level: u32 },
    Reward(RewardNews),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardNews {
    pub tree: String,
    pub reward: u64,
    pub friend: String,
    pub level: u32,
    pub trigger: RewardTrigger,
    pub amount: u64,
    pub state: RewardState,
}

impl RewardNews {
    /// The reward as the wire (and the partner log) says it.
    pub fn wire(&self) -> playtree_protocol::ReferralReward {
        playtree_protocol::ReferralReward {
            tree: self.tree.clone(),
            reward: self.reward,
            friend: self.friend.clone(),
            level: self.level,
            trigger: self.trigger,
            amount: self.amount,
            state: self.state,
        }
    }
}

impl PlayerNews {
    /// The event the player's stream carries for it.
    pub fn event(&self) -> playtree_protocol::Event {
        match self {
            PlayerNews::FriendJoined { friend, level } => playtree_protocol::Event::FriendJoined {
                friend: friend.clone(),
                level: *level,
            },
            PlayerNews::Reward(news) => playtree_protocol::Event::ReferralReward(news.wire()),
        }
    }
}
