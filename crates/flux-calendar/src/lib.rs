//! Proleptic Gregorian calendar arithmetic on day numbers (days since 1970-01-01), shared by
//! the energy crate (settlement dates) and the realtime server (timestamp parsing and
//! formatting). Howard Hinnant's algorithms: counting years from March puts the leap day at
//! the end of each year, so a 400-year era has a fixed layout.

/// The civil date `(year, month 1..=12, day 1..=31)` of a day number.
pub fn days_to_civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
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
    (year, month as u32, day as u32)
}

/// The day number of a civil date; the inverse of [`days_to_civil`].
///
/// `month` must be in `1..=12`; a `day` past the end of its month counts on into the next
/// month (2023-02-29 is 2023-03-01): check with [`days_in_month`] where that matters.
pub fn civil_to_days(year: i64, month: u32, day: u32) -> i64 {
    let month = i64::from(month);
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Days in `month` (1..=12) of `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
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
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2023, 4), 30);
    }

    proptest! {
        #[test]
        fn round_trip(days in -1_000_000_000i64..1_000_000_000) {
            let (year, month, day) = days_to_civil(days);
            prop_assert!((1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day));
            prop_assert_eq!(civil_to_days(year, month, day), days);
        }
    }
}
