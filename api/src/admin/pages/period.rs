//! A page's period: `from` and `to` in UTC, as `datetime-local` inputs or
//! RFC 3339, at most 31 days.

use super::*;

pub(super) fn ms_time(ms: i64) -> String {
    let t = ms.div_euclid(1000);
    let (y, m, d) = authaudit_core::lockout_effect::civil_from_days(t.div_euclid(86_400));
    let r = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        r / 3600,
        r / 60 % 60,
        r % 60
    )
}

/// A period from `from` and `to` fields (`datetime-local` inputs or RFC
/// 3339, UTC): Unix seconds, RFC 3339 text, and the inputs' values.
pub(super) struct Period {
    pub(super) from: i64,
    pub(super) to: i64,
    pub(super) from_text: String,
    pub(super) to_text: String,
}

impl Period {
    pub(super) fn rfc3339(t: i64) -> String {
        format!("{}Z", ms_time(t * 1000).replace(' ', "T"))
    }

    pub(super) fn api_query(&self) -> String {
        format!(
            "from={}&to={}",
            encode(&Period::rfc3339(self.from)),
            encode(&Period::rfc3339(self.to))
        )
    }

    pub(super) fn form(&self, action: &str, extra: &str) -> String {
        format!(
            r#"<form class="filters" method="get" action="{action}"><label>from (UTC) <input type="datetime-local" name="from" value="{}"></label><label>to (UTC) <input type="datetime-local" name="to" value="{}"></label>{extra}<button type="submit">Show</button></form>"#,
            esc(&self.from_text),
            esc(&self.to_text)
        )
    }
}

pub(super) fn parse_time(s: &str) -> Option<i64> {
    // YYYY-MM-DDTHH:MM[:SS][Z]
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi) = (t.next()??, t.next()??);
    let sec = t.next().flatten().unwrap_or(0);
    // Years a person means (and whose seconds no arithmetic here overflows).
    if !(1..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let days = days_from_civil(y, mo, da);
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(super) fn input_time(t: i64) -> String {
    ms_time(t * 1000).replace(' ', "T")[..16].to_string()
}

pub(super) fn period(q: &[(String, String)], default_span: i64) -> Result<Period, Response> {
    let now = now_unix() / 60 * 60 + 60;
    let to = match field(q, "to").filter(|s| !s.is_empty()) {
        Some(s) => parse_time(s).ok_or_else(|| bad("to", "a time as YYYY-MM-DDTHH:MM (UTC)"))?,
        None => now,
    };
    let from = match field(q, "from").filter(|s| !s.is_empty()) {
        Some(s) => parse_time(s).ok_or_else(|| bad("from", "a time as YYYY-MM-DDTHH:MM (UTC)"))?,
        None => to - default_span,
    };
    if from >= to {
        return Err(bad("from", "must be before to"));
    }
    if to - from > 31 * 86_400 {
        return Err(bad("from", "a period is at most 31 days"));
    }
    Ok(Period {
        from,
        to,
        from_text: input_time(from),
        to_text: input_time(to),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_and_round_trip() {
        let t = parse_time("2026-12-07T18:14").unwrap();
        assert_eq!(input_time(t), "2026-12-07T18:14");
        assert_eq!(parse_time("2026-12-07T18:14:09Z"), Some(t + 9));
        for bad in [
            "",
            "2026-13-01T00:00",
            "x",
            "2026-12-07",
            "2026-12-07T24:00",
        ] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }
}
