//! Typed identifiers. Every id is a UUIDv7: unique without coordination and
//! ordered by creation time, so store keys sort oldest first and listing
//! pages walk in a stable order.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// The 16 bytes used as a store key (big-endian, so keys sort by time).
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// When the id was generated (the UUIDv7 time, to the
            /// millisecond); `None` for an id that is not a UUIDv7.
            pub fn created_at(&self) -> Option<crate::domain::Timestamp> {
                let (seconds, nanos) = self.0.get_timestamp()?.to_unix();
                let millis = i64::try_from(seconds).ok()?.checked_mul(1000)? + i64::from(nanos / 1_000_000);
                Some(crate::domain::Timestamp::from_millis(millis))
            }

            /// The UUID itself (for engines with a native UUID type).
            pub fn uuid(&self) -> Uuid {
                self.0
            }

            /// An id from a UUID read back from a store.
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// Reads an id back from its 16 key bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Uuid::from_slice(bytes).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s).map(Self)
            }
        }
    };
}

typed_id!(
    /// Identifies a user for life; usernames may be reused after deletion, ids never.
    UserId
);
typed_id!(
    /// Identifies a session: one login and the refresh-token family it owns.
    SessionId
);
typed_id!(
    /// Identifies one issued token (the `jti` of an access token, or a refresh token).
    TokenId
);
typed_id!(
    /// Identifies a service account for life; its text form is the OAuth
    /// `client_id`.
    ServiceAccountId
);
typed_id!(
    /// Identifies one client secret of a service account (never the secret).
    ClientSecretId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_bytes() {
        let id = SessionId::generate();
        assert_eq!(id.to_string().parse::<SessionId>().ok(), Some(id));
        assert_eq!(SessionId::from_slice(id.as_bytes()), Some(id));
        assert!("not-an-id".parse::<SessionId>().is_err());
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let first = TokenId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = TokenId::generate();
        assert!(first.as_bytes() < second.as_bytes());
    }
}
