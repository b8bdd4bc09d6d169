//! The verdicts of [`TokenRules::verify_signature`] on hand-signed tokens,
//! edge cases included: a judge must give the same verdict for the same
//! bytes whatever decodes them (jsonwebtoken's `decode` or a leaner path),
//! so the order of checks and what each refuses are pinned here.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};

use super::*;

const KID: &str = "test-key";
const USER: &str = "0190f5d2-4c0e-7b3a-9d1e-2f3a4b5c6d7e";
const SESSION: &str = "0190f5d2-4c0e-7b3a-9d1e-2f3a4b5c6d7f";
const TOKEN: &str = "0190f5d2-4c0e-7b3a-9d1e-2f3a4b5c6d80";

struct OneKey(TrustedKey);

impl KeyLookup for OneKey {
    fn trusted_key(&self, kid: &str) -> Option<&TrustedKey> {
        (kid == KID).then_some(&self.0)
    }
}

fn key_pair() -> (EncodingKey, DecodingKey) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).expect("generates");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("reads back");
    (EncodingKey::from_ed_der(pkcs8.as_ref()), DecodingKey::from_ed_der(pair.public_key().as_ref()))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Our header, as the server writes it.
fn header() -> Value {
    json!({"typ": "at+jwt", "alg": "EdDSA", "kid": KID})
}

/// A user's claims, as the server writes them.
fn claims() -> Value {
    let now = 1_900_000_000;
    json!({
        "iss": "sigil", "sub": USER, "aud": ["sigil"], "exp": now + 600, "nbf": now, "iat": now,
        "jti": TOKEN, "sid": SESSION, "username": "u", "roles": ["admin"],
    })
}

/// Signs the already-encoded segments with `key`.
fn sign_segments(header: &str, payload: &str, key: &EncodingKey) -> String {
    let message = format!("{header}.{payload}");
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, Algorithm::EdDSA).expect("signs");
    format!("{message}.{signature}")
}

/// Signs hand-written header and payload JSON (any bytes) with `key`.
fn sign_raw(header: &str, payload: &str, key: &EncodingKey) -> String {
    sign_segments(&b64(header.as_bytes()), &b64(payload.as_bytes()), key)
}

struct Judge {
    rules: TokenRules,
    keys: OneKey,
    ours: EncodingKey,
    strangers: EncodingKey,
}

impl Judge {
    fn new() -> Self {
        let (ours, decoding) = key_pair();
        let (strangers, _) = key_pair();
        Self {
            rules: TokenRules::new("sigil", Duration::from_secs(900), Duration::ZERO),
            keys: OneKey(TrustedKey { decoding, signing_ended_at: None }),
            ours,
            strangers,
        }
    }

    fn verdict(&self, token: &str) -> Result<(), ValidationFailure> {
        self.rules.verify_signature(token, &self.keys).map(|_| ())
    }

    fn ours(&self, header: &Value, claims: &Value) -> String {
        sign_raw(&header.to_string(), &claims.to_string(), &self.ours)
    }

    fn strangers(&self, header: &Value, claims: &Value) -> String {
        sign_raw(&header.to_string(), &claims.to_string(), &self.strangers)
    }
}

fn with(mut value: Value, member: &str, set: Value) -> Value {
    value[member] = set;
    value
}

fn without(mut value: Value, member: &str) -> Value {
    value.as_object_mut().expect("an object").remove(member);
    value
}

#[test]
fn a_genuine_token_verifies_with_its_ids_parsed() {
    let judge = Judge::new();
    let signed = judge.rules.verify_signature(&judge.ours(&header(), &claims()), &judge.keys).expect("valid");
    assert_eq!(signed.kid, KID);
    assert_eq!(signed.user_id.to_string(), USER);
    assert_eq!(signed.session_id.to_string(), SESSION);
    assert_eq!(signed.token_id.to_string(), TOKEN);
    assert_eq!(signed.claims.roles, ["admin"]);
    assert_eq!(signed.client_id, None);
}

#[test]
fn claims_that_jsonwebtoken_requires_as_unsigned_numbers_are_malformed_before_the_issuer() {
    let judge = Judge::new();
    let foreign = with(claims(), "iss", json!("elsewhere"));
    let cases = [
        ("negative exp", with(claims(), "exp", json!(-1)), ValidationFailure::Malformed),
        ("negative nbf", with(claims(), "nbf", json!(-1)), ValidationFailure::Malformed),
        ("negative exp, foreign issuer", with(foreign.clone(), "exp", json!(-1)), ValidationFailure::Malformed),
        ("foreign issuer", foreign, ValidationFailure::WrongIssuer),
        ("float exp", with(claims(), "exp", json!(1_900_000_600.5)), ValidationFailure::Malformed),
        ("exp beyond i64", with(claims(), "exp", json!(u64::MAX)), ValidationFailure::Malformed),
        ("iss as an array", with(claims(), "iss", json!(["sigil"])), ValidationFailure::Malformed),
        ("aud as a string", with(claims(), "aud", json!("sigil")), ValidationFailure::Malformed),
        ("without iat", without(claims(), "iat"), ValidationFailure::Malformed),
        ("without nbf", without(claims(), "nbf"), ValidationFailure::Malformed),
        ("without iss", without(claims(), "iss"), ValidationFailure::Malformed),
        ("null sub", with(claims(), "sub", Value::Null), ValidationFailure::Malformed),
    ];
    for (what, claims, expected) in cases {
        assert_eq!(judge.verdict(&judge.ours(&header(), &claims)), Err(expected), "{what}");
    }
    // JSON's `-0` is a float to serde_json, so no integer claim.
    let minus_zero = with(claims(), "nbf", json!(0)).to_string().replace("\"nbf\":0", "\"nbf\":-0");
    assert!(minus_zero.contains("\"nbf\":-0"));
    assert_eq!(
        judge.verdict(&sign_raw(&header().to_string(), &minus_zero, &judge.ours)),
        Err(ValidationFailure::Malformed),
        "nbf -0"
    );
}

#[test]
fn escapes_and_unknown_members_in_the_claims_are_read_as_json() {
    let judge = Judge::new();
    let escaped =
        claims().to_string().replace(&format!("\"sub\":\"{USER}\""), &format!("\"sub\":\"\\u0030{}\"", &USER[1..]));
    assert_ne!(escaped, claims().to_string(), "the sub was rewritten with an escape");
    let signed = judge.rules.verify_signature(&sign_raw(&header().to_string(), &escaped, &judge.ours), &judge.keys);
    assert_eq!(signed.expect("an escaped sub is the same sub").user_id.to_string(), USER);
    let extra = with(claims(), "x", json!({"nested": [1, 2, {"deeper": null}]}));
    assert_eq!(judge.verdict(&judge.ours(&header(), &extra)), Ok(()));
    let duplicate_iss = claims().to_string().replace("\"iss\":\"sigil\"", "\"iss\":\"sigil\",\"iss\":\"sigil\"");
    assert_eq!(
        judge.verdict(&sign_raw(&header().to_string(), &duplicate_iss, &judge.ours)),
        Err(ValidationFailure::Malformed)
    );
}

#[test]
fn header_members_of_the_wrong_type_are_malformed_after_the_key_lookup_and_before_the_signature() {
    let judge = Judge::new();
    for member in ["cty", "x5t", "x5t#S256", "url", "nonce", "enc", "zip"] {
        let odd = with(header(), member, json!(5));
        assert_eq!(judge.verdict(&judge.ours(&odd, &claims())), Err(ValidationFailure::Malformed), "{member}: 5");
        assert_eq!(
            judge.verdict(&judge.strangers(&odd, &claims())),
            Err(ValidationFailure::Malformed),
            "{member}: 5, a stranger's signature"
        );
        let unknown_kid = with(odd, "kid", json!("not-ours"));
        assert_eq!(
            judge.verdict(&judge.ours(&unknown_kid, &claims())),
            Err(ValidationFailure::UnknownKey),
            "{member}: 5, an unknown kid"
        );
    }
    let string_cty = with(header(), "cty", json!("JWT"));
    assert_eq!(judge.verdict(&judge.ours(&string_cty, &claims())), Ok(()), "a string cty is allowed");
    let unknown_member = with(header(), "x-trace", json!({"a": [1, 2]}));
    assert_eq!(judge.verdict(&judge.ours(&unknown_member, &claims())), Ok(()), "an unknown member is ignored");
}

#[test]
fn deep_nesting_in_an_unknown_header_member_is_malformed() {
    let judge = Judge::new();
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let header = format!(r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"{KID}","x":{deep}}}"#);
    assert_eq!(
        judge.verdict(&sign_raw(&header, &claims().to_string(), &judge.ours)),
        Err(ValidationFailure::Malformed)
    );
}

#[test]
fn the_signature_is_checked_before_the_payload_is_decoded() {
    let judge = Judge::new();
    let encoded_header = b64(header().to_string().as_bytes());
    // `*` is not base64url: the payload segment cannot decode.
    let signed = sign_segments(&encoded_header, "e30*", &judge.ours);
    assert_eq!(judge.verdict(&signed), Err(ValidationFailure::Malformed), "our signature over a bad payload");
    let forged = sign_segments(&encoded_header, "e30*", &judge.strangers);
    assert_eq!(judge.verdict(&forged), Err(ValidationFailure::BadSignature), "a stranger's signature over it");
    let genuine = judge.ours(&header(), &claims());
    let (message, _) = genuine.rsplit_once('.').expect("three segments");
    assert_eq!(judge.verdict(&format!("{message}.not*base64")), Err(ValidationFailure::Malformed));
    assert_eq!(judge.verdict(&format!("{message}.{}", b64(&[7; 64]))), Err(ValidationFailure::BadSignature));
}
