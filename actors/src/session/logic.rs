//! Pure decisions of a player session: they take the state, the config and `now`, and
//! return events to persist or a typed error for the client.

use super::state::{PendingSpin, SessionEvent, SessionState};
use crate::clock::utc_day;
use crate::config::WheelConfig;
use crate::grant::Grant;
use playtree_protocol::fairness::{ServerSeed, spin_segment, validate_client_seed};
use playtree_protocol::{ErrorCode, ErrorReply, RoomId};

/// Draws a spin for `room` (which spins `wheel`): checks the client seed and the daily
/// limit, then fixes the outcome from the player's committed seed and next nonce.
/// Returns the spin and the UTC day it counts against.
pub fn draw_spin(
    state: &SessionState,
    wheel: &WheelConfig,
    room: RoomId,
    client_seed: &str,
    now_ms: u64,
) -> Result<(PendingSpin, u32), ErrorReply> {
    validate_client_seed(client_seed)
        .map_err(|error| ErrorReply::new(ErrorCode::InvalidClientSeed, error.to_string()))?;
    let fairness = state.wheels.get(&wheel.id).ok_or_else(|| {
        ErrorReply::new(
            ErrorCode::NotInRoom,
            format!("join a room of wheel `{}` before spinning it", wheel.id),
        )
    })?;
    let day = utc_day(now_ms);
    if fairness.spins_on(day) >= wheel.spins_per_day {
        return Err(ErrorReply::new(
            ErrorCode::DailySpinLimit,
            format!(
                "all {} spins of wheel `{}` are used today; more are available after 00:00 UTC",
                wheel.spins_per_day, wheel.id
            ),
        ));
    }
    let nonce = fairness.next_nonce;
    let segment = spin_segment(&fairness.server_seed, client_seed, nonce, &wheel.weights())
        .and_then(|index| u32::try_from(index).ok())
        .ok_or_else(|| {
            // Config validation rejects wheels whose weights sum to zero.
            ErrorReply::new(
                ErrorCode::Internal,
                format!("wheel `{}` has no weight", wheel.id),
            )
        })?;
    Ok((
        PendingSpin {
            room,
            wheel: wheel.id.clone(),
            nonce,
            client_seed: client_seed.to_owned(),
            commitment: fairness.commitment,
            segment,
        },
        day,
    ))
}

/// What a wallet does with a grant delivered to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditDecision {
    /// Addressed to another player: neither credited nor acknowledged.
    Misaddressed,
    /// Credited before: acknowledged again, not credited again.
    Duplicate,
    /// New: journal this, then acknowledge.
    Credit(SessionEvent),
}

pub fn decide_credit(state: &SessionState, player: &str, grant: &Grant) -> CreditDecision {
    if grant.beneficiary != player {
        CreditDecision::Misaddressed
    } else if state.has_credited(&grant.id) {
        CreditDecision::Duplicate
    } else {
        CreditDecision::Credit(SessionEvent::Credited {
            grant: grant.id.clone(),
            previous: grant.previous,
            amount: grant.amount,
            settles: grant.settles.clone(),
        })
    }
}

/// Rotates the seed of `wheel`: reveals the current one and commits `next`. With no seed
/// yet, `first()` is committed and revealed at once (nothing used it); it is drawn only
/// then. Returns the events and the seed revealed.
pub fn decide_rotation(
    state: &SessionState,
    wheel: &str,
    first: impl FnOnce() -> ServerSeed,
    next: ServerSeed,
) -> (Vec<SessionEvent>, ServerSeed) {
    let mut events = Vec::new();
    let revealed = match state.wheels.get(wheel) {
        Some(current) => current.server_seed,
        None => {
            let first = first();
            events.push(SessionEvent::SeedCommitted {
                wheel: wheel.to_owned(),
                server_seed: first,
            });
            first
        }
    };
    events.push(SessionEvent::SeedCommitted {
        wheel: wheel.to_owned(),
        server_seed: next,
    });
    (events, revealed)
}

/// Spins left today on `wheel`.
pub fn spins_left(state: &SessionState, wheel: &WheelConfig, now_ms: u64) -> u32 {
    let used = state
        .wheels
        .get(&wheel.id)
        .map_or(0, |fairness| fairness.spins_on(utc_day(now_ms)));
    wheel.spins_per_day.saturating_sub(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_wheel;
    use crate::session::state::{SessionEntity, SessionEvent};
    use crate::store::Entity;

    const DAY_MS: u64 = crate::clock::MS_PER_DAY;

    fn seeded() -> SessionState {
        let mut state = SessionState::default();
        SessionEntity::apply(
            &mut state,
            &SessionEvent::SeedCommitted {
                wheel: "classic".into(),
                server_seed: [3; 32],
            },
        );
        state
    }

    fn check_draw(state: &mut SessionState, now_ms: u64) -> Result<PendingSpin, ErrorCode> {
        let (spin, day) =
            draw_spin(state, &test_wheel(), 1, "seed", now_ms).map_err(|error| error.code)?;
        SessionEntity::apply(
            state,
            &SessionEvent::SpinDrawn {
                spin: spin.clone(),
                day,
            },
        );
        Ok(spin)
    }

    #[test]
    fn the_daily_limit_holds_within_a_utc_day_and_resets_after() {
        let mut state = seeded();
        let wheel = test_wheel();
        for nonce in 0..u64::from(wheel.spins_per_day) {
            assert_eq!(
                check_draw(&mut state, 10 * DAY_MS + 5).map(|s| s.nonce),
                Ok(nonce)
            );
        }
        assert_eq!(
            check_draw(&mut state, 11 * DAY_MS - 1),
            Err(ErrorCode::DailySpinLimit)
        );
        assert_eq!(spins_left(&state, &wheel, 11 * DAY_MS - 1), 0);
        // The next UTC day: the count resets, the nonce keeps rising.
        assert_eq!(check_draw(&mut state, 11 * DAY_MS).map(|s| s.nonce), Ok(3));
        assert_eq!(spins_left(&state, &wheel, 11 * DAY_MS), 2);
    }

    #[test]
    fn bad_client_seeds_and_unseeded_wheels_are_refused() {
        let state = seeded();
        assert_eq!(
            draw_spin(&state, &test_wheel(), 1, "has space", 0).map_err(|e| e.code),
            Err(ErrorCode::InvalidClientSeed)
        );
        assert_eq!(
            draw_spin(&SessionState::default(), &test_wheel(), 1, "ok", 0).map_err(|e| e.code),
            Err(ErrorCode::NotInRoom)
        );
    }

    #[test]
    fn a_wallet_credits_its_own_new_grants_only() {
        let mut state = seeded();
        let grant = Grant {
            id: playtree_protocol::GrantId {
                source: "room:1".into(),
                seq: 3,
            },
            previous: 0,
            beneficiary: "alice".into(),
            amount: 25,
            reason: "test".into(),
            settles: None,
        };
        assert_eq!(
            decide_credit(&state, "bob", &grant),
            CreditDecision::Misaddressed
        );
        let CreditDecision::Credit(event) = decide_credit(&state, "alice", &grant) else {
            panic!("a new grant is credited")
        };
        SessionEntity::apply(&mut state, &event);
        assert_eq!(state.balance, 25);
        assert_eq!(
            decide_credit(&state, "alice", &grant),
            CreditDecision::Duplicate
        );
    }

    #[test]
    fn a_rotation_reveals_the_committed_seed_and_commits_the_next() {
        let mut state = SessionState::default();
        // No seed yet: the first one is committed and revealed at once.
        let (events, revealed) = decide_rotation(&state, "classic", || [1; 32], [2; 32]);
        assert_eq!((events.len(), revealed), (2, [1; 32]));
        events
            .iter()
            .for_each(|event| SessionEntity::apply(&mut state, event));
        let (events, revealed) = decide_rotation(&state, "classic", || [3; 32], [4; 32]);
        assert_eq!((events.len(), revealed), (1, [2; 32]), "the seed in use");
        events
            .iter()
            .for_each(|event| SessionEntity::apply(&mut state, event));
        assert_eq!(state.wheels["classic"].server_seed, [4; 32]);
    }

    #[test]
    fn a_grant_credited_twice_counts_once() {
        let mut state = seeded();
        let grant = playtree_protocol::GrantId {
            source: "room:1".into(),
            seq: 4,
        };
        let credit = SessionEvent::Credited {
            grant: grant.clone(),
            previous: 0,
            amount: 25,
            settles: None,
        };
        SessionEntity::apply(&mut state, &credit);
        SessionEntity::apply(&mut state, &credit);
        assert_eq!(state.balance, 25);
        assert!(state.has_credited(&grant));
    }
}
