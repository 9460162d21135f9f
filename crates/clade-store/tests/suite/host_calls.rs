//! A tool host's durable idempotency memory on both backends: the first answer of a key is
//! kept, per host, and survives reopening the store.

use clade_store::host_calls::HostCall;

use super::harness::backends;

#[tokio::test]
async fn a_hosts_first_answer_of_a_key_is_kept_per_host_across_a_reopen() {
    for h in backends().await {
        let first = HostCall { fingerprint: vec![1; 32], frame: r#"{"type":"result"}"#.into() };
        let later = HostCall { fingerprint: vec![2; 32], frame: r#"{"type":"error"}"#.into() };
        assert_eq!(h.store.host_calls().get("cron", "k").await.unwrap(), None, "{}", h.name);
        h.store.host_calls().remember("cron", "k", first.clone()).await.unwrap();
        // A second answer of the same key (a race) does not replace the first.
        h.store.host_calls().remember("cron", "k", later.clone()).await.unwrap();
        h.store.host_calls().remember("other", "k", later.clone()).await.unwrap();
        let reopened = h.reopen().await.unwrap();
        assert_eq!(
            reopened.host_calls().get("cron", "k").await.unwrap(),
            Some(first),
            "{}",
            h.name
        );
        assert_eq!(
            reopened.host_calls().get("other", "k").await.unwrap(),
            Some(later),
            "{}",
            h.name
        );
        assert_eq!(reopened.host_calls().get("cron", "unknown").await.unwrap(), None, "{}", h.name);
    }
}
