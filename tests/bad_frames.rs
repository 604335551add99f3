//! Garbage, text, oversize and out-of-order frames get an error frame and a close with
//! the documented code; the server keeps running and counts them.

mod common;

use common::{Socket, TestServer, WAIT, hello, next_frame, raw, welcomed};
use futures_util::{SinkExt, StreamExt};
use playtree_protocol::codec::encode_client;
use playtree_protocol::{
    ClientFrame, CloseCode, ErrorCode, PROTOCOL_VERSION, Request, ServerFrame,
};
use tokio_tungstenite::tungstenite::Message;

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

/// Where a case starts: after a welcome, or right after connecting.
enum Phase {
    Welcomed,
    Connected,
}

#[tokio::test]
async fn each_bad_frame_gets_its_error_and_close_code_and_the_server_carries_on() {
    let server =
        TestServer::start("[limits]\nframe_bytes_max = 1024\nhello_timeout_ms = 300\n").await;
    let (_, metrics_before) = server.get("/metrics").await;
    let request = |request| {
        Message::Binary(encode_client(&ClientFrame::Request { req_id: 1, request }).into())
    };
    let mut trailing = encode_client(&ClientFrame::Request {
        req_id: 1,
        request: Request::GetWallet,
    });
    trailing.push(0);

    let cases: Vec<(&str, Phase, Option<Message>, ErrorCode)> = vec![
        (
            "garbage",
            Phase::Welcomed,
            Some(Message::Binary(vec![0xFF, 0x13, 0x37, 0x00, 0x42].into())),
            ErrorCode::MalformedFrame,
        ),
        (
            "trailing bytes",
            Phase::Welcomed,
            Some(Message::Binary(trailing.into())),
            ErrorCode::MalformedFrame,
        ),
        (
            "text",
            Phase::Welcomed,
            Some(Message::Text("{\"hello\": true}".into())),
            ErrorCode::TextFrameRejected,
        ),
        (
            "oversize",
            Phase::Welcomed,
            Some(Message::Binary(vec![0u8; 4096].into())),
            ErrorCode::FrameTooLarge,
        ),
        (
            "second hello",
            Phase::Welcomed,
            Some(hello(server.token("twice"), PROTOCOL_VERSION)),
            ErrorCode::HelloExpected,
        ),
        (
            "request before hello",
            Phase::Connected,
            Some(request(Request::GetWallet)),
            ErrorCode::HelloExpected,
        ),
        (
            "wrong version",
            Phase::Connected,
            Some(hello(server.token("new"), PROTOCOL_VERSION + 1)),
            ErrorCode::UnsupportedVersion,
        ),
        (
            "version 1",
            Phase::Connected,
            Some(hello(server.token("old"), 1)),
            ErrorCode::UnsupportedVersion,
        ),
        ("silence", Phase::Connected, None, ErrorCode::HelloTimeout),
    ];
    for (name, phase, message, code) in cases {
        let mut socket = match phase {
            Phase::Welcomed => welcomed(&server, name).await,
            Phase::Connected => raw(&server).await,
        };
        if let Some(message) = message {
            socket.send(message).await.expect("send");
        }
        let close = code.close_code().map(CloseCode::as_u16);
        assert!(close.is_some(), "{name}: {code} must end the connection");
        assert_eq!(
            error_then_close(&mut socket).await,
            (code, close),
            "case: {name}"
        );
    }

    // The server still serves, and counted what it refused.
    let (client, _events) = server.connect("after").await;
    assert_eq!(client.wallet().await.expect("wallet"), 0);
    let (_, metrics) = server.get("/metrics").await;
    for (code, cases) in [
        (ErrorCode::MalformedFrame, 2.0),
        (ErrorCode::TextFrameRejected, 1.0),
        (ErrorCode::FrameTooLarge, 1.0),
        (ErrorCode::HelloTimeout, 1.0),
    ] {
        let series = format!(
            "playtree_protocol_errors_total{{code=\"{}\"}}",
            code.as_u16()
        );
        let counted = common::metric_value(&metrics, &series)
            - common::metric_value(&metrics_before, &series);
        assert!(
            counted >= cases,
            "{series}: counted {counted}, expected {cases}"
        );
    }
}
