//! Cache purges: `POST /api/v1/gateways/{gw}/cache/purge` with one of
//! `url`, `prefix` or `tag`. The purge is recorded, travels to every
//! connected data plane of the gateway on its config stream, and the
//! answer waits (bounded by `timeout_ms`) until each connected node has
//! applied it, reading their answers from the store (a node may be
//! connected to another control-plane replica). Nodes that did not apply
//! it are listed with the reason; a disconnected one that kept running is
//! sent the purge when it reconnects. A node whose new cache was started
//! past the purge (it connected after it, say restarted in a rolling
//! deploy) is never sent it: it is not waited for and is listed apart. A
//! purge is not config: it publishes no version, but it is in the audit
//! log (action `cache.purge`, target such as `prefix /users`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use portico_shared::model::policy::cache::CachePurge;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};

use super::audit::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, Query, change_message};
use super::fleet::{is_live, stale_before};
use super::{AppState, known_name};
use crate::store::{NodeRecord, PurgeAckRecord};

/// How long the answer waits for data planes by default.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// The longest wait a client may ask for.
pub const MAX_TIMEOUT_MS: u64 = 30_000;
/// How often the store is read for answers while waiting.
const POLL: Duration = Duration::from_millis(50);

/// The fields a purge may have; it has exactly one.
const TARGETS: [&str; 3] = ["url", "prefix", "tag"];

/// How long to wait for data planes.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgeParams {
    /// How long to wait for the connected data planes to apply the purge,
    /// 0 to 30000 ms (default 5000). With 0 the answer comes at once.
    #[param(maximum = 30_000)]
    pub timeout_ms: Option<u64>,
}

impl PurgeParams {
    fn timeout_ms(self) -> Result<u64, ApiError> {
        let timeout = self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout > MAX_TIMEOUT_MS {
            return Err(ApiError::invalid("timeout_ms", format!("must be 0 to {MAX_TIMEOUT_MS}")));
        }
        Ok(timeout)
    }
}

/// What became of a purge.
#[derive(Debug, Serialize, ToSchema)]
pub struct PurgeOutcome {
    /// The purge's id; data planes apply purges in id order.
    pub id: u64,
    /// What was purged.
    pub purge: CachePurge,
    /// The data planes of the gateway's fleet view, connected or not:
    /// `applied` plus the entries of `not_applied` and `connected_after`.
    pub nodes: u64,
    /// How many data planes applied it.
    pub applied: u64,
    /// Stored responses it removed, all data planes together.
    pub removed: u64,
    /// Each data plane that applied it, by node id.
    pub applied_by: Vec<NodeApplied>,
    /// Each data plane that did not, by node id, and why.
    pub not_applied: Vec<NodeNotApplied>,
    /// Each data plane that connected with a new cache after the purge was
    /// recorded, by node id: the control plane started its cache past the
    /// purge (it dropped what it held before connecting), so it holds
    /// nothing the purge would remove. It is never sent the purge and does
    /// not answer it; the answer does not wait for it.
    pub connected_after: Vec<NodeConnectedAfter>,
    /// How long the answer waited at most for connected data planes.
    pub timeout_ms: u64,
}

/// A data plane that applied a purge.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeApplied {
    pub node_id: String,
    /// Stored responses the purge removed on this node.
    pub removed: u64,
}

/// A data plane whose cache started after a purge: it needs not apply it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeConnectedAfter {
    pub node_id: String,
}

/// A data plane that did not apply a purge (yet).
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeNotApplied {
    pub node_id: String,
    pub reason: NotAppliedReason,
}

/// Why a data plane did not apply a purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotAppliedReason {
    /// Not connected (the fleet view's `disconnected`): if it kept running
    /// it gets the purge when it reconnects; if it restarted, its new cache
    /// is started past the purge when it connects, dropping what it stored
    /// before.
    Disconnected,
    /// Connected, but it had not confirmed the purge within `timeout_ms`;
    /// it still gets it, in order.
    NoAnswer,
}

/// Removes stored responses from every data plane of the gateway.
///
/// The body names exactly one of `url` (every stored variant of that URL),
/// `prefix` (everything under a path) or `tag` (every response tagged so).
/// The answer says how many data planes applied it, which connected after
/// it (and need not), and why the others did not.
#[utoipa::path(post, path = "/api/v1/gateways/{gw}/cache/purge", tag = "cache",
    params(("gw" = String, Path, description = "Gateway name"), PurgeParams),
    request_body = CachePurge,
    responses(
        (status = 200, body = PurgeOutcome, description = "Sent to every connected data plane; the answer says which applied it within `timeout_ms`, which connected after it, and lists the others"),
        (status = 400, body = ErrorBody, description = "No target, several, or a bad value: the field is named"),
        (status = 404, body = ErrorBody, description = "No such gateway")))]
pub(super) async fn purge(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(gw): Path<String>,
    Query(params): Query<PurgeParams>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<PurgeOutcome>, ApiError> {
    let timeout_ms = params.timeout_ms()?;
    let purge = purge_of(body)?;
    let message = change_message(&headers)?;
    // A URL's query may hold keys: the audit log, kept for months, gets its path only.
    let value = purge.value();
    let target = format!("{} {}", purge.field(), value.split_once('?').map_or(value, |(path, _)| path));
    known_name(&gw, "gateway")?;
    let unknown = || ApiError::not_found(format!("gateway '{gw}'"));
    state.store.gateway(&gw).await?.ok_or_else(unknown)?;
    let id = state.publisher.purge(&gw, &purge, &caller.change("cache.purge", &target, &message)).await.map_err(|e| match e {
        crate::store::StoreError::NotFound => unknown(),
        other => other.into(),
    })?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let acks = state.store.purge_acks(id).await?;
        let nodes = state.store.nodes(&gw).await?;
        let stale_before = stale_before(&state);
        let waiting = nodes
            .iter()
            .any(|node| is_live(node, stale_before) && !connected_after(node, id) && !acks.iter().any(|ack| ack.node_id == node.node_id));
        let now = Instant::now();
        if !waiting || now >= deadline {
            let live = |node: &NodeRecord| is_live(node, stale_before);
            return Ok(Json(outcome(id, purge, timeout_ms, acks, &nodes, live)));
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
}

/// The one purge a body names, checked: a body with none, several, or
/// another field is a `400` naming the field.
fn purge_of(body: Map<String, Value>) -> Result<CachePurge, ApiError> {
    if let Some(other) = body.keys().find(|key| !TARGETS.contains(&key.as_str())) {
        return Err(ApiError::invalid(other.as_str(), "unknown field: a purge has one of url, prefix or tag"));
    }
    let given: Vec<&str> = TARGETS.into_iter().filter(|target| body.contains_key(*target)).collect();
    let field = match given[..] {
        [one] => one,
        [] => return Err(ApiError::invalid("url", "name what to purge: one of url, prefix or tag")),
        [_, another, ..] => return Err(ApiError::invalid(another, "a purge has only one of url, prefix or tag: send one per purge")),
    };
    let purge: CachePurge = serde_json::from_value(Value::Object(body)).map_err(|_| ApiError::invalid(field, "must be a string"))?;
    purge.validate()?;
    Ok(purge)
}

/// Whether `node`'s cache was started past purge `id`.
fn connected_after(node: &NodeRecord, id: u64) -> bool {
    node.purge_cursor.is_some_and(|cursor| cursor >= id)
}

/// The answer: every node that applied the purge, every node of the fleet
/// view whose cache started past it, and every other, disconnected or
/// silent.
fn outcome(
    id: u64,
    purge: CachePurge,
    timeout_ms: u64,
    acks: Vec<PurgeAckRecord>,
    nodes: &[NodeRecord],
    live: impl Fn(&NodeRecord) -> bool,
) -> PurgeOutcome {
    let (after, others): (Vec<&NodeRecord>, Vec<&NodeRecord>) =
        nodes.iter().filter(|node| !acks.iter().any(|ack| ack.node_id == node.node_id)).partition(|node| connected_after(node, id));
    let connected_after: Vec<NodeConnectedAfter> =
        after.into_iter().map(|node| NodeConnectedAfter { node_id: node.node_id.clone() }).collect();
    let not_applied: Vec<NodeNotApplied> = others
        .into_iter()
        .map(|node| NodeNotApplied {
            node_id: node.node_id.clone(),
            reason: if live(node) { NotAppliedReason::NoAnswer } else { NotAppliedReason::Disconnected },
        })
        .collect();
    let applied_by: Vec<NodeApplied> = acks.into_iter().map(|ack| NodeApplied { node_id: ack.node_id, removed: ack.removed }).collect();
    PurgeOutcome {
        id,
        purge,
        nodes: (applied_by.len() + not_applied.len() + connected_after.len()) as u64,
        applied: applied_by.len() as u64,
        removed: applied_by.iter().map(|node| node.removed).sum(),
        applied_by,
        not_applied,
        connected_after,
        timeout_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: Value) -> Map<String, Value> {
        json.as_object().cloned().unwrap()
    }

    fn field(json: Value) -> Option<String> {
        match purge_of(body(json)) {
            Err(ApiError::Invalid { field, .. }) => field,
            Err(ApiError::Config(errors)) => Some(errors.first().field().to_owned()),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_purge_names_exactly_one_target_and_errors_name_the_field() {
        assert_eq!(purge_of(body(serde_json::json!({"url": "/users/7"}))).unwrap(), CachePurge::Url("/users/7".into()));
        assert_eq!(purge_of(body(serde_json::json!({"tag": "user-7"}))).unwrap(), CachePurge::Tag("user-7".into()));
        assert_eq!(field(serde_json::json!({})).as_deref(), Some("url"));
        assert_eq!(field(serde_json::json!({"url": "/a", "tag": "t"})).as_deref(), Some("tag"));
        assert_eq!(field(serde_json::json!({"prefix": 7})).as_deref(), Some("prefix"));
        assert_eq!(field(serde_json::json!({"prefix": "/a?x=1"})).as_deref(), Some("prefix"));
        assert_eq!(field(serde_json::json!({"url": "/a", "path": "/b"})).as_deref(), Some("path"));
    }

    #[test]
    fn the_answer_counts_appliers_lists_nodes_started_past_it_apart_and_the_others_with_their_reason() {
        let node = |id: &str, connected: bool, purge_cursor: Option<u64>| NodeRecord {
            gateway: "default".into(),
            node_id: id.into(),
            labels: Default::default(),
            software_version: String::new(),
            connected,
            acked_version: None,
            acked_hash: None,
            nacked_version: None,
            nack_reason: None,
            nacked_at: None,
            connected_at: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
            purge_cursor,
        };
        let ack = |id: &str, removed| PurgeAckRecord { node_id: id.into(), removed, applied_at: chrono::Utc::now() };
        let nodes = [
            node("a", true, None),
            node("b", true, Some(7)),
            node("c", false, None),
            node("d", true, Some(6)),
            node("e", true, Some(7)),
            node("f", false, Some(9)),
        ];
        let answer = outcome(7, CachePurge::Tag("t".into()), 5_000, vec![ack("a", 3), ack("b", 2)], &nodes, |n| n.connected);
        assert_eq!((answer.nodes, answer.applied, answer.removed), (6, 2, 5));
        let applied: Vec<&str> = answer.applied_by.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(applied, ["a", "b"], "an answer counts, whatever the node's cursor");
        let not_applied: Vec<(&str, NotAppliedReason)> = answer.not_applied.iter().map(|n| (n.node_id.as_str(), n.reason)).collect();
        assert_eq!(not_applied, [("c", NotAppliedReason::Disconnected), ("d", NotAppliedReason::NoAnswer)], "d started before the purge");
        let after: Vec<&str> = answer.connected_after.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(after, ["e", "f"], "caches started at or past the purge, connected or not");
    }
}
