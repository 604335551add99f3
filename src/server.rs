//! Starting and stopping a whole server: store, hub, gateway listener, admin listener.

use crate::admin;
use crate::auth::Authenticator;
use crate::clock::{OsEntropy, SystemClock};
use crate::config::ServerConfig;
use crate::gateway::{Gateway, serve_connection};
use playtree_actors::{Clock, Entropy, Hub, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("opening the store in {path}: {source}")]
    Store {
        path: String,
        source: playtree_actors::StoreError,
    },
    #[error(transparent)]
    Key(#[from] crate::auth::KeyError),
    #[error("starting the actors: {0}")]
    Hub(#[from] playtree_actors::HubError),
    #[error(transparent)]
    Questions(#[from] crate::questions::QuestionsError),
    #[error(transparent)]
    Config(#[from] playtree_actors::config::ConfigError),
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    pub ws_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub hub: Hub,
    pub gateway: Arc<Gateway>,
    /// What `/readyz` reports.
    ready: Arc<AtomicBool>,
    /// Tells the accept loop and every connection to stop.
    shutdown: watch::Sender<bool>,
    /// Stops the admin listener, last.
    admin_shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    admin: tokio::task::JoinHandle<()>,
    grace: Duration,
    unready_delay: Duration,
}

/// What the server runs with besides its config: time and randomness, injectable for tests.
#[derive(Debug, Clone)]
pub struct Environment {
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
}

impl Default for Environment {
    fn default() -> Self {
        Environment {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy),
        }
    }
}

pub async fn start(
    config: ServerConfig,
    environment: Environment,
) -> Result<RunningServer, StartError> {
    let auth = Authenticator::from_config(&config.auth, &config.server.data_dir)?;
    start_with_auth(config, environment, auth).await
}

pub async fn start_with_auth(
    config: ServerConfig,
    environment: Environment,
    auth: Authenticator,
) -> Result<RunningServer, StartError> {
    config.validate()?;
    let trusted_proxies = crate::proxies::TrustedProxies::parse(&config.server.trusted_proxies)
        .map_err(|reason| playtree_actors::config::ConfigError {
            key: "server.trusted_proxies".into(),
            reason,
        })?;
    let store_dir = config.store_dir();
    let store = Store::open(&store_dir, &config.game.store, environment.clock.clone()).map_err(
        |source| StartError::Store {
            path: store_dir.display().to_string(),
            source,
        },
    )?;
    let questions = Arc::new(crate::questions::load(&config.game.quiz.questions_dir)?);
    let hub = Hub::start(config.game.clone(), store, environment.entropy, questions).await?;

    check_open_files(config.limits.connections_max);
    let (ws_listener, ws_addr) = listen("the websocket listener", config.server.listen).await?;
    let (admin_listener, admin_addr) =
        listen("the admin listener", config.server.admin_listen).await?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let gateway = Arc::new(Gateway {
        hub: hub.clone(),
        auth,
        limits: config.limits.clone(),
        fanout: config.fanout.clone(),
        open_connections: AtomicUsize::new(0),
        keys: crate::idempotency::Keys::new(
            config.limits.idempotency_keys_max,
            config.limits.idempotency_keys_per_player,
            Duration::from_millis(config.limits.idempotency_ttl_ms),
        ),
        next_connection: AtomicU64::new(0),
        claim_sources: crate::sources::ClaimSources::new(
            config.game.referral.claims_per_address_per_hour,
            config.game.referral.claim_sources_max,
        ),
        trusted_proxies,
        shutdown: shutdown_rx.clone(),
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(
        ws_listener,
        gateway.clone(),
        shutdown_rx.clone(),
    ));
    let ready = Arc::new(AtomicBool::new(true));
    // The admin listener outlives the connections: /readyz and /metrics answer through
    // the whole shutdown.
    let (admin_shutdown, mut admin_stop) = watch::channel(false);
    let router = admin::router(hub.clone(), ready.clone());
    let admin = tokio::spawn(async move {
        let served = axum::serve(admin_listener, router)
            .with_graceful_shutdown(async move {
                let _ = admin_stop.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "admin listener failed");
        }
    });
    {
        // The partner event log's retention, checked every minute.
        let (hub, mut stop) = (hub.clone(), shutdown_rx.clone());
        tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => match crate::partner::trim_log(&hub).await {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(deleted, "event log entries past their retention deleted"),
                        Err(error) => tracing::warn!(%error, "event log retention did not run"),
                    },
                    // Unit, so that no watch guard is held across the trim's await.
                    () = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
                }
            }
        });
    }
    if let Some(handle) = admin::prometheus() {
        let mut upkeep_shutdown = shutdown_rx;
        tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = every.tick() => handle.run_upkeep(),
                    _ = upkeep_shutdown.wait_for(|stop| *stop) => break,
                }
            }
        });
    }
    tracing::info!(%ws_addr, %admin_addr, "playtree started");
    Ok(RunningServer {
        ws_addr,
        admin_addr,
        hub,
        gateway,
        ready,
        shutdown,
        admin_shutdown,
        tasks,
        admin,
        grace: Duration::from_millis(config.server.shutdown_grace_ms),
        unready_delay: Duration::from_millis(config.server.unready_delay_ms),
    })
}

/// Binds `addr` and returns the listener with the address it got (port 0 picks one).
async fn listen(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}

/// The soft open-file limit of this process (`ulimit -n`), where the OS tells it
/// (Linux: `/proc/self/limits`); `None` for "unlimited" or elsewhere.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

/// The soft limit on the "Max open files" line of a `/proc/<pid>/limits` text.
fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// File descriptors the process needs besides connections (store files, listeners,
/// the runtime's own), a generous estimate.
const FILES_BESIDES_CONNECTIONS: u64 = 64;

/// Raises the process's soft open-file limit towards what `connections_max` needs (up
/// to the hard limit: container runtimes often start processes at a soft 1,024 under a
/// far higher hard limit), then warns when `connections_max` connections still cannot
/// all be open at once: past the limit `accept` fails (EMFILE) however the server is
/// configured.
fn check_open_files(connections_max: usize) {
    let needed = connections_max as u64 + FILES_BESIDES_CONNECTIONS;
    if let Err(error) = rlimit::increase_nofile_limit(needed) {
        tracing::warn!(%error, "could not raise the open-file limit");
    }
    let Some(limit) = open_files_limit() else {
        return;
    };
    metrics::gauge!("playtree_open_files_limit").set(limit as f64);
    if limit < needed {
        tracing::warn!(
            open_files_limit = limit,
            connections_max,
            "the open-file limit (ulimit -n) allows only about {} connections, fewer than limits.connections_max; raise the limit or lower connections_max",
            limit.saturating_sub(FILES_BESIDES_CONNECTIONS)
        );
    }
}

/// `accept` failed: it keeps failing while the cause lasts (out of file descriptors),
/// so the loop waits before the next try, longer each time, and logs once a second.
#[derive(Debug)]
struct AcceptBackoff {
    failures: u32,
    last_logged: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_millis(500);
    const LOG_EVERY: Duration = Duration::from_secs(1);

    fn new() -> Self {
        AcceptBackoff {
            failures: 0,
            last_logged: None,
            unlogged: 0,
        }
    }

    /// Notes a failure; returns how long to wait before accepting again: nothing for a
    /// failure of one connection (it was reset before it was accepted), longer each time
    /// for a lack of resources (file descriptors, memory), which lasts.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        metrics::counter!("playtree_accept_errors_total").increment(1);
        let now = tokio::time::Instant::now();
        if self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= Self::LOG_EVERY)
        {
            tracing::warn!(%error, failures_not_logged = self.unlogged, "accept failed; backing off");
            self.last_logged = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        if !Self::lasting(error) {
            return Duration::ZERO;
        }
        let pause = Self::FIRST
            .saturating_mul(1u32 << self.failures.min(10))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    /// Out of file descriptors (process or system), buffers or memory.
    fn lasting(error: &std::io::Error) -> bool {
        // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 (Linux).
        matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12))
    }

    fn succeeded(&mut self) {
        self.failures = 0;
    }
}

async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut backoff = AcceptBackoff::new();
    loop {
        let mut pause = None;
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    let _ = stream.set_nodelay(true);
                    let send_buffer = gateway.limits.socket_send_buffer_bytes;
                    if send_buffer > 0
                        && let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer)
                    {
                        tracing::warn!(%error, "could not set the socket send buffer");
                    }
                    connections.spawn(serve_connection(gateway.clone(), stream, peer));
                }
                Err(error) => {
                    // Out of file descriptors and the like: keep serving the others, but
                    // do not spin on a failure that lasts.
                    pause = Some(backoff.failed(&error)).filter(|pause| !pause.is_zero());
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        if let Some(pause) = pause {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
    }
    drop(listener);
    // Every connection got the shutdown frame; let them finish closing.
    while connections.join_next().await.is_some() {}
}

impl RunningServer {
    /// Graceful stop: refuse new connections, tell clients to reconnect, let entities
    /// snapshot, flush the store — bounded by the configured grace period.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        // Unready first, so that no new client is sent here, then (after the delay a
        // load balancer needs to notice) tell the connected ones.
        self.ready.store(false, Ordering::Release);
        if !self.unready_delay.is_zero() {
            tokio::time::sleep(self.unready_delay).await;
        }
        let _ = self.shutdown.send(true);
        let tasks = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.grace / 2, tasks).await.is_err() {
            tracing::warn!("connections did not close within half the grace period");
            self.tasks.abort_all();
        }
        if tokio::time::timeout(self.grace / 2, self.hub.shutdown())
            .await
            .is_err()
        {
            tracing::error!(
                "entities did not stop within the grace period; the journal has every acknowledged change"
            );
        }
        let _ = self.admin_shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.admin).await;
        tracing::info!("stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read_from_proc_limits() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(20_000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), None);
        assert_eq!(parse_open_files_limit(""), None);
    }

    #[test]
    fn accept_failures_back_off_up_to_a_ceiling_and_reset() {
        let mut backoff = AcceptBackoff::new();
        let error = std::io::Error::from_raw_os_error(24); // EMFILE
        let pauses: Vec<Duration> = (0..12).map(|_| backoff.failed(&error)).collect();
        assert!(
            pauses.windows(2).all(|pair| pair[0] <= pair[1]),
            "{pauses:?}"
        );
        assert_eq!(pauses[0], AcceptBackoff::FIRST);
        assert_eq!(*pauses.last().expect("pauses"), AcceptBackoff::MAX);
        backoff.succeeded();
        assert_eq!(backoff.failed(&error), pauses[0]);
        // A connection reset before it was accepted does not pause the others.
        let aborted = std::io::Error::from_raw_os_error(103); // ECONNABORTED
        assert_eq!(backoff.failed(&aborted), Duration::ZERO);
    }
}
