//! The schedule language and the next fire time.
//!
//! A calendar schedule matches civil (wall-clock) times in its zone; each civil time fires at
//! most once, at the instant RFC 5545 gives it: a time that a spring-forward gap skips fires
//! after the gap, moved by the gap's length (02:30 in a one-hour gap fires at 03:30), and a time
//! a fall-back fold repeats fires at its first occurrence only.

use std::fmt;
use std::time::Duration;

use clade_core::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// Why a schedule or a time zone was refused. Each names what is wrong and what would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "the schedule is empty: write a cron expression such as \"0 9 * * MON-FRI\", an alias such as @daily, or @every 10m"
    )]
    Empty,
    #[error(
        "a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), not {found}: {text:?}"
    )]
    FieldCount { text: String, found: usize },
    #[error("{field} field {text:?}: {problem}")]
    Field { field: &'static str, text: String, problem: String },
    #[error("{text:?} never fires: {reason}")]
    NeverFires { text: String, reason: String },
    #[error(
        "unknown alias {0:?}: use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <interval>"
    )]
    UnknownAlias(String),
    #[error("@every {text:?}: {problem}")]
    Every { text: String, problem: String },
    #[error(
        "unknown time zone {0:?}: use an IANA name such as Europe/Berlin, America/New_York or UTC"
    )]
    UnknownZone(String),
    #[error("unknown misfire policy {0:?}: use skip, run_once or catch_up:<n> (n at least 1)")]
    Misfire(String),
}

/// A time zone from the compiled-in IANA database.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

impl Zone {
    pub fn utc() -> Self {
        Self { name: "UTC".into(), tz: TimeZone::UTC }
    }

    /// The zone an IANA name (`Europe/Berlin`) names; `UTC` too.
    pub fn parse(name: &str) -> Result<Self, ScheduleError> {
        let tz =
            jiff::tz::db().get(name).map_err(|_| ScheduleError::UnknownZone(name.to_owned()))?;
        Ok(Self { name: name.to_owned(), tz })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wall-clock time at `at` in this zone.
    fn civil(&self, at: Timestamp) -> Option<DateTime> {
        let instant = jiff::Timestamp::from_millisecond(at.as_millis()).ok()?;
        Some(instant.to_zoned(self.tz.clone()).datetime())
    }

    /// The instant a wall-clock time stands for (RFC 5545: after a gap, first in a fold).
    fn instant(&self, civil: DateTime) -> Option<Timestamp> {
        let zoned = self.tz.to_ambiguous_zoned(civil).compatible().ok()?;
        Some(Timestamp::from_millis(zoned.timestamp().as_millisecond()))
    }
}

/// When a job fires: calendar fields, or a fixed interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Calendar(Calendar),
    /// Every `period` after the previous scheduled time.
    Every(Duration),
}

/// The civil times a cron expression matches, one bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Calendar {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    /// Sunday is 0.
    weekdays: u64,
    days_rule: DaysRule,
}

/// How day-of-month and day-of-week combine, as in Vixie cron: when both are restricted a day
/// matching either fires; when one is `*`, the other alone decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DaysRule {
    Either,
    Both,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec { name: "second", min: 0, max: 59, names: &[] };
const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[] };
const DAY: FieldSpec = FieldSpec { name: "day-of-month", min: 1, max: 31, names: &[] };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
};
/// 7 is Sunday too, as most crons allow.
const WEEKDAY: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The shortest interval `@every` takes: a schedule is not a busy loop.
const SHORTEST_INTERVAL: Duration = Duration::from_secs(1);

impl Schedule {
    /// Reads a schedule: 5 cron fields (minute hour day-of-month month day-of-week), 6 with
    /// seconds first, an alias (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
    /// `@midnight`, `@hourly`) or `@every <interval>` (`90s`, `10m`, `1h30m`, `2d`).
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if let Some(rest) = trimmed.strip_prefix("@every") {
            let period = parse_interval(rest.trim())?;
            return Ok(Self { text: trimmed.to_owned(), kind: Kind::Every(period) });
        }
        let expression = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            alias if alias.starts_with('@') => {
                return Err(ScheduleError::UnknownAlias(trimmed.to_owned()));
            }
            _ => trimmed,
        };
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let (seconds, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            found => return Err(ScheduleError::FieldCount { text: trimmed.to_owned(), found }),
        };
        let weekdays = parse_field(rest[4], &WEEKDAY)?;
        // 7 is Sunday: fold it onto 0.
        let weekdays = (weekdays & 0x7f) | ((weekdays >> 7) & 1);
        let restricted = |field: &str| !field.starts_with('*');
        let calendar = Calendar {
            seconds: parse_field(seconds, &SECOND)?,
            minutes: parse_field(rest[0], &MINUTE)?,
            hours: parse_field(rest[1], &HOUR)?,
            days: parse_field(rest[2], &DAY)?,
            months: parse_field(rest[3], &MONTH)?,
            weekdays,
            days_rule: if restricted(rest[2]) && restricted(rest[4]) {
                DaysRule::Either
            } else {
                DaysRule::Both
            },
        };
        calendar.check_it_fires(trimmed)?;
        Ok(Self { text: trimmed.to_owned(), kind: Kind::Calendar(calendar) })
    }

    /// The first time after `after` the schedule fires, in `zone`; `None` if it never fires
    /// again within a thousand years. For `@every`, `after` should be the previous scheduled
    /// time (or the job's start), not when it actually ran, so late runs do not drift it.
    pub fn next_after(&self, after: Timestamp, zone: &Zone) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(period) => Some(after.plus(*period)),
            Kind::Calendar(calendar) => calendar.next_after(after, zone),
        }
    }

    /// The times the schedule fires after `after` and up to `until` (included), at most `limit`
    /// of them, oldest first.
    pub fn fires_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        zone: &Zone,
        limit: usize,
    ) -> Vec<Timestamp> {
        let mut fires = Vec::new();
        let mut at = after;
        while fires.len() < limit {
            match self.next_after(at, zone) {
                Some(next) if next <= until => {
                    fires.push(next);
                    at = next;
                }
                _ => break,
            }
        }
        fires
    }
}

impl Schedule {
    /// The shortest time between two fires, looking at the first 512 fires from the
    /// first after `from`: a calendar's fields repeat the same pattern every day they match, so
    /// its densest stretch comes within them. `None` if it fires at most once.
    pub fn shortest_gap(&self, from: Timestamp, zone: &Zone) -> Option<Duration> {
        if let Kind::Every(period) = &self.kind {
            return Some(*period);
        }
        let first = self.next_after(from, zone)?;
        let until = Timestamp::from_millis(i64::MAX);
        let mut previous = first;
        let mut shortest: Option<Duration> = None;
        for fire in self.fires_between(first, until, zone, GAP_SAMPLE) {
            let gap = Duration::from_millis(
                u64::try_from(fire.as_millis().saturating_sub(previous.as_millis())).unwrap_or(0),
            );
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            previous = fire;
        }
        shortest
    }
}

/// How many fires [`Schedule::shortest_gap`] looks at.
const GAP_SAMPLE: usize = 512;

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Calendar {
    fn day_matches(&self, date: Date) -> bool {
        let day = self.days & bit(date.day() as u32) != 0;
        let weekday = self.weekdays & bit(date.weekday().to_sunday_zero_offset() as u32) != 0;
        match self.days_rule {
            DaysRule::Either => day || weekday,
            DaysRule::Both => day && weekday,
        }
    }

    /// Refuses an expression no date satisfies, such as the 30th of February: it would
    /// never fire, silently.
    fn check_it_fires(&self, text: &str) -> Result<(), ScheduleError> {
        if self.days_rule == DaysRule::Either || self.weekdays != 0x7f {
            // Some weekday of every month is allowed, or both rules are restricted (either
            // matches): some day always comes.
            return Ok(());
        }
        // Day-of-month alone decides: some allowed day must exist in some allowed month (the
        // 29th of February does, in leap years).
        let longest = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let fits = (1..=12u32)
            .filter(|m| self.months & bit(*m) != 0)
            .any(|m| (1..=longest[m as usize - 1]).any(|d| self.days & bit(d) != 0));
        if fits {
            return Ok(());
        }
        let months: Vec<&str> = (1..=12u32)
            .filter(|m| self.months & bit(*m) != 0)
            .map(|m| MONTH_NAMES[m as usize - 1])
            .collect();
        let days: Vec<String> =
            (1..=31u32).filter(|d| self.days & bit(*d) != 0).map(|d| d.to_string()).collect();
        Err(ScheduleError::NeverFires {
            text: text.to_owned(),
            reason: format!("day {} never comes in {}", days.join(", "), months.join(", ")),
        })
    }

    fn next_after(&self, after: Timestamp, zone: &Zone) -> Option<Timestamp> {
        // Whole seconds: the first candidate is the next second after `after`'s.
        let start = zone.civil(after)?.with().subsec_nanosecond(0).build().ok()?;
        let mut at = next_second(start)?;
        let give_up = start.year().saturating_add(1000);
        loop {
            if at.year() > give_up {
                return None;
            }
            if self.months & bit(at.month() as u32) == 0 {
                at = next_month(at)?;
            } else if !self.day_matches(at.date()) {
                at = next_day(at)?;
            } else if self.hours & bit(at.hour() as u32) == 0 {
                at = next_hour(at)?;
            } else if self.minutes & bit(at.minute() as u32) == 0 {
                at = next_minute(at)?;
            } else if self.seconds & bit(at.second() as u32) == 0 {
                at = next_second(at)?;
            } else {
                // A fold's second pass maps back to an instant already passed: skip it.
                match zone.instant(at) {
                    Some(instant) if instant > after => return Some(instant),
                    _ => at = next_second(at)?,
                }
            }
        }
    }
}

fn bit(n: u32) -> u64 {
    1u64 << n
}

fn next_month(at: DateTime) -> Option<DateTime> {
    let (year, month) =
        if at.month() == 12 { (at.year().checked_add(1)?, 1) } else { (at.year(), at.month() + 1) };
    DateTime::new(year, month, 1, 0, 0, 0, 0).ok()
}

fn next_day(at: DateTime) -> Option<DateTime> {
    Some(at.date().tomorrow().ok()?.to_datetime(jiff::civil::Time::midnight()))
}

fn next_hour(at: DateTime) -> Option<DateTime> {
    if at.hour() == 23 {
        return next_day(at);
    }
    DateTime::new(at.year(), at.month(), at.day(), at.hour() + 1, 0, 0, 0).ok()
}

fn next_minute(at: DateTime) -> Option<DateTime> {
    if at.minute() == 59 {
        return next_hour(at);
    }
    DateTime::new(at.year(), at.month(), at.day(), at.hour(), at.minute() + 1, 0, 0).ok()
}

fn next_second(at: DateTime) -> Option<DateTime> {
    if at.second() == 59 {
        return next_minute(at);
    }
    DateTime::new(at.year(), at.month(), at.day(), at.hour(), at.minute(), at.second() + 1, 0).ok()
}

/// One field's allowed values as bits: lists of `*`, `n`, `a-b`, each with an optional `/step`.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, ScheduleError> {
    let refuse =
        |problem: String| ScheduleError::Field { field: spec.name, text: text.to_owned(), problem };
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(refuse("an empty item in the list".into()));
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| refuse(format!("step {step:?} is not a whole number")))?;
                if step == 0 {
                    return Err(refuse("a step of 0 never moves".into()));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((low, high)) = range.split_once('-') {
            let (low, high) = (value(low, spec, &refuse)?, value(high, spec, &refuse)?);
            if low > high {
                return Err(refuse(format!("the range {range} runs backwards")));
            }
            (low, high)
        } else {
            let start = value(range, spec, &refuse)?;
            // `5/15` means from 5 to the end, every 15.
            (start, if part.contains('/') { spec.max } else { start })
        };
        let mut n = low;
        while n <= high {
            bits |= bit(n);
            n = n.saturating_add(step);
        }
    }
    Ok(bits)
}

fn value(
    text: &str,
    spec: &FieldSpec,
    refuse: &dyn Fn(String) -> ScheduleError,
) -> Result<u32, ScheduleError> {
    let named = spec.names.iter().position(|name| name.eq_ignore_ascii_case(text));
    let n = match named {
        // Month names count from 1, weekday names from 0 (Sunday).
        Some(index) => index as u32 + spec.min,
        None => text.parse::<u32>().map_err(|_| {
            let hint = if spec.names.is_empty() {
                String::new()
            } else {
                format!(" or a name ({})", spec.names.join(", "))
            };
            refuse(format!("{text:?} is not a number{hint}"))
        })?,
    };
    if n < spec.min || n > spec.max {
        return Err(refuse(format!("{n} is out of range {}-{}", spec.min, spec.max)));
    }
    Ok(n)
}

/// `90s`, `10m`, `1h30m`, `2d`: whole numbers, each with a unit (s, m, h, d).
pub fn parse_interval(text: &str) -> Result<Duration, ScheduleError> {
    let refuse =
        |problem: &str| ScheduleError::Every { text: text.to_owned(), problem: problem.to_owned() };
    if text.is_empty() {
        return Err(refuse("give an interval such as 90s, 10m, 1h30m or 2d"));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => return Err(refuse("units are s, m, h and d, as in 1h30m")),
        };
        if number.is_empty() {
            return Err(refuse("each unit needs a number before it"));
        }
        let n: u64 = number.parse().map_err(|_| refuse("too long: at most 100 years"))?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| refuse("too long"))?;
    }
    if !number.is_empty() {
        return Err(refuse("a number needs a unit after it (s, m, h or d)"));
    }
    // Longer than a hundred years is a mistake, not a schedule.
    if total > 100 * 365 * 86_400 {
        return Err(refuse("too long: at most 100 years"));
    }
    let period = Duration::from_secs(total);
    if period < SHORTEST_INTERVAL {
        return Err(refuse("the shortest interval is 1s"));
    }
    Ok(period)
}
