//! verifier-snapshot (opt-in: seeding takes a while): a server whose store
//! holds 1,000,000 live revocation entries (`--quick`: 10,000), and three
//! verifiers in this process connecting to it in turn: the time from
//! connect to current (the snapshot loaded), and the memory each holds —
//! the growth of this process's RSS while it loaded, with the entries it
//! reports holding.

use std::time::Duration;

use super::{Bench, Scenario};
use crate::{
    client::login,
    edge::{self, listed, median, own_rss, verdict},
    figures::Figures,
    seed::seed_revocations,
    target::{Target, channels},
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("verifier-snapshot"), run: |bench| Box::pin(run(bench)) };

/// Target: the verifier's memory with the entries.
const MEMORY_TARGET_MIB: f64 = 64.0;
/// Target: connect → current.
const SNAPSHOT_TARGET: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;

/// Waits until the seeding store's threads (its group commit and its
/// high-water mark) have let go of it: they end a moment after the store
/// is dropped, and sled refuses a second opener while its file is locked
/// ("could not acquire lock on .../db").
async fn released(dir: &std::path::Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(dir.join("db"))?;
    for _ in 0..100 {
        if file.try_lock().is_ok() {
            file.unlock()?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the seeded store in {} is still locked after 5 s", dir.display())
}

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let entries = if bench.quick { 10_000 } else { 1_000_000 };
    let dir = tempfile::tempdir()?;
    // Live well past the run: the server keeps them, the verifiers take them.
    seed_revocations(dir.path(), entries, Duration::from_secs(3600)).await?;
    released(dir.path()).await?;
    let server = Target::start(Some(dir.path()), None).await?;
    let chan = channels(&server.address, 1).await?.remove(0);
    let bearer = login(&chan, "admin", bench.password).await?.access_token;
    if let Some(rss) = server.rss_mib() {
        println!("verifier-snapshot: server RSS with {entries} revocation entries: {rss:.1} MiB");
    }

    let (mut times, mut memory, mut errors) = (Vec::new(), Vec::new(), 0);
    let started = std::time::Instant::now();
    for _ in 0..ROUNDS {
        let before = own_rss().unwrap_or(0);
        let (verifier, took) = edge::follow(&server.address, bearer.clone(), Duration::from_secs(60)).await?;
        let after = own_rss().unwrap_or(0);
        let held = verifier.state().entries;
        if held != entries {
            errors += 1;
            println!("verifier-snapshot: the verifier holds {held} entries, not {entries}");
        }
        times.push(took.as_secs_f64());
        memory.push(after.saturating_sub(before) as f64 / f64::from(1 << 20));
        drop(verifier);
        // Let the stream task end and its memory go before the next round.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (took, mib) = (median(times.clone()), median(memory.clone()));
    println!(
        "verifier-snapshot: {entries} entries, connect → current {took:.3} s ({}); target ≤ {SNAPSHOT_TARGET:?}: {}",
        listed(&times, |t| format!("{t:.3}")),
        verdict(took <= SNAPSHOT_TARGET.as_secs_f64())
    );
    println!(
        "verifier-snapshot: verifier memory (RSS growth while loading) {mib:.1} MiB ({}); target ≤ {MEMORY_TARGET_MIB} MiB: {}",
        listed(&memory, |m| format!("{m:.1}")),
        verdict(mib <= MEMORY_TARGET_MIB)
    );
    Ok(vec![edge::figures("verifier-snapshot", ROUNDS as u64 - errors, errors, started.elapsed(), None)])
}
