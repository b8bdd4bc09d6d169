//! `sigil-server`: parses the configuration, raises its file-descriptor
//! limit, starts the service, prints the bootstrap admin's generated
//! password once, and serves until SIGINT or SIGTERM; then shuts down within
//! the grace period with every write durable. A second signal exits at once.

use std::{process::ExitCode, time::Duration};

use anyhow::Context as _;
use sigil_server::{Cli, Config, LogFormat, domain::Secret};

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let config = match Config::load(cli.config.as_deref(), cli.layer) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sigil-server: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format);
    raise_fd_limit();
    // Everything this process creates — the store's files, which hold the
    // private signing keys and password hashes — is readable by its own
    // user only (files 0600, directories 0700), whatever umask it inherited.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sigil-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(command) = cli.command {
        return match runtime.block_on(sigil_server::recover(command, config, admin_password_from_env())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // With its causes, as a failed start prints them.
                eprintln!("sigil-server: {:#}", anyhow::Error::from(e));
                ExitCode::FAILURE
            }
        };
    }
    let outcome = runtime.block_on(run(config));
    // Calls abandoned after the grace period must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, on standard error like every other start-up refusal
            // (systemd's journal keeps both streams).
            eprintln!("sigil-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every connection
/// is a file descriptor, and the soft default (often 1,024) is far below
/// what the listeners' caps allow. The listeners fit their caps under
/// whatever limit results.
fn raise_fd_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(
                open_files = limit.maximum.map_or_else(|| "unlimited".to_string(), |n| n.to_string()),
                "file-descriptor limit"
            ),
            Err(e) => tracing::warn!(
                open_files = limit.current.map_or_else(|| "unlimited".to_string(), |n| n.to_string()),
                error = %e,
                "cannot raise the file-descriptor limit"
            ),
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let admin_password = admin_password_from_env();
    let admin_password_given = admin_password.is_some();
    // Registered before the start, so that a signal right after the
    // "listening" line (a supervisor stopping a fresh process) still gets a
    // clean shutdown; one during the start abandons it (nothing was
    // acknowledged yet).
    let mut signals = StopSignals::new()?;
    let running = tokio::select! {
        running = sigil_server::start(&config, admin_password) => running.context("cannot start")?,
        () = signals.next() => {
            tracing::info!("stopped during the start");
            return Ok(());
        }
    };
    if admin_password_given && running.bootstrap_admin.is_none() {
        tracing::warn!(
            "SIGIL_ADMIN_PASSWORD is ignored: users exist already, and it only sets the first admin's password on an \
             empty store; to reset an admin's password, stop the server and run `sigil-server reset-admin-password` \
             (README: \"Recovering admin access\")"
        );
    }
    if let Some((admin, generated)) = &running.bootstrap_admin {
        match generated {
            Some(password) => println!(
                "\n  Created user {:?} (role admin) with password: {}\n  It is shown only this once.\n",
                admin.username,
                password.expose()
            ),
            None => {
                tracing::info!(username = %admin.username, "created bootstrap admin from SIGIL_ADMIN_PASSWORD")
            }
        }
    }
    signals.next().await;
    tracing::info!(grace = %humantime::format_duration(config.shutdown_grace), "shutting down (a second signal exits at once)");
    tokio::select! {
        result = running.shutdown() => result.context("shutdown")?,
        () = signals.next() => {
            // "Now": every acknowledged write is durable already (writes are
            // acknowledged only after their group commit); calls in flight
            // are cut and unacknowledged ones may be lost.
            tracing::warn!("second signal: exiting now without waiting for calls in flight");
            std::process::exit(1);
        }
    }
    tracing::info!("stopped; all acknowledged writes are durable");
    Ok(())
}

/// `SIGIL_ADMIN_PASSWORD`, when set and not empty.
fn admin_password_from_env() -> Option<Secret<String>> {
    std::env::var("SIGIL_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty()).map(Secret::new)
}

/// SIGINT and SIGTERM, registered once so that a second one is never missed
/// (nor lets the default action kill the process mid-flush).
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
