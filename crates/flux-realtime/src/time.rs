//! Timestamps as PostgreSQL writes them and users type them.
//!
//! PostgreSQL's text output writes `2024-01-01 12:00:00.123456+00`, `to_jsonb` writes
//! `2024-01-01T12:00:00.123456+00:00`, and filters hold whatever the user wrote
//! (`2024-01-01T12:00:00Z`, `2024-01-01`). Comparing timestamps as instants, not as strings,
//! needs one parser for all of them. Values are microseconds since 1970-01-01 00:00:00 (UTC
//! for instants), the resolution PostgreSQL stores.

use flux_calendar::{civil_to_days, days_in_month, days_to_civil};
use std::time::{SystemTime, UNIX_EPOCH};

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// A timestamp split into its wall-clock part (µs) and the UTC offset it carried, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub local_micros: i64,
    pub offset_secs: Option<i64>,
}

impl Timestamp {
    /// The instant; a timestamp without offset is read as UTC (the stack's `timezone`).
    /// Saturating: the last 30 years of PostgreSQL's range (294247-294276) lie beyond i64
    /// microseconds since 1970, and clamp to the end instead of wrapping round to the start.
    pub fn instant(self) -> i64 {
        self.local_micros
            .saturating_sub(self.offset_secs.unwrap_or(0).saturating_mul(MICROS_PER_SEC))
    }
}

/// Parses `YYYY-MM-DD[(T| )HH:MM[:SS[.ffffff]]][Z|±HH[[:]MM[[:]SS]]]`, and `infinity` /
/// `-infinity` (as i64::MAX / i64::MIN, so they order like PostgreSQL's).
pub fn parse_timestamp(input: &str) -> Option<Timestamp> {
    let s = input.trim();
    match s.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => {
            return Some(Timestamp {
                local_micros: i64::MAX,
                offset_secs: None,
            })
        }
        "-infinity" => {
            return Some(Timestamp {
                local_micros: i64::MIN,
                offset_secs: None,
            })
        }
        _ => {}
    }
    let mut p = Cursor {
        s: s.as_bytes(),
        i: 0,
    };
    let days = p.date()?;
    let mut micros = 0i64;
    if matches!(p.peek(), Some(b'T' | b't' | b' '))
        && p.s.get(p.i + 1).is_some_and(u8::is_ascii_digit)
    {
        p.i += 1;
        micros = p.time()?;
    }
    while p.peek() == Some(b' ') {
        p.i += 1;
    }
    let offset_secs = match p.peek() {
        None => None,
        Some(b'Z' | b'z') => {
            p.i += 1;
            Some(0)
        }
        Some(sign @ (b'+' | b'-')) => {
            p.i += 1;
            let secs = p.offset()?;
            Some(if sign == b'-' { -secs } else { secs })
        }
        Some(_) if s[p.i..].eq_ignore_ascii_case("utc") => {
            p.i = s.len();
            Some(0)
        }
        Some(_) => return None,
    };
    if p.i != p.s.len() {
        return None;
    }
    Some(Timestamp {
        local_micros: days.checked_mul(MICROS_PER_DAY)?.checked_add(micros)?,
        offset_secs,
    })
}

/// Parses a date (`YYYY-MM-DD`) as days since 1970-01-01.
pub fn parse_date(input: &str) -> Option<i64> {
    let s = input.trim();
    match s.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    let mut p = Cursor {
        s: s.as_bytes(),
        i: 0,
    };
    let days = p.date()?;
    (p.i == p.s.len()).then_some(days)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Exactly `min..=max` digits.
    fn number(&mut self, min: usize, max: usize) -> Option<i64> {
        let start = self.i;
        while self.i < self.s.len() && self.i - start < max && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        if self.i - start < min {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.i += 1)
    }

    fn date(&mut self) -> Option<i64> {
        let year = self.number(4, 6)?;
        self.expect(b'-')?;
        let month = u32::try_from(self.number(1, 2)?).ok()?;
        self.expect(b'-')?;
        let day = u32::try_from(self.number(1, 2)?).ok()?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(civil_to_days(year, month, day))
    }

    fn time(&mut self) -> Option<i64> {
        let hour = self.number(1, 2)?;
        self.expect(b':')?;
        let minute = self.number(2, 2)?;
        let mut second = 0;
        let mut micros = 0;
        if self.peek() == Some(b':') {
            self.i += 1;
            second = self.number(2, 2)?;
            if self.peek() == Some(b'.') {
                self.i += 1;
                let start = self.i;
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.i += 1;
                }
                let digits = &self.s[start..self.i];
                if digits.is_empty() {
                    return None;
                }
                // Round to microseconds as PostgreSQL does.
                let mut value = 0i64;
                for (k, d) in digits.iter().enumerate().take(7) {
                    let d = i64::from(d - b'0');
                    if k < 6 {
                        value = value * 10 + d;
                    } else if d >= 5 {
                        value += 1;
                    }
                }
                micros = value * 10i64.pow(6u32.saturating_sub(digits.len() as u32));
            }
        }
        // 24:00:00 is valid in PostgreSQL (end of day); 60 seconds is not.
        let valid = (hour < 24 && minute < 60 && second < 60)
            || (hour == 24 && minute == 0 && second == 0 && micros == 0);
        valid.then_some((hour * 3600 + minute * 60 + second) * MICROS_PER_SEC + micros)
    }

    /// `HH`, `HHMM`, `HH:MM`, `HH:MM:SS` after the sign, in seconds.
    fn offset(&mut self) -> Option<i64> {
        let hours = self.number(1, 2)?;
        let mut minutes = 0;
        let mut seconds = 0;
        if self.peek() == Some(b':') {
            self.i += 1;
            minutes = self.number(2, 2)?;
            if self.peek() == Some(b':') {
                self.i += 1;
                seconds = self.number(2, 2)?;
            }
        } else if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            minutes = self.number(2, 2)?;
        }
        (hours <= 15 && minutes < 60 && seconds < 60)
            .then_some(hours * 3600 + minutes * 60 + seconds)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the `commit_timestamp` format of Supabase (milliseconds,
/// truncated, as `to_char(..., 'MS')` does).
pub fn format_millis_utc(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let rest = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = days_to_civil(days);
    let secs = rest / MICROS_PER_SEC;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rest % MICROS_PER_SEC / 1000
    )
}

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(s: &str) -> i64 {
        parse_timestamp(s)
            .unwrap_or_else(|| panic!("{s:?} rejected"))
            .instant()
    }

    #[test]
    fn instants_near_the_end_of_time_do_not_wrap() {
        let late = parse_timestamp("294247-01-10T04:00:54.775807-05:00").unwrap();
        let now = parse_timestamp("2024-01-01T00:00:00Z").unwrap();
        assert!(late.instant() > now.instant());
        assert_eq!(late.instant(), i64::MAX);
        let early = parse_timestamp("0001-01-01T00:00:00+14:00").unwrap();
        assert!(early.instant() < now.instant());
    }

    #[test]
    fn every_postgres_spelling_is_the_same_instant() {
        let expected = 1_704_110_400_123_456; // 2024-01-01T12:00:00.123456Z
        for s in [
            "2024-01-01 12:00:00.123456+00",
            "2024-01-01T12:00:00.123456+00:00",
            "2024-01-01T12:00:00.123456Z",
            "2024-01-01T14:00:00.123456+02",
            "2024-01-01T14:30:00.123456+0230",
            "2024-01-01T07:00:00.123456-05:00",
            "2024-01-01 12:00:00.123456 UTC",
        ] {
            assert_eq!(instant(s), expected, "{s}");
        }
    }

    #[test]
    fn partial_forms() {
        assert_eq!(instant("2024-01-01"), 1_704_067_200_000_000);
        assert_eq!(instant("2024-01-01T12:00"), 1_704_110_400_000_000);
        assert_eq!(instant("2024-01-01 12:00:00.5"), 1_704_110_400_500_000);
        assert_eq!(instant("2024-01-01 24:00:00"), instant("2024-01-02"));
        // Seven fractional digits round to microseconds.
        assert_eq!(instant("2024-01-01T00:00:00.0000005Z") % 1_000_000, 1);
    }

    #[test]
    fn offsetless_keeps_its_wall_clock() {
        let t = parse_timestamp("2024-01-01T12:00:00+02:00").unwrap();
        assert_eq!(t.offset_secs, Some(7200));
        assert_eq!(t.local_micros, instant("2024-01-01T12:00:00Z"));
        assert_eq!(
            parse_timestamp("2024-01-01 12:00").unwrap().offset_secs,
            None
        );
    }

    #[test]
    fn infinities_order_outside_everything() {
        assert_eq!(instant("infinity"), i64::MAX);
        assert_eq!(instant("-infinity"), i64::MIN);
        assert_eq!(parse_date("infinity"), Some(i64::MAX));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2024",
            "2024-13-01",
            "2024-02-30",
            "2023-02-29",
            "2024-01-01T25:00",
            "2024-01-01T12:60",
            "2024-01-01T12:00:00.",
            "2024-01-01T12:00:00+16",
            "2024-01-01T12:00:00 nonsense",
            "yesterday",
            "12:00",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s:?} accepted");
        }
        assert_eq!(parse_date("2024-01-01T00:00"), None);
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
    }

    #[test]
    fn formats_milliseconds_truncated() {
        assert_eq!(
            format_millis_utc(1_704_110_400_123_999),
            "2024-01-01T12:00:00.123Z"
        );
        assert_eq!(format_millis_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis_utc(-1), "1969-12-31T23:59:59.999Z");
        let micros = instant("2024-02-29T23:59:59.999999+00");
        assert_eq!(format_millis_utc(micros), "2024-02-29T23:59:59.999Z");
    }
}
