//! Crash under load: the real binary serves several players spinning (and chatting) as
//! fast as they can and others playing quick quizzes (answering every question), and is
//! killed with SIGKILL at a random moment, round after round, on the same data
//! directory. After each restart:
//!
//! 1. every acknowledged spin is still there (the player's next nonce is past it and the
//!    wallet holds at least the acknowledged prizes);
//! 2. once everything has settled, each wallet equals exactly the sum of the prizes of
//!    every spin drawn (nonces `0..next_nonce`), acknowledged or not, recomputed here
//!    from the server seed revealed by a rotation;
//! 3. so no grant is credited twice (or lost).
//!
//! Meanwhile a chain of referral players grows by one claim a round, and a partner
//! reports conversions (a key repeated now and then).
//!
//! At the end the server is killed once more and the test reads its store itself: the
//! sum of all wallets plus the grants still owed (in an outbox, not yet credited) equals
//! the sum of every grant every room and referral tree ever issued (spin prizes, quiz
//! podiums and referral rewards alike); every acknowledged claim is in its referrer's
//! tree; and every tree's counters equal a recount from its parent links.
//!
//! `PLAYTREE_CRASH_SEED` (u64) reproduces a run; `PLAYTREE_CRASH_ROUNDS` sets the number
//! of crashes (default 3).

mod common;

use common::{ServerProcess, WAIT, base_overrides, mint, now_s, start_binary};
use playtree_client::{Client, ClientError, ClientOptions};
use playtree_protocol::RoomId;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WHEEL_ID: &str = "crash";
const PLAYERS: usize = 5;
const DEFAULT_SEED: u64 = 0x00c0_ffee_5eed;
const DEFAULT_ROUNDS: usize = 3;
const SEED_VAR: &str = "PLAYTREE_CRASH_SEED";
const ROUNDS_VAR: &str = "PLAYTREE_CRASH_ROUNDS";

/// No inventory caps, no practical daily limit, and a rate limit that fast clients do
/// not reach (a rate-limited client would be closed, not crashed).
const EXTRA: &str = r#"
[[wheels]]
id = "crash"
spins_per_day = 1000000
segments = [
  { label = "one", prize = 1, weight = 5 },
  { label = "seven", prize = 7, weight = 3 },
  { label = "fifty", prize = 50, weight = 2 },
  { label = "jackpot", prize = 1000, weight = 1 },
]

[limits]
frames_per_second = 100000
frames_burst = 100000

# Quick games: a podium (and its grants) every ~200 ms.
[quiz]
min_players = 2
lobby_countdown_ms = 20
questions_per_game = 2
question_ms = 80
reveal_ms = 10
podium_ms = 10

[mail]
redeliver_ms = 200
"#;

/// Players who play quizzes during the load (their wallets hold podium prizes only).
const QUIZZERS: usize = 3;

/// What the store says once the server is down.
struct Audit {
    /// Every grant every room and tree ever issued.
    granted: u64,
    /// Every referee in a tree, with their referrer.
    parents: std::collections::BTreeMap<String, String>,
    /// What the wallets have credited (and hold: nothing is spent).
    credited: u64,
    /// Credits still in an outbox that their wallet has not taken either (a credit
    /// taken whose acknowledgement was not yet recorded is counted once, taken).
    owed: u64,
    rooms: usize,
}

/// Reads every room and session from the store of a stopped server.
async fn audit(config: &playtree::ServerConfig) -> Audit {
    use playtree_actors::mail::Post;
    use playtree_actors::referral::TreeEntity;
    use playtree_actors::room::RoomEntity;
    use playtree_actors::runtime::Durable;
    use playtree_actors::session::SessionEntity;
    use playtree_actors::store::Journal;
    let store = playtree_actors::Store::open(
        &config.store_dir(),
        &config.game.store,
        Arc::new(playtree::clock::SystemClock),
    )
    .expect("the stopped server's store opens");
    let mut sessions = std::collections::BTreeMap::new();
    for id in store.ids("session").await.expect("session ids") {
        let (_, session, _) = Journal::<Durable<SessionEntity>>::inspect(&store, &id)
            .await
            .expect("session reads");
        assert_eq!(
            session.state.balance, session.state.credited_total,
            "{id}: nothing is spent, so the balance is what was credited"
        );
        sessions.insert(id, session);
    }
    let mut audit = Audit {
        granted: 0,
        credited: sessions
            .values()
            .map(|session| session.state.credited_total)
            .sum(),
        owed: 0,
        rooms: 0,
        parents: std::collections::BTreeMap::new(),
    };
    // Coins a sender's outbox still owes a wallet that has not taken them.
    let owed = |post: &Post| -> u64 {
        post.outbox
            .values()
            .filter(|letter| {
                let taken = letter
                    .to
                    .player()
                    .and_then(|player| sessions.get(player))
                    .is_some_and(|session| {
                        session
                            .post
                            .marks
                            .get(&letter.from)
                            .is_some_and(|mark| mark.has(letter.seq))
                    });
                !taken
            })
            .map(|letter| letter.body.coins())
            .sum()
    };
    for id in store.ids("room").await.expect("room ids") {
        let (_, room, _) = Journal::<Durable<RoomEntity>>::inspect(&store, &id)
            .await
            .expect("room reads");
        audit.granted += room.post.coins_sent;
        audit.rooms += 1;
        audit.owed += owed(&room.post);
    }
    for root in store.ids("tree").await.expect("tree ids") {
        let (_, stored, _) = Journal::<Durable<TreeEntity>>::inspect(&store, &root)
            .await
            .expect("tree reads");
        audit.granted += stored.post.coins_sent;
        audit.owed += owed(&stored.post);
        let tree = &stored.state;
        for (player, node) in &tree.nodes {
            if let Some(parent) = &node.parent {
                audit.parents.insert(player.clone(), parent.clone());
            }
            // The counters kept as the tree grew equal a recount from the parent links.
            let mut by_level = vec![0u64; playtree_actors::referral::LEVELS_TRACKED];
            let mut activated = 0;
            for (other, other_node) in &tree.nodes {
                let chain = playtree_actors::referral::ancestors(tree, other);
                if let Some(level) = chain.iter().position(|ancestor| ancestor == player) {
                    by_level[level] += 1;
                    activated += u64::from(other_node.activated);
                }
            }
            while by_level.last() == Some(&0) {
                by_level.pop();
            }
            assert_eq!(
                node.referees_by_level, by_level,
                "tree {root}: {player}'s referees"
            );
            assert_eq!(
                node.activated_referees, activated,
                "tree {root}: {player}'s activated"
            );
        }
    }
    store.close();
    audit
}

/// What one round of referral load got acknowledged.
#[derive(Debug, Default)]
struct ReferralLog {
    /// `(referee, referrer)` of each claim answered `ReferralClaimed`.
    claims: Vec<(String, String)>,
    /// Conversion reports answered, and the rewards each made.
    conversions: u32,
}

/// One claim down the chain (`ref-{round}` claims `ref-{round - 1}`'s code) and a
/// partner's conversion reports, until the crash ends them (errors then are expected).
async fn referral_load(
    url: String,
    config: playtree::ServerConfig,
    round: usize,
    log: Arc<Mutex<ReferralLog>>,
) {
    let options = || ClientOptions {
        request_timeout: WAIT,
        handshake_timeout: WAIT,
        reconnect: false,
        ..ClientOptions::default()
    };
    let as_role = |player: &str, role: playtree_protocol::Role| {
        common::mint_as(&config, player, role, now_s(), 600)
    };
    let connect = |player: String, role| {
        let (url, token) = (url.clone(), as_role(&player, role));
        async move {
            Client::connect_with(&url, &token, options())
                .await
                .ok()
                .map(|(client, _events)| client)
        }
    };
    let (referrer, referee) = (format!("ref-{}", round - 1), format!("ref-{round}"));
    let Some(owner) = connect(referrer.clone(), playtree_protocol::Role::Player).await else {
        return;
    };
    let Ok(code) = owner.referral_code().await else {
        return;
    };
    let Some(claimer) = connect(referee.clone(), playtree_protocol::Role::Player).await else {
        return;
    };
    if let Ok(answered) = claimer.claim_referral(&code).await {
        assert_eq!(answered, referrer, "the claim names its referrer");
        log.lock()
            .expect("log")
            .claims
            .push((referee.clone(), referrer));
    }
    let Some(partner) = connect("partner".into(), playtree_protocol::Role::Partner).await else {
        return;
    };
    // This round's order, and last round's again (paid once whatever the crashes did).
    for (player, key) in [
        (referee.clone(), format!("order-{round}")),
        (format!("ref-{}", round - 1), format!("order-{}", round - 1)),
    ] {
        if partner
            .report_conversion(&player, "purchase", 10, &key)
            .await
            .is_ok()
        {
            log.lock().expect("log").conversions += 1;
        }
    }
}

/// SIGKILL: no snapshot, no final flush, no goodbye to the clients.
fn crash(mut process: ServerProcess) {
    process.child.kill().expect("SIGKILL");
    process.child.wait().expect("reaped");
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} does not parse")),
        Err(_) => default,
    }
}

/// What the test knows about one player across rounds.
struct Player {
    name: String,
    token: String,
    client_seed: String,
    /// The commitment of the seed the next spins use (known before they are drawn).
    commitment: [u8; 32],
    /// Every nonce below this is accounted for in `expected_wallet`.
    accounted_nonce: u64,
    /// The exact sum of the prizes of every spin drawn so far.
    expected_wallet: u64,
}

/// A spin whose reply the client received.
#[derive(Debug, Clone)]
struct Acked {
    nonce: u64,
    prize: u64,
    segment: u32,
    commitment: [u8; 32],
}

/// What a quizzer saw during one round's load.
#[derive(Debug, Default)]
struct QuizLog {
    answered: u32,
    /// Answers refused for their timing (too late, question closed): expected.
    refused: u32,
    other_errors: Vec<String>,
}

/// Answers every question its room asks until the connection ends, or until a podium
/// if `until_podium`; says whether it saw one.
async fn quiz_load(
    client: Arc<Client>,
    mut events: playtree_client::Events,
    room: RoomId,
    log: Arc<Mutex<QuizLog>>,
    until_podium: bool,
) -> bool {
    use playtree_protocol::{ErrorCode, Event};
    while let Some(envelope) = events.next().await {
        let question = match envelope.event {
            Event::Question(question) if question.room == room => question,
            Event::Podium(podium) if podium.room == room && until_podium => return true,
            _ => continue,
        };
        let choice = question.index % 3;
        match client.answer(room, question.index, choice).await {
            Ok(()) => log.lock().expect("log").answered += 1,
            Err(ClientError::Closed { .. }) => return false,
            Err(ClientError::Server(error))
                if matches!(
                    error.code,
                    ErrorCode::AnswerTooLate
                        | ErrorCode::NoOpenQuestion
                        | ErrorCode::AlreadyAnswered
                ) =>
            {
                log.lock().expect("log").refused += 1
            }
            Err(error) => log
                .lock()
                .expect("log")
                .other_errors
                .push(error.to_string()),
        }
    }
    false
}

/// Seats `name` in a quiz room (giving back the one it had), connected with its events.
async fn join_quiz(
    url: &str,
    token: &str,
    previous: Option<RoomId>,
) -> (Client, playtree_client::Events, RoomId) {
    let options = ClientOptions {
        request_timeout: WAIT,
        handshake_timeout: WAIT,
        reconnect: false,
        ..ClientOptions::default()
    };
    let (client, events) = tokio::time::timeout(WAIT, Client::connect_with(url, token, options))
        .await
        .expect("connect in time")
        .expect("connects");
    if let Some(room) = previous {
        // The seat may be gone already (grace time); either way it is free after this.
        let _ = client.leave_room(room).await;
    }
    let joined = client.quick_join_quiz().await.expect("quiz join");
    (client, events, joined.room)
}

#[derive(Debug, Default)]
struct LoadLog {
    acked: Vec<Acked>,
    /// Errors other than the connection ending (none are expected before the crash).
    other_errors: Vec<String>,
    chats: u32,
}

async fn connect(url: &str, token: &str, reconnect: bool) -> Client {
    let options = ClientOptions {
        request_timeout: WAIT,
        handshake_timeout: WAIT,
        reconnect,
        ..ClientOptions::default()
    };
    let (client, events) = tokio::time::timeout(WAIT, Client::connect_with(url, token, options))
        .await
        .expect("connect in time")
        .expect("connects");
    // Nobody reads events here: dropped, they never hold back the replies.
    drop(events);
    client
}

/// Spins as fast as possible (with a chat now and then) until the connection ends (the
/// client does not reconnect, so every request after the crash fails at once).
async fn load(client: Client, room: RoomId, client_seed: String, log: Arc<Mutex<LoadLog>>) {
    let mut iteration = 0u64;
    loop {
        iteration += 1;
        if iteration.is_multiple_of(25) {
            // Chat is rate limited per room; a refusal here is fine.
            if client
                .chat(room, &format!("{client_seed} still spinning"))
                .await
                .is_ok()
            {
                log.lock().expect("log").chats += 1;
            }
        }
        match client.spin(room, &client_seed).await {
            Ok(outcome) => log.lock().expect("log").acked.push(Acked {
                nonce: outcome.nonce,
                prize: outcome.prize,
                segment: outcome.segment,
                commitment: outcome.commitment,
            }),
            Err(ClientError::Closed { .. }) => return,
            // Anything else is unexpected: recorded, and the load goes on.
            Err(error) => log
                .lock()
                .expect("log")
                .other_errors
                .push(error.to_string()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spins_and_exact_wallets_survive_repeated_sigkill_under_load() {
    let seed: u64 = env_or(SEED_VAR, DEFAULT_SEED);
    let rounds: usize = env_or(ROUNDS_VAR, DEFAULT_ROUNDS);
    println!("crash loop: PLAYTREE_CRASH_SEED={seed} PLAYTREE_CRASH_ROUNDS={rounds}");
    let mut rng = StdRng::seed_from_u64(seed);
    let began = Instant::now();

    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("playtree.toml");
    let overrides = base_overrides(&dir.path().join("data"), EXTRA);
    std::fs::write(&config_path, &overrides).expect("config");
    // What the server loads from that file, without the environment (which holds this
    // test's own `PLAYTREE_CRASH_*` knobs that the server's loader would refuse).
    let config = playtree::ServerConfig::from_toml_overrides(&overrides).expect("config loads");

    // Round 0 setup: every player joins once, so that its first seed is committed.
    let mut server = start_binary(&config_path);
    let mut players = Vec::new();
    for index in 0..PLAYERS {
        let name = format!("crasher-{index}");
        let token = mint(&config, &name, now_s(), 600);
        let client = connect(&format!("ws://{}", server.ws), &token, false).await;
        let joined = client
            .quick_join_wheel(Some(WHEEL_ID))
            .await
            .expect("first join");
        assert_eq!(joined.fairness.next_nonce, 0);
        assert_eq!(client.wallet().await.expect("wallet"), 0);
        players.push(Player {
            client_seed: format!("seed-{name}"),
            name,
            token,
            commitment: joined.fairness.commitment,
            accounted_nonce: 0,
            expected_wallet: 0,
        });
    }

    let quizzers: Vec<(String, String)> = (0..QUIZZERS)
        .map(|index| {
            let name = format!("quizzer-{index}");
            let token = mint(&config, &name, now_s(), 600);
            (name, token)
        })
        .collect();
    let mut quiz_rooms: Vec<Option<RoomId>> = vec![None; QUIZZERS];

    let mut total_drawn = 0u64;
    let mut total_acked = 0usize;
    let mut total_answered = 0u32;
    let mut total_conversions = 0u32;
    let mut acked_claims: Vec<(String, String)> = Vec::new();
    for round in 1..=rounds {
        // --- Load, then a crash at a random moment. ---
        let url = format!("ws://{}", server.ws);
        let mut tasks = Vec::new();
        let mut logs = Vec::new();
        for player in &players {
            let client = connect(&url, &player.token, false).await;
            let joined = client
                .quick_join_wheel(Some(WHEEL_ID))
                .await
                .expect("join before load");
            assert_eq!(
                joined.fairness.next_nonce, player.accounted_nonce,
                "{}: the nonce after the last check",
                player.name
            );
            assert_eq!(
                joined.fairness.commitment, player.commitment,
                "{}: the seed committed at the last rotation",
                player.name
            );
            let log = Arc::new(Mutex::new(LoadLog::default()));
            logs.push(log.clone());
            tasks.push(tokio::spawn(load(
                client,
                joined.room,
                player.client_seed.clone(),
                log,
            )));
        }
        let mut quiz_tasks = Vec::new();
        let mut quiz_logs = Vec::new();
        for ((_, token), room) in quizzers.iter().zip(quiz_rooms.iter_mut()) {
            let (client, events, joined) = join_quiz(&url, token, *room).await;
            *room = Some(joined);
            let log = Arc::new(Mutex::new(QuizLog::default()));
            quiz_logs.push(log.clone());
            quiz_tasks.push(tokio::spawn(quiz_load(
                Arc::new(client),
                events,
                joined,
                log,
                false,
            )));
        }
        let referral_log = Arc::new(Mutex::new(ReferralLog::default()));
        let referrals = tokio::spawn(referral_load(
            url.clone(),
            config.clone(),
            round,
            referral_log.clone(),
        ));
        let delay = Duration::from_millis(rng.random_range(50..=400));
        // Not synchronisation: the crash lands wherever the load happens to be.
        tokio::time::sleep(delay).await;
        crash(server);
        for task in tasks {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("load stops once the server is gone")
                .expect("load task does not panic");
        }
        tokio::time::timeout(WAIT, referrals)
            .await
            .expect("referral load stops once the server is gone")
            .expect("referral task does not panic");
        let referral_log = std::mem::take(&mut *referral_log.lock().expect("log"));
        total_conversions += referral_log.conversions;
        acked_claims.extend(referral_log.claims);
        let mut round_answered = 0;
        for (task, log) in quiz_tasks.into_iter().zip(&quiz_logs) {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("quiz load stops once the server is gone")
                .expect("quiz task does not panic");
            let log = log.lock().expect("log");
            assert!(
                log.other_errors.is_empty(),
                "unexpected quiz errors under load: {:?}",
                log.other_errors
            );
            round_answered += log.answered;
        }
        total_answered += round_answered;

        // The load is over: its logs are final.
        let logs: Vec<LoadLog> = logs
            .into_iter()
            .map(|log| std::mem::take(&mut *log.lock().expect("log")))
            .collect();

        // --- Restart and check. ---
        server = start_binary(&config_path);
        let url = format!("ws://{}", server.ws);
        let mut round_drawn = 0u64;
        let mut round_acked = 0usize;
        let mut round_chats = 0u32;
        for (player, log) in players.iter_mut().zip(&logs) {
            let name = &player.name;
            // Only the crash may end a request, and only by closing the connection.
            assert!(
                log.other_errors.is_empty(),
                "{name}: unexpected errors under load: {:?}",
                log.other_errors
            );
            round_acked += log.acked.len();
            round_chats += log.chats;

            let client = connect(&url, &player.token, true).await;
            let joined = client
                .quick_join_wheel(Some(WHEEL_ID))
                .await
                .expect("join after restart");
            let next_nonce = joined.fairness.next_nonce;
            assert_eq!(
                joined.fairness.commitment, player.commitment,
                "{name}: the seed commitment survives the crash"
            );

            // 1. Every acknowledged spin is still there.
            let acked_prizes: u64 = log.acked.iter().map(|spin| spin.prize).sum();
            if let Some(highest) = log.acked.iter().map(|spin| spin.nonce).max() {
                assert!(
                    next_nonce > highest,
                    "{name}: spin {highest} was acknowledged but the next nonce after the crash is {next_nonce}"
                );
            }
            assert!(
                next_nonce >= player.accounted_nonce,
                "{name}: the nonce went back from {} to {next_nonce}",
                player.accounted_nonce
            );
            let wallet_now = client.wallet().await.expect("wallet");
            assert!(
                wallet_now >= player.expected_wallet + acked_prizes,
                "{name}: wallet {wallet_now} after the crash is below the {} known before the round plus the {acked_prizes} acknowledged in it",
                player.expected_wallet
            );

            // 2. Reveal the seed that drew every nonce of this round and recompute them.
            let reveal = client.rotate_seed(WHEEL_ID).await.expect("rotate");
            assert_eq!(
                reveal.revealed_commitment, player.commitment,
                "{name}: the revealed seed is the one committed before the round"
            );
            assert_eq!(
                playtree_protocol::fairness::commitment(&reveal.revealed_seed),
                player.commitment,
                "{name}: the revealed seed hashes to the commitment"
            );
            assert_eq!(
                reveal.next_nonce, next_nonce,
                "{name}: no spin between the join and the rotation"
            );
            let segments = &joined.wheel.segments;
            let weights: Vec<u32> = segments.iter().map(|segment| segment.weight).collect();
            let segment_of = |nonce: u64| {
                playtree_protocol::fairness::spin_segment(
                    &reveal.revealed_seed,
                    &player.client_seed,
                    nonce,
                    &weights,
                )
                .expect("weights are positive")
            };
            for spin in &log.acked {
                assert!(
                    spin.nonce >= player.accounted_nonce,
                    "{name}: acknowledged nonce {} was used in an earlier round",
                    spin.nonce
                );
                assert_eq!(
                    spin.commitment, player.commitment,
                    "{name}: spin commitment"
                );
                let segment = segment_of(spin.nonce);
                assert_eq!(
                    spin.segment as usize, segment,
                    "{name}: spin {} landed where the seeds say",
                    spin.nonce
                );
                assert_eq!(
                    spin.prize, segments[segment].prize,
                    "{name}: spin {} paid its segment's prize",
                    spin.nonce
                );
            }
            let mut acked_nonces: Vec<u64> = log.acked.iter().map(|spin| spin.nonce).collect();
            acked_nonces.sort_unstable();
            acked_nonces.dedup();
            assert_eq!(
                acked_nonces.len(),
                log.acked.len(),
                "{name}: a nonce was acknowledged twice"
            );
            let round_prizes: u64 = (player.accounted_nonce..next_nonce)
                .map(|nonce| segments[segment_of(nonce)].prize)
                .sum();
            let expected = player.expected_wallet + round_prizes;

            // 2./3. Once settled, the wallet is exactly that sum, and stays there.
            let deadline = Instant::now() + WAIT * 2;
            let mut history = vec![wallet_now];
            let mut equal_since: Option<Instant> = None;
            loop {
                let balance = client.wallet().await.expect("wallet");
                if history.last() != Some(&balance) {
                    history.push(balance);
                }
                assert!(
                    balance <= expected,
                    "{name}: wallet {balance} exceeds the {expected} that nonces 0..{next_nonce} pay: a grant was credited twice (wallet history this round {history:?}, {} acknowledged spins, {} drawn this round)",
                    log.acked.len(),
                    next_nonce - player.accounted_nonce
                );
                if balance == expected {
                    let since = *equal_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_millis(300) {
                        break;
                    }
                } else {
                    equal_since = None;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: wallet {balance} never reached the {expected} that nonces 0..{next_nonce} pay (history this round {history:?}, {} acknowledged spins, {} drawn this round)",
                    log.acked.len(),
                    next_nonce - player.accounted_nonce
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            round_drawn += next_nonce - player.accounted_nonce;
            player.accounted_nonce = next_nonce;
            player.expected_wallet = expected;
            player.commitment = reveal.next_commitment;
        }
        println!(
            "round {round}/{rounds}: crash after {delay:?}, {round_drawn} spins drawn, {round_acked} acknowledged, {round_chats} chats, {round_answered} quiz answers; every wallet exact"
        );
        total_drawn += round_drawn;
        total_acked += round_acked;
    }
    // --- The store's own account: every grant ever issued is in exactly one wallet. ---
    // One more game to its podium (whatever the crashes interrupted), so that quiz
    // prizes are among the grants; then a last SIGKILL, wherever the games and
    // deliveries stand.
    let url = format!("ws://{}", server.ws);
    let mut seated = Vec::new();
    let mut finishing = tokio::task::JoinSet::new();
    for ((_, token), room) in quizzers.iter().zip(quiz_rooms.iter_mut()) {
        let (client, events, joined) = join_quiz(&url, token, *room).await;
        *room = Some(joined);
        let client = Arc::new(client);
        let log = Arc::new(Mutex::new(QuizLog::default()));
        finishing.spawn(quiz_load(client.clone(), events, joined, log, true));
        seated.push((client, joined));
    }
    // Rooms fill in turn, so a quizzer may sit alone in a lobby: one podium is enough.
    let mut podiums = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Some(seen)) = tokio::time::timeout_at(deadline, finishing.join_next()).await {
        if seen.expect("quiz task does not panic") {
            podiums += 1;
            break;
        }
    }
    finishing.abort_all();
    for (client, room) in seated {
        client.leave_room(room).await.expect("seat given back");
    }
    assert!(podiums > 0, "no quiz game reached its podium");
    crash(server);
    // Whatever the kill interrupted: each grant is in a wallet or still owed by its
    // room, exactly once.
    let audit = audit(&config).await;
    assert_eq!(
        audit.credited + audit.owed,
        audit.granted,
        "wallets ({}) plus grants still owed ({}) make every grant issued (store at {})",
        audit.credited,
        audit.owed,
        config.server.data_dir.display()
    );
    for (referee, referrer) in &acked_claims {
        assert_eq!(
            audit.parents.get(referee),
            Some(referrer),
            "{referee}'s acknowledged claim of {referrer}'s code survived every crash"
        );
    }
    println!(
        "crash loop done: {rounds} rounds, {total_drawn} spins drawn, {total_acked} acknowledged, {total_answered} quiz answers, {} referral claims and {total_conversions} conversions acknowledged; {} coins granted by {} rooms and the referral trees: {} in wallets, {} still owed; in {:?}",
        acked_claims.len(),
        audit.granted,
        audit.rooms,
        audit.credited,
        audit.owed,
        began.elapsed()
    );
    assert!(
        total_answered > 0,
        "no quiz answer was taken: the quiz load checked nothing"
    );
    assert!(
        total_acked > 0,
        "the load acknowledged no spin at all: the test checked nothing"
    );
}
