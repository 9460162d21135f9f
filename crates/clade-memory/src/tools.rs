//! The agents' own memory tools: `memory.save`, `memory.recall`, `memory.forget` and
//! `memory.link`. Each acts for the calling agent only (tenant and agent from the call, never
//! from the arguments) and within its session's isolation key: an agent serving many people
//! recalls for each only what is global or theirs, and saves only into theirs. Policy decides
//! each call like any tool's, and the tool path audits it; the store audits every change too.
//!
//! Memory shared between a tenant's agents lives in named pools: `shared.remember` writes to
//! one and `shared.recall` searches one, each allowed only by a grant naming the pool (the
//! tool's resource), like the shared folders' `shared.read` and `shared.write`. A pool's items
//! are held under an owner of their own, derived from the tenant and the pool's name (see
//! [`pool_owner`]), so no agent's own memory tools reach them and no tenant names another's.

use std::sync::Arc;

use clade_core::{LinkKind, MemoryId, MemoryKind};
use clade_store::{MemoryFilter, NewMemory, Provenance, Store, TenantStore};
use clade_tools::{CallContext, Caller, EffectClass, Error, Registry, ToolResult, TypedTool};
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Memory, Outcome, Recalled, kinds_list};

/// Registers the four tools, acting through `store` (audited as the agent's memory tools).
pub fn register(registry: &mut Registry, store: Store, memory: Arc<Memory>) {
    let store = store.acting_as("agent (memory tools)");
    let tools = Tools { store, memory };
    registry.register(Arc::new(SaveTool(tools.clone())));
    registry.register(Arc::new(RecallTool(tools.clone())));
    registry.register(Arc::new(ForgetTool(tools.clone())));
    registry.register(Arc::new(LinkTool(tools.clone())));
    registry.register(Arc::new(SharedRemember(tools.clone())));
    registry.register(Arc::new(SharedRecall(tools)));
}

#[derive(Clone)]
struct Tools {
    store: Store,
    memory: Arc<Memory>,
}

impl Tools {
    /// The items of `owner` (an agent, or a shared pool) most relevant to `query`, marked as
    /// used.
    async fn recall(
        &self,
        store: &TenantStore,
        owner: clade_core::AgentId,
        filter: &MemoryFilter,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Recalled>, Error> {
        let hits =
            self.memory.recall(store, owner, filter, query, limit).await.map_err(Error::relied)?;
        let used = hits.iter().map(|h| h.item.id).collect();
        if let Err(err) = store.memories().touch(owner, used).await {
            tracing::debug!(error = %err, "recalled items not marked as used");
        }
        Ok(hits)
    }

    /// The caller's tenant store and isolation key (`None`: the agent's global memory).
    async fn scope(&self, caller: &Caller) -> Result<(TenantStore, Option<String>), Error> {
        let store = self.store.tenant_scope(caller.tenant);
        let key = match caller.session {
            Some(session) => {
                let row = store.sessions().get(session).await.map_err(Error::relied)?;
                self.memory.isolation_key(&row.source)
            }
            None => None,
        };
        Ok((store, key))
    }
}

fn kind_of(text: &str) -> Result<MemoryKind, Error> {
    MemoryKind::parse(text)
        .ok_or_else(|| Error::Failed(format!("unknown kind {text:?}: use one of {}", kinds_list())))
}

fn id_of(text: &str) -> Result<MemoryId, Error> {
    text.parse().map_err(|_| {
        Error::Failed(format!("{text:?} is not a memory id: memory.recall gives them"))
    })
}

fn describe(hit: &Recalled) -> Value {
    let item = &hit.item;
    json!({
        "id": item.id.to_string(),
        "kind": item.kind.as_str(),
        "content": item.content,
        "importance": item.importance,
        "untrusted": item.untrusted,
        "updated_at": item.updated_at.to_string(),
        "why": hit.reasons.iter().map(crate::Reason::describe).collect::<Vec<_>>(),
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveArgs {
    /// What to remember, in one self-contained sentence or a few (at most 4 KiB).
    pub content: String,
    /// fact, preference, decision, identity, event, observation, goal or todo (default fact).
    #[serde(default)]
    pub kind: Option<String>,
    /// How much it matters, 0 to 1 (default 0.5).
    #[serde(default)]
    pub importance: Option<f64>,
    /// How sure you are of it, 0 to 1 (default 0.8).
    #[serde(default)]
    pub confidence: Option<f64>,
    /// The tool whose output this came from, if any: it is then kept as unverified, quoted
    /// data.
    #[serde(default)]
    pub from_tool: Option<String>,
}

pub struct SaveTool(Tools);

impl TypedTool for SaveTool {
    type Args = SaveArgs;
    const NAME: &'static str = "memory.save";
    const DESCRIPTION: &'static str = "Remember something for later conversations: a fact, a preference, a decision, who someone is, an event, an observation, a goal or a todo. Saving what you already remember updates it instead of adding a copy.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    const RESOURCE_ARGUMENT: Option<&'static str> = Some("kind");
    fn resource(&self, args: &SaveArgs) -> Result<String, Error> {
        Ok(args.kind.clone().unwrap_or_else(|| MemoryKind::Fact.as_str().to_owned()))
    }
    fn run<'a>(&'a self, args: SaveArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let kind = kind_of(args.kind.as_deref().unwrap_or(MemoryKind::Fact.as_str()))?;
            let (store, key) = self.0.scope(&caller).await?;
            let new = NewMemory {
                agent: caller.agent,
                scope: key.unwrap_or_default(),
                kind,
                content: args.content,
                importance: args.importance.unwrap_or(0.5),
                confidence: args.confidence.unwrap_or(0.8),
                provenance: Provenance {
                    session: caller.session,
                    turn: caller.turn,
                    tool: args.from_tool.clone(),
                    by: "agent".into(),
                },
                untrusted: args.from_tool.is_some(),
                embedding: None,
            };
            let saved = self.0.memory.save(&store, new).await.map_err(Error::relied)?;
            let said = match saved.outcome {
                Outcome::Created => "saved".to_owned(),
                Outcome::Merged => "updated what you already remembered".to_owned(),
                Outcome::Linked { to } => format!("saved, linked to the similar item {to}"),
            };
            Ok(json!({ "id": saved.item.id.to_string(), "result": said }).to_string())
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// What to look for, in words.
    pub query: String,
    /// Only these kinds (default all).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// At most this many items, 1 to 20 (default 5).
    #[serde(default)]
    pub limit: Option<u32>,
}

pub struct RecallTool(Tools);

impl TypedTool for RecallTool {
    type Args = RecallArgs;
    const NAME: &'static str = "memory.recall";
    const DESCRIPTION: &'static str = "Search what you remember from earlier conversations, by words and meaning; each item comes with its id and why it matched.";
    const EFFECT: EffectClass = EffectClass::Pure;
    fn run<'a>(&'a self, args: RecallArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let kinds = args.kinds.iter().map(|k| kind_of(k)).collect::<Result<Vec<_>, _>>()?;
            let limit = args.limit.unwrap_or(5).clamp(1, 20) as usize;
            let (store, key) = self.0.scope(&caller).await?;
            let filter = MemoryFilter { scope: key, kinds, ..MemoryFilter::default() };
            let hits = self.0.recall(&store, caller.agent, &filter, &args.query, limit).await?;
            if hits.is_empty() {
                return Ok("nothing remembered matches".into());
            }
            Ok(Value::Array(hits.iter().map(describe).collect()).to_string())
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetArgs {
    /// The item's id, as memory.recall gives it.
    pub id: String,
}

pub struct ForgetTool(Tools);

impl TypedTool for ForgetTool {
    type Args = ForgetArgs;
    const NAME: &'static str = "memory.forget";
    const DESCRIPTION: &'static str =
        "Forget one remembered item for good (find its id with memory.recall).";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    fn run<'a>(&'a self, args: ForgetArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let id = id_of(&args.id)?;
            let (store, key) = self.0.scope(&caller).await?;
            // Only items the caller could recall: its isolation key's, or global ones.
            let filter = MemoryFilter { scope: key, ..MemoryFilter::default() };
            if store
                .memories()
                .by_id(caller.agent, &filter, &[id])
                .await
                .map_err(Error::relied)?
                .is_empty()
            {
                return Ok(format!("nothing remembered has id {id}: it may be forgotten already"));
            }
            store.memories().forget(caller.agent, id).await.map_err(Error::relied)?;
            Ok(format!("forgot {id}"))
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkArgs {
    pub from: String,
    pub to: String,
    /// updates, contradicts, caused_by, related_to or part_of.
    pub kind: String,
    /// How strong the link is, 0 to 1 (default 1).
    #[serde(default)]
    pub weight: Option<f64>,
}

pub struct LinkTool(Tools);

impl TypedTool for LinkTool {
    type Args = LinkArgs;
    const NAME: &'static str = "memory.link";
    const DESCRIPTION: &'static str = "Record how two remembered items relate: the first updates, contradicts, was caused by, relates to or is part of the second. Recalling one then brings the other along.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    fn run<'a>(&'a self, args: LinkArgs, ctx: &'a CallContext) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            let caller = ctx.caller()?;
            let (from, to) = (id_of(&args.from)?, id_of(&args.to)?);
            let kind = LinkKind::parse(&args.kind).ok_or_else(|| {
                let all: Vec<&str> = LinkKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown link kind {:?}: use one of {}", args.kind, all.join(", "))
            })?;
            let (store, key) = self.0.scope(&caller).await?;
            let filter = MemoryFilter { scope: key, ..MemoryFilter::default() };
            let found = store
                .memories()
                .by_id(caller.agent, &filter, &[from, to])
                .await
                .map_err(Error::relied)?;
            for id in [from, to] {
                if !found.iter().any(|row| row.id == id) {
                    return Err(Error::Failed(format!(
                        "nothing remembered has id {id}: memory.recall gives ids"
                    )));
                }
            }
            store
                .memories()
                .link(caller.agent, from, to, kind, args.weight.unwrap_or(1.0))
                .await
                .map_err(Error::relied)?;
            Ok(format!("linked {from} {kind} {to}"))
        })
    }
}

fn check_pool(name: &str) -> Result<(), Error> {
    Ok(clade_tools::check_shared_name("pool", name)?)
}

pub use clade_store::memories::pool_owner;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedRememberArgs {
    /// The shared pool's name.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub pool: String,
    /// What to keep, in one self-contained sentence or a few (at most 4 KiB).
    pub content: String,
    /// fact, preference, decision, identity, event, observation, goal or todo (default fact).
    #[serde(default)]
    pub kind: Option<String>,
    /// How much it matters, 0 to 1 (default 0.5).
    #[serde(default)]
    pub importance: Option<f64>,
    /// The tool whose output this came from, if any: it is then kept as unverified, quoted
    /// data.
    #[serde(default)]
    pub from_tool: Option<String>,
}

pub struct SharedRemember(Tools);

impl TypedTool for SharedRemember {
    type Args = SharedRememberArgs;
    const NAME: &'static str = "shared.remember";
    // Reaches beyond the calling agent's own memory: only a grant naming the pool allows it.
    const NEEDS_GRANT: bool = true;
    const DESCRIPTION: &'static str = "Keep something in a memory pool your tenant's agents share (a grant names the pools you may write), for any agent allowed to recall from it. Keeping what the pool holds already updates it.";
    const EFFECT: EffectClass = EffectClass::Idempotent;
    fn resource(&self, args: &SharedRememberArgs) -> Result<String, Error> {
        check_pool(&args.pool)?;
        Ok(args.pool.clone())
    }
    fn run<'a>(
        &'a self,
        args: SharedRememberArgs,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            check_pool(&args.pool)?;
            let caller = ctx.caller()?;
            let kind = kind_of(args.kind.as_deref().unwrap_or(MemoryKind::Fact.as_str()))?;
            let store = self.0.store.tenant_scope(caller.tenant);
            let new = NewMemory {
                agent: pool_owner(caller.tenant, &args.pool),
                scope: String::new(),
                kind,
                content: args.content,
                importance: args.importance.unwrap_or(0.5),
                confidence: 0.8,
                provenance: Provenance {
                    session: caller.session,
                    turn: caller.turn,
                    tool: args.from_tool.clone(),
                    // Who kept it, for whoever recalls it.
                    by: format!("agent {}", caller.agent),
                },
                untrusted: args.from_tool.is_some(),
                embedding: None,
            };
            let saved = self.0.memory.save(&store, new).await.map_err(Error::relied)?;
            let said = match saved.outcome {
                Outcome::Created => "kept",
                Outcome::Merged => "updated what the pool held already",
                Outcome::Linked { .. } => "kept, linked to a similar item",
            };
            Ok(json!({ "id": saved.item.id.to_string(), "pool": args.pool, "result": said })
                .to_string())
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedRecallArgs {
    /// The shared pool's name.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub pool: String,
    /// What to look for, in words.
    pub query: String,
    /// Only these kinds (default all).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// At most this many items, 1 to 20 (default 5).
    #[serde(default)]
    pub limit: Option<u32>,
}

pub struct SharedRecall(Tools);

impl TypedTool for SharedRecall {
    type Args = SharedRecallArgs;
    const NAME: &'static str = "shared.recall";
    // Reaches beyond the calling agent's own memory: only a grant naming the pool allows it.
    const NEEDS_GRANT: bool = true;
    const DESCRIPTION: &'static str = "Search a memory pool your tenant's agents share (a grant names the pools you may read), by words and meaning; each item says which agent kept it.";
    const EFFECT: EffectClass = EffectClass::Pure;
    fn resource(&self, args: &SharedRecallArgs) -> Result<String, Error> {
        check_pool(&args.pool)?;
        Ok(args.pool.clone())
    }
    fn run<'a>(
        &'a self,
        args: SharedRecallArgs,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, ToolResult> {
        Box::pin(async move {
            check_pool(&args.pool)?;
            let caller = ctx.caller()?;
            let kinds = args.kinds.iter().map(|k| kind_of(k)).collect::<Result<Vec<_>, _>>()?;
            let limit = args.limit.unwrap_or(5).clamp(1, 20) as usize;
            let store = self.0.store.tenant_scope(caller.tenant);
            let owner = pool_owner(caller.tenant, &args.pool);
            let filter = MemoryFilter { kinds, ..MemoryFilter::default() };
            let hits = self.0.recall(&store, owner, &filter, &args.query, limit).await?;
            if hits.is_empty() {
                return Ok(format!("nothing in pool {} matches", args.pool));
            }
            let items: Vec<Value> = hits
                .iter()
                .map(|hit| {
                    let mut item = describe(hit);
                    item["kept_by"] = json!(hit.item.provenance.by);
                    item
                })
                .collect();
            Ok(Value::Array(items).to_string())
        })
    }
}
