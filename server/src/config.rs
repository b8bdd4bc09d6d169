//! Configuration: one [`Config`] built from defaults ← TOML file
//! (`--config`) ← environment (`SIGIL_*`) ← command-line flags. File keys
//! are the flags' names in snake_case; an unknown key is an error naming it.
//!
//! Each setting is declared once, as a field of [`Config`]: its name (the
//! TOML key, and the flag in kebab-case), type, default, help text and
//! environment variable. The `confique` derive turns that declaration into
//! the all-optional [`ConfigLayer`] that the command line (with the
//! environment, through clap) and the file each fill, the merge of layers,
//! and [`Config::META`], from which `--help` shows the defaults and a test
//! checks `sigil.toml`.
//!
//! Why confique and not figment: confique only generates the types and
//! leaves the reading to us, so the file is still parsed by `toml` into a
//! `#[serde(deny_unknown_fields)]` layer and the messages stay word for
//! word (line and column, the unknown key with the keys expected, a bad
//! value with an example, and never an excerpt of a line that may hold the
//! database password). figment reads and merges the values itself and
//! reports them in its own words, and the flags would still need a struct
//! of their own to serialize into it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use http::Uri;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, ValueEnum};
use confique::{Config as _, Layer as _};
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::IdentitySettings;

pub use confique_config_layer::ConfigLayer;

/// Command line of `sigil-server`.
#[derive(Debug, Parser)]
#[command(
    name = "sigil-server",
    version,
    about = "Sigil identity service: gRPC API for login, token validation and revocation"
)]
pub struct Cli {
    /// TOML file with any of the settings below (keys in snake_case).
    #[arg(long, env = "SIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The settings.
    #[command(flatten)]
    pub layer: ConfigLayer,
    /// A maintenance command to run instead of serving (see `recovery`).
    #[command(subcommand)]
    pub command: Option<crate::recovery::Command>,
}

impl Cli {
    /// Parses the process's arguments (exiting with clap's message on a
    /// bad one), with `--help` showing each setting's default.
    pub fn parse_args() -> Self {
        let mut command = Self::documented_command();
        let matches = command.get_matches_mut();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
    }

    /// The command line, each setting's help ending in `[default: …]` taken
    /// from its declaration, so the help cannot disagree with the default.
    pub fn documented_command() -> clap::Command {
        let mut command = Self::command();
        for field in Config::META.fields {
            let confique::meta::FieldKind::Leaf {
                kind: confique::meta::LeafKind::Required { default: Some(default) },
                ..
            } = field.kind
            else {
                continue;
            };
            command = command.mut_arg(field.name, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {}]", shown_default(&default)))
            });
        }
        command
    }
}

/// A declared default as the help shows it: text unquoted, an empty list as `none`.
fn shown_default(default: &confique::meta::Expr) -> String {
    match toml::Value::try_from(default) {
        Ok(toml::Value::String(text)) => text,
        Ok(toml::Value::Array(items)) if items.is_empty() => "none".into(),
        Ok(value) => value.to_string(),
        Err(e) => format!("(cannot show: {e})"),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The effective configuration, and the one declaration of every setting:
/// the field's name is its TOML key and (in kebab-case) its flag; the doc
/// comment is its help; `default` is its default (read as the file would
/// be), `env` its environment variable. An `Option` has no default.
/// [`ConfigLayer`] is the same with every field optional: one source's
/// settings. Durations are written as in the file (`15m`, `30days`).
#[derive(Debug, Clone, Serialize, confique::Config)]
#[config(layer_attr(derive(Debug, Default, Clone, clap::Args)))]
#[config(layer_attr(serde(deny_unknown_fields)))]
pub struct Config {
    /// gRPC listen address, host:port (a host name is resolved at start).
    #[config(default = "127.0.0.1:50051")]
    #[config(layer_attr(arg(long, env = "SIGIL_LISTEN", value_parser = ListenAddr::parse)))]
    pub listen: ListenAddr,
    /// HTTP listen address for /.well-known/jwks.json and /healthz, host:port.
    #[config(default = "127.0.0.1:8080")]
    #[config(layer_attr(arg(long, env = "SIGIL_HTTP_LISTEN", value_parser = ListenAddr::parse)))]
    pub http_listen: ListenAddr,
    /// Directory of the embedded sled store.
    #[config(default = "./sigil-data")]
    #[config(layer_attr(arg(long, env = "SIGIL_DATA_DIR")))]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user:password@host/db); when set, the store is
    /// PostgreSQL, shared with every instance on the same database, instead of sled.
    // Parsed (and refused) in `Config::checked`, not by clap or serde: their
    // error messages repeat the value, password included. Printed without
    // its password.
    #[config(layer_attr(arg(long, env = "SIGIL_DATABASE_URL", value_parser = DatabaseUrl::unchecked, hide_env_values = true)))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<DatabaseUrl>,
    /// PEM CA certificate(s) of the PostgreSQL server: connect with TLS (as the URL's
    /// sslmode says) and accept only a server certificate signed by it.
    #[config(layer_attr(arg(long, env = "SIGIL_DATABASE_CA")))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_ca: Option<PathBuf>,
    /// With PostgreSQL: how often an instance catches up on other instances'
    /// revocations, keys and events even without a notification.
    #[config(default = "1s", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_SYNC_INTERVAL", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub sync_interval: Duration,
    /// `iss` of issued tokens.
    #[config(default = "sigil")]
    #[config(layer_attr(arg(long, env = "SIGIL_ISSUER")))]
    pub issuer: String,
    /// Default `aud` of issued tokens.
    #[config(default = "sigil")]
    #[config(layer_attr(arg(long, env = "SIGIL_AUDIENCE")))]
    pub audience: String,
    /// Access-token lifetime, e.g. 15m.
    #[config(default = "15m", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_ACCESS_TOKEN_TTL", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub access_token_ttl: Duration,
    /// Absolute session lifetime, e.g. 30d.
    #[config(default = "30d", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_SESSION_TTL", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub session_ttl: Duration,
    /// Clock leeway on exp/nbf, e.g. 30s.
    #[config(default = "0s", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_LEEWAY", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub leeway: Duration,
    /// Longest a service account's client assertion (private_key_jwt, RFC 7523) may be
    /// valid for, from now and from its iat: a longer-lived one is refused.
    #[config(default = "5m", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_CLIENT_ASSERTION_MAX_LIFETIME", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub client_assertion_max_lifetime: Duration,
    /// PEM certificate chain for TLS on the gRPC listener (with --tls-key).
    #[config(layer_attr(arg(long, env = "SIGIL_TLS_CERT")))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the gRPC listener (with --tls-cert).
    // A path: the key itself is never printed.
    #[config(layer_attr(arg(long, env = "SIGIL_TLS_KEY")))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require client certificates signed by it (mTLS).
    #[config(layer_attr(arg(long, env = "SIGIL_TLS_CLIENT_CA")))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Log format.
    #[config(default = "text")]
    #[config(layer_attr(arg(long, env = "SIGIL_LOG_FORMAT", value_enum)))]
    pub log_format: LogFormat,
    /// Routine events (logins, refreshes, expiries, failed logins) kept for replay by
    /// WatchEvents.
    #[config(default = 10000)]
    #[config(layer_attr(arg(long, env = "SIGIL_EVENT_RETENTION")))]
    pub event_retention: usize,
    /// How long admin and security events (users, roles, keys, revocations) are kept,
    /// however many routine events come after (a month is 30.44 days).
    #[config(default = "3months", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_AUDIT_RETENTION", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub audit_retention: Duration,
    /// How often an idle WatchRevocations stream gets a heartbeat, so that edge
    /// verifiers know they are current when nothing is revoked.
    #[config(default = "1s", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_REVOCATION_HEARTBEAT", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub revocation_heartbeat: Duration,
    /// WatchRevocations streams open at once (edge verifiers); more are refused with
    /// RESOURCE_EXHAUSTED.
    #[config(default = 256)]
    #[config(layer_attr(arg(long, env = "SIGIL_MAX_REVOCATION_STREAMS")))]
    pub max_revocation_streams: usize,
    /// WatchRevocations streams one caller (a user, or a service account) may hold open at
    /// once, so one verifier credential cannot take every place; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[config(default = 8)]
    #[config(layer_attr(arg(long, env = "SIGIL_MAX_REVOCATION_STREAMS_PER_USER")))]
    pub max_revocation_streams_per_user: usize,
    /// How long ended sessions and tokens stay listed before they are purged.
    #[config(default = "7days", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_RECORD_RETENTION", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub record_retention: Duration,
    /// How often expiry, purges and key retirement run.
    #[config(default = "30s", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_SWEEP_INTERVAL", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub sweep_interval: Duration,
    /// Failed logins within the lockout window that lock an account; 0 turns locking off.
    #[config(default = 10)]
    #[config(layer_attr(arg(long, env = "SIGIL_LOCKOUT_THRESHOLD")))]
    pub lockout_threshold: u32,
    /// How far back failed logins count.
    #[config(default = "15m", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_LOCKOUT_WINDOW", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub lockout_window: Duration,
    /// Failed logins from one client address within the lockout window that block
    /// the address for the lockout duration; 0 turns this off.
    #[config(default = 0)]
    #[config(layer_attr(arg(long, env = "SIGIL_ADDRESS_LOCKOUT_THRESHOLD")))]
    pub address_lockout_threshold: u32,
    /// Proxies (IP addresses, comma-separated) whose x-forwarded-for names the
    /// client, for the per-address limit and session records.
    #[config(default = [])]
    #[config(layer_attr(arg(long, env = "SIGIL_TRUSTED_PROXIES", value_delimiter = ',')))]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// How long a locked account stays locked.
    #[config(default = "15m", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_LOCKOUT_DURATION", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub lockout_duration: Duration,

    /// Cookie that carries the access token to the gateway checks (Envoy ext_authz and
    /// /authz) when no `Authorization: Bearer` header does, for browser apps whose token
    /// rides in an HttpOnly cookie. Unset, cookies are ignored.
    #[config(layer_attr(arg(long, env = "SIGIL_AUTHZ_COOKIE")))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz_cookie: Option<String>,

    // Listeners: the published URL, connection limits and timeouts, shutdown.
    /// Public base URL of the HTTP listener (https://sigil.example.com/): every URL of the
    /// discovery document is built from it, never from a request
    /// [default: http://<the bound http_listen address>/].
    #[config(layer_attr(arg(long, env = "SIGIL_PUBLIC_URL", value_parser = PublicUrl::parse)))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<PublicUrl>,
    /// Connections the gRPC listener holds at once; more are refused and logged.
    #[config(default = 256)]
    #[config(layer_attr(arg(long, env = "SIGIL_MAX_CONNECTIONS")))]
    pub max_connections: usize,
    /// Connections the HTTP listener holds at once, apart from gRPC's, so /healthz stays
    /// reachable when the gRPC port is flooded.
    #[config(default = 128)]
    #[config(layer_attr(arg(long, env = "SIGIL_HTTP_MAX_CONNECTIONS")))]
    pub http_max_connections: usize,
    /// HTTP/2 streams (calls) one connection may have open at once.
    #[config(default = 100)]
    #[config(layer_attr(arg(long, env = "SIGIL_MAX_CONCURRENT_STREAMS")))]
    pub max_concurrent_streams: u32,
    /// Time a new connection has to complete its opening (TLS handshake, HTTP/2 preface,
    /// HTTP/1 request headers).
    #[config(default = "10s", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_HANDSHAKE_TIMEOUT", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub handshake_timeout: Duration,
    /// A connection on which nothing arrives for this long is closed.
    #[config(default = "5m", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_IDLE_TIMEOUT", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings; a peer that does not answer within
    /// keepalive_timeout is disconnected.
    #[config(default = "30s", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_KEEPALIVE_INTERVAL", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub keepalive_interval: Duration,
    /// How long a keepalive ping may go unanswered.
    #[config(default = "10s", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_KEEPALIVE_TIMEOUT", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub keepalive_timeout: Duration,
    /// Longest a call may take until its answer starts (a request body that never
    /// arrives included); streams, once answering, are not cut.
    #[config(default = "10s", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_REQUEST_TIMEOUT", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub request_timeout: Duration,
    /// A connection older than this is asked to close (HTTP/2 GOAWAY); its calls get
    /// one minute more, then it is closed.
    #[config(default = "1h", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_MAX_CONNECTION_AGE", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub max_connection_age: Duration,
    /// On SIGTERM/SIGINT, how long calls in flight may take before they are abandoned;
    /// the store is made durable in any case. A second signal exits at once.
    #[config(default = "10s", deserialize_with = duration_text)]
    #[config(layer_attr(arg(long, env = "SIGIL_SHUTDOWN_GRACE", value_parser = parse_duration)))]
    #[serde(serialize_with = "duration_to_text")]
    pub shutdown_grace: Duration,
    /// Start even though the sled store lost data it had committed (it is behind
    /// its high-water mark, or opened empty): serve what it still holds, record the
    /// loss as an audit event and reset the mark. For one start after a loss the
    /// operator accepts; never leave it set.
    #[config(default = false)]
    #[config(layer_attr(arg(
        long,
        env = "SIGIL_ACCEPT_DATA_LOSS",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )))]
    pub accept_data_loss: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_layer(ConfigLayer::default_values()).expect("every setting without a default is an Option")
    }
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: std::io::Error,
    },
    /// The file is not valid (syntax, unknown key, bad value).
    #[error("invalid config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A value is out of range.
    #[error("{0}")]
    OutOfRange(String),
}

impl Config {
    /// Stacks `flags` (already including the environment) over the file
    /// named by `file`, over the defaults.
    pub fn load(file: Option<&std::path::Path>, flags: ConfigLayer) -> Result<Self, ConfigError> {
        let from_file = match file {
            None => ConfigLayer::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|reason| ConfigError::Read { path: path.to_path_buf(), reason })?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError::Invalid { path: path.to_path_buf(), message: toml_error(&text, &e) })?
            }
        };
        // Complete: every setting that is not an `Option` has a default.
        let layer = flags.with_fallback(from_file).with_fallback(ConfigLayer::default_values());
        Self::from_layer(layer).map_err(|e| ConfigError::OutOfRange(e.to_string()))?.checked()
    }

    fn checked(self) -> Result<Self, ConfigError> {
        if self.access_token_ttl < Duration::from_secs(1) {
            return Err(ConfigError::OutOfRange("access_token_ttl must be at least 1s".into()));
        }
        if self.client_assertion_max_lifetime < Duration::from_secs(1)
            || self.client_assertion_max_lifetime > Duration::from_secs(3600)
        {
            return Err(ConfigError::OutOfRange("client_assertion_max_lifetime must be 1s to 1h".into()));
        }
        if self.session_ttl < self.access_token_ttl {
            return Err(ConfigError::OutOfRange("session_ttl must be at least access_token_ttl".into()));
        }
        if self.audit_retention < Duration::from_secs(60) {
            return Err(ConfigError::OutOfRange("audit_retention must be at least 1m".into()));
        }
        if self.sweep_interval < Duration::from_millis(100) {
            return Err(ConfigError::OutOfRange("sweep_interval must be at least 100ms".into()));
        }
        if self.sync_interval < Duration::from_millis(10) {
            return Err(ConfigError::OutOfRange("sync_interval must be at least 10ms".into()));
        }
        if self.database_ca.is_some() && self.database_url.is_none() {
            return Err(ConfigError::OutOfRange("database_ca needs database_url".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::OutOfRange("tls_cert and tls_key go together".into()));
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(ConfigError::OutOfRange("tls_client_ca needs tls_cert and tls_key".into()));
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(ConfigError::OutOfRange("issuer and audience must not be empty".into()));
        }
        if let Some(url) = &self.database_url {
            url.check()?;
        }
        if let Some(cookie) = &self.authz_cookie
            && !is_cookie_name(cookie)
        {
            return Err(ConfigError::OutOfRange(
                "authz_cookie must be a cookie name: 1 to 64 letters, digits or !#$%&'*+-.^_`|~".into(),
            ));
        }
        self.checked_listeners()
    }

    fn checked_listeners(self) -> Result<Self, ConfigError> {
        let out_of_range = |text: &str| Err(ConfigError::OutOfRange(text.into()));
        if self.max_connections == 0 || self.http_max_connections == 0 {
            return out_of_range("max_connections and http_max_connections must be at least 1");
        }
        if self.max_concurrent_streams == 0 {
            return out_of_range("max_concurrent_streams must be at least 1");
        }
        if self.max_revocation_streams == 0 {
            return out_of_range("max_revocation_streams must be at least 1");
        }
        if self.max_revocation_streams_per_user == 0 {
            return out_of_range("max_revocation_streams_per_user must be at least 1");
        }
        // A heartbeat is what tells a verifier it is current: one so slow
        // that the verifier's staleness limit (5s by default) passes between
        // two would make every verifier fail closed on a quiet day.
        if self.revocation_heartbeat < Duration::from_millis(100) || self.revocation_heartbeat > Duration::from_secs(60)
        {
            return out_of_range("revocation_heartbeat must be between 100ms and 60s");
        }
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("request_timeout", self.request_timeout),
            ("max_connection_age", self.max_connection_age),
        ] {
            if value < Duration::from_millis(100) {
                return Err(ConfigError::OutOfRange(format!("{name} must be at least 100ms")));
            }
        }
        // A quiet stream (WatchEvents with nothing to say) stays open only
        // because the client's answers to keepalive pings count as traffic.
        if self.keepalive_interval >= self.idle_timeout {
            return out_of_range("keepalive_interval must be shorter than idle_timeout");
        }
        Ok(self)
    }

    /// The domain core's settings.
    pub fn identity_settings(&self) -> IdentitySettings {
        IdentitySettings {
            issuer: self.issuer.clone(),
            default_audience: self.audience.clone(),
            access_token_ttl: self.access_token_ttl,
            session_ttl: self.session_ttl,
            leeway: self.leeway,
            event_retention: self.event_retention,
            audit_retention: self.audit_retention,
            record_retention: self.record_retention,
            revocation_heartbeat: self.revocation_heartbeat,
            max_revocation_streams: self.max_revocation_streams,
            max_revocation_streams_per_user: self.max_revocation_streams_per_user,
            lockout: crate::domain::lockout::LockoutPolicy {
                threshold: self.lockout_threshold,
                window: self.lockout_window,
                duration: self.lockout_duration,
            },
            address_lockout: crate::domain::lockout::LockoutPolicy {
                threshold: self.address_lockout_threshold,
                window: self.lockout_window,
                duration: self.lockout_duration,
            },
            trusted_proxies: self.trusted_proxies.clone(),
            client_assertion_max_lifetime: self.client_assertion_max_lifetime,
            ..IdentitySettings::default()
        }
    }

    /// How the gateway checks (ext_authz, /authz) find tokens and name
    /// their realm (the issuer).
    pub(crate) fn gateway_settings(&self) -> crate::domain::gateway::GatewaySettings {
        crate::domain::gateway::GatewaySettings { cookie: self.authz_cookie.clone(), realm: self.issuer.clone() }
    }

    /// What the sled store does when it opened behind its high-water mark.
    pub fn on_data_loss(&self) -> crate::store::high_water::OnDataLoss {
        use crate::store::high_water::OnDataLoss;
        if self.accept_data_loss { OnDataLoss::Accept } else { OnDataLoss::Refuse }
    }

    /// The configuration as TOML, in the file format `--config` reads.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// Whether `name` is a cookie name (an RFC 6265 token), short enough that
/// looking for it in a `Cookie` header stays cheap.
fn is_cookie_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A PostgreSQL connection string (URL or libpq key=value form). It may
/// hold a password, so `Debug` and the printed configuration render it from
/// its parsed fields with the password masked, never from the text.
#[derive(Clone)]
pub struct DatabaseUrl {
    text: String,
    parsed: Option<tokio_postgres::Config>,
}

impl PartialEq for DatabaseUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for DatabaseUrl {}

impl DatabaseUrl {
    /// Accepts a `postgres://` / `postgresql://` URL or a libpq key=value string.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Self::unchecked(text)?;
        url.check().map_err(|e| e.to_string())?;
        Ok(url)
    }

    /// Keeps `text` whatever it holds: [`DatabaseUrl::check`] (run by
    /// `Config::load`) refuses it later without repeating it, as clap and
    /// serde would.
    pub fn unchecked(text: &str) -> Result<Self, String> {
        let parsed = text.parse::<tokio_postgres::Config>().ok().filter(|config| {
            // tokio-postgres ends the userinfo at the first `@`: the rest of a
            // password holding a raw `@` would become part of the host name
            // (and be printed as one). No host name holds an `@`.
            !config
                .get_hosts()
                .iter()
                .any(|host| matches!(host, tokio_postgres::config::Host::Tcp(name) if name.contains('@')))
        });
        Ok(Self { text: text.to_string(), parsed })
    }

    /// Whether tokio-postgres accepts the string. The error never repeats
    /// it: the parser's messages can quote characters of the password.
    pub fn check(&self) -> Result<(), ConfigError> {
        match self.parsed {
            Some(_) => Ok(()),
            None => Err(ConfigError::OutOfRange(
                "database_url is not a PostgreSQL connection string tokio-postgres accepts \
                 (postgres://user:password@host:port/db?sslmode=require, or host=… user=… dbname=…; \
                 in a URL, write an `@` in the password as %40); it is not repeated here because it may \
                 hold a password"
                    .into(),
            )),
        }
    }

    /// The connection string itself, for the driver.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The connection settings in libpq key=value form with any password
    /// replaced by `***`, rendered from the parsed fields.
    pub fn masked(&self) -> String {
        let Some(config) = &self.parsed else { return "(invalid connection string)".into() };
        let mut pairs: Vec<(&str, String)> = Vec::new();
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        if !hosts.is_empty() {
            pairs.push(("host", hosts.join(",")));
        }
        let hostaddrs: Vec<String> = config.get_hostaddrs().iter().map(ToString::to_string).collect();
        if !hostaddrs.is_empty() {
            pairs.push(("hostaddr", hostaddrs.join(",")));
        }
        let ports: Vec<String> = config.get_ports().iter().map(ToString::to_string).collect();
        if !ports.is_empty() {
            pairs.push(("port", ports.join(",")));
        }
        if let Some(user) = config.get_user() {
            pairs.push(("user", user.to_string()));
        }
        if config.get_password().is_some() {
            pairs.push(("password", "***".to_string()));
        }
        if let Some(dbname) = config.get_dbname() {
            pairs.push(("dbname", dbname.to_string()));
        }
        if let Some(options) = config.get_options() {
            pairs.push(("options", options.to_string()));
        }
        if let Some(name) = config.get_application_name() {
            pairs.push(("application_name", name.to_string()));
        }
        let ssl_mode = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => "disable",
            tokio_postgres::config::SslMode::Require => "require",
            _ => "prefer",
        };
        pairs.push(("sslmode", ssl_mode.to_string()));
        if let Some(timeout) = config.get_connect_timeout() {
            pairs.push(("connect_timeout", timeout.as_secs().to_string()));
        }
        if config.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::ReadWrite {
            pairs.push(("target_session_attrs", "read-write".to_string()));
        }
        pairs.iter().map(|(key, value)| format!("{key}={}", quoted(value))).collect::<Vec<_>>().join(" ")
    }
}

/// A libpq key=value value, quoted when it must be.
fn quoted(value: &str) -> String {
    if !value.is_empty() && !value.contains([' ', '\'', '\\']) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::unchecked(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// A listen address as configured: `host:port`, where the host is an IP
/// address (`[::1]` for IPv6) or a name resolved when the server starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr(String);

impl ListenAddr {
    /// Accepts `host:port`; the host is checked by resolving it at start.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not host:port (e.g. 127.0.0.1:50051, localhost:50051, [::1]:50051)");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
        if host.is_empty() || (host.contains(':') && !bracketed) || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Self(text.to_string()))
    }

    /// The addresses the host resolves to, in the resolver's order.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host(self.0.as_str()).await?.collect())
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        Self(addr.to_string())
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// The public base URL of the HTTP listener: an absolute `http(s)` URL
/// without query or fragment, kept with a trailing `/` so paths join onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    /// Accepts an absolute http or https URL with a host and no query or fragment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("public_url {text:?} {why} (expected e.g. https://sigil.example.com/)");
        if text.contains(['?', '#']) {
            return Err(bad("must not have a query or fragment"));
        }
        let uri: Uri = text.parse().map_err(|_| bad("is not a URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(bad("must start with https:// (or http://)")),
        }
        let Some(authority) = uri.authority() else { return Err(bad("has no host")) };
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(bad("must name a host (and no user)"));
        }
        let path = uri.path().trim_end_matches('/');
        Ok(Self(format!("{}://{}{path}/", uri.scheme_str().unwrap_or("https"), authority)))
    }

    /// The URL of `path` (relative, e.g. `.well-known/jwks.json`) under this base.
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.0, path.trim_start_matches('/'))
    }

    /// Whether it is https, or http to a loopback host (safe in clear text).
    pub fn is_safe(&self) -> bool {
        if self.0.starts_with("https://") {
            return true;
        }
        let host = self.0.trim_start_matches("http://").split('/').next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The default: the address the HTTP listener is bound to (an unspecified
    /// address — 0.0.0.0 — is replaced by loopback: it names no host).
    pub fn from_bound(addr: SocketAddr) -> Self {
        let mut addr = addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Self(format!("http://{addr}/"))
    }
}

impl std::fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PublicUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PublicUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// A TOML error by position and message, without the excerpt of the file
/// that `toml` quotes: that line may hold a secret (database_url).
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else { return error.message().to_string() };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
    format!("line {line}, column {column}: {}", error.message().trim_end())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 15m, 30s, 30d)"))
}

fn duration_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn duration_to_text<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*duration).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    }

    /// The gateway cookie must be a cookie name: one with `=`, `;` or a
    /// space could never match, and would silently ignore every cookie.
    #[test]
    fn the_authz_cookie_must_be_a_cookie_name() {
        for bad in ["", "a b", "a=b", "a;b", "ä", &"c".repeat(65)] {
            let file = file_with(&format!("authz_cookie = {bad:?}\n"));
            let error = Config::load(Some(file.path()), ConfigLayer::default()).expect_err(bad).to_string();
            assert!(error.contains("authz_cookie must be a cookie name"), "{bad:?}: {error}");
        }
        let file = file_with("authz_cookie = \"__Host-sigil_at\"\n");
        let config = Config::load(Some(file.path()), ConfigLayer::default()).expect("a cookie name");
        assert_eq!(config.gateway_settings().cookie.as_deref(), Some("__Host-sigil_at"));
        assert_eq!(config.gateway_settings().realm, config.issuer, "the realm is the issuer");
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let file = file_with("issuer = \"from-file\"\naudience = \"file-aud\"\naccess_token_ttl = \"5m\"\n");
        let flags = ConfigLayer { issuer: Some("from-flag".into()), ..ConfigLayer::default() };
        let config = Config::load(Some(file.path()), flags).expect("config");
        assert_eq!(config.issuer, "from-flag");
        assert_eq!(config.audience, "file-aud");
        assert_eq!(config.access_token_ttl, Duration::from_secs(300));
        assert_eq!(config.session_ttl, Duration::from_secs(30 * 24 * 3600));
    }

    #[test]
    fn unknown_keys_are_an_error_naming_the_key() {
        let file = file_with("listen = \"127.0.0.1:1\"\nlisten_adress = \"x\"\n");
        let error = Config::load(Some(file.path()), ConfigLayer::default()).expect_err("unknown key refused");
        assert!(error.to_string().contains("listen_adress"), "{error}");
    }

    /// Every form tokio-postgres accepts a password in is masked, from the
    /// parsed fields: URL userinfo (with `@` or `:` in the password, raw or
    /// percent-encoded), `?password=`, key=value with spaces around `=`,
    /// quoted, with escapes.
    #[test]
    fn database_passwords_are_masked_in_every_form() {
        for (url, secret) in [
            ("postgres://sigil:s3cret@db:5432/sigil", "s3cret"),
            ("postgres://sigil:s3c%40r3t@db/sigil", "r3t"),
            ("postgresql://sigil:a:b:c@db/sigil", "b:c"),
            ("postgres://sigil@db/sigil?password=s3cret&sslmode=require", "s3cret"),
            ("postgres://db/sigil?user=sigil&password=s3cret", "s3cret"),
            ("host=db user=sigil password=s3cret dbname=sigil", "s3cret"),
            ("host=db user=sigil password = s3cret dbname=sigil", "s3cret"),
            ("host=db user=sigil password= 's3 cr3t' dbname=sigil", "cr3t"),
            ("host=db password='it\\'s s3cret' user=sigil", "s3cret"),
            ("password=s3cret host=db", "s3cret"),
        ] {
            let parsed = DatabaseUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            let masked = format!("{parsed:?}");
            assert!(!masked.contains(secret), "{url} -> {masked}");
            assert!(masked.contains("password=***"), "{url} -> {masked}");
            let config = Config { database_url: Some(parsed), ..Config::default() };
            assert!(!config.to_toml().contains(secret), "{}", config.to_toml());
            assert!(!format!("{config:?}").contains(secret));
        }
        let plain = DatabaseUrl::parse("postgresql://sigil@db:5433/sigil?sslmode=require").expect("valid");
        assert_eq!(format!("{plain:?}"), "host=db port=5433 user=sigil dbname=sigil sslmode=require");
    }

    /// A layer (what the flags, the environment or the file said) masks the
    /// password in its `Debug` too, as the command line it is part of.
    #[test]
    fn a_layer_masks_the_database_password() {
        let cli = Cli::try_parse_from(["sigil-server", "--database-url", "postgres://sigil:s3cret@db/sigil"])
            .expect("parses");
        assert!(!format!("{cli:?}").contains("s3cret"), "{cli:?}");
        assert!(format!("{:?}", cli.layer).contains("password=***"), "{:?}", cli.layer);
    }

    /// A connection string that does not parse is refused when the
    /// configuration is loaded (flag, environment or file), and the error
    /// does not repeat it.
    #[test]
    fn an_invalid_database_url_is_refused_without_repeating_it() {
        for url in [
            "postgres://sigil:s3cret@[",
            "postgres://sigil:s3c@r3t@db:5432/sigil",
            "host=db password='s3cret",
            "postgres://sigil:s3cret@db/sigil?bogus=1",
        ] {
            assert!(DatabaseUrl::parse(url).is_err(), "{url}");
            let flags = ConfigLayer { database_url: DatabaseUrl::unchecked(url).ok(), ..ConfigLayer::default() };
            let error = Config::load(None, flags).expect_err("refused").to_string();
            assert!(error.contains("database_url") && !error.contains("s3c") && !error.contains("r3t"), "{error}");
            let file = file_with(&format!("database_url = {url:?}\n"));
            let error = Config::load(Some(file.path()), ConfigLayer::default()).expect_err("refused").to_string();
            assert!(error.contains("database_url") && !error.contains("s3cret"), "{error}");
        }
        // A TOML syntax error on that line does not quote the line either.
        let file = file_with("database_url = \"postgres://sigil:s3cret@db/sigil\nlisten = 1\n");
        let error = Config::load(Some(file.path()), ConfigLayer::default()).expect_err("refused").to_string();
        assert!(error.contains("line 1") && !error.contains("s3cret"), "{error}");
    }

    #[test]
    fn listen_addresses_are_host_and_port() {
        for good in ["127.0.0.1:50051", "localhost:0", "[::1]:8080", "sigil.internal:443"] {
            assert!(ListenAddr::parse(good).is_ok(), "{good}");
        }
        for bad in ["localhost", ":80", "::1:80", "host:http", "a b:1", "1.2.3.4:70000"] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_urls_are_absolute_http_urls_without_query_or_fragment() {
        let url = PublicUrl::parse("https://sigil.example.com/auth").expect("valid");
        assert_eq!(url.join(".well-known/jwks.json"), "https://sigil.example.com/auth/.well-known/jwks.json");
        assert!(url.is_safe());
        assert!(PublicUrl::parse("http://127.0.0.1:8080").expect("valid").is_safe());
        assert!(!PublicUrl::parse("http://sigil.example.com").expect("valid").is_safe());
        for bad in ["ftp://x/", "x", "/path", "https://x/?a=1", "https://x/#f", "https://u@x/", "https:///p"] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(PublicUrl::from_bound("0.0.0.0:8080".parse().expect("addr")).to_string(), "http://127.0.0.1:8080/");
    }

    #[test]
    fn audit_retention_is_read_and_has_a_floor() {
        let file = file_with("audit_retention = \"30days\"\n");
        let config = Config::load(Some(file.path()), ConfigLayer::default()).expect("config");
        assert_eq!(config.identity_settings().audit_retention, Duration::from_secs(30 * 24 * 3600));
        assert!(Config::default().to_toml().contains("audit_retention = \"3months\""));
        let flags = ConfigLayer { audit_retention: Some(Duration::from_secs(5)), ..ConfigLayer::default() };
        let error = Config::load(None, flags).expect_err("too short");
        assert!(error.to_string().contains("audit_retention"), "{error}");
    }

    #[test]
    fn accepting_data_loss_is_off_unless_asked_for_by_flag_env_or_file() {
        use crate::store::high_water::OnDataLoss;
        let parse = |args: &[&str]| Cli::try_parse_from([&["sigil-server"], args].concat()).expect("parses");
        let load = |cli: Cli| Config::load(None, cli.layer).expect("config");
        assert_eq!(load(parse(&[])).on_data_loss(), OnDataLoss::Refuse);
        assert_eq!(load(parse(&["--accept-data-loss"])).on_data_loss(), OnDataLoss::Accept);
        assert_eq!(load(parse(&["--accept-data-loss=false"])).on_data_loss(), OnDataLoss::Refuse);
        let file = file_with("accept_data_loss = true\n");
        let config = Config::load(Some(file.path()), ConfigLayer::default()).expect("config");
        assert_eq!(config.on_data_loss(), OnDataLoss::Accept);
    }

    #[test]
    fn printed_configuration_reads_back() {
        let config = Config::default();
        let file = file_with(&config.to_toml());
        let again = Config::load(Some(file.path()), ConfigLayer::default()).expect("round trip");
        assert_eq!(again.to_toml(), config.to_toml());
    }

    /// What a file with `text` is refused with, the file's path left out.
    fn refusal(text: &str) -> String {
        let file = file_with(text);
        let error = Config::load(Some(file.path()), ConfigLayer::default()).expect_err("refused").to_string();
        error.replace(&format!("invalid config file {}: ", file.path().display()), "")
    }

    /// The messages an operator sees for a mistyped key or a bad value name
    /// the position, the key or the value, and what is expected.
    #[test]
    fn bad_keys_and_values_are_refused_in_these_words() {
        let unknown = refusal("listen_adress = \"x\"\n");
        assert!(
            unknown.starts_with(
                "line 1, column 1: unknown field `listen_adress`, expected one of `listen`, `http_listen`, `data_dir`, "
            ),
            "{unknown}"
        );
        for (text, message) in [
            ("access_token_ttl = \"soon\"\n", "line 1, column 20: expected number at 0 (expected e.g. 15m, 30s, 30d)"),
            ("sweep_interval = 30\n", "line 1, column 18: invalid type: integer `30`, expected a string"),
            ("lockout_threshold = \"ten\"\n", "line 1, column 21: invalid type: string \"ten\", expected u32"),
            ("max_connections = -1\n", "line 1, column 19: invalid value: integer `-1`, expected usize"),
            (
                "listen = \"localhost\"\n",
                "line 1, column 10: \"localhost\" is not host:port (e.g. 127.0.0.1:50051, localhost:50051, [::1]:50051)",
            ),
            (
                "public_url = \"ftp://x/\"\n",
                "line 1, column 14: public_url \"ftp://x/\" must start with https:// (or http://) \
                 (expected e.g. https://sigil.example.com/)",
            ),
            ("log_format = \"xml\"\n", "line 1, column 14: unknown variant `xml`, expected `text` or `json`"),
            ("trusted_proxies = [\"not-ip\"]\n", "line 1, column 20: invalid IP address syntax"),
            ("accept_data_loss = \"yes\"\n", "line 1, column 20: invalid type: string \"yes\", expected a boolean"),
            ("database_url = 5\n", "line 1, column 16: invalid type: integer `5`, expected a string"),
            ("session_ttl = \"1s\"\n", "session_ttl must be at least access_token_ttl"),
            ("database_ca = \"/x\"\n", "database_ca needs database_url"),
        ] {
            assert_eq!(refusal(text), message, "{text}");
        }
        let flag =
            |args: &[&str]| Cli::try_parse_from([&["sigil-server"], args].concat()).expect_err("refused").to_string();
        let duration = flag(&["--access-token-ttl", "soon"]);
        assert!(
            duration.starts_with(
                "error: invalid value 'soon' for '--access-token-ttl <ACCESS_TOKEN_TTL>': \
                 expected number at 0 (expected e.g. 15m, 30s, 30d)"
            ),
            "{duration}"
        );
        let proxies = flag(&["--trusted-proxies", "1.2.3.4,x"]);
        assert!(
            proxies.starts_with(
                "error: invalid value 'x' for '--trusted-proxies <TRUSTED_PROXIES>': invalid IP address syntax"
            ),
            "{proxies}"
        );
    }

    /// Every setting has the flag `--` + its key in kebab-case and the
    /// variable `SIGIL_` + its key in capitals, and its help ends with its
    /// declared default.
    #[test]
    fn every_setting_has_its_flag_its_variable_and_its_default_in_the_help() {
        let command = Cli::documented_command();
        let arg = |name: &str| command.get_arguments().find(|arg| arg.get_id() == name).cloned();
        for field in Config::META.fields {
            let arg = arg(field.name).unwrap_or_else(|| panic!("no flag for {}", field.name));
            assert_eq!(arg.get_long(), Some(field.name.replace('_', "-").as_str()));
            let env = format!("SIGIL_{}", field.name.to_uppercase());
            assert_eq!(arg.get_env().and_then(|env| env.to_str()), Some(env.as_str()), "{}", field.name);
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            if let confique::meta::FieldKind::Leaf { kind: confique::meta::LeafKind::Required { .. }, .. } = field.kind
            {
                assert!(help.ends_with(']') && help.contains(" [default: "), "{}: {help}", field.name);
            }
        }
        let help = |name: &str| arg(name).and_then(|arg| arg.get_help().map(ToString::to_string)).unwrap_or_default();
        assert_eq!(help("access_token_ttl"), "Access-token lifetime, e.g. 15m [default: 15m]");
        assert!(help("trusted_proxies").ends_with(" [default: none]"), "{}", help("trusted_proxies"));
        assert!(help("accept_data_loss").ends_with(" [default: false]"), "{}", help("accept_data_loss"));
        assert!(help("listen").ends_with(" [default: 127.0.0.1:50051]"), "{}", help("listen"));
    }

    /// The settings the domain core takes default to the domain's own
    /// defaults, so that the server and the core (its tests included) agree.
    #[test]
    fn the_declared_defaults_are_the_domain_defaults() {
        let (server, domain) = (Config::default().identity_settings(), IdentitySettings::default());
        assert_eq!(server.issuer, domain.issuer);
        assert_eq!(server.default_audience, domain.default_audience);
        assert_eq!(server.access_token_ttl, domain.access_token_ttl);
        assert_eq!(server.session_ttl, domain.session_ttl);
        assert_eq!(server.leeway, domain.leeway);
        assert_eq!(server.event_retention, domain.event_retention);
        assert_eq!(server.audit_retention, domain.audit_retention);
        assert_eq!(server.record_retention, domain.record_retention);
        assert_eq!(server.revocation_heartbeat, domain.revocation_heartbeat);
        assert_eq!(server.max_revocation_streams, domain.max_revocation_streams);
        assert_eq!(server.max_revocation_streams_per_user, domain.max_revocation_streams_per_user);
        assert_eq!(server.lockout, domain.lockout);
        assert_eq!(server.address_lockout, domain.address_lockout);
        assert_eq!(server.trusted_proxies, domain.trusted_proxies);
    }

    /// `sigil.toml` names every setting once, set or commented out. A
    /// commented-out one shows its default, and so does a set one, but for
    /// the values the example is there to show (a system data directory,
    /// JSON logs). With every setting uncommented it is still valid.
    #[test]
    fn the_example_file_lists_every_setting_with_its_default() {
        const EXAMPLE_VALUES: [&str; 2] = ["data_dir", "log_format"];
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../sigil.toml");
        let example = std::fs::read_to_string(path).expect("sigil.toml");
        let mut listed = Vec::new();
        let mut uncommented = String::new();
        for line in example.lines() {
            let (commented, setting) = line.strip_prefix("# ").map_or((false, line), |rest| (true, rest));
            let Some((key, _)) = setting.split_once(" = ") else { continue };
            if Config::META.fields.iter().any(|field| field.name == key) {
                listed.push((key, commented));
                uncommented += &format!("{setting}\n");
            } else {
                assert!(commented, "sigil.toml sets {key}, which is no setting");
            }
        }
        for field in Config::META.fields {
            let times = listed.iter().filter(|(key, _)| *key == field.name).count();
            assert_eq!(times, 1, "sigil.toml lists {} {times} times", field.name);
        }
        let file = file_with(&uncommented);
        let everything = Config::load(Some(file.path()), ConfigLayer::default()).expect("every setting uncommented");
        let shown: toml::Table = toml::from_str(&everything.to_toml()).expect("printed");
        let defaults: toml::Table = toml::from_str(&Config::default().to_toml()).expect("printed");
        for (key, commented) in listed {
            let Some(default) = defaults.get(key) else { continue };
            if commented || !EXAMPLE_VALUES.contains(&key) {
                assert_eq!(shown.get(key), Some(default), "sigil.toml shows {key} other than its default");
            }
        }
    }
}
