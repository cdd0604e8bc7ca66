//! Text output for people: diffs, version tables, the fleet, purges.

use std::fmt::Write;

use serde_json::Value;

/// `+ service users`, `~ route r` with each changed field, `- consumer c`,
/// then the counts.
pub(crate) fn diff(diff: &Value) -> String {
    let mut out = String::new();
    for change in diff["changes"].as_array().into_iter().flatten() {
        let sign = match change["action"].as_str() {
            Some("create") => '+',
            Some("delete") => '-',
            _ => '~',
        };
        let _ = writeln!(out, "{sign} {} {}", text(&change["kind"]), text(&change["name"]));
        if sign == '~' {
            for field in change["fields"].as_array().into_iter().flatten() {
                let _ = writeln!(out, "    {}: {} → {}", text(&field["path"]), compact(&field["old"]), compact(&field["new"]));
            }
        }
    }
    let s = &diff["summary"];
    let _ = writeln!(out, "{} to create, {} to update, {} to delete, {} unchanged", s["create"], s["update"], s["delete"], s["unchanged"]);
    out
}

pub(crate) fn applied(applied: &Value) -> String {
    let mut out = diff(&applied["diff"]);
    if applied["published"].as_bool() == Some(true) {
        let _ = writeln!(out, "published version {} ({})", applied["version"], short(&applied["hash"]));
    } else {
        let _ = writeln!(out, "no changes; version {} stays current", applied["version"]);
    }
    out
}

/// Columns as wide as their widest cell, two spaces apart; no trailing spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ");
            }
        }
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    }
    out
}

/// The items of a list answer (its `data`).
pub(crate) fn items(list: &Value) -> &[Value] {
    list["data"].as_array().map_or(&[], Vec::as_slice)
}

pub(crate) fn versions(list: &Value) -> String {
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|v| {
            let message = match v["rollback_of"].as_u64() {
                Some(n) if text(&v["message"]).is_empty() => format!("rollback to {n}"),
                _ => text(&v["message"]),
            };
            vec![v["version"].to_string(), short(&v["hash"]), text(&v["created_at"]), text(&v["author"]), message]
        })
        .collect();
    table(&["VERSION", "HASH", "CREATED", "AUTHOR", "MESSAGE"], &rows)
}

/// The audit log, newest first: when, who, from where, what.
pub(crate) fn audit(list: &Value) -> String {
    let or_dash = |value: &Value| if value.is_null() { "-".to_owned() } else { text(value) };
    let rows: Vec<Vec<String>> = items(list)
        .iter()
        .map(|e| {
            vec![
                text(&e["time"]),
                text(&e["author"]),
                or_dash(&e["source"]),
                text(&e["action"]),
                or_dash(&e["gateway"]),
                text(&e["target"]),
                or_dash(&e["version"]),
                text(&e["message"]),
            ]
        })
        .collect();
    table(&["TIME", "AUTHOR", "SOURCE", "ACTION", "GATEWAY", "TARGET", "VERSION", "MESSAGE"], &rows)
}

/// A version's metadata as YAML comments above its config, so the whole
/// output is a file `portico apply -f` takes.
pub(crate) fn version(version: &Value, config_yaml: &str) -> String {
    let mut out = format!(
        "# version {} ({})
# created {} by {}
",
        version["version"],
        text(&version["hash"]),
        text(&version["created_at"]),
        text(&version["author"])
    );
    if let Some(n) = version["rollback_of"].as_u64() {
        let _ = writeln!(out, "# rollback to version {n}");
    }
    for line in text(&version["message"]).lines() {
        let _ = writeln!(out, "# message: {line}");
    }
    out.push_str(config_yaml);
    out
}

pub(crate) fn rollback(target: u64, version: &Value, created: bool, diff: &Value) -> String {
    if !created {
        return format!("no changes; version {} already serves the content of version {target}\n", version["version"]);
    }
    let mut out = self::diff(diff);
    let _ = writeln!(out, "version {} now serves the content of version {target} ({})", version["version"], short(&version["hash"]));
    out
}

pub(crate) fn consumers(list: &[Value]) -> String {
    let rows: Vec<Vec<String>> =
        list.iter().map(|c| vec![text(&c["username"]), optional(&c["custom_id"]), tags(&c["tags"]), text(&c["id"])]).collect();
    table(&["USERNAME", "CUSTOM ID", "TAGS", "ID"], &rows)
}

/// A consumer's API keys: names and dates, never the keys or their hashes.
pub(crate) fn keys(list: &[Value]) -> String {
    let rows: Vec<Vec<String>> =
        list.iter().map(|c| vec![text(&c["name"]), text(&c["created_at"]), tags(&c["tags"]), text(&c["id"])]).collect();
    table(&["NAME", "CREATED", "TAGS", "ID"], &rows)
}

pub(crate) fn fleet(fleet: &Value) -> String {
    let rows: Vec<Vec<String>> = fleet["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| {
            let version = node["version"].as_u64().map_or_else(|| "-".to_owned(), |v| v.to_string());
            let labels: Vec<String> = node["labels"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", text(v))).collect();
            let labels = if labels.is_empty() { "-".to_owned() } else { labels.join(",") };
            let reason = node["reason"].as_str().unwrap_or_default().to_owned();
            vec![text(&node["node_id"]), version, text(&node["status"]), text(&node["last_seen"]), labels, reason]
        })
        .collect();
    let mut out = format!("current version: {}\n", fleet["current_version"]);
    out.push_str(&table(&["NODE", "VERSION", "STATUS", "LAST SEEN", "LABELS", "REASON"], &rows));
    if let Some(total) = fleet["total"].as_u64().filter(|total| *total > fleet["data"].as_array().map_or(0, |d| d.len() as u64)) {
        let _ = writeln!(out, "({total} nodes; the first {} shown)", fleet["data"].as_array().map_or(0, Vec::len));
    }
    out
}

/// What became of a cache purge: how many data planes applied it, then
/// each one that did not, with why, and each that connected after it.
pub(crate) fn purge(answer: &Value) -> String {
    let target = answer["purge"].as_object().and_then(|purge| purge.iter().next()).map(|(kind, value)| format!("{kind} {}", text(value)));
    let mut out = format!("purge {} ({})", answer["id"], target.unwrap_or_default());
    let (nodes, applied) = (answer["nodes"].as_u64().unwrap_or(0), answer["applied"].as_u64().unwrap_or(0));
    if nodes == 0 {
        out.push_str(": no data plane of this gateway is known\n");
        return out;
    }
    let planes = if nodes == 1 { "data plane" } else { "data planes" };
    let responses = if answer["removed"] == 1 { "stored response" } else { "stored responses" };
    let _ = writeln!(out, ": applied by {applied} of {nodes} {planes}, {} {responses} removed", answer["removed"]);
    for node in answer["not_applied"].as_array().into_iter().flatten() {
        let why = match node["reason"].as_str() {
            Some("disconnected") => "disconnected (it gets the purge when it reconnects; a restarted one starts past it)".to_owned(),
            Some("no_answer") => format!("no answer within {} ms", answer["timeout_ms"]),
            _ => text(&node["reason"]),
        };
        let _ = writeln!(out, "  {}: {why}", text(&node["node_id"]));
    }
    for node in answer["connected_after"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {}: connected after the purge (its cache holds nothing older; nothing to apply)", text(&node["node_id"]));
    }
    out
}

fn optional(value: &Value) -> String {
    if value.is_null() { "-".to_owned() } else { text(value) }
}

fn tags(value: &Value) -> String {
    let tags: Vec<String> = value.as_array().into_iter().flatten().map(text).collect();
    if tags.is_empty() { "-".to_owned() } else { tags.join(",") }
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

fn compact(value: &Value) -> String {
    if value.is_null() { "(none)".to_owned() } else { value.to_string() }
}

fn short(hash: &Value) -> String {
    text(hash).chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn version_columns_line_up_whatever_the_widths() {
        let list = json!({"data": [
            {"version": 12, "hash": "0123456789abcdef", "created_at": "2026-12-06T10:00:00Z", "author": "a-very-long-token-name", "message": "x"},
            {"version": 3, "hash": "fedcba9876543210", "created_at": "2026-12-06T09:00:00Z", "author": "admin", "message": "", "rollback_of": 1}
        ]});
        assert_eq!(
            versions(&list),
            "VERSION  HASH          CREATED               AUTHOR                  MESSAGE\n\
             12       0123456789ab  2026-12-06T10:00:00Z  a-very-long-token-name  x\n\
             3        fedcba987654  2026-12-06T09:00:00Z  admin                   rollback to 1\n"
        );
    }

    #[test]
    fn renders_each_kind_of_change() {
        let d = json!({
            "changes": [
                {"kind": "service", "name": "users", "action": "create", "fields": [{"path": "", "new": {}}]},
                {"kind": "route", "name": "api", "action": "update", "fields": [{"path": "/paths/0", "old": "/a", "new": "/b"}]},
                {"kind": "consumer", "name": "bob", "action": "delete", "fields": [{"path": "", "old": {}}]}
            ],
            "summary": {"create": 1, "update": 1, "delete": 1, "unchanged": 4}
        });
        assert_eq!(
            diff(&d),
            "+ service users\n~ route api\n    /paths/0: \"/a\" → \"/b\"\n- consumer bob\n1 to create, 1 to update, 1 to delete, 4 unchanged\n"
        );
    }

    #[test]
    fn a_purge_says_how_many_applied_it_and_why_the_others_did_not() {
        let answer = json!({
            "id": 7, "purge": {"url": "/users/7"}, "nodes": 4, "applied": 1, "removed": 1, "timeout_ms": 5000,
            "applied_by": [{"node_id": "a", "removed": 1}],
            "not_applied": [{"node_id": "b", "reason": "disconnected"}, {"node_id": "c", "reason": "no_answer"}],
            "connected_after": [{"node_id": "d"}]
        });
        let rendered = purge(&answer);
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[0], "purge 7 (url /users/7): applied by 1 of 4 data planes, 1 stored response removed");
        assert!(lines[1].starts_with("  b: disconnected"), "{rendered}");
        assert_eq!(lines[2], "  c: no answer within 5000 ms");
        assert_eq!(lines[3], "  d: connected after the purge (its cache holds nothing older; nothing to apply)");
        let nobody = json!({"id": 8, "purge": {"tag": "t"}, "nodes": 0, "applied": 0, "removed": 0, "applied_by": [], "not_applied": []});
        assert_eq!(purge(&nobody), "purge 8 (tag t): no data plane of this gateway is known\n");
    }

    #[test]
    fn fleet_shows_labels_and_only_a_current_reason() {
        let page = json!({
            "data": [
                {"node_id": "dp-a", "version": 7, "status": "in_sync", "last_seen": "2026-12-06T20:00:00Z", "reason": null,
                 "labels": {"env": "prod", "zone": "a"}, "last_rejection": {"version": 6, "reason": "old", "at": null}},
                {"node_id": "dp-b", "version": 6, "status": "rejected", "last_seen": "2026-12-06T20:00:00Z", "reason": "bad route",
                 "labels": {}}
            ],
            "total": 2, "limit": 1000, "offset": 0, "current_version": 7
        });
        let rendered = fleet(&page);
        let lines: Vec<&str> = rendered.lines().collect();
        assert_eq!(lines[0], "current version: 7");
        assert!(lines[2].starts_with("dp-a ") && lines[2].contains(" env=prod,zone=a") && !lines[2].contains("old"), "{}", lines[2]);
        assert_eq!(lines[1].find("VERSION"), lines[2].find('7'), "columns line up:\n{rendered}");
        assert!(lines[3].contains(" rejected ") && lines[3].ends_with(" bad route"), "{}", lines[3]);
        assert_eq!(lines.len(), 4);
    }
}
