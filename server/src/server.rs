//! Runs Sigil: opens the store (sled, or PostgreSQL when a database URL is
//! set), builds the domain core, binds the gRPC and HTTP listeners and serves
//! until told to stop, then makes every in-flight write durable before
//! returning. With a shared store it also follows the other instances.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sigil_proto::pb::{admin_service_server::AdminServiceServer, identity_service_server::IdentityServiceServer};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::transport::{ServerTlsConfig, server::TcpIncoming};

use crate::{
    config::Config,
    domain::{Identity, Secret, user::UserRecord},
    grpc::{
        admin::{AdminApi, AdminGuard},
        identity::IdentityApi,
    },
    store::{Store, postgres::PgStore, sled_store::SledStore},
};
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
};

/// The health-check service name whose status says whether the store can
/// commit writes (`grpc.health.v1.Health/Check` with this `service`).
pub const STORE_HEALTH_SERVICE: &str = "sigil.store";

/// How often the store is probed for [`STORE_HEALTH_SERVICE`].
const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Largest gRPC message accepted or sent. Every Sigil request is a few
/// hundred bytes; the cap keeps hostile payloads from costing memory.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The domain core failed to start.
    #[error(transparent)]
    Domain(#[from] crate::domain::DomainError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(String),
    /// The TLS files could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A running server.
pub struct RunningServer {
    /// Where gRPC is served.
    pub grpc_addr: SocketAddr,
    /// Where HTTP is served.
    pub http_addr: SocketAddr,
    /// The domain core (for embedding and tests).
    pub identity: Arc<Identity>,
    /// The admin created on this start, with its password if it was generated.
    pub bootstrap_admin: Option<(UserRecord, Option<Secret<String>>)>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), ServerError>>>,
    store: Arc<dyn Store>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight calls finish, makes writes durable.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        // Open streams end first, or the gRPC server would wait on them.
        self.identity.begin_shutdown();
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.await.map_err(|e| ServerError::Serve(e.to_string()))??;
        }
        self.store.close().await?;
        Ok(())
    }
}

/// Starts Sigil with `config`. `admin_password` is used if the store is
/// empty and the bootstrap admin is created.
pub async fn start(config: &Config, admin_password: Option<Secret<String>>) -> Result<RunningServer, ServerError> {
    let tls = TlsPem::read(config)?;
    if tls.is_none() && !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "serving gRPC without TLS on a non-loopback address: tokens and passwords cross the network in clear text");
    }
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => {
            let ca = match &config.database_ca {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    crate::store::StoreError::Backend(format!("cannot read the database CA {}: {e}", path.display()))
                })?),
                None => None,
            };
            let store = PgStore::connect(url.expose(), ca.as_deref()).await?;
            tracing::info!(database = ?url, "store: PostgreSQL, shared with other instances");
            store
        }
        None => {
            prepare_data_dir(&config.data_dir)?;
            SledStore::open(&config.data_dir)?
        }
    };
    let identity = Arc::new(Identity::open(store.clone(), config.identity_settings()).await?);
    let bootstrap_admin = identity.bootstrap_admin(admin_password).await?;
    identity.migrate_usernames().await?;

    let grpc_listener =
        TcpListener::bind(config.listen).await.map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.http_listen, source })?;
    let grpc_addr = local_addr(&grpc_listener, config.listen)?;
    let http_addr = local_addr(&http_listener, config.http_listen)?;

    let (stop, stopped) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    // The store was just opened, so it answers; the probe reports changes.
    health.set_service_status(STORE_HEALTH_SERVICE, ServingStatus::Serving).await;
    let mut tasks = vec![
        tokio::spawn(serve_grpc(
            identity.clone(),
            grpc_listener,
            tls.as_ref().map(TlsPem::grpc),
            (health.clone(), health_service),
            stopped.clone(),
        )),
        tokio::spawn(serve_http(identity.clone(), http_listener, tls.as_ref().map(TlsPem::http), stopped.clone())),
        tokio::spawn(maintain(identity.clone(), config.sweep_interval, stopped.clone())),
        tokio::spawn(report_store_health(store.clone(), health, stopped.clone())),
    ];
    if let Some(changes) = store.changes() {
        tasks.push(tokio::spawn(follow_peers(identity.clone(), changes, config.sync_interval, stopped)));
    }
    tracing::info!(%grpc_addr, %http_addr, "sigil-server listening");
    Ok(RunningServer { grpc_addr, http_addr, identity, bootstrap_admin, stop, tasks, store })
}

async fn serve_grpc(
    identity: Arc<Identity>,
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    (health, health_service): (HealthReporter, HealthServer<impl Health>),
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let identity_service = IdentityServiceServer::new(IdentityApi::new(identity.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin_service = tonic::service::interceptor::InterceptedService::new(
        AdminServiceServer::new(AdminApi::new(identity.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        AdminGuard::new(identity),
    );
    health.set_serving::<IdentityServiceServer<IdentityApi>>().await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sigil_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Serve(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sigil_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServerError::Serve(format!("reflection: {e}")))?;

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    builder
        .trace_fn(crate::telemetry::rpc_span)
        .layer(crate::telemetry::RpcMetricsLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(identity_service)
        .add_service(admin_service)
        .serve_with_incoming_shutdown(incoming, stopped(stop))
        .await
        .map_err(|e| ServerError::Serve(e.to_string()))
}

/// PEM certificate chain and key for the HTTP listener, when TLS is on.
struct HttpTls {
    cert: Vec<u8>,
    key: Vec<u8>,
}

async fn serve_http(
    identity: Arc<Identity>,
    listener: TcpListener,
    tls: Option<HttpTls>,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let router = crate::http::router(identity);
    let Some(tls) = tls else {
        return axum::serve(listener, router)
            .with_graceful_shutdown(stopped(stop))
            .await
            .map_err(|e| ServerError::Serve(e.to_string()));
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(tls.cert, tls.key)
        .await
        .map_err(|e| ServerError::Tls(format!("HTTP listener: {e}")))?;
    let listener = listener.into_std().map_err(|e| ServerError::Serve(e.to_string()))?;
    let handle = axum_server::Handle::new();
    let closer = handle.clone();
    tokio::spawn(async move {
        stopped(stop).await;
        closer.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    axum_server::tls_rustls::from_tcp_rustls(listener, config)
        .map_err(|e| ServerError::Serve(e.to_string()))?
        .handle(handle)
        .serve(router.into_make_service())
        .await
        .map_err(|e| ServerError::Serve(e.to_string()))
}

/// Periodic upkeep (expiry, purges, key retirement, last-seen times); see
/// `domain::maintenance`. A failed sweep is logged and retried next time.
async fn maintain(
    identity: Arc<Identity>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut tick = periodic(every);
    loop {
        tokio::select! {
            _ = tick.tick() => match identity.sweep().await {
                Ok(report) => tracing::debug!(?report, "maintenance sweep"),
                Err(e) => tracing::warn!(error = %e, "maintenance sweep failed"),
            },
            _ = stop.changed() => {
                // Last-seen times noted since the last sweep are kept.
                if let Err(e) = identity.flush_last_seen().await {
                    tracing::warn!(error = %e, "could not save last-seen times");
                }
                return Ok(());
            }
        }
    }
}

/// Keeps the [`STORE_HEALTH_SERVICE`] health status in step with whether
/// the store can commit writes: NOT_SERVING while it cannot, when logins,
/// refreshes, revocations and admin writes answer UNAVAILABLE (`Validate`
/// keeps answering from memory).
async fn report_store_health(
    store: Arc<dyn Store>,
    health: HealthReporter,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut tick = periodic(STORE_PROBE_INTERVAL);
    let mut serving = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let probe = tokio::time::timeout(STORE_PROBE_INTERVAL * 2, store.ping()).await;
        let ok = matches!(probe, Ok(Ok(())));
        if serving != ok {
            match (&probe, ok) {
                (_, true) => tracing::info!("store reachable again: writes are accepted"),
                (Ok(Err(e)), false) => tracing::error!(error = %e, "store unreachable: writes are refused"),
                (Err(_), false) => tracing::error!("store does not answer: writes are refused"),
                _ => {}
            }
            let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
            health.set_service_status(STORE_HEALTH_SERVICE, status).await;
            serving = ok;
        }
    }
}

/// With a shared store: catches up on other instances' revocations, keys
/// and events whenever the store signals a change, and every `every` in
/// case a signal was lost (see `domain::cluster`).
async fn follow_peers(
    identity: Arc<Identity>,
    changes: Arc<crate::store::Changes>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut tick = periodic(every);
    let mut failing = false;
    loop {
        // The timer also rereads the signing keys: a lost notification
        // delays a key change by one interval at most.
        let keys = tokio::select! {
            _ = changes.signal.notified() => changes.take_keys(),
            _ = tick.tick() => true,
            _ = stop.changed() => return Ok(()),
        };
        match identity.catch_up(keys).await {
            Ok(report) => {
                if failing {
                    tracing::info!("caught up with other instances again");
                    failing = false;
                }
                if report.revocations > 0 || report.keys_changed {
                    tracing::debug!(?report, "caught up with other instances");
                }
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot catch up with other instances; retrying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// The TLS material of both listeners, read once from the configured PEM
/// files at start.
struct TlsPem {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl TlsPem {
    fn read(config: &Config) -> Result<Option<Self>, ServerError> {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Ok(None);
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", path.display())))
        };
        let client_ca = config.tls_client_ca.as_deref().map(read).transpose()?;
        Ok(Some(Self { cert: read(cert)?, key: read(key)?, client_ca }))
    }

    /// TLS for the gRPC listener; with a client CA, clients must present a
    /// certificate signed by it (mTLS).
    fn grpc(&self) -> ServerTlsConfig {
        let tls = ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(&self.cert, &self.key));
        match &self.client_ca {
            Some(ca) => tls.client_ca_root(tonic::transport::Certificate::from_pem(ca)),
            None => tls,
        }
    }

    /// The same certificate and key serve the HTTP listener (client
    /// certificates are not asked for there: it serves only public material).
    fn http(&self) -> HttpTls {
        HttpTls { cert: self.cert.clone(), key: self.key.clone() }
    }
}

/// A timer for periodic upkeep: a tick missed while the previous round ran
/// long is not made up in a burst.
fn periodic(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

fn local_addr(listener: &TcpListener, wanted: SocketAddr) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind { addr: wanted, source })
}

/// Creates the data directory readable by the service's user only: it holds
/// the private signing keys and the password hashes.
fn prepare_data_dir(dir: &std::path::Path) -> Result<(), ServerError> {
    let error = |source| ServerError::DataDir { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(error)?;
    }
    Ok(())
}
