//! Identifiers that appear on the wire.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A room's id, allocated by the server and never reused.
pub type RoomId = u64;

/// An event stream: every event a client receives belongs to exactly one stream and
/// carries its `(epoch, seq)` position in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StreamId {
    /// The player's own stream: wallet credits and other personal events.
    Player(String),
    /// A room's stream: members joining and leaving, spins, and game events.
    Room(RoomId),
}

/// Identifies one reward grant. It is derived from the source entity and the sequence
/// number of the event that issued it, so it is stable across restarts and a wallet can
/// refuse to credit the same grant twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GrantId {
    /// The issuing entity, e.g. `room:17`.
    pub source: String,
    /// The issuing entity's journal sequence number of the `GrantIssued` event.
    pub seq: u64,
}

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.source, self.seq)
    }
}
