//! The store's behaviour, run against both backends: every test exists once
//! per backend (`sqlite::…`, `postgres::…`).

#![allow(clippy::unwrap_used)] // test helpers, like #[test] bodies, may unwrap

use chrono::Utc;
use portico_cp::store::{
    AuditFilter, AuditRecord, Change, DEFAULT_GATEWAY, NodeDeletion, NodeHello, Publication, PurgeIds, Role, Store, StoreError,
};
use portico_shared::model::policy::cache::CachePurge;
use portico_shared::parse::from_json;
use portico_shared::{GatewayConfig, Snapshot};
use portico_test_support::TestDb;

fn snapshot(json: &str) -> Snapshot {
    Snapshot::compile(from_json::<GatewayConfig>(json.as_bytes()).unwrap()).unwrap()
}

fn one_service(url: &str) -> Snapshot {
    snapshot(&format!(r#"{{"services":[{{"name":"users","targets":[{{"url":"{url}"}}]}}]}}"#))
}

const TEST: Change<'static> = Change { author: "test", source: None, action: "test.write", target: "", message: "" };
const BY_TEST: Publication<'static> = Publication { change: TEST, rollback_of: None };

async fn open(db: &TestDb) -> Store {
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    store.ensure_default_gateway().await.unwrap();
    store
}

async fn default_gateway_exists_once(db: TestDb) {
    let store = open(&db).await;
    store.migrate().await.unwrap();
    store.ensure_default_gateway().await.unwrap();
    let gateways = store.list_gateways().await.unwrap();
    assert_eq!(gateways.len(), 1);
    assert_eq!(gateways[0].name, DEFAULT_GATEWAY);
    let current = store.current(DEFAULT_GATEWAY).await.unwrap().unwrap();
    assert_eq!(current.version, 1);
    assert_eq!(current.config, GatewayConfig::default());
}

async fn publish_appends_versions_in_order(db: TestDb) {
    let store = open(&db).await;
    let first = store.publish(DEFAULT_GATEWAY, 1, &one_service("http://a:1"), &BY_TEST).await.unwrap();
    let message = Publication { change: Change { author: "alice", message: "move users", ..TEST }, rollback_of: None };
    let second = store.publish(DEFAULT_GATEWAY, 2, &one_service("http://b:1"), &message).await.unwrap();
    assert_eq!((first.version, second.version), (2, 3));
    let current = store.current(DEFAULT_GATEWAY).await.unwrap().unwrap();
    assert_eq!(current.version, 3);
    assert_eq!(current.hash, one_service("http://b:1").hash);
    assert_eq!(current.config.services[0].targets[0].url, "http://b:1");

    let (page, total) = store.versions(DEFAULT_GATEWAY, 2, 0).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(page.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2]);
    assert_eq!((page[0].author.as_str(), page[0].message.as_str()), ("alice", "move users"));
    let (rest, _) = store.versions(DEFAULT_GATEWAY, 2, 2).await.unwrap();
    assert_eq!(rest.iter().map(|v| v.version).collect::<Vec<_>>(), [1]);

    let (record, bytes) = store.version(DEFAULT_GATEWAY, 2).await.unwrap().unwrap();
    assert_eq!(record.hash, portico_shared::snapshot::hash(&bytes));
    assert!(store.version(DEFAULT_GATEWAY, 99).await.unwrap().is_none());
}

async fn stale_publish_writes_nothing(db: TestDb) {
    let store = open(&db).await;
    store.publish(DEFAULT_GATEWAY, 1, &one_service("http://a:1"), &BY_TEST).await.unwrap();
    let err = store.publish(DEFAULT_GATEWAY, 1, &one_service("http://b:1"), &BY_TEST).await.unwrap_err();
    assert!(matches!(err, StoreError::Stale), "{err}");
    assert_eq!(store.current(DEFAULT_GATEWAY).await.unwrap().unwrap().config.services[0].targets[0].url, "http://a:1");
    assert!(matches!(store.publish("nope", 1, &one_service("http://a:1"), &BY_TEST).await, Err(StoreError::NotFound)));
}

async fn concurrent_publishes_get_distinct_versions(db: TestDb) {
    let store = open(&db).await;
    let tasks = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                let current = store.current(DEFAULT_GATEWAY).await.unwrap().unwrap();
                match store.publish(DEFAULT_GATEWAY, current.version, &one_service(&format!("http://t{i}:1")), &BY_TEST).await {
                    Ok(v) => return v.version,
                    Err(StoreError::Stale) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        })
    });
    let mut versions: Vec<u64> = futures_join(tasks).await;
    versions.sort();
    assert_eq!(versions, (2..=9).collect::<Vec<_>>());
}

async fn futures_join(tasks: impl Iterator<Item = tokio::task::JoinHandle<u64>>) -> Vec<u64> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

async fn gateways_are_independent(db: TestDb) {
    let store = open(&db).await;
    let created = store.create_gateway("mobile", "Mobile apps", &TEST).await.unwrap();
    assert_eq!(created.version, 1);
    assert!(matches!(store.create_gateway("mobile", "", &TEST).await, Err(StoreError::Conflict(_))));
    store.publish("mobile", 1, &one_service("http://m:1"), &BY_TEST).await.unwrap();
    assert_eq!(store.current(DEFAULT_GATEWAY).await.unwrap().unwrap().version, 1);
    assert_eq!(store.current("mobile").await.unwrap().unwrap().version, 2);
    assert!(store.delete_gateway("mobile", &TEST).await.unwrap());
    assert!(!store.delete_gateway("mobile", &TEST).await.unwrap());
    assert!(store.current("mobile").await.unwrap().is_none());
    assert_eq!(store.versions("mobile", 10, 0).await.unwrap().1, 0);
}

async fn nodes_track_acks_and_nacks(db: TestDb) {
    let store = open(&db).await;
    let hello = NodeHello {
        node_id: "dp-1".into(),
        gateway: DEFAULT_GATEWAY.into(),
        labels: [("zone".to_owned(), "a".to_owned())].into(),
        version: 0,
        hash: String::new(),
        software_version: "0.1.0".into(),
        session_id: "s1".into(),
        purge_cursor: Some(5),
    };
    store.node_connected(&hello).await.unwrap();
    let node = &store.nodes(DEFAULT_GATEWAY).await.unwrap()[0];
    assert!(node.connected);
    assert_eq!(node.purge_cursor, Some(5), "the cursor its new cache was given");
    assert_eq!((node.acked_version, node.labels.get("zone").map(String::as_str)), (None, Some("a")));

    store.node_acked(DEFAULT_GATEWAY, "dp-1", 1, "h1").await.unwrap();
    store.node_nacked(DEFAULT_GATEWAY, "dp-1", 2, "bad route").await.unwrap();
    let node = &store.nodes(DEFAULT_GATEWAY).await.unwrap()[0];
    assert_eq!((node.acked_version, node.acked_hash.as_deref()), (Some(1), Some("h1")));
    assert_eq!((node.nacked_version, node.nack_reason.as_deref()), (Some(2), Some("bad route")));
    assert!(node.nacked_at.is_some_and(|at| (Utc::now() - at).num_seconds() < 60), "a rejection keeps its time: {node:?}");

    store.node_seen(DEFAULT_GATEWAY, "dp-1", "s1", false).await.unwrap();
    assert!(!store.nodes(DEFAULT_GATEWAY).await.unwrap()[0].connected);
    store
        .node_connected(&NodeHello { version: 1, hash: "h1".into(), session_id: "s2".into(), purge_cursor: None, ..hello.clone() })
        .await
        .unwrap();
    let nodes = store.nodes(DEFAULT_GATEWAY).await.unwrap();
    assert_eq!(nodes.len(), 1, "reconnecting updates the same node");
    assert!(nodes[0].connected);
    assert_eq!(nodes[0].purge_cursor, Some(5), "resuming after a purge keeps the cursor its cache was started at");
    store.node_seen(DEFAULT_GATEWAY, "dp-1", "s1", false).await.unwrap();
    assert!(store.nodes(DEFAULT_GATEWAY).await.unwrap()[0].connected, "the old stream's late disconnect leaves the new one alone");
    store.node_connected(&NodeHello { session_id: "s3".into(), purge_cursor: Some(9), ..hello }).await.unwrap();
    assert_eq!(store.nodes(DEFAULT_GATEWAY).await.unwrap()[0].purge_cursor, Some(9), "a restarted node's new cache");
}

async fn nodes_are_removed_when_gone_but_not_while_live(db: TestDb) {
    let store = open(&db).await;
    let hello = |node_id: &str| NodeHello {
        node_id: node_id.into(),
        gateway: DEFAULT_GATEWAY.into(),
        session_id: format!("session-{node_id}"),
        ..NodeHello::default()
    };
    for node in ["live", "gone", "silent"] {
        store.node_connected(&hello(node)).await.unwrap();
    }
    store.node_seen(DEFAULT_GATEWAY, "gone", "session-gone", false).await.unwrap();
    let long_ago = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(store.delete_node(DEFAULT_GATEWAY, "live", long_ago).await.unwrap(), NodeDeletion::Live);
    assert_eq!(store.delete_node(DEFAULT_GATEWAY, "gone", long_ago).await.unwrap(), NodeDeletion::Deleted);
    assert_eq!(store.delete_node(DEFAULT_GATEWAY, "gone", long_ago).await.unwrap(), NodeDeletion::NotFound);
    let soon = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(
        store.delete_node(DEFAULT_GATEWAY, "silent", soon).await.unwrap(),
        NodeDeletion::Deleted,
        "connected but silent is not live"
    );

    assert_eq!(store.forget_nodes_silent_since(long_ago).await.unwrap(), 0, "a node heard from recently stays");
    assert_eq!(store.forget_nodes_silent_since(soon).await.unwrap(), 1);
    assert!(store.nodes(DEFAULT_GATEWAY).await.unwrap().is_empty());
}

async fn tokens_are_found_by_hash_and_revocable(db: TestDb) {
    let store = open(&db).await;
    store.create_token("ci", Role::ReadOnly, "hash-1", &TEST).await.unwrap();
    assert!(matches!(store.create_token("ci", Role::Admin, "hash-2", &TEST).await, Err(StoreError::Conflict(_))));
    let found = store.token_by_hash("hash-1").await.unwrap().unwrap();
    assert_eq!((found.name.as_str(), found.role), ("ci", Role::ReadOnly));
    assert_eq!(store.token("ci").await.unwrap(), Some(found));
    assert_eq!(store.token("nope").await.unwrap(), None);
    assert!(store.token_by_hash("hash-2").await.unwrap().is_none());
    assert_eq!(store.tokens().await.unwrap().len(), 1);
    assert!(store.revoke_token("ci", &TEST).await.unwrap());
    assert!(store.token_by_hash("hash-1").await.unwrap().is_none());
    assert!(!store.revoke_token("ci", &TEST).await.unwrap());
}

async fn purges_are_kept_in_order_per_gateway_with_each_nodes_answer(db: TestDb) {
    let store = open(&db).await;
    store.create_gateway("mobile", "", &TEST).await.unwrap();
    let first = store.record_purge(DEFAULT_GATEWAY, &CachePurge::Url("/users/7".into()), &TEST).await.unwrap();
    let mobile = store.record_purge("mobile", &CachePurge::Tag("user-7".into()), &TEST).await.unwrap();
    let second = store.record_purge(DEFAULT_GATEWAY, &CachePurge::Prefix("/users".into()), &TEST).await.unwrap();
    assert!(first < mobile && mobile < second, "ids grow across gateways: {first}, {mobile}, {second}");
    assert!(matches!(store.record_purge("nope", &CachePurge::Tag("t".into()), &TEST).await, Err(StoreError::NotFound)));

    let all: Vec<(u64, CachePurge)> = store.purges_after(DEFAULT_GATEWAY, 0).await.unwrap().into_iter().map(|p| (p.id, p.purge)).collect();
    assert_eq!(all, [(first, CachePurge::Url("/users/7".into())), (second, CachePurge::Prefix("/users".into()))]);
    let rest: Vec<u64> = store.purges_after(DEFAULT_GATEWAY, first).await.unwrap().iter().map(|p| p.id).collect();
    assert_eq!(rest, [second]);
    assert!(store.purges_after(DEFAULT_GATEWAY, second).await.unwrap().is_empty());
    assert_eq!(store.purge_ids(DEFAULT_GATEWAY).await.unwrap(), PurgeIds { gateway_latest: second, newest: second });
    assert_eq!(store.purge_ids("mobile").await.unwrap(), PurgeIds { gateway_latest: mobile, newest: second });
    let latest = store.latest_purges().await.unwrap();
    assert_eq!(latest.into_iter().collect::<Vec<_>>(), [(DEFAULT_GATEWAY.to_owned(), second), ("mobile".to_owned(), mobile)]);

    store.record_purge_ack(DEFAULT_GATEWAY, "dp-b", first, 3).await.unwrap();
    store.record_purge_ack(DEFAULT_GATEWAY, "dp-a", first, 0).await.unwrap();
    store.record_purge_ack(DEFAULT_GATEWAY, "dp-a", first, 1).await.unwrap();
    store.record_purge_ack("mobile", "dp-m", first, 9).await.unwrap();
    store.record_purge_ack(DEFAULT_GATEWAY, "dp-a", 999_999, 9).await.unwrap();
    let acks: Vec<(String, u64)> = store.purge_acks(first).await.unwrap().into_iter().map(|a| (a.node_id, a.removed)).collect();
    assert_eq!(acks, [("dp-a".to_owned(), 1), ("dp-b".to_owned(), 3)], "a node's last answer, and none for another gateway's purge");
    assert!(store.purge_acks(second).await.unwrap().is_empty());
}

async fn purges_are_forgotten_after_a_day_and_with_their_gateway(db: TestDb) {
    let store = open(&db).await;
    store.create_gateway("mobile", "", &TEST).await.unwrap();
    let mobile = store.record_purge("mobile", &CachePurge::Tag("t".into()), &TEST).await.unwrap();
    store.record_purge_ack("mobile", "dp-m", mobile, 1).await.unwrap();
    let default = store.record_purge(DEFAULT_GATEWAY, &CachePurge::Url("/a".into()), &TEST).await.unwrap();
    store.record_purge_ack(DEFAULT_GATEWAY, "dp-a", default, 2).await.unwrap();

    assert_eq!(store.forget_purges_before(Utc::now() - chrono::Duration::hours(1)).await.unwrap(), 0, "recent purges stay");
    assert!(store.delete_gateway("mobile", &TEST).await.unwrap());
    assert!(store.purge_acks(mobile).await.unwrap().is_empty(), "a gateway's purges go with it");
    store.create_gateway("mobile", "", &TEST).await.unwrap();
    assert!(store.purges_after("mobile", 0).await.unwrap().is_empty(), "a recreated gateway has no purges");

    assert_eq!(store.forget_purges_before(Utc::now() + chrono::Duration::seconds(1)).await.unwrap(), 1);
    assert!(store.purges_after(DEFAULT_GATEWAY, 0).await.unwrap().is_empty());
    assert!(store.purge_acks(default).await.unwrap().is_empty(), "answers go with their purge");
    let next = store.record_purge(DEFAULT_GATEWAY, &CachePurge::Url("/a".into()), &TEST).await.unwrap();
    assert!(next > default, "ids are never reused, even once every purge is gone: {next} after {default}");
}

/// A proto's sources and compiled set are stored with the config, and read
/// back as the same snapshot.
async fn protos_are_stored_with_the_config(db: TestDb) {
    let store = open(&db).await;
    let source = "syntax = \"proto3\";\npackage shop;\nimport \"google/api/annotations.proto\";\nservice Orders {\n  rpc Get(Id) returns (Id) { option (google.api.http) = { get: \"/v1/{id}\" }; }\n}\nmessage Id { string id = 1; }\n";
    let published = snapshot(&serde_json::json!({"protos": [{"name": "shop", "files": {"shop/orders.proto": source}}]}).to_string());
    assert!(published.config.protos[0].descriptor_set.is_some(), "compiled before it is stored");
    store.publish(DEFAULT_GATEWAY, 1, &published, &BY_TEST).await.unwrap();
    let current = store.current(DEFAULT_GATEWAY).await.unwrap().unwrap();
    assert_eq!(current.hash, published.hash);
    assert_eq!(current.config, published.config);
    assert!(current.config.protos[0].pool().unwrap().get_service_by_name("shop.Orders").is_some(), "the stored set decodes");
}

/// An audit entry as `(author, source, action, gateway, target, version, message)`.
type AuditRow = (String, Option<String>, String, Option<String>, String, Option<u64>, String);

/// The whole audit log, newest first.
async fn audit_rows(store: &Store) -> Vec<AuditRow> {
    let (records, total) = store.audit_log(&AuditFilter::default(), 1000, 0).await.unwrap();
    assert_eq!(total, records.len() as u64);
    records.into_iter().map(|r| (r.author, r.source, r.action, r.gateway, r.target, r.version, r.message)).collect()
}

fn by(author: &'static str, action: &'static str, target: &'static str) -> Change<'static> {
    Change { author, source: Some("10.0.0.7:50123"), action, target, message: "" }
}

async fn every_change_is_audited_with_it_and_failed_ones_are_not(db: TestDb) {
    let store = open(&db).await;
    let start = audit_rows(&store).await;
    assert_eq!(
        start,
        [(
            "portico".to_owned(),
            None,
            "gateway.create".to_owned(),
            Some("default".to_owned()),
            "default".to_owned(),
            Some(1),
            "gateway created".to_owned()
        )],
        "the control plane's own default gateway"
    );
    store.ensure_default_gateway().await.unwrap();
    assert_eq!(audit_rows(&store).await.len(), 1, "an existing default gateway is not created again");

    let change = Change { message: "add users", ..by("alice", "service.create", "users") };
    store.publish(DEFAULT_GATEWAY, 1, &one_service("http://a:1"), &Publication { change, rollback_of: None }).await.unwrap();
    assert!(matches!(store.publish(DEFAULT_GATEWAY, 1, &one_service("http://b:1"), &BY_TEST).await, Err(StoreError::Stale)));
    store.create_gateway("mobile", "", &by("bob", "gateway.create", "mobile")).await.unwrap();
    assert!(matches!(store.create_gateway("mobile", "", &by("bob", "gateway.create", "mobile")).await, Err(StoreError::Conflict(_))));
    store.create_token("ci", Role::ReadOnly, "hash-1", &by("alice", "token.create", "ci")).await.unwrap();
    assert!(matches!(
        store.create_token("ci", Role::Admin, "hash-2", &by("alice", "token.create", "ci")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.revoke_token("ci", &by("bob", "token.revoke", "ci")).await.unwrap());
    assert!(!store.revoke_token("ci", &by("bob", "token.revoke", "ci")).await.unwrap());
    store.record_purge("mobile", &CachePurge::Prefix("/users".into()), &by("bob", "cache.purge", "prefix /users")).await.unwrap();
    assert!(store.record_purge("nope", &CachePurge::Tag("t".into()), &by("bob", "cache.purge", "tag t")).await.is_err());
    assert!(store.delete_gateway("mobile", &by("alice", "gateway.delete", "mobile")).await.unwrap());
    assert!(!store.delete_gateway("mobile", &by("alice", "gateway.delete", "mobile")).await.unwrap());

    let source = Some("10.0.0.7:50123".to_owned());
    let row = |author: &str, action: &str, gateway: Option<&str>, target: &str, version: Option<u64>, message: &str| {
        (author.to_owned(), source.clone(), action.to_owned(), gateway.map(str::to_owned), target.to_owned(), version, message.to_owned())
    };
    let mut expected = vec![
        row("alice", "gateway.delete", Some("mobile"), "mobile", None, ""),
        row("bob", "cache.purge", Some("mobile"), "prefix /users", None, ""),
        row("bob", "token.revoke", None, "ci", None, ""),
        row("alice", "token.create", None, "ci", None, ""),
        row("bob", "gateway.create", Some("mobile"), "mobile", Some(1), ""),
        row("alice", "service.create", Some("default"), "users", Some(2), "add users"),
    ];
    expected.extend(start);
    assert_eq!(audit_rows(&store).await, expected, "each change once, newest first; nothing for a refused one");
    let (versions, _) = store.versions(DEFAULT_GATEWAY, 1, 0).await.unwrap();
    assert_eq!((versions[0].author.as_str(), versions[0].message.as_str()), ("alice", "add users"), "the version row keeps its author");
}

async fn audit_log_is_filtered_and_paged_newest_first(db: TestDb) {
    let store = open(&db).await;
    store.create_gateway("mobile", "", &by("bob", "gateway.create", "mobile")).await.unwrap();
    for (i, author) in ["alice", "bob", "alice"].into_iter().enumerate() {
        let change = by(author, "service.update", "users");
        store
            .publish(DEFAULT_GATEWAY, 1 + i as u64, &one_service(&format!("http://d{i}:1")), &Publication { change, rollback_of: None })
            .await
            .unwrap();
        let change = by(author, "route.create", "r");
        store
            .publish("mobile", 1 + i as u64, &one_service(&format!("http://m{i}:1")), &Publication { change, rollback_of: None })
            .await
            .unwrap();
    }
    let page = |filter: AuditFilter<'static>, limit: u32, offset: u64| {
        let store = store.clone();
        async move {
            let (records, total) = store.audit_log(&filter, limit, offset).await.unwrap();
            (
                records.iter().map(|r: &AuditRecord| (r.gateway.clone().unwrap_or_default(), r.version.unwrap_or(0))).collect::<Vec<_>>(),
                total,
            )
        }
    };
    let pairs = |list: &[(&str, u64)]| list.iter().map(|(g, v)| ((*g).to_owned(), *v)).collect::<Vec<_>>();
    let default = AuditFilter { gateway: Some(DEFAULT_GATEWAY), ..AuditFilter::default() };
    assert_eq!(page(default, 2, 0).await, (pairs(&[("default", 4), ("default", 3)]), 4), "newest first, total of the filter");
    assert_eq!(page(default, 2, 2).await, (pairs(&[("default", 2), ("default", 1)]), 4));
    let alice_on_mobile = AuditFilter { gateway: Some("mobile"), author: Some("alice"), ..AuditFilter::default() };
    assert_eq!(page(alice_on_mobile, 10, 0).await, (pairs(&[("mobile", 4), ("mobile", 2)]), 2));
    let exact = AuditFilter { action: Some("route.create"), ..AuditFilter::default() };
    assert_eq!(page(exact, 10, 0).await.1, 3);
    let family = AuditFilter { action: Some("gateway"), ..AuditFilter::default() };
    assert_eq!(page(family, 10, 0).await, (pairs(&[("mobile", 1), ("default", 1)]), 2), "a subject matches each of its actions");
    assert_eq!(page(AuditFilter { action: Some("gate"), ..AuditFilter::default() }, 10, 0).await.1, 0, "not a prefix match");
    assert_eq!(page(AuditFilter { author: Some("carol"), ..AuditFilter::default() }, 10, 0).await, (vec![], 0));

    let (newest, _) = store.audit_log(&default, 1, 0).await.unwrap();
    let older = AuditFilter { before: Some(newest[0].id), ..default };
    store.publish(DEFAULT_GATEWAY, 4, &one_service("http://late:1"), &BY_TEST).await.unwrap();
    assert_eq!(page(older, 2, 0).await, (pairs(&[("default", 3), ("default", 2)]), 3), "a cursor is not shifted by new entries");
}

async fn audit_entries_are_forgotten_by_age_and_outlive_their_gateway(db: TestDb) {
    let store = open(&db).await;
    store.create_gateway("mobile", "", &by("bob", "gateway.create", "mobile")).await.unwrap();
    store.delete_gateway("mobile", &by("bob", "gateway.delete", "mobile")).await.unwrap();
    let mobile = AuditFilter { gateway: Some("mobile"), ..AuditFilter::default() };
    assert_eq!(store.audit_log(&mobile, 10, 0).await.unwrap().1, 2, "a deleted gateway's entries stay");
    let (before, _) = store.audit_log(&AuditFilter::default(), 1, 0).await.unwrap();
    assert_eq!(store.forget_audit_before(Utc::now() - chrono::Duration::hours(1)).await.unwrap(), 0, "recent entries stay");
    assert_eq!(store.forget_audit_before(Utc::now() + chrono::Duration::seconds(1)).await.unwrap(), 3);
    assert_eq!(store.audit_log(&AuditFilter::default(), 10, 0).await.unwrap().1, 0);
    store.create_gateway("mobile", "", &by("bob", "gateway.create", "mobile")).await.unwrap();
    let (after, _) = store.audit_log(&AuditFilter::default(), 1, 0).await.unwrap();
    assert!(after[0].id > before[0].id, "ids are never reused: {} after {}", after[0].id, before[0].id);
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $test() { super::$test(super::TestDb::sqlite()).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $test() { super::$test(super::TestDb::postgres().await).await })*
        }
    };
}

on_both_backends!(
    default_gateway_exists_once,
    publish_appends_versions_in_order,
    stale_publish_writes_nothing,
    concurrent_publishes_get_distinct_versions,
    gateways_are_independent,
    nodes_track_acks_and_nacks,
    nodes_are_removed_when_gone_but_not_while_live,
    tokens_are_found_by_hash_and_revocable,
    purges_are_kept_in_order_per_gateway_with_each_nodes_answer,
    purges_are_forgotten_after_a_day_and_with_their_gateway,
    protos_are_stored_with_the_config,
    every_change_is_audited_with_it_and_failed_ones_are_not,
    audit_log_is_filtered_and_paged_newest_first,
    audit_entries_are_forgotten_by_age_and_outlive_their_gateway,
);

#[tokio::test]
async fn rejects_unsupported_database_urls() {
    assert!(matches!(Store::connect("mysql://x").await, Err(StoreError::Config(_))));
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    let err = Store::connect("postgres://postgres@127.0.0.1:1/none").await.err().unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}
