//! verifier-service: the example service (`examples/rust-service`, run in
//! this process) driven with `Greet`, three ways, interleaved for three
//! rounds: unprotected, behind `VerifierLayer`, and calling Sigil's
//! `Validate` per request instead. The ratios are of the medians.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Request,
    http::{StatusCode, header::AUTHORIZATION},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use sigil_example_service::pb::{GreetRequest, greeter_client::GreeterClient};
use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};
use tonic::transport::Channel;

use super::{Bench, Scenario};
use crate::{
    client::{admin_request, login},
    edge::{self, listed, median, verdict},
    figures::Figures,
    load::drive,
    target::channels,
};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("verifier-service"), run: |bench| Box::pin(run(bench)) };

/// Target: req/s with the layer ÷ req/s unprotected.
const LAYER_TARGET: f64 = 0.9;
const ROUNDS: usize = 3;

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let bearer = login(&bench.chans[0], "admin", bench.password).await?.access_token;
    let (verifier, _) = edge::follow(&bench.target.address, bearer, Duration::from_secs(30)).await?;
    let token: Arc<str> = edge::reader(&bench.chans[0], &bench.session.access_token).await?.access_token.into();
    let open = Service::start(sigil_example_service::unprotected()).await?;
    let layer = Service::start(sigil_example_service::protected(verifier, "sigil")).await?;
    let validate = Service::start(validating(bench.chans[0].clone())).await?;

    let mut results = Vec::new();
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, (name, service)) in [
            ("verifier-service-open", &open),
            ("verifier-service-layer", &layer),
            ("verifier-service-validate", &validate),
        ]
        .into_iter()
        .enumerate()
        {
            let chans = channels(&format!("http://{}", service.addr), bench.connections).await?;
            let token = token.clone();
            let call = move |channel: Channel, _| {
                let request = admin_request(GreetRequest {}, &token);
                async move { Some(GreeterClient::new(channel).greet(request).await.is_ok()) }
            };
            let figures = drive(name, bench.target, &chans, bench.streams, bench.duration, call).await;
            rates[i].push(figures.rate());
            results.push(figures);
        }
    }
    let [open_rates, layer_rates, validate_rates] = rates;
    let per_s = |r: f64| format!("{r:.0}");
    let (open, layer, validate) =
        (median(open_rates.clone()), median(layer_rates.clone()), median(validate_rates.clone()));
    println!(
        "verifier-service req/s: unprotected {open:.0} ({}), with the layer {layer:.0} ({}), Validate per request {validate:.0} ({})",
        listed(&open_rates, per_s),
        listed(&layer_rates, per_s),
        listed(&validate_rates, per_s)
    );
    println!(
        "ratio verifier-service layer / unprotected: {:.2}; target ≥ {LAYER_TARGET}: {}",
        layer / open,
        verdict(layer / open >= LAYER_TARGET)
    );
    println!("ratio verifier-service Validate per request / layer: {:.2} (reported)", validate / layer);
    Ok(results)
}

/// One variant of the example service, on an ephemeral port, until dropped.
struct Service {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Service {
    async fn start(app: Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(sigil_example_service::serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Ok(Self { addr, _stop: stop })
    }
}

/// The example service asking Sigil's `Validate` (over `sigil`) per
/// request, with the layer's requirements: audience `sigil`, role `reader`.
fn validating(sigil: Channel) -> Router {
    sigil_example_service::unprotected().layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        let sigil = sigil.clone();
        async move {
            let token = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string);
            let Some(token) = token else { return StatusCode::UNAUTHORIZED.into_response() };
            let validate = pb::ValidateRequest { token, audience: Some("sigil".into()) };
            let answer = IdentityServiceClient::new(sigil).validate(validate).await.map(tonic::Response::into_inner);
            let admitted = answer.is_ok_and(|a| {
                a.valid && a.claims.is_some_and(|c| c.roles.iter().any(|r| r == sigil_example_service::REQUIRED_ROLE))
            });
            if !admitted {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let response: Response = next.run(request).await;
            response
        }
    }))
}
