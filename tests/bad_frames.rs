//! Garbage, text, oversize and out-of-order frames get an error frame and a close with
//! the documented code; the server keeps running and counts them.

mod common;

use common::{TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use playtree_protocol::codec::{decode_server, encode_client};
use playtree_protocol::{
    ClientFrame, CloseCode, ErrorCode, Hello, PROTOCOL_VERSION, Request, ServerFrame,
};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(server: &TestServer) -> Socket {
    let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(server.url()))
        .await
        .expect("connect in time")
        .expect("connects");
    socket
}

fn hello(token: String, version: u16) -> Message {
    Message::Binary(
        encode_client(&ClientFrame::Hello(Hello {
            protocol_version: version,
            token,
            resume: vec![],
        }))
        .into(),
    )
}

async fn welcomed(server: &TestServer, player: &str) -> Socket {
    let mut socket = raw(server).await;
    socket
        .send(hello(server.token(player), PROTOCOL_VERSION))
        .await
        .expect("send hello");
    match next_frame(&mut socket).await {
        Some(ServerFrame::Welcome(_)) => socket,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

async fn next_frame(socket: &mut Socket) -> Option<ServerFrame> {
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Binary(bytes) = message {
                return Some(decode_server(&bytes, 1 << 20).expect("server frames decode"));
            }
        }
        None
    })
    .await
    .expect("frame in time")
}

/// The error frame and close code that end a connection.
async fn error_then_close(socket: &mut Socket) -> (ErrorCode, Option<u16>) {
    let code = match next_frame(socket).await {
        Some(ServerFrame::Error(error)) => error.code,
        other => panic!("expected an error frame, got {other:?}"),
    };
    let close = tokio::time::timeout(WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    })
    .await
    .expect("close in time");
    (code, close)
}

#[tokio::test]
async fn each_bad_frame_gets_its_error_and_close_code_and_the_server_carries_on() {
    let server =
        TestServer::start("[limits]\nframe_bytes_max = 1024\nhello_timeout_ms = 300\n").await;

    let mut socket = welcomed(&server, "garbage").await;
    socket
        .send(Message::Binary(vec![0xFF, 0x13, 0x37, 0x00, 0x42].into()))
        .await
        .expect("send");
    assert_eq!(
        error_then_close(&mut socket).await,
        (
            ErrorCode::MalformedFrame,
            Some(CloseCode::MalformedFrame.as_u16())
        )
    );

    let mut socket = welcomed(&server, "trailing").await;
    let mut frame = encode_client(&ClientFrame::Request {
        req_id: 1,
        request: Request::GetWallet,
    });
    frame.push(0);
    socket
        .send(Message::Binary(frame.into()))
        .await
        .expect("send");
    assert_eq!(
        error_then_close(&mut socket).await,
        (
            ErrorCode::MalformedFrame,
            Some(CloseCode::MalformedFrame.as_u16())
        )
    );

    let mut socket = welcomed(&server, "text").await;
    socket
        .send(Message::Text("{\"hello\": true}".into()))
        .await
        .expect("send");
    assert_eq!(
        error_then_close(&mut socket).await,
        (
            ErrorCode::TextFrameRejected,
            Some(CloseCode::TextFrameRejected.as_u16())
        )
    );

    let mut socket = welcomed(&server, "oversize").await;
    socket
        .send(Message::Binary(vec![0u8; 4096].into()))
        .await
        .expect("send");
    assert_eq!(
        error_then_close(&mut socket).await,
        (
            ErrorCode::FrameTooLarge,
            Some(CloseCode::FrameTooLarge.as_u16())
        )
    );

    let mut socket = welcomed(&server, "twice").await;
    socket
        .send(hello(server.token("twice"), PROTOCOL_VERSION))
        .await
        .expect("send");
    assert_eq!(
        error_then_close(&mut socket).await,
        (
            ErrorCode::HelloExpected,
            Some(CloseCode::HelloExpected.as_u16())
        )
    );

    // Before the handshake: a request instead of Hello, a wrong version, and silence.
    let mut socket = raw(&server).await;
    socket
        .send(Message::Binary(
            encode_client(&ClientFrame::Request {
                req_id: 1,
                request: Request::GetWallet,
            })
            .into(),
        ))
        .await
        .expect("send");
    assert_eq!(
        error_then_close(&mut socket).await,
        (
            ErrorCode::HelloExpected,
            Some(CloseCode::HelloExpected.as_u16())
        )
    );

    let mut socket = raw(&server).await;
    socket
        .send(hello(server.token("old"), PROTOCOL_VERSION + 1))
        .await
        .expect("send");
    assert_eq!(
        error_then_close(&mut socket).await,
        (
            ErrorCode::UnsupportedVersion,
            Some(CloseCode::UnsupportedVersion.as_u16())
        )
    );

    let mut socket = raw(&server).await;
    assert_eq!(
        error_then_close(&mut socket).await,
        (
            ErrorCode::HelloTimeout,
            Some(CloseCode::HelloTimeout.as_u16())
        )
    );

    // The server still serves, and counted what it refused.
    let (client, _events) = server.connect("after").await;
    assert_eq!(client.wallet().await.expect("wallet"), 0);
    let (_, metrics) = server.get("/metrics").await;
    for code in [
        ErrorCode::MalformedFrame,
        ErrorCode::TextFrameRejected,
        ErrorCode::FrameTooLarge,
        ErrorCode::HelloTimeout,
    ] {
        let needle = format!(
            "playtree_protocol_errors_total{{code=\"{}\"}}",
            code.as_u16()
        );
        assert!(metrics.contains(&needle), "missing {needle}");
    }
}
