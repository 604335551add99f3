//! Provably fair wheel spins (commit–reveal), shared by the server that draws and the
//! clients that verify.
//!
//! 1. The server picks a secret 32-byte `server_seed` and publishes
//!    `commitment = SHA-256(server_seed)` before any spin under it.
//! 2. For a spin the client supplies `client_seed`; `nonce` counts the player's spins on
//!    that wheel (0, 1, 2, ...).
//! 3. `digest = HMAC-SHA256(key = server_seed, message = "{client_seed}:{nonce}")`, the
//!    nonce in decimal ASCII.
//! 4. `digest` seeds ChaCha20 (`rand_chacha::ChaCha20Rng::from_seed`); the segment is
//!    drawn by [`pick_weighted`], an unbiased rejection sampler on `next_u64`.
//! 5. On rotation the server reveals `server_seed`; anyone can recompute every spin.

use crate::limits::CLIENT_SEED_BYTES_MAX;
use hmac::{Hmac, Mac};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

pub type ServerSeed = [u8; 32];
pub type Commitment = [u8; 32];

/// SHA-256 of the server seed: what the server publishes before the spins.
pub fn commitment(server_seed: &ServerSeed) -> Commitment {
    Sha256::digest(server_seed).into()
}

/// HMAC-SHA256 of `"{client_seed}:{nonce}"` keyed by the server seed.
pub fn spin_digest(server_seed: &ServerSeed, client_seed: &str, nonce: u64) -> [u8; 32] {
    // Invariant: HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    #[allow(clippy::expect_used)]
    let mut mac =
        Hmac::<Sha256>::new_from_slice(server_seed).expect("HMAC takes keys of any length");
    mac.update(client_seed.as_bytes());
    mac.update(b":");
    mac.update(nonce.to_string().as_bytes());
    mac.finalize().into_bytes().into()
}

/// Picks an index with probability `weights[i] / sum(weights)`, drawing from `rng`.
///
/// Without modulo bias: with `total = sum(weights)` and
/// `zone = u64::MAX - (u64::MAX % total + 1) % total` — the largest value below which
/// every residue mod `total` is equally common — draws `x = next_u64()` until
/// `x <= zone`, then `ticket = x % total` and returns the first `i` whose running sum of
/// weights exceeds `ticket`. Returns `None` when the weights sum to zero.
pub fn pick_weighted(rng: &mut impl Rng, weights: &[u32]) -> Option<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    let zone = u64::MAX - (u64::MAX % total + 1) % total;
    let ticket = loop {
        let x = rng.next_u64();
        if x <= zone {
            break x % total;
        }
    };
    let mut running = 0u64;
    for (index, &weight) in weights.iter().enumerate() {
        running += u64::from(weight);
        if ticket < running {
            return Some(index);
        }
    }
    None
}

/// The segment a spin lands on. `None` only when the weights sum to zero.
pub fn spin_segment(
    server_seed: &ServerSeed,
    client_seed: &str,
    nonce: u64,
    weights: &[u32],
) -> Option<usize> {
    let mut rng = ChaCha20Rng::from_seed(spin_digest(server_seed, client_seed, nonce));
    pick_weighted(&mut rng, weights)
}

/// Why a client seed is refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ClientSeedError {
    #[error("the client seed is empty")]
    Empty,
    #[error("the client seed has {len} bytes; at most {CLIENT_SEED_BYTES_MAX} are allowed")]
    TooLong { len: usize },
    #[error(
        "the client seed may hold only printable ASCII without spaces (found byte {byte:#04x})"
    )]
    BadByte { byte: u8 },
}

pub fn validate_client_seed(client_seed: &str) -> Result<(), ClientSeedError> {
    if client_seed.is_empty() {
        return Err(ClientSeedError::Empty);
    }
    if client_seed.len() > CLIENT_SEED_BYTES_MAX {
        return Err(ClientSeedError::TooLong {
            len: client_seed.len(),
        });
    }
    if let Some(byte) = client_seed.bytes().find(|b| !b.is_ascii_graphic()) {
        return Err(ClientSeedError::BadByte { byte });
    }
    Ok(())
}

/// Why a spin fails verification.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the revealed seed does not hash to the commitment shown before the spin")]
    CommitmentMismatch,
    #[error("the spin claims segment {claimed} but the seeds give segment {actual:?}")]
    SegmentMismatch { claimed: u32, actual: Option<usize> },
}

/// Checks a past spin against the revealed server seed.
pub fn verify_spin(
    revealed_seed: &ServerSeed,
    commitment_shown: &Commitment,
    client_seed: &str,
    nonce: u64,
    weights: &[u32],
    claimed_segment: u32,
) -> Result<(), VerifyError> {
    if commitment(revealed_seed) != *commitment_shown {
        return Err(VerifyError::CommitmentMismatch);
    }
    let actual = spin_segment(revealed_seed, client_seed, nonce, weights);
    if actual.and_then(|index| u32::try_from(index).ok()) != Some(claimed_segment) {
        return Err(VerifyError::SegmentMismatch {
            claimed: claimed_segment,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: ServerSeed = [7u8; 32];

    #[test]
    fn digest_matches_the_documented_vector() {
        // The vector in PROTOCOL.md; recomputed independently with Python's hmac module.
        assert_eq!(
            hex::encode(spin_digest(&SEED, "lucky", 0)),
            include_str!("../testdata/spin_digest_lucky_0.hex").trim()
        );
        assert_eq!(
            hex::encode(commitment(&SEED)),
            include_str!("../testdata/commitment_7s.hex").trim()
        );
    }

    #[test]
    fn spins_are_deterministic_and_depend_on_every_input() {
        let weights = [1u32; 1000];
        let base = spin_segment(&SEED, "lucky", 3, &weights);
        assert_eq!(base, spin_segment(&SEED, "lucky", 3, &weights));
        assert_ne!(base, spin_segment(&SEED, "lucky", 4, &weights));
        assert_ne!(base, spin_segment(&SEED, "lucky!", 3, &weights));
        assert_ne!(base, spin_segment(&[8u8; 32], "lucky", 3, &weights));
    }

    #[test]
    fn zero_weight_segments_never_win_and_zero_total_gives_none() {
        for nonce in 0..2000 {
            assert_eq!(spin_segment(&SEED, "s", nonce, &[0, 5, 0]), Some(1));
        }
        assert_eq!(spin_segment(&SEED, "s", 0, &[0, 0]), None);
        assert_eq!(spin_segment(&SEED, "s", 0, &[]), None);
    }

    #[test]
    fn distribution_follows_the_weights() {
        // 200,000 seeded spins; each segment's share is within 0.5 percentage points
        // of its weight's share (about 5 standard deviations for these sizes).
        let weights = [50u32, 30, 15, 4, 1];
        let total: u32 = weights.iter().sum();
        let mut counts = [0u32; 5];
        let n_spins = 200_000u64;
        for nonce in 0..n_spins {
            let index = spin_segment(&SEED, "distribution", nonce, &weights).expect("non-zero");
            counts[index] += 1;
        }
        for (index, &weight) in weights.iter().enumerate() {
            let expected = f64::from(weight) / f64::from(total);
            let observed = f64::from(counts[index]) / n_spins as f64;
            assert!(
                (observed - expected).abs() < 0.005,
                "segment {index}: observed {observed:.4}, expected {expected:.4}"
            );
        }
    }

    #[test]
    fn a_huge_total_weight_still_picks_without_bias_loops() {
        let weights = [u32::MAX, u32::MAX, 1];
        for nonce in 0..100 {
            assert!(spin_segment(&SEED, "big", nonce, &weights).is_some());
        }
    }

    #[test]
    fn verification_accepts_the_truth_and_rejects_any_tampering() {
        let weights = [10u32, 20, 30, 40];
        let shown = commitment(&SEED);
        let segment = spin_segment(&SEED, "mine", 9, &weights).expect("non-zero") as u32;
        assert_eq!(
            verify_spin(&SEED, &shown, "mine", 9, &weights, segment),
            Ok(())
        );
        let mut other_seed = SEED;
        other_seed[0] ^= 1;
        assert_eq!(
            verify_spin(&other_seed, &shown, "mine", 9, &weights, segment),
            Err(VerifyError::CommitmentMismatch)
        );
        let wrong_segment = (segment + 1) % 4;
        assert!(verify_spin(&SEED, &shown, "mine", 9, &weights, wrong_segment).is_err());
        // A different client seed or nonce changes the outcome for most spins: over 50
        // tampered nonces at least one must be caught (each is caught with p ≥ 0.6).
        let caught = (10..60)
            .filter(|&nonce| verify_spin(&SEED, &shown, "mine", nonce, &weights, segment).is_err())
            .count();
        assert!(caught > 0);
        let caught = (0..50)
            .filter(|n| verify_spin(&SEED, &shown, &format!("x{n}"), 9, &weights, segment).is_err())
            .count();
        assert!(caught > 0);
    }

    #[test]
    fn client_seeds_are_validated() {
        assert_eq!(validate_client_seed(""), Err(ClientSeedError::Empty));
        assert_eq!(validate_client_seed("abc-123"), Ok(()));
        assert_eq!(
            validate_client_seed("a b"),
            Err(ClientSeedError::BadByte { byte: b' ' })
        );
        assert!(matches!(
            validate_client_seed(&"a".repeat(65)),
            Err(ClientSeedError::TooLong { len: 65 })
        ));
        assert!(validate_client_seed("é").is_err());
    }
}
