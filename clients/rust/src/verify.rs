//! Verification of provably fair spins, once the server has revealed the seed.

use playtree_protocol::fairness::{self, VerifyError};
use playtree_protocol::{SpinOutcome, WheelInfo};

/// Everything needed to verify one spin later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpinRecord {
    pub wheel: WheelInfo,
    pub outcome: SpinOutcome,
}

/// Checks that `outcome` is what `revealed_seed` gives for its client seed and nonce on
/// `wheel`, and that the seed is the one committed before the spin.
pub fn verify_spin(
    wheel: &WheelInfo,
    outcome: &SpinOutcome,
    revealed_seed: &[u8; 32],
) -> Result<(), VerifyError> {
    let weights: Vec<u32> = wheel
        .segments
        .iter()
        .map(|segment| segment.weight)
        .collect();
    fairness::verify_spin(
        revealed_seed,
        &outcome.commitment,
        &outcome.client_seed,
        outcome.nonce,
        &weights,
        outcome.segment,
    )
}
