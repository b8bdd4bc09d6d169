//! Users: the stored record and the rules for usernames.

use precis_profiles::{
    UsernameCaseMapped, precis_core,
    precis_core::profile::{PrecisFastInvocation, stabilize},
};
use serde::{Deserialize, Serialize};

use super::{DomainError, Timestamp, UserId, limits::MAX_USERNAME_BYTES};

/// The role that grants the admin API.
pub const ADMIN_ROLE: &str = "admin";
/// The role of an edge verifier: it may follow the revocation stream.
pub const VERIFIER_ROLE: &str = "verifier";

/// A user as stored. The password is only ever an argon2id PHC string.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserRecord {
    /// Stable id.
    pub id: UserId,
    /// Normalized username (see [`normalize_username`]).
    pub username: String,
    /// Argon2id hash in PHC string format.
    pub password_hash: String,
    /// Roles granted to the user, e.g. `admin`.
    pub roles: Vec<String>,
    /// A disabled user cannot log in and its tokens fail validation.
    pub disabled: bool,
    /// When the user was created.
    pub created_at: Timestamp,
    /// When the user was last changed.
    pub updated_at: Timestamp,
}

impl UserRecord {
    /// Whether the user holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

// The hash is not a secret in the sense of a password, but it is offline
// attack material: keep it out of logs along with everything else.
impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// Checks a username and returns its canonical form, the PRECIS
/// `UsernameCaseMapped` profile of RFC 8265: fullwidth and halfwidth forms
/// mapped to their plain letters, lower-cased, NFC-normalized, the bidi
/// rule applied, and only the `IdentifierClass` code points allowed — so
/// spaces inside a userpart, control, invisible (default-ignorable) and
/// bidi-control characters, compatibility look-alikes (mathematical bold,
/// circled letters, ligatures) and unassigned code points are refused.
/// `Alice`, ` alice`, `ａｌｉｃｅ` and `ALICE` are one user; `e` followed by a
/// combining acute accent and the precomposed `é` are one letter.
///
/// As RFC 8265 §3.1 allows, a name may be several userparts separated by
/// ASCII spaces; each is enforced on its own, and runs of spaces become one.
/// Surrounding whitespace is trimmed first, as before.
///
/// Errors name the offending code point (`U+200B`) and its category, never
/// the whole name: what a caller types here may be a password.
pub fn normalize_username(raw: &str) -> Result<String, DomainError> {
    if raw.len() > MAX_USERNAME_BYTES {
        return Err(DomainError::invalid(format!("username is longer than {MAX_USERNAME_BYTES} bytes")));
    }
    // Checked before trimming, which would hide a trailing newline or NUL.
    // (The message is the one earlier versions gave.)
    if raw.chars().any(char::is_control) {
        return Err(DomainError::invalid("username contains control characters"));
    }
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid("username is empty"));
    }
    let mut canonical = String::with_capacity(trimmed.len());
    for userpart in trimmed.split(' ').filter(|part| !part.is_empty()) {
        // RFC 8264 §7: the rules are reapplied until the result is stable,
        // so that the stored form normalizes to itself.
        let enforced = stabilize(userpart, |s: &str| <UsernameCaseMapped as PrecisFastInvocation>::enforce(s))
            .map_err(|e| refusal(trimmed, userpart, &e))?;
        if !canonical.is_empty() {
            canonical.push(' ');
        }
        canonical.push_str(&enforced);
    }
    // Lower-casing and NFC can lengthen a name: the cap holds for what is stored.
    if canonical.len() > MAX_USERNAME_BYTES {
        return Err(DomainError::invalid(format!("username is longer than {MAX_USERNAME_BYTES} bytes")));
    }
    Ok(canonical)
}

/// Whether `stored` is already in the canonical form that
/// [`normalize_username`] gives today. Names stored by older versions (only
/// trimmed and lower-cased) may not be.
pub fn is_canonical_username(stored: &str) -> bool {
    normalize_username(stored).is_ok_and(|canonical| canonical == stored)
}

/// The `InvalidArgument` for a name PRECIS refused: which code point, where
/// (counted in characters of the trimmed name, from 1) and what kind it is.
fn refusal(name: &str, userpart: &str, error: &precis_core::Error) -> DomainError {
    let info = match error {
        precis_core::Error::BadCodepoint(info) => Some(info),
        precis_core::Error::Unexpected(
            precis_core::UnexpectedError::ContextRuleNotApplicable(info)
            | precis_core::UnexpectedError::MissingContextRule(info),
        ) => Some(info),
        _ => None,
    };
    let Some(c) = info.and_then(|info| char::from_u32(info.cp)) else {
        return DomainError::invalid(
            "username breaks the PRECIS UsernameCaseMapped profile (RFC 8265): it mixes right-to-left and \
             left-to-right characters as the bidi rule forbids, or has no stable normalized form",
        );
    };
    // The userpart starts at the first occurrence of its text in the name.
    let before = name.find(userpart).map_or(0, |at| name[..at].chars().count());
    let position = before + userpart.chars().position(|d| d == c).unwrap_or(0) + 1;
    let unassigned = matches!(info.map(|i| i.property), Some(precis_core::DerivedPropertyValue::Unassigned));
    DomainError::invalid(format!(
        "username contains U+{:04X}, {}, at character {position}; usernames follow the PRECIS \
         UsernameCaseMapped profile (RFC 8265)",
        c as u32,
        code_point_category(c, unassigned)
    ))
}

/// A short description of why `c` is not allowed in a username, for the
/// error message only (precis decides what is refused).
fn code_point_category(c: char, unassigned: bool) -> &'static str {
    use unicode_normalization::UnicodeNormalization as _;
    if unassigned {
        "an unassigned code point"
    } else if is_bidi_control(c) {
        "a bidirectional-text control character"
    } else if c.is_control() {
        "a control character"
    } else if c.is_whitespace() {
        "a space character"
    } else if is_default_ignorable(c) {
        "an invisible (default-ignorable) character"
    } else if std::iter::once(c).nfkc().ne(std::iter::once(c)) {
        "a compatibility variant of another character (e.g. a mathematical or circled letter); type the plain letter"
    } else {
        "a symbol, punctuation or other character not allowed in usernames"
    }
}

/// The `Bidi_Control` code points of Unicode (PropList.txt), which reorder
/// text on screen (e.g. U+202E RIGHT-TO-LEFT OVERRIDE).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Most of Unicode's `Default_Ignorable_Code_Point` property (zero-width
/// spaces and joiners, soft hyphen, variation selectors, tags, fillers):
/// characters that render as nothing.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Checks a role name: non-empty, short, printable ASCII without spaces
/// or commas (a comma separates roles in the gateways' `x-sigil-roles`
/// header and in their route policies, so a role holding one could not be
/// told from two).
pub fn check_role(role: &str) -> Result<(), DomainError> {
    let printable = role.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if role.is_empty() || role.len() > 64 || !printable {
        // Quoted only when short: an error never carries a caller's
        // kilobytes back (they would not even fit in a gRPC status).
        let shown = if role.len() <= 64 { format!("{role:?}") } else { format!("of {} bytes", role.len()) };
        return Err(DomainError::invalid(format!(
            "role {shown} must be 1 to 64 printable ASCII characters without spaces or commas"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_cannot_hold_the_gateways_separator() {
        assert!(check_role("reader").is_ok());
        let refused = check_role("reader,admin").expect_err("a comma is refused");
        assert!(refused.to_string().contains("without spaces or commas"), "{refused}");
    }

    #[test]
    fn usernames_are_trimmed_and_lowercased() {
        assert_eq!(normalize_username("  Alice ").ok().as_deref(), Some("alice"));
    }

    #[test]
    fn empty_blank_control_and_oversized_usernames_are_refused() {
        for bad in ["", "   ", "al\0ice", "bob\n", "a\u{7}b", &"x".repeat(MAX_USERNAME_BYTES + 1)] {
            assert!(normalize_username(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(normalize_username(&"x".repeat(MAX_USERNAME_BYTES)).is_ok());
    }

    #[test]
    fn look_alikes_fold_to_one_name() {
        for (typed, canonical) in [
            ("\u{FF41}\u{FF44}\u{FF4D}\u{FF49}\u{FF4E}", "admin"),
            ("ＡＤＭＩＮ", "admin"),
            ("jose\u{0301}", "jos\u{00E9}"),
            ("JOS\u{00C9}", "jos\u{00E9}"),
            ("alice   smith", "alice smith"),
            ("juliet@example.com", "juliet@example.com"),
        ] {
            assert_eq!(normalize_username(typed).ok().as_deref(), Some(canonical), "{typed:?}");
            assert!(is_canonical_username(canonical));
        }
        assert!(!is_canonical_username("jose\u{0301}"));
    }

    #[test]
    fn invisible_bidi_and_compatibility_characters_are_refused_by_category() {
        for (bad, category) in [
            ("admin\u{200B}", "U+200B, an invisible"),
            ("ad\u{200D}min", "U+200D, an invisible"),
            ("\u{202E}nimda", "U+202E, a bidirectional-text control"),
            ("admin\u{2066}", "U+2066, a bidirectional-text control"),
            ("\u{1D41A}\u{1D41D}\u{1D426}\u{1D422}\u{1D427}", "U+1D41A, a compatibility variant"),
            ("\u{24D0}dmin", "U+24D0, a compatibility variant"),
            ("adm\u{00AD}in", "U+00AD, an invisible"),
            ("al\u{00A0}ice", "U+00A0"),
            ("alice\u{E0001}", "U+E0001"),
        ] {
            match normalize_username(bad) {
                Err(DomainError::InvalidArgument(message)) => {
                    assert!(message.contains(category), "{bad:?}: {message}");
                }
                other => panic!("{bad:?} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_name_the_code_point_not_the_name() {
        let secret = "hunter2-correct-horse\u{200B}";
        let Err(DomainError::InvalidArgument(message)) = normalize_username(secret) else {
            panic!("refused");
        };
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("at character 22"), "{message}");
    }

    #[test]
    fn right_to_left_names_follow_the_bidi_rule() {
        assert!(normalize_username("\u{05D0}\u{05D1}").is_ok(), "a Hebrew name");
        let Err(DomainError::InvalidArgument(message)) = normalize_username("\u{05D0}a\u{05D1}") else {
            panic!("mixed directions accepted");
        };
        assert!(message.contains("bidi rule"), "{message}");
    }

    proptest::proptest! {
        #[test]
        fn normalizing_never_panics_and_the_canonical_form_is_stable(raw in "\\PC{0,40}|[ -~]{0,40}") {
            if let Ok(canonical) = normalize_username(&raw) {
                proptest::prop_assert_eq!(normalize_username(&canonical).ok(), Some(canonical.clone()));
                proptest::prop_assert!(is_canonical_username(&canonical));
            }
        }
    }

    #[test]
    fn roles_must_be_printable_words() {
        assert!(check_role("admin").is_ok());
        assert!(check_role("").is_err());
        assert!(check_role("a b").is_err());
    }
}
