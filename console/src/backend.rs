//! The background gRPC worker: logs in, loads the lists, follows
//! `WatchEvents` (reconnecting with backoff and resuming from the last
//! sequence seen, after a backfill of the history the server keeps),
//! fetches the rows events announce (coalesced, see [`crate::refetch`]),
//! runs the operator's commands and keeps the access token fresh. When the
//! console's own session ends (revoked elsewhere, or expired) it says so
//! and waits for the operator to log in again; on the way out it revokes
//! its own session ([`AdminConnection::logout`]). It talks to the UI only through channels carrying
//! sequence seen), fetches the rows events announce (coalesced, see
//! [`crate::refetch`]), runs the operator's commands, samples `GetStats`
//! every second while the Dashboard is open, and keeps the access token
//! fresh. It talks to the UI only through channels carrying
//! [`crate::messages`].

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use futures::StreamExt as _;

use sigil_proto::pb::{
    self, admin_service_client::AdminServiceClient, identity_service_client::IdentityServiceClient,
    revoke_request::Target,
};
use tokio::sync::{mpsc, watch};
use tonic::{
    Code, Request, Status,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

pub use crate::refetch::REFETCH_INTERVAL;
use crate::{
    format::count,
    messages::{Command, ConnectionState, List, Loading, Update},
    refetch::{Fetch, Pages, StaleRows},
};

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No connection.
    #[error("cannot reach {server}: {reason}")]
    Unreachable {
        /// The server.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server refused the login.
    #[error("login failed: {0}")]
    Refused(String),
}

/// The console's own tokens: the access token it sends and the refresh
/// token that renews both.
#[derive(Clone)]
struct TokenPair {
    access: String,
    refresh: String,
    expires_at: i64,
    /// The session the tokens belong to: the console's own.
    session_id: String,
}

/// The device name the console logs in with, so that its sessions can be
/// told apart from those of the people it watches.
pub const DEVICE_NAME: &str = "sigil-console";

/// The console's logged-in connection to Sigil's admin API.
#[derive(Clone)]
pub struct AdminConnection {
    channel: Channel,
    /// Where `channel` goes, for a connection of its own (see
    /// [`AdminConnection::revoker`]).
    endpoint: Endpoint,
    tokens: Arc<RwLock<TokenPair>>,
    username: String,
    /// Woken when the operator has logged in again after the console's own
    /// session ended; the event stream waits for it rather than retrying
    /// with a token that can only be refused.
    logged_in: Arc<tokio::sync::Notify>,
    /// Held while the tokens are renewed: two renewals at once would
    /// present the same refresh token, and the second is a reuse that ends
    /// the session.
    renewing: Arc<tokio::sync::Mutex<()>>,
}

/// Adds the current access token to every admin call.
#[derive(Clone)]
pub struct Bearer(Arc<RwLock<TokenPair>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let token = self.0.read().map(|t| t.access.clone()).unwrap_or_default();
        let value = format!("Bearer {token}").parse().map_err(|_| Status::internal("access token is not ASCII"))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// TLS material for an `https://` server, as PEM text.
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// CA certificate(s) the server's certificate must chain to.
    pub ca_cert: Option<Vec<u8>>,
    /// Client certificate and key, for servers that require mTLS.
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Connects and logs in; fails with one clear sentence.
pub async fn login(
    server: &str,
    username: &str,
    password: &str,
    tls: &TlsFiles,
) -> Result<AdminConnection, LoginError> {
    let unreachable = |reason: String| LoginError::Unreachable { server: server.to_string(), reason };
    let mut endpoint =
        Channel::from_shared(server.to_string()).map_err(|e| unreachable(format!("bad address: {e}")))?;
    if server.starts_with("https://") {
        let ca = tls.ca_cert.as_ref().ok_or_else(|| unreachable("https:// needs --ca-cert".into()))?;
        let mut config =
            tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        if let Some((cert, key)) = &tls.client_identity {
            config = config.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(config).map_err(|e| unreachable(format!("TLS: {}", root_cause(&e))))?;
    }
    let endpoint = endpoint.connect_timeout(Duration::from_secs(5)).tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| unreachable(root_cause(&e)))?;
    let tokens = authenticate(&channel, username, password).await.map_err(|e| match e {
        AuthError::Unavailable(reason) => unreachable(reason),
        AuthError::Refused(reason) => LoginError::Refused(reason),
    })?;
    Ok(AdminConnection {
        channel,
        endpoint,
        tokens: Arc::new(RwLock::new(tokens)),
        username: username.to_string(),
        logged_in: Arc::default(),
        renewing: Arc::default(),
    })
}

/// Why a login on an open channel failed.
enum AuthError {
    Unavailable(String),
    Refused(String),
}

/// Logs in as a console session and checks the admin role; a session
/// without the role is revoked at once rather than left behind.
async fn authenticate(channel: &Channel, username: &str, password: &str) -> Result<TokenPair, AuthError> {
    let mut identity = IdentityServiceClient::new(channel.clone());
    let request = pb::AuthenticateRequest {
        username: username.to_string(),
        password: password.to_string(),
        device_name: Some(DEVICE_NAME.into()),
        audience: None,
    };
    let login = identity.authenticate(request).await.map_err(|s| match s.code() {
        Code::Unavailable => AuthError::Unavailable(s.message().to_string()),
        _ => AuthError::Refused(s.message().to_string()),
    })?;
    let login = login.into_inner();
    let verdict = identity
        .validate(pb::ValidateRequest { token: login.access_token.clone(), audience: None })
        .await
        .map(|v| v.into_inner());
    let is_admin = match &verdict {
        Ok(v) => v.claims.as_ref().is_some_and(|c| c.roles.iter().any(|r| r == "admin")),
        Err(_) => false,
    };
    if !is_admin {
        let _ = revoke_own(&mut identity, &login.refresh_token).await;
        return Err(AuthError::Refused(match verdict {
            Ok(_) => format!("{username} does not have the admin role"),
            Err(status) => status.message().to_string(),
        }));
    }
    Ok(TokenPair {
        access: login.access_token,
        refresh: login.refresh_token,
        expires_at: login.access_token_expires_at.map(|t| t.seconds).unwrap_or(0),
        session_id: login.session_id,
    })
}

/// Revokes the session a refresh token belongs to (holding it is enough).
async fn revoke_own(identity: &mut IdentityServiceClient<Channel>, refresh_token: &str) -> Result<(), Status> {
    let request = pb::RevokeRequest {
        target: Some(Target::RefreshToken(refresh_token.to_string())),
        reason: "sigil-console quit".into(),
    };
    identity.revoke(request).await.map(drop)
}

/// The deepest error message: "connection refused", not a debug dump.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl AdminConnection {
    fn admin(&self) -> Admin {
        AdminServiceClient::with_interceptor(self.channel.clone(), Bearer(self.tokens.clone()))
    }

    /// Revokes the console's own session, so that no admin session is left
    /// behind when the console ends. A session that has already ended is
    /// fine: revoking is idempotent.
    pub async fn logout(&self) -> Result<(), String> {
        let refresh = self.tokens.read().map(|t| t.refresh.clone()).unwrap_or_default();
        let mut identity = IdentityServiceClient::new(self.channel.clone());
        match tokio::time::timeout(Duration::from_secs(3), revoke_own(&mut identity, &refresh)).await {
            Ok(Ok(())) => Ok(()),
            // A refresh token the server no longer knows: nothing is left.
            Ok(Err(status)) if status.code() == Code::Unauthenticated => Ok(()),
            Ok(Err(status)) => Err(format!("could not revoke the console's session: {}", status.message())),
            Err(_) => Err("could not revoke the console's session: the server did not answer in 3 s".into()),
        }
    }

    /// What revokes the console's own session from a panic hook
    /// ([`crate::panic_hook`]): on a thread, a runtime and a connection of
    /// its own, as the panicking runtime may be the broken part; given up
    /// once `within` has passed, answered or not.
    pub fn revoker(&self) -> impl Fn(Duration) + Send + Sync + 'static {
        let (endpoint, tokens) = (self.endpoint.clone(), self.tokens.clone());
        move |within| {
            // Not `read`: the panic may have struck while this thread held
            // the lock, and waiting for it would hang the exit.
            let Ok(refresh) = tokens.try_read().map(|t| t.refresh.clone()) else { return };
            let endpoint = endpoint.clone();
            let (done, finished) = std::sync::mpsc::channel();
            let revoking = std::thread::Builder::new().name("sigil-console-revoke".into()).spawn(move || {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    runtime.block_on(async {
                        let revoke = async {
                            let channel = endpoint.connect().await.ok()?;
                            revoke_own(&mut IdentityServiceClient::new(channel), &refresh).await.ok()
                        };
                        let _ = tokio::time::timeout(within, revoke).await;
                    });
                }
                let _ = done.send(());
            });
            if revoking.is_ok() {
                // The thread's own timeout ends it; this bounds the wait
                // even if its runtime cannot start.
                let _ = finished.recv_timeout(within + Duration::from_millis(100));
            }
        }
    }

    /// Logs in again after the console's own session ended, and wakes what
    /// waited for it.
    async fn relogin(&self, password: &str, updates: &mpsc::UnboundedSender<Update>) -> Result<String, String> {
        let tokens = authenticate(&self.channel, &self.username, password).await.map_err(|e| match e {
            AuthError::Unavailable(reason) | AuthError::Refused(reason) => reason,
        })?;
        let _ = updates.send(Update::OwnSession(tokens.session_id.clone()));
        if let Ok(mut current) = self.tokens.write() {
            *current = tokens;
        }
        let _ = updates.send(Update::Connection(ConnectionState::Connecting));
        self.logged_in.notify_waiters();
        Ok(format!("logged in again as {}", self.username))
    }

    /// Starts the worker tasks; they end when `commands` closes.
    pub fn spawn(self, updates: mpsc::UnboundedSender<Update>, commands: mpsc::UnboundedReceiver<Command>) {
        // The UI keeps the console's own session out of bulk revocations.
        let _ = updates.send(Update::OwnSession(self.session_id()));
        let stale = Arc::new(StaleRows::default());
        // The lists are loaded first of all, by the same task that keeps
        // them fresh.
        stale.reload_all();
        tokio::spawn(self.clone().keep_token_fresh(updates.clone()));
        tokio::spawn(self.clone().follow_events(stale.clone(), updates.clone()));
        tokio::spawn(self.clone().refetch(stale, updates.clone()));
        let (stats_open, stats_wanted) = watch::channel(false);
        tokio::spawn(self.clone().sample_stats(stats_wanted, updates.clone()));
        tokio::spawn(self.run_commands(updates, commands, stats_open));
    }

    /// Fetches what events made stale, in coalesced passes (see
    /// [`crate::refetch`]), until the UI is gone.
    async fn refetch(self, stale: Arc<StaleRows>, updates: mpsc::UnboundedSender<Update>) {
        let mut admin = self.admin();
        let mut pages = Pages::default();
        loop {
            let plan = stale.next().await.plan(&pages);
            let started = tokio::time::Instant::now();
            for fetch in plan {
                let what = if fetch == Fetch::Everything { "loading" } else { "refresh" };
                if let Err(status) = fetch_rows(&mut admin, fetch, &mut pages, &updates).await {
                    let text = format!("{what} failed: {}", status.message());
                    let _ = updates.send(Update::Status { text, error: true });
                }
            }
            if updates.is_closed() {
                return;
            }
            tokio::time::sleep_until(started + REFETCH_INTERVAL).await;
        }
    }

    /// Sends a `GetStats` answer about once a second while `open` says the
    /// Dashboard is shown (the rates are the deltas of its totals, see
    /// [`crate::dashboard`]); ends when the command runner is gone.
    async fn sample_stats(self, mut open: watch::Receiver<bool>, updates: mpsc::UnboundedSender<Update>) {
        let mut admin = self.admin();
        loop {
            while !*open.borrow_and_update() {
                if open.changed().await.is_err() {
                    return;
                }
            }
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while *open.borrow() {
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = open.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => return,
                    },
                }
                let update = match admin.get_stats(pb::GetStatsRequest {}).await {
                    Ok(stats) => Update::Stats(stats.into_inner(), SystemTime::now()),
                    Err(status) => {
                        Update::Status { text: format!("counters failed: {}", status.message()), error: true }
                    }
                };
                if updates.send(update).is_err() {
                    return;
                }
            }
        }
    }

    /// Follows the event stream forever, reconnecting with backoff.
    async fn follow_events(self, stale: Arc<StaleRows>, updates: mpsc::UnboundedSender<Update>) {
        // The first watch replays what the server keeps (after sequence
        // 0), so the Events view opens with its history; events from
        // before the console started only go into the log, as the lists
        // loaded at start already reflect them.
        let started = crate::format::now_millis(std::time::SystemTime::now());
        let mut last: Option<u64> = Some(0);
        let mut backoff = Duration::from_millis(500);
        let mut reconnecting = false;
        'watch: loop {
            let used = self.access_token();
            let reason = match self.admin().watch_events(pb::WatchEventsRequest { after_sequence: last }).await {
                Ok(stream) => {
                    let _ = updates.send(Update::Connection(ConnectionState::Live));
                    // Without a sequence to resume from, what happened while
                    // the stream was down cannot be replayed: reload instead.
                    if reconnecting && last.is_none() {
                        stale.reload_all();
                    }
                    backoff = Duration::from_millis(500);
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(message)) => {
                                if let Some(event) = message.event {
                                    last = Some(event.sequence);
                                    if crate::format::millis(event.occurred_at.as_ref()) < started {
                                        let _ = updates.send(Update::History(vec![event]));
                                    } else {
                                        stale.note(&event);
                                        let _ = updates.send(Update::Event(event));
                                    }
                                }
                            }
                            Ok(None) => break "the server ended the stream".to_string(),
                            Err(status) if status.code() == Code::Aborted => {
                                // Too far behind: what was missed is reloaded.
                                stale.reload_all();
                                last = None;
                                break "fell behind; reloaded the lists".to_string();
                            }
                            Err(status) if status.code() == Code::Unauthenticated => {
                                match self.renew_or_wait(&used, &updates).await {
                                    Some(reason) => break reason,
                                    None => continue 'watch,
                                }
                            }
                            Err(status) => break status.message().to_string(),
                        }
                    }
                }
                Err(status) if status.code() == Code::Unauthenticated => {
                    match self.renew_or_wait(&used, &updates).await {
                        Some(reason) => reason,
                        None => continue 'watch,
                    }
                }
                Err(status) if status.code() == Code::OutOfRange => {
                    // The server never reached our sequence (restored from a
                    // backup): start over from what it holds.
                    last = None;
                    stale.reload_all();
                    status.message().to_string()
                }
                Err(status) => status.message().to_string(),
            };
            if updates.is_closed() {
                return;
            }
            reconnecting = true;
            let retry_in = backoff.as_secs().max(1);
            let _ = updates.send(Update::Connection(ConnectionState::Reconnecting { reason, retry_in }));
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// After the stream refused the access token `used`: renews the tokens
    /// (a distrusted signing key, an expiry) and returns why to reconnect;
    /// or, when the session itself has ended, waits for a new login and
    /// returns `None`.
    async fn renew_or_wait(&self, used: &str, updates: &mpsc::UnboundedSender<Update>) -> Option<String> {
        match self.renew(used).await {
            Ok(()) => Some("the access token was renewed".into()),
            Err(status) if status.code() == Code::Unauthenticated => {
                self.wait_for_login(updates).await;
                None
            }
            Err(status) => Some(status.message().to_string()),
        }
    }

    /// Says that the console's own session has ended and waits until the
    /// operator has logged in again.
    async fn wait_for_login(&self, updates: &mpsc::UnboundedSender<Update>) {
        let logged_in = self.logged_in.notified();
        let _ = updates.send(Update::Connection(ConnectionState::LoggedOut));
        logged_in.await;
    }

    /// Runs the operator's commands, one at a time, reporting each outcome.
    async fn run_commands(
        self,
        updates: mpsc::UnboundedSender<Update>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stats_open: watch::Sender<bool>,
    ) {
        let mut admin = self.admin();
        let mut identity = IdentityServiceClient::with_interceptor(self.channel.clone(), Bearer(self.tokens.clone()));
        while let Some(command) = commands.recv().await {
            if let Command::WatchStats { open } = command {
                stats_open.send_replace(open);
                continue;
            }
            let revoke =
                |target| pb::RevokeRequest { target: Some(target), reason: "revoked from sigil-console".into() };
            let outcome = match &command {
                Command::RevokeSession { session_id } => identity
                    .revoke(revoke(Target::SessionId(session_id.clone())))
                    .await
                    .map(|r| counts("revoked", r.into_inner())),
                Command::RevokeToken { token_id } => identity
                    .revoke(revoke(Target::TokenId(token_id.clone())))
                    .await
                    .map(|r| counts("revoked", r.into_inner())),
                Command::RevokeUser { user_id, username } => identity
                    .revoke(revoke(Target::UserId(user_id.clone())))
                    .await
                    .map(|r| counts(&format!("{username}:"), r.into_inner())),
                Command::SetDisabled { user_id, username, disabled } => admin
                    .update_user(pb::UpdateUserRequest {
                        user_id: user_id.clone(),
                        disabled: Some(*disabled),
                        roles: None,
                    })
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        let verb = if *disabled { "disabled" } else { "enabled" };
                        format!("{verb} {username}; {} ended", count(r.revoked_sessions, "session"))
                    }),
                Command::IncludeInactive(true) => {
                    load_inactive(&mut admin, &updates).await.map(|n| format!("loaded {}", count(n, "ended record")))
                }
                Command::IncludeInactive(false) => Ok("showing active sessions and tokens only".into()),
                Command::Login { password } => match self.relogin(password.expose(), &updates).await {
                    Ok(text) => Ok(text),
                    Err(reason) => {
                        let _ = updates.send(Update::Status { text: format!("login failed: {reason}"), error: true });
                        continue;
                    }
                },
                Command::RevokeSessions { session_ids, filter } => revoke_sessions(&identity, session_ids)
                    .await
                    .map(|n| format!("revoked {} matching \"{filter}\"", count(n, "session"))),
                Command::CreateUser { username, password, roles } => admin
                    .create_user(pb::CreateUserRequest {
                        username: username.clone(),
                        password: password.expose().to_string(),
                        roles: roles.clone(),
                    })
                    .await
                    .map(|r| {
                        let name = r.into_inner().user.map(|u| u.username).unwrap_or_else(|| username.clone());
                        format!("created user {name}")
                    }),
                Command::SetPassword { user_id, username, password } => admin
                    .set_password(pb::SetPasswordRequest {
                        user_id: user_id.clone(),
                        password: password.expose().to_string(),
                        revoke_sessions: true,
                    })
                    .await
                    .map(|r| {
                        format!("new password for {username}; {} sessions ended", r.into_inner().revoked_sessions)
                    }),
                Command::SetRoles { user_id, username, roles } => admin
                    .update_user(pb::UpdateUserRequest {
                        user_id: user_id.clone(),
                        disabled: None,
                        roles: Some(pb::RoleList { roles: roles.clone() }),
                    })
                    .await
                    .map(|r| {
                        let roles = r.into_inner().user.map(|u| u.roles).unwrap_or_default();
                        format!("roles of {username}: [{}]", roles.join(", "))
                    }),
                // Handled above: it is no request.
                Command::WatchStats { .. } => continue,
                Command::RevokeServiceAccountTokens { client_id, name } => admin
                    .revoke_service_account_tokens(pb::RevokeServiceAccountTokensRequest {
                        client_id: client_id.clone(),
                        reason: "revoked from sigil-console".into(),
                    })
                    .await
                    .map(|_| format!("revoked every token of {name} so far")),
                Command::SetServiceAccountDisabled { client_id, name, disabled } => admin
                    .update_service_account(pb::UpdateServiceAccountRequest {
                        client_id: client_id.clone(),
                        disabled: Some(*disabled),
                        ..Default::default()
                    })
                    .await
                    .map(|_| {
                        if *disabled {
                            format!("disabled service account {name}; its tokens fail")
                        } else {
                            format!("enabled service account {name}")
                        }
                    }),
                Command::LoadServiceAccounts => match all_service_accounts(&mut admin, &updates).await {
                    // A reload the operator did not ask for in words says
                    // nothing when it works.
                    Ok(_) => continue,
                    Err(status) => Err(status),
                },
                Command::EmergencyKeyRotation => {
                    let seen = self.access_token();
                    match admin.rotate_signing_key(pb::RotateSigningKeyRequest { distrust_previous: true }).await {
                        // The console's own token was signed with a key
                        // that no longer verifies: refresh it at once.
                        Ok(r) => {
                            let kid = r.into_inner().key.map(|k| k.kid).unwrap_or_default();
                            self.renew(&seen).await.map(|()| {
                                format!(
                                    "new signing key {}; every older key is distrusted",
                                    crate::format::short_id(&kid)
                                )
                            })
                        }
                        Err(status) => Err(status),
                    }
                }
            };
            let update = match outcome {
                Ok(text) => Update::Status { text, error: false },
                Err(status) if status.code() == Code::Unauthenticated => {
                    let _ = updates.send(Update::Connection(ConnectionState::LoggedOut));
                    Update::Status {
                        text: format!(
                            "{} failed: the console's session has ended ({}); L logs in again",
                            command.describe(),
                            status.message()
                        ),
                        error: true,
                    }
                }
                Err(status) => {
                    Update::Status { text: format!("{} failed: {}", command.describe(), status.message()), error: true }
                }
            };
            if updates.send(update).is_err() {
                return;
            }
        }
    }

    /// The console's own session.
    pub fn session_id(&self) -> String {
        self.tokens.read().map(|t| t.session_id.clone()).unwrap_or_default()
    }

    /// The access token the console sends now.
    fn access_token(&self) -> String {
        self.tokens.read().map(|t| t.access.clone()).unwrap_or_default()
    }

    /// Exchanges the refresh token for new tokens, unless they were renewed
    /// since `seen` was the access token (then that renewal is enough).
    async fn renew(&self, seen: &str) -> Result<(), Status> {
        let _one_at_a_time = self.renewing.lock().await;
        let refresh = match self.tokens.read() {
            Ok(t) if t.access == seen => t.refresh.clone(),
            _ => return Ok(()),
        };
        let r = IdentityServiceClient::new(self.channel.clone())
            .refresh(pb::RefreshRequest { refresh_token: refresh })
            .await?
            .into_inner();
        if let Ok(mut tokens) = self.tokens.write() {
            *tokens = TokenPair {
                access: r.access_token,
                refresh: r.refresh_token,
                expires_at: r.access_token_expires_at.map(|t| t.seconds).unwrap_or(0),
                session_id: r.session_id,
            };
        }
        Ok(())
    }

    /// Refreshes the console's own access token a minute before it expires
    /// (or halfway through short lifetimes).
    async fn keep_token_fresh(self, updates: mpsc::UnboundedSender<Update>) {
        loop {
            let (expires_at, seen) = match self.tokens.read() {
                Ok(t) => (t.expires_at, t.access.clone()),
                Err(_) => return,
            };
            let now = crate::format::now_millis(std::time::SystemTime::now()) / 1000;
            let left = (expires_at - now).max(0) as u64;
            let wait = if left > 120 { left - 60 } else { left / 2 };
            tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
            if updates.is_closed() {
                return;
            }
            // A command or the event stream may have renewed meanwhile (after
            // an emergency key rotation): `renew` then leaves it at that.
            match self.renew(&seen).await {
                Ok(()) => {}
                Err(status) if status.code() == Code::Unauthenticated => {
                    // One refresher only, ever: two would present the same
                    // refresh token, and the second is a reuse that ends the
                    // session. This one waits for the new login.
                    let logged_in = self.logged_in.notified();
                    let _ = updates.send(Update::Connection(ConnectionState::LoggedOut));
                    let _ = updates.send(Update::Status {
                        text: format!("the console's session ended ({}); L logs in again", status.message()),
                        error: true,
                    });
                    logged_in.await;
                }
                Err(status) => {
                    let _ = updates.send(Update::Status {
                        text: format!("token refresh failed: {}", status.message()),
                        error: true,
                    });
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}

/// Runs one refetch, sending the rows to the UI as they arrive.
async fn fetch_rows(
    admin: &mut Admin,
    fetch: Fetch,
    pages: &mut Pages,
    updates: &mpsc::UnboundedSender<Update>,
) -> Result<(), Status> {
    match fetch {
        Fetch::Everything => {
            // Each page goes to the screen as it arrives, so the first one
            // shows at once; the header counts the rest in.
            let progress = Progress::start(admin, updates);
            let loaded = async {
                pages.users = all_users(admin, updates, Some(&progress)).await?.0;
                pages.sessions = all_sessions(admin, updates, Some(&progress)).await?;
                pages.tokens = all_tokens(admin, false, |_| true, updates, Some(&progress)).await?;
                // Last: the few service accounts wait behind the lists an
                // incident needs first.
                pages.service_accounts = all_service_accounts(admin, updates).await?.0;
                Ok::<_, Status>(())
            }
            .await;
            // Done, or failed (the status line says why): either way no
            // longer loading.
            let _ = updates.send(Update::Loading(None));
            loaded?;
        }
        Fetch::SessionsOfUser(user_id) => {
            let request = pb::ListSessionsRequest { user_id: Some(user_id), page_size: 1000, ..Default::default() };
            let sessions = admin.list_sessions(request).await?.into_inner().sessions;
            let _ = updates.send(Update::Sessions(sessions));
        }
        Fetch::AllSessions => pages.sessions = all_sessions(admin, updates, None).await?,
        Fetch::TokensOfSession(session_id) => {
            let request = pb::ListTokensRequest {
                session_id: Some(session_id),
                include_inactive: true,
                page_size: 1000,
                ..Default::default()
            };
            let tokens = admin.list_tokens(request).await?.into_inner().tokens;
            let _ = updates.send(Update::Tokens(tokens));
        }
        Fetch::AllTokens { of_sessions } => {
            let shown = |t: &pb::Token| t.state() == pb::TokenState::Active || of_sessions.contains(&t.session_id);
            pages.tokens = all_tokens(admin, true, shown, updates, None).await?;
        }
        Fetch::User(user_id) => refresh_user(admin, &user_id, updates).await?,
        Fetch::AllUsers { expected } => {
            let (n, seen) = all_users(admin, updates, None).await?;
            pages.users = n;
            for gone in expected.into_iter().filter(|id| !seen.contains(id)) {
                let _ = updates.send(Update::UserGone(gone));
            }
        }
        Fetch::ServiceAccount(client_id) => {
            let request = pb::GetServiceAccountRequest { client_id: client_id.clone() };
            match admin.get_service_account(request).await {
                Ok(found) => {
                    let _ =
                        updates.send(Update::ServiceAccounts(found.into_inner().service_account.into_iter().collect()));
                }
                Err(status) if status.code() == Code::NotFound => {
                    let _ = updates.send(Update::ServiceAccountGone(client_id));
                }
                Err(status) => return Err(status),
            }
        }
        Fetch::AllServiceAccounts { expected } => {
            let (n, seen) = all_service_accounts(admin, updates).await?;
            pages.service_accounts = n;
            for gone in expected.into_iter().filter(|id| !seen.contains(id)) {
                let _ = updates.send(Update::ServiceAccountGone(gone));
            }
        }
    }
    Ok(())
}

/// Tells the UI how far a full load has come, against the counts the
/// server gives (asked beside the first pages, so as not to delay them).
struct Progress<'a> {
    updates: &'a mpsc::UnboundedSender<Update>,
    totals: watch::Receiver<Option<pb::GetStatsResponse>>,
}

impl<'a> Progress<'a> {
    fn start(admin: &Admin, updates: &'a mpsc::UnboundedSender<Update>) -> Self {
        let (found, totals) = watch::channel(None);
        let mut admin = admin.clone();
        tokio::spawn(async move {
            // Without the counts the header says only how many arrived.
            if let Ok(stats) = admin.get_stats(pb::GetStatsRequest {}).await {
                found.send_replace(Some(stats.into_inner()));
            }
        });
        Self { updates, totals }
    }

    fn loaded(&self, list: List, loaded: u64) {
        let total = self.totals.borrow().as_ref().map(|stats| match list {
            List::Users => stats.users,
            List::Sessions => stats.active_sessions,
            List::Tokens => stats.active_tokens,
        });
        let _ = self.updates.send(Update::Loading(Some(Loading { list, loaded, total })));
    }
}

/// Sends every page of users; returns how many pages it took and the ids seen.
async fn all_users(
    admin: &mut Admin,
    updates: &mpsc::UnboundedSender<Update>,
    progress: Option<&Progress<'_>>,
) -> Result<(usize, HashSet<String>), Status> {
    let (mut pages, mut seen, mut page_token) = (0, HashSet::new(), String::new());
    loop {
        let request = pb::ListUsersRequest { page_size: 1000, page_token };
        let page = admin.list_users(request).await?.into_inner();
        pages += 1;
        seen.extend(page.users.iter().map(|u| u.user_id.clone()));
        let _ = updates.send(Update::Users(page.users));
        if let Some(progress) = progress {
            progress.loaded(List::Users, seen.len() as u64);
        }
        if page.next_page_token.is_empty() {
            return Ok((pages, seen));
        }
        page_token = page.next_page_token;
    }
}

/// Sends every page of service accounts; returns how many pages it took
/// and the client ids seen.
async fn all_service_accounts(
    admin: &mut Admin,
    updates: &mpsc::UnboundedSender<Update>,
) -> Result<(usize, HashSet<String>), Status> {
    let (mut pages, mut seen, mut page_token) = (0, HashSet::new(), String::new());
    loop {
        let request = pb::ListServiceAccountsRequest { page_size: 1000, page_token };
        let page = admin.list_service_accounts(request).await?.into_inner();
        pages += 1;
        seen.extend(page.service_accounts.iter().map(|a| a.client_id.clone()));
        let _ = updates.send(Update::ServiceAccounts(page.service_accounts));
        if page.next_page_token.is_empty() {
            return Ok((pages, seen));
        }
        page_token = page.next_page_token;
    }
}

/// Sends every page of active sessions; returns how many pages it took.
async fn all_sessions(
    admin: &mut Admin,
    updates: &mpsc::UnboundedSender<Update>,
    progress: Option<&Progress<'_>>,
) -> Result<usize, Status> {
    let (mut pages, mut loaded, mut page_token) = (0, 0, String::new());
    loop {
        let request = pb::ListSessionsRequest { page_size: 1000, page_token, ..Default::default() };
        let page = admin.list_sessions(request).await?.into_inner();
        pages += 1;
        loaded += page.sessions.len() as u64;
        let _ = updates.send(Update::Sessions(page.sessions));
        if let Some(progress) = progress {
            progress.loaded(List::Sessions, loaded);
        }
        if page.next_page_token.is_empty() {
            return Ok(pages);
        }
        page_token = page.next_page_token;
    }
}

/// Sends every page of tokens (ended ones too with `include_inactive`),
/// keeping those `shown` accepts; returns how many pages it took.
async fn all_tokens(
    admin: &mut Admin,
    include_inactive: bool,
    shown: impl Fn(&pb::Token) -> bool,
    updates: &mpsc::UnboundedSender<Update>,
    progress: Option<&Progress<'_>>,
) -> Result<usize, Status> {
    let (mut pages, mut loaded, mut page_token) = (0, 0, String::new());
    loop {
        let request = pb::ListTokensRequest { page_size: 1000, page_token, include_inactive, ..Default::default() };
        let page = admin.list_tokens(request).await?.into_inner();
        pages += 1;
        loaded += page.tokens.len() as u64;
        let _ = updates.send(Update::Tokens(page.tokens.into_iter().filter(|t| shown(t)).collect()));
        if let Some(progress) = progress {
            progress.loaded(List::Tokens, loaded);
        }
        if page.next_page_token.is_empty() {
            return Ok(pages);
        }
        page_token = page.next_page_token;
    }
}

async fn refresh_user(admin: &mut Admin, user_id: &str, updates: &mpsc::UnboundedSender<Update>) -> Result<(), Status> {
    if user_id.is_empty() {
        return Ok(());
    }
    let request = pb::GetUserRequest { key: Some(pb::get_user_request::Key::UserId(user_id.to_string())) };
    match admin.get_user(request).await {
        Ok(user) => {
            let _ = updates.send(Update::Users(user.into_inner().user.into_iter().collect()));
            Ok(())
        }
        Err(status) if status.code() == Code::NotFound => {
            let _ = updates.send(Update::UserGone(user_id.to_string()));
            Ok(())
        }
        Err(status) => Err(status),
    }
}

/// Sends every ended session and token (the active ones are loaded
/// already); returns how many there were.
async fn load_inactive(admin: &mut Admin, updates: &mpsc::UnboundedSender<Update>) -> Result<u64, Status> {
    let mut ended = 0;
    let mut page_token = String::new();
    loop {
        let request =
            pb::ListSessionsRequest { page_size: 1000, page_token, include_inactive: true, ..Default::default() };
        let page = admin.list_sessions(request).await?.into_inner();
        let rows: Vec<_> = page.sessions.into_iter().filter(|s| s.state() != pb::SessionState::Active).collect();
        ended += rows.len() as u64;
        let _ = updates.send(Update::Sessions(rows));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut page_token = String::new();
    loop {
        let request =
            pb::ListTokensRequest { page_size: 1000, page_token, include_inactive: true, ..Default::default() };
        let page = admin.list_tokens(request).await?.into_inner();
        let rows: Vec<_> = page.tokens.into_iter().filter(|t| t.state() != pb::TokenState::Active).collect();
        ended += rows.len() as u64;
        let _ = updates.send(Update::Tokens(rows));
        if page.next_page_token.is_empty() {
            return Ok(ended);
        }
        page_token = page.next_page_token;
    }
}

/// Revokes each session, a few at a time (the server's group commit makes
/// concurrent revocations cheap); returns how many sessions ended, or the
/// first failure with how far it got.
async fn revoke_sessions(
    identity: &IdentityServiceClient<InterceptedService<Channel, Bearer>>,
    session_ids: &[String],
) -> Result<u32, Status> {
    /// Revocations in flight at once.
    const CONCURRENCY: usize = 16;
    let outcomes: Vec<Result<u32, Status>> = futures::stream::iter(session_ids.iter().cloned())
        .map(|session_id| {
            let mut identity = identity.clone();
            async move {
                let request = pb::RevokeRequest {
                    target: Some(Target::SessionId(session_id)),
                    reason: "revoked from sigil-console".into(),
                };
                identity.revoke(request).await.map(|r| r.into_inner().revoked_sessions)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let revoked: u32 = outcomes.iter().filter_map(|o| o.as_ref().ok()).sum();
    match outcomes.into_iter().find_map(Result::err) {
        Some(status) => Err(Status::new(
            status.code(),
            format!("{revoked} of {} revoked; the first failure: {}", session_ids.len(), status.message()),
        )),
        None => Ok(revoked),
    }
}

fn counts(prefix: &str, r: pb::RevokeResponse) -> String {
    format!("{prefix} {}, {}", count(r.revoked_sessions, "session"), count(r.revoked_tokens, "token"))
}
