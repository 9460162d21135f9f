//! Work run as a durable execution ([`clade_store::executions`]): each step's result is
//! journaled as it completes, and a run resumed after a crash replays the recorded steps
//! instead of doing them again. What a sub-agent run, a flow step or a cron fire builds on.
//!
//! A step that crashed after its effect but before its record runs again on resume, like an
//! idempotent tool call in a turn: it receives the same idempotency key both times
//! ([`Durable::step`]), so an effect keyed by it happens once.

use clade_core::{ExecutionId, ExecutionStatus};
use clade_store::{ExecutionRow, ExecutionStep, NewExecution, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// Why a durable run cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error(transparent)]
    Store(#[from] clade_store::Error),
    #[error("execution {0} is paused: resume it before running it")]
    Paused(ExecutionId),
    #[error("execution {id}'s step {seq} ({key}) cannot be read back: {detail}")]
    Unreadable { id: ExecutionId, seq: u32, key: String, detail: String },
}

impl clade_core::Fault for DurableError {
    /// All the journal's: a paused run is the one thing its caller can act on.
    fn is_internal(&self) -> bool {
        match self {
            Self::Store(store) => clade_core::Fault::is_internal(store),
            Self::Paused(_) => false,
            Self::Unreadable { .. } => true,
        }
    }
}

/// A running execution: steps are replayed while the journal has them, then run and recorded.
pub struct Durable {
    store: Store,
    row: ExecutionRow,
    recorded: Vec<ExecutionStep>,
    /// The next step's number (from 1).
    next: u32,
}

impl Durable {
    /// Starts `new`, or takes it up where it stopped: its recorded steps will replay. A
    /// pending execution becomes running; a paused one is refused until resumed; an ended one
    /// is refused.
    pub async fn start_or_resume(store: Store, new: NewExecution) -> Result<Self, DurableError> {
        let (tenant, id) = (new.tenant, new.id);
        let mut row = store.start_execution(new).await?;
        match row.status {
            ExecutionStatus::Paused => return Err(DurableError::Paused(id)),
            ExecutionStatus::Pending => {
                row = store
                    .executions(tenant)
                    .set_status(id, ExecutionStatus::Running, None, None)
                    .await?;
            }
            status if status.is_final() => {
                return Err(
                    clade_store::Error::ExecutionEnded { id: id.to_string(), status }.into()
                );
            }
            _ => {}
        }
        let recorded = store.executions(tenant).steps(id).await?;
        Ok(Self { store, row, recorded, next: 1 })
    }

    /// [`Self::start_or_resume`], or, for an execution that has ended already, its row: a
    /// caller run again after a crash (its execution's end recorded, what it did with it not)
    /// answers with what the execution ended with, and runs nothing again.
    pub async fn start_or_ended(
        store: Store,
        new: NewExecution,
    ) -> Result<Result<Self, ExecutionRow>, DurableError> {
        let (tenant, id) = (new.tenant, new.id);
        match Self::start_or_resume(store.clone(), new).await {
            Ok(run) => Ok(Ok(run)),
            Err(DurableError::Store(clade_store::Error::ExecutionEnded { .. })) => {
                Ok(Err(store.executions(tenant).get(id).await?))
            }
            Err(other) => Err(other),
        }
    }

    pub fn id(&self) -> ExecutionId {
        self.row.id
    }

    /// How many steps came from the journal rather than being run, so far.
    pub fn replayed(&self) -> usize {
        self.recorded.len().min(self.next.saturating_sub(1) as usize)
    }

    /// The next step, named `key`: its recorded result if the journal has it (a replay must
    /// reach the same key at the same number, or the run is refused as diverged), otherwise
    /// `run`'s, recorded before it is returned. `run` gets the step's idempotency key, the same
    /// on every attempt of this step.
    ///
    /// `Ok(Err(e))` is the step's own failure: nothing is recorded, so a run resumed later tries
    /// the step again (record a failure the model should keep by returning it as a value). The
    /// outer error is the journal's.
    pub async fn step<T, E, F, Fut>(
        &mut self,
        key: &str,
        run: F,
    ) -> Result<Result<T, E>, DurableError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let seq = self.next;
        let id = self.row.id;
        if let Some(recorded) = self.recorded.get(seq as usize - 1) {
            if recorded.key != key {
                return Err(clade_store::Error::StepDiverged {
                    id: id.to_string(),
                    seq,
                    recorded: recorded.key.clone(),
                    now: key.to_owned(),
                }
                .into());
            }
            let value = serde_json::from_str(&recorded.data).map_err(|e| {
                DurableError::Unreadable { id, seq, key: key.to_owned(), detail: e.to_string() }
            })?;
            self.next += 1;
            return Ok(Ok(value));
        }
        let value = match run(step_key(id, seq, key)).await {
            Ok(value) => value,
            Err(failed) => return Ok(Err(failed)),
        };
        let data = serde_json::to_string(&value).map_err(|e| DurableError::Unreadable {
            id,
            seq,
            key: key.to_owned(),
            detail: e.to_string(),
        })?;
        let step = ExecutionStep { seq, key: key.to_owned(), data };
        self.store.executions(self.row.tenant_id).append_step(id, step).await?;
        self.next += 1;
        Ok(Ok(value))
    }

    /// Ends the execution as completed with `output`.
    pub async fn complete(self, output: &impl Serialize) -> Result<ExecutionRow, DurableError> {
        let output = serde_json::to_string(output).map_err(|e| DurableError::Unreadable {
            id: self.row.id,
            seq: self.next,
            key: "output".into(),
            detail: e.to_string(),
        })?;
        let (tenant, id) = (self.row.tenant_id, self.row.id);
        let status = ExecutionStatus::Completed;
        Ok(self.store.executions(tenant).set_status(id, status, Some(output), None).await?)
    }

    /// Ends the execution as failed, saying why.
    pub async fn fail(self, reason: &str) -> Result<ExecutionRow, DurableError> {
        let (tenant, id) = (self.row.tenant_id, self.row.id);
        let status = ExecutionStatus::Failed;
        Ok(self
            .store
            .executions(tenant)
            .set_status(id, status, None, Some(reason.to_owned()))
            .await?)
    }
}

/// `hash(execution, seq, key)`: a step's idempotency key, the same on every attempt.
fn step_key(id: ExecutionId, seq: u32, key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(id.as_bytes())
        .chain_update(seq.to_be_bytes())
        .chain_update(key.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}
