//! `Validate` on arbitrary input: never panics, never accepts a token that
//! is not the genuine one, whatever the bytes. The first byte picks how the
//! rest is used, so that the fuzzer also explores near-genuine tokens (a
//! real header with a fuzzed payload, a real token with bytes overwritten).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fixture = &*common::FIXTURE;
    let genuine = fixture.admin_token.as_str();
    let Some((&mode, rest)) = data.split_first() else { return };
    let fuzzed = String::from_utf8_lossy(rest);
    let token = match mode % 4 {
        // Anything at all.
        0 => fuzzed.into_owned(),
        // Our header, a fuzzed payload and signature.
        1 => format!("{}.{fuzzed}", genuine.split('.').next().unwrap_or_default()),
        // Our header and payload, a fuzzed signature.
        2 => {
            let mut parts = genuine.rsplitn(2, '.');
            let _signature = parts.next();
            format!("{}.{fuzzed}", parts.next().unwrap_or_default())
        }
        // The genuine token with bytes overwritten at fuzzed positions.
        _ => {
            let mut bytes = genuine.as_bytes().to_vec();
            for pair in rest.chunks_exact(2) {
                let at = usize::from(pair[0]) * bytes.len() / 256;
                bytes[at] = pair[1];
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    let audience = (mode & 4 != 0).then_some("sigil");
    if let Ok(verified) = fixture.identity.validate(&token, audience) {
        assert_eq!(token, genuine, "accepted a token that is not the genuine one");
        assert_eq!(verified.claims.username, "admin");
    }
});
