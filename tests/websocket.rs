//! The websocket transport as RFC 6455 has it, byte by byte from a raw TCP client: what
//! a client written in another language may do (pipeline its Hello behind the upgrade,
//! fragment a message, interleave pings, close with a code) works, and what it may not
//! (unmasked frames, bad upgrades, fragments over the limit) is refused as documented.

mod common;

use common::{TestServer, WAIT};
use playtree_protocol::codec::{decode_server, encode_client};
use playtree_protocol::{ClientFrame, ErrorCode, Hello, PROTOCOL_VERSION, ServerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: &str = "GET /play HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// One client frame, masked (or not, to break the rules).
fn frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![if fin { 0x80 | opcode } else { opcode }];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        len if len < 126 => out.push(mask_bit | len as u8),
        len => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn hello_bytes(server: &TestServer, player: &str) -> Vec<u8> {
    encode_client(&ClientFrame::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        token: server.token(player),
        resume: Vec::new(),
    }))
}

/// A client that speaks the transport by hand.
struct RawClient {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl RawClient {
    async fn connect(server: &TestServer) -> RawClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(server.running().ws_addr))
            .await
            .expect("connect in time")
            .expect("connects");
        RawClient {
            stream,
            buffered: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("the server answers in time")
            .unwrap_or(0);
        self.buffered.extend_from_slice(&chunk[..read]);
        read > 0
    }

    /// The HTTP response to the upgrade: status code and head.
    async fn response(&mut self) -> (u16, String) {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
                self.buffered.drain(..end + 4);
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .expect("status")
                    .parse()
                    .expect("code");
                return (status, head);
            }
            assert!(self.fill().await, "the connection closed before a response");
        }
    }

    /// The next server frame: opcode and payload; None at the end of the stream.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buffered.len() >= 2 {
                let (first, second) = (self.buffered[0], self.buffered[1]);
                assert_eq!(first & 0x80, 0x80, "server frames are never fragmented");
                assert_eq!(second & 0x80, 0, "server frames are never masked");
                let (len, at) = match second & 0x7F {
                    126 if self.buffered.len() >= 4 => (
                        u16::from_be_bytes([self.buffered[2], self.buffered[3]]) as usize,
                        4,
                    ),
                    127 if self.buffered.len() >= 10 => {
                        let mut be = [0u8; 8];
                        be.copy_from_slice(&self.buffered[2..10]);
                        (u64::from_be_bytes(be) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    short => (short as usize, 2),
                };
                if at > 0 && self.buffered.len() >= at + len {
                    let payload = self.buffered[at..at + len].to_vec();
                    self.buffered.drain(..at + len);
                    return Some((first & 0x0F, payload));
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next binary frame, decoded, skipping control frames.
    async fn next_server_frame(&mut self) -> ServerFrame {
        loop {
            let (opcode, payload) = self.next().await.expect("a frame");
            if opcode == BINARY {
                return decode_server(&payload, 1 << 20).expect("a valid ServerFrame");
            }
        }
    }

    /// Error code, then the close code that follows it, then the end of the stream.
    async fn refused(&mut self) -> (ErrorCode, Option<u16>) {
        let code = match self.next_server_frame().await {
            ServerFrame::Error(error) => error.code,
            other => panic!("expected an error frame, got {other:?}"),
        };
        let (opcode, payload) = self.next().await.expect("a close frame");
        assert_eq!(opcode, CLOSE);
        let close = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        assert_eq!(
            self.next().await,
            None,
            "the server ends the stream after its close"
        );
        (code, close)
    }
}

#[tokio::test]
async fn a_hello_pipelined_behind_the_upgrade_fragmented_around_a_ping_is_welcomed() {
    let server = TestServer::start("").await;
    let mut client = RawClient::connect(&server).await;
    let hello = hello_bytes(&server, "ana");
    let (one, rest) = hello.split_at(5);
    let (two, three) = rest.split_at(rest.len() / 2);
    // One TCP write: the upgrade request, the Hello in three fragments, a ping between
    // the first two.
    let mut bytes = UPGRADE.as_bytes().to_vec();
    bytes.extend(frame(false, BINARY, one, true));
    bytes.extend(frame(true, PING, b"are you there", true));
    bytes.extend(frame(false, CONTINUATION, two, true));
    bytes.extend(frame(true, CONTINUATION, three, true));
    client.send(&bytes).await;

    let (status, head) = client.response().await;
    assert_eq!(status, 101, "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert_eq!(client.next().await, Some((PONG, b"are you there".to_vec())));
    match client.next_server_frame().await {
        ServerFrame::Welcome(welcome) => assert_eq!(welcome.player_id, "ana"),
        other => panic!("expected Welcome, got {other:?}"),
    }

    // A close with a code is answered with the same code, then the stream ends.
    client
        .send(&frame(true, CLOSE, &1000u16.to_be_bytes(), true))
        .await;
    loop {
        match client.next().await {
            Some((CLOSE, payload)) => {
                assert_eq!(payload, 1000u16.to_be_bytes());
                break;
            }
            Some(_) => continue,
            None => panic!("the stream ended without a close frame"),
        }
    }
    assert_eq!(client.next().await, None);
}

#[tokio::test]
async fn frames_that_break_the_rules_are_refused_with_their_codes() {
    let server = TestServer::start("[limits]\nframe_bytes_max = 1024\n").await;
    let hello = hello_bytes(&server, "bo");
    let cases: Vec<(&str, Vec<u8>, ErrorCode, u16)> = vec![
        (
            "an unmasked frame",
            frame(true, BINARY, &hello, false),
            ErrorCode::MalformedFrame,
            4001,
        ),
        (
            // Refused from the header of the fragment that makes it too large: its
            // payload is never sent.
            "fragments that add up to more than the frame limit",
            [
                frame(false, BINARY, &[0; 600], true),
                frame(true, CONTINUATION, &[0; 600], true)[..8].to_vec(),
            ]
            .concat(),
            ErrorCode::FrameTooLarge,
            4002,
        ),
        (
            "a close code that may not be sent",
            frame(true, CLOSE, &1005u16.to_be_bytes(), true),
            ErrorCode::MalformedFrame,
            4001,
        ),
        (
            "a message in more fragments than allowed",
            std::iter::once(frame(false, BINARY, b"", true))
                .chain((0..1024).map(|_| frame(false, CONTINUATION, b"", true)))
                .collect::<Vec<_>>()
                .concat(),
            ErrorCode::MalformedFrame,
            4001,
        ),
        (
            "a continuation with no message",
            frame(true, CONTINUATION, &hello, true),
            ErrorCode::MalformedFrame,
            4001,
        ),
        (
            "a reserved bit",
            {
                let mut bytes = frame(true, BINARY, &hello, true);
                bytes[0] |= 0x40;
                bytes
            },
            ErrorCode::MalformedFrame,
            4001,
        ),
    ];
    for (case, bytes, code, close) in cases {
        let mut client = RawClient::connect(&server).await;
        client.send(UPGRADE.as_bytes()).await;
        assert_eq!(client.response().await.0, 101, "{case}");
        client.send(&bytes).await;
        assert_eq!(client.refused().await, (code, Some(close)), "{case}");
    }
    // The server carries on.
    let _ = server.connect("still-serving").await;
}

#[tokio::test]
async fn upgrades_that_are_not_websocket_get_an_http_error_that_says_why() {
    let server = TestServer::start("").await;
    let cases = [
        (UPGRADE.replacen("GET", "POST", 1), 405, "GET"),
        (
            UPGRADE.replace("Version: 13", "Version: 8"),
            426,
            "Sec-WebSocket-Version: 13",
        ),
        (
            UPGRADE.replace("Upgrade: websocket\r\n", ""),
            400,
            "Upgrade: websocket",
        ),
        (
            UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            400,
            "Sec-WebSocket-Key",
        ),
    ];
    for (request, status, says) in cases {
        let mut client = RawClient::connect(&server).await;
        client.send(request.as_bytes()).await;
        let (got, head) = client.response().await;
        assert_eq!(got, status, "{head}");
        let mut body = String::from_utf8_lossy(&client.buffered).into_owned();
        while client.fill().await {
            body = String::from_utf8_lossy(&client.buffered).into_owned();
        }
        assert!(head.contains(says) || body.contains(says), "{head}\n{body}");
    }
}
