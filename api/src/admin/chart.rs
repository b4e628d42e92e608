//! Charts drawn on the server as SVG: stacked bars over a time axis whose
//! ticks fall on round times and whose labels never overlap, with markers
//! (lockouts, resets) labelled only where there is room. Every value is
//! escaped; the chart names itself for screen readers, and the page puts
//! the same numbers in a table beside it.

use super::html::esc;
use std::fmt::Write;

/// One series of a stacked bar chart: a name, a CSS class (its colour,
/// from the stylesheet) and a value per bucket.
pub struct Series {
    pub name: String,
    pub class: &'static str,
    pub values: Vec<i64>,
}

/// A marker at a time: drawn as a vertical line, labelled if it fits.
pub struct Marker {
    pub at: i64,
    pub class: &'static str,
    pub label: String,
}

/// A chart over `[start, start + buckets * step)` (Unix seconds).
pub struct Chart<'a> {
    pub title: &'a str,
    pub start: i64,
    pub step: i64,
    pub series: &'a [Series],
    pub markers: &'a [Marker],
}

const W: f64 = 960.0;
const H: f64 = 260.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 34.0;
/// The room a time label needs, in SVG units (`00:00` or `12-31 00:00`).
const LABEL_ROOM: f64 = 90.0;
/// The room a marker's label needs.
const MARKER_ROOM: f64 = 110.0;

/// Tick spacings a time axis may use, seconds.
const TIME_STEPS: [i64; 18] = [
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172_800, 604_800,
    1_209_600, 2_592_000, 7_776_000, 31_536_000,
];

/// The smallest round spacing that leaves each label its room.
pub fn time_tick_step(span_s: i64, width: f64) -> i64 {
    let most = (width / LABEL_ROOM).floor().max(1.0) as i64;
    TIME_STEPS
        .into_iter()
        .find(|s| span_s / s <= most)
        .unwrap_or(31_536_000)
}

/// Ticks of a value axis from 0 to at least `max`: 1, 2 or 5 times a power of ten.
pub fn value_ticks(max: i64) -> Vec<i64> {
    let max = max.max(1);
    let mut step = 1i64;
    loop {
        for m in [1, 2, 5] {
            let s = step * m;
            if max / s <= 5 {
                let top = (max + s - 1) / s * s;
                return (0..=top / s).map(|i| i * s).collect();
            }
        }
        step *= 10;
    }
}

/// `HH:MM` (UTC), with the date when the axis spans more than a day.
pub fn time_label(t: i64, with_date: bool) -> String {
    let (days, rest) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (_, m, d) = authaudit_core::lockout_effect::civil_from_days(days);
    let hm = format!("{:02}:{:02}", rest / 3600, rest / 60 % 60);
    if with_date {
        format!("{m:02}-{d:02} {hm}")
    } else {
        hm
    }
}

impl Chart<'_> {
    fn buckets(&self) -> usize {
        self.series
            .iter()
            .map(|s| s.values.len())
            .max()
            .unwrap_or(0)
    }

    /// The SVG, with `id` naming its title for `aria-labelledby`.
    pub fn svg(&self, id: &str) -> String {
        let n = self.buckets().max(1);
        let span = self.step * n as i64;
        let plot_w = W - LEFT - RIGHT;
        let plot_h = H - TOP - BOTTOM;
        let x_of = |t: i64| LEFT + (t - self.start) as f64 / span as f64 * plot_w;
        let totals: Vec<i64> = (0..n)
            .map(|i| {
                self.series
                    .iter()
                    .map(|s| s.values.get(i).copied().unwrap_or(0))
                    .sum()
            })
            .collect();
        let ticks = value_ticks(totals.iter().copied().max().unwrap_or(0));
        let top = *ticks.last().unwrap_or(&1) as f64;
        let y_of = |v: f64| TOP + plot_h - v / top * plot_h;
        let total: i64 = totals.iter().sum();
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="{id}-t {id}-d" preserveAspectRatio="xMidYMid meet"><title id="{id}-t">{}</title><desc id="{id}-d">{} from {} to {} UTC, {total} in all; the table below lists each minute.</desc>"#,
            esc(self.title),
            esc(self.title),
            time_label(self.start, true),
            time_label(self.start + span, true),
        );
        // Value axis.
        for v in &ticks {
            let y = y_of(*v as f64);
            let _ = write!(
                s,
                r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"#,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0
            );
        }
        // Bars, stacked in series order.
        let bar_w = (plot_w / n as f64 - 1.0).max(0.5);
        for i in 0..n {
            let mut base = 0f64;
            let x = x_of(self.start + i as i64 * self.step);
            for series in self.series {
                let v = series.values.get(i).copied().unwrap_or(0);
                if v == 0 {
                    continue;
                }
                let (y0, y1) = (y_of(base), y_of(base + v as f64));
                let _ = write!(
                    s,
                    r#"<rect class="{}" x="{x:.1}" y="{y1:.1}" width="{bar_w:.1}" height="{:.1}"><title>{} {}: {v}</title></rect>"#,
                    series.class,
                    (y0 - y1).max(0.5),
                    time_label(self.start + i as i64 * self.step, span > 86_400),
                    esc(&series.name)
                );
                base += v as f64;
            }
        }
        // Time axis: ticks on round times, spaced so labels never meet.
        let step = time_tick_step(span, plot_w);
        let first = (self.start + step - 1).div_euclid(step) * step;
        let mut t = first;
        while t <= self.start + span {
            let x = x_of(t);
            let _ = write!(
                s,
                r#"<line class="tick" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}"/><text class="axis" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + plot_h,
                TOP + plot_h + 5.0,
                H - BOTTOM + 18.0,
                time_label(t, span > 86_400 || step >= 86_400)
            );
            t += step;
        }
        // Markers: a line each; a label only where the previous label
        // leaves room (the rest are named by their tooltip and the table).
        let mut last_label = f64::NEG_INFINITY;
        for m in self.markers {
            if m.at < self.start || m.at > self.start + span {
                continue;
            }
            let x = x_of(m.at);
            let _ = write!(
                s,
                r#"<line class="marker {}" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}"><title>{} {}</title></line>"#,
                m.class,
                TOP + plot_h,
                time_label(m.at, span > 86_400),
                esc(&m.label)
            );
            if x - last_label >= MARKER_ROOM {
                // Near the right edge a label ends at its line.
                let anchor = if x + MARKER_ROOM > W { "end" } else { "start" };
                let _ = write!(
                    s,
                    r#"<text class="marker-label {}" x="{x:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                    m.class,
                    TOP - 8.0,
                    esc(&truncate(&m.label, 16))
                );
                last_label = x;
            }
        }
        s.push_str("</svg>");
        s
    }
}

/// At most `n` characters, with an ellipsis when cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_labels_never_crowd_whatever_the_span() {
        for span in [60, 3600, 6 * 3600, 86_400, 7 * 86_400, 365 * 86_400] {
            let step = time_tick_step(span, W - LEFT - RIGHT);
            let labels = span / step + 1;
            assert!(
                (labels as f64) * LABEL_ROOM <= W - LEFT - RIGHT + LABEL_ROOM,
                "span {span}: {labels} labels at {step} s"
            );
        }
    }

    #[test]
    fn value_ticks_are_round_and_cover_the_maximum() {
        assert_eq!(value_ticks(0), vec![0, 1]);
        assert_eq!(value_ticks(7), vec![0, 2, 4, 6, 8]);
        assert_eq!(value_ticks(430), vec![0, 100, 200, 300, 400, 500]);
        for m in [1, 3, 99, 1234, 98_765] {
            let t = value_ticks(m);
            assert!(*t.last().unwrap() >= m && t.len() <= 7, "{m}: {t:?}");
        }
    }

    #[test]
    fn marker_labels_that_would_overlap_are_left_to_their_tooltips() {
        let series = [Series {
            name: "failures".into(),
            class: "s-fail",
            values: vec![1; 60],
        }];
        let markers: Vec<Marker> = (0..30)
            .map(|i| Marker {
                at: 60 * i,
                class: "m-lock",
                label: format!("locked user{i}"),
            })
            .collect();
        let svg = Chart {
            title: "t",
            start: 0,
            step: 60,
            series: &series,
            markers: &markers,
        }
        .svg("c");
        let labels = svg.matches("class=\"marker-label").count();
        assert!((1..=9).contains(&labels), "{labels}");
        assert_eq!(svg.matches("<line class=\"marker").count(), 30);
    }

    #[test]
    fn names_are_escaped() {
        let series = [Series {
            name: "<script>".into(),
            class: "s-fail",
            values: vec![1],
        }];
        let svg = Chart {
            title: "a&b",
            start: 0,
            step: 60,
            series: &series,
            markers: &[],
        }
        .svg("c");
        assert!(
            !svg.contains("<script>") && svg.contains("&lt;script&gt;") && svg.contains("a&amp;b")
        );
    }
}
