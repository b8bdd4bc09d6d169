//! Coalesced refetches. Most events announce a row the console does not
//! hold in full (a new session, a new token, a changed user): the worker
//! must ask the server for it. Asking once per event multiplied the
//! server's load under a login storm (three calls per login), so the
//! worker only notes here what has gone stale, and one task fetches it: at
//! once when it was idle, then at most once per [`REFETCH_INTERVAL`]. Each
//! pass asks for a kind of row key by key, or with one full reload of that
//! list when that takes fewer calls. Events that carry everything the
//! console shows (a revocation, an expiry, a refresh, and a login or an
//! issued token whose event carries the new record) are applied to the
//! rows directly by the UI and cost no call.

use std::{
    collections::BTreeSet,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use sigil_proto::pb;
use tokio::sync::Notify;

/// The shortest time between the starts of two refetch passes.
pub const REFETCH_INTERVAL: Duration = Duration::from_millis(100);

/// How long an idle refetcher waits after the first stale row before it
/// asks: the events of one write (a login's session and its token) arrive
/// together, and are then fetched in one pass.
const SETTLE: Duration = Duration::from_millis(5);

/// What the console's lists lack after the events seen so far.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Stale {
    /// Every list, from the start (at start-up, and when the stream could
    /// not resume where it stopped).
    everything: bool,
    /// Users with a new session.
    sessions_of_users: BTreeSet<String>,
    /// Sessions with a new token.
    tokens_of_sessions: BTreeSet<String>,
    /// Users whose record or count of active sessions changed.
    users: BTreeSet<String>,
    /// Service accounts (client ids) whose record changed.
    service_accounts: BTreeSet<String>,
}

impl Stale {
    /// Notes what `event` announces that the console cannot show from the
    /// event alone.
    pub(crate) fn note(&mut self, event: &pb::Event) {
        use pb::EventKind as K;
        let user = || event.user_id.clone();
        match event.kind() {
            // A login announced by a server that sends the session along
            // (see `App::apply_event`) costs nothing; otherwise its user's
            // sessions and count are fetched.
            K::SessionCreated if event.session.is_none() && !event.user_id.is_empty() => {
                self.sessions_of_users.insert(user());
                self.users.insert(user());
            }
            // The UI marks the session and its tokens ended from the event
            // itself; only the user's count of active sessions is news.
            K::SessionRevoked | K::SessionExpired if !event.user_id.is_empty() => {
                self.users.insert(user());
            }
            K::TokenIssued if event.token.is_none() && !event.session_id.is_empty() => {
                self.tokens_of_sessions.insert(event.session_id.clone());
            }
            K::UserCreated | K::UserUpdated | K::UserDisabled | K::UserEnabled | K::UserDeleted
                if !event.user_id.is_empty() =>
            {
                self.users.insert(user());
            }
            // The events name the account, not what changed in it (a
            // secret's times, the key, roles): the record is fetched. A
            // revocation of its tokens changes nothing the view shows.
            K::ServiceAccountCreated
            | K::ServiceAccountUpdated
            | K::ServiceAccountDisabled
            | K::ServiceAccountEnabled
            | K::ServiceAccountDeleted
            | K::ClientSecretAdded
            | K::ClientSecretRevoked
            | K::ClientKeySet
                if !event.client_id.is_empty() =>
            {
                self.service_accounts.insert(event.client_id.clone());
            }
            _ => {}
        }
    }

    fn is_empty(&self) -> bool {
        *self == Stale::default()
    }

    /// The calls that bring the lists up to date, given what a full reload
    /// of each list costs.
    pub(crate) fn plan(self, pages: &Pages) -> Vec<Fetch> {
        let mut plan = Vec::new();
        if self.everything {
            // The full load lists every active session; it lists only the
            // active tokens, though, and says nothing of deleted users, so
            // the other stale rows are still fetched.
            plan.push(Fetch::Everything);
        } else if self.sessions_of_users.len() > pages.sessions {
            plan.push(Fetch::AllSessions);
        } else {
            plan.extend(self.sessions_of_users.into_iter().map(Fetch::SessionsOfUser));
        }
        if self.users.len() > pages.users {
            plan.push(Fetch::AllUsers { expected: self.users });
        } else {
            plan.extend(self.users.into_iter().map(Fetch::User));
        }
        // As with users: the full load says nothing of deleted accounts.
        if self.service_accounts.len() > pages.service_accounts {
            plan.push(Fetch::AllServiceAccounts { expected: self.service_accounts });
        } else {
            plan.extend(self.service_accounts.into_iter().map(Fetch::ServiceAccount));
        }
        if self.tokens_of_sessions.len() > pages.tokens {
            plan.push(Fetch::AllTokens { of_sessions: self.tokens_of_sessions });
        } else {
            plan.extend(self.tokens_of_sessions.into_iter().map(Fetch::TokensOfSession));
        }
        plan
    }
}

/// What a full reload of each list took, in calls (pages), last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pages {
    /// Active sessions.
    pub(crate) sessions: usize,
    /// Tokens.
    pub(crate) tokens: usize,
    /// Users.
    pub(crate) users: usize,
    /// Service accounts.
    pub(crate) service_accounts: usize,
}

impl Default for Pages {
    fn default() -> Self {
        Self { sessions: 1, tokens: 1, users: 1, service_accounts: 1 }
    }
}

/// One refetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// Every page of users, service accounts, active sessions and active
    /// tokens.
    Everything,
    /// A user's active sessions.
    SessionsOfUser(String),
    /// Every page of active sessions.
    AllSessions,
    /// A session's tokens, ended ones included (a refresh rotates one).
    TokensOfSession(String),
    /// Every page of tokens, ended ones included, of which the active ones
    /// and those of `of_sessions` are shown: what fetching each of those
    /// sessions would have shown.
    AllTokens {
        /// The sessions with new tokens.
        of_sessions: BTreeSet<String>,
    },
    /// One user (or the news that it is gone).
    User(String),
    /// Every page of users; those of `expected` not among them are gone.
    AllUsers {
        /// The users that changed.
        expected: BTreeSet<String>,
    },
    /// One service account, by client id (or the news that it is gone).
    ServiceAccount(String),
    /// Every page of service accounts; those of `expected` not among them
    /// are gone.
    AllServiceAccounts {
        /// The client ids of the accounts that changed.
        expected: BTreeSet<String>,
    },
}

/// The stale rows, shared by the task that reads events and the task that
/// refetches.
#[derive(Debug, Default)]
pub(crate) struct StaleRows {
    stale: Mutex<Stale>,
    wake: Notify,
}

impl StaleRows {
    /// Notes an event (see [`Stale::note`]).
    pub(crate) fn note(&self, event: &pb::Event) {
        let mut stale = self.stale.lock().unwrap_or_else(PoisonError::into_inner);
        stale.note(event);
        if !stale.is_empty() {
            self.wake.notify_one();
        }
    }

    /// Asks for every list to be reloaded.
    pub(crate) fn reload_all(&self) {
        self.stale.lock().unwrap_or_else(PoisonError::into_inner).everything = true;
        self.wake.notify_one();
    }

    /// Waits until something is stale, and takes all of it.
    pub(crate) async fn next(&self) -> Stale {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(SETTLE).await;
            let stale = std::mem::take(&mut *self.stale.lock().unwrap_or_else(PoisonError::into_inner));
            if !stale.is_empty() {
                return stale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: pb::EventKind, user: usize, session: usize) -> pb::Event {
        pb::Event {
            kind: kind.into(),
            user_id: format!("user-{user}"),
            session_id: format!("session-{session}"),
            ..Default::default()
        }
    }

    fn login(stale: &mut Stale, user: usize, session: usize) {
        stale.note(&event(pb::EventKind::SessionCreated, user, session));
        stale.note(&event(pb::EventKind::TokenIssued, user, session));
    }

    #[test]
    fn one_login_is_fetched_row_by_row_as_before() {
        let mut stale = Stale::default();
        login(&mut stale, 1, 1);
        assert_eq!(
            stale.plan(&Pages::default()),
            vec![
                Fetch::SessionsOfUser("user-1".into()),
                Fetch::User("user-1".into()),
                Fetch::TokensOfSession("session-1".into()),
            ]
        );
    }

    #[test]
    fn a_storm_of_logins_costs_at_most_one_reload_of_each_list() {
        let mut stale = Stale::default();
        for n in 0..200 {
            login(&mut stale, n % 20, n);
        }
        let pages = Pages { sessions: 2, tokens: 3, users: 1, service_accounts: 1 };
        let plan = stale.plan(&pages);
        assert_eq!(plan.len(), 3, "{plan:?}");
        assert!(plan.contains(&Fetch::AllSessions));
        assert!(plan.iter().any(|f| matches!(f, Fetch::AllUsers { expected } if expected.len() == 20)));
        assert!(plan.iter().any(|f| matches!(f, Fetch::AllTokens { of_sessions } if of_sessions.len() == 200)));
    }

    #[test]
    fn events_the_ui_applies_itself_cost_no_session_or_token_call() {
        let mut stale = Stale::default();
        stale.note(&event(pb::EventKind::SessionRefreshed, 1, 1));
        stale.note(&event(pb::EventKind::TokenRevoked, 1, 1));
        stale.note(&event(pb::EventKind::LoginFailed, 1, 1));
        assert!(stale.is_empty());
        stale.note(&event(pb::EventKind::SessionRevoked, 1, 1));
        assert_eq!(stale.plan(&Pages::default()), vec![Fetch::User("user-1".into())]);
    }

    #[test]
    fn logins_whose_events_carry_their_records_cost_no_call() {
        let mut stale = Stale::default();
        let mut created = event(pb::EventKind::SessionCreated, 1, 1);
        created.session = Some(Box::default());
        created.token = Some(Box::default());
        let mut issued = event(pb::EventKind::TokenIssued, 1, 1);
        issued.token = Some(Box::default());
        stale.note(&created);
        stale.note(&issued);
        assert!(stale.is_empty(), "{stale:?}");
    }

    fn account_event(kind: pb::EventKind, client: usize) -> pb::Event {
        pb::Event { kind: kind.into(), client_id: format!("client-{client}"), ..Default::default() }
    }

    #[test]
    fn service_account_events_fetch_the_account_and_a_storm_one_list() {
        let mut stale = Stale::default();
        stale.note(&account_event(pb::EventKind::ServiceAccountDisabled, 1));
        stale.note(&account_event(pb::EventKind::ClientSecretAdded, 1));
        stale.note(&account_event(pb::EventKind::ServiceTokensRevoked, 2));
        stale.note(&account_event(pb::EventKind::ClientAuthFailed, 3));
        assert_eq!(stale.plan(&Pages::default()), vec![Fetch::ServiceAccount("client-1".into())]);
        let mut stale = Stale::default();
        for n in 0..50 {
            stale.note(&account_event(pb::EventKind::ServiceAccountCreated, n));
        }
        let plan = stale.plan(&Pages::default());
        assert!(matches!(&plan[..], [Fetch::AllServiceAccounts { expected }] if expected.len() == 50), "{plan:?}");
    }

    #[test]
    fn a_reload_of_everything_replaces_the_fetches_of_sessions_only() {
        let mut stale = Stale::default();
        login(&mut stale, 1, 1);
        stale.everything = true;
        assert_eq!(
            stale.plan(&Pages::default()),
            vec![Fetch::Everything, Fetch::User("user-1".into()), Fetch::TokensOfSession("session-1".into())]
        );
    }
}
