//! Pure decisions of a room.

use super::msg::RoomError;
use super::quiz::Stage;
use super::state::{RoomEvent, RoomState};
use crate::config::{JoinStarted, WheelConfig};
use crate::mail::SpinDraw;
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

/// A spin's prize as this room decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prize {
    pub label: String,
    pub amount: u64,
    /// The segment's stock ran out: it pays 0.
    pub inventory_exhausted: bool,
}

/// What `spin` pays in this room: its segment's prize while the segment's stock
/// lasts. Refused (never to be paid) when the spin is not of this room's wheel or the
/// wheel or segment is gone from the config.
pub fn decide_prize(
    state: &RoomState,
    wheel: Option<&WheelConfig>,
    spin: &SpinDraw,
) -> Result<Prize, RoomError> {
    let setup = state.setup.as_ref().ok_or(RoomError::NotSetUp)?;
    if setup.kind != RoomKind::Wheel || setup.variant != spin.wheel {
        return Err(RoomError::WrongWheel(spin.wheel.clone()));
    }
    let missing = || RoomError::MissingWheel(setup.variant.clone());
    let wheel = wheel.ok_or_else(missing)?;
    let segment = wheel
        .segments
        .get(spin.segment as usize)
        .ok_or_else(missing)?;
    let inventory_exhausted = state
        .inventory
        .get(&spin.segment)
        .is_some_and(|&remaining| remaining == 0);
    Ok(Prize {
        label: segment.label.clone(),
        amount: if inventory_exhausted {
            0
        } else {
            segment.prize
        },
        inventory_exhausted,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_wheel;
    use crate::room::state::{RoomEntity, RoomEvent, RoomSetup};
    use crate::store::Entity;
    use playtree_protocol::RoomKind;

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

    fn spin(segment: u32) -> SpinDraw {
        SpinDraw {
            room: 1,
            wheel: "classic".into(),
            nonce: 0,
            client_seed: "seed".into(),
            commitment: [0; 32],
            segment,
            request_key: None,
        }
    }

    /// Settles a spin of `segment` as the room does: the prize, then its event.
    fn settle(state: &mut RoomState, segment: u32) -> (u64, bool) {
        let prize = decide_prize(state, Some(&test_wheel()), &spin(segment)).expect("pays");
        RoomEntity::apply(
            state,
            &RoomEvent::SpinSettled {
                player: "alice".into(),
                segment,
                inventory_exhausted: prize.inventory_exhausted,
            },
        );
        (prize.amount, prize.inventory_exhausted)
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
    fn a_prize_needs_the_rooms_own_wheel() {
        let wheel = test_wheel();
        let state = wheel_room(&["alice"]);
        let mut other = spin(0);
        other.wheel = "other".into();
        assert_eq!(
            decide_prize(&state, Some(&wheel), &other),
            Err(RoomError::WrongWheel("other".into()))
        );
        assert_eq!(
            decide_prize(&state, None, &spin(0)),
            Err(RoomError::MissingWheel("classic".into()))
        );
        assert_eq!(
            decide_prize(&state, Some(&wheel), &spin(99)),
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
        assert_eq!(settle(&mut state, 1), (500, false));
        assert_eq!(settle(&mut state, 1), (0, true));
        // Uncapped segments pay every time.
        assert_eq!(settle(&mut state, 0), (10, false));
        assert_eq!(settle(&mut state, 0), (10, false));
    }
}
