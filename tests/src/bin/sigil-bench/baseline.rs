//! In-process and external baselines, measured once per run, that the
//! closing ratios divide by: Ed25519 verify rate, argon2id verify time and,
//! when installed, Redis GET throughput at the same concurrency.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

/// The baselines of one run.
pub(crate) struct Baselines {
    /// Ed25519 verifications per second on one core.
    pub(crate) verify_rate: f64,
    /// One argon2id verification (the median of a few).
    pub(crate) argon2_time: Duration,
    /// Redis GET requests per second, if Redis is installed.
    pub(crate) redis: Option<f64>,
}

impl Baselines {
    /// Measures every baseline, Redis at `clients` concurrency, and prints them.
    pub(crate) async fn measure(clients: usize, quick: bool) -> Self {
        let verify_rate = ed25519_verify_rate();
        let argon2_time = argon2_verify_time();
        println!("baseline: Ed25519 verify {verify_rate:.0}/s on one core");
        println!("baseline: argon2id verify {argon2_time:?} (OWASP parameters)");
        let redis = redis_get_rate(clients, quick).await;
        match redis {
            Some(rate) => println!("baseline: Redis GET {rate:.0} req/s (redis-benchmark, {clients} clients)\n"),
            None => println!("baseline: Redis GET not measured (redis-server or redis-benchmark not installed)\n"),
        }
        Self { verify_rate, argon2_time, redis }
    }
}

/// Redis GET throughput from `redis-benchmark` at `clients` concurrency,
/// against a throwaway `redis-server` on a free loopback port, if both are
/// installed.
async fn redis_get_rate(clients: usize, quick: bool) -> Option<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port().to_string();
    let mut server = tokio::process::Command::new("redis-server")
        .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = if quick { "50000" } else { "1000000" };
    let output = tokio::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "get", "-n", requests, "-c", &clients.to_string(), "--csv"])
        .output()
        .await
        .ok();
    let _ = server.kill().await;
    let text = String::from_utf8_lossy(&output?.stdout).to_string();
    // "GET","123456.79",... (the header line names the columns)
    let line = text.lines().find(|l| l.starts_with("\"GET"))?;
    line.split(',').nth(1)?.trim_matches('"').parse().ok()
}

/// Ed25519 JWT verifications per second on the calling thread
/// (`jsonwebtoken` + aws-lc-rs, the backend `Validate` and the verifier use).
pub(crate) fn ed25519_verify_rate() -> f64 {
    use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
    let record = sigil_server::domain::keys::SigningKeyRecord::generate_ed25519(sigil_server::domain::Timestamp::now());
    let Ok(record) = record else { return 0.0 };
    let Ok(ring) = sigil_server::domain::keys::KeyRing::from_records(std::slice::from_ref(&record)) else { return 0.0 };
    let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
    let Ok(token) = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &ring.active().encoding) else {
        return 0.0;
    };
    let Ok(key) = DecodingKey::from_ed_components(&record.public_x) else { return 0.0 };
    let validation = Validation::new(Algorithm::EdDSA);
    let n = 3000;
    let start = Instant::now();
    for _ in 0..n {
        let _ = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn argon2_verify_time() -> Duration {
    use argon2::{Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString};
    let Ok(salt) = SaltString::encode_b64(b"benchmark-salt-16") else { return Duration::ZERO };
    let Ok(hash) = Argon2::default().hash_password(b"password", &salt) else { return Duration::ZERO };
    let phc = hash.to_string();
    let Ok(parsed) = PasswordHash::new(&phc) else { return Duration::ZERO };
    let mut samples: Vec<Duration> = (0..7)
        .map(|_| {
            let t = Instant::now();
            let _ = Argon2::default().verify_password(b"password", &parsed);
            t.elapsed()
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}
