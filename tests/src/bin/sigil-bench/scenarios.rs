//! The scenarios, one module each, behind one small interface: a
//! [`Scenario`] has a name (what `--only` selects) and a `run` that drives
//! it against the [`Bench`] and returns its figures (printed as they come).
//! [`ALL`] lists them in the order a run takes them.

mod authenticate;
mod envoy_callgrind;
mod flood;
mod gateways;
mod grpc_h2load;
mod health;
mod list_sessions;
mod mixed;
mod oauth;
mod open_loop;
mod oversized;
mod propagation;
mod refresh;
mod revoke;
mod scaleout;
mod validate_cold;
mod validate_hot;
mod verifier_local;
mod verifier_revoke;
mod verifier_service;
mod verifier_snapshot;

use std::time::Duration;

use futures::future::LocalBoxFuture;
use sigil_proto::pb;
use tonic::transport::Channel;

use crate::{figures::Figures, target::Target};

/// What every scenario runs against: the server, the connections and the
/// load shape of this run.
pub(crate) struct Bench<'a> {
    pub(crate) target: &'a Target,
    /// The run's HTTP/2 connections.
    pub(crate) chans: &'a [Channel],
    pub(crate) connections: usize,
    /// Concurrent streams per connection.
    pub(crate) streams: usize,
    /// How long each scenario drives its load.
    pub(crate) duration: Duration,
    /// A smoke run: small data.
    pub(crate) quick: bool,
    /// The password of `admin`.
    pub(crate) password: &'a str,
    /// The admin session logged in before the first scenario.
    pub(crate) session: &'a pb::AuthenticateResponse,
    /// `--rate`: the open-loop arrival rate.
    pub(crate) rate: Option<u64>,
    /// `--database-url`: the servers share this PostgreSQL database.
    pub(crate) database_url: Option<&'a str>,
}

/// Runs a scenario; it may return no figures when this run does not apply
/// (propagation without a database).
pub(crate) type Run = for<'a> fn(&'a Bench<'a>) -> LocalBoxFuture<'a, anyhow::Result<Vec<Figures>>>;

/// One scenario.
pub(crate) struct Scenario {
    /// The name `--only` selects it by; `None` for open-loop, which
    /// `--rate` selects instead.
    pub(crate) name: Option<&'static str>,
    pub(crate) run: Run,
}

/// Scenarios that run only when `--only` names them: they need outside
/// tools (the proxies, valgrind, h2load, PostgreSQL for scaleout) or a long
/// setup (a million revocations seeded, three instances measured three
/// times, Envoy under callgrind), so the default run and CI's `--quick` skip
/// them.
pub(crate) const OPT_IN: [&str; 5] = ["gateways", "envoy-callgrind", "h2load", "verifier-snapshot", "scaleout"];

/// Every scenario, in the order a run takes them.
pub(crate) const ALL: [Scenario; 21] = [
    health::SCENARIO,
    validate_hot::SCENARIO,
    validate_cold::SCENARIO,
    authenticate::SCENARIO,
    refresh::SCENARIO,
    revoke::SCENARIO,
    mixed::SCENARIO,
    flood::SCENARIO,
    oversized::SCENARIO,
    open_loop::SCENARIO,
    list_sessions::SCENARIO,
    oauth::SCENARIO,
    propagation::SCENARIO,
    scaleout::SCENARIO,
    gateways::SCENARIO,
    envoy_callgrind::SCENARIO,
    grpc_h2load::SCENARIO,
    verifier_local::SCENARIO,
    verifier_service::SCENARIO,
    verifier_revoke::SCENARIO,
    verifier_snapshot::SCENARIO,
];
