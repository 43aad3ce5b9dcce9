//! UTC microsecond timestamps (no leap seconds): units and formatting for messages.

use flux_calendar::days_to_civil;
use std::fmt;

pub(crate) const MICROS_PER_SECOND: i64 = 1_000_000;
pub(crate) const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
pub(crate) const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
pub(crate) const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Formats a timestamp as RFC 3339 UTC for error messages, e.g. `2024-01-01T00:30:00Z`.
pub(crate) struct Timestamp(pub(crate) i64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = days_to_civil(self.0.div_euclid(MICROS_PER_DAY));
        let of_day = self.0.rem_euclid(MICROS_PER_DAY);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            of_day / MICROS_PER_HOUR,
            of_day % MICROS_PER_HOUR / MICROS_PER_MINUTE,
            of_day % MICROS_PER_MINUTE / MICROS_PER_SECOND
        )?;
        let micros = of_day % MICROS_PER_SECOND;
        if micros != 0 {
            write!(f, ".{micros:06}")?;
        }
        f.write_str("Z")
    }
}

/// Formats a duration in microseconds in the largest unit that divides it, e.g. `5 min`.
pub(crate) struct Duration(pub(crate) i64);

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(i64, &str); 5] = [
            (MICROS_PER_DAY, "d"),
            (MICROS_PER_HOUR, "h"),
            (MICROS_PER_MINUTE, "min"),
            (MICROS_PER_SECOND, "s"),
            (1_000, "ms"),
        ];
        let micros = self.0;
        match UNITS
            .iter()
            .find(|(unit, _)| micros != 0 && micros % unit == 0)
        {
            Some((unit, name)) => write!(f, "{} {name}", micros / unit),
            None => write!(f, "{micros} µs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_timestamps_and_durations() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            Timestamp(1_704_069_000_000_000).to_string(),
            "2024-01-01T00:30:00Z"
        );
        assert_eq!(Duration(5 * MICROS_PER_MINUTE).to_string(), "5 min");
        assert_eq!(Duration(MICROS_PER_DAY).to_string(), "1 d");
        assert_eq!(Duration(1_500_000).to_string(), "1500 ms");
        assert_eq!(Duration(7).to_string(), "7 µs");
        assert_eq!(Duration(0).to_string(), "0 µs");
        assert_eq!(Duration(-MICROS_PER_HOUR).to_string(), "-1 h");
    }
}
