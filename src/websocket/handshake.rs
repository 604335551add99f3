//! The HTTP/1.1 upgrade that opens a websocket (RFC 6455 §4.2).

use thiserror::Error;

/// Largest upgrade request read (cookies and the headers an ingress adds included).
pub const REQUEST_BYTES_MAX: usize = 16 * 1024;
/// Most header lines an upgrade request may have (as many as tungstenite allows).
pub const HEADERS_MAX: usize = 124;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UpgradeError {
    #[error("the upgrade request exceeds {REQUEST_BYTES_MAX} bytes")]
    TooLarge,
    #[error("the upgrade request is not valid HTTP/1.1: {0}")]
    Malformed(String),
    #[error("a websocket upgrade must be a GET request")]
    NotGet,
    #[error("not a websocket upgrade: {0}")]
    NotUpgrade(&'static str),
    #[error("only websocket version 13 is spoken")]
    Version,
}

impl UpgradeError {
    /// The HTTP response that tells the client what was wrong.
    pub fn response(&self) -> Vec<u8> {
        let (status, extra) = match self {
            UpgradeError::TooLarge => ("431 Request Header Fields Too Large", ""),
            UpgradeError::NotGet => ("405 Method Not Allowed", "Allow: GET\r\n"),
            UpgradeError::Version => ("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n"),
            UpgradeError::Malformed(_) | UpgradeError::NotUpgrade(_) => ("400 Bad Request", ""),
        };
        let body = self.to_string();
        format!(
            "HTTP/1.1 {status}\r\n{extra}Connection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// An upgrade request accepted.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The request's length in bytes (frames may follow it in the buffer).
    pub len: usize,
    /// The response that accepts it.
    pub response: Vec<u8>,
    /// Its `X-Forwarded-For` values, joined with commas (none without the header).
    pub forwarded_for: Option<String>,
}

/// Parses an upgrade request from the start of `buf`: `Ok(None)` until the request is
/// complete.
pub fn parse_upgrade(buf: &[u8]) -> Result<Option<Upgrade>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= REQUEST_BYTES_MAX => {
            return Err(UpgradeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(UpgradeError::Malformed(error.to_string())),
    };
    if len > REQUEST_BYTES_MAX {
        return Err(UpgradeError::TooLarge);
    }
    if request.method != Some("GET") {
        return Err(UpgradeError::NotGet);
    }
    if request.version != Some(1) {
        return Err(UpgradeError::Malformed("HTTP/1.1 is required".into()));
    }
    let headers = &*request.headers;
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |header| header.name.eq_ignore_ascii_case(name))
            .map(|header| String::from_utf8_lossy(header.value))
    };
    let has_token = |name: &'static str, token: &str| {
        values(name).any(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token("upgrade", "websocket") {
        return Err(UpgradeError::NotUpgrade("no `Upgrade: websocket` header"));
    }
    if !has_token("connection", "upgrade") {
        return Err(UpgradeError::NotUpgrade("no `Connection: Upgrade` header"));
    }
    if !values("sec-websocket-version").any(|value| value.trim() == "13") {
        return Err(UpgradeError::Version);
    }
    let key = headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|header| header.value.trim_ascii())
        .filter(|key| !key.is_empty())
        .ok_or(UpgradeError::NotUpgrade("no `Sec-WebSocket-Key` header"))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    // Several headers are one list (RFC 9110 §5.3), in the order they came.
    let forwarded: Vec<_> = values("x-forwarded-for").collect();
    let forwarded_for = (!forwarded.is_empty()).then(|| forwarded.join(","));
    Ok(Some(Upgrade {
        len,
        response: response.into_bytes(),
        forwarded_for,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn accepts_the_rfc_example_with_its_accept_key() {
        let mut bytes = RFC_REQUEST.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x82, 0x80]); // a frame pipelined behind the request
        let upgrade = parse_upgrade(&bytes).expect("valid").expect("complete");
        assert_eq!(upgrade.len, RFC_REQUEST.len());
        assert_eq!(upgrade.forwarded_for, None);
        let response = String::from_utf8(upgrade.response).expect("utf-8");
        assert!(response.starts_with("HTTP/1.1 101 "));
        // RFC 6455 §1.3's worked example.
        assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn forwarded_for_headers_are_one_list_in_their_order() {
        let proxied = RFC_REQUEST.replace(
            "Origin:",
            "X-Forwarded-For: 203.0.113.9, 10.0.0.2\r\nx-forwarded-for: 10.0.0.3\r\nOrigin:",
        );
        let upgrade = parse_upgrade(proxied.as_bytes())
            .expect("valid")
            .expect("complete");
        assert_eq!(
            upgrade.forwarded_for.as_deref(),
            Some("203.0.113.9, 10.0.0.2,10.0.0.3")
        );
    }

    #[test]
    fn waits_for_the_whole_request() {
        for cut in 0..RFC_REQUEST.len() {
            assert_eq!(parse_upgrade(&RFC_REQUEST.as_bytes()[..cut]), Ok(None));
        }
    }

    #[test]
    fn refuses_what_is_not_a_websocket_upgrade() {
        let post = RFC_REQUEST.replacen("GET", "POST", 1);
        assert_eq!(parse_upgrade(post.as_bytes()), Err(UpgradeError::NotGet));
        let plain = RFC_REQUEST.replace("Upgrade: websocket\r\n", "");
        assert!(matches!(
            parse_upgrade(plain.as_bytes()),
            Err(UpgradeError::NotUpgrade(_))
        ));
        let old = RFC_REQUEST.replace("Version: 13", "Version: 8");
        assert_eq!(parse_upgrade(old.as_bytes()), Err(UpgradeError::Version));
        assert!(
            String::from_utf8(UpgradeError::Version.response())
                .expect("utf-8")
                .contains("Sec-WebSocket-Version: 13")
        );
        assert!(matches!(
            parse_upgrade(b"\x16\x03\x01 not http\r\n\r\n"),
            Err(UpgradeError::Malformed(_))
        ));
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(REQUEST_BYTES_MAX));
        assert_eq!(
            parse_upgrade(endless.as_bytes()),
            Err(UpgradeError::TooLarge)
        );
    }
}
