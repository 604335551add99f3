//! A session's decisions, with no actor, store or socket.

use super::*;
use crate::runtime::Decided;
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
    let (effects, _first) = quick_join(&mut alice);
    assert_eq!(flows_started(&effects), vec![1]);
    let (effects, _second) = quick_join(&mut alice);
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
    let _first = quick_join(&mut alice);
    // Queued: a leave of a room alice is not in (refused when its turn comes), a join.
    let (reply, mut refused_leave) = port();
    alice.input(SessionMsg::Request {
        request: Request::LeaveRoom { room: 3 },
        reply,
    });
    let (effects, _third) = quick_join(&mut alice);
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
        source: crate::grant::GrantSource::Room(7),
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
        source: crate::grant::GrantSource::Room(7),
    });
    assert!(again.events.is_empty());
    assert!(matches!(
        again.effects[..],
        [Effect::ToRoom { room: 7, .. }]
    ));
    assert_eq!(alice.state.balance, 10);
}

#[test]
fn a_grant_for_another_player_is_dead_lettered_never_credited_nor_acknowledged() {
    let mut alice = session(config());
    let decided = alice.input(SessionMsg::Credit {
        grant: grant("bob", 1, 0),
        source: crate::grant::GrantSource::Room(7),
    });
    assert!(decided.events.is_empty());
    assert!(
        decided.effects.is_empty(),
        "not acknowledged: {:?}",
        decided.effects
    );
    assert_eq!(decided.letters.len(), 1, "a dead letter in the same commit");
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

    joined(&mut alice, 7, RoomKind::Wheel, Vec::new())
        .1
        .expect("seated");
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

/// What the session answered a flow's `Joined`: the fairness, or the refusal and
/// whether the flow must give the seat back.
type Recorded = Result<Option<FairnessInfo>, (ErrorReply, bool)>;

/// Starts a flow (a QuickJoin) and returns its tag, with the request's answer.
fn start_flow(
    bench: &mut Bench<SessionEntity>,
) -> (
    FlowTag,
    tokio::sync::oneshot::Receiver<Result<ReplyBody, ErrorReply>>,
) {
    let (effects, answer) = quick_join(bench);
    let number = *flows_started(&effects).first().expect("a flow starts");
    let epoch = bench.stream.epoch();
    (FlowTag { epoch, number }, answer)
}

/// A flow seats the player in `room` and reports it; the flow then ends.
fn joined(
    bench: &mut Bench<SessionEntity>,
    room: RoomId,
    kind: RoomKind,
    followed: Vec<ConnectionId>,
) -> (Decided<SessionEntity>, Recorded) {
    let (flow, _answer) = start_flow(bench);
    let decided = report_joined(bench, flow, room, kind, followed);
    bench.input(SessionMsg::FlowDone {
        epoch: flow.epoch,
        flow: flow.number,
    });
    decided
}

fn report_joined(
    bench: &mut Bench<SessionEntity>,
    flow: FlowTag,
    room: RoomId,
    kind: RoomKind,
    followed: Vec<ConnectionId>,
) -> (Decided<SessionEntity>, Recorded) {
    let (reply, mut answer) = port();
    let variant = if kind == RoomKind::Quiz {
        QUIZ_VARIANT
    } else {
        "classic"
    };
    let mut decided = bench.input(SessionMsg::Joined {
        flow,
        room,
        membership: Membership {
            kind,
            variant: variant.into(),
        },
        followed,
        reply,
    });
    decided.effects = send_replies(decided.effects);
    let record = match answer.try_recv().expect("answered") {
        JoinRecord::Recorded(fairness) => Ok(fairness),
        JoinRecord::Refused { error, give_back } => Err((error, give_back)),
    };
    (decided, record)
}

#[test]
fn a_seat_taken_by_an_older_flow_is_not_recorded_twice() {
    let mut alice = session(config());
    joined(&mut alice, 1, RoomKind::Quiz, Vec::new())
        .1
        .expect("first quiz seat");
    // A second quiz seat is refused and given back by the flow that took it.
    let (decided, refused) = joined(&mut alice, 2, RoomKind::Quiz, Vec::new());
    let (error, give_back) = refused.expect_err("one quiz at a time");
    assert_eq!(error.code, ErrorCode::AlreadyInRoom);
    assert!(
        give_back,
        "room 2 is not in the records: the flow gives it back"
    );
    assert!(decided.events.is_empty());
    assert_eq!(
        alice.state.rooms.keys().copied().collect::<Vec<_>>(),
        vec![1]
    );
    // The same seat again is fine (a rejoin).
    joined(&mut alice, 1, RoomKind::Quiz, Vec::new())
        .1
        .expect("same seat");
}

#[test]
fn only_the_flow_under_way_changes_seats_and_a_held_seat_is_never_given_back() {
    let mut alice = session(config());
    joined(&mut alice, 7, RoomKind::Wheel, Vec::new())
        .1
        .expect("seated in 7");
    let (stuck, _stuck_answer) = start_flow(&mut alice);
    // The watchdog gives the stuck flow up; the next request's flow runs.
    alice.now_ms += alice.env.config.session.flow_timeout_ms;
    alice.input(SessionMsg::Deadline);
    let (current, _current_answer) = start_flow(&mut alice);
    assert_ne!(stuck, current);
    // The given-up flow reports late: refused. Room 7 is alice's: not to be given back;
    // room 8 is not in her records: to be given back.
    let (_, late) = report_joined(&mut alice, stuck, 7, RoomKind::Wheel, Vec::new());
    let (error, give_back) = late.expect_err("given up");
    assert_eq!((error.code, give_back), (ErrorCode::Timeout, false));
    let (_, late) = report_joined(&mut alice, stuck, 8, RoomKind::Wheel, Vec::new());
    assert!(matches!(late, Err((_, true))));
    let (reply, _left) = port();
    let decided = alice.input(SessionMsg::Left {
        flow: stuck,
        room: 7,
        reply,
    });
    assert!(decided.events.is_empty());
    assert!(
        alice.state.rooms.contains_key(&7),
        "a late leave changes nothing"
    );
    // The flow under way is taken.
    let (_, recorded) = report_joined(&mut alice, current, 7, RoomKind::Wheel, Vec::new());
    assert!(recorded.is_ok());
}

#[test]
fn a_connection_opened_during_a_join_follows_the_new_room() {
    let mut alice = session(config());
    let (old, _old_receiver) = Outbound::channel(1, 8, 1 << 16);
    let (new, _new_receiver) = Outbound::channel(2, 8, 1 << 16);
    {
        let mut followers = crate::directory::followers_of(&alice.followers);
        followers.add("alice", old.clone());
        followers.add("alice", new.clone());
    }
    // The flow gave the room connection 1 only; connection 2 opened meanwhile.
    let (decided, fairness) = joined(&mut alice, 7, RoomKind::Wheel, vec![old.connection]);
    assert!(fairness.expect("joined").is_some());
    let subscribed: Vec<ConnectionId> = decided
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::ToRoom {
                room: 7,
                message: RoomMsg::Subscribe { outbound, .. },
            } => Some(outbound.connection),
            _ => None,
        })
        .collect();
    assert_eq!(subscribed, vec![new.connection]);
}

#[test]
fn a_queued_request_whose_client_stopped_waiting_is_not_run() {
    let mut alice = session(config());
    let _first = quick_join(&mut alice);
    let (_, gave_up) = quick_join(&mut alice);
    drop(gave_up);
    let (_, _waiting) = quick_join(&mut alice);
    let next = alice.input(SessionMsg::FlowDone { epoch: 1, flow: 1 });
    // The client that gave up is skipped; the one still waiting gets flow 2.
    assert_eq!(flows_started(&next.effects), vec![2]);
    alice.input(SessionMsg::FlowDone { epoch: 1, flow: 2 });
    assert!(SessionEntity::may_passivate(&alice.state, &alice.memory));
}

#[test]
fn a_flow_that_never_ends_is_given_up_at_its_deadline() {
    let mut alice = session(config());
    let _first = quick_join(&mut alice);
    let (_, _second) = quick_join(&mut alice);
    let due = SessionEntity::next_deadline(&alice.env, &alice.state, &alice.memory)
        .expect("the flow has a deadline");
    assert_eq!(due, alice.now_ms + alice.env.config.session.flow_timeout_ms);
    alice.now_ms = due;
    let next = alice.input(SessionMsg::Deadline);
    assert_eq!(
        flows_started(&next.effects),
        vec![2],
        "the next request goes ahead"
    );
    // The lost flow's late end does not end the one now under way.
    alice.input(SessionMsg::FlowDone { epoch: 1, flow: 1 });
    assert!(!SessionEntity::may_passivate(&alice.state, &alice.memory));
}
