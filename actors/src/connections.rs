//! One connection's bounded outbound queue of encoded frames, bounded in frames and in
//! bytes.
//!
//! Stream owners push with `try_send`: a full queue never blocks an actor. The
//! connection is marked as a slow consumer instead, and its writer closes it with the
//! documented close code; the room and every other member carry on.

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    queued_bytes: Arc<AtomicUsize>,
    bytes_max: usize,
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

    pub fn is_set(&self) -> bool {
        self.0.set.load(Ordering::Acquire)
    }

    fn raise_quietly(&self) {
        self.0.set.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
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
    frames: mpsc::Receiver<OutFrame>,
    queued_bytes: Arc<AtomicUsize>,
    pub slow: SlowSignal,
}

impl OutboundReceiver {
    pub async fn recv(&mut self) -> Option<OutFrame> {
        let frame = self.frames.recv().await?;
        self.queued_bytes
            .fetch_sub(frame.bytes.len(), Ordering::AcqRel);
        Some(frame)
    }

    pub fn try_recv(&mut self) -> Option<OutFrame> {
        let frame = self.frames.try_recv().ok()?;
        self.queued_bytes
            .fetch_sub(frame.bytes.len(), Ordering::AcqRel);
        Some(frame)
    }
}

impl Outbound {
    /// A new outbound queue holding at most `frames_max` frames and `bytes_max` bytes.
    pub fn channel(
        connection: ConnectionId,
        frames_max: usize,
        bytes_max: usize,
    ) -> (Outbound, OutboundReceiver) {
        let (frames, receiver) = mpsc::channel(frames_max.max(1));
        let slow = SlowSignal::default();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        (
            Outbound {
                connection,
                frames,
                queued_bytes: queued_bytes.clone(),
                bytes_max,
                slow: slow.clone(),
            },
            OutboundReceiver {
                frames: receiver,
                queued_bytes,
                slow,
            },
        )
    }

    /// Queues a frame. Returns false when the queue is full (the connection is then
    /// marked slow) or the connection is gone.
    pub fn push(&self, kind: &'static str, bytes: Bytes) -> bool {
        if self.slow.is_set() {
            return false;
        }
        let len = bytes.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.bytes_max {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.slow.raise();
            return false;
        }
        match self.frames.try_send(OutFrame { kind, bytes }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                self.slow.raise();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                false
            }
        }
    }

    /// Closes the connection so that its client reconnects and resumes (with the slow
    /// consumer's close code, which says exactly that): for a follower that a stream
    /// owner could not bring up to date in order.
    pub fn close_for_resync(&self) {
        metrics::counter!("playtree_resync_closes_total").increment(1);
        self.slow.raise_quietly();
    }

    /// True once the connection's writer has gone.
    pub fn is_closed(&self) -> bool {
        self.frames.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[tokio::test]
    async fn a_full_queue_marks_the_connection_slow_without_blocking() {
        let (outbound, receiver) = Outbound::channel(1, 2, 1 << 20);
        assert!(outbound.push("event", frame(1)));
        assert!(outbound.push("event", frame(1)));
        assert!(!outbound.push("event", frame(1)));
        tokio::time::timeout(std::time::Duration::from_secs(5), receiver.slow.wait())
            .await
            .expect("slow consumer flagged");
    }

    #[tokio::test]
    async fn the_byte_bound_holds_too_and_draining_frees_it() {
        let (outbound, mut receiver) = Outbound::channel(1, 100, 10);
        assert!(outbound.push("event", frame(6)));
        assert!(outbound.push("event", frame(4)));
        assert!(receiver.recv().await.is_some());
        assert!(outbound.push("event", frame(6)), "6 bytes were drained");
        assert!(!outbound.push("event", frame(1)), "11 bytes exceed 10");
        assert!(receiver.slow.is_set());
    }
}
