//! A room's own inputs (none: rooms hear from sessions by letter and from connections
//! by hand-off, see `crate::mail`), and the reasons it refuses.

use playtree_protocol::{ErrorCode, ErrorReply};

/// A room takes nothing of its own: every input is mail.
#[derive(Debug)]
pub enum RoomInput {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("room is full ({capacity} players)")]
    Full { capacity: usize },
    #[error("you are already in this room")]
    AlreadyMember,
    #[error("the game has started; joining mid-game is not allowed here, try again after it ends")]
    GameInProgress,
    #[error("this room does not spin wheel `{0}`")]
    WrongWheel(String),
    #[error("the room's config no longer has its wheel `{0}`")]
    MissingWheel(String),
    #[error("the room was never set up")]
    NotSetUp,
    #[error("this room is not a room of the kind asked for")]
    WrongKind,
}

impl RoomError {
    /// Whether another room may take a player this one refused.
    pub fn another_may(&self) -> bool {
        matches!(self, RoomError::Full { .. } | RoomError::GameInProgress)
    }
}

impl From<RoomError> for ErrorReply {
    fn from(error: RoomError) -> Self {
        let code = match &error {
            RoomError::Full { .. } => ErrorCode::RoomFull,
            RoomError::AlreadyMember => ErrorCode::AlreadyInRoom,
            RoomError::GameInProgress => ErrorCode::GameInProgress,
            RoomError::WrongWheel(_) | RoomError::WrongKind => ErrorCode::WrongRoomKind,
            RoomError::MissingWheel(_) | RoomError::NotSetUp => ErrorCode::Internal,
        };
        ErrorReply::new(code, error.to_string())
    }
}
