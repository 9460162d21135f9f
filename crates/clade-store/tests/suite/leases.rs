//! Leases with a fencing epoch: once another node takes the lease, the node that held it can
//! write no turn or journal step, though its handle still works for everything else.

use clade_core::{StepKey, TurnStatus};
use clade_store::{Error, JournalEntry, TurnOutcome};

use super::harness::{accept, backends, new_turn, tenant_and_agent};

/// Two cluster nodes' handles on `h`'s store, fenced by four shards, holding none yet.
async fn two_nodes(h: &super::harness::Harness) -> (clade_store::Store, clade_store::Store) {
    let (a, b) = (h.reopen().await.unwrap(), h.reopen().await.unwrap());
    a.shard_leases().fence_by_shards(4);
    b.shard_leases().fence_by_shards(4);
    (a, b)
}

/// The shard of four `session` falls in.
fn shard(session: clade_core::SessionId) -> i64 {
    i64::from(clade_core::shard::shard_of(session.as_bytes(), 4))
}

fn step(iteration: u32) -> JournalEntry {
    JournalEntry { step: StepKey::Model { iteration }, data: "{}".into() }
}

#[tokio::test]
async fn a_node_whose_lease_was_taken_writes_no_more_turns() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let first = h.reopen().await.unwrap();
        let second = h.reopen().await.unwrap();
        assert_eq!(
            first.shard_leases().fence(),
            None,
            "{}: a handle holds no lease until it takes one",
            h.name
        );

        // The first node takes the lease and starts a turn.
        let taken = first.shard_leases().take("first").await.unwrap();
        assert_eq!(first.shard_leases().fence(), Some(taken[0].epoch), "{}", h.name);
        assert!(first.shard_leases().held().await.unwrap(), "{}", h.name);
        let accepted = accept(&first, &tenant, &agent, "c").await;
        let turn = new_turn(&first, &accepted, &tenant, &agent);
        first
            .turns()
            .begin(&turn, vec![accepted.event_id], Vec::new(), Some((step(0), None)), None)
            .await
            .unwrap();

        // The second takes it over: a higher epoch, and the first is fenced off.
        let over = second.shard_leases().take("second").await.unwrap();
        assert!(over[0].epoch > taken[0].epoch, "{}: {over:?} after {taken:?}", h.name);
        assert!(!first.shard_leases().held().await.unwrap(), "{}", h.name);
        let fenced = first.turns().append_journal(&turn, step(1), Vec::new(), None, None).await;
        assert!(matches!(fenced, Err(Error::Fenced { .. })), "{}: {fenced:?}", h.name);
        let outcome = TurnOutcome {
            status: TurnStatus::Completed,
            reply: Some("late".into()),
            error: None,
            model: None,
        };
        let fenced = first.turns().finish(&turn, outcome.clone(), Vec::new()).await;
        assert!(matches!(fenced, Err(Error::Fenced { .. })), "{}: {fenced:?}", h.name);
        let later = accept(&first, &tenant, &agent, "d").await;
        let fenced = first
            .turns()
            .begin(
                &new_turn(&first, &later, &tenant, &agent),
                vec![later.event_id],
                Vec::new(),
                None,
                None,
            )
            .await;
        assert!(matches!(fenced, Err(Error::Fenced { .. })), "{}: {fenced:?}", h.name);
        // Nothing it tried is there: the turn is still running with its one step.
        let journal = second.system().journal(turn.id).await.unwrap();
        assert_eq!(journal.len(), 1, "{}", h.name);
        assert_eq!(second.system().turn(turn.id).await.unwrap().status, TurnStatus::Running);

        // The new holder writes on; a handle that took no lease (an operator's command) is not
        // fenced, and the old node still reads.
        second.turns().append_journal(&turn, step(1), Vec::new(), None, None).await.unwrap();
        second.turns().finish(&turn, outcome, Vec::new()).await.unwrap();
        let done = first.system().turn(turn.id).await.unwrap();
        assert_eq!(done.status, TurnStatus::Completed, "{}", h.name);
        assert!(h.store.shard_leases().held().await.unwrap(), "{}", h.name);
    }
}

/// Cluster leases: one node holds a shard until its lease expires or it lets go; its own
/// lease it keeps (same epoch) by asking again or renewing; taken by another, the epoch goes
/// up and the old holder can no longer renew.
#[tokio::test]
async fn a_shard_is_one_nodes_until_it_expires_or_is_released() {
    use std::time::Duration;
    let minute = Duration::from_secs(60);
    for h in backends().await {
        let (a, b) = (h.reopen().await.unwrap(), h.reopen().await.unwrap());
        let (a, b) = (a.shard_leases(), b.shard_leases());
        let mine = a.acquire("a", 5, minute).await.unwrap().expect("a free shard");
        assert_eq!((mine.shard, mine.holder.as_str()), (5, "a"), "{}", h.name);
        assert_eq!(b.acquire("b", 5, minute).await.unwrap(), None, "{}: taken while live", h.name);
        // Asking again, or renewing, keeps the epoch.
        assert_eq!(a.acquire("a", 5, minute).await.unwrap().as_ref(), Some(&mine), "{}", h.name);
        assert!(a.renew(&mine, minute).await.unwrap(), "{}", h.name);
        // Another shard is another lease.
        assert!(b.acquire("b", 6, minute).await.unwrap().is_some(), "{}", h.name);

        // Handed over: the next node takes it at once, under a higher epoch.
        a.release(&mine).await.unwrap();
        let theirs = b.acquire("b", 5, minute).await.unwrap().expect("a released shard");
        assert!(theirs.epoch > mine.epoch, "{}: {theirs:?} after {mine:?}", h.name);
        assert!(!a.renew(&mine, minute).await.unwrap(), "{}: renewed a lost lease", h.name);
        assert_eq!(a.acquire("a", 5, minute).await.unwrap(), None, "{}", h.name);

        let listed = a.list().await.unwrap();
        let five = listed.iter().find(|l| l.shard == 5).expect("shard 5 listed");
        assert_eq!((five.holder.as_str(), five.epoch), ("b", theirs.epoch), "{}", h.name);
        assert!(five.is_live() && five.expires_at.is_some(), "{}: {five:?}", h.name);
    }
}

/// A lease expires by the database's clock, not the nodes': node `a`'s clock is stopped a
/// year in the past, yet its short lease runs out and the next node takes the shard, fencing
/// `a`. A single node's lease of every shard (`take`) never expires, and no cluster node can
/// take it.
#[tokio::test]
async fn leases_expire_by_the_databases_clock_and_a_single_nodes_never() {
    use std::time::Duration;
    for h in backends().await {
        let year_ago = clade_core::Timestamp::from_millis(1_764_000_000_000 - 31_536_000_000);
        let stopped = std::sync::Arc::new(clade_core::ManualClock::new(year_ago));
        let options = clade_store::StoreOptions {
            migrations: clade_store::Migrations::Apply,
            clock: stopped,
            ..clade_store::StoreOptions::new(h.location.clone(), clade_store::Durability::Full)
        };
        let a = clade_store::Store::open(options).await.unwrap();
        let b = h.reopen().await.unwrap();
        let short = a.shard_leases().acquire("a", 7, Duration::from_millis(1)).await.unwrap();
        let short = short.expect("a free shard");
        let mut taken = None;
        for _ in 0..10_000 {
            taken = b.shard_leases().acquire("b", 7, Duration::from_secs(60)).await.unwrap();
            if taken.is_some() {
                break;
            }
        }
        let taken = taken.expect("a 1 ms lease never expired");
        assert!(taken.epoch > short.epoch, "{}", h.name);
        assert!(!a.shard_leases().renew(&short, Duration::from_secs(60)).await.unwrap());
        let seen_by_a = a.shard_leases().list().await.unwrap();
        let row = seen_by_a.iter().find(|l| l.shard == 7).unwrap();
        assert!(row.now.as_millis() > year_ago.as_millis() + 300 * 86_400_000, "{}", h.name);
        assert_eq!(a.now(), year_ago, "{}: the stopped clock moved", h.name);

        let solo = h.store.shard_leases().take("solo").await.unwrap();
        let everything = b.shard_leases().acquire("b", solo[0].shard, Duration::from_secs(60));
        assert_eq!(everything.await.unwrap(), None, "{}: a single node's lease was taken", h.name);
        let listed = b.shard_leases().list().await.unwrap();
        let row = listed.iter().find(|l| l.shard == solo[0].shard).unwrap();
        assert!(row.expires_at.is_none() && row.is_live(), "{}: {row:?}", h.name);
    }
}

/// Fenced by shards (a cluster node): a node writes the turns of the sessions whose shard it
/// holds and no other's; once it hands a shard over, its successor writes on the turn it began
/// and it can no longer.
#[tokio::test]
async fn a_cluster_node_writes_only_the_turns_of_the_shards_it_holds() {
    use std::time::Duration;
    let minute = Duration::from_secs(60);
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (a, b) = two_nodes(&h).await;
        // Two sessions of different shards.
        let first = accept(&a, &tenant, &agent, "c0").await;
        let mut second = None;
        for n in 1..200 {
            let other = accept(&a, &tenant, &agent, &format!("c{n}")).await;
            if shard(other.session_id) != shard(first.session_id) {
                second = Some(other);
                break;
            }
        }
        let second = second.expect("200 sessions in one shard of 4");
        let (mine, theirs) = (shard(first.session_id), shard(second.session_id));
        let held = a.shard_leases().acquire("a", mine, minute).await.unwrap().unwrap();
        b.shard_leases().acquire("b", theirs, minute).await.unwrap().unwrap();

        let turn = new_turn(&a, &first, &tenant, &agent);
        let begin = |store: &clade_store::Store, turn: &clade_store::TurnRow, event| {
            let (store, turn) = (store.clone(), turn.clone());
            async move {
                store
                    .turns()
                    .begin(&turn, vec![event], Vec::new(), Some((step(0), None)), None)
                    .await
            }
        };
        begin(&a, &turn, first.event_id).await.unwrap();
        let elsewhere = new_turn(&a, &second, &tenant, &agent);
        let refused = begin(&a, &elsewhere, second.event_id).await;
        assert!(matches!(refused, Err(Error::Fenced { .. })), "{}: {refused:?}", h.name);
        begin(&b, &elsewhere, second.event_id).await.unwrap();

        // Handed over: b takes a's shard and writes on the turn a began; a is fenced off.
        a.shard_leases().release(&held).await.unwrap();
        b.shard_leases().acquire("b", mine, minute).await.unwrap().expect("a released shard");
        b.turns().append_journal(&turn, step(1), Vec::new(), None, None).await.unwrap();
        let late = a.turns().append_journal(&turn, step(2), Vec::new(), None, None).await;
        assert!(matches!(late, Err(Error::Fenced { .. })), "{}: {late:?}", h.name);
        assert_eq!(b.system().journal(turn.id).await.unwrap().len(), 2, "{}", h.name);
    }
}

/// An execution is written by the node holding the session it belongs to, whatever shard its
/// own id would fall in: a branch's, a worker's or a sub-agent run's steps and status are
/// written by the turn that runs it. A node holding another shard is fenced off from them, but
/// a cancel, which any node may be asked for, goes through.
#[tokio::test]
async fn a_cluster_node_writes_the_executions_of_the_sessions_it_holds() {
    use clade_core::{ExecutionId, ExecutionKind, ExecutionStatus};
    use clade_store::{ExecutionOwner, ExecutionStep, NewExecution};
    use std::time::Duration;
    let minute = Duration::from_secs(60);
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (a, b) = two_nodes(&h).await;
        let session = accept(&a, &tenant, &agent, "c0").await.session_id;
        let mine = shard(session);
        a.shard_leases().acquire("a", mine, minute).await.unwrap().unwrap();
        b.shard_leases().acquire("b", (mine + 1) % 4, minute).await.unwrap().unwrap();

        // Sixteen ids fall in every shard of four; each execution is its session's holder's.
        for n in 0..16 {
            let new = NewExecution {
                id: ExecutionId::generate(a.now()),
                tenant: tenant.id,
                agent: agent.id,
                kind: ExecutionKind::SubAgent,
                owner: ExecutionOwner::Session(session),
                status: ExecutionStatus::Running,
                input: "{}".into(),
            };
            let refused = b.start_execution(new.clone()).await;
            assert!(matches!(refused, Err(Error::Fenced { .. })), "{}: {refused:?}", h.name);
            let row = a.start_execution(new).await.unwrap();
            let step = ExecutionStep { seq: 1, key: "ask".into(), data: "1".into() };
            let refused = b.executions(tenant.id).append_step(row.id, step.clone()).await;
            assert!(matches!(refused, Err(Error::Fenced { .. })), "{}: {refused:?}", h.name);
            a.executions(tenant.id).append_step(row.id, step).await.unwrap();
            let done = ExecutionStatus::Completed;
            let refused = b.executions(tenant.id).set_status(row.id, done, None, None).await;
            assert!(matches!(refused, Err(Error::Fenced { .. })), "{}: {refused:?}", h.name);
            if n % 2 == 0 {
                a.executions(tenant.id).set_status(row.id, done, None, None).await.unwrap();
            } else {
                // Cancelled from the other node: its holder then finds it ended.
                let cancel = ExecutionStatus::Cancelled;
                b.executions(tenant.id).set_status(row.id, cancel, None, None).await.unwrap();
                let late = a.executions(tenant.id).set_status(row.id, done, None, None).await;
                assert!(matches!(late, Err(Error::ExecutionEnded { .. })), "{}: {late:?}", h.name);
            }
        }
    }
}

/// A worker is started by its parent's turn, on the node holding the parent's session, and
/// settled by its own session's last turn, on the node holding that session: each node writes
/// the fork's execution for the session it holds, wherever the other lives.
#[tokio::test]
async fn a_fork_started_on_one_node_settles_on_the_node_holding_its_own_session() {
    use clade_core::{ExecutionKind, ExecutionStatus};
    use clade_store::NewFork;
    use std::time::Duration;
    let minute = Duration::from_secs(60);
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let (a, b) = two_nodes(&h).await;
        let parent = accept(&a, &tenant, &agent, "c0").await.session_id;
        a.shard_leases().acquire("a", shard(parent), minute).await.unwrap().unwrap();
        // Workers until one's session falls in another shard, which b holds.
        let mut theirs = None;
        for n in 0..40 {
            let forked = a
                .start_fork(NewFork {
                    tenant: tenant.id,
                    agent: agent.id,
                    kind: ExecutionKind::Worker,
                    parent_session: parent,
                    parent_turn: None,
                    task: format!("task {n}"),
                    tools: Vec::new(),
                    key: format!("k{n}"),
                    max_running: 100,
                })
                .await
                .unwrap();
            if shard(forked.fork.session) != shard(parent) {
                theirs = Some(forked);
                break;
            }
        }
        let forked = theirs.expect("40 workers in their parent's shard of 4");
        let session = forked.fork.session;
        b.shard_leases().acquire("b", shard(session), minute).await.unwrap().unwrap();

        let turn = new_turn(&b, &forked.accepted, &tenant, &agent);
        b.turns()
            .begin(&turn, vec![forked.accepted.event_id], Vec::new(), None, None)
            .await
            .unwrap();
        let outcome = TurnOutcome {
            status: TurnStatus::Completed,
            reply: Some("found it".into()),
            error: None,
            model: None,
        };
        b.turns().finish(&turn, outcome, Vec::new()).await.unwrap();
        let refused = a.forks(tenant.id).settle(session).await;
        assert!(matches!(refused, Err(Error::Fenced { .. })), "{}: {refused:?}", h.name);
        let settled = b.forks(tenant.id).settle(session).await.unwrap().expect("settled");
        assert_eq!(settled.fork.status, ExecutionStatus::Completed, "{}", h.name);
    }
}
