//! The calls and token supplies the scenarios share.

use std::sync::Arc;

use sigil_proto::pb::{self, identity_service_client::IdentityServiceClient};
use tonic::transport::Channel;

/// Logs `username` in.
pub(crate) async fn login(
    channel: &Channel,
    username: &str,
    password: &str,
) -> anyhow::Result<pb::AuthenticateResponse> {
    let request =
        pb::AuthenticateRequest { username: username.into(), password: password.into(), ..Default::default() };
    Ok(IdentityServiceClient::new(channel.clone()).authenticate(request).await?.into_inner())
}

/// `message` with `token` as its bearer.
pub(crate) fn admin_request<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The `jti` of an access token, read without verifying it (the bench's own token).
pub(crate) fn token_id_of(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["jti"].as_str().map(str::to_string)
}

/// A closed-loop call validating `tokens` in turn.
pub(crate) fn validate_round_robin(
    tokens: Vec<String>,
) -> impl Fn(Channel, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    let tokens = Arc::new(tokens);
    move |ch, n| {
        let token = tokens[n as usize % tokens.len()].clone();
        Box::pin(async move {
            let r = IdentityServiceClient::new(ch).validate(pb::ValidateRequest { token, audience: None }).await;
            Some(r.is_ok_and(|r| r.into_inner().valid))
        })
    }
}

/// One refresh-token chain per worker (each a separate session), so that
/// concurrent refreshes never present the same token twice.
pub(crate) async fn refresh_chains(
    channel: &Channel,
    password: &str,
    count: usize,
) -> anyhow::Result<Arc<Vec<tokio::sync::Mutex<String>>>> {
    let mut chains = Vec::with_capacity(count);
    for _ in 0..count {
        chains.push(tokio::sync::Mutex::new(login(channel, "admin", password).await?.refresh_token));
    }
    Ok(Arc::new(chains))
}

/// A closed-loop call rotating the refresh-token chains: call `n` takes
/// chain `n % chains.len()`, presents its current token and keeps the
/// rotated one (on whichever instance of a shared store answered).
pub(crate) fn refresh_along(
    chains: Arc<Vec<tokio::sync::Mutex<String>>>,
) -> impl Fn(Channel, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |ch, n| {
        let chains = chains.clone();
        Box::pin(async move {
            let mut chain = chains[n as usize % chains.len()].lock().await;
            let request = pb::RefreshRequest { refresh_token: chain.clone() };
            Some(match IdentityServiceClient::new(ch).refresh(request).await {
                Ok(r) => {
                    *chain = r.into_inner().refresh_token;
                    true
                }
                Err(_) => false,
            })
        })
    }
}

/// `count` distinct valid access tokens, from one session's refresh chain.
pub(crate) async fn distinct_tokens(chans: &[Channel], refresh: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut client = IdentityServiceClient::new(chans[0].clone());
    let mut refresh = refresh.to_string();
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        let r = client.refresh(pb::RefreshRequest { refresh_token: refresh }).await?.into_inner();
        tokens.push(r.access_token);
        refresh = r.refresh_token;
    }
    Ok(tokens)
}
