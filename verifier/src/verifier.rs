//! [`Verifier`]: judges tokens locally with the server's rules, against
//! the keys and revocations the stream keeps current.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use sigil_token_rules::{MAX_ACCESS_TOKEN_BYTES, SignedToken, TokenRules, ValidationFailure, check_audience};

use crate::{
    config::{VerifierConfig, WhenStale},
    follow,
    keys::KeySet,
    remote::RemoteValidate,
    revocations::RevocationSet,
    state::{StreamState, VerifierState},
};

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The token is not valid: the same verdict `Validate` gives.
    #[error("{}", .0.text())]
    Invalid(ValidationFailure),
    /// The verifier cannot know: it has not heard from the server for
    /// longer than its staleness bound (or never did). Retry later.
    #[error("the token verifier is not current with the identity service")]
    Stale,
}

/// A verified signature, cached per exact token string with the key set
/// it was verified against. Held by value in the cache (a hit clones one
/// `Arc`), not behind a second `Arc`.
#[derive(Clone)]
struct Cached {
    token: Arc<SignedToken>,
    key_generation: u64,
}

/// What the stream task and the verify path share.
pub(crate) struct Shared {
    pub(crate) rules: TokenRules,
    pub(crate) keys: ArcSwap<KeySet>,
    pub(crate) revocations: RwLock<RevocationSet>,
    pub(crate) stream: StreamState,
    cache: quick_cache::sync::Cache<String, Cached>,
}

/// Verifies Sigil access tokens inside a service.
///
/// Started with [`Verifier::start`], it follows `WatchRevocations` in the
/// background: loads the snapshot, applies each revocation as it commits,
/// takes every new key set, reconnects with backoff and resumes where it
/// stopped. [`Verifier::verify`] is synchronous: a cached token costs a few
/// hash look-ups. Dropping the verifier stops the stream.
pub struct Verifier {
    shared: Arc<Shared>,
    when_stale: WhenStale,
    remote: RemoteValidate,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Verifier {
    /// Starts following the server (in the current tokio runtime). Tokens
    /// are refused as [`Refusal::Stale`] until the first snapshot arrived:
    /// await [`Verifier::wait_until_current`] before serving.
    pub fn start(config: VerifierConfig) -> Self {
        let shared = Arc::new(Shared {
            rules: TokenRules::new(&config.issuer, config.max_token_lifetime, config.leeway),
            keys: ArcSwap::from_pointee(KeySet::empty()),
            revocations: RwLock::new(RevocationSet::default()),
            stream: StreamState::new(config.max_staleness),
            cache: quick_cache::sync::Cache::new(config.signature_cache_capacity.max(1)),
        });
        let remote = RemoteValidate::new(&config.endpoint);
        let tasks = vec![
            tokio::spawn(follow::follow(shared.clone(), config.clone())),
            tokio::spawn(follow::maintain(shared.clone())),
        ];
        Self { shared, when_stale: config.when_stale, remote, tasks }
    }

    /// Waits until the verifier is current, at most `limit`.
    pub async fn wait_until_current(&self, limit: Duration) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.shared.stream.is_current() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Refusal::Stale);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Judges `token` locally, for `audience` when given: the verdict
    /// `Validate` would give, or [`Refusal::Stale`] when the verifier
    /// cannot know. Synchronous and allocation-free for a cached token.
    pub fn verify(&self, token: &str, audience: Option<&str>) -> Result<Arc<SignedToken>, Refusal> {
        if !self.shared.stream.is_current() {
            self.shared.stream.metrics.stale_refusals.inc();
            return Err(Refusal::Stale);
        }
        self.shared.judge(token, audience).map_err(Refusal::Invalid)
    }

    /// [`Verifier::verify`], but when stale and configured with
    /// [`WhenStale::RemoteValidate`], asks the server's `Validate`.
    pub async fn verify_or_fallback(&self, token: &str, audience: Option<&str>) -> Result<Arc<SignedToken>, Refusal> {
        match self.verify(token, audience) {
            Err(Refusal::Stale) if self.when_stale == WhenStale::RemoteValidate => {
                self.remote.validate(token, audience).await
            }
            verdict => verdict,
        }
    }

    /// Where the stream is.
    pub fn state(&self) -> VerifierState {
        let entries = self.shared.revocations.read().unwrap_or_else(PoisonError::into_inner).len();
        self.shared.stream.view(entries, self.shared.keys.load().len())
    }

    /// Registers the verifier's metrics (connected, current, sequence,
    /// entries, keys, time since last news, lag, snapshots, connections,
    /// stale refusals) in `registry`, e.g. a `sub_registry_with_prefix("sigil_verifier")`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.shared.stream.metrics.register(registry);
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Shared {
    /// The server's order of checks: signature and shape (cached), time
    /// window, audience, then revocations.
    fn judge(&self, token: &str, audience: Option<&str>) -> Result<Arc<SignedToken>, ValidationFailure> {
        let signed = self.verify_signature(token)?;
        self.rules.check_time(&signed.claims, unix_now())?;
        check_audience(&signed.claims, audience)?;
        let revoked = self.revocations.read().unwrap_or_else(PoisonError::into_inner).check(&signed);
        revoked.map_or(Ok(signed), Err)
    }

    fn verify_signature(&self, token: &str) -> Result<Arc<SignedToken>, ValidationFailure> {
        if token.len() > MAX_ACCESS_TOKEN_BYTES {
            return Err(ValidationFailure::Malformed);
        }
        let keys = self.keys.load();
        if let Some(hit) = self.cache.get(token)
            && hit.key_generation == keys.generation()
        {
            return Ok(hit.token);
        }
        let signed = Arc::new(self.rules.verify_signature(token, &**keys)?);
        self.cache.insert(token.to_string(), Cached { token: signed.clone(), key_generation: keys.generation() });
        Ok(signed)
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
