//! Mirrored rows as MongoDB documents. Input is a row in PostgreSQL's text
//! output format (what pgoutput sends, and what the initial copy selects),
//! read through a column lookup; output is the document the mirror writes.
//!
//! - `auth_log`: `_id` = `log_id`; times as BSON dates (milliseconds) plus
//!   the exact microseconds (`*_us`), digests as lowercase hex, metadata as
//!   an embedded document, so the chain can be re-verified from the mirror.
//! - `lockout_state`: `_id` = `tenant_id/user_id`, plus `v`, the commit LSN
//!   of the change: a write only lands if `v` is newer than the stored one.
//! - `checkpoints`: `_id` = `tenant_id/seq`.

use bson::{doc, Bson, Document};

/// Why a row could not be turned into a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("column {0} is missing")]
    Missing(&'static str),
    #[error("column {column} has an unexpected value {value:?}")]
    Bad { column: &'static str, value: String },
}

/// The mirrored tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    AuthLog,
    LockoutState,
    Checkpoints,
}

impl Table {
    pub fn from_name(schema: &str, name: &str) -> Option<Table> {
        match (schema, name) {
            ("authaudit", "auth_log") => Some(Table::AuthLog),
            ("authaudit", "lockout_state") => Some(Table::LockoutState),
            ("authaudit", "checkpoints") => Some(Table::Checkpoints),
            _ => None,
        }
    }

    /// The collection it is mirrored into.
    pub fn collection(self) -> &'static str {
        match self {
            Table::AuthLog => "auth_log",
            Table::LockoutState => "lockout_state",
            Table::Checkpoints => "checkpoints",
        }
    }

    /// The columns the copy selects (as text), in this order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Table::AuthLog => &[
                "log_id",
                "tenant_id",
                "org_id",
                "seq",
                "event_type",
                "user_id",
                "ip",
                "user_agent",
                "channel",
                "occurred_at",
                "recorded_at",
                "metadata",
                "format_version",
                "prev_link",
                "link_sha256",
                "digest_sha512",
                "digest_sha3_256",
            ],
            Table::LockoutState => &[
                "tenant_id",
                "user_id",
                "failure_count",
                "first_failure_at",
                "last_failure_at",
                "first_failure_ip",
                "last_failure_ip",
                "locked",
                "locked_at",
                "locked_until",
                "lock_count",
                "last_log_id",
                "last_seq",
                "updated_at",
            ],
            Table::Checkpoints => &[
                "tenant_id",
                "seq",
                "link_sha256",
                "digest_sha512",
                "digest_sha3_256",
                "head_log_id",
                "created_at",
                "created_by",
            ],
        }
    }
}

type Get<'a> = &'a dyn Fn(&str) -> Option<String>;

fn req(get: Get<'_>, c: &'static str) -> Result<String, RowError> {
    get(c).ok_or(RowError::Missing(c))
}

fn int(get: Get<'_>, c: &'static str) -> Result<Option<i64>, RowError> {
    get(c)
        .map(|v| {
            v.parse::<i64>().map_err(|_| RowError::Bad {
                column: c,
                value: v,
            })
        })
        .transpose()
}

/// `\x…` bytea text to lowercase hex.
fn hex(get: Get<'_>, c: &'static str) -> Result<Option<String>, RowError> {
    get(c)
        .map(|v| match v.strip_prefix("\\x") {
            Some(h) if h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h.to_ascii_lowercase()),
            _ => Err(RowError::Bad {
                column: c,
                value: v,
            }),
        })
        .transpose()
}

fn opt_str(v: Option<String>) -> Bson {
    v.map_or(Bson::Null, Bson::String)
}

/// Microseconds since the Unix epoch of a `timestamptz` in ISO text with a
/// UTC offset (`2026-11-28 04:11:20.102345+00`, offsets `+hh[:mm]`).
pub fn parse_timestamptz(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(' ')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let tz_at = rest.rfind(['+', '-'])?;
    let (time, tz) = rest.split_at(tz_at);
    let mut t = time.split(':');
    let (hh, mm): (i64, i64) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    let sec = t.next()?;
    let (ss, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let ss: i64 = ss.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    let sign = if tz.starts_with('-') { -1 } else { 1 };
    let mut z = tz[1..].split(':');
    let tzh: i64 = z.next()?.parse().ok()?;
    let tzm: i64 = z.next().map_or(Some(0), |v| v.parse().ok())?;
    let offset = sign * (tzh * 3600 + tzm * 60);
    // Days from civil (proleptic Gregorian), H. Hinnant's algorithm.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss - offset) * 1_000_000) + micros)
}

fn time(get: Get<'_>, c: &'static str) -> Result<Option<i64>, RowError> {
    get(c)
        .map(|v| {
            parse_timestamptz(&v).ok_or(RowError::Bad {
                column: c,
                value: v,
            })
        })
        .transpose()
}

fn put_time(d: &mut Document, name: &str, us: Option<i64>) {
    match us {
        Some(us) => {
            d.insert(
                name,
                Bson::DateTime(bson::DateTime::from_millis(us.div_euclid(1000))),
            );
            d.insert(format!("{name}_us"), us);
        }
        None => {
            d.insert(name, Bson::Null);
        }
    }
}

/// An `auth_log` row as its document.
pub fn auth_log(get: Get<'_>) -> Result<Document, RowError> {
    let metadata_text = req(get, "metadata")?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata_text).map_err(|_| RowError::Bad {
            column: "metadata",
            value: metadata_text.clone(),
        })?;
    let metadata = bson::to_bson(&metadata).map_err(|_| RowError::Bad {
        column: "metadata",
        value: metadata_text.clone(),
    })?;
    let mut d = doc! {
        "_id": req(get, "log_id")?,
        "tenant_id": req(get, "tenant_id")?,
        "org_id": opt_str(get("org_id")),
        "seq": int(get, "seq")?.ok_or(RowError::Missing("seq"))?,
        "event_type": req(get, "event_type")?,
        "user_id": req(get, "user_id")?,
        "ip": opt_str(get("ip")),
        "user_agent": opt_str(get("user_agent")),
        "channel": req(get, "channel")?,
    };
    put_time(&mut d, "occurred_at", time(get, "occurred_at")?);
    put_time(&mut d, "recorded_at", time(get, "recorded_at")?);
    d.insert("metadata", metadata);
    // The canonical JSON text the chain hashes (key order of jsonb).
    d.insert("metadata_text", metadata_text);
    d.insert("format_version", int(get, "format_version")?.unwrap_or(1));
    for c in [
        "prev_link",
        "link_sha256",
        "digest_sha512",
        "digest_sha3_256",
    ] {
        d.insert(c, opt_str(hex(get, c)?));
    }
    Ok(d)
}

/// A `lockout_state` row as its document, versioned by the commit `lsn` of
/// its transaction and its `ordinal` among that transaction's changes (one
/// transaction can change a row several times).
pub fn lockout_state(get: Get<'_>, lsn: u64, ordinal: u32) -> Result<Document, RowError> {
    let tenant = req(get, "tenant_id")?;
    let user = req(get, "user_id")?;
    let mut d = doc! {
        "_id": format!("{tenant}/{user}"),
        "tenant_id": tenant,
        "user_id": user,
        "failure_count": int(get, "failure_count")?.unwrap_or(0),
        "first_failure_ip": opt_str(get("first_failure_ip")),
        "last_failure_ip": opt_str(get("last_failure_ip")),
        // pgoutput sends booleans as "t"/"f", a ::text cast as "true"/"false".
        "locked": matches!(get("locked").as_deref(), Some("t" | "true")),
        "lock_count": int(get, "lock_count")?.unwrap_or(0),
        "last_log_id": opt_str(get("last_log_id")),
        "last_seq": int(get, "last_seq")?.map_or(Bson::Null, Bson::Int64),
        "v": lsn as i64,
        "vi": i64::from(ordinal),
    };
    for c in [
        "first_failure_at",
        "last_failure_at",
        "locked_at",
        "locked_until",
        "updated_at",
    ] {
        put_time(&mut d, c, time(get, c)?);
    }
    Ok(d)
}

/// A `checkpoints` row as its document.
pub fn checkpoint(get: Get<'_>) -> Result<Document, RowError> {
    let tenant = req(get, "tenant_id")?;
    let seq = int(get, "seq")?.ok_or(RowError::Missing("seq"))?;
    let mut d = doc! {
        "_id": format!("{tenant}/{seq}"),
        "tenant_id": tenant,
        "seq": seq,
        "head_log_id": req(get, "head_log_id")?,
        "created_by": req(get, "created_by")?,
    };
    for c in ["link_sha256", "digest_sha512", "digest_sha3_256"] {
        d.insert(c, opt_str(hex(get, c)?));
    }
    put_time(&mut d, "created_at", time(get, "created_at")?);
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn timestamps_parse_to_unix_microseconds() {
        assert_eq!(parse_timestamptz("1970-01-01 00:00:00+00"), Some(0));
        assert_eq!(
            parse_timestamptz("2000-01-01 00:00:00.5+00"),
            Some(946_684_800_500_000)
        );
        assert_eq!(
            parse_timestamptz("2026-11-28 04:11:20.102345+00"),
            Some(1_795_839_080_102_345)
        );
        assert_eq!(
            parse_timestamptz("2026-11-28 05:41:20.102345+01:30"),
            Some(1_795_839_080_102_345)
        );
        assert_eq!(parse_timestamptz("1969-12-31 23:59:59.999999+00"), Some(-1));
        assert_eq!(parse_timestamptz("yesterday"), None);
    }

    #[test]
    fn a_log_row_keeps_everything_the_chain_needs() {
        let row: HashMap<&str, &str> = [
            ("log_id", "6d1c0c8e-0000-4000-8000-000000000001"),
            ("tenant_id", "acme"),
            ("seq", "7"),
            ("event_type", "login_failed"),
            ("user_id", "alice"),
            ("ip", "198.51.100.7"),
            ("channel", "web"),
            ("occurred_at", "2026-11-28 04:11:20.102345+00"),
            ("recorded_at", "2026-11-28 04:11:20.2+00"),
            ("metadata", r#"{"reason": "bad_password"}"#),
            ("format_version", "1"),
            ("prev_link", "\\xAB01"),
            ("link_sha256", "\\xcd02"),
            ("digest_sha512", "\\xef03"),
            ("digest_sha3_256", "\\x0104"),
        ]
        .into();
        let get = |c: &str| row.get(c).map(|v| v.to_string());
        let d = auth_log(&get).unwrap();
        assert_eq!(
            d.get_str("_id").unwrap(),
            "6d1c0c8e-0000-4000-8000-000000000001"
        );
        assert_eq!(d.get_i64("seq").unwrap(), 7);
        assert_eq!(d.get_i64("occurred_at_us").unwrap(), 1_795_839_080_102_345);
        assert_eq!(d.get_str("prev_link").unwrap(), "ab01");
        assert_eq!(
            d.get_document("metadata")
                .unwrap()
                .get_str("reason")
                .unwrap(),
            "bad_password"
        );
        assert_eq!(d.get("org_id"), Some(&Bson::Null));
        let broken = |c: &str| {
            if c == "link_sha256" {
                Some("zz".into())
            } else {
                get(c)
            }
        };
        assert!(matches!(
            auth_log(&broken),
            Err(RowError::Bad {
                column: "link_sha256",
                ..
            })
        ));
    }
}
