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
//!
//! How they run: every check is a task, at most `checks_in_flight_max` at once, a new
//! one starting as soon as one ends (no batch waits for its slowest). A wallet check
//! first waits, briefly, for the player's own stream to go quiet and their last requests
//! to be answered, then asks once, and asks again, with growing pauses, only while what
//! must hold does not yet: at 10,000 players every needless ask is 10,000 requests, and
//! asking a passivated session costs the server a durable commit. Partner requests go
//! through [`Partners`], which keeps each partner connection within the server's limits.

use crate::player::{Player, World, lock};
use crate::report::{Checks, Progress};
use crate::script::{Activity, Profile};
use playtree_client::{Client, ClientError};
use playtree_protocol::ReferralStats;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

/// How long one wallet check waits for the wallet to settle (grants still on their way).
pub const SETTLE: Duration = Duration::from_secs(30);
/// Checks running at once unless told otherwise (`--checks-in-flight`): enough to keep
/// the server busy, few enough that each one's requests are answered well within the
/// client's request timeout.
pub const CHECKS_IN_FLIGHT_DEFAULT: usize = 256;
/// Partner connections unless told otherwise (`--partner-connections`): a referral
/// player's wallet check makes one partner request besides its wallet. Eight paced
/// connections carry 6,400 a second; four (3,200) were what limited the checks of a
/// 10,000-player referral storm, with the server's core a third idle.
pub const PARTNER_CONNECTIONS_DEFAULT: usize = 8;
/// Requests one partner connection keeps in flight unless told otherwise: the server's
/// default `limits.requests_in_flight_max` (beyond it, the server answers 3002).
pub const PARTNER_IN_FLIGHT_DEFAULT: usize = 32;
/// Frames per second one partner connection sends unless told otherwise: below the
/// 1,000 the sim gives a server it owns (`limits.frames_per_second`), since past that
/// the server drops frames and soon closes the connection.
pub const PARTNER_FRAMES_PER_SECOND_DEFAULT: u32 = 800;
/// A player's own stream silent this long, with no request of theirs unanswered: what
/// was on its way to them has likely arrived, and their wallet is worth asking for.
const QUIET: Duration = Duration::from_millis(500);
/// The longest a wallet check waits for that quiet before asking anyway.
const QUIET_WAIT_MAX: Duration = Duration::from_secs(5);
/// While a request of the player is unanswered, the quiet is looked for this often (a
/// look at two counters, not a request).
const QUIET_LOOK_EVERY: Duration = Duration::from_millis(50);
/// The pause before asking again for a wallet that did not hold yet, doubled per ask
/// up to the max: grants late by a second cost a few asks, not one every 250 ms.
const ASK_AGAIN_PAUSE_MIN: Duration = Duration::from_millis(250);
const ASK_AGAIN_PAUSE_MAX: Duration = Duration::from_secs(4);
/// Failures listed per kind (the rest are counted).
const LISTED: usize = 20;

/// The limits the checks run within.
#[derive(Debug, Clone, Copy)]
pub struct CheckLimits {
    /// Checks running at once.
    pub checks_in_flight_max: usize,
    /// How long one wallet check waits for the wallet to settle.
    pub settle: Duration,
}

impl Default for CheckLimits {
    fn default() -> Self {
        CheckLimits {
            checks_in_flight_max: CHECKS_IN_FLIGHT_DEFAULT,
            settle: SETTLE,
        }
    }
}

/// What one partner connection may be sent, as the server limits it per connection.
#[derive(Debug, Clone, Copy)]
pub struct PartnerLimits {
    /// The server's `limits.requests_in_flight_max`, or less.
    pub requests_in_flight_max: usize,
    /// Below the server's `limits.frames_per_second`.
    pub frames_per_second: u32,
}

impl Default for PartnerLimits {
    fn default() -> Self {
        PartnerLimits {
            requests_in_flight_max: PARTNER_IN_FLIGHT_DEFAULT,
            frames_per_second: PARTNER_FRAMES_PER_SECOND_DEFAULT,
        }
    }
}

/// The partner connections the checks read referral stats through, taken in turn. Each
/// has at most `requests_in_flight_max` requests unanswered and sends at most
/// `frames_per_second`: the server refuses a request beyond the first limit (3002), and
/// drops frames beyond the second and then closes the connection (4023).
#[derive(Debug)]
pub struct Partners {
    connections: Vec<PartnerConnection>,
    next_connection_idx: AtomicUsize,
}

#[derive(Debug)]
struct PartnerConnection {
    client: Arc<Client>,
    in_flight: tokio::sync::Semaphore,
    pacer: Mutex<Pacer>,
}

impl Partners {
    pub fn new(clients: Vec<Arc<Client>>, limits: PartnerLimits) -> Partners {
        assert!(!clients.is_empty(), "the checks need a partner connection");
        assert!(limits.requests_in_flight_max > 0 && limits.frames_per_second > 0);
        let interval = Duration::from_secs(1) / limits.frames_per_second;
        Partners {
            connections: clients
                .into_iter()
                .map(|client| PartnerConnection {
                    client,
                    in_flight: tokio::sync::Semaphore::new(limits.requests_in_flight_max),
                    pacer: Mutex::new(Pacer::new(interval)),
                })
                .collect(),
            next_connection_idx: AtomicUsize::new(0),
        }
    }

    /// The first connection (the one that reports conversions during the load).
    pub fn first(&self) -> &Arc<Client> {
        &self.connections[0].client
    }

    /// `player`'s referral stats, through the next connection in turn, once it has room.
    async fn player_referral_stats(&self, player: &str) -> Result<ReferralStats, ClientError> {
        let connection_idx =
            self.next_connection_idx.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        let connection = &self.connections[connection_idx];
        // The semaphore lives as long as the connection and is never closed.
        let _slot = connection
            .in_flight
            .acquire()
            .await
            .expect("a partner connection's semaphore is never closed");
        let send_at = lock(&connection.pacer).reserve(Instant::now());
        tokio::time::sleep_until(send_at).await;
        connection.client.player_referral_stats(player).await
    }
}

/// Spaces sends `interval` apart: each reservation takes the next free moment, so a
/// crowd of senders never bursts past the rate.
#[derive(Debug)]
struct Pacer {
    interval: Duration,
    next_free: Option<Instant>,
}

impl Pacer {
    fn new(interval: Duration) -> Pacer {
        Pacer {
            interval,
            next_free: None,
        }
    }

    /// When a send asked for at `now` may go.
    fn reserve(&mut self, now: Instant) -> Instant {
        let send_at = self.next_free.map_or(now, |free| free.max(now));
        self.next_free = Some(send_at + self.interval);
        send_at
    }
}

/// Runs `check` on every item, at most `in_flight_max` at once, each as a task of its
/// own: a new one starts as soon as one ends. `on_done` hears how many have ended so
/// far. Answers every result (or how its task failed) in the order they ended.
pub async fn run_bounded<Item, Output, Check, Checking>(
    items: Vec<Item>,
    in_flight_max: usize,
    check: Check,
    mut on_done: impl FnMut(usize),
) -> Vec<Result<Output, JoinError>>
where
    Check: Fn(Item) -> Checking,
    Checking: Future<Output = Output> + Send + 'static,
    Output: Send + 'static,
{
    assert!(in_flight_max > 0, "at least one check runs at a time");
    let mut waiting = items.into_iter();
    let mut results = Vec::with_capacity(waiting.len());
    let mut running = JoinSet::new();
    loop {
        while running.len() < in_flight_max
            && let Some(item) = waiting.next()
        {
            running.spawn(check(item));
        }
        let Some(ended) = running.join_next().await else {
            break;
        };
        results.push(ended);
        on_done(results.len());
    }
    debug_assert!(waiting.next().is_none(), "every item was checked");
    results
}

/// Runs every check with the default limits; each failure is a line saying what did not
/// hold.
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
    let partners = Arc::new(Partners::new(
        vec![partner.clone()],
        PartnerLimits::default(),
    ));
    let limits = CheckLimits {
        settle,
        ..CheckLimits::default()
    };
    check_with(players, world, &partners, limits, &Progress::hidden())
        .await
        .failures
}

/// What the checks found, and what they took.
#[derive(Debug)]
pub struct Checked {
    /// Each a line saying what did not hold (empty: everything held).
    pub failures: Vec<String>,
    pub checks: Checks,
}

/// One check: a player's wallet, or an influencer's count of referees.
#[derive(Debug)]
enum Subject {
    Wallet(Arc<Player>),
    Referees {
        influencer_idx: usize,
        player: Arc<Player>,
    },
}

/// What the checks asked of the server.
#[derive(Debug, Default)]
struct Asked {
    requests: AtomicU64,
    /// Wallets asked for again because they did not hold yet.
    asked_again: AtomicU64,
}

/// A check that did not hold: what kind it is, whose, and what it found.
#[derive(Debug)]
struct Failure {
    kind: Kind,
    player_idx: usize,
    line: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wallet,
    Referees,
}

/// Runs every check within `limits`, telling `progress` how many have ended.
pub async fn check_with(
    players: &[Arc<Player>],
    world: &Arc<World>,
    partners: &Arc<Partners>,
    limits: CheckLimits,
    progress: &Progress,
) -> Checked {
    let began = Instant::now();
    // Wallets first: an influencer's count is one ask, a wallet may take several, so the
    // slow ones start early.
    let mut subjects: Vec<Subject> = players.iter().cloned().map(Subject::Wallet).collect();
    subjects.extend(
        players
            .iter()
            .filter(|player| player.plan.profile == Profile::Influencer)
            .enumerate()
            .map(|(influencer_idx, player)| Subject::Referees {
                influencer_idx,
                player: player.clone(),
            }),
    );
    let n_checks = subjects.len();
    progress.checks_started(n_checks, limits.checks_in_flight_max);
    let asked = Arc::new(Asked::default());
    let results = run_bounded(
        subjects,
        limits.checks_in_flight_max,
        |subject| {
            let (world, partners, asked) = (world.clone(), partners.clone(), asked.clone());
            async move { check_subject(subject, &world, &partners, &asked, limits.settle).await }
        },
        |n_done| progress.checked(n_done, n_checks),
    )
    .await;

    let mut wallets = Vec::new();
    let mut referrals = Vec::new();
    for result in results {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => match failure.kind {
                Kind::Wallet => wallets.push((failure.player_idx, failure.line)),
                Kind::Referees => referrals.push((failure.player_idx, failure.line)),
            },
            Err(error) => wallets.push((usize::MAX, format!("a check failed: {error}"))),
        }
    }
    let in_player_order = |mut lines: Vec<(usize, String)>| {
        lines.sort_by_key(|(player_idx, _)| *player_idx);
        lines.into_iter().map(|(_, line)| line).collect::<Vec<_>>()
    };

    let mut failures = Vec::new();
    listed(&mut failures, "wallet", in_player_order(wallets));
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
    listed(&mut failures, "referral", in_player_order(referrals));
    listed(
        &mut failures,
        "conversion",
        lock(&world.conversion_mismatches).clone(),
    );
    let checks = Checks {
        seconds: began.elapsed().as_secs_f64(),
        checks: n_checks as u64,
        requests: asked.requests.load(Ordering::Relaxed),
        asked_again: asked.asked_again.load(Ordering::Relaxed),
        in_flight_max: limits.checks_in_flight_max,
        failures: failures.len(),
        // Only the caller knows the processes.
        server_cpu_seconds: None,
        sim_cpu_seconds: None,
    };
    Checked { failures, checks }
}

/// Adds the first [`LISTED`] of `lines` to `failures`, and a count of the rest.
fn listed(failures: &mut Vec<String>, kind: &str, lines: Vec<String>) {
    let total = lines.len();
    failures.extend(lines.into_iter().take(LISTED));
    if total > LISTED {
        failures.push(format!("... and {} more {kind} failures", total - LISTED));
    }
}

async fn check_subject(
    subject: Subject,
    world: &World,
    partners: &Partners,
    asked: &Asked,
    settle: Duration,
) -> Result<(), Failure> {
    match subject {
        Subject::Wallet(player) => check_wallet(&player, partners, asked, settle)
            .await
            .map_err(|line| Failure {
                kind: Kind::Wallet,
                player_idx: player.plan.index,
                line,
            }),
        Subject::Referees {
            influencer_idx,
            player,
        } => check_referees(&player, influencer_idx, world, partners, asked)
            .await
            .map_err(|line| Failure {
                kind: Kind::Referees,
                player_idx: player.plan.index,
                line,
            }),
    }
}

/// An influencer's referees as the server counts them against the claims the sim saw.
async fn check_referees(
    player: &Player,
    influencer_idx: usize,
    world: &World,
    partners: &Partners,
    asked: &Asked,
) -> Result<(), String> {
    let acked = world.claims_acked[influencer_idx].load(Ordering::Relaxed);
    let doubtful = world.claims_in_doubt[influencer_idx].load(Ordering::Relaxed);
    asked.requests.fetch_add(1, Ordering::Relaxed);
    match partners.player_referral_stats(&player.plan.id).await {
        Ok(stats) => {
            let counted = stats.referees_by_level.first().copied().unwrap_or(0);
            if counted < acked || counted > acked + doubtful {
                return Err(format!(
                    "{}: the server counts {counted} referees; the sim saw {acked} claims acknowledged and {doubtful} in doubt",
                    player.plan.id
                ));
            }
            Ok(())
        }
        Err(error) => Err(format!("{}: stats: {error}", player.plan.id)),
    }
}

/// One player's wallet against their stream and what they were told: asked for once
/// their stream has gone quiet, and again, with growing pauses, until it holds or
/// `settle` passes.
async fn check_wallet(
    player: &Player,
    partners: &Partners,
    asked: &Asked,
    settle: Duration,
) -> Result<(), String> {
    let id = &player.plan.id;
    let referral =
        player.plan.profile == Profile::Influencer || player.plan.activity == Activity::Referee;
    let began = Instant::now();
    let deadline = began + settle;
    wait_for_quiet(player, (began + QUIET_WAIT_MAX).min(deadline)).await;
    let mut pause = ASK_AGAIN_PAUSE_MIN;
    loop {
        asked.requests.fetch_add(1, Ordering::Relaxed);
        let wallet = player
            .client
            .wallet()
            .await
            .map_err(|error| format!("{id}: wallet: {error}"));
        // With no wallet there is nothing to compare the stats with.
        let earned = match (&wallet, referral) {
            (Ok(_), true) => {
                asked.requests.fetch_add(1, Ordering::Relaxed);
                partners
                    .player_referral_stats(id)
                    .await
                    .map(|stats| stats.earned)
                    .map_err(|error| format!("{id}: referral stats: {error}"))
            }
            (Ok(_), false) | (Err(_), _) => Ok(0),
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
        let now = Instant::now();
        if now >= deadline {
            return Err(last);
        }
        asked.asked_again.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(ASK_AGAIN_PAUSE_MAX);
    }
}

/// Waits until no request of the player's is unanswered and their own stream has been
/// silent for [`QUIET`], or until `until`. Asked sooner, the server would likely answer
/// with a wallet that the credits still on their way do not match yet, and be asked
/// again.
async fn wait_for_quiet(player: &Player, until: Instant) {
    loop {
        let now = Instant::now();
        let look_again_at = if player.seen.requests_unanswered.load(Ordering::Relaxed) > 0 {
            now + QUIET_LOOK_EVERY
        } else {
            match *lock(&player.seen.own_stream_last_event) {
                Some(last_event) if now < last_event + QUIET => last_event + QUIET,
                _ => return,
            }
        };
        if now >= until {
            return;
        }
        tokio::time::sleep_until(look_again_at.min(until)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_scheduler_keeps_its_bound_fills_it_and_runs_every_check() {
        const IN_FLIGHT_MAX: usize = 8;
        const N_CHECKS: usize = 200;
        let running = Arc::new(AtomicUsize::new(0));
        let running_max = Arc::new(AtomicUsize::new(0));
        let mut reported = Vec::new();
        let scheduled = run_bounded(
            (0..N_CHECKS).collect(),
            IN_FLIGHT_MAX,
            |check_idx| {
                let (running, running_max) = (running.clone(), running_max.clone());
                async move {
                    let now_running = running.fetch_add(1, Ordering::SeqCst) + 1;
                    running_max.fetch_max(now_running, Ordering::SeqCst);
                    // Checks that take different times, so that they end out of order,
                    // and that each yield at least once, so that the bound is reached.
                    for _ in 0..=check_idx % 7 {
                        tokio::task::yield_now().await;
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    check_idx
                }
            },
            |n_done| reported.push(n_done),
        );
        let results = tokio::time::timeout(Duration::from_secs(10), scheduled)
            .await
            .expect("the checks end in time");
        let mut checked: Vec<usize> = results
            .into_iter()
            .map(|result| result.expect("a fake check does not panic"))
            .collect();
        checked.sort_unstable();
        assert_eq!(checked, (0..N_CHECKS).collect::<Vec<_>>(), "each once");
        let running_max = running_max.load(Ordering::SeqCst);
        assert_eq!(running_max, IN_FLIGHT_MAX, "{running_max} ran at once");
        assert_eq!(reported, (1..=N_CHECKS).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_scheduler_refills_as_checks_end_rather_than_by_batches() {
        // One check never ends until every other has: with batches, the others behind it
        // would wait for it.
        const IN_FLIGHT_MAX: usize = 4;
        const N_CHECKS: usize = 50;
        let others_done = Arc::new(tokio::sync::Semaphore::new(0));
        let scheduled = run_bounded(
            (0..N_CHECKS).collect(),
            IN_FLIGHT_MAX,
            |check_idx: usize| {
                let others_done = others_done.clone();
                async move {
                    if check_idx == 0 {
                        let _all = others_done
                            .acquire_many(N_CHECKS as u32 - 1)
                            .await
                            .expect("never closed");
                    } else {
                        others_done.add_permits(1);
                    }
                    check_idx
                }
            },
            |_| {},
        );
        let results = tokio::time::timeout(Duration::from_secs(10), scheduled)
            .await
            .expect("the other checks went on beside the slow one");
        let order: Vec<usize> = results.into_iter().flatten().collect();
        assert_eq!(order.last(), Some(&0), "the slow one ended last");
        assert_eq!(order.len(), N_CHECKS);
    }

    #[test]
    fn the_pacer_spaces_sends_and_does_not_save_up_idle_time() {
        let interval = Duration::from_millis(2);
        let mut pacer = Pacer::new(interval);
        let start = Instant::now();
        let slots: Vec<Instant> = (0..5).map(|_| pacer.reserve(start)).collect();
        for (slot_idx, slot) in slots.iter().enumerate() {
            assert_eq!(*slot, start + interval * slot_idx as u32);
        }
        // After a quiet second, the next send goes at once, and the one after waits.
        let later = start + Duration::from_secs(1);
        assert_eq!(pacer.reserve(later), later);
        assert_eq!(pacer.reserve(later), later + interval);
    }
}
