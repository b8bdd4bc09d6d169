//! Usernames stored by older versions, which only trimmed and lower-cased,
//! brought to today's canonical form (PRECIS, see `user.rs`) at start.

use super::{
    DomainError, Identity,
    event::{EventKind, EventRecord},
    port::StoreError,
    user::{UserRecord, is_canonical_username, normalize_username},
};

impl Identity {
    /// Brings stored usernames to today's canonical form at start. Names
    /// stored before PRECIS usernames were only trimmed and lower-cased, so
    /// a fullwidth `ａｌｉｃｅ` or an NFD `josé` may be stored as typed:
    /// - if the canonical form is free, the user is renamed to it (its id,
    ///   roles, password and sessions stay; an audit event and a log line
    ///   say so), and logs in as before under any form of its name;
    /// - if another user holds the canonical form (two look-alike accounts),
    ///   or the name is no longer valid (e.g. it holds a zero-width space),
    ///   it is left as it is and a warning names both ids: it stays
    ///   reachable by id (GetUser, UpdateUser, DeleteUser, ListUsers), but
    ///   logins and GetUser by name, being normalized, reach only the holder
    ///   of the canonical name (or nobody). An admin decides what to do.
    ///
    /// Returns how many names were not canonical.
    pub async fn migrate_usernames(&self) -> Result<usize, DomainError> {
        const PAGE: usize = 500;
        let mut found = 0;
        let mut after = None;
        loop {
            let page = self.store.list_users(after, PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|u| u.id);
            for user in page.into_iter().filter(|u| !is_canonical_username(&u.username)) {
                found += 1;
                self.migrate_username(user).await?;
            }
            if !full {
                return Ok(found);
            }
        }
    }

    async fn migrate_username(&self, mut user: UserRecord) -> Result<(), DomainError> {
        let canonical = match normalize_username(&user.username) {
            Ok(canonical) => canonical,
            Err(e) => {
                tracing::warn!(
                    user_id = %user.id, username = ?user.username, reason = %e,
                    "stored username is no longer valid: this user is reachable by id only (logins under this \
                     name are refused); delete it, or keep it for its records"
                );
                return Ok(());
            }
        };
        let old = std::mem::replace(&mut user.username, canonical);
        match self.store.rename_user(&user, &old).await {
            Ok(()) => {
                tracing::info!(user_id = %user.id, from = ?old, to = ?user.username, "username brought to canonical form");
                let event = EventRecord::new(EventKind::UserUpdated)
                    .user(user.id, &user.username)
                    .detail(format!("username brought to canonical form (RFC 8265) from {old:?}"));
                self.events.publish(vec![event]).await;
            }
            Err(StoreError::UsernameTaken) => {
                let holder = self.store.user_by_name(&user.username).await?.map(|u| u.id.to_string());
                tracing::warn!(
                    user_id = %user.id, username = ?old, canonical = ?user.username,
                    holder = holder.as_deref().unwrap_or("-"),
                    "stored username is not in canonical form and another user holds that form: logins under \
                     either name reach the holder; this user is reachable by id only (delete it, or keep it for \
                     its records)"
                );
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}
