//! The websocket gateway: one task per connection. It runs the handshake (Hello within a
//! timeout, version check, token check), forwards requests to the player's session, and
//! writes everything queued for the connection in batches. Bad input gets an error frame
//! and, where the error ends the connection, a close with the documented code.

use crate::auth::{Authenticator, Identity};
use crate::config::{FanoutConfig, LimitsConfig};
use crate::websocket::frame::{HeaderError, Opcode};
use crate::websocket::{self, Incoming, ReadError, Reader, Writer};
use bytes::Bytes;
use playtree_actors::mail::MemberRequest;
use playtree_actors::rate::TokenBucket;
use playtree_actors::session::Keyed;
use playtree_actors::{Hub, OutFrame, Outbound, OutboundReceiver};
use playtree_protocol::codec::{decode_client, encode_server};
use playtree_protocol::limits::RESUME_STREAMS_MAX;
use playtree_protocol::{
    ClientFrame, DecodeError, ErrorCode, ErrorReply, Hello, PROTOCOL_VERSION, ReplyBody, Request,
    ServerFrame, Welcome,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

#[derive(Debug)]
pub struct Gateway {
    pub hub: Hub,
    pub auth: Authenticator,
    pub limits: LimitsConfig,
    pub fanout: FanoutConfig,
    pub open_connections: AtomicUsize,
    /// Idempotency keys of `Keyed` requests.
    pub keys: crate::idempotency::Keys,
    pub next_connection: AtomicU64,
    /// Referral claims per source address.
    pub claim_sources: crate::sources::ClaimSources,
    /// Proxies whose `X-Forwarded-For` names the client's address.
    pub trusted_proxies: crate::proxies::TrustedProxies,
    pub shutdown: watch::Receiver<bool>,
}

impl Gateway {
    fn websocket_limits(&self) -> websocket::Limits {
        websocket::Limits {
            message_bytes_max: self.limits.frame_bytes_max,
            read_bytes: self.limits.read_buffer_bytes,
            linger: Duration::from_millis(self.limits.close_timeout_ms),
        }
    }
}

/// Why a connection ends early, with the frame that tells the client.
struct Refusal(ErrorReply);

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal(ErrorReply::new(code, message))
    }
}

pub async fn serve_connection(gateway: Arc<Gateway>, stream: TcpStream, peer: SocketAddr) {
    let connection = gateway.next_connection.fetch_add(1, Ordering::Relaxed) + 1;
    let span = tracing::info_span!("connection", %peer, connection, player = tracing::field::Empty);
    async move {
        let open = gateway.open_connections.fetch_add(1, Ordering::AcqRel) + 1;
        metrics::gauge!("playtree_connections_open").set(open as f64);
        metrics::counter!("playtree_connections_total").increment(1);
        // The websocket upgrade and the Hello share one deadline from the TCP accept: a
        // peer that connects and says nothing holds its place for that long at most.
        let deadline = Instant::now() + Duration::from_millis(gateway.limits.hello_timeout_ms);
        let upgrade = websocket::accept(stream, gateway.websocket_limits());
        let upgraded = match Box::pin(tokio::time::timeout_at(deadline, upgrade)).await {
            Err(_) => {
                metrics::counter!("playtree_handshake_timeouts_total").increment(1);
                tracing::debug!("no websocket upgrade in time");
                None
            }
            Ok(Err(error)) => {
                metrics::counter!("playtree_upgrades_refused_total").increment(1);
                tracing::debug!(%error, "websocket upgrade refused");
                None
            }
            Ok(Ok(halves)) => Some(halves),
        };
        if let Some((mut reader, mut writer, forwarded_for)) = upgraded {
            if open > gateway.limits.connections_max {
                let refusal = Refusal::new(
                    ErrorCode::TooManyConnections,
                    format!(
                        "the server holds its maximum of {} connections; retry later",
                        gateway.limits.connections_max
                    ),
                );
                let ending = Ending::Refused(refusal);
                Box::pin(end(&gateway, &mut reader, &mut writer, ending)).await;
            } else {
                let source = gateway
                    .trusted_proxies
                    .client_address(peer.ip(), forwarded_for.as_deref());
                run_connection(
                    &gateway,
                    connection,
                    source,
                    deadline,
                    &mut reader,
                    &mut writer,
                )
                .await;
            }
        }
        let open = gateway.open_connections.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("playtree_connections_open").set(open as f64);
    }
    .instrument(span)
    .await;
}

fn frame_bytes(frame: &ServerFrame) -> Bytes {
    Bytes::from(encode_server(frame))
}

/// How a connection ends.
enum Ending {
    /// With an error frame, then the close code it calls for (if any).
    Refused(Refusal),
    /// With a normal close (the events ended, or the client closed with `code`).
    Closed(Option<u16>),
    /// The peer is gone: nothing more is sent.
    Gone,
}

/// How a write bounded by the write timeout ends the connection, if it does: a failed
/// write means the peer is gone; one past its deadline means the peer stopped reading.
fn ending_for_write<E>(
    written: Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> Option<Ending> {
    match written {
        Ok(Ok(())) => None,
        Ok(Err(_)) => Some(Ending::Gone),
        Err(_) => {
            metrics::counter!("playtree_write_timeouts_total").increment(1);
            Some(Ending::Refused(slow_consumer()))
        }
    }
}

fn slow_consumer() -> Refusal {
    Refusal::new(
        ErrorCode::SlowConsumer,
        "the connection fell too far behind its events; reconnect and resume",
    )
}

/// Ends the connection as `ending` says, then waits (bounded) for the client to close
/// its side, so that what was sent last is read before the socket goes away.
async fn end(gateway: &Gateway, reader: &mut Reader, writer: &mut Writer, ending: Ending) {
    let closing = async {
        match ending {
            Ending::Gone => return,
            Ending::Refused(Refusal(error)) => {
                metrics::counter!("playtree_protocol_errors_total", "code" => error.code.as_u16().to_string())
                    .increment(1);
                tracing::info!(code = error.code.as_u16(), message = %error.message, "refusing");
                let error_frame = frame_bytes(&ServerFrame::Error(error.clone()));
                let _ = writer.send_binary(&[error_frame]).await;
                metrics::counter!("playtree_frames_out_total", "type" => "error").increment(1);
                if let Some(close) = error.code.close_code() {
                    let _ = writer.send_close(close.as_u16(), &error.message).await;
                }
            }
            // A client's close is echoed with its code (RFC 6455 §5.5.1).
            Ending::Closed(code) => {
                let payload = code.map(u16::to_be_bytes);
                let _ = writer
                    .send_control(Opcode::Close, payload.as_ref().map_or(&[][..], |p| &p[..]))
                    .await;
            }
        }
        if writer.shutdown().await.is_ok() {
            reader.discard_until_closed().await;
        }
    };
    // A slow consumer may never read these; past the timeout the socket is just dropped.
    let close_timeout = Duration::from_millis(gateway.limits.close_timeout_ms);
    let _ = tokio::time::timeout(close_timeout, closing).await;
}

/// How a failed read ends the connection.
fn ending_for_read(error: ReadError) -> Ending {
    match error {
        ReadError::Frame(HeaderError::TooLarge { size, max }) => {
            metrics::counter!("playtree_frames_in_total", "type" => "oversize").increment(1);
            Ending::Refused(Refusal::new(
                ErrorCode::FrameTooLarge,
                format!("a frame of {size} bytes exceeds the limit of {max} bytes"),
            ))
        }
        ReadError::Frame(HeaderError::Protocol(violation)) => {
            metrics::counter!("playtree_frames_in_total", "type" => "malformed").increment(1);
            Ending::Refused(Refusal::new(
                ErrorCode::MalformedFrame,
                format!("websocket protocol violation: {violation}"),
            ))
        }
        ReadError::Closed | ReadError::Io(_) => Ending::Gone,
    }
}

fn text_refused() -> Refusal {
    metrics::counter!("playtree_frames_in_total", "type" => "text").increment(1);
    Refusal::new(
        ErrorCode::TextFrameRejected,
        "text messages are not accepted; send bincode frames as binary messages (see PROTOCOL.md)",
    )
}

fn decode_refusal(error: DecodeError) -> Refusal {
    metrics::counter!("playtree_frames_in_total", "type" => "malformed").increment(1);
    match error {
        DecodeError::TooLarge { len, limit } => Refusal::new(
            ErrorCode::FrameTooLarge,
            format!("a frame of {len} bytes exceeds the limit of {limit} bytes"),
        ),
        other => Refusal::new(
            ErrorCode::MalformedFrame,
            format!("the frame is not a valid ClientFrame: {other}"),
        ),
    }
}

/// Waits for `Hello` (until `deadline`) and checks version and token.
async fn handshake(
    gateway: &Gateway,
    reader: &mut Reader,
    writer: &mut Writer,
    deadline: Instant,
) -> Result<(Hello, crate::auth::Identity), Ending> {
    let limits = &gateway.limits;
    let refused = |code, message: &str| Ending::Refused(Refusal::new(code, message));
    // Pings before Hello are answered, up to the frame burst: a connection that has not
    // said who it is gets no more.
    let mut pings_left = limits.frames_burst;
    let hello = loop {
        let read = tokio::time::timeout_at(deadline, reader.next())
            .await
            .map_err(|_| {
                Ending::Refused(Refusal::new(
                    ErrorCode::HelloTimeout,
                    format!(
                        "no Hello within {} ms of connecting",
                        limits.hello_timeout_ms
                    ),
                ))
            })?;
        match read {
            Ok(Incoming::Binary(bytes)) => {
                let frame = decode_client(&bytes, limits.frame_bytes_max)
                    .map_err(|error| Ending::Refused(decode_refusal(error)))?;
                match frame {
                    ClientFrame::Hello(hello) => {
                        metrics::counter!("playtree_frames_in_total", "type" => "hello")
                            .increment(1);
                        break hello;
                    }
                    other => {
                        metrics::counter!("playtree_frames_in_total", "type" => other.kind_name())
                            .increment(1);
                        return Err(refused(
                            ErrorCode::HelloExpected,
                            "the first frame of a connection must be Hello",
                        ));
                    }
                }
            }
            Ok(Incoming::Ping(payload)) => {
                if pings_left == 0 {
                    return Err(refused(
                        ErrorCode::RateLimitPersisted,
                        "too many pings before Hello",
                    ));
                }
                pings_left -= 1;
                let pong = writer.send_control(Opcode::Pong, &payload);
                if tokio::time::timeout_at(deadline, pong).await.is_err() {
                    return Err(Ending::Gone);
                }
            }
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Text) => return Err(Ending::Refused(text_refused())),
            Ok(Incoming::Close(code)) => return Err(Ending::Closed(code)),
            Err(error) => return Err(ending_for_read(error)),
        }
    };
    if hello.resume.len() > RESUME_STREAMS_MAX {
        return Err(Ending::Refused(Refusal::new(
            ErrorCode::MalformedFrame,
            format!("Hello may carry at most {RESUME_STREAMS_MAX} resume positions"),
        )));
    }
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Ending::Refused(Refusal::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "this server speaks protocol version {PROTOCOL_VERSION}; the client sent {}",
                hello.protocol_version
            ),
        )));
    }
    let now_s = gateway.hub.now_ms() / 1000;
    let identity = gateway.auth.verify(&hello.token, now_s).map_err(|error| {
        metrics::counter!("playtree_auth_failures_total", "reason" => error.reason()).increment(1);
        Ending::Refused(Refusal(error.to_reply()))
    })?;
    Ok((hello, identity))
}

/// The live part of a connection: who it is, until when, and how fast it may send.
struct Live {
    identity: Identity,
    frames: TokenBucket,
    strikes: u32,
    /// The latest ping that came over the frame rate: answered at the next heartbeat
    /// (RFC 6455 §5.5.3 lets an endpoint answer only the most recent ping).
    pending_pong: Option<Bytes>,
    /// The partner event log subscription, if one runs (one per connection).
    subscription: Option<tokio::task::AbortHandle>,
    /// The peer's address (referral claims are counted per address).
    source: std::net::IpAddr,
}

impl Live {
    /// Takes one frame's place in the connection's rate: `Ok(false)` for a frame over
    /// it (dropped), a refusal once more than `strikes_max` came over it in a row.
    fn admit(&mut self, now_ms: u64, strikes_max: u32) -> Result<bool, Refusal> {
        if self.frames.try_take(now_ms) {
            self.strikes = 0;
            return Ok(true);
        }
        self.strikes += 1;
        metrics::counter!("playtree_rate_limited_total", "limit" => "frames").increment(1);
        if self.strikes > strikes_max {
            return Err(Refusal::new(
                ErrorCode::RateLimitPersisted,
                "the connection kept sending faster than its rate limit",
            ));
        }
        Ok(false)
    }

    /// The refusal for a connection whose token has expired by `now_ms`.
    fn expired(&self, now_ms: u64) -> Option<Refusal> {
        if now_ms < self.identity.expires_at_s.saturating_mul(1000) {
            return None;
        }
        metrics::counter!("playtree_auth_failures_total", "reason" => "expired_live").increment(1);
        Some(Refusal::new(
            ErrorCode::TokenExpiredLive,
            "the token expired; refresh it before it expires (RefreshToken), or reconnect with a new one",
        ))
    }
}

async fn run_connection(
    gateway: &Arc<Gateway>,
    connection: u64,
    source: std::net::IpAddr,
    hello_deadline: Instant,
    reader: &mut Reader,
    writer: &mut Writer,
) {
    let (hello, identity) = match Box::pin(handshake(gateway, reader, writer, hello_deadline)).await
    {
        Ok(accepted) => accepted,
        Err(ending) => return Box::pin(end(gateway, reader, writer, ending)).await,
    };
    let player = identity.player_id.clone();
    tracing::Span::current().record("player", player.as_str());
    let hub = &gateway.hub;
    let limits = &gateway.limits;
    let (outbound, mut receiver) = Outbound::channel(
        connection,
        limits.outbound_frames_max,
        limits.outbound_bytes_max,
    );
    // The session subscribes this connection to the player's streams, replaying from the
    // positions in Hello; what it queues is written after the Welcome below. Boxed, as
    // are the other steps a connection takes once: the task holds only the largest of
    // its steps for its whole life, and this one is larger than the rest together.
    let resume = hello.resume;
    let resumed_streams = resume.len();
    let welcome = Box::pin(hub.connect(&player, &outbound, resume)).await;
    // The session may refuse too (the player's connection limit).
    let welcome = match welcome {
        Ok(welcome) => welcome,
        Err(error) => {
            let ending = Ending::Refused(Refusal(error));
            Box::pin(end(gateway, reader, writer, ending)).await;
            // A Connect that timed out may still reach the session: the closed
            // connection is dropped wherever it got to.
            drop(receiver);
            hub.connection_closed(&player, &outbound);
            return;
        }
    };
    let welcome = frame_bytes(&ServerFrame::Welcome(Welcome {
        protocol_version: PROTOCOL_VERSION,
        player_id: player.clone(),
        role: identity.role,
        player_stream_epoch: welcome.player_stream_epoch,
        server_time_ms: hub.now_ms(),
        heartbeat_interval_ms: u32::try_from(limits.heartbeat_interval_ms).unwrap_or(u32::MAX),
        token_expires_ms: identity.expires_at_s.saturating_mul(1000),
    }));
    let write_timeout = Duration::from_millis(limits.write_timeout_ms);
    let sent = tokio::time::timeout(write_timeout, writer.send_binary(&[welcome])).await;
    if matches!(sent, Ok(Ok(()))) {
        metrics::counter!("playtree_frames_out_total", "type" => "welcome").increment(1);
        tracing::info!(role = ?identity.role, resumed_streams, "welcomed");
        let live = Live {
            frames: TokenBucket::new(limits.frames_per_second, limits.frames_burst, hub.now_ms()),
            identity,
            strikes: 0,
            pending_pong: None,
            subscription: None,
            source,
        };
        serve_welcomed(
            gateway,
            &player,
            &outbound,
            &mut receiver,
            reader,
            writer,
            live,
        )
        .await;
    }
    // Closed first: a room that handles this connection's subscription only after the
    // notice below sees it closed and does not keep it.
    drop(receiver);
    hub.connection_closed(&player, &outbound);
    tracing::info!("connection closed");
}

async fn serve_welcomed(
    gateway: &Arc<Gateway>,
    player: &str,
    outbound: &Outbound,
    receiver: &mut OutboundReceiver,
    reader: &mut Reader,
    writer: &mut Writer,
    mut live: Live,
) {
    let limits = &gateway.limits;
    let in_flight = Arc::new(Semaphore::new(limits.requests_in_flight_max));
    let heartbeat_period = Duration::from_millis(limits.heartbeat_interval_ms);
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + heartbeat_period, heartbeat_period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut shutdown = gateway.shutdown.clone();
    let slow = receiver.slow.clone();
    let frame_limit = limits.frame_bytes_max;
    let write_timeout = Duration::from_millis(limits.write_timeout_ms);
    let write_delay = Duration::from_millis(gateway.fanout.write_delay_ms);

    let ending = loop {
        tokio::select! {
            first = receiver.recv() => {
                if !write_delay.is_zero() {
                    tokio::time::sleep(write_delay).await;
                }
                // A peer that stops reading blocks the write once the kernel buffers are
                // full: the write has a deadline, and the queue overflowing or the
                // server stopping meanwhile end it at once.
                tokio::select! {
                    written = tokio::time::timeout(write_timeout, write_batch(gateway, writer, receiver, first)) => {
                        if let Some(ending) = ending_for_write(written) {
                            break ending;
                        }
                    }
                    _ = slow.wait() => break Ending::Refused(slow_consumer()),
                    _ = shutdown.changed() => break Ending::Refused(shutting_down()),
                }
            }
            _ = slow.wait() => break Ending::Refused(slow_consumer()),
            read = reader.next() => {
                last_heard = Instant::now();
                match read {
                    Ok(Incoming::Binary(bytes)) => {
                        let frame = match decode_client(&bytes, frame_limit) {
                            Ok(frame) => frame,
                            Err(error) => break Ending::Refused(decode_refusal(error)),
                        };
                        metrics::counter!("playtree_frames_in_total", "type" => frame.kind_name()).increment(1);
                        // Idle connections are caught at the heartbeat; busy ones here.
                        if let Some(expired) = live.expired(gateway.hub.now_ms()) {
                            break Ending::Refused(expired);
                        }
                        let admitted = match live.admit(gateway.hub.now_ms(), limits.rate_limit_strikes_max) {
                            Ok(admitted) => admitted,
                            Err(refusal) => break Ending::Refused(refusal),
                        };
                        if !admitted {
                            let error = ErrorReply::new(
                                ErrorCode::RateLimited,
                                format!("at most {} frames per second; this frame was dropped", limits.frames_per_second),
                            );
                            let reply = match &frame {
                                ClientFrame::Request { req_id, .. } | ClientFrame::Keyed { req_id, .. } => ServerFrame::Reply { req_id: *req_id, result: Err(error) },
                                ClientFrame::Hello(_) => ServerFrame::Error(error),
                            };
                            outbound.push("reply", frame_bytes(&reply));
                            continue;
                        }
                        match frame {
                            ClientFrame::Request { req_id, request: Request::RefreshToken { token } } => {
                                let result = refresh(gateway, &mut live, &token);
                                outbound.push("reply", frame_bytes(&ServerFrame::Reply { req_id, result }));
                            }
                            ClientFrame::Request { req_id, request: Request::Subscribe { from_offset } }
                            | ClientFrame::Keyed { req_id, request: Request::Subscribe { from_offset }, .. } => {
                                if !crate::partner::allowed(live.identity.role) {
                                    let refusal = crate::partner::forbidden(&Request::Subscribe { from_offset });
                                    outbound.push("reply", frame_bytes(&ServerFrame::Reply { req_id, result: Err(refusal) }));
                                    continue;
                                }
                                // A new subscription replaces the connection's last one.
                                if let Some(previous) = live.subscription.take() {
                                    previous.abort();
                                }
                                let (hub, outbound, partner) = (gateway.hub.clone(), outbound.clone(), player.to_owned());
                                let task = tokio::spawn(async move {
                                    let start = crate::partner::subscription_start(&hub, &partner, from_offset).await;
                                    let from = start.as_ref().ok().map(|(from_offset, _)| *from_offset);
                                    let result = start.map(|(from_offset, head)| ReplyBody::Subscribed { from_offset, head });
                                    outbound.push("reply", frame_bytes(&ServerFrame::Reply { req_id, result }));
                                    if let Some(from) = from {
                                        crate::partner::stream_log(hub, outbound, from).await;
                                    }
                                }.in_current_span());
                                live.subscription = Some(task.abort_handle());
                            }
                            // Partner requests carry their own idempotency (a conversion's
                            // key; decisions answer the same when repeated): a `Keyed`
                            // wrapper's key is not used for them.
                            ClientFrame::Request { req_id, request } | ClientFrame::Keyed { req_id, request, .. }
                                if request.is_partner_only() =>
                            {
                                dispatch_partner(gateway, &live.identity, outbound, &in_flight, req_id, request);
                            }
                            ClientFrame::Request { req_id, request } => {
                                let received_ms = gateway.hub.now_ms();
                                let arrived = Arrived::new(gateway, &live, request, received_ms);
                                dispatch(gateway, player, outbound, &in_flight, req_id, arrived);
                            }
                            // A token refresh is the connection's own: no key needed.
                            ClientFrame::Keyed { req_id, request: Request::RefreshToken { token }, .. } => {
                                let result = refresh(gateway, &mut live, &token);
                                outbound.push("reply", frame_bytes(&ServerFrame::Reply { req_id, result }));
                            }
                            ClientFrame::Keyed { req_id, key, request } => {
                                let received_ms = gateway.hub.now_ms();
                                let seen = gateway.keys.begin(player, key, crate::idempotency::digest(&request));
                                let arrived = Arrived::new(gateway, &live, request, received_ms);
                                dispatch_keyed(gateway, player, outbound, &in_flight, req_id, arrived, seen);
                            }
                            ClientFrame::Hello(_) => {
                                break Ending::Refused(Refusal::new(ErrorCode::HelloExpected, "Hello was already sent on this connection"));
                            }
                        }
                    }
                    // Pings count against the frame rate like any frame; the pong of
                    // one over it waits for the next heartbeat.
                    Ok(Incoming::Ping(payload)) => {
                        match live.admit(gateway.hub.now_ms(), limits.rate_limit_strikes_max) {
                            Ok(true) => live.pending_pong = None,
                            Ok(false) => {
                                live.pending_pong = Some(payload);
                                continue;
                            }
                            Err(refusal) => break Ending::Refused(refusal),
                        }
                        let pong = writer.send_control(Opcode::Pong, &payload);
                        if let Some(ending) = ending_for_write(tokio::time::timeout(write_timeout, pong).await) {
                            break ending;
                        }
                    }
                    Ok(Incoming::Pong) => {}
                    Ok(Incoming::Text) => break Ending::Refused(text_refused()),
                    Ok(Incoming::Close(code)) => break Ending::Closed(code),
                    Err(error) => break ending_for_read(error),
                }
            }
            _ = heartbeat.tick() => {
                if let Some(expired) = live.expired(gateway.hub.now_ms()) {
                    break Ending::Refused(expired);
                }
                if last_heard.elapsed() > heartbeat_period * limits.silent_heartbeats_max {
                    tracing::info!("closing a silent connection");
                    metrics::counter!("playtree_heartbeat_timeouts_total").increment(1);
                    // As PROTOCOL.md §4 says: no frame, no code; the socket just closes.
                    break Ending::Gone;
                }
                let pong = live.pending_pong.take();
                let beat = async {
                    if let Some(payload) = pong {
                        writer.send_control(Opcode::Pong, &payload).await?;
                    }
                    writer.send_control(Opcode::Ping, &[]).await
                };
                if let Some(ending) = ending_for_write(tokio::time::timeout(write_timeout, beat).await) {
                    break ending;
                }
            }
            _ = shutdown.changed() => break Ending::Refused(shutting_down()),
        }
    };
    if let Some(subscription) = live.subscription.take() {
        subscription.abort();
    }
    Box::pin(end(gateway, reader, writer, ending)).await;
}

fn shutting_down() -> Refusal {
    Refusal::new(
        ErrorCode::ShuttingDown,
        "the server is shutting down; reconnect in a moment",
    )
}

/// Replaces the connection's token with `token`, which must name the same player.
fn refresh(gateway: &Gateway, live: &mut Live, token: &str) -> Result<ReplyBody, ErrorReply> {
    let identity = gateway
        .auth
        .verify(token, gateway.hub.now_ms() / 1000)
        .map_err(|error| {
            metrics::counter!("playtree_auth_failures_total", "reason" => error.reason())
                .increment(1);
            error.to_reply()
        })?;
    if identity.player_id != live.identity.player_id {
        return Err(ErrorReply::new(
            ErrorCode::TokenPlayerMismatch,
            "the new token names another player; connect again to switch players",
        ));
    }
    let expires_ms = identity.expires_at_s.saturating_mul(1000);
    live.identity = identity;
    metrics::counter!("playtree_token_refreshes_total").increment(1);
    Ok(ReplyBody::TokenRefreshed { expires_ms })
}

/// Writes `first` and whatever else is already queued (up to
/// `fanout.write_batch_frames_max` frames and about `limits.write_buffer_bytes`) in one
/// vectored write; the caller bounds it with `limits.write_timeout_ms` (after any
/// `fanout.write_delay_ms`, which waits first so that more frames go out together).
/// Under load the queue fills while the previous write is in flight, so batches grow
/// with the load and a quiet connection still writes each frame at once.
async fn write_batch(
    gateway: &Gateway,
    writer: &mut Writer,
    frames: &mut OutboundReceiver,
    first: OutFrame,
) -> std::io::Result<()> {
    let frames_max = gateway.fanout.write_batch_frames_max.max(1);
    let bytes_max = gateway.limits.write_buffer_bytes;
    let mut bytes = first.bytes.len();
    let mut kinds = KindTally::new(first.kind);
    let mut batch = Vec::with_capacity(frames_max.min(16));
    batch.push(first.bytes);
    let mut drained = false;
    while batch.len() < frames_max && bytes < bytes_max {
        let Some(frame) = frames.try_recv() else {
            drained = true;
            break;
        };
        bytes += frame.bytes.len();
        kinds.add(frame.kind);
        batch.push(frame.bytes);
    }
    kinds.record();
    metrics::histogram!("playtree_write_batch_frames").record(batch.len() as f64);
    let since = frames.waiting_since();
    let started = Instant::now();
    let written = writer.send_binary(&batch).await;
    if !drained {
        // Frames left behind by the batch's limits: their wait runs from this write's
        // start. (A drained queue needs nothing: the next push stamps its own time.)
        frames.write_done(started.into_std());
    }
    if let Some(since) = since {
        // From the batch's oldest frame arriving to its write done: the server's share
        // of fanout latency.
        metrics::histogram!("playtree_fanout_delay_seconds").record(since.elapsed().as_secs_f64());
    }
    written
}

/// Counts the frames of a batch by type, one counter update per run of a type rather
/// than one per frame (a batch is mostly events).
struct KindTally {
    kind: &'static str,
    run: u64,
}

impl KindTally {
    fn new(kind: &'static str) -> Self {
        KindTally { kind, run: 1 }
    }

    fn add(&mut self, kind: &'static str) {
        if kind == self.kind {
            self.run += 1;
        } else {
            self.record();
            *self = KindTally::new(kind);
        }
    }

    fn record(&self) {
        metrics::counter!("playtree_frames_out_total", "type" => self.kind).increment(self.run);
    }
}

/// Runs one partner request on its own task (bounded per connection), if the
/// connection's role allows it, and queues the reply.
fn dispatch_partner(
    gateway: &Arc<Gateway>,
    partner: &Identity,
    outbound: &Outbound,
    in_flight: &Arc<Semaphore>,
    req_id: u32,
    request: Request,
) {
    let reply = |result| frame_bytes(&ServerFrame::Reply { req_id, result });
    if !crate::partner::allowed(partner.role) {
        outbound.push("reply", reply(Err(crate::partner::forbidden(&request))));
        return;
    }
    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
        outbound.push("reply", reply(Err(too_many_in_flight(gateway))));
        return;
    };
    let (hub, outbound) = (gateway.hub.clone(), outbound.clone());
    let partner = partner.player_id.clone();
    tokio::spawn(
        async move {
            let kind = request.kind_name();
            let result = crate::partner::carry_out(&hub, &partner, request).await;
            if let Err(error) = &result {
                metrics::counter!("playtree_request_errors_total", "request" => kind, "code" => error.code.as_u16().to_string()).increment(1);
            }
            outbound.push("reply", frame_bytes(&ServerFrame::Reply { req_id, result }));
            drop(permit);
        }
        .in_current_span(),
    );
}

/// Runs one request on its own task (bounded per connection) and queues the reply.
/// A request as it came off the socket: when, and whether it is a referral claim from
/// an address past its hourly claims limit.
struct Arrived {
    request: Request,
    received_ms: u64,
    suspect_source: bool,
}

impl Arrived {
    fn new(gateway: &Gateway, live: &Live, request: Request, received_ms: u64) -> Self {
        let suspect_source = matches!(request, Request::ClaimReferral { .. })
            && gateway
                .claim_sources
                .claim_is_suspect(live.source, received_ms);
        Arrived {
            request,
            received_ms,
            suspect_source,
        }
    }
}

fn dispatch(
    gateway: &Arc<Gateway>,
    player: &str,
    outbound: &Outbound,
    in_flight: &Arc<Semaphore>,
    req_id: u32,
    arrived: Arrived,
) {
    let Arrived {
        request,
        received_ms,
        suspect_source,
    } = arrived;
    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
        let reply = ServerFrame::Reply {
            req_id,
            result: Err(too_many_in_flight(gateway)),
        };
        outbound.push("reply", frame_bytes(&reply));
        return;
    };
    // A chat, reaction or answer for a room this connection follows goes straight to
    // the room, which checks membership itself: a player who only chats keeps no
    // session in memory, and the request skips a hop. Anything else, or a room the
    // connection does not follow, goes through the session (which has the right error).
    let direct = MemberRequest::from_request(player, &request, received_ms)
        .filter(|member| outbound.follows_room(member.room));
    let hub = gateway.hub.clone();
    let player = player.to_owned();
    let outbound = outbound.clone();
    tokio::spawn(
        async move {
            let kind = request.kind_name();
            let result = match direct {
                Some(member) => hub.member_request(member).await,
                None => {
                    hub.request(&player, request, None, received_ms, suspect_source)
                        .await
                }
            };
            if let Err(error) = &result {
                metrics::counter!("playtree_request_errors_total", "request" => kind, "code" => error.code.as_u16().to_string()).increment(1);
            }
            outbound.push("reply", frame_bytes(&ServerFrame::Reply { req_id, result }));
            drop(permit);
        }
        .in_current_span(),
    );
}

/// Runs a `Keyed` request once per key: the first time it is carried out and its result
/// kept for the key (also when the client was told 5002 meanwhile: the request still
/// completes, and a retry gets its result); a request sent again with the key waits for
/// that result instead (3008 if it is not there within the call timeout).
#[allow(clippy::too_many_arguments)]
fn dispatch_keyed(
    gateway: &Arc<Gateway>,
    player: &str,
    outbound: &Outbound,
    in_flight: &Arc<Semaphore>,
    req_id: u32,
    arrived: Arrived,
    seen: crate::idempotency::Seen,
) {
    use crate::idempotency::Seen;
    let Arrived {
        request,
        received_ms,
        suspect_source,
    } = arrived;
    let reply = {
        let outbound = outbound.clone();
        move |result: Result<ReplyBody, ErrorReply>| {
            outbound.push("reply", frame_bytes(&ServerFrame::Reply { req_id, result }));
        }
    };
    let taken = match seen {
        Seen::Refused(error) => return reply(Err(error)),
        Seen::Again(mut first) => {
            metrics::counter!("playtree_idempotent_replays_total").increment(1);
            let wait = gateway.hub.call_timeout();
            tokio::spawn(
                async move {
                    let waited = tokio::time::timeout(wait, first.wait_for(Option::is_some)).await;
                    let outcome = match waited {
                        Ok(Ok(outcome)) => outcome.clone(),
                        _ => None,
                    };
                    reply(outcome.unwrap_or_else(|| Err(in_progress())));
                }
                .in_current_span(),
            );
            return;
        }
        Seen::First(taken) => taken,
    };
    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
        // Not carried out: the key keeps nothing, a retry runs it.
        gateway.keys.forget(taken);
        return reply(Err(too_many_in_flight(gateway)));
    };
    let gateway = gateway.clone();
    let player = player.to_owned();
    let keyed = Keyed {
        key: taken.key(),
        digest: taken.digest(),
    };
    tokio::spawn(
        async move {
            let result = gateway
                .hub
                .request(&player, request, Some(keyed), received_ms, suspect_source)
                .await;
            drop(permit);
            match &result {
                // No answer in time, or not reached: the player's session keeps the
                // key (durably, for a request that changes the player's state) and
                // its answer when it comes; a retry asks it there.
                Err(error)
                    if matches!(
                        error.code,
                        ErrorCode::Timeout
                            | ErrorCode::EntityUnavailable
                            | ErrorCode::ShuttingDown
                            | ErrorCode::TooManyRequestsInFlight
                    ) =>
                {
                    gateway.keys.forget(taken)
                }
                _ => gateway.keys.finish(taken, result.clone()),
            }
            reply(result);
        }
        .in_current_span(),
    );
}

fn in_progress() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::RequestInProgress,
        "the request with this key is still being carried out; send it again with the same key for its result",
    )
}

fn too_many_in_flight(gateway: &Gateway) -> ErrorReply {
    metrics::counter!("playtree_rate_limited_total", "limit" => "requests_in_flight").increment(1);
    ErrorReply::new(
        ErrorCode::TooManyRequestsInFlight,
        format!(
            "at most {} requests may be in flight on one connection; wait for replies",
            gateway.limits.requests_in_flight_max
        ),
    )
}
