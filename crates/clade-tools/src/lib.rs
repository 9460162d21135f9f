//! Tools agents call: the [`Tool`] trait, side-effect classes, a [`Registry`], and built-ins.
//!
//! Owns what a tool is and how it is called. Permissions, approvals, the sandbox, MCP and the
//! audit log will live here too (see the Tools issue); so far there are only built-ins that do
//! not touch the host beyond one operator-configured test ledger file. It knows nothing of
//! sessions, journals or storage: the runtime decides whether a call may run (it journals
//! intent first, and never re-runs an `AtMostOnce` call that may have happened).
//!
//! Start at [`Tool`].

pub mod builtin;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

/// What happens if a call is repeated — decides what crash recovery may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectClass {
    /// No side effect: safe to run again.
    Pure,
    /// Side effects keyed by the idempotency key it receives: repeating with the same key has
    /// no further effect.
    Idempotent,
    /// Must not run twice: after a crash between start and result, it is reported to the model
    /// as interrupted instead of being re-run. The default.
    AtMostOnce,
}

impl EffectClass {
    pub fn as_str(self) -> &'static str {
        match self {
            EffectClass::Pure => "pure",
            EffectClass::Idempotent => "idempotent",
            EffectClass::AtMostOnce => "at_most_once",
        }
    }
}

/// What a call knows about where it runs.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// Stable across retries of the same call: derived from tenant, session, turn and call id.
    pub idempotency_key: String,
    pub call_id: String,
}

/// A tool's result: text for the model, or an error text for the model.
pub type ToolResult = Result<String, String>;

/// A function an agent may call.
pub trait Tool: Send + Sync {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// JSON Schema of the arguments object.
    fn input_schema(&self) -> Value;
    fn effect(&self) -> EffectClass {
        EffectClass::AtMostOnce
    }
    fn call<'a>(&'a self, args: Value, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult>;
}

/// The tools available to an agent, by name.
#[derive(Clone, Default)]
pub struct Registry {
    tools: BTreeMap<String, Arc<dyn Tool>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.name().to_owned(), tool);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.values()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}
