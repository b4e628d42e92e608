//! HTML for the admin interface: escaping, the page frame, tables and
//! links. Every value that comes from a request or the database goes
//! through [`esc`] (or [`attr`] inside an attribute) before it is written.

use std::fmt::Write;

/// Text escaped for an element's content or a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment or query value, percent-encoded and then escaped.
pub fn attr_path(s: &str) -> String {
    esc(&crate::query::encode(s))
}

/// What the frame of a page needs.
pub struct Frame<'a> {
    pub title: &'a str,
    /// The tenant the page is about (the navigation's links).
    pub tenant: Option<&'a str>,
    /// The signed-in role and subject, and the session's CSRF token.
    pub who: Option<(&'a str, &'a str, &'a str)>,
    /// Which navigation entry is the current page.
    pub current: &'a str,
}

const NAV: [(&str, &str); 6] = [
    ("overview", ""),
    ("campaigns", "campaigns"),
    ("search", "search"),
    ("report", "report"),
    ("evidence", "evidence"),
    ("tenants", "/admin/"),
];

/// A whole page: the frame around `body`.
pub fn page(f: &Frame<'_>, body: &str) -> String {
    let mut s = String::with_capacity(body.len() + 2048);
    let _ = write!(
        s,
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{} · pg_authaudit</title><link rel="stylesheet" href="/admin/static/admin.css"><script src="/admin/static/admin.js" defer></script></head><body><a class="skip" href="#main">Skip to content</a><header><span class="brand">pg_authaudit</span>"##,
        esc(f.title)
    );
    if let Some(t) = f.tenant {
        let _ = write!(s, r#"<nav aria-label="Sections"><ul>"#);
        for (name, path) in NAV {
            let href = if path.starts_with('/') {
                path.to_string()
            } else if path.is_empty() {
                format!("/admin/t/{}/", attr_path(t))
            } else {
                format!("/admin/t/{}/{path}", attr_path(t))
            };
            let current = if name == f.current {
                r#" aria-current="page""#
            } else {
                ""
            };
            let _ = write!(s, r#"<li><a href="{href}"{current}>{name}</a></li>"#);
        }
        s.push_str("</ul></nav>");
        let _ = write!(s, r#"<span class="tenant">tenant <b>{}</b></span>"#, esc(t));
    }
    if let Some((role, sub, csrf)) = f.who {
        let _ = write!(
            s,
            r#"<form class="who" method="post" action="/admin/logout"><span>{} as <b>{}</b></span><input type="hidden" name="csrf" value="{}"><button type="submit">Sign out</button></form>"#,
            esc(sub),
            esc(role),
            esc(csrf)
        );
    }
    let _ = write!(
        s,
        r#"</header><main id="main"><h1>{}</h1>{body}</main></body></html>"#,
        esc(f.title)
    );
    s
}

/// A table: a caption, header cells and rows of cells already rendered
/// as HTML.
pub fn table(caption: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = write!(s, "<table><caption>{}</caption><thead><tr>", esc(caption));
    for h in head {
        let _ = write!(s, r#"<th scope="col">{}</th>"#, esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            s,
            r#"<tr><td colspan="{}" class="empty">none</td></tr>"#,
            head.len()
        );
    }
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// A link to an account's page.
pub fn account_link(tenant: &str, user: &str) -> String {
    format!(
        r#"<a href="/admin/t/{}/accounts/{}">{}</a>"#,
        attr_path(tenant),
        attr_path(user),
        esc(user)
    )
}

/// A link to a source's page.
pub fn source_link(tenant: &str, ip: &str) -> String {
    format!(
        r#"<a href="/admin/t/{}/sources/{}">{}</a>"#,
        attr_path(tenant),
        attr_path(ip),
        esc(ip)
    )
}

/// A JSON value as the text of a cell.
pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

/// An RFC 3339 timestamp as `YYYY-MM-DD HH:MM:SS` (UTC, as stored).
pub fn when(v: &serde_json::Value) -> String {
    let s = v.as_str().unwrap_or("");
    esc(&s.replace('T', " ").chars().take(19).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_markup_character_is_escaped() {
        assert_eq!(
            esc(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert!(!attr_path("a\"/><script>").contains(['<', '"', '/']));
    }
}
