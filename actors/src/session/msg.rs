//! Messages a player session takes.

use crate::grant::Grant;
use playtree_protocol::{ErrorReply, ReplyBody, Request, RoomId};
use ractor::RpcReplyPort;

/// What a new connection learns from the session.
#[derive(Debug, Clone)]
pub struct SessionWelcome {
    pub player_stream_epoch: u64,
}

#[derive(Debug)]
pub enum SessionMsg {
    /// A connection for this player was attached to the hub's connection registry.
    Connect { reply: RpcReplyPort<SessionWelcome> },
    /// A request from one of the player's connections.
    Request {
        request: Request,
        reply: RpcReplyPort<Result<ReplyBody, ErrorReply>>,
    },
    /// A grant for this player's wallet from `source_room`; credited at most once, and
    /// acknowledged to the room either way.
    Credit { grant: Grant, source_room: RoomId },
    /// Timer: retry settling drawn spins whose room did not answer.
    RetryPending,
    /// Timer: passivate if the player has been gone long enough.
    PassivateCheck,
    /// Test only: panic inside the handler, as a bug would.
    #[cfg(feature = "fault-injection")]
    InjectFault,
}

impl ractor::Message for SessionMsg {}
