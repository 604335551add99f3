//! Bearer-token authentication: JWTs issued by the operator's backend (HS256 with a shared
//! secret, or EdDSA verified with a public key), and minting for development.

use crate::config::AuthConfig;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use playtree_protocol::limits::TOKEN_BYTES_MAX;
use playtree_protocol::{ErrorCode, ErrorReply, Role};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The claims Playtree reads. `sub` and `exp` are required; `iat` is required too because
/// the server caps token lifetimes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    // Defaults let a missing `sub` or `iat` reach the explicit check below and get the
    // "missing claim" code instead of failing deserialization as "malformed".
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// A string or an array of strings (RFC 7519 §4.1.3); jsonwebtoken checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    #[serde(default)]
    pub role: Role,
}

/// Who a valid token says the peer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub player_id: String,
    pub role: Role,
    pub expires_at_s: u64,
}

/// Why a token was refused: the wire code plus a reason for the log and the client.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{message}")]
pub struct AuthError {
    pub code: ErrorCode,
    pub message: String,
}

impl AuthError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AuthError {
            code,
            message: message.into(),
        }
    }

    /// A short label for the auth-failures metric.
    pub fn reason(&self) -> &'static str {
        match self.code {
            ErrorCode::TokenBadSignature => "bad_signature",
            ErrorCode::TokenExpired => "expired",
            ErrorCode::TokenWrongAudience => "wrong_audience",
            ErrorCode::TokenWrongIssuer => "wrong_issuer",
            ErrorCode::TokenLifetimeTooLong => "lifetime_too_long",
            ErrorCode::TokenMissingClaim => "missing_claim",
            _ => "malformed",
        }
    }

    pub fn to_reply(&self) -> ErrorReply {
        ErrorReply::new(self.code, self.message.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "auth.hs256_secret is still the template's placeholder, which anyone can read: set a random secret (openssl rand -base64 48)"
    )]
    Placeholder,
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a usable Ed25519 public key (PEM): {reason}")]
    BadKey { path: String, reason: String },
    #[error("writing the development secret to {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("no randomness for the development secret: {0}")]
    Entropy(String),
}

/// Verifies tokens (and, with a shared secret, mints them).
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
    max_lifetime_s: u64,
    config: AuthConfig,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.validation.algorithms)
            .field("can_mint", &self.encoding.is_some())
            .finish_non_exhaustive()
    }
}

const DEV_SECRET_FILE: &str = "dev-jwt-secret";

impl Authenticator {
    /// Builds the verifier from config. With neither a secret nor a public key configured,
    /// a development secret is generated in `data_dir` and reused on later starts.
    pub fn from_config(config: &AuthConfig, data_dir: &Path) -> Result<Authenticator, KeyError> {
        if !config.eddsa_public_key_pem.is_empty() {
            let path = &config.eddsa_public_key_pem;
            let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.clone(),
                source,
            })?;
            let decoding = DecodingKey::from_ed_pem(&pem).map_err(|error| KeyError::BadKey {
                path: path.clone(),
                reason: error.to_string(),
            })?;
            return Ok(Self::build(config, Algorithm::EdDSA, decoding, None));
        }
        let secret = if config.hs256_secret.is_empty() {
            dev_secret(data_dir)?
        } else if config.hs256_secret.starts_with("REPLACE") {
            // k8s/secret.example.yaml's placeholder: a key everyone can read.
            return Err(KeyError::Placeholder);
        } else {
            config.hs256_secret.clone().into_bytes()
        };
        Ok(Self::build(
            config,
            Algorithm::HS256,
            DecodingKey::from_secret(&secret),
            Some(EncodingKey::from_secret(&secret)),
        ))
    }

    /// An EdDSA verifier from a PEM public key already in memory.
    pub fn from_ed_public_pem(config: &AuthConfig, pem: &[u8]) -> Result<Authenticator, KeyError> {
        let decoding = DecodingKey::from_ed_pem(pem).map_err(|error| KeyError::BadKey {
            path: "(in memory)".into(),
            reason: error.to_string(),
        })?;
        Ok(Self::build(config, Algorithm::EdDSA, decoding, None))
    }

    fn build(
        config: &AuthConfig,
        algorithm: Algorithm,
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
    ) -> Authenticator {
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_s;
        // A configured issuer or audience is required in every token, not only checked
        // when present: a token without `aud` was minted for someone, just not for us.
        let mut required = vec!["exp", "sub", "iat"];
        if config.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&config.issuer]);
            required.push("iss");
        }
        if config.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&config.audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Authenticator {
            decoding,
            encoding,
            validation,
            max_lifetime_s: config.max_lifetime_s,
            config: config.clone(),
        }
    }

    /// Checks `token` at `now_s` (seconds since the Unix epoch, the server's clock).
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Identity, AuthError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::new(
                ErrorCode::TokenMalformed,
                format!(
                    "the token has {} bytes; at most {TOKEN_BYTES_MAX} are accepted",
                    token.len()
                ),
            ));
        }
        if is_unsigned(token) {
            return Err(AuthError::new(
                ErrorCode::TokenBadSignature,
                "unsigned tokens (`alg: none`) are never accepted",
            ));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| classify(error.kind()))?;
        let claims = data.claims;
        if claims.exp == 0 {
            return Err(AuthError::new(
                ErrorCode::TokenMissingClaim,
                "the token lacks the required claim `exp`",
            ));
        }
        if claims.iat == 0 {
            return Err(AuthError::new(
                ErrorCode::TokenMissingClaim,
                "the token lacks the required claim `iat`",
            ));
        }
        if claims.sub.is_empty() || claims.sub.len() > 128 {
            return Err(AuthError::new(
                ErrorCode::TokenMissingClaim,
                "the token's `sub` (player id) must have 1 to 128 bytes",
            ));
        }
        // Measured from `iat`, or from now if `iat` lies ahead: a future `iat` does not
        // buy a longer life.
        let lifetime_s = claims.exp.saturating_sub(claims.iat.min(now_s));
        if lifetime_s > self.max_lifetime_s {
            return Err(AuthError::new(
                ErrorCode::TokenLifetimeTooLong,
                format!(
                    "the token lives {lifetime_s} s (exp - iat); this server accepts at most {} s",
                    self.max_lifetime_s
                ),
            ));
        }
        Ok(Identity {
            player_id: claims.sub,
            role: claims.role,
            expires_at_s: claims.exp,
        })
    }

    /// Mints a token (development and tests). Needs a shared secret.
    pub fn mint(&self, player: &str, role: Role, now_s: u64, lifetime_s: u64) -> Option<String> {
        let encoding = self.encoding.as_ref()?;
        let claims = Claims {
            sub: player.to_owned(),
            iat: now_s,
            exp: now_s + lifetime_s,
            iss: (!self.config.issuer.is_empty()).then(|| self.config.issuer.clone()),
            aud: (!self.config.audience.is_empty())
                .then(|| serde_json::Value::from(self.config.audience.clone())),
            role,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding).ok()
    }
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::new(
            ErrorCode::TokenBadSignature,
            "the token's signature does not verify with this server's key",
        ),
        ErrorKind::ExpiredSignature => AuthError::new(
            ErrorCode::TokenExpired,
            "the token has expired; get a fresh one from your backend",
        ),
        ErrorKind::InvalidAudience => AuthError::new(
            ErrorCode::TokenWrongAudience,
            "the token's `aud` is not this server's audience",
        ),
        ErrorKind::InvalidIssuer => AuthError::new(
            ErrorCode::TokenWrongIssuer,
            "the token's `iss` is not the issuer this server trusts",
        ),
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::new(
            ErrorCode::TokenWrongAudience,
            "the token has no `aud`; this server requires its own audience",
        ),
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::new(
            ErrorCode::TokenWrongIssuer,
            "the token has no `iss`; this server requires the issuer it trusts",
        ),
        ErrorKind::MissingRequiredClaim(claim) => AuthError::new(
            ErrorCode::TokenMissingClaim,
            format!("the token lacks the required claim `{claim}`"),
        ),
        ErrorKind::InvalidAlgorithm => AuthError::new(
            ErrorCode::TokenBadSignature,
            "the token is signed with an algorithm this server does not accept",
        ),
        other => AuthError::new(
            ErrorCode::TokenMalformed,
            format!("the token is not a well-formed JWT with Playtree claims ({other:?})"),
        ),
    }
}

/// Whether the token's header says `alg: none` (in any case): such a token carries no
/// signature, and is refused as one whose signature does not verify.
fn is_unsigned(token: &str) -> bool {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let Some(encoded) = token.split('.').next() else {
        return false;
    };
    let Ok(json) = base64_url_decode(encoded) else {
        return false;
    };
    serde_json::from_slice::<Header>(&json)
        .is_ok_and(|header| header.alg.trim().eq_ignore_ascii_case("none"))
}

/// Base64url without padding (RFC 7515 §2), as JWT segments are encoded.
fn base64_url_decode(text: &str) -> Result<Vec<u8>, ()> {
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return Err(()),
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Ok(out)
}

/// Reads the development secret from `data_dir`, creating it on first use.
fn dev_secret(data_dir: &Path) -> Result<Vec<u8>, KeyError> {
    let path = data_dir.join(DEV_SECRET_FILE);
    let shown = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(KeyError::Read {
                path: shown,
                source,
            });
        }
    }
    let mut bytes = [0u8; 32];
    crate::clock::fill_random(&mut bytes).map_err(KeyError::Entropy)?;
    let secret = hex::encode(bytes);
    std::fs::create_dir_all(data_dir).map_err(|source| KeyError::Write {
        path: shown.clone(),
        source,
    })?;
    std::fs::write(&path, &secret).map_err(|source| KeyError::Write {
        path: shown.clone(),
        source,
    })?;
    tracing::info!(path = %shown, "generated a development JWT secret");
    Ok(secret.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit-test-secret";
    const NOW: u64 = 1_900_000_000;

    fn authenticator(issuer: &str, audience: &str) -> Authenticator {
        let config = AuthConfig {
            hs256_secret: SECRET.into(),
            eddsa_public_key_pem: String::new(),
            issuer: issuer.into(),
            audience: audience.into(),
            max_lifetime_s: 3600,
            dev_token_lifetime_s: 600,
            leeway_s: 0,
        };
        Authenticator::build(
            &config,
            Algorithm::HS256,
            DecodingKey::from_secret(SECRET.as_bytes()),
            Some(EncodingKey::from_secret(SECRET.as_bytes())),
        )
    }

    #[test]
    fn the_secret_templates_placeholder_is_refused() {
        let config = AuthConfig {
            hs256_secret: "REPLACE-WITH-A-RANDOM-SECRET".into(),
            eddsa_public_key_pem: String::new(),
            issuer: String::new(),
            audience: String::new(),
            max_lifetime_s: 3600,
            dev_token_lifetime_s: 600,
            leeway_s: 0,
        };
        let data_dir = std::path::Path::new("/nonexistent-data-dir");
        assert!(matches!(
            Authenticator::from_config(&config, data_dir),
            Err(KeyError::Placeholder)
        ));
        let real = AuthConfig {
            hs256_secret: SECRET.into(),
            ..config
        };
        assert!(Authenticator::from_config(&real, data_dir).is_ok());
    }

    fn sign(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("signs")
    }

    fn code(result: Result<Identity, AuthError>) -> ErrorCode {
        result.expect_err("refused").code
    }

    /// Tokens must expire in the future of the real clock (jsonwebtoken checks `exp`
    /// against it); `NOW` is later than any real time these tests run at.
    fn real_now() -> u64 {
        #[allow(clippy::disallowed_methods)]
        let now = std::time::SystemTime::now();
        now.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    }

    #[test]
    fn a_token_without_exp_is_refused_as_missing_a_claim() {
        let auth = authenticator("", "");
        let now = real_now();
        let token = sign(&serde_json::json!({ "sub": "alice", "iat": now }));
        assert_eq!(code(auth.verify(&token, now)), ErrorCode::TokenMissingClaim);
    }

    #[test]
    fn an_unsigned_token_is_refused_as_a_bad_signature() {
        let auth = authenticator("", "");
        // {"alg":"none","typ":"JWT"} . {"sub":"mallory","iat":1700000000,"exp":4102444800} .
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJtYWxsb3J5IiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.";
        assert_eq!(code(auth.verify(token, NOW)), ErrorCode::TokenBadSignature);
    }

    #[test]
    fn a_configured_issuer_and_audience_must_be_in_the_token() {
        let auth = authenticator("backend", "playtree");
        let now = real_now();
        let full = serde_json::json!({
            "sub": "alice", "iat": now, "exp": now + 60, "iss": "backend", "aud": "playtree",
        });
        assert_eq!(
            auth.verify(&sign(&full), now).expect("valid").player_id,
            "alice"
        );
        let mut no_aud = full.clone();
        no_aud.as_object_mut().expect("object").remove("aud");
        assert_eq!(
            code(auth.verify(&sign(&no_aud), now)),
            ErrorCode::TokenWrongAudience
        );
        let mut no_iss = full;
        no_iss.as_object_mut().expect("object").remove("iss");
        assert_eq!(
            code(auth.verify(&sign(&no_iss), now)),
            ErrorCode::TokenWrongIssuer
        );
    }

    #[test]
    fn an_iat_in_the_future_does_not_stretch_the_lifetime() {
        let auth = authenticator("", "");
        let now = real_now();
        // Valid for 10 hours from now, claiming to be issued 9.5 hours ahead.
        let token = sign(&serde_json::json!({
            "sub": "alice", "iat": now + 34_200, "exp": now + 36_000,
        }));
        assert_eq!(
            code(auth.verify(&token, now)),
            ErrorCode::TokenLifetimeTooLong
        );
    }

    #[test]
    fn an_audience_may_be_an_array() {
        let auth = authenticator("", "playtree");
        let now = real_now();
        let token = sign(&serde_json::json!({
            "sub": "alice", "iat": now, "exp": now + 60, "aud": ["other", "playtree"],
        }));
        assert_eq!(auth.verify(&token, now).expect("valid").player_id, "alice");
    }

    #[test]
    fn base64url_decodes_jwt_segments() {
        assert_eq!(
            base64_url_decode("eyJhbGciOiJub25lIn0").expect("decodes"),
            br#"{"alg":"none"}"#.to_vec()
        );
        assert!(base64_url_decode("not base64!").is_err());
    }
}
