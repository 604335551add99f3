//! What entities say to each other, and the types they share. This module is a leaf:
//! every kind imports it and it imports no kind (as veloren keeps `msg/` beneath client
//! and server), so no kind ever names another, and the runtime names none.
//!
//! Two ways across, and nothing else:
//! - a [`Letter`]: durable. It is written into the sender's outbox in the commit of the
//!   decision that sends it, delivered at least once, and taken exactly once by its
//!   receiver (its [`post::Mark`]s, recorded in the commit of what it does about it).
//!   Everything one entity decides that another must act on travels so.
//! - a [`HandOff`]: a client's request (with its reply port) passed on to the entity
//!   that decides it, or connection plumbing. No decision rides on it.
//!
//! An entity never waits for another: there is no call between entities.
//!
//! What bounds the mailboxes (ractor's are unbounded): a session's inputs come from
//! its player's connections (each bounded by `limits.requests_in_flight_max` and the
//! frame rate) and from letters, which their senders' outboxes bound
//! (`mail.outbox_max`) and which are redelivered with backoff; a room's from its
//! members (bounded by the room's size) and their letters; a tree's from its players'
//! letters and partners' requests (bounded per partner connection). A full commit
//! queue refuses new inputs before they change anything (`store.commit_queue_max`).

mod address;
mod hand_off;
mod letter;
pub mod post;

pub use address::{Address, EntityKind};
pub use hand_off::{
    AfterAll, Attachment, HandOff, MemberAction, MemberRequest, Position, RequestReply, unavailable,
};
pub use letter::{
    Body, ClaimAnswer, Credit, JOIN_TRIES_MAX, JoinLetter, JoinRefusal, Letter, Membership,
    PlayerNews, RewardNews, RoomSpec, Seated, SpinDraw, SpinKey, SpinPaid, StoredAnswer,
};
pub use post::{Mark, Post, PostEvent, Receipt};

use std::fmt::Debug;

/// A letter on its way, with what travels beside its first delivery in memory only.
#[derive(Debug)]
pub struct Delivery {
    pub letter: Letter,
    pub attachment: Option<Attachment>,
}

/// Everything an entity's actor takes: mail, and the inputs of its own kind (`I`).
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "ractor boxes every message it queues; letters are the common one"
)]
pub enum Msg<I> {
    /// A letter (a first delivery or a redelivery).
    Letter(Delivery),
    /// `by` recorded these letters of ours.
    Acked {
        by: Address,
        seqs: Vec<u64>,
    },
    /// A letter of ours can never be delivered (its receiver does not exist).
    Returned {
        seq: u64,
        reason: String,
    },
    HandOff(HandOff),
    /// An input of the entity's own kind (from a connection, a partner, the hub).
    Input(I),
    /// The entity's deadline came.
    Deadline,
    /// Test only: panic inside the handler, as a bug would.
    #[cfg(feature = "fault-injection")]
    InjectFault,
}

impl<I: Send + Debug + 'static> ractor::Message for Msg<I> {}

impl<I> Msg<I> {
    /// Answers, with `error`, whoever waits on a message that never reached its entity.
    pub fn refuse(self, error: playtree_protocol::ErrorReply) {
        match self {
            Msg::Letter(Delivery {
                attachment: Some(attachment),
                ..
            }) => attachment.answer(Err(error)),
            Msg::HandOff(hand_off) => hand_off.refuse(error),
            _ => {}
        }
    }
}

/// Carries mail between entities: the hub, which knows where every entity lives. The
/// runtime and the kinds send only through it.
pub trait Postman: Send + Sync + Debug + 'static {
    /// One attempt at delivering a letter (the sender redelivers until acknowledged).
    fn deliver(&self, delivery: Delivery);
    /// Tells `sender` that `by` recorded its letters `seqs`.
    fn acknowledge(&self, sender: &Address, by: Address, seqs: Vec<u64>);
    /// Passes a hand-off to `to` (activating it if needed); if it cannot, answers
    /// whoever waits on it.
    fn hand_off(&self, to: Address, hand_off: HandOff);
}
