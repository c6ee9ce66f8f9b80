//! Working days and calendar days in Asia/Almaty, with the public-holiday calendar kept as data
//! (`regulations/calendar.toml`, including days off and working weekends moved by decree).
//!
//! Counting rule (Kazakh practice, and the contract example: a licence submitted on Monday
//! 2026-11-23 is due 2026-12-14 18:00): a term of N days starts on the day after the request is
//! registered and ends at the close of the working day of the Nth day.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

use super::LoadError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    timezone: String,
    workday_start: String,
    workday_end: String,
    weekend: Vec<String>,
    covers_from: NaiveDate,
    covers_to: NaiveDate,
    source: String,
    #[serde(default)]
    days_off: Vec<DayEntry>,
    #[serde(default)]
    working_days: Vec<DayEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DayEntry {
    date: NaiveDate,
    name: String,
    #[serde(default)]
    kind: Option<String>,
}

/// The working-day calendar.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: Tz,
    /// Close of the working day: terms in days end at this local time.
    workday_end: NaiveTime,
    weekend: HashSet<Weekday>,
    days_off: BTreeSet<NaiveDate>,
    working_weekends: BTreeSet<NaiveDate>,
    /// Beyond these dates only weekends are known; deadlines there are approximate.
    covers: (NaiveDate, NaiveDate),
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// Parses `HH:MM`.
pub fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

impl Calendar {
    /// Loads and validates `calendar.toml`.
    pub fn load(path: &Path) -> Result<Calendar, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
        let file: CalendarFile = toml::from_str(&text).map_err(|e| LoadError::toml(path, e))?;
        let err = |field: &str, reason: String| LoadError::new(path, field, reason);
        let tz: Tz =
            file.timezone.parse().map_err(|_| err("timezone", format!("unknown time zone {:?}", file.timezone)))?;
        parse_hhmm(&file.workday_start).ok_or_else(|| err("workday_start", "must be HH:MM".into()))?;
        let workday_end = parse_hhmm(&file.workday_end).ok_or_else(|| err("workday_end", "must be HH:MM".into()))?;
        let weekend = file
            .weekend
            .iter()
            .enumerate()
            .map(|(i, d)| {
                weekday(d).ok_or_else(|| err(&format!("weekend[{i}]"), format!("unknown day {d:?}; use mon..sun")))
            })
            .collect::<Result<HashSet<_>, _>>()?;
        if file.covers_from > file.covers_to {
            return Err(err("covers_to", "is before covers_from".into()));
        }
        if file.source.trim().is_empty() {
            return Err(err("source", "must say where the dates come from".into()));
        }
        let mut days_off = BTreeSet::new();
        for (i, d) in file.days_off.iter().enumerate() {
            if d.name.trim().is_empty() {
                return Err(err(&format!("days_off[{i}].name"), "is empty".into()));
            }
            if let Some(kind) = &d.kind
                && !matches!(kind.as_str(), "holiday" | "moved_holiday" | "transferred")
            {
                return Err(err(&format!("days_off[{i}].kind"), format!("unknown kind {kind:?}")));
            }
            if !days_off.insert(d.date) {
                return Err(err(&format!("days_off[{i}].date"), format!("{} is listed twice", d.date)));
            }
        }
        let mut working_weekends = BTreeSet::new();
        for (i, d) in file.working_days.iter().enumerate() {
            if !weekend.contains(&d.date.weekday()) {
                return Err(err(&format!("working_days[{i}].date"), format!("{} is not a weekend day", d.date)));
            }
            if days_off.contains(&d.date) {
                return Err(err(&format!("working_days[{i}].date"), format!("{} is also a day off", d.date)));
            }
            working_weekends.insert(d.date);
        }
        Ok(Calendar {
            tz,
            workday_end,
            weekend,
            days_off,
            working_weekends,
            covers: (file.covers_from, file.covers_to),
        })
    }

    /// The time zone every local date is taken in.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// Whether a local date is a working day.
    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        if self.days_off.contains(&d) {
            return false;
        }
        !self.weekend.contains(&d.weekday()) || self.working_weekends.contains(&d)
    }

    /// Whether the data covers this date (outside it only weekends are known).
    pub fn covers(&self, d: NaiveDate) -> bool {
        self.covers.0 <= d && d <= self.covers.1
    }

    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    fn at_local(&self, d: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
        let naive = d.and_time(time);
        match self.tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
            chrono::LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
            // Almaty has no DST today; for a historic gap take the instant an hour later.
            chrono::LocalResult::None => self.at_local(d, time + Duration::hours(1)),
        }
    }

    fn warn_uncovered(&self, d: NaiveDate) {
        if !self.covers(d) {
            tracing::warn!(date = %d, "holiday calendar does not cover this date; counting weekends only");
        }
    }

    /// Close of the Nth working day after the local date of `from`.
    pub fn add_working_days(&self, from: DateTime<Utc>, n: u32) -> DateTime<Utc> {
        let mut d = self.local_date(from);
        let mut left = n;
        while left > 0 {
            d = d.succ_opt().unwrap_or(d);
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        self.warn_uncovered(d);
        self.at_local(d, self.workday_end)
    }

    /// Close of the working day of the Nth calendar day after `from`; a term ending on a day
    /// off ends on the next working day.
    pub fn add_calendar_days(&self, from: DateTime<Utc>, n: u32) -> DateTime<Utc> {
        let mut d = self.local_date(from) + Duration::days(i64::from(n));
        while !self.is_working_day(d) {
            d = d.succ_opt().unwrap_or(d);
        }
        self.warn_uncovered(d);
        self.at_local(d, self.workday_end)
    }

    /// Close of business on the same local date `n` months after `from` (the month's last day
    /// when it is shorter); if that is a day off, the next working day.
    pub fn add_calendar_months(&self, from: DateTime<Utc>, n: u32) -> DateTime<Utc> {
        let start = self.local_date(from);
        let mut d = start.checked_add_months(chrono::Months::new(n)).unwrap_or(start);
        while !self.is_working_day(d) {
            d = d.succ_opt().unwrap_or(d);
        }
        self.warn_uncovered(d);
        self.at_local(d, self.workday_end)
    }

    /// The last instant of the local day of `from`.
    pub fn end_of_day(&self, from: DateTime<Utc>) -> DateTime<Utc> {
        self.end_of_date(self.local_date(from))
    }

    /// The last instant of a local date.
    pub fn end_of_date(&self, d: NaiveDate) -> DateTime<Utc> {
        let next = d.succ_opt().unwrap_or(d);
        self.at_local(next, NaiveTime::MIN) - Duration::milliseconds(1)
    }

    /// The first working day after the local date of `from`.
    pub fn next_working_day(&self, from: DateTime<Utc>) -> NaiveDate {
        let mut d = self.local_date(from).succ_opt().unwrap_or_else(|| self.local_date(from));
        while !self.is_working_day(d) {
            d = d.succ_opt().unwrap_or(d);
        }
        d
    }

    /// Local time of day of an instant.
    pub fn local_time(&self, t: DateTime<Utc>) -> NaiveTime {
        t.with_timezone(&self.tz).time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calendar() -> Calendar {
        let dir = std::env::temp_dir().join(format!("qyzmet-cal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("calendar.toml");
        std::fs::write(
            &path,
            r#"
timezone = "Asia/Almaty"
workday_start = "09:00"
workday_end = "18:00"
weekend = ["sat", "sun"]
covers_from = "2026-01-01"
covers_to = "2026-12-31"
source = "test"
[[days_off]]
date = "2026-12-16"
name = "Independence Day"
kind = "holiday"
[[working_days]]
date = "2026-12-19"
name = "transferred working Saturday"
"#,
        )
        .expect("write");
        Calendar::load(&path).expect("loads")
    }

    fn almaty(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("rfc3339").with_timezone(&Utc)
    }

    #[test]
    fn p33_fifteen_working_days_match_the_contract_example() {
        let cal = calendar();
        let due = cal.add_working_days(almaty("2026-11-23T10:15:00+05:00"), 15);
        assert_eq!(due, almaty("2026-12-14T18:00:00+05:00"));
    }

    #[test]
    fn p31_one_working_day_skips_the_weekend() {
        let cal = calendar();
        let due = cal.add_working_days(almaty("2026-11-27T17:00:00+05:00"), 1);
        assert_eq!(due, almaty("2026-11-30T18:00:00+05:00"));
    }

    #[test]
    fn holidays_are_not_working_days_and_transferred_saturdays_are() {
        let cal = calendar();
        let due = cal.add_working_days(almaty("2026-12-15T10:00:00+05:00"), 1);
        assert_eq!(due, almaty("2026-12-17T18:00:00+05:00"));
        let d = NaiveDate::from_ymd_opt(2026, 12, 19).expect("date");
        assert!(cal.is_working_day(d));
    }

    #[test]
    fn p34_calendar_days_ending_on_a_day_off_move_to_the_next_working_day() {
        let cal = calendar();
        // 2026-11-16 + 30 days = 2026-12-16, Independence Day -> 2026-12-17
        let due = cal.add_calendar_days(almaty("2026-11-16T12:00:00+05:00"), 30);
        assert_eq!(due, almaty("2026-12-17T18:00:00+05:00"));
    }

    #[test]
    fn end_of_day_is_local_midnight() {
        let cal = calendar();
        let due = cal.end_of_day(almaty("2026-11-23T23:30:00+05:00"));
        assert_eq!(due, almaty("2026-11-23T23:59:59.999+05:00"));
    }
}
