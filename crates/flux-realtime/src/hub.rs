//! Who is subscribed: one entry per joined channel, shared between the WebSocket sessions
//! (which join and leave) and the dispatcher (which reads a snapshot per batch).

use crate::auth::Auth;
use crate::change::Change;
use crate::filter::{eq_key_of, Compiled, EqKey, Kind};
use crate::join::Binding;
use crate::protocol::{self, Vsn};
use crate::time;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, Notify};

/// What the writer of a connection sends.
pub enum Out {
    Text(String),
    /// A vsn 2.0.0 binary broadcast.
    Binary(Vec<u8>),
    Close(u16, &'static str),
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Text(t) => t.len(),
            Out::Binary(b) => b.len(),
            Out::Close(..) => 0,
        }
    }
}

/// A client more than its queue limit behind for this long is disconnected...
const LAG_GRACE_MICROS: i64 = 5_000_000;
/// ...and at once when this many times over it. A big transaction arrives as one burst that
/// even a fast client takes a moment to drain, so being over the limit briefly is fine.
const HARD_LIMIT_FACTOR: usize = 16;

/// The sending side of one WebSocket connection.
pub struct ConnHandle {
    pub id: u64,
    pub vsn: Vsn,
    pub peer: String,
    tx: mpsc::UnboundedSender<Out>,
    /// Bytes queued and not yet handed to the socket, and how many may be.
    queued: AtomicUsize,
    limit: usize,
    /// Since when (µs since the epoch) the queue has been over the limit; 0 when it is not.
    over_since: AtomicI64,
    kicked: AtomicBool,
    kick: Notify,
    /// When (µs since the epoch) the client was last told that events were dropped for it.
    dropped_notice: AtomicI64,
}

impl ConnHandle {
    pub fn new(
        id: u64,
        vsn: Vsn,
        peer: String,
        limit: usize,
    ) -> (Arc<ConnHandle>, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = ConnHandle {
            id,
            vsn,
            peer,
            tx,
            queued: AtomicUsize::new(0),
            limit,
            over_since: AtomicI64::new(0),
            kicked: AtomicBool::new(false),
            kick: Notify::new(),
            dropped_notice: AtomicI64::new(0),
        };
        (Arc::new(handle), rx)
    }

    /// Queues a frame without waiting: a client that cannot keep up is disconnected (see
    /// [`LAG_GRACE_MICROS`]) rather than allowed to hold up everyone else's changes or the
    /// server's memory.
    pub fn push(&self, frame: String) {
        self.enqueue(Out::Text(frame));
    }

    /// A `system` message on a joined channel (`topic` is `realtime:<channel>`).
    pub fn push_system(
        &self,
        join_ref: Option<&str>,
        topic: &str,
        ok: bool,
        extension: &str,
        message: &str,
    ) {
        let channel = topic.strip_prefix("realtime:").unwrap_or(topic);
        self.push(protocol::encode(
            self.vsn,
            &protocol::Outgoing {
                join_ref,
                msg_ref: None,
                topic,
                event: "system",
                payload: &protocol::system_payload(ok, extension, channel, message),
            },
        ));
    }

    pub fn push_binary(&self, frame: Vec<u8>) {
        self.enqueue(Out::Binary(frame));
    }

    fn enqueue(&self, frame: Out) {
        let len = frame.len();
        let queued = self.queued.fetch_add(len, Ordering::SeqCst) + len;
        if queued > self.limit {
            let now = time::now_micros();
            let _ = self
                .over_since
                .compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
            if queued > self.limit.saturating_mul(HARD_LIMIT_FACTOR) || self.lagging(now) {
                self.queued.fetch_sub(len, Ordering::SeqCst);
                self.kick("send queue full: client too slow");
                return;
            }
        }
        if self.tx.send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::SeqCst);
        }
    }

    /// The writer handed `len` queued bytes to the socket.
    pub fn sent(&self, len: usize) {
        if self.queued.fetch_sub(len, Ordering::SeqCst) - len <= self.limit {
            self.over_since.store(0, Ordering::SeqCst);
        }
    }

    /// Over the queue limit for longer than the grace period.
    pub fn lagging(&self, now: i64) -> bool {
        let since = self.over_since.load(Ordering::SeqCst);
        since != 0 && now - since > LAG_GRACE_MICROS
    }

    /// Asks the writer to close the socket after what is queued.
    pub fn close(&self, code: u16, reason: &'static str) {
        // Fails only when the writer is gone, and then so is the socket.
        let _ = self.tx.send(Out::Close(code, reason));
    }

    pub fn kick(&self, why: &str) {
        if !self.kicked.swap(true, Ordering::SeqCst) {
            log!("conn {} ({}): disconnecting: {why}", self.id, self.peer);
            self.kick.notify_one();
        }
    }

    /// Whether to tell the client now that events were dropped: at most once a second.
    pub fn notice_drop(&self, now: i64) -> bool {
        let last = self.dropped_notice.load(Ordering::Relaxed);
        now - last >= 1_000_000
            && self
                .dropped_notice
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::SeqCst)
    }

    /// Resolves once [`ConnHandle::kick`] has been called.
    pub async fn kicked(&self) {
        if !self.is_kicked() {
            self.kick.notified().await;
        }
    }
}

/// A joined channel with `postgres_changes` bindings.
pub struct ChannelSub {
    pub conn: Arc<ConnHandle>,
    pub topic: String,
    pub join_ref: Option<String>,
    pub auth: Arc<Auth>,
    pub bindings: Vec<Binding>,
}

/// The subscribed channels as the dispatcher reads them, with an index made once per join or
/// leave rather than per batch: per table, who may want its changes.
#[derive(Default)]
pub struct Snapshot {
    /// Ordered by connection and topic.
    pub subs: Vec<Arc<ChannelSub>>,
    pub tables: HashMap<u32, TableSubs>,
}

/// An equality filter's column, its kind and the keys of the values it matches.
type EqualityKeys = (usize, Kind, Vec<EqKey>);

/// The channels with bindings on one table, as indexes into [`Snapshot::subs`].
#[derive(Default)]
pub struct TableSubs {
    /// Channels that may want any change of the table.
    scan: Vec<usize>,
    /// Channels whose every binding on the table filters a column for equality (`eq`, `in`),
    /// by that column (and its kind) and value: a change concerns only those of its values.
    by_value: Vec<(usize, Kind, HashMap<EqKey, Vec<usize>>)>,
    /// The roles of these channels.
    pub roles: BTreeSet<String>,
}

impl TableSubs {
    /// The channels that may want `change` (a superset: [`Change::matching`] decides), in
    /// snapshot order.
    pub fn candidates(&self, change: &Change) -> Vec<usize> {
        let mut found = self.scan.clone();
        for (column, kind, values) in &self.by_value {
            let key = change
                .filter_value(*column)
                .and_then(|raw| eq_key_of(*kind, raw));
            if let Some(subs) = key.and_then(|k| values.get(&k)) {
                found.extend_from_slice(subs);
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

impl Snapshot {
    fn new(subs: Vec<Arc<ChannelSub>>) -> Snapshot {
        let mut tables: HashMap<u32, TableSubs> = HashMap::new();
        for (i, sub) in subs.iter().enumerate() {
            // table → the equality keys of each of the channel's bindings on it; `None` once
            // one binding on it is not an equality filter.
            let mut keyed: BTreeMap<u32, Option<Vec<EqualityKeys>>> = BTreeMap::new();
            for target in sub.bindings.iter().flat_map(|b| &b.targets) {
                let keys = target.filter.as_ref().and_then(Compiled::eq_keys);
                let entry = keyed
                    .entry(target.table)
                    .or_insert_with(|| Some(Vec::new()));
                match (entry.as_mut(), keys) {
                    (Some(all), Some(keys)) => all.push(keys),
                    _ => *entry = None,
                }
            }
            for (table, keys) in keyed {
                let t = tables.entry(table).or_default();
                t.roles.insert(sub.auth.role.clone());
                let Some(keys) = keys else {
                    t.scan.push(i);
                    continue;
                };
                for (column, kind, values) in keys {
                    let at = match t.by_value.iter().position(|(c, ..)| *c == column) {
                        Some(at) => at,
                        None => {
                            t.by_value.push((column, kind, HashMap::new()));
                            t.by_value.len() - 1
                        }
                    };
                    for value in values {
                        t.by_value[at].2.entry(value).or_default().push(i);
                    }
                }
            }
        }
        Snapshot { subs, tables }
    }
}

#[derive(Default)]
pub struct Hub {
    subs: Mutex<BTreeMap<(u64, String), Arc<ChannelSub>>>,
    snapshot: RwLock<Arc<Snapshot>>,
    pub connections: AtomicUsize,
}

impl Hub {
    fn edit(&self, f: impl FnOnce(&mut BTreeMap<(u64, String), Arc<ChannelSub>>)) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut subs);
        let snapshot = Arc::new(Snapshot::new(subs.values().cloned().collect()));
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Adds or replaces the channel (connection, topic).
    pub fn upsert(&self, sub: Arc<ChannelSub>) {
        self.edit(|subs| {
            subs.insert((sub.conn.id, sub.topic.clone()), sub);
        });
    }

    pub fn remove(&self, conn: u64, topic: &str) {
        self.edit(|subs| {
            subs.remove(&(conn, topic.to_owned()));
        });
    }

    pub fn remove_connection(&self, conn: u64) {
        self.edit(|subs| subs.retain(|(c, _), _| *c != conn));
    }

    /// Every subscribed channel, ordered by connection and topic, with its index.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> String {
        "x".repeat(len)
    }

    #[test]
    fn a_burst_over_the_limit_is_tolerated_a_flood_is_not() {
        let (conn, mut rx) = ConnHandle::new(1, Vsn::V2, "test".into(), 100);
        conn.push(frame(80));
        conn.push(frame(80)); // over the limit, within the grace period
        assert!(!conn.is_kicked());
        assert!(conn.over_since.load(Ordering::SeqCst) != 0);
        // The writer catches up: no longer over.
        for _ in 0..2 {
            assert!(matches!(rx.try_recv(), Ok(Out::Text(_))));
            conn.sent(80);
        }
        assert_eq!(conn.over_since.load(Ordering::SeqCst), 0);
        assert!(!conn.lagging(time::now_micros() + 2 * LAG_GRACE_MICROS));
        // Far beyond the limit: dropped at once, and the frame is not queued.
        conn.push(frame(100 * HARD_LIMIT_FACTOR + 1));
        assert!(conn.is_kicked());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn lagging_past_the_grace_period_is_dropped() {
        let (conn, _rx) = ConnHandle::new(1, Vsn::V1, "test".into(), 100);
        conn.push(frame(150));
        assert!(!conn.lagging(time::now_micros()));
        assert!(conn.lagging(time::now_micros() + LAG_GRACE_MICROS + 1));
        conn.over_since
            .store(time::now_micros() - LAG_GRACE_MICROS - 1, Ordering::SeqCst);
        conn.push(frame(1));
        assert!(conn.is_kicked());
    }

    #[test]
    fn snapshots_follow_joins_and_leaves() {
        let hub = Hub::default();
        let (a, _ra) = ConnHandle::new(1, Vsn::V1, "a".into(), 100);
        let (b, _rb) = ConnHandle::new(2, Vsn::V2, "b".into(), 100);
        let sub = |conn: &Arc<ConnHandle>, topic: &str| {
            Arc::new(ChannelSub {
                conn: conn.clone(),
                topic: topic.into(),
                join_ref: None,
                auth: Arc::new(Auth {
                    role: "anon".into(),
                    claims: "{}".into(),
                    exp: 0,
                }),
                bindings: Vec::new(),
            })
        };
        hub.upsert(sub(&b, "realtime:x"));
        hub.upsert(sub(&a, "realtime:y"));
        hub.upsert(sub(&a, "realtime:x"));
        hub.upsert(sub(&a, "realtime:x")); // a rejoin replaces
        let topics = |hub: &Hub| {
            hub.snapshot()
                .subs
                .iter()
                .map(|s| (s.conn.id, s.topic.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            topics(&hub),
            [
                (1, "realtime:x".into()),
                (1, "realtime:y".into()),
                (2, "realtime:x".into())
            ]
        );
        hub.remove(1, "realtime:y");
        hub.remove_connection(2);
        assert_eq!(topics(&hub), [(1, "realtime:x".to_owned())]);
    }

    #[test]
    fn the_index_names_equality_subscribers_by_value_and_every_other_one() {
        use crate::catalog::fixtures;
        use crate::change::Row;
        use crate::filter::FilterSpec;
        use crate::join::{EventKind, Target};
        use crate::wal::Action;
        let table = fixtures::bess();
        let (conn, _rx) = ConnHandle::new(1, Vsn::V2, "c".into(), 1 << 20);
        let sub = |topic: &str, filters: &[Option<&str>]| {
            Arc::new(ChannelSub {
                conn: conn.clone(),
                topic: topic.into(),
                join_ref: None,
                auth: Arc::new(Auth {
                    role: "anon".into(),
                    claims: "{}".into(),
                    exp: 0,
                }),
                bindings: filters
                    .iter()
                    .zip(1..)
                    .map(|(f, id)| Binding {
                        id,
                        event: EventKind::All,
                        targets: vec![Target {
                            table: table.oid,
                            filter: f.map(|f| {
                                FilterSpec::parse(f)
                                    .unwrap()
                                    .compile(&table.columns)
                                    .unwrap()
                            }),
                        }],
                    })
                    .collect(),
            })
        };
        const A: &str = "123e4567-e89b-12d3-a456-426614174000";
        const B: &str = "00000000-0000-0000-0000-00000000000b";
        let hub = Hub::default();
        hub.upsert(sub(
            "0-eq-a",
            &[Some(&format!("device_id=eq.{}", A.to_uppercase()))],
        ));
        hub.upsert(sub("1-in-ab", &[Some(&format!("device_id=in.({B},{A})"))]));
        hub.upsert(sub("2-eq-b", &[Some(&format!("device_id=eq.{B}"))]));
        hub.upsert(sub("3-gt", &[Some("soe=gt.5")]));
        hub.upsert(sub(
            "4-eq-and-all",
            &[Some(&format!("device_id=eq.{B}")), None],
        ));
        hub.upsert(sub("5-blocks", &[Some("available_inverter_blocks=eq.3")]));
        let change = |device: &str| Change {
            action: Action::Insert,
            table: Arc::new(fixtures::bess()),
            commit_timestamp: String::new(),
            new: Some(Row(vec![
                Some(format!("\"{A}\"")),
                Some("\"2024-01-01T00:00:00+00:00\"".into()),
                Some(format!("\"{device}\"")),
                Some("1.5".into()),
                Some("3".into()),
            ])),
            old: None,
        };
        let snapshot = hub.snapshot();
        let index = &snapshot.tables[&table.oid];
        let topics = |c: &Change| -> Vec<String> {
            index
                .candidates(c)
                .into_iter()
                .map(|i| snapshot.subs[i].topic.clone())
                .collect()
        };
        assert_eq!(
            topics(&change(A)),
            ["0-eq-a", "1-in-ab", "3-gt", "4-eq-and-all", "5-blocks"]
        );
        assert_eq!(
            topics(&change(B)),
            ["1-in-ab", "2-eq-b", "3-gt", "4-eq-and-all", "5-blocks"]
        );
    }
}
