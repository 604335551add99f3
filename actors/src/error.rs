//! Errors at the hub's boundary, and their mapping onto wire error codes.

use crate::store::StoreError;
use playtree_protocol::{ErrorCode, ErrorReply};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{kind} {id} is unavailable: it failed {restarts} times within the restart window")]
    Unavailable {
        kind: &'static str,
        id: String,
        restarts: usize,
    },
    #[error("{kind} limit reached: at most {max} may be active at once")]
    TooManyEntities { kind: &'static str, max: usize },
    #[error("{kind} {id} did not answer within {timeout_ms} ms")]
    Timeout {
        kind: &'static str,
        id: String,
        timeout_ms: u64,
    },
    #[error("{kind} {id} could not be started: {reason}")]
    Spawn {
        kind: &'static str,
        id: String,
        reason: String,
    },
    #[error("room {0} does not exist")]
    UnknownRoom(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl HubError {
    pub fn to_reply(&self) -> ErrorReply {
        let code = match self {
            HubError::Unavailable { .. } | HubError::Spawn { .. } => ErrorCode::EntityUnavailable,
            HubError::TooManyEntities { .. } => ErrorCode::NoRoomAvailable,
            HubError::Timeout { .. } => ErrorCode::Timeout,
            HubError::UnknownRoom(_) => ErrorCode::NotInRoom,
            HubError::Store(_) => ErrorCode::StoreFailure,
            HubError::ShuttingDown => ErrorCode::ShuttingDown,
            HubError::Config(_) => ErrorCode::Internal,
        };
        ErrorReply::new(code, self.to_string())
    }
}

impl From<HubError> for ErrorReply {
    fn from(error: HubError) -> Self {
        error.to_reply()
    }
}
