//! The store engines: each implements the domain's persistence port
//! ([`crate::domain::port`]) and only persists what the domain decided.
//! [`sled_store::SledStore`] is embedded (the default);
//! [`postgres::PgStore`] is shared by several instances. Both commit every
//! write durably before they acknowledge it ([`group_commit`] for sled)
//! and refuse to open a store that lost committed history
//! ([`high_water`]). Every engine must pass [`conformance`].

#[cfg(feature = "testing")]
pub mod conformance;
pub mod group_commit;
pub mod high_water;
pub mod postgres;
pub mod sled_store;
