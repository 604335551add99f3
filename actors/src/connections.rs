//! Live connections per player, each with a bounded outbound queue of encoded frames.
//!
//! Actors push bytes with `try_send`: a full queue never blocks an actor. The connection
//! is marked as a slow consumer instead, and its writer closes it with the documented
//! close code; the room and every other member carry on.

use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{Notify, mpsc};

pub type ConnectionId = u64;

/// One encoded frame on its way out, with its type for the frames-out metric.
#[derive(Debug, Clone)]
pub struct OutFrame {
    pub kind: &'static str,
    pub bytes: Bytes,
}

/// The sending side of one connection's outbound queue.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub connection: ConnectionId,
    frames: mpsc::Sender<OutFrame>,
    slow: SlowSignal,
}

/// Set once when a connection's queue overflows; its writer waits on it.
#[derive(Debug, Default, Clone)]
pub struct SlowSignal(Arc<SlowFlag>);

#[derive(Debug, Default)]
struct SlowFlag {
    set: AtomicBool,
    notify: Notify,
}

impl SlowSignal {
    /// Resolves once the connection has been marked as a slow consumer.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.0.set.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn raise(&self) {
        if !self.0.set.swap(true, Ordering::AcqRel) {
            metrics::counter!("playtree_slow_consumer_disconnects_total").increment(1);
        }
        self.0.notify.notify_waiters();
    }
}

/// The receiving side, owned by the connection's writer.
#[derive(Debug)]
pub struct OutboundReceiver {
    pub frames: mpsc::Receiver<OutFrame>,
    pub slow: SlowSignal,
}

impl Outbound {
    /// A new outbound queue holding at most `frames_max` frames.
    pub fn channel(connection: ConnectionId, frames_max: usize) -> (Outbound, OutboundReceiver) {
        let (frames, receiver) = mpsc::channel(frames_max.max(1));
        let slow = SlowSignal::default();
        (
            Outbound {
                connection,
                frames,
                slow: slow.clone(),
            },
            OutboundReceiver {
                frames: receiver,
                slow,
            },
        )
    }

    /// Queues a frame. Returns false when the queue is full (the connection is then
    /// marked slow) or the connection is gone.
    pub fn push(&self, kind: &'static str, bytes: Bytes) -> bool {
        match self.frames.try_send(OutFrame { kind, bytes }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow.raise();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Every live connection, by player id.
#[derive(Debug, Default)]
pub struct Connections {
    by_player: DashMap<String, Vec<Outbound>>,
    next_id: AtomicU64,
}

impl Connections {
    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn attach(&self, player: &str, outbound: Outbound) {
        self.by_player
            .entry(player.to_owned())
            .or_default()
            .push(outbound);
    }

    pub fn detach(&self, player: &str, connection: ConnectionId) {
        self.by_player.remove_if_mut(player, |_, outbounds| {
            outbounds.retain(|o| o.connection != connection);
            outbounds.is_empty()
        });
    }

    pub fn is_connected(&self, player: &str) -> bool {
        self.by_player.contains_key(player)
    }

    /// Hands the same bytes to every connection of `player`.
    pub fn push(&self, player: &str, kind: &'static str, frame: &Bytes) {
        if let Some(outbounds) = self.by_player.get(player) {
            for outbound in outbounds.iter() {
                outbound.push(kind, frame.clone());
            }
        }
    }

    pub fn count(&self) -> usize {
        self.by_player.iter().map(|entry| entry.value().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_marks_the_connection_slow_without_blocking() {
        let (outbound, receiver) = Outbound::channel(1, 2);
        assert!(outbound.push("event", Bytes::from_static(b"a")));
        assert!(outbound.push("event", Bytes::from_static(b"b")));
        assert!(!outbound.push("event", Bytes::from_static(b"c")));
        tokio::time::timeout(std::time::Duration::from_secs(5), receiver.slow.wait())
            .await
            .expect("slow consumer flagged");
    }

    #[test]
    fn detaching_the_last_connection_forgets_the_player() {
        let connections = Connections::default();
        let (first, _r1) = Outbound::channel(1, 4);
        let (second, _r2) = Outbound::channel(2, 4);
        connections.attach("alice", first);
        connections.attach("alice", second);
        connections.detach("alice", 1);
        assert!(connections.is_connected("alice"));
        connections.detach("alice", 2);
        assert!(!connections.is_connected("alice"));
    }
}
