//! Verification of provably fair spins, once the server has revealed the seed. The
//! client keeps its own account of what the server promised — the commitment shown
//! before each spin and the nonce range of each seed — and of the client seed it sent,
//! so that a server that changes any of them is caught, not trusted.

use playtree_protocol::fairness::{self, Commitment, VerifyError};
use playtree_protocol::{SpinOutcome, WheelInfo};

/// Everything needed to verify one spin later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpinRecord {
    pub wheel: WheelInfo,
    pub outcome: SpinOutcome,
    /// The client seed this client sent.
    pub client_seed_sent: String,
    /// The commitment the server had shown for this wheel before the spin (from the
    /// join or the last rotation); `None` if this client never saw one.
    pub commitment_shown: Option<Commitment>,
    /// The first nonce of that commitment's seed (spins under it use it and up).
    pub first_nonce: Option<u64>,
}

/// How a spin fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpinMismatch {
    #[error("the spin claims commitment {claimed:02x?}, but {shown:02x?} was shown before it")]
    Commitment {
        shown: Commitment,
        claimed: Commitment,
    },
    #[error("the server echoed client seed {echoed:?}, but {sent:?} was sent")]
    ClientSeed { sent: String, echoed: String },
    #[error(
        "nonce {nonce} is not a fresh nonce of this seed (its nonces start at {first}, and each is used once)"
    )]
    Nonce { nonce: u64, first: u64 },
    /// A nonce of the revealed seed that no spin of this client used: a server that
    /// draws several outcomes and keeps the one it likes skips nonces. (Another
    /// connection of the same player spinning the same wheel leaves gaps too.)
    #[error("nonce {nonce} of this seed was used by no spin of this client")]
    NonceGap { nonce: u64 },
    #[error(transparent)]
    Reveal(#[from] VerifyError),
}

/// Checks that `outcome` is what `revealed_seed` gives for its client seed and nonce on
/// `wheel`, and that the seed is the one committed before the spin (as the server
/// claims it: prefer [`verify_record`], which uses what the client itself saw).
pub fn verify_spin(
    wheel: &WheelInfo,
    outcome: &SpinOutcome,
    revealed_seed: &[u8; 32],
) -> Result<(), VerifyError> {
    fairness::verify_spin(
        revealed_seed,
        &outcome.commitment,
        &outcome.client_seed,
        outcome.nonce,
        &weights(wheel),
        outcome.segment,
    )
}

fn weights(wheel: &WheelInfo) -> Vec<u32> {
    wheel
        .segments
        .iter()
        .map(|segment| segment.weight)
        .collect()
}

/// Verifies one recorded spin against `revealed_seed` using what this client saw and
/// sent, not what the server echoed: the commitment shown before the spin, the client
/// seed sent. (Nonce freshness across spins is [`check_nonces`]'s.)
pub fn verify_record(record: &SpinRecord, revealed_seed: &[u8; 32]) -> Result<(), SpinMismatch> {
    let outcome = &record.outcome;
    if outcome.client_seed != record.client_seed_sent {
        return Err(SpinMismatch::ClientSeed {
            sent: record.client_seed_sent.clone(),
            echoed: outcome.client_seed.clone(),
        });
    }
    let shown = record.commitment_shown.unwrap_or(outcome.commitment);
    if outcome.commitment != shown {
        return Err(SpinMismatch::Commitment {
            shown,
            claimed: outcome.commitment,
        });
    }
    fairness::verify_spin(
        revealed_seed,
        &shown,
        &record.client_seed_sent,
        outcome.nonce,
        &weights(&record.wheel),
        outcome.segment,
    )?;
    Ok(())
}

/// The nonce of each record must be at least its seed's first nonce and used once.
/// Returns the first nonce mismatch of each record, in order (`None`: fine).
pub fn check_nonces(records: &[SpinRecord]) -> Vec<Option<SpinMismatch>> {
    let mut seen = std::collections::BTreeSet::new();
    records
        .iter()
        .map(|record| {
            let nonce = record.outcome.nonce;
            let first = record.first_nonce.unwrap_or(0);
            let fresh = nonce >= first && seen.insert((record.outcome.commitment, nonce));
            (!fresh).then_some(SpinMismatch::Nonce { nonce, first })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use playtree_protocol::SegmentInfo;
    use playtree_protocol::fairness::{commitment, spin_segment};

    const SEED: [u8; 32] = [7; 32];

    fn wheel() -> WheelInfo {
        WheelInfo {
            id: "classic".into(),
            segments: [3u32, 1, 2]
                .iter()
                .enumerate()
                .map(|(index, &weight)| SegmentInfo {
                    label: format!("s{index}"),
                    prize: index as u64,
                    weight,
                })
                .collect(),
            spins_per_day: 10,
        }
    }

    /// What an honest server answers for spin `nonce` with `client_seed`.
    fn honest(nonce: u64, client_seed: &str) -> SpinRecord {
        let segment = spin_segment(&SEED, client_seed, nonce, &[3, 1, 2]).expect("weights") as u32;
        SpinRecord {
            wheel: wheel(),
            outcome: SpinOutcome {
                room: 1,
                wheel: "classic".into(),
                nonce,
                client_seed: client_seed.into(),
                commitment: commitment(&SEED),
                segment,
                label: format!("s{segment}"),
                prize: u64::from(segment),
                inventory_exhausted: false,
                balance: 0,
                spins_left_today: 9,
            },
            client_seed_sent: client_seed.into(),
            commitment_shown: Some(commitment(&SEED)),
            first_nonce: Some(0),
        }
    }

    #[test]
    fn an_honest_spin_verifies() {
        for nonce in 0..8 {
            assert_eq!(verify_record(&honest(nonce, "lucky"), &SEED), Ok(()));
        }
    }

    #[test]
    fn a_server_that_rewrites_the_client_seed_is_caught() {
        // The server drew with a seed of its choosing and echoed it: the draw matches
        // the echo, not what the client sent.
        let mut record = honest(0, "chosen-by-server");
        record.client_seed_sent = "lucky".into();
        assert!(matches!(
            verify_record(&record, &SEED),
            Err(SpinMismatch::ClientSeed { .. })
        ));
    }

    #[test]
    fn a_server_that_swaps_the_seed_after_showing_its_commitment_is_caught() {
        // The spin and the reveal both use another seed, consistently with each other,
        // but not with what was shown before the spin.
        let other = [9u8; 32];
        let mut record = honest(0, "lucky");
        record.outcome.commitment = commitment(&other);
        record.outcome.segment =
            spin_segment(&other, "lucky", 0, &[3, 1, 2]).expect("weights") as u32;
        assert!(matches!(
            verify_record(&record, &other),
            Err(SpinMismatch::Commitment { .. })
        ));
        // And a reveal that does not hash to what was shown fails on its own.
        let mut shown_other = honest(0, "lucky");
        shown_other.commitment_shown = Some(commitment(&SEED));
        assert!(matches!(
            verify_record(&shown_other, &other),
            Err(SpinMismatch::Reveal(VerifyError::CommitmentMismatch))
        ));
    }

    #[test]
    fn a_wrong_segment_is_caught() {
        let mut record = honest(0, "lucky");
        record.outcome.segment = (record.outcome.segment + 1) % 3;
        assert!(matches!(
            verify_record(&record, &SEED),
            Err(SpinMismatch::Reveal(VerifyError::SegmentMismatch { .. }))
        ));
    }

    #[test]
    fn a_nonce_used_twice_or_before_the_seeds_first_is_caught() {
        // Replaying nonce 1 lets a server pick between known outcomes.
        let records = vec![honest(1, "a"), honest(2, "b"), honest(1, "c")];
        let verdicts = check_nonces(&records);
        assert_eq!(verdicts[0], None);
        assert_eq!(verdicts[1], None);
        assert_eq!(
            verdicts[2],
            Some(SpinMismatch::Nonce { nonce: 1, first: 0 })
        );
        let mut early = honest(3, "d");
        early.first_nonce = Some(5);
        assert!(check_nonces(&[early])[0].is_some());
    }
}
