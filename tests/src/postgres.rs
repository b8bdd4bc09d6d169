//! Throwaway PostgreSQL clusters for the tests: `initdb` into a temporary
//! directory (as the `postgres` user when the tests run as root, since
//! PostgreSQL refuses to run as root), started with `pg_ctl` on a free port
//! with a private socket directory. No shared cluster, no fixed port.
//!
//! A small shell keeper owns each cluster. It reads commands (`stop`,
//! `start`) on its stdin and, when its stdin closes — the test process
//! ended, however it ended — stops the cluster and deletes its directory.
//!
//! The binaries come from `SIGIL_PG_BIN`, else `/usr/lib/postgresql/15/bin`.
//! Without them [`Postgres::shared`] returns `None` and tests say why they
//! skip, unless `SIGIL_REQUIRE_POSTGRES=1` (set by `.ci/run`), which turns
//! a missing PostgreSQL into a failure.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Mutex, OnceLock},
};

/// The keeper: `$1` bin dir, `$2` port, and optionally `$3`/`$4` a PEM
/// certificate and key to serve TLS with. Prints `ready <dir>` or `failed …`.
const KEEPER: &str = r#"
bin="$1"; port="$2"; cert="$3"; key="$4"
dir=$(mktemp -d "${TMPDIR:-/tmp}/sigil-pg.XXXXXX") || { echo "failed mktemp"; exit 1; }
cleanup() { "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1; rm -rf "$dir"; }
if ! "$bin/initdb" -D "$dir/data" -A trust -U sigil --no-sync >"$dir/initdb.log" 2>&1; then
    echo "failed initdb: $(tail -n 3 "$dir/initdb.log" | tr '\n' ' ')"; cleanup; exit 1
fi
mkdir "$dir/sock"
tls=""
if [ -n "$cert" ]; then
    (umask 077; printf '%s\n' "$cert" > "$dir/data/server.crt"; printf '%s\n' "$key" > "$dir/data/server.key")
    tls="-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
fi
start() {
    "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c max_connections=200 $tls" start >/dev/null 2>&1
}
if start; then echo "ready $dir"; else echo "failed start: $(tail -n 3 "$dir/server.log" | tr '\n' ' ')"; cleanup; exit 1; fi
while read -r command; do
    case "$command" in
        stop) "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1; echo "stopped" ;;
        start) if start; then echo "started"; else echo "failed start"; fi ;;
    esac
done
cleanup
"#;

/// A running throwaway cluster, user `sigil`, trust authentication on
/// 127.0.0.1 only.
pub struct Postgres {
    port: u16,
    keeper: Mutex<Keeper>,
}

struct Keeper {
    child: Child,
    /// Dropping it (EOF) tells the keeper to clean up.
    commands: Option<ChildStdin>,
    answers: BufReader<ChildStdout>,
}

impl Postgres {
    /// The cluster shared by every test of this process, started on first
    /// use; `None` (after printing why) where PostgreSQL is not installed.
    pub fn shared() -> Option<&'static Postgres> {
        static SHARED: OnceLock<Option<Postgres>> = OnceLock::new();
        SHARED.get_or_init(Self::start_new).as_ref()
    }

    /// A cluster of its own, for a test that stops and starts it.
    pub fn start_new() -> Option<Postgres> {
        Self::start_keeper(None)
    }

    /// A cluster of its own that also accepts TLS, with this PEM
    /// certificate and key.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Option<Postgres> {
        Self::start_keeper(Some((cert_pem, key_pem)))
    }

    fn start_keeper(tls: Option<(&str, &str)>) -> Option<Postgres> {
        let bin = match binaries() {
            Ok(bin) => bin,
            Err(why) => {
                assert!(
                    std::env::var("SIGIL_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                    "SIGIL_REQUIRE_POSTGRES=1 but {why}"
                );
                eprintln!("skipping the PostgreSQL tests: {why}");
                return None;
            }
        };
        let port = free_port();
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", KEEPER, "keeper"]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", KEEPER, "keeper"]);
            c
        };
        let mut child = command
            .arg(&bin)
            .arg(port.to_string())
            .args(tls.map(|(cert, key)| [cert, key]).unwrap_or_default())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the PostgreSQL keeper starts");
        let stdin = child.stdin.take().expect("stdin piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("keeper answers");
        assert!(line.starts_with("ready"), "throwaway PostgreSQL did not start: {line}");
        Some(Self { port, keeper: Mutex::new(Keeper { child, commands: Some(stdin), answers: stdout }) })
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://sigil@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database with a fresh name and returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await.expect("connect to postgres");
        let driver = tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        drop(client);
        let _ = driver.await;
        self.url(&name)
    }

    /// Stops the cluster (fast shutdown: connections are cut).
    pub fn stop(&self) {
        self.command("stop", "stopped");
    }

    /// Starts it again on the same port.
    pub fn start(&self) {
        self.command("start", "started");
    }

    fn command(&self, command: &str, expected: &str) {
        let mut keeper = self.keeper.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let commands = keeper.commands.as_mut().expect("keeper running");
        writeln!(commands, "{command}").expect("keeper listens");
        let mut line = String::new();
        keeper.answers.read_line(&mut line).expect("keeper answers");
        assert_eq!(line.trim(), expected, "PostgreSQL {command}");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let keeper = self.keeper.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        // EOF on its stdin: the keeper stops the cluster and deletes it.
        drop(keeper.commands.take());
        let _ = keeper.child.wait();
    }
}

fn binaries() -> Result<PathBuf, String> {
    let bin = std::env::var_os("SIGIL_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    for tool in ["initdb", "pg_ctl", "postgres"] {
        if !bin.join(tool).exists() {
            return Err(format!(
                "{} not found (set SIGIL_PG_BIN to PostgreSQL's bin directory)",
                bin.join(tool).display()
            ));
        }
    }
    Ok(bin)
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|out| out.stdout.trim_ascii() == b"0").unwrap_or(false)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}
