//! The investigator's report: one self-contained HTML file (inline CSS and
//! SVG, no scripts, no network) with the failures-per-minute timeline and
//! its lockouts and resets, top accounts and IPs, the successes after
//! failures, and the chain verification status with its checkpoint.

use crate::reconstruct::Reconstruction;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn timeline_svg(r: &Reconstruction) -> String {
    let (w, h, pad) = (960.0, 260.0, 40.0);
    let Some(first) = r.failures_per_minute.first().map(|x| x.0) else {
        return "<p>No failures in the period.</p>".into();
    };
    let start = first.min(
        r.timeline
            .iter()
            .map(|e| e.minute_unix)
            .min()
            .unwrap_or(first),
    );
    let end = r
        .failures_per_minute
        .last()
        .map(|x| x.0)
        .unwrap_or(first)
        .max(
            r.timeline
                .iter()
                .map(|e| e.minute_unix)
                .max()
                .unwrap_or(first),
        )
        + 60;
    let minutes = ((end - start) / 60).max(1) as f64;
    let max = r
        .failures_per_minute
        .iter()
        .map(|x| x.1)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: i64| pad + (t - start) as f64 / 60.0 / minutes * (w - 2.0 * pad);
    let bw = ((w - 2.0 * pad) / minutes).max(1.0);
    let mut s = format!(
        "<svg id=\"timeline\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"Failed logins per minute\">"
    );
    s += &format!(
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#555\"/>",
        h - pad,
        w - pad,
        h - pad
    );
    for (t, n) in &r.failures_per_minute {
        let bh = *n as f64 / max * (h - 2.0 * pad);
        s += &format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#c0392b\"><title>{n} failures</title></rect>",
            x(*t),
            h - pad - bh,
            bw,
            bh
        );
    }
    let mut last_label = f64::MIN;
    for e in &r.timeline {
        let (color, label) = if e.kind == "account_locked" {
            ("#2c3e50", "lock")
        } else {
            ("#27ae60", "reset")
        };
        let xx = x(e.minute_unix);
        // Markers close together share the first one's label.
        let labelled = xx - last_label > 14.0;
        s += &format!(
            "<line x1=\"{xx:.1}\" y1=\"{pad}\" x2=\"{xx:.1}\" y2=\"{}\" stroke=\"{color}\" stroke-dasharray=\"4 3\"><title>{} {} at {}</title></line>",
            h - pad,
            label,
            esc(&e.user),
            esc(&e.at)
        );
        if labelled {
            last_label = xx;
            let n = r
                .timeline
                .iter()
                .filter(|o| o.kind == e.kind && (x(o.minute_unix) - xx).abs() <= 14.0)
                .count();
            let text = if n > 1 {
                format!("{n} {label}s")
            } else {
                format!("{label} {}", esc(&e.user))
            };
            s += &format!("<text x=\"{xx:.1}\" y=\"{}\" font-size=\"10\" fill=\"{color}\" transform=\"rotate(-30 {xx:.1} {})\">{text}</text>", pad - 4.0, pad - 4.0);
        }
    }
    s += &format!(
        "<text x=\"{pad}\" y=\"{}\" font-size=\"11\">{} UTC</text>",
        h - 12.0,
        esc(&r.from)
    );
    s += &format!(
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{} UTC</text>",
        w - pad,
        h - 12.0,
        esc(&r.to)
    );
    s += &format!(
        "<text x=\"4\" y=\"{}\" font-size=\"11\">{max}/min</text>",
        pad + 4.0
    );
    s += "</svg>";
    s
}

fn bars(id: &str, rows: &[(String, i64)]) -> String {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    let h = 22.0 * rows.len() as f64 + 10.0;
    let mut s = format!("<svg id=\"{id}\" viewBox=\"0 0 620 {h}\" width=\"620\" height=\"{h}\">");
    for (i, (label, n)) in rows.iter().enumerate() {
        let y = 5.0 + 22.0 * i as f64;
        let bw = *n as f64 / max * 380.0;
        s += &format!(
            "<text x=\"0\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            y + 14.0,
            esc(label)
        );
        s += &format!(
            "<rect x=\"170\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"16\" fill=\"#e67e22\"/>"
        );
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{n}</text>",
            175.0 + bw,
            y + 13.0
        );
    }
    s + "</svg>"
}

/// The HTML document.
pub fn html(r: &Reconstruction, cef_file: &str) -> String {
    let mut body = String::new();
    body += &format!(
        "<h1>Authentication incident report: {}</h1><p class=\"meta\">Period {} to {} UTC · {} events · read with a tenant reader's credentials (row-level security applies) · CEF export: <a href=\"{}\">{}</a></p>",
        esc(&r.tenant), esc(&r.from), esc(&r.to), r.events, esc(cef_file), esc(cef_file)
    );
    let status = if r.verified {
        format!(
            "<div class=\"ok\">Chain verified: {} rows, every digest recomputed{}.</div>",
            r.verified_rows,
            r.checkpoint
                .as_ref()
                .map(|(seq, link, at)| format!(
                    ", anchored to checkpoint seq {seq} (link {}…, taken {} UTC)",
                    esc(&link[..16.min(link.len())]),
                    esc(at)
                ))
                .unwrap_or_default()
        )
    } else {
        format!(
            "<div class=\"bad\">Chain verification FAILED: {}</div>",
            esc(r.verify_reason.as_deref().unwrap_or(""))
        )
    };
    body += &status;
    body += "<h2>Failed logins per minute, with lockouts and resets</h2>";
    body += &timeline_svg(r);
    body += "<h2>Successful logins after failures</h2>";
    if r.successes.is_empty() {
        body += "<p>None.</p>";
    } else {
        body += "<table class=\"alert\"><tr><th>time (UTC)</th><th>account</th><th>from</th><th>preceding failures</th><th>while locked</th><th>failing IPs</th></tr>";
        for s in &r.successes {
            body += &format!(
                "<tr><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.at), esc(&s.user), esc(&s.ip), s.preceding_failures, if s.while_locked { "yes" } else { "no" }, esc(&s.failing_ips.join(", "))
            );
        }
        body += "</table>";
    }
    let top_accounts: Vec<(String, i64)> = r
        .accounts
        .iter()
        .take(12)
        .map(|a| (a.user.clone(), a.failures))
        .collect();
    body += &format!(
        "<h2>Top targeted accounts ({} in all)</h2>",
        r.accounts.len()
    );
    body += &bars("top-accounts", &top_accounts);
    body += "<table><tr><th>account</th><th>failures</th><th>distinct IPs</th><th>locks</th><th>locked now</th></tr>";
    for a in r.accounts.iter().take(12) {
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.user),
            a.failures,
            a.distinct_ips,
            a.locks,
            if a.locked_now { "yes" } else { "no" }
        );
    }
    body += "</table>";
    let top_ips: Vec<(String, i64)> = r
        .sources
        .iter()
        .take(12)
        .map(|s| (s.ip.clone(), s.failures))
        .collect();
    body += &format!("<h2>Top source IPs ({} in all)</h2>", r.sources.len());
    body += &bars("top-ips", &top_ips);
    body += "<table><tr><th>IP</th><th>failures</th><th>accounts tried</th><th>first seen</th><th>last seen</th></tr>";
    for s in r.sources.iter().take(12) {
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.ip),
            s.failures,
            s.accounts,
            esc(&s.first_seen),
            esc(&s.last_seen)
        );
    }
    body += "</table><h2>Lockout timeline</h2><table><tr><th>time (UTC)</th><th>account</th><th>event</th><th>rule</th><th>failures</th><th>until</th></tr>";
    for e in &r.timeline {
        body += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.at),
            esc(&e.user),
            esc(&e.kind),
            esc(e.rule.as_deref().unwrap_or("")),
            e.failures.map(|f| f.to_string()).unwrap_or_default(),
            esc(e.until.as_deref().unwrap_or(""))
        );
    }
    body += &format!(
        "</table><p class=\"meta\">Session tokens issued in the period: {}.</p>",
        r.tokens
    );
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pg_authaudit report: {}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}}h1{{font-size:22px}}h2{{font-size:17px;margin-top:28px}}\
         table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}\
         .ok{{background:#e8f6ec;border:1px solid #27ae60;padding:8px}}.bad{{background:#fdecea;border:1px solid #c0392b;padding:8px}}\
         table.alert td{{background:#fdecea}}.meta{{color:#555;font-size:13px}}</style></head><body>{body}</body></html>\n",
        esc(&r.tenant)
    )
}
