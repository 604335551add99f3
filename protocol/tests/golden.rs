//! The golden vectors in PROTOCOL.md are the contract: each must encode from its frame
//! and decode back to it, byte for byte.

use playtree_protocol::codec::{decode_client, decode_server, encode_client, encode_server};
use playtree_protocol::*;
use std::collections::BTreeMap;

const DOC: &str = include_str!("../PROTOCOL.md");

/// `(side, name) → bytes` for every "golden:" heading followed by a hex block.
fn vectors() -> BTreeMap<(String, String), Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("golden: ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let side = words.next().expect("side").to_owned();
        let name = words.next().expect("name").to_owned();
        assert_eq!(
            lines.next(),
            Some("```"),
            "vector {name}: code block expected"
        );
        let hex_line = lines.next().expect("hex line");
        let bytes = hex_line
            .split_whitespace()
            .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
            .collect();
        found.insert((side, name), bytes);
    }
    found
}

fn client_frames() -> Vec<(&'static str, ClientFrame)> {
    vec![
        (
            "hello",
            ClientFrame::Hello(Hello {
                protocol_version: 2,
                token: "tok".into(),
                resume: vec![StreamPosition {
                    stream: StreamId::Room(300),
                    epoch: 5,
                    seq: 70000,
                }],
            }),
        ),
        (
            "keyed",
            ClientFrame::Keyed {
                req_id: 11,
                key: 300,
                request: Request::GetWallet,
            },
        ),
        (
            "quick_join",
            ClientFrame::Request {
                req_id: 7,
                request: Request::QuickJoin {
                    kind: RoomKind::Wheel,
                    variant: Some("classic".into()),
                },
            },
        ),
        (
            "spin",
            ClientFrame::Request {
                req_id: 8,
                request: Request::Spin {
                    room: 42,
                    client_seed: "lucky".into(),
                },
            },
        ),
        (
            "get_wallet",
            ClientFrame::Request {
                req_id: 9,
                request: Request::GetWallet,
            },
        ),
        (
            "answer",
            ClientFrame::Request {
                req_id: 10,
                request: Request::Answer {
                    room: 42,
                    question: 2,
                    choice: 1,
                },
            },
        ),
        (
            "get_referral_code",
            ClientFrame::Request {
                req_id: 12,
                request: Request::GetReferralCode,
            },
        ),
        (
            "claim_referral",
            ClientFrame::Request {
                req_id: 13,
                request: Request::ClaimReferral {
                    code: "7K3M9Q2X".into(),
                },
            },
        ),
        (
            "get_referral_stats",
            ClientFrame::Request {
                req_id: 14,
                request: Request::GetReferralStats,
            },
        ),
        (
            "report_conversion",
            ClientFrame::Request {
                req_id: 15,
                request: Request::ReportConversion {
                    player: "bo".into(),
                    kind: "purchase".into(),
                    value: 999,
                    idempotency_key: "k1".into(),
                },
            },
        ),
        (
            "subscribe",
            ClientFrame::Request {
                req_id: 17,
                request: Request::Subscribe {
                    from_offset: Some(300),
                },
            },
        ),
        (
            "ack",
            ClientFrame::Request {
                req_id: 18,
                request: Request::Ack { offset: 7 },
            },
        ),
        (
            "get_referral_leaderboard",
            ClientFrame::Request {
                req_id: 19,
                request: Request::GetReferralLeaderboard { limit: 10 },
            },
        ),
        (
            "approve_reward",
            ClientFrame::Request {
                req_id: 16,
                request: Request::ApproveReward {
                    tree: "al".into(),
                    reward: 3,
                },
            },
        ),
    ]
}

fn server_frames() -> Vec<(&'static str, ServerFrame)> {
    vec![
        (
            "reply_referral_stats",
            ServerFrame::Reply {
                req_id: 14,
                result: Ok(ReplyBody::ReferralStats(ReferralStats {
                    referrer: Some("al".into()),
                    referees_by_level: vec![2, 1],
                    activated: 1,
                    earned: 130,
                    pending: 0,
                    flagged: 0,
                })),
            },
        ),
        (
            "reply_subscribed",
            ServerFrame::Reply {
                req_id: 17,
                result: Ok(ReplyBody::Subscribed {
                    from_offset: 300,
                    head: 302,
                }),
            },
        ),
        (
            "log_claimed",
            ServerFrame::Log(LogEntry {
                offset: 300,
                at_ms: 1_700_000_000_000,
                event: LogEvent::ReferralClaimed {
                    tree: "al".into(),
                    referrer: "al".into(),
                    referee: "bo".into(),
                },
            }),
        ),
        (
            "reply_leaderboard",
            ServerFrame::Reply {
                req_id: 19,
                result: Ok(ReplyBody::ReferralLeaderboard {
                    entries: vec![LeaderboardEntry {
                        player: "al".into(),
                        referees: 2,
                    }],
                }),
            },
        ),
        (
            "reply_acked",
            ServerFrame::Reply {
                req_id: 18,
                result: Ok(ReplyBody::Acked { offset: 7 }),
            },
        ),
        (
            "reply_conversion_reported",
            ServerFrame::Reply {
                req_id: 15,
                result: Ok(ReplyBody::ConversionReported { rewards: 2 }),
            },
        ),
        (
            "reply_reward_decided",
            ServerFrame::Reply {
                req_id: 16,
                result: Ok(ReplyBody::RewardDecided {
                    state: RewardState::Credited,
                }),
            },
        ),
        (
            "event_friend_joined",
            ServerFrame::Event(EventEnvelope {
                stream: StreamId::Player("al".into()),
                epoch: 2,
                seq: 4,
                event: Event::FriendJoined {
                    friend: "bo".into(),
                    level: 1,
                },
            }),
        ),
        (
            "event_referral_reward",
            ServerFrame::Event(EventEnvelope {
                stream: StreamId::Player("al".into()),
                epoch: 2,
                seq: 5,
                event: Event::ReferralReward(ReferralReward {
                    tree: "al".into(),
                    reward: 3,
                    friend: "bo".into(),
                    level: 1,
                    trigger: RewardTrigger::Signup,
                    amount: 100,
                    state: RewardState::Credited,
                }),
            }),
        ),
        (
            "reply_quiz_joined",
            ServerFrame::Reply {
                req_id: 2,
                result: Ok(ReplyBody::QuizJoined(QuizJoined {
                    room: 5,
                    stream_epoch: 9,
                    stream_seq: 3,
                    code: None,
                    snapshot: RoomSnapshot {
                        room: 5,
                        kind: RoomKind::Quiz,
                        members: vec!["a".into()],
                        quiz: None,
                    },
                })),
            },
        ),
        (
            "welcome",
            ServerFrame::Welcome(Welcome {
                protocol_version: 2,
                player_id: "alice".into(),
                role: Role::Player,
                player_stream_epoch: 1000,
                server_time_ms: 1_700_000_000_000,
                heartbeat_interval_ms: 15000,
                token_expires_ms: 1_700_000_360_000,
            }),
        ),
        (
            "reply_wallet",
            ServerFrame::Reply {
                req_id: 9,
                result: Ok(ReplyBody::Wallet { balance: 1234 }),
            },
        ),
        (
            "reply_error",
            ServerFrame::Reply {
                req_id: 8,
                result: Err(ErrorReply::new(ErrorCode::DailySpinLimit, "no")),
            },
        ),
        (
            "event_credit",
            ServerFrame::Event(EventEnvelope {
                stream: StreamId::Player("al".into()),
                epoch: 2,
                seq: 3,
                event: Event::WalletCredited {
                    grant_id: "g".into(),
                    amount: 25,
                    balance: 25,
                    reason: "r".into(),
                },
            }),
        ),
        (
            "error_frame",
            ServerFrame::Error(ErrorReply::new(ErrorCode::TokenExpired, "expired")),
        ),
        (
            "event_question",
            ServerFrame::Event(EventEnvelope {
                stream: StreamId::Room(42),
                epoch: 1,
                seq: 5,
                event: Event::Question(QuizQuestion {
                    room: 42,
                    index: 0,
                    total: 3,
                    category: "Geo".into(),
                    text: "Q?".into(),
                    choices: vec!["a".into(), "b".into()],
                    asked_at_ms: 1000,
                    deadline_ms: 11000,
                }),
            }),
        ),
    ]
}

#[test]
fn every_documented_vector_matches_the_codec() {
    let vectors = vectors();
    let mut checked = 0;
    for (name, frame) in client_frames() {
        let bytes = &vectors[&("client".to_owned(), name.to_owned())];
        assert_eq!(
            &encode_client(&frame),
            bytes,
            "client {name} encodes as documented"
        );
        assert_eq!(
            decode_client(bytes, 1024).as_ref(),
            Ok(&frame),
            "client {name} decodes"
        );
        checked += 1;
    }
    for (name, frame) in server_frames() {
        let bytes = &vectors[&("server".to_owned(), name.to_owned())];
        assert_eq!(
            &encode_server(&frame),
            bytes,
            "server {name} encodes as documented"
        );
        assert_eq!(
            decode_server(bytes, 1024).as_ref(),
            Ok(&frame),
            "server {name} decodes"
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        vectors.len(),
        "every vector in PROTOCOL.md has a frame here"
    );
}

#[test]
fn the_documented_code_tables_match_the_crate() {
    for code in ErrorCode::ALL {
        let row = format!("| {} | {:?} |", code.as_u16(), code);
        assert!(DOC.contains(&row), "PROTOCOL.md lacks the row `{row}`");
        if let Some(close) = code.close_code() {
            let row = format!("| {} | {:?} | {} |", code.as_u16(), code, close.as_u16());
            assert!(
                DOC.contains(&row),
                "PROTOCOL.md lacks the close code in `{row}`"
            );
        }
    }
}

#[test]
fn frames_of_every_variant_round_trip() {
    let joined = RoomJoined {
        room: 5,
        kind: RoomKind::Wheel,
        stream_epoch: 9,
        stream_seq: 3,
        wheel: WheelInfo {
            id: "classic".into(),
            segments: vec![SegmentInfo {
                label: "ten".into(),
                prize: 10,
                weight: 3,
            }],
            spins_per_day: 10,
        },
        fairness: FairnessInfo {
            commitment: [9; 32],
            next_nonce: 4,
            spins_today: 2,
        },
        members: vec!["a".into(), "b".into()],
    };
    let outcome = SpinOutcome {
        room: 5,
        wheel: "classic".into(),
        nonce: 4,
        client_seed: "s".into(),
        commitment: [1; 32],
        segment: 0,
        label: "ten".into(),
        prize: 10,
        inventory_exhausted: false,
        balance: 10,
        spins_left_today: 7,
    };
    let frames = vec![
        ServerFrame::Reply {
            req_id: 1,
            result: Ok(ReplyBody::RoomJoined(joined)),
        },
        ServerFrame::Reply {
            req_id: 2,
            result: Ok(ReplyBody::RoomLeft { room: 5 }),
        },
        ServerFrame::Reply {
            req_id: 3,
            result: Ok(ReplyBody::Spun(outcome)),
        },
        ServerFrame::Reply {
            req_id: 4,
            result: Ok(ReplyBody::SeedRotated(SeedReveal {
                wheel: "classic".into(),
                revealed_seed: [2; 32],
                revealed_commitment: [3; 32],
                next_commitment: [4; 32],
                next_nonce: 5,
            })),
        },
        ServerFrame::Event(EventEnvelope {
            stream: StreamId::Room(5),
            epoch: 1,
            seq: 1,
            event: Event::Spin(SpinResult {
                room: 5,
                player: "a".into(),
                wheel: "classic".into(),
                nonce: 0,
                client_seed: "s".into(),
                commitment: [0; 32],
                segment: 1,
                label: "x".into(),
                prize: 0,
            }),
        }),
        ServerFrame::Event(EventEnvelope {
            stream: StreamId::Room(5),
            epoch: 1,
            seq: 2,
            event: Event::MemberLeft {
                room: 5,
                player: "b".into(),
            },
        }),
    ];
    for frame in frames {
        let bytes = encode_server(&frame);
        assert_eq!(decode_server(&bytes, 1 << 16), Ok(frame));
    }
    let requests = [
        Request::LeaveRoom { room: 1 },
        Request::RotateSeed {
            wheel: "classic".into(),
        },
    ];
    for request in requests {
        let frame = ClientFrame::Request {
            req_id: u32::MAX,
            request,
        };
        assert_eq!(decode_client(&encode_client(&frame), 1024), Ok(frame));
    }
}
