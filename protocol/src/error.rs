//! Typed errors on the wire: a stable numeric code, a message a person can act on, and
//! for connection-ending errors the websocket close code that follows.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, close = $close:expr; )*) => {
        /// Stable error codes. The number is the contract; the Rust name may be renamed.
        /// An unknown number from a newer server decodes as [`ErrorCode::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
            /// A code this version of the protocol crate does not know.
            Other(u16),
        }

        impl ErrorCode {
            /// Every known code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            pub fn as_u16(self) -> u16 {
                match self {
                    $( ErrorCode::$name => $code, )*
                    ErrorCode::Other(code) => code,
                }
            }

            /// The websocket close code the server sends after this error, when the
            /// error ends the connection.
            pub fn close_code(self) -> Option<CloseCode> {
                match self {
                    $( ErrorCode::$name => $close, )*
                    ErrorCode::Other(_) => None,
                }
            }
        }

        impl From<u16> for ErrorCode {
            fn from(code: u16) -> Self {
                match code {
                    $( $code => ErrorCode::$name, )*
                    other => ErrorCode::Other(other),
                }
            }
        }
    };
}

codes! {
    /// The frame could not be decoded as a `ClientFrame`.
    MalformedFrame = 1001, close = Some(CloseCode::MalformedFrame);
    /// The frame is larger than the server's frame limit.
    FrameTooLarge = 1002, close = Some(CloseCode::FrameTooLarge);
    /// A text websocket message was sent; the protocol is binary only.
    TextFrameRejected = 1003, close = Some(CloseCode::TextFrameRejected);
    /// `Hello.protocol_version` names a major version this server does not speak.
    UnsupportedVersion = 1004, close = Some(CloseCode::UnsupportedVersion);
    /// The first frame was not `Hello`, or a second `Hello` was sent.
    HelloExpected = 1005, close = Some(CloseCode::HelloExpected);
    /// No `Hello` arrived within the handshake timeout.
    HelloTimeout = 1006, close = Some(CloseCode::HelloTimeout);
    /// The token is not a well-formed JWT, or its claims do not parse.
    TokenMalformed = 2001, close = Some(CloseCode::TokenMalformed);
    /// The token's signature does not verify with the server's key.
    TokenBadSignature = 2002, close = Some(CloseCode::TokenBadSignature);
    /// The token's `exp` is in the past.
    TokenExpired = 2003, close = Some(CloseCode::TokenExpired);
    /// The token's `aud` is not the audience this server expects.
    TokenWrongAudience = 2004, close = Some(CloseCode::TokenWrongAudience);
    /// The token's `iss` is not the issuer this server expects.
    TokenWrongIssuer = 2005, close = Some(CloseCode::TokenWrongIssuer);
    /// The token lives longer (`exp - iat`) than the server allows.
    TokenLifetimeTooLong = 2006, close = Some(CloseCode::TokenLifetimeTooLong);
    /// The token lacks a required claim (`sub`, `exp`, or `iat` when a lifetime cap is set).
    TokenMissingClaim = 2007, close = Some(CloseCode::TokenMissingClaim);
    /// The server holds as many connections as it is configured to.
    TooManyConnections = 3001, close = Some(CloseCode::TooManyConnections);
    /// The connection has as many requests in flight as it may.
    TooManyRequestsInFlight = 3002, close = None;
    /// The connection's outbound queue filled up: it read its events too slowly.
    SlowConsumer = 3004, close = Some(CloseCode::SlowConsumer);
    /// The connection sent frames faster than its rate limit; slow down.
    RateLimited = 3005, close = None;
    /// The connection kept exceeding its rate limit after being told.
    RateLimitPersisted = 3006, close = Some(CloseCode::RateLimited);
    /// The idempotency key was given before to a different request.
    KeyReused = 3007, close = None;
    /// The request first sent with this idempotency key is still being carried out;
    /// send it again (same key) for its result.
    RequestInProgress = 3008, close = None;
    /// The server is shutting down; reconnect (to another node) shortly.
    ShuttingDown = 3003, close = Some(CloseCode::ShuttingDown);
    /// The wheel (or other variant) named does not exist in this server's config.
    UnknownVariant = 4001, close = None;
    /// The room does not exist, or this player is not a member of it.
    NotInRoom = 4002, close = None;
    /// Every room of the kind is full and no new room may be opened.
    NoRoomAvailable = 4003, close = None;
    /// The player has used all of today's spins on this wheel (UTC day).
    DailySpinLimit = 4004, close = None;
    /// The client seed is empty, too long, or has bytes other than printable ASCII.
    InvalidClientSeed = 4005, close = None;
    /// The room's game does not support this request (e.g. a spin in a non-wheel room).
    WrongRoomKind = 4006, close = None;
    /// The entity the request needs was stopped after failing repeatedly.
    EntityUnavailable = 5001, close = None;
    /// The request did not complete within the server's deadline; it may still complete.
    Timeout = 5002, close = None;
    /// The server could not make the change durable; nothing was changed.
    StoreFailure = 5003, close = None;
    /// An unexpected server fault. It is logged; report it with the time it happened.
    Internal = 5004, close = None;
    /// The room is full.
    RoomFull = 4007, close = None;
    /// No private room has this code.
    UnknownRoomCode = 4008, close = None;
    /// The player is already in this room (or in another room of this kind).
    AlreadyInRoom = 4009, close = None;
    /// The quiz has started; wait for the next game.
    GameInProgress = 4010, close = None;
    /// No question is open, or it is not the one named.
    NoOpenQuestion = 4011, close = None;
    /// The answer came after the question's deadline.
    AnswerTooLate = 4012, close = None;
    /// This player already answered this question.
    AlreadyAnswered = 4013, close = None;
    /// The choice index is not one of the question's choices.
    InvalidChoice = 4014, close = None;
    /// The chat line is empty, too long, or has control characters.
    InvalidChat = 4015, close = None;
    /// The emoji is not in the server's reaction set.
    InvalidReaction = 4016, close = None;
    /// A player cannot claim their own referral code.
    SelfReferral = 4101, close = None;
    /// No player has this referral code.
    UnknownReferralCode = 4102, close = None;
    /// The player has claimed a referral code already (once per player).
    ReferralAlreadyClaimed = 4103, close = None;
    /// The attribution window after the player's first connection has passed.
    AttributionWindowPassed = 4104, close = None;
    /// The player has referees of their own, so cannot join another tree.
    AlreadyReferrer = 4105, close = None;
    /// The referrer is joining a tree right now; try again in a moment.
    ReferrerBusy = 4106, close = None;
    /// The referral tree holds its maximum number of players.
    ReferralTreeFull = 4107, close = None;
    /// No such reward in that referral tree.
    UnknownReward = 4108, close = None;
    /// The reward is not held (it was credited or voided already).
    RewardNotHeld = 4109, close = None;
    /// No rewards are configured for this kind of conversion.
    UnknownConversionKind = 4110, close = None;
    /// The event log no longer holds that offset (retention) or has not reached it.
    OffsetNotRetained = 4111, close = None;
    /// No player with this id has ever connected.
    UnknownPlayer = 4112, close = None;
    /// A refreshed token must name the same player.
    TokenPlayerMismatch = 2008, close = None;
    /// The request is for partners (token role `partner` or `admin`).
    Forbidden = 2010, close = None;
    /// The token expired and was not refreshed in time.
    TokenExpiredLive = 2009, close = Some(CloseCode::TokenExpired);
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u16::deserialize(deserializer).map(ErrorCode::from)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self, self.as_u16())
    }
}

/// An error as the client sees it: the code to branch on and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorReply {}

/// Websocket close codes the server uses (the 4000–4999 range is the application's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    MalformedFrame = 4001,
    FrameTooLarge = 4002,
    TextFrameRejected = 4003,
    UnsupportedVersion = 4004,
    HelloExpected = 4005,
    HelloTimeout = 4006,
    TokenMalformed = 4011,
    TokenBadSignature = 4012,
    TokenExpired = 4013,
    TokenWrongAudience = 4014,
    TokenWrongIssuer = 4015,
    TokenLifetimeTooLong = 4016,
    TokenMissingClaim = 4017,
    TooManyConnections = 4021,
    SlowConsumer = 4022,
    RateLimited = 4023,
    ShuttingDown = 4031,
}

impl CloseCode {
    pub const ALL: &'static [CloseCode] = &[
        CloseCode::MalformedFrame,
        CloseCode::FrameTooLarge,
        CloseCode::TextFrameRejected,
        CloseCode::UnsupportedVersion,
        CloseCode::HelloExpected,
        CloseCode::HelloTimeout,
        CloseCode::TokenMalformed,
        CloseCode::TokenBadSignature,
        CloseCode::TokenExpired,
        CloseCode::TokenWrongAudience,
        CloseCode::TokenWrongIssuer,
        CloseCode::TokenLifetimeTooLong,
        CloseCode::TokenMissingClaim,
        CloseCode::TooManyConnections,
        CloseCode::SlowConsumer,
        CloseCode::RateLimited,
        CloseCode::ShuttingDown,
    ];

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn from_u16(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.iter().copied().find(|c| c.as_u16() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_u16()), "duplicate code {code}");
            assert_eq!(ErrorCode::from(code.as_u16()), *code);
        }
        assert_eq!(ErrorCode::from(65000), ErrorCode::Other(65000));
    }

    #[test]
    fn close_codes_are_unique_and_in_the_application_range() {
        let mut seen = HashSet::new();
        for code in CloseCode::ALL {
            assert!((4000..5000).contains(&code.as_u16()));
            assert!(seen.insert(code.as_u16()));
            assert_eq!(CloseCode::from_u16(code.as_u16()), Some(*code));
        }
    }
}
