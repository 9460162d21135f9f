//! API tokens: created (the secret shown once), listed, revoked, and checked on each request.

use clade_core::{AgentId, AuditKind, Tenant, TenantId, Timestamp, TokenId};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::tenancy::tenant_from_row;
use super::*;
use crate::db::{Row, query};
use crate::error::{Error, Result};

/// An API token as listed (its secret is never stored, only a hash of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: TokenId,
    pub tenant_id: TenantId,
    pub name: String,
    /// What it may do (see [`clade_core::Scope`]).
    pub scopes: Vec<clade_core::Scope>,
    /// The agents it may reach; `None` for every agent of its tenant.
    pub agents: Option<Vec<AgentId>>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// When it stops working; `None`: never.
    pub expires_at: Option<Timestamp>,
}

/// What a live token may do: its scopes, and the agents it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAccess {
    pub scopes: Vec<clade_core::Scope>,
    /// `None`: every agent of the tenant (and the tenant itself: its agents, tokens, grants).
    pub agents: Option<Vec<AgentId>>,
    /// Sessions reached beyond `agents`: those a leased operator's live session leases name.
    pub sessions: Vec<LeasedSession>,
    /// The operator's name, when what it reaches comes from leases (an operator paired
    /// `leased`): such a caller may not grant leases, or it could extend its own.
    pub leased: Option<String>,
}

/// A session a leased operator reaches, with what routes an event into it: its agent and
/// source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedSession {
    pub id: clade_core::SessionId,
    pub agent_id: AgentId,
    pub source: crate::Source,
}

impl TokenAccess {
    /// Whether the token may reach `agent` (of its own tenant: tenants are checked apart).
    pub fn reaches(&self, agent: AgentId) -> bool {
        self.agents.as_ref().is_none_or(|agents| agents.contains(&agent))
    }

    /// Whether the token speaks for its whole tenant rather than some of its agents.
    pub fn whole_tenant(&self) -> bool {
        self.agents.is_none()
    }
}

/// The stored form of a token's agents: comma-separated ids.
fn agents_text(agents: &[AgentId]) -> String {
    agents.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn agents_from_text(text: Option<String>) -> Result<Option<Vec<AgentId>>> {
    let Some(text) = text else { return Ok(None) };
    text.split(',')
        .map(|id| {
            id.parse::<AgentId>().map_err(|_| {
                Error::BadRow(format!("api_tokens.agents holds {id:?}, not an agent id"))
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The prefix of every API token, so leaked tokens are easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "clade_";

/// A token's tenant and access from a row of `t.id, t.name, t.created_at, k.scopes, k.agents`.
pub(crate) fn token_access_from_row(row: &Row) -> Result<(Tenant, TokenAccess)> {
    let scopes =
        clade_core::Scope::split(&row.try_get::<String, _>("scopes")?).map_err(Error::BadRow)?;
    let agents = agents_from_text(row.try_get("agents")?)?;
    Ok((tenant_from_row(row)?, TokenAccess { scopes, agents, sessions: Vec::new(), leased: None }))
}

fn token_from_row(row: &Row) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: TokenId::from_bytes(id_bytes(row, "id")?),
        tenant_id: TenantId::from_bytes(id_bytes(row, "tenant_id")?),
        name: row.try_get("name")?,
        scopes: clade_core::Scope::split(&row.try_get::<String, _>("scopes")?)
            .map_err(Error::BadRow)?,
        agents: agents_from_text(row.try_get("agents")?)?,
        created_at: Timestamp::from_millis(row.try_get("created_at")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp::from_millis),
        expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(Timestamp::from_millis),
    })
}

fn hash_token(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

impl Store {
    /// The tenant a bearer token belongs to; [`Error::BadToken`] if it is unknown, revoked or
    /// expired.
    pub async fn authenticate(&self, secret: &str) -> Result<Tenant> {
        self.authenticate_scoped(secret).await.map(|(tenant, _)| tenant)
    }

    /// The tenant a live token belongs to, and what the token may do.
    pub async fn authenticate_scoped(&self, secret: &str) -> Result<(Tenant, TokenAccess)> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Err(Error::BadToken);
        }
        let row = self.maybe_row(query(
            "SELECT t.id, t.name, t.created_at, k.scopes, k.agents FROM api_tokens k JOIN tenants t ON t.id = k.tenant_id \
             WHERE k.secret_hash = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)",
        )
        .bind(hash_token(secret))
        .bind(self.now().as_millis())).await?;
        let Some(row) = row else { return Err(Error::BadToken) };
        token_access_from_row(&row)
    }
}

/// One tenant's API tokens: created (the secret shown once), listed and revoked, each audited.
#[derive(Clone, Copy)]
pub struct Tokens<'s> {
    pub(crate) store: &'s Store,
    pub(crate) tenant: TenantId,
}

impl Store {
    /// `tenant`'s API tokens.
    pub fn tokens(&self, tenant: TenantId) -> Tokens<'_> {
        Tokens { store: self, tenant }
    }
}

impl crate::TenantStore {
    /// This tenant's API tokens.
    pub fn tokens(&self) -> Tokens<'_> {
        self.store().tokens(self.tenant())
    }
}

impl Tokens<'_> {
    // ---- tokens ----

    /// Creates a token for `tenant`, limited to `agents` if given (each must be the tenant's)
    /// and working until `expires_at` if given; the returned secret is shown once and never
    /// stored.
    pub async fn create(
        self,
        name: &str,
        scopes: &[clade_core::Scope],
        agents: Option<&[AgentId]>,
        expires_at: Option<Timestamp>,
    ) -> Result<(TokenInfo, String)> {
        let tenant = self.tenant;
        check_new_token(name, scopes, agents, expires_at, self.store.now())?;
        let mut raw = [0u8; 32];
        #[allow(clippy::disallowed_methods)] // A secret: the OS's generator, never a seed.
        rand::rng().fill_bytes(&mut raw);
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(raw));
        let now = self.store.now();
        let info = TokenInfo {
            id: TokenId::generate(now),
            tenant_id: tenant,
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            agents: agents.map(|a| {
                let mut agents = a.to_vec();
                agents.sort();
                agents.dedup();
                agents
            }),
            created_at: now,
            revoked_at: None,
            expires_at,
        };
        let row = info.clone();
        let hash = hash_token(&secret);
        let audit = self.store.admin_record(
            tenant,
            None,
            AuditKind::TokenCreated,
            serde_json::json!({
                "token": info.id.to_string(),
                "name": info.name,
                "scopes": clade_core::Scope::join(&info.scopes),
                "agents": info.agents.as_deref().map(agents_text),
                "expires_at": info.expires_at.map(|at| at.as_millis()),
            }),
        );
        self.store.write(move |conn| {
            let audit = audit.clone();
            let hash = hash.clone();
            let row = row.clone();
            Box::pin(async move {
                // The agents are the tenant's, checked in the same transaction.
                for agent in row.agents.iter().flatten() {
                    let found = query("SELECT 1 FROM agents WHERE id = $1 AND tenant_id = $2")
                        .bind(agent.as_bytes().to_vec())
                        .bind(row.tenant_id.as_bytes().to_vec())
                        .fetch_optional(&mut *conn)
                        .await?;
                    if found.is_none() {
                        return Err(Error::AgentNotFound(agent.to_string()));
                    }
                }
                query(
                    "INSERT INTO api_tokens (id, tenant_id, name, secret_hash, created_at, scopes, agents, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(row.id.as_bytes().to_vec())
                .bind(row.tenant_id.as_bytes().to_vec())
                .bind(row.name)
                .bind(hash)
                .bind(row.created_at.as_millis())
                .bind(clade_core::Scope::join(&row.scopes))
                .bind(row.agents.as_deref().map(agents_text))
                .bind(row.expires_at.map(|at| at.as_millis()))
                .execute(&mut *conn)
                .await?;
                crate::access::append_audit(conn, &audit, now).await?;
                Ok(())
            })
        })
        .await?;
        Ok((info, secret))
    }

    pub async fn list(self) -> Result<Vec<TokenInfo>> {
        let tenant = self.tenant;
        let rows = self.store
            .rows(
                query(
                    "SELECT id, tenant_id, name, scopes, agents, created_at, revoked_at, expires_at FROM api_tokens \
             WHERE tenant_id = $1 ORDER BY created_at, id",
                )
                .bind(tenant.as_bytes().to_vec()),
            )
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    pub async fn revoke(self, id: TokenId) -> Result<()> {
        let tenant = self.tenant;
        let at = self.store.now();
        let now = at.as_millis();
        let audit = self.store.admin_record(
            tenant,
            None,
            AuditKind::TokenRevoked,
            serde_json::json!({ "token": id.to_string() }),
        );
        self.store
            .write(move |conn| {
                let audit = audit.clone();
                Box::pin(async move {
                    let done = query(
                        "UPDATE api_tokens SET revoked_at = $1 \
                     WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
                    )
                    .bind(now)
                    .bind(id.as_bytes().to_vec())
                    .bind(tenant.as_bytes().to_vec())
                    .execute(&mut *conn)
                    .await?;
                    if done == 0 {
                        return Err(Error::TokenNotFound(id.to_string()));
                    }
                    crate::access::append_audit(conn, &audit, at).await?;
                    Ok(())
                })
            })
            .await
    }
}

/// Refuses a token that could not be used as asked, saying why.
fn check_new_token(
    name: &str,
    scopes: &[clade_core::Scope],
    agents: Option<&[AgentId]>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<()> {
    if expires_at.is_some_and(|at| at <= now) {
        return Err(Error::InvalidInput("a token's expiry must be in the future".into()));
    }
    if scopes.is_empty() {
        return Err(Error::InvalidInput(
            "a token needs at least one scope: admin, operate, send, read or approve".into(),
        ));
    }
    if let Some(agents) = agents {
        if agents.is_empty() {
            return Err(Error::InvalidInput(
                "a token limited to agents needs at least one agent".into(),
            ));
        }
        if scopes.contains(&clade_core::Scope::Admin) {
            return Err(Error::InvalidInput(
                "a token limited to some agents cannot have the admin scope, which covers the whole tenant (its agents, tokens, grants and audit log)".into(),
            ));
        }
    }
    if name.is_empty() || name.len() > 100 || name.chars().any(clade_core::is_spoofing_char) {
        return Err(Error::InvalidInput(
            "token name must be 1-100 characters without control, bidirectional-override or zero-width characters".into(),
        ));
    }
    Ok(())
}
