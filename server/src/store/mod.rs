//! The store engines: each implements the domain's persistence port
//! ([`crate::domain::port`]) and only persists what the domain decided.
//! [`sled_store::SledStore`] is embedded (the default);
//! [`postgres::PgStore`] is shared by several instances. Both commit every
//! write durably before they acknowledge it ([`group_commit`] for sled)
//! and refuse to open a store that lost committed history
//! ([`high_water`]). Every engine must pass the conformance suite
//! (`conformance`).

// The suite stays beside the engines, written once against the port, so
// that it can be run on every engine (by the tests crate today, by an
// engine's own unit tests as well) and reaches the same crate-visible items
// they do; the `testing` feature (off by default, on for sigil-tests) keeps
// it out of the production library.
#[cfg(feature = "testing")]
pub mod conformance;
pub(crate) mod group_commit;
pub(crate) mod high_water;
pub(crate) mod postgres;
pub(crate) mod sled_codec;
pub(crate) mod sled_counts;
pub(crate) mod sled_store;
