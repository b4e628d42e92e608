//! The year of year-less (RFC 3164) lines, per file.
//!
//! A file's lines are read in order from the year of its first year-less
//! line; a month more than six months before the previous line's starts the
//! next year (a file from December into January). That first year comes
//! from, in this order:
//!
//! 1. `--year FILE=YYYY`: given for that file;
//! 2. `--year YYYY`: the year of the earliest line of the files it covers,
//!    read as one stretch of time (rotated files): the files' spans are
//!    laid on the calendar, the longest stretch of it that no file covers
//!    is where the stretch starts, and a file that begins before that point
//!    in the calendar begins in the next year. So `auth.log.1` (December)
//!    and `auth.log` (January), given in any order with `--year 2025`, are
//!    December 2025 and January 2026;
//! 3. otherwise the file's modification time: its last year-less line is
//!    in the latest year that puts it no later than a day after the
//!    modification time (the day allows for the host's offset).

use super::envelope::{days_from_civil, days_in_month, Stamp};

const YEAR_S: i64 = 366 * 86_400;

/// A calendar position within a year, in seconds (months counted as 31
/// days: it orders, it does not measure).
fn position(month: u32, day: u32, secs: u32) -> i64 {
    (i64::from(month - 1) * 31 + i64::from(day - 1)) * 86_400 + i64::from(secs)
}

/// What a file's year-less lines span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// (month, day, seconds) of the first and last year-less lines.
    pub first: Option<(u32, u32, u32)>,
    pub last: Option<(u32, u32, u32)>,
    /// How many times the lines pass a New Year.
    pub rollovers: i64,
}

impl Span {
    /// The span of `stamps`, in file order.
    pub fn of(stamps: impl IntoIterator<Item = Stamp>) -> Span {
        let mut span = Span::default();
        for s in stamps {
            if let Stamp::Yearless { month, day, secs } = s {
                if let Some((last_month, _, _)) = span.last {
                    if month + 6 < last_month {
                        span.rollovers += 1;
                    }
                }
                span.first.get_or_insert((month, day, secs));
                span.last = Some((month, day, secs));
            }
        }
        span
    }
}

/// Where the year of a file's first year-less line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YearChoice {
    /// `--year FILE=YYYY`.
    Given(i32),
    /// `--year YYYY`, shared with the other files so chosen.
    Shared(i32),
    /// The file's modification time (Unix seconds).
    Modified(i64),
}

/// The year of each file's first year-less line (`None` for a file with
/// none), for files of `spans` chosen as `choices`, at `offset_s` east of UTC.
pub fn first_years(spans: &[Span], choices: &[YearChoice], offset_s: i64) -> Vec<Option<i64>> {
    let shared: Vec<usize> = (0..spans.len())
        .filter(|&i| matches!(choices[i], YearChoice::Shared(_)) && spans[i].first.is_some())
        .collect();
    let start = stretch_start(&shared.iter().map(|&i| spans[i]).collect::<Vec<_>>());
    spans
        .iter()
        .zip(choices)
        .map(|(span, choice)| {
            let (m, d, s) = span.first?;
            Some(match *choice {
                YearChoice::Given(y) => i64::from(y),
                YearChoice::Shared(y) => {
                    i64::from(y) + i64::from(start.is_some_and(|p| position(m, d, s) < p))
                }
                YearChoice::Modified(mtime) => {
                    let (lm, ld, ls) = span.last.expect("a span with a first line has a last");
                    last_year_before(lm, ld, ls, mtime + offset_s) - span.rollovers
                }
            })
        })
        .collect()
}

/// The latest year in which (month, day, secs) is at most a day after
/// `local_s` (local Unix seconds).
fn last_year_before(month: u32, day: u32, secs: u32, local_s: i64) -> i64 {
    let (year, _, _) = civil_from_days(local_s.div_euclid(86_400));
    let at = |y: i64| days_from_civil(y, month, day) * 86_400 + i64::from(secs);
    if at(year) <= local_s + 86_400 {
        year
    } else {
        year - 1
    }
}

/// The calendar position where the stretch covered by `spans` begins: the
/// end of the longest part of the year that no span covers.
fn stretch_start(spans: &[Span]) -> Option<i64> {
    let mut arcs: Vec<(i64, i64)> = spans
        .iter()
        .filter_map(|s| {
            let (fm, fd, fs) = s.first?;
            let (lm, ld, ls) = s.last?;
            let (a, b) = (position(fm, fd, fs), position(lm, ld, ls));
            let len = if s.rollovers > 0 {
                (b - a).rem_euclid(YEAR_S) + (s.rollovers - 1) * YEAR_S
            } else {
                (b - a).max(0)
            };
            Some((a, a + len))
        })
        .collect();
    if arcs.is_empty() {
        return None;
    }
    arcs.sort_unstable();
    // Merge, then the widest gap (going round the year once).
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (a, b) in arcs {
        match merged.last_mut() {
            Some((_, end)) if a <= *end => *end = (*end).max(b),
            _ => merged.push((a, b)),
        }
    }
    let n = merged.len();
    let (mut best_gap, mut best_start) = (i64::MIN, merged[0].0);
    for i in 0..n {
        let next = merged[(i + 1) % n].0 + if i + 1 == n { YEAR_S } else { 0 };
        let gap = next - merged[i].1;
        if gap > best_gap {
            best_gap = gap;
            best_start = merged[(i + 1) % n].0;
        }
    }
    Some(best_start)
}

/// (year, month, day) of a day count from 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Dates a file's year-less lines in order, from the year of its first.
#[derive(Debug, Clone)]
pub struct Calendar {
    year: i64,
    last_month: Option<u32>,
    offset_s: i64,
}

/// A year-less line whose day its year does not have (29 February).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSuchDay {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl Calendar {
    pub fn new(first_year: i64, offset_s: i64) -> Calendar {
        Calendar {
            year: first_year,
            last_month: None,
            offset_s,
        }
    }

    /// The line's time in Unix µs.
    pub fn date(&mut self, stamp: Stamp) -> Result<i64, NoSuchDay> {
        match stamp {
            Stamp::Dated(us) => Ok(us),
            Stamp::Yearless { month, day, secs } => {
                if let Some(last) = self.last_month {
                    if month + 6 < last {
                        self.year += 1;
                    }
                }
                self.last_month = Some(month);
                if day > days_in_month(self.year, month) {
                    return Err(NoSuchDay {
                        year: self.year,
                        month,
                        day,
                    });
                }
                let secs = days_from_civil(self.year, month, day) * 86_400 + i64::from(secs)
                    - self.offset_s;
                Ok(secs * 1_000_000)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yl(month: u32, day: u32) -> Stamp {
        Stamp::Yearless {
            month,
            day,
            secs: 3600,
        }
    }

    #[test]
    fn a_file_passing_new_year_counts_one_rollover() {
        let s = Span::of([yl(12, 30), yl(12, 31), yl(1, 1), yl(1, 2)]);
        assert_eq!(s.rollovers, 1);
        assert_eq!(
            (s.first, s.last),
            (Some((12, 30, 3600)), Some((1, 2, 3600)))
        );
        let mut c = Calendar::new(2025, 0);
        let jan = [yl(12, 31), yl(1, 1)].map(|s| c.date(s).unwrap())[1];
        assert_eq!(civil_from_days(jan / 1_000_000 / 86_400), (2026, 1, 1));
    }

    #[test]
    fn one_shared_year_reads_rotated_files_across_new_year_in_any_order() {
        let december = Span::of([yl(12, 20), yl(12, 31)]);
        let january = Span::of([yl(1, 1), yl(1, 7)]);
        for (spans, expect) in [
            ([january, december], [Some(2026), Some(2025)]),
            ([december, january], [Some(2025), Some(2026)]),
        ] {
            let got = first_years(&spans, &[YearChoice::Shared(2025); 2], 0);
            assert_eq!(got, expect);
        }
        // Files of one month stay in the year given.
        let a = Span::of([yl(11, 19), yl(11, 19)]);
        let b = Span::of([yl(11, 20), yl(11, 20)]);
        assert_eq!(
            first_years(&[b, a], &[YearChoice::Shared(2025); 2], 0),
            [Some(2025), Some(2025)]
        );
        // Overlapping files (two hosts) too.
        let a = Span::of([yl(11, 1), yl(11, 30)]);
        let b = Span::of([yl(11, 5), yl(11, 25)]);
        assert_eq!(
            first_years(&[a, b], &[YearChoice::Shared(2025); 2], 0),
            [Some(2025), Some(2025)]
        );
        // A file that itself passes New Year, beside the next one.
        let a = Span::of([yl(12, 28), yl(1, 3)]);
        let b = Span::of([yl(1, 3), yl(1, 10)]);
        assert_eq!(
            first_years(&[b, a], &[YearChoice::Shared(2025); 2], 0),
            [Some(2026), Some(2025)]
        );
    }

    #[test]
    fn the_modification_time_dates_the_last_line() {
        let at = |y, m, d| days_from_civil(y, m, d) * 86_400;
        let december = Span::of([yl(12, 20), yl(12, 31)]);
        let january = Span::of([yl(1, 1), yl(1, 7)]);
        let spans = [december, january];
        // Rotated on 2026-01-01 and 2026-01-08.
        let choices = [
            YearChoice::Modified(at(2026, 1, 1)),
            YearChoice::Modified(at(2026, 1, 8)),
        ];
        assert_eq!(first_years(&spans, &choices, 0), [Some(2025), Some(2026)]);
        // Written on its last day (the host a day ahead of UTC): this year.
        let choices = [YearChoice::Modified(at(2025, 12, 31) - 3600)];
        assert_eq!(first_years(&[december], &choices, 14 * 3600), [Some(2025)]);
        // A file passing New Year, modified in January.
        let both = Span::of([yl(12, 30), yl(1, 2)]);
        let choices = [YearChoice::Modified(at(2026, 1, 2) + 7200)];
        assert_eq!(first_years(&[both], &choices, 0), [Some(2025)]);
    }

    #[test]
    fn a_day_the_year_does_not_have_is_refused() {
        let mut c = Calendar::new(2025, 0);
        assert_eq!(
            c.date(yl(2, 29)),
            Err(NoSuchDay {
                year: 2025,
                month: 2,
                day: 29
            })
        );
        assert!(Calendar::new(2024, 0).date(yl(2, 29)).is_ok());
    }
}
