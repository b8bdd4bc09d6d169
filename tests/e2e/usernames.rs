//! Look-alike usernames (issue #12, item 8): names follow the PRECIS
//! UsernameCaseMapped profile (RFC 8265). Names that fold alike are one
//! user, at creation, at login and in GetUser; invisible, bidi-control and
//! compatibility characters are refused with a message naming the code point;
//! names stored by older versions in another form are migrated at start, or
//! reported when they collide or are no longer valid.

use sigil_proto::pb::{self, admin_service_client::AdminServiceClient, get_user_request::Key};
use sigil_server::{
    SledStore,
    domain::{Timestamp, UserId, port::UserStore as _, user::UserRecord},
};
use sigil_tests::{ADMIN_PASSWORD, ChildServer, TestServer, login, login_request, with_bearer};
use tonic::{Code, transport::Channel};

async fn create(
    admin: &mut AdminServiceClient<Channel>,
    token: &str,
    username: &str,
) -> Result<pb::User, tonic::Status> {
    let request =
        pb::CreateUserRequest { username: username.into(), password: "look-alike-pw-1".into(), roles: vec![] };
    admin.create_user(with_bearer(request, token)).await.map(|r| r.into_inner().user.expect("user"))
}

async fn user_named(admin: &mut AdminServiceClient<Channel>, token: &str, username: &str) -> pb::User {
    let request = pb::GetUserRequest { key: Some(Key::Username(username.into())) };
    admin.get_user(with_bearer(request, token)).await.expect("user found").into_inner().user.expect("user")
}

#[tokio::test]
async fn names_that_fold_alike_are_one_user() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let admin_id = user_named(&mut admin, &token, "admin").await.user_id;

    // Fullwidth and upper-case forms of `admin` are `admin`.
    for twin in ["\u{FF41}\u{FF44}\u{FF4D}\u{FF49}\u{FF4E}", "ＡＤＭＩＮ", " Admin "] {
        let refused = create(&mut admin, &token, twin).await.expect_err("a twin of admin is not a new user");
        assert_eq!(refused.code(), Code::AlreadyExists, "{twin:?}: {refused:?}");
        assert_eq!(user_named(&mut admin, &token, twin).await.user_id, admin_id, "{twin:?}");
    }
    let mut client = server.client().await;
    let fullwidth = login(&mut client, "ＡＤＭＩＮ", ADMIN_PASSWORD).await;
    assert_eq!(fullwidth.user_id, admin_id, "a fullwidth login is admin's login");

    // NFC and NFD `josé` are one user, stored in NFC.
    let jose = create(&mut admin, &token, "jos\u{00E9}").await.expect("josé created");
    assert_eq!(jose.username, "jos\u{00E9}");
    let refused = create(&mut admin, &token, "jose\u{0301}").await.expect_err("NFD josé is josé");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert_eq!(user_named(&mut admin, &token, "JOSE\u{0301}").await.user_id, jose.user_id);
    let nfd = login(&mut client, "jose\u{0301}", "look-alike-pw-1").await;
    assert_eq!(nfd.user_id, jose.user_id);
}

#[tokio::test]
async fn invisible_bidi_and_compatibility_characters_are_refused_naming_the_code_point() {
    let server = TestServer::start().await;
    let (mut admin, token) = server.admin().await;
    let mut client = server.client().await;
    for (name, code_point, category) in [
        ("admin\u{200B}", "U+200B", "invisible"),
        ("ad\u{2060}min", "U+2060", "invisible"),
        ("\u{202E}nimda", "U+202E", "bidirectional"),
        ("\u{1D41A}\u{1D41D}\u{1D426}\u{1D422}\u{1D427}", "U+1D41A", "compatibility"),
        ("admin\u{FE0F}", "U+FE0F", "invisible"),
    ] {
        let refused = create(&mut admin, &token, name).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{name:?}: {refused:?}");
        assert!(
            refused.message().contains(code_point) && refused.message().contains(category),
            "{name:?}: {}",
            refused.message()
        );
        // The same name at login is refused for its form, before any lookup.
        let login = client.authenticate(login_request(name, ADMIN_PASSWORD)).await.expect_err("refused");
        assert_eq!(login.code(), Code::InvalidArgument, "{name:?}: {login:?}");
    }
}

#[tokio::test]
async fn names_stored_in_an_older_form_are_migrated_or_reported_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    crate::recovery::stop_when_serving(ChildServer::spawn(&data).await).await;

    // What an older Sigil stored: names only trimmed and lower-cased. One
    // looks like `admin`, one is an NFD `josé` (its canonical form is free),
    // one holds a zero-width space (no longer valid).
    let (admin_id, [twin, jose, invisible]) = {
        let store = SledStore::open(&data).expect("store opens");
        let admin = store.user_by_name("admin").await.expect("read").expect("admin");
        let mut ids = Vec::new();
        for name in ["\u{FF41}\u{FF44}\u{FF4D}\u{FF49}\u{FF4E}", "jose\u{0301}", "admin\u{200B}"] {
            let record = UserRecord {
                id: UserId::generate(),
                username: name.into(),
                password_hash: admin.password_hash.clone(),
                roles: vec![],
                disabled: false,
                created_at: Timestamp::now(),
                updated_at: Timestamp::now(),
            };
            store.create_user(&record).await.expect("legacy user stored");
            ids.push(record.id.to_string());
        }
        crate::recovery::close_sled(store, &data).await;
        (admin.id.to_string(), <[String; 3]>::try_from(ids).expect("three"))
    };

    let server = ChildServer::spawn(&data).await;
    let output = server.output.lock().expect("output").clone();
    let line_about = |id: &str, text: &str| output.lines().any(|line| line.contains(id) && line.contains(text));
    assert!(line_about(&twin, "another user holds that form") && line_about(&twin, &admin_id), "{output}");
    assert!(line_about(&invisible, "no longer valid"), "{output}");
    assert!(line_about(&jose, "brought to canonical form"), "{output}");

    let mut client = server.client().await;
    // The twin's canonical name is admin's: a fullwidth login reaches admin only.
    let fullwidth = login(&mut client, "\u{FF41}\u{FF44}\u{FF4D}\u{FF49}\u{FF4E}", ADMIN_PASSWORD).await;
    assert_eq!(fullwidth.user_id, admin_id);
    // The migrated user logs in under either form of its name, with its id.
    assert_eq!(login(&mut client, "jos\u{00E9}", ADMIN_PASSWORD).await.user_id, jose);
    assert_eq!(login(&mut client, "jose\u{0301}", ADMIN_PASSWORD).await.user_id, jose);
    // The users left as they were stay reachable by id, for an admin to decide.
    let token = login(&mut client, "admin", ADMIN_PASSWORD).await.access_token;
    let mut admin = AdminServiceClient::new(sigil_tests::connect(server.grpc_addr).await);
    for id in [&twin, &invisible] {
        let request = pb::GetUserRequest { key: Some(Key::UserId(id.clone())) };
        let found = admin.get_user(with_bearer(request, &token)).await.expect("by id").into_inner();
        assert_eq!(&found.user.expect("user").user_id, id);
        admin
            .delete_user(with_bearer(pb::DeleteUserRequest { user_id: id.clone() }, &token))
            .await
            .expect("a legacy user can be deleted");
    }
    assert!(server.terminate().await);
}
