//! Stop the real binary with SIGTERM and start it again on the same data directory:
//! wallets, spin nonces, daily spin counts and seed commitments are all still there.

mod common;

use common::{ServerProcess, WAIT, base_overrides, start_binary};
use playtree_client::Client;
use std::process::Command;
use std::time::Duration;

fn sigterm_and_wait(mut process: ServerProcess) {
    let status = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = std::time::Instant::now() + WAIT * 2;
    loop {
        if let Some(status) = process.child.try_wait().expect("wait") {
            assert!(status.success(), "server exited with {status}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_sigterm_and_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("playtree.toml");
    std::fs::write(
        &config_path,
        base_overrides(&dir.path().join("data"), common::TEST_WHEEL),
    )
    .expect("config");
    let config = playtree::ServerConfig::load(Some(&config_path)).expect("config loads");
    let token = common::mint(&config, "alice", common::now_s(), 600);

    let first = start_binary(&config_path);
    let (alice, _events) = Client::connect(&format!("ws://{}", first.ws), &token)
        .await
        .expect("connect");
    let joined = alice.quick_join_wheel(Some("test")).await.expect("join");
    let first_spin = alice.spin(joined.room, "one").await.expect("spin");
    let second_spin = alice.spin(joined.room, "two").await.expect("spin");
    let balance = alice.wallet().await.expect("wallet");
    assert_eq!(balance, first_spin.prize + second_spin.prize);
    drop(alice);
    sigterm_and_wait(first);

    let second = start_binary(&config_path);
    let (alice, _events) = Client::connect(&format!("ws://{}", second.ws), &token)
        .await
        .expect("reconnect");
    assert_eq!(
        alice.wallet().await.expect("wallet"),
        balance,
        "wallet survives"
    );
    let rejoined = alice.quick_join_wheel(Some("test")).await.expect("rejoin");
    assert_eq!(rejoined.room, joined.room, "membership survives");
    assert_eq!(
        rejoined.fairness.commitment, joined.fairness.commitment,
        "seed commitment survives"
    );
    assert_eq!(rejoined.fairness.next_nonce, 2, "spin nonce survives");
    assert_eq!(
        rejoined.fairness.spins_today, 2,
        "daily spin count survives"
    );
    let third = alice.spin(joined.room, "three").await.expect("spin");
    assert_eq!(third.nonce, 2);
    assert_eq!(third.spins_left_today, 1);

    let balance = alice.wallet().await.expect("wallet");
    drop(alice);

    // A crash (SIGKILL, no snapshot, no final flush) loses nothing that was acknowledged:
    // replies are sent only after their events are durable.
    let mut crashed = second;
    crashed.child.kill().expect("SIGKILL");
    crashed.child.wait().expect("reaped");
    let third_process = start_binary(&config_path);
    let (alice, _events) = Client::connect(&format!("ws://{}", third_process.ws), &token)
        .await
        .expect("reconnect");
    assert_eq!(
        alice.wallet().await.expect("wallet"),
        balance,
        "wallet survives a crash"
    );
    let rejoined = alice.quick_join_wheel(Some("test")).await.expect("rejoin");
    assert_eq!(rejoined.fairness.next_nonce, 3, "nonce survives a crash");
    assert_eq!(
        rejoined.fairness.spins_today, 3,
        "daily count survives a crash"
    );

    // The seed committed before both restarts still explains every spin made under it.
    let reveal = alice.rotate_seed("test").await.expect("rotate");
    assert_eq!(reveal.revealed_commitment, joined.fairness.commitment);
    let wheel = rejoined.wheel.clone();
    for spin in [&first_spin, &second_spin, &third] {
        playtree_client::verify_spin(&wheel, spin, &reveal.revealed_seed).expect("verifies");
    }
    sigterm_and_wait(third_process);
}
