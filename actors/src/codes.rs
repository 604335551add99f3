//! Referral codes: 8 Crockford base-32 characters (40 bits). Each is a keyed
//! permutation (a four-round Feistel network with HMAC-SHA256 rounds) of a number the
//! store hands out once, so codes are unique without any lookup, and unguessable
//! without the key, which is drawn once and kept in the store.

use crate::clock::Entropy;
use crate::store::{Store, StoreError};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const CODE_LEN: usize = 8;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const HALF_BITS: u32 = 20;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
/// Numbers a code can be made of: 2^40.
pub const NUMBERS: u64 = 1 << (2 * HALF_BITS);
const ROUNDS: u8 = 4;
const KEY_KEY: &[u8] = b"mreferral-code-key";

/// The store key that maps `code` to its player.
pub fn index_key(code: &str) -> Vec<u8> {
    let mut key = vec![b'c'];
    key.extend_from_slice(code.as_bytes());
    key
}

/// Makes referral codes with the server's secret key.
#[derive(Clone)]
pub struct CodeMaker {
    key: [u8; 32],
}

impl std::fmt::Debug for CodeMaker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("CodeMaker(..)")
    }
}

impl CodeMaker {
    pub fn new(key: [u8; 32]) -> Self {
        CodeMaker { key }
    }

    /// The key kept in the store, drawn (and made durable) on first start.
    pub async fn load_or_create(store: &Store, entropy: &dyn Entropy) -> Result<Self, StoreError> {
        let key = store
            .secret_key(KEY_KEY, "referral code key", entropy)
            .await?;
        Ok(CodeMaker { key })
    }

    /// The code of `number` (`None` past the 2^40 codes there are).
    pub fn code_for(&self, number: u64) -> Option<String> {
        if number >= NUMBERS {
            return None;
        }
        let (mut left, mut right) = (number >> HALF_BITS, number & HALF_MASK);
        for round in 0..ROUNDS {
            let mixed = left ^ self.round(round, right);
            left = right;
            right = mixed;
        }
        Some(encode((left << HALF_BITS) | right))
    }

    fn round(&self, round: u8, half: u64) -> u64 {
        // Invariant: HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC-SHA256 accepts any key length");
        mac.update(&[round]);
        mac.update(&half.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(word) & HALF_MASK
    }
}

fn encode(value: u64) -> String {
    (0..CODE_LEN)
        .rev()
        .map(|index| char::from(ALPHABET[((value >> (5 * index)) & 31) as usize]))
        .collect()
}

/// A code as a person may type it: case, hyphens and spaces do not matter, and `O`,
/// `I` and `L` read as `0`, `1` and `1` (Crockford). `None` if it cannot be a code.
pub fn normalize(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|byte| ALPHABET.contains(&byte))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_eight_characters_and_read_back() {
        let maker = CodeMaker::new([7; 32]);
        let mut seen = HashSet::new();
        for number in 0..50_000 {
            let code = maker.code_for(number).expect("in range");
            assert_eq!(code.len(), CODE_LEN);
            assert_eq!(normalize(&code).as_deref(), Some(code.as_str()));
            assert!(seen.insert(code), "number {number} repeated a code");
        }
        assert_eq!(maker.code_for(NUMBERS), None);
    }

    #[test]
    fn neighbouring_numbers_give_unrelated_codes_and_the_key_matters() {
        let maker = CodeMaker::new([1; 32]);
        let (a, b) = (
            maker.code_for(1000).expect("code"),
            maker.code_for(1001).expect("code"),
        );
        let shared = a.chars().zip(b.chars()).filter(|(x, y)| x == y).count();
        assert!(shared < 5, "{a} and {b} look alike");
        let other = CodeMaker::new([2; 32]);
        assert_ne!(other.code_for(1000), Some(a));
    }

    #[test]
    fn typed_codes_are_read_as_crockford_says() {
        assert_eq!(normalize("abcd-efgh").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalize("0o1i1l00").as_deref(), Some("00111100"));
        assert_eq!(normalize("ABCDEFG"), None, "too short");
        assert_eq!(normalize("ABCDEFGU"), None, "U is not in the alphabet");
    }
}
