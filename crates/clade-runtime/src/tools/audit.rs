//! The tenant's audit chain: every decision, approval, result and grant change, with arguments hashed and secrets redacted.

use clade_core::{AgentId, AuditKind, TenantId};
use clade_store::AuditEntry;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::*;

/// The hash an approval binds: the tool and its exact arguments.
pub(super) fn arguments_hash(tool: &str, args: &Value) -> String {
    let digest = Sha256::new()
        .chain_update(tool.as_bytes())
        .chain_update([0])
        .chain_update(args.to_string().as_bytes())
        .finalize();
    hex::encode(digest)
}

/// Arguments with credential-looking fields blanked, for the audit log.
pub(super) fn redact(args: &Value) -> Value {
    const SENSITIVE: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "token",
        "authorization",
        "api_key",
        "apikey",
        "cookie",
        "credential",
    ];
    match args {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    if SENSITIVE.iter().any(|s| lower.contains(s)) {
                        (k.clone(), Value::String("[redacted]".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// A call refused because its decision could not be put on record: it must not run.
pub(super) fn unrecorded(error: clade_store::Error) -> clade_tools::Error {
    clade_tools::Error::internal(
        "not run: the decision could not be recorded in the audit log",
        error,
    )
}

impl ToolRunner {
    #[allow(clippy::too_many_arguments)]
    /// Appends a record whose loss stops nothing (a refusal: the call does not run anyway);
    /// a failure is logged.
    pub(super) async fn write_entry(&self, entry: AuditEntry) {
        let kind = entry.kind;
        if let Err(err) = self.store.audit(entry).await {
            tracing::error!(error = %err, %kind, "cannot append to the audit log");
        }
    }

    pub(super) async fn write_audit(
        &self,
        tenant: TenantId,
        agent: Option<AgentId>,
        kind: AuditKind,
        tool: Option<&str>,
        decision: Option<&str>,
        detail: Value,
    ) {
        let entry = AuditEntry {
            tenant,
            agent,
            kind,
            tool: tool.map(str::to_owned),
            decision: decision.map(str::to_owned),
            detail: detail.to_string(),
        };
        if let Err(err) = self.store.audit(entry).await {
            tracing::error!(error = %err, %kind, "cannot append to the audit log");
        }
    }
}
