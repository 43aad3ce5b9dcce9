//! Energy per time bucket from cumulative meter registers, and GB settlement periods.
//!
//! Meters report imported and exported active energy as cumulative registers (kWh). Those
//! registers jitter by a few Wh, reset, roll over at their modulus, get replaced, and now and
//! then report a single garbage value. Per device and per register, [`DeviceAggregator`]
//! rebuilds one monotone cumulative curve `C(t)`:
//!
//! * `C` starts at 0 at the register's first finite reading and is linear between accepted
//!   readings (curve points).
//! * Each reading is compared with the high-water mark `h` (last accepted value, accepted at
//!   `t_h`). A rise that the device's maximum power allows since `t_h` (with [`HEADROOM`]) is
//!   normal and counts in full. A dip within `max(jitter_kwh, jitter_rel·h)` is jitter and
//!   counts as no change, so a dip that recovers is counted once. A larger fall is a rollover
//!   (if the register modulus is known and the wrapped increase is plausible), else a reset
//!   (if the value could have accumulated from zero), else a meter change (re-based, not
//!   counted). An implausible rise that persists is a meter change as well.
//! * Every such anomaly waits for the next reading: if that one continues the old curve, the
//!   anomaly was a single-reading glitch and is dropped.
//!
//! The energy of bucket `[s, e)` is `C(min(e, last)) - C(max(s, first))` over the register's
//! span `[first, last]`, so bucket deltas are never negative, add up to the total increase
//! (conservation), and finer buckets add up to coarser ones (refinement). Readings are
//! processed in one streaming pass with constant work per reading and memory proportional to
//! the number of buckets.
//!
//! [`settlement_period`] maps instants to GB settlement periods (half hours of the UK local
//! day, 46 or 50 of them on clock-change days).

mod aggregate;
mod grid;
mod params;
mod quality;
mod register;
mod settlement;
mod time;

#[cfg(test)]
mod proptests;

pub use aggregate::{
    aggregate, BucketRow, DeviceAggregator, OutOfOrder, Reading, RegisterBucket, CONTEXT_AFTER,
    CONTEXT_BEFORE,
};
pub use flux_calendar::{civil_to_days, days_to_civil};
pub use grid::{Grid, GridError, MAX_BUCKETS};
pub use params::{ParamError, Params, HEADROOM};
pub use quality::Quality;
pub use settlement::{settlement_period, Settlement};
