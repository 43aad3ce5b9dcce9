//! Partial state of a bucket, and folding fine buckets into coarse ones: the rollups.
//!
//! # The invariant that makes rollups exact
//!
//! Let `P(b)` be the [`Partial`] of bucket `b` from a computation whose readings include the
//! context around `b` ([`crate::CONTEXT_READINGS`] per register each side, R8). Then:
//!
//! 1. **Locality.** `P(b)` is the same in every such computation, whatever its range: every
//!    decision about a reading uses only readings within [`crate::WINDOW`] of it.
//! 2. **Additivity.** Every field of a coarse bucket `B` is a sum, an OR or a count over the
//!    partials of the fine buckets tiling `B`: energy is the rise of one monotone curve
//!    between `B`'s edges, and a sum of rises over adjacent intervals telescopes (conservation
//!    and refinement); set-aside energy, reading counts and power sums are booked at one
//!    instant, in exactly one fine bucket; the time a register's span covers is a length; flags
//!    are a union, and *interpolated* means "covered, and no reading in any part". A coarse
//!    bucket intersects the device's data span iff one of its fine buckets does, because the
//!    span is one interval.
//!
//! So the partials of the 5-minute buckets ([`PARTIAL_WIDTH`]) of a device, each computed
//! once with its context, give every bucket of any width that is a multiple of 5 minutes, and
//! any range whose ends are multiples of 5 minutes, with no raw reading: [`Fold`]. Only the
//! order of floating-point additions differs from a direct computation (≤ 1e-9 relative).
//!
//! A reading written, changed or deleted at `t` changes only the partials of the buckets from
//! the one holding the [`crate::CONTEXT_READINGS`]-th reading of each register before `t` to
//! the one holding the [`crate::CONTEXT_READINGS`]-th after it (and the nearest row each
//! side, which bounds the data span): the readings in between are the same before and after
//! the change, so the same count of them separates those buckets from `t`.

use crate::aggregate::{BucketRow, RegisterBucket};
use crate::grid::Grid;
use crate::quality::Quality;
use std::fmt;

/// Width of the materialised buckets (µs): 5 minutes.
pub const PARTIAL_WIDTH: i64 = 300_000_000;

/// One register in one bucket, as materialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterPartial {
    /// Energy (kWh) of the bucket, `None` if it does not intersect the register's span.
    pub delta: Option<f64>,
    /// µs of the bucket inside the register's span.
    pub covered: i64,
    /// Flags of events detected in the bucket ([`Quality::INTERPOLATED`] is never set here).
    pub events: Quality,
    /// Whether a reading of the register lies in the bucket.
    pub has_reading: bool,
    /// Energy set aside in the bucket (kWh), by reason in the order of `SetAside::ALL`.
    pub set_aside: [f64; 4],
}

impl RegisterPartial {
    fn merge(&mut self, other: &RegisterPartial) {
        self.delta = match (self.delta, other.delta) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.covered += other.covered;
        self.events = self.events.union(other.events);
        self.has_reading |= other.has_reading;
        for (sum, add) in self.set_aside.iter_mut().zip(other.set_aside) {
            *sum += add;
        }
    }

    fn bucket(&self, width: i64) -> RegisterBucket {
        let interpolated = if self.delta.is_some() && !self.has_reading {
            Quality::INTERPOLATED
        } else {
            Quality::empty()
        };
        RegisterBucket {
            delta: self.delta,
            coverage: self.covered as f64 / width as f64,
            quality: self.events.union(interpolated),
            set_aside: self.set_aside,
        }
    }
}

/// The partial state of one bucket of one device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Partial {
    /// Start of the bucket (µs since the Unix epoch).
    pub start: i64,
    pub reading_count: u32,
    /// Sum and count of the finite power readings (kW).
    pub power_sum: f64,
    pub power_count: u32,
    pub imported: RegisterPartial,
    pub exported: RegisterPartial,
}

impl Partial {
    /// The row of this bucket, `width` µs wide.
    pub fn row(&self, width: i64) -> BucketRow {
        BucketRow {
            start: self.start,
            power_avg: (self.power_count > 0).then(|| self.power_sum / f64::from(self.power_count)),
            reading_count: self.reading_count,
            imported: self.imported.bucket(width),
            exported: self.exported.bucket(width),
        }
    }

    fn merge(&mut self, other: &Partial) {
        self.reading_count = self.reading_count.saturating_add(other.reading_count);
        self.power_sum += other.power_sum;
        self.power_count += other.power_count;
        self.imported.merge(&other.imported);
        self.exported.merge(&other.exported);
    }
}

/// A partial that does not lie inside one bucket of the grid it is folded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Straddles {
    pub start: i64,
    pub width: i64,
}

impl fmt::Display for Straddles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the partial bucket of {} µs at {} µs straddles an edge of the grid",
            self.width, self.start
        )
    }
}

impl std::error::Error for Straddles {}

/// Folds partials of fine buckets, in any order, into the buckets of a coarser grid. Memory is
/// proportional to the grid's buckets that receive a partial.
#[derive(Debug)]
pub struct Fold {
    grid: Grid,
    buckets: Vec<Option<Partial>>,
}

impl Fold {
    pub fn new(grid: Grid) -> Fold {
        Fold {
            grid,
            buckets: Vec::new(),
        }
    }

    /// Adds the partial of the bucket `[p.start, p.start + width)`; partials outside the grid
    /// are ignored.
    pub fn add(&mut self, p: &Partial, width: i64) -> Result<(), Straddles> {
        let first = self.grid.bucket_of(p.start);
        let last = self.grid.bucket_of(p.start + width - 1);
        let index = match (first, last) {
            (Some(a), Some(b)) if a == b => a,
            (None, None) if p.start >= self.grid.end() || p.start + width <= self.grid.start() => {
                return Ok(())
            }
            _ => {
                return Err(Straddles {
                    start: p.start,
                    width,
                })
            }
        };
        if self.buckets.is_empty() {
            self.buckets = vec![None; self.grid.len()];
        }
        match &mut self.buckets[index] {
            Some(sum) => sum.merge(p),
            slot => {
                *slot = Some(Partial {
                    start: self.grid.bucket_start(index),
                    ..*p
                })
            }
        }
        Ok(())
    }

    /// The rows of the buckets that received a partial, ascending by start.
    pub fn finish(self) -> Vec<BucketRow> {
        let width = self.grid.width();
        self.buckets
            .iter()
            .flatten()
            .map(|p| p.row(width))
            .collect()
    }

    /// The partials of the buckets that received one, ascending by start: coarser partials,
    /// which fold on in turn (a day's of its 5-minute ones, a month's of its days).
    pub fn into_partials(self) -> Vec<Partial> {
        self.buckets.into_iter().flatten().collect()
    }
}
