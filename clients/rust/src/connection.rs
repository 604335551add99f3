//! The connection: a background task owns the websocket; requests wait on their reply by
//! `req_id`; events arrive on [`Events`].

use crate::error::ClientError;
use crate::verify::{SpinRecord, verify_spin};
use futures_util::{SinkExt, StreamExt};
use playtree_protocol::codec::{decode_server, encode_client};
use playtree_protocol::fairness::VerifyError;
use playtree_protocol::limits::FRAME_BYTES_HARD_MAX;
use playtree_protocol::{
    ClientFrame, ErrorReply, EventEnvelope, Hello, PROTOCOL_VERSION, ReplyBody, Request, RoomId,
    RoomJoined, RoomKind, SeedReveal, ServerFrame, SpinOutcome, Welcome, WheelInfo,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// How long `connect` waits for the server's Welcome.
    pub handshake_timeout: Duration,
    /// Events buffered for the application before the client stops reading the socket
    /// (and the server, seeing its queue fill, closes the connection as slow).
    pub event_buffer: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            event_buffer: 1024,
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

/// A connected, welcomed client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Client {
    welcome: Welcome,
    options: ClientOptions,
    outgoing: mpsc::Sender<Vec<u8>>,
    pending: Arc<Mutex<HashMap<u32, ReplySender>>>,
    next_req_id: AtomicU32,
    ended: watch::Receiver<Option<Ending>>,
    wheels: Mutex<HashMap<String, WheelInfo>>,
    spins: Mutex<Vec<SpinRecord>>,
}

/// The events the server pushes, in order.
#[derive(Debug)]
pub struct Events {
    receiver: mpsc::Receiver<EventEnvelope>,
}

impl Events {
    /// The next event; `None` once the connection has ended.
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

impl Client {
    pub async fn connect(url: &str, token: &str) -> Result<(Client, Events), ClientError> {
        Self::connect_with(url, token, ClientOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        token: &str,
        options: ClientOptions,
    ) -> Result<(Client, Events), ClientError> {
        let (websocket, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|error| ClientError::Connect(error.to_string()))?;
        let (mut sink, mut source) = websocket.split();
        let hello = ClientFrame::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            token: token.to_owned(),
            resume: Vec::new(),
        });
        sink.send(Message::Binary(encode_client(&hello).into()))
            .await
            .map_err(|error| ClientError::Connect(error.to_string()))?;
        let welcome = tokio::time::timeout(options.handshake_timeout, async {
            loop {
                match source.next().await {
                    Some(Ok(Message::Binary(bytes))) => {
                        return match decode_server(&bytes, FRAME_BYTES_HARD_MAX) {
                            Ok(ServerFrame::Welcome(welcome)) => Ok(welcome),
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
        })
        .await
        .map_err(|_| ClientError::Timeout(options.handshake_timeout))??;

        let (outgoing, mut outgoing_rx) = mpsc::channel::<Vec<u8>>(256);
        let (events_tx, events_rx) = mpsc::channel(options.event_buffer.max(1));
        let pending: Arc<Mutex<HashMap<u32, ReplySender>>> = Arc::default();
        let (ended_tx, ended) = watch::channel(None);
        let task_pending = pending.clone();
        tokio::spawn(async move {
            let mut ending = Ending::default();
            loop {
                tokio::select! {
                    frame = outgoing_rx.recv() => {
                        let Some(frame) = frame else {
                            let _ = sink.close().await;
                            break;
                        };
                        if sink.send(Message::Binary(frame.into())).await.is_err() {
                            break;
                        }
                    }
                    read = source.next() => match read {
                        Some(Ok(Message::Binary(bytes))) => match decode_server(&bytes, FRAME_BYTES_HARD_MAX) {
                            Ok(ServerFrame::Reply { req_id, result }) => {
                                if let Some(waiter) = lock(&task_pending).remove(&req_id) {
                                    let _ = waiter.send(result);
                                }
                            }
                            Ok(ServerFrame::Event(event)) => {
                                if events_tx.send(event).await.is_err() {
                                    // The application dropped its Events; keep serving replies.
                                }
                            }
                            Ok(ServerFrame::Error(error)) => ending.error = Some(error),
                            Ok(ServerFrame::Welcome(_)) => {}
                            Err(error) => {
                                tracing::warn!(%error, "undecodable frame from the server");
                            }
                        },
                        Some(Ok(Message::Close(frame))) => {
                            ending.close_code = frame.map(|f| u16::from(f.code));
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                }
            }
            // Requests still waiting learn that the connection is gone.
            lock(&task_pending).clear();
            let _ = ended_tx.send(Some(ending));
        });
        let client = Client {
            welcome,
            options,
            outgoing,
            pending,
            next_req_id: AtomicU32::new(1),
            ended,
            wheels: Mutex::default(),
            spins: Mutex::default(),
        };
        Ok((
            client,
            Events {
                receiver: events_rx,
            },
        ))
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
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
        let req_id = self.next_req_id.fetch_add(1, Ordering::Relaxed);
        let (waiter, reply) = oneshot::channel();
        lock(&self.pending).insert(req_id, waiter);
        let frame = encode_client(&ClientFrame::Request { req_id, request });
        if self.outgoing.send(frame).await.is_err() {
            lock(&self.pending).remove(&req_id);
            return Err(self.closed_error());
        }
        match tokio::time::timeout(self.options.request_timeout, reply).await {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(error))) => Err(ClientError::Server(error)),
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => {
                lock(&self.pending).remove(&req_id);
                Err(ClientError::Timeout(self.options.request_timeout))
            }
        }
    }

    /// Waits until the connection has ended and says how.
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
                lock(&self.wheels).insert(joined.wheel.id.clone(), joined.wheel.clone());
                Ok(joined)
            }
            other => Err(unexpected("RoomJoined", &other)),
        }
    }

    pub async fn leave_room(&self, room: RoomId) -> Result<(), ClientError> {
        match self.request(Request::LeaveRoom { room }).await? {
            ReplyBody::RoomLeft { .. } => Ok(()),
            other => Err(unexpected("RoomLeft", &other)),
        }
    }

    /// Spins the wheel of `room`; the spin is recorded for [`Client::verify_spins`].
    pub async fn spin(&self, room: RoomId, client_seed: &str) -> Result<SpinOutcome, ClientError> {
        let reply = self
            .request(Request::Spin {
                room,
                client_seed: client_seed.to_owned(),
            })
            .await?;
        match reply {
            ReplyBody::Spun(outcome) => {
                if let Some(wheel) = lock(&self.wheels).get(&outcome.wheel).cloned() {
                    lock(&self.spins).push(SpinRecord {
                        wheel,
                        outcome: outcome.clone(),
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
            ReplyBody::SeedRotated(reveal) => Ok(reveal),
            other => Err(unexpected("SeedRotated", &other)),
        }
    }

    pub async fn wallet(&self) -> Result<u64, ClientError> {
        match self.request(Request::GetWallet).await? {
            ReplyBody::Wallet { balance } => Ok(balance),
            other => Err(unexpected("Wallet", &other)),
        }
    }

    /// Verifies every spin this client made under the seed `reveal` discloses.
    pub fn verify_spins(&self, reveal: &SeedReveal) -> Vec<(u64, Result<(), VerifyError>)> {
        lock(&self.spins)
            .iter()
            .filter(|record| {
                record.outcome.wheel == reveal.wheel
                    && record.outcome.commitment == reveal.revealed_commitment
            })
            .map(|record| {
                (
                    record.outcome.nonce,
                    verify_spin(&record.wheel, &record.outcome, &reveal.revealed_seed),
                )
            })
            .collect()
    }

    /// Every spin this client has made, for verification by other means.
    pub fn spin_records(&self) -> Vec<SpinRecord> {
        lock(&self.spins).clone()
    }
}

fn unexpected(wanted: &str, got: &ReplyBody) -> ClientError {
    ClientError::Protocol(format!("expected a {wanted} reply, got {got:?}"))
}

async fn read_close_code<S>(source: &mut S) -> Option<u16>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
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
