//! Players' server seeds, derived: `HMAC-SHA256(key, player, wheel, generation)` with a
//! key drawn once and kept in the store. A seed is fixed the moment its commitment can
//! be shown, with nothing to write: joining a wheel costs no commit, and a player's
//! state per wheel is a generation number (bumped by each rotation) instead of a seed.
//! Without the key, a seed (and so a spin) cannot be predicted from the commitment or
//! from the seeds revealed before it (HMAC is a pseudorandom function).

use crate::clock::Entropy;
use crate::store::{Store, StoreError};
use hmac::{Hmac, Mac};
use playtree_protocol::fairness::ServerSeed;
use sha2::Sha256;

const KEY_KEY: &[u8] = b"mserver-seed-key";

#[derive(Clone)]
pub struct SeedMaker {
    key: [u8; 32],
}

impl std::fmt::Debug for SeedMaker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SeedMaker(..)")
    }
}

impl SeedMaker {
    pub fn new(key: [u8; 32]) -> Self {
        SeedMaker { key }
    }

    /// The key kept in the store, drawn (and made durable) on first start.
    pub async fn load_or_create(store: &Store, entropy: &dyn Entropy) -> Result<Self, StoreError> {
        let key = store
            .secret_key(KEY_KEY, "server seed key", entropy)
            .await?;
        Ok(SeedMaker { key })
    }

    /// `player`'s server seed on `wheel` after `generation` rotations.
    pub fn server_seed(&self, player: &str, wheel: &str, generation: u32) -> ServerSeed {
        // Invariant: HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC-SHA256 accepts any key length");
        // Length-prefixed, so that no two (player, wheel) pairs read alike.
        mac.update(&(player.len() as u64).to_be_bytes());
        mac.update(player.as_bytes());
        mac.update(&(wheel.len() as u64).to_be_bytes());
        mac.update(wheel.as_bytes());
        mac.update(&generation.to_be_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_player_wheel_and_generation_has_its_own_seed_and_the_key_matters() {
        let seeds = SeedMaker::new([5; 32]);
        let base = seeds.server_seed("alice", "classic", 0);
        assert_eq!(
            base,
            seeds.server_seed("alice", "classic", 0),
            "derived, not drawn"
        );
        assert_ne!(base, seeds.server_seed("alice", "classic", 1));
        assert_ne!(base, seeds.server_seed("bob", "classic", 0));
        assert_ne!(base, seeds.server_seed("alice", "gold", 0));
        assert_ne!(
            seeds.server_seed("ab", "c", 0),
            seeds.server_seed("a", "bc", 0),
            "the fields do not run into each other"
        );
        assert_ne!(
            base,
            SeedMaker::new([6; 32]).server_seed("alice", "classic", 0)
        );
    }
}
