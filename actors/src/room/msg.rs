//! Messages a room takes, and its replies.

use crate::grant::Grant;
use crate::session::PendingSpin;
use playtree_protocol::{ErrorCode, ErrorReply, GrantId, RoomKind};
use ractor::RpcReplyPort;

/// What a room is, given when it is first opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSpec {
    pub kind: RoomKind,
    /// The wheel id for wheel rooms.
    pub variant: String,
}

/// A room as a joining member sees it.
#[derive(Debug, Clone)]
pub struct RoomView {
    pub kind: RoomKind,
    pub variant: String,
    pub stream_epoch: u64,
    pub members: Vec<String>,
}

/// A settled spin: the grant that pays it (possibly 0) and what the wheel showed.
#[derive(Debug, Clone)]
pub struct Settled {
    pub grant: Grant,
    pub label: String,
    pub prize: u64,
    pub inventory_exhausted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room is full ({capacity} players)")]
    Full { capacity: usize },
    #[error("this room does not spin wheel `{0}`")]
    WrongWheel(String),
    #[error("the spin was settled and delivered already")]
    AlreadyDelivered,
    #[error("the room's config no longer has its wheel `{0}`")]
    MissingWheel(String),
    #[error("the room could not save the change: {0}")]
    Store(String),
}

impl From<RoomError> for ErrorReply {
    fn from(error: RoomError) -> Self {
        let code = match &error {
            RoomError::Full { .. } => ErrorCode::NoRoomAvailable,
            RoomError::WrongWheel(_) => ErrorCode::WrongRoomKind,
            RoomError::AlreadyDelivered | RoomError::MissingWheel(_) => ErrorCode::Internal,
            RoomError::Store(_) => ErrorCode::StoreFailure,
        };
        ErrorReply::new(code, error.to_string())
    }
}

#[derive(Debug)]
pub enum RoomMsg {
    Join {
        player: String,
        reply: RpcReplyPort<Result<RoomView, RoomError>>,
    },
    Leave {
        player: String,
        reply: RpcReplyPort<Result<(), RoomError>>,
    },
    /// Settle a spin the player's session has drawn; idempotent per spin.
    Settle {
        player: String,
        spin: PendingSpin,
        reply: RpcReplyPort<Result<Settled, RoomError>>,
    },
    /// The beneficiary's wallet has the grant; drop it from the outbox.
    GrantAcked { grant: GrantId },
    /// Timer: resend every grant not yet acknowledged.
    RedeliverOutbox,
    /// Timer: passivate when empty and idle.
    PassivateCheck,
}

impl ractor::Message for RoomMsg {}
