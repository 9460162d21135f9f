//! Durable executions on both backends: started once, steps numbered densely and written once,
//! statuses that only move forward, and nothing of one tenant's visible to another.

use clade_core::{AuditKind, EventKind, ExecutionId, ExecutionKind, ExecutionStatus, StepKey};
use clade_store::{
    AuditEntry, Error, ExecutionOwner, ExecutionStep, JournalEntry, NewExecution, OutboxEvent,
    OutboxRow, TurnRow, Work,
};
use futures::future::BoxFuture;

use super::harness::{accept, backends, new_turn, tenant_and_agent};

fn step(seq: u32, key: &str) -> ExecutionStep {
    ExecutionStep { seq, key: key.into(), data: format!("{{\"seq\":{seq}}}") }
}

/// A running execution of `agent` with empty input, under a fresh id.
fn running(
    store: &clade_store::Store,
    tenant: clade_core::TenantId,
    agent: clade_core::AgentId,
    kind: ExecutionKind,
    owner: ExecutionOwner,
) -> NewExecution {
    NewExecution {
        id: ExecutionId::generate(store.now()),
        tenant,
        agent,
        kind,
        owner,
        status: ExecutionStatus::Running,
        input: "{}".into(),
    }
}

#[tokio::test]
async fn an_execution_journals_dense_steps_once_and_ends_for_good() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let id = ExecutionId::generate(h.store.now());
        let new = NewExecution {
            id,
            tenant: tenant.id,
            agent: agent.id,
            kind: ExecutionKind::CronFire,
            owner: ExecutionOwner::Agent(agent.id),
            status: ExecutionStatus::Running,
            input: r#"{"job":"digest"}"#.into(),
        };
        let started = h.store.start_execution(new.clone()).await.unwrap();
        assert_eq!(
            (started.kind, started.status),
            (ExecutionKind::CronFire, ExecutionStatus::Running)
        );
        // A retried start finds the same execution and changes nothing.
        assert_eq!(h.store.start_execution(new.clone()).await.unwrap(), started, "{}", h.name);

        assert!(h.store.executions(tenant.id).append_step(id, step(1, "fetch")).await.unwrap());
        assert!(h.store.executions(tenant.id).append_step(id, step(2, "summarise")).await.unwrap());
        // The same step again is a retried write: kept as first written.
        let again = ExecutionStep { data: "{}".into(), ..step(2, "summarise") };
        assert!(!h.store.executions(tenant.id).append_step(id, again).await.unwrap());
        // Another key at a recorded number: the execution did not replay as it ran.
        let diverged = h.store.executions(tenant.id).append_step(id, step(2, "send")).await;
        assert!(
            matches!(diverged, Err(Error::StepDiverged { seq: 2, .. })),
            "{}: {diverged:?}",
            h.name
        );
        // A gap is refused.
        let gap = h.store.executions(tenant.id).append_step(id, step(4, "send")).await;
        assert!(matches!(gap, Err(Error::InvalidInput(_))), "{}: {gap:?}", h.name);

        let steps = h.store.executions(tenant.id).steps(id).await.unwrap();
        assert_eq!(steps, [step(1, "fetch"), step(2, "summarise")], "{}", h.name);
        assert_eq!(h.store.system().open_executions(10).await.unwrap().len(), 1, "{}", h.name);

        // Paused and running again, then completed: an ended execution never changes again.
        for status in [ExecutionStatus::Paused, ExecutionStatus::Running] {
            h.store.executions(tenant.id).set_status(id, status, None, None).await.unwrap();
        }
        let done = h
            .store
            .executions(tenant.id)
            .set_status(id, ExecutionStatus::Completed, Some("\"ok\"".into()), None)
            .await
            .unwrap();
        assert_eq!(done.output.as_deref(), Some("\"ok\""));
        assert!(done.finished_at.is_some());
        let reopened = h
            .store
            .executions(tenant.id)
            .set_status(id, ExecutionStatus::Running, None, None)
            .await;
        assert!(matches!(reopened, Err(Error::ExecutionEnded { .. })), "{}: {reopened:?}", h.name);
        let late = h.store.executions(tenant.id).append_step(id, step(3, "send")).await;
        assert!(matches!(late, Err(Error::ExecutionEnded { .. })), "{}: {late:?}", h.name);
        assert!(h.store.system().open_executions(10).await.unwrap().is_empty(), "{}", h.name);

        // A bad start is refused before anything is written.
        let ended = NewExecution {
            id: ExecutionId::generate(h.store.now()),
            status: ExecutionStatus::Completed,
            ..new
        };
        assert!(matches!(h.store.start_execution(ended).await, Err(Error::InvalidInput(_))));
    }
}

/// Another tenant's execution is not found, whatever the call: reading it, its steps, adding
/// a step, changing its status, or starting one under its id.
/// An execution that starts and ends in one unit of work (a cron fire) is one write: stored
/// ended with its outcome, kept as first written when the write is retried, and refused when
/// it is not ended, is a turn, or is another tenant's.
#[tokio::test]
async fn an_execution_recorded_ended_is_stored_whole_once() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let owner = ExecutionOwner::Agent(agent.id);
        let new = running(&h.store, tenant.id, agent.id, ExecutionKind::CronFire, owner);
        let record = |new: NewExecution, status, output: &'static str| {
            h.store.transact(tenant.id, move |work| {
                let new = new.clone();
                Box::pin(async move {
                    let output = Some(output.to_owned());
                    work.executions().record_ended(new, status, output, None).await
                })
            })
        };
        record(new.clone(), ExecutionStatus::Completed, "first").await.unwrap();
        record(new.clone(), ExecutionStatus::Completed, "second").await.unwrap();
        let stored = h.store.executions(tenant.id).get(new.id).await.unwrap();
        assert_eq!(
            (stored.status, stored.output.as_deref()),
            (ExecutionStatus::Completed, Some("first")),
            "{}",
            h.name
        );
        assert!(stored.finished_at.is_some(), "{}", h.name);
        assert!(h.store.system().open_executions(10).await.unwrap().is_empty(), "{}", h.name);

        let fresh = || running(&h.store, tenant.id, agent.id, ExecutionKind::CronFire, owner);
        let open = record(fresh(), ExecutionStatus::Running, "open").await;
        assert!(matches!(open, Err(Error::InvalidInput(_))), "{}: {open:?}", h.name);
        let turn = NewExecution { kind: ExecutionKind::Turn, ..fresh() };
        let turn = record(turn, ExecutionStatus::Completed, "turn").await;
        assert!(matches!(turn, Err(Error::InvalidInput(_))), "{}: {turn:?}", h.name);
        let other = h.store.tenants().create("other").await.unwrap();
        let foreign = NewExecution { tenant: other.id, ..fresh() };
        let foreign = record(foreign, ExecutionStatus::Completed, "foreign").await;
        assert!(matches!(foreign, Err(Error::InvalidInput(_))), "{}: {foreign:?}", h.name);
    }
}

#[tokio::test]
async fn another_tenants_execution_is_not_found() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let other = h.store.tenants().create("other").await.unwrap();
        let id = ExecutionId::generate(h.store.now());
        let new = NewExecution {
            id,
            tenant: tenant.id,
            agent: agent.id,
            kind: ExecutionKind::SubAgent,
            owner: ExecutionOwner::Agent(agent.id),
            status: ExecutionStatus::Pending,
            input: "{}".into(),
        };
        h.store.start_execution(new.clone()).await.unwrap();
        h.store.executions(tenant.id).append_step(id, step(1, "think")).await.unwrap();

        let missing = |r: Result<_, Error>| matches!(r, Err(Error::ExecutionNotFound(_)));
        assert!(missing(h.store.executions(other.id).get(id).await.map(|_| ())), "{}", h.name);
        assert!(missing(h.store.executions(other.id).steps(id).await.map(|_| ())), "{}", h.name);
        assert!(missing(
            h.store.executions(other.id).append_step(id, step(2, "x")).await.map(|_| ())
        ));
        let cancel = h
            .store
            .executions(other.id)
            .set_status(id, ExecutionStatus::Cancelled, None, None)
            .await;
        assert!(missing(cancel.map(|_| ())), "{}", h.name);
        let taken = NewExecution { tenant: other.id, ..new };
        assert!(missing(h.store.start_execution(taken).await.map(|_| ())), "{}", h.name);
        assert!(h.store.executions(other.id).list(10).await.unwrap().is_empty(), "{}", h.name);

        // Its own tenant still sees it as it was.
        let own = h.store.executions(tenant.id).get(id).await.unwrap();
        assert_eq!(own.status, ExecutionStatus::Pending);
        assert_eq!(h.store.executions(tenant.id).list(10).await.unwrap().len(), 1);
        assert_eq!(h.store.executions(tenant.id).steps(id).await.unwrap().len(), 1);
    }
}

/// A cron fire's writes in one unit of work: its execution, its first step, an outbox event
/// and an audit record; then, when `fail`, a refusal that must take all of them back.
fn fire<'w>(
    work: &'w mut Work<'_>,
    new: NewExecution,
    audit: AuditEntry,
    fail: bool,
) -> BoxFuture<'w, Result<ExecutionId, Error>> {
    Box::pin(async move {
        work.executions().start(new.clone()).await?;
        work.executions().append_step(new.id, step(1, "fired")).await?;
        // Any kind will do: the outbox row is what is checked.
        let event = OutboxEvent { kind: EventKind::TurnStarted, data: "{}".into() };
        work.announce(None, &[event]).await?;
        work.audit(&audit).await?;
        if fail {
            return Err(Error::InvalidInput("the envelope was refused".into()));
        }
        Ok(new.id)
    })
}

/// A unit of work commits its writes to several aggregates together, or none of them.
#[tokio::test]
async fn a_unit_of_work_commits_all_its_writes_or_none() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let other = h.store.tenants().create("other").await.unwrap();
        let head = |rows: Vec<OutboxRow>| rows.last().map_or(0, |r| r.id);
        let outbox_before = head(h.store.system().outbox_after(0, 10_000).await.unwrap());
        let audited_before = h.store.access(tenant.id).verify_audit().await.unwrap().records;
        let other_before = h.store.access(other.id).verify_audit().await.unwrap().records;
        let planned = |audit_tenant| {
            let new = running(
                &h.store,
                tenant.id,
                agent.id,
                ExecutionKind::CronFire,
                ExecutionOwner::Agent(agent.id),
            );
            let audit = AuditEntry {
                tenant: audit_tenant,
                agent: Some(agent.id),
                kind: AuditKind::ToolDecision,
                tool: None,
                decision: None,
                detail: "{}".into(),
            };
            (new, audit)
        };

        // Fails after every write: none of them is left.
        let (failed, audit) = planned(tenant.id);
        let failed_id = failed.id;
        let refused = h
            .store
            .transact(tenant.id, move |w| fire(w, failed.clone(), audit.clone(), true))
            .await;
        assert!(matches!(refused, Err(Error::InvalidInput(_))), "{}: {refused:?}", h.name);
        // An audit record for another tenant is refused, and takes the rest with it.
        let (crossed, audit) = planned(other.id);
        let crossed_id = crossed.id;
        let refused = h
            .store
            .transact(tenant.id, move |w| fire(w, crossed.clone(), audit.clone(), false))
            .await;
        assert!(matches!(refused, Err(Error::InvalidInput(_))), "{}: {refused:?}", h.name);
        for id in [failed_id, crossed_id] {
            let gone = h.store.executions(tenant.id).get(id).await;
            assert!(matches!(gone, Err(Error::ExecutionNotFound(_))), "{}: {gone:?}", h.name);
        }
        assert_eq!(
            head(h.store.system().outbox_after(0, 10_000).await.unwrap()),
            outbox_before,
            "{}",
            h.name
        );
        assert_eq!(h.store.access(tenant.id).verify_audit().await.unwrap().records, audited_before);
        assert_eq!(h.store.access(other.id).verify_audit().await.unwrap().records, other_before);

        // Succeeds: every write is there, and the outbox row comes back to publish.
        let (fired, audit) = planned(tenant.id);
        let fired_id = fired.id;
        let (id, announced) = h
            .store
            .transact(tenant.id, move |w| fire(w, fired.clone(), audit.clone(), false))
            .await
            .unwrap();
        assert_eq!(id, fired_id);
        assert_eq!(announced.len(), 1, "{}", h.name);
        assert_eq!(
            h.store.executions(tenant.id).steps(fired_id).await.unwrap(),
            [step(1, "fired")]
        );
        assert_eq!(head(h.store.system().outbox_after(0, 10_000).await.unwrap()), announced[0].id);
        let audit = h.store.access(tenant.id).verify_audit().await.unwrap();
        assert_eq!((audit.records, audit.broken), (audited_before + 1, None), "{}", h.name);
    }
}

/// A turn's writes are a repository too: a turn that starts a branch commits with it in one
/// unit of work, or neither exists; a turn of another tenant is refused.
fn begin_with_branch<'w>(
    work: &'w mut Work<'_>,
    turn: TurnRow,
    event: clade_core::EventId,
    branch: NewExecution,
    fail: bool,
) -> BoxFuture<'w, Result<(), Error>> {
    Box::pin(async move {
        let first = JournalEntry { step: StepKey::Model { iteration: 0 }, data: "{}".into() };
        let started = OutboxEvent { kind: EventKind::TurnStarted, data: "{}".into() };
        work.turns().begin(&turn, &[event], vec![started], Some((first, None)), None).await?;
        work.executions().start(branch).await?;
        if fail {
            return Err(Error::InvalidInput("the branch was refused".into()));
        }
        Ok(())
    })
}

#[tokio::test]
async fn a_turn_and_the_branch_it_starts_commit_together_or_not_at_all() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let accepted = accept(&h.store, &tenant, &agent, "c").await;
        let turn = new_turn(&h.store, &accepted, &tenant, &agent);
        let branch = running(
            &h.store,
            tenant.id,
            agent.id,
            ExecutionKind::Branch,
            ExecutionOwner::Session(accepted.session_id),
        );
        let event = accepted.event_id;
        let plan = (turn.clone(), branch.clone());

        // Refused late: neither the turn, its step, its event's change nor the branch is left.
        let (t, b) = plan.clone();
        let refused = h
            .store
            .transact(tenant.id, move |w| begin_with_branch(w, t.clone(), event, b.clone(), true))
            .await;
        assert!(matches!(refused, Err(Error::InvalidInput(_))), "{}: {refused:?}", h.name);
        let missing = h.store.system().turn(turn.id).await;
        assert!(matches!(missing, Err(Error::TurnNotFound(_))), "{}: {missing:?}", h.name);
        assert!(h.store.system().journal(turn.id).await.unwrap().is_empty(), "{}", h.name);
        let pending = h.store.system().pending_events(accepted.session_id).await.unwrap();
        assert_eq!(pending.len(), 1, "{}: the event was taken", h.name);
        let gone = h.store.executions(tenant.id).get(branch.id).await;
        assert!(matches!(gone, Err(Error::ExecutionNotFound(_))), "{}: {gone:?}", h.name);

        // A turn of another tenant is refused by the repository itself.
        let other = h.store.tenants().create("other").await.unwrap();
        let (t, b) = plan.clone();
        let crossed = h
            .store
            .transact(other.id, move |w| begin_with_branch(w, t.clone(), event, b.clone(), false))
            .await;
        assert!(matches!(crossed, Err(Error::InvalidInput(_))), "{}: {crossed:?}", h.name);

        // Committed: both are there, and the turn's announcement comes back to publish.
        let (t, b) = plan.clone();
        let ((), announced) = h
            .store
            .transact(tenant.id, move |w| begin_with_branch(w, t.clone(), event, b.clone(), false))
            .await
            .unwrap();
        assert_eq!(announced.len(), 1, "{}", h.name);
        assert_eq!(announced[0].turn_id, Some(turn.id), "{}", h.name);
        assert_eq!(h.store.system().turn(turn.id).await.unwrap().id, turn.id, "{}", h.name);
        assert_eq!(h.store.system().journal(turn.id).await.unwrap().len(), 1, "{}", h.name);
        let started = h.store.executions(tenant.id).get(branch.id).await.unwrap();
        assert_eq!(started.kind, ExecutionKind::Branch, "{}", h.name);
        assert!(h.store.system().pending_events(accepted.session_id).await.unwrap().is_empty());
    }
}

/// A turn is one kind of execution: read as one, it has its session as owner, its reply as
/// output, and its journal as steps numbered in the order they were written (a retried step
/// keeps its number and adds none). The generic writes refuse it (its events and lifecycle
/// events go with its own repository), the listings of executions and of open ones leave it
/// out (a session lists its turns, and a turn resumes through its events), and another tenant
/// does not find it.
#[tokio::test]
async fn a_turn_is_an_execution_of_its_session_with_numbered_steps() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let accepted = accept(&h.store, &tenant, &agent, "c").await;
        let turn = new_turn(&h.store, &accepted, &tenant, &agent);
        let entry = |step: StepKey| JournalEntry { step, data: format!("\"{step}\"") };
        let first = entry(StepKey::Model { iteration: 0 });
        h.store
            .turns()
            .begin(&turn, vec![accepted.event_id], Vec::new(), Some((first, None)), None)
            .await
            .unwrap();
        let execution = h.store.executions(tenant.id).get(turn.id.into()).await.unwrap();
        assert_eq!(execution.kind, ExecutionKind::Turn, "{}", h.name);
        assert_eq!(execution.owner, ExecutionOwner::Session(accepted.session_id), "{}", h.name);
        assert_eq!(execution.status, ExecutionStatus::Running, "{}", h.name);
        assert_eq!(execution.input, None, "{}: a turn's input is its events", h.name);
        assert!(h.store.system().open_executions(10).await.unwrap().is_empty(), "{}", h.name);

        let later = [
            StepKey::ToolStart { iteration: 0, index: 0 },
            StepKey::ToolResult { iteration: 0, index: 0 },
            // Retried: already there, so it keeps its number.
            StepKey::ToolStart { iteration: 0, index: 0 },
            StepKey::Model { iteration: 1 },
        ];
        for step in later {
            h.store
                .turns()
                .append_journal(&turn, entry(step), Vec::new(), None, None)
                .await
                .unwrap();
        }
        let outcome = clade_store::TurnOutcome {
            status: clade_core::TurnStatus::Completed,
            reply: Some("done".into()),
            error: None,
            model: Some("m".into()),
        };
        h.store.turns().finish(&turn, outcome, Vec::new()).await.unwrap();

        let steps = h.store.executions(tenant.id).steps(turn.id.into()).await.unwrap();
        let keys: Vec<(u32, &str)> = steps.iter().map(|s| (s.seq, s.key.as_str())).collect();
        assert_eq!(
            keys,
            [(1, "model/0"), (2, "tool/0/0/start"), (3, "tool/0/0/result"), (4, "model/1")],
            "{}",
            h.name
        );
        let journal = h.store.system().journal(turn.id).await.unwrap();
        let journaled: Vec<String> = journal.iter().map(|e| e.step.to_string()).collect();
        let numbered: Vec<String> = steps.iter().map(|s| s.key.clone()).collect();
        assert_eq!(journaled, numbered, "{}: the journal is the execution's steps", h.name);
        let ended = h.store.executions(tenant.id).get(turn.id.into()).await.unwrap();
        assert_eq!(ended.status, ExecutionStatus::Completed, "{}", h.name);
        assert_eq!(ended.output.as_deref(), Some("done"), "{}", h.name);
        assert!(ended.finished_at.is_some(), "{}", h.name);

        // Its steps and status belong to its own repository.
        let id = turn.id.into();
        let appended = h.store.executions(tenant.id).append_step(id, step(5, "more")).await;
        assert!(matches!(appended, Err(Error::InvalidInput(_))), "{}: {appended:?}", h.name);
        let cancelled = h
            .store
            .executions(tenant.id)
            .set_status(id, ExecutionStatus::Cancelled, None, None)
            .await;
        assert!(matches!(cancelled, Err(Error::InvalidInput(_))), "{}: {cancelled:?}", h.name);
        let bare = running(
            &h.store,
            tenant.id,
            agent.id,
            ExecutionKind::Turn,
            ExecutionOwner::Session(accepted.session_id),
        );
        let started = h.store.start_execution(bare).await;
        assert!(matches!(started, Err(Error::InvalidInput(_))), "{}: {started:?}", h.name);
        assert!(h.store.executions(tenant.id).list(10).await.unwrap().is_empty(), "{}", h.name);

        let other = h.store.tenants().create("rival").await.unwrap();
        let foreign = h.store.executions(other.id).get(id).await;
        assert!(matches!(foreign, Err(Error::ExecutionNotFound(_))), "{}: {foreign:?}", h.name);
        let foreign = h.store.executions(other.id).steps(id).await;
        assert!(matches!(foreign, Err(Error::ExecutionNotFound(_))), "{}: {foreign:?}", h.name);
    }
}

/// Takes a store back to schema version 12 (past 14 and 15's jobs), where a turn had rows of its own in `turns` and
/// its steps in `journal`, unnumbered.
async fn downgrade_to_version_12(location: &clade_store::Location) {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let url = location.connect_url().unwrap();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let postgres = matches!(location, clade_store::Location::Postgres(_));
    let blob = if postgres { "BYTEA" } else { "BLOB" };
    let mut statements = vec![
        "DROP TABLE debug_stops".to_owned(),
        "DROP TABLE breakpoints".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 35".to_owned(),
        "ALTER TABLE job_runs DROP COLUMN flow_run".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 34".to_owned(),
        "DROP TABLE flows".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 33".to_owned(),
        "ALTER TABLE leases DROP COLUMN expires_at".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 32".to_owned(),
        "ALTER TABLE api_tokens DROP COLUMN expires_at".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 31".to_owned(),
        "DROP TABLE channel_chats".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 30".to_owned(),
        "DROP TABLE memory_upkeep".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 29".to_owned(),
        "DROP TABLE forks".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 28".to_owned(),
        "DROP TABLE agent_lineage".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 27".to_owned(),
        "DROP TABLE topic_subscriptions".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 26".to_owned(),
        "DROP TABLE pauses".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 25".to_owned(),
        "DROP TABLE agent_messages".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 24".to_owned(),
        "DROP TABLE working_memory".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 23".to_owned(),
        "DROP TABLE session_summaries".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 22".to_owned(),
        "DROP TABLE IF EXISTS memories_fts".to_owned(),
        "DROP TABLE memory_links".to_owned(),
        "DROP TABLE memories".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 21".to_owned(),
        "DROP TABLE job_runs".to_owned(),
        "DROP TABLE jobs".to_owned(),
        "DROP TABLE config_revisions".to_owned(),
        "DROP TABLE agent_settings".to_owned(),
        "DROP TABLE host_calls".to_owned(),
        "DROP TABLE peer_leases".to_owned(),
        "DROP TABLE peers".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 20".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 19".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 18".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 17".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 16".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 15".to_owned(),
        "DELETE FROM schema_migrations WHERE version = 14".to_owned(),
        format!(
            "CREATE TABLE turns (id {blob} PRIMARY KEY, session_id {blob} NOT NULL, \
             tenant_id {blob} NOT NULL, agent_id {blob} NOT NULL, status TEXT NOT NULL, \
             reply TEXT, error TEXT, model TEXT, config_revision BIGINT NOT NULL, \
             started_at BIGINT NOT NULL, finished_at BIGINT, model_calls BIGINT NOT NULL, \
             input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, \
             cost_micros BIGINT NOT NULL)"
        ),
        "CREATE INDEX turns_by_session ON turns (session_id, id)".into(),
        format!(
            "CREATE TABLE journal (turn_id {blob} NOT NULL, step TEXT NOT NULL, \
             kind TEXT NOT NULL, data TEXT NOT NULL, created_at BIGINT NOT NULL, \
             PRIMARY KEY (turn_id, step))"
        ),
        "INSERT INTO turns SELECT id, owner_id, tenant_id, agent_id, \
         CASE status WHEN 'paused' THEN 'yielded' ELSE status END, output, error, model, \
         config_revision, created_at, finished_at, model_calls, input_tokens, output_tokens, \
         cost_micros FROM executions WHERE kind = 'turn'"
            .into(),
        // The old journal knew its steps' times only: one millisecond for all of them.
        "INSERT INTO journal SELECT execution_id, step_key, 'step', data, 0 FROM execution_steps \
         WHERE execution_id IN (SELECT id FROM turns)"
            .into(),
        "DELETE FROM execution_steps WHERE execution_id IN (SELECT id FROM turns)".into(),
        "DELETE FROM executions WHERE kind = 'turn'".into(),
        "DROP INDEX executions_by_owner".into(),
    ];
    for column in
        ["model", "config_revision", "model_calls", "input_tokens", "output_tokens", "cost_micros"]
    {
        statements.push(format!("ALTER TABLE executions DROP COLUMN {column}"));
    }
    if postgres {
        statements.push("ALTER TABLE executions ALTER COLUMN input SET NOT NULL".into());
    }
    statements.push("DELETE FROM schema_migrations WHERE version = 13".into());
    for sql in statements {
        conn.execute(sqlx::AssertSqlSafe(sql.clone()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Upgrading a store of version 12 keeps every turn, as an execution: its status (a yielded
/// one paused, and resumable), reply, usage and events, and its journal numbered in the order
/// the engine wrote it, though every step shares one millisecond.
#[tokio::test]
async fn an_upgrade_keeps_every_turn_and_the_order_of_its_steps() {
    for h in backends().await {
        let (tenant, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let entry = |step: StepKey| JournalEntry { step, data: format!("\"{step}\"") };
        let mut turns = Vec::new();
        for (channel, status) in
            [("a", clade_core::TurnStatus::Completed), ("b", clade_core::TurnStatus::Yielded)]
        {
            let accepted = accept(&h.store, &tenant, &agent, channel).await;
            let turn = new_turn(&h.store, &accepted, &tenant, &agent);
            let usage = clade_store::UsageRecord {
                tenant: tenant.id,
                agent: Some(agent.id),
                turn: Some(turn.id),
                model: "m".into(),
                input_tokens: 3,
                output_tokens: 4,
                cached_tokens: 0,
                cache_write_tokens: 0,
                cost_micros: 5,
            };
            let first = (entry(StepKey::Model { iteration: 0 }), Some(usage));
            h.store
                .turns()
                .begin(&turn, vec![accepted.event_id], Vec::new(), Some(first), None)
                .await
                .unwrap();
            for step in [
                StepKey::ToolStart { iteration: 0, index: 0 },
                StepKey::ToolResult { iteration: 0, index: 0 },
                StepKey::ToolStart { iteration: 0, index: 1 },
                StepKey::ToolResult { iteration: 0, index: 1 },
                StepKey::Model { iteration: 1 },
            ] {
                h.store
                    .turns()
                    .append_journal(&turn, entry(step), Vec::new(), None, None)
                    .await
                    .unwrap();
            }
            let outcome = clade_store::TurnOutcome {
                status,
                reply: (status == clade_core::TurnStatus::Completed).then(|| "done".into()),
                error: (status == clade_core::TurnStatus::Yielded).then(|| "budget".into()),
                model: Some("m".into()),
            };
            h.store.turns().finish(&turn, outcome, Vec::new()).await.unwrap();
            turns.push(accepted.session_id);
        }
        let before: Vec<_> = {
            let mut all = Vec::new();
            for session in &turns {
                all.extend(
                    h.store.sessions(tenant.id).turn_records(*session, None, 10).await.unwrap(),
                );
            }
            all
        };
        // Closed for good, every handle of it, before its schema is taken back.
        let super::harness::Harness { name, store, agents, location, _schema, _tmp, .. } = h;
        drop(agents);
        store.close().await;
        downgrade_to_version_12(&location).await;
        let store = super::harness::open(location).await.unwrap();
        let mut after = Vec::new();
        for session in &turns {
            after.extend(store.sessions(tenant.id).turn_records(*session, None, 10).await.unwrap());
        }
        // The old journal, as simulated, held one time for all its steps (0): all but the
        // steps' times must come through.
        let untimed = |records: &[clade_store::TurnRecord]| {
            let mut records = records.to_vec();
            records.iter_mut().for_each(|r| r.step_times.clear());
            records
        };
        assert_eq!(untimed(&after), untimed(&before), "{}", name);
        // The engine writes a tool call's start before its result, and calls in call order.
        let keys: Vec<String> = after[0].steps.iter().map(|s| s.step.to_string()).collect();
        assert_eq!(
            keys,
            [
                "model/0",
                "tool/0/0/start",
                "tool/0/0/result",
                "tool/0/1/start",
                "tool/0/1/result",
                "model/1"
            ],
            "{}",
            name
        );
        let execution = store.executions(tenant.id).get(after[1].turn.id.into()).await.unwrap();
        assert_eq!(execution.status, ExecutionStatus::Paused, "{}", name);
        let (resumed, _) = store.sessions(tenant.id).resume(turns[1]).await.unwrap();
        assert_eq!(resumed, 1, "{}: the yielded turn could not be resumed", name);
        let steps = store.executions(tenant.id).steps(after[1].turn.id.into()).await.unwrap();
        assert_eq!(
            steps.last().map(|s| (s.seq, s.key.as_str())),
            Some((7, "resume/0")),
            "{}",
            name
        );
    }
}

/// A turn's writes find their turn by id, tenant and kind together: a `TurnRow` that names
/// another tenant's turn, or an execution that is not a turn, changes nothing of it.
#[tokio::test]
async fn a_turn_write_reaches_no_other_tenants_execution() {
    for h in backends().await {
        let (owner, agent) = tenant_and_agent(&h.store, &h.agents, "ada").await;
        let accepted = accept(&h.store, &owner, &agent, "c").await;
        let turn = new_turn(&h.store, &accepted, &owner, &agent);
        let first = JournalEntry { step: StepKey::Model { iteration: 0 }, data: "{}".into() };
        h.store
            .turns()
            .begin(&turn, vec![accepted.event_id], Vec::new(), Some((first, None)), None)
            .await
            .unwrap();
        let cron = running(
            &h.store,
            owner.id,
            agent.id,
            ExecutionKind::CronFire,
            ExecutionOwner::Agent(agent.id),
        );
        h.store.start_execution(cron.clone()).await.unwrap();

        let rival = h.store.tenants().create("rival").await.unwrap();
        for target in [turn.id, clade_core::TurnId::from_bytes(*cron.id.as_bytes())] {
            let forged = TurnRow { tenant_id: rival.id, ..turn.clone() };
            let forged = TurnRow { id: target, ..forged };
            let step = JournalEntry { step: StepKey::Model { iteration: 1 }, data: "{}".into() };
            let appended =
                h.store.turns().append_journal(&forged, step, Vec::new(), None, None).await;
            assert!(matches!(appended, Err(Error::TurnNotFound(_))), "{}: {appended:?}", h.name);
            let outcome = clade_store::TurnOutcome {
                status: clade_core::TurnStatus::Failed,
                reply: None,
                error: Some("forged".into()),
                model: None,
            };
            let ended = h.store.turns().finish(&forged, outcome, Vec::new()).await;
            assert!(matches!(ended, Err(Error::TurnNotFound(_))), "{}: {ended:?}", h.name);
        }
        // The owner's own handle cannot treat its cron execution as a turn either.
        let as_turn =
            TurnRow { id: clade_core::TurnId::from_bytes(*cron.id.as_bytes()), ..turn.clone() };
        let step = JournalEntry { step: StepKey::Model { iteration: 1 }, data: "{}".into() };
        let appended = h.store.turns().append_journal(&as_turn, step, Vec::new(), None, None).await;
        assert!(matches!(appended, Err(Error::TurnNotFound(_))), "{}: {appended:?}", h.name);
        // Usage recorded by the rival, naming the owner's turn, stays the rival's.
        let usage = clade_store::UsageRecord {
            tenant: rival.id,
            agent: None,
            turn: Some(turn.id),
            model: "m".into(),
            input_tokens: 1_000,
            output_tokens: 1_000,
            cached_tokens: 0,
            cache_write_tokens: 0,
            cost_micros: 1_000,
        };
        h.store.record_usage(usage).await.unwrap();

        let records =
            h.store.sessions(owner.id).turn_records(accepted.session_id, None, 10).await.unwrap();
        assert_eq!(records.len(), 1, "{}", h.name);
        assert_eq!(records[0].turn.status, clade_core::TurnStatus::Running, "{}", h.name);
        assert_eq!(records[0].steps.len(), 1, "{}", h.name);
        assert_eq!(records[0].usage.model_calls, 0, "{}: the rival's usage counted", h.name);
        let untouched = h.store.executions(owner.id).get(cron.id).await.unwrap();
        assert_eq!(untouched.status, ExecutionStatus::Running, "{}", h.name);
        assert!(h.store.executions(owner.id).steps(cron.id).await.unwrap().is_empty());
        // A start retried under the turn's id, as another kind, is refused.
        let clash = NewExecution { id: turn.id.into(), ..cron.clone() };
        let started = h.store.start_execution(clash).await;
        assert!(matches!(started, Err(Error::InvalidInput(_))), "{}: {started:?}", h.name);
    }
}
