//! Pure decisions of a player session: they take the state, the config and `now`, and
//! return what to record or a typed error for the client.

use super::state::SessionState;
use crate::clock::utc_day;
use crate::config::WheelConfig;
use crate::mail::SpinDraw;
use crate::seeds::SeedMaker;
use playtree_protocol::fairness::{commitment, spin_segment, validate_client_seed};
use playtree_protocol::{ErrorCode, ErrorReply, RoomId};

/// Draws `player`'s next spin of `wheel` in `room`: checks the client seed and the daily
/// limit, then fixes the outcome from the player's committed seed and next nonce.
/// Returns the spin and the UTC day it counts against.
pub fn draw_spin(
    state: &SessionState,
    seeds: &SeedMaker,
    player: &str,
    wheel: &WheelConfig,
    room: RoomId,
    client_seed: &str,
    now_ms: u64,
) -> Result<(SpinDraw, u32), ErrorReply> {
    validate_client_seed(client_seed)
        .map_err(|error| ErrorReply::new(ErrorCode::InvalidClientSeed, error.to_string()))?;
    let fairness = state.wheel(&wheel.id);
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
    let server_seed = seeds.server_seed(player, &wheel.id, fairness.generation);
    let segment = spin_segment(&server_seed, client_seed, nonce, &wheel.weights())
        .and_then(|index| u32::try_from(index).ok())
        .ok_or_else(|| {
            // Config validation rejects wheels whose weights sum to zero.
            ErrorReply::new(
                ErrorCode::Internal,
                format!("wheel `{}` has no weight", wheel.id),
            )
        })?;
    Ok((
        SpinDraw {
            room,
            wheel: wheel.id.clone(),
            nonce,
            client_seed: client_seed.to_owned(),
            commitment: commitment(&server_seed),
            segment,
            request_key: None,
        },
        day,
    ))
}

/// Spins left today on `wheel`.
pub fn spins_left(state: &SessionState, wheel: &WheelConfig, now_ms: u64) -> u32 {
    let used = state.wheel(&wheel.id).spins_on(utc_day(now_ms));
    wheel.spins_per_day.saturating_sub(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_wheel;
    use crate::session::state::{SessionEntity, SessionEvent};
    use crate::store::Entity;

    const DAY_MS: u64 = crate::clock::MS_PER_DAY;

    fn check_draw(state: &mut SessionState, now_ms: u64) -> Result<SpinDraw, ErrorCode> {
        let seeds = SeedMaker::new([3; 32]);
        let (spin, day) = draw_spin(state, &seeds, "alice", &test_wheel(), 1, "seed", now_ms)
            .map_err(|error| error.code)?;
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
        let mut state = SessionState::default();
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
    fn bad_client_seeds_are_refused() {
        let state = SessionState::default();
        let seeds = SeedMaker::new([3; 32]);
        assert_eq!(
            draw_spin(&state, &seeds, "alice", &test_wheel(), 1, "has space", 0)
                .map_err(|e| e.code),
            Err(ErrorCode::InvalidClientSeed)
        );
    }

    #[test]
    fn a_spin_is_drawn_from_the_seed_its_commitment_names() {
        let mut state = SessionState::default();
        let seeds = SeedMaker::new([3; 32]);
        let spin = check_draw(&mut state, 0).expect("drawn");
        let seed = seeds.server_seed("alice", "classic", 0);
        assert_eq!(spin.commitment, commitment(&seed));
        SessionEntity::apply(
            &mut state,
            &SessionEvent::SeedRotated {
                wheel: "classic".into(),
            },
        );
        let next = check_draw(&mut state, 0).expect("drawn");
        assert_eq!(
            next.commitment,
            commitment(&seeds.server_seed("alice", "classic", 1))
        );
        assert_eq!(next.nonce, 1, "the nonce goes on across rotations");
    }
}
