//! A plain HTTP/2 proxy in front of a server that counts every gRPC call by
//! path, and a wait for the console to go idle: how the refetch test and
//! the scale benchmark measure the console's own load on the server.
//! Included by `#[path]` from both.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{extract::Request, http::StatusCode, response::IntoResponse as _};
use sigil_console::app::App;
use tonic::transport::Channel;

/// gRPC calls seen by the proxy, by path.
pub(crate) type Counts = Arc<Mutex<BTreeMap<String, usize>>>;

/// Listens on an ephemeral 127.0.0.1 port and forwards every call over
/// `upstream`, counting it; returns the proxy's address and the counts.
pub(crate) async fn counting_proxy(upstream: Channel) -> std::io::Result<(SocketAddr, Counts)> {
    let counts = Counts::default();
    let seen = counts.clone();
    let forward = move |request: Request| {
        let mut channel = upstream.clone();
        let seen = seen.clone();
        async move {
            *seen.lock().expect("counts").entry(request.uri().path().to_string()).or_default() += 1;
            let request = request.map(tonic::body::Body::new);
            let response = match std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx)).await {
                Ok(()) => tower::Service::call(&mut channel, request).await,
                Err(e) => Err(e),
            };
            match response {
                Ok(response) => response.map(axum::body::Body::new),
                Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    };
    let router = axum::Router::new().fallback(forward);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((addr, counts))
}

/// Waits until neither the console's state (the App and when it last
/// changed) nor `counted` (the calls that matter) has changed for half a
/// second: the console has caught up and is idle.
pub(crate) async fn quiet(console: &Arc<Mutex<(App, Instant)>>, counted: impl Fn() -> usize) {
    let mut last = counted();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counted();
        let updated = console.lock().expect("console").1;
        if now != last {
            last = now;
            since = Instant::now();
        }
        if since.elapsed() > Duration::from_millis(500) && updated.elapsed() > Duration::from_millis(500) {
            return;
        }
    }
}
