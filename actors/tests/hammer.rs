//! Activation, passivation and restart of one entity, hammered from many tasks at once
//! on the real store: incarnation numbers only rise, and no journal entry is lost or
//! written twice (redelivering every grant afterwards pays nothing more, and the wallet
//! holds exactly what was granted).

mod common;

use common::{WAIT, ask, config, credit, deliver, hub_with};
use playtree_actors::mail::{Address, Msg};
use playtree_actors::runtime::Durable;
use playtree_actors::session::SessionEntity;
use playtree_actors::store::Journal;
use playtree_protocol::{ReplyBody, Request};
use std::time::Duration;

const SOURCES: u64 = 6;
const GRANTS_PER_SOURCE: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incarnations_rise_and_no_credit_is_lost_or_doubled_under_restarts_and_passivation() {
    let mut config = config();
    config.actors.restarts_max = 10_000;
    config.actors.timer_poll_ms = 2;
    config.session.passivate_after_ms = 20;
    let test = hub_with(config).await;
    let hub = &test.hub;

    let mut writers = tokio::task::JoinSet::new();
    for source in 1..=SOURCES {
        let hub = hub.clone();
        writers.spawn(async move {
            for seq in 1..=GRANTS_PER_SOURCE {
                // A letter to an instance that fails before taking it is lost, as it
                // would be in production; the source delivers it again (below).
                hub.deliver(playtree_actors::mail::Delivery {
                    letter: credit(source, "alice", seq, seq),
                    attachment: None,
                });
                // A round trip paces the writer by the session itself.
                let _ = hub
                    .request("alice", Request::GetWallet, None, 0, false)
                    .await;
            }
        });
    }

    // Meanwhile: make the session fail, let it passivate, read it; the incarnation in
    // the store must never go back.
    let mut incarnations = Vec::new();
    let mut step = 0u64;
    while !writers.is_empty() {
        match step % 3 {
            0 => {
                if let Some(session) = hub.active_session("alice") {
                    let _ = session.cast(Msg::InjectFault);
                }
            }
            1 => test.clock.advance(50),
            _ => {
                let _ = ask(&test, "alice", Request::GetWallet).await;
            }
        }
        incarnations.push(
            test.store
                .incarnation("session", "alice")
                .await
                .expect("incarnation"),
        );
        step += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
        while let Some(done) = writers.try_join_next() {
            done.expect("writer");
        }
    }
    assert!(
        incarnations.windows(2).all(|pair| pair[0] <= pair[1]),
        "incarnations went back: {incarnations:?}"
    );
    let distinct = {
        let mut seen = incarnations.clone();
        seen.dedup();
        seen.len()
    };
    assert!(
        distinct > 3,
        "only {distinct} incarnations: {incarnations:?}"
    );

    // Every source delivers everything again, as a sender does until it hears its
    // letters were taken (a fault still queued can lose a round: the failing instance's
    // mailbox goes with it); the wallet then holds each credit exactly once.
    let expected = SOURCES * GRANTS_PER_SOURCE * (GRANTS_PER_SOURCE + 1) / 2;
    let balance = tokio::time::timeout(WAIT, async {
        loop {
            for source in 1..=SOURCES {
                for seq in 1..=GRANTS_PER_SOURCE {
                    deliver(&test, credit(source, "alice", seq, seq));
                }
            }
            let reply = ask(&test, "alice", Request::GetWallet).await;
            if let Ok(ReplyBody::Wallet { balance }) = reply
                && balance >= expected
            {
                return balance;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let Ok(balance) = balance else {
        let stored = Journal::<Durable<SessionEntity>>::inspect(&test.store, "alice").await;
        let active = test.hub.active_session("alice").map(|actor| actor.get_id());
        let wallet = ask(&test, "alice", Request::GetWallet).await;
        panic!("not every grant arrived: wallet {wallet:?}, active {active:?}, stored {stored:?}");
    };
    assert_eq!(balance, expected, "no grant paid twice");
    // The journal recovers cleanly: no gap, no entry written twice over another.
    let (_, stored, _) = Journal::<Durable<SessionEntity>>::inspect(&test.store, "alice")
        .await
        .expect("the journal recovers");
    assert_eq!(stored.state.balance, expected);
    for source in 1..=SOURCES {
        let mark = &stored.post.marks[&Address::Room(source)];
        assert_eq!((mark.through, mark.above.len()), (GRANTS_PER_SOURCE, 0));
    }
}
