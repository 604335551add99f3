//! The connection: a background task owns the websocket, reconnects with backoff when it
//! drops, and resumes every stream from the last `(epoch, seq)` seen, so the application
//! reads one unbroken event stream — or an explicit snapshot event where the server could
//! not replay (`RoomSnapshot`, `PlayerSnapshot`: the view was resynced).

use crate::error::ClientError;
use crate::verify::{SpinMismatch, SpinRecord, check_nonces, verify_record};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use playtree_protocol::codec::{decode_server, encode_client};
use playtree_protocol::fairness::Commitment;
use playtree_protocol::limits::FRAME_BYTES_HARD_MAX;
use playtree_protocol::{
    ClientFrame, CloseCode, ErrorReply, EventEnvelope, Hello, LeaderboardEntry, LogEntry,
    PROTOCOL_VERSION, QuizJoined, ReferralStats, ReplyBody, Request, RewardState, RoomId,
    RoomJoined, RoomKind, SeedReveal, ServerFrame, SpinOutcome, StreamId, StreamPosition, Welcome,
    WheelInfo,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Socket, Message>;
type Source = SplitStream<Socket>;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// How long a connection attempt waits for the server's Welcome.
    pub handshake_timeout: Duration,
    /// Events buffered for the application before the client stops reading the socket
    /// (and the server, seeing its queue fill, closes the connection as slow).
    pub event_buffer: usize,
    /// Reconnect (and resume) when the connection drops for a reason worth retrying.
    pub reconnect: bool,
    /// Backoff between reconnect attempts: doubles from `backoff_min` up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Give up after this many failed attempts in a row.
    pub reconnect_attempts_max: u32,
    /// Certificates (DER) trusted for `wss://` besides the public roots: a private CA's
    /// (a server certificate must be issued by one of them; webpki refuses a
    /// self-signed CA certificate used as the server's own).
    pub tls_roots: Vec<Vec<u8>>,
    /// Extra HTTP headers sent with the websocket upgrade (for a proxy in front of the
    /// server, or a test that speaks as one, say `X-Forwarded-For`).
    pub headers: Vec<(String, String)>,
    /// The local address to connect from (a load generator spreading its connections
    /// over 127.0.0.x, say, since one source address runs out of ports); `None`: the
    /// system's choice.
    pub local_address: Option<std::net::IpAddr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            event_buffer: 1024,
            reconnect: true,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            reconnect_attempts_max: 20,
            tls_roots: Vec::new(),
            headers: Vec::new(),
            local_address: None,
        }
    }
}

type ReplySender = oneshot::Sender<Result<ReplyBody, ErrorReply>>;

/// How the connection ended.
#[derive(Debug, Clone, Default)]
struct Ending {
    close_code: Option<u16>,
    error: Option<ErrorReply>,
}

/// State shared between the client handle and its connection task.
#[derive(Debug)]
struct Shared {
    url: String,
    token: Mutex<String>,
    welcome: Mutex<Welcome>,
    pending: Mutex<HashMap<u32, ReplySender>>,
    /// The last `(epoch, seq)` seen per stream, for resuming.
    positions: Mutex<HashMap<StreamId, (u64, u64)>>,
    reconnects: AtomicU64,
    reconnect_now: Notify,
    /// Where the partner event log's entries go, once subscribed, and the offset the
    /// next one must have (set by the `Subscribed` reply).
    log: Mutex<Option<mpsc::Sender<LogEntry>>>,
    log_next: Mutex<Option<u64>>,
}

/// A connected, welcomed client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
    options: ClientOptions,
    outgoing: mpsc::Sender<Vec<u8>>,
    next_req_id: AtomicU32,
    ended: watch::Receiver<Option<Ending>>,
    wheels: Mutex<HashMap<String, WheelInfo>>,
    /// The wheel of each room this client joined.
    rooms: Mutex<HashMap<RoomId, String>>,
    /// Per wheel, what the server promised for the seed in force.
    promises: Mutex<HashMap<String, Promise>>,
    /// Per rotation (wheel, next commitment), the promise it revealed.
    revealed: Mutex<HashMap<(String, Commitment), Promise>>,
    spins: Mutex<Vec<SpinRecord>>,
}

/// What the server showed for a seed before any spin used it: its commitment, and the
/// first nonce spun with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Promise {
    commitment: Commitment,
    first_nonce: u64,
}

/// The partner event log's entries, in order, from a [`Client::subscribe`]. A
/// subscription lasts one connection: after a reconnect, subscribe again (with no
/// offset, to start after the last [`Client::ack`]).
#[derive(Debug)]
pub struct LogEntries {
    receiver: mpsc::Receiver<LogEntry>,
}

impl LogEntries {
    /// The next entry; `None` once the client is gone.
    pub async fn next(&mut self) -> Option<LogEntry> {
        self.receiver.recv().await
    }
}

/// The events the server pushes, in order, across reconnects.
#[derive(Debug)]
pub struct Events {
    receiver: mpsc::Receiver<EventEnvelope>,
}

impl Events {
    /// The next event; `None` once the connection has ended for good.
    pub async fn next(&mut self) -> Option<EventEnvelope> {
        self.receiver.recv().await
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The TLS set-up for `wss://` URLs: the public roots plus `extra_roots`, with rustls'
/// aws-lc-rs provider (chosen here, not left to a process-wide default).
fn tls_connector(extra_roots: &[Vec<u8>]) -> Result<tokio_tungstenite::Connector, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|error| ClientError::Connect(format!("a TLS root does not parse: {error}")))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Connect(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
}

/// Bytes tungstenite reads at a time (its default is 128 KiB).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The upgrade request for `url`, with `headers` added.
fn upgrade_request(
    url: &str,
    headers: &[(String, String)],
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, ClientError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let mut request = url
        .into_client_request()
        .map_err(|error| ClientError::Connect(error.to_string()))?;
    for (name, value) in headers {
        let invalid = |what: &str| ClientError::Connect(format!("header `{name}`: invalid {what}"));
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("name"))?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid("value"))?;
        request.headers_mut().append(name, value);
    }
    Ok(request)
}

/// A TCP connection from `local` (any port) to the host and port of `uri`.
async fn connect_from(
    local: std::net::IpAddr,
    uri: &tokio_tungstenite::tungstenite::http::Uri,
) -> Result<TcpStream, ClientError> {
    let failed = |what: &str, error: std::io::Error| {
        ClientError::Connect(format!("{what} (from {local}): {error}"))
    };
    let host = uri
        .host()
        .ok_or_else(|| ClientError::Connect("the URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("wss") => 443,
        _ => 80,
    });
    let mut last = None;
    for remote in tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| failed("resolving the host", error))?
        .filter(|remote| remote.is_ipv4() == local.is_ipv4())
    {
        let socket = if local.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|error| failed("opening a socket", error))?;
        // As a plain connect may, reuse a local port whose earlier connection is in
        // TIME_WAIT: a client that reconnects often would otherwise run out of ports.
        socket
            .set_reuseaddr(true)
            .map_err(|error| failed("setting SO_REUSEADDR", error))?;
        socket
            .bind(std::net::SocketAddr::new(local, 0))
            .map_err(|error| failed("binding", error))?;
        match socket.connect(remote).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last = Some(failed("connecting", error)),
        }
    }
    Err(last.unwrap_or_else(|| {
        ClientError::Connect(format!("{host} has no address of {local}'s family"))
    }))
}

/// Connects (over TLS for `wss://`) and completes the handshake.
async fn handshake(
    url: &str,
    token: &str,
    resume: Vec<StreamPosition>,
    options: &ClientOptions,
) -> Result<(Welcome, Sink, Source), ClientError> {
    let timeout = options.handshake_timeout;
    let attempt = async {
        let connector = if url.starts_with("wss://") {
            tls_connector(&options.tls_roots)?
        } else {
            tokio_tungstenite::Connector::Plain
        };
        let request = upgrade_request(url, &options.headers)?;
        let connect_error =
            |error: tokio_tungstenite::tungstenite::Error| ClientError::Connect(error.to_string());
        // tungstenite zero-fills its read buffer's free space before every read: at the
        // default 128 KiB that memset was a third of a busy client's CPU. Events are small;
        // a larger frame still grows the buffer as it arrives.
        let config = Some(
            tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER_BYTES),
        );
        let (websocket, _) = match options.local_address {
            None => tokio_tungstenite::connect_async_tls_with_config(
                request,
                config,
                true,
                Some(connector),
            )
            .await
            .map_err(connect_error)?,
            Some(local) => {
                let stream = connect_from(local, request.uri()).await?;
                tokio_tungstenite::client_async_tls_with_config(
                    request,
                    stream,
                    config,
                    Some(connector),
                )
                .await
                .map_err(connect_error)?
            }
        };
        let (mut sink, mut source) = websocket.split();
        let hello = ClientFrame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token.to_owned(),
            resume,
        });
        sink.send(Message::Binary(encode_client(&hello).into()))
            .await
            .map_err(|error| ClientError::Connect(error.to_string()))?;
        loop {
            match source.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    return match decode_server(&bytes, FRAME_BYTES_HARD_MAX) {
                        Ok(ServerFrame::Welcome(welcome)) => Ok((welcome, sink, source)),
                        Ok(ServerFrame::Error(error)) => {
                            let close_code = read_close_code(&mut source).await;
                            Err(ClientError::Refused { error, close_code })
                        }
                        Ok(other) => Err(ClientError::Protocol(format!(
                            "expected Welcome, got {}",
                            other.kind_name()
                        ))),
                        Err(error) => Err(ClientError::Protocol(error.to_string())),
                    };
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(ClientError::Closed {
                        close_code: frame.map(|f| u16::from(f.code)),
                        error: None,
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(ClientError::Connect(error.to_string())),
                None => {
                    return Err(ClientError::Closed {
                        close_code: None,
                        error: None,
                    });
                }
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

/// Whether a connection that ended this way is worth reconnecting.
fn retryable(ending: &Ending) -> bool {
    match ending.close_code.and_then(CloseCode::from_u16) {
        None => true,
        Some(code) => matches!(
            code,
            CloseCode::SlowConsumer | CloseCode::ShuttingDown | CloseCode::TooManyConnections
        ),
    }
}

/// A little jitter, so that clients dropped together do not return together.
fn jittered(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    delay + delay.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// How one connected session ended.
enum SessionEnd {
    /// The application dropped the client.
    ByClient,
    /// The application asked for a fresh connection.
    Reconnect,
    /// The connection closed or failed.
    Closed(Ending),
}

async fn run_session(
    shared: &Shared,
    sink: &mut Sink,
    source: &mut Source,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    events: &mpsc::Sender<EventEnvelope>,
) -> SessionEnd {
    let mut ending = Ending::default();
    loop {
        tokio::select! {
            frame = outgoing.recv() => {
                let Some(frame) = frame else {
                    let _ = sink.close().await;
                    return SessionEnd::ByClient;
                };
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    return SessionEnd::Closed(ending);
                }
            }
            _ = shared.reconnect_now.notified() => {
                let _ = sink.close().await;
                return SessionEnd::Reconnect;
            }
            read = source.next() => match read {
                Some(Ok(Message::Binary(bytes))) => match decode_server(&bytes, FRAME_BYTES_HARD_MAX) {
                    Ok(ServerFrame::Reply { req_id, result }) => {
                        // The log entries of a subscription follow its reply on the
                        // wire: from here, only those (of an older subscription on this
                        // connection, none).
                        if let Ok(ReplyBody::Subscribed { from_offset, .. }) = &result {
                            *lock(&shared.log_next) = Some(*from_offset);
                        }
                        if let Some(waiter) = lock(&shared.pending).remove(&req_id) {
                            let _ = waiter.send(result);
                        }
                    }
                    Ok(ServerFrame::Event(event)) => {
                        lock(&shared.positions).insert(event.stream.clone(), (event.epoch, event.seq));
                        // An application that dropped its Events still gets replies.
                        let _ = events.send(event).await;
                    }
                    Ok(ServerFrame::Error(error)) => ending.error = Some(error),
                    Ok(ServerFrame::Log(entry)) => {
                        let mut next = lock(&shared.log_next);
                        if *next == Some(entry.offset) {
                            *next = Some(entry.offset + 1);
                            drop(next);
                            let mut log = lock(&shared.log);
                            // Never blocks the connection (replies and pings must get
                            // through): a partner that falls a whole buffer behind loses
                            // the subscription (`LogEntries::next` ends after what it
                            // holds) and subscribes again from its last ack.
                            if let Some(sender) = log.as_ref()
                                && sender.try_send(entry).is_err()
                            {
                                tracing::warn!("the event log buffer is full; the subscription ends");
                                *log = None;
                            }
                        }
                    }
                    Ok(ServerFrame::Welcome(_)) => {}
                    Err(error) => tracing::warn!(%error, "undecodable frame from the server"),
                },
                Some(Ok(Message::Close(frame))) => {
                    ending.close_code = frame.map(|f| u16::from(f.code));
                    return SessionEnd::Closed(ending);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return SessionEnd::Closed(ending),
            },
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    options: ClientOptions,
    mut sink: Sink,
    mut source: Source,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<EventEnvelope>,
    ended: watch::Sender<Option<Ending>>,
) {
    let final_ending = 'connections: loop {
        let end = run_session(&shared, &mut sink, &mut source, &mut outgoing, &events).await;
        // Requests sent on the lost connection get no reply: fail them now, and drop
        // what was queued for it, so nothing runs twice when the application retries.
        lock(&shared.pending).clear();
        // A subscription lasts one connection: its `LogEntries` ends, and the partner
        // subscribes again (from its last ack).
        *lock(&shared.log) = None;
        *lock(&shared.log_next) = None;
        while outgoing.try_recv().is_ok() {}
        let mut last = match end {
            SessionEnd::ByClient => break Ending::default(),
            SessionEnd::Reconnect => Ending::default(),
            SessionEnd::Closed(ending) if options.reconnect && retryable(&ending) => ending,
            SessionEnd::Closed(ending) => break ending,
        };
        let mut delay = options.backoff_min;
        for _ in 0..options.reconnect_attempts_max {
            tokio::time::sleep(jittered(delay)).await;
            let token = lock(&shared.token).clone();
            let resume: Vec<StreamPosition> = lock(&shared.positions)
                .iter()
                .map(|(stream, (epoch, seq))| StreamPosition {
                    stream: stream.clone(),
                    epoch: *epoch,
                    seq: *seq,
                })
                .collect();
            match handshake(&shared.url, &token, resume, &options).await {
                Ok((welcome, new_sink, new_source)) => {
                    *lock(&shared.welcome) = welcome;
                    shared.reconnects.fetch_add(1, Ordering::Relaxed);
                    sink = new_sink;
                    source = new_source;
                    continue 'connections;
                }
                Err(ClientError::Refused { error, close_code }) => {
                    last = Ending {
                        close_code,
                        error: Some(error),
                    };
                    if !retryable(&last) {
                        break 'connections last;
                    }
                }
                Err(error) => tracing::debug!(%error, "reconnect attempt failed"),
            }
            delay = (delay * 2).min(options.backoff_max);
        }
        break last;
    };
    lock(&shared.pending).clear();
    let _ = ended.send(Some(final_ending));
}

impl Client {
    pub async fn connect(url: &str, token: &str) -> Result<(Client, Events), ClientError> {
        Self::connect_with(url, token, ClientOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        token: &str,
        options: ClientOptions,
    ) -> Result<(Client, Events), ClientError> {
        let (welcome, sink, source) = handshake(url, token, Vec::new(), &options).await?;
        let (outgoing, outgoing_rx) = mpsc::channel::<Vec<u8>>(256);
        let (events_tx, events_rx) = mpsc::channel(options.event_buffer.max(1));
        let (ended_tx, ended) = watch::channel(None);
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            token: Mutex::new(token.to_owned()),
            welcome: Mutex::new(welcome),
            pending: Mutex::default(),
            positions: Mutex::default(),
            reconnects: AtomicU64::new(0),
            reconnect_now: Notify::new(),
            log: Mutex::default(),
            log_next: Mutex::default(),
        });
        tokio::spawn(run(
            shared.clone(),
            options.clone(),
            sink,
            source,
            outgoing_rx,
            events_tx,
            ended_tx,
        ));
        let client = Client {
            shared,
            options,
            outgoing,
            next_req_id: AtomicU32::new(1),
            ended,
            wheels: Mutex::default(),
            rooms: Mutex::default(),
            promises: Mutex::default(),
            revealed: Mutex::default(),
            spins: Mutex::default(),
        };
        Ok((
            client,
            Events {
                receiver: events_rx,
            },
        ))
    }

    /// The server's Welcome on the current connection.
    pub fn welcome(&self) -> Welcome {
        lock(&self.shared.welcome).clone()
    }

    /// How many times the client has reconnected.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// The last `(epoch, seq)` received on `stream`.
    pub fn position(&self, stream: &StreamId) -> Option<(u64, u64)> {
        lock(&self.shared.positions).get(stream).copied()
    }

    /// Drops the current connection and reconnects at once, resuming every stream (for
    /// example when the device changed networks).
    pub fn reconnect_now(&self) {
        self.shared.reconnect_now.notify_one();
    }

    fn closed_error(&self) -> ClientError {
        let ending = self.ended.borrow().clone().unwrap_or_default();
        ClientError::Closed {
            close_code: ending.close_code,
            error: ending.error,
        }
    }

    /// Sends a request and waits for its reply.
    pub async fn request(&self, request: Request) -> Result<ReplyBody, ClientError> {
        self.send_request(|req_id| ClientFrame::Request { req_id, request })
            .await
    }

    /// Sends `request` with the idempotency key `key`: sent again with the same key
    /// (after a timeout, on this or another connection of the player), it takes effect
    /// once and is answered with the first result. Choose a fresh key per operation.
    pub async fn request_keyed(
        &self,
        request: Request,
        key: u64,
    ) -> Result<ReplyBody, ClientError> {
        self.send_request(|req_id| ClientFrame::Keyed {
            req_id,
            key,
            request,
        })
        .await
    }

    async fn send_request(
        &self,
        frame: impl FnOnce(u32) -> ClientFrame,
    ) -> Result<ReplyBody, ClientError> {
        let req_id = self.next_req_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, reply) = oneshot::channel();
        lock(&self.shared.pending).insert(req_id, waiter);
        let frame = encode_client(&frame(req_id));
        if self.outgoing.send(frame).await.is_err() {
            lock(&self.shared.pending).remove(&req_id);
            return Err(self.closed_error());
        }
        match tokio::time::timeout(self.options.request_timeout, reply).await {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(error))) => Err(ClientError::Server(error)),
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => {
                lock(&self.shared.pending).remove(&req_id);
                Err(ClientError::Timeout(self.options.request_timeout))
            }
        }
    }

    /// Waits until the connection has ended for good and says how.
    pub async fn closed(&self) -> ClientError {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|ending| ending.is_some()).await;
        self.closed_error()
    }

    /// Joins an open wheel room (the server's default wheel when `wheel` is `None`).
    pub async fn quick_join_wheel(&self, wheel: Option<&str>) -> Result<RoomJoined, ClientError> {
        let reply = self
            .request(Request::QuickJoin {
                kind: RoomKind::Wheel,
                variant: wheel.map(str::to_owned),
            })
            .await?;
        match reply {
            ReplyBody::RoomJoined(joined) => {
                let wheel = joined.wheel.id.clone();
                lock(&self.wheels).insert(wheel.clone(), joined.wheel.clone());
                lock(&self.rooms).insert(joined.room, wheel.clone());
                self.note_position(
                    StreamId::Room(joined.room),
                    joined.stream_epoch,
                    joined.stream_seq,
                );
                // The first promise this client sees for the wheel stands until a
                // rotation reveals it: a server that changes the seed silently is then
                // caught at verification.
                lock(&self.promises).entry(wheel).or_insert(Promise {
                    commitment: joined.fairness.commitment,
                    first_nonce: joined.fairness.next_nonce,
                });
                Ok(joined)
            }
            other => Err(unexpected("RoomJoined", &other)),
        }
    }

    /// Joins a quiz room still in its lobby, or opens one.
    pub async fn quick_join_quiz(&self) -> Result<QuizJoined, ClientError> {
        let request = Request::QuickJoin {
            kind: RoomKind::Quiz,
            variant: None,
        };
        let joined = quiz_joined(self.request(request).await?)?;
        self.note_position(
            StreamId::Room(joined.room),
            joined.stream_epoch,
            joined.stream_seq,
        );
        Ok(joined)
    }

    /// Opens a private quiz room; share `QuizJoined::code` with friends.
    pub async fn create_private_quiz(&self) -> Result<QuizJoined, ClientError> {
        let request = Request::CreatePrivate {
            kind: RoomKind::Quiz,
            variant: None,
        };
        let joined = quiz_joined(self.request(request).await?)?;
        self.note_position(
            StreamId::Room(joined.room),
            joined.stream_epoch,
            joined.stream_seq,
        );
        Ok(joined)
    }

    pub async fn join_private(&self, code: &str) -> Result<QuizJoined, ClientError> {
        let joined = quiz_joined(
            self.request(Request::JoinPrivate {
                code: code.to_owned(),
            })
            .await?,
        )?;
        self.note_position(
            StreamId::Room(joined.room),
            joined.stream_epoch,
            joined.stream_seq,
        );
        Ok(joined)
    }

    /// Answers question `question` (its index in the game) with choice `choice`.
    pub async fn answer(
        &self,
        room: RoomId,
        question: u32,
        choice: u32,
    ) -> Result<(), ClientError> {
        match self
            .request(Request::Answer {
                room,
                question,
                choice,
            })
            .await?
        {
            ReplyBody::AnswerTaken { .. } => Ok(()),
            other => Err(unexpected("AnswerTaken", &other)),
        }
    }

    pub async fn chat(&self, room: RoomId, text: &str) -> Result<(), ClientError> {
        match self
            .request(Request::Chat {
                room,
                text: text.to_owned(),
            })
            .await?
        {
            ReplyBody::Sent => Ok(()),
            other => Err(unexpected("Sent", &other)),
        }
    }

    pub async fn react(&self, room: RoomId, emoji: &str) -> Result<(), ClientError> {
        match self
            .request(Request::React {
                room,
                emoji: emoji.to_owned(),
            })
            .await?
        {
            ReplyBody::Sent => Ok(()),
            other => Err(unexpected("Sent", &other)),
        }
    }

    /// Replaces the connection's token; later reconnects use the new one too.
    pub async fn refresh_token(&self, token: &str) -> Result<u64, ClientError> {
        match self
            .request(Request::RefreshToken {
                token: token.to_owned(),
            })
            .await?
        {
            ReplyBody::TokenRefreshed { expires_ms } => {
                *lock(&self.shared.token) = token.to_owned();
                Ok(expires_ms)
            }
            other => Err(unexpected("TokenRefreshed", &other)),
        }
    }

    pub async fn leave_room(&self, room: RoomId) -> Result<(), ClientError> {
        match self.request(Request::LeaveRoom { room }).await? {
            ReplyBody::RoomLeft { .. } => {
                lock(&self.rooms).remove(&room);
                Ok(())
            }
            other => Err(unexpected("RoomLeft", &other)),
        }
    }

    /// Spins the wheel of `room`; the spin is recorded for [`Client::verify_spins`].
    pub async fn spin(&self, room: RoomId, client_seed: &str) -> Result<SpinOutcome, ClientError> {
        self.spin_with(room, client_seed, None).await
    }

    /// [`Client::spin`] with an idempotency key: sent again with the same key after a
    /// timeout or a reconnect, it spins once and answers the same outcome.
    pub async fn spin_keyed(
        &self,
        room: RoomId,
        client_seed: &str,
        key: u64,
    ) -> Result<SpinOutcome, ClientError> {
        self.spin_with(room, client_seed, Some(key)).await
    }

    async fn spin_with(
        &self,
        room: RoomId,
        client_seed: &str,
        key: Option<u64>,
    ) -> Result<SpinOutcome, ClientError> {
        let request = Request::Spin {
            room,
            client_seed: client_seed.to_owned(),
        };
        let reply = match key {
            Some(key) => self.request_keyed(request, key).await?,
            None => self.request(request).await?,
        };
        match reply {
            ReplyBody::Spun(outcome) => {
                // Recorded under the wheel this client knows the room by, with what it
                // was shown and what it sent, not what the server echoes.
                let wheel_id = lock(&self.rooms)
                    .get(&room)
                    .cloned()
                    .unwrap_or_else(|| outcome.wheel.clone());
                let promise = lock(&self.promises).get(&wheel_id).copied();
                // A keyed spin answered again (a retry) is the same spin: recorded once.
                let recorded = lock(&self.spins).iter().any(|record| {
                    record.outcome.wheel == outcome.wheel
                        && record.outcome.nonce == outcome.nonce
                        && record.outcome.commitment == outcome.commitment
                });
                if recorded {
                    return Ok(outcome);
                }
                if let Some(wheel) = lock(&self.wheels).get(&wheel_id).cloned() {
                    lock(&self.spins).push(SpinRecord {
                        wheel,
                        outcome: outcome.clone(),
                        client_seed_sent: client_seed.to_owned(),
                        commitment_shown: promise.map(|p| p.commitment),
                        first_nonce: promise.map(|p| p.first_nonce),
                    });
                }
                Ok(outcome)
            }
            other => Err(unexpected("Spun", &other)),
        }
    }

    /// Reveals the current server seed of `wheel` and commits to a new one.
    pub async fn rotate_seed(&self, wheel: &str) -> Result<SeedReveal, ClientError> {
        match self
            .request(Request::RotateSeed {
                wheel: wheel.to_owned(),
            })
            .await?
        {
            ReplyBody::SeedRotated(reveal) => {
                let next = Promise {
                    commitment: reveal.next_commitment,
                    first_nonce: reveal.next_nonce,
                };
                if let Some(shown) = lock(&self.promises).insert(wheel.to_owned(), next) {
                    lock(&self.revealed).insert((wheel.to_owned(), reveal.next_commitment), shown);
                }
                Ok(reveal)
            }
            other => Err(unexpected("SeedRotated", &other)),
        }
    }

    pub async fn wallet(&self) -> Result<u64, ClientError> {
        match self.request(Request::GetWallet).await? {
            ReplyBody::Wallet { balance } => Ok(balance),
            other => Err(unexpected("Wallet", &other)),
        }
    }

    /// The player's referral code, to share with friends.
    pub async fn referral_code(&self) -> Result<String, ClientError> {
        match self.request(Request::GetReferralCode).await? {
            ReplyBody::ReferralCode { code } => Ok(code),
            other => Err(unexpected("ReferralCode", &other)),
        }
    }

    /// Claims a friend's referral code (PROTOCOL.md §4.3); answers the referrer.
    pub async fn claim_referral(&self, code: &str) -> Result<String, ClientError> {
        let request = Request::ClaimReferral {
            code: code.to_owned(),
        };
        match self.request(request).await? {
            ReplyBody::ReferralClaimed { referrer } => Ok(referrer),
            other => Err(unexpected("ReferralClaimed", &other)),
        }
    }

    /// The player's referral statistics.
    pub async fn referral_stats(&self) -> Result<ReferralStats, ClientError> {
        match self.request(Request::GetReferralStats).await? {
            ReplyBody::ReferralStats(stats) => Ok(stats),
            other => Err(unexpected("ReferralStats", &other)),
        }
    }

    /// The top referrers (at most `limit`, as the server caps it), best first.
    pub async fn referral_leaderboard(
        &self,
        limit: u32,
    ) -> Result<Vec<LeaderboardEntry>, ClientError> {
        match self
            .request(Request::GetReferralLeaderboard { limit })
            .await?
        {
            ReplyBody::ReferralLeaderboard { entries } => Ok(entries),
            other => Err(unexpected("ReferralLeaderboard", &other)),
        }
    }

    /// Partner: reports that `player` converted; answers how many rewards it made (the
    /// first report's number again for a repeated `idempotency_key`).
    pub async fn report_conversion(
        &self,
        player: &str,
        kind: &str,
        value: u64,
        idempotency_key: &str,
    ) -> Result<u32, ClientError> {
        let request = Request::ReportConversion {
            player: player.to_owned(),
            kind: kind.to_owned(),
            value,
            idempotency_key: idempotency_key.to_owned(),
        };
        match self.request(request).await? {
            ReplyBody::ConversionReported { rewards } => Ok(rewards),
            other => Err(unexpected("ConversionReported", &other)),
        }
    }

    /// Partner: any player's referral statistics.
    pub async fn player_referral_stats(&self, player: &str) -> Result<ReferralStats, ClientError> {
        let request = Request::GetPlayerReferralStats {
            player: player.to_owned(),
        };
        match self.request(request).await? {
            ReplyBody::ReferralStats(stats) => Ok(stats),
            other => Err(unexpected("ReferralStats", &other)),
        }
    }

    /// Partner: follows the event log from `from_offset` (`None`: after this partner's
    /// last ack). Answers the offset it starts at and the log's head, and the entries.
    pub async fn subscribe(
        &self,
        from_offset: Option<u64>,
    ) -> Result<(u64, u64, LogEntries), ClientError> {
        let (sender, receiver) = mpsc::channel(self.options.event_buffer.max(1));
        // Nothing is taken until this subscription's `Subscribed` sets where it starts
        // (frames of an older one still on their way are dropped).
        *lock(&self.shared.log_next) = None;
        *lock(&self.shared.log) = Some(sender);
        match self.request(Request::Subscribe { from_offset }).await? {
            ReplyBody::Subscribed { from_offset, head } => {
                Ok((from_offset, head, LogEntries { receiver }))
            }
            other => Err(unexpected("Subscribed", &other)),
        }
    }

    /// Partner: every log entry up to `offset` is processed.
    pub async fn ack(&self, offset: u64) -> Result<(), ClientError> {
        match self.request(Request::Ack { offset }).await? {
            ReplyBody::Acked { .. } => Ok(()),
            other => Err(unexpected("Acked", &other)),
        }
    }

    /// Partner: pays a held or flagged reward now.
    pub async fn approve_reward(
        &self,
        tree: &str,
        reward: u64,
    ) -> Result<RewardState, ClientError> {
        self.decide_reward(Request::ApproveReward {
            tree: tree.to_owned(),
            reward,
        })
        .await
    }

    /// Partner: never pays a held or flagged reward.
    pub async fn void_reward(&self, tree: &str, reward: u64) -> Result<RewardState, ClientError> {
        self.decide_reward(Request::VoidReward {
            tree: tree.to_owned(),
            reward,
        })
        .await
    }

    async fn decide_reward(&self, request: Request) -> Result<RewardState, ClientError> {
        match self.request(request).await? {
            ReplyBody::RewardDecided { state } => Ok(state),
            other => Err(unexpected("RewardDecided", &other)),
        }
    }

    /// Verifies every spin this client made under the seed that `reveal` (from this
    /// client's [`Client::rotate_seed`]) discloses, against what this client was shown
    /// and sent: the commitment shown before the spins (the revealed seed must hash to
    /// it), the client seed sent, every nonce of the seed used once and by a spin of
    /// this client, and the segment. Every mismatch is reported, with its nonce. (Spins
    /// made meanwhile by another connection of the same player, or a rotation made by
    /// one, or a rotation whose reply was lost, are not this client's to know: they show
    /// up as mismatches too.)
    pub fn verify_spins(&self, reveal: &SeedReveal) -> Vec<(u64, Result<(), SpinMismatch>)> {
        let promise = lock(&self.revealed)
            .get(&(reveal.wheel.clone(), reveal.next_commitment))
            .copied();
        let records: Vec<SpinRecord> = lock(&self.spins)
            .iter()
            .filter(|record| record.wheel.id == reveal.wheel)
            .filter(|record| match promise {
                Some(promise) => record.commitment_shown == Some(promise.commitment),
                None => {
                    record.commitment_shown.unwrap_or(record.outcome.commitment)
                        == reveal.revealed_commitment
                }
            })
            .cloned()
            .collect();
        let nonces = check_nonces(&records);
        let mut verdicts: Vec<(u64, Result<(), SpinMismatch>)> = records
            .iter()
            .zip(nonces)
            .map(|(record, nonce)| {
                let verdict = match nonce {
                    Some(mismatch) => Err(mismatch),
                    None => verify_record(record, &reveal.revealed_seed),
                };
                (record.outcome.nonce, verdict)
            })
            .collect();
        // Every nonce of the seed, from its first to the one the rotation says is next,
        // must be one of this client's spins.
        if let Some(promise) = promise {
            let spun: std::collections::BTreeSet<u64> =
                records.iter().map(|record| record.outcome.nonce).collect();
            for nonce in promise.first_nonce..reveal.next_nonce {
                if !spun.contains(&nonce) {
                    verdicts.push((nonce, Err(SpinMismatch::NonceGap { nonce })));
                }
            }
        }
        verdicts
    }

    /// Every spin this client has made, for verification by other means.
    pub fn spin_records(&self) -> Vec<SpinRecord> {
        lock(&self.spins).clone()
    }
}

impl Client {
    /// A join reply says where on the room's stream it stands: a resume starts from
    /// there unless events already took the client further.
    fn note_position(&self, stream: StreamId, epoch: u64, seq: u64) {
        lock(&self.shared.positions)
            .entry(stream)
            .and_modify(|position| {
                if position.0 != epoch || position.1 < seq {
                    *position = (epoch, seq);
                }
            })
            .or_insert((epoch, seq));
    }
}

fn quiz_joined(reply: ReplyBody) -> Result<QuizJoined, ClientError> {
    match reply {
        ReplyBody::QuizJoined(joined) => Ok(joined),
        other => Err(unexpected("QuizJoined", &other)),
    }
}

fn unexpected(wanted: &str, got: &ReplyBody) -> ClientError {
    ClientError::Protocol(format!("expected a {wanted} reply, got {got:?}"))
}

async fn read_close_code(source: &mut Source) -> Option<u16> {
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(message)) = source.next().await {
            if let Message::Close(frame) = message {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    });
    read.await.ok().flatten()
}
