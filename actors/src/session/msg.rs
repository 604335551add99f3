//! Messages a player session takes: from connections, from rooms, and from the session's
//! own flows (the requests that need a room's answer, see [`super::flows`]).

use super::state::{Membership, PendingSpin};
use crate::connections::{ConnectionId, Outbound};
use crate::grant::{Grant, GrantSource};
use crate::room::Settled;
use playtree_protocol::{
    ErrorReply, Event, FairnessInfo, ReplyBody, Request, RoomId, SpinOutcome, StreamPosition,
};
use ractor::RpcReplyPort;

/// What a new connection learns from the session.
#[derive(Debug, Clone)]
pub struct SessionWelcome {
    pub player_stream_epoch: u64,
}

/// The answer to a client's request.
pub type RequestReply = RpcReplyPort<Result<ReplyBody, ErrorReply>>;

/// Names a flow: the incarnation that started it (its stream epoch) and its number.
/// A flow's inputs that change seats or draw spins are taken only from the flow under
/// way, never from one given up or started by an older incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTag {
    pub epoch: u64,
    pub number: u64,
}

/// What the session did with a seat a flow took.
#[derive(Debug)]
pub enum JoinRecord {
    /// Recorded; the wheel's fairness for a wheel room.
    Recorded(Option<FairnessInfo>),
    /// Not recorded. `give_back`: the player holds no such seat in the session's
    /// records, so the flow must give the room's seat back.
    Refused { error: ErrorReply, give_back: bool },
}

#[derive(Debug)]
pub enum SessionMsg {
    /// A connection for this player was opened. It follows the player's stream and the
    /// streams of the player's rooms, resuming each from `resume` where it names one.
    Connect {
        outbound: Outbound,
        resume: Vec<StreamPosition>,
        reply: RpcReplyPort<Result<SessionWelcome, ErrorReply>>,
    },
    /// A connection closed.
    Disconnect { connection: ConnectionId },
    /// A room gave up this player's seat (its grace time passed, or it is gone).
    RemovedFromRoom { room: RoomId },
    /// A request from one of the player's connections.
    Request {
        request: Request,
        reply: RequestReply,
    },
    /// A request stamped with the moment the gateway read it off the socket (the
    /// server's clock): quiz answers are timed by it, not by when the room gets to them.
    Stamped {
        request: Request,
        received_ms: u64,
        /// A referral claim from an address past its hourly claims limit: its rewards
        /// are flagged.
        suspect_source: bool,
        reply: RequestReply,
    },
    /// A grant for this player's wallet from `source`; credited at most once, and
    /// acknowledged to its source either way.
    Credit { grant: Grant, source: GrantSource },
    /// The session's deadline came (see `next_deadline`): retry unsettled spins.
    Deadline,
    /// A flow has seated the player in `room`: record the membership (and commit a
    /// server seed for a wheel the player never spun). Answers the wheel's fairness.
    /// `followed` are the connections the room was given: any other live connection of
    /// the player (opened meanwhile) is subscribed now. Refused if the player has since
    /// taken another seat of that kind (the flow then gives this one back).
    Joined {
        flow: FlowTag,
        room: RoomId,
        membership: Membership,
        followed: Vec<ConnectionId>,
        reply: RpcReplyPort<JoinRecord>,
    },
    /// A flow has given the player's seat in `room` back.
    Left {
        flow: FlowTag,
        room: RoomId,
        reply: RpcReplyPort<Result<(), ErrorReply>>,
    },
    /// A flow asks to draw a spin in `room`.
    DrawSpin {
        flow: FlowTag,
        room: RoomId,
        client_seed: String,
        reply: RpcReplyPort<Result<PendingSpin, ErrorReply>>,
    },
    /// A room settled `spin` with `settled`: credit its grant and tell the outcome.
    Settled {
        spin: PendingSpin,
        settled: Settled,
        reply: RpcReplyPort<Result<SpinOutcome, ErrorReply>>,
    },
    /// A spin that can never settle: if it still waits (a redelivered grant may have
    /// settled it meanwhile), stop waiting and file a dead letter in the same commit.
    /// Answers whether it was abandoned.
    Abandon {
        spin: PendingSpin,
        reason: String,
        reply: RpcReplyPort<Result<bool, ErrorReply>>,
    },
    /// A flow's JoinPrivate found no room with its code (counted against the player).
    CodeMissed,
    /// The flow `flow` of incarnation `epoch` has ended: the next request may start.
    FlowDone { epoch: u64, flow: u64 },
    /// Something for the player's own stream (a referral tree's news), published if
    /// the player is connected.
    News { event: Event },
    /// A flow made the player's referral code: keep it (unless one was kept meanwhile)
    /// and answer the code kept.
    CodeMade {
        flow: FlowTag,
        code: String,
        reply: RpcReplyPort<Result<String, ErrorReply>>,
    },
    /// Another player's claim of this player's code: accept them as a referee (unless
    /// this player is joining a tree right now), answering the root of the tree.
    AcceptReferee {
        referee: String,
        reply: RpcReplyPort<Result<String, ErrorReply>>,
    },
    /// A claim flow found the code's owner: record the claim as under way (after
    /// checking the rules again), before the owner is asked.
    ClaimStarting {
        flow: FlowTag,
        referrer: String,
        suspect: bool,
        reply: RpcReplyPort<Result<(), ErrorReply>>,
    },
    /// The claim under way was answered for good: recorded by the tree (`Ok`), or
    /// refused by the referrer or the tree (`Err`).
    ClaimSettled {
        referrer: String,
        /// The referrer's tree (unknown if the referrer refused).
        root: Option<String>,
        outcome: Result<(), ErrorReply>,
        reply: RpcReplyPort<Result<(), ErrorReply>>,
    },
    /// The player's tree recorded their activation.
    ActivationRecorded,
    /// The player played a quiz game to its end (a first finished game activates them).
    GameFinished,
    /// A partner's conversion report for this player: passed to their tree, which
    /// answers how many rewards it made (0 if nobody referred the player).
    Conversion {
        kind: String,
        key: String,
        reply: RpcReplyPort<Result<u32, ErrorReply>>,
    },
    /// Test only: panic inside the handler, as a bug would.
    #[cfg(feature = "fault-injection")]
    InjectFault,
}

impl ractor::Message for SessionMsg {}
