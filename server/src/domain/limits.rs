//! Byte caps on every caller-supplied field. They are checked before any
//! decoding, hashing or store access, so oversized input costs nothing.

/// Longest accepted username, in bytes.
pub(crate) const MAX_USERNAME_BYTES: usize = 256;
/// Longest accepted password, in bytes. Passwords are never truncated: a
/// passphrase up to this length is hashed whole.
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest accepted device name, in bytes.
pub(crate) const MAX_DEVICE_NAME_BYTES: usize = 256;
/// Longest accepted audience, in bytes.
pub(crate) const MAX_AUDIENCE_BYTES: usize = 256;
/// Longest accepted revocation reason, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 512;
/// Longest access token accepted by `Validate`: a rule of the shared
/// verdict rules.
pub(crate) use sigil_token_rules::MAX_ACCESS_TOKEN_BYTES;
/// Longest accepted refresh token; ours are 43 bytes of base64url.
pub(crate) const MAX_REFRESH_TOKEN_BYTES: usize = 128;
/// Longest user agent kept on a session; longer ones are cut, not refused,
/// since callers do not choose their library's user agent.
pub(crate) const MAX_USER_AGENT_BYTES: usize = 256;

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_to(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate_to("héllo", 2), "h");
        assert_eq!(truncate_to("héllo", 3), "hé");
        assert_eq!(truncate_to("abc", 10), "abc");
    }
}
