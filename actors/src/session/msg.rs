//! Messages a player session takes.

use crate::connections::{ConnectionId, Outbound};
use crate::grant::Grant;
use playtree_protocol::{ErrorReply, ReplyBody, Request, RoomId, StreamPosition};
use ractor::RpcReplyPort;

/// What a new connection learns from the session.
#[derive(Debug, Clone)]
pub struct SessionWelcome {
    pub player_stream_epoch: u64,
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
    /// A room gave up this player's seat (its grace time passed).
    RemovedFromRoom { room: RoomId },
    /// A request from one of the player's connections.
    Request {
        request: Request,
        reply: RpcReplyPort<Result<ReplyBody, ErrorReply>>,
    },
    /// A grant for this player's wallet from `source_room`; credited at most once, and
    /// acknowledged to the room either way.
    Credit { grant: Grant, source_room: RoomId },
    /// Retry settling drawn spins whose room did not answer (at activation).
    RetryPending,
    /// The session's deadline came (see `next_deadline`): retry unsettled spins,
    /// passivate if the player has been gone long enough.
    Deadline,
    /// Test only: panic inside the handler, as a bug would.
    #[cfg(feature = "fault-injection")]
    InjectFault,
}

impl ractor::Message for SessionMsg {}
