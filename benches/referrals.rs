//! Durable referral claims with activation rewards, over a store of existing players.
//!
//! Setup: 100,000 players joined through the real claim path: 100 influencers refer
//! about half of them (hundreds each), the rest hang in chains below random earlier
//! players, at most 8 levels deep, so most players refer nobody. Then, at 16 and at 64
//! concurrent clients, new players each claim the code of an existing player (half of
//! the time an influencer's) and at once finish a first game (their activation pays up
//! to three levels of rewards, concurrently with the claims). Every claim is answered
//! only once durable (fdatasync). Reports claims/s and claim latency p50/p99.
//!
//! Run: `cargo bench --bench referrals` (release). `--players N` and `--claims N` change
//! the sizes.

mod common;

use playtree_actors::Hub;
use playtree_actors::config::GameConfig;
use playtree_protocol::{ReplyBody, Request};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::sync::Arc;
use std::time::Instant;

const INFLUENCERS: usize = 100;
const DEPTH_MAX: u32 = 8;

async fn hub(dir: &std::path::Path, players: usize) -> Hub {
    let mut config = GameConfig::default();
    config.actors.sessions_max = players * 3;
    config.referral.trees_max = players;
    config.referral.tree_players_max = players * 3;
    // Influencers refer hundreds: no velocity limit in this run.
    config.referral.claims_per_referrer_per_hour = 0;
    config.referral.rewards_per_player_per_day = 0;
    config.wheels = vec![common::bench_wheel(1)];
    common::start_hub(dir, config).await
}

async fn ask(hub: &Hub, player: &str, request: Request) -> ReplyBody {
    hub.request(player, request, None, 0, false)
        .await
        .unwrap_or_else(|error| panic!("{player}: {error:?}"))
}

async fn code_of(hub: &Hub, player: &str) -> String {
    match ask(hub, player, Request::GetReferralCode).await {
        ReplyBody::ReferralCode { code } => code,
        other => panic!("unexpected {other:?}"),
    }
}

/// Setup players claim in batches of this many at once.
const SETUP_BATCH: usize = 2_000;

/// Who each setup player claims: an influencer half of the time, else a player of an
/// earlier batch (so that nobody is claimed before their own claim is done) less than
/// `DEPTH_MAX` deep.
fn plan(players: usize, rng: &mut StdRng) -> Vec<Option<usize>> {
    let mut depth = vec![0u32; players];
    let mut referrer = vec![None; players];
    for player in INFLUENCERS..players {
        let earlier = (player - INFLUENCERS) / SETUP_BATCH * SETUP_BATCH + INFLUENCERS;
        let chosen = if earlier == INFLUENCERS || rng.random_bool(0.5) {
            rng.random_range(0..INFLUENCERS)
        } else {
            loop {
                let candidate = rng.random_range(INFLUENCERS..earlier);
                if depth[candidate] < DEPTH_MAX {
                    break candidate;
                }
            }
        };
        depth[player] = depth[chosen] + 1;
        referrer[player] = Some(chosen);
    }
    referrer
}

/// Runs `work(index)` for `0..count` with `concurrency` tasks; answers the latencies
/// (µs) and the wall time.
async fn run<F, Fut>(count: usize, concurrency: usize, work: F) -> (Vec<u64>, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (work, next) = (work.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= count {
                    break latencies;
                }
                let began = Instant::now();
                work(index).await;
                latencies.push(began.elapsed().as_micros() as u64);
            }
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    (latencies, elapsed)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(f64::NAN, |us| *us as f64 / 1000.0)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|arg| arg == name)
        .and_then(|at| args.get(at + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let players = arg("--players", 100_000);
    let claims = arg("--claims", 20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let hub = hub(dir.path(), players + 2 * claims).await;
        let mut rng = StdRng::seed_from_u64(2026);
        let referrers = Arc::new(plan(players, &mut rng));
        let codes = Arc::new(dashmap::DashMap::<usize, String>::new());

        // Setup, in the order of the plan (a referrer joins before its referees), 64 at
        // a time; a referrer's code is made on first use.
        let started = Instant::now();
        let mut done = INFLUENCERS;
        while done < players {
            let batch_end = (done + SETUP_BATCH).min(players);
            let (hub, referrers, codes) = (hub.clone(), referrers.clone(), codes.clone());
            let base = done;
            run(batch_end - base, 64, move |offset| {
                let (hub, referrers, codes) = (hub.clone(), referrers.clone(), codes.clone());
                async move {
                    let player = base + offset;
                    let Some(referrer) = referrers[player] else { return };
                    let code = match codes.get(&referrer).map(|code| code.clone()) {
                        Some(code) => code,
                        None => {
                            let code = code_of(&hub, &format!("p{referrer}")).await;
                            codes.insert(referrer, code.clone());
                            code
                        }
                    };
                    ask(&hub, &format!("p{player}"), Request::ClaimReferral { code }).await;
                }
            })
            .await;
            done = batch_end;
        }
        println!(
            "setup: {players} players in referral trees ({INFLUENCERS} influencers, depth <= {DEPTH_MAX}) in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        for (round, concurrency) in [16usize, 64].into_iter().enumerate() {
            let (flushes, commits) = (hub.store.flush_count(), hub.store.commit_count());
            let (hub2, codes2) = (hub.clone(), codes.clone());
            let seed = 7 + round as u64;
            let picks: Arc<Vec<usize>> = Arc::new({
                let mut rng = StdRng::seed_from_u64(seed);
                (0..claims)
                    .map(|_| {
                        if rng.random_bool(0.5) {
                            rng.random_range(0..INFLUENCERS)
                        } else {
                            rng.random_range(INFLUENCERS..players)
                        }
                    })
                    .collect()
            });
            // Codes made before the clock starts: a claim is what is measured.
            for referrer in picks.iter() {
                if !codes.contains_key(referrer) {
                    let code = code_of(&hub, &format!("p{referrer}")).await;
                    codes.insert(*referrer, code);
                }
            }
            let (latencies, elapsed) = run(claims, concurrency, move |index| {
                let (hub, codes, picks) = (hub2.clone(), codes2.clone(), picks.clone());
                async move {
                    let referee = format!("new-{round}-{index}");
                    let code = codes.get(&picks[index]).map(|code| code.clone()).expect("code");
                    ask(&hub, &referee, Request::ClaimReferral { code }).await;
                    // The referee's first game: its ancestors' activation rewards follow.
                    hub.game_finished(&referee);
                }
            })
            .await;
            let flushes = hub.store.flush_count() - flushes;
            let commits = hub.store.commit_count() - commits;
            println!(
                "referrals: {concurrency} concurrent clients, {claims} claims (each then activated) in {elapsed:.2} s = {:.0} claims/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.1} commit requests per flush",
                claims as f64 / elapsed,
                percentile(&latencies, 0.50),
                percentile(&latencies, 0.99),
                percentile(&latencies, 1.0),
                commits as f64 / flushes.max(1) as f64
            );
        }
    });
}
