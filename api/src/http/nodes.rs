//! `/api/nodes`: the nodes sharing this deployment's database and the rooms on each.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Staff;
use crate::App;
use crate::cluster::NodeView;
use crate::error::{ApiResult, Problem};
use crate::model::StaffRole;

/// The nodes, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct Nodes {
    /// Every registered node (on SQLite: this one).
    pub nodes: Vec<NodeView>,
}

#[utoipa::path(get, path = "/api/nodes", tag = "nodes",
    responses((status = 200, body = Nodes), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("api_key" = [])))]
/// Lists the nodes, whether each is live, and the rooms on each (admin; only the caller's
/// tenant's visits are named, other tenants' rooms are only counted).
pub async fn list(State(app): State<Arc<App>>, staff: Staff) -> ApiResult<Json<Nodes>> {
    staff.require(&[StaffRole::Admin])?;
    let nodes = app.cluster.nodes(&app.store, &staff.tenant_id).await?;
    Ok(Json(Nodes { nodes }))
}
