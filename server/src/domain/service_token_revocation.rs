//! Revoking one service account's token by its id. Service tokens leave
//! no record in the store (a grant writes nothing, see `client_auth`), so
//! revoking one is a revocation-log entry alone, kept, like every entry,
//! until no token it covers can be live.

use super::{
    Identity, Timestamp, TokenId,
    port::{RevocationCause, RevokeOutcome},
    revocation::RevocationTarget,
};

impl Identity {
    /// Revokes the service token `id`, unless it is already revoked or
    /// could not be live now (its UUIDv7 `jti` was minted more than one
    /// access-token lifetime ago, or in the future): then nothing is
    /// written, so a revocation of made-up ids writes nothing either.
    pub(super) async fn revoke_service_token(
        &self,
        id: TokenId,
        cause: &RevocationCause,
    ) -> Result<RevokeOutcome, super::DomainError> {
        let now = Timestamp::now();
        let oldest = now.minus(self.settings.access_token_ttl + self.settings.leeway);
        let could_be_live =
            id.created_at().is_some_and(|minted| minted >= oldest && minted <= now.plus(self.settings.leeway));
        if !could_be_live || self.revocations.covers_token(id) {
            return Ok(RevokeOutcome::default());
        }
        let entry = self.store.append_revocation(RevocationTarget::Token(id), cause).await?;
        Ok(RevokeOutcome { tokens: 1, entries: vec![entry], ..RevokeOutcome::default() })
    }
}
