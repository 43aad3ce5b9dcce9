//! Per-device streaming aggregation of readings into buckets.

use std::error::Error;
use std::fmt;

use crate::grid::{Cursor, Grid};
use crate::params::Params;
use crate::quality::{Quality, SetAside};
use crate::register::{CurveSink, Register, Sample, CONTEXT};
use crate::rollup::{Partial, RegisterPartial};
use crate::time::Timestamp;

/// Readings of each register before `grid.start()` (the last ones) and after `grid.end()` (the
/// first ones) that the caller should also push, with every row in between, so that rows do
/// not depend on where the queried range starts or ends: every decision about a reading uses
/// only readings of its register within [`crate::WINDOW`] of it (R8). The context is counted
/// per register: a register read every 15 minutes needs its own 24 readings, whatever the
/// rows of other columns in between.
pub const CONTEXT_READINGS: usize = CONTEXT;

/// Register values beyond this magnitude (kWh) are not readings of a real register (R9): the
/// tables refuse them, and rows stored before they did are ignored here.
pub const MAX_ABS_KWH: f64 = 1e12;

/// Power values beyond this magnitude (kW) are ignored the same way.
pub const MAX_ABS_KW: f64 = 1e9;

/// One reading of a device. Values that are `None` or not finite are ignored per column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// µs since the Unix epoch (UTC).
    pub time: i64,
    /// Active power (kW).
    pub power: Option<f64>,
    /// Cumulative imported active energy register (kWh).
    pub imported: Option<f64>,
    /// Cumulative exported active energy register (kWh).
    pub exported: Option<f64>,
}

/// A reading pushed at or before the previous reading's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfOrder {
    /// Time of the previous reading.
    pub previous: i64,
    /// Time of the rejected reading.
    pub time: i64,
}

impl OutOfOrder {
    /// Whether the rejected reading has the same time as the previous one.
    pub fn is_duplicate(&self) -> bool {
        self.previous == self.time
    }
}

impl fmt::Display for OutOfOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_duplicate() {
            write!(
                f,
                "two readings of the device have the same time {}; keep one reading per time",
                Timestamp(self.time)
            )
        } else {
            write!(
                f,
                "reading at {} comes after the reading at {}; readings of a device must be \
                 pushed in strictly increasing time order",
                Timestamp(self.time),
                Timestamp(self.previous)
            )
        }
    }
}

impl Error for OutOfOrder {}

/// One register in one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegisterBucket {
    /// Energy (kWh) over the bucket: `C(min(e, last)) - C(max(s, first))` for the bucket
    /// `[s, e)` and the register's curve points `first..=last`. `None` if the bucket does not
    /// intersect that span. Never negative.
    pub delta: Option<f64>,
    /// Fraction of the bucket inside the register's span, in `0..=1`.
    pub coverage: f64,
    pub quality: Quality,
    /// Energy (kWh) not booked, detected in the bucket, by reason in the order of
    /// [`SetAside::ALL`].
    pub set_aside: [f64; 4],
}

impl RegisterBucket {
    /// All energy set aside in the bucket (kWh).
    pub fn set_aside_total(&self) -> f64 {
        self.set_aside.iter().sum()
    }
}

/// One bucket of one device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketRow {
    /// Start of the bucket (µs since the Unix epoch).
    pub start: i64,
    /// Mean of the finite power readings in the bucket (kW).
    pub power_avg: Option<f64>,
    /// Readings in the bucket (context readings outside the grid are not counted).
    pub reading_count: u32,
    pub imported: RegisterBucket,
    pub exported: RegisterBucket,
}

/// The buckets of one register, filled from its reconstructed curve.
#[derive(Debug)]
struct RegisterBuckets {
    grid: Grid,
    energy: Vec<f64>,
    events: Vec<Quality>,
    set_aside: Vec<[f64; 4]>,
    has_reading: Vec<bool>,
    /// Times of the first and the latest curve point.
    span: Option<(i64, i64)>,
    /// Position of the latest curve point.
    cursor: Cursor,
}

impl RegisterBuckets {
    fn new(grid: Grid) -> RegisterBuckets {
        RegisterBuckets {
            grid,
            energy: vec![0.0; grid.len()],
            events: vec![Quality::empty(); grid.len()],
            set_aside: vec![[0.0; 4]; grid.len()],
            has_reading: vec![false; grid.len()],
            span: None,
            cursor: Cursor::new(&grid),
        }
    }

    /// Adds the segment `(from, to]` of the curve, rising by `inc`, to the buckets it crosses.
    fn spread(&mut self, from: i64, to: i64, inc: f64) {
        if !self.cursor.before_next_edge(to) {
            self.spread_over_edges(from, to, inc);
        } else if let Some(energy) = self.energy.get_mut(self.cursor.bucket()) {
            *energy += inc;
        }
    }

    fn spread_over_edges(&mut self, from: i64, to: i64, inc: f64) {
        let length = to.abs_diff(from) as f64;
        // Rise of this segment up to the last edge crossed. Each edge value is computed once
        // and both neighbouring buckets use it, so bucket deltas add up exactly across edges.
        // It is relative to the segment start rather than an absolute C(edge), so a long
        // history does not cost precision in small deltas.
        let mut before = 0.0;
        while let Some(edge) = self.cursor.edge_until(&self.grid, to) {
            let upto = if edge == to {
                inc
            } else {
                inc * (edge.abs_diff(from) as f64 / length)
            };
            if let Some(energy) = self.energy.get_mut(self.cursor.bucket()) {
                *energy += upto - before;
            }
            before = upto;
            self.cursor.cross_edge(&self.grid);
        }
        if let Some(energy) = self.energy.get_mut(self.cursor.bucket()) {
            *energy += inc - before;
        }
    }

    fn flag(&mut self, t: i64, event: Quality) {
        if let Some(i) = self.grid.bucket_of(t) {
            self.events[i] = self.events[i].union(event);
        }
    }

    fn partial(&self, index: usize) -> RegisterPartial {
        let start = self.grid.bucket_start(index);
        let end = self.grid.bucket_start(index + 1);
        let (delta, covered) = match self.span {
            Some((first, last)) if start <= last && end > first => {
                (Some(self.energy[index]), end.min(last) - start.max(first))
            }
            // Outside the curve's span, a bucket can still hold a reading that was left off it.
            _ => (None, 0),
        };
        RegisterPartial {
            delta,
            covered,
            events: self.events[index],
            has_reading: self.has_reading[index],
            set_aside: self.set_aside[index],
        }
    }
}

impl CurveSink for RegisterBuckets {
    fn point(&mut self, t: i64, inc: f64, event: Quality) {
        match self.span {
            None => {
                self.cursor.seek(&self.grid, t);
                self.span = Some((t, t));
            }
            Some((first, last)) => {
                self.spread(last, t, inc);
                self.span = Some((first, t));
            }
        }
        if !event.is_empty() {
            self.flag(t, event);
        }
    }

    fn set_aside(&mut self, t: i64, energy: f64, reason: SetAside) {
        if let Some(i) = self.grid.bucket_of(t) {
            let k = SetAside::ALL
                .iter()
                .position(|&r| r == reason)
                .expect("a reason");
            self.set_aside[i][k] += energy;
            if energy > 0.0 {
                self.events[i] = self.events[i].union(reason.flag());
            }
        }
    }

    fn dropped(&mut self, t: i64) {
        self.flag(t, Quality::SPIKE_DROPPED);
    }
}

/// One register of a device: reconstructor and buckets.
#[derive(Debug)]
struct Track {
    register: Register,
    buckets: RegisterBuckets,
    /// Largest power (kW, absolute) of the rows since the register's last reading.
    power_since: Option<f64>,
}

impl Track {
    fn push(&mut self, t: i64, value: Option<f64>, power: Option<f64>, bucket: Option<usize>) {
        if let Some(kw) = power {
            self.power_since = Some(self.power_since.map_or(kw, |p| p.max(kw)));
        }
        let Some(v) = value.filter(|v| v.is_finite() && v.abs() <= MAX_ABS_KWH) else {
            return;
        };
        if let Some(i) = bucket {
            self.buckets.has_reading[i] = true;
        }
        let sample = Sample {
            t,
            v,
            power_kw: self.power_since.take(),
        };
        self.register.push(sample, &mut self.buckets);
    }
}

/// Streaming aggregation of one device's readings into the buckets of a grid.
///
/// Push readings in strictly increasing time order, including the context readings around
/// the grid (see [`CONTEXT_READINGS`]), then [`finish`](Self::finish).
/// Memory is proportional to the number of buckets; a reading costs a few float operations
/// and allocates nothing. Params should have passed [`Params::validate`]; invalid ones give
/// meaningless (but never negative) deltas rather than errors.
#[derive(Debug)]
pub struct DeviceAggregator {
    grid: Grid,
    /// Times of the first and the latest reading, any column.
    span: Option<(i64, i64)>,
    /// Position of the latest reading.
    cursor: Cursor,
    reading_count: Vec<u32>,
    power_sum: Vec<f64>,
    power_count: Vec<u32>,
    imported: Track,
    exported: Track,
}

impl DeviceAggregator {
    pub fn new(grid: Grid, params: Params) -> DeviceAggregator {
        let track = || Track {
            register: Register::new(&params),
            buckets: RegisterBuckets::new(grid),
            power_since: None,
        };
        DeviceAggregator {
            grid,
            span: None,
            cursor: Cursor::new(&grid),
            reading_count: vec![0; grid.len()],
            power_sum: vec![0.0; grid.len()],
            power_count: vec![0; grid.len()],
            imported: track(),
            exported: track(),
        }
    }

    /// Adds the next reading. Readings outside the grid are context: they shape the curves
    /// but are not counted and their power is not averaged.
    pub fn push(&mut self, r: Reading) -> Result<(), OutOfOrder> {
        let t = r.time;
        self.span = match self.span {
            Some((_, last)) if t <= last => {
                return Err(OutOfOrder {
                    previous: last,
                    time: t,
                })
            }
            Some((first, _)) => Some((first, t)),
            None => Some((t, t)),
        };
        self.cursor.seek(&self.grid, t);
        let bucket = Some(self.cursor.bucket()).filter(|&i| i < self.grid.len());
        let power = r
            .power
            .filter(|kw| kw.is_finite() && kw.abs() <= MAX_ABS_KW);
        if let Some(i) = bucket {
            self.reading_count[i] = self.reading_count[i].saturating_add(1);
            if let Some(kw) = power {
                self.power_sum[i] += kw;
                self.power_count[i] += 1;
            }
        }
        let magnitude = power.map(f64::abs);
        self.imported.push(t, r.imported, magnitude, bucket);
        self.exported.push(t, r.exported, magnitude, bucket);
        Ok(())
    }

    /// Rows for the buckets `[s, e)` that intersect the device's data span
    /// `[first reading, last reading]`, ascending by start.
    pub fn finish(self) -> Vec<BucketRow> {
        let width = self.grid.width();
        self.finish_partials()
            .iter()
            .map(|p| p.row(width))
            .collect()
    }

    /// The partial state of the same buckets as [`finish`](Self::finish): what coarser
    /// buckets are folded from ([`crate::Fold`]).
    pub fn finish_partials(mut self) -> Vec<Partial> {
        self.imported.register.finish(&mut self.imported.buckets);
        self.exported.register.finish(&mut self.exported.buckets);
        let Some((first, last)) = self.span else {
            return Vec::new();
        };
        (0..self.grid.len())
            .filter(|&i| {
                let start = self.grid.bucket_start(i);
                start <= last && self.grid.bucket_start(i + 1) > first
            })
            .map(|i| Partial {
                start: self.grid.bucket_start(i),
                reading_count: self.reading_count[i],
                power_sum: self.power_sum[i],
                power_count: self.power_count[i],
                imported: self.imported.buckets.partial(i),
                exported: self.exported.buckets.partial(i),
            })
            .collect()
    }
}

/// Aggregates readings given in any order: sorts them by time (stable), then pushes them.
/// Two readings with the same time are an error ([`OutOfOrder::is_duplicate`]).
pub fn aggregate(
    readings: &mut [Reading],
    grid: Grid,
    params: &Params,
) -> Result<Vec<BucketRow>, OutOfOrder> {
    readings.sort_by_key(|r| r.time);
    let mut aggregator = DeviceAggregator::new(grid, *params);
    for &r in readings.iter() {
        // Sorted, so only a duplicate time can be rejected.
        aggregator.push(r)?;
    }
    Ok(aggregator.finish())
}
