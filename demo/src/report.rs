//! The investigator's report: one self-contained HTML file (inline CSS and
//! SVG, no scripts, no network) with the campaign alerts, the
//! failures-per-minute timeline and its lockouts and resets, top accounts
//! and IPs, the successes after failures, and the chain verification
//! status with its checkpoint. Rendered by askama templates
//! (`demo/templates/`), which escape every value they insert; the geometry
//! is computed here.

use crate::reconstruct::{Account, Reconstruction, Source};
use askama::Template;

/// One bar of the timeline.
struct Bar {
    x: String,
    y: String,
    w: String,
    h: String,
    n: i64,
}

/// A lock or reset marker; `text` on the first of markers close together.
struct Marker {
    x: String,
    color: &'static str,
    label: &'static str,
    user: String,
    at: String,
    text: Option<String>,
}

/// The failures-per-minute chart.
struct Timeline {
    w: f64,
    h: f64,
    pad: f64,
    base: f64,
    right: f64,
    label_y: f64,
    foot_y: f64,
    max_y: f64,
    max: i64,
    bars: Vec<Bar>,
    markers: Vec<Marker>,
}

fn timeline(r: &Reconstruction) -> Option<Timeline> {
    let (w, h, pad) = (960.0, 260.0, 40.0);
    let first = r.failures_per_minute.first()?.0;
    let minutes_of = |e: &crate::reconstruct::LockEvent| e.minute_unix;
    let start = first.min(r.timeline.iter().map(minutes_of).min().unwrap_or(first));
    let end = r
        .failures_per_minute
        .last()
        .map_or(first, |x| x.0)
        .max(r.timeline.iter().map(minutes_of).max().unwrap_or(first))
        + 60;
    let minutes = ((end - start) / 60).max(1) as f64;
    let max = r
        .failures_per_minute
        .iter()
        .map(|x| x.1)
        .max()
        .unwrap_or(1)
        .max(1);
    let x = |t: i64| pad + (t - start) as f64 / 60.0 / minutes * (w - 2.0 * pad);
    let bw = ((w - 2.0 * pad) / minutes).max(1.0);
    let bars = r
        .failures_per_minute
        .iter()
        .map(|(t, n)| {
            let bh = *n as f64 / max as f64 * (h - 2.0 * pad);
            Bar {
                x: format!("{:.1}", x(*t)),
                y: format!("{:.1}", h - pad - bh),
                w: format!("{bw:.1}"),
                h: format!("{bh:.1}"),
                n: *n,
            }
        })
        .collect();
    let mut last_label = f64::MIN;
    let mut markers = Vec::new();
    for e in &r.timeline {
        let (color, label) = if e.kind == "account_locked" {
            ("#2c3e50", "lock")
        } else {
            ("#27ae60", "reset")
        };
        let xx = x(e.minute_unix);
        // Markers close together share the first one's label.
        let text = (xx - last_label > 14.0).then(|| {
            last_label = xx;
            let n = r
                .timeline
                .iter()
                .filter(|o| o.kind == e.kind && (x(o.minute_unix) - xx).abs() <= 14.0)
                .count();
            if n > 1 {
                format!("{n} {label}s")
            } else {
                format!("{label} {}", e.user)
            }
        });
        markers.push(Marker {
            x: format!("{xx:.1}"),
            color,
            label,
            user: e.user.clone(),
            at: e.at.clone(),
            text,
        });
    }
    Some(Timeline {
        w,
        h,
        pad,
        base: h - pad,
        right: w - pad,
        label_y: pad - 4.0,
        foot_y: h - 12.0,
        max_y: pad + 4.0,
        max,
        bars,
        markers,
    })
}

/// One row of a bar chart.
struct BarRow {
    label: String,
    label_y: String,
    y: String,
    w: String,
    n_x: String,
    n_y: String,
    n: i64,
}

#[derive(Template)]
#[template(path = "bars.svg")]
struct Bars {
    id: &'static str,
    h: f64,
    rows: Vec<BarRow>,
}

fn bars(id: &'static str, rows: &[(String, i64)]) -> String {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    let rows = rows
        .iter()
        .enumerate()
        .map(|(i, (label, n))| {
            let y = 5.0 + 22.0 * i as f64;
            let bw = *n as f64 / max * 380.0;
            BarRow {
                label: label.clone(),
                label_y: format!("{:.1}", y + 14.0),
                y: format!("{y:.1}"),
                w: format!("{bw:.1}"),
                n_x: format!("{:.1}", 175.0 + bw),
                n_y: format!("{:.1}", y + 13.0),
                n: *n,
            }
        })
        .collect::<Vec<_>>();
    let h = 22.0 * rows.len() as f64 + 10.0;
    Bars { id, h, rows }
        .render()
        .unwrap_or_else(|e| format!("<p>chart: {e}</p>"))
}

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    r: &'a Reconstruction,
    cef_file: &'a str,
    /// (seq, the link's first 16 hex digits, taken at).
    checkpoint: Option<(i64, String, String)>,
    verify_reason: &'a str,
    timeline: Option<Timeline>,
    /// Charts rendered by the `bars.svg` template (escaped there).
    top_accounts: String,
    top_ips: String,
    accounts: &'a [Account],
    sources: &'a [Source],
    /// The successes after failures, while locked and most failures first,
    /// at most [`MAX_SUCCESSES`]; and how many more there are.
    successes: Vec<&'a crate::reconstruct::Success>,
    more_successes: usize,
}

/// The successes after failures the report lists.
const MAX_SUCCESSES: usize = 50;

/// The HTML document.
pub fn html(r: &Reconstruction, cef_file: &str) -> String {
    let top = |v: Vec<(String, i64)>| v;
    let page = Page {
        r,
        cef_file,
        checkpoint: r
            .checkpoint
            .as_ref()
            .map(|(seq, link, at)| (*seq, link[..16.min(link.len())].to_string(), at.clone())),
        verify_reason: r.verify_reason.as_deref().unwrap_or(""),
        timeline: timeline(r),
        top_accounts: bars(
            "top-accounts",
            &top(r
                .accounts
                .iter()
                .take(12)
                .map(|a| (a.user.clone(), a.failures))
                .collect()),
        ),
        top_ips: bars(
            "top-ips",
            &top(r
                .sources
                .iter()
                .take(12)
                .map(|s| (s.ip.clone(), s.failures))
                .collect()),
        ),
        accounts: &r.accounts[..12.min(r.accounts.len())],
        sources: &r.sources[..12.min(r.sources.len())],
        successes: {
            let mut s: Vec<_> = r.successes.iter().collect();
            s.sort_by(|a, b| {
                b.while_locked
                    .cmp(&a.while_locked)
                    .then(b.preceding_failures.cmp(&a.preceding_failures))
            });
            s.truncate(MAX_SUCCESSES);
            s
        },
        more_successes: r.successes.len().saturating_sub(MAX_SUCCESSES),
    };
    page.render()
        .map(|mut s| {
            s.push('\n');
            s
        })
        .unwrap_or_else(|e| format!("<!DOCTYPE html><p>report: {e}</p>\n"))
}
