//! The simulation harness in the test suite: short runs of the `mixed` and `crash`
//! scenarios (fixed seeds) against the real binary must hold every invariant; and the
//! checks themselves catch a wallet that disagrees with what a player was told, a gap
//! in a stream, and a referral count the sim did not make.

mod common;

use common::{TestServer, WAIT};
use playtree_sim::script::{Activity, PlayerPlan, Profile, Scenario, Shape};
use playtree_sim::{Args, player, run};
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn args(scenario: Scenario, players: usize, seconds: u64, seed: u64) -> Args {
    let mut args = Args::for_scenario(scenario, players, seconds, seed);
    args.server_bin = Some(env!("CARGO_BIN_EXE_playtree").into());
    args
}

/// The two runs take turns: each is sized for the two cores alone.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn passes(args: Args) -> playtree_sim::Report {
    let _turn = ONE_RUN_AT_A_TIME.lock().await;
    let report = tokio::time::timeout(std::time::Duration::from_secs(300), run(args))
        .await
        .expect("the run ends in time")
        .expect("the run completes");
    assert!(report.passed(), "{}", report.summary());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_mixed_run_holds_every_invariant() {
    let report = passes(args(Scenario::Mixed, 500, 20, 2026)).await;
    // The server carried the load out, not only refused it.
    for op in ["spin", "chat", "claim", "answer", "conversion"] {
        assert!(
            report.acknowledged.get(op).copied().unwrap_or(0) > 0,
            "no {op} acknowledged: {}",
            report.summary()
        );
    }
    assert!(report.deliveries > 0 && report.reconnects > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_crash_run_loses_nothing_acknowledged() {
    let report = passes(args(Scenario::Crash, 500, 20, 7)).await;
    assert!(
        report.kills >= 1,
        "the server was killed: {}",
        report.summary()
    );
    assert!(report.spins > 0 && report.claims > 0);
}

/// One simulated player connected to `server`, as the sim makes them.
async fn sim_player(
    server: &TestServer,
    world: &Arc<player::World>,
    id: &str,
    profile: Profile,
) -> Arc<player::Player> {
    let plan = PlayerPlan {
        index: 0,
        id: id.to_owned(),
        profile,
        activity: Activity::Wheel,
        seed: 1,
    };
    tokio::time::timeout(
        WAIT,
        player::Player::connect(
            world.clone(),
            plan,
            &server.url(),
            &server.token(id),
            playtree_client::ClientOptions::default(),
        ),
    )
    .await
    .expect("connect in time")
    .expect("connects")
}

#[tokio::test]
async fn the_checks_catch_referral_counts_that_differ_from_the_claims_made() {
    let server = TestServer::start("").await;
    let shape = Shape {
        scenario: Scenario::ReferralStorm,
        players: 1,
        seed: 1,
        period_ms: 1000,
        claims_per_second: 1.0,
    };
    let world = Arc::new(player::World::new(&shape, Arc::default()));
    let alice = sim_player(&server, &world, "alice", Profile::Influencer).await;
    let partner = Arc::new(server.connect_partner("shop").await);
    let players = vec![alice.clone()];
    let check = || playtree_sim::invariants::check(&players, &world, &partner);
    assert_eq!(
        check().await,
        Vec::<String>::new(),
        "nothing happened: all holds"
    );

    // A claim the sim saw acknowledged that the server does not count.
    world.claims_acked[0].store(1, Ordering::Relaxed);
    let failures = check().await;
    assert!(
        failures
            .iter()
            .any(|line| line.contains("counts 0 referees")),
        "{failures:?}"
    );
    world.claims_acked[0].store(0, Ordering::Relaxed);

    // A referee the sim did not make.
    let code = alice.client.referral_code().await.expect("code");
    let (bob, _) = server.connect("bob").await;
    bob.claim_referral(&code).await.expect("claimed");
    let failures = check().await;
    assert!(
        failures
            .iter()
            .any(|line| line.contains("counts 1 referees")),
        "{failures:?}"
    );
}

/// A casual player the sim checks, and a partner that is not one (it is not asked).
async fn wallet_failures(
    server: &TestServer,
    bob: Arc<player::Player>,
    world: &Arc<player::World>,
) -> Vec<String> {
    let partner = Arc::new(server.connect("carol").await.0);
    playtree_sim::invariants::check_with_settle(
        &[bob],
        world,
        &partner,
        std::time::Duration::from_millis(500),
    )
    .await
}

#[tokio::test]
async fn the_wallet_check_fails_on_a_missing_prize_an_extra_one_or_a_stream_that_disagrees() {
    let server = TestServer::start("").await;
    let shape = Shape {
        scenario: Scenario::Wheel,
        players: 1,
        seed: 1,
        period_ms: 1000,
        claims_per_second: 1.0,
    };
    let world = Arc::new(player::World::new(&shape, Arc::default()));
    let bob = sim_player(&server, &world, "bob", Profile::Casual).await;

    // An acknowledged prize the wallet does not hold.
    bob.seen.spin_prizes.store(25, Ordering::Relaxed);
    let failures = wallet_failures(&server, bob.clone(), &world).await;
    assert!(
        failures
            .iter()
            .any(|line| line.contains("wallet 0") && line.contains("25 from spins")),
        "{failures:?}"
    );
    bob.seen.spin_prizes.store(0, Ordering::Relaxed);

    // A stream that says more than the wallet holds.
    bob.seen.ledger.lock().expect("ledger").credited = 10;
    let failures = wallet_failures(&server, bob.clone(), &world).await;
    assert!(
        failures
            .iter()
            .any(|line| line.contains("its stream says 10")),
        "{failures:?}"
    );
    bob.seen.ledger.lock().expect("ledger").credited = 0;

    // Coins the wallet holds that nothing acknowledged (paid twice, say): with nothing in
    // doubt, the wallet must equal what the player was told.
    let room = bob
        .client
        .quick_join_wheel(None)
        .await
        .expect("joined")
        .room;
    let prize = loop {
        let spin = bob.client.spin(room, "s").await.expect("spun");
        if spin.prize > 0 {
            break spin.prize;
        }
    };
    let failures = wallet_failures(&server, bob.clone(), &world).await;
    assert!(
        failures
            .iter()
            .any(|line| line.contains(&format!("wallet {prize}")) && line.contains("must be equal")),
        "{failures:?}"
    );
}
