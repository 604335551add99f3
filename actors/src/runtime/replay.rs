//! The property the whole runtime rests on: the state a live entity reaches by deciding
//! (events applied in place, journaled in group commits, snapshots every few events)
//! is exactly what recovery rebuilds from the store, whatever the inputs and wherever
//! the entity restarts between them.

use super::decide::Gate;
use super::testing::{config, env};
use super::{Behaviour, Decide, Env};
use crate::config::StoreConfig;
use crate::directory::Followers;
use crate::room::{RoomEntity, RoomMsg, RoomSpec, RoomState};
use crate::session::PendingSpin;
use crate::store::{Journal, MemoryBackend, Store};
use crate::stream::Stream;
use playtree_protocol::RoomKind;
use playtree_protocol::fairness::commitment;
use proptest::prelude::*;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Input {
    Join(u8),
    Leave(u8),
    Answer(u8, u32),
    Settle(u8),
    /// Acknowledges the n-th grant in the outbox.
    Ack(usize),
    /// Time passes, then the deadline input comes.
    Wait(u64),
    /// The entity stops (no snapshot) and a new incarnation recovers it.
    Restart,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => (0u8..4).prop_map(Input::Join),
        1 => (0u8..4).prop_map(Input::Leave),
        3 => ((0u8..4), (0u32..3)).prop_map(|(p, c)| Input::Answer(p, c)),
        3 => (0u8..4).prop_map(Input::Settle),
        2 => (0usize..4).prop_map(Input::Ack),
        3 => (0u64..15_000).prop_map(Input::Wait),
        1 => Just(Input::Restart),
    ]
}

/// An incarnation as the runtime holds it, minus the actor.
struct Live {
    journal: Journal<RoomEntity>,
    memory: <RoomEntity as Behaviour>::Memory,
    stream: Stream,
}

const ROOM: u64 = 7;
const SNAPSHOT_EVERY: u64 = 3;

async fn activate(store: &Store, env: &Env, now_ms: u64, spec: Option<RoomSpec>) -> Live {
    let journal = Journal::open(store.clone(), &ROOM.to_string(), SNAPSHOT_EVERY)
        .await
        .expect("open");
    let stream = Stream::new(RoomEntity::stream(&ROOM), journal.incarnation(), 16);
    let mut live = Live {
        journal,
        memory: Default::default(),
        stream,
    };
    decide(&mut live, store, env, now_ms, |cx| {
        RoomEntity::activate(cx, spec).expect("activation");
    })
    .await;
    live
}

/// What `Incarnation::decide` does, awaiting the commit instead of pipelining it.
async fn decide(
    live: &mut Live,
    store: &Store,
    env: &Env,
    now_ms: u64,
    decision: impl FnOnce(&mut Decide<'_, RoomEntity>),
) {
    let followers = Followers::default();
    let (state, _) = live.journal.decide_parts();
    let mut cx = Decide::new(
        &ROOM,
        env,
        now_ms,
        ractor::ActorId::Local(1),
        state,
        &mut live.memory,
        &mut live.stream,
        &followers,
        Gate::Store(store),
    );
    decision(&mut cx);
    let decided = cx.finish();
    if let Some(ticket) = live
        .journal
        .submit_applied(decided.slot, decided.encoded)
        .expect("submit")
    {
        live.journal.durable(ticket).await.expect("durable");
    }
}

fn message(state: &RoomState, input: &Input) -> Option<RoomMsg> {
    let player = |p: &u8| format!("p{p}");
    Some(match input {
        Input::Join(p) => RoomMsg::Join {
            player: player(p),
            outbounds: Vec::new(),
            reply: super::testing::port().0,
        },
        Input::Leave(p) => RoomMsg::Leave {
            player: player(p),
            reply: super::testing::port().0,
        },
        Input::Answer(p, choice) => {
            let question = match state.quiz.stage {
                crate::room::quiz::Stage::Asking { index, .. } => index,
                _ => 0,
            };
            RoomMsg::Answer {
                player: player(p),
                question,
                choice: *choice,
                reply: super::testing::port().0,
            }
        }
        Input::Settle(p) => {
            let nonce = state
                .settled_next_nonce
                .get(&player(p))
                .copied()
                .unwrap_or(0);
            RoomMsg::Settle {
                player: player(p),
                spin: PendingSpin {
                    room: ROOM,
                    wheel: "classic".into(),
                    nonce,
                    client_seed: "seed".into(),
                    commitment: commitment(&[1; 32]),
                    segment: (nonce % 2) as u32,
                },
                reply: super::testing::port().0,
            }
        }
        Input::Ack(n) => RoomMsg::GrantAcked {
            grant: state.outbox.keys().nth(*n)?.clone(),
        },
        Input::Wait(_) => RoomMsg::Deadline,
        Input::Restart => return None,
    })
}

fn run(kind: RoomKind, inputs: Vec<Input>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut config = config();
        config.quiz.min_players = 2;
        let env = env(config);
        let store =
            Store::with_backend(Arc::new(MemoryBackend::default()), &StoreConfig::default())
                .expect("store");
        let spec = RoomSpec {
            kind,
            variant: if kind == RoomKind::Wheel {
                "classic"
            } else {
                "quiz"
            }
            .into(),
            private_code: None,
        };
        let mut now_ms = 1_000;
        let mut live = activate(&store, &env, now_ms, Some(spec)).await;
        for input in &inputs {
            if let Input::Wait(ms) = input {
                now_ms += ms;
            }
            match message(live.journal.state(), input) {
                Some(message) => {
                    decide(&mut live, &store, &env, now_ms, |cx| {
                        RoomEntity::decide(cx, message)
                    })
                    .await;
                }
                None if matches!(input, Input::Restart) => {
                    let before = live.journal.state().clone();
                    drop(live);
                    live = activate(&store, &env, now_ms, None).await;
                    prop_assert_eq!(
                        live.journal.state(),
                        &before,
                        "recovered after {:?}",
                        inputs
                    );
                }
                None => {}
            }
        }
        let (_, stored, _) = Journal::<RoomEntity>::inspect(&store, &ROOM.to_string())
            .await
            .expect("inspect");
        prop_assert_eq!(&stored, live.journal.state());
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_quiz_room_recovers_exactly_its_live_state(inputs in prop::collection::vec(input(), 1..60)) {
        run(RoomKind::Quiz, inputs)?;
    }

    #[test]
    fn a_wheel_room_recovers_exactly_its_live_state(inputs in prop::collection::vec(input(), 1..60)) {
        run(RoomKind::Wheel, inputs)?;
    }
}
