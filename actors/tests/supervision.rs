//! Supervision: a failed session restarts from its persisted state; past the restart
//! intensity it is stopped and answers "unavailable"; passivation loses no message.

mod common;

use common::{config, eventually, eventually_async, hub_with};
use playtree_actors::mail::{Delivery, Msg};
use playtree_protocol::{ErrorCode, ErrorReply, ReplyBody, Request};

fn credit(hub: &playtree_actors::Hub, seq: u64, amount: u64) {
    hub.deliver(Delivery {
        letter: common::credit(5, "alice", seq, amount),
        attachment: None,
    });
}

async fn balance(hub: &playtree_actors::Hub) -> Result<u64, ErrorReply> {
    match hub
        .request("alice", Request::GetWallet, None, 0, false)
        .await?
    {
        ReplyBody::Wallet { balance } => Ok(balance),
        other => panic!("unexpected {other:?}"),
    }
}

fn unavailable(balance: &Result<u64, ErrorReply>) -> bool {
    matches!(balance, Err(error) if error.code == ErrorCode::EntityUnavailable)
}

#[tokio::test]
async fn a_failed_session_restarts_from_its_persisted_state_within_the_intensity() {
    let mut config = config();
    config.actors.restarts_max = 2;
    config.actors.restart_window_ms = 60_000;
    let test = hub_with(config).await;
    let hub = &test.hub;
    credit(hub, 1, 30);
    eventually_async("credited", || async { balance(hub).await == Ok(30) }).await;

    for restart in 1..=2 {
        let before = hub.active_session("alice").expect("active");
        before.cast(Msg::InjectFault).expect("inject");
        // The supervisor reactivates it eagerly; wait for the new instance.
        eventually("a restarted session", || {
            hub.active_session("alice")
                .is_some_and(|now| now.get_id() != before.get_id())
        })
        .await;
        assert_eq!(
            balance(hub).await.expect("balance"),
            30,
            "restart {restart} recovers the wallet"
        );
    }

    // A third failure within the window exceeds the intensity: the entity stays down.
    let before = hub.active_session("alice").expect("active");
    before.cast(Msg::InjectFault).expect("inject");
    // Calls race the supervisor's verdict until it lands; then the entity stays down.
    tokio::time::timeout(common::WAIT, async {
        while !unavailable(&balance(hub).await) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the session is given up");
    assert!(unavailable(&balance(hub).await));

    // After the window, it can be activated again, with its state intact.
    test.clock.advance(60_001);
    assert_eq!(balance(hub).await.expect("balance after the window"), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivation_loses_no_message() {
    let mut config = config();
    config.session.passivate_after_ms = 100;
    let test = hub_with(config).await;
    let hub = &test.hub;
    let mut expected = 0;
    let mut passivations = 0;
    for seq in 1..=40u64 {
        credit(hub, seq, seq);
        expected += seq;
        if seq % 10 == 0 {
            // Let the session go idle and passivate, while more credits arrive.
            let before = hub.active_session("alice").map(|s| s.get_id());
            // (Time moves on while the test waits: credits still on their way are
            // activity, after which the session waits its full idle period again.)
            eventually("passivation", || {
                test.clock.advance(1_000);
                hub.active_session("alice").map(|s| s.get_id()) != before
            })
            .await;
            passivations += 1;
        }
    }
    assert_eq!(passivations, 4);
    eventually_async("every credit is taken", || async {
        balance(hub).await == Ok(expected)
    })
    .await;
}

/// A backend whose first write waits until the test lets it finish, so that the test
/// knows a flush is under way while it queues more writes.
#[derive(Debug)]
struct GatedBackend {
    inner: playtree_actors::store::MemoryBackend,
    entered: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl playtree_actors::store::StoreBackend for GatedBackend {
    common::delegate_backend_scans!(inner);

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, playtree_actors::StoreError> {
        self.inner.get(key)
    }
    fn write_durable(
        &self,
        ops: &[playtree_actors::store::WriteOp],
    ) -> Result<(), playtree_actors::StoreError> {
        if !ops.is_empty()
            && let Some(entered) = self.entered.lock().expect("gate").take()
        {
            let _ = entered.send(());
            if let Some(release) = self.release.lock().expect("gate").take() {
                // Bounded: a test that never releases fails instead of hanging.
                let _ = release.recv_timeout(std::time::Duration::from_secs(10));
            }
        }
        self.inner.write_durable(ops)
    }
}

#[tokio::test]
async fn one_flush_serves_many_writers() {
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let backend = GatedBackend {
        inner: playtree_actors::store::MemoryBackend::default(),
        entered: std::sync::Mutex::new(Some(entered_tx)),
        release: std::sync::Mutex::new(Some(release_rx)),
    };
    let store = playtree_actors::store::Store::with_backend(
        std::sync::Arc::new(backend),
        &config().store,
        std::sync::Arc::new(playtree_actors::clock::FixedClock(1)),
    )
    .expect("store");
    let put = |n: u64| {
        store
            .submit(vec![playtree_actors::store::WriteOp::Put(
                n.to_be_bytes().to_vec(),
                vec![1],
            )])
            .expect("queued")
    };
    let before = store.flush_count();
    let first = put(0);
    // The first write's flush is under way (and held): the next 49 queue behind it.
    entered
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the first flush starts");
    let rest: Vec<_> = (1..50u64).map(put).collect();
    release.send(()).expect("release the first flush");
    first.durable().await.expect("durable");
    for ticket in rest {
        ticket.durable().await.expect("durable");
    }
    assert_eq!(
        store.flush_count() - before,
        2,
        "one flush for the first write, one for the 49 queued while it ran"
    );
}
