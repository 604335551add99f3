//! Starting and stopping a whole server: store, hub, gateway listener, admin listener.

use crate::admin;
use crate::auth::Authenticator;
use crate::clock::{OsEntropy, SystemClock};
use crate::config::ServerConfig;
use crate::gateway::{Gateway, serve_connection};
use playtree_actors::{Clock, Entropy, Hub, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
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
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    pub ws_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub hub: Hub,
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    grace: Duration,
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
    let store_dir = config.store_dir();
    let store =
        Store::open(&store_dir, &config.game.store).map_err(|source| StartError::Store {
            path: store_dir.display().to_string(),
            source,
        })?;
    let questions = Arc::new(crate::questions::load(&config.game.quiz.questions_dir)?);
    let hub = Hub::start(
        config.game.clone(),
        store,
        environment.clock,
        environment.entropy,
        questions,
    )
    .await?;

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
        next_connection: AtomicU64::new(0),
        shutdown: shutdown_rx.clone(),
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(
        ws_listener,
        gateway.clone(),
        shutdown_rx.clone(),
    ));
    let mut admin_shutdown = shutdown_rx.clone();
    let router = admin::router(hub.clone());
    tasks.spawn(async move {
        let served = axum::serve(admin_listener, router)
            .with_graceful_shutdown(async move {
                let _ = admin_shutdown.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "admin listener failed");
        }
    });
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
        shutdown,
        tasks,
        grace: Duration::from_millis(config.server.shutdown_grace_ms),
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

async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
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
                    // Out of file descriptors and the like: keep serving the others.
                    tracing::warn!(%error, "accept failed");
                    metrics::counter!("playtree_accept_errors_total").increment(1);
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
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
        tracing::info!("stopped");
    }
}
