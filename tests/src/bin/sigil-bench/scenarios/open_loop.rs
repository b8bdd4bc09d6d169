//! open-loop (with `--rate`): validate-hot at a fixed arrival rate.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};
use tonic::transport::Channel;

use super::{Bench, Scenario};
use crate::{client::login, figures::Figures, target::Target};

/// Selected by `--rate`, not by `--only`.
pub(super) const SCENARIO: Scenario = Scenario { name: None, run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let Some(rate) = bench.rate else { return Ok(Vec::new()) };
    let hot = Arc::new(login(&bench.chans[0], "admin", bench.password).await?.access_token);
    Ok(vec![open_loop(bench.target, bench.chans, rate, bench.duration, hot).await])
}

/// validate-hot at a fixed arrival rate: requests are sent on schedule
/// whatever the latency, and each latency is measured from its scheduled
/// time, so a stall shows up instead of being hidden (no coordinated omission).
async fn open_loop(target: &Target, chans: &[Channel], rate: u64, duration: Duration, token: Arc<String>) -> Figures {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let cpu_before = target.cpu();
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
                let (channel, token, tx) = (chans[i as usize % chans.len()].clone(), token.clone(), tx.clone());
                runtime.spawn(async move {
                    let r = IdentityServiceClient::new(channel)
                        .validate(pb::ValidateRequest { token: token.to_string(), audience: None })
                        .await;
                    let ok = r.is_ok_and(|r| r.into_inner().valid);
                    let _ = tx.send(ok.then(|| scheduled.elapsed().as_nanos() as u64));
                });
                i += 1;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    });
    let mut figures = Figures {
        name: format!("open-loop {rate}/s"),
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
    figures.finish(started, cpu_before, target)
}
