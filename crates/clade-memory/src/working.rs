//! Working memory: the agent's scratchpad within one session (`scratchpad.set`,
//! `scratchpad.clear`, `scratchpad.read`). Its values are shown in every turn's context, so an
//! agent carries a plan or a state from turn to turn without repeating it; each write is a
//! version recorded with the turn that wrote it (see `clade_store::working`). The session is
//! the calling turn's, never an argument, so an agent reaches only the pad of the conversation
//! it is in.

use std::sync::Arc;

use clade_store::{Store, WorkingEntry};
use clade_tools::{CallContext, Caller, EffectClass, Error, Registry, ToolResult, TypedTool};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// Registers the three tools, acting through `store` (as the agent's scratchpad tools).
pub fn register(registry: &mut Registry, store: Store) {
    let store = store.acting_as("agent (scratchpad tools)");
    registry.register(Arc::new(SetTool(store.clone())));
    registry.register(Arc::new(ClearTool(store.clone())));
    registry.register(Arc::new(ReadTool(store)));
}

/// What a turn's context shows of a session's working memory: a line per value, by name.
pub fn render(entries: &[WorkingEntry]) -> String {
    let mut text = String::from(
        "Your working memory in this conversation (scratchpad.set and scratchpad.clear change it):",
    );
    for entry in entries {
        if let Some(value) = &entry.value {
            text.push_str(&format!("\n- {}: {}", entry.name, value.replace('\n', "\n  ")));
        }
    }
    text
}

fn session_of(caller: &Caller) -> Result<clade_core::SessionId, Error> {
    caller.session.ok_or_else(|| {
        Error::failed("working memory belongs to a conversation, and this call has none")
    })
}

fn describe(entry: &WorkingEntry) -> Value {
    json!({
        "name": entry.name,
        "value": entry.value,
        "version": entry.version,
        "turn": entry.turn.map(|t| t.to_string()),
        "written_at": entry.written_at.to_string(),
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetArgs {
    /// A short name: 1 to 64 letters, digits, '_', '-' or '.' (e.g. "plan", "step").
    pub name: String,
    /// The value, as text of at most 2 KiB; it replaces what the name held.
    pub value: String,
}

pub struct SetTool(Store);

impl TypedTool for SetTool {
    type Args = SetArgs;
    const NAME: &'static str = "scratchpad.set";
    const DESCRIPTION: &'static str = "Keep a small named value (a plan, the current step, a running total) in this conversation's working memory: it is shown to you in every later turn until you clear it. At most 32 names of 2 KiB each.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("name");
    fn resource(&self, args: &SetArgs) -> Result<String, Error> {
        Ok(args.name.clone())
    }
    fn run<'a>(&'a self, args: SetArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let session = session_of(&caller)?;
            let entry = self
                .0
                .tenant_scope(caller.tenant)
                .working()
                .write(session, &args.name, Some(args.value), caller.turn)
                .await
                .map_err(Error::relied)?;
            Ok(json!({ "result": "kept", "name": entry.name, "version": entry.version })
                .to_string())
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearArgs {
    /// The name to clear.
    pub name: String,
}

pub struct ClearTool(Store);

impl TypedTool for ClearTool {
    type Args = ClearArgs;
    const NAME: &'static str = "scratchpad.clear";
    const DESCRIPTION: &'static str =
        "Remove a named value from this conversation's working memory once you no longer need it.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("name");
    fn resource(&self, args: &ClearArgs) -> Result<String, Error> {
        Ok(args.name.clone())
    }
    fn run<'a>(&'a self, args: ClearArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let session = session_of(&caller)?;
            let entry = self
                .0
                .tenant_scope(caller.tenant)
                .working()
                .write(session, &args.name, None, caller.turn)
                .await
                .map_err(Error::relied)?;
            let result = if entry.version == 0 { "it held nothing" } else { "cleared" };
            Ok(json!({ "result": result, "name": entry.name }).to_string())
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadArgs {
    /// One name, to see its earlier versions too; omit it for every value held now.
    #[serde(default)]
    pub name: Option<String>,
}

pub struct ReadTool(Store);

impl TypedTool for ReadTool {
    type Args = ReadArgs;
    const NAME: &'static str = "scratchpad.read";
    const DESCRIPTION: &'static str = "Read this conversation's working memory: every value held now, or one name's versions (newest first, with the turn that wrote each).";
    const EFFECT: EffectClass = EffectClass::Pure;
    fn run<'a>(&'a self, args: ReadArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let session = session_of(&caller)?;
            let store = self.0.tenant_scope(caller.tenant);
            let entries = match &args.name {
                Some(name) => store.working().history(session, name).await,
                None => store.working().list(session).await,
            }
            .map_err(Error::relied)?;
            Ok(json!({ "items": entries.iter().map(describe).collect::<Vec<_>>() }).to_string())
        })
    }
}
