//! Start-up failures of the real `sigil-console` binary end with one clear
//! line and a non-zero exit, never a panic or a debug dump. (This
//! integration test also makes `cargo test --workspace` build the binary
//! that the end-to-end tmux test drives.)

use std::process::Command;

fn console(server: &str, password: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sigil-console"))
        .args(["--server", server, "--username", "admin"])
        .env("SIGIL_PASSWORD", password)
        .output()
        .expect("runs")
}

fn one_line(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(stderr.trim_end().lines().count(), 1, "exactly one line: {stderr:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Status {"), "{stderr}");
    stderr
}

#[test]
fn an_unreachable_server_is_one_clear_line() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let output = console(&format!("http://127.0.0.1:{port}"), "whatever");
    assert!(!output.status.success());
    let line = one_line(&output);
    assert!(line.starts_with(&format!("sigil-console: cannot reach http://127.0.0.1:{port}:")), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
}

#[path = "support/test_server.rs"]
mod test_server;
use test_server::start as server;

#[tokio::test]
async fn a_wrong_password_is_one_clear_line() {
    let (server, _dir) = server("right-password").await;
    let address = format!("http://{}", server.grpc_addr);
    let output = tokio::task::spawn_blocking(move || console(&address, "wrong-password")).await.expect("ran");
    assert!(!output.status.success());
    let line = one_line(&output);
    assert_eq!(line.trim_end(), "sigil-console: login failed: invalid username or password");
    server.shutdown().await.expect("shutdown");
}

mod own_session {
    //! The console never leaves its own session behind: not when it finds
    //! no terminal, not when its user lacks the admin role.

    use sigil_proto::pb::{
        self, admin_service_client::AdminServiceClient, identity_service_client::IdentityServiceClient,
    };
    use tonic::transport::Channel;

    use super::*;

    const PASSWORD: &str = "right-password";

    fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
        request
    }

    /// The admin's token, from a login of its own (device "tests").
    async fn admin_token(channel: &Channel) -> String {
        let request = pb::AuthenticateRequest {
            username: "admin".into(),
            password: PASSWORD.into(),
            device_name: Some("tests".into()),
            audience: None,
        };
        IdentityServiceClient::new(channel.clone())
            .authenticate(request)
            .await
            .expect("login")
            .into_inner()
            .access_token
    }

    /// Every session the console opened, with its state.
    async fn console_sessions(channel: &Channel, token: &str) -> Vec<pb::Session> {
        let request = pb::ListSessionsRequest { include_inactive: true, page_size: 1000, ..Default::default() };
        let sessions = AdminServiceClient::new(channel.clone())
            .list_sessions(bearer(request, token))
            .await
            .expect("list")
            .into_inner()
            .sessions;
        sessions.into_iter().filter(|s| s.device_name == "sigil-console").collect()
    }

    fn run_console(address: String, username: &'static str, password: &'static str) -> std::process::Output {
        // `output()` pipes stdout and stderr: there is no terminal.
        Command::new(env!("CARGO_BIN_EXE_sigil-console"))
            .args(["--server", &address, "--username", username])
            .env("SIGIL_PASSWORD", password)
            .output()
            .expect("runs")
    }

    #[tokio::test]
    async fn without_a_terminal_it_is_one_line_and_no_session_is_left_behind() {
        let (server, _dir) = server(PASSWORD).await;
        let address = format!("http://{}", server.grpc_addr);
        let output = tokio::task::spawn_blocking(move || run_console(address, "admin", PASSWORD)).await.expect("ran");
        assert!(!output.status.success());
        let line = one_line(&output);
        assert!(line.starts_with("sigil-console: not a terminal"), "{line}");
        let channel = Channel::from_shared(format!("http://{}", server.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let token = admin_token(&channel).await;
        let sessions = console_sessions(&channel, &token).await;
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert_eq!(sessions[0].state(), pb::SessionState::Revoked, "the console left its session behind");
        server.shutdown().await.expect("shutdown");
    }

    #[tokio::test]
    async fn a_user_without_the_admin_role_is_refused_and_its_session_revoked() {
        let (server, _dir) = server(PASSWORD).await;
        let channel = Channel::from_shared(format!("http://{}", server.grpc_addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let token = admin_token(&channel).await;
        let request =
            pb::CreateUserRequest { username: "carol".into(), password: "carol-password-1".into(), roles: vec![] };
        AdminServiceClient::new(channel.clone()).create_user(bearer(request, &token)).await.expect("create carol");
        let address = format!("http://{}", server.grpc_addr);
        let output =
            tokio::task::spawn_blocking(move || run_console(address, "carol", "carol-password-1")).await.expect("ran");
        assert!(!output.status.success());
        let line = one_line(&output);
        assert_eq!(line.trim_end(), "sigil-console: login failed: carol does not have the admin role");
        let sessions = console_sessions(&channel, &token).await;
        assert_eq!(sessions.len(), 1, "{sessions:?}");
        assert_eq!(sessions[0].state(), pb::SessionState::Revoked, "the refused login left its session behind");
        server.shutdown().await.expect("shutdown");
    }
}
