//! Energy per time bucket from cumulative meter registers, and GB settlement periods.
//!
//! Meters report imported and exported active energy as cumulative registers (kWh). Those
//! registers jitter by a few Wh, reset, roll over at their largest value, get replaced, and now
//! and then report garbage. Per device and per register, [`DeviceAggregator`] rebuilds one
//! monotone cumulative curve `C(t)` in which physics governs: no segment of the curve rises
//! faster than the device can deliver (its `max_power_kw` with [`HEADROOM`], or what its own
//! evidence allows), every decision is judged on the segment the energy is booked on, and
//! whatever is not booked is reported with its reason ([`SetAside`]). The rules are in
//! `register.rs` and in the README's energy section.
//!
//! The energy of bucket `[s, e)` is `C(min(e, last)) - C(max(s, first))` over the register's
//! curve points `first..=last`, so bucket deltas are never negative, add up to the total
//! increase (conservation), and finer buckets add up to coarser ones (refinement).
//!
//! Every decision about a reading uses only the readings of its register within [`WINDOW`] of
//! it, so a computation started [`CONTEXT_READINGS`] readings before a range (and ended as many
//! after it) gives every bucket of the range the figures a longer one gives: results do not
//! depend on where a query starts or ends. Readings are processed in one streaming pass with
//! constant work per reading and memory proportional to the number of buckets.
//!
//! [`DeviceAggregator::finish_partials`] gives the partial state of each bucket, from which
//! [`Fold`] builds any coarser bucket exactly: the rollups (see `rollup.rs` for the invariant).
//!
//! [`settlement_period`] maps instants to GB settlement periods (half hours of the UK local
//! day, 46 or 50 of them on clock-change days).

mod aggregate;
mod grid;
mod params;
mod quality;
mod register;
mod rollup;
mod settlement;
mod time;

#[cfg(test)]
mod proptests;

pub use aggregate::{
    aggregate, BucketRow, DeviceAggregator, OutOfOrder, Reading, RegisterBucket, CONTEXT_READINGS,
    MAX_ABS_KW, MAX_ABS_KWH,
};
pub use flux_calendar::{civil_to_days, days_to_civil};
pub use grid::{Grid, GridError, MAX_BUCKETS};
pub use params::{ParamError, Params, HEADROOM};
pub use quality::{Quality, SetAside};
pub use register::{EVIDENCE_FLOOR, POWER_HEADROOM, RATE_HEADROOM, WINDOW};
pub use rollup::{Fold, Partial, RegisterPartial, Straddles, PARTIAL_WIDTH};
pub use settlement::{settlement_period, Settlement};
