//! The operator's commands: tamper alarms (`alarms list`, `alarms resolve`),
//! campaign alerts (`alerts list`) and the restoration of a log row from
//! the mirror (`restore`). Each returns the text it prints.
//!
//! `restore` prints (or, with `--execute`, runs) one transaction that puts
//! the mirror's original row back as a superuser, around the extension's
//! triggers (`session_replication_role = replica`): it deletes what holds
//! the row's place and inserts the original. A transactional logical
//! message (`pg_authaudit.restore`, naming tenant, seq and log id) travels
//! with it, so that the sidecar streaming the change records it as a
//! resolved alarm, not as new tampering, once it has checked that the row
//! inserted is the mirror's original (`tamper.rs`). The lockout snapshots
//! made so far are invalidated in the same transaction (they may hold
//! the replaced row).

use crate::config::{MongoConfig, PostgresConfig};
use crate::error::ToolError;
use crate::mongo_store::MongoStore;
use bson::{doc, Bson, Document, RawDocument};
use std::fmt::Write;

/// The prefix of the logical message a restoration carries.
pub const RESTORE_MESSAGE: &str = "pg_authaudit.restore";

fn text(d: &Document, k: &str) -> String {
    match d.get(k) {
        Some(Bson::String(s)) => s.clone(),
        Some(Bson::Int64(n)) => n.to_string(),
        Some(Bson::Int32(n)) => n.to_string(),
        Some(Bson::DateTime(t)) => t.try_to_rfc3339_string().unwrap_or_else(|_| t.to_string()),
        Some(Bson::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// `alarms list [--all]`: one line per alarm, unresolved ones first.
pub async fn alarms_list(mongo: &MongoConfig, all: bool) -> Result<String, ToolError> {
    let store = MongoStore::from_config(mongo).await?;
    let filter = if all {
        doc! {}
    } else {
        doc! {"resolved": {"$exists": false}}
    };
    let mut cursor = store
        .collection("tamper_events")
        .find(filter)
        .sort(doc! {"committed_at": 1, "_id": 1})
        .await?;
    let mut out = String::from("ID\tKIND\tCOLLECTION\tTENANT\tSEQ\tLOG_ID\tAT\tRESOLVED\n");
    let (mut open, mut resolved) = (0, 0);
    while cursor.advance().await? {
        let d = cursor.deserialize_current()?;
        let note = d.get_str("resolved").ok();
        if note.is_some() {
            resolved += 1;
        } else {
            open += 1;
        }
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            text(&d, "_id"),
            text(&d, "kind"),
            text(&d, "collection"),
            text(&d, "tenant_id"),
            text(&d, "seq"),
            text(&d, "log_id"),
            text(&d, "committed_at"),
            note.unwrap_or("-")
        );
        if let Ok(detail) = d.get_str("detail") {
            let _ = writeln!(out, "\t{detail}");
        }
    }
    let _ = writeln!(
        out,
        "alarms: {open} unresolved{}",
        if all {
            format!(", {resolved} resolved")
        } else {
            String::new()
        }
    );
    Ok(out)
}

/// `alarms resolve ID --note NOTE`: marks the alarm resolved (the running
/// sidecar's `/health` follows within five seconds).
pub async fn alarm_resolve(mongo: &MongoConfig, id: &str, note: &str) -> Result<String, ToolError> {
    if note.trim().is_empty() {
        return Err(ToolError::Refused(
            "--note is empty: say what was done (an incident number, \"restored from the mirror\")"
                .into(),
        ));
    }
    let store = MongoStore::from_config(mongo).await?;
    let alarms = store.collection("tamper_events");
    let Some(d) = alarms.find_one(doc! {"_id": id}).await? else {
        return Err(ToolError::Refused(format!(
            "no alarm {id:?} in tamper_events: `authaudit-sidecar alarms list --all` lists them"
        )));
    };
    if let Ok(was) = d.get_str("resolved") {
        return Ok(format!("alarm {id} was resolved already: {was}\n"));
    }
    resolve(&store, id, note).await?;
    Ok(format!("alarm {id} resolved: {note}\n"))
}

async fn resolve(store: &MongoStore, id: &str, note: &str) -> Result<bool, ToolError> {
    let r = store
        .collection("tamper_events")
        .update_one(
            doc! {"_id": id, "resolved": {"$exists": false}},
            doc! {"$set": {
                "resolved": note,
                "resolved_at": bson::DateTime::now(),
                "resolved_by": std::env::var("USER").unwrap_or_default(),
            }},
        )
        .await?;
    Ok(r.modified_count > 0)
}

/// `alerts list`: campaign alerts, newest first.
pub async fn alerts_list(
    mongo: &MongoConfig,
    tenant: Option<&str>,
    rule: Option<&str>,
    limit: i64,
) -> Result<String, ToolError> {
    let store = MongoStore::from_config(mongo).await?;
    let mut filter = doc! {};
    if let Some(t) = tenant {
        filter.insert("tenant_id", t);
    }
    if let Some(r) = rule {
        filter.insert("rule", r);
    }
    let mut cursor = store
        .collection("alerts")
        .find(filter)
        .sort(doc! {"raised_at": -1, "_id": 1})
        .limit(limit.max(1))
        .await?;
    let mut out = String::from(
        "ID\tRULE\tTENANT\tSEVERITY\tACCOUNTS\tSOURCES\tEVENTS\tFIRST_AT\tLAST_AT\tSEQS\n",
    );
    let mut n = 0;
    while cursor.advance().await? {
        let d = cursor.deserialize_current()?;
        n += 1;
        let list = |k: &str| -> String {
            d.get_array(k)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{} ({})\t{} ({})\t{}\t{}\t{}\t{}-{}",
            text(&d, "_id"),
            text(&d, "rule"),
            text(&d, "tenant_id"),
            text(&d, "severity"),
            text(&d, "account_count"),
            list("accounts"),
            text(&d, "source_count"),
            list("sources"),
            text(&d, "events"),
            text(&d, "first_at"),
            text(&d, "last_at"),
            text(&d, "first_seq"),
            text(&d, "last_seq"),
        );
    }
    let _ = writeln!(out, "alerts: {n} shown");
    Ok(out)
}

/// A SQL string literal (standard_conforming_strings on: only quotes
/// double).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn lit_or_null(s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".into(), lit)
}

/// The SQL that puts the mirror's document `d` (its parts joined) back
/// into `authaudit.auth_log`, in one transaction.
pub fn restore_sql(d: &RawDocument, parts: &[bson::RawDocumentBuf]) -> Result<String, ToolError> {
    use crate::recompute::document_text;
    let t = |f: &'static str| document_text(d, f, parts).map_err(ToolError::Row);
    let need = |f: &'static str| {
        t(f)?.ok_or_else(|| ToolError::Refused(format!("the mirror's document has no {f}")))
    };
    let micros = |f: &'static str| {
        d.get_i64(f)
            .map_err(|_| ToolError::Refused(format!("the mirror's document has no {f}")))
    };
    let (tenant, log_id) = (need("tenant_id")?, need("log_id")?);
    let seq = d
        .get_i64("seq")
        .map_err(|_| ToolError::Refused("the mirror's document has no seq".into()))?;
    let bytea = |f: &'static str| -> Result<String, ToolError> {
        let h = need(f)?;
        if h.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(format!("'\\x{h}'::bytea"))
        } else {
            Err(ToolError::Refused(format!(
                "{f} of the mirror's document is not hex"
            )))
        }
    };
    // Whole days and the microseconds after them: each product is exact in
    // the float8 that interval arithmetic goes through, whatever the year.
    let time = |us: i64| {
        format!(
            "(timestamptz 'epoch' + {} * interval '1 day' + {} * interval '1 microsecond')",
            us.div_euclid(86_400_000_000),
            us.rem_euclid(86_400_000_000)
        )
    };
    let message =
        serde_json::json!({"tenant_id": tenant, "seq": seq, "log_id": log_id}).to_string();
    let mut sql = String::new();
    let _ = writeln!(
        sql,
        "-- authaudit-sidecar restore: seq {seq} of tenant {tenant} (log_id {log_id}) from the mirror."
    );
    let _ = writeln!(
        sql,
        "-- Run as a superuser, as it is (psql -v ON_ERROR_STOP=1 -f restore.sql): it is one transaction."
    );
    sql.push_str("BEGIN;\nSET LOCAL standard_conforming_strings = on;\nSET LOCAL TimeZone = 'UTC';\nSET LOCAL session_replication_role = replica;\n");
    let _ = writeln!(
        sql,
        "SELECT pg_catalog.pg_logical_emit_message(true, {}, {});",
        lit(RESTORE_MESSAGE),
        lit(&message)
    );
    let _ = writeln!(
        sql,
        "DELETE FROM authaudit.auth_log WHERE tenant_id = {} AND seq = {seq};",
        lit(&tenant)
    );
    let _ = writeln!(
        sql,
        "INSERT INTO authaudit.auth_log (log_id, tenant_id, org_id, seq, event_type, user_id, ip, user_agent, channel, \
         occurred_at, recorded_at, metadata, format_version, prev_link, link_sha256, digest_sha512, digest_sha3_256)\n\
         VALUES ({}::uuid, {}, {}, {seq}, {}, {}, {}::inet, {}, {}, {}, {}, {}::jsonb, {}, {}, {}, {}, {});",
        lit(&log_id),
        lit(&tenant),
        lit_or_null(t("org_id")?.as_deref()),
        lit(&need("event_type")?),
        lit(&need("user_id")?),
        lit_or_null(t("ip")?.as_deref()),
        lit_or_null(t("user_agent")?.as_deref()),
        lit(&need("channel")?),
        time(micros("occurred_at_us")?),
        time(micros("recorded_at_us")?),
        lit(&need("metadata_text")?),
        d.get_i64("format_version")
            .or_else(|_| d.get_i32("format_version").map(i64::from))
            .unwrap_or(1),
        bytea("prev_link")?,
        bytea("link_sha256")?,
        bytea("digest_sha512")?,
        bytea("digest_sha3_256")?,
    );
    // Lockout snapshots may have been made over the row replaced: every one
    // made so far is passed over (docs/lockout.md, "Snapshots").
    let _ = writeln!(
        sql,
        "INSERT INTO authaudit.lockout_snapshot_invalidations AS i (tenant_id, seq, from_at)\n\
         SELECT {0}, max(seq) + 1, '-infinity' FROM authaudit.auth_log WHERE tenant_id = {0}\n\
         ON CONFLICT (tenant_id, seq) DO UPDATE SET from_at = '-infinity';",
        lit(&tenant)
    );
    sql.push_str("COMMIT;\n");
    Ok(sql)
}

/// `restore --tenant T --seq N [--execute --note NOTE]`.
pub async fn restore(
    postgres: &PostgresConfig,
    mongo: &MongoConfig,
    tenant: &str,
    seq: i64,
    execute: bool,
    note: Option<&str>,
) -> Result<String, ToolError> {
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    if execute && note.is_none() {
        return Err(ToolError::Refused(
            "--execute needs --note: say why (an incident number), for the record".into(),
        ));
    }
    let store = MongoStore::from_config(mongo).await?;
    let Some(d) = store
        .raw_collection("auth_log")
        .find_one(doc! {"tenant_id": tenant, "seq": seq})
        .await?
    else {
        return Err(ToolError::Refused(format!(
            "the mirror holds no row at seq {seq} of tenant {tenant}: nothing to restore from"
        )));
    };
    let mut parts = Vec::new();
    if d.get_document("parts").is_ok() {
        let mut c = store
            .raw_collection("auth_log_parts")
            .find(doc! {"log_doc_id": d.get_str("_id").unwrap_or_default()})
            .sort(doc! {"field": 1, "n": 1})
            .await?;
        while c.advance().await? {
            parts.push(c.current().to_raw_document_buf());
        }
    }
    // The mirror's row must be whole: its content gives its own link.
    let body = crate::recompute::body_of_document(&d, &parts)?;
    let stored = |f: &str| hex::decode(d.get_str(f).unwrap_or_default()).unwrap_or_default();
    let link = authaudit_core::chain::link_sha256(&stored("prev_link"), seq, &body);
    if !authaudit_core::chain::ct_eq(&link, &stored("link_sha256")) {
        return Err(ToolError::Refused(format!(
            "the mirror's row at seq {seq} of tenant {tenant} does not give its own link_sha256: the mirror's copy was changed; restore from a backup instead (witness-check names what the witness signed)"
        )));
    }
    let sql = restore_sql(&d, &parts)?;
    let open: Vec<String> = {
        let mut c = store
            .collection("tamper_events")
            .find(doc! {"tenant_id": tenant, "seq": seq, "resolved": {"$exists": false}})
            .await?;
        let mut ids = Vec::new();
        while c.advance().await? {
            ids.push(text(&c.deserialize_current()?, "_id"));
        }
        ids
    };
    if !execute {
        let mut out = sql;
        if !open.is_empty() {
            let _ = writeln!(
                out,
                "-- Then resolve its open alarms: {}",
                open.iter()
                    .map(|id| format!("authaudit-sidecar alarms resolve {id} --note '…'"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        return Ok(out);
    }
    let note = note.unwrap_or_default();
    let pg = crate::pg::connect(postgres).await?;
    pg.batch_execute(&sql).await?;
    let mut out = format!("restored seq {seq} of tenant {tenant} from the mirror\n");
    for id in open {
        if resolve(&store, &id, &format!("restored from the mirror: {note}")).await? {
            let _ = writeln!(out, "alarm {id} resolved: restored from the mirror: {note}");
        }
    }
    Ok(out)
}

/// `migrate`: moves the log documents of the first mirror format to the
/// current key ([`MongoStore::rekey_log`]); returns how many moved.
pub async fn migrate(mongo: &MongoConfig) -> Result<u64, ToolError> {
    let store = MongoStore::from_config(mongo).await?;
    let moved = store.rekey_log().await?;
    tracing::info!(
        documents = moved,
        "log documents moved to the tenant_id/log_id key"
    );
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_sql_reinserts_the_original_exactly() {
        let row: std::collections::HashMap<&str, &str> = [
            ("log_id", "6d1c0c8e-0000-4000-8000-000000000002"),
            ("tenant_id", "o'brien"),
            ("seq", "8"),
            ("event_type", "login_failed"),
            ("user_id", "zo\u{eb}'; DROP TABLE x; --"),
            ("ip", "198.51.100.7"),
            ("channel", "web"),
            ("occurred_at", "2026-11-28 04:11:20.102345+00"),
            ("recorded_at", "2026-11-28 04:11:20.102346+00"),
            ("metadata", r#"{"q": "it's \\ here"}"#),
            ("format_version", "1"),
            ("prev_link", "\\xcd01"),
            ("link_sha256", "\\xcd02"),
            ("digest_sha512", "\\xcd03"),
            ("digest_sha3_256", "\\xcd04"),
        ]
        .into();
        let doc = crate::documents::auth_log(&|c: &str| row.get(c).copied())
            .unwrap()
            .doc;
        let sql = restore_sql(&doc, &[]).unwrap();
        assert!(
            sql.contains("SET LOCAL session_replication_role = replica;"),
            "{sql}"
        );
        assert!(
            sql.contains("INSERT INTO authaudit.lockout_snapshot_invalidations"),
            "{sql}"
        );
        assert!(sql.contains("'zo\u{eb}''; DROP TABLE x; --'"), "{sql}");
        assert!(
            sql.contains("'{\"q\": \"it''s \\\\ here\"}'::jsonb"),
            "{sql}"
        );
        // 2026-11-28 04:11:20.102345 UTC: day 20785, 15080102345 µs after.
        assert!(
            sql.contains("(timestamptz 'epoch' + 20785 * interval '1 day' + 15080102345 * interval '1 microsecond')"),
            "{sql}"
        );
        assert!(sql.contains("'\\xcd02'::bytea"), "{sql}");
        assert!(sql.contains("NULL, 'web'"), "{sql}");
        assert!(
            sql.contains(r#"pg_logical_emit_message(true, 'pg_authaudit.restore', '{"tenant_id":"o''brien","seq":8,"log_id":"6d1c0c8e-0000-4000-8000-000000000002"}')"#),
            "{sql}"
        );
        assert!(sql.ends_with("COMMIT;\n"));
    }
}
