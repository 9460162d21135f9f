//! `/v1/cluster/nodes`: the cluster's nodes as the store's live leases show them (with their
//! load and version, as this node's keeper heard them), the
//! operator's only; to any other tenant the route does not exist.

use axum::Extension;
use axum::extract::State;

use crate::AppState;
use crate::api::ClusterNodeListResponse;
use crate::auth::Caller;
use crate::error::ApiError;

pub(crate) async fn nodes(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
) -> Result<axum::Json<ClusterNodeListResponse>, ApiError> {
    crate::config::operator_only(&tenant, &reach)?;
    let leases = state.store.shard_leases().list().await?;
    let heard = state.keeper.as_ref().map(|keeper| keeper.heard()).unwrap_or_default();
    Ok(axum::Json(ClusterNodeListResponse { items: clade_cluster::nodes_of(leases, &heard) }))
}
