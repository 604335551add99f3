//! Supervision: a failed session restarts from its persisted state; past the restart
//! intensity it is stopped and answers "unavailable"; passivation loses no message.

mod common;

use common::{config, eventually, hub_with};
use playtree_actors::HubError;
use playtree_actors::grant::Grant;
use playtree_actors::session::SessionMsg;
use playtree_protocol::{GrantId, ReplyBody, Request};

fn credit(seq: u64, amount: u64) -> SessionMsg {
    SessionMsg::Credit {
        grant: Grant {
            id: GrantId {
                source: "room:5".into(),
                seq,
            },
            previous: seq - 1,
            beneficiary: "alice".into(),
            amount,
            reason: "test".into(),
            settles: None,
        },
        source: playtree_actors::grant::GrantSource::Room(5),
    }
}

async fn balance(hub: &playtree_actors::Hub) -> Result<u64, HubError> {
    let reply = hub
        .call_session("alice", |reply| SessionMsg::Request {
            request: Request::GetWallet,
            reply,
        })
        .await?;
    match reply {
        Ok(ReplyBody::Wallet { balance }) => Ok(balance),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_session_restarts_from_its_persisted_state_within_the_intensity() {
    let mut config = config();
    config.actors.restarts_max = 2;
    config.actors.restart_window_ms = 60_000;
    let test = hub_with(config).await;
    let hub = &test.hub;
    hub.cast_session("alice", credit(1, 30))
        .await
        .expect("credit");
    assert_eq!(balance(hub).await.expect("balance"), 30);

    for restart in 1..=2 {
        let before = hub.active_session("alice").expect("active");
        before.cast(SessionMsg::InjectFault).expect("inject");
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
    before.cast(SessionMsg::InjectFault).expect("inject");
    // Calls race the supervisor's verdict until it lands; then the entity stays down.
    tokio::time::timeout(common::WAIT, async {
        while !matches!(balance(hub).await, Err(HubError::Unavailable { .. })) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the session is given up");
    assert!(matches!(
        balance(hub).await,
        Err(HubError::Unavailable { .. })
    ));

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
        hub.cast_session("alice", credit(seq, seq))
            .await
            .expect("credit");
        expected += seq;
        if seq % 10 == 0 {
            // Let the session go idle and passivate, while more credits arrive.
            let before = hub.active_session("alice").map(|s| s.get_id());
            test.clock.advance(1_000);
            eventually("passivation", || {
                hub.active_session("alice").map(|s| s.get_id()) != before
            })
            .await;
            passivations += 1;
        }
    }
    assert_eq!(passivations, 4);
    assert_eq!(balance(hub).await.expect("balance"), expected);
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
    let store =
        playtree_actors::store::Store::with_backend(std::sync::Arc::new(backend), &config().store)
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
