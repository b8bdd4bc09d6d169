//! The sled engine's record encoding for the records it holds by the
//! million: sessions, tokens and refresh-hash pointers.
//!
//! Each value is one version byte followed by the record in postcard
//! (varint integers, length-prefixed strings, ids as 16 raw bytes) from a
//! wire struct of this module, so that the stored layout changes only here
//! and only with a new version byte, never because a domain type was
//! edited. A session or a token is about a third of its JSON size; and
//! sled writes whole nodes of records, so every byte saved is saved again
//! in the log that recovery reads.
//!
//! Before this encoding, the records were JSON, which always starts with
//! `{`: such a value is still read (a store is converted at its first open
//! by a version that writes binary, see [`migrate`], and a conversion cut
//! short by a crash leaves both kinds), any other first byte is a version
//! this build does not know, and is refused with the reason. The other
//! records (users, keys, events, revocations, login counters) are few and
//! stay JSON.

use std::borrow::Cow;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sled::Tree;

use crate::domain::{
    SessionId, Timestamp, TokenId, UserId,
    port::StoreError,
    session::{RefreshRecord, RefreshTokenHash, SessionRecord, SessionState, TokenKind, TokenRecord, TokenState},
};

/// The first byte of every binary record of this layout.
pub(crate) const VERSION_1: u8 = 1;

/// The first byte of a record stored as JSON (before version 1).
const JSON: u8 = b'{';

/// A record kept in the binary encoding.
pub(crate) trait BinaryRecord: Sized + DeserializeOwned {
    /// What the record is, for errors.
    const NAME: &'static str;

    /// The value to store: version byte, then the wire form.
    fn encode(&self) -> Result<Vec<u8>, StoreError>;

    /// The wire form after the version byte.
    fn decode_v1(bytes: &[u8]) -> Result<Self, StoreError>;
}

/// Reads a stored value of any version this build knows.
pub(crate) fn decode<T: BinaryRecord>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.first() {
        Some(&VERSION_1) => T::decode_v1(&bytes[1..]),
        Some(&JSON) => serde_json::from_slice(bytes)
            .map_err(|e| StoreError::Corrupt(format!("cannot decode a {} stored as JSON: {e}", T::NAME))),
        Some(&version) => Err(StoreError::Corrupt(format!(
            "a {} is stored in record format version {version}, which this build of Sigil does not know \
             (it reads versions 1 and the JSON before it): it was written by a newer Sigil, or the store is damaged; \
             run the newer version, or restore the data directory from a backup",
            T::NAME
        ))),
        None => Err(StoreError::Corrupt(format!("an empty value where a {} was expected", T::NAME))),
    }
}

fn to_bytes<T: Serialize>(name: &str, wire: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(wire, vec![VERSION_1]).map_err(|e| StoreError::Corrupt(format!("cannot encode a {name}: {e}")))
}

/// The whole of `bytes` as one `T`: trailing bytes mean a damaged record.
fn from_bytes<'a, T: Deserialize<'a>>(name: &str, bytes: &'a [u8]) -> Result<T, StoreError> {
    let corrupt = |why: String| StoreError::Corrupt(format!("cannot decode a {name} (format version 1): {why}"));
    match postcard::take_from_bytes(bytes) {
        Ok((wire, [])) => Ok(wire),
        Ok((_, rest)) => Err(corrupt(format!("{} bytes left over", rest.len()))),
        Err(e) => Err(corrupt(e.to_string())),
    }
}

fn corrupt_code(name: &str, what: &str, code: u8) -> StoreError {
    StoreError::Corrupt(format!("cannot decode a {name}: unknown {what} code {code}"))
}

/// A session as stored, version 1.
#[derive(Serialize, Deserialize)]
struct SessionV1<'a> {
    id: [u8; 16],
    user_id: [u8; 16],
    #[serde(borrow)]
    username: Cow<'a, str>,
    #[serde(borrow)]
    audience: Vec<Cow<'a, str>>,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    #[serde(borrow)]
    client_address: Cow<'a, str>,
    #[serde(borrow)]
    user_agent: Cow<'a, str>,
    #[serde(borrow)]
    device_name: Cow<'a, str>,
    state: u8,
    revoked_at: Option<i64>,
    #[serde(borrow)]
    revoke_reason: Option<Cow<'a, str>>,
    current_refresh: [u8; 16],
}

fn session_state_code(state: SessionState) -> u8 {
    match state {
        SessionState::Active => 0,
        SessionState::Revoked => 1,
        SessionState::Expired => 2,
    }
}

fn session_state(code: u8) -> Result<SessionState, StoreError> {
    Ok(match code {
        0 => SessionState::Active,
        1 => SessionState::Revoked,
        2 => SessionState::Expired,
        code => return Err(corrupt_code(SessionRecord::NAME, "session state", code)),
    })
}

impl BinaryRecord for SessionRecord {
    const NAME: &'static str = "session";

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        to_bytes(
            Self::NAME,
            &SessionV1 {
                id: *self.id.as_bytes(),
                user_id: *self.user_id.as_bytes(),
                username: Cow::Borrowed(&self.username),
                audience: self.audience.iter().map(|a| Cow::Borrowed(a.as_str())).collect(),
                created_at: self.created_at.as_millis(),
                last_seen_at: self.last_seen_at.as_millis(),
                expires_at: self.expires_at.as_millis(),
                client_address: Cow::Borrowed(&self.client_address),
                user_agent: Cow::Borrowed(&self.user_agent),
                device_name: Cow::Borrowed(&self.device_name),
                state: session_state_code(self.state),
                revoked_at: self.revoked_at.map(Timestamp::as_millis),
                revoke_reason: self.revoke_reason.as_deref().map(Cow::Borrowed),
                current_refresh: *self.current_refresh.as_bytes(),
            },
        )
    }

    fn decode_v1(bytes: &[u8]) -> Result<Self, StoreError> {
        let wire: SessionV1<'_> = from_bytes(Self::NAME, bytes)?;
        Ok(Self {
            id: SessionId::from_uuid(uuid::Uuid::from_bytes(wire.id)),
            user_id: UserId::from_uuid(uuid::Uuid::from_bytes(wire.user_id)),
            username: wire.username.into_owned(),
            audience: wire.audience.into_iter().map(Cow::into_owned).collect(),
            created_at: Timestamp::from_millis(wire.created_at),
            last_seen_at: Timestamp::from_millis(wire.last_seen_at),
            expires_at: Timestamp::from_millis(wire.expires_at),
            client_address: wire.client_address.into_owned(),
            user_agent: wire.user_agent.into_owned(),
            device_name: wire.device_name.into_owned(),
            state: session_state(wire.state)?,
            revoked_at: wire.revoked_at.map(Timestamp::from_millis),
            revoke_reason: wire.revoke_reason.map(Cow::into_owned),
            current_refresh: TokenId::from_uuid(uuid::Uuid::from_bytes(wire.current_refresh)),
        })
    }
}

/// A token as stored, version 1.
#[derive(Serialize, Deserialize)]
struct TokenV1<'a> {
    id: [u8; 16],
    kind: u8,
    session_id: [u8; 16],
    user_id: [u8; 16],
    #[serde(borrow)]
    username: Cow<'a, str>,
    issued_at: i64,
    expires_at: i64,
    state: u8,
    revoked_at: Option<i64>,
    refresh_hash: Option<[u8; 32]>,
}

fn token_kind_code(kind: TokenKind) -> u8 {
    match kind {
        TokenKind::Access => 0,
        TokenKind::Refresh => 1,
    }
}

fn token_kind(code: u8) -> Result<TokenKind, StoreError> {
    Ok(match code {
        0 => TokenKind::Access,
        1 => TokenKind::Refresh,
        code => return Err(corrupt_code(TokenRecord::NAME, "token kind", code)),
    })
}

fn token_state_code(state: TokenState) -> u8 {
    match state {
        TokenState::Active => 0,
        TokenState::Revoked => 1,
        TokenState::Expired => 2,
        TokenState::Rotated => 3,
    }
}

fn token_state(code: u8) -> Result<TokenState, StoreError> {
    Ok(match code {
        0 => TokenState::Active,
        1 => TokenState::Revoked,
        2 => TokenState::Expired,
        3 => TokenState::Rotated,
        code => return Err(corrupt_code(TokenRecord::NAME, "token state", code)),
    })
}

impl BinaryRecord for TokenRecord {
    const NAME: &'static str = "token";

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        to_bytes(
            Self::NAME,
            &TokenV1 {
                id: *self.id.as_bytes(),
                kind: token_kind_code(self.kind),
                session_id: *self.session_id.as_bytes(),
                user_id: *self.user_id.as_bytes(),
                username: Cow::Borrowed(&self.username),
                issued_at: self.issued_at.as_millis(),
                expires_at: self.expires_at.as_millis(),
                state: token_state_code(self.state),
                revoked_at: self.revoked_at.map(Timestamp::as_millis),
                refresh_hash: self.refresh_hash.map(|hash| hash.0),
            },
        )
    }

    fn decode_v1(bytes: &[u8]) -> Result<Self, StoreError> {
        let wire: TokenV1<'_> = from_bytes(Self::NAME, bytes)?;
        Ok(Self {
            id: TokenId::from_uuid(uuid::Uuid::from_bytes(wire.id)),
            kind: token_kind(wire.kind)?,
            session_id: SessionId::from_uuid(uuid::Uuid::from_bytes(wire.session_id)),
            user_id: UserId::from_uuid(uuid::Uuid::from_bytes(wire.user_id)),
            username: wire.username.into_owned(),
            issued_at: Timestamp::from_millis(wire.issued_at),
            expires_at: Timestamp::from_millis(wire.expires_at),
            state: token_state(wire.state)?,
            revoked_at: wire.revoked_at.map(Timestamp::from_millis),
            refresh_hash: wire.refresh_hash.map(RefreshTokenHash),
        })
    }
}

/// A refresh hash's pointer as stored, version 1.
#[derive(Serialize, Deserialize)]
struct RefreshV1 {
    token_id: [u8; 16],
    session_id: [u8; 16],
}

impl BinaryRecord for RefreshRecord {
    const NAME: &'static str = "refresh-token pointer";

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        to_bytes(
            Self::NAME,
            &RefreshV1 { token_id: *self.token_id.as_bytes(), session_id: *self.session_id.as_bytes() },
        )
    }

    fn decode_v1(bytes: &[u8]) -> Result<Self, StoreError> {
        let wire: RefreshV1 = from_bytes(Self::NAME, bytes)?;
        Ok(Self {
            token_id: TokenId::from_uuid(uuid::Uuid::from_bytes(wire.token_id)),
            session_id: SessionId::from_uuid(uuid::Uuid::from_bytes(wire.session_id)),
        })
    }
}

/// Key of the `format` tree: the record format version the whole store is
/// in (absent: some records may still be JSON).
const RECORDS: &[u8] = b"records";

/// Records converted per sled batch while migrating.
const MIGRATION_BATCH: usize = 10_000;

/// Converts the JSON sessions, tokens and refresh pointers of a store
/// written before version 1, once, at open (while nothing else writes),
/// then records that the store is in version 1.
///
/// Each batch is atomic and every record reads in either form, so a
/// conversion cut short (a crash, a full disk) leaves a store that works
/// and is finished at the next open. The flush before the marker makes the
/// converted records durable before the store says it is converted.
pub(crate) fn migrate(
    db: &sled::Db,
    format: &Tree,
    sessions: &Tree,
    tokens: &Tree,
    refresh: &Tree,
) -> Result<(), StoreError> {
    let backend = |e: sled::Error| StoreError::Backend(format!("converting records to format version 1: {e}"));
    if format.get(RECORDS).map_err(backend)?.is_some_and(|v| v.as_ref() == [VERSION_1]) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let converted =
        convert::<SessionRecord>(sessions)? + convert::<TokenRecord>(tokens)? + convert::<RefreshRecord>(refresh)?;
    db.flush().map_err(backend)?;
    format.insert(RECORDS, &[VERSION_1]).map_err(backend)?;
    db.flush().map_err(backend)?;
    if converted > 0 {
        tracing::info!(
            converted,
            took_ms = started.elapsed().as_millis() as u64,
            "converted the store's sessions, tokens and refresh pointers from JSON to binary records (format version 1)"
        );
    }
    Ok(())
}

/// Rewrites every JSON record of `tree` in version 1; returns how many.
fn convert<T: BinaryRecord>(tree: &Tree) -> Result<usize, StoreError> {
    let backend = |e: sled::Error| StoreError::Backend(format!("converting {} records: {e}", T::NAME));
    let mut converted = 0;
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    for item in tree.iter() {
        let (key, value) = item.map_err(backend)?;
        if value.first() != Some(&JSON) {
            // Already binary, or a version this build refuses when read.
            continue;
        }
        let record: T = decode(&value)?;
        batch.insert(key, record.encode()?);
        pending += 1;
        if pending == MIGRATION_BATCH {
            tree.apply_batch(std::mem::take(&mut batch)).map_err(backend)?;
            converted += pending;
            pending = 0;
        }
    }
    tree.apply_batch(batch).map_err(backend)?;
    Ok(converted + pending)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::session::fixtures::token;

    fn session() -> SessionRecord {
        let now = Timestamp::now();
        SessionRecord {
            id: SessionId::generate(),
            user_id: UserId::generate(),
            username: "zoë".into(),
            audience: vec!["sigil".into(), "billing".into()],
            created_at: now,
            last_seen_at: now.plus(Duration::from_secs(5)),
            expires_at: now.plus(Duration::from_secs(86_400)),
            client_address: "10.0.0.1:443".into(),
            user_agent: "grpc-rust/1".into(),
            device_name: "laptop".into(),
            state: SessionState::Revoked,
            revoked_at: Some(now.plus(Duration::from_secs(9))),
            revoke_reason: Some("stolen \"laptop\"".into()),
            current_refresh: TokenId::generate(),
        }
    }

    fn same_session(a: &SessionRecord, b: &SessionRecord) -> bool {
        serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
    }

    fn same_token(a: &TokenRecord, b: &TokenRecord) -> bool {
        serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
    }

    #[test]
    fn every_field_of_a_session_survives_a_round_trip() {
        for state in [SessionState::Active, SessionState::Revoked, SessionState::Expired] {
            let mut original = session();
            original.state = state;
            let bytes = original.encode().expect("encodes");
            assert_eq!(bytes[0], VERSION_1, "the version byte comes first");
            let back: SessionRecord = decode(&bytes).expect("decodes");
            assert!(same_session(&original, &back), "{original:?} came back as {back:?}");
        }
        let mut bare = session();
        (bare.revoked_at, bare.revoke_reason, bare.audience) = (None, None, vec![]);
        let back: SessionRecord = decode(&bare.encode().expect("encodes")).expect("decodes");
        assert!(same_session(&bare, &back));
    }

    #[test]
    fn every_field_of_a_token_and_a_pointer_survives_a_round_trip() {
        let session = session();
        for (kind, state, hash) in [
            (TokenKind::Access, TokenState::Active, None),
            (TokenKind::Refresh, TokenState::Rotated, Some(RefreshTokenHash([7; 32]))),
            (TokenKind::Refresh, TokenState::Revoked, None),
            (TokenKind::Access, TokenState::Expired, None),
        ] {
            let mut original = token(&session, TokenId::generate(), kind);
            (original.state, original.refresh_hash, original.revoked_at) = (state, hash, Some(Timestamp::now()));
            let bytes = original.encode().expect("encodes");
            assert_eq!(bytes[0], VERSION_1);
            let back: TokenRecord = decode(&bytes).expect("decodes");
            assert!(same_token(&original, &back), "{original:?} came back as {back:?}");
        }
        let pointer = RefreshRecord { token_id: TokenId::generate(), session_id: SessionId::generate() };
        let back: RefreshRecord = decode(&pointer.encode().expect("encodes")).expect("decodes");
        assert_eq!((back.token_id, back.session_id), (pointer.token_id, pointer.session_id));
    }

    #[test]
    fn binary_records_are_a_fraction_of_their_json() {
        let session = session();
        let access = token(&session, TokenId::generate(), TokenKind::Access);
        let (binary, json) =
            (session.encode().expect("encodes").len(), serde_json::to_vec(&session).expect("json").len());
        assert!(binary * 2 < json, "session: {binary} bytes binary, {json} as JSON");
        let (binary, json) =
            (access.encode().expect("encodes").len(), serde_json::to_vec(&access).expect("json").len());
        assert!(binary * 2 < json, "token: {binary} bytes binary, {json} as JSON");
    }

    #[test]
    fn json_records_of_older_stores_are_still_read() {
        let original = session();
        let back: SessionRecord = decode(&serde_json::to_vec(&original).expect("json")).expect("decodes");
        assert!(same_session(&original, &back));
        let access = token(&original, TokenId::generate(), TokenKind::Access);
        let back: TokenRecord = decode(&serde_json::to_vec(&access).expect("json")).expect("decodes");
        assert!(same_token(&access, &back));
    }

    #[test]
    fn an_unknown_version_is_refused_naming_it() {
        let mut bytes = session().encode().expect("encodes");
        bytes[0] = 2;
        let refused = decode::<SessionRecord>(&bytes).expect_err("version 2 is unknown");
        let message = refused.to_string();
        assert!(message.contains("format version 2") && message.contains("newer Sigil"), "{message}");
        assert!(decode::<TokenRecord>(&[]).is_err(), "an empty value is refused");
    }

    #[test]
    fn a_damaged_record_is_refused_not_misread() {
        let bytes = session().encode().expect("encodes");
        // Cut short anywhere: refused.
        for end in 1..bytes.len() {
            assert!(decode::<SessionRecord>(&bytes[..end]).is_err(), "cut at {end} of {} was accepted", bytes.len());
        }
        // A byte too many: refused.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<SessionRecord>(&longer).is_err());
        // An impossible state code: refused.
        let mut token_bytes = token(&session(), TokenId::generate(), TokenKind::Access).encode().expect("encodes");
        token_bytes[1 + 16] = 9;
        let refused = decode::<TokenRecord>(&token_bytes).expect_err("kind 9");
        assert!(refused.to_string().contains("unknown token kind code 9"), "{refused}");
    }

    #[test]
    fn migration_converts_json_records_once_and_keeps_every_field() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new().path(dir.path()).open().expect("opens");
        let (format, sessions, tokens, refresh) = (
            db.open_tree("format").expect("tree"),
            db.open_tree("sessions").expect("tree"),
            db.open_tree("tokens").expect("tree"),
            db.open_tree("refresh").expect("tree"),
        );
        let mut originals = Vec::new();
        for i in 0..(MIGRATION_BATCH + 5) {
            let s = session();
            let t = token(&s, TokenId::generate(), TokenKind::Refresh);
            // One record already binary (a conversion cut short).
            let value = if i == 3 { s.encode().expect("encodes") } else { serde_json::to_vec(&s).expect("json") };
            sessions.insert(s.id.as_bytes(), value).expect("insert");
            tokens.insert(t.id.as_bytes(), serde_json::to_vec(&t).expect("json")).expect("insert");
            let pointer = RefreshRecord { token_id: t.id, session_id: s.id };
            refresh.insert([i as u8; 32], serde_json::to_vec(&pointer).expect("json")).expect("insert");
            originals.push((s, t));
        }
        migrate(&db, &format, &sessions, &tokens, &refresh).expect("migrates");
        for tree in [&sessions, &tokens, &refresh] {
            assert!(tree.iter().values().all(|v| v.expect("read").first() == Some(&VERSION_1)), "all binary");
        }
        for (s, t) in originals.iter().take(50) {
            let back: SessionRecord =
                decode(&sessions.get(s.id.as_bytes()).expect("read").expect("kept")).expect("decodes");
            assert!(same_session(s, &back));
            let back: TokenRecord =
                decode(&tokens.get(t.id.as_bytes()).expect("read").expect("kept")).expect("decodes");
            assert!(same_token(t, &back));
        }
        assert_eq!(format.get(RECORDS).expect("read").as_deref(), Some([VERSION_1].as_slice()));
        // The second open converts nothing (the marker), even a JSON record
        // written by hand, which still reads.
        let late = session();
        sessions.insert(late.id.as_bytes(), serde_json::to_vec(&late).expect("json")).expect("insert");
        migrate(&db, &format, &sessions, &tokens, &refresh).expect("again");
        let stored = sessions.get(late.id.as_bytes()).expect("read").expect("kept");
        assert_eq!(stored.first(), Some(&b'{'));
    }
}
