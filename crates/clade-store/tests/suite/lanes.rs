//! The writer's lanes: a store handle from `Store::writes_first` (the scheduler's) has its
//! writes committed ahead of everything other handles queued before them, so a scheduled fire
//! does not wait behind the turns it starts.

use std::sync::{Arc, Mutex};

use super::harness::backends;

#[tokio::test]
async fn writes_that_go_first_commit_ahead_of_those_queued_before_them() {
    const QUEUED: usize = 3_000;
    for h in backends().await {
        let done = Arc::new(Mutex::new(0usize));
        let started = Arc::new(Mutex::new(0usize));
        let mut tasks = Vec::new();
        for i in 0..QUEUED {
            let (store, done, started) = (h.store.clone(), done.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                // Queued in this same poll: nothing awaits before the write is sent.
                *started.lock().unwrap() += 1;
                store.create_tenant(&format!("queued-{i}")).await.unwrap();
                *done.lock().unwrap() += 1;
            }));
        }
        // Every spawned write is queued (a send into a queue with room never waits).
        while *started.lock().unwrap() < QUEUED {
            tokio::task::yield_now().await;
        }
        h.store.writes_first().create_tenant("first").await.unwrap();
        let ahead = *done.lock().unwrap();
        // In order, it would commit with the last batch (at most 512 writes): after at least
        // 2,488 of the others. Going first, it joins the batch after the one running.
        assert!(
            ahead <= 1_100,
            "{}: {ahead} of {QUEUED} writes queued before it finished first",
            h.name
        );
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*done.lock().unwrap(), QUEUED, "{}", h.name);
        assert!(h.store.tenant("first").await.is_ok(), "{}", h.name);
    }
}
