//! Recovery (snapshot + journal replay) reproduces the live state exactly, whatever the
//! event sequence and wherever the snapshots fall.

mod common;

use playtree_actors::mail::{Membership, SpinDraw};
use playtree_actors::session::{SessionEntity, SessionEvent};
use playtree_actors::store::{Entity, Journal, Store};
use playtree_protocol::RoomKind;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

fn clock() -> std::sync::Arc<dyn playtree_actors::Clock> {
    std::sync::Arc::new(playtree_actors::clock::FixedClock(common::START_MS))
}

fn session_event(rng: &mut ChaCha20Rng, step: u64) -> SessionEvent {
    let wheel = if rng.next_u32().is_multiple_of(2) {
        "classic"
    } else {
        "bonus"
    }
    .to_string();
    match rng.next_u32() % 6 {
        0 => SessionEvent::SeedRotated { wheel },
        1 => SessionEvent::SpinDrawn {
            spin: SpinDraw {
                room: u64::from(rng.next_u32() % 3),
                wheel,
                nonce: step,
                client_seed: format!("c{step}"),
                commitment: [1; 32],
                segment: rng.next_u32() % 6,
                request_key: Some(step),
            },
            day: (step / 7) as u32,
        },
        2 => SessionEvent::Credited {
            grant_id: format!("room:{}:{}", rng.next_u32() % 3, step),
            amount: u64::from(rng.next_u32() % 100),
            reason: "spin".into(),
            settles: Some((wheel, step.saturating_sub(1))),
            news: Vec::new(),
            kept: 8,
        },
        3 => SessionEvent::JoinedRoom {
            room: u64::from(rng.next_u32() % 3),
            membership: Membership {
                kind: RoomKind::Wheel,
                variant: wheel,
            },
        },
        4 => SessionEvent::FirstSeen { at_ms: step },
        _ => SessionEvent::LeftRoom {
            room: u64::from(rng.next_u32() % 3),
        },
    }
}

/// Persists `events` in chunks of `batch`, restarting the entity (a new incarnation
/// recovered from the store) after a chunk whenever `restarts` says so, and checks that
/// the live state is the fold of the events and that recovery rebuilds it exactly.
async fn check_replay<E: Entity>(
    store: &Store,
    id: &str,
    snapshot_every: u64,
    events: Vec<E::Event>,
    batch: usize,
    restarts: &mut ChaCha20Rng,
) where
    E::State: PartialEq,
{
    let mut live: Journal<E> = Journal::open(store.clone(), id, snapshot_every)
        .await
        .expect("open");
    let chunks: Vec<&[E::Event]> = events.chunks(batch).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        live.persist(chunk.to_vec()).await.expect("persist");
        if restarts.next_u32().is_multiple_of(3) {
            let previous = live.incarnation();
            let mut stale = live;
            live = Journal::open(store.clone(), id, snapshot_every)
                .await
                .expect("restart");
            assert_eq!(live.incarnation(), previous + 1);
            assert_eq!(
                live.state(),
                stale.state(),
                "{id}: restart recovers the state"
            );
            // The new incarnation writes its number with its first commit; from then
            // on the old one can no longer write.
            if let Some(ticket) = live.claim().expect("claim") {
                live.durable(ticket).await.expect("claimed");
            }
            // (What the stale one writes is what comes next, valid after its state.)
            if let Some(next) = chunks.get(index + 1) {
                let refused = stale.persist(next.to_vec()).await;
                assert!(
                    matches!(refused, Err(playtree_actors::StoreError::Fenced { .. })),
                    "{id}: a stale incarnation's write: {refused:?}"
                );
            }
        }
    }
    // The pure fold over all events is what the live journal holds...
    let mut folded = E::State::default();
    for event in &events {
        E::apply(&mut folded, event);
    }
    assert_eq!(
        live.state(),
        &folded,
        "{id}: live state is the fold of its events"
    );
    // ...and what recovery rebuilds from snapshot + journal.
    let recovered: Journal<E> = Journal::open(store.clone(), id, snapshot_every)
        .await
        .expect("reopen");
    assert_eq!(
        recovered.state(),
        live.state(),
        "{id}: recovery equals live"
    );
    assert_eq!(recovered.seq(), events.len() as u64);
}

#[tokio::test]
async fn recovery_equals_live_state_for_many_random_histories() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &common::config().store, clock()).expect("store");
    for seed in 0..24u64 {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let n_events = 1 + (seed * 7 % 60);
        let snapshot_every = 1 + seed % 9;
        let batch = 1 + (seed % 4) as usize;
        let events: Vec<SessionEvent> = (0..n_events)
            .map(|step| session_event(&mut rng, step))
            .collect();
        let mut restarts = ChaCha20Rng::seed_from_u64(seed + 1_000);
        check_replay::<SessionEntity>(
            &store,
            &format!("player-{seed}"),
            snapshot_every,
            events,
            batch,
            &mut restarts,
        )
        .await;
    }
}

#[tokio::test]
async fn snapshots_truncate_the_journal_they_cover() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &common::config().store, clock()).expect("store");
    let mut journal: Journal<SessionEntity> =
        Journal::open(store.clone(), "trim", 4).await.expect("open");
    for room in 0..10 {
        journal
            .persist(vec![SessionEvent::JoinedRoom {
                room,
                membership: Membership {
                    kind: RoomKind::Wheel,
                    variant: "classic".into(),
                },
            }])
            .await
            .expect("persist");
    }
    let stored = store.load("session", "trim").await.expect("load");
    assert!(stored.snapshot.is_some());
    // Snapshots at 4 and 8; only entries 9 and 10 remain in the journal.
    let seqs: Vec<u64> = stored.journal.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, vec![9, 10]);
}

#[tokio::test]
async fn a_corrupt_record_is_reported_not_applied() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &common::config().store, clock()).expect("store");
    let key = playtree_actors::store::journal_key("session", "broken", 1);
    store
        .commit(vec![playtree_actors::store::WriteOp::Put(
            key,
            vec![1, 0xFF, 0xFF, 0xFF],
        )])
        .await
        .expect("write garbage");
    let opened = Journal::<SessionEntity>::open(store.clone(), "broken", 4).await;
    assert!(
        matches!(opened, Err(playtree_actors::StoreError::Corrupt { .. })),
        "{opened:?}"
    );
}

/// A backend that, right after the first read of a snapshot key, lets a snapshot of the
/// same entity land (written and its journal truncated), as the entity's own passivation
/// could while a reader is between its reads.
#[derive(Debug)]
struct SnapshotLandsDuringRead {
    disk: std::sync::Arc<playtree_actors::store::MemoryBackend>,
    landing: std::sync::Mutex<Option<Vec<playtree_actors::store::WriteOp>>>,
}

impl playtree_actors::store::StoreBackend for SnapshotLandsDuringRead {
    common::delegate_backend_scans!(disk);

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, playtree_actors::StoreError> {
        let value = self.disk.get(key)?;
        if key.first() == Some(&b's')
            && let Some(ops) = self.landing.lock().expect("landing").take()
        {
            self.disk.write_durable(&ops)?;
        }
        Ok(value)
    }

    fn write_durable(
        &self,
        ops: &[playtree_actors::store::WriteOp],
    ) -> Result<(), playtree_actors::StoreError> {
        self.disk.write_durable(ops)
    }
}

#[tokio::test]
async fn a_reader_never_pairs_an_old_snapshot_with_a_journal_truncated_past_it() {
    use playtree_actors::store::{MemoryBackend, StoreBackend, WriteOp, snapshot_key};
    use std::sync::Arc;
    let config = common::config().store;
    let events = || {
        (0..3)
            .map(|room| SessionEvent::JoinedRoom {
                room,
                membership: Membership {
                    kind: RoomKind::Wheel,
                    variant: "classic".into(),
                },
            })
            .collect::<Vec<_>>()
    };
    // What the entity's snapshot at seq 3 looks like on disk.
    let snapshotted = Arc::new(MemoryBackend::default());
    let store = Store::with_backend(snapshotted.clone(), &config, clock()).expect("store");
    let mut journal: Journal<SessionEntity> = Journal::open(store.clone(), "racer", 100)
        .await
        .expect("open");
    journal.persist(events()).await.expect("persist");
    journal.snapshot().await.expect("snapshot");
    let snapshot = snapshotted
        .get(&snapshot_key("session", "racer"))
        .expect("read")
        .expect("a snapshot");
    let expected = journal.state().clone();

    // The same history, not yet snapshotted; the snapshot lands during the read.
    let disk = Arc::new(MemoryBackend::default());
    let racing = Arc::new(SnapshotLandsDuringRead {
        disk: disk.clone(),
        landing: std::sync::Mutex::new(None),
    });
    let store = Store::with_backend(racing.clone(), &config, clock()).expect("store");
    let mut journal: Journal<SessionEntity> = Journal::open(store.clone(), "racer", 100)
        .await
        .expect("open");
    journal.persist(events()).await.expect("persist");
    let mut landing = vec![WriteOp::Put(snapshot_key("session", "racer"), snapshot)];
    landing.extend(
        (1..=3).map(|seq| {
            WriteOp::Delete(playtree_actors::store::journal_key("session", "racer", seq))
        }),
    );
    *racing.landing.lock().expect("landing") = Some(landing);
    let (seq, state, _) = Journal::<SessionEntity>::inspect(&store, "racer")
        .await
        .expect("inspect");
    assert_eq!(
        (seq, &state),
        (3, &expected),
        "a consistent state, not a torn one"
    );
    assert!(
        racing.landing.lock().expect("landing").is_none(),
        "the snapshot landed during the read"
    );
}
