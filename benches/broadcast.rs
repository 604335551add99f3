//! Room broadcast: one event to 1,000 members' outbound queues, encoded once and shared
//! (what a room does) versus encoded once per member (the naive way).
//!
//! Run: `cargo bench --bench broadcast`. Only the broadcast is timed; draining the queues
//! between iterations is not.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use playtree_actors::stream::Stream;
use playtree_actors::{Outbound, OutboundReceiver};
use playtree_protocol::codec::encode_server;
use playtree_protocol::{Event, EventEnvelope, QuizReveal, ServerFrame, Standing, StreamId};
use std::hint::black_box;
use std::time::{Duration, Instant};

const MEMBERS: usize = 1_000;

fn members() -> (Vec<Outbound>, Vec<OutboundReceiver>) {
    (0..MEMBERS as u64)
        .map(|connection| Outbound::channel(connection, 64, 1 << 24))
        .unzip()
}

fn drain(receivers: &mut [OutboundReceiver]) {
    for receiver in receivers {
        while receiver.try_recv().is_some() {}
    }
}

fn chat() -> Event {
    Event::Chat {
        room: 42,
        player: "player-0042".into(),
        text: "gg everyone, that last question was a tough one! rematch after this round?".into(),
    }
}

/// A reveal in a room of 50 players: the largest event a quiz sends.
fn reveal() -> Event {
    let standings: Vec<Standing> = (0..50)
        .map(|i| Standing {
            player: format!("player-{i:04}"),
            rank: i + 1,
            score: 10_000 - u64::from(i) * 97,
        })
        .collect();
    Event::Reveal(QuizReveal {
        room: 42,
        index: 3,
        correct_choice: 1,
        points: standings.iter().map(|s| (s.player.clone(), 950)).collect(),
        top: standings[..5].to_vec(),
        standings,
    })
}

fn broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("broadcast_1000_members");
    for (name, event) in [("chat", chat()), ("reveal_50_players", reveal())] {
        let (outbounds, mut receivers) = members();
        let mut stream = Stream::new(StreamId::Room(42), 1, 256);
        group.bench_function(BenchmarkId::new("encode_once", name), |b| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    let frame = stream.publish(event.clone());
                    for outbound in &outbounds {
                        outbound.push("event", frame.clone());
                    }
                    elapsed += started.elapsed();
                    drain(&mut receivers);
                }
                elapsed
            })
        });
        let mut seq = 0u64;
        group.bench_function(BenchmarkId::new("encode_per_member", name), |b| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    let started = Instant::now();
                    seq += 1;
                    for outbound in &outbounds {
                        let frame = ServerFrame::Event(EventEnvelope {
                            stream: StreamId::Room(42),
                            epoch: 1,
                            seq,
                            event: event.clone(),
                        });
                        outbound.push("event", Bytes::from(encode_server(black_box(&frame))));
                    }
                    elapsed += started.elapsed();
                    drain(&mut receivers);
                }
                elapsed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, broadcast);
criterion_main!(benches);
