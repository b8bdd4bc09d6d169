//! The `sigil-server` command line: configuration layering and errors, run
//! through the real binary. (Having an integration test here also makes
//! `cargo test --workspace` build the binary that the end-to-end suite runs.)

use std::process::Command;

fn server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sigil-server"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SIGIL_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn print_config_layers_flags_over_env_over_file_over_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sigil.toml");
    std::fs::write(&file, "issuer = \"file-issuer\"\naudience = \"file-audience\"\nsession_ttl = \"2days\"\n")
        .expect("write");
    let output = server()
        .arg("--config")
        .arg(&file)
        .args(["--issuer", "flag-issuer", "--print-config"])
        .env("SIGIL_ISSUER", "env-issuer")
        .env("SIGIL_AUDIENCE", "env-audience")
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("issuer = \"flag-issuer\""), "{printed}");
    assert!(printed.contains("audience = \"env-audience\""), "{printed}");
    assert!(printed.contains("session_ttl = \"2days\""), "{printed}");
    assert!(printed.contains("listen = \"127.0.0.1:50051\""), "{printed}");
}

#[test]
fn unknown_config_keys_fail_with_the_key_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("sigil.toml");
    std::fs::write(&file, "acess_token_ttl = \"5m\"\n").expect("write");
    let output = server().arg("--config").arg(&file).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("acess_token_ttl"), "{stderr}");
}

#[test]
fn bad_durations_are_refused_with_an_example() {
    let output = server().args(["--access-token-ttl", "soon", "--print-config"]).output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("15m"), "{stderr}");
}

#[test]
fn the_example_configuration_file_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../sigil.toml");
    let output = server().args(["--config", example, "--print-config"]).output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("data_dir = \"/var/lib/sigil\""), "{printed}");
    assert!(printed.contains("log_format = \"json\""), "{printed}");
}

#[test]
fn help_shows_each_setting_with_its_default_and_variable() {
    let output = server().arg("-h").output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Access-token lifetime, e.g. 15m [default: 15m] [env: SIGIL_ACCESS_TOKEN_TTL=]"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:50051] [env: SIGIL_LISTEN=]"), "{help}");
}
