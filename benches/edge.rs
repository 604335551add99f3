//! The edge end to end: the real server binary, pinned to one core, and N websocket
//! clients in rooms of 50 driven from this process, pinned to the other. Every client
//! sends one chat line every `--period-ms`; each line reaches the 50 members of its room.
//! Reports deliveries per second, the server's CPU per delivered message (from
//! `/proc/<pid>/stat`), its resident memory per connection (from `/proc/<pid>/status`),
//! and the send → receipt latency of every delivery (p50, p99, max).
//!
//! ```sh
//! cargo bench --bench edge -- --clients 2000 --period-ms 1000 --seconds 10
//! ```
//! Not a criterion benchmark and not a test: one run, one set of figures. Needs Linux
//! (`/proc`, `taskset`).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use playtree::auth::Claims;
use playtree_protocol::codec::{decode_server, encode_client};
use playtree_protocol::{
    ClientFrame, Event, Hello, PROTOCOL_VERSION, Request, Role, RoomKind, ServerFrame,
};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const ROOM_SIZE: usize = 50;
const SECRET: &str = "edge-benchmark-secret";

#[derive(Debug, Clone)]
struct Args {
    clients: usize,
    period_ms: u64,
    seconds: u64,
    warmup_seconds: u64,
    server_core: usize,
    client_core: usize,
    /// Extra server config (TOML) appended to the benchmark's own.
    extra: String,
    /// Connect and say Hello only (no room, no load): memory per bare connection.
    idle_only: bool,
    /// Memory only, once idle sessions have passivated: sessions passivate after
    /// half this long; the clients wait this long, then as many more join (the
    /// allocator keeps what the first wave's sessions freed, so the first wave's RSS does
    /// not fall: the second wave's growth is what one more connection costs), and after
    /// this long again the RSS is read. No load is run.
    settle_ms: u64,
    /// A command the server runs under (e.g. a heap profiler), split on spaces.
    wrap: Vec<String>,
    /// Another build of the server to measure (an older commit, for a side-by-side).
    binary: Option<String>,
    /// The protocol version the clients say they speak (1 for builds before version 2:
    /// the clients use only frames both versions share).
    protocol_version: u16,
}

fn parse_args() -> Args {
    let mut args = Args {
        clients: 2000,
        period_ms: 1000,
        seconds: 10,
        warmup_seconds: 3,
        server_core: 0,
        client_core: 1,
        extra: String::new(),
        idle_only: false,
        settle_ms: 0,
        wrap: Vec::new(),
        binary: None,
        protocol_version: PROTOCOL_VERSION,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .unwrap_or_else(|| panic!("{word} needs a value"))
        };
        match word.as_str() {
            "--clients" => args.clients = value().parse().expect("--clients N"),
            "--period-ms" => args.period_ms = value().parse().expect("--period-ms N"),
            "--seconds" => args.seconds = value().parse().expect("--seconds N"),
            "--warmup-seconds" => {
                args.warmup_seconds = value().parse().expect("--warmup-seconds N")
            }
            "--server-core" => args.server_core = value().parse().expect("--server-core N"),
            "--client-core" => args.client_core = value().parse().expect("--client-core N"),
            "--extra" => args.extra = value(),
            "--idle-only" => args.idle_only = true,
            "--settle-ms" => args.settle_ms = value().parse().expect("--settle-ms N"),
            "--wrap" => args.wrap = value().split_whitespace().map(str::to_owned).collect(),
            "--binary" => args.binary = Some(value()),
            "--protocol-version" => {
                args.protocol_version = value().parse().expect("--protocol-version N")
            }
            // cargo bench passes --bench; --list is asked by cargo test.
            "--bench" => {}
            "--list" => std::process::exit(0),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// The server under test: the release binary next to this benchmark.
struct Server {
    child: Child,
    ws: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first (a profiler the server runs under writes its report on exit),
        // then SIGKILL if it has not stopped.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(args: &Args) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    // Room for a second wave of as many (`--settle-ms`).
    let connections_max = 2 * args.clients + 100;
    let settle = if args.settle_ms > 0 {
        format!("[session]\npassivate_after_ms = {}\n", args.settle_ms / 2)
    } else {
        String::new()
    };
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
data_dir = "{data}"

[auth]
hs256_secret = "{SECRET}"

[limits]
connections_max = {connections_max}
frames_per_second = 100000
frames_burst = 100000

[rooms]
wheel_players_max = {ROOM_SIZE}
chat_per_second = 1000
chat_burst = 1000

[actors]
sessions_max = {connections_max}
{extra}
{settle}
"#,
        data = dir.path().join("data").display(),
        extra = args.extra,
    );
    let path = dir.path().join("playtree.toml");
    std::fs::write(&path, config).expect("config");
    let mut child = Command::new("taskset")
        .args(["-c", &args.server_core.to_string()])
        .args(&args.wrap)
        .arg(
            args.binary
                .as_deref()
                .unwrap_or(env!("CARGO_BIN_EXE_playtree")),
        )
        .args(["--config", path.to_str().expect("utf-8"), "serve"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server starts (is taskset installed?)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the server prints its addresses");
    let ws = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("ws="))
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    Server {
        child,
        ws,
        _dir: dir,
    }
}

/// The server's CPU time so far (user + system), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the full line: 12 and 13 here.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}

/// The server's resident memory in bytes, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn binary(frame: &ClientFrame) -> Message {
    Message::Binary(Bytes::from(encode_client(frame)))
}

async fn next_frame(socket: &mut Socket) -> ServerFrame {
    loop {
        match socket.next().await {
            Some(Ok(Message::Binary(bytes))) => {
                return decode_server(&bytes, 1 << 20).expect("server frames decode");
            }
            Some(Ok(_)) => continue,
            other => panic!("connection ended during set-up: {other:?}"),
        }
    }
}

/// Connects, says Hello, and (unless `idle_only`) joins a wheel room; returns the socket
/// and the room (0 when none). The room is learnt from the player's own `MemberJoined`
/// event, which both protocol versions share (their join replies differ).
async fn join(
    url: &str,
    token: String,
    player: &str,
    version: u16,
    idle_only: bool,
) -> (Socket, u64) {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connects");
    socket
        .send(binary(&ClientFrame::Hello(Hello {
            protocol_version: version,
            token,
            resume: Vec::new(),
        })))
        .await
        .expect("hello");
    match next_frame(&mut socket).await {
        ServerFrame::Welcome(_) => {}
        other => panic!("expected Welcome, got {other:?}"),
    }
    if idle_only {
        return (socket, 0);
    }
    socket
        .send(binary(&ClientFrame::Request {
            req_id: 1,
            request: Request::QuickJoin {
                kind: RoomKind::Wheel,
                variant: None,
            },
        }))
        .await
        .expect("join");
    loop {
        let Some(Ok(message)) = socket.next().await else {
            panic!("connection ended while joining")
        };
        let Message::Binary(bytes) = message else {
            continue;
        };
        match decode_server(&bytes, 1 << 20) {
            Ok(ServerFrame::Event(envelope)) => {
                if let Event::MemberJoined {
                    room,
                    player: joined,
                } = envelope.event
                    && joined == player
                {
                    return (socket, room);
                }
            }
            Ok(ServerFrame::Reply {
                req_id: 1,
                result: Err(error),
            }) => panic!("join failed: {error:?}"),
            // The other version's join reply, or anything else.
            _ => continue,
        }
    }
}

/// What every client records.
struct Totals {
    deliveries: AtomicU64,
    measuring: AtomicBool,
    latencies_us: std::sync::Mutex<Vec<u32>>,
}

/// One client: sends a line every `period`, reads every event, times every chat line.
async fn drive(
    socket: Socket,
    room: u64,
    period: Duration,
    phase: Duration,
    epoch: Instant,
    stop: Instant,
    totals: Arc<Totals>,
) {
    let (mut sink, mut source) = socket.split();
    let sender = async move {
        tokio::time::sleep(phase).await;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut req_id = 2u32;
        while Instant::now() < stop {
            ticks.tick().await;
            req_id = req_id.wrapping_add(1);
            let sent_us = epoch.elapsed().as_micros() as u64;
            let frame = ClientFrame::Request {
                req_id,
                request: Request::Chat {
                    room,
                    text: sent_us.to_string(),
                },
            };
            if sink.send(binary(&frame)).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    };
    let receiver = async move {
        let mut local = Vec::new();
        // Until the end of the run, even for a client that hears nothing near it (its
        // latencies are kept either way).
        let until = tokio::time::Instant::from_std(stop);
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, source.next()).await {
            let Message::Binary(bytes) = message else {
                continue;
            };
            let Ok(ServerFrame::Event(envelope)) = decode_server(&bytes, 1 << 20) else {
                continue;
            };
            let Event::Chat { text, .. } = envelope.event else {
                continue;
            };
            if !totals.measuring.load(Ordering::Relaxed) {
                continue;
            }
            if let Ok(sent_us) = text.parse::<u64>() {
                let now_us = epoch.elapsed().as_micros() as u64;
                local.push(now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32);
                totals.deliveries.fetch_add(1, Ordering::Relaxed);
            }
        }
        totals
            .latencies_us
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(local);
    };
    let _ = tokio::time::timeout(
        stop.saturating_duration_since(Instant::now()) + Duration::from_secs(2),
        futures_util::future::join(sender, receiver),
    )
    .await;
}

/// A player token signed with the benchmark server's secret.
fn token(player: &str, now_s: u64) -> String {
    let claims = Claims {
        sub: player.to_owned(),
        iat: now_s,
        exp: now_s + 600,
        iss: None,
        aud: None,
        role: Role::Player,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index]) / 1000.0
}

fn main() {
    let args = parse_args();
    // This process drives the clients from its own core.
    let pinned = Command::new("taskset")
        .args([
            "-p",
            "-c",
            &args.client_core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status();
    if !pinned.is_ok_and(|status| status.success()) {
        eprintln!(
            "warning: could not pin the clients to core {}",
            args.client_core
        );
    }
    let server = start_server(&args);
    let pid = server.child.id();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(args, server, pid));
}

async fn run(args: Args, server: Server, pid: u32) {
    let url = format!("ws://{}", server.ws);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let rss_before = rss_bytes(pid);
    // Joined a few at a time so that rooms fill to 50 one after another.
    let join_wave = |players: std::ops::Range<usize>| {
        let url = url.clone();
        async move {
            let mut clients = Vec::with_capacity(players.len());
            for chunk in players.collect::<Vec<_>>().chunks(10) {
                let joins = chunk.iter().map(|index| {
                    let (url, player) = (url.clone(), format!("p{index}"));
                    let (version, idle_only) = (args.protocol_version, args.idle_only);
                    async move {
                        let token = token(&player, now_s);
                        join(&url, token, &player, version, idle_only).await
                    }
                });
                clients.extend(futures_util::future::join_all(joins).await);
            }
            clients
        }
    };
    let started = Instant::now();
    let clients = join_wave(0..args.clients).await;
    if args.settle_ms > 0 {
        let settle = Duration::from_millis(args.settle_ms);
        tokio::time::sleep(settle).await;
        let rss_settled = rss_bytes(pid);
        let second = join_wave(args.clients..2 * args.clients).await;
        tokio::time::sleep(settle).await;
        let rss_second = rss_bytes(pid);
        println!(
            "edge (settled, {}): {} connections, then {} more after {} ms: RSS {:.1} → {:.1} MiB ({:.1} KiB per connection of the second wave, sessions passivated)",
            if args.idle_only {
                "no rooms"
            } else {
                "in rooms"
            },
            clients.len(),
            second.len(),
            args.settle_ms,
            rss_settled as f64 / 1_048_576.0,
            rss_second as f64 / 1_048_576.0,
            (rss_second.saturating_sub(rss_settled)) as f64 / 1024.0 / second.len().max(1) as f64,
        );
        drop(server);
        return;
    }
    let rooms: std::collections::BTreeSet<u64> = clients.iter().map(|(_, room)| *room).collect();
    let rss_joined = rss_bytes(pid);
    eprintln!(
        "{} clients joined {} rooms in {:.1} s; server RSS {:.1} MiB before, {:.1} MiB after",
        clients.len(),
        rooms.len(),
        started.elapsed().as_secs_f64(),
        rss_before as f64 / 1_048_576.0,
        rss_joined as f64 / 1_048_576.0
    );

    if args.idle_only {
        println!(
            "edge (idle): {} connections, no rooms: server RSS {:.1} MiB idle, {:.1} MiB connected ({:.1} KiB per connection)",
            clients.len(),
            rss_before as f64 / 1_048_576.0,
            rss_joined as f64 / 1_048_576.0,
            (rss_joined.saturating_sub(rss_before)) as f64 / 1024.0 / args.clients.max(1) as f64,
        );
        return;
    }
    let totals = Arc::new(Totals {
        deliveries: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        latencies_us: std::sync::Mutex::default(),
    });
    let period = Duration::from_millis(args.period_ms);
    let epoch = Instant::now();
    let warmup = Duration::from_secs(args.warmup_seconds);
    let measure = Duration::from_secs(args.seconds);
    let stop = epoch + warmup + measure;
    let mut tasks = Vec::with_capacity(clients.len());
    let count = clients.len().max(1);
    for (index, (socket, room)) in clients.into_iter().enumerate() {
        // Sends spread evenly over the period.
        let phase = period.mul_f64(index as f64 / count as f64);
        tasks.push(tokio::spawn(drive(
            socket,
            room,
            period,
            phase,
            epoch,
            stop,
            totals.clone(),
        )));
    }
    tokio::time::sleep(warmup).await;
    totals.measuring.store(true, Ordering::Release);
    let cpu_start = cpu_seconds(pid);
    let measure_start = Instant::now();
    tokio::time::sleep(measure).await;
    let cpu = cpu_seconds(pid) - cpu_start;
    let elapsed = measure_start.elapsed().as_secs_f64();
    let delivered = totals.deliveries.load(Ordering::Acquire);
    let rss_loaded = rss_bytes(pid);
    for task in tasks {
        let _ = task.await;
    }
    let mut latencies = std::mem::take(
        &mut *totals
            .latencies_us
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    );
    latencies.sort_unstable();
    let offered = args.clients as f64 * ROOM_SIZE as f64 * 1000.0 / args.period_ms as f64;
    println!(
        "edge: {} clients in {} rooms, one line per client every {} ms (offered {:.0} deliveries/s)",
        args.clients,
        rooms.len(),
        args.period_ms,
        offered
    );
    println!(
        "  delivered {:.0}/s; server CPU {:.2} s in {:.1} s = {:.1}% of a core, {:.2} µs per delivered message",
        delivered as f64 / elapsed,
        cpu,
        elapsed,
        cpu / elapsed * 100.0,
        cpu * 1e6 / delivered.max(1) as f64
    );
    println!(
        "  latency ms: p50 {:.2}  p99 {:.2}  max {:.2}  ({} samples)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies
            .last()
            .map_or(f64::NAN, |max| f64::from(*max) / 1000.0),
        latencies.len()
    );
    println!(
        "  server RSS: {:.1} MiB idle, {:.1} MiB with clients joined ({:.1} KiB per connection), {:.1} MiB under load",
        rss_before as f64 / 1_048_576.0,
        rss_joined as f64 / 1_048_576.0,
        (rss_joined.saturating_sub(rss_before)) as f64 / 1024.0 / args.clients.max(1) as f64,
        rss_loaded as f64 / 1_048_576.0
    );
    drop(server);
}
