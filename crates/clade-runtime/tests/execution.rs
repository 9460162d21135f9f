//! Durable executions as work uses them: a run stopped part-way resumes from its journal and
//! redoes nothing it recorded, on a store opened again as after a crash.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, unreachable_pub)] // Test code.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};

use clade_core::{ExecutionId, ExecutionKind, ExecutionStatus};
use clade_runtime::{Durable, DurableError};
use clade_store::{ExecutionOwner, NewExecution, Store};

/// A store at `dir` with the agent `ada`, and an execution of hers to start.
async fn ada_and(
    dir: &std::path::Path,
    kind: ExecutionKind,
    status: ExecutionStatus,
) -> (Store, NewExecution) {
    let (store, data) = support::sqlite_store(dir).await;
    let tenant = support::create_ada(&store, &data).await;
    let agent = store.agents(tenant.id).get("ada").await.unwrap();
    let new = NewExecution {
        id: ExecutionId::generate(store.now()),
        tenant: tenant.id,
        agent: agent.id,
        kind,
        owner: ExecutionOwner::Agent(agent.id),
        status,
        input: "{}".into(),
    };
    (store, new)
}

/// Runs the three steps of a digest job, stopping after `stop_after` of them (a crash); counts
/// each step's runs in `runs`.
async fn digest(
    store: &Store,
    new: &NewExecution,
    runs: &[AtomicU32; 3],
    stop_after: usize,
) -> Result<Option<clade_store::ExecutionRow>, DurableError> {
    let mut run = Durable::start_or_resume(store.clone(), new.clone()).await?;
    let mut keys = Vec::new();
    for (n, name) in ["fetch", "summarise", "send"].into_iter().enumerate() {
        if n == stop_after {
            return Ok(None);
        }
        let key: String = run
            .step(name, |key| async move {
                runs[n].fetch_add(1, Ordering::SeqCst);
                Ok::<_, DurableError>(key)
            })
            .await??;
        keys.push(key);
    }
    Ok(Some(run.complete(&keys).await?))
}

#[tokio::test]
async fn a_stopped_run_resumes_from_its_journal_and_redoes_nothing_it_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (store, new) = ada_and(dir.path(), ExecutionKind::CronFire, ExecutionStatus::Pending).await;
    let tenant = new.tenant;
    let runs = [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)];

    assert!(digest(&store, &new, &runs, 2).await.unwrap().is_none());
    drop(store);
    // As after a crash: the store opened again, the run started again from the top.
    let (store, _) = support::sqlite_store(dir.path()).await;
    let open = store.system().open_executions(10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].status, ExecutionStatus::Running);

    let done = digest(&store, &new, &runs, usize::MAX).await.unwrap().unwrap();
    let counts: Vec<u32> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, [1, 1, 1], "a recorded step ran again");
    assert_eq!(done.status, ExecutionStatus::Completed);
    // Replayed steps return what they returned the first time: their idempotency keys.
    let keys: Vec<String> = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    let steps = store.executions(tenant).steps(new.id).await.unwrap();
    let recorded: Vec<String> =
        steps.iter().map(|s| serde_json::from_str(&s.data).unwrap()).collect();
    assert_eq!(keys, recorded);
    assert_eq!(keys.iter().collect::<std::collections::HashSet<_>>().len(), 3);

    // An ended execution is not run again.
    let again = digest(&store, &new, &runs, usize::MAX).await;
    assert!(matches!(again, Err(DurableError::Store(clade_store::Error::ExecutionEnded { .. }))));
    assert!(store.system().open_executions(10).await.unwrap().is_empty());
}

/// A resumed run that reaches a recorded step under another name stops, rather than trust a
/// result recorded for different work.
#[tokio::test]
async fn a_run_that_does_not_replay_as_it_ran_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, new) = ada_and(dir.path(), ExecutionKind::FlowStep, ExecutionStatus::Running).await;
    let tenant = new.tenant;
    let mut first = Durable::start_or_resume(store.clone(), new.clone()).await.unwrap();
    first.step("plan", |_| async { Ok::<_, String>(1) }).await.unwrap().unwrap();
    drop(first);

    let mut second = Durable::start_or_resume(store.clone(), new.clone()).await.unwrap();
    let ran = AtomicU32::new(0);
    let diverged = second
        .step("act", |_| async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(2)
        })
        .await;
    assert!(
        matches!(
            diverged,
            Err(DurableError::Store(clade_store::Error::StepDiverged { seq: 1, .. }))
        ),
        "{diverged:?}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    // A failing step is reported and recorded as nothing; the run can end as failed.
    let mut third = Durable::start_or_resume(store.clone(), new).await.unwrap();
    let _: i32 = third.step("plan", |_| async { Ok::<_, String>(1) }).await.unwrap().unwrap();
    let failed = third.step::<i32, _, _, _>("act", |_| async { Err("no route".to_owned()) }).await;
    assert!(matches!(failed, Ok(Err(ref why)) if why == "no route"), "{failed:?}");
    let ended = third.fail("no route").await.unwrap();
    assert_eq!((ended.status, ended.error.as_deref()), (ExecutionStatus::Failed, Some("no route")));
    assert_eq!(store.executions(tenant).steps(ended.id).await.unwrap().len(), 1);
}
