//! Pure decisions of a room.

use super::state::RoomState;
use crate::config::WheelConfig;
use crate::grant::Grant;
use std::collections::BTreeMap;

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
