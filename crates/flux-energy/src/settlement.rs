//! GB settlement periods: half hours numbered from UK local midnight.
//!
//! UK civil time is GMT (UTC+0), and BST (UTC+1) from 01:00 UTC on the last Sunday of March
//! to 01:00 UTC on the last Sunday of October. That is the current UK rule (since 1996); it is
//! applied to every year, past and future, so historical dates with other rules come out wrong.
//! Periods are counted in elapsed half hours since the UTC instant of local midnight, never
//! from wall-clock time, so the spring change day has 46 periods and the autumn one 50.

use crate::time::{MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MINUTE};
use flux_calendar::{civil_to_days, days_to_civil};

const DAY: i128 = MICROS_PER_DAY as i128;
const HOUR: i128 = MICROS_PER_HOUR as i128;
const PERIOD: i128 = 30 * MICROS_PER_MINUTE as i128;

/// The settlement period containing an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Settlement {
    /// Settlement date (the UK local date) as days since 1970-01-01; see [`days_to_civil`].
    pub date_days: i32,
    /// 1-based period: 1 starts at local midnight.
    pub period: u32,
    /// Periods in this settlement date: 48, or 46 / 50 on the spring / autumn change days.
    pub periods_in_day: u32,
}

/// The GB settlement period containing instant `t` (µs since the Unix epoch).
pub fn settlement_period(t: i64) -> Settlement {
    // i128 because an offset or a day added to an extreme i64 instant would overflow.
    let t = i128::from(t);
    let date = (t + uk_offset(t)).div_euclid(DAY);
    let midnight = local_midnight(date);
    // Casts are lossless: |date| <= 106.8 million days, and a day has at most 50 periods.
    Settlement {
        date_days: date as i32,
        period: ((t - midnight).div_euclid(PERIOD) + 1) as u32,
        periods_in_day: ((local_midnight(date + 1) - midnight) / PERIOD) as u32,
    }
}

/// Day number of the last Sunday of `month` (March or October, both 31 days long).
fn last_sunday(year: i64, month: u32) -> i128 {
    let last = i128::from(civil_to_days(year, month, 31));
    // 1970-01-01 was a Thursday, so (days + 4) mod 7 counts days since Sunday.
    last - (last + 4).rem_euclid(7)
}

/// Offset of UK local time from UTC at instant `t`.
fn uk_offset(t: i128) -> i128 {
    let (year, _, _) = days_to_civil(t.div_euclid(DAY) as i64);
    let bst_start = last_sunday(year, 3) * DAY + HOUR;
    let bst_end = last_sunday(year, 10) * DAY + HOUR;
    if (bst_start..bst_end).contains(&t) {
        HOUR
    } else {
        0
    }
}

/// UTC instant of 00:00 UK local time on day `date`.
fn local_midnight(date: i128) -> i128 {
    // The clocks change at 01:00 UTC, never at midnight: midnight of the spring Sunday is
    // still GMT, midnight of the autumn Sunday is still BST.
    let (year, _, _) = days_to_civil(date as i64);
    let bst = last_sunday(year, 3) < date && date <= last_sunday(year, 10);
    date * DAY - if bst { HOUR } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        civil_to_days(year, month, day) * MICROS_PER_DAY
            + hour * MICROS_PER_HOUR
            + minute * MICROS_PER_MINUTE
    }

    fn date(year: i64, month: u32, day: u32) -> i32 {
        civil_to_days(year, month, day) as i32
    }

    fn expect(t: i64, day: (i64, u32, u32), period: u32, periods_in_day: u32) {
        assert_eq!(
            settlement_period(t),
            Settlement {
                date_days: date(day.0, day.1, day.2),
                period,
                periods_in_day
            },
            "at {}",
            crate::time::Timestamp(t)
        );
    }

    #[test]
    fn spring_change_day() {
        expect(at(2024, 3, 31, 1, 0), (2024, 3, 31), 3, 46);
        expect(at(2024, 3, 31, 0, 0), (2024, 3, 31), 1, 46);
        expect(at(2024, 3, 31, 0, 59), (2024, 3, 31), 2, 46);
        expect(at(2024, 3, 31, 22, 59), (2024, 3, 31), 46, 46);
        expect(at(2024, 3, 31, 23, 0), (2024, 4, 1), 1, 48);
        expect(at(2024, 3, 30, 23, 59), (2024, 3, 30), 48, 48);
    }

    #[test]
    fn autumn_change_day() {
        expect(at(2024, 10, 27, 1, 0), (2024, 10, 27), 5, 50);
        expect(at(2024, 10, 26, 23, 0), (2024, 10, 27), 1, 50);
        expect(at(2024, 10, 26, 22, 59), (2024, 10, 26), 48, 48);
        expect(at(2024, 10, 27, 0, 59), (2024, 10, 27), 4, 50);
        expect(at(2024, 10, 27, 23, 59), (2024, 10, 27), 50, 50);
        expect(at(2024, 10, 28, 0, 0), (2024, 10, 28), 1, 48);
    }

    #[test]
    fn ordinary_days() {
        expect(at(2025, 1, 15, 12, 10), (2025, 1, 15), 25, 48);
        expect(at(2024, 6, 15, 0, 0), (2024, 6, 15), 3, 48);
        expect(at(2024, 6, 14, 22, 59), (2024, 6, 14), 48, 48);
        expect(at(2024, 6, 15, 12, 0), (2024, 6, 15), 27, 48);
        expect(at(2025, 3, 30, 1, 0), (2025, 3, 30), 3, 46);
        expect(at(2025, 10, 26, 1, 0), (2025, 10, 26), 5, 50);
        expect(at(1970, 1, 1, 0, 0), (1970, 1, 1), 1, 48);
    }

    #[test]
    fn last_sundays() {
        assert_eq!(last_sunday(2024, 3), i128::from(civil_to_days(2024, 3, 31)));
        assert_eq!(
            last_sunday(2024, 10),
            i128::from(civil_to_days(2024, 10, 27))
        );
        assert_eq!(last_sunday(2025, 3), i128::from(civil_to_days(2025, 3, 30)));
        assert_eq!(
            last_sunday(2026, 10),
            i128::from(civil_to_days(2026, 10, 25))
        );
    }

    #[test]
    fn extreme_instants_do_not_overflow() {
        for t in [i64::MIN, i64::MAX] {
            let s = settlement_period(t);
            assert!((1..=s.periods_in_day).contains(&s.period));
        }
    }
}
