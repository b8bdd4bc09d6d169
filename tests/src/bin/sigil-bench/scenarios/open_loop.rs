//! open-loop (with `--rate`): validate-hot at a fixed arrival rate, and the
//! bare health Check at the same rate beside it, in the same run, so that
//! the generator's and the machine's own queueing (which both calls pay)
//! can be told from Sigil's.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{Bench, Scenario};
use crate::{
    client::login,
    figures::Figures,
    target::{Target, process_cpu},
};

/// Selected by `--rate`, not by `--only`.
pub(super) const SCENARIO: Scenario = Scenario { name: None, run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let Some(rate) = bench.rate else { return Ok(Vec::new()) };
    let hot = Arc::new(login(&bench.chans[0], "admin", bench.password).await?.access_token);
    let validate = open_loop(bench.target, bench.chans, rate, bench.duration, OpenLoopCall::Validate(hot)).await;
    let health = open_loop(bench.target, bench.chans, rate, bench.duration, OpenLoopCall::Health).await;
    Ok(vec![validate, health])
}

/// The call an open-loop run sends.
#[derive(Clone)]
pub(super) enum OpenLoopCall {
    /// `Validate` of this (cached, valid) token; a refusal counts as an error.
    Validate(Arc<String>),
    /// The bare `grpc.health.v1.Health/Check`.
    Health,
}

impl OpenLoopCall {
    fn name(&self) -> &'static str {
        match self {
            Self::Validate(_) => "validate-hot",
            Self::Health => "health",
        }
    }

    /// Sends the call once on `channel`: whether it got the expected answer.
    async fn send(self, channel: Channel) -> bool {
        match self {
            Self::Validate(token) => IdentityServiceClient::new(channel)
                .validate(pb::ValidateRequest { token: token.to_string(), audience: None })
                .await
                .is_ok_and(|r| r.into_inner().valid),
            Self::Health => {
                HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.is_ok()
            }
        }
    }
}

/// `call` at a fixed arrival rate: requests are sent on schedule whatever
/// the latency, and each latency is measured from its scheduled time, so a
/// stall shows up instead of being hidden (no coordinated omission) — a
/// generator that falls behind its schedule is charged for it too.
pub(super) async fn open_loop(
    target: &Target,
    chans: &[Channel],
    rate: u64,
    duration: Duration,
    call: OpenLoopCall,
) -> Figures {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let name = format!("open-loop {} {rate}/s", call.name());
    let cpu_before = target.cpu();
    let own_cpu_before = process_cpu(std::process::id());
    let started = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let total = (duration.as_secs_f64() * rate as f64) as u64;
    // Requests are paced by an OS thread that wakes every ~50 µs and sends
    // whatever has come due: tokio's timer has a 1 ms resolution, which
    // would release requests in bursts and add up to 1 ms of the
    // generator's own lag to every latency (measured from the scheduled
    // send time, so that a slow server cannot hide behind a slow sender).
    let runtime = tokio::runtime::Handle::current();
    let chans = chans.to_vec();
    let pacer = std::thread::spawn(move || {
        let mut i: u64 = 0;
        while i < total {
            let now = Instant::now();
            while i < total && started + interval * i as u32 <= now {
                let scheduled = started + interval * i as u32;
                let (channel, call, tx) = (chans[i as usize % chans.len()].clone(), call.clone(), tx.clone());
                runtime.spawn(async move {
                    let ok = call.send(channel).await;
                    let _ = tx.send(ok.then(|| scheduled.elapsed().as_nanos() as u64));
                });
                i += 1;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    });
    let mut figures = Figures {
        name,
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new(3).unwrap_or_else(|_| unreachable!("valid")),
        server_cpu: None,
    };
    while let Some(outcome) = rx.recv().await {
        match outcome {
            Some(nanos) => {
                figures.requests += 1;
                let _ = figures.latency.record(nanos);
            }
            None => figures.errors += 1,
        }
    }
    let _ = pacer.join();
    let figures = figures.finish(started, cpu_before, target);
    // The generator's own CPU: a client near a full core queues requests
    // itself, and that queueing lands in every latency above.
    if let Some((before, after)) = own_cpu_before.zip(process_cpu(std::process::id())) {
        let cpu = after.saturating_sub(before);
        println!(
            "  this bench as the client: {:.1} µs CPU/call, {:.0} % of a core",
            cpu.as_secs_f64() * 1e6 / figures.requests.max(1) as f64,
            cpu.as_secs_f64() * 100.0 / figures.elapsed.as_secs_f64()
        );
    }
    figures
}
