//! One WebSocket connection: the Phoenix channel protocol on the way in, a writer task
//! draining the connection's send queue on the way out.

use crate::auth::{self, Auth};
use crate::authz::{self, Rights};
use crate::dispatch;
use crate::frames;
use crate::hub::{ChannelSub, ConnHandle, Out};
use crate::join::{self, JoinError};
use crate::limits::Bucket;
use crate::protocol::{self, Incoming, Outgoing, Vsn};
use crate::rooms::{Member, Message as Broadcast};
use crate::state::State;
use crate::time;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// supabase-js sends a heartbeat every 25 s (30 s in some versions); a connection silent for
/// much longer is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The window of the presence call limit (Supabase's default: 5 calls per 30 s).
const PRESENCE_WINDOW_SECONDS: f64 = 30.0;
/// Largest presence meta (JSON text).
const MAX_PRESENCE_META: usize = 8 << 10;
/// How often token expiry and idleness are checked.
const TICK: Duration = Duration::from_secs(1);

struct Joined {
    join_ref: Option<String>,
    /// Present when the channel is subscribed to changes.
    sub: Option<Arc<ChannelSub>>,
    auth: Arc<Auth>,
    /// `config.broadcast.ack`: broadcasts are answered.
    ack: bool,
    /// `config.private`.
    private: bool,
    /// What the policies let the role do on a private channel; everything on a public one.
    rights: Rights,
    presence_calls: Bucket,
}

struct Session {
    state: Arc<State>,
    conn: Arc<ConnHandle>,
    /// The connection's api key, used by joins that bring no access token.
    apikey: Arc<Auth>,
    channels: HashMap<String, Joined>,
    joins: Bucket,
    messages: Bucket,
}

pub async fn run(
    ws: Ws,
    state: Arc<State>,
    conn: Arc<ConnHandle>,
    rx: mpsc::UnboundedReceiver<Out>,
    apikey: Auth,
    mut shutdown: watch::Receiver<bool>,
) {
    state.hub.connections.fetch_add(1, Ordering::Relaxed);
    log_throttled!(
        state.client_log,
        "connect",
        "conn {} ({}): connected, vsn {:?}, role {}",
        conn.id,
        conn.peer,
        conn.vsn,
        apikey.role
    );
    let (sink, mut stream) = ws.split();
    let mut writer = tokio::spawn(write(sink, rx, conn.clone()));
    let limits = &state.config.limits;
    let per_second = |n: usize| Bucket::new(n as f64, 2.0 * n as f64, Instant::now());
    let mut session = Session {
        joins: per_second(limits.joins_per_second),
        messages: per_second(limits.messages_per_second),
        state: state.clone(),
        conn: conn.clone(),
        apikey: Arc::new(apikey),
        channels: HashMap::new(),
    };
    let mut ticker = tokio::time::interval(TICK);
    let mut last_seen = Instant::now();
    // A finished JoinHandle must not be polled again (tokio panics).
    let mut writer_finished = false;
    let why = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    last_seen = Instant::now();
                    session.handle(&text).await;
                }
                Some(Ok(Message::Binary(frame))) => {
                    last_seen = Instant::now();
                    session.handle_binary(&frame);
                }
                Some(Ok(Message::Close(_))) | None => {
                    // Answer the close, which also ends the writer at once.
                    conn.close(1000, "");
                    break "closed by client";
                }
                Some(Ok(_)) => last_seen = Instant::now(),
                Some(Err(_)) => break "connection error",
            },
            _ = conn.kicked() => break "disconnected by server",
            _ = ticker.tick() => {
                // A stalled client gets no new frames to trip over its limit with.
                if conn.lagging(time::now_micros()) {
                    conn.kick("send queue full: client too slow");
                    break "disconnected by server";
                }
                session.expire_tokens();
                if last_seen.elapsed() > IDLE_TIMEOUT {
                    conn.close(1000, "idle");
                    break "idle timeout";
                }
            }
            _ = shutdown.changed() => {
                conn.close(1001, "server shutting down");
                break "server shutting down";
            }
            _ = &mut writer => {
                writer_finished = true;
                break "write failed";
            }
        }
    };
    state.hub.remove_connection(conn.id);
    for (topic, joined) in &session.channels {
        state.rooms.leave(topic, joined.private, conn.id);
    }
    state.hub.connections.fetch_sub(1, Ordering::Relaxed);
    // Let the writer flush what is queued (and the close frame), unless the client is the
    // reason it cannot.
    if !writer_finished
        && (conn.is_kicked()
            || tokio::time::timeout(Duration::from_secs(2), &mut writer)
                .await
                .is_err())
    {
        writer.abort();
    }
    log_throttled!(
        state.client_log,
        "disconnect",
        "conn {} ({}): {why}",
        conn.id,
        conn.peer
    );
}

async fn write(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    conn: Arc<ConnHandle>,
) {
    while let Some(out) = rx.recv().await {
        let (message, len) = match out {
            Out::Text(frame) => {
                let len = frame.len();
                (Message::Text(frame.into()), len)
            }
            Out::Binary(frame) => {
                let len = frame.len();
                (Message::Binary(frame.into()), len)
            }
            Out::Close(code, reason) => {
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    })))
                    .await;
                return;
            }
        };
        // Write without flushing while more is queued: one syscall for a burst.
        let fed = sink.feed(message).await;
        conn.sent(len);
        let result = if fed.is_ok() && rx.is_empty() {
            sink.flush().await
        } else {
            fed
        };
        if result.is_err() {
            return;
        }
    }
}

impl Session {
    fn send(
        &self,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: &str,
    ) {
        self.conn.push(protocol::encode(
            self.conn.vsn,
            &Outgoing {
                join_ref,
                msg_ref,
                topic,
                event,
                payload,
            },
        ));
    }

    fn reply(&self, msg: &Incoming, ok: bool, response: &str) {
        self.send(
            msg.join_ref.as_deref(),
            msg.msg_ref.as_deref(),
            &msg.topic,
            "phx_reply",
            &protocol::reply_payload(ok, response),
        );
    }

    async fn handle(&mut self, text: &str) {
        let msg = match protocol::decode(self.conn.vsn, text) {
            Ok(m) => m,
            Err(e) => {
                log_throttled!(
                    self.state.client_log,
                    "malformed",
                    "conn {}: ignoring a malformed message: {}",
                    self.conn.id,
                    flux_log::cap(&e.to_string(), 200)
                );
                return;
            }
        };
        match (msg.topic.as_str(), msg.event.as_str()) {
            ("phoenix", "heartbeat") => self.reply(&msg, true, "{}"),
            (_, "phx_join") => self.join(&msg).await,
            (topic, _) if !self.channels.contains_key(topic) => {
                self.reply(&msg, false, &protocol::reason("unmatched topic"))
            }
            (_, "phx_leave") => {
                self.reply(&msg, true, "{}");
                self.close_channel(&msg.topic, None);
            }
            (_, "access_token") => self.access_token(&msg).await,
            (_, "broadcast") => self.broadcast(&msg),
            (_, "presence") => self.presence(&msg),
            _ => {}
        }
    }

    async fn join(&mut self, msg: &Incoming) {
        if !msg.topic.starts_with("realtime:") {
            return self.reply(msg, false, &protocol::reason("unmatched topic"));
        }
        let limits = &self.state.config.limits;
        let refused = if !self.joins.take(Instant::now()) {
            Some(format!(
                "TooManyJoins: at most {} joins per second per connection",
                limits.joins_per_second
            ))
        } else if !self.channels.contains_key(&msg.topic) && self.channels.len() >= limits.channels
        {
            Some(format!(
                "TooManyChannels: at most {} channels per connection",
                limits.channels
            ))
        } else {
            None
        };
        if let Some(reason) = refused {
            log_throttled!(
                self.state.client_log,
                "refused join",
                "conn {}: refused join of {}: {reason}",
                self.conn.id,
                flux_log::cap(&msg.topic, 120)
            );
            return self.reply(msg, false, &protocol::reason(&reason));
        }
        if self.channels.contains_key(&msg.topic) {
            // Phoenix semantics: a second join of a topic replaces the first.
            self.close_channel(&msg.topic, None);
        }
        match self.subscribe(msg).await {
            Ok(summary) => log_throttled!(
                self.state.client_log,
                "join",
                "conn {}: joined {} ({})",
                self.conn.id,
                flux_log::cap(&msg.topic, 120),
                flux_log::cap(&summary, 200)
            ),
            Err(JoinError(reason)) => {
                log_throttled!(
                    self.state.client_log,
                    "refused join",
                    "conn {}: refused join of {}: {}",
                    self.conn.id,
                    flux_log::cap(&msg.topic, 120),
                    flux_log::cap(&reason, 200)
                );
                self.reply(msg, false, &protocol::reason(&reason));
            }
        }
    }

    async fn subscribe(&mut self, msg: &Incoming) -> Result<String, JoinError> {
        let request = join::parse(&msg.payload)?;
        let auth = match &request.access_token {
            Some(token) => Arc::new(
                auth::verify(
                    token,
                    &self.state.config.secret,
                    time::now_micros() / 1_000_000,
                )
                .map_err(|e| JoinError(format!("InvalidJWTToken: {e}")))?,
            ),
            None => self.apikey.clone(),
        };
        let now = time::now_micros() / 1_000_000;
        if auth.exp <= now {
            // The connection's api key has expired: it opens no more channels.
            return Err(JoinError(format!(
                "InvalidJWTToken: Token has expired {} seconds ago",
                now - auth.exp
            )));
        }
        let rights = if request.private {
            authz::channel_rights(&self.state, &auth, &msg.topic)
                .await
                .map_err(JoinError)?
        } else {
            Rights::ALL
        };
        let publication = &self.state.config.publication;
        let mut catalog = self.state.catalog();
        let mut resolved = join::resolve(&request.postgres_changes, &catalog, publication, || {
            self.state.next_binding_id()
        });
        if matches!(&resolved, Err(JoinError(r)) if r.starts_with("UnknownTable") || r.starts_with("InvalidFilter"))
        {
            // The catalog may predate the table or column: read it again once.
            if let Ok(fresh) = self.state.refresh_catalog().await {
                catalog = fresh;
                resolved = join::resolve(&request.postgres_changes, &catalog, publication, || {
                    self.state.next_binding_id()
                });
            }
        }
        let (bindings, echo) = resolved?;
        if let (Some(wait), false) = (request.wait_for_changes, bindings.is_empty()) {
            // `postgres_changes_options.wait`: reply once changes can flow, or refuse.
            let deadline = Instant::now() + wait;
            while !self.state.feed_up.load(Ordering::SeqCst) {
                if Instant::now() >= deadline {
                    return Err(JoinError(format!(
                        "PostgresChangesSubscribeTimeout: the change feed did not stream within {} ms",
                        wait.as_millis()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let count = bindings.len();
        let limit = self.state.config.limits.bindings;
        let held: usize = self
            .channels
            .values()
            .filter_map(|j| j.sub.as_ref())
            .map(|s| s.bindings.len())
            .sum();
        if held + count > limit {
            return Err(JoinError(format!(
                "TooManyBindings: at most {limit} postgres_changes bindings per connection ({held} held)"
            )));
        }
        for binding in &bindings {
            for target in &binding.targets {
                let (Some(filter), Some(table)) = (
                    &target.filter,
                    catalog.tables.iter().find(|t| t.oid == target.table),
                ) else {
                    continue;
                };
                dispatch::check_filter(&self.state, table, filter)
                    .await
                    .map_err(|e| {
                        JoinError(format!(
                            "InvalidFilter: {e} (filter on {}.{})",
                            table.schema, table.name
                        ))
                    })?;
            }
        }
        // The reply goes out before the channel is registered, so no change can reach the
        // client ahead of the ids it needs to route it.
        self.reply(msg, true, &format!("{{\"postgres_changes\":{echo}}}"));
        let sub = (!bindings.is_empty()).then(|| {
            Arc::new(ChannelSub {
                conn: self.conn.clone(),
                topic: msg.topic.clone(),
                join_ref: msg.join_ref.clone(),
                auth: auth.clone(),
                bindings,
            })
        });
        if let Some(sub) = &sub {
            self.state.hub.upsert(sub.clone());
            self.conn.push_system(
                msg.join_ref.as_deref(),
                &msg.topic,
                true,
                "postgres_changes",
                "Subscribed to PostgreSQL",
            );
        }
        let presence_key = request
            .presence_key
            .clone()
            .unwrap_or_else(|| format!("{:x}-{}", self.conn.id, self.state.next_binding_id()));
        let presence = self.state.rooms.join(
            &msg.topic,
            Member::new(
                self.conn.clone(),
                msg.join_ref.clone(),
                auth.role.clone(),
                (request.private, rights),
                request.broadcast_self,
                presence_key,
            ),
        );
        if request.presence_enabled && rights.presence_read {
            // supabase-js holds back presence diffs until the state of its join arrives.
            self.send(
                msg.join_ref.as_deref(),
                None,
                &msg.topic,
                "presence_state",
                &presence,
            );
        }
        let summary = format!("role {}, {count} postgres_changes binding(s)", auth.role);
        let calls = self.state.config.limits.presence_calls as f64;
        self.channels.insert(
            msg.topic.clone(),
            Joined {
                join_ref: msg.join_ref.clone(),
                sub,
                auth,
                ack: request.broadcast_ack,
                private: request.private,
                rights,
                presence_calls: Bucket::new(calls / PRESENCE_WINDOW_SECONDS, calls, Instant::now()),
            },
        );
        Ok(summary)
    }

    async fn access_token(&mut self, msg: &Incoming) {
        let token = msg.payload.get("access_token").and_then(|t| t.as_str());
        let verified = token
            .ok_or_else(|| "access_token missing".to_owned())
            .and_then(|t| {
                auth::verify(t, &self.state.config.secret, time::now_micros() / 1_000_000)
            });
        match verified {
            Err(e) => {
                log_throttled!(
                    self.state.client_log,
                    "access token",
                    "conn {}: invalid access token on {}: {}",
                    self.conn.id,
                    flux_log::cap(&msg.topic, 120),
                    flux_log::cap(&e, 200)
                );
                self.close_channel(
                    &msg.topic,
                    Some(&format!(
                        "Received an invalid access token from client: {e}"
                    )),
                );
            }
            Ok(auth) => {
                let Some(joined) = self.channels.get(&msg.topic) else {
                    return;
                };
                if *joined.auth == auth {
                    return;
                }
                // New claims may change what a private channel's policies allow. A check costs
                // a transaction: it is charged to the connection's join rate.
                let rights = if !joined.private || joined.auth.same_identity(&auth) {
                    joined.rights
                } else if !self.joins.take(Instant::now()) {
                    return self.close_channel(
                        &msg.topic,
                        Some("TooManyJoins: too many access token changes on private channels"),
                    );
                } else {
                    match authz::channel_rights(&self.state, &auth, &msg.topic).await {
                        Ok(rights) => rights,
                        Err(refusal) => return self.close_channel(&msg.topic, Some(&refusal)),
                    }
                };
                let Some(joined) = self.channels.get_mut(&msg.topic) else {
                    return;
                };
                joined.rights = rights;
                self.state
                    .rooms
                    .set_rights(&msg.topic, joined.private, self.conn.id, rights);
                joined.auth = Arc::new(auth);
                if let Some(old) = &joined.sub {
                    let sub = Arc::new(ChannelSub {
                        conn: old.conn.clone(),
                        topic: old.topic.clone(),
                        join_ref: old.join_ref.clone(),
                        auth: joined.auth.clone(),
                        bindings: old.bindings.clone(),
                    });
                    joined.sub = Some(sub.clone());
                    self.state.hub.upsert(sub);
                }
            }
        }
    }

    /// Ends a channel: an optional `system` error first, then `phx_close`.
    fn close_channel(&mut self, topic: &str, error: Option<&str>) {
        let Some(joined) = self.channels.remove(topic) else {
            return;
        };
        self.state.hub.remove(self.conn.id, topic);
        self.state.rooms.leave(topic, joined.private, self.conn.id);
        let join_ref = joined.join_ref.as_deref();
        if let Some(message) = error {
            self.conn
                .push_system(join_ref, topic, false, "system", message);
        }
        self.send(join_ref, join_ref, topic, "phx_close", "{}");
    }

    /// A broadcast push (text, either vsn): relayed to the topic's other members.
    fn broadcast(&mut self, msg: &Incoming) {
        let payload = msg.payload.to_string();
        let event_ok = msg.payload.get("event").is_some_and(|e| e.is_string());
        if !event_ok {
            return self.reply(
                msg,
                false,
                &protocol::reason("broadcast needs a string event"),
            );
        }
        self.relay(
            &msg.topic,
            msg.join_ref.as_deref(),
            msg.msg_ref.as_deref(),
            payload.len(),
            &Broadcast::Text(&payload),
        );
    }

    /// A vsn 2.0.0 binary frame: a broadcast push (kind 3), the only kind clients send.
    fn handle_binary(&mut self, frame: &[u8]) {
        let decoded = match self.conn.vsn {
            Vsn::V1 => Err("binary frames are for vsn 2.0.0".to_owned()),
            Vsn::V2 => frames::decode_push(frame),
        };
        let push = match decoded {
            Ok(push) => push,
            Err(why) => {
                log_throttled!(
                    self.state.client_log,
                    "malformed",
                    "conn {}: ignoring a binary frame: {}",
                    self.conn.id,
                    flux_log::cap(&why, 200)
                );
                return;
            }
        };
        if !self.channels.contains_key(&push.topic) {
            let topic = push.topic.clone();
            return self.send(
                push.join_ref.as_deref(),
                push.msg_ref.as_deref(),
                &topic,
                "phx_reply",
                &protocol::reply_payload(false, &protocol::reason("unmatched topic")),
            );
        }
        self.relay(
            &push.topic,
            push.join_ref.as_deref(),
            push.msg_ref.as_deref(),
            push.payload.len(),
            &Broadcast::Binary {
                event: &push.event,
                encoding: push.encoding,
                payload: &push.payload,
            },
        );
    }

    /// Relays one broadcast of a joined channel, within the connection's limits; answers it
    /// when the channel asked for acknowledgements.
    fn relay(
        &mut self,
        topic: &str,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        size: usize,
        message: &Broadcast,
    ) {
        let limits = &self.state.config.limits;
        let Some(joined) = self.channels.get(topic) else {
            return;
        };
        let ack = joined.ack;
        let answer = |session: &Session, ok: bool, response: &str| {
            if ack {
                session.send(
                    join_ref,
                    msg_ref,
                    topic,
                    "phx_reply",
                    &protocol::reply_payload(ok, response),
                );
            }
        };
        if !self.messages.take(Instant::now()) {
            let message = format!(
                "Too many messages per second: at most {} per connection",
                limits.messages_per_second
            );
            return self.close_channel(topic, Some(&message));
        }
        if size > limits.payload_bytes {
            return answer(self, false, r#"{"error":"payload_size_exceeded"}"#);
        }
        if !joined.rights.broadcast_write {
            // Dropped, as Supabase drops it; a channel that asked for acks learns why.
            return answer(
                self,
                false,
                &protocol::reason("Unauthorized: the channel's policies do not let you send"),
            );
        }
        let private = joined.private;
        let state = &self.state;
        let admit = |m: &Member| state.admit_event(&m.role, &m.conn, topic, m.join_ref.as_deref());
        state
            .rooms
            .broadcast(topic, Some(self.conn.id), private, message, &admit);
        answer(self, true, "{}");
    }

    /// `track` / `untrack` of the channel's presence.
    fn presence(&mut self, msg: &Incoming) {
        let Some(joined) = self.channels.get_mut(&msg.topic) else {
            return;
        };
        if !joined.presence_calls.take(Instant::now()) {
            return self.close_channel(&msg.topic, Some("Client presence rate limit exceeded"));
        }
        let event = msg
            .payload
            .get("event")
            .and_then(|e| e.as_str())
            .map(str::to_ascii_lowercase);
        match event.as_deref() {
            Some("track") if !joined.rights.presence_write => self.reply(
                msg,
                false,
                &protocol::reason("Unauthorized: the channel's policies do not let you track"),
            ),
            Some("track") => {
                let meta = match msg.payload.get("payload") {
                    None | Some(serde_json::Value::Null) => serde_json::Map::new(),
                    Some(serde_json::Value::Object(m)) => m.clone(),
                    Some(_) => {
                        return self.reply(
                            msg,
                            false,
                            &protocol::reason("Presence track payload must be a map"),
                        )
                    }
                };
                if serde_json::Value::Object(meta.clone()).to_string().len() > MAX_PRESENCE_META {
                    return self.close_channel(&msg.topic, Some("Track message size exceeded"));
                }
                self.state
                    .rooms
                    .track(&msg.topic, joined.private, self.conn.id, meta);
                self.reply(msg, true, "{}");
            }
            Some("untrack") => {
                self.state
                    .rooms
                    .untrack(&msg.topic, joined.private, self.conn.id);
                self.reply(msg, true, "{}");
            }
            _ => self.reply(msg, false, &protocol::reason("UnknownPresenceEvent")),
        }
    }

    fn expire_tokens(&mut self) {
        let now = time::now_micros() / 1_000_000;
        let expired: Vec<(String, i64)> = self
            .channels
            .iter()
            .filter(|(_, j)| j.auth.exp <= now)
            .map(|(t, j)| (t.clone(), now - j.auth.exp))
            .collect();
        for (topic, ago) in expired {
            log_throttled!(
                self.state.client_log,
                "token expired",
                "conn {}: token of {} expired",
                self.conn.id,
                flux_log::cap(&topic, 120)
            );
            self.close_channel(
                &topic,
                Some(&format!("Token has expired {ago} seconds ago")),
            );
        }
    }
}
