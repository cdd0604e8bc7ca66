//! The fleet view: every data plane of a gateway, with the version it
//! serves and whether that is the current one, as one page of the shared
//! list shape; and removing the row of a node that is gone. A node's last
//! refusal stays visible as history (`last_rejection`); only a node whose
//! status is `rejected` has a current `reason`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Path, Query};
use super::pagination::{List, Page};
use crate::distribution::NODE_STALE_AFTER_HEARTBEATS;
use crate::store::{NodeDeletion, NodeRecord};

/// Where a node stands against the gateway's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Serves the current version.
    InSync,
    /// Connected, but has not (yet) applied the current version.
    Behind,
    /// Refused the current version; `reason` says why.
    Rejected,
    /// Its stream is closed, or it has not been heard from for three heartbeats.
    Disconnected,
}

impl NodeStatus {
    pub const ALL: [Self; 4] = [Self::InSync, Self::Behind, Self::Rejected, Self::Disconnected];

    /// Its name, as in the JSON and in metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::InSync => "in_sync",
            Self::Behind => "behind",
            Self::Rejected => "rejected",
            Self::Disconnected => "disconnected",
        }
    }
}

/// A node's most recent refusal, current or not.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rejection {
    pub version: u64,
    pub reason: String,
    /// When the node refused it (absent for refusals recorded before this was kept).
    pub at: Option<DateTime<Utc>>,
}

/// One data-plane node.
#[derive(Debug, Serialize, ToSchema)]
pub struct DataPlane {
    pub node_id: String,
    /// The version it last applied.
    pub version: Option<u64>,
    pub hash: Option<String>,
    pub status: NodeStatus,
    /// Why it refused the current version: set only when `status` is `rejected`.
    pub reason: Option<String>,
    pub last_seen: DateTime<Utc>,
    pub connected_at: DateTime<Utc>,
    pub labels: BTreeMap<String, String>,
    pub software_version: String,
    /// Its most recent refusal, kept as history once a later version is applied.
    pub last_rejection: Option<Rejection>,
}

/// A page of a gateway's fleet, by node id.
#[derive(Debug, Serialize, ToSchema)]
pub struct Fleet {
    #[serde(flatten)]
    pub page: List<DataPlane>,
    /// The version every node should serve.
    pub current_version: u64,
}

/// Whether a node's stream is open and it was heard from since `stale_before`.
pub(super) fn is_live(node: &NodeRecord, stale_before: DateTime<Utc>) -> bool {
    node.connected && node.last_seen >= stale_before
}

pub(super) fn status(node: &NodeRecord, current_version: u64, current_hash: &str, stale_before: DateTime<Utc>) -> NodeStatus {
    if !is_live(node, stale_before) {
        NodeStatus::Disconnected
    } else if node.acked_version == Some(current_version) && node.acked_hash.as_deref() == Some(current_hash) {
        NodeStatus::InSync
    } else if node.nacked_version == Some(current_version) {
        NodeStatus::Rejected
    } else {
        NodeStatus::Behind
    }
}

fn data_plane(node: NodeRecord, current_version: u64, current_hash: &str, stale_before: DateTime<Utc>) -> DataPlane {
    let status = status(&node, current_version, current_hash, stale_before);
    let last_rejection =
        node.nacked_version.zip(node.nack_reason).map(|(version, reason)| Rejection { version, reason, at: node.nacked_at });
    DataPlane {
        status,
        reason: last_rejection.as_ref().filter(|_| status == NodeStatus::Rejected).map(|r| r.reason.clone()),
        last_rejection,
        node_id: node.node_id,
        version: node.acked_version,
        hash: node.acked_hash,
        last_seen: node.last_seen,
        connected_at: node.connected_at,
        labels: node.labels,
        software_version: node.software_version,
    }
}

/// Before this instant a node is no longer live (three heartbeats of silence).
pub(super) fn stale_before(state: &AppState) -> DateTime<Utc> {
    Utc::now() - state.heartbeat * NODE_STALE_AFTER_HEARTBEATS
}

#[utoipa::path(get, path = "/api/v1/gateways/{gw}/data-planes", tag = "data-planes", params(("gw" = String, Path, description = "Gateway name"), Page),
    responses((status = 200, body = Fleet), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list(State(state): State<AppState>, Path(gw): Path<String>, Query(page): Query<Page>) -> Result<Json<Fleet>, ApiError> {
    let current = state.current(&gw).await?;
    let stale_before = stale_before(&state);
    let nodes = state.store.nodes(&gw).await?;
    let data_planes = nodes.into_iter().map(|node| data_plane(node, current.version, &current.hash, stale_before)).collect();
    Ok(Json(Fleet { page: List::page(data_planes, page)?, current_version: current.version }))
}

/// Removes a node's row: one that is gone for good (a node that comes back
/// reappears with its next hello). A live node is a `409`.
#[utoipa::path(delete, path = "/api/v1/gateways/{gw}/data-planes/{node}", tag = "data-planes",
    params(("gw" = String, Path, description = "Gateway name"), ("node" = String, Path, description = "Node id")),
    responses((status = 204, description = "Removed"), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The node is connected: stop it first")))]
pub(super) async fn delete(State(state): State<AppState>, Path((gw, node)): Path<(String, String)>) -> Result<Response, ApiError> {
    state.current(&gw).await?;
    let unknown = || ApiError::not_found(format!("data plane '{}' of gateway '{gw}'", node.escape_debug()));
    if node.is_empty() || node.len() > 128 || !node.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(unknown());
    }
    match state.store.delete_node(&gw, &node, stale_before(&state)).await? {
        NodeDeletion::Deleted => {
            tracing::info!(gateway = %gw, node = %node, "data plane row removed");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        NodeDeletion::Live => Err(ApiError::conflict(format!(
            "data plane '{node}' is connected; stop it first (a live node's row would come back with its next connection)"
        ))),
        NodeDeletion::NotFound => Err(unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeRecord {
        NodeRecord {
            gateway: "default".into(),
            node_id: "n".into(),
            labels: BTreeMap::new(),
            software_version: String::new(),
            connected: true,
            acked_version: Some(3),
            acked_hash: Some("h3".into()),
            nacked_version: None,
            nack_reason: None,
            nacked_at: None,
            connected_at: Utc::now(),
            last_seen: Utc::now(),
            purge_cursor: None,
        }
    }

    #[test]
    fn status_follows_acks_nacks_and_liveness() {
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        assert_eq!(status(&node(), 3, "h3", long_ago), NodeStatus::InSync);
        assert_eq!(status(&node(), 4, "h4", long_ago), NodeStatus::Behind);
        assert_eq!(status(&NodeRecord { nacked_version: Some(4), ..node() }, 4, "h4", long_ago), NodeStatus::Rejected);
        assert_eq!(status(&NodeRecord { nacked_version: Some(2), ..node() }, 3, "h3", long_ago), NodeStatus::InSync);
        assert_eq!(status(&NodeRecord { nacked_version: Some(3), ..node() }, 3, "h3", long_ago), NodeStatus::InSync, "applied after all");
        assert_eq!(status(&NodeRecord { connected: false, ..node() }, 3, "h3", long_ago), NodeStatus::Disconnected);
        assert_eq!(status(&node(), 3, "h3", Utc::now() + chrono::Duration::seconds(1)), NodeStatus::Disconnected);
    }

    #[test]
    fn labels_are_the_json_names() {
        for status in NodeStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.label());
        }
    }

    #[test]
    fn only_a_rejected_node_has_a_current_reason_and_the_refusal_stays_as_history() {
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        let refused = NodeRecord { nacked_version: Some(4), nack_reason: Some("bad".into()), nacked_at: Some(Utc::now()), ..node() };
        let rejected = data_plane(refused.clone(), 4, "h4", long_ago);
        assert_eq!((rejected.status, rejected.reason.as_deref()), (NodeStatus::Rejected, Some("bad")));
        let later = data_plane(NodeRecord { acked_version: Some(5), acked_hash: Some("h5".into()), ..refused }, 5, "h5", long_ago);
        assert_eq!((later.status, later.reason), (NodeStatus::InSync, None));
        assert_eq!(later.last_rejection.map(|r| (r.version, r.reason)), Some((4, "bad".to_owned())));
    }
}
