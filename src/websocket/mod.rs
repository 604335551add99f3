//! The websocket transport of client connections (RFC 6455, server side): the HTTP
//! upgrade, then a [`Reader`] and a [`Writer`] over the two halves of the TCP stream.
//!
//! Our own because of what a connection costs at 10,000s of them: nothing is buffered
//! while a connection is quiet (the read buffer exists only while bytes are being read;
//! the write backlog only while the kernel refuses bytes), the reader is polled only
//! when the socket is readable, and a batch of frames goes out in one vectored write
//! straight from the encoded events, with no copy into a write buffer. Server frames
//! are never masked or fragmented; client frames must be masked, may be fragmented, and
//! may interleave pings.

pub mod frame;
pub mod handshake;

use bytes::{Buf, Bytes, BytesMut};
use frame::{HeaderError, Opcode, SERVER_HEADER_MAX};
use handshake::UpgradeError;
use std::io::{self, IoSlice};
use std::time::Duration;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Binary(Bytes),
    Text,
    Ping(Bytes),
    Pong,
    /// The client's close, with its status code if it gave one.
    Close(Option<u16>),
}

#[derive(Debug, Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] HeaderError),
    #[error("the peer closed the connection")]
    Closed,
    #[error("reading failed: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Error)]
pub enum AcceptError {
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error("the peer closed the connection during the upgrade")]
    Closed,
    #[error("the upgrade failed: {0}")]
    Io(#[from] io::Error),
}

/// Sizes that bound a connection's buffers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message accepted (all fragments together).
    pub message_bytes_max: usize,
    /// Bytes reserved for one read from the socket; the buffer grows by this much at a
    /// time as a large frame arrives, never ahead of the data.
    pub read_bytes: usize,
    /// How long a refused upgrade waits for the client to take its HTTP error.
    pub linger: Duration,
}

/// Most fragments one message may come in: empty continuation frames would otherwise
/// keep a connection busy forever without growing the message.
pub const FRAGMENTS_MAX: usize = 1024;

/// Reads the upgrade request from `stream` and accepts it. An invalid request is
/// answered with an HTTP error that says what was wrong. The caller bounds the time.
/// Answers the reader and writer, and the request's `X-Forwarded-For` (if it had one).
pub async fn accept(
    stream: TcpStream,
    limits: Limits,
) -> Result<(Reader, Writer, Option<String>), AcceptError> {
    let (read, write) = stream.into_split();
    let mut reader = Reader {
        half: read,
        buffered: BytesMut::new(),
        message: None,
        limits,
    };
    let mut writer = Writer {
        half: write,
        backlog: Vec::new(),
    };
    // Parsed only once the request's blank line may have come (or the buffer is full):
    // a client sending a byte at a time costs one parse, not one per byte. Empty lines
    // before the request (which HTTP parsers skip) are dropped first, so that they
    // cannot make a blank line come over and over.
    let mut request_ended = false;
    loop {
        let parsed = if request_ended || reader.buffered.len() >= handshake::REQUEST_BYTES_MAX {
            handshake::parse_upgrade(&reader.buffered)
        } else {
            Ok(None)
        };
        match parsed {
            Ok(Some(upgrade)) => {
                // Frames the client sent right behind its request stay buffered.
                reader.buffered.advance(upgrade.len);
                writer.write_raw(&upgrade.response).await?;
                return Ok((reader, writer, upgrade.forwarded_for));
            }
            Ok(None) => {}
            Err(error) => {
                // Written, the stream ended from this side and what the client still
                // sends read (briefly): closing with unread bytes would reset the
                // connection, and the client could lose the response.
                let refused = async {
                    writer.write_raw(&error.response()).await?;
                    writer.half.shutdown().await?;
                    reader.discard_until_closed().await;
                    Ok::<(), io::Error>(())
                };
                let _ = tokio::time::timeout(limits.linger, refused).await;
                return Err(error.into());
            }
        }
        let before = reader.buffered.len();
        match reader.fill().await {
            Ok(()) => {
                let blank = reader
                    .buffered
                    .iter()
                    .take_while(|byte| matches!(byte, b'\r' | b'\n'))
                    .count();
                reader.buffered.advance(blank);
                let from = before.saturating_sub(blank).saturating_sub(3);
                let new = reader.buffered.get(from..).unwrap_or_default();
                request_ended = new.windows(2).any(|pair| pair == b"\n\n")
                    || new.windows(4).any(|four| four == b"\r\n\r\n");
            }
            Err(ReadError::Io(error)) => return Err(error.into()),
            Err(_) => return Err(AcceptError::Closed),
        }
    }
}

/// The read half: yields whole client messages.
#[derive(Debug)]
pub struct Reader {
    half: OwnedReadHalf,
    /// Bytes read and not yet parsed; empty (unallocated) while the client is quiet.
    buffered: BytesMut,
    /// A fragmented message so far: its opcode, payload and fragment count.
    message: Option<(Opcode, BytesMut, usize)>,
    limits: Limits,
}

impl Reader {
    /// The next message. Cancel-safe: what was read stays buffered for the next call.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(incoming) = self.parse()? {
                return Ok(incoming);
            }
            self.fill().await?;
        }
    }

    /// Reads and drops whatever the client still sends, until it closes or fails.
    pub async fn discard_until_closed(&mut self) {
        loop {
            self.buffered.clear();
            if self.fill().await.is_err() {
                return;
            }
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        loop {
            self.half.readable().await?;
            self.buffered.reserve(self.limits.read_bytes);
            match self.half.try_read_buf(&mut self.buffered) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.release_if_empty();
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn release_if_empty(&mut self) {
        if self.buffered.is_empty() && self.buffered.capacity() > 0 {
            self.buffered = BytesMut::new();
        }
    }

    /// One message from what is buffered, if a whole one is there.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        let max = self.limits.message_bytes_max;
        loop {
            let Some(header) = frame::parse_header(&self.buffered, max)? else {
                return Ok(None);
            };
            if !header.opcode.is_control() {
                let so_far = self
                    .message
                    .as_ref()
                    .map_or(0, |(_, payload, _)| payload.len());
                let size = (so_far + header.len) as u64;
                if size > max as u64 {
                    return Err(HeaderError::TooLarge { size, max }.into());
                }
            }
            // The rest of the frame is read as it comes (`fill` reserves a read's worth
            // at a time): a header alone reserves nothing.
            if self.buffered.len() < header.header_len + header.len {
                return Ok(None);
            }
            self.buffered.advance(header.header_len);
            let mut payload = self.buffered.split_to(header.len);
            self.release_if_empty();
            frame::unmask(&mut payload, header.mask);
            let whole = match header.opcode {
                Opcode::Ping => return Ok(Some(Incoming::Ping(payload.freeze()))),
                Opcode::Pong => return Ok(Some(Incoming::Pong)),
                Opcode::Close => return Ok(Some(Incoming::Close(frame::close_code(&payload)?))),
                Opcode::Text | Opcode::Binary => {
                    if self.message.is_some() {
                        return Err(HeaderError::Protocol(
                            "a new message began before the fragmented one ended",
                        )
                        .into());
                    }
                    if !header.fin {
                        self.message = Some((header.opcode, payload, 1));
                        continue;
                    }
                    (header.opcode, payload)
                }
                Opcode::Continuation => {
                    let Some((opcode, mut so_far, fragments)) = self.message.take() else {
                        return Err(
                            HeaderError::Protocol("a continuation frame with no message").into(),
                        );
                    };
                    if fragments >= FRAGMENTS_MAX {
                        return Err(HeaderError::Protocol("a message in too many fragments").into());
                    }
                    so_far.extend_from_slice(&payload);
                    if !header.fin {
                        self.message = Some((opcode, so_far, fragments + 1));
                        continue;
                    }
                    (opcode, so_far)
                }
            };
            return Ok(Some(match whole {
                (Opcode::Text, _) => Incoming::Text,
                (_, payload) => Incoming::Binary(payload.freeze()),
            }));
        }
    }
}

/// Frames per vectored write: two slices each, well under any `IOV_MAX`.
const FRAMES_PER_WRITE: usize = 32;

/// The write half: whole unmasked frames, gathered into vectored writes.
#[derive(Debug)]
pub struct Writer {
    half: OwnedWriteHalf,
    /// What the kernel has not taken yet, written before anything else; empty
    /// (unallocated) unless the client reads slower than it is sent to.
    backlog: Vec<u8>,
}

impl Writer {
    /// Sends each of `messages` as one binary message. A write cut short (by a
    /// deadline) leaves the stream whole: the unsent rest of a frame stays in the
    /// backlog, so a later close frame still follows whole frames. Messages of a batch
    /// not yet handed to the kernel or the backlog are dropped with the future; every
    /// caller ends the connection then.
    pub async fn send_binary(&mut self, messages: &[Bytes]) -> io::Result<()> {
        self.drain().await?;
        for chunk in messages.chunks(FRAMES_PER_WRITE) {
            self.write_now(Opcode::Binary, chunk)?;
        }
        self.drain().await
    }

    /// Sends one control frame (ping, pong or close); `payload` is at most 125 bytes.
    pub async fn send_control(&mut self, opcode: Opcode, payload: &[u8]) -> io::Result<()> {
        self.drain().await?;
        self.write_now(opcode, &[payload])?;
        self.drain().await
    }

    /// Sends a close frame with `code` and `reason`.
    pub async fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.send_control(Opcode::Close, &frame::close_payload(code, reason))
            .await
    }

    /// Ends the stream from this side (TCP FIN) once the backlog is written.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.drain().await?;
        self.half.shutdown().await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.backlog.extend_from_slice(bytes);
        self.drain().await
    }

    /// Writes the frames of `payloads` in one system call where the socket takes them
    /// (the backlog being empty); whatever it does not take joins the backlog.
    fn write_now<B: AsRef<[u8]>>(&mut self, opcode: Opcode, payloads: &[B]) -> io::Result<()> {
        debug_assert!(payloads.len() <= FRAMES_PER_WRITE);
        let mut headers = [[0u8; SERVER_HEADER_MAX]; FRAMES_PER_WRITE];
        let mut header_lens = [0usize; FRAMES_PER_WRITE];
        for ((payload, header), len) in payloads.iter().zip(&mut headers).zip(&mut header_lens) {
            *len = frame::server_header(opcode, payload.as_ref().len(), header);
        }
        let mut slices = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
        let mut total = 0;
        for (i, payload) in payloads.iter().enumerate() {
            slices[2 * i] = IoSlice::new(&headers[i][..header_lens[i]]);
            slices[2 * i + 1] = IoSlice::new(payload.as_ref());
            total += header_lens[i] + payload.as_ref().len();
        }
        let slices = &slices[..2 * payloads.len()];
        let written = if self.backlog.is_empty() {
            match self.half.try_write_vectored(slices) {
                Ok(written) => written,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
                Err(error) => return Err(error),
            }
        } else {
            0
        };
        if written < total {
            let mut skip = written;
            for slice in slices {
                if skip >= slice.len() {
                    skip -= slice.len();
                    continue;
                }
                self.backlog.extend_from_slice(&slice[skip..]);
                skip = 0;
            }
        }
        Ok(())
    }

    /// Writes the backlog out. Cancel-safe: each completed write is taken off it.
    async fn drain(&mut self) -> io::Result<()> {
        while !self.backlog.is_empty() {
            let written = self.half.write(&self.backlog).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.backlog.drain(..written);
        }
        if self.backlog.capacity() > 0 {
            self.backlog = Vec::new();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn reader_pair(limits: Limits) -> (Reader, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (read, _write) = server.into_split();
        let reader = Reader {
            half: read,
            buffered: BytesMut::new(),
            message: None,
            limits,
        };
        (reader, client)
    }

    #[tokio::test]
    async fn a_header_alone_reserves_nothing_ahead_of_its_payload() {
        let limits = Limits {
            message_bytes_max: 1 << 20,
            read_bytes: 512,
            linger: Duration::from_millis(10),
        };
        let (mut reader, mut client) = reader_pair(limits).await;
        // A masked binary frame announcing 600,000 bytes, and none of them.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&600_000u64.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        client.write_all(&header).await.expect("write");
        let read = tokio::time::timeout(Duration::from_secs(5), reader.fill())
            .await
            .expect("the header arrives");
        assert!(read.is_ok());
        assert!(reader.parse().expect("a valid header").is_none());
        assert!(
            reader.buffered.capacity() <= 2 * limits.read_bytes,
            "{} bytes reserved for a header",
            reader.buffered.capacity()
        );
    }
}
