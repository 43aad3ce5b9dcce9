//! UTC-aligned time buckets.

use std::error::Error;
use std::fmt;

use crate::time::{Duration, Timestamp};

/// Most buckets one grid may have: 400 days of 5-minute buckets. Bounds the memory of one
/// aggregation (a few dozen bytes per bucket).
pub const MAX_BUCKETS: usize = 115_200;

/// Consecutive buckets `[start + i·width, start + (i+1)·width)`, `i < len`, with `start` a
/// multiple of `width` since the Unix epoch ([`Grid::covering`]), or one bucket that is exactly
/// a given range ([`Grid::exactly`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grid {
    start: i64,
    width: i64,
    count: usize,
}

/// Why a grid cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GridError {
    /// `end <= start`.
    EmptyRange { start: i64, end: i64 },
    /// `width <= 0`.
    NonPositiveWidth { width: i64 },
    /// More than [`MAX_BUCKETS`] buckets.
    TooManyBuckets { buckets: u128, width: i64 },
    /// The aligned buckets reach outside the `i64` microsecond range.
    OutOfRange { start: i64, end: i64, width: i64 },
}

impl fmt::Display for GridError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GridError::EmptyRange { start, end } => write!(
                f,
                "empty time range: end {} is not after start {}",
                Timestamp(end),
                Timestamp(start)
            ),
            GridError::NonPositiveWidth { width } => write!(
                f,
                "bucket width must be a positive number of microseconds, got {width}"
            ),
            GridError::TooManyBuckets { buckets, width } => write!(
                f,
                "the time range needs {buckets} buckets of {}, more than the limit of \
                 {MAX_BUCKETS}; query a shorter range or use wider buckets",
                Duration(width)
            ),
            GridError::OutOfRange { start, end, width } => write!(
                f,
                "buckets of {} covering [{start}, {end}) µs reach beyond the representable \
                 time range",
                Duration(width)
            ),
        }
    }
}

impl Error for GridError {}

impl Grid {
    /// The buckets of `width` µs, aligned to multiples of `width` since the Unix epoch, that
    /// cover `[start, end)`: the first holds `start`, the last holds `end - 1`.
    pub fn covering(start: i64, end: i64, width: i64) -> Result<Grid, GridError> {
        if width <= 0 {
            return Err(GridError::NonPositiveWidth { width });
        }
        if end <= start {
            return Err(GridError::EmptyRange { start, end });
        }
        let w = i128::from(width);
        let first = i128::from(start).div_euclid(w) * w;
        let last = (i128::from(end) - 1).div_euclid(w) * w;
        let buckets = (last - first) / w + 1;
        if buckets > MAX_BUCKETS as i128 {
            return Err(GridError::TooManyBuckets {
                buckets: buckets as u128,
                width,
            });
        }
        match (i64::try_from(first), i64::try_from(last + w)) {
            (Ok(first), Ok(_)) => Ok(Grid {
                start: first,
                width,
                count: buckets as usize,
            }),
            _ => Err(GridError::OutOfRange { start, end, width }),
        }
    }

    /// One bucket that is exactly `[start, end)`, aligned to nothing: totals over a range.
    pub fn exactly(start: i64, end: i64) -> Result<Grid, GridError> {
        if end <= start {
            return Err(GridError::EmptyRange { start, end });
        }
        let width = end.checked_sub(start).ok_or(GridError::OutOfRange {
            start,
            end,
            width: 0,
        })?;
        Ok(Grid {
            start,
            width,
            count: 1,
        })
    }

    /// Start of the first bucket.
    pub fn start(&self) -> i64 {
        self.start
    }

    /// End of the last bucket (exclusive).
    pub fn end(&self) -> i64 {
        self.bucket_start(self.count)
    }

    pub fn width(&self) -> i64 {
        self.width
    }

    /// Number of buckets (at least 1).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Always false: a grid has at least one bucket.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Start of bucket `index`; `index == len()` gives [`Grid::end`].
    ///
    /// # Panics
    /// If `index > len()`.
    pub fn bucket_start(&self, index: usize) -> i64 {
        assert!(
            index <= self.count,
            "bucket index {index} out of range for a grid of {} buckets",
            self.count
        );
        // No overflow: `covering` checked that the end fits in i64.
        self.start + index as i64 * self.width
    }

    /// Index of the bucket holding `t`, if any.
    pub(crate) fn bucket_of(&self, t: i64) -> Option<usize> {
        (self.start..self.end())
            .contains(&t)
            .then(|| ((t - self.start) / self.width) as usize)
    }

    /// Index of the first bucket edge (edge `k` = `bucket_start(k)`) later than `t`, in
    /// `0..=len()+1`; `len()+1` stands for "no edge inside the grid is later than `t`".
    fn first_edge_after(&self, t: i64) -> usize {
        if t < self.start {
            0
        } else if t >= self.end() {
            self.count + 1
        } else {
            ((t - self.start) / self.width) as usize + 1
        }
    }

    /// Time of edge `k`, or `i64::MAX` for `k == len()+1`.
    fn edge_time(&self, k: usize) -> i64 {
        if k <= self.count {
            self.bucket_start(k)
        } else {
            i64::MAX
        }
    }
}

/// A position on a grid that only moves forward: the first edge later than the last time
/// seen. Readings arrive in time order, so finding their bucket is usually one comparison.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor {
    next: usize,
    next_time: i64,
}

impl Cursor {
    /// Positioned before the grid.
    pub(crate) fn new(grid: &Grid) -> Cursor {
        Cursor {
            next: 0,
            next_time: grid.start,
        }
    }

    /// Moves to time `t`, which must not be earlier than the previous position.
    pub(crate) fn seek(&mut self, grid: &Grid, t: i64) {
        if t >= self.next_time {
            self.next = grid.first_edge_after(t);
            self.next_time = grid.edge_time(self.next);
        }
    }

    /// Index of the bucket holding the position; `>= len()` (and then useless with
    /// `slice::get`) when the position is outside the grid.
    pub(crate) fn bucket(&self) -> usize {
        self.next.wrapping_sub(1)
    }

    /// Time of the next edge, if there is one at or before `t`.
    pub(crate) fn edge_until(&self, grid: &Grid, t: i64) -> Option<i64> {
        (self.next <= grid.count && self.next_time <= t).then_some(self.next_time)
    }

    /// Steps over the next edge.
    pub(crate) fn cross_edge(&mut self, grid: &Grid) {
        self.next += 1;
        self.next_time = grid.edge_time(self.next);
    }

    /// Whether `t` lies before the next edge, i.e. in the current bucket (or the same gap
    /// outside the grid). False only at an edge or beyond.
    pub(crate) fn before_next_edge(&self, t: i64) -> bool {
        t < self.next_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn aligns_to_epoch_multiples() {
        let g = Grid::covering(7 * MIN, 61 * MIN, 30 * MIN).unwrap();
        assert_eq!((g.start(), g.end(), g.len()), (0, 90 * MIN, 3));
        assert_eq!(g.bucket_start(1), 30 * MIN);
        assert_eq!(g.bucket_start(3), g.end());
        assert!(!g.is_empty());

        let g = Grid::covering(0, 60 * MIN, 30 * MIN).unwrap();
        assert_eq!((g.start(), g.end(), g.len()), (0, 60 * MIN, 2));

        // Floor toward -inf before the epoch.
        let g = Grid::covering(-MIN, MIN, 30 * MIN).unwrap();
        assert_eq!((g.start(), g.end(), g.len()), (-30 * MIN, 30 * MIN, 2));

        let g = Grid::covering(5, 6, 1).unwrap();
        assert_eq!((g.start(), g.end(), g.len(), g.width()), (5, 6, 1, 1));
    }

    #[test]
    fn exactly_one_unaligned_bucket() {
        let g = Grid::exactly(7 * MIN, 61 * MIN).unwrap();
        assert_eq!(
            (g.start(), g.end(), g.len(), g.width()),
            (7 * MIN, 61 * MIN, 1, 54 * MIN)
        );
        assert_eq!(g.bucket_of(7 * MIN - 1), None);
        assert_eq!(g.bucket_of(60 * MIN), Some(0));
        assert_eq!(g.bucket_of(61 * MIN), None);
        assert!(Grid::exactly(5, 5).is_err());
    }

    #[test]
    fn bucket_lookup() {
        let g = Grid::covering(0, 90 * MIN, 30 * MIN).unwrap();
        assert_eq!(g.bucket_of(-1), None);
        assert_eq!(g.bucket_of(0), Some(0));
        assert_eq!(g.bucket_of(30 * MIN - 1), Some(0));
        assert_eq!(g.bucket_of(30 * MIN), Some(1));
        assert_eq!(g.bucket_of(90 * MIN), None);

        let mut c = Cursor::new(&g);
        c.seek(&g, -5);
        assert!(c.bucket() >= g.len());
        c.seek(&g, 0);
        assert_eq!(c.bucket(), 0);
        c.seek(&g, 65 * MIN);
        assert_eq!(c.bucket(), 2);
        assert_eq!(c.edge_until(&g, 89 * MIN), None);
        assert_eq!(c.edge_until(&g, 90 * MIN), Some(90 * MIN));
        c.cross_edge(&g);
        assert!(c.bucket() >= g.len());
        assert_eq!(c.edge_until(&g, i64::MAX), None);
        c.seek(&g, i64::MAX);
        assert!(c.bucket() >= g.len());
    }

    #[test]
    #[should_panic(expected = "bucket index 4 out of range")]
    fn bucket_start_past_end_panics() {
        Grid::covering(0, 90 * MIN, 30 * MIN)
            .unwrap()
            .bucket_start(4);
    }

    #[test]
    fn rejects_bad_ranges() {
        assert_eq!(
            Grid::covering(10, 10, 5),
            Err(GridError::EmptyRange { start: 10, end: 10 })
        );
        assert_eq!(
            Grid::covering(0, 10, 0),
            Err(GridError::NonPositiveWidth { width: 0 })
        );
        assert_eq!(
            Grid::covering(0, 10, -3).unwrap_err().to_string(),
            "bucket width must be a positive number of microseconds, got -3"
        );
        assert_eq!(
            Grid::covering(1_704_067_200_000_000, 1_704_067_200_000_000, 5 * MIN)
                .unwrap_err()
                .to_string(),
            "empty time range: end 2024-01-01T00:00:00Z is not after start 2024-01-01T00:00:00Z"
        );
        assert_eq!(
            Grid::covering(i64::MIN, i64::MAX, 1)
                .unwrap_err()
                .to_string(),
            format!(
                "the time range needs {} buckets of 1 µs, more than the limit of 115200; \
                 query a shorter range or use wider buckets",
                u64::MAX
            )
        );
        assert!(matches!(
            Grid::covering(i64::MIN, i64::MIN + 10, 1_000),
            Err(GridError::OutOfRange { .. })
        ));
        assert!(matches!(
            Grid::covering(i64::MAX - 10, i64::MAX, 1_000),
            Err(GridError::OutOfRange { .. })
        ));
    }

    #[test]
    fn max_buckets_is_the_limit() {
        let five = 5 * MIN;
        let g = Grid::covering(0, MAX_BUCKETS as i64 * five, five).unwrap();
        assert_eq!(g.len(), MAX_BUCKETS);
        assert_eq!(
            Grid::covering(0, MAX_BUCKETS as i64 * five + 1, five),
            Err(GridError::TooManyBuckets {
                buckets: MAX_BUCKETS as u128 + 1,
                width: five
            })
        );
        assert_eq!(
            Grid::covering(0, MAX_BUCKETS as i64 * five + 1, five)
                .unwrap_err()
                .to_string(),
            "the time range needs 115201 buckets of 5 min, more than the limit of 115200; \
             query a shorter range or use wider buckets"
        );
    }
}
