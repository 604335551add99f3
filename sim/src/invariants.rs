//! The checks at the end of a run, against the server itself (each player's wallet
//! through their own connection, referral stats through a partner token):
//!
//! - every player's wallet equals what their own event stream said (the balance of its
//!   last snapshot plus every credit since, each grant once), and every credit's
//!   balance matched the sum so far;
//! - no stream skipped or repeated an event, for any client, across its reconnects;
//! - nothing acknowledged was lost: a wallet holds at least the prizes of the spins it
//!   was told of, the podium prizes it saw and the referral rewards credited to it;
//!   and for a player with nothing in doubt (no request of theirs left unanswered, no
//!   quiz), crash or not, exactly that: nothing paid twice after a recovery either;
//! - each influencer's referees, as the server counts them, are the claims the sim saw
//!   acknowledged (plus at most those left in doubt by a crash);
//! - a repeated conversion key got its first answer.

use crate::player::{Player, World, lock};
use crate::script::{Activity, Profile};
use playtree_client::Client;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long the checks wait for the wallets to settle (grants still on their way).
const SETTLE: Duration = Duration::from_secs(30);
/// Wallets checked at once (each may also ask the partner's connection, which has its
/// own in-flight limit).
const AT_ONCE: usize = 16;
/// Failures listed per kind (the rest are counted).
const LISTED: usize = 20;

/// Runs every check; each failure is a line saying what did not hold.
pub async fn check(
    players: &[Arc<Player>],
    world: &Arc<World>,
    partner: &Arc<Client>,
) -> Vec<String> {
    check_with_settle(players, world, partner, SETTLE).await
}

/// [`check`], waiting at most `settle` for each wallet to settle.
pub async fn check_with_settle(
    players: &[Arc<Player>],
    world: &Arc<World>,
    partner: &Arc<Client>,
    settle: Duration,
) -> Vec<String> {
    let mut failures = Vec::new();
    let listed = |failures: &mut Vec<String>, kind: &str, lines: Vec<String>| {
        let total = lines.len();
        failures.extend(lines.into_iter().take(LISTED));
        if total > LISTED {
            failures.push(format!("... and {} more {kind} failures", total - LISTED));
        }
    };

    let mut checking = tokio::task::JoinSet::new();
    let mut wallets = Vec::new();
    for chunk in players.chunks(AT_ONCE) {
        for player in chunk {
            let player = player.clone();
            let partner = partner.clone();
            checking.spawn(async move { check_wallet(&player, &partner, settle).await });
        }
        while let Some(done) = checking.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(failure)) => wallets.push(failure),
                Err(error) => wallets.push(format!("a wallet check failed: {error}")),
            }
        }
    }
    listed(&mut failures, "wallet", wallets);

    // Read after the wallets settled: events that were still on their way are in.
    let mut gaps = Vec::new();
    let mut mismatches = Vec::new();
    for player in players {
        for gap in lock(&player.seen.gaps).iter() {
            gaps.push(format!("{}: stream gap: {gap}", player.plan.id));
        }
        for mismatch in lock(&player.seen.ledger).mismatches.iter() {
            mismatches.push(format!(
                "{}: credit out of step: {mismatch}",
                player.plan.id
            ));
        }
    }
    listed(&mut failures, "stream gap", gaps);
    listed(&mut failures, "credit", mismatches);

    let mut referrals = Vec::new();
    for (index, player) in players
        .iter()
        .filter(|player| player.plan.profile == Profile::Influencer)
        .enumerate()
    {
        let acked = world.claims_acked[index].load(Ordering::Relaxed);
        let doubtful = world.claims_in_doubt[index].load(Ordering::Relaxed);
        match partner.player_referral_stats(&player.plan.id).await {
            Ok(stats) => {
                let counted = stats.referees_by_level.first().copied().unwrap_or(0);
                if counted < acked || counted > acked + doubtful {
                    referrals.push(format!(
                        "{}: the server counts {counted} referees; the sim saw {acked} claims acknowledged and {doubtful} in doubt",
                        player.plan.id
                    ));
                }
            }
            Err(error) => referrals.push(format!("{}: stats: {error}", player.plan.id)),
        }
    }
    listed(&mut failures, "referral", referrals);
    listed(
        &mut failures,
        "conversion",
        lock(&world.conversion_mismatches).clone(),
    );
    failures
}

/// One player's wallet against their stream and what they were told, polled until it
/// settles or `settle` passes.
async fn check_wallet(player: &Player, partner: &Client, settle: Duration) -> Result<(), String> {
    let id = &player.plan.id;
    let referral =
        player.plan.profile == Profile::Influencer || player.plan.activity == Activity::Referee;
    let deadline = tokio::time::Instant::now() + settle;
    loop {
        let wallet = player
            .client
            .wallet()
            .await
            .map_err(|error| format!("{id}: wallet: {error}"));
        let earned = if referral {
            partner
                .player_referral_stats(id)
                .await
                .map(|stats| stats.earned)
                .map_err(|error| format!("{id}: referral stats: {error}"))
        } else {
            Ok(0)
        };
        let last = match (wallet, earned) {
            (Ok(wallet), Ok(earned)) => {
                let expected = lock(&player.seen.ledger).expected();
                let spins = player.seen.spin_prizes.load(Ordering::Relaxed);
                let podiums = player.seen.podium_prizes.load(Ordering::Relaxed);
                let told = spins + podiums + earned;
                let doubt = player.seen.spins_in_doubt.load(Ordering::Relaxed) > 0;
                // A quiz player may be paid for a podium they did not see (they left at
                // the end of the load as it was announced).
                let exact = !doubt && player.plan.activity != Activity::Quiz;
                let holds = wallet == expected && wallet >= told && (!exact || wallet == told);
                if holds {
                    return Ok(());
                }
                format!(
                    "{id}: wallet {wallet}; its stream says {expected}; acknowledged: {spins} from spins, {podiums} from podiums, {earned} from referrals{}",
                    if exact {
                        " (nothing in doubt: must be equal)"
                    } else {
                        ""
                    }
                )
            }
            (Err(error), _) | (_, Err(error)) => error,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
