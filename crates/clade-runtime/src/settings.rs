//! Agents' settings as an agent reads them: the environment variable `clade.yaml` names for a
//! key (every agent's value while it is set) over the value stored for the agent over the
//! declared default. The [`Catalog`] holds the declarations (read from the configuration, with
//! the environment's values taken at load, so nothing here reads the process environment) and
//! is swapped on reload. The tools `settings.get`, `settings.set` and `settings.unset` act on the
//! calling agent's own settings only.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use clade_core::{AgentId, TenantId};
use clade_store::{SettingRow, Store};
use clade_tools::{CallContext, EffectClass, Error, Registry, ToolResult, TypedTool};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// One declared setting, with the value its environment variable had at load.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    pub description: String,
    pub default: Option<Value>,
    /// The variable's name and, if it was set, its value.
    pub env: Option<(String, Option<Value>)>,
    pub agent_writable: bool,
}

/// Where the value an agent reads comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// This environment variable's.
    Environment(String),
    Stored,
    Default,
}

impl Source {
    /// The wire's word for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Environment(_) => "environment",
            Source::Stored => "stored",
            Source::Default => "default",
        }
    }
}

/// One setting as an agent reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub key: String,
    pub value: Value,
    pub source: Source,
    pub description: String,
    pub agent_writable: bool,
    /// The stored row, whether or not it is what is read.
    pub stored: Option<SettingRow>,
}

/// The declared settings.
#[derive(Debug, Default)]
pub struct Catalog {
    declared: RwLock<Arc<BTreeMap<String, Declared>>>,
}

/// An environment variable's text as a setting's value: JSON if it parses, else the text.
pub fn env_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

impl Catalog {
    pub fn new(declared: BTreeMap<String, Declared>) -> Self {
        Self { declared: RwLock::new(Arc::new(declared)) }
    }

    /// Replaces the declarations whole (a new configuration revision).
    pub fn reload(&self, declared: BTreeMap<String, Declared>) {
        *self.declared.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(declared);
    }

    fn declared(&self) -> Arc<BTreeMap<String, Declared>> {
        self.declared.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether agents may change `key` themselves (an undeclared key: yes).
    pub fn agent_writable(&self, key: &str) -> bool {
        self.declared().get(key).is_none_or(|d| d.agent_writable)
    }

    /// The environment variable that overrides `key` now, if one is set.
    pub fn overridden_by(&self, key: &str) -> Option<String> {
        match self.declared().get(key)?.env.as_ref()? {
            (var, Some(_)) => Some(var.clone()),
            (_, None) => None,
        }
    }

    /// Every setting of the agent: the declared ones (with a value from somewhere or none) and
    /// the stored ones, by key.
    pub fn resolve(&self, stored: Vec<SettingRow>) -> Vec<Resolved> {
        let declared = self.declared();
        let mut stored: BTreeMap<String, SettingRow> =
            stored.into_iter().map(|row| (row.key.clone(), row)).collect();
        let mut out = Vec::new();
        for (key, declaration) in declared.iter() {
            let row = stored.remove(key);
            let from_env = declaration.env.as_ref().and_then(|(var, value)| {
                value.clone().map(|value| (value, Source::Environment(var.clone())))
            });
            let (value, source) = match (from_env, &row, &declaration.default) {
                (Some(found), _, _) => found,
                (None, Some(row), _) => (row.value.clone(), Source::Stored),
                (None, None, Some(default)) => (default.clone(), Source::Default),
                (None, None, None) => (Value::Null, Source::Default),
            };
            out.push(Resolved {
                key: key.clone(),
                value,
                source,
                description: declaration.description.clone(),
                agent_writable: declaration.agent_writable,
                stored: row,
            });
        }
        out.extend(stored.into_values().map(|row| Resolved {
            key: row.key.clone(),
            value: row.value.clone(),
            source: Source::Stored,
            description: String::new(),
            agent_writable: true,
            stored: Some(row),
        }));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The agent's settings read from `store` and resolved.
    pub async fn read(
        &self,
        store: &Store,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<Vec<Resolved>, clade_store::Error> {
        Ok(self.resolve(store.settings(tenant).list(agent).await?))
    }
}

/// Registers `settings.get`, `settings.set` and `settings.unset`, acting on `store`.
pub fn register(registry: &mut Registry, store: Store, catalog: Arc<Catalog>) {
    let store = store.acting_as("agent (settings tools)");
    registry.register(Arc::new(SettingsGet(store.clone(), catalog.clone())));
    registry.register(Arc::new(SettingsSet(store.clone(), catalog.clone())));
    registry.register(Arc::new(SettingsUnset(store, catalog)));
}

fn describe(setting: &Resolved) -> Value {
    serde_json::json!({
        "key": setting.key,
        "value": setting.value,
        "source": setting.source.as_str(),
        "description": setting.description,
        "agent_writable": setting.agent_writable,
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetArgs {
    /// One key; without it, every setting.
    #[serde(default)]
    pub key: Option<String>,
}

pub struct SettingsGet(Store, Arc<Catalog>);

impl TypedTool for SettingsGet {
    type Args = GetArgs;
    const NAME: &'static str = "settings.get";
    const DESCRIPTION: &'static str = "Your settings: each key's value and where it comes from (the environment, your stored value, or the default), with what it is for.";
    const EFFECT: EffectClass = EffectClass::Pure;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("key");
    fn resource(&self, args: &GetArgs) -> Result<String, Error> {
        Ok(args.key.clone().unwrap_or_default())
    }
    fn run<'a>(&'a self, args: GetArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let all =
                self.1.read(&self.0, caller.tenant, caller.agent).await.map_err(Error::relied)?;
            match args.key {
                None => Ok(Value::Array(all.iter().map(describe).collect()).to_string()),
                Some(key) => match all.iter().find(|s| s.key == key) {
                    Some(setting) => Ok(describe(setting).to_string()),
                    None => Err(Error::Failed(format!(
                        "you have no setting {key:?}: settings.get lists yours"
                    ))),
                },
            }
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetArgs {
    /// 1-64 of a-z, 0-9, ., _ and -, starting with a letter.
    pub key: String,
    /// Any JSON value (at most 4 KiB as JSON).
    pub value: Value,
}

pub struct SettingsSet(Store, Arc<Catalog>);

impl TypedTool for SettingsSet {
    type Args = SetArgs;
    const NAME: &'static str = "settings.set";
    const DESCRIPTION: &'static str =
        "Store a value for one of your settings (kept across conversations and restarts).";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("key");
    fn resource(&self, args: &SetArgs) -> Result<String, Error> {
        Ok(args.key.clone())
    }
    fn run<'a>(&'a self, args: SetArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            if !self.1.agent_writable(&args.key) {
                return Err(Error::Failed(format!("{} is set by the operator only", args.key)));
            }
            self.0
                .settings(caller.tenant)
                .set(caller.agent, &args.key, args.value)
                .await
                .map_err(Error::relied)?;
            Ok(match self.1.overridden_by(&args.key) {
                Some(var) => format!(
                    "stored {}, but the environment variable {var} overrides it: you read that value while it is set",
                    args.key
                ),
                None => format!("stored {}", args.key),
            })
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsetArgs {
    pub key: String,
}

pub struct SettingsUnset(Store, Arc<Catalog>);

impl TypedTool for SettingsUnset {
    type Args = UnsetArgs;
    const NAME: &'static str = "settings.unset";
    const DESCRIPTION: &'static str =
        "Remove your stored value of a setting (you then read its default, if it has one).";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("key");
    fn resource(&self, args: &UnsetArgs) -> Result<String, Error> {
        Ok(args.key.clone())
    }
    fn run<'a>(&'a self, args: UnsetArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            if !self.1.agent_writable(&args.key) {
                return Err(Error::Failed(format!("{} is set by the operator only", args.key)));
            }
            match self.0.settings(caller.tenant).unset(caller.agent, &args.key).await {
                Ok(()) => Ok(format!("removed {}", args.key)),
                // A repeat of a removal that happened: the same state, said plainly.
                Err(clade_store::Error::SettingNotFound(_)) => {
                    Ok(format!("{} has no stored value", args.key))
                }
                Err(e) => Err(Error::relied(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: Value) -> SettingRow {
        SettingRow {
            key: key.into(),
            value,
            updated_at: clade_core::Timestamp::from_millis(0),
            updated_by: "t".into(),
        }
    }

    #[test]
    fn the_environment_wins_over_the_stored_value_over_the_default() {
        let declared = |env: Option<Value>| Declared {
            description: "tone".into(),
            default: Some(Value::from("plain")),
            env: Some(("TONE".into(), env)),
            agent_writable: false,
        };
        let catalog = Catalog::new(BTreeMap::from([("tone".into(), declared(None))]));
        let read = |stored: Vec<SettingRow>| catalog.resolve(stored);
        assert_eq!(read(vec![])[0].value, "plain");
        assert_eq!(read(vec![])[0].source, Source::Default);
        assert_eq!(read(vec![row("tone", "dry".into())])[0].source, Source::Stored);
        assert!(!catalog.agent_writable("tone") && catalog.agent_writable("other"));
        catalog.reload(BTreeMap::from([("tone".into(), declared(Some(env_value("\"warm\""))))]));
        let read = catalog.resolve(vec![row("tone", "dry".into()), row("extra", 1.into())]);
        assert_eq!(read.len(), 2);
        assert_eq!((read[1].key.as_str(), &read[1].value), ("tone", &Value::from("warm")));
        assert_eq!(read[1].source, Source::Environment("TONE".into()));
        assert_eq!(read[1].stored.as_ref().map(|r| &r.value), Some(&Value::from("dry")));
        assert_eq!((read[0].key.as_str(), read[0].source.as_str()), ("extra", "stored"));
        assert_eq!(catalog.overridden_by("tone").as_deref(), Some("TONE"));
        assert_eq!(env_value("12"), Value::from(12));
        assert_eq!(env_value("not json"), Value::from("not json"));
    }
}
