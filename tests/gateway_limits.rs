//! The gateway cannot be wedged or flooded: a peer that never completes the websocket
//! upgrade, a peer that stops reading, running out of file descriptors, a stray
//! environment variable, and a shutdown that must turn `/readyz` unready before it tells
//! the clients to leave.

mod common;

use common::{TestServer, WAIT, binary_command, start_command};
use futures_util::SinkExt;
use playtree_protocol::ErrorCode;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Waits (bounded) until `condition` holds, looking every few milliseconds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"));
}

#[tokio::test]
async fn a_peer_that_never_upgrades_is_dropped_at_the_hello_timeout_and_frees_its_place() {
    let server = TestServer::start("[limits]\nconnections_max = 1\nhello_timeout_ms = 300").await;
    let (_, before) = server.get("/metrics").await;
    // Connects over TCP and says nothing: no websocket upgrade, no Hello.
    let mut silent = tokio::net::TcpStream::connect(server.running().ws_addr)
        .await
        .expect("tcp connect");
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, silent.read(&mut byte))
        .await
        .expect("the server drops a peer that never upgrades");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Its place is free again for a real client.
    let (client, _events) = server.connect("alice").await;
    client.wallet().await.expect("served");
    let (_, metrics) = server.get("/metrics").await;
    let series = "playtree_handshake_timeouts_total";
    assert!(common::metric_value(&metrics, series) - common::metric_value(&before, series) >= 1.0);
}

/// Small socket buffers, an outbound queue that never overflows: only the write
/// deadline can notice a peer that stopped reading.
const STALLED: &str = r#"
[limits]
frames_per_second = 100000
frames_burst = 100000
outbound_frames_max = 100000
outbound_bytes_max = 100000000
socket_send_buffer_bytes = 4096
write_timeout_ms = 300

[rooms]
chat_per_second = 100000
chat_burst = 100000

[quiz]
min_players = 10
lobby_countdown_ms = 600000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_by_the_write_deadline() {
    let server = TestServer::start(STALLED).await;
    let (_, before) = server.get("/metrics").await;
    let (alice, _alice_events) = server.connect("alice").await;
    let room = alice.quick_join_quiz().await.expect("join").room;

    // Bob connects with a tiny receive buffer, joins, and never reads again.
    let mut bob = common::stalled_client(&server, "bob").await;
    bob.send(common::quick_join_quiz_frame(1))
        .await
        .expect("join");
    let open = &server.running().gateway.open_connections;
    until("bob is connected", || {
        open.load(std::sync::atomic::Ordering::Acquire) == 2
    })
    .await;

    // Far more than his socket buffers hold, far less than his queue allows.
    let text = "x".repeat(190);
    for n in 0..1000 {
        alice
            .chat(room, &format!("{n} {text}"))
            .await
            .expect("chat is accepted");
    }
    // His write blocks; its deadline closes him (the queue never overflowed).
    until("bob's connection is closed", || {
        open.load(std::sync::atomic::Ordering::Acquire) == 1
    })
    .await;
    let (_, metrics) = server.get("/metrics").await;
    let series = "playtree_write_timeouts_total";
    assert!(common::metric_value(&metrics, series) - common::metric_value(&before, series) >= 1.0);
    // Alice is still served.
    alice.chat(room, "still here").await.expect("chat");
}

#[tokio::test]
async fn readyz_turns_unready_before_the_clients_are_told_to_leave() {
    let mut server = TestServer::start_tuned("", playtree::Environment::default(), |config| {
        config.server.unready_delay_ms = 1_000;
    })
    .await;
    let options = playtree_client::ClientOptions {
        reconnect: false,
        request_timeout: WAIT,
        handshake_timeout: WAIT,
        ..playtree_client::ClientOptions::default()
    };
    let (client, _events) =
        playtree_client::Client::connect_with(&server.url(), &server.token("alice"), options)
            .await
            .expect("connects");
    let admin = server.running().admin_addr;
    assert_eq!(common::http_get(admin, "/readyz").await.0, 200);
    let running = server.server.take().expect("running");
    let stopping = tokio::spawn(running.shutdown());
    // Unready at once, while the client is still connected...
    tokio::time::timeout(WAIT, async {
        while common::http_get(admin, "/readyz").await.0 != 503 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("unready in time");
    client
        .wallet()
        .await
        .expect("the client is still served while the server is unready");
    // ...and only then is the client told to go.
    let closed = tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("the client is told");
    match closed {
        playtree_client::ClientError::Closed {
            error: Some(error), ..
        } => assert_eq!(error.code, ErrorCode::ShuttingDown),
        other => panic!("unexpected {other:?}"),
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("stops in time")
        .expect("shutdown task");
}

fn config_file(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("playtree.toml");
    std::fs::write(&path, common::base_overrides(&dir.join("data"), extra)).expect("config");
    path
}

#[test]
fn unrelated_playtree_variables_are_not_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = config_file(dir.path(), "");
    let mut command = binary_command(&path);
    command
        .env("PLAYTREE_BIN", "/usr/local/bin/playtree")
        .env("PLAYTREE_CRASH_ROUNDS", "3")
        // A real setting still applies.
        .env("PLAYTREE_LIMITS__HELLO_TIMEOUT_MS", "4321");
    let server = start_command(command);
    assert!(!server.ws.is_empty(), "started despite PLAYTREE_BIN");
    drop(server);

    // And a bad value of a real setting is refused, naming it.
    let mut command = binary_command(&path);
    command
        .env("PLAYTREE_LIMITS__HELLO_TIMEOUT_MS", "soon")
        .stderr(std::process::Stdio::piped());
    let output = command.output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("hello_timeout_ms"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_is_survived_without_spinning() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = config_file(dir.path(), "[limits]\nhello_timeout_ms = 500");
    // A small open-file limit for the server alone.
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n 96 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_playtree"))
        .args(["--config", path.to_str().expect("utf-8"), "serve"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("PLAYTREE_") {
            command.env_remove(name);
        }
    }
    let mut server = start_command(command);
    let stderr = server.child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        use std::io::Read;
        let mut text = String::new();
        let _ = std::io::BufReader::new(stderr).read_to_string(&mut text);
        text
    });

    // Far more connections than the server has descriptors for, all silent.
    let mut silent = Vec::new();
    for _ in 0..200 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(&server.ws),
        )
        .await
        {
            silent.push(stream);
        }
    }
    // The server drops each at its hello timeout, which frees a descriptor for the next
    // one waiting in the backlog; meanwhile its accepts keep failing. Wait until it has
    // dropped them all.
    tokio::time::timeout(WAIT * 3, async {
        for mut stream in silent {
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte).await;
        }
    })
    .await
    .expect("the server drops every silent peer in time");

    // Once they are gone it serves again.
    let admin: std::net::SocketAddr = server
        .admin
        .as_deref()
        .expect("admin address")
        .parse()
        .expect("admin address parses");
    let (status, _) = common::http_get(admin, "/healthz").await;
    assert_eq!(status, 200);
    let (_, metrics) = common::http_get(admin, "/metrics").await;
    let failures = common::metric_value(&metrics, "playtree_accept_errors_total");
    assert!(
        failures >= 1.0,
        "the test ran the server out of descriptors"
    );

    let _ = server.child.kill();
    let _ = server.child.wait();
    let log = log.join().expect("log reader");
    assert!(
        log.contains("open-file limit"),
        "a warning at start-up that the limit is below connections_max:\n{log}"
    );
    let logged = log.matches("accept failed").count();
    // Every failure is counted; the log says so once a second at most (a spinning loop
    // wrote hundreds of thousands of lines a second).
    assert!(
        logged <= 30 && (logged as f64) < failures,
        "{logged} accept-failure lines for {failures} failures"
    );
}
