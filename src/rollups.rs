//! Energy rollups (sql/rollups.sql): the energy RPCs read the materialised 5-minute partials
//! where they are current and compute the stale or not yet materialised buckets from raw
//! readings; `flux.refresh_energy_rollups` materialises what changed.
//!
//! A pending change `[lo, hi]` of a device makes stale the buckets from the one holding its
//! context reach before `lo` to the one holding its reach after `hi` (flux-energy's
//! `rollup.rs` says why that is exact), found with the same index probes as a computation's
//! context.

use std::collections::{BTreeMap, HashSet};

use crate::energy::{
    aggregate_devices, context_reach, device_key, devices, micros_since_unix_epoch, spi_failed,
    timestamptz, Side, Unknown, DAY_US, PG_EPOCH_US,
};
use crate::error::raise;
use crate::row_stream::{for_each_row, Arg};
use flux_energy::{
    BucketRow, Fold, Grid, Params, Partial, Quality, RegisterPartial, PARTIAL_WIDTH,
};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{PgSqlErrorCode, Uuid};

const HOUR_US: i64 = 3_600_000_000;
/// Pending changes of a device closer than this are widened together.
const CLUSTER_GAP_US: i64 = HOUR_US;
/// A raw computation of stale windows spans at most this.
const GROUP_MAX_US: i64 = 31 * DAY_US;
/// How far a pending change can reach: the last context window, and a day of margin.
const REACH_US: i64 = 32 * DAY_US;
/// The materialised tiers: 5-minute partials, and daily ones folded from them, which answer
/// daily and wider buckets (a year of totals reads 365 rows per device, not 105,120).
const FIVE_MINUTES: &str = "flux_internal.meter_rollup_5m";
const DAILY: &str = "flux_internal.meter_rollup_1d";

/// Devices one refresh step takes changes of (the budget then bounds the work), and how many
/// changes it looks through for them.
const DEVICES_PER_STEP: usize = 1000;
const CANDIDATES: i64 = 2000;
/// Bit 8 of a register's flags: a reading of the register lies in the bucket.
const HAS_READING: i16 = 1 << 8;

/// What sql/rollups.sql's state row says.
struct State {
    /// µs; `i64::MIN` when retention never dropped meter readings.
    raw_kept_from: i64,
    energy_defaults: Option<String>,
}

/// Whether a query of one boolean says true.
fn yes(spi: &SpiClient<'_>, query: &str) -> bool {
    spi.select(query, Some(1), &[])
        .unwrap_or_else(|e| spi_failed(e))
        .first()
        .get::<bool>(1)
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The state row; the defaults are none before `ALTER EXTENSION flux UPDATE` to 0.3.0 (the
/// library serves older schemas, which have no rollups, from raw readings).
fn state(spi: &SpiClient<'_>) -> State {
    if !yes(
        spi,
        "SELECT pg_catalog.to_regclass('flux_internal.meter_rollup_state') IS NOT NULL",
    ) {
        return State {
            raw_kept_from: i64::MIN,
            energy_defaults: None,
        };
    }
    let row = spi
        .select(
            "SELECT raw_kept_from, energy_defaults FROM flux_internal.meter_rollup_state",
            Some(1),
            &[],
        )
        .unwrap_or_else(|e| spi_failed(e))
        .first();
    State {
        raw_kept_from: row
            .get::<TimestampWithTimeZone>(1)
            .ok()
            .flatten()
            .map_or(i64::MIN, micros_or_infinite),
        energy_defaults: row.get::<String>(2).ok().flatten(),
    }
}

/// The flux.energy_* defaults, as the state row records those the rollups were made with.
fn defaults_key(defaults: &Params) -> String {
    format!("{defaults:?}")
}

fn micros_or_infinite(t: TimestampWithTimeZone) -> i64 {
    if t.is_finite() {
        micros_since_unix_epoch(t, "time")
    } else if pg_sys::TimestampTz::from(t) > 0 {
        i64::MAX
    } else {
        i64::MIN
    }
}

/// A time column of a change-log row, µs (null as `i64::MIN`: never, the log's columns are
/// NOT NULL).
fn time_at(row: &pgrx::spi::SpiHeapTupleData<'_>, column: usize) -> i64 {
    row.get::<TimestampWithTimeZone>(column)
        .ok()
        .flatten()
        .map_or(i64::MIN, micros_or_infinite)
}

/// Start of the 5-minute bucket holding `t`; the infinite bounds stay as they are.
fn floor_partial(t: i64) -> i64 {
    t.div_euclid(PARTIAL_WIDTH)
        .checked_mul(PARTIAL_WIDTH)
        .unwrap_or(t)
}

/// Whether the grid's buckets are unions of 5-minute buckets.
fn foldable(grid: Grid) -> bool {
    grid.width() % PARTIAL_WIDTH == 0 && grid.start() % PARTIAL_WIDTH == 0
}

/// The buckets of the grid for each device with data: from the rollups where they apply,
/// from raw readings otherwise.
pub(crate) fn device_buckets(
    spi: &SpiClient<'_>,
    devices: Vec<(Uuid, Params)>,
    grid: Grid,
    all_visible: bool,
    defaults: &Params,
) -> Vec<(Uuid, Vec<BucketRow>)> {
    let state = state(spi);
    let current = state.energy_defaults.as_deref() == Some(defaults_key(defaults).as_str());
    if !(crate::guc::ENERGY_ROLLUPS.get() && current && foldable(grid)) {
        if grid.start() < state.raw_kept_from {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "readings before {} were dropped by retention, and their energy is kept in \
                     5-minute rollups only: query with bucket widths and range ends that are \
                     multiples of 5 minutes, flux.energy_rollups on and the flux.energy_* \
                     settings the rollups were made with",
                    timestamptz(state.raw_kept_from)
                ),
            );
        }
        let width = grid.width();
        return aggregate_devices(spi, &devices, grid, all_visible)
            .into_iter()
            .map(|(id, partials)| (id, partials.iter().map(|p| p.row(width)).collect()))
            .collect();
    }

    let visible: Vec<Uuid> = devices.iter().map(|d| d.0).collect();
    let ids = (!all_visible).then_some(visible.as_slice());
    let entries = pending(spi, &visible, grid.start(), grid.end());
    let stale = stale_windows(
        spi,
        entries,
        state.raw_kept_from,
        (grid.start().max(state.raw_kept_from), grid.end()),
    );

    let keys: Vec<u128> = devices.iter().map(|d| device_key(&d.0)).collect();
    let mut folds: Vec<Option<Fold>> = devices.iter().map(|_| None).collect();
    let mut add = |device: u128, p: &Partial, width: i64| {
        if let Ok(i) = keys.binary_search(&device) {
            folds[i]
                .get_or_insert_with(|| Fold::new(grid))
                .add(p, width)
                .expect("a foldable grid's buckets are unions of the tier's buckets");
        }
    };
    let range = (grid.start(), grid.end());
    if grid.width() % DAY_US == 0 && grid.start() % DAY_US == 0 {
        // Whole days from the daily tier, but for the days a stale window touches: those from
        // their 5-minute partials and the stale windows themselves.
        let stale_days = widen(&stale, DAY_US);
        for_each_partial(spi, DAILY, Scope::Range(ids, range), |device, p| {
            if !within(stale_days.get(&device), p.start) {
                add(device, &p, DAY_US);
            }
        });
        for_each_partial(
            spi,
            FIVE_MINUTES,
            Scope::Windows(&stale_days),
            |device, p| {
                if !within(stale.get(&device), p.start) {
                    add(device, &p, PARTIAL_WIDTH);
                }
            },
        );
    } else {
        for_each_partial(spi, FIVE_MINUTES, Scope::Range(ids, range), |device, p| {
            if !within(stale.get(&device), p.start) {
                add(device, &p, PARTIAL_WIDTH);
            }
        });
    }
    recompute(spi, &devices, &stale, |device, p| {
        add(device, p, PARTIAL_WIDTH)
    });
    devices
        .iter()
        .zip(folds)
        .filter_map(|(d, fold)| Some((d.0, fold?.finish())))
        .collect()
}

fn within(windows: Option<&Vec<(i64, i64)>>, t: i64) -> bool {
    windows.is_some_and(|w| {
        let i = w.partition_point(|&(_, hi)| hi <= t);
        w.get(i).is_some_and(|&(lo, _)| lo <= t)
    })
}

/// The windows widened to whole `unit`s (days), merged.
fn widen(windows: &Windows, unit: i64) -> Windows {
    windows
        .iter()
        .map(|(&key, w)| {
            let mut wide: Vec<(i64, i64)> = Vec::with_capacity(w.len());
            for &(lo, hi) in w {
                let (lo, hi) = (
                    lo.div_euclid(unit) * unit,
                    (hi - 1).div_euclid(unit) * unit + unit,
                );
                match wide.last_mut() {
                    Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                    _ => wide.push((lo, hi)),
                }
            }
            (key, wide)
        })
        .collect()
}

fn uuid_of(key: u128) -> Uuid {
    Uuid::from_bytes(key.to_be_bytes())
}

/// Pending changes `(device, lo, hi)` (µs, infinite bounds as `i64::MIN`/`MAX`) of `ids` that
/// can reach `[from, to)`, as the caller may see them (`flux_internal.pending_changes`).
fn pending(spi: &SpiClient<'_>, ids: &[Uuid], from: i64, to: i64) -> Vec<(Uuid, i64, i64)> {
    changes(
        spi,
        "SELECT device_id, lo, hi FROM flux_internal.pending_changes($1, $2, $3)",
        &[
            DatumWithOid::from(ids.to_vec()),
            DatumWithOid::from(timestamptz(from - REACH_US)),
            DatumWithOid::from(timestamptz(to + REACH_US)),
        ],
    )
}

/// Rows `(device, lo, hi)` of a query over the change log.
fn changes(spi: &SpiClient<'_>, query: &str, args: &[DatumWithOid]) -> Vec<(Uuid, i64, i64)> {
    spi.select(query, None, args)
        .unwrap_or_else(|e| spi_failed(e))
        .map(|row| {
            let time = |i: usize| time_at(&row, i);
            (
                row.get::<Uuid>(1)
                    .ok()
                    .flatten()
                    .expect("device_id is NOT NULL"),
                time(2),
                time(3),
            )
        })
        .collect()
}

/// Per device (by key), the 5-minute-aligned windows, ascending and disjoint, inside `clip`,
/// whose buckets the pending changes make stale.
///
/// Changes of readings before `raw_kept_from` (written into a period retention dropped) are
/// left out: the buckets there and just after it were computed with the readings retention
/// dropped, and recomputing them without those would lose what they know.
fn stale_windows(
    spi: &SpiClient<'_>,
    entries: Vec<(Uuid, i64, i64)>,
    raw_kept_from: i64,
    clip: (i64, i64),
) -> Windows {
    let mut entries: Vec<(Uuid, i64, i64)> = entries
        .into_iter()
        .filter(|&(_, _, hi)| hi >= raw_kept_from)
        .map(|(id, lo, hi)| (id, lo.max(raw_kept_from), hi))
        .collect();
    entries.sort_by_key(|&(id, lo, _)| (device_key(&id), lo));
    let mut clusters: Vec<(Uuid, i64, i64)> = Vec::new();
    for (id, lo, hi) in entries {
        match clusters.last_mut() {
            Some(c) if c.0 == id && lo <= c.2.saturating_add(CLUSTER_GAP_US) => c.2 = c.2.max(hi),
            _ => clusters.push((id, lo, hi)),
        }
    }
    let mut reach: Vec<(i64, i64)> = clusters.iter().map(|c| (c.1, c.2)).collect();
    // A side is probed only where the clip does not already end the window: a query about
    // yesterday probes today's fresh changes before them, never after.
    let before: Vec<(usize, (Uuid, i64))> = clusters
        .iter()
        .enumerate()
        .filter(|(_, c)| c.1 > clip.0)
        .map(|(i, c)| (i, (c.0, c.1)))
        .collect();
    // Readings strictly after `hi` are the context after it.
    let after: Vec<(usize, (Uuid, i64))> = clusters
        .iter()
        .enumerate()
        .filter(|(_, c)| c.2 < clip.1)
        .map(|(i, c)| (i, (c.0, c.2 + 1)))
        .collect();
    for (side, at) in [(Side::Before, before), (Side::After, after)] {
        let asked: Vec<(Uuid, i64)> = at.iter().map(|a| a.1).collect();
        for ((i, _), edge) in at.iter().zip(context_reach(spi, &asked, side)) {
            if let Some(edge) = edge {
                match side {
                    Side::Before => reach[*i].0 = reach[*i].0.min(edge),
                    Side::After => reach[*i].1 = reach[*i].1.max(edge),
                }
            }
        }
    }
    let mut stale = Windows::new();
    for (c, (lo, hi)) in clusters.iter().zip(reach) {
        // One bucket of margin each side.
        let lo = floor_partial(lo.max(clip.0))
            .saturating_sub(PARTIAL_WIDTH)
            .max(clip.0);
        let hi = floor_partial(hi.min(clip.1))
            .saturating_add(2 * PARTIAL_WIDTH)
            .min(clip.1);
        if lo < hi {
            let windows = stale.entry(device_key(&c.0)).or_default();
            windows.push((lo, hi));
        }
    }
    for windows in stale.values_mut() {
        windows.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(windows.len());
        for &(lo, hi) in windows.iter() {
            match merged.last_mut() {
                Some(m) if lo <= m.1 => m.1 = m.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        *windows = merged;
    }
    stale
}

/// Stale windows computed together: their span, longest piece, and the pieces `(lo, hi,
/// device index)`.
struct Group {
    start: i64,
    end: i64,
    longest: i64,
    pieces: Vec<(i64, i64, usize)>,
}

/// Computes the 5-minute partials of the stale windows from raw readings and hands each one
/// inside a window to `take`. Windows that overlap or nearly meet share one computation (the
/// fresh tail of every device is one), as long as its span stays within twice its longest
/// window (at least an hour): its range scan reads every member over the whole span. A group
/// spans at most `GROUP_MAX_US`.
fn recompute(
    spi: &SpiClient<'_>,
    devices: &[(Uuid, Params)],
    stale: &Windows,
    mut take: impl FnMut(u128, &Partial),
) {
    let keys: Vec<u128> = devices.iter().map(|d| device_key(&d.0)).collect();
    let mut pieces: Vec<(i64, i64, usize)> = Vec::new();
    for (key, windows) in stale {
        let Ok(i) = keys.binary_search(key) else {
            continue;
        };
        for &(lo, hi) in windows {
            let mut from = lo;
            while from < hi {
                let to = hi.min(from + GROUP_MAX_US);
                pieces.push((from, to, i));
                from = to;
            }
        }
    }
    pieces.sort_unstable();
    let mut groups: Vec<Group> = Vec::new();
    for (lo, hi, i) in pieces {
        match groups.last_mut() {
            Some(g)
                if lo <= g.end + PARTIAL_WIDTH
                    && hi.max(g.end) - g.start
                        <= (2 * g.longest.max(hi - lo)).clamp(HOUR_US, GROUP_MAX_US) =>
            {
                g.end = g.end.max(hi);
                g.longest = g.longest.max(hi - lo);
                g.pieces.push((lo, hi, i));
            }
            _ => groups.push(Group {
                start: lo,
                end: hi,
                longest: hi - lo,
                pieces: vec![(lo, hi, i)],
            }),
        }
    }
    for Group {
        start, end, pieces, ..
    } in groups
    {
        // Each bucket is taken from the group of its piece only: another group's span may
        // cover it too.
        let mut members: Windows = Windows::new();
        for &(lo, hi, i) in &pieces {
            members.entry(keys[i]).or_default().push((lo, hi));
        }
        let group: Vec<(Uuid, Params)> = members
            .keys()
            .map(|key| devices[keys.binary_search(key).expect("a member")])
            .collect();
        let grid = Grid::covering(start, end, PARTIAL_WIDTH).expect("a group is a valid grid");
        for (id, partials) in aggregate_devices(spi, &group, grid, false) {
            let key = device_key(&id);
            let windows = members.get(&key);
            for p in partials.iter().filter(|p| within(windows, p.start)) {
                take(key, p);
            }
        }
    }
}

const PARTIAL_COLUMNS: &str = "device_id, bucket, reading_count, power_sum, power_count, \
     imported_delta, imported_covered_us, imported_flags, imported_set_aside, \
     exported_delta, exported_covered_us, exported_flags, exported_set_aside";

/// Which partials to read: those of a range, of the given devices or of all the caller sees,
/// or those inside per-device windows.
enum Scope<'a> {
    Range(Option<&'a [Uuid]>, (i64, i64)),
    Windows(&'a Windows),
}

/// Streams the materialised partials of a tier in a scope.
fn for_each_partial(
    spi: &SpiClient<'_>,
    table: &str,
    scope: Scope<'_>,
    mut take: impl FnMut(u128, Partial),
) {
    let (query, args) = match scope {
        Scope::Range(ids, (from, to)) => {
            let mut query =
                format!("SELECT {PARTIAL_COLUMNS} FROM {table} WHERE bucket >= $1 AND bucket < $2");
            let mut args = vec![Arg::new(timestamptz(from)), Arg::new(timestamptz(to))];
            if let Some(ids) = ids {
                query.push_str(" AND device_id = ANY($3)");
                args.push(Arg::new(ids.to_vec()));
            }
            (query, args)
        }
        Scope::Windows(windows) => {
            let (mut ids, mut los, mut his) = (Vec::new(), Vec::new(), Vec::new());
            for (&key, w) in windows {
                for &(lo, hi) in w {
                    ids.push(uuid_of(key));
                    los.push(timestamptz(lo));
                    his.push(timestamptz(hi));
                }
            }
            (
                format!(
                    "SELECT {PARTIAL_COLUMNS} \
                     FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS w(id, lo, hi) \
                     JOIN {table} ON device_id = w.id AND bucket >= w.lo AND bucket < w.hi"
                ),
                vec![Arg::new(ids), Arg::new(los), Arg::new(his)],
            )
        }
    };
    for_each_row(spi, &query, &args, &mut |values, nulls| {
        // SAFETY: the columns of PARTIAL_COLUMNS, in order: uuid (a pointer to 16 bytes) and
        // timestamptz, then by-value numbers, and float8[] read with FromDatum.
        unsafe {
            let device = u128::from_be_bytes(*values[0].cast_mut_ptr::<[u8; 16]>());
            let register = |at: usize| {
                let flags = i16::from_datum(values[at + 2], nulls[at + 2]).unwrap_or(0);
                let mut set_aside = [0.0; 4];
                if let Some(v) = Vec::<f64>::from_datum(values[at + 3], nulls[at + 3]) {
                    for (slot, x) in set_aside.iter_mut().zip(v) {
                        *slot = x;
                    }
                }
                RegisterPartial {
                    delta: f64::from_datum(values[at], nulls[at]),
                    covered: i64::from_datum(values[at + 1], nulls[at + 1]).unwrap_or(0),
                    events: Quality::from_bits((flags & 0xff) as u8),
                    has_reading: flags & HAS_READING != 0,
                    set_aside,
                }
            };
            take(
                device,
                Partial {
                    start: i64::from_datum(values[1], nulls[1]).expect("bucket is NOT NULL")
                        + PG_EPOCH_US,
                    reading_count: i32::from_datum(values[2], nulls[2]).unwrap_or(0) as u32,
                    power_sum: f64::from_datum(values[3], nulls[3]).unwrap_or(0.0),
                    power_count: i32::from_datum(values[4], nulls[4]).unwrap_or(0) as u32,
                    imported: register(5),
                    exported: register(9),
                },
            );
        }
        true
    });
}

/// Materialises the rollups of pending changes (those logged before `logged_before`, if
/// given), up to `max_device_days` of windows.
#[pg_extern(volatile)]
fn refresh_energy_rollups(
    max_device_days: default!(Option<i32>, 400),
    logged_before: default!(Option<TimestampWithTimeZone>, "NULL"),
) -> i64 {
    let max_device_days = crate::energy::required(max_device_days, "max_device_days");
    if max_device_days <= 0 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("max_device_days must be positive, got {max_device_days}"),
        );
    }
    let defaults = crate::guc::energy_defaults();
    defaults.validate().unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid flux.energy_* setting: {e}"),
        )
    });
    Spi::connect_mut(|spi| {
        // One refresh at a time; another one finds nothing to do.
        if !yes(
            spi,
            "SELECT pg_catalog.pg_try_advisory_xact_lock('flux_internal.meter_rollup_pending'::pg_catalog.regclass::pg_catalog.oid::integer, 0)",
        ) {
            return 0;
        }
        let key = defaults_key(&defaults);
        let state = state(spi);
        if state.energy_defaults.as_deref() != Some(key.as_str()) {
            // Made with other defaults (or never): every device's buckets are stale.
            spi.update(
                "INSERT INTO flux_internal.meter_rollup_pending (device_ids, lo, hi, logged_at) \
                 SELECT array_agg(id), '-infinity', 'infinity', '-infinity' \
                 FROM (SELECT id, row_number() OVER (ORDER BY id) / $1 AS part \
                       FROM flux.mg_device_registry) AS r GROUP BY part",
                None,
                &[DatumWithOid::from(DEVICES_PER_STEP as i64)],
            )
            .unwrap_or_else(|e| spi_failed(e));
            spi.update(
                "UPDATE flux_internal.meter_rollup_state SET energy_defaults = $1",
                None,
                &[DatumWithOid::from(key.as_str())],
            )
            .unwrap_or_else(|e| spi_failed(e));
        }
        // Changes of at most DEVICES_PER_STEP devices (or of one statement), oldest first, and
        // every later change of the same devices among the next CANDIDATES: a device's
        // changes are widened and recomputed together.
        let mut devices_taken: HashSet<Uuid> = HashSet::new();
        let mut rows: Vec<String> = Vec::new();
        for row in spi
            .select(
                "SELECT ctid::text, device_ids FROM flux_internal.meter_rollup_pending \
                 WHERE $1::timestamptz IS NULL OR logged_at < $1 ORDER BY logged_at LIMIT $2",
                None,
                &[
                    DatumWithOid::from(logged_before),
                    DatumWithOid::from(CANDIDATES),
                ],
            )
            .unwrap_or_else(|e| spi_failed(e))
        {
            let ctid: String = row.get(1).ok().flatten().expect("a ctid");
            let ids: Vec<Uuid> = row.get(2).ok().flatten().unwrap_or_default();
            let new = ids.iter().filter(|id| !devices_taken.contains(id)).count();
            if rows.is_empty() || devices_taken.len() + new <= DEVICES_PER_STEP {
                devices_taken.extend(ids);
                rows.push(ctid);
            }
        }
        let taken: Vec<(Uuid, i64, i64, TimestampWithTimeZone)> = spi
            .update(
                "WITH taken AS ( \
                     DELETE FROM flux_internal.meter_rollup_pending \
                     WHERE ctid = ANY ($1::text[]::tid[]) \
                     RETURNING device_ids, lo, hi, logged_at) \
                 SELECT d, lo, hi, logged_at FROM taken CROSS JOIN LATERAL unnest(device_ids) AS d",
                None,
                &[DatumWithOid::from(rows)],
            )
            .unwrap_or_else(|e| spi_failed(e))
            .map(|row| {
                let time = |i: usize| time_at(&row, i);
                (
                    row.get::<Uuid>(1).ok().flatten().expect("NOT NULL"),
                    time(2),
                    time(3),
                    row.get::<TimestampWithTimeZone>(4)
                        .ok()
                        .flatten()
                        .expect("NOT NULL"),
                )
            })
            .collect();
        if taken.is_empty() {
            return 0;
        }
        // What is put back keeps the time its changes were logged: a round refreshing what was
        // logged before it began goes on with it.
        let mut logged: BTreeMap<u128, TimestampWithTimeZone> = BTreeMap::new();
        for &(id, _, _, at) in &taken {
            let first = logged.entry(device_key(&id)).or_insert(at);
            if at < *first {
                *first = at;
            }
        }
        let taken = taken
            .into_iter()
            .map(|(id, lo, hi, _)| (id, lo, hi))
            .collect();
        let entries = resolve_infinite(spi, taken, state.raw_kept_from);
        let stale = stale_windows(
            spi,
            entries,
            state.raw_kept_from,
            (state.raw_kept_from, i64::MAX),
        );
        let (now, later) = within_budget(stale, i64::from(max_device_days) * DAY_US);
        if !later.is_empty() {
            let [ids, los, his] = unzip_windows(&later);
            let at: Vec<TimestampWithTimeZone> = later
                .iter()
                .flat_map(|(key, w)| std::iter::repeat_n(logged[key], w.len()))
                .collect();
            spi.update(
                "INSERT INTO flux_internal.meter_rollup_pending (device_ids, lo, hi, logged_at) \
                 SELECT ARRAY[d], lo, hi, at \
                 FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[]) AS w(d, lo, hi, at)",
                None,
                &[ids, los, his, at.into()],
            )
            .unwrap_or_else(|e| spi_failed(e));
        }
        let ids: Vec<Uuid> = now.keys().map(|&k| uuid_of(k)).collect();
        let devices = devices(spi, Some(&ids), &defaults, Unknown::Skip);
        // The days the windows touch are folded again from their 5-minute partials: those
        // outside the windows as stored, read before they are replaced, and the new ones.
        let days = widen(&now, DAY_US);
        let mut day_folds: BTreeMap<(u128, i64), Fold> = BTreeMap::new();
        let mut fold_day = |key: u128, p: &Partial| {
            let day = p.start.div_euclid(DAY_US) * DAY_US;
            day_folds
                .entry((key, day))
                .or_insert_with(|| Fold::new(Grid::exactly(day, day + DAY_US).expect("a day")))
                .add(p, PARTIAL_WIDTH)
                .expect("5-minute buckets lie in one day");
        };
        for_each_partial(spi, FIVE_MINUTES, Scope::Windows(&days), |key, p| {
            if !within(now.get(&key), p.start) {
                fold_day(key, &p);
            }
        });
        let mut rows = PartialRows::default();
        recompute(spi, &devices, &now, |key, p| {
            rows.push(key, p);
            fold_day(key, p);
        });
        let buckets: i64 = now
            .values()
            .flatten()
            .map(|(lo, hi)| (hi - lo) / PARTIAL_WIDTH)
            .sum();
        let mut daily_rows = PartialRows::default();
        for ((key, _), fold) in day_folds {
            for p in fold.into_partials() {
                daily_rows.push(key, &p);
            }
        }
        for (table, windows, rows) in [(FIVE_MINUTES, &now, rows), (DAILY, &days, daily_rows)] {
            spi.update(
                &format!(
                    "DELETE FROM {table} r \
                     USING unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS w(id, lo, hi) \
                     WHERE r.device_id = w.id AND r.bucket >= w.lo AND r.bucket < w.hi"
                ),
                None,
                &unzip_windows(windows),
            )
            .unwrap_or_else(|e| spi_failed(e));
            rows.insert(spi, table);
        }
        buckets.max(1)
    })
}

/// Replaces infinite bounds (every bucket of the device) by the stretches of 31 days that hold
/// its readings since `raw_kept_from`, found by hopping through the index from one to the
/// next: a device read for a year makes 12 entries, one with a reading in 1652 and one in 2200
/// makes 2, not five centuries of buckets.
fn resolve_infinite(
    spi: &SpiClient<'_>,
    entries: Vec<(Uuid, i64, i64)>,
    raw_kept_from: i64,
) -> Vec<(Uuid, i64, i64)> {
    const HOP_DAYS: i64 = 31;
    let (finite, infinite): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|&(_, lo, hi)| lo != i64::MIN && hi != i64::MAX);
    let mut resolved = finite;
    let mut ids: Vec<Uuid> = infinite.iter().map(|e| e.0).collect();
    ids.sort_by_key(device_key);
    ids.dedup();
    if ids.is_empty() {
        return resolved;
    }
    // -infinity when retention never dropped anything: all of the device's readings.
    let from = (raw_kept_from != i64::MIN).then(|| timestamptz(raw_kept_from));
    let table = spi
        .select(
            "WITH RECURSIVE hop(id, t) AS ( \
                 SELECT d.id, (SELECT min(time) FROM flux.mg_meter_readings \
                               WHERE device_id = d.id AND time >= coalesce($2, '-infinity')) \
                 FROM unnest($1::uuid[]) AS d(id) \
                 UNION ALL \
                 SELECT hop.id, (SELECT min(time) FROM flux.mg_meter_readings \
                                 WHERE device_id = hop.id AND time >= hop.t + make_interval(days => $3)) \
                 FROM hop WHERE hop.t IS NOT NULL) \
             SELECT id, t FROM hop WHERE t IS NOT NULL",
            None,
            &[
                DatumWithOid::from(ids),
                DatumWithOid::from(from),
                DatumWithOid::from(HOP_DAYS as i32),
            ],
        )
        .unwrap_or_else(|e| spi_failed(e));
    for row in table {
        let id: Uuid = row.get(1).ok().flatten().expect("an id");
        let t: TimestampWithTimeZone = row.get(2).ok().flatten().expect("not null");
        let t = micros_or_infinite(t);
        resolved.push((id, t, t.saturating_add(HOP_DAYS * DAY_US - 1)));
    }
    resolved
}

/// Per device (by key), disjoint time windows, ascending.
type Windows = BTreeMap<u128, Vec<(i64, i64)>>;

/// Splits the windows into those within `budget` µs (device time) and the rest, earliest
/// first, cutting one window at a 5-minute edge if need be.
fn within_budget(stale: Windows, budget: i64) -> (Windows, Windows) {
    let mut all: Vec<(i64, i64, u128)> = stale
        .iter()
        .flat_map(|(&k, w)| w.iter().map(move |&(lo, hi)| (lo, hi, k)))
        .collect();
    all.sort_unstable();
    let (mut now, mut later) = (Windows::new(), Windows::new());
    let mut left = budget;
    for (lo, hi, key) in all {
        if left <= 0 {
            later.entry(key).or_default().push((lo, hi));
        } else if hi - lo <= left {
            left -= hi - lo;
            now.entry(key).or_default().push((lo, hi));
        } else {
            let cut = floor_partial(lo + left).max(lo + PARTIAL_WIDTH);
            left = 0;
            now.entry(key).or_default().push((lo, cut));
            if cut < hi {
                later.entry(key).or_default().push((cut, hi));
            }
        }
    }
    for windows in now.values_mut() {
        windows.sort_unstable();
    }
    (now, later)
}

/// The windows as query arguments: device ids, starts and ends.
fn unzip_windows(windows: &Windows) -> [DatumWithOid<'static>; 3] {
    let mut ids = Vec::new();
    let mut los = Vec::new();
    let mut his = Vec::new();
    for (&key, w) in windows {
        for &(lo, hi) in w {
            ids.push(uuid_of(key));
            los.push(timestamptz(lo));
            his.push(timestamptz(hi));
        }
    }
    [ids.into(), los.into(), his.into()]
}

/// Columns of rollup rows to insert, one array per column.
#[derive(Default)]
struct PartialRows {
    device: Vec<Uuid>,
    bucket: Vec<TimestampWithTimeZone>,
    reading_count: Vec<i32>,
    power_sum: Vec<f64>,
    power_count: Vec<i32>,
    registers: [RegisterColumns; 2],
}

#[derive(Default)]
struct RegisterColumns {
    delta: Vec<Option<f64>>,
    covered: Vec<i64>,
    flags: Vec<i16>,
    set_aside: [Vec<f64>; 4],
}

impl PartialRows {
    fn push(&mut self, key: u128, p: &Partial) {
        self.device.push(uuid_of(key));
        self.bucket.push(timestamptz(p.start));
        self.reading_count
            .push(p.reading_count.min(i32::MAX as u32) as i32);
        self.power_sum.push(p.power_sum);
        self.power_count
            .push(p.power_count.min(i32::MAX as u32) as i32);
        for (columns, r) in self.registers.iter_mut().zip([p.imported, p.exported]) {
            columns.delta.push(r.delta);
            columns.covered.push(r.covered);
            columns
                .flags
                .push(i16::from(r.events.bits()) | if r.has_reading { HAS_READING } else { 0 });
            for (column, x) in columns.set_aside.iter_mut().zip(r.set_aside) {
                column.push(x);
            }
        }
    }

    fn insert(self, spi: &mut SpiClient<'_>, table: &str) {
        if self.device.is_empty() {
            return;
        }
        // Null when nothing was set aside, as in almost every bucket.
        let set_aside = |r: &str| {
            format!(
                "CASE WHEN {r}0 = 0 AND {r}1 = 0 AND {r}2 = 0 AND {r}3 = 0 THEN NULL \
                 ELSE ARRAY[{r}0, {r}1, {r}2, {r}3] END"
            )
        };
        let query = format!(
            "INSERT INTO {table} ({PARTIAL_COLUMNS}) \
             SELECT d, b, n, ps, pc, id, ic, iflags, {}, ed, ec, eflags, {} \
             FROM unnest($1::uuid[], $2::timestamptz[], $3::int4[], $4::float8[], $5::int4[], \
                         $6::float8[], $7::int8[], $8::int2[], $9::float8[], $10::float8[], $11::float8[], $12::float8[], \
                         $13::float8[], $14::int8[], $15::int2[], $16::float8[], $17::float8[], $18::float8[], $19::float8[]) \
                  AS u(d, b, n, ps, pc, id, ic, iflags, i0, i1, i2, i3, ed, ec, eflags, e0, e1, e2, e3)",
            set_aside("i"),
            set_aside("e"),
        );
        let mut args: Vec<DatumWithOid> = vec![
            self.device.into(),
            self.bucket.into(),
            self.reading_count.into(),
            self.power_sum.into(),
            self.power_count.into(),
        ];
        for columns in self.registers {
            args.push(columns.delta.into());
            args.push(columns.covered.into());
            args.push(columns.flags.into());
            for column in columns.set_aside {
                args.push(column.into());
            }
        }
        spi.update(&query, None, &args)
            .unwrap_or_else(|e| spi_failed(e));
    }
}

#[pg_schema]
mod flux_internal {
    use super::*;

    /// Whether no pending change can alter a rollup bucket before `upper`, and the rollups
    /// were made with the flux.energy_* defaults in force: retention may then drop the raw
    /// meter readings before `upper`.
    #[pg_extern(stable)]
    fn rollups_current_before(upper: TimestampWithTimeZone) -> bool {
        let upper = micros_or_infinite(upper);
        let defaults = crate::guc::energy_defaults();
        Spi::connect(|spi| {
            let state = state(spi);
            if state.energy_defaults.as_deref() != Some(defaults_key(&defaults).as_str()) {
                return false;
            }
            let entries = changes(
                spi,
                "SELECT d, lo, hi FROM flux_internal.meter_rollup_pending \
                 CROSS JOIN LATERAL unnest(device_ids) AS d WHERE $1::timestamptz IS NULL OR lo < $1",
                &[DatumWithOid::from(
                    (upper < i64::MAX - REACH_US).then(|| timestamptz(upper + REACH_US)),
                )],
            );
            stale_windows(
                spi,
                entries,
                state.raw_kept_from,
                (state.raw_kept_from, upper),
            )
            .is_empty()
        })
    }
}
