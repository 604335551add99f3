//! One connection's bounded outbound queue of encoded frames, bounded in frames and in
//! bytes.
//!
//! Stream owners push without waiting: a full queue never blocks an actor. The
//! connection is marked as a slow consumer instead, and its writer closes it with the
//! documented close code; the room and every other member carry on.
//!
//! Not a tokio channel: that allocates a block of 32 slots per connection up front
//! (about 2 KiB, most of what a connected player cost once sessions passivate), where a
//! queue that is usually empty needs none.

use bytes::Bytes;
use playtree_protocol::RoomId;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

pub type ConnectionId = u64;

/// One encoded frame on its way out, with its type for the frames-out metric.
#[derive(Debug, Clone)]
pub struct OutFrame {
    pub kind: &'static str,
    pub bytes: Bytes,
}

/// The sending side of one connection's outbound queue. A clone is 16 bytes: every
/// stream the connection follows holds one.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub connection: ConnectionId,
    shared: Arc<Shared>,
}

/// The queue and what the connection's writer waits on, in one allocation per
/// connection. A queue holds no buffer while it is empty (most of the time, for most
/// connections): a connection that is only followed costs this struct and no more.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Set once the writer (the receiver) has gone; read without the lock.
    closed: AtomicBool,
    /// Set once the connection must close as a slow consumer; read without the lock.
    slow: AtomicBool,
    frames_max: usize,
    bytes_max: usize,
    /// The rooms this connection follows, so that when it closes they can be told
    /// without its player's session (which may be passivated).
    rooms: Mutex<Vec<RoomId>>,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<OutFrame>,
    bytes: usize,
    /// When the queue last went from empty to holding a frame: the wait of its oldest
    /// frame, read by the writer when it starts a write (the fanout delay metric).
    nonempty_since: Option<std::time::Instant>,
    /// The writer waiting for a frame, and the writer waiting for the slow signal.
    frame_waker: Option<Waker>,
    slow_waker: Option<Waker>,
}

/// A drained queue keeps at most this many slots allocated.
const IDLE_CAPACITY_MAX: usize = 8;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation is a handful of field updates with no call that can panic
    // between them: a panic elsewhere leaves the queue consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn register(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|held| held.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

/// Resolves once a connection has been marked as a slow consumer.
#[derive(Debug, Clone)]
pub struct SlowSignal(Arc<Shared>);

impl SlowSignal {
    pub async fn wait(&self) {
        poll_fn(|cx| self.poll(cx)).await
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_set() {
            return Poll::Ready(());
        }
        let mut queue = lock(&self.0.queue);
        // Checked again under the lock, which `raise` takes before waking.
        if self.is_set() {
            return Poll::Ready(());
        }
        register(&mut queue.slow_waker, cx.waker());
        Poll::Pending
    }

    pub fn is_set(&self) -> bool {
        self.0.slow.load(Ordering::Acquire)
    }
}

/// The receiving side, owned by the connection's writer. Dropping it closes the
/// connection for every sender.
#[derive(Debug)]
pub struct OutboundReceiver {
    shared: Arc<Shared>,
    pub slow: SlowSignal,
    /// When the queue became non-empty before the frame `recv` last returned.
    waiting_since: Option<std::time::Instant>,
}

impl OutboundReceiver {
    /// The next frame; waits while the queue is empty.
    pub async fn recv(&mut self) -> OutFrame {
        let shared = &self.shared;
        let (frame, since) = poll_fn(|cx| {
            let mut queue = lock(&shared.queue);
            let since = queue.nonempty_since;
            match pop(&mut queue) {
                Some(frame) => Poll::Ready((frame, since)),
                None => {
                    register(&mut queue.frame_waker, cx.waker());
                    Poll::Pending
                }
            }
        })
        .await;
        self.waiting_since = since;
        frame
    }

    /// Since when the frame `recv` last returned had been waiting at most: when the
    /// queue last became non-empty, or when the write before it started.
    pub fn waiting_since(&self) -> Option<std::time::Instant> {
        self.waiting_since
    }

    /// A write that began at `started` is done. Frames still queued arrived after it
    /// began, unless the batch stopped at its size limit with older frames left: their
    /// wait is counted from `started` on, so that a queue that never drains does not
    /// report the age of its backlog as every frame's wait.
    pub fn write_done(&mut self, started: std::time::Instant) {
        let mut queue = lock(&self.shared.queue);
        if !queue.frames.is_empty() {
            queue.nonempty_since = Some(started);
        }
    }

    pub fn try_recv(&mut self) -> Option<OutFrame> {
        pop(&mut lock(&self.shared.queue))
    }
}

fn pop(queue: &mut Queue) -> Option<OutFrame> {
    let frame = queue.frames.pop_front()?;
    queue.bytes -= frame.bytes.len();
    if queue.frames.is_empty() {
        queue.nonempty_since = None;
        if queue.frames.capacity() > IDLE_CAPACITY_MAX {
            queue.frames = VecDeque::new();
        }
    }
    Some(frame)
}

impl Drop for OutboundReceiver {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // The frames still queued are freed now, not when the last follower lets go.
        let mut queue = lock(&self.shared.queue);
        queue.frames = VecDeque::new();
        queue.bytes = 0;
    }
}

impl Outbound {
    /// A new outbound queue holding at most `frames_max` frames and `bytes_max` bytes.
    pub fn channel(
        connection: ConnectionId,
        frames_max: usize,
        bytes_max: usize,
    ) -> (Outbound, OutboundReceiver) {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            closed: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            frames_max: frames_max.max(1),
            bytes_max,
            rooms: Mutex::default(),
        });
        (
            Outbound {
                connection,
                shared: shared.clone(),
            },
            OutboundReceiver {
                shared: shared.clone(),
                slow: SlowSignal(shared),
                waiting_since: None,
            },
        )
    }

    /// Queues a frame. Returns false when the queue is full (the connection is then
    /// marked slow) or the connection is gone.
    pub fn push(&self, kind: &'static str, bytes: Bytes) -> bool {
        let shared = &*self.shared;
        if shared.slow.load(Ordering::Acquire) || shared.closed.load(Ordering::Acquire) {
            return false;
        }
        let mut queue = lock(&shared.queue);
        // Again under the lock, which the receiver's drop takes after setting it: a
        // frame is never left in a queue nobody reads.
        if shared.closed.load(Ordering::Acquire) {
            return false;
        }
        if queue.frames.len() >= shared.frames_max || queue.bytes + bytes.len() > shared.bytes_max {
            drop(queue);
            self.raise_slow(true);
            return false;
        }
        queue.bytes += bytes.len();
        queue.frames.push_back(OutFrame { kind, bytes });
        // The writer sleeps only after finding the queue empty (under this lock), so
        // only the push that ends the emptiness needs to wake it.
        let waker = if queue.frames.len() == 1 {
            // A measurement of the machine for the fanout delay metric, not an input to
            // any decision: reading the clock here does not break replayability.
            #[allow(clippy::disallowed_methods)]
            let now = std::time::Instant::now();
            queue.nonempty_since = Some(now);
            queue.frame_waker.take()
        } else {
            None
        };
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Closes the connection so that its client reconnects and resumes (with the slow
    /// consumer's close code, which says exactly that): for a follower that a stream
    /// owner could not bring up to date in order.
    pub fn close_for_resync(&self) {
        metrics::counter!("playtree_resync_closes_total").increment(1);
        self.raise_slow(false);
    }

    fn raise_slow(&self, count: bool) {
        let shared = &*self.shared;
        let mut queue = lock(&shared.queue);
        let first = !shared.slow.swap(true, Ordering::AcqRel);
        let wakers = [queue.slow_waker.take(), queue.frame_waker.take()];
        drop(queue);
        if first && count {
            metrics::counter!("playtree_slow_consumer_disconnects_total").increment(1);
        }
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Frames queued and not yet written.
    pub fn queued_frames(&self) -> usize {
        lock(&self.shared.queue).frames.len()
    }

    /// The most frames the queue holds.
    pub fn frames_max(&self) -> usize {
        self.shared.frames_max
    }

    /// True once the connection's writer has gone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Notes that `room` now counts this connection among its followers.
    pub fn note_room(&self, room: RoomId) {
        let mut rooms = lock(&self.shared.rooms);
        if !rooms.contains(&room) {
            rooms.push(room);
        }
    }

    /// Notes that `room` no longer counts this connection among its followers.
    pub fn forget_room(&self, room: RoomId) {
        lock(&self.shared.rooms).retain(|&followed| followed != room);
    }

    /// Whether `room` counts this connection among its followers.
    pub fn follows_room(&self, room: RoomId) -> bool {
        lock(&self.shared.rooms).contains(&room)
    }

    /// The rooms that count this connection among their followers.
    pub fn rooms(&self) -> Vec<RoomId> {
        lock(&self.shared.rooms).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    #[tokio::test]
    async fn a_frame_carries_when_its_queue_stopped_being_empty() {
        let (outbound, mut receiver) = Outbound::channel(1, 8, 1 << 20);
        assert!(outbound.push("event", frame(1)));
        assert!(outbound.push("event", frame(1)));
        receiver.recv().await;
        let first = receiver
            .waiting_since()
            .expect("a wait for the first frame");
        receiver.recv().await;
        assert_eq!(
            receiver.waiting_since(),
            Some(first),
            "both waited since the queue filled"
        );
        // A write under way while another frame arrives: that frame waits from the
        // write's start, not from when the queue first filled.
        assert!(outbound.push("event", frame(1)));
        assert!(outbound.push("event", frame(1)));
        receiver.recv().await;
        let started = first + std::time::Duration::from_secs(5);
        receiver.write_done(started);
        receiver.recv().await;
        assert_eq!(receiver.waiting_since(), Some(started));
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
        assert_eq!(receiver.recv().await.bytes.len(), 6);
        assert!(outbound.push("event", frame(6)), "6 bytes were drained");
        assert!(!outbound.push("event", frame(1)), "11 bytes exceed 10");
        assert!(receiver.slow.is_set());
    }

    #[tokio::test]
    async fn a_push_wakes_the_writer_waiting_on_an_empty_queue() {
        let (outbound, mut receiver) = Outbound::channel(1, 100, 1 << 20);
        let writer = tokio::spawn(async move {
            let first = receiver.recv().await.bytes.len();
            let second = receiver.recv().await.bytes.len();
            (first, second)
        });
        tokio::task::yield_now().await;
        assert!(outbound.push("event", frame(3)));
        assert!(outbound.push("event", frame(5)));
        let received = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("woken in time")
            .expect("writer");
        assert_eq!(received, (3, 5));
    }

    #[tokio::test]
    async fn a_writer_gone_closes_the_queue_for_every_sender() {
        let (outbound, receiver) = Outbound::channel(1, 100, 1 << 20);
        let follower = outbound.clone();
        assert!(!follower.is_closed());
        drop(receiver);
        assert!(follower.is_closed());
        assert!(
            !follower.push("event", frame(1)),
            "nothing is queued for nobody"
        );
    }

    #[tokio::test]
    async fn an_overflow_interrupts_a_writer_waiting_for_frames() {
        let (outbound, receiver) = Outbound::channel(1, 1, 1 << 20);
        let slow = receiver.slow.clone();
        let waiting = tokio::spawn(async move { slow.wait().await });
        tokio::task::yield_now().await;
        assert!(outbound.push("event", frame(1)));
        assert!(
            !outbound.push("event", frame(1)),
            "the second frame overflows"
        );
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the waiting writer hears it")
            .expect("task");
        drop(receiver);
    }
}
