//! Data-plane nodes as the gRPC streams report them: who is connected, what
//! each applied (ACK) or refused (NACK), when it was last heard from, and
//! the purge cursor its cache was last started at.
//! Rows of nodes that went away are removed by an operator
//! ([`Store::delete_node`]) or once silent for long enough
//! ([`Store::forget_nodes_silent_since`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Result, Store, StoreError, millis, to_i64, to_u64};
use crate::metrics::StoreTimer;

/// What a node says when its stream opens, and the purge cursor it is given.
#[derive(Debug, Clone, Default)]
pub struct NodeHello {
    pub node_id: String,
    pub gateway: String,
    pub labels: BTreeMap<String, String>,
    /// The version the node already serves, 0 for none.
    pub version: u64,
    pub hash: String,
    pub software_version: String,
    /// Identifies this stream, so a stale stream's disconnect cannot mark a
    /// reconnected node disconnected.
    pub session_id: String,
    /// The purge cursor given to the node's new cache: every purge up to
    /// it predates the cache. `None` (a node resuming after its own cursor)
    /// keeps the one recorded.
    pub purge_cursor: Option<u64>,
}

/// What [`Store::delete_node`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeDeletion {
    Deleted,
    /// The node was heard from since the cutoff: it is left alone.
    Live,
    NotFound,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub gateway: String,
    pub node_id: String,
    pub labels: BTreeMap<String, String>,
    pub software_version: String,
    pub connected: bool,
    pub acked_version: Option<u64>,
    pub acked_hash: Option<String>,
    pub nacked_version: Option<u64>,
    pub nack_reason: Option<String>,
    pub nacked_at: Option<DateTime<Utc>>,
    pub connected_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The purge cursor its cache was last started at, if any: it needs no
    /// purge up to that id (see [`NodeHello::purge_cursor`]).
    pub purge_cursor: Option<u64>,
}

/// The query of [`NodeRecord`]s, completed with `$rest` (a filter, an order).
macro_rules! select_nodes {
    ($rest:literal) => {
        concat!(
            "SELECT gateway, node_id, labels, software_version, connected, acked_version, acked_hash, nacked_version, ",
            "nack_reason, nacked_at, connected_at, last_seen, purge_cursor FROM data_plane_nodes ",
            $rest
        )
    };
}

fn node_from_row(row: &sqlx::any::AnyRow) -> Result<NodeRecord> {
    let get_err = StoreError::from_sqlx;
    let labels: String = row.try_get("labels").map_err(get_err)?;
    let connected: i64 = row.try_get("connected").map_err(get_err)?;
    let acked: Option<i64> = row.try_get("acked_version").map_err(get_err)?;
    let nacked: Option<i64> = row.try_get("nacked_version").map_err(get_err)?;
    let nacked_at: Option<i64> = row.try_get("nacked_at").map_err(get_err)?;
    let purge_cursor: Option<i64> = row.try_get("purge_cursor").map_err(get_err)?;
    Ok(NodeRecord {
        gateway: row.try_get("gateway").map_err(get_err)?,
        node_id: row.try_get("node_id").map_err(get_err)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        software_version: row.try_get("software_version").map_err(get_err)?,
        connected: connected != 0,
        acked_version: acked.map(to_u64),
        acked_hash: row.try_get("acked_hash").map_err(get_err)?,
        nacked_version: nacked.map(to_u64),
        nack_reason: row.try_get("nack_reason").map_err(get_err)?,
        nacked_at: nacked_at.map(millis),
        connected_at: millis(row.try_get("connected_at").map_err(get_err)?),
        last_seen: millis(row.try_get("last_seen").map_err(get_err)?),
        purge_cursor: purge_cursor.map(to_u64),
    })
}

impl Store {
    /// Records a node whose stream just opened.
    pub async fn node_connected(&self, hello: &NodeHello) -> Result<()> {
        let _timer = StoreTimer::start("node_connected");
        let now = Utc::now().timestamp_millis();
        let labels = serde_json::to_string(&hello.labels).expect("labels serialize");
        let (version, hash) = match hello.version {
            0 => (None, None),
            v => (Some(to_i64(v)), Some(hello.hash.as_str())),
        };
        sqlx::query(
            "INSERT INTO data_plane_nodes (gateway, node_id, labels, software_version, connected, session_id, acked_version, acked_hash, connected_at, last_seen, purge_cursor) \
             VALUES ($1, $2, $3, $4, 1, $8, $5, $6, $7, $7, $9) \
             ON CONFLICT (gateway, node_id) DO UPDATE SET labels = $3, software_version = $4, connected = 1, session_id = $8, \
             acked_version = $5, acked_hash = $6, connected_at = $7, last_seen = $7, \
             purge_cursor = COALESCE($9, data_plane_nodes.purge_cursor)",
        )
        .bind(&hello.gateway)
        .bind(&hello.node_id)
        .bind(labels)
        .bind(&hello.software_version)
        .bind(version)
        .bind(hash)
        .bind(now)
        .bind(&hello.session_id)
        .bind(hello.purge_cursor.map(to_i64))
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    /// The node applied `version`.
    pub async fn node_acked(&self, gateway: &str, node_id: &str, version: u64, hash: &str) -> Result<()> {
        let _timer = StoreTimer::start("node_acked");
        sqlx::query("UPDATE data_plane_nodes SET acked_version = $1, acked_hash = $2, last_seen = $3 WHERE gateway = $4 AND node_id = $5")
            .bind(to_i64(version))
            .bind(hash)
            .bind(Utc::now().timestamp_millis())
            .bind(gateway)
            .bind(node_id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    /// The node refused `version`, for `reason`.
    pub async fn node_nacked(&self, gateway: &str, node_id: &str, version: u64, reason: &str) -> Result<()> {
        let _timer = StoreTimer::start("node_nacked");
        sqlx::query(
            "UPDATE data_plane_nodes SET nacked_version = $1, nack_reason = $2, nacked_at = $3, last_seen = $3 WHERE gateway = $4 AND node_id = $5",
        )
        .bind(to_i64(version))
        .bind(reason)
        .bind(Utc::now().timestamp_millis())
        .bind(gateway)
        .bind(node_id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    /// The node is alive (a heartbeat), or, with `connected` false, the
    /// stream `session_id` closed; a newer stream of the node is left alone.
    pub async fn node_seen(&self, gateway: &str, node_id: &str, session_id: &str, connected: bool) -> Result<()> {
        let _timer = StoreTimer::start("node_seen");
        sqlx::query("UPDATE data_plane_nodes SET connected = $1, last_seen = $2 WHERE gateway = $3 AND node_id = $4 AND session_id = $5")
            .bind(i64::from(connected))
            .bind(Utc::now().timestamp_millis())
            .bind(gateway)
            .bind(node_id)
            .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    /// Every node ever seen for a gateway, by node id.
    pub async fn nodes(&self, gateway: &str) -> Result<Vec<NodeRecord>> {
        let _timer = StoreTimer::start("nodes");
        let rows = sqlx::query(select_nodes!("WHERE gateway = $1 ORDER BY node_id"))
            .bind(gateway)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter().map(node_from_row).collect()
    }

    /// Every node of every gateway, by gateway and node id.
    pub async fn all_nodes(&self) -> Result<Vec<NodeRecord>> {
        let _timer = StoreTimer::start("all_nodes");
        let rows = sqlx::query(select_nodes!("ORDER BY gateway, node_id")).fetch_all(&self.pool).await.map_err(StoreError::from_sqlx)?;
        rows.iter().map(node_from_row).collect()
    }

    /// Removes node `node_id` of `gateway` unless it is live: connected and
    /// heard from since `live_since` (a live node's row would be missing
    /// until its next hello, so it is kept).
    pub async fn delete_node(&self, gateway: &str, node_id: &str, live_since: DateTime<Utc>) -> Result<NodeDeletion> {
        let _timer = StoreTimer::start("delete_node");
        let deleted = sqlx::query("DELETE FROM data_plane_nodes WHERE gateway = $1 AND node_id = $2 AND (connected = 0 OR last_seen < $3)")
            .bind(gateway)
            .bind(node_id)
            .bind(live_since.timestamp_millis())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?
            .rows_affected();
        if deleted > 0 {
            return Ok(NodeDeletion::Deleted);
        }
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM data_plane_nodes WHERE gateway = $1 AND node_id = $2")
            .bind(gateway)
            .bind(node_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(if exists.is_some() { NodeDeletion::Live } else { NodeDeletion::NotFound })
    }

    /// Removes every node, of any gateway, not heard from since `cutoff`;
    /// returns how many. A live node heartbeats, so only nodes gone for
    /// good (or a stream whose replica died) are that silent.
    pub async fn forget_nodes_silent_since(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let _timer = StoreTimer::start("forget_nodes_silent_since");
        let deleted = sqlx::query("DELETE FROM data_plane_nodes WHERE last_seen < $1")
            .bind(cutoff.timestamp_millis())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?
            .rows_affected();
        Ok(deleted)
    }
}
