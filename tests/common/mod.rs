//! A real server on 127.0.0.1 (port 0), a temp data dir, and token minting.
#![allow(dead_code)]

use playtree::auth::{Authenticator, Claims};
use playtree::{Environment, RunningServer, ServerConfig};
use playtree_client::{Client, ClientError, Events};
use playtree_protocol::Role;
use std::time::Duration;
use tempfile::TempDir;

pub const SECRET: &str = "integration-test-secret";
/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A wheel whose every segment pays, so that credits are visible.
pub const TEST_WHEEL: &str = r#"
[[wheels]]
id = "test"
spins_per_day = 4
segments = [
  { label = "ten", prize = 10, weight = 1 },
  { label = "twenty", prize = 20, weight = 1 },
  { label = "thirty", prize = 30, weight = 1 },
]
"#;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: TempDir,
    pub config: ServerConfig,
}

pub fn base_overrides(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nshutdown_grace_ms = 5000\n\n[auth]\nhs256_secret = \"{SECRET}\"\n{extra}\n",
        dir.display()
    )
}

/// A clock the test moves by hand, starting at the real time (so that tokens minted
/// for real time are valid for it).
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    pub fn starting_now() -> std::sync::Arc<ManualClock> {
        std::sync::Arc::new(ManualClock(std::sync::atomic::AtomicU64::new(
            now_s() * 1000,
        )))
    }

    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl playtree_actors::Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl TestServer {
    pub async fn start(extra: &str) -> TestServer {
        Self::start_with(extra, Environment::default()).await
    }

    /// A server whose actors and gateway read `clock`.
    pub async fn start_with_clock(extra: &str) -> (TestServer, std::sync::Arc<ManualClock>) {
        let clock = ManualClock::starting_now();
        let environment = Environment {
            clock: clock.clone(),
            ..Environment::default()
        };
        (Self::start_with(extra, environment).await, clock)
    }

    pub async fn start_with(extra: &str, environment: Environment) -> TestServer {
        Self::start_tuned(extra, environment, |_| {}).await
    }

    /// A server whose config `tune` adjusts after loading (for keys of sections the
    /// base config already holds, such as `[server]`).
    pub async fn start_tuned(
        extra: &str,
        environment: Environment,
        tune: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServerConfig::from_toml_overrides(&base_overrides(dir.path(), extra))
            .expect("test config");
        tune(&mut config);
        let server = playtree::start(config.clone(), environment)
            .await
            .expect("server starts");
        TestServer {
            server: Some(server),
            dir,
            config,
        }
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server running")
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.running().ws_addr)
    }

    pub fn token(&self, player: &str) -> String {
        mint(&self.config, player, now_s(), 600)
    }

    pub async fn connect(&self, player: &str) -> (Client, Events) {
        tokio::time::timeout(WAIT, Client::connect(&self.url(), &self.token(player)))
            .await
            .expect("connect in time")
            .expect("connects")
    }

    /// A partner app connected with a `partner` token for `name`.
    pub async fn connect_partner(&self, name: &str) -> Client {
        let token = mint_as(&self.config, name, Role::Partner, now_s(), 600);
        self.connect_with_token(&token)
            .await
            .expect("partner connects")
            .0
    }

    pub async fn connect_with_token(&self, token: &str) -> Result<(Client, Events), ClientError> {
        tokio::time::timeout(WAIT, Client::connect(&self.url(), token))
            .await
            .expect("connect in time")
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.running().admin_addr, path).await
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server.shutdown())
                .await
                .expect("shutdown in time");
        }
    }
}

pub fn now_s() -> u64 {
    playtree::clock::now_s()
}

pub fn mint(config: &ServerConfig, player: &str, iat: u64, lifetime_s: u64) -> String {
    mint_as(config, player, Role::Player, iat, lifetime_s)
}

pub fn mint_as(
    config: &ServerConfig,
    player: &str,
    role: Role,
    iat: u64,
    lifetime_s: u64,
) -> String {
    let auth = Authenticator::from_config(&config.auth, &config.server.data_dir).expect("auth");
    auth.mint(player, role, iat, lifetime_s).expect("mint")
}

/// Signs arbitrary claims with `secret` (HS256).
pub fn sign(claims: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// A minimal HTTP/1.1 GET, enough for the admin endpoints.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("admin connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    };
    let response = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("admin answers in time");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The next event matching `predicate`, within the wait bound.
pub async fn next_event<T>(
    events: &mut Events,
    mut predicate: impl FnMut(&playtree_protocol::EventEnvelope) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.next().await.expect("connection stays open");
            if let Some(found) = predicate(&event) {
                return found;
            }
        }
    })
    .await
    .expect("event arrives in time")
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A websocket to the server with no handshake done.
pub async fn raw(server: &TestServer) -> Socket {
    let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(server.url()))
        .await
        .expect("connect in time")
        .expect("connects");
    socket
}

pub fn hello(token: String, version: u16) -> tokio_tungstenite::tungstenite::Message {
    hello_resuming(token, version, Vec::new())
}

pub fn hello_resuming(
    token: String,
    version: u16,
    resume: Vec<playtree_protocol::StreamPosition>,
) -> tokio_tungstenite::tungstenite::Message {
    let frame = playtree_protocol::ClientFrame::Hello(playtree_protocol::Hello {
        protocol_version: version,
        token,
        resume,
    });
    tokio_tungstenite::tungstenite::Message::Binary(
        playtree_protocol::codec::encode_client(&frame).into(),
    )
}

/// A raw connection past its Welcome, resuming from `resume`.
pub async fn welcomed_resuming(
    server: &TestServer,
    player: &str,
    resume: Vec<playtree_protocol::StreamPosition>,
) -> Socket {
    use futures_util::SinkExt;
    let mut socket = raw(server).await;
    socket
        .send(hello_resuming(
            server.token(player),
            playtree_protocol::PROTOCOL_VERSION,
            resume,
        ))
        .await
        .expect("send hello");
    match next_frame(&mut socket).await {
        Some(playtree_protocol::ServerFrame::Welcome(_)) => socket,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

pub async fn welcomed(server: &TestServer, player: &str) -> Socket {
    welcomed_resuming(server, player, Vec::new()).await
}

/// The next binary frame, decoded (None when the connection ends).
pub async fn next_frame(socket: &mut Socket) -> Option<playtree_protocol::ServerFrame> {
    use futures_util::StreamExt;
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message {
                return Some(
                    playtree_protocol::codec::decode_server(&bytes, 1 << 20)
                        .expect("server frames decode"),
                );
            }
        }
        None
    })
    .await
    .expect("frame in time")
}

/// The next event envelope on a raw connection.
pub async fn next_envelope(socket: &mut Socket) -> playtree_protocol::EventEnvelope {
    loop {
        match next_frame(socket).await {
            Some(playtree_protocol::ServerFrame::Event(envelope)) => return envelope,
            Some(_) => continue,
            None => panic!("connection ended while waiting for an event"),
        }
    }
}

/// The real `playtree` binary, started on a config file; killed when dropped.
pub struct ServerProcess {
    pub child: std::process::Child,
    /// The websocket address it bound (`host:port`).
    pub ws: String,
    /// The admin address it bound, if it printed one.
    pub admin: Option<String>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command that runs the binary with `--config config_path serve`, without the
/// environment's `PLAYTREE_*` variables (the tests' own knobs, the developer's).
pub fn binary_command(config_path: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_playtree"));
    command
        .args([
            "--config",
            config_path.to_str().expect("utf-8 path"),
            "serve",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("PLAYTREE_") {
            command.env_remove(name);
        }
    }
    command
}

/// Starts the binary with `--config config_path serve` and waits (bounded) for the line
/// naming its addresses.
pub fn start_binary(config_path: &std::path::Path) -> ServerProcess {
    start_command(binary_command(config_path))
}

/// Starts `command` (stdout piped) and waits (bounded) for the line naming the
/// server's addresses.
pub fn start_command(mut command: std::process::Command) -> ServerProcess {
    let mut child = command.spawn().expect("binary starts");
    let (ws, admin) = playtree_sim::server::read_addresses(&mut child, WAIT * 3)
        .expect("server prints its addresses");
    ServerProcess {
        child,
        ws,
        admin: Some(admin),
    }
}

/// The value of one series in Prometheus text — `name`, or `name{labels}` exactly as the
/// exporter writes it — or 0 when absent. Tests compare it before and after what they
/// do, since every test of a binary shares one recorder.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// A client socket with a small receive buffer that reads nothing until told.
pub async fn stalled_client(
    server: &TestServer,
    player: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use futures_util::SinkExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("small receive buffer");
    let stream = socket
        .connect(server.running().ws_addr)
        .await
        .expect("tcp connect");
    let (mut websocket, _) = tokio_tungstenite::client_async(server.url(), stream)
        .await
        .expect("websocket");
    websocket
        .send(hello(
            server.token(player),
            playtree_protocol::PROTOCOL_VERSION,
        ))
        .await
        .expect("hello");
    websocket
}

/// A `QuickJoin` of a quiz room, as a raw frame.
pub fn quick_join_quiz_frame(req_id: u32) -> tokio_tungstenite::tungstenite::Message {
    let join = playtree_protocol::ClientFrame::Request {
        req_id,
        request: playtree_protocol::Request::QuickJoin {
            kind: playtree_protocol::RoomKind::Quiz,
            variant: None,
        },
    };
    tokio_tungstenite::tungstenite::Message::Binary(
        playtree_protocol::codec::encode_client(&join).into(),
    )
}
