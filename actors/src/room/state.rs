//! A room's durable state, its events, and the pure `apply`.

use super::quiz::{self, QuizEvent, QuizState};
use crate::store::Entity;
use playtree_protocol::RoomKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    /// `None` until the room's `Created` event: such a room does not exist.
    pub setup: Option<RoomSetup>,
    pub members: BTreeSet<String>,
    /// Remaining prizes of capped segments, by segment index.
    pub inventory: BTreeMap<u32, u64>,
    /// The quiz game, in quiz rooms.
    pub quiz: QuizState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSetup {
    pub kind: RoomKind,
    pub variant: String,
    /// Seeds the room's randomness (the quiz's question order).
    pub seed: u64,
    /// Set for private rooms, joined by this code only.
    pub private_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomEvent {
    Created {
        setup: RoomSetup,
        inventory: BTreeMap<u32, u64>,
    },
    MemberJoined {
        player: String,
    },
    MemberLeft {
        player: String,
    },
    /// A spin's prize was decided (its credit is a letter in the same commit): a capped
    /// segment's stock goes down unless it had run out.
    SpinSettled {
        player: String,
        segment: u32,
        inventory_exhausted: bool,
    },
    Quiz(QuizEvent),
}

#[derive(Debug)]
pub struct RoomEntity;

impl Entity for RoomEntity {
    const KIND: &'static str = "room";
    type State = RoomState;
    type Event = RoomEvent;
    type Part = ();

    fn apply(state: &mut RoomState, event: &RoomEvent) {
        match event {
            RoomEvent::Created { setup, inventory } => {
                state.setup = Some(setup.clone());
                state.inventory = inventory.clone();
            }
            RoomEvent::MemberJoined { player } => {
                state.members.insert(player.clone());
            }
            RoomEvent::MemberLeft { player } => {
                state.members.remove(player);
            }
            RoomEvent::SpinSettled {
                segment,
                inventory_exhausted,
                ..
            } => {
                if !inventory_exhausted && let Some(remaining) = state.inventory.get_mut(segment) {
                    *remaining = remaining.saturating_sub(1);
                }
            }
            RoomEvent::Quiz(event) => quiz::apply(&mut state.quiz, event),
        }
    }
}
