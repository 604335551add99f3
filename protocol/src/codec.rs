//! The one place that knows the byte encoding: bincode 2, standard config (little-endian,
//! varint integers). Every decode runs with an allocation limit and rejects trailing
//! bytes, so a hostile frame can neither exhaust memory nor smuggle data.

use crate::client::ClientFrame;
use crate::limits::{FRAME_BYTES_HARD_MAX, RECORD_BYTES_HARD_MAX};
use crate::server::ServerFrame;
use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("frame has {trailing} bytes after a complete value")]
    TrailingBytes { trailing: usize },
    #[error("frame does not decode: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
#[error("value does not encode: {0}")]
pub struct EncodeError(String);

type FrameConfig = Configuration<LittleEndian, Varint, Limit<FRAME_BYTES_HARD_MAX>>;
type RecordConfig = Configuration<LittleEndian, Varint, Limit<RECORD_BYTES_HARD_MAX>>;

fn frame_config() -> FrameConfig {
    bincode::config::standard().with_limit::<FRAME_BYTES_HARD_MAX>()
}

fn record_config() -> RecordConfig {
    bincode::config::standard().with_limit::<RECORD_BYTES_HARD_MAX>()
}

fn decode_with<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    limit: usize,
    config: C,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (value, consumed) = bincode::serde::decode_from_slice::<T, C>(bytes, config)
        .map_err(|error| DecodeError::Invalid(error.to_string()))?;
    if consumed != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            trailing: bytes.len() - consumed,
        });
    }
    Ok(value)
}

/// Decodes a client frame of at most `limit` bytes (itself capped at
/// [`FRAME_BYTES_HARD_MAX`]).
pub fn decode_client(bytes: &[u8], limit: usize) -> Result<ClientFrame, DecodeError> {
    decode_with(bytes, limit.min(FRAME_BYTES_HARD_MAX), frame_config())
}

/// Decodes a server frame of at most `limit` bytes (itself capped at
/// [`FRAME_BYTES_HARD_MAX`]).
pub fn decode_server(bytes: &[u8], limit: usize) -> Result<ServerFrame, DecodeError> {
    decode_with(bytes, limit.min(FRAME_BYTES_HARD_MAX), frame_config())
}

pub fn encode_client(frame: &ClientFrame) -> Vec<u8> {
    encode_frame(frame)
}

pub fn encode_server(frame: &ServerFrame) -> Vec<u8> {
    encode_frame(frame)
}

fn encode_frame<T: Serialize>(frame: &T) -> Vec<u8> {
    // Invariant: frames hold only strings, integers, fixed arrays, options, vectors and
    // enums, which bincode always encodes; an error here is a programming error.
    #[allow(clippy::expect_used)]
    bincode::serde::encode_to_vec(frame, frame_config()).expect("frames always encode")
}

/// Encodes a persisted record (journal entry or snapshot body).
pub fn encode_record<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(value, record_config())
        .map_err(|error| EncodeError(error.to_string()))
}

/// Decodes a persisted record, with the record allocation limit.
pub fn decode_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_with(bytes, RECORD_BYTES_HARD_MAX, record_config())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Hello, Request, RoomKind};

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode_client(&ClientFrame::Request {
            req_id: 1,
            request: Request::GetWallet,
        });
        bytes.push(0);
        assert_eq!(
            decode_client(&bytes, 1024),
            Err(DecodeError::TrailingBytes { trailing: 1 })
        );
    }

    #[test]
    fn oversize_frames_are_rejected_before_decoding() {
        let frame = ClientFrame::Hello(Hello {
            protocol_version: 1,
            token: "x".repeat(100),
            resume: vec![],
        });
        let bytes = encode_client(&frame);
        assert!(matches!(
            decode_client(&bytes, 50),
            Err(DecodeError::TooLarge { limit: 50, .. })
        ));
        assert_eq!(decode_client(&bytes, 1024), Ok(frame));
    }

    #[test]
    fn a_huge_length_prefix_is_an_error_not_an_allocation() {
        // Hello, version 1, then a string length of u64::MAX (0xFF + 8 bytes).
        let mut bytes = vec![0x00, 0x01, 0xFF];
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode_client(&bytes, 1024),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn records_round_trip() {
        let value = (7u64, String::from("wallet"), vec![RoomKind::Wheel]);
        let bytes = encode_record(&value).expect("encodes");
        assert_eq!(
            decode_record::<(u64, String, Vec<RoomKind>)>(&bytes),
            Ok(value)
        );
    }
}
