//! The verification keys, as the revocation stream sends them (an RFC 7517
//! key set). A key missing from the latest set verifies nothing: that is
//! how an emergency distrust reaches the verifier. Beside the set, the
//! stream says when each superseded key stopped signing, so that the rules
//! refuse what a leaked old key signs after its end.

use std::collections::HashMap;

use jsonwebtoken::{DecodingKey, jwk::JwkSet};
use sigil_proto::pb;
use sigil_token_rules::{ALGORITHM_EDDSA, KeyLookup, TrustedKey};

/// Why a key set from the stream was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeySetError {
    /// Not a JSON Web Key Set.
    #[error("the key set is not valid JWKS JSON: {0}")]
    NotJwks(#[from] serde_json::Error),
    /// A key Sigil does not sign with.
    #[error("key {kid:?} is not an Ed25519 ({ALGORITHM_EDDSA}) public key")]
    Unsupported { kid: String },
}

/// Every key that may verify a token now, by `kid`.
pub(crate) struct KeySet {
    keys: HashMap<String, TrustedKey>,
    /// Different for every set taken, so a verdict cached under an older
    /// set is judged again (a distrusted key stops verifying cached tokens).
    generation: u64,
}

impl KeySet {
    /// No keys: nothing verifies (before the stream sent its first set).
    pub(crate) fn empty() -> Self {
        Self { keys: HashMap::new(), generation: 0 }
    }

    /// Parses the stream's `Keys` message: the JWKS JSON, and when each
    /// superseded key stopped signing.
    pub(crate) fn from_message(message: &pb::Keys, generation: u64) -> Result<Self, KeySetError> {
        let ends: HashMap<&str, i64> = message
            .key_statuses
            .iter()
            .filter_map(|status| Some((status.kid.as_str(), status.signing_ended_at.as_ref()?.seconds)))
            .collect();
        let set: JwkSet = serde_json::from_str(&message.jwks_json)?;
        let mut keys = HashMap::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            let ed25519 = matches!(&jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(okp)
                if okp.curve == jsonwebtoken::jwk::EllipticCurve::Ed25519);
            if kid.is_empty() || !ed25519 {
                return Err(KeySetError::Unsupported { kid });
            }
            let decoding = DecodingKey::from_jwk(jwk).map_err(|_| KeySetError::Unsupported { kid: kid.clone() })?;
            // A superseded key's end lets the rules refuse what a leaked
            // copy of it signs later, as the server does (a server too old
            // to send it leaves that check to `Validate`).
            let signing_ended_at = ends.get(kid.as_str()).copied();
            keys.insert(kid, TrustedKey { decoding, signing_ended_at });
        }
        Ok(Self { keys, generation })
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

impl KeyLookup for KeySet {
    fn trusted_key(&self, kid: &str) -> Option<&TrustedKey> {
        self.keys.get(kid)
    }
}
