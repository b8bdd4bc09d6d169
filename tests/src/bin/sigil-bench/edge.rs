//! What the `verifier-*` scenarios share: a `sigil-verifier` following a
//! server from inside this process, the `reader` user the example service
//! admits, the like-for-like Ed25519 baseline ([`ServiceDecode`]), the
//! measuring thread's CPU time ([`ThreadClock`]), and the small arithmetic
//! of their figures (medians of three, rates without a latency histogram, a
//! target met or missed).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use sigil_proto::pb::{self, admin_service_client::AdminServiceClient, identity_service_client::IdentityServiceClient};
use sigil_verifier::{AccessClaims, Verifier, VerifierConfig};
use tonic::{Code, transport::Channel};

use crate::{
    client::{admin_request, login},
    figures::Figures,
};

/// The user whose tokens the example service admits (role `reader`).
pub(crate) const READER: &str = "bench-reader";
const READER_PASSWORD: &str = "bench-reader-password";

/// A verifier following the server at `address` (`http://…`) with `bearer`,
/// current, and how long that took (connect → snapshot loaded).
pub(crate) async fn follow(
    address: &str,
    bearer: String,
    limit: Duration,
) -> anyhow::Result<(Arc<Verifier>, Duration)> {
    let endpoint = tonic::transport::Endpoint::from_shared(address.to_string())?.tcp_nodelay(true);
    let started = Instant::now();
    let verifier = Arc::new(Verifier::start(VerifierConfig::new(endpoint, bearer)));
    verifier
        .wait_until_current(limit)
        .await
        .map_err(|e| anyhow::anyhow!("the verifier following {address} is not current after {limit:?}: {e}"))?;
    Ok((verifier, started.elapsed()))
}

/// Creates [`READER`] on the server behind `channel` (unless it exists) and
/// logs it in.
pub(crate) async fn reader(channel: &Channel, admin_token: &str) -> anyhow::Result<pb::AuthenticateResponse> {
    let request = pb::CreateUserRequest {
        username: READER.into(),
        password: READER_PASSWORD.into(),
        roles: vec![sigil_example_service::REQUIRED_ROLE.into()],
    };
    match AdminServiceClient::new(channel.clone()).create_user(admin_request(request, admin_token)).await {
        Ok(_) => {}
        Err(status) if status.code() == Code::AlreadyExists => {}
        Err(status) => anyhow::bail!("creating {READER}: {status}"),
    }
    login(channel, READER, READER_PASSWORD).await
}

/// The in-process Ed25519 verify a service would do without Sigil's
/// verifier: `jsonwebtoken::decode` of the server's own tokens (same
/// header, same claim set) into the claims struct, with the server's public
/// key from its JWKS and the usual checks (signature, `exp`, `iss`, `aud`).
/// The denominator of "distinct tokens ÷ in-process Ed25519 verify".
pub(crate) struct ServiceDecode {
    keys: Vec<(String, DecodingKey)>,
    validation: Validation,
}

impl ServiceDecode {
    /// The server's current keys (`GetJwks`), accepting tokens of `issuer`
    /// for `audience`.
    pub(crate) async fn of_server(channel: &Channel, issuer: &str, audience: &str) -> anyhow::Result<Self> {
        let jwks = IdentityServiceClient::new(channel.clone()).get_jwks(pb::GetJwksRequest {}).await?.into_inner();
        let set: JwkSet = serde_json::from_str(&jwks.jwks_json)?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            keys.push((jwk.common.key_id.clone().unwrap_or_default(), DecodingKey::from_jwk(jwk)?));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Ok(Self { keys, validation })
    }

    /// Decodes `token` as such a service would: its `kid` picks the key.
    pub(crate) fn decode(&self, token: &str) -> bool {
        let Ok(header) = jsonwebtoken::decode_header(token) else { return false };
        let Some((_, key)) = self.keys.iter().find(|(kid, _)| header.kid.as_deref() == Some(kid.as_str())) else {
            return false;
        };
        jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation).is_ok()
    }
}

/// The median of three (or any number of) samples.
pub(crate) fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

/// Samples as printed beside a median: `a, b, c`.
pub(crate) fn listed(samples: &[f64], unit: impl Fn(f64) -> String) -> String {
    samples.iter().map(|s| unit(*s)).collect::<Vec<_>>().join(", ")
}

/// `met` or `MISSED`.
pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// The figures of an in-process scenario: counts only, or with `latency`.
pub(crate) fn figures(
    name: &str,
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Option<Histogram<u64>>,
) -> Figures {
    Figures {
        name: name.to_string(),
        requests,
        errors,
        elapsed,
        latency: latency
            .unwrap_or_else(|| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))),
        server_cpu: None,
    }
}

/// Wall time and the calling thread's own CPU time since [`ThreadClock::start`].
/// A loop on one thread divided by its CPU time is its rate on one core,
/// whatever else the machine runs: on a shared host the wall clock also
/// counts the time the thread waited for a core.
pub(crate) struct ThreadClock {
    wall: Instant,
    cpu: Option<Duration>,
}

impl ThreadClock {
    pub(crate) fn start() -> Self {
        Self { wall: Instant::now(), cpu: thread_cpu_time() }
    }

    /// `(wall, cpu)` so far; `cpu` is the wall time where the kernel does
    /// not report the thread's CPU time.
    pub(crate) fn read(&self) -> (Duration, Duration) {
        let wall = self.wall.elapsed();
        let cpu = self.cpu.zip(thread_cpu_time()).map_or(wall, |(start, now)| now.saturating_sub(start));
        (wall, cpu)
    }
}

/// The calling thread's time on a CPU (`/proc/thread-self/schedstat`, ns).
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?))
}

/// Resident memory of this process, in bytes.
pub(crate) fn own_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
