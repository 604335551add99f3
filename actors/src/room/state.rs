//! A room's durable state, its events, and the pure `apply`.

use super::quiz::{self, QuizEvent, QuizState};
use crate::grant::{Grant, GrantCounter};
use crate::store::Entity;
use playtree_protocol::{GrantId, RoomKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    /// `None` until the room's `Created` event: such a room does not exist.
    pub setup: Option<RoomSetup>,
    pub members: BTreeSet<String>,
    /// Remaining prizes of capped segments, by segment index.
    pub inventory: BTreeMap<u32, u64>,
    /// Grants issued and not yet acknowledged by their beneficiary's wallet.
    pub outbox: BTreeMap<GrantId, Grant>,
    /// Per player, the nonce after the last spin settled here (spins settle in order).
    pub settled_next_nonce: BTreeMap<String, u64>,
    /// Sum of every grant this room has issued.
    pub granted_total: u64,
    /// Numbers the room's grants (see [`crate::grant`]).
    pub grants: GrantCounter,
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
    /// A spin's prize was decided and its grant put in the outbox.
    SpinSettled {
        grant: Grant,
        player: String,
        nonce: u64,
        segment: u32,
        inventory_exhausted: bool,
    },
    GrantDelivered {
        grant: GrantId,
    },
    Quiz(QuizEvent),
    /// Prizes decided at once (a quiz podium), each put in the outbox.
    GrantsIssued {
        grants: Vec<Grant>,
    },
}

#[derive(Debug)]
pub struct RoomEntity;

impl Entity for RoomEntity {
    const KIND: &'static str = "room";
    type State = RoomState;
    type Event = RoomEvent;

    fn owes_grants(state: &RoomState) -> bool {
        !state.outbox.is_empty()
    }

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
                grant,
                player,
                nonce,
                segment,
                inventory_exhausted,
            } => {
                let next = state.settled_next_nonce.entry(player.clone()).or_default();
                *next = (*next).max(nonce + 1);
                if !inventory_exhausted && let Some(remaining) = state.inventory.get_mut(segment) {
                    *remaining = remaining.saturating_sub(1);
                }
                state.granted_total = state.granted_total.saturating_add(grant.amount);
                state.grants.issued(grant);
                state.outbox.insert(grant.id.clone(), grant.clone());
            }
            RoomEvent::GrantDelivered { grant } => {
                state.outbox.remove(grant);
            }
            RoomEvent::Quiz(event) => quiz::apply(&mut state.quiz, event),
            RoomEvent::GrantsIssued { grants } => {
                for grant in grants {
                    state.granted_total = state.granted_total.saturating_add(grant.amount);
                    state.grants.issued(grant);
                    state.outbox.insert(grant.id.clone(), grant.clone());
                }
            }
        }
    }
}
