//! verifier-local: `Verifier::verify` in this process, on one core — a
//! token already in its signature cache, and distinct tokens (each verified
//! once, so each costs an Ed25519 verification) against the in-process
//! Ed25519 verify rate measured on the same thread, interleaved, three
//! rounds each.
//!
//! The denominator is like for like ([`ServiceDecode`]): the same distinct
//! server-minted tokens, decoded with `jsonwebtoken` into the claims struct
//! as a service would without the verifier. The earlier baseline (a
//! two-claim token decoded into `serde_json::Value`, [`ed25519_verify_rate`])
//! is still printed beside it, for continuity with earlier runs.
//!
//! Rates are per second of the measuring thread's own CPU time
//! ([`ThreadClock`]): on a shared host a wall-clock loop of 0.1 s also
//! counts the time it waited for a core, and ratios of such loops swing
//! from 0.7 to 2. The continuity line divides wall-clock rates, as before.

use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::try_join_all;
use sigil_verifier::Verifier;

use super::{Bench, Scenario};
use crate::{
    baseline::ed25519_verify_rate,
    client::{distinct_tokens, login},
    edge::{self, ServiceDecode, ThreadClock, listed, median, verdict},
    figures::Figures,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("verifier-local"), run: |bench| Box::pin(run(bench)) };

/// Target: cached verifications per second on one core.
const CACHED_TARGET: f64 = 2_000_000.0;
/// Target: distinct-token verify rate ÷ Ed25519 verify rate.
const DISTINCT_TARGET: f64 = 0.9;
const ROUNDS: usize = 3;

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let bearer = login(&bench.chans[0], "admin", bench.password).await?.access_token;
    let (verifier, _) = edge::follow(&bench.target.address, bearer, Duration::from_secs(30)).await?;
    // Distinct tokens from parallel refresh chains (no argon2 per token).
    let (chains, per_round) = if bench.quick { (4, 300) } else { (8, 3000) };
    let per_chain = (ROUNDS * per_round).div_ceil(chains);
    let mut refreshes = Vec::new();
    for _ in 0..chains {
        refreshes.push(login(&bench.chans[0], "admin", bench.password).await?.refresh_token);
    }
    let supplies = refreshes.iter().map(|refresh| distinct_tokens(bench.chans, refresh, per_chain));
    let distinct: Vec<String> = try_join_all(supplies).await?.into_iter().flatten().collect();
    let cached = bench.session.access_token.clone();
    let window = if bench.quick { Duration::from_millis(200) } else { Duration::from_millis(1000) };
    let issuer = verifier
        .verify(&cached, None)
        .map_err(|e| anyhow::anyhow!("verifier-local: the bench's own token is refused: {e}"))?
        .claims
        .iss
        .clone();
    let service = ServiceDecode::of_server(&bench.chans[0], &issuer, AUDIENCE).await?;

    // One blocking thread for every measurement: the same core as far as
    // the scheduler allows, while the runtime keeps the stream current.
    let measured = tokio::task::spawn_blocking(move || {
        let mut rounds = Vec::new();
        for round in distinct.chunks(per_round).take(ROUNDS) {
            let old_baseline = ed25519_verify_rate();
            let baseline = service_rate(&service, round);
            rounds.push(Measured {
                cached: cached_rate(&verifier, &cached, window),
                distinct: distinct_rate(&verifier, round),
                baseline,
                old_baseline,
            });
        }
        rounds
    })
    .await?;
    if let Some(refused) = measured.iter().find(|r| r.baseline.errors > 0) {
        anyhow::bail!("verifier-local: the baseline decode refused {} server tokens", refused.baseline.errors);
    }
    let cached_rates: Vec<f64> = measured.iter().map(|r| r.cached.rate).collect();
    let distinct_rates: Vec<f64> = measured.iter().map(|r| r.distinct.rate).collect();
    let ratios: Vec<f64> = measured.iter().map(|r| r.distinct.rate / r.baseline.rate).collect();
    let baselines: Vec<f64> = measured.iter().map(|r| r.baseline.rate).collect();
    let old_ratios: Vec<f64> = measured.iter().map(|r| r.distinct.wall_rate / r.old_baseline).collect();
    let old_baselines: Vec<f64> = measured.iter().map(|r| r.old_baseline).collect();
    let per_s = |r: f64| format!("{r:.0}");
    let cached = median(cached_rates.clone());
    println!(
        "verifier-local cached token: {cached:.0} verifies per CPU-second on one core ({}); target ≥ {CACHED_TARGET:.0}: {}",
        listed(&cached_rates, per_s),
        verdict(cached >= CACHED_TARGET)
    );
    let ratio = median(ratios.clone());
    println!(
        "verifier-local distinct tokens: {:.0} verifies per CPU-second vs Ed25519 verify {:.0} (jsonwebtoken decode of the same server tokens into their claims struct) ({} vs {}); ratio {ratio:.2} ({}); target ≥ {DISTINCT_TARGET}: {}",
        median(distinct_rates.clone()),
        median(baselines.clone()),
        listed(&distinct_rates, per_s),
        listed(&baselines, per_s),
        listed(&ratios, |r| format!("{r:.2}")),
        verdict(ratio >= DISTINCT_TARGET)
    );
    println!(
        "verifier-local distinct tokens vs the earlier baseline (a two-claim token into serde_json::Value, {:.0}/s: {}): ratio {:.2} ({}), wall clock, for continuity",
        median(old_baselines.clone()),
        listed(&old_baselines, per_s),
        median(old_ratios.clone()),
        listed(&old_ratios, |r| format!("{r:.2}")),
    );
    let total = |name: &str, pick: fn(&Measured) -> &Round| {
        let (ok, errors, elapsed) = measured
            .iter()
            .map(pick)
            .fold((0, 0, Duration::ZERO), |(o, e, t), r| (o + r.ok, e + r.errors, t + r.elapsed));
        edge::figures(name, ok, errors, elapsed, None)
    };
    Ok(vec![total("verifier-local-cached", |r| &r.cached), total("verifier-local-distinct", |r| &r.distinct)])
}

/// The audience every verify of this scenario asks for.
const AUDIENCE: &str = "sigil";

/// One round's loops.
struct Measured {
    cached: Round,
    distinct: Round,
    /// The like-for-like baseline, on the same tokens as `distinct`.
    baseline: Round,
    /// The earlier baseline, verifies per second of wall clock.
    old_baseline: f64,
}

/// One measured loop: verdicts as expected, otherwise, and its time.
struct Round {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    /// Per second of the thread's CPU time.
    rate: f64,
    /// Per second of wall clock.
    wall_rate: f64,
}

impl Round {
    fn new(ok: u64, errors: u64, clock: &ThreadClock) -> Self {
        let (elapsed, cpu) = clock.read();
        let count = (ok + errors) as f64;
        Self { ok, errors, elapsed, rate: count / cpu.as_secs_f64(), wall_rate: count / elapsed.as_secs_f64() }
    }
}

/// Verifies the same (cached) token for `window`. Never inlined, here and
/// below, so that a profile (callgrind `--toggle-collect`) can single out
/// each loop.
#[inline(never)]
fn cached_rate(verifier: &Arc<Verifier>, token: &str, window: Duration) -> Round {
    let (mut ok, mut total) = (0u64, 0u64);
    let clock = ThreadClock::start();
    let started = Instant::now();
    while started.elapsed() < window {
        for _ in 0..1024 {
            ok += u64::from(black_box(verifier.verify(black_box(token), Some(AUDIENCE))).is_ok());
        }
        total += 1024;
    }
    Round::new(ok, total - ok, &clock)
}

/// Verifies each of `tokens` once: every one a signature-cache miss.
#[inline(never)]
fn distinct_rate(verifier: &Arc<Verifier>, tokens: &[String]) -> Round {
    let clock = ThreadClock::start();
    let ok = tokens.iter().filter(|t| black_box(verifier.verify(t, Some(AUDIENCE))).is_ok()).count() as u64;
    Round::new(ok, tokens.len() as u64 - ok, &clock)
}

/// Decodes each of `tokens` once as a service would without the verifier.
#[inline(never)]
fn service_rate(service: &ServiceDecode, tokens: &[String]) -> Round {
    let clock = ThreadClock::start();
    let ok = tokens.iter().filter(|t| black_box(service.decode(t))).count() as u64;
    Round::new(ok, tokens.len() as u64 - ok, &clock)
}
