//! flood: validate-hot's p95 while 64 clients flood `Authenticate`, against
//! its p95 alone with the same load shape.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};
use tonic::transport::Channel;

use super::{Bench, Scenario};
use crate::{client::login, figures::Figures, load::drive, target::channels};

pub(super) const SCENARIO: Scenario = Scenario { name: Some("flood"), run: |bench| Box::pin(run(bench)) };

async fn run(bench: &Bench<'_>) -> anyhow::Result<Vec<Figures>> {
    let hot = Arc::new(login(&bench.chans[0], "admin", bench.password).await?.access_token);
    let validate = move |ch: Channel, _n: u64| {
        let hot = hot.clone();
        async move {
            let r = IdentityServiceClient::new(ch)
                .validate(pb::ValidateRequest { token: hot.to_string(), audience: None })
                .await;
            Some(r.is_ok_and(|r| r.into_inner().valid))
        }
    };
    let validate_streams = bench.streams.min(8);
    let alone =
        drive("validate alone", bench.target, bench.chans, validate_streams, bench.duration, validate.clone()).await;
    let flood_chans = channels(&bench.target.address, 2).await?;
    let flood_stop = Arc::new(AtomicBool::new(false));
    let mut flooders = Vec::new();
    for i in 0..64 {
        let (channel, stop, password) = (flood_chans[i % 2].clone(), flood_stop.clone(), bench.password.to_string());
        flooders.push(tokio::spawn(async move {
            let mut client = IdentityServiceClient::new(channel);
            while !stop.load(Ordering::Relaxed) {
                let request = pb::AuthenticateRequest {
                    username: "admin".into(),
                    password: password.clone(),
                    ..Default::default()
                };
                let _ = client.authenticate(request).await;
            }
        }));
    }
    let flooded = drive("validate+flood", bench.target, bench.chans, validate_streams, bench.duration, validate).await;
    flood_stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.await;
    }
    let p95 = |f: &Figures| f.latency.value_at_quantile(0.95) as f64;
    println!("ratio validate p95 during a 64-client authenticate flood / alone: {:.2}", p95(&flooded) / p95(&alone));
    Ok(vec![alone, flooded])
}
