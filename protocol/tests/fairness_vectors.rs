//! The provably-fair test vectors in PROTOCOL.md §7 are the contract a stranger's client
//! checks itself against: each must be what this crate computes.

use playtree_protocol::fairness::{commitment, spin_digest, spin_segment};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::collections::BTreeMap;

const DOC: &str = include_str!("../PROTOCOL.md");
const SEED: [u8; 32] = [7; 32];
const CLIENT_SEED: &str = "lucky";
const WEIGHTS: [u32; 3] = [3, 1, 2];

/// `name → value` of every "fairness: name = value" line.
fn vectors() -> BTreeMap<String, String> {
    DOC.lines()
        .filter_map(|line| line.strip_prefix("fairness: "))
        .filter_map(|rest| rest.split_once(" = "))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn the_documented_fairness_vectors_are_what_the_code_computes() {
    let doc = vectors();
    let documented = |name: &str| {
        doc.get(name)
            .unwrap_or_else(|| panic!("PROTOCOL.md §7 lacks the vector `{name}`"))
            .clone()
    };
    assert_eq!(documented("commitment"), hex(&commitment(&SEED)));
    assert_eq!(
        documented("digest(nonce 0)"),
        hex(&spin_digest(&SEED, CLIENT_SEED, 0))
    );
    let first = ChaCha20Rng::from_seed(spin_digest(&SEED, CLIENT_SEED, 0)).next_u64();
    assert_eq!(documented("first next_u64(nonce 0)"), first.to_string());
    let total: u64 = WEIGHTS.iter().map(|&w| u64::from(w)).sum();
    assert_eq!(documented("ticket(nonce 0)"), (first % total).to_string());
    let segments: Vec<String> = (0..8)
        .map(|nonce| {
            spin_segment(&SEED, CLIENT_SEED, nonce, &WEIGHTS)
                .expect("weights are positive")
                .to_string()
        })
        .collect();
    assert_eq!(documented("segments(nonces 0..8)"), segments.join(" "));
}
