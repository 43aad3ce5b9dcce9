//! Configuration and the state every task shares.

use crate::catalog::{Catalog, Table};
use crate::db::{self, Access, DbError, Pool};
use crate::hub::{ConnHandle, Hub};
use crate::limits::{self, Connections, EventRates};
use crate::rooms::{Member, Message as RoomMessage, Rooms};
use crate::time;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Joins may have the catalog reloaded at most this often.
const MIN_JOIN_REFRESH_GAP: Duration = Duration::from_millis(250);

/// How RLS visibility is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RlsCheck {
    /// Subscribers with identical (role, claims) share one query per table per batch, and
    /// the queries of a batch run concurrently over the pool.
    Grouped,
    /// One query per change per subscriber, one after another, as Supabase's realtime does:
    /// the baseline of the benchmark.
    PerSubscriber,
}

pub struct Config {
    pub listen: String,
    pub db_url: String,
    pub secret: Vec<u8>,
    pub publication: String,
    pub rls_check: RlsCheck,
    pub pool_size: usize,
    /// Bytes a client may have queued before it is disconnected as too slow.
    pub send_queue_bytes: usize,
    /// `FLUX_REALTIME_SLOT` (`flux_realtime`): the permanent replication slot of the feed.
    pub slot: String,
    /// `FLUX_REALTIME_MAX_TRANSACTION_CHANGES` (100000): rows of one transaction delivered;
    /// the rest are passed over with a system message.
    pub max_transaction_changes: usize,
    pub limits: Limits,
}

/// What one client may ask of the server (README: Realtime, "Limits").
#[derive(Debug, Clone)]
pub struct Limits {
    /// `FLUX_REALTIME_MAX_CHANNELS` (100): channels joined at once per connection.
    pub channels: usize,
    /// `FLUX_REALTIME_MAX_BINDINGS` (100): `postgres_changes` bindings per connection.
    pub bindings: usize,
    /// `FLUX_REALTIME_JOINS_PER_SECOND` (10, bursts of twice that): joins per connection.
    pub joins_per_second: usize,
    /// `FLUX_REALTIME_CLIENT_CONNECTIONS` (100): connections per client address.
    pub client_connections: usize,
    /// `FLUX_REALTIME_MAX_CONNECTIONS` (10000): connections in all.
    pub connections: usize,
    /// `FLUX_REALTIME_MESSAGES_PER_SECOND` (100, bursts of twice that): broadcasts a
    /// connection sends.
    pub messages_per_second: usize,
    /// `FLUX_REALTIME_MAX_PAYLOAD_KB` (256): largest broadcast payload.
    pub payload_bytes: usize,
    /// `FLUX_REALTIME_PRESENCE_CALLS` (5 per 30 s): track and untrack calls per channel.
    pub presence_calls: usize,
    /// `FLUX_REALTIME_EVENTS_PER_SECOND` (1000000): events the server sends, in all.
    pub events_per_second: usize,
    /// `FLUX_REALTIME_ROLE_EVENTS_PER_SECOND` (`anon=200000`): events sent to a role's
    /// subscribers, per role listed.
    pub role_events_per_second: HashMap<String, usize>,
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let required = |name: &str| var(name).ok_or(format!("{name} is not set"));
        let number = |name: &str, default: usize| -> Result<usize, String> {
            var(name).map_or(Ok(default), |v| {
                v.parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("{name} must be a positive integer, got {v:?}"))
            })
        };
        let secret = required("FLUX_JWT_SECRET")?;
        if secret.len() < flux_jwt::MIN_SECRET_LEN {
            return Err(format!(
                "FLUX_JWT_SECRET must be at least {} characters",
                flux_jwt::MIN_SECRET_LEN
            ));
        }
        let rls_check = match var("FLUX_REALTIME_RLS_CHECK").as_deref() {
            None | Some("grouped") => RlsCheck::Grouped,
            Some("per-subscriber") => RlsCheck::PerSubscriber,
            Some(other) => {
                return Err(format!(
                    "FLUX_REALTIME_RLS_CHECK must be grouped or per-subscriber, got {other:?}"
                ))
            }
        };
        Ok(Config {
            listen: var("FLUX_REALTIME_LISTEN").unwrap_or_else(|| "127.0.0.1:54325".into()),
            db_url: required("FLUX_DB_URL")?,
            secret: secret.into_bytes(),
            publication: var("FLUX_REALTIME_PUBLICATION")
                .unwrap_or_else(|| "supabase_realtime".into()),
            rls_check,
            pool_size: number("FLUX_REALTIME_POOL_SIZE", 4)?,
            send_queue_bytes: number("FLUX_REALTIME_SEND_QUEUE_MB", 8)? << 20,
            slot: var("FLUX_REALTIME_SLOT").unwrap_or_else(|| "flux_realtime".into()),
            max_transaction_changes: number("FLUX_REALTIME_MAX_TRANSACTION_CHANGES", 100_000)?,
            limits: Limits {
                channels: number("FLUX_REALTIME_MAX_CHANNELS", 100)?,
                bindings: number("FLUX_REALTIME_MAX_BINDINGS", 100)?,
                joins_per_second: number("FLUX_REALTIME_JOINS_PER_SECOND", 10)?,
                client_connections: number("FLUX_REALTIME_CLIENT_CONNECTIONS", 100)?,
                connections: number("FLUX_REALTIME_MAX_CONNECTIONS", 10_000)?,
                messages_per_second: number("FLUX_REALTIME_MESSAGES_PER_SECOND", 100)?,
                payload_bytes: number("FLUX_REALTIME_MAX_PAYLOAD_KB", 256)? << 10,
                presence_calls: number("FLUX_REALTIME_PRESENCE_CALLS", 5)?,
                events_per_second: number("FLUX_REALTIME_EVENTS_PER_SECOND", 1_000_000)?,
                role_events_per_second: limits::parse_role_rates(
                    &var("FLUX_REALTIME_ROLE_EVENTS_PER_SECOND")
                        .unwrap_or_else(|| "anon=200000".into()),
                )
                .map_err(|e| format!("FLUX_REALTIME_ROLE_EVENTS_PER_SECOND: {e}"))?,
            },
        })
    }
}

/// Connections for the checks of joins and REST broadcasts.
const CHECK_POOL_SIZE: usize = 2;

pub struct State {
    pub config: Config,
    pub hub: Hub,
    /// Broadcast and Presence members of every topic.
    pub rooms: Rooms,
    /// Open connections per client address and in all.
    pub connections: Arc<Connections>,
    /// Ceilings on the events sent, in all and per role.
    pub event_rates: EventRates,
    pub pool: Pool,
    /// The checks of joins, token refreshes and REST broadcasts (private channel policies,
    /// filters) have connections of their own: they never take the dispatcher's.
    pub check_pool: Pool,
    catalog: RwLock<Arc<Catalog>>,
    /// When a join last had the catalog reloaded.
    join_refresh: tokio::sync::Mutex<Option<Instant>>,
    access: Mutex<HashMap<(String, u32), Arc<Access>>>,
    /// The change feed is streaming from its slot.
    pub feed_up: AtomicBool,
    next_binding: AtomicU32,
    next_conn: AtomicU64,
    /// Lines about what clients do (joins, refusals, malformed messages) are throttled.
    pub client_log: flux_log::Throttle,
}

impl State {
    pub fn new(config: Config) -> State {
        State {
            pool: Pool::new(config.db_url.clone(), config.pool_size),
            check_pool: Pool::new(config.db_url.clone(), CHECK_POOL_SIZE),
            rooms: Rooms::default(),
            event_rates: EventRates::new(
                config.limits.events_per_second,
                &config.limits.role_events_per_second,
            ),
            connections: Connections::new(
                config.limits.client_connections,
                config.limits.connections,
            ),
            config,
            hub: Hub::default(),
            catalog: RwLock::default(),
            join_refresh: tokio::sync::Mutex::new(None),
            client_log: flux_log::Throttle::default(),
            access: Mutex::default(),
            feed_up: AtomicBool::new(false),
            next_binding: AtomicU32::new(1),
            next_conn: AtomicU64::new(1),
        }
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Installs a freshly loaded catalog; privileges are re-read on next use, so GRANTs and
    /// REVOKEs take effect within one refresh.
    pub fn set_catalog(&self, catalog: Catalog) {
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
        self.access
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Reloads the catalog through the pool, for a join naming a table or column newer than
    /// the last refresh. Concurrent requests share one reload, and reloads are spaced by
    /// [`MIN_JOIN_REFRESH_GAP`] so failing joins cannot hammer the database.
    pub async fn refresh_catalog(&self) -> Result<Arc<Catalog>, DbError> {
        let asked = Instant::now();
        let mut last = self.join_refresh.lock().await;
        if last.is_some_and(|t| t >= asked || t.elapsed() < MIN_JOIN_REFRESH_GAP) {
            return Ok(self.catalog());
        }
        let conn = self.pool.get().await?;
        let catalog = db::load_catalog(&conn.client, &self.config.publication).await?;
        drop(conn);
        self.set_catalog(catalog);
        *last = Some(Instant::now());
        Ok(self.catalog())
    }

    /// The role's rights on the table, from the cache or the database.
    pub async fn access(&self, role: &str, table: &Table) -> Result<Arc<Access>, DbError> {
        let key = (role.to_owned(), table.oid);
        if let Some(a) = self
            .access
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(a.clone());
        }
        let conn = self.pool.get().await?;
        let access = Arc::new(db::load_access(&conn.client, role, table).await?);
        self.access
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, access.clone());
        Ok(access)
    }

    /// Binding ids are unique for the life of the process (and never 0: realtime-js treats a
    /// falsy id as no id).
    pub fn next_binding_id(&self) -> u32 {
        self.next_binding.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether an event for a subscriber of `role` may go out under the event ceilings. When
    /// it may not, the channel is told (at most once a second per connection) that events
    /// were dropped.
    pub fn admit_event(
        &self,
        role: &str,
        conn: &ConnHandle,
        topic: &str,
        join_ref: Option<&str>,
    ) -> bool {
        if self.event_rates.take(role, Instant::now()) {
            return true;
        }
        if conn.notice_drop(time::now_micros()) {
            let message =
                format!("Too many events per second for role {role}: some were not delivered");
            conn.push_system(join_ref, topic, false, "system", &message);
        }
        false
    }

    /// Relays a broadcast of the REST endpoint or the database to the channel `topic` (without
    /// `realtime:`), in the shape Supabase gives them: `{type, event, payload, meta: {id}}`.
    pub fn broadcast_from_server(
        &self,
        topic: &str,
        event: &str,
        payload: &str,
        id: Option<&str>,
        private: bool,
    ) {
        let mut message = format!(
            "{{\"type\":\"broadcast\",\"event\":{},\"payload\":{payload}",
            serde_json::Value::from(event)
        );
        if let Some(id) = id {
            message.push_str(&format!(
                ",\"meta\":{{\"id\":{}}}",
                serde_json::Value::from(id)
            ));
        }
        message.push('}');
        let topic = format!("realtime:{topic}");
        let admit = |m: &Member| self.admit_event(&m.role, &m.conn, &topic, m.join_ref.as_deref());
        self.rooms
            .broadcast(&topic, None, private, &RoomMessage::Text(&message), &admit);
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}
