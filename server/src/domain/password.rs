//! Password hashing with argon2id at the OWASP parameters (m=19456 KiB, t=2,
//! p=1: the `argon2` crate's defaults).
//!
//! Each hash costs ~15 ms of one core, so the work runs on the blocking pool
//! behind a semaphore with one permit per core: unbounded, concurrent hashes
//! fight over the cores and total throughput falls to a quarter, and the
//! async workers that serve `Validate` would starve.

use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString};
use tokio::sync::Semaphore;

use super::{DomainError, Secret};

/// Hashes and verifies passwords off the async workers.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the user is
    /// unknown so that an unknown name costs exactly what a wrong password does.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    /// A hasher allowing `parallelism` hashes at once (normally the core count).
    pub fn new(parallelism: usize) -> Result<Self, DomainError> {
        let mut random = [0u8; 32];
        fill_random(&mut random)?;
        let dummy = hash_blocking(&base64_url(&random))?;
        Ok(Self { permits: Arc::new(Semaphore::new(parallelism.max(1))), dummy_hash: dummy.into() })
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: &Secret<String>) -> Result<String, DomainError> {
        let password = password.clone();
        self.run(move || hash_blocking(password.expose())).await?
    }

    /// Whether `password` matches `phc`. With `phc = None` (unknown user) a
    /// dummy hash is verified instead and the answer is always `false`.
    pub async fn verify(&self, password: &Secret<String>, phc: Option<&str>) -> Result<bool, DomainError> {
        let known = phc.is_some();
        let phc: Arc<str> = phc.map(Arc::from).unwrap_or_else(|| self.dummy_hash.clone());
        let password = password.clone();
        let matches = self
            .run(move || {
                let parsed = PasswordHash::new(&phc)
                    .map_err(|e| DomainError::Internal(format!("stored password hash is unreadable: {e}")))?;
                Ok::<_, DomainError>(Argon2::default().verify_password(password.expose().as_bytes(), &parsed).is_ok())
            })
            .await??;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, DomainError> {
        let _permit =
            self.permits.acquire().await.map_err(|_| DomainError::Internal("password hasher shut down".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| DomainError::Internal(format!("password hashing task failed: {e}")))
    }
}

fn hash_blocking(password: &str) -> Result<String, DomainError> {
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| DomainError::Internal(format!("salt encoding failed: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| DomainError::Internal(format!("password hashing failed: {e}")))
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), DomainError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| DomainError::Internal("system random source failed".into()))
}

/// Unpadded base64url, the encoding of tokens and key material.
pub fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let hasher = PasswordHasher::new(2).expect("hasher");
        let password = Secret::new("correct horse battery staple".to_string());
        let phc = hasher.hash(&password).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify(&password, Some(&phc)).await.expect("verify"));
        let wrong = Secret::new("wrong".to_string());
        assert!(!hasher.verify(&wrong, Some(&phc)).await.expect("verify"));
        assert!(!hasher.verify(&password, None).await.expect("verify"));
    }

    #[tokio::test]
    async fn long_passphrases_are_hashed_whole() {
        let hasher = PasswordHasher::new(1).expect("hasher");
        let long = "a".repeat(1000);
        let phc = hasher.hash(&Secret::new(long.clone())).await.expect("hash");
        let almost = Secret::new(format!("{}b", &long[..999]));
        assert!(!hasher.verify(&almost, Some(&phc)).await.expect("verify"));
    }
}
