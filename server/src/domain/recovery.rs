//! The host-side way back into administration ([`Identity::recover_admin`],
//! run by `sigil-server reset-admin-password`): for operators whose admins
//! can no longer log in. It never runs behind the API.

use super::{
    DomainError, Identity, Secret, Timestamp,
    event::{EventKind, EventRecord},
    identity::check_password,
    lockout::throttle_key,
    revocation::RevocationTarget,
    user::{ADMIN_ROLE, UserRecord, normalize_username},
};

/// What [`Identity::recover_admin`] did.
#[derive(Debug)]
pub struct AdminRecovery {
    /// The admin as it now stands.
    pub user: UserRecord,
    /// Whether it had to be created.
    pub created: bool,
    /// Its sessions that were ended.
    pub revoked_sessions: u32,
}

impl Identity {
    /// The host-side way back when no admin can log in (`sigil-server
    /// reset-admin-password`, run on the store with the server stopped):
    /// gives `username` the password `password`, enables it, grants it the
    /// admin role, clears its failed-login lock and ends its sessions; all
    /// of it recorded as audit events. A user of that name that does not
    /// exist is created as an admin, but only while no enabled admin exists
    /// (so that a mistyped name does not quietly create a second admin).
    pub async fn recover_admin(&self, username: &str, password: &Secret<String>) -> Result<AdminRecovery, DomainError> {
        const DETAIL: &str = "admin password reset on the host (sigil-server reset-admin-password)";
        let name = normalize_username(username)?;
        check_password(password)?;
        let Some(mut user) = self.store.user_by_name(&name).await? else {
            let admins = self.enabled_admins(None, 5).await?;
            if !admins.is_empty() {
                let names: Vec<String> = admins.iter().map(|u| format!("{:?}", u.username)).collect();
                return Err(DomainError::NotFound(format!(
                    "no user {name:?}; enabled admins are {}: name one with --username",
                    names.join(", ")
                )));
            }
            let user = self.create_user(None, &name, password, vec![ADMIN_ROLE.to_string()]).await?;
            let event = EventRecord::new(EventKind::UserUpdated).user(user.id, &user.username).detail(DETAIL);
            self.events.publish(vec![event]).await;
            return Ok(AdminRecovery { user, created: true, revoked_sessions: 0 });
        };
        let now = Timestamp::now();
        let was_disabled = user.disabled;
        user.password_hash = self.hasher.hash(password).await?;
        user.disabled = false;
        if !user.has_role(ADMIN_ROLE) {
            user.roles.push(ADMIN_ROLE.to_string());
            user.roles.sort();
        }
        user.updated_at = now;
        let revocation = was_disabled.then(|| {
            let target = RevocationTarget::UserEnabled(user.id);
            (target, self.revocation_cause_of(&target, now, "admin recovered on the host"))
        });
        if let Some(entry) = self.store.update_user(&user, revocation).await? {
            self.apply_revocations(std::slice::from_ref(&entry));
        }
        self.store.clear_login_failures(&throttle_key(&user.username, Some(user.id))).await?;
        let mut events = vec![
            EventRecord::new(EventKind::UserUpdated)
                .user(user.id, &user.username)
                .detail(format!("{DETAIL}; roles: {}", user.roles.join(","))),
        ];
        if was_disabled {
            events.push(EventRecord::new(EventKind::UserEnabled).user(user.id, &user.username).detail(DETAIL));
        }
        self.events.publish(events).await;
        let revoked_sessions = self.end_sessions_of(None, user.id, "admin password reset on the host").await?;
        Ok(AdminRecovery { user, created: false, revoked_sessions })
    }
}
