//! Who is who: the kinds of entity and the address of one entity. A letter names its
//! sender and its receiver by address, and the hub delivers it by address; nothing else
//! decides where a letter goes, so a letter can only ever reach the entity it names.

use playtree_protocol::RoomId;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EntityKind {
    Session,
    Room,
    Tree,
}

impl EntityKind {
    /// The kind's name in store keys, logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            EntityKind::Session => "session",
            EntityKind::Room => "room",
            EntityKind::Tree => "tree",
        }
    }
}

/// One entity: a player's session, a room, or the referral tree rooted at a player.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Address {
    Session(String),
    Room(RoomId),
    Tree(String),
}

impl Address {
    pub fn kind(&self) -> EntityKind {
        match self {
            Address::Session(_) => EntityKind::Session,
            Address::Room(_) => EntityKind::Room,
            Address::Tree(_) => EntityKind::Tree,
        }
    }

    /// The entity's key within its kind, as the store and the directories use it.
    pub fn key(&self) -> String {
        match self {
            Address::Session(player) | Address::Tree(player) => player.clone(),
            Address::Room(room) => room.to_string(),
        }
    }

    /// The player this address is the session of, if it is one.
    pub fn player(&self) -> Option<&str> {
        match self {
            Address::Session(player) => Some(player),
            Address::Room(_) | Address::Tree(_) => None,
        }
    }
}

impl fmt::Display for Address {
    /// `session:alice`, `room:17`, `tree:alice`: also the source of the grants an
    /// entity issues (PROTOCOL.md's `grant_id`).
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Session(player) => write!(formatter, "session:{player}"),
            Address::Room(room) => write!(formatter, "room:{room}"),
            Address::Tree(root) => write!(formatter, "tree:{root}"),
        }
    }
}
