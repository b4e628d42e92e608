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

/// One transaction's changes to the log and its checkpoints.
#[derive(Debug, Default)]
pub struct TxChanges {
    removed: Vec<Removed>,
    retained: Vec<Retained>,
    tampers: Vec<Tamper>,
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
    /// `retention_applied` event of the transaction accounts for.
    pub fn judge(self) -> Vec<Tamper> {
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
        self.removed.is_empty() && self.retained.is_empty() && self.tampers.is_empty()
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
        assert_eq!(tx.judge(), []);
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
        let found: Vec<(Option<String>, Option<i64>)> =
            tx.judge().into_iter().map(|t| (t.tenant, t.seq)).collect();
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
        let t = tx.judge();
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
