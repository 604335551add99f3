//! A reward on its way from a source (a room, later a referral tree) to a wallet.

use playtree_protocol::GrantId;
use serde::{Deserialize, Serialize};

/// Identifies a spin: the wheel and the player's nonce on it.
pub type SpinKey = (String, u64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: GrantId,
    pub beneficiary: String,
    pub amount: u64,
    pub reason: String,
    /// The spin this grant settles, when it is a spin's prize.
    pub settles: Option<SpinKey>,
}
