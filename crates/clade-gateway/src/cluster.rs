//! `/v1/cluster/nodes`: the cluster's nodes as the store's live leases show them (with their
//! load and version, as this node's keeper heard them), the
//! operator's only; to any other tenant the route does not exist. And `/cluster/join/{node}`,
//! where a paired worker node (`clade node join`) is given what it needs to join.

use axum::Extension;
use axum::extract::State;

use crate::AppState;
use crate::api::ClusterNodeListResponse;
use crate::auth::Caller;
use crate::error::{ApiError, Code};

pub(crate) async fn nodes(
    State(state): State<AppState>,
    Extension(Caller(tenant, _, reach)): Extension<Caller>,
) -> Result<axum::Json<ClusterNodeListResponse>, ApiError> {
    crate::config::operator_only(&tenant, &reach)?;
    let leases = state.store.shard_leases().list().await?;
    let heard = state.keeper.as_ref().map(|keeper| keeper.heard()).unwrap_or_default();
    Ok(axum::Json(ClusterNodeListResponse { items: clade_cluster::nodes_of(leases, &heard) }))
}

/// `GET /cluster/join/{node}`: what a worker node paired as `node` (`clade pair node`) needs to
/// join: the configuration the cluster runs (its newest revision, else this gateway's
/// clade.yaml) and the store's URL without its password. The request is signed with the
/// worker's key, and the answer proves this gateway's; a key not paired as that node, a
/// signature that fails and a node name that is not paired all get the same answer.
pub(crate) async fn join(
    State(state): State<AppState>,
    axum::extract::Path(node): axum::extract::Path<String>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let route = uri.path_and_query().map(|p| p.as_str()).unwrap_or_default();
    let answer = match crate::auth::verify_signed(&state, &headers, "GET", route, b"") {
        Ok(key) => joined(&state, &node, &key).await.map(axum::Json),
        Err(why) => Err(not_a_node(&node, &why.to_string())),
    };
    let mut response = answer.into_response();
    crate::auth::prove(&state, &headers, &mut response);
    response
}

fn not_a_node(node: &str, why: &str) -> ApiError {
    tracing::info!(node, reason = why, "a node's request to join was refused");
    ApiError::new(
        Code::InvalidSignature,
        "not signed by a worker node paired with this gateway under that name (the gateway's log says which)",
    )
}

async fn joined(
    state: &AppState,
    node: &str,
    key: &str,
) -> Result<clade_protocol::ClusterJoinResponse, ApiError> {
    if !state.store.peers().is_paired(clade_cluster::NODE_PEER_KIND, node, key).await? {
        return Err(not_a_node(node, "the key is not paired as this node"));
    }
    let latest = state.store.config_revisions().latest().await?;
    let config = if latest > 0 {
        state.store.config_revisions().get(latest).await?.yaml
    } else {
        // A gateway started with no clade.yaml runs the defaults: alone.
        match state.config_path.as_ref().map(std::fs::read_to_string) {
            Some(Ok(text)) => text,
            Some(Err(err)) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(ApiError::internal(err));
            }
            _ => String::new(),
        }
    };
    let path = state.config_path.clone().unwrap_or_default();
    let parsed = crate::config_flow::validate(&config, &path, state.store.now())
        .map_err(ApiError::internal)?;
    if parsed.cluster.is_none() {
        return Err(ApiError::new(
            Code::NotACluster,
            "this gateway runs alone (no cluster: in its clade.yaml): it has no nodes to join",
        ));
    }
    // The password is the worker's own to give (PGPASSWORD, or --store whole).
    let store = state.store.location().replacen(":***@", "@", 1);
    tracing::info!(node, "a worker node joins");
    Ok(clade_protocol::ClusterJoinResponse { node: node.to_owned(), config, store })
}
