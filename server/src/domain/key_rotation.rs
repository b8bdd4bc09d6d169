//! The signing keys' life rules, decided once for every engine: which key
//! a first start stores, what a rotation changes (the active key becomes
//! verifying), and what a retirement changes (once only).
//!
//! The engines read the keys (under their lock, where several processes
//! share the store), ask these functions, and write what they return.

use super::{
    Timestamp,
    keys::{KeyState, SigningKeyRecord},
};

/// The key a first start stores: `candidate`, if no key is stored yet. Of
/// several instances starting together, the first to take the engine's
/// lock stores its candidate and the others find it.
pub(crate) fn first_key<'a>(
    stored: &[SigningKeyRecord],
    candidate: &'a SigningKeyRecord,
) -> Option<&'a SigningKeyRecord> {
    stored.is_empty().then_some(candidate)
}

/// What a rotation to a new key writes.
#[derive(Debug, Clone)]
pub(crate) struct KeyRotation {
    /// The keys that were active, now verifying as of the new key's
    /// creation: they keep verifying the tokens they signed.
    pub superseded: Vec<SigningKeyRecord>,
    /// The new key, as generated (active).
    pub activated: SigningKeyRecord,
}

/// Rotating to `next`: every active key is superseded as of `next`'s
/// creation; keys already verifying or retired keep their state and times.
pub(crate) fn rotate(stored: &[SigningKeyRecord], next: &SigningKeyRecord) -> KeyRotation {
    let superseded = stored
        .iter()
        .filter(|key| key.state == KeyState::Active)
        .map(|key| {
            let mut key = key.clone();
            key.state = KeyState::Verifying;
            key.superseded_at = Some(next.created_at);
            key
        })
        .collect();
    KeyRotation { superseded, activated: next.clone() }
}

/// Retiring `key` at `at`: the key as it is to be written, or `None` when
/// it is retired already. A retirement is recorded once: its time is when
/// the key stopped verifying, the fact an auditor asks about, and a later
/// retirement of the same key (another instance's sweep, an emergency
/// rotation racing it) must not rewrite that history.
pub(crate) fn retire(key: &SigningKeyRecord, at: Timestamp) -> Option<SigningKeyRecord> {
    (key.state != KeyState::Retired).then(|| {
        let mut retired = key.clone();
        retired.state = KeyState::Retired;
        retired.retired_at = Some(at);
        retired
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(created: Timestamp, state: KeyState) -> SigningKeyRecord {
        let mut key = SigningKeyRecord::generate_ed25519(created).expect("key");
        key.state = state;
        key
    }

    #[test]
    fn the_first_key_is_stored_only_into_an_empty_store() {
        let now = Timestamp::now();
        let candidate = key(now, KeyState::Active);
        assert_eq!(first_key(&[], &candidate).map(|k| &k.kid), Some(&candidate.kid));
        assert!(first_key(&[key(now, KeyState::Active)], &candidate).is_none(), "a key exists: it stays the one");
    }

    #[test]
    fn rotation_supersedes_the_active_key_only() {
        let t0 = Timestamp::now();
        let at = |minutes: u64| t0.plus(Duration::from_secs(minutes * 60));
        let mut verifying = key(at(0), KeyState::Verifying);
        verifying.superseded_at = Some(at(1));
        let mut retired = key(at(0), KeyState::Retired);
        retired.superseded_at = Some(at(1));
        retired.retired_at = Some(at(2));
        let active = key(at(1), KeyState::Active);
        let next = key(at(3), KeyState::Active);
        let rotation = rotate(&[retired, verifying, active.clone()], &next);
        let superseded: Vec<_> =
            rotation.superseded.iter().map(|k| (k.kid.clone(), k.state, k.superseded_at, k.retired_at)).collect();
        assert_eq!(superseded, [(active.kid, KeyState::Verifying, Some(at(3)), None)]);
        assert_eq!((rotation.activated.kid, rotation.activated.state), (next.kid, KeyState::Active));
    }

    #[test]
    fn a_key_is_retired_once() {
        let now = Timestamp::now();
        let later = now.plus(Duration::from_secs(60));
        let retired = retire(&key(now, KeyState::Verifying), now).expect("a verifying key retires");
        assert_eq!((retired.state, retired.retired_at), (KeyState::Retired, Some(now)));
        assert!(retire(&retired, later).is_none(), "the first retirement time stands");
        let distrusted = retire(&key(now, KeyState::Active), later).expect("an active key retires (distrusted)");
        assert_eq!(distrusted.retired_at, Some(later));
    }
}
