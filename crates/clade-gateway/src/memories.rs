//! `/v1/agents/{handle}/memories`: an agent's long-term memory, listed by isolation key,
//! searched as the agent recalls (hybrid, with why each item matched), added, linked and
//! forgotten by the tenant's operators, each change audited without the content. Items are
//! read through the caller's [`clade_store::TenantStore`] and the agent's id, so another
//! tenant's or agent's item reads as missing.

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use clade_core::{MemoryId, MemoryKind, Timestamp};
use clade_memory::{Memory, Outcome};
use clade_store::{MemoryFilter, MemoryRow, NewMemory, Provenance};

use crate::AppState;
use crate::agents::{JsonBody, checked_limit, query_rejection};
use clade_runtime::ingest::Miner;

use crate::api::{
    CreateMemoryParams, ErrorBody, LinkMemoryParams, MAX_MEMORY_BATCH, MemoriesQuery,
    MemoryLinkResponse, MemoryListResponse, MemoryProvenance, MemoryResponse, MemorySearchResponse,
    MemoryUpkeepResponse, MineTurnParams, MinedMemory, MinedTurnResponse, MinerKind,
    PrunedMemoriesQuery, RecalledMemory, SavedMemoriesResponse, SavedMemoryResponse,
    SavedMemoryResult, SearchMemoriesParams, SessionMemoriesParams, SessionMemoryParams,
};
use crate::auth::Caller;
use crate::error::{ApiError, Code};
use crate::jobs::scope;

pub(crate) fn memory_response(row: MemoryRow) -> MemoryResponse {
    MemoryResponse {
        id: row.id.to_string(),
        kind: row.kind.into(),
        content: row.content,
        scope: row.scope,
        importance: row.importance,
        confidence: row.confidence,
        untrusted: row.untrusted,
        strength: row.strength,
        provenance: MemoryProvenance {
            session: row.provenance.session.map(|s| s.to_string()),
            turn: row.provenance.turn.map(|t| t.to_string()),
            tool: row.provenance.tool,
            by: row.provenance.by,
        },
        embedding_model: row.embedding_model,
        created_at: row.created_at.as_millis(),
        updated_at: row.updated_at.as_millis(),
        accessed_at: row.accessed_at.as_millis(),
        pruned_at: row.pruned.as_ref().map(|p| p.at.as_millis()),
        pruned_why: row.pruned.map(|p| p.why),
    }
}

fn memory_id(handle: &str, text: &str) -> Result<MemoryId, ApiError> {
    text.parse().map_err(|_| not_found(handle, text))
}

fn not_found(handle: &str, id: &str) -> ApiError {
    ApiError::new(
        Code::MemoryNotFound,
        format!(
            "agent {handle} has no memory {id:?}: list its memories with GET /v1/agents/{handle}/memories"
        ),
    )
}

fn refusal(handle: &str, err: clade_memory::Error) -> ApiError {
    match err {
        clade_memory::Error::Store(clade_store::Error::InvalidMemory(message)) => {
            ApiError::new(Code::InvalidMemory, message)
        }
        clade_memory::Error::Store(clade_store::Error::MemoryNotFound(id)) => {
            not_found(handle, &id)
        }
        clade_memory::Error::Store(other) => other.into(),
        // Exports and imports are the CLI's: no route reaches these.
        other @ (clade_memory::Error::Archive { .. }
        | clade_memory::Error::BadArchive(_)
        | clade_memory::Error::Io(_)) => ApiError::new(Code::InvalidMemory, other.to_string()),
        other @ clade_memory::Error::Search(_) => ApiError::internal(other),
    }
}

/// The memory service, or the answer that agents have none.
fn memory_of(state: &AppState) -> Result<std::sync::Arc<Memory>, ApiError> {
    state.engine.memory().ok_or_else(|| {
        ApiError::new(
            Code::MemoryOff,
            "agents have no memory in this deployment (`memory.enabled: false` in clade.yaml)",
        )
    })
}

/// A page's cursor: the last item's update time and id.
fn cursor_of(text: &str) -> Result<(Timestamp, MemoryId), ApiError> {
    let (millis, id) = clade_store::turns::parse_cursor(text).ok_or_else(|| {
        ApiError::new(Code::InvalidRequest, format!("cursor {text:?} is not one a page gave"))
    })?;
    Ok((Timestamp::from_millis(millis), MemoryId::from_bytes(id)))
}

fn cursor_after(row: &MemoryRow) -> String {
    clade_store::turns::encode_cursor(row.updated_at.as_millis(), row.id.as_bytes())
}

fn checked_scope(scope: Option<String>) -> Result<Option<String>, ApiError> {
    let scope = scope.filter(|s| !s.is_empty());
    if let Some(key) = &scope {
        clade_store::memories::check_scope(key)
            .map_err(|e| ApiError::new(Code::InvalidRequest, e.to_string()))?;
    }
    Ok(scope)
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
    query: Result<Query<MemoriesQuery>, QueryRejection>,
) -> Result<axum::Json<MemoryListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = checked_limit(query.limit)?;
    let before = query.cursor.as_deref().map(cursor_of).transpose()?;
    let key = checked_scope(query.scope)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let filter = MemoryFilter {
        exclude_global: key.is_some(),
        scope: key,
        kinds: query.kind.map(|k| vec![k.0]).unwrap_or_default(),
        since: None,
    };
    let rows = store.memories().list(agent.id, &filter, before, limit + 1).await?;
    let more = rows.len() > limit as usize;
    let rows: Vec<MemoryRow> = rows.into_iter().take(limit as usize).collect();
    let next_cursor = if more { rows.last().map(cursor_after) } else { None };
    Ok(axum::Json(MemoryListResponse {
        items: rows.into_iter().map(memory_response).collect(),
        next_cursor,
    }))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, id)): Path<(String, String)>,
) -> Result<axum::Json<MemoryResponse>, ApiError> {
    let id = memory_id(&handle, &id)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let row = store
        .memories()
        .get(agent.id, id)
        .await
        .map_err(|e| refusal(&handle, clade_memory::Error::Store(e)))?;
    Ok(axum::Json(memory_response(row)))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
    JsonBody(params): JsonBody<CreateMemoryParams>,
) -> Result<(StatusCode, axum::Json<SavedMemoryResponse>), ApiError> {
    let memory = memory_of(&state)?;
    let key = checked_scope(params.scope)?;
    checked_source_tool(params.source_tool.as_deref())?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let by = format!("tenant {} (api)", tenant.name);
    let new = NewMemory {
        agent: agent.id,
        scope: key.unwrap_or_default(),
        kind: params.kind.map_or(MemoryKind::Fact, |k| k.0),
        content: params.content,
        importance: params.importance.unwrap_or(0.5),
        confidence: params.confidence.unwrap_or(0.8),
        untrusted: params.source_tool.is_some(),
        provenance: Provenance { session: None, turn: None, tool: params.source_tool, by },
        embedding: None,
    };
    let saved = memory.save(&store, new).await.map_err(|e| refusal(&handle, e))?;
    Ok(saved_response(saved))
}

fn checked_source_tool(tool: Option<&str>) -> Result<(), ApiError> {
    if tool.is_some_and(|t| t.is_empty() || t.chars().count() > 128) {
        return Err(ApiError::new(Code::InvalidRequest, "source_tool: 1 to 128 characters"));
    }
    Ok(())
}

/// What a save did, as the routes answer it: 201 for a new item, 200 for a merge.
fn saved_response(saved: clade_memory::Saved) -> (StatusCode, axum::Json<SavedMemoryResponse>) {
    let (outcome, linked_to, status) = match saved.outcome {
        Outcome::Created => ("created", None, StatusCode::CREATED),
        Outcome::Merged => ("merged", None, StatusCode::OK),
        Outcome::Linked { to } => ("linked", Some(to.to_string()), StatusCode::CREATED),
    };
    (
        status,
        axum::Json(SavedMemoryResponse {
            memory: memory_response(saved.item),
            outcome: outcome.to_owned(),
            linked_to,
        }),
    )
}

/// `POST /v1/sessions/{id}/memories`: an item learnt from the session (by a miner running as a
/// process of its own). The session decides the agent, the isolation key and the provenance,
/// so a caller cannot file an item under another person's key; the turn named must be the
/// session's.
pub(crate) async fn create_in_session(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(params): JsonBody<SessionMemoryParams>,
) -> Result<(StatusCode, axum::Json<SavedMemoryResponse>), ApiError> {
    let (memory, store, mut items) = in_session(&state, &tenant, &reach, &id, vec![params]).await?;
    let new = items.pop().ok_or_else(|| ApiError::internal("one item in, none out"))?;
    let saved = memory.save(&store, new).await.map_err(|e| refusal(&id, e))?;
    Ok(saved_response(saved))
}

/// `POST /v1/sessions/{id}/memories/batch`: items learnt from the session, as
/// [`create_in_session`] takes one, saved in order with their texts embedded together
/// ([`Memory::save_all`]); each answered as that route would, and one refused holds up no
/// other.
pub(crate) async fn create_many_in_session(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(id): Path<String>,
    JsonBody(params): JsonBody<SessionMemoriesParams>,
) -> Result<axum::Json<SavedMemoriesResponse>, ApiError> {
    if params.items.is_empty() || params.items.len() > MAX_MEMORY_BATCH {
        return Err(ApiError::new(
            Code::InvalidRequest,
            format!(
                "items: 1 to {MAX_MEMORY_BATCH} a request, not {}; send the rest in another",
                params.items.len()
            ),
        ));
    }
    let (memory, store, items) = in_session(&state, &tenant, &reach, &id, params.items).await?;
    let results = memory
        .save_all(&store, items)
        .await
        .into_iter()
        .map(|outcome| match outcome {
            Ok(saved) => {
                let (status, axum::Json(saved)) = saved_response(saved);
                SavedMemoryResult { status: status.as_u16(), saved: Some(saved), error: None }
            }
            Err(err) => {
                let err = refusal(&id, err);
                // As a whole answer would be: a failure of the server's own is logged.
                if err.code.status().is_server_error() {
                    tracing::error!(code = err.code.as_str(), message = %err.message, "an item of a batch failed");
                }
                SavedMemoryResult {
                    status: err.code.status().as_u16(),
                    saved: None,
                    error: Some(ErrorBody {
                        code: err.code.as_str().to_owned(),
                        message: err.message,
                    }),
                }
            }
        })
        .collect();
    Ok(axum::Json(SavedMemoriesResponse { results }))
}

/// The session `id`'s memory, acted on as the caller, and `params` as items of it: the
/// session's agent and isolation key, the session and each item's turn (which must be the
/// session's) as provenance.
async fn in_session(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &crate::auth::Reach,
    id: &str,
    params: Vec<SessionMemoryParams>,
) -> Result<(std::sync::Arc<Memory>, clade_store::TenantStore, Vec<NewMemory>), ApiError> {
    let memory = memory_of(state)?;
    for item in &params {
        checked_source_tool(item.source_tool.as_deref())?;
    }
    let (session, store) = agent_session(state, tenant, reach, id).await?;
    let mut turns: Vec<(String, clade_core::TurnId)> = Vec::new();
    let mut items = Vec::with_capacity(params.len());
    for params in params {
        let turn = match params.turn {
            None => None,
            Some(text) => match turns.iter().find(|(known, _)| *known == text) {
                Some((_, turn)) => Some(*turn),
                None => {
                    let turn = session_turn(&store, &session, id, &text).await?;
                    turns.push((text, turn));
                    Some(turn)
                }
            },
        };
        items.push(NewMemory {
            agent: session.agent_id,
            scope: memory.isolation_key(&session.source).unwrap_or_default(),
            kind: params.kind.map_or(MemoryKind::Fact, |k| k.0),
            content: params.content,
            importance: params.importance.unwrap_or(0.5),
            confidence: params.confidence.unwrap_or(clade_memory::mine::CONFIDENCE),
            untrusted: params.source_tool.is_some(),
            provenance: Provenance {
                session: Some(session.id),
                turn,
                tool: params.source_tool,
                by: format!("tenant {} (api)", tenant.name),
            },
            embedding: None,
        });
    }
    Ok((memory, store, items))
}

/// The session `id`, if the caller reaches its whole agent, and the tenant's store acted on
/// as the caller. Memory is the agent's, recalled in its other sessions: a token that reaches
/// this session alone (a session lease) may neither write to it nor spend the agent's budget
/// mining for it.
async fn agent_session(
    state: &AppState,
    tenant: &clade_core::Tenant,
    reach: &crate::auth::Reach,
    id: &str,
) -> Result<(clade_store::SessionRow, clade_store::TenantStore), ApiError> {
    let session = crate::sessions::reachable_row(state, tenant, reach, id).await?;
    if !reach.allows(session.agent_id) {
        return Err(clade_store::Error::SessionNotFound(session.id.to_string()).into());
    }
    let store =
        state.store.acting_as(format!("tenant {} (api)", tenant.name)).tenant_scope(tenant.id);
    Ok((session, store))
}

/// The turn `text` names, if it is `session`'s (`id` as the caller wrote it).
async fn session_turn(
    store: &clade_store::TenantStore,
    session: &clade_store::SessionRow,
    id: &str,
    text: &str,
) -> Result<clade_core::TurnId, ApiError> {
    let not_found = || crate::sessions::turn_not_found(id, text);
    let turn = text.parse::<clade_core::TurnId>().map_err(|_| not_found())?;
    match store.turn(session.id, turn).await {
        Ok(row) => Ok(row.id),
        Err(clade_store::Error::TurnNotFound(_)) => Err(not_found()),
        Err(other) => Err(other.into()),
    }
}

/// `POST /v1/sessions/{id}/turns/{turn}/mine`: what the people in one of the session's turns
/// wrote worth remembering, found as the gateway's own ingestion finds it (the `cortex` model
/// route, charged to the agent within its budgets, or the heuristic), and not saved: a miner
/// running as a process of its own saves it with `POST /v1/sessions/{id}/memories/batch`. Any
/// turn of the session is mined as it stands, finished or not; a miner following
/// `turn.finished` events asks for finished ones.
pub(crate) async fn mine_turn(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((id, turn)): Path<(String, String)>,
    JsonBody(params): JsonBody<MineTurnParams>,
) -> Result<axum::Json<MinedTurnResponse>, ApiError> {
    memory_of(&state)?;
    let (session, store) = agent_session(&state, &tenant, &reach, &id).await?;
    let turn = session_turn(&store, &session, &id, &turn).await?;
    let texts = store.turn_texts(session.id, turn).await?;
    let miner = match params.miner.unwrap_or(MinerKind::Model) {
        MinerKind::Model => Miner::Model,
        MinerKind::Heuristic => Miner::Heuristic,
    };
    let (items, by) =
        clade_runtime::ingest::mine(&state.engine, &store, session.agent_id, miner, &texts).await;
    Ok(axum::Json(MinedTurnResponse {
        items: items
            .into_iter()
            .map(|item| MinedMemory {
                kind: item.kind.into(),
                content: item.content,
                importance: item.importance,
            })
            .collect(),
        miner: match by {
            Miner::Model => MinerKind::Model,
            Miner::Heuristic => MinerKind::Heuristic,
        },
    }))
}

pub(crate) async fn search(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
    JsonBody(params): JsonBody<SearchMemoriesParams>,
) -> Result<axum::Json<MemorySearchResponse>, ApiError> {
    let memory = memory_of(&state)?;
    let limit = params.limit.unwrap_or(10);
    if !(1..=50).contains(&limit) {
        return Err(ApiError::new(Code::InvalidRequest, "limit must be between 1 and 50"));
    }
    if params.query.chars().count() > 4096 {
        return Err(ApiError::new(Code::InvalidRequest, "query: at most 4096 characters"));
    }
    let since = match params.since.map(i64::try_from) {
        Some(Ok(since)) if since <= 9_007_199_254_740_991 => Some(Timestamp::from_millis(since)),
        Some(_) => {
            return Err(ApiError::new(
                Code::InvalidRequest,
                "since: Unix milliseconds, at most 2^53 - 1",
            ));
        }
        None => None,
    };
    let key = checked_scope(params.scope)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let filter = MemoryFilter {
        scope: key,
        exclude_global: false,
        kinds: params.kinds.into_iter().map(|k| k.0).collect(),
        since,
    };
    let hits = memory
        .recall(&store, agent.id, &filter, &params.query, limit as usize)
        .await
        .map_err(|e| refusal(&handle, e))?;
    let mode = if memory.embedding_model().is_some() { "hybrid" } else { "full_text" };
    Ok(axum::Json(MemorySearchResponse {
        items: hits
            .into_iter()
            .map(|hit| RecalledMemory {
                reasons: hit.reasons.iter().map(clade_memory::Reason::describe).collect(),
                score: hit.score,
                memory: memory_response(hit.item),
            })
            .collect(),
        mode: mode.to_owned(),
    }))
}

/// The items the cortex pruned (every scope and kind), the latest pruned first.
pub(crate) async fn pruned(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
    query: Result<Query<PrunedMemoriesQuery>, QueryRejection>,
) -> Result<axum::Json<MemoryListResponse>, ApiError> {
    let Query(query) = query.map_err(query_rejection)?;
    let limit = checked_limit(query.limit)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let rows = store.memories().pruned(agent.id, limit).await?;
    Ok(axum::Json(MemoryListResponse {
        items: rows.into_iter().map(memory_response).collect(),
        next_cursor: None,
    }))
}

pub(crate) async fn restore(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, id)): Path<(String, String)>,
) -> Result<axum::Json<MemoryResponse>, ApiError> {
    let id = memory_id(&handle, &id)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let row = match store.memories().restore(agent.id, id).await {
        Ok(row) => row,
        // An item that is not pruned is where a restore would put it: restoring is idempotent.
        Err(clade_store::Error::MemoryNotFound(_)) => {
            match store.memories().get(agent.id, id).await {
                Ok(live) => live,
                Err(clade_store::Error::MemoryNotFound(_)) => {
                    return Err(ApiError::new(
                        Code::MemoryNotFound,
                        format!(
                            "agent {handle} has no memory {id}, pruned or not: list pruned ones with GET /v1/agents/{handle}/memories/pruned"
                        ),
                    ));
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(other) => return Err(other.into()),
    };
    Ok(axum::Json(memory_response(row)))
}

pub(crate) async fn upkeep(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path(handle): Path<String>,
) -> Result<axum::Json<MemoryUpkeepResponse>, ApiError> {
    let memory = memory_of(&state)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    // The deployment's policy, even where the background upkeep is off.
    let default = clade_memory::upkeep::Policy::default();
    let policy = memory.upkeep_policy().unwrap_or(&default).clone();
    let since = store.memories().upkeep_ran(agent.id).await?;
    let consolidator = clade_runtime::cortex::ModelConsolidator::new(state.engine.clone());
    let report = memory
        .upkeep(&store, agent.id, since, &policy, Some(&consolidator))
        .await
        .map_err(|e| refusal(&handle, e))?;
    Ok(axum::Json(MemoryUpkeepResponse {
        merged: report.merged,
        faded: report.faded,
        pruned: report.pruned,
        purged: report.purged,
        consolidated: report.consolidated,
        lasting: report.lasting,
        live: report.live,
        next_due: report.next_due.map(Timestamp::as_millis),
    }))
}

pub(crate) async fn link(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, id)): Path<(String, String)>,
    JsonBody(params): JsonBody<LinkMemoryParams>,
) -> Result<(StatusCode, axum::Json<MemoryLinkResponse>), ApiError> {
    let from = memory_id(&handle, &id)?;
    let to = memory_id(&handle, &params.to)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    let link = store
        .memories()
        .link(agent.id, from, to, params.kind.0, params.weight.unwrap_or(1.0))
        .await
        .map_err(|e| refusal(&handle, clade_memory::Error::Store(e)))?;
    Ok((
        StatusCode::CREATED,
        axum::Json(MemoryLinkResponse {
            from: link.from.to_string(),
            to: link.to.to_string(),
            kind: link.kind.into(),
            weight: link.weight,
            created_at: link.created_at.as_millis(),
        }),
    ))
}

pub(crate) async fn forget(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
    Path((handle, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = memory_id(&handle, &id)?;
    let (store, agent) = scope(&state, &tenant, &reach, &handle).await?;
    store
        .memories()
        .forget(agent.id, id)
        .await
        .map_err(|e| refusal(&handle, clade_memory::Error::Store(e)))?;
    Ok(StatusCode::NO_CONTENT)
}
