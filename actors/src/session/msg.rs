//! The inputs a player session takes of its own: from the player's connections and
//! from partners (letters and hand-offs from other entities are `crate::mail`'s).

use crate::connections::{ConnectionId, Outbound};
use crate::mail::RequestReply;
use playtree_protocol::{ErrorReply, Request, StreamPosition};
use ractor::RpcReplyPort;

/// What a new connection learns from the session.
#[derive(Debug, Clone)]
pub struct SessionWelcome {
    pub player_stream_epoch: u64,
}

/// A keyed request's key, and the digest of the request it was given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyed {
    pub key: u64,
    pub digest: u64,
}

/// A request from one of the player's connections.
#[derive(Debug)]
pub struct PlayerRequest {
    pub request: Request,
    pub keyed: Option<Keyed>,
    /// When the gateway read it off the socket (quiz answers are timed by it).
    pub received_ms: u64,
    /// A referral claim from an address past its hourly claims limit: its rewards are
    /// flagged.
    pub suspect_source: bool,
    /// For a referral claim: the owner of the code claimed (the hub looks it up in the
    /// code index before the session decides), `None` if no player has it.
    pub code_owner: Option<String>,
    pub reply: RequestReply,
}

#[derive(Debug)]
pub enum SessionInput {
    /// A connection for this player was opened. It follows the player's stream and the
    /// streams of the player's rooms, resuming each from `resume` where it names one.
    Connect {
        outbound: Outbound,
        resume: Vec<StreamPosition>,
        reply: RpcReplyPort<Result<SessionWelcome, ErrorReply>>,
    },
    /// A connection closed.
    Disconnect { connection: ConnectionId },
    /// A request from one of the player's connections.
    Request(Box<PlayerRequest>),
    /// A partner's conversion report for this player: passed to their tree, which
    /// answers how many rewards it made (0 if nobody referred the player).
    Conversion {
        kind: String,
        key: String,
        reply: RpcReplyPort<Result<u32, ErrorReply>>,
    },
    /// A partner asks for this player's referral statistics.
    Stats { reply: RequestReply },
    /// The player finished a game played outside this server's rooms (benchmarks and
    /// tests drive activation with it): it activates them as a podium does.
    GameFinished,
}
