//! A session's decisions, with no actor, store or socket.

use super::*;
use crate::mail::{ClaimAnswer, Credit, JoinLetter, Membership, Seated, SpinPaid};
use crate::runtime::Decided;
use crate::runtime::testing::{Bench, config, env, port, send_replies};
use tokio::sync::oneshot::Receiver;

type Answer = Receiver<Result<ReplyBody, ErrorReply>>;

fn session(config: GameConfig) -> Bench<SessionEntity> {
    Bench::<SessionEntity>::activate("alice".into(), env(config), ()).0
}

fn request(
    bench: &mut Bench<SessionEntity>,
    request: Request,
    keyed: Option<Keyed>,
) -> (Decided<SessionEntity>, Answer) {
    let (reply, answer) = port();
    let mut decided = bench.input(SessionInput::Request(Box::new(PlayerRequest {
        request,
        keyed,
        received_ms: bench.now_ms,
        suspect_source: false,
        code_owner: None,
        reply,
    })));
    decided.effects = send_replies(decided.effects);
    (decided, answer)
}

/// A letter from `from` to the session.
fn letter(bench: &Bench<SessionEntity>, from: Address, body: Body) -> Letter {
    let seq = bench
        .stored
        .post
        .marks
        .get(&from)
        .map_or(1, |mark| mark.through + 1);
    Letter {
        from,
        to: bench.address.clone(),
        seq,
        previous: 0,
        sent_ms: bench.now_ms,
        body,
    }
}

fn receive(bench: &mut Bench<SessionEntity>, from: Address, body: Body) -> Decided<SessionEntity> {
    let letter = letter(bench, from, body);
    let mut decided = bench.letter(letter, None);
    decided.effects = send_replies(decided.effects);
    decided
}

/// Seats alice in wheel room 7 as the room's letter would.
fn seat_in_wheel(bench: &mut Bench<SessionEntity>, room: RoomId) {
    receive(
        bench,
        Address::Room(room),
        Body::Seated(Seated {
            room,
            membership: Membership {
                kind: RoomKind::Wheel,
                variant: "classic".into(),
            },
            answer: None,
        }),
    );
}

fn sent(decided: &Decided<SessionEntity>) -> Vec<(Address, &'static str)> {
    decided
        .sent()
        .iter()
        .map(|letter| (letter.to.clone(), letter.body.name()))
        .collect()
}

fn spin_request(room: RoomId) -> Request {
    Request::Spin {
        room,
        client_seed: "seed".into(),
    }
}

/// The room pays the spin `nonce`: its credit letter.
fn pay(
    bench: &mut Bench<SessionEntity>,
    room: RoomId,
    nonce: u64,
    amount: u64,
) -> Decided<SessionEntity> {
    receive(
        bench,
        Address::Room(room),
        Body::Credit(Credit {
            amount,
            reason: "wheel classic".into(),
            spin: Some(SpinPaid {
                key: ("classic".into(), nonce),
                label: "ten".into(),
                inventory_exhausted: false,
            }),
            news: Vec::new(),
        }),
    )
}

#[test]
fn a_spin_is_drawn_and_sent_to_its_room_and_answered_when_the_room_pays_it() {
    let mut alice = session(config());
    seat_in_wheel(&mut alice, 7);
    let (decided, mut answer) = request(&mut alice, spin_request(7), None);
    assert!(matches!(
        decided.events[..],
        [SessionEvent::SpinDrawn { .. }]
    ));
    assert_eq!(sent(&decided), vec![(Address::Room(7), "settle")]);
    assert!(answer.try_recv().is_err(), "no answer before the room pays");
    let paid = pay(&mut alice, 7, 0, 10);
    assert!(matches!(
        paid.events[..],
        [SessionEvent::Credited { .. }, SessionEvent::GameFinished]
    ));
    let Ok(Ok(ReplyBody::Spun(outcome))) = answer.try_recv() else {
        panic!("the client hears once the room paid")
    };
    assert_eq!((outcome.prize, outcome.balance, outcome.nonce), (10, 10, 0));
    assert!(alice.state().pending_spins.is_empty());
    // The player's stream carries the credit, as the state keeps it.
    assert_eq!(alice.state().stream.seq, 1);
    assert_eq!(alice.stream.seq(), 1);
}

#[test]
fn a_keyed_spin_sent_again_waits_for_and_then_gets_its_first_answer() {
    let mut alice = session(config());
    seat_in_wheel(&mut alice, 7);
    let keyed = Some(Keyed {
        key: 41,
        digest: 410,
    });
    let (decided, mut first) = request(&mut alice, spin_request(7), keyed);
    assert!(
        decided
            .events
            .iter()
            .any(|event| matches!(event, SessionEvent::KeyTaken { key: 41, .. })),
        "the key is taken in the draw's commit"
    );
    // Sent again while under way: nothing new is drawn, the answer waits.
    let (again, mut second) = request(&mut alice, spin_request(7), keyed);
    assert!(again.events.is_empty() && again.post.is_empty());
    let paid = pay(&mut alice, 7, 0, 10);
    assert!(
        paid.events
            .iter()
            .any(|event| matches!(event, SessionEvent::KeyAnswered { key: 41, .. })),
        "the answer is kept with the key in the credit's commit"
    );
    let first = first.try_recv().expect("answered").expect("spun");
    assert_eq!(second.try_recv().expect("answered").expect("spun"), first);
    // And again later (after a restart too: the key is in the state).
    let (third, mut third_answer) = request(&mut alice, spin_request(7), keyed);
    assert!(third.events.is_empty());
    assert_eq!(
        third_answer.try_recv().expect("answered").expect("spun"),
        first
    );
    assert_eq!(alice.state().balance, 10, "paid once");
    // The same key for another request is refused.
    let (_, mut reused) = request(&mut alice, Request::GetWallet, keyed);
    assert!(
        reused.try_recv().expect("answered").is_ok(),
        "reads take no key"
    );
    let other = Some(Keyed {
        key: 41,
        digest: 999,
    });
    let (_, mut reused) = request(&mut alice, spin_request(8), other);
    assert_eq!(
        reused
            .try_recv()
            .expect("answered")
            .map_err(|e| e.code)
            .err(),
        Some(ErrorCode::KeyReused)
    );
}

#[test]
fn a_join_goes_to_a_room_by_letter_and_a_second_one_of_the_same_wheel_waits_for_it() {
    let mut alice = session(config());
    let quick = Request::QuickJoin {
        kind: RoomKind::Wheel,
        variant: None,
    };
    let (decided, mut first) = request(&mut alice, quick.clone(), None);
    let letters = decided.sent();
    let [join] = letters.as_slice() else {
        panic!("one join letter: {letters:?}")
    };
    let (Address::Room(room), Body::Join(JoinLetter { spec, fairness, .. })) =
        (&join.to, &join.body)
    else {
        panic!("a join to a room")
    };
    assert!(spec.is_some(), "the matchmaker opened a new room");
    assert!(fairness.is_some(), "the wheel's commitment goes with it");
    let room = *room;
    let (waiting, _second) = request(&mut alice, quick, None);
    assert!(
        waiting.post.is_empty(),
        "the second join waits for the first"
    );
    assert!(
        first.try_recv().is_err(),
        "the room answers, not the session"
    );
    // The room seated alice: recorded, and the waiting join goes (to alice's seat).
    seat_in_wheel(&mut alice, room);
    assert!(alice.state().rooms.contains_key(&room));
    assert!(!SessionEntity::may_passivate(alice.state(), &alice.memory));
}

#[test]
fn a_second_seat_of_one_wheel_is_given_back() {
    let mut alice = session(config());
    seat_in_wheel(&mut alice, 7);
    let decided = receive(
        &mut alice,
        Address::Room(8),
        Body::Seated(Seated {
            room: 8,
            membership: Membership {
                kind: RoomKind::Wheel,
                variant: "classic".into(),
            },
            answer: None,
        }),
    );
    assert_eq!(sent(&decided), vec![(Address::Room(8), "leave")]);
    assert_eq!(
        alice.state().rooms.keys().copied().collect::<Vec<_>>(),
        vec![7]
    );
}

#[test]
fn leaving_records_the_seat_given_back_and_tells_the_room() {
    let mut alice = session(config());
    seat_in_wheel(&mut alice, 7);
    let (decided, mut answer) = request(&mut alice, Request::LeaveRoom { room: 7 }, None);
    assert_eq!(sent(&decided), vec![(Address::Room(7), "leave")]);
    assert!(matches!(
        answer.try_recv(),
        Ok(Ok(ReplyBody::RoomLeft { room: 7 }))
    ));
    let (_, mut again) = request(&mut alice, Request::LeaveRoom { room: 7 }, None);
    assert_eq!(
        again
            .try_recv()
            .expect("answered")
            .map_err(|e| e.code)
            .err(),
        Some(ErrorCode::NotInRoom)
    );
}

#[test]
fn a_claim_starts_here_and_the_owner_answers_its_steps() {
    let mut alice = session(config());
    // Step 1: alice claims bob's code.
    let (reply, _answer) = port();
    let decided = alice.input(SessionInput::Request(Box::new(PlayerRequest {
        request: Request::ClaimReferral {
            code: "ABCD-EFGH".into(),
        },
        keyed: None,
        received_ms: 0,
        suspect_source: false,
        code_owner: Some("bob".into()),
        reply,
    })));
    assert!(matches!(
        decided.events[..],
        [SessionEvent::ClaimStarted { .. }]
    ));
    assert_eq!(
        sent(&decided),
        vec![(Address::Session("bob".into()), "accept_referee")]
    );
    // Meanwhile alice takes no referee: carol's claim of alice's code is refused.
    let accept = receive(
        &mut alice,
        Address::Session("carol".into()),
        Body::AcceptReferee {
            referee: "carol".into(),
            suspect: false,
        },
    );
    let refused = accept.sent();
    let [refusal] = refused.as_slice() else {
        panic!("one refusal")
    };
    assert!(matches!(
        &refusal.body,
        Body::ClaimAnswered(ClaimAnswer::Refused(error)) if error.code == ErrorCode::ReferrerBusy
    ));
    // Step 4: the tree attached alice.
    receive(
        &mut alice,
        Address::Tree("bob".into()),
        Body::ClaimAnswered(ClaimAnswer::Attached {
            referrer: "bob".into(),
            root: "bob".into(),
        }),
    );
    let link = &alice.state().link;
    assert_eq!(
        (link.referrer.as_deref(), link.root.as_deref()),
        (Some("bob"), Some("bob"))
    );
    // Her first finished game activates her: her tree hears of it.
    let finished = receive(&mut alice, Address::Room(9), Body::GameFinished { room: 9 });
    assert_eq!(
        sent(&finished),
        vec![(Address::Tree("bob".into()), "activated")]
    );
}

#[test]
fn an_owner_accepts_a_referee_into_its_tree_and_claims_nothing_until_answered() {
    let mut bob = Bench::<SessionEntity>::activate("bob".into(), env(config()), ()).0;
    let accepted = receive(
        &mut bob,
        Address::Session("alice".into()),
        Body::AcceptReferee {
            referee: "alice".into(),
            suspect: false,
        },
    );
    assert_eq!(
        sent(&accepted),
        vec![(Address::Tree("bob".into()), "attach")]
    );
    let (reply, mut answer) = port();
    let claim = bob.input(SessionInput::Request(Box::new(PlayerRequest {
        request: Request::ClaimReferral {
            code: "ABCD-EFGH".into(),
        },
        keyed: None,
        received_ms: 0,
        suspect_source: false,
        code_owner: Some("carol".into()),
        reply,
    })));
    send_replies(claim.effects);
    assert_eq!(
        answer
            .try_recv()
            .expect("answered")
            .map_err(|e| e.code)
            .err(),
        Some(ErrorCode::AlreadyReferrer)
    );
    // The tree refused alice (full): bob may claim again.
    receive(
        &mut bob,
        Address::Tree("bob".into()),
        Body::RefereeAnswered {
            referee: "alice".into(),
            attached: false,
        },
    );
    assert!(!bob.state().link.has_referees && bob.state().link.accepting.is_empty());
}

#[test]
fn news_from_the_tree_is_kept_on_the_durable_stream() {
    let mut alice = session(config());
    let news = vec![PlayerNewsFixture::friend("zoe")];
    receive(&mut alice, Address::Tree("alice".into()), Body::News(news));
    assert_eq!(alice.state().stream.seq, 1);
    let at = SessionEntity::durable_stream(alice.state()).expect("durable");
    assert_eq!(at.recent.len(), 1);
    assert!(matches!(at.recent[0].1, Event::FriendJoined { .. }));
}

struct PlayerNewsFixture;

impl PlayerNewsFixture {
    fn friend(name: &str) -> crate::mail::PlayerNews {
        crate::mail::PlayerNews::FriendJoined {
            friend: name.into(),
            level: 1,
        }
    }
}
