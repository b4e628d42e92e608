//! Tamper alarms. The log and its checkpoints only grow: the recording
//! functions insert, and the one recorded removal is retention, whose
//! transaction deletes a tenant's oldest rows and appends a
//! `retention_applied` event naming the range. Any other UPDATE, DELETE or
//! TRUNCATE of `auth_log` or `checkpoints` that arrives over replication
//! was made around the extension (a superuser with its triggers disabled,
//! say) and is tampering: the mirror keeps the original rows, and each
//! change is reported by tenant and seq.
//!
//! A transaction's changes are collected as they arrive ([`TxChanges`]) and
//! judged at its commit, when its `retention_applied` event, if any, has
//! been seen.

use crate::documents::Table;
use authaudit_core::exact_json::text_at;
use bson::RawDocumentBuf;

/// What was done to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Update,
    Delete,
    Truncate,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Truncate => "truncate",
        }
    }
}

/// One change that is tampering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    pub kind: Kind,
    pub table: Table,
    /// `None` for a TRUNCATE (every tenant).
    pub tenant: Option<String>,
    /// `None` for a TRUNCATE, and for a DELETE that carried the key alone
    /// (an extension before 0.6.0 sends no more).
    pub seq: Option<i64>,
    pub log_id: Option<String>,
}

impl Tamper {
    /// The alarm's record in the `tamper_events` collection; `id` makes a
    /// replay of the same change write the same document.
    pub fn document(&self, id: &str, commit_lsn: &str, commit_unix_us: i64) -> RawDocumentBuf {
        let mut d = RawDocumentBuf::new();
        d.append("_id", id);
        d.append("kind", self.kind.as_str());
        d.append("collection", self.table.collection());
        match &self.tenant {
            Some(t) => d.append("tenant_id", t.as_str()),
            None => d.append("tenant_id", bson::RawBson::Null),
        }
        match self.seq {
            Some(s) => d.append("seq", s),
            None => d.append("seq", bson::RawBson::Null),
        }
        match &self.log_id {
            Some(l) => d.append("log_id", l.as_str()),
            None => d.append("log_id", bson::RawBson::Null),
        }
        d.append("commit_lsn", commit_lsn);
        d.append(
            "committed_at",
            bson::DateTime::from_millis(commit_unix_us.div_euclid(1000)),
        );
        d
    }
}

/// A deleted log row, judged at commit.
#[derive(Debug, Clone)]
struct Removed {
    tenant: String,
    seq: Option<i64>,
    log_id: Option<String>,
}

/// A range a `retention_applied` event of the transaction accounts for.
#[derive(Debug, Clone)]
struct Retained {
    tenant: String,
    from_seq: i64,
    to_seq: i64,
}

/// A row the transaction says it restores from the mirror (its
/// `pg_authaudit.restore` message, `operator.rs`), and the row it inserted
/// there.
#[derive(Debug, Clone, PartialEq)]
pub struct Restoration {
    pub tenant: String,
    pub seq: i64,
    pub log_id: String,
    /// The document of the row the transaction inserted at (tenant, seq).
    pub inserted: Option<RawDocumentBuf>,
}

impl Restoration {
    /// Whether the inserted row is `original` (the mirror's document): the
    /// same link and the same canonical content.
    pub fn restores(&self, original: &bson::RawDocument) -> bool {
        let Some(inserted) = &self.inserted else {
            return false;
        };
        let link = |d: &bson::RawDocument| d.get_str("link_sha256").ok().map(str::to_owned);
        let body = |d: &bson::RawDocument| crate::recompute::body_of_document(d, &[]).ok();
        link(inserted).is_some()
            && link(inserted) == link(original)
            && body(inserted).is_some()
            && body(inserted) == body(original)
    }

    /// Its record in `tamper_events`: resolved from the start.
    pub fn document(&self, id: &str, commit_lsn: &str, commit_unix_us: i64) -> RawDocumentBuf {
        let mut d = RawDocumentBuf::new();
        d.append("_id", id);
        d.append("kind", "restore");
        d.append("collection", Table::AuthLog.collection());
        d.append("tenant_id", self.tenant.as_str());
        d.append("seq", self.seq);
        d.append("log_id", self.log_id.as_str());
        d.append("commit_lsn", commit_lsn);
        let at = bson::DateTime::from_millis(commit_unix_us.div_euclid(1000));
        d.append("committed_at", at);
        d.append(
            "resolved",
            "restored from the mirror's original (authaudit-sidecar restore)",
        );
        d.append("resolved_at", at);
        d
    }
}

/// What a transaction did to the log, judged at its commit.
#[derive(Debug, Default, PartialEq)]
pub struct Judged {
    /// Changes that are tampering, unless a restoration below accounts for
    /// them once its row is checked against the mirror.
    pub tampers: Vec<Tamper>,
    pub restorations: Vec<Restoration>,
}

impl Judged {
    /// Drops the tampering a checked restoration accounts for: its own
    /// delete or update of the restored row.
    pub fn restored(&mut self, r: &Restoration) {
        self.tampers.retain(|t| {
            !(t.table == Table::AuthLog
                && matches!(t.kind, Kind::Delete | Kind::Update)
                && t.tenant.as_deref() == Some(r.tenant.as_str())
                && t.seq == Some(r.seq))
        });
    }
}

/// One transaction's changes to the log and its checkpoints.
#[derive(Debug, Default)]
pub struct TxChanges {
    removed: Vec<Removed>,
    retained: Vec<Retained>,
    tampers: Vec<Tamper>,
    restorations: Vec<Restoration>,
}

type Get<'a, 'b> = &'a dyn Fn(&str) -> Option<&'b str>;

fn row_tamper(kind: Kind, table: Table, get: Get<'_, '_>) -> Tamper {
    Tamper {
        kind,
        table,
        tenant: get("tenant_id").map(str::to_owned),
        seq: get("seq").and_then(|s| s.parse().ok()),
        log_id: get("log_id").map(str::to_owned),
    }
}

impl TxChanges {
    /// An UPDATE of a log row or checkpoint (`get` reads the old row, or
    /// the new one when the stream carries no old one).
    pub fn updated(&mut self, table: Table, get: Get<'_, '_>) {
        self.tampers.push(row_tamper(Kind::Update, table, get));
    }

    /// A DELETE (`get` reads the old row or its key).
    pub fn deleted(&mut self, table: Table, get: Get<'_, '_>) {
        match table {
            Table::AuthLog => self.removed.push(Removed {
                tenant: get("tenant_id").unwrap_or_default().to_owned(),
                seq: get("seq").and_then(|s| s.parse().ok()),
                log_id: get("log_id").map(str::to_owned),
            }),
            _ => self.tampers.push(row_tamper(Kind::Delete, table, get)),
        }
    }

    /// A TRUNCATE of the table.
    pub fn truncated(&mut self, table: Table) {
        self.tampers.push(Tamper {
            kind: Kind::Truncate,
            table,
            tenant: None,
            seq: None,
            log_id: None,
        });
    }

    /// A `pg_authaudit.restore` message of the transaction (JSON with
    /// `tenant_id`, `seq` and `log_id`); anything else is ignored.
    pub fn restoring(&mut self, content: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(content) else {
            return;
        };
        let (Some(tenant), Some(seq), Some(log_id)) = (
            v.get("tenant_id").and_then(|t| t.as_str()),
            v.get("seq").and_then(|s| s.as_i64()),
            v.get("log_id").and_then(|l| l.as_str()),
        ) else {
            return;
        };
        self.restorations.push(Restoration {
            tenant: tenant.to_owned(),
            seq,
            log_id: log_id.to_owned(),
            inserted: None,
        });
    }

    /// An inserted log row's document: kept when a restoration of the
    /// transaction names its place.
    pub fn inserted_document(&mut self, d: &RawDocumentBuf) {
        let (Ok(tenant), Ok(seq)) = (d.get_str("tenant_id"), d.get_i64("seq")) else {
            return;
        };
        for r in &mut self.restorations {
            if r.tenant == tenant && r.seq == seq {
                r.inserted = Some(d.clone());
            }
        }
    }

    /// An inserted log row: a `retention_applied` event accounts for the
    /// range it names.
    pub fn inserted_log(&mut self, get: Get<'_, '_>) {
        if get("event_type") != Some("retention_applied") {
            return;
        }
        let Some(tenant) = get("tenant_id") else {
            return;
        };
        let seq = |field| {
            let path = ["_authaudit", "retention", field];
            text_at(get("metadata")?, &path).ok()??.parse::<i64>().ok()
        };
        let range = seq("removed_from_seq").zip(seq("removed_to_seq"));
        if let Some((from_seq, to_seq)) = range {
            self.retained.push(Retained {
                tenant: tenant.to_owned(),
                from_seq,
                to_seq,
            });
        }
    }

    /// The transaction's tampering, at its commit: every update, truncate
    /// and checkpoint delete, and every deleted log row no
    /// `retention_applied` event of the transaction accounts for; and the
    /// restorations it claims, for the caller to check against the mirror.
    pub fn judge(mut self) -> Judged {
        let restorations = std::mem::take(&mut self.restorations);
        Judged {
            restorations,
            tampers: self.tampers_only(),
        }
    }

    fn tampers_only(self) -> Vec<Tamper> {
        let mut out = self.tampers;
        for r in self.removed {
            let accounted = self.retained.iter().any(|k| {
                k.tenant == r.tenant && r.seq.is_none_or(|s| (k.from_seq..=k.to_seq).contains(&s))
            });
            if !accounted {
                out.push(Tamper {
                    kind: Kind::Delete,
                    table: Table::AuthLog,
                    tenant: Some(r.tenant),
                    seq: r.seq,
                    log_id: r.log_id,
                });
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.removed.is_empty()
            && self.retained.is_empty()
            && self.tampers.is_empty()
            && self.restorations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn row<'a>(pairs: &[(&'a str, &'a str)]) -> HashMap<&'a str, &'a str> {
        pairs.iter().copied().collect()
    }

    fn retention(tenant: &str, from: i64, to: i64) -> String {
        format!(
            r#"{{"_authaudit": {{"retention": {{"removed_from_seq": {from}, "removed_to_seq": {to}, "mode": "delete"}}}}, "tenant": "{tenant}"}}"#
        )
    }

    #[test]
    fn the_recorded_retention_path_is_no_tampering() {
        let mut tx = TxChanges::default();
        for seq in ["1", "2", "3"] {
            let r = row(&[("tenant_id", "acme"), ("seq", seq), ("log_id", "x")]);
            tx.deleted(Table::AuthLog, &|c| r.get(c).copied());
        }
        let meta = retention("acme", 1, 3);
        let ev = row(&[
            ("tenant_id", "acme"),
            ("event_type", "retention_applied"),
            ("metadata", meta.as_str()),
        ]);
        tx.inserted_log(&|c| ev.get(c).copied());
        assert_eq!(tx.judge().tampers, []);
    }

    #[test]
    fn deletes_outside_the_range_or_tenant_or_without_retention_are_tampering() {
        let mut tx = TxChanges::default();
        for (tenant, seq) in [("acme", "3"), ("acme", "4"), ("zenith", "1")] {
            let r = row(&[("tenant_id", tenant), ("seq", seq), ("log_id", "x")]);
            tx.deleted(Table::AuthLog, &|c| r.get(c).copied());
        }
        let meta = retention("acme", 1, 3);
        let ev = row(&[
            ("tenant_id", "acme"),
            ("event_type", "retention_applied"),
            ("metadata", meta.as_str()),
        ]);
        tx.inserted_log(&|c| ev.get(c).copied());
        let found: Vec<(Option<String>, Option<i64>)> = tx
            .judge()
            .tampers
            .into_iter()
            .map(|t| (t.tenant, t.seq))
            .collect();
        assert_eq!(
            found,
            [
                (Some("acme".into()), Some(4)),
                (Some("zenith".into()), Some(1))
            ]
        );
        // A lone delete (a superuser around the triggers).
        let mut tx = TxChanges::default();
        let r = row(&[("tenant_id", "acme"), ("seq", "40"), ("log_id", "y")]);
        tx.deleted(Table::AuthLog, &|c| r.get(c).copied());
        let t = tx.judge().tampers;
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].kind, t[0].seq), (Kind::Delete, Some(40)));
    }

    #[test]
    fn updates_truncates_and_checkpoint_deletes_are_always_tampering() {
        let mut tx = TxChanges::default();
        let r = row(&[("tenant_id", "acme"), ("seq", "5"), ("log_id", "z")]);
        tx.updated(Table::AuthLog, &|c| r.get(c).copied());
        let cp = row(&[("tenant_id", "acme"), ("seq", "9")]);
        tx.deleted(Table::Checkpoints, &|c| cp.get(c).copied());
        tx.truncated(Table::AuthLog);
        // A retention event does not excuse them.
        let meta = retention("acme", 1, 100);
        let ev = row(&[
            ("tenant_id", "acme"),
            ("event_type", "retention_applied"),
            ("metadata", meta.as_str()),
        ]);
        tx.inserted_log(&|c| ev.get(c).copied());
        let kinds: Vec<(Kind, Table, Option<i64>)> = tx
            .judge()
            .tampers
            .into_iter()
            .map(|t| (t.kind, t.table, t.seq))
            .collect();
        assert_eq!(
            kinds,
            [
                (Kind::Update, Table::AuthLog, Some(5)),
                (Kind::Delete, Table::Checkpoints, Some(9)),
                (Kind::Truncate, Table::AuthLog, None),
            ]
        );
    }

    fn log_row(user: &'static str) -> RawDocumentBuf {
        let row: HashMap<&str, &str> = [
            ("log_id", "6d1c0c8e-0000-4000-8000-000000000005"),
            ("tenant_id", "acme"),
            ("seq", "5"),
            ("event_type", "login_failed"),
            ("user_id", user),
            ("channel", "web"),
            ("occurred_at", "2026-11-28 04:11:20+00"),
            ("recorded_at", "2026-11-28 04:11:20+00"),
            ("metadata", "{}"),
            ("prev_link", "\\xcd01"),
            ("link_sha256", "\\xcd02"),
            ("digest_sha512", "\\xcd03"),
            ("digest_sha3_256", "\\xcd04"),
        ]
        .into();
        crate::documents::auth_log(&|c| row.get(c).copied())
            .unwrap()
            .doc
    }

    #[test]
    fn a_restoration_of_the_mirrors_original_accounts_for_its_own_delete() {
        let original = log_row("alice");
        let mut tx = TxChanges::default();
        tx.restoring(
            br#"{"tenant_id": "acme", "seq": 5, "log_id": "6d1c0c8e-0000-4000-8000-000000000005"}"#,
        );
        // The tampered row is deleted, the original inserted.
        let r = row(&[("tenant_id", "acme"), ("seq", "5"), ("log_id", "x")]);
        tx.deleted(Table::AuthLog, &|c| r.get(c).copied());
        tx.inserted_document(&original);
        let mut judged = tx.judge();
        assert_eq!(judged.tampers.len(), 1);
        let restoration = judged.restorations[0].clone();
        assert!(restoration.restores(&original));
        judged.restored(&restoration);
        assert_eq!(judged.tampers, []);
        let d = restoration.document("0/1/restore/0", "0/1", 1_000_000);
        assert_eq!(d.get_str("kind").unwrap(), "restore");
        assert!(d.get_str("resolved").is_ok());
        // A "restoration" that inserts something else restores nothing.
        let mut forged = restoration.clone();
        forged.inserted = Some(log_row("mallory"));
        assert!(!forged.restores(&original));
        forged.inserted = None;
        assert!(!forged.restores(&original));
    }

    #[test]
    fn an_alarm_document_names_tenant_seq_and_commit() {
        let t = Tamper {
            kind: Kind::Delete,
            table: Table::AuthLog,
            tenant: Some("acme".into()),
            seq: Some(40),
            log_id: Some("y".into()),
        };
        let d = t.document("0/16B3748/1", "0/16B3748", 1_795_839_080_102_345);
        assert_eq!(d.get_str("kind").unwrap(), "delete");
        assert_eq!(d.get_str("tenant_id").unwrap(), "acme");
        assert_eq!(d.get_i64("seq").unwrap(), 40);
        assert_eq!(d.get_str("commit_lsn").unwrap(), "0/16B3748");
    }
}
