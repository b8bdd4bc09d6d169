//! Configuration: one [`Config`] built from defaults ← TOML file
//! (`--config`) ← environment (`SIGIL_*`) ← command-line flags. File keys
//! are the flags' names in snake_case; an unknown key is an error naming it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::IdentitySettings;

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

/// One layer of settings: every field optional, so layers can be stacked.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "SIGIL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTP listen address for /.well-known/jwks.json and /healthz [default: 127.0.0.1:8080].
    #[arg(long, env = "SIGIL_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Directory of the embedded sled store [default: ./sigil-data].
    #[arg(long, env = "SIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user:password@host/db); when set, the store is
    /// PostgreSQL, shared with every instance on the same database, instead of sled.
    #[arg(long, env = "SIGIL_DATABASE_URL", value_parser = DatabaseUrl::parse, hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
    /// PEM CA certificate(s) of the PostgreSQL server: connect with TLS (as the URL's
    /// sslmode says) and accept only a server certificate signed by it.
    #[arg(long, env = "SIGIL_DATABASE_CA")]
    pub database_ca: Option<PathBuf>,
    /// With PostgreSQL: how often an instance catches up on other instances'
    /// revocations, keys and events even without a notification [default: 1s].
    #[arg(long, env = "SIGIL_SYNC_INTERVAL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_text")]
    pub sync_interval: Option<Duration>,
    /// `iss` of issued tokens [default: sigil].
    #[arg(long, env = "SIGIL_ISSUER")]
    pub issuer: Option<String>,
    /// Default `aud` of issued tokens [default: sigil].
    #[arg(long, env = "SIGIL_AUDIENCE")]
    pub audience: Option<String>,
    /// Access-token lifetime, e.g. 15m [default: 15m].
    #[arg(long, env = "SIGIL_ACCESS_TOKEN_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_text")]
    pub access_token_ttl: Option<Duration>,
    /// Absolute session lifetime, e.g. 30d [default: 30d].
    #[arg(long, env = "SIGIL_SESSION_TTL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_text")]
    pub session_ttl: Option<Duration>,
    /// Clock leeway on exp/nbf, e.g. 30s [default: 0s].
    #[arg(long, env = "SIGIL_LEEWAY", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_text")]
    pub leeway: Option<Duration>,
    /// PEM certificate chain for TLS on the gRPC listener (with --tls-key).
    #[arg(long, env = "SIGIL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the gRPC listener (with --tls-cert).
    #[arg(long, env = "SIGIL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require client certificates signed by it (mTLS).
    #[arg(long, env = "SIGIL_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "SIGIL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Audit events kept for replay by WatchEvents [default: 10000].
    #[arg(long, env = "SIGIL_EVENT_RETENTION")]
    pub event_retention: Option<usize>,
    /// How long ended sessions and tokens stay listed before they are purged [default: 7days].
    #[arg(long, env = "SIGIL_RECORD_RETENTION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_text")]
    pub record_retention: Option<Duration>,
    /// How often expiry, purges and key retirement run [default: 30s].
    #[arg(long, env = "SIGIL_SWEEP_INTERVAL", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_text")]
    pub sweep_interval: Option<Duration>,
    /// Failed logins within the lockout window that lock an account; 0 turns locking off [default: 10].
    #[arg(long, env = "SIGIL_LOCKOUT_THRESHOLD")]
    pub lockout_threshold: Option<u32>,
    /// How far back failed logins count [default: 15m].
    #[arg(long, env = "SIGIL_LOCKOUT_WINDOW", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_text")]
    pub lockout_window: Option<Duration>,
    /// Failed logins from one client address within the lockout window that block
    /// the address for the lockout duration; 0 turns this off [default: 0].
    #[arg(long, env = "SIGIL_ADDRESS_LOCKOUT_THRESHOLD")]
    pub address_lockout_threshold: Option<u32>,
    /// Proxies (IP addresses, comma-separated) whose x-forwarded-for names the
    /// client, for the per-address limit and session records [default: none].
    #[arg(long, env = "SIGIL_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<std::net::IpAddr>>,
    /// How long a locked account stays locked [default: 15m].
    #[arg(long, env = "SIGIL_LOCKOUT_DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "duration_text")]
    pub lockout_duration: Option<Duration>,
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

/// The effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Directory of the sled store.
    pub data_dir: PathBuf,
    /// The PostgreSQL store, when set (printed without its password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<DatabaseUrl>,
    /// CA of the PostgreSQL server, for TLS to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_ca: Option<PathBuf>,
    /// Catch-up interval with a shared store.
    #[serde(serialize_with = "duration_to_text")]
    pub sync_interval: Duration,
    /// Token issuer.
    pub issuer: String,
    /// Default token audience.
    pub audience: String,
    /// Access-token lifetime.
    #[serde(serialize_with = "duration_to_text")]
    pub access_token_ttl: Duration,
    /// Session lifetime.
    #[serde(serialize_with = "duration_to_text")]
    pub session_ttl: Duration,
    /// Clock leeway.
    #[serde(serialize_with = "duration_to_text")]
    pub leeway: Duration,
    /// TLS certificate chain of the gRPC listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key of the gRPC listener (a path; the key is never printed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// CA that client certificates must chain to (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Audit events kept.
    pub event_retention: usize,
    /// Retention of ended records.
    #[serde(serialize_with = "duration_to_text")]
    pub record_retention: Duration,
    /// Maintenance interval.
    #[serde(serialize_with = "duration_to_text")]
    pub sweep_interval: Duration,
    /// Failures that lock an account (0: never).
    pub lockout_threshold: u32,
    /// Window of counted failures.
    #[serde(serialize_with = "duration_to_text")]
    pub lockout_window: Duration,
    /// Length of a lock.
    #[serde(serialize_with = "duration_to_text")]
    pub lockout_duration: Duration,
    /// Failures that block a client address (0: off).
    pub address_lockout_threshold: u32,
    /// Proxies whose x-forwarded-for is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for Config {
    fn default() -> Self {
        let identity = IdentitySettings::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./sigil-data"),
            database_url: None,
            database_ca: None,
            sync_interval: Duration::from_secs(1),
            issuer: identity.issuer,
            audience: identity.default_audience,
            access_token_ttl: identity.access_token_ttl,
            session_ttl: identity.session_ttl,
            leeway: identity.leeway,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            log_format: LogFormat::Text,
            event_retention: identity.event_retention,
            record_retention: identity.record_retention,
            sweep_interval: Duration::from_secs(30),
            lockout_threshold: identity.lockout.threshold,
            lockout_window: identity.lockout.window,
            lockout_duration: identity.lockout.duration,
            address_lockout_threshold: identity.address_lockout.threshold,
            trusted_proxies: identity.trusted_proxies,
        }
    }
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
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
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError::Invalid { path: path.to_path_buf(), message: e.to_string() })?
            }
        };
        Self::default().overlaid(from_file).overlaid(flags).checked()
    }

    fn overlaid(self, layer: ConfigLayer) -> Self {
        Self {
            listen: layer.listen.unwrap_or(self.listen),
            http_listen: layer.http_listen.unwrap_or(self.http_listen),
            data_dir: layer.data_dir.unwrap_or(self.data_dir),
            database_url: layer.database_url.or(self.database_url),
            database_ca: layer.database_ca.or(self.database_ca),
            sync_interval: layer.sync_interval.unwrap_or(self.sync_interval),
            issuer: layer.issuer.unwrap_or(self.issuer),
            audience: layer.audience.unwrap_or(self.audience),
            access_token_ttl: layer.access_token_ttl.unwrap_or(self.access_token_ttl),
            session_ttl: layer.session_ttl.unwrap_or(self.session_ttl),
            leeway: layer.leeway.unwrap_or(self.leeway),
            tls_cert: layer.tls_cert.or(self.tls_cert),
            tls_key: layer.tls_key.or(self.tls_key),
            tls_client_ca: layer.tls_client_ca.or(self.tls_client_ca),
            log_format: layer.log_format.unwrap_or(self.log_format),
            event_retention: layer.event_retention.unwrap_or(self.event_retention),
            record_retention: layer.record_retention.unwrap_or(self.record_retention),
            sweep_interval: layer.sweep_interval.unwrap_or(self.sweep_interval),
            lockout_threshold: layer.lockout_threshold.unwrap_or(self.lockout_threshold),
            lockout_window: layer.lockout_window.unwrap_or(self.lockout_window),
            lockout_duration: layer.lockout_duration.unwrap_or(self.lockout_duration),
            address_lockout_threshold: layer.address_lockout_threshold.unwrap_or(self.address_lockout_threshold),
            trusted_proxies: layer.trusted_proxies.unwrap_or(self.trusted_proxies),
        }
    }

    fn checked(self) -> Result<Self, ConfigError> {
        if self.access_token_ttl < Duration::from_secs(1) {
            return Err(ConfigError::OutOfRange("access_token_ttl must be at least 1s".into()));
        }
        if self.session_ttl < self.access_token_ttl {
            return Err(ConfigError::OutOfRange("session_ttl must be at least access_token_ttl".into()));
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
            record_retention: self.record_retention,
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
            ..IdentitySettings::default()
        }
    }

    /// The configuration as TOML, in the file format `--config` reads.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// A PostgreSQL connection string. It may hold a password, so `Debug` and
/// the printed configuration show it with the password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Accepts a `postgres://` / `postgresql://` URL or a libpq key=value string.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.parse::<tokio_postgres::Config>()
            .map(|_| Self(text.to_string()))
            // The parser's message never repeats the password.
            .map_err(|e| format!("invalid PostgreSQL connection string: {e}"))
    }

    /// The connection string itself, for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection string with any password replaced by `***`.
    pub fn masked(&self) -> String {
        let text = &self.0;
        if let Some(rest) = text.split_once("://").map(|(_, rest)| rest)
            && let Some((userinfo, _)) = rest.split_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            let start = text.len() - rest.len() + userinfo.len() - password.len();
            return format!("{}***{}", &text[..start], &text[start + password.len()..]);
        }
        text.split_whitespace()
            .map(|pair| if pair.starts_with("password=") { "password=***" } else { pair })
            .collect::<Vec<_>>()
            .join(" ")
    }
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
        Self::parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 15m, 30s, 30d)"))
}

fn duration_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
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

    #[test]
    fn database_passwords_are_masked_in_debug_and_print() {
        for (url, masked) in [
            ("postgres://sigil:s3cret@db:5432/sigil", "postgres://sigil:***@db:5432/sigil"),
            ("host=db user=sigil password=s3cret dbname=sigil", "host=db user=sigil password=*** dbname=sigil"),
            ("postgresql://sigil@db/sigil", "postgresql://sigil@db/sigil"),
        ] {
            let url = DatabaseUrl::parse(url).expect("valid");
            assert_eq!(format!("{url:?}"), masked);
            let config = Config { database_url: Some(url), ..Config::default() };
            assert!(!config.to_toml().contains("s3cret") && !format!("{config:?}").contains("s3cret"));
        }
        assert!(DatabaseUrl::parse("postgres://[").is_err());
    }

    #[test]
    fn printed_configuration_reads_back() {
        let config = Config::default();
        let file = file_with(&config.to_toml());
        let again = Config::load(Some(file.path()), ConfigLayer::default()).expect("round trip");
        assert_eq!(again.to_toml(), config.to_toml());
    }
}
