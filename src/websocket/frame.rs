//! RFC 6455 frame headers: parsing what clients send (always masked) and writing what
//! the server sends (never masked, never fragmented). Pure functions, no I/O.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A client frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: Opcode,
    pub mask: [u8; 4],
    /// Payload length in bytes.
    pub len: usize,
    /// Header length in bytes (2 to 14).
    pub header_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("a message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: u64, max: usize },
    #[error("websocket protocol violation: {0}")]
    Protocol(&'static str),
}

/// Longest header the server writes: 2 bytes plus a 64-bit length.
pub const SERVER_HEADER_MAX: usize = 10;

/// Parses the header at the start of `buf`: `None` until all of it has arrived. A payload
/// longer than `max` is refused from its header, before any of it is buffered.
pub fn parse_header(buf: &[u8], max: usize) -> Result<Option<Header>, HeaderError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        // No extension was negotiated, so no reserved bit may be set.
        return Err(HeaderError::Protocol("reserved bits set"));
    }
    let fin = first & 0x80 != 0;
    let opcode = Opcode::from_bits(first & 0x0F).ok_or(HeaderError::Protocol("unknown opcode"))?;
    if second & 0x80 == 0 {
        return Err(HeaderError::Protocol("client frames must be masked"));
    }
    let (len, len_bytes) = match second & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 2)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(HeaderError::Protocol("length with its top bit set"));
            }
            (len, 8)
        }
        short => (u64::from(short), 0),
    };
    if opcode.is_control() {
        if !fin {
            return Err(HeaderError::Protocol("fragmented control frame"));
        }
        if len > 125 {
            return Err(HeaderError::Protocol("control frame longer than 125 bytes"));
        }
    }
    if len > max as u64 {
        return Err(HeaderError::TooLarge { size: len, max });
    }
    let mask_at = 2 + len_bytes;
    let Some(mask) = buf.get(mask_at..mask_at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        // At most `max`, a usize.
        len: len as usize,
        header_len: mask_at + 4,
    }))
}

/// Removes the client's mask from `payload` in place.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// Writes the header of one whole, unmasked server frame of `len` payload bytes into
/// `out` and returns its length.
pub fn server_header(opcode: Opcode, len: usize, out: &mut [u8; SERVER_HEADER_MAX]) -> usize {
    out[0] = 0x80 | opcode.bits();
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The status code of a client's close frame, if it gave one. A code that may not be
/// sent (RFC 6455 §7.4: below 1000, 1004–1006, 1015, 1016–2999, 5000 and up) or a reason
/// that is not UTF-8 is a protocol violation.
pub fn close_code(payload: &[u8]) -> Result<Option<u16>, HeaderError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(HeaderError::Protocol("a close frame of one byte")),
        [high, low, reason @ ..] => (u16::from_be_bytes([*high, *low]), reason),
    };
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(HeaderError::Protocol("a close code that may not be sent"));
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(HeaderError::Protocol("a close reason that is not UTF-8"));
    }
    Ok(Some(code))
}

/// The payload of a close frame: the code, big-endian, then the reason cut to fit the
/// 125 bytes a control frame may carry (at a character boundary).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame as a browser would send it.
    fn client_frame(fin: bool, opcode: Opcode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode.bits()];
        match payload.len() {
            len if len < 126 => out.push(0x80 | len as u8),
            len if len <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        out
    }

    #[test]
    fn parses_each_length_form_and_unmasks() {
        for len in [0usize, 1, 5, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mask = [0x37, 0xfa, 0x21, 0x3d];
            let bytes = client_frame(true, Opcode::Binary, &payload, mask);
            let header = parse_header(&bytes, 1 << 20)
                .expect("a valid header")
                .expect("a whole header");
            assert_eq!(header.len, len);
            assert_eq!(header.opcode, Opcode::Binary);
            assert!(header.fin);
            assert_eq!(header.header_len + len, bytes.len());
            let mut body = bytes[header.header_len..].to_vec();
            unmask(&mut body, header.mask);
            assert_eq!(body, payload, "length {len}");
        }
    }

    #[test]
    fn an_incomplete_header_asks_for_more() {
        let bytes = client_frame(true, Opcode::Binary, &[1; 300], [1, 2, 3, 4]);
        // 2 bytes, 16-bit length, 4 mask bytes: 8 bytes of header.
        for cut in 0..8 {
            assert_eq!(parse_header(&bytes[..cut], 1024), Ok(None), "cut at {cut}");
        }
        assert!(parse_header(&bytes[..8], 1024).expect("valid").is_some());
    }

    #[test]
    fn rfc_6455_example_single_frame_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message containing "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let header = parse_header(&bytes, 1024)
            .expect("a valid header")
            .expect("a whole header");
        assert_eq!(header.opcode, Opcode::Text);
        let mut body = bytes[header.header_len..].to_vec();
        unmask(&mut body, header.mask);
        assert_eq!(body, b"Hello");
    }

    #[test]
    fn refuses_what_a_client_may_not_send() {
        let unmasked = [0x82, 0x01, 0x00];
        assert_eq!(
            parse_header(&unmasked, 1024),
            Err(HeaderError::Protocol("client frames must be masked"))
        );
        let reserved = [0xC2, 0x80, 0, 0, 0, 0];
        assert!(matches!(
            parse_header(&reserved, 1024),
            Err(HeaderError::Protocol(_))
        ));
        let unknown_opcode = [0x83, 0x80, 0, 0, 0, 0];
        assert!(parse_header(&unknown_opcode, 1024).is_err());
        let fragmented_ping = client_frame(false, Opcode::Ping, b"x", [0; 4]);
        assert!(parse_header(&fragmented_ping, 1024).is_err());
        let long_ping = client_frame(true, Opcode::Ping, &[0; 126], [0; 4]);
        assert!(parse_header(&long_ping, 1024).is_err());
        let top_bit = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(parse_header(&top_bit, usize::MAX).is_err());
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_from_its_header() {
        let header_only = [0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            parse_header(&header_only, 65_536),
            Err(HeaderError::TooLarge {
                size: 1 << 32,
                max: 65_536
            })
        );
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        let mut out = [0u8; SERVER_HEADER_MAX];
        assert_eq!(server_header(Opcode::Binary, 94, &mut out), 2);
        assert_eq!(out[..2], [0x82, 94]);
        assert_eq!(server_header(Opcode::Binary, 126, &mut out), 4);
        assert_eq!(out[..4], [0x82, 126, 0, 126]);
        assert_eq!(server_header(Opcode::Binary, 65_536, &mut out), 10);
        assert_eq!(out[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(server_header(Opcode::Ping, 0, &mut out), 2);
        assert_eq!(out[..2], [0x89, 0]);
    }

    #[test]
    fn close_codes_that_may_not_be_sent_are_violations() {
        assert_eq!(close_code(&[]), Ok(None));
        assert_eq!(close_code(&[0x03, 0xE8]), Ok(Some(1000)));
        assert_eq!(close_code(&[0x0F, 0xA1, b'o', b'k']), Ok(Some(4001)));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert!(close_code(&code.to_be_bytes()).is_err(), "{code}");
        }
        assert!(
            close_code(&[0x03, 0xE8, 0xFF]).is_err(),
            "a reason that is not UTF-8"
        );
        assert!(close_code(&[0x03]).is_err());
    }

    #[test]
    fn close_reasons_are_cut_at_a_character_boundary() {
        let reason = "é".repeat(100);
        let payload = close_payload(4022, &reason);
        assert!(payload.len() <= 125);
        assert_eq!(payload[..2], 4022u16.to_be_bytes());
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}
