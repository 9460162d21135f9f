//! Flows stored in the gateway and runs of them: saving checks the text first, a run started
//! from a stored flow is pinned to one version (its text copied into the run's record), and a
//! retry runs an ended run's text and inputs again, as a new run that names the one it repeats.

use std::collections::BTreeMap;
use std::path::Path;

use clade_core::{ExecutionId, Tenant, TenantId};
use clade_store::{ExecutionRow, SavedFlow, StoredFlows};
use serde_json::Value;

use crate::run::{RunError, RunInput, Runner, StartRun};

/// Names a stored flow may not take: the API's own words under `/v1/flows/`.
pub const RESERVED_NAMES: &[&str] = &["runs", "check"];

/// A run of a stored flow to start.
#[derive(Debug, Clone, Default)]
pub struct StartStored {
    pub name: String,
    /// The version to run; the newest when `None`.
    pub version: Option<i64>,
    pub inputs: BTreeMap<String, Value>,
    /// Chosen by the caller to make a repeated start find the run it made (a schedule's fire,
    /// a tool call resumed); new when `None`.
    pub id: Option<ExecutionId>,
}

/// The file name a stored flow's problems are reported under.
pub fn file_of(name: &str) -> String {
    format!("{name}.flow.yaml")
}

impl Runner {
    /// Checks `source` and saves it as the next version of the flow it names (nothing changes
    /// when the newest version has the same text).
    pub async fn save(
        &self,
        tenant: TenantId,
        source: &str,
        file: &str,
    ) -> Result<SavedFlow, RunError> {
        let flow = crate::parse(source, Path::new(file))?;
        if RESERVED_NAMES.contains(&flow.name.as_str()) {
            return Err(RunError::ReservedName(flow.name));
        }
        Ok(StoredFlows::of(self.store(), tenant).save(&flow.name, source).await?)
    }

    /// Starts a run of a stored flow, pinned to the version asked (the newest by default).
    pub async fn start_stored(
        &self,
        tenant: &Tenant,
        start: StartStored,
    ) -> Result<ExecutionRow, RunError> {
        let stored =
            StoredFlows::of(self.store(), tenant.id).get(&start.name, start.version).await?;
        let run = StartRun {
            source: stored.source,
            file: file_of(&stored.name),
            inputs: start.inputs,
            id: start.id,
            version: Some(stored.version),
            retry_of: None,
        };
        self.start(tenant, run).await
    }

    /// Runs an ended run again: the same text (so the same version) and inputs, as a new run
    /// that names the one it repeats.
    pub async fn retry(&self, tenant: &Tenant, id: ExecutionId) -> Result<ExecutionRow, RunError> {
        let row = self.get(tenant.id, id).await?;
        if !row.status.is_final() {
            return Err(RunError::UnderWay { id, status: row.status });
        }
        let input = RunInput::of(&row)?;
        let run = StartRun {
            source: input.source,
            file: input.file,
            inputs: input.inputs,
            id: None,
            version: input.version,
            retry_of: Some(id),
        };
        self.start(tenant, run).await
    }
}
