//! Runs Sigil: binds the gRPC and HTTP listeners (first, so that a busy port
//! fails the start before anything is created), opens the store (sled, or
//! PostgreSQL when a database URL is set), builds the domain core and serves
//! within the listeners' limits until told to stop; then gives calls in
//! flight a bounded grace period and makes every write durable before
//! returning. With a shared store it also follows the other instances.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sigil_proto::pb::{
    admin_service_server::AdminServiceServer, identity_service_server::IdentityServiceServer,
    revocation_service_server::RevocationServiceServer,
};
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
    task::JoinHandle,
};
use tonic::transport::ServerTlsConfig;

use crate::{
    config::{Config, ListenAddr, PublicUrl},
    domain::{
        Identity, Secret,
        error::Report,
        port::{Changes, Store, StoreError},
        user::UserRecord,
    },
    grpc::{
        admin::{AdminApi, AdminGuard},
        ext_authz::{ExtAuthzApi, MAX_CHECK_REQUEST_BYTES},
        identity::IdentityApi,
        revocation::RevocationApi,
    },
    listener::{Admission, AdmittingAcceptor, ConnectionLimits},
    store::{postgres::PgStore, sled_store::SledStore},
};
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::HealthReporter,
};

/// The health-check service name whose status says whether the store can
/// commit writes (`grpc.health.v1.Health/Check` with this `service`).
pub(crate) const STORE_HEALTH_SERVICE: &str = "sigil.store";

/// How often the store is probed for [`STORE_HEALTH_SERVICE`].
const STORE_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Largest gRPC message accepted. Every Sigil request is a few
/// hundred bytes; the cap keeps hostile payloads from costing memory.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest gRPC message sent. Answers are Sigil's own, not a caller's bytes,
/// but a listing page is up to 1,000 rows of up to ~1 KiB each: a cap at the
/// request size would fail every full page (`ListTokens` with a few hundred
/// refreshes behind it).
pub(crate) const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Largest header block a client may send (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE):
/// a bearer token and a few metadata entries need a few KiB.
const MAX_HEADER_LIST_BYTES: u32 = 32 * 1024;

/// Time a connection past `max_connection_age` has to finish its calls
/// before it is closed (gRPC's MAX_CONNECTION_AGE_GRACE). The HTTP listener
/// sends no GOAWAY: its connections are simply closed at age + grace.
const CONNECTION_AGE_GRACE: Duration = Duration::from_secs(60);

/// Name of the lock file that keeps a second `sigil-server` off a data directory.
const DATA_DIR_LOCK: &str = "sigil-server.lock";

/// Why the server could not start or stop cleanly. Each message says its
/// own part and keeps the error behind it as its `source`; `main` prints
/// the chain (`cannot listen on …: Address already in use`), each cause once.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be prepared.
    #[error("data directory {path}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        reason: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {path} is in use by another sigil-server{holder}: stop it, or give this one its own --data-dir"
    )]
    DataDirInUse {
        /// The directory.
        path: String,
        /// ` (pid N)` when the holder wrote its process id.
        holder: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address as configured.
        addr: String,
        /// Why.
        #[source]
        reason: std::io::Error,
    },
    /// The PostgreSQL server's CA certificate could not be read.
    #[error("cannot read the database CA {path}")]
    DatabaseCa {
        /// The file as configured.
        path: String,
        /// Why.
        #[source]
        reason: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The domain core failed to start.
    #[error(transparent)]
    Domain(#[from] crate::domain::DomainError),
    /// Serving failed.
    #[error("serving failed")]
    Serve(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The reflection service could not be built.
    #[error("serving failed: reflection")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// A TLS file could not be read.
    #[error("TLS: cannot read {path}")]
    TlsFile {
        /// The file as configured.
        path: String,
        /// Why.
        #[source]
        reason: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("TLS")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The TLS certificate or key could not be used on the HTTP listener.
    #[error("TLS: HTTP listener")]
    HttpTls(#[source] std::io::Error),
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
    grace: Duration,
    // Held (open and flock'ed) until the store is closed.
    _data_dir_lock: Option<std::fs::File>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight calls finish for at most the
    /// configured grace period (then abandons them), and makes every write
    /// durable (the store is closed in either case).
    pub async fn shutdown(self) -> Result<(), ServerError> {
        // Open streams end first, or the gRPC server would wait on them.
        self.identity.begin_shutdown();
        let _ = self.stop.send(true);
        let mut tasks = self.tasks;
        let mut served = Ok(());
        let finished = tokio::time::timeout(self.grace, async {
            for task in tasks.iter_mut() {
                let result = task.await.map_err(|e| ServerError::Serve(e.into())).and_then(|r| r);
                if served.is_ok() {
                    served = result;
                }
            }
        })
        .await;
        if finished.is_err() {
            let waiting = tasks.iter().filter(|task| !task.is_finished()).count();
            tracing::warn!(grace = %humantime::format_duration(self.grace), waiting, "grace period over: abandoning calls still in flight");
            for task in &tasks {
                task.abort();
            }
        }
        // Acknowledged writes are already durable (acknowledged only after
        // their group commit); closing flushes whatever else is pending.
        let closed = self.store.close().await;
        served?;
        closed?;
        Ok(())
    }
}

/// Starts Sigil with `config`. `admin_password` is used if the store is
/// empty and the bootstrap admin is created.
pub async fn start(config: &Config, admin_password: Option<Secret<String>>) -> Result<RunningServer, ServerError> {
    let tls = TlsPem::read(config)?;
    // Bound before anything is created: a busy port must not leave a store
    // with a bootstrap admin whose generated password nobody saw.
    let grpc_listener = bind(&config.listen).await?;
    let http_listener = bind(&config.http_listen).await?;
    let grpc_addr = local_addr(&grpc_listener, &config.listen)?;
    let http_addr = local_addr(&http_listener, &config.http_listen)?;
    if tls.is_none() && !grpc_addr.ip().is_loopback() {
        tracing::warn!(listen = %grpc_addr, "serving gRPC without TLS on a non-loopback address: tokens and passwords cross the network in clear text");
    }
    let public_url = config.public_url.clone().unwrap_or_else(|| PublicUrl::from_bound(http_addr));
    if config.public_url.is_none() && !http_addr.ip().is_loopback() {
        tracing::warn!(%public_url, "public_url is not set: the discovery document names this default, which remote verifiers may not reach; set public_url to the https URL they use");
    } else if !public_url.is_safe() {
        tracing::warn!(%public_url, "public_url is not https: verifiers fetch the signing keys in clear text");
    }
    let (grpc_limits, http_limits) = connection_limits(config);

    let mut data_dir_lock = None;
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => {
            let ca = match &config.database_ca {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|reason| ServerError::DatabaseCa { path: path.display().to_string(), reason })?,
                ),
                None => None,
            };
            let store = PgStore::connect(url.expose(), ca.as_deref()).await?;
            tracing::info!(database = ?url, "store: PostgreSQL, shared with other instances");
            store
        }
        None => {
            prepare_data_dir(&config.data_dir)?;
            data_dir_lock = Some(lock_data_dir(&config.data_dir)?);
            SledStore::open_with(&config.data_dir, config.on_data_loss())?
        }
    };
    let identity = Arc::new(Identity::open(store.clone(), config.identity_settings()).await?);
    let bootstrap_admin = identity.bootstrap_admin(admin_password).await?;
    identity.migrate_usernames().await?;

    let (stop, stopped) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    // The store was just opened, so it answers; the probe reports changes.
    health.set_service_status(STORE_HEALTH_SERVICE, ServingStatus::Serving).await;
    let mut tasks = vec![
        tokio::spawn(serve_grpc(
            identity.clone(),
            grpc_listener,
            GrpcOptions {
                tls: tls.as_ref().map(|tls| tls.grpc(config.handshake_timeout)),
                limits: grpc_limits,
                config: config.clone(),
            },
            (health.clone(), health_service),
            stopped.clone(),
        )),
        tokio::spawn(serve_http(
            identity.clone(),
            http_listener,
            HttpOptions {
                tls: tls.as_ref().map(TlsPem::http),
                limits: http_limits,
                public_url,
                config: config.clone(),
            },
            stopped.clone(),
        )),
        tokio::spawn(maintain(identity.clone(), config.sweep_interval, stopped.clone())),
        tokio::spawn(report_store_health(store.clone(), health, stopped.clone())),
    ];
    if let Some(changes) = store.changes() {
        tasks.push(tokio::spawn(follow_peers(identity.clone(), changes, config.sync_interval, stopped)));
    }
    tracing::info!(%grpc_addr, %http_addr, "sigil-server listening");
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        identity,
        bootstrap_admin,
        stop,
        tasks,
        store,
        grace: config.shutdown_grace,
        _data_dir_lock: data_dir_lock,
    })
}

/// Resolves `addr` (a host name is looked up now) and binds the first
/// address it resolves to that can be bound.
async fn bind(addr: &ListenAddr) -> Result<TcpListener, ServerError> {
    let error = |reason| ServerError::Bind { addr: addr.to_string(), reason };
    let candidates = addr.resolve().await.map_err(error)?;
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the host name resolves to no address");
    for candidate in candidates {
        match TcpListener::bind(candidate).await {
            Ok(listener) => return Ok(listener),
            Err(e) => last = e,
        }
    }
    Err(error(last))
}

/// Both listeners' connection limits, the caps fitted under the process's
/// file-descriptor limit so that neither listener can starve the other.
fn connection_limits(config: &Config) -> (ConnectionLimits, ConnectionLimits) {
    let (mut grpc, mut http) = (config.max_connections, config.http_max_connections);
    #[cfg(unix)]
    if let Some(fd_limit) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        let fitted = crate::listener::fit_under_fd_limit(grpc, http, fd_limit);
        if fitted != (grpc, http) {
            tracing::warn!(
                fd_limit,
                max_connections = fitted.0,
                http_max_connections = fitted.1,
                "connection caps lowered to fit the file-descriptor limit (raise LimitNOFILE / ulimit -n)"
            );
        }
        (grpc, http) = fitted;
    }
    let limits = |max_connections| ConnectionLimits {
        max_connections,
        handshake_timeout: config.handshake_timeout,
        idle_timeout: config.idle_timeout,
        max_lifetime: config.max_connection_age + CONNECTION_AGE_GRACE,
    };
    (limits(grpc), limits(http))
}

/// How the gRPC listener serves.
struct GrpcOptions {
    tls: Option<ServerTlsConfig>,
    limits: ConnectionLimits,
    config: Config,
}

/// How the HTTP listener serves.
struct HttpOptions {
    tls: Option<HttpTls>,
    limits: ConnectionLimits,
    public_url: PublicUrl,
    config: Config,
}

async fn serve_grpc(
    identity: Arc<Identity>,
    listener: TcpListener,
    options: GrpcOptions,
    (health, health_service): (HealthReporter, HealthServer<impl Health>),
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let identity_service = IdentityServiceServer::new(IdentityApi::new(identity.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let ext_authz_service = AuthorizationServer::new(ExtAuthzApi::new(
        identity.clone(),
        std::sync::Arc::new(options.config.gateway_settings()),
    ))
    .max_decoding_message_size(MAX_CHECK_REQUEST_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin_service = tonic::service::interceptor::InterceptedService::new(
        AdminServiceServer::new(AdminApi::new(identity.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES),
        AdminGuard::new(identity.clone()),
    );
    let revocation_service = RevocationServiceServer::new(RevocationApi::new(identity))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    health.set_serving::<IdentityServiceServer<IdentityApi>>().await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;
    health.set_serving::<AuthorizationServer<ExtAuthzApi>>().await;
    health.set_serving::<RevocationServiceServer<RevocationApi>>().await;
    health.set_service_status("", ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sigil_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServerError::Reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sigil_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ServerError::Reflection)?;

    let GrpcOptions { tls, limits, config } = options;
    let incoming = Admission::new("grpc", limits, stop.clone()).incoming(listener);
    let mut builder = tonic::transport::Server::builder()
        // tonic sets no stream limit of its own (hyper's default is
        // overridden): without this one, 10,000 pending streams fit on one
        // connection.
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        // Bounds the time until a call's answer starts — a unary call whose
        // body never comes included — not the life of a stream once it
        // answers (tonic applies it to the response future only), so
        // WatchEvents is not cut by it.
        .timeout(config.request_timeout)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        // GOAWAY at this age; the hard close a grace period later is the
        // connection's own lifetime (`ConnectionLimits::max_lifetime`):
        // tonic 0.14 with a grace set skips the GOAWAY and only cuts.
        .max_connection_age(config.max_connection_age);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| ServerError::Tls(e.into()))?;
    }
    builder
        .trace_fn(crate::telemetry::rpc_span)
        .layer(crate::telemetry::RpcMetricsLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(identity_service)
        .add_service(admin_service)
        .add_service(ext_authz_service)
        .add_service(revocation_service)
        .serve_with_incoming_shutdown(incoming, stopped(stop))
        .await
        .map_err(|e| ServerError::Serve(e.into()))
}

/// PEM certificate chain and key for the HTTP listener, when TLS is on.
struct HttpTls {
    cert: Vec<u8>,
    key: Vec<u8>,
}

async fn serve_http(
    identity: Arc<Identity>,
    listener: TcpListener,
    options: HttpOptions,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let HttpOptions { tls, limits, public_url, config } = options;
    let request_timeout = config.request_timeout;
    let router = crate::http::router(identity, &public_url, config.gateway_settings()).layer(
        axum::middleware::from_fn(move |request: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(request_timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) => axum::response::IntoResponse::into_response((
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "request timed out\n",
                )),
            }
        }),
    );
    let admission = Admission::new("http", limits, stop.clone());
    let listener = listener.into_std().map_err(|e| ServerError::Serve(e.into()))?;
    let handle = axum_server::Handle::new();
    let closer = handle.clone();
    let grace = config.shutdown_grace;
    tokio::spawn(async move {
        stopped(stop).await;
        closer.graceful_shutdown(Some(grace));
    });
    let on_accept_error = {
        let admission = admission.clone();
        move |_: Option<&SocketAddr>, error: &std::io::Error| {
            // Refusals at the cap were logged by the admission already.
            if error.kind() != std::io::ErrorKind::Other {
                admission.accept_failed(error);
            }
        }
    };
    let serve = |result: std::io::Result<()>| result.map_err(|e| ServerError::Serve(e.into()));
    match tls {
        None => {
            let mut server = axum_server::from_tcp(listener)
                .map_err(|e| ServerError::Serve(e.into()))?
                .acceptor(AdmittingAcceptor(admission));
            configure_http(server.http_builder(), &config);
            serve(
                server
                    .first_request_timeout(config.handshake_timeout)
                    .accept_error_handler(on_accept_error)
                    .handle(handle)
                    .serve(router.into_make_service())
                    .await,
            )
        }
        Some(tls) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem(tls.cert, tls.key)
                .await
                .map_err(ServerError::HttpTls)?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                .handshake_timeout(config.handshake_timeout)
                .acceptor(AdmittingAcceptor(admission));
            let mut server =
                axum_server::from_tcp(listener).map_err(|e| ServerError::Serve(e.into()))?.acceptor(acceptor);
            configure_http(server.http_builder(), &config);
            serve(
                server
                    .first_request_timeout(config.handshake_timeout)
                    .accept_error_handler(on_accept_error)
                    .handle(handle)
                    .serve(router.into_make_service())
                    .await,
            )
        }
    }
}

/// The HTTP listener's protocol limits: the same stream cap, header limit
/// and keepalive as gRPC, and HTTP/1 headers bounded in time (slowloris).
fn configure_http(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    config: &Config,
) {
    // hyper's default read buffer (about 400 KiB) would let each slow
    // client pin that much; every request here fits in a few KiB.
    builder.http1().header_read_timeout(config.handshake_timeout).max_buf_size(MAX_HEADER_LIST_BYTES as usize);
    builder
        .http2()
        .max_concurrent_streams(config.max_concurrent_streams)
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout);
}

/// Periodic upkeep (expiry, purges, key retirement, last-seen times); see
/// `domain::maintenance`. A failed sweep is logged and retried next time.
async fn maintain(identity: Arc<Identity>, every: Duration, stop: watch::Receiver<bool>) -> Result<(), ServerError> {
    let mut rounds = Rounds::new(every, stop);
    while rounds.next(None).await.is_some() {
        match identity.sweep().await {
            Ok(report) => tracing::debug!(?report, "maintenance sweep"),
            Err(e) => tracing::warn!(error = %Report(&e), "maintenance sweep failed"),
        }
    }
    // Last-seen times noted since the last sweep are kept.
    if let Err(e) = identity.flush_last_seen().await {
        tracing::warn!(error = %Report(&e), "could not save last-seen times");
    }
    Ok(())
}

/// The exit status of a server whose store failed in a way it cannot
/// recover from in place (see [`report_store_health`]): `EX_TEMPFAIL`, for
/// the supervisor (`Restart=on-failure`) to start a fresh process.
pub(crate) const EXIT_STORE_NEEDS_RESTART: i32 = 75;

/// Keeps the [`STORE_HEALTH_SERVICE`] health status in step with whether
/// the store can commit writes (the store's probe is a real write and
/// flush): NOT_SERVING while it cannot, when logins, refreshes, revocations
/// and admin writes answer UNAVAILABLE (`Validate` keeps answering from
/// memory).
///
/// When the store cannot recover in this process although the cause is
/// gone (sled after a full disk was freed: [`Store::needs_restart`]), the
/// process exits with [`EXIT_STORE_NEEDS_RESTART`] at once, without the
/// graceful path: that path would only try writes that cannot succeed,
/// and every write acknowledged so far is already durable (nothing is
/// acknowledged before its flush). The new process reads the store from
/// disk, so nothing held only in the failed engine's memory survives.
async fn report_store_health(
    store: Arc<dyn Store>,
    health: HealthReporter,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut rounds = Rounds::new(STORE_PROBE_INTERVAL, stop);
    let mut serving = true;
    while rounds.next(None).await.is_some() {
        let probe = tokio::time::timeout(STORE_PROBE_INTERVAL * 2, store.ping()).await;
        let ok = matches!(probe, Ok(Ok(())));
        if !ok && store.needs_restart() {
            tracing::error!(
                exit_status = EXIT_STORE_NEEDS_RESTART,
                "the store failed to write earlier and its engine cannot write again in this process, although the disk takes writes again: exiting for the supervisor to restart sigil-server"
            );
            std::process::exit(EXIT_STORE_NEEDS_RESTART);
        }
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
    Ok(())
}

/// With a shared store: catches up on other instances' revocations, keys
/// and events whenever the store signals a change, and every `every` in
/// case a signal was lost (see `domain::cluster`).
async fn follow_peers(
    identity: Arc<Identity>,
    changes: Arc<Changes>,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let mut rounds = Rounds::new(every, stop);
    let mut failing = false;
    while let Some(round) = rounds.next(Some(&changes.signal)).await {
        // The timer also rereads the signing keys: a lost notification
        // delays a key change by one interval at most.
        let keys = match round {
            Round::Signalled => changes.take_keys(),
            Round::Tick => true,
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
                tracing::warn!(error = %Report(&e), "cannot catch up with other instances; retrying");
                failing = true;
            }
            Err(_) => {}
        }
    }
    Ok(())
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
            std::fs::read(path).map_err(|reason| ServerError::TlsFile { path: path.display().to_string(), reason })
        };
        let client_ca = config.tls_client_ca.as_deref().map(read).transpose()?;
        Ok(Some(Self { cert: read(cert)?, key: read(key)?, client_ca }))
    }

    /// TLS for the gRPC listener; with a client CA, clients must present a
    /// certificate signed by it (mTLS).
    fn grpc(&self, handshake_timeout: Duration) -> ServerTlsConfig {
        let tls = ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert, &self.key))
            .timeout(handshake_timeout);
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

/// The rounds of a periodic background task, until the server stops: one
/// on every tick of its interval (the first at once; a tick missed while the
/// previous round ran long is not made up in a burst), and for a task that
/// follows a signal, one per signal as well. A stop is seen between rounds,
/// so a round in progress completes.
struct Rounds {
    tick: tokio::time::Interval,
    stop: watch::Receiver<bool>,
}

/// Why a round of [`Rounds`] runs.
enum Round {
    /// The interval elapsed.
    Tick,
    /// The signal was raised.
    Signalled,
}

impl Rounds {
    fn new(every: Duration, stop: watch::Receiver<bool>) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { tick, stop }
    }

    /// Waits for the next round, woken also by `signal` if given; `None`
    /// once the server stops (or its stop sender is gone).
    async fn next(&mut self, signal: Option<&Notify>) -> Option<Round> {
        let signalled = async {
            match signal {
                Some(signal) => signal.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = signalled => Some(Round::Signalled),
            _ = self.tick.tick() => Some(Round::Tick),
            _ = self.stop.changed() => None,
        }
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|stop| *stop).await;
}

fn local_addr(listener: &TcpListener, wanted: &ListenAddr) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|reason| ServerError::Bind { addr: wanted.to_string(), reason })
}

/// Takes the data directory for this process (an exclusive `flock` on a
/// lock file in it, held until exit), so a second server on the same
/// directory is told who holds it rather than sled's raw lock error.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = dir.join(DATA_DIR_LOCK);
    let error = |reason| ServerError::DataDir { path: dir.display().to_string(), reason };
    let mut file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(error)?;
    #[cfg(unix)]
    if let Err(errno) = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        if errno != rustix::io::Errno::WOULDBLOCK {
            return Err(error(errno.into()));
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let holder = match pid.trim().parse::<u32>() {
            Ok(pid) => format!(" (pid {pid})"),
            Err(_) => String::new(),
        };
        return Err(ServerError::DataDirInUse { path: dir.display().to_string(), holder });
    }
    // For the message above, in the next server that tries.
    file.set_len(0).and_then(|()| file.rewind()).map_err(error)?;
    write!(file, "{}", std::process::id()).and_then(|()| file.flush()).map_err(error)?;
    Ok(file)
}

/// Creates the data directory readable by the service's user only: it holds
/// the private signing keys and the password hashes.
fn prepare_data_dir(dir: &std::path::Path) -> Result<(), ServerError> {
    let error = |reason| ServerError::DataDir { path: dir.display().to_string(), reason };
    std::fs::create_dir_all(dir).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(error)?;
    }
    Ok(())
}
