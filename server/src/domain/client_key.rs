//! The public key a service account registers for `private_key_jwt`
//! (RFC 7523 client assertions): read from a JWK (RFC 7517) or a PEM
//! `PUBLIC KEY` (SubjectPublicKeyInfo), Ed25519 (`EdDSA`) or P-256
//! (`ES256`) only, and stored as its raw public point.
//!
//! Only those two fixed SubjectPublicKeyInfo layouts are accepted, so the
//! PEM reader compares the DER header byte for byte instead of parsing
//! ASN.1 in general: anything else (RSA, other curves, private keys,
//! certificates) is refused with a message saying what is accepted.
//!
//! The point itself is checked too: a verifier trusts whatever key it is
//! given, and an Ed25519 key of small order verifies the "signature"
//! R = identity, S = 0 for a good share of all messages (a quarter for the
//! all-zero encoding), so whoever tried a few `jti`s could sign assertions
//! for the account without any private key.

use base64::Engine as _;
use curve25519_dalek::edwards::CompressedEdwardsY;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};

use super::{DomainError, Timestamp, password::base64_url};

/// Longest key text accepted (a P-256 JWK or PEM is well under 512 bytes).
pub(crate) const MAX_KEY_TEXT_BYTES: usize = 4096;

/// DER header of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// DER header of a P-256 SubjectPublicKeyInfo (RFC 5480), before the
/// 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The signature algorithms a client key may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientKeyAlgorithm {
    /// Ed25519.
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl ClientKeyAlgorithm {
    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }

    pub(crate) fn jws(self) -> Algorithm {
        match self {
            Self::EdDSA => Algorithm::EdDSA,
            Self::ES256 => Algorithm::ES256,
        }
    }
}

/// A registered client key: public material only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientKeyRecord {
    /// Its algorithm.
    pub algorithm: ClientKeyAlgorithm,
    /// The raw public key: 32 bytes (Ed25519) or the 65-byte uncompressed
    /// point (P-256), base64url.
    pub public_key: String,
    /// When it was registered.
    pub registered_at: Timestamp,
}

impl std::fmt::Debug for ClientKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKeyRecord")
            .field("algorithm", &self.algorithm)
            .field("registered_at", &self.registered_at)
            .finish_non_exhaustive()
    }
}

impl ClientKeyRecord {
    /// Reads a public key given as a JWK (JSON) or a PEM `PUBLIC KEY`.
    pub fn parse(text: &str, now: Timestamp) -> Result<Self, DomainError> {
        if text.len() > MAX_KEY_TEXT_BYTES {
            return Err(DomainError::invalid(format!("public_key is longer than {MAX_KEY_TEXT_BYTES} bytes")));
        }
        let text = text.trim();
        let (algorithm, raw) = if text.starts_with('{') {
            from_jwk(text)?
        } else if text.starts_with("-----BEGIN") {
            from_pem(text)?
        } else {
            return Err(DomainError::invalid(
                "public_key must be a JWK (JSON) or a PEM \"PUBLIC KEY\" block, Ed25519 or P-256",
            ));
        };
        check_point(algorithm, &raw)?;
        Ok(Self { algorithm, public_key: base64_url(&raw), registered_at: now })
    }

    /// The key jsonwebtoken verifies with.
    pub(crate) fn decoding_key(&self) -> Result<DecodingKey, DomainError> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&self.public_key)
            .map_err(|e| DomainError::internal_because("a stored client key is not base64url", e))?;
        Ok(match self.algorithm {
            // For Ed25519 and EC keys jsonwebtoken's "DER" is the raw
            // public key (the bit string of the SPKI).
            ClientKeyAlgorithm::EdDSA => DecodingKey::from_ed_der(&raw),
            ClientKeyAlgorithm::ES256 => DecodingKey::from_ec_der(&raw),
        })
    }

    /// The key as a public JWK (RFC 7517), for showing it.
    pub fn public_jwk(&self) -> serde_json::Value {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&self.public_key).unwrap_or_default();
        match self.algorithm {
            ClientKeyAlgorithm::EdDSA => {
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": self.public_key})
            }
            ClientKeyAlgorithm::ES256 => {
                let (x, y) = if raw.len() == 65 { (&raw[1..33], &raw[33..]) } else { (&raw[..0], &raw[..0]) };
                serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "x": base64_url(x), "y": base64_url(y)})
            }
        }
    }
}

/// The members of a public JWK that name the key.
#[derive(Deserialize)]
struct PublicJwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// A private JWK carries `d`: refused, the server must never hold it.
    d: Option<serde::de::IgnoredAny>,
}

fn from_jwk(text: &str) -> Result<(ClientKeyAlgorithm, Vec<u8>), DomainError> {
    let jwk: PublicJwk =
        serde_json::from_str(text).map_err(|_| DomainError::invalid("public_key is not a JSON Web Key"))?;
    if jwk.d.is_some() {
        return Err(DomainError::invalid("public_key is a private key (it has \"d\"): register the public key only"));
    }
    let decode = |member: Option<String>, name: &str| {
        let text = member.ok_or_else(|| DomainError::invalid(format!("public_key JWK has no \"{name}\"")))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| DomainError::invalid(format!("public_key JWK \"{name}\" is not base64url")))
    };
    match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("OKP", Some("Ed25519")) => {
            let x = decode(jwk.x, "x")?;
            if x.len() != 32 {
                return Err(DomainError::invalid("public_key Ed25519 \"x\" must be 32 bytes"));
            }
            Ok((ClientKeyAlgorithm::EdDSA, x))
        }
        ("EC", Some("P-256")) => {
            let (x, y) = (decode(jwk.x, "x")?, decode(jwk.y, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err(DomainError::invalid("public_key P-256 \"x\" and \"y\" must be 32 bytes each"));
            }
            Ok((ClientKeyAlgorithm::ES256, [&[0x04][..], &x, &y].concat()))
        }
        _ => Err(unsupported()),
    }
}

fn from_pem(text: &str) -> Result<(ClientKeyAlgorithm, Vec<u8>), DomainError> {
    let body = text
        .strip_prefix("-----BEGIN PUBLIC KEY-----")
        .and_then(|rest| rest.trim_end().strip_suffix("-----END PUBLIC KEY-----"))
        .ok_or_else(|| DomainError::invalid("public_key PEM must be one \"PUBLIC KEY\" block (not a private key)"))?;
    let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|_| DomainError::invalid("public_key PEM body is not base64"))?;
    if let Some(key) = der.strip_prefix(&ED25519_SPKI_PREFIX[..])
        && key.len() == 32
    {
        return Ok((ClientKeyAlgorithm::EdDSA, key.to_vec()));
    }
    if let Some(point) = der.strip_prefix(&P256_SPKI_PREFIX[..])
        && point.len() == 65
        && point[0] == 0x04
    {
        return Ok((ClientKeyAlgorithm::ES256, point.to_vec()));
    }
    Err(unsupported())
}

/// Refuses a public key under which a forgery can verify or nothing ever
/// does: an Ed25519 encoding that is no point, not the point's canonical
/// encoding, or a point of small order; a P-256 point off the curve.
fn check_point(algorithm: ClientKeyAlgorithm, raw: &[u8]) -> Result<(), DomainError> {
    match algorithm {
        ClientKeyAlgorithm::EdDSA => {
            let not_a_point = || DomainError::invalid("public_key is not a point on the Ed25519 curve");
            let encoded = CompressedEdwardsY::from_slice(raw).map_err(|_| not_a_point())?;
            let point = encoded.decompress().ok_or_else(not_a_point)?;
            if point.is_small_order() {
                return Err(DomainError::invalid(
                    "public_key is an Ed25519 point of small order, under which forged signatures verify: \
                     register the public key of the client's own key pair",
                ));
            }
            if point.compress() != encoded {
                return Err(DomainError::invalid("public_key is not the canonical encoding of its Ed25519 point"));
            }
        }
        ClientKeyAlgorithm::ES256 => {
            aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, raw)
                .map_err(|_| DomainError::invalid("public_key is not a point on the P-256 curve"))?;
        }
    }
    Ok(())
}

fn unsupported() -> DomainError {
    DomainError::invalid("public_key must be an Ed25519 (EdDSA) or P-256 (ES256) public key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_and_p256_keys_read_from_jwk_and_pem_alike() {
        let now = Timestamp::now();
        let ed = aws_lc_rs::signature::Ed25519KeyPair::generate().expect("key");
        let raw = aws_lc_rs::signature::KeyPair::public_key(&ed).as_ref().to_vec();
        let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#, base64_url(&raw));
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode([&ED25519_SPKI_PREFIX[..], &raw].concat())
        );
        let (a, b) = (ClientKeyRecord::parse(&jwk, now).expect("jwk"), ClientKeyRecord::parse(&pem, now).expect("pem"));
        assert_eq!(a, b);
        assert_eq!(a.algorithm, ClientKeyAlgorithm::EdDSA);
    }

    #[test]
    fn points_that_verify_forgeries_or_nothing_are_refused() {
        let now = Timestamp::now();
        let zero = base64_url(&[0; 32]);
        // The identity (order 1) and the all-zero encoding (order 4).
        let identity = base64_url(&[[1u8].as_slice(), &[0; 31]].concat());
        for x in [&zero, &identity] {
            let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#);
            let refused = ClientKeyRecord::parse(&jwk, now).expect_err("small order");
            assert!(refused.to_string().contains("small order"), "{refused}");
        }
        let off_curve = format!(r#"{{"kty":"EC","crv":"P-256","x":"{zero}","y":"{zero}"}}"#);
        let refused = ClientKeyRecord::parse(&off_curve, now).expect_err("off the curve");
        assert!(refused.to_string().contains("not a point on the P-256 curve"), "{refused}");
    }

    #[test]
    fn private_rsa_and_garbage_keys_are_refused() {
        let now = Timestamp::now();
        for bad in [
            r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA","d":"AAAA"}"#,
            r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "hello",
        ] {
            assert!(matches!(ClientKeyRecord::parse(bad, now), Err(DomainError::InvalidArgument(_))), "{bad}");
        }
    }
}
