//! Playtree wire protocol.
//!
//! One websocket binary message carries one frame: a [`ClientFrame`] from a client or a
//! [`ServerFrame`] from the server, bincode-2 encoded (standard config) by [`codec`].
//! `PROTOCOL.md` beside this crate documents every frame byte by byte.
//!
//! This crate knows nothing of sockets, tokio or the server: it is the contract shared by
//! the server, the Rust client crate and clients written in other languages.

pub mod client;
pub mod codec;
pub mod error;
pub mod fairness;
pub mod ids;
pub mod limits;
pub mod server;

pub use client::{ClientFrame, Hello, Request, RoomKind, StreamPosition};
pub use codec::{DecodeError, EncodeError};
pub use error::{CloseCode, ErrorCode, ErrorReply};
pub use ids::{GrantId, RoomId, StreamId};
pub use server::{
    Event, EventEnvelope, FairnessInfo, LeaderboardEntry, LogEntry, LogEvent, PodiumPlace,
    QuizJoined, QuizLobby, QuizPhase, QuizPodium, QuizQuestion, QuizReveal, ReferralReward,
    ReferralStats, ReplyBody, RewardState, RewardTrigger, Role, RoomJoined, RoomSnapshot,
    SeedReveal, SegmentInfo, ServerFrame, SpinOutcome, SpinResult, Standing, Welcome, WheelInfo,
};

/// The protocol's major version. A client whose `Hello` names another major version is
/// refused with [`ErrorCode::UnsupportedVersion`]. New enum variants go at the end of their
/// enum and do not change this number.
pub const PROTOCOL_VERSION: u16 = 2;
