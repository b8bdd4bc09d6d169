//! Verify Sigil access tokens inside your service, at in-process speed,
//! and still refuse every revoked token within milliseconds.
//!
//! A [`Verifier`] follows the server's `RevocationService.WatchRevocations`
//! stream: the verification keys, a snapshot of every revocation that can
//! still matter, then each revocation as it commits, and a heartbeat every
//! second. [`Verifier::verify`] judges a token locally with the server's own
//! rules (the `sigil-token-rules` crate): the same verdicts and
//! [`ValidationFailure`] names as `Validate`, plus [`Refusal::Stale`] when it
//! has not heard from the server for [`VerifierConfig::max_staleness`] — it
//! fails closed, or falls back to `Validate` when configured
//! ([`WhenStale::RemoteValidate`]).
//!
//! [`VerifierLayer`] puts it in front of a tonic server or an axum router.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//!
//! use http::{Request, Response, StatusCode};
//! use sigil_verifier::{Verifier, VerifierConfig, VerifierLayer};
//! use tower::{Layer as _, ServiceExt as _};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The verifier's own credential: a token of a user with role `verifier`.
//! let bearer = "eyJ…".to_string();
//! // Nothing listens on port 9: the verifier never becomes current.
//! let endpoint = tonic::transport::Endpoint::from_static("http://127.0.0.1:9");
//! let config = VerifierConfig::new(endpoint, bearer).issuer("sigil").max_staleness(Duration::from_secs(5));
//! let verifier = Arc::new(Verifier::start(config));
//!
//! let app = tower::service_fn(|_request: Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new("hello".to_string()))
//! });
//! let protected = VerifierLayer::new(verifier.clone()).require_any_role(["reader"]).layer(app);
//!
//! // Without a bearer token: 401.
//! let response = protected.clone().oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//!
//! // With one, while the verifier cannot know: it fails closed, 503.
//! let request = Request::builder().header("authorization", "Bearer eyJ.x.y").body(String::new()).unwrap();
//! let response = protected.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert!(!verifier.state().current);
//! # }
//! ```

mod config;
mod follow;
mod keys;
mod layer;
mod remote;
mod revocations;
mod state;
mod verifier;

pub use config::{BearerSource, VerifierConfig, WhenStale};
pub use layer::{VerifierLayer, VerifierService};
pub use sigil_token_rules::{AccessClaims, KEY_HANDOVER_SECONDS, SignedToken, ValidationFailure};
pub use state::VerifierState;
pub use verifier::{Refusal, Verifier};
