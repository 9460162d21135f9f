//! Wall-clock time as integer milliseconds. Reading it goes through the `Clock` (`clock.rs`), so
//! tests and the simulator control it.

use std::fmt;
use std::time::Duration;

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-22T09:04:54.123Z`; a time
    /// outside the calendar's range (years -9999 to 9999) as its milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(at) => write!(f, "{}", at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")),
            Err(_) => write!(f, "{}ms", self.0),
        }
    }
}

impl Timestamp {
    /// Parses `YYYY-MM-DD` as midnight UTC; `None` for anything else, a day the month does
    /// not have included.
    pub fn parse_date(text: &str) -> Option<Self> {
        let date = jiff::civil::Date::strptime("%Y-%m-%d", text).ok()?;
        let midnight = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
        Some(Self(midnight.timestamp().as_millisecond()))
    }
}

impl Timestamp {
    /// Its day in UTC, `YYYY-MM-DD` (as its milliseconds outside the calendar's range).
    pub fn date(self) -> String {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(at) => at.strftime("%Y-%m-%d").to_string(),
            Err(_) => format!("{}ms", self.0),
        }
    }

    /// `self` moved `by` forward (saturating).
    pub fn plus(self, by: Duration) -> Self {
        Self(self.0.saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates() {
        assert_eq!(Timestamp::parse_date("1970-01-01"), Some(Timestamp::from_millis(0)));
        assert_eq!(
            Timestamp::parse_date("2000-02-29").map(|t| t.to_string()).as_deref(),
            Some("2000-02-29T00:00:00.000Z")
        );
        assert_eq!(
            Timestamp::parse_date("2026-11-22").map(|t| t.to_string()).as_deref(),
            Some("2026-11-22T00:00:00.000Z")
        );
        assert_eq!(Timestamp::parse_date("2026-13-01"), None);
        assert_eq!(Timestamp::parse_date("2026-02-29"), None, "not a leap year");
        assert_eq!(Timestamp::parse_date("2026-11-22T00:00:00Z"), None);
        assert_eq!(Timestamp::parse_date("yesterday"), None);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp::from_millis(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp::from_millis(1_795_338_294_123).to_string(),
            "2026-11-22T09:04:54.123Z"
        );
        assert_eq!(Timestamp::from_millis(951_782_400_000).to_string(), "2000-02-29T00:00:00.000Z");
        assert_eq!(Timestamp::from_millis(-1).to_string(), "1969-12-31T23:59:59.999Z");
        assert_eq!(Timestamp::from_millis(i64::MAX).to_string(), format!("{}ms", i64::MAX));
        assert_eq!(Timestamp::from_millis(1_795_338_294_123).date(), "2026-11-22");
        assert_eq!(Timestamp::from_millis(-1).date(), "1969-12-31");
    }
}
