//! `sigil-console`: logs in, then runs the live admin console until `q`.
//! A wrong password, an unreachable server or a missing terminal ends with
//! one clear line and a non-zero exit, before the terminal is touched.
//! However the console ends (short of a kill), it revokes its own session
//! on the way out, so no admin session is left behind: a panic too, within
//! a bound (see `panic_hook`).

use std::{io::IsTerminal as _, process::ExitCode, time::Duration, time::SystemTime};

use clap::Parser;
use crossterm::event::{Event, EventStream, KeyEventKind};
use futures::StreamExt as _;
use sigil_console::{action::Action, app::App, backend, keymap, ui};
use tokio::sync::mpsc;

/// Live terminal console for Sigil: sessions, tokens, users and events.
#[derive(Parser)]
#[command(name = "sigil-console", version)]
struct Cli {
    /// Sigil's gRPC address.
    #[arg(long, env = "SIGIL_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// The admin user to log in as.
    #[arg(long, env = "SIGIL_USERNAME", default_value = "admin")]
    username: String,
    /// PEM CA certificate for an `https://` server.
    #[arg(long, env = "SIGIL_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate, for servers that require mTLS (with --client-key).
    #[arg(long, env = "SIGIL_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// PEM client private key (with --client-cert).
    #[arg(long, env = "SIGIL_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
}

impl Cli {
    /// Reads the TLS files named on the command line.
    fn tls(&self) -> Result<backend::TlsFiles, String> {
        let read =
            |path: &std::path::Path| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        let ca_cert = self.ca_cert.as_deref().map(read).transpose()?;
        let client_identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Ok(backend::TlsFiles { ca_cert, client_identity })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let tls = match cli.tls() {
        Ok(tls) => tls,
        Err(e) => return fail(&e),
    };
    let password = match std::env::var("SIGIL_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ if std::io::stdin().is_terminal() => {
            match rpassword::prompt_password(format!("Password for {} at {}: ", cli.username, cli.server)) {
                Ok(p) => p,
                Err(e) => return fail(&format!("cannot read the password: {e}")),
            }
        }
        _ => return fail("no password: set SIGIL_PASSWORD or run on a terminal to be asked"),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    runtime.block_on(async move {
        let connection = match backend::login(&cli.server, &cli.username, &password, &tls).await {
            Ok(connection) => connection,
            Err(e) => return fail(&e.to_string()),
        };
        drop(password);
        // From here on a panic revokes the console's session too.
        sigil_console::panic_hook::install(connection.revoker());
        // Without a terminal there is nothing to draw on: ratatui would
        // panic with a backtrace.
        let outcome = if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
            run(connection.clone(), &cli.server, &cli.username).await.map_err(|e| format!("terminal error: {e}"))
        } else {
            Err("not a terminal: run sigil-console in a terminal (stdin and stdout)".to_string())
        };
        let logout = connection.logout().await;
        match (outcome, logout) {
            (Ok(()), Ok(())) => ExitCode::SUCCESS,
            (Err(e), _) | (Ok(()), Err(e)) => fail(&e),
        }
    })
}

fn fail(message: &str) -> ExitCode {
    eprintln!("sigil-console: {message}");
    ExitCode::FAILURE
}

async fn run(connection: backend::AdminConnection, server: &str, username: &str) -> std::io::Result<()> {
    let (update_tx, mut updates) = mpsc::unbounded_channel();
    let (command_tx, commands) = mpsc::unbounded_channel();
    connection.spawn(update_tx, commands);

    // Raw mode and the alternate screen; the panic hook ratatui installs
    // restores the terminal if anything panics, then ours revokes the
    // console's session (see `panic_hook`).
    let mut terminal = ratatui::init();
    // A panic ends the console, wherever it struck: a worker task that
    // died would leave a screen that no longer changes, on a terminal
    // given back and with a session revoked.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
    let mut app = App::new(server, username, SystemTime::now());
    // Pages and scrolling are measured against the terminal's size, told to
    // the state machine now and on every resize, so drawing only reads.
    match terminal.size() {
        Ok(size) => app.update(Action::Resize(size)),
        Err(e) => {
            ratatui::restore();
            return Err(e);
        }
    };
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let result = loop {
        if let Err(e) = terminal.draw(|frame| ui::draw(frame, &app)) {
            break Err(e);
        }
        let action = tokio::select! {
            key = keys.next() => match key {
                Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => keymap::from_key(&app.mode, key),
                Some(Ok(Event::Resize(width, height))) => Action::Resize(ratatui::layout::Size { width, height }),
                Some(Ok(_)) => Action::Nothing,
                Some(Err(e)) => break Err(e),
                None => Action::Quit,
            },
            Some(update) = updates.recv() => {
                // Take every update that is waiting, then draw once.
                app.update(Action::Backend(update));
                while let Ok(more) = updates.try_recv() {
                    app.update(Action::Backend(more));
                }
                Action::Nothing
            }
            _ = tick.tick() => Action::Tick(SystemTime::now()),
        };
        for command in app.update(action) {
            let _ = command_tx.send(command);
        }
        if app.should_quit {
            break Ok(());
        }
    };
    ratatui::restore();
    result
}
