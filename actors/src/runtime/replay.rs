//! The property the whole runtime rests on: the state a live entity reaches by deciding
//! (events applied in place, journaled in group commits, snapshots every few events)
//! is exactly what recovery rebuilds from the store, whatever the inputs and wherever
//! the entity restarts between them.

use super::decide::Gate;
use super::testing::{config, env};
use super::{Behaviour, Decide, Env};
use crate::config::StoreConfig;
use crate::directory::Followers;
use crate::grant::Grant;
use crate::room::{RoomEntity, RoomMsg, RoomSpec, RoomState};
use crate::session::{FlowTag, Membership, PendingSpin, SessionEntity, SessionMsg};
use crate::store::{CommitTicket, Journal, MemoryBackend, Store};
use crate::stream::Stream;
use playtree_protocol::RoomKind;
use playtree_protocol::fairness::commitment;
use playtree_protocol::{GrantId, Request};
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

/// An incarnation as the runtime holds it, minus the actor: commits are pipelined as
/// the runtime does (several in flight, snapshots among them), and awaited only when
/// the incarnation stops.
struct Live<B: Behaviour> {
    id: B::Id,
    journal: Journal<B>,
    memory: B::Memory,
    stream: Stream,
    in_flight: Vec<CommitTicket>,
}

const ROOM: u64 = 7;
const SNAPSHOT_EVERY: u64 = 3;

async fn activate<B: Behaviour>(
    store: &Store,
    env: &Env,
    now_ms: u64,
    id: B::Id,
    start: B::Start,
) -> Live<B> {
    let journal = Journal::open(store.clone(), &id.to_string(), SNAPSHOT_EVERY)
        .await
        .expect("open");
    let stream = Stream::new(B::stream(&id), journal.incarnation(), 16);
    let mut live = Live {
        id,
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
    let (state, _) = live.journal.decide_parts();
    let mut cx = Decide::new(
        &live.id,
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
        .submit_applied(decided.slot, decided.encoded, Vec::new())
        .expect("submit")
    {
        live.in_flight.push(ticket);
    }
}

/// The incarnation stops: what it committed becomes durable (as its releaser waits for
/// before a new incarnation may start).
async fn stop<B: Behaviour>(live: Live<B>) -> B::State {
    for ticket in live.in_flight {
        ticket.durable().await.expect("durable");
    }
    live.journal.state().clone()
}

/// One generated input: it may let time pass, or restart the entity.
trait Step: std::fmt::Debug {
    fn restarts(&self) -> bool;
    fn wait_ms(&self) -> u64;
}

impl Step for Input {
    fn restarts(&self) -> bool {
        matches!(self, Input::Restart)
    }

    fn wait_ms(&self) -> u64 {
        match self {
            Input::Wait(ms) => *ms,
            _ => 0,
        }
    }
}

impl Step for SessionInput {
    fn restarts(&self) -> bool {
        matches!(self, SessionInput::Restart)
    }

    fn wait_ms(&self) -> u64 {
        10
    }
}

/// Runs `inputs` on one entity, restarting it where they say, and checks that every
/// recovery rebuilds exactly the live state.
async fn check<B: Behaviour, I: Step>(
    env: &Env,
    id: B::Id,
    first: B::Start,
    again: impl Fn() -> B::Start,
    inputs: &[I],
    messages: impl Fn(&Live<B>, &I) -> Vec<B::Msg>,
) -> Result<B::State, TestCaseError>
where
    B::State: PartialEq,
{
    let store = Store::with_backend(Arc::new(MemoryBackend::default()), &StoreConfig::default())
        .expect("store");
    let mut now_ms = 1_000;
    let mut live = activate::<B>(&store, env, now_ms, id.clone(), first).await;
    for input in inputs {
        now_ms += input.wait_ms();
        if input.restarts() {
            let before = stop(live).await;
            live = activate::<B>(&store, env, now_ms, id.clone(), again()).await;
            prop_assert_eq!(
                live.journal.state(),
                &before,
                "recovered after {:?}",
                inputs
            );
        } else {
            for message in messages(&live, input) {
                decide(&mut live, &store, env, now_ms, |cx| B::decide(cx, message));
            }
        }
    }
    let state = stop(live).await;
    let (_, stored, _) = Journal::<B>::inspect(&store, &id.to_string())
        .await
        .expect("inspect");
    prop_assert_eq!(&stored, &state);
    Ok(state)
}

fn messages(live: &Live<RoomEntity>, input: &Input) -> Vec<RoomMsg> {
    message(live.journal.state(), input).into_iter().collect()
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
                // Timed when the room takes it.
                received_ms: u64::MAX,
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

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn run(kind: RoomKind, inputs: Vec<Input>) -> Result<(), TestCaseError> {
    let mut config = config();
    config.quiz.min_players = 2;
    let env = env(config);
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
    block_on(check::<RoomEntity, Input>(
        &env,
        ROOM,
        Some(spec),
        || None,
        &inputs,
        messages,
    ))
    .map(drop)
}

/// What reaches a wallet: grants of two sources, redelivered in any order, any number
/// of times; seats taken and given back; seed rotations; restarts.
#[derive(Debug, Clone)]
enum SessionInput {
    /// Grant `seq` (1..) of source `source`; the grants of one source pay 1, 10, 100...
    Credit {
        source: u8,
        seq: u64,
    },
    Joined(u64),
    Left(u64),
    Rotate,
    Restart,
}

fn session_input() -> impl Strategy<Value = SessionInput> {
    prop_oneof![
        6 => ((0u8..2), (1u64..7)).prop_map(|(source, seq)| SessionInput::Credit { source, seq }),
        2 => (0u64..3).prop_map(SessionInput::Joined),
        1 => (0u64..3).prop_map(SessionInput::Left),
        1 => Just(SessionInput::Rotate),
        1 => Just(SessionInput::Restart),
    ]
}

fn amount(seq: u64) -> u64 {
    10u64.pow(seq as u32 - 1)
}

/// A seat taken or given back comes from a flow: a request starts it, the flow reports,
/// the flow ends.
fn in_flow(
    live: &Live<SessionEntity>,
    report: impl FnOnce(FlowTag) -> SessionMsg,
) -> Vec<SessionMsg> {
    let tag = FlowTag {
        epoch: live.stream.epoch(),
        number: live.memory.flows_started() + 1,
    };
    let (reply, answer) = super::testing::port();
    // The request's client keeps waiting (a closed reply would not start the flow).
    std::mem::forget(answer);
    vec![
        SessionMsg::Request {
            request: Request::QuickJoin {
                kind: RoomKind::Wheel,
                variant: None,
            },
            reply,
        },
        report(tag),
        SessionMsg::FlowDone {
            epoch: tag.epoch,
            flow: tag.number,
        },
    ]
}

fn session_messages(live: &Live<SessionEntity>, input: &SessionInput) -> Vec<SessionMsg> {
    match input {
        SessionInput::Credit { source, seq } => vec![SessionMsg::Credit {
            grant: Grant {
                id: GrantId {
                    source: format!("room:{source}"),
                    seq: *seq,
                },
                previous: seq - 1,
                beneficiary: "alice".into(),
                amount: amount(*seq),
                reason: "test".into(),
                settles: None,
            },
            source: crate::grant::GrantSource::Room(u64::from(*source)),
        }],
        SessionInput::Joined(room) => in_flow(live, |flow| SessionMsg::Joined {
            flow,
            room: *room,
            membership: Membership {
                kind: RoomKind::Wheel,
                variant: "classic".into(),
            },
            followed: Vec::new(),
            reply: super::testing::port().0,
        }),
        SessionInput::Left(room) => in_flow(live, |flow| SessionMsg::Left {
            flow,
            room: *room,
            reply: super::testing::port().0,
        }),
        SessionInput::Rotate => vec![SessionMsg::Request {
            request: Request::RotateSeed {
                wheel: "classic".into(),
            },
            reply: super::testing::port().0,
        }],
        SessionInput::Restart => Vec::new(),
    }
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

    /// And a wallet credits each grant exactly once, however often and in whatever order
    /// it arrives, across restarts.
    #[test]
    fn a_session_recovers_exactly_its_live_state_and_credits_each_grant_once(
        inputs in prop::collection::vec(session_input(), 1..60),
    ) {
        let env = env(config());
        let state = block_on(check::<SessionEntity, SessionInput>(
            &env,
            "alice".to_owned(),
            (),
            || (),
            &inputs,
            session_messages,
        ))?;
        let distinct: std::collections::BTreeSet<(u8, u64)> = inputs
            .iter()
            .filter_map(|input| match input {
                SessionInput::Credit { source, seq } => Some((*source, *seq)),
                _ => None,
            })
            .collect();
        let paid: u64 = distinct.iter().map(|(_, seq)| amount(*seq)).sum();
        prop_assert_eq!(state.balance, paid);
    }
}
