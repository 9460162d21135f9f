//! Two narrower handles on the store. A [`TenantStore`] is bound to one tenant: everything it
//! reads filters by that tenant, so the API edge, which holds one per request, cannot reach
//! another tenant's rows whatever ids a caller hands it. A [`SystemStore`] holds the reads that
//! cross tenants (recovering sessions after a restart, the engine's own session reads, outbox
//! delivery, dead letters); only the engine, the delivery tasks and operator commands take one,
//! and the gateway never does (tidy test `the_gateway_never_reads_across_tenants`).

use clade_core::{Agent, AgentId, ApprovalId, ExecutionId, SessionId, TenantId, Timestamp, TurnId};

use crate::access::{
    ApprovalRow, ApprovalStatus, AuditFilter, AuditRow, AuditVerification, GrantRow,
};
use crate::error::{Error, Result};
use crate::store::{Store, UsageSummary};
use crate::turns::{JournalEntry, SessionRow, TurnRecord, TurnRow};

/// The store's reads that cross tenants. It derefs to [`Store`], of which it is a superset.
#[derive(Clone)]
pub struct SystemStore(pub(crate) Store);

impl std::ops::Deref for SystemStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.0
    }
}

/// The store as one tenant sees it.
#[derive(Clone)]
pub struct TenantStore {
    store: Store,
    tenant: TenantId,
}

impl Store {
    /// The handle for reads across tenants: recovery, delivery, operator commands.
    pub fn system(&self) -> SystemStore {
        SystemStore(self.clone())
    }

    /// The handle bound to `tenant`.
    pub fn tenant_scope(&self, tenant: TenantId) -> TenantStore {
        TenantStore { store: self.clone(), tenant }
    }
}

impl TenantStore {
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The store's clock's time.
    pub fn now(&self) -> clade_core::Timestamp {
        self.store.now()
    }

    /// A paired component (the operator's, shared by every tenant; a lease names one).
    pub async fn peer(&self, kind: &str, name: &str) -> Result<Option<crate::PeerRow>> {
        self.store.peer(kind, name).await
    }

    /// Leases `scope` of this tenant to a paired component (see [`crate::peer_leases`]).
    pub async fn grant_lease(
        &self,
        peer_kind: &str,
        peer_name: &str,
        scope: crate::peer_leases::LeaseScope,
        ttl: std::time::Duration,
    ) -> Result<crate::peer_leases::LeaseRow> {
        self.store.grant_lease(self.tenant, peer_kind, peer_name, scope, ttl).await
    }

    /// Ends the open leases of one of this tenant's sessions to a component (see
    /// [`crate::Store::end_peer_session_leases`]).
    pub async fn end_peer_session_leases(
        &self,
        peer_kind: &str,
        peer_name: &str,
        session: clade_core::SessionId,
        why: &str,
    ) -> Result<usize> {
        self.store.end_peer_session_leases(self.tenant, peer_kind, peer_name, session, why).await
    }

    /// This tenant's leases, newest first.
    pub async fn leases(&self, limit: u32) -> Result<Vec<crate::peer_leases::LeaseRow>> {
        self.store.leases(self.tenant, limit).await
    }

    pub async fn lease(&self, id: clade_core::LeaseId) -> Result<crate::peer_leases::LeaseRow> {
        self.store.lease(self.tenant, id).await
    }

    /// Ends one of this tenant's leases now, saying `why`.
    pub async fn end_lease(
        &self,
        id: clade_core::LeaseId,
        why: &str,
    ) -> Result<crate::peer_leases::LeaseRow> {
        self.store.end_lease(self.tenant, id, why).await
    }

    pub async fn agent(&self, handle: &str) -> Result<Agent> {
        self.store.agent(self.tenant, handle).await
    }

    pub async fn agent_by_id(&self, id: AgentId) -> Result<Agent> {
        self.store.agent_by_id(self.tenant, id).await
    }

    /// A page of agents by handle, after `after`.
    pub async fn agents(&self, after: Option<&str>, limit: u32) -> Result<Vec<Agent>> {
        self.store.agents(self.tenant, after, limit).await
    }

    pub async fn session(&self, id: SessionId) -> Result<SessionRow> {
        self.store.session(self.tenant, id).await
    }

    /// The most recently active sessions, of one agent or all.
    pub async fn sessions(&self, agent: Option<AgentId>, limit: u32) -> Result<Vec<SessionRow>> {
        self.store.sessions(self.tenant, agent, limit).await
    }

    /// A page of them, after `before` (see [`Store::sessions_before`]).
    pub async fn sessions_before(
        &self,
        agent: Option<AgentId>,
        before: Option<crate::SessionCursor>,
        limit: u32,
    ) -> Result<Vec<SessionRow>> {
        self.store.sessions_before(self.tenant, agent, before, limit).await
    }

    /// A turn of `session`: another session's turn, or another tenant's, is not found.
    pub async fn turn(&self, session: SessionId, id: TurnId) -> Result<TurnRow> {
        let turn = self.store.system().turn(id).await?;
        if turn.tenant_id != self.tenant || turn.session_id != session {
            return Err(Error::TurnNotFound(id.to_string()));
        }
        Ok(turn)
    }

    /// What the model calls of this tenant's turn `id` consumed; another tenant's turn is not
    /// found.
    pub async fn turn_usage(&self, id: TurnId) -> Result<crate::TurnUsage> {
        self.store.system().turn_usage(self.tenant, id).await
    }

    /// The journal of a turn of `session`, in the order it was written.
    pub async fn journal(&self, session: SessionId, turn: TurnId) -> Result<Vec<JournalEntry>> {
        self.turn(session, turn).await?;
        self.store.system().journal(turn).await
    }

    /// `session`'s summaries, newest first (see [`Store::summaries`]); none for a session
    /// that is not this tenant's.
    pub async fn summaries(
        &self,
        session: SessionId,
        limit: u32,
    ) -> Result<Vec<crate::summaries::SessionSummary>> {
        self.store.summaries(self.tenant, session, limit).await
    }

    /// The tenant's lifecycle events after `after` (see [`Store::event_history`]).
    pub async fn event_history(
        &self,
        filter: &crate::turns::HistoryFilter,
        after: i64,
        limit: u32,
    ) -> Result<Vec<crate::turns::OutboxRow>> {
        self.store.event_history(self.tenant, filter, after, limit).await
    }

    /// The agent's runs (see [`Store::runs`]).
    pub async fn runs(&self, filter: &crate::RunFilter) -> Result<Vec<crate::ExecutionRow>> {
        self.store.runs(self.tenant, filter).await
    }

    /// A run by id.
    pub async fn execution(&self, id: ExecutionId) -> Result<crate::ExecutionRow> {
        self.store.execution(self.tenant, id).await
    }

    /// The branch or worker an execution is a run of, if it is one.
    pub async fn fork_of_execution(&self, id: ExecutionId) -> Result<Option<crate::ForkRow>> {
        self.store.fork_of_execution(self.tenant, id).await
    }

    /// Pauses `agent`, or one of its sessions (see [`Store::pause`]).
    pub async fn pause(
        &self,
        agent: AgentId,
        session: Option<SessionId>,
        reason: Option<String>,
    ) -> Result<crate::PauseRow> {
        self.store.pause(self.tenant, agent, session, reason).await
    }

    /// Lifts a pause (see [`Store::unpause`]); whether there was one.
    pub async fn unpause(&self, agent: AgentId, session: Option<SessionId>) -> Result<bool> {
        self.store.unpause(self.tenant, agent, session).await
    }

    /// `agent`'s pauses, its own and its sessions'.
    pub async fn pauses_of(&self, agent: AgentId) -> Result<Vec<crate::PauseRow>> {
        self.store.pauses_of(self.tenant, agent).await
    }

    /// `agent`'s sessions with work in flight or a pause (see [`Store::agent_status`]).
    pub async fn agent_status(
        &self,
        agent: AgentId,
        limit: u32,
    ) -> Result<Vec<crate::SessionActivity>> {
        self.store.agent_status(self.tenant, agent, limit).await
    }

    /// A page of the messages `agent` sent or received, newest first (see
    /// [`Store::agent_messages`]).
    pub async fn agent_messages(
        &self,
        agent: AgentId,
        before: Option<clade_core::MessageId>,
        limit: u32,
    ) -> Result<Vec<crate::MessageRow>> {
        self.store.agent_messages(self.tenant, agent, before, limit).await
    }

    /// Sets or clears `name` in `session`'s working memory (see [`Store::write_working`]).
    pub async fn write_working(
        &self,
        session: SessionId,
        name: &str,
        value: Option<String>,
        turn: Option<clade_core::TurnId>,
    ) -> Result<crate::WorkingEntry> {
        self.store.write_working(self.tenant, session, name, value, turn).await
    }

    /// The values `session`'s working memory holds now, by name.
    pub async fn working(&self, session: SessionId) -> Result<Vec<crate::WorkingEntry>> {
        self.store.working(self.tenant, session).await
    }

    /// The versions kept of `name` in `session`'s working memory, newest first.
    pub async fn working_history(
        &self,
        session: SessionId,
        name: &str,
    ) -> Result<Vec<crate::WorkingEntry>> {
        self.store.working_history(self.tenant, session, name).await
    }

    /// A page of `session`'s turns after `after` (see [`Store::turn_records`]); none for a
    /// session that is not this tenant's.
    pub async fn turn_records(
        &self,
        session: SessionId,
        after: Option<TurnId>,
        limit: u32,
    ) -> Result<Vec<TurnRecord>> {
        self.store.turn_records(self.tenant, session, after, limit).await
    }

    /// One turn of `session`, with its events (see [`Store::turn_record`]).
    pub async fn turn_record(&self, session: SessionId, turn: TurnId) -> Result<TurnRecord> {
        self.store.turn_record(self.tenant, session, turn).await
    }

    /// What people wrote in one turn of `session` (see [`Store::session_turn_texts`]).
    pub async fn turn_texts(&self, session: SessionId, turn: TurnId) -> Result<Vec<String>> {
        self.store.session_turn_texts(self.tenant, session, turn).await
    }

    pub async fn usage(
        &self,
        agent: Option<AgentId>,
        since: Timestamp,
    ) -> Result<Vec<UsageSummary>> {
        self.store.usage(self.tenant, agent, since).await
    }

    pub async fn grants(&self, agent: Option<AgentId>) -> Result<Vec<GrantRow>> {
        self.store.grants(self.tenant, agent).await
    }

    pub async fn approval(&self, id: ApprovalId) -> Result<ApprovalRow> {
        self.store.approval(self.tenant, id).await
    }

    pub async fn approvals(
        &self,
        agent: Option<AgentId>,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<ApprovalRow>> {
        self.store.approvals(self.tenant, agent, status, limit).await
    }

    /// The settings `agent` has stored, by key.
    pub async fn agent_settings(&self, agent: AgentId) -> Result<Vec<crate::SettingRow>> {
        self.store.agent_settings(self.tenant, agent).await
    }

    /// Stores a setting of an agent of this tenant (audited).
    pub async fn set_agent_setting(
        &self,
        agent: AgentId,
        key: &str,
        value: serde_json::Value,
    ) -> Result<crate::SettingRow> {
        self.store.set_agent_setting(self.tenant, agent, key, value).await
    }

    /// Removes a setting of an agent of this tenant (audited).
    pub async fn unset_agent_setting(&self, agent: AgentId, key: &str) -> Result<()> {
        self.store.unset_agent_setting(self.tenant, agent, key).await
    }

    /// The jobs of `agent`, by name.
    /// Stores an item of one of this tenant's agents (see [`crate::memories`]).
    pub async fn save_memory(&self, new: crate::NewMemory) -> Result<crate::MemoryRow> {
        self.store.save_memory(self.tenant, new).await
    }

    /// Stores an item unless its agent holds `max_items` already ([`crate::Error::MemoryFull`]).
    pub async fn save_memory_within(
        &self,
        new: crate::NewMemory,
        max_items: u64,
    ) -> Result<crate::MemoryRow> {
        self.store.save_memory_within(self.tenant, new, max_items).await
    }

    pub async fn update_memory(
        &self,
        agent: AgentId,
        id: clade_core::MemoryId,
        update: crate::MemoryUpdate,
    ) -> Result<crate::MemoryRow> {
        self.store.update_memory(self.tenant, agent, id, update).await
    }

    pub async fn forget_memory(&self, agent: AgentId, id: clade_core::MemoryId) -> Result<()> {
        self.store.forget_memory(self.tenant, agent, id).await
    }

    pub async fn link_memories(
        &self,
        agent: AgentId,
        from: clade_core::MemoryId,
        to: clade_core::MemoryId,
        kind: clade_core::LinkKind,
        weight: f64,
    ) -> Result<crate::LinkRow> {
        self.store.link_memories(self.tenant, agent, from, to, kind, weight).await
    }

    pub async fn memory(
        &self,
        agent: AgentId,
        id: clade_core::MemoryId,
    ) -> Result<crate::MemoryRow> {
        self.store.memory(self.tenant, agent, id).await
    }

    pub async fn memories_by_id(
        &self,
        agent: AgentId,
        filter: &crate::MemoryFilter,
        ids: &[clade_core::MemoryId],
    ) -> Result<Vec<crate::MemoryRow>> {
        self.store.memories_by_id(self.tenant, agent, filter, ids).await
    }

    pub async fn memories(
        &self,
        agent: AgentId,
        filter: &crate::MemoryFilter,
        before: Option<(Timestamp, clade_core::MemoryId)>,
        limit: u32,
    ) -> Result<Vec<crate::MemoryRow>> {
        self.store.memories(self.tenant, agent, filter, before, limit).await
    }

    pub async fn memory_count(&self, agent: AgentId) -> Result<i64> {
        self.store.memory_count(self.tenant, agent).await
    }

    pub async fn search_memory_text(
        &self,
        agent: AgentId,
        filter: &crate::MemoryFilter,
        text: &str,
        limit: u32,
        needed: u32,
    ) -> Result<Vec<(clade_core::MemoryId, f64)>> {
        self.store.search_memory_text(self.tenant, agent, filter, text, limit, needed).await
    }

    pub async fn memories_with_words_of(
        &self,
        agent: AgentId,
        filter: &crate::MemoryFilter,
        text: &str,
        limit: u32,
    ) -> Result<Vec<(clade_core::MemoryId, f64)>> {
        self.store.memories_with_words_of(self.tenant, agent, filter, text, limit).await
    }

    pub async fn memory_vectors(
        &self,
        agent: AgentId,
        filter: &crate::MemoryFilter,
        model: &str,
    ) -> Result<Vec<crate::memories::VectorRow>> {
        self.store.memory_vectors(self.tenant, agent, filter, model).await
    }

    pub async fn memory_embedding(
        &self,
        agent: AgentId,
        id: clade_core::MemoryId,
        model: &str,
    ) -> Result<Option<Vec<f32>>> {
        self.store.memory_embedding(self.tenant, agent, id, model).await
    }

    pub async fn memory_scope_version(
        &self,
        agent: AgentId,
        scope: &str,
    ) -> Result<Option<Timestamp>> {
        self.store.memory_scope_version(self.tenant, agent, scope).await
    }

    pub async fn memories_to_embed(
        &self,
        agent: AgentId,
        model: &str,
        limit: u32,
    ) -> Result<Vec<crate::MemoryRow>> {
        self.store.memories_to_embed(self.tenant, agent, model, limit).await
    }

    pub async fn memory_links(
        &self,
        agent: AgentId,
        ids: &[clade_core::MemoryId],
    ) -> Result<Vec<crate::LinkRow>> {
        self.store.memory_links(self.tenant, agent, ids).await
    }

    pub async fn touch_memories(
        &self,
        agent: AgentId,
        ids: Vec<clade_core::MemoryId>,
    ) -> Result<()> {
        self.store.touch_memories(self.tenant, agent, ids).await
    }

    /// See [`Store::memory_upkeep_ran`].
    pub async fn memory_upkeep_ran(&self, agent: AgentId) -> Result<Option<Timestamp>> {
        self.store.memory_upkeep_ran(self.tenant, agent).await
    }

    /// See [`Store::finish_memory_upkeep`].
    pub async fn finish_memory_upkeep(
        &self,
        agent: AgentId,
        began: Timestamp,
        seen: Timestamp,
        next_due: Option<Timestamp>,
    ) -> Result<()> {
        self.store.finish_memory_upkeep(self.tenant, agent, began, seen, next_due).await
    }

    /// See [`Store::memory_vitals`].
    pub async fn memory_vitals(
        &self,
        agent: AgentId,
        from: Option<i64>,
        limit: u32,
    ) -> Result<crate::VitalsPage> {
        self.store.memory_vitals(self.tenant, agent, from, limit).await
    }

    /// See [`Store::memories_written_since`].
    pub async fn memories_written_since(
        &self,
        agent: AgentId,
        since: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<crate::MemoryRow>> {
        self.store.memories_written_since(self.tenant, agent, since, limit).await
    }

    /// See [`Store::memories_to_consolidate`].
    pub async fn memories_to_consolidate(
        &self,
        agent: AgentId,
        kinds: &[clade_core::MemoryKind],
        scope: Option<&str>,
        limit: u32,
    ) -> Result<Vec<crate::MemoryRow>> {
        self.store.memories_to_consolidate(self.tenant, agent, kinds, scope, limit).await
    }

    /// See [`Store::scopes_to_consolidate`].
    pub async fn scopes_to_consolidate(
        &self,
        agent: AgentId,
        kinds: &[clade_core::MemoryKind],
        at_least: u64,
        limit: u32,
    ) -> Result<Vec<String>> {
        self.store.scopes_to_consolidate(self.tenant, agent, kinds, at_least, limit).await
    }

    /// See [`Store::set_memory_strengths`].
    pub async fn set_memory_strengths(
        &self,
        agent: AgentId,
        strengths: Vec<(clade_core::MemoryId, f64)>,
    ) -> Result<()> {
        self.store.set_memory_strengths(self.tenant, agent, strengths).await
    }

    /// See [`Store::prune_memories`].
    pub async fn prune_memories(
        &self,
        agent: AgentId,
        items: Vec<(clade_core::MemoryId, clade_core::Timestamp)>,
        why: &str,
    ) -> Result<u64> {
        self.store.prune_memories(self.tenant, agent, items, why).await
    }

    /// See [`Store::merge_memories`].
    pub async fn merge_memories(
        &self,
        agent: AgentId,
        kept: clade_core::MemoryId,
        repeat: clade_core::MemoryId,
        update: crate::MemoryUpdate,
    ) -> Result<crate::MemoryRow> {
        self.store.merge_memories(self.tenant, agent, kept, repeat, update).await
    }

    /// See [`Store::restore_memory`].
    pub async fn restore_memory(
        &self,
        agent: AgentId,
        id: clade_core::MemoryId,
    ) -> Result<crate::MemoryRow> {
        self.store.restore_memory(self.tenant, agent, id).await
    }

    /// See [`Store::purge_pruned_memories`].
    pub async fn purge_pruned_memories(
        &self,
        agent: AgentId,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64> {
        self.store.purge_pruned_memories(self.tenant, agent, before, limit).await
    }

    /// See [`Store::pruned_memories`].
    pub async fn pruned_memories(
        &self,
        agent: AgentId,
        limit: u32,
    ) -> Result<Vec<crate::MemoryRow>> {
        self.store.pruned_memories(self.tenant, agent, limit).await
    }

    /// See [`Store::earliest_pruned_memory`].
    pub async fn earliest_pruned_memory(&self, agent: AgentId) -> Result<Option<Timestamp>> {
        self.store.earliest_pruned_memory(self.tenant, agent).await
    }

    pub async fn jobs(&self, agent: AgentId) -> Result<Vec<crate::JobRow>> {
        self.store.jobs(self.tenant, Some(agent)).await
    }

    pub async fn job_named(&self, agent: AgentId, name: &str) -> Result<crate::JobRow> {
        self.store.job_named(self.tenant, agent, name).await
    }

    /// A job's fires, newest first.
    pub async fn job_runs(&self, job: ExecutionId, limit: u32) -> Result<Vec<crate::JobRun>> {
        self.store.job_runs(self.tenant, job, None, limit).await
    }

    /// Creates a job in this tenant (audited); one for another tenant is refused.
    pub async fn create_job(&self, new: crate::NewJob) -> Result<crate::JobRow> {
        if new.tenant != self.tenant {
            return Err(Error::InvalidInput("a job is created in its own tenant".into()));
        }
        self.store.create_job(new).await
    }

    /// Deletes a job of this tenant (audited).
    pub async fn delete_job(&self, job: ExecutionId) -> Result<crate::JobRow> {
        self.store.delete_job(self.tenant, job).await
    }

    /// Enables or disables a job of this tenant (audited).
    pub async fn set_job_enabled(&self, job: ExecutionId, enabled: bool) -> Result<crate::JobRow> {
        self.store.set_job_enabled(self.tenant, job, enabled, None).await
    }

    pub async fn audit_records(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        self.store.audit_records(self.tenant, filter).await
    }

    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        self.store.verify_audit(self.tenant).await
    }
}
