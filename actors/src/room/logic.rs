//! Pure decisions of a room.

use super::msg::{RoomError, Settled};
use super::quiz::Stage;
use super::state::{RoomEvent, RoomState};
use crate::config::{JoinStarted, WheelConfig};
use crate::grant::Grant;
use crate::session::PendingSpin;
use playtree_protocol::RoomKind;
use std::collections::BTreeMap;

/// Whether `player` may take a seat: `Ok(Some(event))` for a new seat, `Ok(None)` when a
/// wheel member comes back to the seat they have, or why not.
pub fn decide_join(
    state: &RoomState,
    capacity: usize,
    join_started: JoinStarted,
    player: &str,
) -> Result<Option<RoomEvent>, RoomError> {
    let setup = state.setup.as_ref().ok_or(RoomError::NotSetUp)?;
    if state.members.contains(player) {
        return match setup.kind {
            RoomKind::Quiz => Err(RoomError::AlreadyMember),
            RoomKind::Wheel => Ok(None),
        };
    }
    if state.members.len() >= capacity {
        return Err(RoomError::Full { capacity });
    }
    if setup.kind == RoomKind::Quiz
        && state.quiz.stage != Stage::Lobby
        && join_started == JoinStarted::Refuse
    {
        return Err(RoomError::GameInProgress);
    }
    Ok(Some(RoomEvent::MemberJoined {
        player: player.to_owned(),
    }))
}

/// A settlement decided: what the player is told, and the event to journal (none when
/// it is a retry of a spin settled before, answered with the same grant).
#[derive(Debug, Clone)]
pub struct Settlement {
    pub settled: Settled,
    pub event: Option<RoomEvent>,
}

/// Settles `player`'s drawn `spin` on this room's `wheel`: idempotent per (player,
/// wheel, nonce); the grant comes from `source`'s numbering.
pub fn decide_settle(
    state: &RoomState,
    wheel: Option<&WheelConfig>,
    source: &str,
    player: &str,
    spin: &PendingSpin,
) -> Result<Settlement, RoomError> {
    let setup = state.setup.as_ref().ok_or(RoomError::NotSetUp)?;
    if setup.kind != RoomKind::Wheel || setup.variant != spin.wheel {
        return Err(RoomError::WrongWheel(spin.wheel.clone()));
    }
    if already_settled(state, player, spin.nonce) {
        // Answered before any check of the config: a spin settled before stays settled
        // (with its grant) even if its wheel has since left the config.
        let grant = settled_grant(state, player, &spin.wheel, spin.nonce)
            .cloned()
            .ok_or(RoomError::AlreadyDelivered)?;
        // The segment as configured: what it pays when its stock lasts.
        let segment = wheel.and_then(|wheel| wheel.segments.get(spin.segment as usize));
        let (label, prize) = match segment {
            Some(segment) => (segment.label.clone(), segment.prize),
            None => (grant.reason.clone(), grant.amount),
        };
        return Ok(Settlement {
            settled: Settled {
                prize: grant.amount,
                inventory_exhausted: grant.amount == 0 && prize > 0,
                grant,
                label,
            },
            event: None,
        });
    }
    let missing = || RoomError::MissingWheel(setup.variant.clone());
    let wheel = wheel.ok_or_else(missing)?;
    let (label, prize, exhausted) = prize_for(state, wheel, spin.segment).ok_or_else(missing)?;
    let (id, previous) = state.grants.next(source, player);
    let grant = Grant {
        id,
        previous,
        beneficiary: player.to_owned(),
        amount: prize,
        reason: format!("wheel {} spin {}: {label}", spin.wheel, spin.nonce),
        settles: Some(spin.key()),
    };
    Ok(Settlement {
        event: Some(RoomEvent::SpinSettled {
            grant: grant.clone(),
            player: player.to_owned(),
            nonce: spin.nonce,
            segment: spin.segment,
            inventory_exhausted: exhausted,
        }),
        settled: Settled {
            grant,
            label,
            prize,
            inventory_exhausted: exhausted,
        },
    })
}

/// What a landed segment pays: its prize, or 0 when its inventory has run out.
/// Returns `(label, prize, inventory_exhausted)`, or `None` for a segment the wheel lacks.
pub fn prize_for(
    state: &RoomState,
    wheel: &WheelConfig,
    segment: u32,
) -> Option<(String, u64, bool)> {
    let config = wheel.segments.get(segment as usize)?;
    let exhausted = state
        .inventory
        .get(&segment)
        .is_some_and(|&remaining| remaining == 0);
    let prize = if exhausted { 0 } else { config.prize };
    Some((config.label.clone(), prize, exhausted))
}

/// The starting inventory of a new room of this wheel.
pub fn initial_inventory(wheel: &WheelConfig) -> BTreeMap<u32, u64> {
    wheel
        .segments
        .iter()
        .enumerate()
        .filter_map(|(index, segment)| Some((u32::try_from(index).ok()?, segment.inventory?)))
        .collect()
}

/// The grant that already settled this player's spin, if it is still in the outbox.
/// Nonces count per player, so the player is part of the key.
pub fn settled_grant<'a>(
    state: &'a RoomState,
    player: &str,
    wheel: &str,
    nonce: u64,
) -> Option<&'a Grant> {
    state.outbox.values().find(|grant| {
        grant.beneficiary == player
            && grant
                .settles
                .as_ref()
                .is_some_and(|(w, n)| w == wheel && *n == nonce)
    })
}

/// A chat line must be non-empty, at most `chars_max` characters, without control
/// characters (no newlines, no terminal escapes).
pub fn validate_chat(text: &str, chars_max: usize) -> Result<(), playtree_protocol::ErrorReply> {
    use playtree_protocol::{ErrorCode, ErrorReply};
    let chars = text.chars().count();
    if text.trim().is_empty() {
        return Err(ErrorReply::new(
            ErrorCode::InvalidChat,
            "the chat line is empty",
        ));
    }
    if chars > chars_max {
        return Err(ErrorReply::new(
            ErrorCode::InvalidChat,
            format!("the chat line has {chars} characters; at most {chars_max} are allowed"),
        ));
    }
    if let Some(bad) = text.chars().find(|c| c.is_control()) {
        return Err(ErrorReply::new(
            ErrorCode::InvalidChat,
            format!(
                "the chat line holds a control character (U+{:04X})",
                bad as u32
            ),
        ));
    }
    Ok(())
}

/// True when this spin was settled here before.
pub fn already_settled(state: &RoomState, player: &str, nonce: u64) -> bool {
    state
        .settled_next_nonce
        .get(player)
        .is_some_and(|&next| nonce < next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_wheel;
    use crate::room::state::{RoomEntity, RoomEvent, RoomSetup};
    use crate::store::Entity;
    use playtree_protocol::RoomKind;

    fn settle(state: &mut RoomState, nonce: u64, segment: u32) -> (u64, bool) {
        let wheel = test_wheel();
        let (_, prize, exhausted) = prize_for(state, &wheel, segment).expect("segment exists");
        let (id, previous) = state.grants.next("room:1", "alice");
        let grant = Grant {
            id,
            previous,
            beneficiary: "alice".into(),
            amount: prize,
            reason: "spin".into(),
            settles: Some(("classic".into(), nonce)),
        };
        RoomEntity::apply(
            state,
            &RoomEvent::SpinSettled {
                grant,
                player: "alice".into(),
                nonce,
                segment,
                inventory_exhausted: exhausted,
            },
        );
        (prize, exhausted)
    }

    fn wheel_room(members: &[&str]) -> RoomState {
        let mut state = RoomState::default();
        RoomEntity::apply(
            &mut state,
            &RoomEvent::Created {
                setup: RoomSetup {
                    kind: RoomKind::Wheel,
                    variant: "classic".into(),
                    seed: 1,
                    private_code: None,
                },
                inventory: initial_inventory(&test_wheel()),
            },
        );
        for player in members {
            RoomEntity::apply(
                &mut state,
                &RoomEvent::MemberJoined {
                    player: (*player).into(),
                },
            );
        }
        state
    }

    fn spin(nonce: u64, segment: u32) -> PendingSpin {
        PendingSpin {
            room: 1,
            wheel: "classic".into(),
            nonce,
            client_seed: "seed".into(),
            commitment: [0; 32],
            segment,
        }
    }

    #[test]
    fn a_seat_is_taken_once_within_capacity() {
        let state = wheel_room(&["alice", "bob"]);
        let join = |player: &str, capacity| {
            decide_join(&state, capacity, JoinStarted::Wait, player).map(|event| event.is_some())
        };
        assert_eq!(join("carol", 3), Ok(true));
        assert_eq!(join("carol", 2), Err(RoomError::Full { capacity: 2 }));
        assert_eq!(
            join("alice", 2),
            Ok(false),
            "a wheel member keeps their seat"
        );
    }

    #[test]
    fn settling_is_idempotent_per_player_and_never_hands_over_anothers_grant() {
        let wheel = test_wheel();
        let mut state = wheel_room(&["alice", "bob"]);
        let settle = |state: &mut RoomState, player: &str, nonce| {
            let decided = decide_settle(state, Some(&wheel), "room:1", player, &spin(nonce, 0))
                .expect("settles");
            if let Some(event) = &decided.event {
                RoomEntity::apply(state, event);
            }
            decided
        };
        let bob = settle(&mut state, "bob", 0);
        let alice = settle(&mut state, "alice", 0);
        assert_ne!(bob.settled.grant.id, alice.settled.grant.id);
        // Bob's retry of nonce 0 gets his own grant back, and journals nothing.
        let again = settle(&mut state, "bob", 0);
        assert!(again.event.is_none());
        assert_eq!(again.settled.grant, bob.settled.grant);
        // Once bob's grant is delivered, his retry cannot pick up alice's.
        RoomEntity::apply(
            &mut state,
            &RoomEvent::GrantDelivered {
                grant: bob.settled.grant.id.clone(),
            },
        );
        assert_eq!(
            decide_settle(&state, Some(&wheel), "room:1", "bob", &spin(0, 0))
                .map(|s| s.settled.grant),
            Err(RoomError::AlreadyDelivered)
        );
        // The chain: alice's next grant names her previous one.
        let next = settle(&mut state, "alice", 1);
        assert_eq!(next.settled.grant.previous, alice.settled.grant.id.seq);
    }

    #[test]
    fn settling_needs_the_rooms_own_wheel() {
        let wheel = test_wheel();
        let state = wheel_room(&["alice"]);
        let mut other = spin(0, 0);
        other.wheel = "other".into();
        assert_eq!(
            decide_settle(&state, Some(&wheel), "room:1", "alice", &other).map(|s| s.settled.grant),
            Err(RoomError::WrongWheel("other".into()))
        );
        assert_eq!(
            decide_settle(&state, None, "room:1", "alice", &spin(0, 0)).map(|s| s.settled.grant),
            Err(RoomError::MissingWheel("classic".into()))
        );
        assert_eq!(
            decide_settle(&state, Some(&wheel), "room:1", "alice", &spin(0, 99))
                .map(|s| s.settled.grant),
            Err(RoomError::MissingWheel("classic".into()))
        );
    }

    #[test]
    fn chat_lines_are_checked() {
        let code = |text: &str| validate_chat(text, 10).map_err(|e| e.code).err();
        assert_eq!(code("hello"), None);
        assert_eq!(code("  "), Some(playtree_protocol::ErrorCode::InvalidChat));
        assert_eq!(
            code("01234567890"),
            Some(playtree_protocol::ErrorCode::InvalidChat)
        );
        assert_eq!(
            code("bell\u{7}"),
            Some(playtree_protocol::ErrorCode::InvalidChat)
        );
        assert_eq!(
            code("two\nlines"),
            Some(playtree_protocol::ErrorCode::InvalidChat)
        );
        assert_eq!(code("héllo 👋"), None, "characters, not bytes, are counted");
    }

    #[test]
    fn an_empty_inventory_turns_the_prize_into_no_win() {
        let mut state = wheel_room(&[]);
        assert_eq!(settle(&mut state, 0, 1), (500, false));
        assert_eq!(settle(&mut state, 1, 1), (0, true));
        // Uncapped segments pay every time.
        assert_eq!(settle(&mut state, 2, 0), (10, false));
        assert_eq!(state.granted_total, 510);
        assert!(already_settled(&state, "alice", 2));
        assert!(!already_settled(&state, "alice", 3));
        assert!(settled_grant(&state, "alice", "classic", 1).is_some());
        assert!(
            settled_grant(&state, "bob", "classic", 1).is_none(),
            "bob's nonce 1 is not alice's"
        );
    }
}
