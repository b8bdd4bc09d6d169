//! The closed-loop load generator every throughput scenario runs on.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::{figures::Figures, target::ServerCpu};

/// Runs `call` closed-loop on `connections × streams` workers for
/// `duration`, or until `call` says there is no more work (`None`).
pub(crate) async fn drive<F, Fut>(
    name: &str,
    target: &(impl ServerCpu + ?Sized),
    channels: &[Channel],
    streams: usize,
    duration: Duration,
    call: F,
) -> Figures
where
    F: Fn(Channel, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<bool>> + Send,
{
    let counter = Arc::new(AtomicU64::new(0));
    let cpu_before = target.cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for channel in channels {
        for _ in 0..streams {
            let (channel, call, counter) = (channel.clone(), call.clone(), counter.clone());
            workers.push(tokio::spawn(async move {
                let mut latency =
                    Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"));
                let (mut ok, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    match call(channel.clone(), n).await {
                        Some(true) => {
                            ok += 1;
                            let _ = latency.record(t.elapsed().as_nanos() as u64);
                        }
                        Some(false) => errors += 1,
                        None => break,
                    }
                }
                (ok, errors, latency)
            }));
        }
    }
    let mut figures = Figures {
        name: name.to_string(),
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new(3).unwrap_or_else(|_| unreachable!("valid")),
        server_cpu: None,
    };
    for worker in workers {
        if let Ok((ok, errors, latency)) = worker.await {
            figures.requests += ok;
            figures.errors += errors;
            let _ = figures.latency.add(latency);
        }
    }
    figures.finish(started, cpu_before, target)
}
