//! Throughput of the entity runtime with the real store (sled, fdatasync), no sockets:
//!
//! - `joins`: 20,000 players QuickJoin a wheel (rooms of 50) with 500 requests in flight:
//!   joins per second, and how many commit requests one flush serves.
//! - `one room`: 50 players of one wheel room spin as fast as they can: the room's
//!   events per second (each spin is two room events: settled, delivered) and events
//!   per flush.
//!
//! Run: `cargo bench --bench entities` (release). Prints one line per scenario.

mod common;

use playtree_actors::Hub;
use playtree_actors::config::GameConfig;
use playtree_protocol::{ReplyBody, Request, RoomKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PLAYERS: usize = 20_000;
const IN_FLIGHT: usize = 500;
const ROOM_PLAYERS: usize = 50;
const ROOM_SECONDS: u64 = 5;

async fn hub(dir: &std::path::Path) -> Hub {
    let mut config = GameConfig::default();
    config.rooms.wheel_players_max = ROOM_PLAYERS;
    config.actors.sessions_max = PLAYERS * 2;
    config.wheels = vec![common::bench_wheel(u32::MAX)];
    common::start_hub(dir, config).await
}

/// The room joined, or `None` when the join was refused (every room tried was full).
async fn quick_join(hub: &Hub, player: &str) -> Option<u64> {
    let reply = hub
        .request(
            player,
            Request::QuickJoin {
                kind: RoomKind::Wheel,
                variant: Some("bench".into()),
            },
            None,
            0,
            false,
        )
        .await;
    match reply {
        Ok(ReplyBody::RoomJoined(joined)) => Some(joined.room),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(error) if error.code == playtree_protocol::ErrorCode::NoRoomAvailable => None,
        Err(error) => panic!("join failed: {error:?}"),
    }
}

async fn joins() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = hub(dir.path()).await;
    let (flushes, commits) = (hub.store.flush_count(), hub.store.commit_count());
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (hub, next) = (hub.clone(), next.clone());
        tasks.spawn(async move {
            let mut refused = 0u64;
            loop {
                let player = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if player >= PLAYERS {
                    break refused;
                }
                if quick_join(&hub, &format!("player-{player}"))
                    .await
                    .is_none()
                {
                    refused += 1;
                }
            }
        });
    }
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        refused += done.expect("joiner");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let flushes = hub.store.flush_count() - flushes;
    let commits = hub.store.commit_count() - commits;
    println!(
        "joins: {PLAYERS} players in {elapsed:.2} s = {:.0} joins/s ({refused} refused as every room tried was full); {flushes} flushes, {:.1} commit requests per flush",
        PLAYERS as f64 / elapsed,
        commits as f64 / flushes.max(1) as f64
    );
}

async fn one_room() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hub = hub(dir.path()).await;
    let mut room = 0;
    // One after another: they all land in the first room.
    for player in 0..ROOM_PLAYERS {
        room = quick_join(&hub, &format!("spinner-{player}"))
            .await
            .expect("a room with space");
    }
    let (flushes, commits) = (hub.store.flush_count(), hub.store.commit_count());
    let deadline = Instant::now() + Duration::from_secs(ROOM_SECONDS);
    let mut tasks = tokio::task::JoinSet::new();
    for player in 0..ROOM_PLAYERS {
        let hub = hub.clone();
        tasks.spawn(async move {
            let mut spins = 0u64;
            while Instant::now() < deadline {
                hub.request(
                    &format!("spinner-{player}"),
                    Request::Spin {
                        room,
                        client_seed: "bench".into(),
                    },
                    None,
                    0,
                    false,
                )
                .await
                .expect("spins");
                spins += 1;
            }
            spins
        });
    }
    let mut spins = 0;
    while let Some(done) = tasks.join_next().await {
        spins += done.expect("spinner");
    }
    let flushes = hub.store.flush_count() - flushes;
    let commits = hub.store.commit_count() - commits;
    let room_events = spins * 2;
    println!(
        "one room: {ROOM_PLAYERS} players, {spins} spins in {ROOM_SECONDS} s = {:.0} room events/s ({:.0} spins/s); {flushes} flushes, {:.1} commit requests per flush",
        room_events as f64 / ROOM_SECONDS as f64,
        spins as f64 / ROOM_SECONDS as f64,
        commits as f64 / flushes.max(1) as f64
    );
}

fn main() {
    // Criterion's harness is not used: these are throughput runs with one figure each.
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        joins().await;
        one_room().await;
    });
}
