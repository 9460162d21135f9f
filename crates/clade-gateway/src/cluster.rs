//! `/v1/cluster/nodes`: the cluster's nodes as the store's live leases show them, the
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
    Ok(axum::Json(ClusterNodeListResponse { items: clade_cluster::nodes_of(leases) }))
}
