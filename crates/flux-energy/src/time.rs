//! Proleptic Gregorian calendar arithmetic on UTC microsecond timestamps (no leap seconds).

use std::fmt;

pub(crate) const MICROS_PER_SECOND: i64 = 1_000_000;
pub(crate) const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
pub(crate) const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
pub(crate) const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Days since 1970-01-01 to the civil date `(year, month 1..=12, day 1..=31)`.
///
/// Valid for every `i32` day number (years up to about ±5.8 million).
pub fn days_to_civil(days: i32) -> (i32, u32, u32) {
    // Howard Hinnant's civil_from_days: counting years from March puts the leap day at the
    // end of each year, so a 400-year era has a fixed layout.
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as i32, month as u32, day as u32)
}

/// Civil date to days since 1970-01-01; the inverse of [`days_to_civil`].
///
/// `month` must be in `1..=12`; a `day` past the end of its month counts on into the next
/// month (2023-02-29 is 2023-03-01). Returns `i64` because the full `i32` year range does
/// not fit in `i32` days; every date that [`days_to_civil`] produces converts back exactly.
pub fn civil_to_days(year: i32, month: u32, day: u32) -> i64 {
    let month = i64::from(month);
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Formats a timestamp as RFC 3339 UTC for error messages, e.g. `2024-01-01T00:30:00Z`.
pub(crate) struct Timestamp(pub(crate) i64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every i64 microsecond count is within ±106.8 million days, so the cast is lossless.
        let (year, month, day) = days_to_civil(self.0.div_euclid(MICROS_PER_DAY) as i32);
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
    use proptest::prelude::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_to_civil(0), (1970, 1, 1));
        assert_eq!(days_to_civil(-1), (1969, 12, 31));
        assert_eq!(days_to_civil(19_723), (2024, 1, 1));
        assert_eq!(days_to_civil(19_782), (2024, 2, 29));
        assert_eq!(days_to_civil(11_016), (2000, 2, 29));
        assert_eq!(civil_to_days(2024, 3, 31), 19_813);
        assert_eq!(civil_to_days(2023, 2, 29), civil_to_days(2023, 3, 1));
        assert_eq!(civil_to_days(1600, 1, 1), -135_140);
    }

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

    proptest! {
        #[test]
        fn civil_round_trip(days in any::<i32>()) {
            let (year, month, day) = days_to_civil(days);
            prop_assert!((1..=12).contains(&month) && (1..=31).contains(&day));
            prop_assert_eq!(civil_to_days(year, month, day), i64::from(days));
        }
    }
}
