//! What a [`Verifier`](crate::Verifier) needs to know: where Sigil is, how
//! to authenticate its stream, and the token rules of that Sigil.

use std::{fmt, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use tonic::transport::Endpoint;

/// The verifier's own credential for `WatchRevocations`: an access token
/// of a user (or service account) with role `verifier` or `admin`.
///
/// It is asked for again on every (re)connection, so a source can hand out
/// a fresh token when the last one expired. A `String` is a fixed token.
pub trait BearerSource: Send + Sync + 'static {
    /// The access token to present on the next connection.
    fn bearer(&self) -> BoxFuture<'_, Result<String, tonic::Status>>;
}

impl BearerSource for String {
    fn bearer(&self) -> BoxFuture<'_, Result<String, tonic::Status>> {
        Box::pin(async move { Ok(self.clone()) })
    }
}

/// What to do when the verifier cannot know whether it is current (no
/// heartbeat or entry for [`VerifierConfig::max_staleness`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenStale {
    /// Refuse every token ([`Refusal::Stale`](crate::Refusal::Stale)).
    #[default]
    FailClosed,
    /// Ask the server's `Validate` per token, in the async paths
    /// ([`Verifier::verify_or_fallback`](crate::Verifier::verify_or_fallback)
    /// and the layer); if that fails too, refuse as stale.
    RemoteValidate,
}

/// The settings of a [`Verifier`](crate::Verifier).
#[derive(Clone)]
pub struct VerifierConfig {
    /// Sigil's gRPC endpoint.
    pub endpoint: Endpoint,
    /// The verifier's credential for the stream.
    pub bearer: Arc<dyn BearerSource>,
    /// `iss` of the tokens to accept: the server's `--issuer`.
    pub issuer: String,
    /// The server's `--access-token-ttl`: a token living longer was not
    /// minted by it.
    pub max_token_lifetime: Duration,
    /// The server's `--leeway` on `exp`/`nbf`.
    pub leeway: Duration,
    /// How long without a heartbeat or entry the verifier still trusts its
    /// copy (the server sends a heartbeat every second).
    pub max_staleness: Duration,
    /// Fail closed, or fall back to `Validate`, when stale.
    pub when_stale: WhenStale,
    /// Verified signatures kept (per exact token string).
    pub signature_cache_capacity: usize,
    /// The first wait before reconnecting; doubled up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// The longest wait between reconnections.
    pub reconnect_max: Duration,
}

impl VerifierConfig {
    /// The settings for following the Sigil at `endpoint` with `bearer`,
    /// with the server's defaults for the token rules (issuer `sigil`, a
    /// 15-minute TTL, no leeway) and a 5-second staleness bound.
    pub fn new(endpoint: Endpoint, bearer: impl BearerSource) -> Self {
        Self {
            endpoint,
            bearer: Arc::new(bearer),
            issuer: "sigil".to_string(),
            max_token_lifetime: Duration::from_secs(15 * 60),
            leeway: Duration::ZERO,
            max_staleness: Duration::from_secs(5),
            when_stale: WhenStale::FailClosed,
            signature_cache_capacity: 100_000,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
        }
    }

    /// Accept tokens of `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The server's access-token TTL.
    pub fn max_token_lifetime(mut self, ttl: Duration) -> Self {
        self.max_token_lifetime = ttl;
        self
    }

    /// The server's clock leeway.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long the verifier trusts its copy without news.
    pub fn max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness;
        self
    }

    /// What to do when stale.
    pub fn when_stale(mut self, when_stale: WhenStale) -> Self {
        self.when_stale = when_stale;
        self
    }
}

// The bearer is a credential: never printed.
impl fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierConfig")
            .field("endpoint", &self.endpoint.uri())
            .field("bearer", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("leeway", &self.leeway)
            .field("max_staleness", &self.max_staleness)
            .field("when_stale", &self.when_stale)
            .finish_non_exhaustive()
    }
}
