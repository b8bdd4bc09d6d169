//! The console's Service accounts view, driven in tmux: the real
//! `sigil-console` against the real `sigil-server` binary. An account
//! created through the admin API shows in the view (with its client id's
//! tail), and disabling it from the console (`x`, then `y`) makes the token
//! it obtained fail `Validate` at once.

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, connect, login, with_bearer};

use crate::console_ops::{console, have_tmux};

#[tokio::test]
async fn disabling_a_service_account_from_the_console_fails_its_token() {
    if !have_tmux() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ChildServer::spawn(dir.path()).await;
    let mut client = server.client().await;
    let admin_login = login(&mut client, "admin", ADMIN_PASSWORD).await;
    let mut admin = AdminServiceClient::new(connect(server.grpc_addr).await);
    let create = pb::CreateServiceAccountRequest {
        name: "ledger-sync".into(),
        roles: vec!["reader".into()],
        audiences: vec!["ledger-api".into()],
        scopes: vec![],
    };
    let created = admin
        .create_service_account(with_bearer(create, &admin_login.access_token))
        .await
        .expect("service account created")
        .into_inner();
    let account = created.service_account.expect("the account");
    let grant = pb::IssueServiceTokenRequest {
        client_id: account.client_id.clone(),
        credential: Some(pb::issue_service_token_request::Credential::ClientSecret(created.client_secret)),
        ..Default::default()
    };
    let token = client.issue_service_token(grant).await.expect("client credentials grant").into_inner().access_token;
    let validate = |token: String| pb::ValidateRequest { token, audience: Some("ledger-api".into()) };
    let verdict = client.validate(validate(token.clone())).await.expect("validate").into_inner();
    assert!(verdict.valid, "the fresh service token validates: {verdict:?}");

    let tmux = console(&server, "sigil-e2e-service-accounts");
    tmux.wait_for("● live").await;
    tmux.keys(&["6"]);
    let tail = &account.client_id[account.client_id.len() - 8..];
    let screen = tmux.wait_for("ledger-sync").await;
    assert!(screen.contains(tail), "the row shows the client id's tail {tail}:\n{screen}");
    tmux.keys(&["x"]);
    let screen = tmux.wait_for("Confirm").await;
    assert!(screen.contains("Disable service account ledger-sync"), "{screen}");
    tmux.keys(&["y"]);
    tmux.wait_for("disabled service account ledger-sync").await;
    let verdict = client.validate(validate(token)).await.expect("validate").into_inner();
    assert!(!verdict.valid, "the disabled account's token still validates: {verdict:?}");
    tmux.keys(&["q"]);
}
