//! Each auth failure gets its own error code and close code.

mod common;

use common::{SECRET, TestServer, now_s, sign};
use playtree::auth::Claims;
use playtree_client::ClientError;
use playtree_protocol::{CloseCode, ErrorCode, Role};

fn claims(player: &str) -> Claims {
    let now = now_s();
    Claims {
        sub: player.into(),
        iat: now,
        exp: now + 600,
        iss: Some("backend".into()),
        aud: Some("playtree".into()),
        role: Role::Player,
    }
}

async fn refusal(server: &TestServer, token: &str) -> (ErrorCode, Option<u16>) {
    match server.connect_with_token(token).await {
        Err(ClientError::Refused { error, close_code }) => (error.code, close_code),
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("expected a refusal, got a welcome"),
    }
}

const AUTH: &str = "issuer = \"backend\"\naudience = \"playtree\"\nmax_lifetime_s = 3600\n";

#[tokio::test]
async fn each_bad_token_gets_its_own_error_and_close_code() {
    let server = TestServer::start(&format!("{AUTH}\n")).await;
    let (_, metrics_before) = server.get("/metrics").await;
    // Sanity: a correct token is welcomed.
    server
        .connect_with_token(&sign(&claims("ok"), SECRET))
        .await
        .expect("valid token welcomed");

    let cases: Vec<(&str, String, ErrorCode, CloseCode)> = vec![
        (
            "bad signature",
            sign(&claims("a"), "another-secret"),
            ErrorCode::TokenBadSignature,
            CloseCode::TokenBadSignature,
        ),
        (
            "expired",
            sign(
                &Claims {
                    iat: now_s() - 1000,
                    exp: now_s() - 500,
                    ..claims("a")
                },
                SECRET,
            ),
            ErrorCode::TokenExpired,
            CloseCode::TokenExpired,
        ),
        (
            "wrong audience",
            sign(
                &Claims {
                    aud: Some("someone-else".into()),
                    ..claims("a")
                },
                SECRET,
            ),
            ErrorCode::TokenWrongAudience,
            CloseCode::TokenWrongAudience,
        ),
        (
            "wrong issuer",
            sign(
                &Claims {
                    iss: Some("mallory".into()),
                    ..claims("a")
                },
                SECRET,
            ),
            ErrorCode::TokenWrongIssuer,
            CloseCode::TokenWrongIssuer,
        ),
        (
            "lifetime too long",
            sign(
                &Claims {
                    exp: now_s() + 7200,
                    ..claims("a")
                },
                SECRET,
            ),
            ErrorCode::TokenLifetimeTooLong,
            CloseCode::TokenLifetimeTooLong,
        ),
        (
            "malformed",
            "definitely.not.ajwt".into(),
            ErrorCode::TokenMalformed,
            CloseCode::TokenMalformed,
        ),
    ];
    for (name, token, code, close) in cases {
        assert_eq!(
            refusal(&server, &token).await,
            (code, Some(close.as_u16())),
            "case: {name}"
        );
    }
    // A missing `sub` claim.
    let no_sub = serde_json_token_without_sub();
    assert_eq!(
        refusal(&server, &no_sub).await,
        (
            ErrorCode::TokenMissingClaim,
            Some(CloseCode::TokenMissingClaim.as_u16())
        )
    );
    // The server is still serving.
    server
        .connect_with_token(&sign(&claims("still"), SECRET))
        .await
        .expect("still serving");
    let (_, metrics) = server.get("/metrics").await;
    for reason in [
        "bad_signature",
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "missing_claim",
    ] {
        let series = format!("playtree_auth_failures_total{{reason=\"{reason}\"}}");
        let counted = common::metric_value(&metrics, &series)
            - common::metric_value(&metrics_before, &series);
        assert!(counted >= 1.0, "{series} counted {counted}");
    }
}

fn serde_json_token_without_sub() -> String {
    #[derive(serde::Serialize)]
    struct NoSub {
        exp: u64,
        iat: u64,
        iss: &'static str,
        aud: &'static str,
    }
    let now = now_s();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &NoSub {
            exp: now + 60,
            iat: now,
            iss: "backend",
            aud: "playtree",
        },
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn eddsa_tokens_verify_with_the_public_key() {
    // Ed25519 keys generated for this test only (PKCS#8 private, SPKI public).
    const PRIVATE: &str = include_str!("data/ed25519_private.pem");
    const PUBLIC: &str = include_str!("data/ed25519_public.pem");
    let config = playtree::ServerConfig::from_toml_overrides("").expect("config");
    let auth = playtree::auth::Authenticator::from_ed_public_pem(&config.auth, PUBLIC.as_bytes())
        .expect("key");
    let key = jsonwebtoken::EncodingKey::from_ed_pem(PRIVATE.as_bytes()).expect("private key");
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &Claims {
            iss: None,
            aud: None,
            ..claims("eve")
        },
        &key,
    )
    .expect("sign");
    assert_eq!(
        auth.verify(&token, now_s()).expect("verifies").player_id,
        "eve"
    );
    let forged = sign(
        &Claims {
            iss: None,
            aud: None,
            ..claims("eve")
        },
        SECRET,
    );
    assert_eq!(
        auth.verify(&forged, now_s()).map_err(|e| e.code),
        Err(ErrorCode::TokenBadSignature)
    );
}
