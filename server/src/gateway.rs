//! How a gateway verdict ([`crate::domain::gateway`]) is said to a proxy,
//! the same for both adapters (Envoy `ext_authz` in `grpc::ext_authz`,
//! forward-auth `/authz` in `http`): the status and challenge of a denial,
//! its short JSON body naming the reason (never the token), and the count
//! in `sigil_gateway_checks_total{via, outcome}`.

use crate::{
    domain::gateway::{Denial, Verdict},
    grpc::status::FailureNames,
    telemetry::METRICS,
};

/// Which adapter asked: the `via` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// Envoy's `ext_authz` `Check` on the gRPC port.
    ExtAuthz,
    /// `/authz` on the HTTP port (nginx, Caddy, Traefik).
    ForwardAuth,
}

impl Via {
    const fn label(self) -> &'static str {
        match self {
            Self::ExtAuthz => "ext_authz",
            Self::ForwardAuth => "forward_auth",
        }
    }

    /// Its slot among the kept `allowed` counters.
    const fn slot(self) -> usize {
        match self {
            Self::ExtAuthz => 0,
            Self::ForwardAuth => 1,
        }
    }
}

fn reason(denial: Denial) -> &'static str {
    match denial {
        Denial::NoToken => "no_token",
        Denial::InvalidToken(failure) => FailureNames::of(failure).label,
        Denial::MissingRole => "missing_role",
        Denial::BadPolicy(_) => "bad_policy",
    }
}

/// Counts one check. Its `outcome` label: `allowed`, `no_token`,
/// `missing_role`, `bad_policy`, or the validation failure's label
/// (`expired`, `token_revoked`, …, as in `sigil_validations_total`).
pub(crate) fn count(via: Via, verdict: &Verdict) {
    let denied = match verdict {
        Verdict::Allowed(_) => None,
        Verdict::Denied(denial) => Some(reason(*denial)),
    };
    METRICS.count_gateway_check(via.label(), via.slot(), denied);
}

/// What a denied request is answered with.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// 401, 403 or 400.
    pub status: u16,
    /// The `WWW-Authenticate` value.
    pub challenge: String,
    /// `{"error": …, "reason": …}` (and `detail` for a bad policy).
    pub body: String,
}

/// The answer to a request denied for `denial`, under `realm`.
pub(crate) fn refusal(denial: Denial, realm: &str) -> Refusal {
    let mut body = serde_json::json!({
        "error": denial.error_code().unwrap_or("missing_token"),
        "reason": reason(denial),
    });
    if let Denial::BadPolicy(error) = denial {
        body["detail"] = format!("the proxy's route policy is unusable: {error}").into();
    }
    Refusal { status: denial.http_status(), challenge: denial.challenge(realm), body: body.to_string() }
}
