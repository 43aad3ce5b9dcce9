//! Logging for Flux's daemons (the router and the realtime server): one line on stderr per
//! event, prefixed with the UTC time, with two guards against hostile clients, whose text and
//! whose rate of failures must not decide how much is written:
//!
//! * [`cap`] shortens text a client controls (topics, filters, error causes);
//! * [`Throttle`] lets through a few lines of one kind per interval and counts the rest, which
//!   the next line of that kind reports.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One line on stderr, prefixed with the UTC time.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("{} {}", $crate::now_utc(), format_args!($($arg)*))
    };
}

/// A line of kind `$kind` through `$throttle` (a [`Throttle`]): dropped beyond the throttle's
/// rate, and counted.
#[macro_export]
macro_rules! log_throttled {
    ($throttle:expr, $kind:expr, $($arg:tt)*) => {
        if let Some(suppressed) = $throttle.admit($kind) {
            if suppressed > 0 {
                $crate::log!("{} (and {} similar lines not logged)", format_args!($($arg)*), suppressed);
            } else {
                $crate::log!($($arg)*);
            }
        }
    };
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn now_utc() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    format_millis_utc(millis)
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
pub fn format_millis_utc(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let ms = millis.rem_euclid(86_400_000);
    let (y, m, d) = flux_calendar::days_to_civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// `text` cut to at most `max_chars` characters, saying how much was cut.
pub fn cap(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!(
            "{}… ({} more bytes)",
            &text[..cut],
            text.len() - cut
        )),
    }
}

/// At most `lines` lines per kind per `interval`.
pub struct Throttle {
    lines: u32,
    interval: Duration,
    windows: Mutex<HashMap<&'static str, Window>>,
}

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for Throttle {
    /// Ten lines per kind every ten seconds.
    fn default() -> Self {
        Throttle::new(10, Duration::from_secs(10))
    }
}

impl Throttle {
    pub fn new(lines: u32, interval: Duration) -> Throttle {
        Throttle {
            lines,
            interval,
            windows: Mutex::default(),
        }
    }

    /// Whether a line of `kind` may be written now: `Some(n)` with the number of lines of
    /// that kind dropped since the last one written, or `None` to drop this one.
    pub fn admit(&self, kind: &'static str) -> Option<u64> {
        self.admit_at(kind, Instant::now())
    }

    fn admit_at(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.entry(kind).or_insert(Window {
            started: now,
            logged: 0,
            suppressed: 0,
        });
        if now.duration_since(window.started) >= self.interval {
            window.started = now;
            window.logged = 0;
        }
        if window.logged < self.lines {
            window.logged += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_long_text_on_a_char_boundary() {
        assert_eq!(cap("short", 10), "short");
        assert_eq!(cap("ééééé", 2), "éé… (6 more bytes)");
        let long = "x".repeat(1 << 20);
        assert!(cap(&long, 200).len() < 250);
    }

    #[test]
    fn throttles_per_kind_and_reports_what_it_dropped() {
        let t = Throttle::new(2, Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(t.admit_at("a", start), Some(0));
        assert_eq!(t.admit_at("a", start), Some(0));
        assert_eq!(t.admit_at("a", start), None);
        assert_eq!(t.admit_at("a", start), None);
        assert_eq!(t.admit_at("b", start), Some(0));
        let later = start + Duration::from_secs(11);
        assert_eq!(t.admit_at("a", later), Some(2));
        assert_eq!(t.admit_at("a", later), Some(0));
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_millis_utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            format_millis_utc(1_704_110_460_123),
            "2024-01-01 12:01:00.123"
        );
        assert_eq!(format_millis_utc(-1), "1969-12-31 23:59:59.999");
    }
}
