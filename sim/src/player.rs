//! A simulated player: one client connection, a task that plays its script, and a task
//! that reads its events (fanout latency, stream positions, wallet credits, quiz
//! questions). What the player was told is kept for the checks at the end.

use crate::script::{Action, Activity, PlayerPlan, Profile, Shape, Step};
use crate::stats::Stats;
use playtree_client::{Client, ClientError, ClientOptions, Events};
use playtree_protocol::{ErrorCode, Event, EventEnvelope, RoomId, StreamId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // What these locks guard stays consistent if a holder panicked.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Microseconds since the Unix epoch: chat lines carry their send time so that every
/// receiver, in this process or another sim process on the machine, can time them.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// What the players share: the stats, the influencers' codes, and what the referral
/// checks need.
#[derive(Debug)]
pub struct World {
    pub stats: Arc<Stats>,
    /// Influencer i's referral code, once set up.
    pub codes: Mutex<Vec<Option<String>>>,
    /// Per influencer: claims of their code acknowledged, and claims whose outcome the
    /// sim never learned (the connection dropped before the answer).
    pub claims_acked: Vec<AtomicU64>,
    pub claims_in_doubt: Vec<AtomicU64>,
    /// Referees whose claim was acknowledged (the partner reports their conversions).
    pub referees: Mutex<Vec<String>>,
    /// Conversion reports, in the order first answered: (key, player, rewards).
    pub conversions: Mutex<Vec<(String, String, u32)>>,
    /// Idempotency violations seen by the partner (a repeated key answered differently).
    pub conversion_mismatches: Mutex<Vec<String>>,
    pub connected: AtomicU64,
    /// Times the server was killed during the run.
    pub crashes: AtomicU64,
    pub spins: AtomicU64,
    pub chats: AtomicU64,
    pub claims: AtomicU64,
    pub answers: AtomicU64,
    /// When the first claim was sent and the last acknowledged one answered.
    pub claims_span: Mutex<Option<(Instant, Instant)>>,
}

impl World {
    pub fn new(shape: &Shape, stats: Arc<Stats>) -> World {
        let influencers = shape.influencers();
        World {
            stats,
            codes: Mutex::new(vec![None; influencers]),
            claims_acked: (0..influencers).map(|_| AtomicU64::new(0)).collect(),
            claims_in_doubt: (0..influencers).map(|_| AtomicU64::new(0)).collect(),
            referees: Mutex::default(),
            conversions: Mutex::default(),
            conversion_mismatches: Mutex::default(),
            connected: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            spins: AtomicU64::new(0),
            chats: AtomicU64::new(0),
            claims: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            claims_span: Mutex::default(),
        }
    }

    /// Acknowledged claims per second over the span they were made in.
    pub fn claims_per_second(&self) -> Option<f64> {
        let (first, last) = (*lock(&self.claims_span))?;
        let acked: u64 = self
            .claims_acked
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum();
        let seconds = last.duration_since(first).as_secs_f64();
        (acked > 1 && seconds > 0.0).then(|| acked as f64 / seconds)
    }
}

/// The player's wallet as their own event stream tells it: the balance of the last
/// `PlayerSnapshot` (0 before any), plus every credit since, each grant once.
#[derive(Debug, Default)]
pub struct Ledger {
    pub base: u64,
    pub credited: u64,
    pub grants: HashSet<String>,
    pub snapshots: u32,
    /// A credit's `balance` that did not match the sum so far (the stream skipped or
    /// repeated something).
    pub mismatches: Vec<String>,
}

impl Ledger {
    pub fn expected(&self) -> u64 {
        self.base + self.credited
    }

    /// A `WalletCredited`: counted once per grant; its `balance` must be the sum so far.
    pub fn credit(&mut self, grant: &str, amount: u64, balance: u64) {
        if self.grants.insert(grant.to_owned()) {
            self.credited += amount;
        }
        if balance != self.expected() {
            let expected = self.expected();
            self.mismatches.push(format!(
                "{grant}: balance {balance}, the stream so far says {expected}"
            ));
        }
    }

    /// A `PlayerSnapshot`: the stream starts again from this balance, which can only be
    /// above what the stream credited so far (wallets are never debited).
    pub fn snapshot(&mut self, balance: u64) {
        if balance < self.expected() {
            let expected = self.expected();
            self.mismatches.push(format!(
                "a snapshot says {balance}, below the {expected} the stream had credited"
            ));
        }
        self.base = balance;
        self.credited = 0;
        self.snapshots += 1;
    }
}

/// What one player was told, for the checks.
#[derive(Debug, Default)]
pub struct Seen {
    pub ledger: Mutex<Ledger>,
    /// Per stream: the last (epoch, seq) received.
    pub positions: Mutex<HashMap<StreamId, (u64, u64)>>,
    /// Events that did not follow the previous one of their stream: (stream, had, got).
    pub gaps: Mutex<Vec<String>>,
    /// Prizes of acknowledged spins, and spins whose answer never came.
    pub spin_prizes: AtomicU64,
    pub spins_in_doubt: AtomicU64,
    /// Prizes the podiums the player saw gave them.
    pub podium_prizes: AtomicU64,
    /// When the last event of the player's own stream (wallet credits, snapshots)
    /// arrived: the checks ask for a wallet once this stream has gone quiet.
    pub own_stream_last_event: Mutex<Option<tokio::time::Instant>>,
    /// The player's requests sent and not yet answered (a quiz answer counts from its
    /// thinking pause on): the checks wait for these too.
    pub requests_unanswered: AtomicU64,
}

/// Counts one request of a player as unanswered for as long as it lives.
struct Unanswered<'a>(&'a AtomicU64);

impl<'a> Unanswered<'a> {
    fn new(requests_unanswered: &'a AtomicU64) -> Unanswered<'a> {
        requests_unanswered.fetch_add(1, Ordering::Relaxed);
        Unanswered(requests_unanswered)
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Player {
    pub plan: PlayerPlan,
    pub client: Client,
    pub room: Mutex<Option<RoomId>>,
    pub seen: Arc<Seen>,
    /// The load ended: questions are no longer answered.
    stopped: AtomicBool,
    world: Arc<World>,
}

fn describe(error: &ClientError) -> String {
    match error.code() {
        Some(code) => format!("{code:?}"),
        None => match error {
            ClientError::Timeout(_) => "timeout".into(),
            ClientError::Closed { .. } => "closed".into(),
            ClientError::Connect(_) => "connect".into(),
            ClientError::Protocol(_) => "protocol".into(),
            ClientError::Refused { .. } | ClientError::Server(_) => "refused".into(),
        },
    }
}

/// Whether a failed request may still have been carried out: the server never answered
/// (a timeout, a dropped connection), or answered that it does not know yet (5002
/// Timeout: "the request may still complete"; 5003 StoreFailure: "the outcome is unknown
/// until the server restarts").
fn in_doubt(error: &ClientError) -> bool {
    match error {
        ClientError::Timeout(_) | ClientError::Closed { .. } | ClientError::Connect(_) => true,
        ClientError::Server(reply) => {
            matches!(reply.code, ErrorCode::Timeout | ErrorCode::StoreFailure)
        }
        ClientError::Refused { .. } | ClientError::Protocol(_) => false,
    }
}

impl Player {
    pub async fn connect(
        world: Arc<World>,
        plan: PlayerPlan,
        url: &str,
        token: &str,
        options: ClientOptions,
    ) -> anyhow::Result<Arc<Player>> {
        let mut attempt = 0;
        let (client, events) = loop {
            match Client::connect_with(url, token, options.clone()).await {
                Ok(connected) => break connected,
                // A burst of connects can overflow the listen backlog: try again.
                Err(error) if attempt < 5 => {
                    attempt += 1;
                    world.stats.error(format!("connect: {}", describe(&error)));
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                }
                Err(error) => return Err(anyhow::anyhow!("{}: {error}", plan.id)),
            }
        };
        world.connected.fetch_add(1, Ordering::Relaxed);
        let player = Arc::new(Player {
            plan,
            client,
            room: Mutex::new(None),
            seen: Arc::new(Seen::default()),
            stopped: AtomicBool::new(false),
            world,
        });
        tokio::spawn(read_events(Arc::downgrade(&player), events));
        Ok(player)
    }

    fn room(&self) -> Option<RoomId> {
        *lock(&self.room)
    }

    /// Joins the player's room; an influencer makes their referral code. A transient
    /// failure (a timeout, a dropped connection) is tried again, twice.
    pub async fn set_up(&self) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            match self.try_set_up().await {
                Ok(()) => return Ok(()),
                Err(error)
                    if attempt < 2 && error.downcast_ref::<ClientError>().is_some_and(in_doubt) =>
                {
                    attempt += 1;
                    self.world.stats.error(format!(
                        "set-up: {}",
                        describe(error.downcast_ref::<ClientError>().expect("checked above"))
                    ));
                }
                Err(error) => {
                    return Err(error.context(format!("{} could not set up", self.plan.id)));
                }
            }
        }
    }

    async fn try_set_up(&self) -> anyhow::Result<()> {
        let room = match self.plan.activity {
            Activity::Quiz => self
                .client
                .quick_join_quiz()
                .await
                .map(|joined| joined.room),
            Activity::Wheel | Activity::Chat | Activity::Referee => self
                .client
                .quick_join_wheel(None)
                .await
                .map(|joined| joined.room),
        }
        .map_err(|error| anyhow::anyhow!("{} could not join a room: {error}", self.plan.id))?;
        *lock(&self.room) = Some(room);
        if self.plan.profile == Profile::Influencer {
            let code =
                self.client.referral_code().await.map_err(|error| {
                    anyhow::anyhow!("{}: no referral code: {error}", self.plan.id)
                })?;
            if let Some(slot) = lock(&self.world.codes).get_mut(self.plan.index) {
                *slot = Some(code);
            }
        }
        Ok(())
    }

    /// Plays `steps` from `start` until they end or `stop` is set. A quiz player has no
    /// steps (they answer what they are asked) and leaves the quiz at the end, so that
    /// no game goes on paying prizes while the wallets are checked.
    pub async fn play(&self, steps: Vec<Step>, start: tokio::time::Instant, stop: Arc<AtomicBool>) {
        let mut at = start;
        for step in steps {
            at += std::time::Duration::from_millis(step.after_ms);
            tokio::time::sleep_until(at).await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            self.act(step.action).await;
        }
        if self.plan.activity == Activity::Quiz {
            let mut ticker = tokio::time::interval(std::time::Duration::from_millis(100));
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
            }
            self.stopped.store(true, Ordering::Relaxed);
            let _unanswered = Unanswered::new(&self.seen.requests_unanswered);
            if let Some(room) = self.room()
                && let Err(error) = self.client.leave_room(room).await
            {
                self.world
                    .stats
                    .error(format!("leave: {}", describe(&error)));
            }
        }
    }

    async fn act(&self, action: Action) {
        let stats = &self.world.stats;
        let shard = self.plan.index;
        let Some(room) = self.room() else { return };
        let _unanswered = Unanswered::new(&self.seen.requests_unanswered);
        let began = Instant::now();
        let took = |began: Instant| began.elapsed().as_micros() as u64;
        match action {
            Action::Spin { client_seed } => {
                self.world.spins.fetch_add(1, Ordering::Relaxed);
                let result = self.client.spin(room, &client_seed).await;
                stats.request(shard, "spin", took(began));
                match result {
                    Ok(outcome) => {
                        stats.acknowledged("spin");
                        self.seen
                            .spin_prizes
                            .fetch_add(outcome.prize, Ordering::Relaxed);
                    }
                    Err(error) => {
                        if in_doubt(&error) {
                            self.seen.spins_in_doubt.fetch_add(1, Ordering::Relaxed);
                        }
                        stats.error(format!("spin: {}", describe(&error)));
                    }
                }
            }
            Action::Chat => {
                self.world.chats.fetch_add(1, Ordering::Relaxed);
                let text = format!("t={}", now_micros());
                let result = self.client.chat(room, &text).await;
                stats.request(shard, "chat", took(began));
                match result {
                    Ok(()) => stats.acknowledged("chat"),
                    Err(error) => stats.error(format!("chat: {}", describe(&error))),
                }
            }
            Action::Claim { influencer } => {
                let Some(code) = lock(&self.world.codes).get(influencer).cloned().flatten() else {
                    return;
                };
                self.world.claims.fetch_add(1, Ordering::Relaxed);
                let result = self.client.claim_referral(&code).await;
                stats.request(shard, "claim", took(began));
                match result {
                    Ok(_) => {
                        stats.acknowledged("claim");
                        let mut span = lock(&self.world.claims_span);
                        let first = span.map_or(began, |(first, _)| first.min(began));
                        *span = Some((first, Instant::now()));
                        drop(span);
                        self.world.claims_acked[influencer].fetch_add(1, Ordering::Relaxed);
                        lock(&self.world.referees).push(self.plan.id.clone());
                    }
                    Err(error) => {
                        if in_doubt(&error) {
                            self.world.claims_in_doubt[influencer].fetch_add(1, Ordering::Relaxed);
                        }
                        stats.error(format!("claim: {}", describe(&error)));
                    }
                }
            }
            Action::Reconnect => {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                self.client.reconnect_now();
            }
        }
    }

    /// Answers quiz question `index` of `room` with a choice drawn from the player's
    /// generator, after a pause drawn from it too.
    async fn answer(&self, rng: &mut ChaCha8Rng, room: RoomId, index: u32, choices: u32) {
        let _unanswered = Unanswered::new(&self.seen.requests_unanswered);
        let think_ms = rng.random_range(50..700);
        let choice = rng.random_range(0..choices.max(1));
        tokio::time::sleep(std::time::Duration::from_millis(think_ms)).await;
        let began = Instant::now();
        self.world.answers.fetch_add(1, Ordering::Relaxed);
        let result = self.client.answer(room, index, choice).await;
        self.world.stats.request(
            self.plan.index,
            "answer",
            began.elapsed().as_micros() as u64,
        );
        match result {
            Ok(()) => self.world.stats.acknowledged("answer"),
            Err(error) => self
                .world
                .stats
                .error(format!("answer: {}", describe(&error))),
        }
    }
}

/// Reads the player's events until the client is gone.
/// Holds the player weakly: once the run drops its players, their clients close, the
/// events end and so does this task.
async fn read_events(player: std::sync::Weak<Player>, mut events: Events) {
    let mut rng = None;
    while let Some(envelope) = events.next().await {
        let Some(player) = player.upgrade() else {
            return;
        };
        let rng =
            rng.get_or_insert_with(|| ChaCha8Rng::seed_from_u64(player.plan.seed ^ 0xa115_3e75));
        let stats = &player.world.stats;
        stats.events.fetch_add(1, Ordering::Relaxed);
        follow(&player.seen, &envelope);
        match envelope.event {
            Event::Chat { text, .. } => {
                if let Some(sent) = text.strip_prefix("t=").and_then(|t| t.parse::<u64>().ok()) {
                    stats.delivery(player.plan.index, now_micros().saturating_sub(sent));
                }
            }
            Event::WalletCredited {
                grant_id,
                amount,
                balance,
                ..
            } => lock(&player.seen.ledger).credit(&grant_id, amount, balance),
            Event::PlayerSnapshot { balance } => lock(&player.seen.ledger).snapshot(balance),
            Event::Question(question) if !player.stopped.load(Ordering::Relaxed) => {
                let player = player.clone();
                let mut question_rng = ChaCha8Rng::seed_from_u64(rng.random());
                tokio::spawn(async move {
                    player
                        .answer(
                            &mut question_rng,
                            question.room,
                            question.index,
                            question.choices.len() as u32,
                        )
                        .await;
                });
            }
            Event::Podium(podium) => {
                let prize: u64 = podium
                    .places
                    .iter()
                    .filter(|place| place.standing.player == player.plan.id)
                    .map(|place| place.prize)
                    .sum();
                player
                    .seen
                    .podium_prizes
                    .fetch_add(prize, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Checks that `envelope` follows the last event of its stream. Within an epoch, seq
/// rises by one, except that a snapshot (the history could not reach back) may jump
/// ahead; a stream followed already may change epoch only upward and only with its
/// snapshot; the first event of a stream followed anew may come at any position.
fn follow(seen: &Seen, envelope: &EventEnvelope) {
    let snapshot = matches!(
        envelope.event,
        Event::RoomSnapshot(_) | Event::PlayerSnapshot { .. }
    );
    if matches!(envelope.stream, StreamId::Player(_)) {
        *lock(&seen.own_stream_last_event) = Some(tokio::time::Instant::now());
    }
    let mut positions = lock(&seen.positions);
    let position = (envelope.epoch, envelope.seq);
    let Some(last) = positions.get_mut(&envelope.stream) else {
        positions.insert(envelope.stream.clone(), position);
        return;
    };
    let (epoch, seq) = *last;
    *last = position;
    let wrong = if envelope.epoch == epoch {
        let next = envelope.seq == seq + 1 || snapshot && envelope.seq > seq;
        (!next).then(|| format!("after seq {seq} came {} (epoch {epoch})", envelope.seq))
    } else if envelope.epoch < epoch {
        Some(format!("epoch {} came after epoch {epoch}", envelope.epoch))
    } else if !snapshot {
        Some(format!(
            "epoch {} began (after {epoch}/{seq}) without a snapshot",
            envelope.epoch
        ))
    } else {
        None
    };
    if let Some(wrong) = wrong {
        lock(&seen.gaps).push(format!("{:?}: {wrong}", envelope.stream));
    }
}

/// The partner reports conversions for acknowledged referees, about five a second, and
/// now and then repeats a key, which must get the first answer again.
pub async fn report_conversions(
    world: Arc<World>,
    partner: Arc<Client>,
    seed: u64,
    stop: Arc<AtomicBool>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xc0_4e5e);
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(200));
    let mut made = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let repeat = rng.random_range(0..10) == 0;
        let (key, player) = if repeat {
            let conversions = lock(&world.conversions);
            if conversions.is_empty() {
                continue;
            }
            let (key, player, _) = &conversions[rng.random_range(0..conversions.len())];
            (key.clone(), player.clone())
        } else {
            let referees = lock(&world.referees);
            if referees.is_empty() {
                continue;
            }
            let player = referees[rng.random_range(0..referees.len())].clone();
            made += 1;
            (format!("sim-{seed}-order-{made}"), player)
        };
        let began = Instant::now();
        let result = partner
            .report_conversion(&player, "purchase", 100, &key)
            .await;
        world
            .stats
            .request(0, "conversion", began.elapsed().as_micros() as u64);
        match result {
            Ok(rewards) => {
                world.stats.acknowledged("conversion");
                let mut conversions = lock(&world.conversions);
                match conversions.iter().find(|(known, _, _)| *known == key) {
                    Some((_, _, first)) if *first != rewards => {
                        lock(&world.conversion_mismatches).push(format!(
                            "key {key}: first answered {first} rewards, then {rewards}"
                        ));
                    }
                    Some(_) => {}
                    None => conversions.push((key, player, rewards)),
                }
            }
            Err(error) => world
                .stats
                .error(format!("conversion: {}", describe(&error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_the_server_may_still_carry_out_is_in_doubt() {
        let server = |code| ClientError::Server(playtree_protocol::ErrorReply::new(code, "x"));
        assert!(in_doubt(&server(ErrorCode::Timeout)));
        assert!(in_doubt(&server(ErrorCode::StoreFailure)));
        assert!(in_doubt(&ClientError::Timeout(
            std::time::Duration::from_secs(1)
        )));
        assert!(!in_doubt(&server(ErrorCode::ReferralAlreadyClaimed)));
    }

    fn envelope(stream: StreamId, epoch: u64, seq: u64) -> EventEnvelope {
        EventEnvelope {
            stream,
            epoch,
            seq,
            event: Event::PlayerSnapshot { balance: 0 },
        }
    }

    fn event(stream: StreamId, epoch: u64, seq: u64) -> EventEnvelope {
        EventEnvelope {
            event: Event::WalletCredited {
                grant_id: "g".into(),
                amount: 1,
                balance: 1,
                reason: String::new(),
            },
            ..envelope(stream, epoch, seq)
        }
    }

    #[test]
    fn a_stream_that_skips_repeats_or_changes_epoch_silently_is_a_gap() {
        let seen = Seen::default();
        let room = StreamId::Room(1);
        let mine = StreamId::Player("a".into());
        for envelope in [
            event(room.clone(), 1, 7), // the first event of a stream followed anew
            event(room.clone(), 1, 8),
            event(mine.clone(), 3, 1),
            envelope(room.clone(), 2, 0), // a new epoch starts with its snapshot
            event(room.clone(), 2, 1),
            envelope(room.clone(), 2, 9), // the history could not reach back: a snapshot
            event(room.clone(), 2, 10),
        ] {
            follow(&seen, &envelope);
        }
        assert!(lock(&seen.gaps).is_empty(), "{:?}", lock(&seen.gaps));
        follow(&seen, &event(room.clone(), 2, 12)); // skipped 11
        follow(&seen, &event(mine.clone(), 3, 1)); // repeated
        follow(&seen, &event(mine.clone(), 4, 1)); // a new epoch with no snapshot
        follow(&seen, &envelope(room.clone(), 1, 0)); // an epoch going back
        let gaps = lock(&seen.gaps).clone();
        assert_eq!(gaps.len(), 4, "{gaps:?}");
    }

    #[test]
    fn the_ledger_counts_each_grant_once_from_the_last_snapshot_and_checks_balances() {
        let mut ledger = Ledger::default();
        ledger.credit("g1", 10, 10);
        ledger.snapshot(100);
        ledger.credit("g2", 10, 110);
        ledger.credit("g2", 10, 110);
        assert_eq!(ledger.expected(), 110, "g2 counted once");
        assert!(ledger.mismatches.is_empty(), "{:?}", ledger.mismatches);
        ledger.credit("g3", 5, 200);
        assert_eq!(
            ledger.mismatches.len(),
            1,
            "a balance the stream does not add up to"
        );
        ledger.snapshot(50);
        assert_eq!(
            ledger.mismatches.len(),
            2,
            "a snapshot below what the stream credited"
        );
    }
}
