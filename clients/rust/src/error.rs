use playtree_protocol::ErrorReply;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect: {0}")]
    Connect(String),
    /// The server refused the connection (bad token, wrong version, ...).
    #[error("refused by the server: {error} (close code {close_code:?})")]
    Refused {
        error: ErrorReply,
        close_code: Option<u16>,
    },
    /// The server answered the request with an error.
    #[error("request failed: {0}")]
    Server(ErrorReply),
    /// The connection ended; `error` is the server's last error frame, if it sent one.
    #[error("connection closed (close code {close_code:?}, last error {error:?})")]
    Closed {
        close_code: Option<u16>,
        error: Option<ErrorReply>,
    },
    #[error("no reply within {0:?}")]
    Timeout(std::time::Duration),
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, when the server sent one.
    pub fn code(&self) -> Option<playtree_protocol::ErrorCode> {
        match self {
            ClientError::Refused { error, .. } | ClientError::Server(error) => Some(error.code),
            ClientError::Closed { error, .. } => error.as_ref().map(|e| e.code),
            _ => None,
        }
    }
}
