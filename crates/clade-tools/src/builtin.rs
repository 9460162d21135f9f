//! Built-in tools that touch nothing on the host: `time.now`, `echo`; and the test ledger
//! (`ledger.append`, `ledger.append_idempotent`), which appends to one operator-configured file
//! so crash tests can count side effects independently of Clade's own records.

use std::io::Write;
use std::path::PathBuf;

use clade_core::{Clock, SystemClock};
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::{CallContext, EffectClass, Tool, ToolResult};

pub struct TimeNow;

impl Tool for TimeNow {
    fn name(&self) -> &str {
        "time.now"
    }
    fn description(&self) -> &str {
        "The current date and time in UTC (RFC 3339)."
    }
    fn input_schema(&self) -> Value {
        json!({ "type": "object", "properties": {}, "additionalProperties": false })
    }
    fn effect(&self) -> EffectClass {
        EffectClass::Pure
    }
    fn call<'a>(&'a self, _args: Value, _ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async { Ok(SystemClock.now().to_string()) })
    }
}

pub struct Echo;

impl Tool for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn description(&self) -> &str {
        "Returns its `text` argument unchanged."
    }
    fn input_schema(&self) -> Value {
        json!({ "type": "object", "properties": { "text": { "type": "string" } }, "required": ["text"] })
    }
    fn effect(&self) -> EffectClass {
        EffectClass::Pure
    }
    fn call<'a>(&'a self, args: Value, _ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            args["text"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "echo needs a string argument `text`".to_owned())
        })
    }
}

/// Appends `<effect key> <call id> <pid> <note>` lines to a file with `O_APPEND` and fsync.
pub struct Ledger {
    path: PathBuf,
    idempotent: bool,
}

impl Ledger {
    /// The at-most-once variant.
    pub fn at_most_once(path: PathBuf) -> Self {
        Self { path, idempotent: false }
    }

    /// The idempotent variant: the receiver (the file's reader) drops repeated keys.
    pub fn idempotent(path: PathBuf) -> Self {
        Self { path, idempotent: true }
    }
}

impl Tool for Ledger {
    fn name(&self) -> &str {
        if self.idempotent { "ledger.append_idempotent" } else { "ledger.append" }
    }
    fn description(&self) -> &str {
        "Test harness: appends a line to the side-effect ledger."
    }
    fn input_schema(&self) -> Value {
        json!({ "type": "object", "properties": { "note": { "type": "string" } } })
    }
    fn effect(&self) -> EffectClass {
        if self.idempotent { EffectClass::Idempotent } else { EffectClass::AtMostOnce }
    }
    fn call<'a>(&'a self, args: Value, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let note = args["note"].as_str().unwrap_or("-").replace(char::is_whitespace, "_");
            let line = format!(
                "{} {} {} {} {}\n",
                self.name(),
                ctx.idempotency_key,
                ctx.call_id,
                std::process::id(),
                note
            );
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || {
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                file.write_all(line.as_bytes())?;
                file.sync_data()
            })
            .await
            .map_err(|e| format!("ledger task failed: {e}"))?
            .map_err(|e| format!("cannot append to the ledger: {e}"))?;
            Ok("appended".to_owned())
        })
    }
}
