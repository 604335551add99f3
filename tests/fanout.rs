//! Backpressure and limits: a slow consumer is closed while every other member receives
//! everything; inbound rate limits answer, then close.

mod common;

use common::{TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use playtree_client::ClientError;
use playtree_protocol::{CloseCode, ErrorCode, Event, ServerFrame, codec::decode_server};
use tokio_tungstenite::tungstenite::Message;

const SLOW: &str = r#"
[limits]
frames_per_second = 100000
frames_burst = 100000
outbound_frames_max = 64
outbound_bytes_max = 16384
socket_send_buffer_bytes = 4096

[rooms]
history_len = 16
chat_per_second = 100000
chat_burst = 100000

[quiz]
min_players = 10
lobby_countdown_ms = 600000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_and_the_others_receive_everything() {
    let server = TestServer::start(SLOW).await;
    let (_, metrics_before) = server.get("/metrics").await;
    let (alice, _alice_events) = server.connect("alice").await;
    let room = alice.quick_join_quiz().await.expect("join").room;
    let (carol, mut carol_events) = server.connect("carol").await;
    carol.quick_join_quiz().await.expect("join");

    // Bob joins over a raw socket, then stops reading.
    let mut bob = common::stalled_client(&server, "bob").await;
    bob.send(common::quick_join_quiz_frame(1))
        .await
        .expect("join");

    // Carol must see bob join before the flood, so that bob is in the room for it.
    let mut carol_seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        loop {
            let envelope = carol_events.next().await.expect("open");
            if matches!(&envelope.event, Event::MemberJoined { player, .. } if player == "bob") {
                break;
            }
        }
    })
    .await
    .expect("bob joined");

    let n_lines = 400u32;
    let text = "x".repeat(150);
    for n in 0..n_lines {
        alice
            .chat(room, &format!("{n} {text}"))
            .await
            .expect("chat is accepted");
    }
    // Carol, reading normally, gets every line in order with consecutive seqs.
    tokio::time::timeout(WAIT, async {
        while carol_seen.len() < n_lines as usize {
            let envelope = carol_events.next().await.expect("carol stays connected");
            if let Event::Chat { text, .. } = &envelope.event {
                carol_seen.push((
                    envelope.seq,
                    text.split(' ').next().unwrap_or_default().to_owned(),
                ));
            }
        }
    })
    .await
    .expect("carol receives every line");
    for (index, window) in carol_seen.windows(2).enumerate() {
        assert_eq!(window[1].0, window[0].0 + 1, "gap after line {index}");
    }
    let numbers: Vec<String> = carol_seen.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(
        numbers,
        (0..n_lines).map(|n| n.to_string()).collect::<Vec<_>>()
    );

    // Bob, once he reads again, finds his connection ended early: far fewer lines than
    // were sent, then (if it got through his full buffers) the slow-consumer close.
    let mut bob_lines = 0;
    let mut close_code = None;
    tokio::time::timeout(WAIT, async {
        while let Some(message) = bob.next().await {
            match message {
                Ok(Message::Binary(bytes)) => {
                    if let Ok(ServerFrame::Event(envelope)) = decode_server(&bytes, 1 << 20)
                        && matches!(envelope.event, Event::Chat { .. })
                    {
                        bob_lines += 1;
                    }
                }
                Ok(Message::Close(frame)) => close_code = frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
    .await
    .expect("bob's connection ends");
    assert!(
        bob_lines < n_lines,
        "bob was cut off (he got {bob_lines} lines)"
    );
    assert!(
        close_code.is_none_or(|code| code == CloseCode::SlowConsumer.as_u16()),
        "{close_code:?}"
    );
    // His close may never reach him (his buffers were full), but the server decided it
    // with the slow-consumer code.
    let (_, metrics) = server.get("/metrics").await;
    let slow_code = "playtree_protocol_errors_total{code=\"3004\"}";
    assert!(
        common::metric_value(&metrics, slow_code)
            - common::metric_value(&metrics_before, slow_code)
            >= 1.0,
        "closed as a slow consumer"
    );
    // The room carries on.
    alice.chat(room, "still here").await.expect("chat");
}

#[tokio::test]
async fn inbound_frames_are_rate_limited_then_the_connection_is_closed() {
    let (server, clock) = TestServer::start_with_clock(
        "[limits]\nframes_per_second = 5\nframes_burst = 5\nrate_limit_strikes_max = 3\n",
    )
    .await;
    let (alice, _events) = server.connect("alice").await;
    for _ in 0..5 {
        alice.wallet().await.expect("within the burst");
    }
    let limited = alice.wallet().await.expect_err("over the rate");
    assert_eq!(limited.code(), Some(ErrorCode::RateLimited));
    // A second later the bucket has refilled.
    clock.advance(1_000);
    for _ in 0..5 {
        alice.wallet().await.expect("refilled");
    }
    // Persisting: strikes 1..=3 are answered, the 4th closes the connection.
    for strike in 1..=3 {
        let limited = alice.wallet().await.expect_err("limited");
        assert_eq!(
            limited.code(),
            Some(ErrorCode::RateLimited),
            "strike {strike}"
        );
    }
    let _ = alice.wallet().await;
    match tokio::time::timeout(WAIT, alice.closed())
        .await
        .expect("closed in time")
    {
        ClientError::Closed { close_code, error } => {
            assert_eq!(close_code, Some(CloseCode::RateLimited.as_u16()));
            assert_eq!(error.map(|e| e.code), Some(ErrorCode::RateLimitPersisted));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_three_heartbeats() {
    let server = TestServer::start("[limits]\nheartbeat_interval_ms = 50\n").await;
    let (_, metrics_before) = server.get("/metrics").await;
    let mut silent = common::welcomed(&server, "silent").await;
    // The scenario itself: the client neither reads nor answers pings for 400 ms (eight
    // heartbeat intervals). What the test then waits on is the observable close.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match silent.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server closed the silent connection");
    let (_, metrics) = server.get("/metrics").await;
    let series = "playtree_heartbeat_timeouts_total";
    assert!(
        common::metric_value(&metrics, series) - common::metric_value(&metrics_before, series)
            >= 1.0,
        "counted"
    );
}

#[tokio::test]
async fn a_player_holds_at_most_the_configured_connections() {
    let server = TestServer::start("[session]\nconnections_max = 1\n").await;
    let token = server.token("alice");
    let (first, _first_events) = server.connect("alice").await;
    match server.connect_with_token(&token).await {
        Err(ClientError::Refused { error, close_code }) => {
            assert_eq!(error.code, ErrorCode::TooManyConnections);
            assert_eq!(close_code, Some(CloseCode::TooManyConnections.as_u16()));
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // Once the first connection is gone, the player may connect again. Its close reaches
    // the session asynchronously: retry until it has, within the bound.
    drop(first);
    let again = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(connected) = server.connect_with_token(&token).await {
                return connected;
            }
        }
    })
    .await
    .expect("a new connection is accepted after the old one closed");
    assert_eq!(again.0.wallet().await.expect("works"), 0);
}

#[tokio::test]
async fn a_player_who_only_chats_keeps_no_session_in_memory() {
    let (server, clock) = TestServer::start_with_clock(
        "[session]\npassivate_after_ms = 1000\n\n[actors]\ntimer_poll_ms = 5\n",
    )
    .await;
    let (alice, _alice_events) = server.connect("alice").await;
    let room = alice.quick_join_wheel(None).await.expect("join").room;
    let (bob, mut bob_events) = server.connect("bob").await;
    assert_eq!(bob.quick_join_wheel(None).await.expect("join").room, room);
    let hub = &server.running().hub;
    // Alice stays connected and does nothing: her session leaves memory.
    tokio::time::timeout(WAIT, async {
        while hub.active_session("alice").is_some() {
            clock.advance(200);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("alice's idle session passivates while she is connected");

    alice.chat(room, "still here").await.expect("chat");
    common::next_event(&mut bob_events, |envelope| match &envelope.event {
        Event::Chat { player, text, .. } if player == "alice" => Some(text.clone()),
        _ => None,
    })
    .await;
    assert!(
        hub.active_session("alice").is_none(),
        "a chat goes to the room without bringing the session back"
    );
    // A chat for a room she is not in still gets the session's answer.
    let refused = alice.chat(room + 1, "wrong room").await;
    assert!(
        matches!(&refused, Err(ClientError::Server(error)) if error.code == ErrorCode::NotInRoom),
        "{refused:?}"
    );
}
