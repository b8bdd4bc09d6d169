//! `WatchRevocationsRequest.batches`: a subscriber that asks for batches
//! gets a snapshot (and a resume's catch-up) as `RevocationBatch` messages
//! holding exactly the entries, in the same order, that a subscriber
//! written before batches existed gets one `revocation` message each; live
//! entries come one per message to both.

use std::time::Duration;

use futures::{StreamExt as _, stream};
use sigil_proto::pb::{
    self, revocation::Target as Entry, revocation_service_client::RevocationServiceClient, revoke_request::Target,
    watch_revocations_response::Message,
};
use sigil_tests::{TestServer, login, maybe_bearer, with_bearer};
use tonic::transport::Channel;

type Revocations = tonic::Streaming<pb::WatchRevocationsResponse>;

/// How long any one message may take to arrive.
const PATIENCE: Duration = Duration::from_secs(10);
/// More entries than one batch holds, so that a snapshot takes several.
const LOGGED: usize = 700;

async fn open(channel: Channel, token: &str, after: u64, epoch: &str, batches: bool) -> Revocations {
    let request = pb::WatchRevocationsRequest { after_sequence: after, epoch: epoch.into(), batches };
    let mut client = RevocationServiceClient::new(channel);
    client.watch_revocations(maybe_bearer(request, Some(token))).await.expect("the stream opens").into_inner()
}

/// The next message that is not a heartbeat; panics when the stream ends or stays silent.
async fn next_news(stream: &mut Revocations) -> Message {
    loop {
        match tokio::time::timeout(PATIENCE, stream.message()).await {
            Ok(Ok(Some(response))) => match response.message.expect("a message in the oneof") {
                Message::Heartbeat(_) => continue,
                other => return other,
            },
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => panic!("the stream ended: {status:?}"),
            Err(_) => panic!("nothing arrived within {PATIENCE:?}"),
        }
    }
}

/// What a snapshot carried, and how many messages it took.
struct Snapshot {
    epoch: String,
    sequence: u64,
    entries: Vec<pb::Revocation>,
    batches: usize,
    singles: usize,
}

/// Reads the key set and a whole snapshot, in whichever form it comes.
async fn snapshot(stream: &mut Revocations) -> Snapshot {
    assert!(matches!(next_news(stream).await, Message::Keys(_)), "the stream starts with the key set");
    let Message::SnapshotBegin(begin) = next_news(stream).await else { panic!("then a snapshot begins") };
    let (mut entries, mut batches, mut singles) = (Vec::new(), 0, 0);
    loop {
        match next_news(stream).await {
            Message::Revocation(entry) => {
                singles += 1;
                entries.push(entry);
            }
            Message::Revocations(batch) => {
                assert!(!batch.revocations.is_empty(), "a batch holds entries");
                batches += 1;
                entries.extend(batch.revocations);
            }
            Message::SnapshotEnd(end) => {
                assert_eq!((end.epoch.as_str(), end.sequence), (begin.epoch.as_str(), begin.sequence));
                break;
            }
            other => panic!("inside a snapshot: {other:?}"),
        }
    }
    let sequences: Vec<u64> = entries.iter().map(|e| e.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "snapshot in sequence order: {sequences:?}");
    Snapshot { epoch: begin.epoch, sequence: begin.sequence, entries, batches, singles }
}

/// Logs `count` revocations (bob's sessions ended, one entry each), 64 at once.
async fn fill_log(server: &TestServer, admin_token: &str, bob: &str, count: usize) {
    let client = server.client().await;
    stream::iter(0..count)
        .for_each_concurrent(64, |_| {
            let mut client = client.clone();
            let revoke = pb::RevokeRequest { target: Some(Target::UserId(bob.to_string())), reason: "batches".into() };
            let request = with_bearer(revoke, admin_token);
            async move {
                client.revoke(request).await.expect("revoked");
            }
        })
        .await;
}

#[tokio::test]
async fn a_subscriber_asking_for_batches_gets_the_same_snapshot_in_batches_and_live_entries_one_by_one() {
    let server = TestServer::start().await;
    let (_, admin_token) = server.admin().await;
    let bob = server.create_user("bob", "bob-password", &[]).await;
    fill_log(&server, &admin_token, &bob.id.to_string(), LOGGED).await;

    let mut old_style = open(server.channel().await, &admin_token, 0, "", false).await;
    let one_by_one = snapshot(&mut old_style).await;
    let mut batched = open(server.channel().await, &admin_token, 0, "", true).await;
    let in_batches = snapshot(&mut batched).await;

    assert!(one_by_one.entries.len() >= LOGGED, "every entry: {}", one_by_one.entries.len());
    assert_eq!((one_by_one.batches, one_by_one.singles), (0, one_by_one.entries.len()), "no batch unless asked");
    assert_eq!(in_batches.singles, 0, "asked for batches, the snapshot came as single entries too");
    assert!(in_batches.batches >= 2, "{LOGGED} entries in one batch: batches are bounded");
    assert!(in_batches.batches * 10 < in_batches.entries.len(), "{} batches", in_batches.batches);
    assert_eq!((&in_batches.epoch, in_batches.sequence), (&one_by_one.epoch, one_by_one.sequence));
    assert_eq!(in_batches.entries, one_by_one.entries, "the same entries, in the same order");

    let mut client = server.client().await;
    let live = login(&mut client, "bob", "bob-password").await;
    let revoke = pb::RevokeRequest { target: Some(Target::SessionId(live.session_id.clone())), reason: "live".into() };
    client.revoke(with_bearer(revoke, &admin_token)).await.expect("revoked");
    for stream in [&mut old_style, &mut batched] {
        match next_news(stream).await {
            Message::Revocation(entry) => {
                assert_eq!(entry.target, Some(Entry::SessionId(live.session_id.clone())));
                assert!(entry.sequence > one_by_one.sequence);
            }
            other => panic!("a live entry comes as one revocation: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_resume_asking_for_batches_catches_up_in_batches() {
    let server = TestServer::start().await;
    let (_, admin_token) = server.admin().await;
    let bob = server.create_user("bob", "bob-password", &[]).await;
    // One entry first: a subscriber that holds nothing (sequence 0) gets a snapshot.
    fill_log(&server, &admin_token, &bob.id.to_string(), 1).await;
    let mut first = open(server.channel().await, &admin_token, 0, "", true).await;
    let before = snapshot(&mut first).await;
    drop(first);
    fill_log(&server, &admin_token, &bob.id.to_string(), LOGGED).await;

    let mut resumed = open(server.channel().await, &admin_token, before.sequence, &before.epoch, true).await;
    assert!(matches!(next_news(&mut resumed).await, Message::Keys(_)), "the key set first");
    let mut caught_up = Vec::new();
    while caught_up.len() < LOGGED {
        match next_news(&mut resumed).await {
            Message::Revocations(batch) => caught_up.extend(batch.revocations),
            other => panic!("a resume catches up in batches, without a snapshot: {other:?}"),
        }
    }
    assert_eq!(caught_up.len(), LOGGED, "only what was missed");
    let sequences: Vec<u64> = caught_up.iter().map(|e| e.sequence).collect();
    assert!(sequences[0] > before.sequence, "{sequences:?}");
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "in sequence order: {sequences:?}");
}
