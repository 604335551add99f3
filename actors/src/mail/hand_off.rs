//! Hand-offs: a client's request passed from the entity that received it to the one
//! that decides it, with the client's reply port, and the plumbing of connections
//! (which streams a connection follows). Nothing durable rides on them: a hand-off
//! carries no decision of its sender, so if it is lost nothing happened, and the
//! client's own wait tells it the outcome is unknown (PROTOCOL.md: send it again
//! keyed). Whatever an entity decided is told to others by letter, never by hand-off.

use crate::connections::{ConnectionId, Outbound};
use crate::matchmaker::Promise;
use playtree_protocol::{ErrorCode, ErrorReply, ReplyBody, Request, RoomId, RoomKind};
use ractor::RpcReplyPort;
use std::fmt;
use std::sync::{Arc, Mutex};

/// The answer to a client's request.
pub type RequestReply = RpcReplyPort<Result<ReplyBody, ErrorReply>>;

/// A stream position a reconnecting client sent: `(epoch, seq)`.
pub type Position = (u64, u64);

#[derive(Debug)]
pub enum HandOff {
    // To a room.
    /// A member's chat line, reaction or quiz answer; the room answers the client.
    Member {
        request: MemberRequest,
        reply: RequestReply,
    },
    /// A member's connection (re)connected: replay what it missed after `position`, or
    /// send a snapshot, then keep it following the stream. The welcome of the
    /// connection waits until every room has taken its subscription.
    Subscribe {
        player: String,
        outbound: Outbound,
        position: Option<Position>,
        welcome: Option<Arc<AfterAll>>,
    },
    /// A member's connection went away.
    Unsubscribe {
        player: String,
        connection: ConnectionId,
    },

    // To a session.
    /// A room the player's session lists does not exist any more (a subscription to it
    /// found nothing).
    RoomGone { room: RoomId },

    // To a tree.
    /// A partner's conversion report for `player`; the tree answers how many rewards
    /// it made.
    Conversion {
        player: String,
        kind: String,
        key: String,
        reply: RpcReplyPort<Result<u32, ErrorReply>>,
    },
    /// `player`'s referral statistics.
    Stats {
        player: String,
        reply: RpcReplyPort<Result<ReplyBody, ErrorReply>>,
    },
}

impl HandOff {
    pub fn name(&self) -> &'static str {
        match self {
            HandOff::Member { .. } => "member",
            HandOff::Subscribe { .. } => "subscribe",
            HandOff::Unsubscribe { .. } => "unsubscribe",
            HandOff::RoomGone { .. } => "room_gone",
            HandOff::Conversion { .. } => "conversion",
            HandOff::Stats { .. } => "stats",
        }
    }

    /// Answers a hand-off that never reached an entity that takes it with `error`,
    /// where a client waits for an answer.
    pub fn refuse(self, error: ErrorReply) {
        match self {
            HandOff::Member { reply, .. } | HandOff::Stats { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            HandOff::Conversion { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            HandOff::Subscribe { .. } | HandOff::Unsubscribe { .. } | HandOff::RoomGone { .. } => {}
        }
    }
}

/// What travels beside a letter's first delivery, in memory only: the reply port of
/// the client whose request the letter carries on, and for a join, the player's
/// connections (they follow the room) and the seat the matchmaker promised (settled
/// when the room decides, or when this is dropped). A redelivery carries none of it:
/// the client was told its request is in doubt, and the session subscribes the
/// player's connections when the seat is confirmed.
#[derive(Debug)]
pub enum Attachment {
    Reply(RequestReply),
    Join {
        reply: RequestReply,
        outbounds: Vec<Outbound>,
        promise: Option<Promise>,
    },
}

impl Attachment {
    /// Answers the client, whatever the attachment.
    pub fn answer(self, result: Result<ReplyBody, ErrorReply>) {
        let reply = match self {
            Attachment::Reply(reply) | Attachment::Join { reply, .. } => reply,
        };
        let _ = reply.send(result);
    }

    pub fn into_reply(self) -> RequestReply {
        match self {
            Attachment::Reply(reply) | Attachment::Join { reply, .. } => reply,
        }
    }
}

/// A member's request that the room answers itself (chat, reactions, quiz answers):
/// the room checks membership, the room's kind and its own limits, so it may reach the
/// room through the player's session or straight from the gateway.
#[derive(Debug, Clone)]
pub struct MemberRequest {
    pub room: RoomId,
    pub player: String,
    /// When the request reached the server (answers are timed by it).
    pub received_ms: u64,
    pub action: MemberAction,
}

#[derive(Debug, Clone)]
pub enum MemberAction {
    Answer { question: u32, choice: u32 },
    Chat { text: String },
    React { emoji: String },
}

impl MemberRequest {
    /// The member request in `request`, if it is one.
    pub fn from_request(player: &str, request: &Request, received_ms: u64) -> Option<Self> {
        let (room, action) = match request {
            Request::Answer {
                room,
                question,
                choice,
            } => (
                *room,
                MemberAction::Answer {
                    question: *question,
                    choice: *choice,
                },
            ),
            Request::Chat { room, text } => (*room, MemberAction::Chat { text: text.clone() }),
            Request::React { room, emoji } => (
                *room,
                MemberAction::React {
                    emoji: emoji.clone(),
                },
            ),
            _ => return None,
        };
        Some(MemberRequest {
            room,
            player: player.to_owned(),
            received_ms,
            action,
        })
    }

    /// The kind of room that takes it, if only one kind does.
    pub fn room_kind(&self) -> Option<RoomKind> {
        matches!(self.action, MemberAction::Answer { .. }).then_some(RoomKind::Quiz)
    }
}

/// Runs an action once every clone of it has been dropped: a connection's welcome
/// leaves once every room it follows has taken (or refused) its subscription.
pub struct AfterAll(Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl AfterAll {
    pub fn new(action: impl FnOnce() + Send + 'static) -> Arc<AfterAll> {
        Arc::new(AfterAll(Mutex::new(Some(Box::new(action)))))
    }
}

impl fmt::Debug for AfterAll {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AfterAll")
    }
}

impl Drop for AfterAll {
    fn drop(&mut self) {
        let action = self
            .0
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(action) = action {
            action();
        }
    }
}

/// The error a hand-off or request meets when its entity cannot take it now.
pub fn unavailable(what: impl fmt::Display) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::EntityUnavailable,
        format!("{what} is restarting or unavailable; try again"),
    )
}
