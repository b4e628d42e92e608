//! Custody of the mirror: what a sidecar acknowledged to a document store,
//! and whether the store it finds still holds it.
//!
//! The sidecar keeps, outside the store, marks of what the store
//! acknowledged: the store's identity and each tenant's acknowledged head
//! (its state file), and the heads of the checkpoints it signed (its
//! witness log). At each start it reads what the store holds at those
//! heads, and [`judge`] names every way the store falls short: a store that
//! is empty or another one, a tenant whose acknowledged rows are gone, a
//! row at an acknowledged head that is not the one acknowledged. Such a
//! store is never filled again from PostgreSQL's current rows as if they
//! were the originals: each finding is a tamper alarm for an operator.

use std::collections::BTreeMap;
use std::fmt;

/// A tenant's acknowledged head: its last seq and that row's `link_sha256`
/// (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub link: String,
}

/// What was acknowledged to a store, from every mark kept outside it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// The identity of the store acknowledged to, when a mark records it.
    pub store_id: Option<String>,
    /// Each tenant's highest acknowledged head.
    pub heads: BTreeMap<String, Head>,
}

impl Acknowledged {
    /// Raises `tenant`'s head to `seq` (never lowers it); returns whether
    /// it moved.
    pub fn advance(&mut self, tenant: &str, seq: i64, link: &str) -> bool {
        match self.heads.get_mut(tenant) {
            Some(h) if h.seq >= seq => false,
            Some(h) => {
                h.seq = seq;
                link.clone_into(&mut h.link);
                true
            }
            None => {
                self.heads.insert(
                    tenant.to_owned(),
                    Head {
                        seq,
                        link: link.to_owned(),
                    },
                );
                true
            }
        }
    }

    /// Takes in another mark's heads (the higher per tenant) and its store
    /// identity when this one has none.
    pub fn merge(&mut self, other: &Acknowledged) {
        if self.store_id.is_none() {
            self.store_id.clone_from(&other.store_id);
        }
        for (t, h) in &other.heads {
            self.advance(t, h.seq, &h.link);
        }
    }

    /// Whether no mark says anything was ever acknowledged.
    pub fn is_empty(&self) -> bool {
        self.store_id.is_none() && self.heads.is_empty()
    }
}

/// What the store holds, as far as the check reads it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    /// The identity recorded in the store's own state; `None` when the
    /// store holds no mirror state at all (an empty store).
    pub store_id: Option<String>,
    /// For each acknowledged tenant: the link of the store's row at the
    /// acknowledged seq (`None`: no such row) and the store's last seq of
    /// the tenant (`None`: no row).
    pub rows: BTreeMap<String, (Option<String>, Option<i64>)>,
}

/// One way the store falls short of what was acknowledged to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The store is not the one acknowledged to: it holds no mirror state
    /// (`found` is `None`: empty, or wiped), or another store's identity.
    Replaced {
        /// The identity acknowledged to (`None`: only the slot's existence
        /// says rows were acknowledged).
        expected: Option<String>,
        found: Option<String>,
        /// Tenants with acknowledged rows.
        tenants: usize,
    },
    /// Rows acknowledged to the store are gone: the tenant's acknowledged
    /// head is missing (the store's rows of the tenant end at
    /// `store_last`).
    Missing {
        tenant: String,
        seq: i64,
        store_last: Option<i64>,
    },
    /// The store's row at an acknowledged head is another row.
    Differs { tenant: String, seq: i64 },
}

impl Finding {
    /// The kind, as alarms name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Replaced { .. } => "store_replaced",
            Finding::Missing { .. } => "rows_missing",
            Finding::Differs { .. } => "row_differs",
        }
    }

    /// An identifier that the same finding keeps from one start to the
    /// next, whatever was written since (its alarm is written once).
    /// `anchor` names the custody when no store identity was acknowledged
    /// (the slot's name).
    pub fn id(&self, anchor: &str) -> String {
        match self {
            Finding::Replaced { expected, .. } => {
                format!("custody/store/{}", expected.as_deref().unwrap_or(anchor))
            }
            Finding::Missing { tenant, seq, .. } => format!("custody/missing/{tenant}/{seq}"),
            Finding::Differs { tenant, seq } => format!("custody/differs/{tenant}/{seq}"),
        }
    }

    /// The tenant it concerns, if one.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Finding::Replaced { .. } => None,
            Finding::Missing { tenant, .. } | Finding::Differs { tenant, .. } => Some(tenant),
        }
    }

    /// The seq it concerns, if one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Finding::Replaced { .. } => None,
            Finding::Missing { seq, .. } | Finding::Differs { seq, .. } => Some(*seq),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Replaced {
                expected,
                found: None,
                tenants,
            } => write!(
                f,
                "the document store holds no mirror state, but rows of {tenants} tenant(s) were acknowledged to {}: it is empty or was wiped",
                expected
                    .as_deref()
                    .map_or("it (the slot exists)".to_owned(), |e| format!("store {e}"))
            ),
            Finding::Replaced {
                expected,
                found: Some(found),
                ..
            } => write!(
                f,
                "the document store is store {found}, not store {} that rows were acknowledged to: it was replaced",
                expected.as_deref().unwrap_or("?")
            ),
            Finding::Missing {
                tenant,
                seq,
                store_last: None,
            } => write!(
                f,
                "tenant {tenant}: rows up to seq {seq} were acknowledged to the store, which holds none of the tenant's rows"
            ),
            Finding::Missing {
                tenant,
                seq,
                store_last: Some(last),
            } => write!(
                f,
                "tenant {tenant}: seq {seq} was acknowledged to the store, which no longer holds it (its rows of the tenant end at seq {last})"
            ),
            Finding::Differs { tenant, seq } => write!(
                f,
                "tenant {tenant}: the store's row at seq {seq} is not the row acknowledged there (another link_sha256)"
            ),
        }
    }
}

/// Every way `held` falls short of `acknowledged`. `slot_exists`: the
/// replication slot exists, so rows were acknowledged from it even when no
/// mark says so (a store is given its identity before the slot exists).
/// A store with no mirror state is one finding, not one per tenant.
pub fn judge(acknowledged: &Acknowledged, slot_exists: bool, held: &Held) -> Vec<Finding> {
    let tenants = acknowledged.heads.len();
    let Some(found) = &held.store_id else {
        return if acknowledged.is_empty() && !slot_exists {
            Vec::new()
        } else {
            vec![Finding::Replaced {
                expected: acknowledged.store_id.clone(),
                found: None,
                tenants,
            }]
        };
    };
    let mut out = Vec::new();
    if let Some(expected) = &acknowledged.store_id {
        if expected != found {
            out.push(Finding::Replaced {
                expected: Some(expected.clone()),
                found: Some(found.clone()),
                tenants,
            });
        }
    }
    for (tenant, head) in &acknowledged.heads {
        let (at_head, last) = held.rows.get(tenant).cloned().unwrap_or_default();
        match at_head {
            Some(link) if link.eq_ignore_ascii_case(&head.link) => {}
            Some(_) => out.push(Finding::Differs {
                tenant: tenant.clone(),
                seq: head.seq,
            }),
            None => out.push(Finding::Missing {
                tenant: tenant.clone(),
                seq: head.seq,
                store_last: last,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(store: Option<&str>, heads: &[(&str, i64, &str)]) -> Acknowledged {
        let mut a = Acknowledged {
            store_id: store.map(str::to_owned),
            ..Acknowledged::default()
        };
        for (t, s, l) in heads {
            a.advance(t, *s, l);
        }
        a
    }

    fn held(store: Option<&str>, rows: &[(&str, Option<&str>, Option<i64>)]) -> Held {
        Held {
            store_id: store.map(str::to_owned),
            rows: rows
                .iter()
                .map(|(t, l, last)| (t.to_string(), (l.map(str::to_owned), *last)))
                .collect(),
        }
    }

    #[test]
    fn a_first_start_and_a_store_that_holds_everything_are_clean() {
        assert_eq!(judge(&Acknowledged::default(), false, &Held::default()), []);
        let a = acked(Some("s1"), &[("t", 40, "aa"), ("u", 3, "bb")]);
        let h = held(
            Some("s1"),
            &[("t", Some("AA"), Some(41)), ("u", Some("bb"), Some(3))],
        );
        assert_eq!(judge(&a, true, &h), []);
    }

    #[test]
    fn an_empty_store_is_one_finding_whatever_says_rows_were_acknowledged() {
        let a = acked(Some("s1"), &[("t", 40, "aa"), ("u", 3, "bb")]);
        let f = judge(&a, true, &Held::default());
        assert_eq!(
            f,
            [Finding::Replaced {
                expected: Some("s1".into()),
                found: None,
                tenants: 2
            }]
        );
        assert_eq!(f[0].id("slot"), "custody/store/s1");
        assert!(f[0].to_string().contains("empty or was wiped"), "{}", f[0]);
        // No mark at all, but the slot exists: rows were acknowledged.
        let f = judge(&Acknowledged::default(), true, &Held::default());
        assert_eq!(f[0].id("slot_a"), "custody/store/slot_a");
        // The same finding keeps its id once the store got a new identity.
        let again = judge(&a, true, &held(Some("s2"), &[]));
        assert_eq!(again[0].id("slot"), "custody/store/s1");
        assert_eq!(again[0].kind(), "store_replaced");
    }

    #[test]
    fn lost_rows_and_another_row_at_a_head_are_named_by_tenant_and_seq() {
        let a = acked(
            Some("s1"),
            &[("t", 40, "aa"), ("u", 3, "bb"), ("v", 9, "cc")],
        );
        let h = held(
            Some("s1"),
            &[
                ("t", None, Some(35)),
                ("u", Some("ff"), Some(3)),
                ("v", None, None),
            ],
        );
        let f = judge(&a, true, &h);
        assert_eq!(
            f,
            [
                Finding::Missing {
                    tenant: "t".into(),
                    seq: 40,
                    store_last: Some(35)
                },
                Finding::Differs {
                    tenant: "u".into(),
                    seq: 3
                },
                Finding::Missing {
                    tenant: "v".into(),
                    seq: 9,
                    store_last: None
                },
            ]
        );
        assert_eq!(f[0].id("x"), "custody/missing/t/40");
        assert!(f[0].to_string().contains("end at seq 35"), "{}", f[0]);
        assert_eq!((f[1].tenant(), f[1].seq()), (Some("u"), Some(3)));
    }

    #[test]
    fn heads_only_move_forward_and_marks_merge_to_the_highest() {
        let mut a = acked(None, &[("t", 40, "aa")]);
        assert!(!a.advance("t", 39, "zz"));
        assert!(a.advance("t", 41, "ab"));
        let b = acked(Some("s1"), &[("t", 40, "aa"), ("u", 2, "cc")]);
        a.merge(&b);
        assert_eq!(a.store_id.as_deref(), Some("s1"));
        assert_eq!(a.heads["t"].seq, 41);
        assert_eq!(a.heads["u"].seq, 2);
    }
}
