//! Messages a room takes, and its replies.

use crate::connections::{ConnectionId, Outbound};
use crate::grant::Grant;
use crate::session::PendingSpin;
use playtree_protocol::{
    ErrorCode, ErrorReply, GrantId, ReplyBody, Request, RoomId, RoomKind, RoomSnapshot,
};
use ractor::RpcReplyPort;

/// What a room is, given when it is first opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSpec {
    pub kind: RoomKind,
    /// The wheel id for wheel rooms; "quiz" for quiz rooms.
    pub variant: String,
    pub private_code: Option<String>,
}

/// A room as a joining member sees it.
#[derive(Debug, Clone)]
pub struct RoomView {
    /// Whether this join gave the seat (false: the player had it already).
    pub seated_now: bool,
    pub kind: RoomKind,
    pub variant: String,
    pub stream_epoch: u64,
    /// The stream's seq that `members` and `snapshot` reflect.
    pub stream_seq: u64,
    pub members: Vec<String>,
    pub private_code: Option<String>,
    pub snapshot: RoomSnapshot,
}

/// A stream position a reconnecting client sent: `(epoch, seq)`.
pub type Position = (u64, u64);

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
    #[error("you are already in this room")]
    AlreadyMember,
    #[error("the game has started; joining mid-game is not allowed here, try again after it ends")]
    GameInProgress,
    #[error("this room does not spin wheel `{0}`")]
    WrongWheel(String),
    #[error("the spin was settled and delivered already")]
    AlreadyDelivered,
    #[error("the room's config no longer has its wheel `{0}`")]
    MissingWheel(String),
    #[error("the room was never set up")]
    NotSetUp,
    #[error("the room could not save the change: {0}")]
    Store(String),
}

impl RoomError {
    /// True when retrying cannot help: the spin's room no longer matches it.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            RoomError::WrongWheel(_)
                | RoomError::AlreadyDelivered
                | RoomError::MissingWheel(_)
                | RoomError::NotSetUp
        )
    }
}

impl From<RoomError> for ErrorReply {
    fn from(error: RoomError) -> Self {
        let code = match &error {
            RoomError::Full { .. } => ErrorCode::RoomFull,
            RoomError::AlreadyMember => ErrorCode::AlreadyInRoom,
            RoomError::GameInProgress => ErrorCode::GameInProgress,
            RoomError::WrongWheel(_) => ErrorCode::WrongRoomKind,
            RoomError::AlreadyDelivered | RoomError::MissingWheel(_) | RoomError::NotSetUp => {
                ErrorCode::Internal
            }
            RoomError::Store(_) => ErrorCode::StoreFailure,
        };
        ErrorReply::new(code, error.to_string())
    }
}

#[derive(Debug)]
pub enum RoomMsg {
    /// Seat a player; their live connections start following the room's stream.
    Join {
        player: String,
        outbounds: Vec<Outbound>,
        reply: RpcReplyPort<Result<RoomView, RoomError>>,
    },
    /// A member's connection (re)connected: replay what it missed after `position`, or
    /// send a snapshot, then keep it following the stream.
    Subscribe {
        player: String,
        outbound: Outbound,
        position: Option<Position>,
    },
    /// A member's connection went away.
    Unsubscribe {
        player: String,
        connection: ConnectionId,
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
    /// A quiz answer, timed on arrival. Relayed by the player's session with the
    /// client's own reply port: the room answers the client directly.
    Answer {
        player: String,
        question: u32,
        choice: u32,
        /// When the answer reached the server (the gateway's stamp).
        received_ms: u64,
        reply: RpcReplyPort<Result<ReplyBody, ErrorReply>>,
    },
    Chat {
        player: String,
        text: String,
        reply: RpcReplyPort<Result<ReplyBody, ErrorReply>>,
    },
    React {
        player: String,
        emoji: String,
        reply: RpcReplyPort<Result<ReplyBody, ErrorReply>>,
    },
    /// The beneficiary's wallet has the grant; drop it from the outbox.
    GrantAcked { grant: GrantId },
    /// The room's deadline came (see `next_deadline`): the quiz clock, seat grace,
    /// redelivery, passivation.
    Deadline,
    /// Test only: panic inside the handler, as a bug would.
    #[cfg(feature = "fault-injection")]
    InjectFault,
}

impl ractor::Message for RoomMsg {}

/// A member's request that the room answers itself (chat, reactions, quiz answers):
/// the room checks membership, the room's kind and its own limits, so it may reach the
/// room through the player's session or straight from the gateway.
#[derive(Debug, Clone)]
pub struct MemberRequest {
    pub room: RoomId,
    player: String,
    received_ms: u64,
    what: MemberAction,
}

#[derive(Debug, Clone)]
enum MemberAction {
    Answer { question: u32, choice: u32 },
    Chat { text: String },
    React { emoji: String },
}

impl MemberRequest {
    /// The member request in `request`, if it is one.
    pub fn from_request(player: &str, request: &Request, received_ms: u64) -> Option<Self> {
        let (room, what) = match request {
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
            what,
        })
    }

    /// The kind of room that takes it, if only one kind does.
    pub fn room_kind(&self) -> Option<RoomKind> {
        matches!(self.what, MemberAction::Answer { .. }).then_some(RoomKind::Quiz)
    }

    /// The room's input for it, answering on `reply`.
    pub fn message(&self, reply: RpcReplyPort<Result<ReplyBody, ErrorReply>>) -> RoomMsg {
        let player = self.player.clone();
        match &self.what {
            MemberAction::Answer { question, choice } => RoomMsg::Answer {
                player,
                question: *question,
                choice: *choice,
                received_ms: self.received_ms,
                reply,
            },
            MemberAction::Chat { text } => RoomMsg::Chat {
                player,
                text: text.clone(),
                reply,
            },
            MemberAction::React { emoji } => RoomMsg::React {
                player,
                emoji: emoji.clone(),
                reply,
            },
        }
    }
}

impl RoomMsg {
    /// Answers a message the room never got with `error`, where it expects an answer.
    pub fn refuse(self, error: ErrorReply) {
        match self {
            RoomMsg::Answer { reply, .. }
            | RoomMsg::Chat { reply, .. }
            | RoomMsg::React { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            RoomMsg::Join { reply, .. } => {
                let _ = reply.send(Err(RoomError::Store(error.message)));
            }
            RoomMsg::Leave { reply, .. } => {
                let _ = reply.send(Err(RoomError::Store(error.message)));
            }
            RoomMsg::Settle { reply, .. } => {
                let _ = reply.send(Err(RoomError::Store(error.message)));
            }
            _ => {}
        }
    }
}
