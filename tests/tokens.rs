//! Token refresh on a live connection; an expired, unrefreshed connection is told and
//! closed, whether it is busy or idle.

mod common;

use common::{TestServer, WAIT, mint, now_s};
use playtree_client::ClientError;
use playtree_protocol::{CloseCode, ErrorCode};

async fn expect_expired(client: &playtree_client::Client) {
    match tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("closed in time")
    {
        ClientError::Closed { close_code, error } => {
            assert_eq!(close_code, Some(CloseCode::TokenExpired.as_u16()));
            assert_eq!(error.map(|e| e.code), Some(ErrorCode::TokenExpiredLive));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn refreshed_connections_live_on_and_unrefreshed_ones_are_closed_at_expiry() {
    let (server, clock) =
        TestServer::start_with_clock("[limits]\nheartbeat_interval_ms = 50\n").await;
    let short = |player: &str| mint(&server.config, player, now_s(), 60);
    let (busy, _busy_events) = server
        .connect_with_token(&short("busy"))
        .await
        .expect("connect");
    let (idle, _idle_events) = server
        .connect_with_token(&short("idle"))
        .await
        .expect("connect");
    let (kept, _kept_events) = server
        .connect_with_token(&short("kept"))
        .await
        .expect("connect");

    let mismatch = kept
        .refresh_token(&mint(&server.config, "someone-else", now_s(), 600))
        .await;
    assert_eq!(
        mismatch.expect_err("another player").code(),
        Some(ErrorCode::TokenPlayerMismatch)
    );
    let bad = kept
        .refresh_token("not.a.token")
        .await
        .expect_err("malformed");
    assert_eq!(bad.code(), Some(ErrorCode::TokenMalformed));
    let expires_ms = kept
        .refresh_token(&mint(&server.config, "kept", now_s(), 600))
        .await
        .expect("refreshed");
    assert!(expires_ms >= (now_s() + 590) * 1000);

    clock.advance(61_000);
    // A request on an expired connection is refused with the expiry, and it is closed.
    let _ = busy.wallet().await;
    expect_expired(&busy).await;
    // An idle one is closed at its next heartbeat.
    expect_expired(&idle).await;
    // The refreshed one carries on.
    assert_eq!(kept.wallet().await.expect("still connected"), 0);
}
