//! Signing keys: generation, the stored record, and the in-memory
//! [`KeyRing`] used to sign and verify access tokens.
//!
//! Keys are Ed25519 (`EdDSA`). A key's `kid` is its RFC 7638 JWK thumbprint,
//! so the id is derived from the public key and cannot collide or lie. One
//! key is active (signs new tokens); older keys keep verifying until the
//! last token they signed has expired.

use std::collections::HashMap;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use super::{DomainError, Secret, Timestamp, password::base64_url};

pub use sigil_token_rules::ALGORITHM_EDDSA;
use sigil_token_rules::{KeyLookup, TrustedKey};

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Signs new tokens (exactly one key at a time).
    Active,
    /// Superseded; verifies tokens it signed until they expire.
    Verifying,
    /// No token it signed can still be live; no longer published.
    Retired,
}

/// A signing key as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// JWS algorithm, `EdDSA`.
    pub algorithm: String,
    /// PKCS#8 private key, base64url. Never leaves the server.
    pub private_pkcs8: Secret<String>,
    /// Raw public key, base64url (the JWK `x`).
    pub public_x: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Current state.
    pub state: KeyState,
    /// When the key stopped signing, if it did.
    pub superseded_at: Option<Timestamp>,
    /// When the key stopped verifying, if it did.
    #[serde(default)]
    pub retired_at: Option<Timestamp>,
}

impl SigningKeyRecord {
    /// Generates a new Ed25519 key, active from `now`.
    pub fn generate_ed25519(now: Timestamp) -> Result<Self, DomainError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| DomainError::internal("Ed25519 key generation failed"))?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|e| DomainError::internal_because("generated key unreadable", e))?;
        let public_x = base64_url(pair.public_key().as_ref());
        Ok(Self {
            kid: ed25519_thumbprint(&public_x),
            algorithm: ALGORITHM_EDDSA.to_string(),
            private_pkcs8: Secret::new(base64_url(pkcs8.as_ref())),
            public_x,
            created_at: now,
            state: KeyState::Active,
            superseded_at: None,
            retired_at: None,
        })
    }

    /// The public JWK of this key (RFC 7517 / RFC 8037).
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": self.public_x,
            "kid": self.kid,
            "alg": self.algorithm,
            "use": "sig",
        })
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: SHA-256 over the required
/// members in lexicographic order, without white space, base64url-encoded.
pub fn ed25519_thumbprint(public_x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{public_x}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    base64_url(digest.as_ref())
}

/// The key able to sign new tokens.
pub struct ActiveKey {
    /// Its id, put in the `kid` header.
    pub kid: String,
    /// The private key.
    pub encoding: EncodingKey,
}

/// Tells rings apart: every ring built gets the next number.
static RING_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The keys in memory: one active signer and every verifying key by `kid`.
/// A `kid` is only ever a key into this map; nothing is fetched.
pub struct KeyRing {
    active: ActiveKey,
    verifiers: HashMap<String, TrustedKey>,
    generation: u64,
    jwks_json: String,
    /// The (kid, state) of every record the ring was built from, to tell
    /// whether the stored keys changed since.
    built_from: Vec<(String, KeyState)>,
}

impl KeyRing {
    /// Builds the ring from stored records; exactly one must be active.
    pub fn from_records(records: &[SigningKeyRecord]) -> Result<Self, DomainError> {
        let mut active = None;
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        for record in records.iter().filter(|r| r.state != KeyState::Retired) {
            if record.algorithm != ALGORITHM_EDDSA {
                return Err(DomainError::internal(format!(
                    "key {} has unsupported algorithm {}",
                    record.kid, record.algorithm
                )));
            }
            let decoding = DecodingKey::from_ed_components(&record.public_x)
                .map_err(|e| DomainError::internal_because(format!("key {} is unreadable", record.kid), e))?;
            let signing_ended_at = (record.state != KeyState::Active)
                .then_some(record.superseded_at)
                .flatten()
                .map(|ended| ended.as_unix_seconds());
            verifiers.insert(record.kid.clone(), TrustedKey { decoding, signing_ended_at });
            jwks.push(record.public_jwk());
            if record.state == KeyState::Active {
                let der = decode_base64_url(record.private_pkcs8.expose())
                    .ok_or_else(|| DomainError::internal(format!("key {} private part is unreadable", record.kid)))?;
                active = Some(ActiveKey { kid: record.kid.clone(), encoding: EncodingKey::from_ed_der(&der) });
            }
        }
        let active = active.ok_or_else(|| DomainError::internal("no active signing key"))?;
        let jwks_json = serde_json::json!({ "keys": jwks }).to_string();
        let generation = RING_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self { active, verifiers, generation, jwks_json, built_from: Self::fingerprint(records) })
    }

    /// Whether the ring was built from exactly these records' keys and states.
    pub fn is_built_from(&self, records: &[SigningKeyRecord]) -> bool {
        self.built_from == Self::fingerprint(records)
    }

    fn fingerprint(records: &[SigningKeyRecord]) -> Vec<(String, KeyState)> {
        records.iter().map(|r| (r.kid.clone(), r.state)).collect()
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &ActiveKey {
        &self.active
    }

    /// The verifying key named `kid`, if it is ours.
    pub fn verifier(&self, kid: &str) -> Option<&TrustedKey> {
        self.verifiers.get(kid)
    }

    /// This ring's number, different for every ring built.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The RFC 7517 key set of every key that can still verify a live token.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// When each superseded key stopped signing (seconds since the epoch),
    /// by `kid` in order: what an edge verifier needs beside the key set to
    /// judge tokens as this ring does.
    pub fn signing_ends(&self) -> Vec<(String, i64)> {
        let mut ends: Vec<_> =
            self.verifiers.iter().filter_map(|(kid, key)| Some((kid.clone(), key.signing_ended_at?))).collect();
        ends.sort_unstable();
        ends
    }
}

impl KeyLookup for KeyRing {
    fn trusted_key(&self, kid: &str) -> Option<&TrustedKey> {
        self.verifier(kid)
    }
}

fn decode_base64_url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_is_the_rfc7638_thumbprint_computed_independently() {
        let record = SigningKeyRecord::generate_ed25519(Timestamp::now()).expect("key");
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(record.public_jwk()).expect("jwk parses");
        let independent = jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).expect("thumbprint");
        assert_eq!(record.kid, independent);
    }

    #[test]
    fn private_key_never_shows_in_debug() {
        let record = SigningKeyRecord::generate_ed25519(Timestamp::now()).expect("key");
        let debug = format!("{record:?}");
        assert!(!debug.contains(record.private_pkcs8.expose().as_str()));
    }

    #[test]
    fn ring_publishes_active_and_verifying_keys_but_not_retired_ones() {
        let now = Timestamp::now();
        let mut old = SigningKeyRecord::generate_ed25519(now).expect("key");
        old.state = KeyState::Verifying;
        let mut retired = SigningKeyRecord::generate_ed25519(now).expect("key");
        retired.state = KeyState::Retired;
        let new = SigningKeyRecord::generate_ed25519(now).expect("key");
        let ring = KeyRing::from_records(&[old.clone(), retired.clone(), new.clone()]).expect("ring");
        assert_eq!(ring.active().kid, new.kid);
        assert!(ring.verifier(&old.kid).is_some());
        assert!(ring.verifier(&retired.kid).is_none());
        let jwks: serde_json::Value = serde_json::from_str(ring.jwks_json()).expect("json");
        assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
    }
}
