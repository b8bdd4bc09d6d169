//! `sigil-server`: parses the configuration, starts the service, prints the
//! bootstrap admin's generated password once, and serves until SIGINT or
//! SIGTERM, then shuts down after in-flight writes are durable.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use sigil_server::{
    config::{Cli, Config, LogFormat},
    domain::Secret,
    server,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        return match runtime.block_on(sigil_server::recovery::execute(command, config, admin_password_from_env())) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sigil-server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sigil-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let admin_password = admin_password_from_env();
    let admin_password_given = admin_password.is_some();
    let running = server::start(&config, admin_password).await.context("cannot start")?;
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
    shutdown_signal().await?;
    tracing::info!("shutting down");
    running.shutdown().await.context("shutdown")?;
    tracing::info!("stopped; all acknowledged writes are durable");
    Ok(())
}

/// `SIGIL_ADMIN_PASSWORD`, when set and not empty.
fn admin_password_from_env() -> Option<Secret<String>> {
    std::env::var("SIGIL_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty()).map(Secret::new)
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
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
