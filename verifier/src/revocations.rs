//! The verifier's copy of the server's revocation index, kept compact:
//! a million live entries must fit in a few tens of MiB.
//!
//! Ids are kept as their 16 bytes and expiries as whole seconds (`u32`,
//! enough until 2106), so an entry of the token or session set is 20 bytes
//! plus the hash table's control byte; there is no second, expiry-ordered
//! structure: [`RevocationSet::purge`] sweeps the tables in place (a few
//! milliseconds for a million entries, once a second, off the verify path).
//!
//! The precedence of verdicts is the rules crate's
//! ([`RevocationMatches::verdict`]), which the server's index uses too.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use sigil_proto::pb::{self, revocation::Target};
use sigil_token_rules::{RevocationMatches, SignedToken, ValidationFailure};
use uuid::Uuid;

type Id = [u8; 16];

/// A per-user bound: ids minted before `before_millis` are covered; kept
/// until `keep_until` (seconds).
#[derive(Clone, Copy)]
struct Bound {
    before_millis: i64,
    keep_until: u32,
}

/// An entry of the stream the verifier cannot apply: its target is newer
/// than this library. The verifier fails closed until it is upgraded.
#[derive(Debug, thiserror::Error)]
#[error("revocation {sequence} has a target this verifier does not know; upgrade sigil-verifier")]
pub(crate) struct UnknownTarget {
    pub(crate) sequence: u64,
}

/// Every revocation that can still matter.
#[derive(Default)]
pub(crate) struct RevocationSet {
    tokens: HashMap<Id, u32, RandomState>,
    sessions: HashMap<Id, u32, RandomState>,
    disabled_users: HashMap<Id, u32, RandomState>,
    not_before: HashMap<Id, Bound, RandomState>,
    sessions_before: HashMap<Id, Bound, RandomState>,
}

impl RevocationSet {
    /// Applies one entry of the stream at `now` (seconds). An entry whose
    /// bound has passed covers nothing and is not kept; re-enabling a user
    /// applies all the same.
    pub(crate) fn apply(&mut self, entry: &pb::Revocation, now: i64) -> Result<(), UnknownTarget> {
        let unknown = UnknownTarget { sequence: entry.sequence };
        let keep_until = entry.expires_at.as_ref().map_or(0, seconds_of);
        let Some(target) = &entry.target else { return Err(unknown) };
        if let Target::UserEnabled(user) = target {
            self.disabled_users.remove(&parse(user).ok_or(unknown)?);
            return Ok(());
        }
        if keep_until <= now {
            return Ok(());
        }
        let keep = u32::try_from(keep_until).unwrap_or(u32::MAX);
        match target {
            Target::TokenId(id) => raise(&mut self.tokens, parse(id).ok_or(unknown)?, keep),
            Target::SessionId(id) => raise(&mut self.sessions, parse(id).ok_or(unknown)?, keep),
            Target::UserDisabled(id) => raise(&mut self.disabled_users, parse(id).ok_or(unknown)?, keep),
            Target::UserNotBefore(bound) => {
                let user = parse(&bound.user_id).ok_or(unknown)?;
                raise_bound(&mut self.not_before, user, bound.not_before.as_ref().map_or(0, millis_of), keep);
            }
            Target::UserSessionsBefore(bound) => {
                let user = parse(&bound.user_id).ok_or(unknown)?;
                raise_bound(&mut self.sessions_before, user, bound.created_before.as_ref().map_or(0, millis_of), keep);
            }
            // A service account's tokens carry its client id as `sub`, which
            // no user has: its bound sits beside the users' not-before bounds.
            Target::ServiceAccountNotBefore(bound) => {
                let client = parse(&bound.client_id).ok_or(unknown)?;
                raise_bound(&mut self.not_before, client, bound.not_before.as_ref().map_or(0, millis_of), keep);
            }
            Target::UserEnabled(_) => {}
        }
        Ok(())
    }

    /// Why `token` must be refused, if a revocation covers it (the
    /// precedence is the rules crate's, as on the server).
    pub(crate) fn check(&self, token: &SignedToken) -> Option<ValidationFailure> {
        let user = token.user_id.as_bytes();
        RevocationMatches {
            user_disabled: self.disabled_users.contains_key(user),
            session_revoked: self.sessions.contains_key(token.session_id.as_bytes()),
            token_revoked: self.tokens.contains_key(token.token_id.as_bytes()),
            session_before_bound: self.sessions_before.get(user).is_some_and(|bound| {
                minted_millis(&token.session_id).is_none_or(|created| created < bound.before_millis)
            }),
            minted_before_bound: self
                .not_before
                .get(user)
                .is_some_and(|bound| minted_millis(&token.token_id).is_none_or(|minted| minted < bound.before_millis)),
        }
        .verdict()
    }

    /// Drops what no live token can be affected by at `now` (seconds).
    pub(crate) fn purge(&mut self, now: i64) {
        let alive = |until: u32| i64::from(until) > now;
        self.tokens.retain(|_, until| alive(*until));
        self.sessions.retain(|_, until| alive(*until));
        self.disabled_users.retain(|_, until| alive(*until));
        self.not_before.retain(|_, bound| alive(bound.keep_until));
        self.sessions_before.retain(|_, bound| alive(bound.keep_until));
    }

    /// Number of entries held.
    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
            + self.sessions.len()
            + self.disabled_users.len()
            + self.not_before.len()
            + self.sessions_before.len()
    }
}

/// Keeps the longest bound: a snapshot and live entries may both name an id.
fn raise(set: &mut HashMap<Id, u32, RandomState>, id: Id, keep: u32) {
    let until = set.entry(id).or_insert(keep);
    *until = (*until).max(keep);
}

/// Raises a per-user bound: the latest instant and the longest keep win.
fn raise_bound(bounds: &mut HashMap<Id, Bound, RandomState>, user: Id, before_millis: i64, keep: u32) {
    let bound = bounds.entry(user).or_insert(Bound { before_millis, keep_until: keep });
    bound.before_millis = bound.before_millis.max(before_millis);
    bound.keep_until = bound.keep_until.max(keep);
}

fn parse(id: &str) -> Option<Id> {
    Uuid::try_parse(id).ok().map(Uuid::into_bytes)
}

/// When a UUIDv7 (v1, v6) id was minted, in milliseconds, as the server
/// reads it (`created_at` of its ids).
fn minted_millis(id: &Uuid) -> Option<i64> {
    let (seconds, nanos) = id.get_timestamp()?.to_unix();
    Some(i64::try_from(seconds).ok()?.checked_mul(1000)? + i64::from(nanos / 1_000_000))
}

fn seconds_of(at: &prost_types::Timestamp) -> i64 {
    // A bound is "until": round a fraction up so an entry is never dropped early.
    at.seconds.saturating_add(i64::from(at.nanos > 0))
}

fn millis_of(at: &prost_types::Timestamp) -> i64 {
    at.seconds.saturating_mul(1000).saturating_add(i64::from(at.nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_entry(sequence: u64, id: Uuid, expires_at: i64) -> pb::Revocation {
        pb::Revocation {
            sequence,
            revoked_at: None,
            expires_at: Some(prost_types::Timestamp { seconds: expires_at, nanos: 0 }),
            target: Some(Target::TokenId(id.to_string())),
        }
    }

    /// The bytes the token table occupies: one (id, expiry) slot and one
    /// control byte per bucket, as hashbrown lays them out.
    fn table_bytes(set: &RevocationSet) -> usize {
        set.tokens.capacity() * (std::mem::size_of::<(Id, u32)>() + 1)
    }

    #[test]
    fn a_million_live_entries_fit_in_64_mib() {
        let mut set = RevocationSet::default();
        let now = 1_000;
        for sequence in 0..1_000_000u64 {
            set.apply(&token_entry(sequence, Uuid::now_v7(), now + 900), now).expect("applies");
        }
        assert_eq!(set.len(), 1_000_000);
        let bytes = table_bytes(&set);
        assert!(bytes <= 64 << 20, "{} MiB", bytes >> 20);
    }

    #[test]
    fn expired_entries_are_not_kept_and_are_swept() {
        let mut set = RevocationSet::default();
        set.apply(&token_entry(1, Uuid::now_v7(), 10), 20).expect("applies");
        assert_eq!(set.len(), 0, "an entry past its bound covers nothing");
        set.apply(&token_entry(2, Uuid::now_v7(), 30), 20).expect("applies");
        set.purge(29);
        assert_eq!(set.len(), 1);
        set.purge(30);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn an_unknown_target_is_an_error_not_a_silent_skip() {
        let mut set = RevocationSet::default();
        let entry = pb::Revocation { sequence: 7, revoked_at: None, expires_at: None, target: None };
        assert_eq!(set.apply(&entry, 0).err().map(|e| e.sequence), Some(7));
    }
}
