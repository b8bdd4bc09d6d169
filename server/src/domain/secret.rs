//! [`Secret`] wraps passwords, refresh tokens, access tokens and private keys
//! so that they cannot reach a log line, an error or `Debug` output by
//! accident: formatting one prints `[redacted]`, and the value is only
//! reachable through the explicit [`Secret::expose`].
//!
//! Its memory is zeroed when it is dropped ([`zeroize`], as lldap's `secstr`
//! does), so a freed password or key does not linger in the heap for a core
//! dump or a later allocation to show. That covers the secret's own buffer
//! only: a copy made through [`Secret::expose`], or handed on with
//! [`Secret::into_exposed`], is its receiver's to look after.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A value that must never be printed, zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T: Zeroize>(Zeroizing<T>);

impl<T: Zeroize> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret itself; every call site is a place where it is used on purpose.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the secret, for handing it to its rightful receiver. The
    /// value moves out whole (a `String`'s buffer is not copied); what is
    /// left behind, and zeroed on drop, is an empty value.
    pub fn into_exposed(mut self) -> T
    where
        T: Default,
    {
        std::mem::take(&mut *self.0)
    }
}

// `Zeroizing` zeroes the value when the secret drops.
impl<T: Zeroize> ZeroizeOnDrop for Secret<T> {}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

// Secrets are stored (a private key in the key store), so they serialize as
// their plain value. Serialization is for storage only: log lines use `Debug`.
impl<T: Zeroize + serde::Serialize> serde::Serialize for Secret<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Zeroize + serde::Deserialize<'de>> serde::Deserialize<'de> for Secret<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2".to_string());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }

    /// A stand-in secret that records being zeroed, so the test observes
    /// the call instead of reading freed memory (which would be UB).
    #[derive(Clone, Default)]
    struct Witness(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Zeroize for Witness {
        fn zeroize(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn zeroed(witness: &Witness) -> usize {
        witness.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_dropped_secret_is_zeroed_once() {
        // Callers that require `ZeroizeOnDrop` accept a secret.
        fn zeroes_on_drop<T: ZeroizeOnDrop>(_: &T) {}
        let witness = Witness::default();
        let secret = Secret::new(witness.clone());
        zeroes_on_drop(&secret);
        let copy = secret.clone();
        assert_eq!(zeroed(&witness), 0, "not while it lives");
        drop(secret);
        assert_eq!(zeroed(&witness), 1);
        drop(copy);
        assert_eq!(zeroed(&witness), 2, "a clone is zeroed too");
    }

    #[test]
    fn a_secret_handed_on_keeps_its_value() {
        let secret = Secret::new("hunter2".to_string());
        assert_eq!(secret.into_exposed(), "hunter2", "zeroing the emptied wrapper leaves the value intact");
        let restored: Secret<String> = serde_json::from_str("\"hunter2\"").expect("deserializes");
        assert_eq!(restored.expose(), "hunter2");
    }
}
