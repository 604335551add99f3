//! playtree-sim: thousands of simulated players against a Playtree server, through the
//! client crate partner apps use; invariants checked at the end; a report of latency,
//! throughput, errors and (for a server it owns) the server's CPU and memory.
//!
//! `run` is the whole of it; the binary parses arguments and prints the report, and the
//! server's test suite runs short scenarios through the same function.

pub mod invariants;
pub mod player;
pub mod report;
pub mod script;
pub mod server;
pub mod stats;
pub mod tokens;

use anyhow::{Context, bail};
use playtree_client::{Client, ClientOptions};
use script::{Scenario, Shape};
use server::OwnedServer;
use stats::Stats;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The secret the sim signs tokens with on a server it owns.
const OWNED_SECRET: &str = "playtree-sim-owned-server-secret";
/// Frames per second (and burst) one connection may send to a server the sim owns:
/// far above what a player sends, so that only the partner connections need pacing.
const OWNED_FRAMES_PER_SECOND: u32 = 1000;
/// Requests one connection may have in flight on a server the sim owns (the server's
/// default, written out because the partner connections are sized to it).
const OWNED_REQUESTS_IN_FLIGHT_MAX: usize = invariants::PARTNER_IN_FLIGHT_DEFAULT;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "playtree-sim", version, about)]
pub struct Args {
    /// What the simulated players do.
    #[arg(long, value_enum, default_value = "mixed")]
    pub scenario: Scenario,
    /// Simulated players (one connection each).
    #[arg(long, default_value_t = 500)]
    pub players: usize,
    /// How long the load runs, after every player has connected and joined.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Seeds every random choice: the same seed and arguments give the same script.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Drive an existing server (`ws://host:port`) instead of starting one. Player ids
    /// come from the seed: give each run against the same server a seed of its own.
    #[arg(long)]
    pub server: Option<String>,
    /// The HS256 secret the server checks tokens with (with --server).
    #[arg(long, env = "PLAYTREE_SIM_HS256_SECRET", hide_env_values = true)]
    pub hs256_secret: Option<String>,
    /// The issuer and audience the server expects in tokens, if it checks them.
    #[arg(long)]
    pub issuer: Option<String>,
    #[arg(long)]
    pub audience: Option<String>,
    /// The server binary to start (default: `playtree` next to this binary).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Pin the server the sim starts to this core (taskset).
    #[arg(long)]
    pub server_core: Option<usize>,
    /// Extra server config (TOML) for the server the sim starts.
    #[arg(long, default_value = "")]
    pub server_config: String,
    /// Fanout: rooms of this many players.
    #[arg(long, default_value_t = 50)]
    pub room_size: usize,
    /// Fanout: each player sends a chat line this often.
    #[arg(long, default_value_t = 1000)]
    pub period_ms: u64,
    /// Referral storm: claims per second over all players.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Source addresses 127.0.0.1 .. 127.0.0.N the connections are spread over (one
    /// address runs out of ports near 28,000 connections). 0: one per 20,000 players.
    #[arg(long, default_value_t = 0)]
    pub sources: u8,
    /// New connections per second while players connect.
    #[arg(long, default_value_t = 2000)]
    pub connect_rate: u32,
    /// Load before the measured part starts (server CPU, deliveries).
    #[arg(long, default_value_t = 2)]
    pub warmup_seconds: u64,
    /// Once every player is in a room (before the load), wait this long and read the
    /// server's memory again: idle connections in rooms, once their sessions passivated
    /// (set `session.passivate_after_ms` below it with --server-config).
    #[arg(long, default_value_t = 0)]
    pub idle_ms: u64,
    /// Connect and set up the players in this many waves (with --idle-ms, the memory
    /// per idle connection is the last wave's growth: see the report).
    #[arg(long, default_value_t = 1)]
    pub waves: usize,
    /// Write the report as JSON here, and the latency chart beside it (`.svg`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print the first N steps of each of the first players' scripts, and exit.
    #[arg(long)]
    pub print_script: Option<usize>,
    /// The checks at the end: how many run at once.
    #[arg(long, default_value_t = invariants::CHECKS_IN_FLIGHT_DEFAULT)]
    pub checks_in_flight: usize,
    /// Partner connections the checks read referral stats through (and the first reports
    /// conversions during a referral load).
    #[arg(long, default_value_t = invariants::PARTNER_CONNECTIONS_DEFAULT)]
    pub partner_connections: usize,
    /// Requests one partner connection keeps in flight at most: the server's
    /// `limits.requests_in_flight_max` or less.
    #[arg(long, default_value_t = invariants::PARTNER_IN_FLIGHT_DEFAULT)]
    pub partner_in_flight: usize,
    /// Frames per second one partner connection sends at most: below the server's
    /// `limits.frames_per_second`.
    #[arg(long, default_value_t = invariants::PARTNER_FRAMES_PER_SECOND_DEFAULT)]
    pub partner_frames_per_second: u32,
    /// No progress: neither the live line (on a terminal) nor the plain lines per phase
    /// (off one).
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// Defaults for a run driven from code (tests).
    pub fn for_scenario(scenario: Scenario, players: usize, seconds: u64, seed: u64) -> Args {
        use clap::Parser;
        let mut args = Args::parse_from(["playtree-sim"]);
        args.scenario = scenario;
        args.players = players;
        args.seconds = seconds;
        args.seed = seed;
        args.quiet = true;
        args.warmup_seconds = 0;
        args
    }

    pub fn shape(&self) -> Shape {
        Shape {
            scenario: self.scenario,
            players: self.players,
            seed: self.seed,
            period_ms: self.period_ms,
            claims_per_second: self.rate,
        }
    }
}

/// The server config the sim starts its own server with.
fn owned_config(args: &Args) -> String {
    let players = args.players;
    let room_size = if args.scenario == Scenario::Fanout {
        args.room_size
    } else {
        50
    };
    format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
data_dir = "{{data_dir}}"
shutdown_grace_ms = 3000

[auth]
hs256_secret = "{OWNED_SECRET}"

[limits]
connections_max = {connections}
frames_per_second = {OWNED_FRAMES_PER_SECOND}
frames_burst = {OWNED_FRAMES_PER_SECOND}
requests_in_flight_max = {OWNED_REQUESTS_IN_FLIGHT_MAX}

[actors]
sessions_max = {sessions}

[rooms]
wheel_players_max = {room_size}
chat_per_second = 100
chat_burst = 100

[quiz]
lobby_countdown_ms = 1000
questions_per_game = 3
question_ms = 2000
reveal_ms = 500
podium_ms = 1000

[referral]
claims_per_referrer_per_hour = 0
rewards_per_player_per_day = 0

[[wheels]]
id = "sim"
spins_per_day = 1000000
segments = [
  {{ label = "5 coins", prize = 5, weight = 50 }},
  {{ label = "20 coins", prize = 20, weight = 30 }},
  {{ label = "No win", prize = 0, weight = 15 }},
  {{ label = "100 coins", prize = 100, weight = 5 }},
]
{extra}
"#,
        connections = players * 2 + 100,
        sessions = players * 2 + 100,
        extra = args.server_config,
    )
}

/// The `playtree` binary beside the running one (cargo puts both in one target dir).
fn default_server_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("the sim's own path")?;
    let dir = me.parent().context("the sim's directory")?;
    // Test binaries live one level down, in deps/.
    for candidate in [dir.join("playtree"), dir.join("../playtree")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no `playtree` binary beside {}: build it (cargo build --release --bin playtree) or pass --server-bin",
        me.display()
    )
}

/// Whether the server at `url` is on this machine's loopback.
async fn server_is_loopback(url: &str) -> bool {
    let rest = url.trim_start_matches("ws://").trim_start_matches("wss://");
    let authority = rest.split('/').next().unwrap_or(rest);
    match tokio::net::lookup_host(authority).await {
        Ok(mut addresses) => addresses.all(|address| address.ip().is_loopback()),
        Err(_) => false,
    }
}

/// What the sim learned from one run. `failures` empty: every invariant held.
pub use report::Report;

/// Runs one simulation; the report says what held and what did not.
pub async fn run(args: Args) -> anyhow::Result<Report> {
    let shape = args.shape();
    if args.players == 0 {
        bail!("--players must be at least 1");
    }
    if args.scenario == Scenario::Crash && args.server.is_some() {
        bail!("the crash scenario kills the server it owns: it cannot be run with --server");
    }
    if args.checks_in_flight == 0
        || args.partner_connections == 0
        || args.partner_in_flight == 0
        || args.partner_frames_per_second == 0
    {
        bail!(
            "--checks-in-flight, --partner-connections, --partner-in-flight and --partner-frames-per-second must be at least 1"
        );
    }
    let progress = report::Progress::new(args.quiet);
    let mut owned = match &args.server {
        Some(_) => None,
        None => {
            let binary = match &args.server_bin {
                Some(binary) => binary.clone(),
                None => default_server_bin()?,
            };
            progress.phase(&format!("server: starting {}", binary.display()));
            let config = owned_config(&args);
            let core = args.server_core;
            let server =
                tokio::task::spawn_blocking(move || OwnedServer::start(&binary, core, config))
                    .await??;
            progress.phase(&format!("server: listening on {}", server.ws));
            Some(server)
        }
    };
    let (url, secret) = match (&args.server, &owned) {
        (Some(url), _) => (
            url.clone(),
            args.hs256_secret
                .clone()
                .context("--server needs --hs256-secret (or PLAYTREE_SIM_HS256_SECRET)")?,
        ),
        (None, Some(server)) => (format!("ws://{}", server.ws), OWNED_SECRET.to_owned()),
        (None, None) => bail!("no server"),
    };
    let minter = tokens::Minter::new(&secret, args.issuer.clone(), args.audience.clone());
    let sources = if args.sources == 0 {
        args.players.div_ceil(20_000).clamp(1, 250) as u8
    } else {
        args.sources
    };
    // Source addresses 127.0.0.x reach only a server on loopback.
    let loopback = server_is_loopback(&url).await;
    let stats = Arc::new(Stats::default());
    let plans = shape.players();
    let memory_before = owned.as_ref().and_then(OwnedServer::memory);

    // Connect everyone, at the connect rate, and set them up (rooms, codes), in
    // `--waves` waves.
    progress.phase(&format!(
        "connecting {} players at {}/s to {url}",
        args.players, args.connect_rate
    ));
    let started = Instant::now();
    let world = Arc::new(player::World::new(&shape, stats.clone()));
    let pause = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate.max(1)));
    let mut players = Vec::with_capacity(args.players);
    let mut memory_connected = None;
    let mut memory_in_rooms = None;
    let mut memory_idle = None;
    let mut idle_per_connection = None;
    let wave_len = args.players.div_ceil(args.waves.max(1));
    for wave in plans.chunks(wave_len.max(1)) {
        let mut connecting = tokio::task::JoinSet::new();
        for plan in wave.iter().cloned() {
            let token = minter.token(&plan.id, "player")?;
            let options = ClientOptions {
                local_address: loopback.then(|| {
                    IpAddr::V4(Ipv4Addr::new(
                        127,
                        0,
                        0,
                        1 + (plan.index % usize::from(sources)) as u8,
                    ))
                }),
                event_buffer: 4096,
                // A restarted server may take a while to recover: keep trying.
                reconnect_attempts_max: 200,
                ..ClientOptions::default()
            };
            let url = url.clone();
            let world = world.clone();
            connecting.spawn(async move {
                player::Player::connect(world, plan, &url, &token, options).await
            });
            tokio::time::sleep(pause).await;
            progress.connecting(players.len() + connecting.len());
        }
        let mut joined = Vec::with_capacity(wave.len());
        while let Some(connected) = connecting.join_next().await {
            match connected.context("a connecting task")? {
                Ok(player) => joined.push(player),
                Err(error) => bail!("a player could not connect: {error:#}"),
            }
        }
        progress.phase(&format!(
            "connected {} players; setting them up (rooms, referral codes)",
            players.len() + joined.len()
        ));
        memory_connected = owned.as_ref().and_then(OwnedServer::memory);
        let mut setting_up = tokio::task::JoinSet::new();
        for player in &joined {
            let player = player.clone();
            setting_up.spawn(async move { player.set_up().await });
        }
        while let Some(done) = setting_up.join_next().await {
            done.context("a set-up task")??;
        }
        memory_in_rooms = owned.as_ref().and_then(OwnedServer::memory);
        if args.idle_ms > 0 {
            progress.phase(&format!("idle for {} ms", args.idle_ms));
            tokio::time::sleep(Duration::from_millis(args.idle_ms)).await;
            let idle = owned.as_ref().and_then(OwnedServer::memory);
            // After the first wave, what one more idle connection costs: the allocator
            // keeps what earlier waves' passivated sessions freed, for the next wave to
            // reuse, so the growth from wave to wave is the connections' own memory.
            let base = memory_idle.or(memory_before);
            if let (Some((now, _)), Some((before, _))) = (idle, base) {
                idle_per_connection = Some((now as f64 - before as f64) / joined.len() as f64);
            }
            memory_idle = idle;
        }
        players.extend(joined);
    }
    players.sort_by_key(|player| player.plan.index);
    let connect_seconds = started.elapsed().as_secs_f64();

    // The partner: reports conversions during referral runs (the first connection), and
    // reads stats for the checks (all of them). Each connection has an id of its own, so
    // that the server's cap on one player's connections does not apply to them together.
    let mut partner_clients = Vec::with_capacity(args.partner_connections);
    for partner_idx in 0..args.partner_connections {
        let id = match partner_idx {
            0 => format!("sim-partner-{}", args.seed),
            _ => format!("sim-partner-{}-{partner_idx}", args.seed),
        };
        let token = minter.token(&id, "partner")?;
        // A partner that does not subscribe is sent no events: none to read.
        let (client, _events) = Client::connect(&url, &token)
            .await
            .with_context(|| format!("partner {id} connects"))?;
        partner_clients.push(Arc::new(client));
    }
    let partners = Arc::new(invariants::Partners::new(
        partner_clients,
        invariants::PartnerLimits {
            requests_in_flight_max: args.partner_in_flight,
            frames_per_second: args.partner_frames_per_second,
        },
    ));

    // The load.
    let duration = Duration::from_secs(args.seconds);
    let warmup = Duration::from_secs(args.warmup_seconds.min(args.seconds / 2));
    progress.phase(&format!(
        "load: {} s, the first {} s of it warm-up",
        args.seconds,
        warmup.as_secs()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let load_start = tokio::time::Instant::now();
    let mut load = tokio::task::JoinSet::new();
    for player in &players {
        let steps = shape.steps(&player.plan, duration.as_millis() as u64);
        let player = player.clone();
        let stop = stop.clone();
        load.spawn(async move { player.play(steps, load_start, stop).await });
    }
    if shape.influencers() > 0 {
        let world = world.clone();
        let partner = partners.first().clone();
        let stop = stop.clone();
        let seed = args.seed;
        load.spawn(async move { player::report_conversions(world, partner, seed, stop).await });
    }
    let kills = shape.kills(duration.as_millis() as u64);
    let mut next_kill = 0;
    let mut measured_from: Option<(Instant, f64, u64, f64)> = None;
    let mut measured = None;
    let mut second = 0u64;
    let mut ticker =
        tokio::time::interval_at(load_start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        ticker.tick().await;
        stats.tick(second);
        second += 1;
        let elapsed = load_start.elapsed();
        progress.running(&stats, &world, elapsed, duration);
        if measured_from.is_none() && elapsed >= warmup {
            if !warmup.is_zero() {
                progress.phase("load: warm-up over, measuring");
            }
            let cpu = owned
                .as_ref()
                .and_then(OwnedServer::cpu_seconds)
                .unwrap_or(0.0);
            measured_from = Some((
                Instant::now(),
                cpu,
                stats.deliveries.load(Ordering::Relaxed),
                server::own_cpu_seconds().unwrap_or(0.0),
            ));
        }
        while next_kill < kills.len() && elapsed.as_millis() as u64 >= kills[next_kill] {
            next_kill += 1;
            if let Some(mut server) = owned.take() {
                let restarted = tokio::task::spawn_blocking(move || {
                    let result = server.kill_and_restart();
                    (server, result)
                })
                .await?;
                owned = Some(restarted.0);
                world.crashes.fetch_add(1, Ordering::Relaxed);
                restarted.1.context("restarting the killed server")?;
                progress.phase("load: killed the server and restarted it");
            }
        }
        if elapsed >= duration {
            if let Some((at, cpu, deliveries, sim_cpu)) = measured_from {
                let cpu_now = owned
                    .as_ref()
                    .and_then(OwnedServer::cpu_seconds)
                    .unwrap_or(0.0);
                measured = Some(report::Measured {
                    seconds: at.elapsed().as_secs_f64(),
                    server_cpu_seconds: owned.as_ref().map(|_| cpu_now - cpu),
                    sim_cpu_seconds: server::own_cpu_seconds().map(|now| now - sim_cpu),
                    deliveries: stats.deliveries.load(Ordering::Relaxed) - deliveries,
                });
            }
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    progress.phase("settling: the load stopped; waiting for the players' last requests");
    while let Some(done) = load.join_next().await {
        done.context("a load task")?;
    }

    // The checks.
    let limits = invariants::CheckLimits {
        checks_in_flight_max: args.checks_in_flight,
        ..invariants::CheckLimits::default()
    };
    let server_cpu_before = owned.as_ref().and_then(OwnedServer::cpu_seconds);
    let sim_cpu_before = server::own_cpu_seconds();
    let mut checked = invariants::check_with(&players, &world, &partners, limits, &progress).await;
    let since = |before: Option<f64>, now: Option<f64>| Some(now? - before?);
    checked.checks.server_cpu_seconds = since(
        server_cpu_before,
        owned.as_ref().and_then(OwnedServer::cpu_seconds),
    );
    checked.checks.sim_cpu_seconds = since(sim_cpu_before, server::own_cpu_seconds());
    progress.checks_done(&checked.checks);
    let memory_end = owned.as_ref().and_then(OwnedServer::memory);
    let report = report::Report::new(report::Inputs {
        args: &args,
        stats: &stats,
        world: &world,
        connect_seconds,
        measured,
        memory_before,
        memory_connected,
        memory_idle,
        idle_per_connection,
        memory_in_rooms,
        memory_end,
        kills: owned.as_ref().map_or(0, |server| server.kills),
        checks: checked.checks,
        failures: checked.failures,
    });
    progress.phase("report");
    progress.finish();
    Ok(report)
}
