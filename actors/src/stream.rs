//! An entity's outgoing event stream: each event gets the next `(epoch, seq)` and is
//! encoded once, so the same bytes go to every recipient.

use bytes::Bytes;
use playtree_protocol::codec::encode_server;
use playtree_protocol::{Event, EventEnvelope, ServerFrame, StreamId};

#[derive(Debug)]
pub struct StreamCursor {
    stream: StreamId,
    epoch: u64,
    seq: u64,
}

impl StreamCursor {
    /// A stream starting a new epoch (an activation of its entity).
    pub fn new(stream: StreamId, epoch: u64) -> Self {
        StreamCursor {
            stream,
            epoch,
            seq: 0,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next event as an encoded `ServerFrame::Event`.
    pub fn frame(&mut self, event: Event) -> Bytes {
        self.seq += 1;
        let frame = ServerFrame::Event(EventEnvelope {
            stream: self.stream.clone(),
            epoch: self.epoch,
            seq: self.seq,
            event,
        });
        Bytes::from(encode_server(&frame))
    }
}
