//! SQL front of `flux-energy`: the documented RPCs `get_meter_readings_5m` / `_30m`, the general
//! `meter_energy_buckets`, and `settlement_period`.
//!
//! Per device, the readings are streamed in time order into a `DeviceAggregator`: the context
//! before the range (every row since the last `CONTEXT_READINGS` readings of each register), the
//! range, and the context after it. Everything runs as the caller: row-level security decides
//! which devices and readings exist for them.

use crate::error::raise;
use crate::row_stream::{for_each_row, Arg};
use flux_energy::{
    settlement_period as settlement, BucketRow, DeviceAggregator, Grid, Params, Partial, Reading,
    SetAside, CONTEXT_READINGS,
};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode, Uuid};

/// µs from the Unix epoch to PostgreSQL's (2000-01-01).
pub(crate) const PG_EPOCH_US: i64 = 946_684_800_000_000;
const MINUTE_US: i64 = 60_000_000;

/// Energy and mean power per 5-minute bucket (documented RPC).
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn get_meter_readings_5m(
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
    device_ids: default!(Option<Vec<Option<Uuid>>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(time_b, TimestampWithTimeZone),
        name!(device_id, Uuid),
        name!(power_total_active_avg, Option<f64>),
        name!(energy_imported_active_delta, Option<f64>),
        name!(energy_exported_active_delta, Option<f64>),
    ),
> {
    let rows = device_buckets(
        start_time,
        end_time,
        Buckets::Every(5 * MINUTE_US),
        device_ids,
    );
    TableIterator::new(
        rows.into_iter()
            .flat_map(|(device, buckets)| buckets.into_iter().map(move |b| energy_row(device, &b))),
    )
}

/// Energy and mean power per 30-minute settlement period (documented RPC), with the GB
/// settlement date and period of each bucket.
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn get_meter_readings_30m(
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
    device_ids: default!(Option<Vec<Option<Uuid>>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(time_b, TimestampWithTimeZone),
        name!(device_id, Uuid),
        name!(power_total_active_avg, Option<f64>),
        name!(energy_imported_active_delta, Option<f64>),
        name!(energy_exported_active_delta, Option<f64>),
        name!(settlement_date, Date),
        name!(settlement_period, i32),
    ),
> {
    let rows = device_buckets(
        start_time,
        end_time,
        Buckets::Every(30 * MINUTE_US),
        device_ids,
    );
    TableIterator::new(rows.into_iter().flat_map(|(device, buckets)| {
        buckets.into_iter().map(move |b| {
            let (time_b, device_id, power, imported, exported) = energy_row(device, &b);
            let s = settlement(b.start);
            (
                time_b,
                device_id,
                power,
                imported,
                exported,
                date(s.date_days),
                s.period as i32,
            )
        })
    }))
}

/// Energy per bucket of any width, with what each figure is made of: reading count, the
/// fraction of the bucket each register's data covers, quality flags and set-aside energy per
/// register. (A new symbol: 0.1.0's `meter_energy_buckets_wrapper` returns 0.1.0's columns.)
#[pg_extern(stable, parallel_safe, name = "meter_energy_buckets")]
#[allow(clippy::type_complexity)]
fn meter_energy_buckets_set_aside(
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
    bucket_width: Option<Interval>,
    device_ids: default!(Option<Vec<Option<Uuid>>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(time_b, TimestampWithTimeZone),
        name!(device_id, Uuid),
        name!(power_total_active_avg, Option<f64>),
        name!(reading_count, i32),
        name!(energy_imported_active_delta, Option<f64>),
        name!(energy_exported_active_delta, Option<f64>),
        name!(energy_imported_active_coverage, f64),
        name!(energy_exported_active_coverage, f64),
        name!(energy_imported_active_quality, Vec<&'static str>),
        name!(energy_exported_active_quality, Vec<&'static str>),
        name!(energy_imported_active_set_aside, f64),
        name!(energy_exported_active_set_aside, f64),
    ),
> {
    let width = bucket_width_us(bucket_width);
    let rows = device_buckets(start_time, end_time, Buckets::Every(width), device_ids);
    TableIterator::new(rows.into_iter().flat_map(|(device, buckets)| {
        buckets.into_iter().map(move |b| {
            (
                timestamptz(b.start),
                device,
                b.power_avg,
                b.reading_count as i32,
                b.imported.delta,
                b.exported.delta,
                b.imported.coverage,
                b.exported.coverage,
                b.imported.quality.names().collect(),
                b.exported.quality.names().collect(),
                b.imported.set_aside_total(),
                b.exported.set_aside_total(),
            )
        })
    }))
}

/// 0.1.0's `meter_energy_buckets` (its columns), for a 0.1.0 schema until `ALTER EXTENSION
/// flux UPDATE`.
#[pg_extern(stable, parallel_safe, sql = false)]
#[allow(clippy::type_complexity)]
fn meter_energy_buckets(
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
    bucket_width: Option<Interval>,
    device_ids: default!(Option<Vec<Option<Uuid>>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(time_b, TimestampWithTimeZone),
        name!(device_id, Uuid),
        name!(power_total_active_avg, Option<f64>),
        name!(reading_count, i32),
        name!(energy_imported_active_delta, Option<f64>),
        name!(energy_exported_active_delta, Option<f64>),
        name!(energy_imported_active_coverage, f64),
        name!(energy_exported_active_coverage, f64),
        name!(energy_imported_active_quality, Vec<&'static str>),
        name!(energy_exported_active_quality, Vec<&'static str>),
    ),
> {
    TableIterator::new(
        meter_energy_buckets_set_aside(start_time, end_time, bucket_width, device_ids)
            .map(|(t, d, p, n, i, e, ic, ec, iq, eq, _, _)| (t, d, p, n, i, e, ic, ec, iq, eq)),
    )
}

/// Per device, register and reason, the energy the reconstruction set aside over a range (kWh),
/// beside the energy it booked: where a meter is misconfigured (a mis-scaled `max_power_kw`, a
/// wrong `energy_register_max_kwh`), this is where it shows.
#[pg_extern(stable, parallel_safe)]
#[allow(clippy::type_complexity)]
fn meter_energy_set_aside(
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
    device_ids: default!(Option<Vec<Option<Uuid>>>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(device_id, Uuid),
        name!(register, &'static str),
        name!(reason, &'static str),
        name!(set_aside_kwh, f64),
        name!(booked_kwh, f64),
    ),
> {
    let rows = device_buckets(start_time, end_time, Buckets::Whole, device_ids);
    let mut summary = Vec::new();
    for (device, buckets) in rows {
        for (register, pick) in [
            (
                "energy_imported_active",
                (|b: &BucketRow| b.imported) as fn(&BucketRow) -> _,
            ),
            ("energy_exported_active", |b: &BucketRow| b.exported),
        ] {
            let booked: f64 = buckets.iter().filter_map(|b| pick(b).delta).sum();
            for (k, reason) in SetAside::ALL.iter().enumerate() {
                let set_aside: f64 = buckets.iter().map(|b| pick(b).set_aside[k]).sum();
                if set_aside > 0.0 {
                    summary.push((device, register, reason.name(), set_aside, booked));
                }
            }
        }
    }
    TableIterator::new(summary)
}

/// GB settlement date and period of an instant, and how many periods that date has.
#[pg_extern(immutable, parallel_safe, strict)]
fn settlement_period(
    ts: TimestampWithTimeZone,
) -> TableIterator<
    'static,
    (
        name!(settlement_date, Date),
        name!(settlement_period, i32),
        name!(periods_in_day, i32),
    ),
> {
    let s = settlement(micros_since_unix_epoch(ts, "ts"));
    TableIterator::once((date(s.date_days), s.period as i32, s.periods_in_day as i32))
}

/// The documented columns of a bucket row.
fn energy_row(
    device: Uuid,
    b: &BucketRow,
) -> (
    TimestampWithTimeZone,
    Uuid,
    Option<f64>,
    Option<f64>,
    Option<f64>,
) {
    (
        timestamptz(b.start),
        device,
        b.power_avg,
        b.imported.delta,
        b.exported.delta,
    )
}

/// The buckets of a query: every so many µs (aligned to the epoch), or the range as a whole.
enum Buckets {
    Every(i64),
    Whole,
}

/// Validates the arguments, then aggregates every requested (or visible) device.
fn device_buckets(
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
    buckets: Buckets,
    device_ids: Option<Vec<Option<Uuid>>>,
) -> Vec<(Uuid, Vec<BucketRow>)> {
    let start = micros_since_unix_epoch(required(start_time, "start_time"), "start_time");
    let end = micros_since_unix_epoch(required(end_time, "end_time"), "end_time");
    let grid = match buckets {
        Buckets::Every(width) => Grid::covering(start, end, width),
        Buckets::Whole => Grid::exactly(start, end),
    }
    .unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string(),
        )
    });
    let requested = device_ids.map(|ids| {
        ids.into_iter()
            .map(|id| {
                id.unwrap_or_else(|| {
                    raise(
                        PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                        "device_ids must not contain null",
                    )
                })
            })
            .collect::<Vec<_>>()
    });
    let defaults = crate::guc::energy_defaults();
    defaults.validate().unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid flux.energy_* setting: {e}"),
        )
    });
    Spi::connect(|client| {
        let devices = devices(client, requested.as_deref(), &defaults, Unknown::Refuse);
        crate::rollups::device_buckets(client, devices, grid, requested.is_none(), &defaults)
    })
}

/// Devices requested that the registry does not show.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Unknown {
    Refuse,
    Skip,
}

/// The devices to report on, with their parameters: the requested ones (every one must be
/// visible to the caller), or every device the caller can see. Ordered by id.
pub(crate) fn devices(
    client: &SpiClient<'_>,
    requested: Option<&[Uuid]>,
    defaults: &Params,
    unknown: Unknown,
) -> Vec<(Uuid, Params)> {
    let table = client
        .select(
            "SELECT id, name, metadata::text FROM flux.mg_device_registry \
             WHERE $1::uuid[] IS NULL OR id = ANY($1) ORDER BY id",
            None,
            &[DatumWithOid::from(requested.map(<[Uuid]>::to_vec))],
        )
        .unwrap_or_else(|e| spi_failed(e));
    let mut found = Vec::with_capacity(table.len());
    for row in table {
        let id: Uuid = row
            .get(1)
            .ok()
            .flatten()
            .expect("registry id is the primary key");
        let name: String = row.get(2).ok().flatten().unwrap_or_default();
        let metadata: Option<String> = row.get(3).unwrap_or_else(|e| spi_failed(e));
        let params = defaults
            .with_metadata_text(metadata.as_deref())
            .unwrap_or_else(|e| {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("device {id} ({name}): {e}"),
                )
            });
        found.push((id, params));
    }
    if let Some(requested) = requested.filter(|_| unknown == Unknown::Refuse) {
        let unknown: Vec<String> = requested
            .iter()
            .filter(|id| {
                found
                    .binary_search_by_key(&device_key(id), |(f, _)| device_key(f))
                    .is_err()
            })
            .map(|id| id.to_string())
            .collect();
        if !unknown.is_empty() {
            // The ids come from the caller: name a few, count the rest.
            const NAMED: usize = 5;
            let more = match unknown.len().saturating_sub(NAMED) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "unknown device id(s) {}{more}: not registered in mg_device_registry, or not visible to you",
                    unknown[..unknown.len().min(NAMED)].join(", ")
                ),
            );
        }
    }
    found
}

/// One device being aggregated.
struct DeviceState {
    id: Uuid,
    params: Params,
    /// Made at the device's first reading: a device without data costs no buckets.
    aggregator: Option<DeviceAggregator>,
    /// Time of the last reading pushed.
    last: Option<i64>,
    /// False once the unordered range scan delivered this device's readings out of time order.
    in_order: bool,
}

impl DeviceState {
    fn push(&mut self, grid: Grid, r: Reading) {
        let params = self.params;
        let aggregator = self
            .aggregator
            .get_or_insert_with(|| DeviceAggregator::new(grid, params));
        aggregator.push(r).unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                format!("device {}: {e}", self.id),
            )
        });
        self.last = Some(r.time);
    }
}

const READING_COLUMNS: &str =
    "SELECT device_id, time, power_total_active, energy_imported_active, energy_exported_active \
     FROM flux.mg_meter_readings";

/// Aggregates the devices over the grid; `all_visible` when the caller did not name devices.
///
/// The readings inside the range are read in ONE scan of all devices, in whatever order the
/// plan yields (a sequential scan gives insertion order: for telemetry, time order per device),
/// and streamed into per-device aggregators. Around it, per device, two index probes fetch the
/// context: the last readings before the range and the first ones after it. A device whose
/// range readings arrive out of time order (late back-filled data, reused heap space) is read
/// again through an ordered index scan, so the result never depends on the physical order;
/// memory stays proportional to the buckets either way.
pub(crate) fn aggregate_devices(
    spi: &SpiClient<'_>,
    devices: &[(Uuid, Params)],
    grid: Grid,
    all_visible: bool,
) -> Vec<(Uuid, Vec<Partial>)> {
    let mut states: Vec<DeviceState> = devices
        .iter()
        .map(|&(id, params)| DeviceState {
            id,
            params,
            aggregator: None,
            last: None,
            in_order: true,
        })
        .collect();
    if states.is_empty() {
        return Vec::new();
    }
    push_context(spi, &mut states, grid, Side::Before);

    // Devices come sorted by id, and uuid byte order is the order of the big-endian u128.
    let keys: Vec<u128> = states.iter().map(|s| device_key(&s.id)).collect();
    let mut query = format!("{READING_COLUMNS} WHERE time >= $1 AND time < $2");
    let mut args = vec![
        Arg::new(timestamptz(grid.start())),
        Arg::new(timestamptz(grid.end())),
    ];
    if !all_visible {
        // Without it, no filter on the device: row-level security already applies.
        query.push_str(" AND device_id = ANY($3)");
        args.push(Arg::new(states.iter().map(|s| s.id).collect::<Vec<_>>()));
    }
    for_each_reading(spi, &query, &args, |device, r| {
        // A reading whose device the registry does not show this caller (its policies differ
        // from the readings') has no aggregator: skip it.
        let Ok(i) = keys.binary_search(&device) else {
            return true;
        };
        let state = &mut states[i];
        if state.in_order {
            if state.last.is_some_and(|last| r.time <= last) {
                state.in_order = false;
            } else {
                state.push(grid, r);
            }
        }
        true
    });

    // The devices read out of time order, all at once: their context again, then their range
    // through the index, ordered.
    let (mut reread, kept): (Vec<DeviceState>, Vec<DeviceState>) =
        states.into_iter().partition(|s| !s.in_order);
    if !reread.is_empty() {
        for state in &mut reread {
            state.aggregator = None;
            state.last = None;
        }
        push_context(spi, &mut reread, grid, Side::Before);
        push_range_in_order(spi, &mut reread, grid);
    }
    let mut states = kept;
    states.append(&mut reread);
    states.sort_unstable_by_key(|s| device_key(&s.id));
    push_context(spi, &mut states, grid, Side::After);
    states
        .into_iter()
        .filter_map(|state| Some((state.id, state.aggregator?.finish_partials())))
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Side {
    Before,
    After,
}

/// How far from the grid the context is looked for, in days: the devices whose context the
/// first window does not complete (fewer than `CONTEXT_READINGS` readings of a register in
/// it) try the next. Bounded, so that a query reads the few partitions next to its range
/// rather than every one of them: a register silent for longer than the last window has no
/// context on that side (README: Energy).
pub(crate) const CONTEXT_WINDOW_DAYS: [i64; 2] = [1, 31];
pub(crate) const DAY_US: i64 = 86_400_000_000;

/// Pushes the context on one side of the grid, for every device of `states` (sorted by id):
/// every row between the grid and the farthest of the last (or first) `CONTEXT_READINGS`
/// readings of each register, and at least the nearest row (it decides whether the device's
/// data covers the grid's edge). Each register's decisions then see the same readings as in
/// any longer computation (R8), however sparsely it is read.
fn push_context(spi: &SpiClient<'_>, states: &mut [DeviceState], grid: Grid, side: Side) {
    let grid_edge = match side {
        Side::Before => grid.start(),
        Side::After => grid.end(),
    };
    let at: Vec<(Uuid, i64)> = states.iter().map(|s| (s.id, grid_edge)).collect();
    let edges = context_reach(spi, &at, side);
    let (with_context, edges): (Vec<Uuid>, Vec<i64>) = states
        .iter()
        .zip(&edges)
        .filter_map(|(s, e)| e.map(|e| (s.id, e)))
        .unzip();
    // The farthest edge bounds the scan by a constant too, which the planner prunes with.
    let farthest = match side {
        Side::Before => edges.iter().min(),
        Side::After => edges.iter().max(),
    };
    let Some(&farthest) = farthest else {
        return;
    };
    let span = match side {
        Side::Before => "r.time >= d.edge AND r.time < $3 AND r.time >= $4",
        Side::After => "r.time >= $3 AND r.time <= d.edge AND r.time <= $4",
    };
    // LATERAL, so that each device reads only the partitions between its edge and the grid.
    let query = format!(
        "SELECT r.device_id, r.time, r.power_total_active, r.energy_imported_active, \
                r.energy_exported_active \
         FROM unnest($1::uuid[], $2::timestamptz[]) WITH ORDINALITY AS d(id, edge, n) \
         CROSS JOIN LATERAL (SELECT * FROM flux.mg_meter_readings r \
                             WHERE r.device_id = d.id AND {span} ORDER BY r.time) r \
         ORDER BY d.n, r.time"
    );
    let keys: Vec<u128> = states.iter().map(|s| device_key(&s.id)).collect();
    for_each_reading(
        spi,
        &query,
        &[
            Arg::new(with_context),
            Arg::new(edges.into_iter().map(timestamptz).collect::<Vec<_>>()),
            Arg::new(timestamptz(grid_edge)),
            Arg::new(timestamptz(farthest)),
        ],
        |device, r| {
            if let Ok(i) = keys.binary_search(&device) {
                states[i].push(grid, r);
            }
            true
        },
    );
}

/// Per `(device, edge)`: how far from `edge` (before it, or from it on) the context of a
/// computation ending or starting there reaches: the farthest of each register's
/// `CONTEXT_READINGS`-th reading and the nearest row, looked for within the windows of
/// `CONTEXT_WINDOW_DAYS`. None without any row there.
pub(crate) fn context_reach(
    spi: &SpiClient<'_>,
    at: &[(Uuid, i64)],
    side: Side,
) -> Vec<Option<i64>> {
    let mut reach: Vec<Option<i64>> = vec![None; at.len()];
    if at.is_empty() {
        return reach;
    }
    let mut pending: Vec<usize> = (0..at.len()).collect();
    for (pass, &days) in CONTEXT_WINDOW_DAYS.iter().enumerate() {
        let last_pass = pass + 1 == CONTEXT_WINDOW_DAYS.len();
        let asked: Vec<(Uuid, i64)> = pending.iter().map(|&i| at[i]).collect();
        let found = context_edges(spi, &asked, days, side);
        let mut still_pending = Vec::new();
        for (&i, (complete, edge)) in pending.iter().zip(found) {
            if complete || last_pass {
                reach[i] = edge;
            } else {
                still_pending.push(i);
            }
        }
        pending = still_pending;
        if pending.is_empty() {
            break;
        }
    }
    reach
}

/// Per `(device, edge)`, in order: whether the `days` before `edge` (or from it on) hold
/// `CONTEXT_READINGS` readings of each register, and the time up to which the context reaches
/// within them (None without any reading there).
fn context_edges(
    spi: &SpiClient<'_>,
    at: &[(Uuid, i64)],
    days: i64,
    side: Side,
) -> Vec<(bool, Option<i64>)> {
    let (range, order, farthest, nearest, edge) = match side {
        Side::Before => (
            "time < d.edge AND time >= d.edge - make_interval(days => $3) \
             AND time >= $5 AND time < $6",
            "DESC",
            "min",
            "max",
            "least",
        ),
        Side::After => (
            "time >= d.edge AND time < d.edge + make_interval(days => $3) \
             AND time >= $5 AND time < $6",
            "ASC",
            "max",
            "min",
            "greatest",
        ),
    };
    let register = |column: &str, alias: &str| {
        format!(
            "CROSS JOIN LATERAL (SELECT count(*) AS n, {farthest}(time) AS edge FROM \
                (SELECT time FROM flux.mg_meter_readings \
                 WHERE device_id = d.id AND {range} AND {column} IS NOT NULL \
                 ORDER BY time {order} LIMIT $4) k) {alias}"
        )
    };
    // The constant bounds of all windows ($5, $6) let the planner prune the partitions no
    // window reaches: the per-device edges, from LATERAL, prune only at run time, after every
    // partition was planned.
    let first = at
        .iter()
        .map(|a| a.1)
        .min()
        .expect("context_reach skips empty input");
    let last = at
        .iter()
        .map(|a| a.1)
        .max()
        .expect("context_reach skips empty input");
    let (from, to) = match side {
        Side::Before => (first - days * DAY_US, last),
        Side::After => (first, last + days * DAY_US),
    };
    let query = format!(
        "SELECT i.n >= $4 AND e.n >= $4, \
                {edge}(i.edge, e.edge, (SELECT {nearest}(time) FROM flux.mg_meter_readings \
                                        WHERE device_id = d.id AND {range})) \
         FROM unnest($1::uuid[], $2::timestamptz[]) WITH ORDINALITY AS d(id, edge, n) \
              {imported} {exported} \
         ORDER BY d.n",
        imported = register("energy_imported_active", "i"),
        exported = register("energy_exported_active", "e"),
    );
    spi.select(
        &query,
        None,
        &[
            DatumWithOid::from(at.iter().map(|a| a.0).collect::<Vec<_>>()),
            DatumWithOid::from(at.iter().map(|a| timestamptz(a.1)).collect::<Vec<_>>()),
            DatumWithOid::from(days as i32),
            DatumWithOid::from(CONTEXT_READINGS as i64),
            DatumWithOid::from(timestamptz(from)),
            DatumWithOid::from(timestamptz(to)),
        ],
    )
    .unwrap_or_else(|e| spi_failed(e))
    .map(|row| {
        let complete = row.get::<bool>(1).ok().flatten().unwrap_or(false);
        let edge = row
            .get::<TimestampWithTimeZone>(2)
            .ok()
            .flatten()
            .map(|t| micros_since_unix_epoch(t, "context edge"));
        (complete, edge)
    })
    .collect()
}

/// Pushes the readings inside the grid of every device of `states` (sorted by id) in time
/// order (index scans).
fn push_range_in_order(spi: &SpiClient<'_>, states: &mut [DeviceState], grid: Grid) {
    let keys: Vec<u128> = states.iter().map(|s| device_key(&s.id)).collect();
    for_each_reading(
        spi,
        &format!(
            "{READING_COLUMNS} WHERE device_id = ANY($1) AND time >= $2 AND time < $3 \
             ORDER BY device_id, time"
        ),
        &[
            Arg::new(states.iter().map(|s| s.id).collect::<Vec<_>>()),
            Arg::new(timestamptz(grid.start())),
            Arg::new(timestamptz(grid.end())),
        ],
        |device, r| {
            if let Ok(i) = keys.binary_search(&device) {
                states[i].push(grid, r);
            }
            true
        },
    );
}

pub(crate) fn device_key(id: &Uuid) -> u128 {
    u128::from_be_bytes(*id.as_bytes())
}

/// Streams the reading rows of `query` (columns as in `READING_COLUMNS`) to `take` until the
/// rows end or `take` returns false. This is the hot loop of the energy RPCs: millions of rows,
/// read in place from the executor without copies.
pub(crate) fn for_each_reading(
    spi: &SpiClient<'_>,
    query: &str,
    args: &[Arg],
    mut take: impl FnMut(u128, Reading) -> bool,
) {
    for_each_row(spi, query, args, &mut |values, nulls| {
        // SAFETY: the columns of READING_COLUMNS: uuid (a pointer to 16 bytes, never null),
        // timestamptz and three float8 (by value).
        unsafe {
            assert!(!nulls[0] && !nulls[1], "device_id and time are NOT NULL");
            let device = u128::from_be_bytes(*values[0].cast_mut_ptr::<[u8; 16]>());
            let float = |i: usize| f64::from_datum(values[i], nulls[i]);
            take(
                device,
                Reading {
                    time: i64::from_datum(values[1], false).expect("not null") + PG_EPOCH_US,
                    power: float(2),
                    imported: float(3),
                    exported: float(4),
                },
            )
        }
    });
}

pub(crate) fn required<T>(value: Option<T>, name: &str) -> T {
    value.unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{name} must not be null"),
        )
    })
}

pub(crate) fn micros_since_unix_epoch(t: TimestampWithTimeZone, name: &str) -> i64 {
    if !t.is_finite() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{name} must be a finite time, not {t}"),
        );
    }
    // PostgreSQL's range ends in year 294276, microseconds since 1970 in an i64 a little before.
    pg_sys::TimestampTz::from(t)
        .checked_add(PG_EPOCH_US)
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("{name} is after the latest supported time (year 294246), got {t}"),
            )
        })
}

pub(crate) fn timestamptz(unix_us: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(unix_us - PG_EPOCH_US).expect("bucket starts are valid times")
}

fn date(unix_days: i32) -> Date {
    // SAFETY: settlement dates are near their instants, well inside the range of `date`.
    unsafe { Date::from_pg_epoch_days(unix_days - 10_957) }
}

/// A bucket width is a fixed duration: no months (their length varies), between 1 s and 31 days.
fn bucket_width_us(width: Option<Interval>) -> i64 {
    let width = required(width, "bucket_width");
    let us = width.as_micros();
    if width.months() != 0 || !(1_000_000..=31 * i128::from(DAY_US)).contains(&us) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "bucket_width must be a fixed duration between 1 second and 31 days, got {width}"
            ),
        );
    }
    us as i64
}

pub(crate) fn spi_failed(e: pgrx::spi::SpiError) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("flux: SPI failed: {e}"),
    )
}

#[pg_schema]
mod flux_internal {
    use super::*;

    /// Why a device's registry metadata (as JSON text) cannot drive the energy reconstruction,
    /// or NULL if it can. The registry checks it on every write, so a bad value is refused
    /// where it is made. Text, not `jsonb`: a document this cannot read (`1e400`, nesting
    /// 1,000 levels deep) is then a reason, not a failure to convert the argument.
    #[pg_extern(immutable, parallel_safe, name = "energy_metadata_error")]
    fn energy_metadata_error_of_text(metadata: Option<&str>) -> Option<String> {
        Params::DEFAULT
            .with_metadata_text(metadata)
            .err()
            .map(|e| e.to_string())
    }

    /// 0.1.0's `jsonb` version, kept for the 0.1.0 install script until `ALTER EXTENSION
    /// flux UPDATE` replaces it.
    #[pg_extern(immutable, parallel_safe, sql = false)]
    fn energy_metadata_error(metadata: Option<JsonB>) -> Option<String> {
        Params::DEFAULT
            .with_metadata(metadata.as_ref().map(|m| &m.0))
            .err()
            .map(|e| e.to_string())
    }
}
