//! Event streams and their subscribers. Each stream owner (a room, a player session)
//! numbers its events `(epoch, seq)`, encodes each once, keeps a bounded history for
//! clients that resume, and hands the same bytes to every subscribed connection.
//! Because replay and subscription happen inside the owner's handler, a resuming
//! client gets the missed events in order, with no gap and no duplicate, before any new one.

use crate::connections::{ConnectionId, Outbound};
use bytes::Bytes;
use playtree_protocol::codec::encode_server;
use playtree_protocol::{Event, EventEnvelope, ServerFrame, StreamId};
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug)]
pub struct Stream {
    stream: StreamId,
    epoch: u64,
    seq: u64,
    history: VecDeque<(u64, Bytes)>,
    history_max: usize,
}

impl Stream {
    /// A stream starting a new epoch (an activation of its owner).
    pub fn new(stream: StreamId, epoch: u64, history_max: usize) -> Self {
        Stream {
            stream,
            epoch,
            seq: 0,
            // Grows with what is published: most streams (an idle player's) never fill it.
            history: VecDeque::new(),
            history_max,
        }
    }

    /// A stream kept durably by its owner, going on where it stood: `history` holds its
    /// latest events, oldest first.
    pub fn resume(
        stream: StreamId,
        epoch: u64,
        seq: u64,
        history_max: usize,
        history: Vec<(u64, Event)>,
    ) -> Self {
        let mut resumed = Stream::new(stream, epoch, history_max);
        resumed.seq = seq;
        let skip = history.len().saturating_sub(history_max);
        for (event_seq, event) in history.into_iter().skip(skip) {
            let frame = resumed.encode(event_seq, event);
            resumed.history.push_back((event_seq, frame));
        }
        resumed
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn encode(&self, seq: u64, event: Event) -> Bytes {
        Bytes::from(encode_server(&ServerFrame::Event(EventEnvelope {
            stream: self.stream.clone(),
            epoch: self.epoch,
            seq,
            event,
        })))
    }

    /// The next event, encoded once and kept in the history.
    pub fn publish(&mut self, event: Event) -> Bytes {
        self.seq += 1;
        let frame = self.encode(self.seq, event);
        if self.history.len() == self.history_max {
            self.history.pop_front();
        }
        self.history.push_back((self.seq, frame.clone()));
        frame
    }

    /// A snapshot carries the current seq without taking a new one: the client continues
    /// from the event after it.
    pub fn snapshot_frame(&self, event: Event) -> Bytes {
        self.encode(self.seq, event)
    }

    /// The frames after `(epoch, seq)`, if the history still reaches back that far.
    pub fn replay_after(&self, epoch: u64, seq: u64) -> Option<Vec<Bytes>> {
        if epoch != self.epoch || seq > self.seq {
            return None;
        }
        let oldest = self
            .history
            .front()
            .map_or(self.seq + 1, |(first, _)| *first);
        if seq + 1 < oldest {
            return None;
        }
        Some(
            self.history
                .iter()
                .filter(|(event_seq, _)| *event_seq > seq)
                .map(|(_, frame)| frame.clone())
                .collect(),
        )
    }
}

/// The connections following a stream, by player.
#[derive(Debug, Default)]
pub struct Subscribers {
    by_player: BTreeMap<String, Vec<Outbound>>,
    /// The incarnation of the owner that has them now (0: none yet).
    owner: u64,
    /// Whether that incarnation stopped cleanly, every frame of it delivered.
    released: bool,
}

impl Subscribers {
    /// A new incarnation takes the followers over: frames of older incarnations still
    /// on their way are dropped from now on. Returns whether the last owner handed
    /// them over cleanly (it stopped with every frame of it delivered): if not, they
    /// may have missed frames, and need a snapshot.
    pub fn begin_incarnation(&mut self, incarnation: u64) -> bool {
        let clean = self.owner == 0 || self.released;
        self.owner = self.owner.max(incarnation);
        self.released = false;
        clean
    }

    /// The owner `incarnation` stopped cleanly.
    pub fn release(&mut self, incarnation: u64) {
        if self.owner == incarnation {
            self.released = true;
        }
    }

    /// True once an incarnation newer than `incarnation` owns these followers.
    pub fn superseded(&self, incarnation: u64) -> bool {
        incarnation < self.owner
    }

    /// Hands `frame`, published by `incarnation`, to every subscriber, unless a newer
    /// incarnation has taken them over.
    pub fn send_from(&mut self, incarnation: u64, frame: &Bytes) {
        if !self.superseded(incarnation) {
            self.send(frame);
        }
    }

    pub fn add(&mut self, player: &str, outbound: Outbound) {
        let outbounds = self.by_player.entry(player.to_owned()).or_default();
        if !outbounds
            .iter()
            .any(|o| o.connection == outbound.connection)
        {
            outbounds.push(outbound);
        }
    }

    /// Removes one connection of `player`; returns it if it was there.
    pub fn remove_connection(
        &mut self,
        player: &str,
        connection: ConnectionId,
    ) -> Option<Outbound> {
        let outbounds = self.by_player.get_mut(player)?;
        let at = outbounds.iter().position(|o| o.connection == connection)?;
        let removed = outbounds.swap_remove(at);
        if outbounds.is_empty() {
            self.by_player.remove(player);
        }
        Some(removed)
    }

    /// Removes every connection of `player`; returns them.
    pub fn remove_player(&mut self, player: &str) -> Vec<Outbound> {
        self.by_player.remove(player).unwrap_or_default()
    }

    /// Keeps only the players `keep` accepts; returns the connections of the others.
    pub fn retain_players(&mut self, mut keep: impl FnMut(&str) -> bool) -> Vec<Outbound> {
        let mut dropped = Vec::new();
        self.by_player.retain(|player, outbounds| {
            let kept = keep(player);
            if !kept {
                dropped.append(outbounds);
            }
            kept
        });
        dropped
    }

    /// Drops connections that have gone; returns how many are left for `player`.
    pub fn prune_closed(&mut self, player: &str) -> usize {
        let Some(outbounds) = self.by_player.get_mut(player) else {
            return 0;
        };
        outbounds.retain(|outbound| !outbound.is_closed());
        let left = outbounds.len();
        if left == 0 {
            self.by_player.remove(player);
        }
        left
    }

    /// Drops every connection that has gone.
    pub fn prune_all_closed(&mut self) {
        self.by_player.retain(|_, outbounds| {
            outbounds.retain(|outbound| !outbound.is_closed());
            !outbounds.is_empty()
        });
    }

    /// How many of `player`'s connections are still open (changes nothing).
    pub fn live(&self, player: &str) -> usize {
        self.by_player.get(player).map_or(0, |outbounds| {
            outbounds.iter().filter(|o| !o.is_closed()).count()
        })
    }

    pub fn is_connected(&self, player: &str) -> bool {
        self.by_player.contains_key(player)
    }

    pub fn is_empty(&self) -> bool {
        self.by_player.is_empty()
    }

    /// Whether any connection is still open.
    pub fn any_live(&self) -> bool {
        self.by_player
            .values()
            .flatten()
            .any(|outbound| !outbound.is_closed())
    }

    pub fn outbounds(&self, player: &str) -> Vec<Outbound> {
        self.by_player.get(player).cloned().unwrap_or_default()
    }

    /// Hands `frame` to every subscriber; connections that have gone are dropped.
    pub fn send(&mut self, frame: &Bytes) {
        self.by_player.retain(|_, outbounds| {
            outbounds
                .retain(|outbound| outbound.push("event", frame.clone()) || !outbound.is_closed());
            !outbounds.is_empty()
        });
    }

    /// Hands frames to one player's connections.
    pub fn send_to(&self, player: &str, frames: &[Bytes]) {
        for outbound in self.by_player.get(player).into_iter().flatten() {
            for frame in frames {
                outbound.push("event", frame.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(n: u64) -> Event {
        Event::Chat {
            room: 1,
            player: "p".into(),
            text: n.to_string(),
        }
    }

    #[test]
    fn replay_reaches_back_only_as_far_as_the_history() {
        let mut stream = Stream::new(StreamId::Room(1), 7, 3);
        for n in 1..=5 {
            stream.publish(chat(n));
        }
        // History holds seqs 3, 4, 5.
        assert_eq!(stream.replay_after(7, 2).map(|f| f.len()), Some(3));
        assert_eq!(stream.replay_after(7, 4).map(|f| f.len()), Some(1));
        assert_eq!(stream.replay_after(7, 5).map(|f| f.len()), Some(0));
        assert_eq!(stream.replay_after(7, 1), None, "seq 2 is gone");
        assert_eq!(stream.replay_after(6, 4), None, "another epoch");
        assert_eq!(stream.replay_after(7, 9), None, "from the future");
    }
}
