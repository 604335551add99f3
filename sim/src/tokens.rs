//! Tokens for the simulated players and the partner, signed with the server's HS256
//! secret (the sim writes it into the config of a server it owns, or is given it).

use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Minter {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    role: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Tokens live this long: longer than any run, within the server's default maximum
/// (`auth.max_lifetime_s`, a day).
const LIFETIME_S: u64 = 12 * 3_600;

impl Minter {
    pub fn new(secret: &str, issuer: Option<String>, audience: Option<String>) -> Minter {
        Minter {
            key: EncodingKey::from_secret(secret.as_bytes()),
            issuer,
            audience,
        }
    }

    /// A token for `sub` with `role` (`player`, `partner` or `admin`).
    pub fn token(&self, sub: &str, role: &str) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let claims = Claims {
            sub,
            iat: now,
            exp: now + LIFETIME_S,
            role,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        Ok(jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &self.key,
        )?)
    }
}
