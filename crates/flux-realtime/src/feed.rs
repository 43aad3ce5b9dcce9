//! The change feed: a temporary wal2json slot polled with `pg_logical_slot_get_changes`.
//!
//! A temporary slot belongs to its session and vanishes with it, so a stopped server leaves
//! no slot behind retaining WAL. The price is that a lost connection (PostgreSQL restarted)
//! loses the slot: the feed reconnects with backoff and creates a new one, and changes
//! committed while no slot existed are not delivered. Subscriptions survive meanwhile.

use crate::db;
use crate::state::State;
use crate::time;
use crate::wal::{self, WalChange};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_postgres::types::ToSql;

/// Rows per poll; a transaction is never split, so a batch may be larger.
const MAX_BATCH: i32 = 5000;
/// Publication membership is re-read this often (wal2json's `add-tables` and the catalog).
const CATALOG_REFRESH: Duration = Duration::from_secs(5);
/// An idle feed polls after 1 ms, backing off to this; any change resets it.
const MAX_IDLE_SLEEP: Duration = Duration::from_millis(16);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Changes read by one poll, in commit order.
pub struct Batch {
    pub changes: Vec<WalChange>,
}

static SLOT_SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs until shutdown, reconnecting whenever the database goes away.
pub async fn run(
    state: Arc<State>,
    batches: mpsc::Sender<Batch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = Instant::now();
        let result = stream(&state, &batches, &mut shutdown).await;
        state.feed_up.store(false, Ordering::SeqCst);
        match result {
            Ok(()) => return,
            Err(e) => {
                if started.elapsed() > MAX_BACKOFF * 2 {
                    backoff = Duration::from_millis(200);
                }
                log!("change feed: {e}; retrying in {} ms", backoff.as_millis());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn stream(
    state: &State,
    batches: &mpsc::Sender<Batch>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let err = |what: &str| {
        let what = what.to_owned();
        // "db error" alone says nothing: the server's code and message do.
        move |e: db::DbError| match e.as_db_error() {
            Some(db) => format!("{what}: {} {}", db.code().code(), db.message()),
            None => format!("{what}: {e}"),
        }
    };
    let client = db::connect(&state.config.db_url)
        .await
        .map_err(err("connect"))?;
    db::prepare_feed_session(&client)
        .await
        .map_err(err("preparing the session"))?;
    let slot = format!(
        "flux_realtime_{}_{}",
        std::process::id(),
        SLOT_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'wal2json', true)",
            &[&slot],
        )
        .await
        .map_err(err("creating the slot"))?;
    let publication = &state.config.publication;
    let catalog = db::load_catalog(&client, publication)
        .await
        .map_err(err("reading the catalog"))?;
    let mut add_tables = catalog.add_tables_option();
    log!(
        "change feed: streaming from temporary slot {slot}, {} table(s) in publication {publication}",
        catalog.tables.len()
    );
    state.set_catalog(catalog);
    state.feed_up.store(true, Ordering::SeqCst);

    // With no table to follow, wal2json would follow all of them: filter everything instead.
    // Rows that flux maintenance moves between partitions carry its replication origin
    // (flux_maintenance): they change place, not content, and are left out. Without it yet
    // (an older extension), the option is left out rather than given NULL.
    let poll = client
        .prepare(
            "SELECT data FROM pg_logical_slot_get_changes($1, NULL, $2, VARIADIC ARRAY[
                'format-version', '2', 'include-pk', '1', 'include-timestamp', '1',
                'include-type-oids', '1', 'include-transaction', '0',
                'add-tables', $3, 'filter-tables', CASE WHEN $3 = '' THEN '*.*' ELSE '' END]
                || coalesce((SELECT ARRAY['filter-origins', roident::text]
                             FROM pg_replication_origin WHERE roname = 'flux_maintenance'), '{}'))",
        )
        .await
        .map_err(err("preparing the poll"))?;
    let mut refreshed = Instant::now();
    let mut generation = state.catalog_generation();
    // Changes of tables in a partition schema that the catalog did not know after a reload.
    let mut unknown: HashSet<(String, String)> = HashSet::new();
    let mut idle = Duration::from_millis(1);
    loop {
        if refreshed.elapsed() >= CATALOG_REFRESH {
            let catalog = db::load_catalog(&client, publication)
                .await
                .map_err(err("reading the catalog"))?;
            state.set_catalog(catalog);
            refreshed = Instant::now();
            unknown.clear();
        }
        // A join may have reloaded the catalog for a table just added to the publication:
        // follow it from the next poll on.
        if state.catalog_generation() != generation {
            generation = state.catalog_generation();
            let tables = state.catalog().add_tables_option();
            if tables != add_tables {
                log!(
                    "change feed: publication {publication} now has {} table(s)",
                    state.catalog().tables.len()
                );
                add_tables = tables;
            }
        }
        let params: [&(dyn ToSql + Sync); 3] = [&slot, &MAX_BATCH, &add_tables];
        let rows = tokio::select! {
            rows = client.query(&poll, &params) => rows.map_err(err("polling"))?,
            _ = shutdown.changed() => return Ok(()),
        };
        if rows.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.changed() => return Ok(()),
            }
            idle = (idle * 2).min(MAX_IDLE_SLEEP);
            continue;
        }
        idle = Duration::from_millis(1);
        state
            .last_change
            .store(time::now_micros(), Ordering::Relaxed);
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            match wal::parse(row.get(0)) {
                Ok(Some(change)) => changes.push(change),
                Ok(None) => {}
                Err(e) => log!("change feed: skipping a message: {e}"),
            }
        }
        // A partition created since the catalog was read: read it again before dispatching.
        let catalog = state.catalog();
        if changes.iter().any(|c| {
            catalog.may_be_new_partition(&c.schema, &c.table)
                && !unknown.contains(&(c.schema.clone(), c.table.clone()))
        }) {
            let catalog = db::load_catalog(&client, publication)
                .await
                .map_err(err("reading the catalog"))?;
            for c in &changes {
                if catalog.may_be_new_partition(&c.schema, &c.table) {
                    unknown.insert((c.schema.clone(), c.table.clone()));
                }
            }
            state.set_catalog(catalog);
        }
        if !changes.is_empty() && batches.send(Batch { changes }).await.is_err() {
            return Ok(());
        }
    }
}

/// How often [`nudge`] runs while changes flow.
const NUDGE_EVERY: Duration = Duration::from_secs(1);

/// Keeps the slot's restart point close behind.
///
/// A logical slot can only move its restart point at a running-transactions WAL record, and
/// PostgreSQL 15 writes one only every 15 s. Until then each `pg_logical_slot_get_changes` call
/// decodes again all WAL since the last one: at 1,000 inserts/s, megabytes per poll, which
/// caps the rate the feed can follow. Creating a logical slot writes such a record, so while
/// changes flow this creates and drops a throw-away one every second, on its own connection
/// (creation waits for running transactions; a timeout there is harmless: the record is
/// already written). PostgreSQL 16 and later have `pg_log_standby_snapshot()` for this.
pub async fn nudge(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(NUDGE_EVERY);
    let mut client: Option<(tokio_postgres::Client, String)> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let busy = time::now_micros() - state.last_change.load(Ordering::Relaxed)
            < 2 * NUDGE_EVERY.as_micros() as i64;
        if !busy || !state.feed_up.load(Ordering::SeqCst) {
            continue;
        }
        if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            client = match nudge_session(&state.config.db_url).await {
                Ok(c) => Some(c),
                Err(e) => {
                    if !failing {
                        log!("change feed: cannot open the nudge session: {e}");
                    }
                    failing = true;
                    continue;
                }
            };
        }
        let Some((c, sql)) = &client else { continue };
        match c.batch_execute(sql).await {
            Ok(()) => failing = false,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {}
            Err(e) => {
                if !failing {
                    log!("change feed: nudge failed: {e}");
                }
                failing = true;
            }
        }
    }
}

/// A session for [`nudge`] and the statement it runs.
async fn nudge_session(url: &str) -> Result<(tokio_postgres::Client, String), db::DbError> {
    let client = db::connect(url).await?;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let sql = if version >= 160_000 {
        "SELECT pg_log_standby_snapshot()".to_owned()
    } else {
        format!(
            "SET statement_timeout = '2s'; \
             SELECT pg_drop_replication_slot(slot_name) \
             FROM pg_create_logical_replication_slot('flux_realtime_nudge_{}', 'test_decoding', true)",
            std::process::id()
        )
    };
    Ok((client, sql))
}
