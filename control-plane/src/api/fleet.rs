//! The fleet view: every data plane of a gateway, with the version it
//! serves and whether that is the current one.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::Path;
use crate::distribution::NODE_STALE_AFTER_HEARTBEATS;
use crate::store::NodeRecord;

/// Where a node stands against the gateway's current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Serves the current version.
    InSync,
    /// Connected, but has not (yet) applied the current version.
    Behind,
    /// Refused the current version; see `last_rejection`.
    Rejected,
    /// Its stream is closed, or it has not been heard from for three heartbeats.
    Disconnected,
}

/// A node's most recent refusal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rejection {
    pub version: u64,
    pub reason: String,
}

/// One data-plane node.
#[derive(Debug, Serialize, ToSchema)]
pub struct DataPlane {
    pub node_id: String,
    /// The version it last applied.
    pub version: Option<u64>,
    pub hash: Option<String>,
    pub status: NodeStatus,
    pub last_seen: DateTime<Utc>,
    pub connected_at: DateTime<Utc>,
    pub labels: BTreeMap<String, String>,
    pub software_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_rejection: Option<Rejection>,
}

/// The fleet of a gateway.
#[derive(Debug, Serialize, ToSchema)]
pub struct Fleet {
    /// The version every node should serve.
    pub current_version: u64,
    pub data_planes: Vec<DataPlane>,
}

fn status(node: &NodeRecord, current_version: u64, current_hash: &str, stale_before: DateTime<Utc>) -> NodeStatus {
    if !node.connected || node.last_seen < stale_before {
        NodeStatus::Disconnected
    } else if node.acked_version == Some(current_version) && node.acked_hash.as_deref() == Some(current_hash) {
        NodeStatus::InSync
    } else if node.nacked_version == Some(current_version) {
        NodeStatus::Rejected
    } else {
        NodeStatus::Behind
    }
}

#[utoipa::path(get, path = "/api/v1/gateways/{gw}/data-planes", tag = "data-planes", params(("gw" = String, Path, description = "Gateway name")),
    responses((status = 200, body = Fleet), (status = 404, body = ErrorBody)))]
pub(super) async fn list(State(state): State<AppState>, Path(gw): Path<String>) -> Result<Json<Fleet>, ApiError> {
    let current = state.current(&gw).await?;
    let nodes = state.store.nodes(&gw).await?;
    let stale_before = Utc::now() - state.heartbeat * NODE_STALE_AFTER_HEARTBEATS;
    let data_planes = nodes
        .into_iter()
        .map(|node| DataPlane {
            status: status(&node, current.version, &current.hash, stale_before),
            last_rejection: node.nacked_version.zip(node.nack_reason.clone()).map(|(version, reason)| Rejection { version, reason }),
            node_id: node.node_id,
            version: node.acked_version,
            hash: node.acked_hash,
            last_seen: node.last_seen,
            connected_at: node.connected_at,
            labels: node.labels,
            software_version: node.software_version,
        })
        .collect();
    Ok(Json(Fleet { current_version: current.version, data_planes }))
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
            connected_at: Utc::now(),
            last_seen: Utc::now(),
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
}
