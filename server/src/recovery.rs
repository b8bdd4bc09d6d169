//! `sigil-server reset-admin-password`: the operator's way back in when no
//! admin can log in (password lost, the bootstrap password never seen, an
//! older version that let the last admin lock itself out). It needs the
//! host, not the API: it opens the store directly — the sled data
//! directory with the server stopped, or the PostgreSQL database — sets a
//! new password (from `SIGIL_ADMIN_PASSWORD`, or generated and printed
//! once), enables the user, grants it `admin`, ends its sessions and records
//! the reset in the audit trail (see [`Identity::recover_admin`]).

use std::{path::Path, sync::Arc};

use clap::{Args, Subcommand};

use crate::{
    config::{Config, DatabaseUrl},
    domain::{
        DomainError, Identity, Secret,
        password::{base64_url, fill_random},
        port::{Store, StoreError},
    },
    store::{postgres::PgStore, sled_store::SledStore},
};

/// What `sigil-server` can do instead of serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reset an admin's password on the store itself (the server stopped when
    /// the store is sled): the new password comes from SIGIL_ADMIN_PASSWORD,
    /// or is generated and printed once. The user is enabled, made admin, and
    /// its sessions end. Creates the user if it does not exist and no enabled
    /// admin exists.
    ResetAdminPassword(ResetAdminPassword),
}

/// Arguments of `reset-admin-password`. The store is the one the server's
/// own settings name (`--config`, `SIGIL_DATA_DIR`, `SIGIL_DATABASE_URL`, …);
/// these flags override them.
#[derive(Debug, Args)]
pub struct ResetAdminPassword {
    /// The user whose password is reset.
    #[arg(long, default_value = "admin")]
    pub username: String,
    /// Directory of the sled store [default: the server's --data-dir].
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// PostgreSQL URL of the shared store [default: the server's --database-url].
    #[arg(long, value_parser = DatabaseUrl::parse)]
    pub database_url: Option<DatabaseUrl>,
    /// PEM CA certificate(s) of the PostgreSQL server.
    #[arg(long)]
    pub database_ca: Option<std::path::PathBuf>,
}

/// Why the recovery could not be done.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The data directory holds no sled store: a wrong path, most likely.
    #[error("{0} holds no Sigil store (no sled database there); name the server's data directory with --data-dir")]
    NoStore(String),
    /// A running server holds sled's lock on the data directory.
    #[error(
        "{0} is in use by a running sigil-server (sled allows one process): stop it first, then run this command again"
    )]
    InUse(String),
    /// The PostgreSQL server's CA certificate could not be read.
    #[error("cannot read the database CA {path}")]
    DatabaseCa {
        /// The file as configured.
        path: String,
        /// Why.
        #[source]
        reason: std::io::Error,
    },
    /// sled's lock file could not be opened to probe it.
    #[error("cannot open {path}")]
    OpenLockFile {
        /// The lock file.
        path: String,
        /// Why.
        #[source]
        reason: std::io::Error,
    },
    /// sled's lock file could not be probed.
    #[error("cannot lock {path}")]
    LockFile {
        /// The lock file.
        path: String,
        /// Why.
        #[source]
        reason: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The domain refused (e.g. no such user while other admins exist).
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// Runs `command` against the store `config` names; `password` is
/// `SIGIL_ADMIN_PASSWORD` when set.
pub async fn execute(command: Command, config: Config, password: Option<Secret<String>>) -> Result<(), RecoveryError> {
    let Command::ResetAdminPassword(args) = command;
    let config = Config {
        data_dir: args.data_dir.unwrap_or(config.data_dir),
        database_url: args.database_url.or(config.database_url),
        database_ca: args.database_ca.or(config.database_ca),
        ..config
    };
    let store = open_store(&config).await?;
    let identity = Identity::open(store.clone(), config.identity_settings()).await?;
    let (password, generated) = match password {
        Some(password) => (password, false),
        None => {
            let mut bytes = [0u8; 18];
            fill_random(&mut bytes)?;
            (Secret::new(base64_url(&bytes)), true)
        }
    };
    let outcome = identity.recover_admin(&args.username, &password).await;
    // Whatever happened, what was written is made durable before exiting.
    store.close().await?;
    let recovery = outcome?;
    let user = &recovery.user;
    if recovery.created {
        println!("Created user {:?} with role admin.", user.username);
    } else {
        println!(
            "Reset user {:?}: enabled, roles {}, {} session(s) ended.",
            user.username,
            user.roles.join(","),
            recovery.revoked_sessions
        );
    }
    if generated {
        println!("\n  New password of {:?}: {}\n  It is shown only this once.\n", user.username, password.expose());
    } else {
        println!("The password is the one in SIGIL_ADMIN_PASSWORD.");
    }
    Ok(())
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>, RecoveryError> {
    if let Some(url) = &config.database_url {
        let ca = match &config.database_ca {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|reason| RecoveryError::DatabaseCa { path: path.display().to_string(), reason })?,
            ),
            None => None,
        };
        let store: Arc<dyn Store> = PgStore::connect(url.expose(), ca.as_deref()).await?;
        return Ok(store);
    }
    let dir = &config.data_dir;
    // Opening sled on a wrong path would create an empty store there and a
    // new admin in it, which would help nobody.
    let lock_file = dir.join("db");
    if !lock_file.is_file() {
        return Err(RecoveryError::NoStore(dir.display().to_string()));
    }
    ensure_not_in_use(dir, &lock_file)?;
    let store: Arc<dyn Store> = SledStore::open(dir)?;
    Ok(store)
}

/// sled takes an exclusive `flock` on `<dir>/db` for as long as a process
/// has the store open; probing it first turns sled's raw lock error into
/// one that says what to do.
fn ensure_not_in_use(dir: &Path, lock_file: &Path) -> Result<(), RecoveryError> {
    #[cfg(unix)]
    {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(lock_file)
            .map_err(|reason| RecoveryError::OpenLockFile { path: lock_file.display().to_string(), reason })?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            // Released when `file` is dropped, before sled takes it.
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(RecoveryError::InUse(dir.display().to_string())),
            Err(e) => {
                return Err(RecoveryError::LockFile { path: lock_file.display().to_string(), reason: e.into() });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, lock_file);
    Ok(())
}
