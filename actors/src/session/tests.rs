//! A session's decisions, with no actor, store or socket.

use super::*;
use crate::runtime::testing::{Bench, config, env, port, send_replies};
use playtree_protocol::GrantId;

fn session(config: GameConfig) -> Bench<SessionEntity> {
    Bench::<SessionEntity>::activate("alice".into(), env(config), ()).0
}

fn quick_join(
    bench: &mut Bench<SessionEntity>,
) -> (
    Vec<Effect<SessionEntity>>,
    tokio::sync::oneshot::Receiver<Result<ReplyBody, ErrorReply>>,
) {
    let (reply, answer) = port();
    let decided = bench.input(SessionMsg::Request {
        request: Request::QuickJoin {
            kind: RoomKind::Wheel,
            variant: None,
        },
        reply,
    });
    (decided.effects, answer)
}

fn flows_started(effects: &[Effect<SessionEntity>]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Own(SessionEffect::Run { number, .. }) => Some(*number),
            _ => None,
        })
        .collect()
}

fn grant(beneficiary: &str, seq: u64, previous: u64) -> Grant {
    Grant {
        id: GrantId {
            source: "room:7".into(),
            seq,
        },
        previous,
        beneficiary: beneficiary.into(),
        amount: 10,
        reason: "test".into(),
        settles: None,
    }
}

#[test]
fn requests_that_need_rooms_run_one_at_a_time_in_arrival_order() {
    let mut alice = session(config());
    let (effects, _) = quick_join(&mut alice);
    assert_eq!(flows_started(&effects), vec![1]);
    let (effects, _) = quick_join(&mut alice);
    assert_eq!(flows_started(&effects), Vec::<u64>::new(), "waits its turn");
    assert!(!SessionEntity::may_passivate(&alice.state, &alice.memory));

    // The end of a flow of another incarnation, or of another flow, changes nothing.
    let stale = alice.input(SessionMsg::FlowDone { epoch: 99, flow: 1 });
    assert!(flows_started(&stale.effects).is_empty());
    let wrong = alice.input(SessionMsg::FlowDone { epoch: 1, flow: 2 });
    assert!(flows_started(&wrong.effects).is_empty());

    let next = alice.input(SessionMsg::FlowDone { epoch: 1, flow: 1 });
    assert_eq!(flows_started(&next.effects), vec![2]);
    alice.input(SessionMsg::FlowDone { epoch: 1, flow: 2 });
    assert!(SessionEntity::may_passivate(&alice.state, &alice.memory));
}

#[test]
fn a_full_request_queue_is_refused_and_a_refused_job_does_not_block_the_next() {
    let mut config = config();
    config.session.requests_queued_max = 2;
    let mut alice = session(config);
    quick_join(&mut alice);
    // Queued: a leave of a room alice is not in (refused when its turn comes), a join.
    let (reply, mut refused_leave) = port();
    alice.input(SessionMsg::Request {
        request: Request::LeaveRoom { room: 3 },
        reply,
    });
    let (effects, _) = quick_join(&mut alice);
    assert!(flows_started(&effects).is_empty());
    let (effects, mut overflow) = quick_join(&mut alice);
    send_replies(effects);
    let error = overflow
        .try_recv()
        .expect("answered")
        .expect_err("queue full");
    assert_eq!(error.code, ErrorCode::RateLimited);

    let next = alice.input(SessionMsg::FlowDone { epoch: 1, flow: 1 });
    assert_eq!(
        flows_started(&next.effects),
        vec![2],
        "the join after the refused leave"
    );
    send_replies(next.effects);
    let error = refused_leave
        .try_recv()
        .expect("answered")
        .expect_err("not in room 3");
    assert_eq!(error.code, ErrorCode::NotInRoom);
}

#[test]
fn a_credit_is_journaled_published_and_acknowledged_and_a_duplicate_only_acknowledged() {
    let mut alice = session(config());
    let decided = alice.input(SessionMsg::Credit {
        grant: grant("alice", 1, 0),
        source_room: 7,
    });
    assert!(matches!(
        decided.events[..],
        [SessionEvent::Credited { amount: 10, .. }]
    ));
    assert!(matches!(
        decided.effects[..],
        [
            Effect::Then(_),
            Effect::Publish { .. },
            Effect::ToRoom {
                room: 7,
                message: RoomMsg::GrantAcked { .. }
            },
        ]
    ));
    assert_eq!(alice.state.balance, 10);

    let again = alice.input(SessionMsg::Credit {
        grant: grant("alice", 1, 0),
        source_room: 7,
    });
    assert!(again.events.is_empty());
    assert!(matches!(
        again.effects[..],
        [Effect::ToRoom { room: 7, .. }]
    ));
    assert_eq!(alice.state.balance, 10);
    assert_eq!(
        alice.state,
        Bench::<SessionEntity>::replayed(&decided.events),
        "replaying the journal rebuilds the live state"
    );
}

#[test]
fn a_grant_for_another_player_is_dead_lettered_never_credited_nor_acknowledged() {
    let mut alice = session(config());
    let decided = alice.input(SessionMsg::Credit {
        grant: grant("bob", 1, 0),
        source_room: 7,
    });
    assert!(decided.events.is_empty());
    assert!(matches!(decided.effects[..], [Effect::DeadLetter(_)]));
    assert_eq!(alice.state.balance, 0);
}

#[test]
fn chat_is_relayed_to_the_room_which_answers_and_a_non_member_is_refused_here() {
    let mut alice = session(config());
    let (reply, mut answer) = port();
    let decided = alice.input(SessionMsg::Request {
        request: Request::Chat {
            room: 7,
            text: "hi".into(),
        },
        reply,
    });
    send_replies(decided.effects);
    assert_eq!(
        answer
            .try_recv()
            .expect("answered")
            .expect_err("not in 7")
            .code,
        ErrorCode::NotInRoom
    );

    let (reply, _) = port();
    alice.input(SessionMsg::Joined {
        room: 7,
        membership: Membership {
            kind: RoomKind::Wheel,
            variant: "classic".into(),
        },
        reply,
    });
    let (reply, mut answer) = port();
    let decided = alice.input(SessionMsg::Request {
        request: Request::Chat {
            room: 7,
            text: "hi".into(),
        },
        reply,
    });
    assert!(matches!(
        decided.effects[..],
        [Effect::Own(SessionEffect::Relay { room: 7, .. })]
    ));
    assert!(
        answer.try_recv().is_err(),
        "the room answers, not the session"
    );
}
