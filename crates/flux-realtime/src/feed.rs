//! The change feed: the logical replication protocol, pushed by PostgreSQL's walsender from a
//! permanent `pgoutput` slot over the publication (`pgwire-replication` speaks the protocol;
//! [`crate::pgoutput`] reads its rows). Nothing is polled: an idle feed costs nothing.
//!
//! The slot (`FLUX_REALTIME_SLOT`, default `flux_realtime`) outlives the server, so a restart
//! of the server or of PostgreSQL resumes after the last change handed to the dispatcher: a
//! change is delivered once, bar the last fraction of a second before a crash. While no server
//! reads it, the slot holds WAL back, up to the stack's `max_slot_wal_keep_size`; past that
//! PostgreSQL gives the slot up, and the server makes a new one (and says so in its log).
//!
//! Memory is bounded whatever the size of a transaction: rows go to the dispatcher in batches
//! as they arrive (PostgreSQL sends a transaction once it has committed, spilling big ones to
//! disk on its side), and past `FLUX_REALTIME_MAX_TRANSACTION_CHANGES` rows of one transaction
//! the rest are passed over; the subscribers of its tables get a `system` message instead.

use crate::db;
use crate::pgoutput::{self, Message, Relation};
use crate::state::State;
use crate::wal::WalChange;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Rows handed to the dispatcher at a time.
const MAX_BATCH: usize = 5000;
/// Publication membership and partitions are re-read this often.
const CATALOG_REFRESH: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Flux maintenance frames the rows it moves between partitions with transactional logical
/// messages of this prefix ('begin', 'end'): they change place, not content, and are left out.
const MAINTENANCE_MESSAGES: &str = "flux_maintenance";
/// `flux.broadcast` sends its messages as transactional logical messages of this prefix.
const BROADCAST_MESSAGES: &str = "flux_broadcast";

/// A `flux.broadcast` message.
#[derive(serde::Deserialize)]
struct DbBroadcast {
    topic: String,
    event: String,
    payload: Box<serde_json::value::RawValue>,
    private: bool,
    id: String,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Rows of committed transactions, in commit order.
pub struct Batch {
    pub changes: Vec<WalChange>,
}

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

fn db_err(what: &'static str) -> impl Fn(db::DbError) -> String {
    // "db error" alone says nothing: the server's code and message do.
    move |e| match e.as_db_error() {
        Some(db) => format!("{what}: {} {}", db.code().code(), db.message()),
        None => format!("{what}: {e}"),
    }
}

/// Makes sure the slot exists and can be read: a slot PostgreSQL gave up (it held back more
/// WAL than `max_slot_wal_keep_size`) is made again.
async fn ensure_slot(client: &tokio_postgres::Client, slot: &str) -> Result<(), String> {
    let row = client
        .query_opt(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(db_err("reading the slot"))?;
    let status: Option<String> = row.as_ref().and_then(|r| r.get(0));
    if status.as_deref() == Some("lost") {
        log!("change feed: slot {slot} was given up by PostgreSQL (it held back too much WAL while no server read it); changes since then are not delivered; making it again");
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .map_err(db_err("dropping the lost slot"))?;
    }
    if row.is_none() || status.as_deref() == Some("lost") {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
            .map_err(db_err("creating the slot"))?;
        log!("change feed: created slot {slot}");
    }
    Ok(())
}

fn replication_config(state: &State) -> Result<ReplicationConfig, String> {
    let url: tokio_postgres::Config = state
        .config
        .db_url
        .parse()
        .map_err(|e| format!("FLUX_DB_URL: {e}"))?;
    let host = match url.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "127.0.0.1".into(),
    };
    let password = url
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    Ok(ReplicationConfig::new(
        host,
        url.get_user().unwrap_or("postgres"),
        password,
        url.get_dbname().unwrap_or("postgres"),
        state.config.slot.clone(),
        state.config.publication.clone(),
    )
    .with_port(url.get_ports().first().copied().unwrap_or(5432))
    // Values come as text: in forms PostgreSQL's input functions read back exactly.
    .with_options(
        "-c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=3",
    )
    .with_application_name("flux-realtime feed")
    // Acknowledged positions reach the slot quickly: a crash repeats little.
    .with_status_interval(Duration::from_millis(200))
    .with_buffer_size(1024))
}

/// The transaction being read.
#[derive(Default)]
struct Transaction {
    commit_micros: i64,
    /// Inside a partition move of maintenance: its changes are left out.
    moving: bool,
    rows: usize,
    /// Rows passed over past the per-transaction limit, by table.
    passed_over: BTreeMap<(String, String), usize>,
}

async fn stream(
    state: &State,
    batches: &mpsc::Sender<Batch>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let client = db::connect(&state.config.db_url)
        .await
        .map_err(db_err("connect"))?;
    let slot = &state.config.slot;
    ensure_slot(&client, slot).await?;
    let publication = &state.config.publication;
    let mut repl = ReplicationClient::connect(replication_config(state)?)
        .await
        .map_err(|e| format!("starting replication from slot {slot}: {e}"))?;
    let catalog = db::load_catalog(&client, publication)
        .await
        .map_err(db_err("reading the catalog"))?;
    log!(
        "change feed: streaming from slot {slot}, {} table(s) in publication {publication}",
        catalog.tables.len()
    );
    state.set_catalog(catalog);
    state.feed_up.store(true, Ordering::SeqCst);

    let limit = state.config.max_transaction_changes;
    let mut relations: HashMap<u32, Relation> = HashMap::new();
    let mut refresh = tokio::time::interval(CATALOG_REFRESH);
    refresh.tick().await;
    // Partitions the catalog did not know after a reload: not reloaded for again.
    let mut unknown: HashSet<(String, String)> = HashSet::new();
    let mut txn: Option<Transaction> = None;
    let mut pending = Pending::default();
    loop {
        let event = tokio::select! {
            permit = batches.reserve(), if !pending.changes.is_empty() => {
                let permit = permit.map_err(|_| DISPATCHER_STOPPED.to_owned())?;
                permit.send(Batch { changes: std::mem::take(&mut pending.changes) });
                pending.acknowledge(&repl);
                continue;
            }
            event = repl.recv() => event.map_err(|e| format!("replication: {e}"))?,
            _ = refresh.tick() => {
                let catalog = db::load_catalog(&client, publication)
                    .await
                    .map_err(db_err("reading the catalog"))?;
                state.set_catalog(catalog);
                unknown.clear();
                continue;
            }
            _ = shutdown.changed() => {
                let _ = repl.shutdown().await;
                return Ok(());
            }
        };
        let Some(event) = event else {
            return Err("the replication stream ended".into());
        };
        match event {
            ReplicationEvent::Begin {
                commit_time_micros, ..
            } => {
                txn = Some(Transaction {
                    commit_micros: commit_time_micros + PG_EPOCH_MICROS,
                    ..Transaction::default()
                });
            }
            ReplicationEvent::XLogData { data, .. } => {
                let message = pgoutput::decode(&data).map_err(|e| format!("pgoutput: {e}"))?;
                let Some(t) = txn.as_mut() else { continue };
                match message {
                    Message::Relation(r) => {
                        let catalog = state.catalog();
                        let key = (r.schema.clone(), r.table.clone());
                        if catalog.may_be_new_partition(&r.schema, &r.table) && unknown.insert(key)
                        {
                            // A partition made since the catalog was read.
                            let catalog = db::load_catalog(&client, publication)
                                .await
                                .map_err(db_err("reading the catalog"))?;
                            state.set_catalog(catalog);
                        }
                        relations.insert(r.id, r);
                    }
                    Message::Change {
                        relation,
                        action,
                        new,
                        old,
                    } => {
                        if t.moving {
                            continue;
                        }
                        let rel = relations
                            .get(&relation)
                            .ok_or_else(|| format!("a change of unknown relation {relation}"))?;
                        t.rows += 1;
                        if t.rows > limit {
                            *t.passed_over
                                .entry((rel.schema.clone(), rel.table.clone()))
                                .or_default() += 1;
                            continue;
                        }
                        pending.changes.push(WalChange {
                            action,
                            schema: rel.schema.clone(),
                            table: rel.table.clone(),
                            commit_micros: t.commit_micros,
                            new: pgoutput::values(rel, &new),
                            old: pgoutput::values(rel, &old),
                        });
                        // The transaction has committed: its rows can go before its end.
                        if pending.changes.len() >= MAX_BATCH {
                            pending.hand_over(batches, &repl).await?;
                        }
                    }
                    Message::Other => {}
                }
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                if let Some(t) = txn.take() {
                    if !t.passed_over.is_empty() {
                        // After the rows that were delivered.
                        pending.hand_over(batches, &repl).await?;
                        tell_passed_over(state, &t.passed_over, limit);
                    }
                }
                pending.unacked = Some(end_lsn);
                if pending.changes.is_empty() {
                    pending.acknowledge(&repl);
                }
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                // Between transactions, with everything read handed over: let the slot move
                // on, so that it does not hold back WAL of changes to other tables.
                if txn.is_none() && pending.changes.is_empty() && wal_end != Lsn(0) {
                    repl.update_applied_lsn(wal_end);
                }
            }
            ReplicationEvent::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if prefix == MAINTENANCE_MESSAGES => {
                if let Some(t) = txn.as_mut() {
                    t.moving = &content[..] == b"begin";
                }
            }
            ReplicationEvent::Message {
                transactional: true,
                prefix,
                content,
                ..
            } if prefix == BROADCAST_MESSAGES => {
                // Sent when its transaction has committed: relayed now, in commit order.
                match serde_json::from_slice::<DbBroadcast>(&content) {
                    Ok(b) if b.payload.get().len() <= state.config.limits.payload_bytes => {
                        pending.hand_over(batches, &repl).await?;
                        state.broadcast_from_server(
                            &b.topic,
                            &b.event,
                            b.payload.get(),
                            Some(&b.id),
                            b.private,
                        );
                    }
                    Ok(b) => log!(
                        "change feed: a flux.broadcast to {} is over the payload limit; not sent",
                        flux_log::cap(&b.topic, 120)
                    ),
                    Err(e) => log!("change feed: an unreadable flux.broadcast message: {e}"),
                }
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
        }
    }
}

const DISPATCHER_STOPPED: &str = "the dispatcher stopped";

/// Committed changes not yet handed to the dispatcher: while it is busy, the transactions that
/// commit meanwhile gather here and go as one batch (up to MAX_BATCH). `unacked` is the end of
/// the last transaction among them, acknowledged to the slot once they are handed over.
#[derive(Default)]
struct Pending {
    changes: Vec<WalChange>,
    unacked: Option<Lsn>,
}

impl Pending {
    /// Hands the changes over, waiting for the dispatcher, and acknowledges what they end.
    async fn hand_over(
        &mut self,
        batches: &mpsc::Sender<Batch>,
        repl: &ReplicationClient,
    ) -> Result<(), String> {
        if !self.changes.is_empty() {
            let changes = std::mem::take(&mut self.changes);
            batches
                .send(Batch { changes })
                .await
                .map_err(|_| DISPATCHER_STOPPED.to_owned())?;
        }
        self.acknowledge(repl);
        Ok(())
    }

    fn acknowledge(&mut self, repl: &ReplicationClient) {
        if let Some(lsn) = self.unacked.take() {
            repl.update_applied_lsn(lsn);
        }
    }
}

/// Tells the subscribers of each table that rows of one transaction were passed over.
fn tell_passed_over(state: &State, passed: &BTreeMap<(String, String), usize>, limit: usize) {
    let catalog = state.catalog();
    let mut oids: HashMap<u32, (&str, usize)> = HashMap::new();
    for ((schema, table), n) in passed {
        if let Some(t) = catalog.find(schema, table) {
            let entry = oids.entry(t.oid).or_insert((t.name.as_str(), 0));
            entry.1 += n;
        }
    }
    log!(
        "change feed: a transaction changed more than {limit} rows; {} row(s) not delivered",
        passed.values().sum::<usize>()
    );
    for sub in state.hub.snapshot().subs.iter() {
        let hit = sub
            .bindings
            .iter()
            .flat_map(|b| &b.targets)
            .find_map(|target| oids.get(&target.table));
        let Some((table, n)) = hit else { continue };
        let message = format!(
            "{n} changes to {table} of one transaction were not delivered: a transaction delivers at most {limit}"
        );
        sub.conn.push_system(
            sub.join_ref.as_deref(),
            &sub.topic,
            false,
            "postgres_changes",
            &message,
        );
    }
}
