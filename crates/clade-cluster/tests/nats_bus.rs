//! The bus over a real NATS server (the one `scripts/test` starts, `CLADE_TEST_NATS`): a
//! signal reaches the node holding its session's shard and no other, follows a shard to its
//! new holder, stays within its cluster, survives garbage on its subject; and a server that
//! is not there, or refuses the node's credentials, is named as such.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

use std::time::Duration;

use clade_cluster::{BusError, NatsBus, NatsOptions, Shard, ShardMap};
use clade_core::{SessionId, TenantId};
use clade_runtime::{Addressed, Bus, Signal};
use tokio::sync::mpsc::UnboundedReceiver;

/// The tenant whose sessions the signals are for (every test's).
static T: std::sync::LazyLock<TenantId> =
    std::sync::LazyLock::new(|| TenantId::from_bytes([3; 16]));

/// A cluster name no other test run uses, so runs sharing the server never hear each other.
fn cluster(tag: &str) -> String {
    let nanos = std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.subsec_nanos());
    format!("t-{tag}-{}-{nanos}", std::process::id())
}

fn options(url: &str, node: &str, cluster: &str) -> NatsOptions {
    NatsOptions {
        url: url.to_owned(),
        node: node.to_owned(),
        cluster: cluster.to_owned(),
        user: None,
        password: None,
        connect_timeout: Duration::from_secs(5),
    }
}

/// A node's bus holding `shards`, and the signals meant for its engine.
async fn node(
    url: &str,
    name: &str,
    cluster: &str,
    map: ShardMap,
    shards: &[u32],
) -> (NatsBus, UnboundedReceiver<Addressed>) {
    let bus = NatsBus::connect(&options(url, name, cluster), map).await.unwrap();
    for shard in shards {
        bus.hold(Shard(*shard)).await.unwrap();
    }
    let signals = bus.take_signals().unwrap();
    (bus, signals)
}

/// A session whose shard is `shard` under `map`.
fn session_in(map: ShardMap, shard: u32) -> SessionId {
    (0u32..)
        .map(|n| {
            let mut bytes = [7u8; 16];
            bytes[..4].copy_from_slice(&n.to_be_bytes());
            SessionId::from_bytes(bytes)
        })
        .find(|s| map.shard_of(*s) == Shard(shard))
        .unwrap()
}

async fn next(signals: &mut UnboundedReceiver<Addressed>) -> Addressed {
    tokio::time::timeout(Duration::from_secs(10), signals.recv())
        .await
        .expect("no signal within 10 s")
        .expect("the bus is gone")
}

/// The next message on `subscriber`, if one comes within 5 s.
async fn heard(subscriber: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
    let next = futures::StreamExt::next(subscriber);
    tokio::time::timeout(Duration::from_secs(5), next).await.ok().flatten()
}

#[tokio::test]
async fn a_signal_reaches_the_node_holding_its_shard_and_no_other() {
    let Some(url) = clade_test_support::nats_url() else { return };
    let (map, name) = (ShardMap::new(4).unwrap(), cluster("route"));
    let (a, mut to_a) = node(&url, "a", &name, map, &[0, 1]).await;
    let (b, mut to_b) = node(&url, "b", &name, map, &[2, 3]).await;
    let (on_a, on_b) = (session_in(map, 1), session_in(map, 2));

    // The subject names the session's tenant: listening on that tenant's subjects of the
    // shard alone hears it.
    let raw = async_nats::connect(url.as_str()).await.unwrap();
    let subject = format!("clade.{name}.signal.2.{}", *T);
    let mut tenants = raw.subscribe(subject.clone()).await.unwrap();
    // Its own message back proves the server holds the subscription (a flush only sends it),
    // before another connection publishes.
    raw.publish(subject, "probe".into()).await.unwrap();
    let probe = heard(&mut tenants).await.expect("the probe never came back");
    assert_eq!(&probe.payload[..], b"probe");
    a.signal(*T, Signal::Wake(on_b));
    assert_eq!(next(&mut to_b).await, (*T, Signal::Wake(on_b)));
    let signal = heard(&mut tenants).await;
    assert!(signal.is_some_and(|m| &m.payload[..] != b"probe"), "nothing on the tenant's subject");
    b.signal(*T, Signal::Cancel(on_a));
    assert_eq!(next(&mut to_a).await, (*T, Signal::Cancel(on_a)));
    // Nothing else came to either: each got only its own.
    assert!(to_a.try_recv().is_err() && to_b.try_recv().is_err());
    // A signal for a shard this node holds goes straight to its engine, not through NATS.
    let sent = a.counts().sent.load(std::sync::atomic::Ordering::Relaxed);
    a.signal(*T, Signal::Wake(on_a));
    assert_eq!(next(&mut to_a).await, (*T, Signal::Wake(on_a)));
    assert_eq!(a.counts().sent.load(std::sync::atomic::Ordering::Relaxed), sent);
    assert_eq!(a.held(), vec![Shard(0), Shard(1)]);
}

#[tokio::test]
async fn a_released_shard_is_heard_by_its_new_holder_only() {
    let Some(url) = clade_test_support::nats_url() else { return };
    let (map, name) = (ShardMap::new(4).unwrap(), cluster("handover"));
    let (a, mut to_a) = node(&url, "a", &name, map, &[0, 1]).await;
    let (b, mut to_b) = node(&url, "b", &name, map, &[2, 3]).await;
    let (sender, _) = node(&url, "c", &name, map, &[]).await;
    let moving = session_in(map, 3);

    sender.signal(*T, Signal::Wake(moving));
    assert_eq!(next(&mut to_b).await, (*T, Signal::Wake(moving)));
    // Shard 3 changes hands: b lets go, then a takes it.
    b.release(Shard(3));
    a.hold(Shard(3)).await.unwrap();
    sender.signal(*T, Signal::Cancel(moving));
    assert_eq!(next(&mut to_a).await, (*T, Signal::Cancel(moving)));
    // b still hears the shard it kept, and did not hear the one it released: the signal for
    // shard 2 sent after the cancel arrives first.
    let kept = session_in(map, 2);
    sender.signal(*T, Signal::Wake(kept));
    assert_eq!(next(&mut to_b).await, (*T, Signal::Wake(kept)));
    assert_eq!(b.held(), vec![Shard(2)]);
}

#[tokio::test]
async fn clusters_sharing_a_server_do_not_hear_each_other() {
    let Some(url) = clade_test_support::nats_url() else { return };
    let map = ShardMap::new(2).unwrap();
    let (ours, theirs) = (cluster("ours"), cluster("theirs"));
    let (_x, mut to_x) = node(&url, "x", &ours, map, &[0, 1]).await;
    let (_y, mut to_y) = node(&url, "y", &theirs, map, &[0, 1]).await;
    let (their_sender, _) = node(&url, "z", &theirs, map, &[]).await;
    let (our_sender, _) = node(&url, "w", &ours, map, &[]).await;
    let (session, marker) = (session_in(map, 0), session_in(map, 1));

    their_sender.signal(*T, Signal::Wake(session));
    assert_eq!(next(&mut to_y).await, (*T, Signal::Wake(session)));
    // Had their signal reached x, the server would have queued it to x before the marker,
    // which is published only now: x's first signal is the marker.
    our_sender.signal(*T, Signal::Wake(marker));
    assert_eq!(next(&mut to_x).await, (*T, Signal::Wake(marker)));
    assert!(to_x.try_recv().is_err());
}

#[tokio::test]
async fn a_message_that_is_not_a_signal_is_counted_and_ignored() {
    let Some(url) = clade_test_support::nats_url() else { return };
    let (map, name) = (ShardMap::new(1).unwrap(), cluster("garbage"));
    let (a, mut to_a) = node(&url, "a", &name, map, &[0]).await;
    let raw = async_nats::connect(url.as_str()).await.unwrap();
    let subject = a.subject(Shard(0), *T);
    let session = session_in(map, 0);
    // Another tenant's signal on this tenant's subject: the subject and the payload disagree.
    let other = TenantId::from_bytes([4; 16]);
    let astray = format!(r#"{{"signal":"wake","tenant":"{other}","session":"{session}"}}"#);
    for garbage in [
        &b"not json"[..],
        br#"{"signal":"wake","tenant":"x","session":"nope"}"#,
        br#"{"signal":"reboot"}"#,
        astray.as_bytes(),
    ] {
        raw.publish(subject.clone(), bytes::Bytes::copy_from_slice(garbage)).await.unwrap();
    }
    let tenant = *T;
    let good = format!(r#"{{"signal":"cancel","tenant":"{tenant}","session":"{session}"}}"#);
    raw.publish(subject, good.into()).await.unwrap();
    raw.flush().await.unwrap();
    assert_eq!(next(&mut to_a).await, (*T, Signal::Cancel(session)));
    assert_eq!(a.counts().malformed.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[tokio::test]
async fn a_server_that_is_not_there_or_refuses_the_node_is_named() {
    let map = ShardMap::default();
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut absent = options(&format!("nats://127.0.0.1:{port}"), "a", "c");
    absent.connect_timeout = Duration::from_secs(2);
    let err = NatsBus::connect(&absent, map).await.err().expect("connected to nothing");
    assert!(matches!(err, BusError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.to_string().contains("is the server running there"), "{err}");

    let mut bad_name = options(&absent.url, "a", "Has.Dots");
    bad_name.cluster = "Has.Dots".into();
    let err = NatsBus::connect(&bad_name, map).await.err().expect("a bad cluster name");
    assert!(matches!(err, BusError::ClusterName(_)) && err.to_string().contains("Has.Dots"));

    let guard = ["--user", "node", "--pass", "right"];
    let Some(server) = clade_test_support::NatsServer::start(&guard) else { return };
    let mut wrong = options(&server.url, "a", "c");
    wrong.user = Some("node".into());
    wrong.password = Some("wrong".into());
    let err = NatsBus::connect(&wrong, map).await.err().expect("a wrong password was taken");
    assert!(matches!(err, BusError::Credentials { .. }), "{err:?}");
    assert!(err.to_string().contains("credentials"), "{err}");
    assert!(!err.to_string().contains("wrong"), "the password is in the error: {err}");

    let mut right = wrong.clone();
    right.password = Some("right".into());
    let bus = NatsBus::connect(&right, map).await.unwrap();
    bus.hold(Shard(0)).await.unwrap();
}
