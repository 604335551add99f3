//! The property the whole runtime rests on: the state a live entity reaches by deciding
//! (events and letters applied in place, journaled one record per commit, pipelined,
//! snapshots every few records, a tree's in parts) is exactly what recovery rebuilds
//! from the store, whatever the inputs, in whatever order its letters come (each as
//! often as the network likes: taken once), and wherever the entity restarts between
//! them.

use super::decide::Gate;
use super::testing::{self, env};
use super::{Behaviour, Decide, Durable, Env, Stored, journal_decision};
use crate::claim::TreeView;
use crate::config::StoreConfig;
use crate::directory::Followers;
use crate::mail::{
    Address, Body, Credit, HandOff, JoinLetter, Letter, MemberAction, MemberRequest, Membership,
    PostEvent, Receipt, RoomSpec, Seated, SpinDraw,
};
use crate::referral::{TreeEntity, TreeInput};
use crate::room::RoomEntity;
use crate::session::SessionEntity;
use crate::store::{CommitTicket, Journal, MemoryBackend, Store};
use crate::stream::Stream;
use playtree_protocol::RoomKind;
use playtree_protocol::fairness::commitment;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;

/// An incarnation as the runtime holds it, minus the actor: commits are pipelined as
/// the runtime does (several in flight, snapshots among them), and awaited only when
/// the incarnation stops.
struct Live<B: Behaviour> {
    id: B::Id,
    address: Address,
    journal: Journal<Durable<B>>,
    memory: B::Memory,
    stream: Stream,
    in_flight: Vec<CommitTicket>,
}

/// How often the property tests snapshot: often, so that restarts fall on every side
/// of a snapshot.
const SNAPSHOT_EVERY: u64 = 3;

/// The configuration of the property tests.
fn config() -> crate::config::GameConfig {
    let mut config = testing::config();
    config.store.snapshot_every = SNAPSHOT_EVERY;
    config
}

fn store() -> Store {
    Store::with_backend(
        Arc::new(MemoryBackend::default()),
        &StoreConfig::default(),
        Arc::new(crate::clock::FixedClock(1)),
    )
    .expect("store")
}

async fn activate<B: Behaviour>(
    store: &Store,
    env: &Env,
    now_ms: u64,
    id: B::Id,
    start: B::Start,
) -> Live<B> {
    let every = env.config.store.snapshot_every;
    let journal: Journal<Durable<B>> = Journal::open(store.clone(), &id.to_string(), every)
        .await
        .expect("open");
    let stream = match B::durable_stream(&journal.state().state) {
        Some(at) => Stream::resume(B::stream(&id), at.epoch, at.seq, 16, at.recent),
        None => Stream::new(B::stream(&id), journal.incarnation(), 16),
    };
    let address = B::address(&id);
    let mut live = Live {
        id,
        address,
        journal,
        memory: Default::default(),
        stream,
        in_flight: Vec::new(),
    };
    decide(&mut live, store, env, now_ms, |cx| {
        B::activate(cx, start).expect("activation");
    });
    live
}

/// What `Incarnation::decide` does.
fn decide<B: Behaviour>(
    live: &mut Live<B>,
    store: &Store,
    env: &Env,
    now_ms: u64,
    decision: impl FnOnce(&mut Decide<'_, B>),
) {
    let followers = Followers::default();
    let (stored, dirty, _) = live.journal.decide_parts();
    let mut cx = Decide::new(
        &live.id,
        &live.address,
        env,
        now_ms,
        ractor::ActorId::Local(1),
        stored,
        dirty,
        &mut live.memory,
        &mut live.stream,
        &followers,
        Gate::Store(store),
    );
    decision(&mut cx);
    let decided = cx.finish();
    let outcome = journal_decision(&mut live.journal, store, &live.id, decided).expect("journaled");
    if let Some(ticket) = outcome.ticket {
        live.in_flight.push(ticket);
    }
}

/// What the runtime does with a letter: a new one is recorded and handed to the kind;
/// one taken before is not.
fn take<B: Behaviour>(live: &mut Live<B>, store: &Store, env: &Env, now_ms: u64, letter: Letter) {
    if live.journal.state().post.receipt(&letter, now_ms, u64::MAX) != Receipt::New {
        return;
    }
    decide(live, store, env, now_ms, |cx| {
        cx.record(&letter).expect("recorded");
        B::receive(cx, letter, None);
    });
}

/// Its receivers have every letter in the outbox.
fn acknowledge<B: Behaviour>(live: &mut Live<B>, store: &Store, env: &Env, now_ms: u64) {
    let seqs: Vec<u64> = live.journal.state().post.outbox.keys().copied().collect();
    if seqs.is_empty() {
        return;
    }
    decide(live, store, env, now_ms, |cx| {
        if cx.take_place_for_post().is_ok() {
            cx.post_event(PostEvent::Delivered { seqs });
        }
    });
}

/// The incarnation stops: what it committed becomes durable (as its releaser waits for
/// before a new incarnation may start).
async fn stop<B: Behaviour>(live: Live<B>) -> Stored<B::State> {
    for ticket in live.in_flight {
        ticket.durable().await.expect("durable");
    }
    live.journal.state().clone()
}

/// Runs `steps` on one entity, restarting it where they say, and checks that every
/// recovery rebuilds exactly the live state (and the store holds it at the end).
async fn check<B: Behaviour, S: std::fmt::Debug>(
    env: &Env,
    id: B::Id,
    first: B::Start,
    again: impl Fn() -> B::Start,
    steps: &[S],
    mut run: impl FnMut(&mut Live<B>, &Store, u64, &S) -> Option<u64>,
) -> Result<Stored<B::State>, TestCaseError>
where
    B::State: PartialEq,
{
    let store = store();
    let mut now_ms = 1_000;
    let mut live = activate::<B>(&store, env, now_ms, id.clone(), first).await;
    for step in steps {
        match run(&mut live, &store, now_ms, step) {
            Some(wait_ms) => now_ms += wait_ms,
            None => {
                let before = stop(live).await;
                live = activate::<B>(&store, env, now_ms, id.clone(), again()).await;
                prop_assert_eq!(live.journal.state(), &before, "recovered after {:?}", steps);
            }
        }
    }
    let state = stop(live).await;
    let (_, stored, _) = Journal::<Durable<B>>::inspect(&store, &id.to_string())
        .await
        .expect("inspect");
    prop_assert_eq!(&stored, &state);
    Ok(state)
}

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// A letter from `from` to `to`, numbered by the test (duplicates keep their number).
fn letter(from: Address, to: &Address, seq: u64, body: Body) -> Letter {
    Letter {
        from,
        to: to.clone(),
        seq,
        previous: seq.saturating_sub(1),
        sent_ms: 0,
        body,
    }
}

// Rooms.

#[derive(Debug, Clone)]
enum RoomStep {
    Join(u8),
    Leave(u8),
    Answer(u8, u32),
    Settle(u8, u32),
    /// A letter delivered again (a duplicate).
    Again,
    Ack,
    /// Time passes, then the deadline comes.
    Wait(u64),
    /// The entity stops (no snapshot) and a new incarnation recovers it.
    Restart,
}

fn room_step() -> impl Strategy<Value = RoomStep> {
    prop_oneof![
        4 => (0u8..4).prop_map(RoomStep::Join),
        1 => (0u8..4).prop_map(RoomStep::Leave),
        3 => ((0u8..4), (0u32..3)).prop_map(|(p, c)| RoomStep::Answer(p, c)),
        3 => ((0u8..4), (0u32..2)).prop_map(|(p, s)| RoomStep::Settle(p, s)),
        2 => Just(RoomStep::Again),
        2 => Just(RoomStep::Ack),
        3 => (0u64..15_000).prop_map(RoomStep::Wait),
        1 => Just(RoomStep::Restart),
    ]
}

const ROOM: u64 = 7;

fn run_room(kind: RoomKind, steps: Vec<RoomStep>) -> Result<(), TestCaseError> {
    let mut config = config();
    config.quiz.min_players = 2;
    let env = env(config);
    let variant = if kind == RoomKind::Wheel {
        "classic"
    } else {
        "quiz"
    };
    let spec = RoomSpec {
        kind,
        variant: variant.into(),
        private_code: None,
    };
    let mut seqs = [0u64; 4];
    let mut nonces = [0u64; 4];
    let mut last: Option<Letter> = None;
    let to = Address::Room(ROOM);
    let run = |live: &mut Live<RoomEntity>, store: &Store, now_ms: u64, step: &RoomStep| {
        let mut from_player = |p: u8, body: Body| {
            seqs[p as usize] += 1;
            letter(
                Address::Session(format!("p{p}")),
                &to,
                seqs[p as usize],
                body,
            )
        };
        let sent = match step {
            RoomStep::Join(p) => Some(from_player(
                *p,
                Body::Join(JoinLetter {
                    membership: Membership {
                        kind,
                        variant: variant.into(),
                    },
                    spec: None,
                    fairness: (kind == RoomKind::Wheel).then_some(
                        playtree_protocol::FairnessInfo {
                            commitment: [0; 32],
                            next_nonce: 0,
                            spins_today: 0,
                        },
                    ),
                    quick: true,
                    tried: Vec::new(),
                    request_key: None,
                }),
            )),
            RoomStep::Leave(p) => Some(from_player(*p, Body::Leave)),
            RoomStep::Settle(p, segment) => {
                let nonce = nonces[*p as usize];
                nonces[*p as usize] += 1;
                Some(from_player(
                    *p,
                    Body::Settle(SpinDraw {
                        room: ROOM,
                        wheel: "classic".into(),
                        nonce,
                        client_seed: "seed".into(),
                        commitment: commitment(&[1; 32]),
                        segment: *segment,
                        request_key: None,
                    }),
                ))
            }
            RoomStep::Again => last.clone(),
            RoomStep::Answer(p, choice) => {
                let question = match live.journal.state().state.quiz.stage {
                    crate::room::quiz::Stage::Asking { index, .. } => index,
                    _ => 0,
                };
                let request = MemberRequest {
                    room: ROOM,
                    player: format!("p{p}"),
                    received_ms: now_ms,
                    action: MemberAction::Answer {
                        question,
                        choice: *choice,
                    },
                };
                decide(live, store, &env, now_ms, |cx| {
                    RoomEntity::handed(
                        cx,
                        HandOff::Member {
                            request,
                            reply: testing::port().0,
                        },
                    )
                });
                None
            }
            RoomStep::Ack => {
                acknowledge(live, store, &env, now_ms);
                None
            }
            RoomStep::Wait(ms) => {
                decide(live, store, &env, now_ms + ms, RoomEntity::on_deadline);
                return Some(*ms);
            }
            RoomStep::Restart => return None,
        };
        if let Some(sent) = sent {
            last = Some(sent.clone());
            take(live, store, &env, now_ms, sent);
        }
        Some(0)
    };
    block_on(check::<RoomEntity, RoomStep>(
        &env,
        ROOM,
        Some(spec),
        || None,
        &steps,
        run,
    ))
    .map(drop)
}

// Sessions.

/// What reaches a wallet: credits of two rooms, delivered again in any order any
/// number of times; seats; seed rotations; spins; restarts.
#[derive(Debug, Clone)]
enum SessionStep {
    /// Credit `seq` (1..) of room `source`; the credits of one room pay 1, 10, 100...
    Credit {
        source: u8,
        seq: u64,
    },
    Seated(u64),
    Rotate,
    Spin,
    Ack,
    Restart,
}

fn session_step() -> impl Strategy<Value = SessionStep> {
    prop_oneof![
        6 => ((0u8..2), (1u64..7)).prop_map(|(source, seq)| SessionStep::Credit { source, seq }),
        2 => (0u64..3).prop_map(SessionStep::Seated),
        1 => Just(SessionStep::Rotate),
        2 => Just(SessionStep::Spin),
        1 => Just(SessionStep::Ack),
        1 => Just(SessionStep::Restart),
    ]
}

fn amount(seq: u64) -> u64 {
    10u64.pow(seq as u32 - 1)
}

fn request(
    live: &mut Live<SessionEntity>,
    store: &Store,
    env: &Env,
    now_ms: u64,
    request: playtree_protocol::Request,
) {
    let (reply, answer) = testing::port();
    // The client keeps waiting (a closed reply port is nothing a session looks at).
    std::mem::forget(answer);
    decide(live, store, env, now_ms, |cx| {
        SessionEntity::decide(
            cx,
            crate::session::SessionInput::Request(Box::new(crate::session::PlayerRequest {
                request,
                keyed: None,
                received_ms: now_ms,
                suspect_source: false,
                code_owner: None,
                reply,
            })),
        )
    });
}

fn run_session(
    steps: &[SessionStep],
) -> Result<Stored<crate::session::SessionState>, TestCaseError> {
    let env = env(config());
    let to = Address::Session("alice".into());
    let run = |live: &mut Live<SessionEntity>, store: &Store, now_ms: u64, step: &SessionStep| {
        match step {
            SessionStep::Credit { source, seq } => {
                let credit = Body::Credit(Credit {
                    amount: amount(*seq),
                    reason: "test".into(),
                    spin: None,
                    news: Vec::new(),
                });
                take(
                    live,
                    store,
                    &env,
                    now_ms,
                    letter(Address::Room(u64::from(*source)), &to, *seq, credit),
                );
            }
            SessionStep::Seated(room) => {
                // Seats come from rooms 10.. (their own letters, numbered from a high
                // seq so they never meet the credits' numbers).
                let seated = Body::Seated(Seated {
                    room: 10 + room,
                    membership: Membership {
                        kind: RoomKind::Wheel,
                        variant: "classic".into(),
                    },
                    answer: None,
                });
                let seq = 1 + live
                    .journal
                    .state()
                    .post
                    .marks
                    .get(&Address::Room(10 + room))
                    .map_or(0, |mark| mark.through);
                take(
                    live,
                    store,
                    &env,
                    now_ms,
                    letter(Address::Room(10 + room), &to, seq, seated),
                );
            }
            SessionStep::Rotate => request(
                live,
                store,
                &env,
                now_ms,
                playtree_protocol::Request::RotateSeed {
                    wheel: "classic".into(),
                },
            ),
            SessionStep::Spin => {
                let room = live.journal.state().state.rooms.keys().next().copied();
                if let Some(room) = room {
                    request(
                        live,
                        store,
                        &env,
                        now_ms,
                        playtree_protocol::Request::Spin {
                            room,
                            client_seed: "seed".into(),
                        },
                    );
                }
            }
            SessionStep::Ack => acknowledge(live, store, &env, now_ms),
            SessionStep::Restart => return None,
        }
        Some(10)
    };
    block_on(check::<SessionEntity, SessionStep>(
        &env,
        "alice".to_owned(),
        (),
        || (),
        steps,
        run,
    ))
}

// Trees.

/// What a tree is told: claims below any of its players, activations, a partner's
/// conversions and decisions, letters delivered again, acknowledgements, restarts.
#[derive(Debug, Clone)]
enum TreeStep {
    /// The `n`-th player of the tree (by name) refers a new player.
    Attach(usize),
    Activated(usize),
    Conversion(usize, u8),
    Decide(usize, bool),
    Again,
    Ack,
    Wait(u64),
    Restart,
}

fn tree_step() -> impl Strategy<Value = TreeStep> {
    prop_oneof![
        6 => any::<usize>().prop_map(TreeStep::Attach),
        2 => any::<usize>().prop_map(TreeStep::Activated),
        2 => (any::<usize>(), 0u8..3).prop_map(|(p, k)| TreeStep::Conversion(p, k)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(r, a)| TreeStep::Decide(r, a)),
        2 => Just(TreeStep::Again),
        1 => Just(TreeStep::Ack),
        2 => (0u64..4_000_000).prop_map(TreeStep::Wait),
        1 => Just(TreeStep::Restart),
    ]
}

fn run_tree(steps: &[TreeStep]) -> Result<Stored<crate::referral::TreeState>, TestCaseError> {
    let mut config = config();
    // Limits that flag, holds that end, answers that are forgotten: every path of the
    // state is walked.
    config.referral.claims_per_referrer_per_hour = 3;
    config.referral.rewards_per_player_per_day = 5;
    config.referral.hold_ms = 1_000_000;
    config.referral.signup_rewards = vec![100, 10];
    config.referral.conversion_rewards = [("purchase".to_owned(), vec![50, 5])].into();
    config.referral.partner_answers_kept_ms = 2_000_000;
    let env = env(config);
    let to = Address::Tree("root".into());
    let mut seqs = std::collections::BTreeMap::<String, u64>::new();
    let mut joined = 0;
    let mut last: Option<Letter> = None;
    let run = |live: &mut Live<TreeEntity>, store: &Store, now_ms: u64, step: &TreeStep| {
        let players: Vec<String> = std::iter::once("root".to_owned())
            .chain(
                live.journal
                    .state()
                    .state
                    .nodes
                    .keys()
                    .filter(|p| *p != "root")
                    .cloned(),
            )
            .collect();
        let pick = |n: usize| players[n % players.len()].clone();
        let mut from = |player: String, body: Body| {
            let seq = seqs.entry(player.clone()).or_default();
            *seq += 1;
            letter(Address::Session(player), &to, *seq, body)
        };
        let sent = match step {
            TreeStep::Attach(n) => {
                joined += 1;
                Some(from(
                    pick(*n),
                    Body::Attach {
                        referee: format!("n{joined}"),
                        suspect: false,
                    },
                ))
            }
            TreeStep::Activated(n) => Some(from(pick(*n), Body::Activated)),
            TreeStep::Again => last.clone(),
            TreeStep::Conversion(n, key) => {
                let player = pick(*n);
                decide(live, store, &env, now_ms, |cx| {
                    TreeEntity::handed(
                        cx,
                        HandOff::Conversion {
                            player,
                            kind: "purchase".into(),
                            key: format!("k{key}"),
                            reply: testing::port().0,
                        },
                    )
                });
                None
            }
            TreeStep::Decide(n, approve) => {
                let held: Vec<u64> = live.journal.state().state.held.keys().copied().collect();
                if let Some(reward) = held.get(n % held.len().max(1)).copied() {
                    decide(live, store, &env, now_ms, |cx| {
                        TreeEntity::decide(
                            cx,
                            TreeInput::Decide {
                                reward,
                                approve: *approve,
                                reply: testing::port().0,
                            },
                        )
                    });
                }
                None
            }
            TreeStep::Ack => {
                acknowledge(live, store, &env, now_ms);
                None
            }
            TreeStep::Wait(ms) => {
                decide(live, store, &env, now_ms + ms, TreeEntity::on_deadline);
                return Some(*ms);
            }
            TreeStep::Restart => return None,
        };
        if let Some(sent) = sent {
            last = Some(sent.clone());
            take(live, store, &env, now_ms, sent);
        }
        Some(1_000)
    };
    block_on(check::<TreeEntity, TreeStep>(
        &env,
        "root".to_owned(),
        (),
        || (),
        steps,
        run,
    ))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_quiz_room_recovers_exactly_its_live_state(steps in prop::collection::vec(room_step(), 1..60)) {
        run_room(RoomKind::Quiz, steps)?;
    }

    #[test]
    fn a_wheel_room_recovers_exactly_its_live_state(steps in prop::collection::vec(room_step(), 1..60)) {
        run_room(RoomKind::Wheel, steps)?;
    }

    /// And a wallet takes each credit exactly once, however often and in whatever order
    /// it arrives, across restarts.
    #[test]
    fn a_session_recovers_exactly_its_live_state_and_takes_each_credit_once(
        steps in prop::collection::vec(session_step(), 1..60),
    ) {
        let stored = run_session(&steps)?;
        let distinct: BTreeSet<(u8, u64)> = steps
            .iter()
            .filter_map(|step| match step {
                SessionStep::Credit { source, seq } => Some((*source, *seq)),
                _ => None,
            })
            .collect();
        let paid: u64 = distinct.iter().map(|(_, seq)| amount(*seq)).sum();
        prop_assert_eq!(stored.state.balance, paid);
    }

    /// A tree (snapshotted in parts) recovers exactly, and stays a tree.
    #[test]
    fn a_tree_recovers_exactly_its_live_state(
        steps in prop::collection::vec(tree_step(), 1..80),
    ) {
        let stored = run_tree(&steps)?;
        let tree = &stored.state;
        for player in tree.nodes.keys() {
            let mut hops = 0;
            let mut current = tree.parent_of(player).flatten().map(str::to_owned);
            while let Some(up) = current {
                hops += 1;
                prop_assert!(hops <= tree.nodes.len(), "a cycle above {}", player);
                current = tree.parent_of(&up).flatten().map(str::to_owned);
            }
        }
        // Every coin the tree sent is owed or settled.
        prop_assert_eq!(stored.post.coins_sent, stored.post.coins_owed + stored.post.coins_settled);
    }
}

/// A tree of a hundred thousand players snapshots (in parts: what changed) and
/// recovers.
#[test]
fn a_tree_of_a_hundred_thousand_players_snapshots_and_recovers() {
    let mut config = config();
    config.referral.tree_players_max = 200_000;
    config.referral.claims_per_referrer_per_hour = 0;
    config.referral.rewards_per_player_per_day = 0;
    config.referral.signup_rewards = vec![];
    config.referral.welcome_bonus = 0;
    config.store.snapshot_every = 1_000;
    let env = env(config);
    block_on(async {
        let store = store();
        let to = Address::Tree("root".into());
        let mut live = activate::<TreeEntity>(&store, &env, 1_000, "root".into(), ()).await;
        let mut seqs = std::collections::HashMap::<String, u64>::new();
        // A wide, deep tree: each player refers the next few.
        for n in 1..=100_000u64 {
            let referrer = if n <= 10 {
                "root".to_owned()
            } else {
                format!("n{}", n / 10)
            };
            let attach = Body::Attach {
                referee: format!("n{n}"),
                suspect: false,
            };
            let seq = seqs.entry(referrer.clone()).or_default();
            *seq += 1;
            let sent = letter(Address::Session(referrer), &to, *seq, attach);
            take(&mut live, &store, &env, 1_000 + n, sent);
            // Its players' sessions acknowledge as they go (a snapshot's head holds
            // the letters still unacknowledged).
            if n % 100 == 0 {
                acknowledge(&mut live, &store, &env, 1_000 + n);
            }
        }
        let before = stop(live).await;
        assert_eq!(before.state.nodes.len(), 100_001);
        let recovered = activate::<TreeEntity>(&store, &env, 200_000, "root".into(), ()).await;
        assert_eq!(recovered.journal.state(), &before);
    });
}
