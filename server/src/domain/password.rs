//! Password hashing with argon2id at the OWASP parameters (m=19456 KiB, t=2,
//! p=1: the `argon2` crate's defaults).
//!
//! Each hash costs ~15 ms of one core and 19 MiB of memory, so the work
//! runs on a fixed pool of one thread per core, off the async workers:
//! unbounded, concurrent hashes fight over the cores and total throughput
//! falls to a quarter, the async workers that serve `Validate` starve, and
//! every short-lived blocking thread keeps its own 19 MiB malloc arena (the
//! server grew to 800 MB under a login flood before this pool).
//!
//! The pool's queue is bounded: when it is full, a login is refused at once
//! with `ResourceExhausted` instead of waiting without end.
//!
//! Each pool thread keeps its 19 MiB of argon2 memory while it has work
//! queued (a fresh allocation per hash costs page faults and zeroing on every
//! login) and hands it back to the system when its queue runs dry (see
//! `ArgonMemory`). And the pool threads run in the idle scheduling class:
//! under a login flood they still take every idle cycle, but the threads
//! answering `Validate` and the admin API go first.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use std::cell::RefCell;

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString},
};
use tokio::sync::oneshot;

use super::{DomainError, Secret};

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords on a fixed pool of threads.
#[derive(Clone)]
pub(crate) struct PasswordHasher {
    jobs: mpsc::SyncSender<Job>,
    /// Jobs sent and not yet taken by a pool thread.
    queued: Arc<AtomicUsize>,
    /// A real hash of a random password, verified against when the user is
    /// unknown so that an unknown name costs exactly what a wrong password does.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    /// A hasher with `parallelism` threads (normally the core count) and
    /// room for `queue` waiting hashes.
    pub(crate) fn new(parallelism: usize, queue: usize) -> Result<Self, DomainError> {
        let mut random = [0u8; 32];
        fill_random(&mut random)?;
        let dummy = hash_blocking(&base64_url(&random))?;
        // That ran on the caller's thread, which is not a pool thread.
        ArgonMemory::release();
        let (jobs, incoming) = mpsc::sync_channel::<Job>(queue);
        let incoming = Arc::new(Mutex::new(incoming));
        let queued = Arc::new(AtomicUsize::new(0));
        for n in 0..parallelism.max(1) {
            let (incoming, queued) = (incoming.clone(), queued.clone());
            std::thread::Builder::new()
                .name(format!("sigil-argon2-{n}"))
                .spawn(move || {
                    yield_to_request_threads();
                    loop {
                        // Nothing left to do: the argon2 memory goes back to
                        // the system until the next login.
                        if queued.load(Ordering::Acquire) == 0 {
                            ArgonMemory::release();
                        }
                        // The lock is held only to take one job.
                        let job = match incoming.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        queued.fetch_sub(1, Ordering::AcqRel);
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| DomainError::internal_because("cannot start the hashing threads", e))?;
        }
        Ok(Self { jobs, queued, dummy_hash: dummy.into() })
    }

    /// Hashes a password into a PHC string.
    pub(crate) async fn hash(&self, password: &Secret<String>) -> Result<String, DomainError> {
        let password = password.clone();
        self.run(move || hash_blocking(password.expose())).await?
    }

    /// Whether `password` matches `phc`. With `phc = None` (unknown user) a
    /// dummy hash is verified instead and the answer is always `false`.
    pub(crate) async fn verify(&self, password: &Secret<String>, phc: Option<&str>) -> Result<bool, DomainError> {
        let known = phc.is_some();
        let phc: Arc<str> = phc.map(Arc::from).unwrap_or_else(|| self.dummy_hash.clone());
        let password = password.clone();
        let matches = self.run(move || verify_blocking(password.expose(), &phc)).await??;
        Ok(known && matches)
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, DomainError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller may have gone away; then nobody needs the answer.
            let _ = done.send(work());
        });
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.jobs
            .try_send(job)
            .inspect_err(|_| {
                self.queued.fetch_sub(1, Ordering::AcqRel);
            })
            .map_err(|e| match e {
                mpsc::TrySendError::Full(_) => DomainError::ResourceExhausted {
                    message: "too many logins in progress; retry shortly".into(),
                    retry_after: Some(Duration::from_secs(1)),
                },
                mpsc::TrySendError::Disconnected(_) => DomainError::internal("password hasher stopped"),
            })?;
        result.await.map_err(|_| DomainError::internal("password hashing failed"))
    }
}

/// A pool thread's argon2 working memory, reused from one hash to the next.
///
/// The buffer's capacity is kept above glibc's largest mmap threshold
/// (32 MiB), so it is always its own `mmap`: freeing it returns the pages to
/// the system at once. (At 19 MiB, glibc raises its threshold after the first
/// free and keeps every later buffer in its arenas: an idle server then held
/// 19 MiB it did not use.) Only the pages argon2 touches become resident.
struct ArgonMemory;

/// Blocks (1 KiB each) reserved at least: just over 32 MiB.
const MMAP_FLOOR_BLOCKS: usize = 32 * 1024 + 1;

thread_local! {
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

impl ArgonMemory {
    /// Runs argon2 with `params` on this thread's memory.
    fn hash_into(params: Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        MEMORY.with_borrow_mut(|memory| {
            let blocks = params.block_count();
            if memory.capacity() < blocks {
                *memory = Vec::with_capacity(blocks.max(MMAP_FLOOR_BLOCKS));
            }
            memory.resize(blocks, Block::default());
            argon.hash_password_into_with_memory(password, salt, out, &mut memory[..])
        })
    }

    /// Gives this thread's memory back to the system.
    fn release() {
        MEMORY.with_borrow_mut(|memory| *memory = Vec::new());
    }
}

/// Verifies `password` against the PHC string `phc`; the comparison of the
/// outputs is constant-time.
fn verify_blocking(password: &str, phc: &str) -> Result<bool, DomainError> {
    fn unreadable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DomainError {
        DomainError::internal_because("stored password hash is unreadable", cause)
    }
    let parsed = PasswordHash::new(phc).map_err(unreadable)?;
    if Algorithm::try_from(parsed.algorithm).map_err(unreadable)? != Algorithm::Argon2id
        || parsed.version.map(Version::try_from).transpose().map_err(unreadable)?.unwrap_or_default() != Version::V0x13
    {
        return Err(unreadable("not argon2id v19"));
    }
    let params = Params::try_from(&parsed).map_err(unreadable)?;
    let expected = parsed.hash.ok_or_else(|| unreadable("no hash"))?;
    let mut salt = [0u8; 64];
    let salt = parsed.salt.ok_or_else(|| unreadable("no salt"))?.decode_b64(&mut salt).map_err(unreadable)?;
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    ArgonMemory::hash_into(params, password.as_bytes(), salt, out)
        .map_err(|e| DomainError::internal_because("password verification failed", e))?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(out).is_ok_and(|computed| computed == expected))
}

/// Puts the calling thread in Linux's idle scheduling class (SCHED_IDLE):
/// it still takes every cycle nobody else wants, but a thread woken to
/// answer a request preempts it at once. (Nice 10 alone was not enough: the
/// scheduler let a woken request thread wait up to its wake-up granularity,
/// which doubled `Validate`'s p95 under a login flood.) Falls back to nice 10.
fn yield_to_request_threads() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(e) = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle) {
            tracing::debug!(error = ?e, "no idle scheduling class for a password hashing thread; lowering its nice");
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), HASHING_NICENESS);
        }
    }
}

/// Niceness of the hashing threads where SCHED_IDLE is refused.
#[cfg(target_os = "linux")]
const HASHING_NICENESS: i32 = 10;

/// Hashes `password` with a fresh salt into a PHC string (argon2id v19 at
/// the OWASP parameters, the `argon2` crate's defaults).
fn hash_blocking(password: &str) -> Result<String, DomainError> {
    fn failed(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DomainError {
        DomainError::internal_because("password hashing failed", cause)
    }
    let mut salt = [0u8; 16];
    fill_random(&mut salt)?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    ArgonMemory::hash_into(params.clone(), password.as_bytes(), &salt, &mut out).map_err(failed)?;
    let salt = SaltString::encode_b64(&salt).map_err(failed)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(failed)?),
    };
    Ok(phc.to_string())
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), DomainError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| DomainError::internal("system random source failed"))
}

/// Unpadded base64url, the encoding of tokens and key material.
pub(crate) fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let hasher = PasswordHasher::new(2, 8).expect("hasher");
        let password = Secret::new("correct horse battery staple".to_string());
        let phc = hasher.hash(&password).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher.verify(&password, Some(&phc)).await.expect("verify"));
        let wrong = Secret::new("wrong".to_string());
        assert!(!hasher.verify(&wrong, Some(&phc)).await.expect("verify"));
        assert!(!hasher.verify(&password, None).await.expect("verify"));
    }

    #[test]
    fn hashes_are_standard_phc_strings_both_ways() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        // Ours verify with the argon2 crate's own verifier...
        let ours = hash_blocking("interop").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(Argon2::default().verify_password(b"interop", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"interop!", &parsed).is_err());
        // ...and the crate's hashes (as older stores hold) verify with ours.
        let salt = SaltString::encode_b64(b"sixteen byte salt").expect("salt");
        let theirs = Argon2::default().hash_password(b"interop", &salt).expect("hash").to_string();
        assert!(verify_blocking("interop", &theirs).expect("verify"));
        assert!(!verify_blocking("nope", &theirs).expect("verify"));
        // Other algorithms are refused, not verified with argon2id.
        assert!(verify_blocking("interop", &theirs.replace("argon2id", "argon2i")).is_err());
    }

    #[tokio::test]
    async fn long_passphrases_are_hashed_whole() {
        let hasher = PasswordHasher::new(1, 8).expect("hasher");
        let long = "a".repeat(1000);
        let phc = hasher.hash(&Secret::new(long.clone())).await.expect("hash");
        let almost = Secret::new(format!("{}b", &long[..999]));
        assert!(!hasher.verify(&almost, Some(&phc)).await.expect("verify"));
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_instead_of_waiting() {
        let hasher = PasswordHasher::new(1, 1).expect("hasher");
        let password = Secret::new("p".to_string());
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let (hasher, password) = (hasher.clone(), password.clone());
                tokio::spawn(async move { hasher.verify(&password, None).await })
            })
            .collect();
        let mut refused = 0;
        for attempt in attempts {
            if let Err(DomainError::ResourceExhausted { retry_after, .. }) = attempt.await.expect("task") {
                assert!(retry_after.is_some());
                refused += 1;
            }
        }
        assert!(refused >= 1, "one thread and one queue slot cannot take eight hashes at once");
    }
}
