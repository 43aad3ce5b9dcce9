//! Broadcast and Presence: which connections have joined a topic, and fanning messages and
//! presence changes out to them. Unlike `postgres_changes` nothing here touches the database:
//! a message goes from one client (or the REST endpoint) to the others on its topic.

use crate::authz::Rights;
use crate::frames::{self, Encoding};
use crate::hub::ConnHandle;
use crate::protocol::{self, Outgoing, Vsn};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One joined channel, as Broadcast and Presence see it.
pub struct Member {
    pub conn: Arc<ConnHandle>,
    pub join_ref: Option<String>,
    /// The role of the channel's token, for the event ceilings.
    pub role: String,
    /// `config.private`: the channel hears private messages only, a public one public only.
    pub private: bool,
    /// What the policies let the channel's role do (everything on a public channel).
    pub rights: Rights,
    /// `config.broadcast.self`: the sender receives its own broadcasts.
    pub receive_own: bool,
    /// `config.presence.key`, or one the server made.
    pub presence_key: String,
    presence: Option<Tracked>,
}

impl Member {
    pub fn new(
        conn: Arc<ConnHandle>,
        join_ref: Option<String>,
        role: String,
        (private, rights): (bool, Rights),
        receive_own: bool,
        presence_key: String,
    ) -> Member {
        Member {
            conn,
            join_ref,
            role,
            private,
            rights,
            receive_own,
            presence_key,
            presence: None,
        }
    }
}

/// A tracked presence: the client's meta with the `phx_ref` that names this version of it.
#[derive(Clone)]
struct Tracked {
    meta: Map<String, Value>,
}

/// A broadcast as it came in.
pub enum Message<'a> {
    /// The payload object of a text push or of the REST endpoint (`{type, event, payload}`),
    /// re-sent as it is.
    Text(&'a str),
    /// A vsn 2.0.0 binary push: vsn 2 clients get it as a binary broadcast, vsn 1 clients as
    /// JSON (when it is JSON; raw bytes cannot reach them, as in Supabase).
    Binary {
        event: &'a str,
        encoding: Encoding,
        payload: &'a [u8],
    },
}

/// A room is a topic joined as private, or the same topic joined as public: the two share
/// neither broadcasts nor presence.
type RoomKey = (bool, String);

#[derive(Default)]
pub struct Rooms {
    rooms: Mutex<HashMap<RoomKey, HashMap<u64, Member>>>,
    next_ref: AtomicU64,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomKey, HashMap<u64, Member>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn phx_ref(&self) -> String {
        format!("F{:x}", self.next_ref.fetch_add(1, Ordering::Relaxed))
    }

    /// Adds a joined channel (replacing the connection's earlier join of the topic) and returns
    /// the topic's presence state, which the caller sends after the join reply.
    pub fn join(&self, topic: &str, member: Member) -> String {
        let mut rooms = self.lock();
        let room = rooms.entry((member.private, topic.to_owned())).or_default();
        let left = room
            .insert(member.conn.id, member)
            .and_then(|old| old.presence.map(|t| (old.presence_key, t)));
        if let Some((key, tracked)) = left {
            diff(
                topic,
                room,
                &BTreeMap::new(),
                &BTreeMap::from([(key, vec![tracked.meta])]),
            );
        }
        state(room)
    }

    /// Removes a connection's channel; its presence, if tracked, leaves.
    pub fn leave(&self, topic: &str, private: bool, conn: u64) {
        let key = (private, topic.to_owned());
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&key) else {
            return;
        };
        if let Some(Member {
            presence: Some(tracked),
            presence_key,
            ..
        }) = room.remove(&conn)
        {
            diff(
                topic,
                room,
                &BTreeMap::new(),
                &BTreeMap::from([(presence_key, vec![tracked.meta])]),
            );
        }
        if room.is_empty() {
            rooms.remove(&key);
        }
    }

    /// Sends a broadcast to every member of the topic joined as private as the message is,
    /// but the sender (unless it asked for its own), that `admit` lets through (the event
    /// ceilings); returns how many got it.
    pub fn broadcast(
        &self,
        topic: &str,
        from: Option<u64>,
        private: bool,
        message: &Message,
        admit: &dyn Fn(&Member) -> bool,
    ) -> usize {
        let rooms = self.lock();
        let Some(room) = rooms.get(&(private, topic.to_owned())) else {
            return 0;
        };
        let mut frames = Frames::new(topic, message);
        let mut delivered = 0;
        for member in room.values() {
            if !member.rights.broadcast_read
                || Some(member.conn.id) == from && !member.receive_own
                || !admit(member)
            {
                continue;
            }
            if frames.send(&member.conn) {
                delivered += 1;
            }
        }
        delivered
    }

    /// What a connection's channel may now do (its token changed).
    pub fn set_rights(&self, topic: &str, private: bool, conn: u64, rights: Rights) {
        let mut rooms = self.lock();
        let room = rooms.get_mut(&(private, topic.to_owned()));
        if let Some(member) = room.and_then(|r| r.get_mut(&conn)) {
            member.rights = rights;
        }
    }

    /// Tracks (or updates) a connection's presence on a topic: everyone gets the diff.
    pub fn track(&self, topic: &str, private: bool, conn: u64, meta: Map<String, Value>) {
        let phx_ref = self.phx_ref();
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&(private, topic.to_owned())) else {
            return;
        };
        let Some(member) = room.get_mut(&conn) else {
            return;
        };
        let mut meta = meta;
        let key = member.presence_key.clone();
        let previous = member.presence.take();
        if let Some(prev) = &previous {
            let mut same = prev.meta.clone();
            same.remove("phx_ref");
            same.remove("phx_ref_prev");
            if same == meta {
                member.presence = previous;
                return;
            }
            if let Some(prev_ref) = prev.meta.get("phx_ref") {
                meta.insert("phx_ref_prev".into(), prev_ref.clone());
            }
        }
        meta.insert("phx_ref".into(), Value::String(phx_ref));
        member.presence = Some(Tracked { meta: meta.clone() });
        let leaves = previous
            .map(|p| BTreeMap::from([(key.clone(), vec![p.meta])]))
            .unwrap_or_default();
        diff(topic, room, &BTreeMap::from([(key, vec![meta])]), &leaves);
    }

    pub fn untrack(&self, topic: &str, private: bool, conn: u64) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&(private, topic.to_owned())) else {
            return;
        };
        let Some(member) = room.get_mut(&conn) else {
            return;
        };
        if let Some(tracked) = member.presence.take() {
            let key = member.presence_key.clone();
            diff(
                topic,
                room,
                &BTreeMap::new(),
                &BTreeMap::from([(key, vec![tracked.meta])]),
            );
        }
    }
}

/// `{key: {"metas": [...]}}`: every tracked presence of a room, grouped by key.
fn state(room: &HashMap<u64, Member>) -> String {
    let mut tracked: BTreeMap<String, Vec<Map<String, Value>>> = BTreeMap::new();
    for m in room.values() {
        if let Some(t) = &m.presence {
            tracked
                .entry(m.presence_key.clone())
                .or_default()
                .push(t.meta.clone());
        }
    }
    grouped(&tracked).to_string()
}

/// Presence metas by key, as `presence_state` and `presence_diff` carry them.
fn grouped(entries: &BTreeMap<String, Vec<Map<String, Value>>>) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|(k, metas)| (k.clone(), serde_json::json!({ "metas": metas })))
            .collect(),
    )
}

/// Sends a `presence_diff` to every member of the room.
fn diff(
    topic: &str,
    room: &HashMap<u64, Member>,
    joins: &BTreeMap<String, Vec<Map<String, Value>>>,
    leaves: &BTreeMap<String, Vec<Map<String, Value>>>,
) {
    let payload =
        serde_json::json!({ "joins": grouped(joins), "leaves": grouped(leaves) }).to_string();
    let mut encoded: [Option<String>; 2] = [None, None];
    for member in room.values().filter(|m| m.rights.presence_read) {
        let vsn = member.conn.vsn;
        let frame = encoded[vsn as usize].get_or_insert_with(|| {
            protocol::encode(
                vsn,
                &Outgoing {
                    join_ref: None,
                    msg_ref: None,
                    topic,
                    event: "presence_diff",
                    payload: &payload,
                },
            )
        });
        member.conn.push(frame.clone());
    }
}

/// The frames of one broadcast, made once per protocol version as members need them.
struct Frames<'a> {
    topic: &'a str,
    message: &'a Message<'a>,
    v1: Option<Option<String>>,
    v2: Option<V2Frame>,
}

#[derive(Clone)]
enum V2Frame {
    Text(String),
    Binary(Vec<u8>),
    None,
}

impl<'a> Frames<'a> {
    fn new(topic: &'a str, message: &'a Message<'a>) -> Frames<'a> {
        Frames {
            topic,
            message,
            v1: None,
            v2: None,
        }
    }

    /// The payload object of a text broadcast: as given, or built from a JSON binary push.
    fn text_payload(&self) -> Option<String> {
        match self.message {
            Message::Text(p) => Some((*p).to_owned()),
            Message::Binary {
                event,
                encoding: Encoding::Json,
                payload,
            } => Some(format!(
                "{{\"type\":\"broadcast\",\"event\":{},\"payload\":{}}}",
                Value::from(*event),
                String::from_utf8_lossy(payload)
            )),
            Message::Binary { .. } => None,
        }
    }

    fn text(&self, vsn: Vsn) -> Option<String> {
        let payload = self.text_payload()?;
        Some(protocol::encode(
            vsn,
            &Outgoing {
                join_ref: None,
                msg_ref: None,
                topic: self.topic,
                event: "broadcast",
                payload: &payload,
            },
        ))
    }

    /// Queues the broadcast for one connection; false when it cannot take this payload.
    fn send(&mut self, conn: &ConnHandle) -> bool {
        match conn.vsn {
            Vsn::V1 => {
                if self.v1.is_none() {
                    self.v1 = Some(self.text(Vsn::V1));
                }
                match self.v1.as_ref().and_then(Option::as_ref) {
                    Some(frame) => conn.push(frame.clone()),
                    None => return false,
                }
            }
            Vsn::V2 => {
                if self.v2.is_none() {
                    self.v2 = Some(match self.message {
                        Message::Binary {
                            event,
                            encoding,
                            payload,
                        } => {
                            match frames::encode_broadcast(
                                self.topic, event, "", *encoding, payload,
                            ) {
                                Some(binary) => V2Frame::Binary(binary),
                                None => self.text(Vsn::V2).map_or(V2Frame::None, V2Frame::Text),
                            }
                        }
                        Message::Text(_) => self.text(Vsn::V2).map_or(V2Frame::None, V2Frame::Text),
                    });
                }
                match self.v2.clone() {
                    Some(V2Frame::Text(frame)) => conn.push(frame),
                    Some(V2Frame::Binary(frame)) => conn.push_binary(frame),
                    _ => return false,
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Out;
    use serde_json::json;
    use tokio::sync::mpsc::UnboundedReceiver;

    fn conn(id: u64, vsn: Vsn) -> (Arc<ConnHandle>, UnboundedReceiver<Out>) {
        ConnHandle::new(id, vsn, "test".into(), 1 << 20)
    }

    fn member(conn: Arc<ConnHandle>, receive_own: bool, key: &str) -> Member {
        Member::new(
            conn,
            None,
            "anon".into(),
            (false, Rights::ALL),
            receive_own,
            key.into(),
        )
    }

    fn texts(rx: &mut UnboundedReceiver<Out>) -> Vec<Value> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|o| match o {
                Out::Text(t) => serde_json::from_str(&t).unwrap(),
                Out::Binary(b) => json!({ "binary": b }),
                Out::Close(..) => json!("close"),
            })
            .collect()
    }

    #[test]
    fn a_text_broadcast_reaches_the_others_in_their_protocol_and_the_sender_if_asked() {
        let rooms = Rooms::default();
        let (a, mut ra) = conn(1, Vsn::V1);
        let (b, mut rb) = conn(2, Vsn::V2);
        let (c, mut rc) = conn(3, Vsn::V2);
        rooms.join("realtime:room", member(a, false, "a"));
        rooms.join("realtime:room", member(b, true, "b"));
        rooms.join("realtime:other", member(c, false, "c"));
        let payload = r#"{"type":"broadcast","event":"cursor","payload":{"x":1}}"#;
        assert_eq!(
            rooms.broadcast(
                "realtime:room",
                Some(2),
                false,
                &Message::Text(payload),
                &|_| true
            ),
            2
        );
        let p: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(
            texts(&mut ra),
            vec![
                json!({"topic": "realtime:room", "event": "broadcast", "payload": p, "ref": null})
            ]
        );
        assert_eq!(
            texts(&mut rb),
            vec![json!([null, null, "realtime:room", "broadcast", p])]
        );
        assert!(texts(&mut rc).is_empty(), "another topic hears nothing");
        // Without `self`, the sender is left out.
        assert_eq!(
            rooms.broadcast(
                "realtime:room",
                Some(1),
                false,
                &Message::Text(payload),
                &|_| true
            ),
            1
        );
        assert!(texts(&mut ra).is_empty());
    }

    #[test]
    fn private_messages_reach_private_channels_only_and_public_ones_public_only() {
        let rooms = Rooms::default();
        let (public, mut r_public) = conn(1, Vsn::V2);
        let (private, mut r_private) = conn(2, Vsn::V2);
        rooms.join("realtime:site", member(public, false, "a"));
        rooms.join(
            "realtime:site",
            Member::new(
                private,
                None,
                "service_role".into(),
                (true, Rights::ALL),
                false,
                "b".into(),
            ),
        );
        // Joined as private, but its policies let it hear neither broadcast nor presence.
        let (deaf, mut r_deaf) = conn(3, Vsn::V2);
        let nothing = Rights {
            broadcast_read: false,
            broadcast_write: true,
            presence_read: false,
            presence_write: true,
        };
        rooms.join(
            "realtime:site",
            Member::new(
                deaf,
                None,
                "anon".into(),
                (true, nothing),
                false,
                "c".into(),
            ),
        );
        let payload = r#"{"type":"broadcast","event":"e","payload":{}}"#;
        assert_eq!(
            rooms.broadcast(
                "realtime:site",
                None,
                true,
                &Message::Text(payload),
                &|_| true
            ),
            1
        );
        assert!(texts(&mut r_public).is_empty());
        assert_eq!(texts(&mut r_private).len(), 1);
        assert_eq!(
            rooms.broadcast(
                "realtime:site",
                None,
                false,
                &Message::Text(payload),
                &|_| true
            ),
            1
        );
        assert_eq!(texts(&mut r_public).len(), 1);
        assert!(texts(&mut r_private).is_empty());
        rooms.track("realtime:site", true, 2, Map::new());
        assert_eq!(texts(&mut r_private).len(), 1, "a presence diff");
        assert!(texts(&mut r_deaf).is_empty());
        rooms.track("realtime:site", false, 1, Map::new());
        assert_eq!(texts(&mut r_public).len(), 1, "a presence diff");
        assert!(
            texts(&mut r_private).is_empty(),
            "public presence stays public"
        );
    }

    #[test]
    fn a_binary_push_is_binary_for_vsn_2_json_for_vsn_1_and_raw_bytes_skip_vsn_1() {
        let rooms = Rooms::default();
        let (a, mut ra) = conn(1, Vsn::V1);
        let (b, mut rb) = conn(2, Vsn::V2);
        rooms.join("realtime:t", member(a, false, "a"));
        rooms.join("realtime:t", member(b, false, "b"));
        let json_push = Message::Binary {
            event: "e",
            encoding: Encoding::Json,
            payload: br#"{"v":2}"#,
        };
        assert_eq!(
            rooms.broadcast("realtime:t", None, false, &json_push, &|_| true),
            2
        );
        assert_eq!(
            texts(&mut ra),
            vec![
                json!({"topic": "realtime:t", "event": "broadcast", "payload": {"type": "broadcast", "event": "e", "payload": {"v": 2}}, "ref": null})
            ]
        );
        let expected =
            frames::encode_broadcast("realtime:t", "e", "", Encoding::Json, br#"{"v":2}"#).unwrap();
        assert_eq!(texts(&mut rb), vec![json!({ "binary": expected })]);
        let raw = Message::Binary {
            event: "e",
            encoding: Encoding::Binary,
            payload: &[1, 2, 3],
        };
        assert_eq!(
            rooms.broadcast("realtime:t", None, false, &raw, &|_| true),
            1
        );
        assert!(texts(&mut ra).is_empty());
        assert_eq!(texts(&mut rb).len(), 1);
    }

    #[test]
    fn presence_tracks_updates_and_leaves_with_diffs_to_everyone() {
        let rooms = Rooms::default();
        let (a, mut ra) = conn(1, Vsn::V2);
        let (b, mut rb) = conn(2, Vsn::V1);
        assert_eq!(rooms.join("realtime:p", member(a, false, "alice")), "{}");
        rooms.join("realtime:p", member(b, false, "bob"));
        let meta = |v: Value| v.as_object().unwrap().clone();
        rooms.track("realtime:p", false, 1, meta(json!({"status": "online"})));
        let diff_a = texts(&mut ra);
        assert_eq!(diff_a.len(), 1);
        let [_, _, topic, event, payload] = diff_a[0].as_array().unwrap().as_slice() else {
            panic!()
        };
        assert_eq!(
            (topic.as_str(), event.as_str()),
            (Some("realtime:p"), Some("presence_diff"))
        );
        let joined = &payload["joins"]["alice"]["metas"][0];
        assert_eq!(joined["status"], "online");
        let first_ref = joined["phx_ref"].clone();
        assert!(first_ref.is_string());
        assert_eq!(payload["leaves"], json!({}));
        assert_eq!(
            texts(&mut rb)[0]["payload"],
            *payload,
            "vsn 1 gets the same diff"
        );
        // The same meta again changes nothing; a new one leaves the old and joins the new.
        rooms.track("realtime:p", false, 1, meta(json!({"status": "online"})));
        assert!(texts(&mut ra).is_empty());
        rooms.track("realtime:p", false, 1, meta(json!({"status": "away"})));
        let d = &texts(&mut rb)[0]["payload"];
        assert_eq!(d["leaves"]["alice"]["metas"][0]["phx_ref"], first_ref);
        assert_eq!(d["joins"]["alice"]["metas"][0]["phx_ref_prev"], first_ref);
        assert_eq!(d["joins"]["alice"]["metas"][0]["status"], "away");
        // A newcomer's state has alice; leaving sends her leave.
        let (c, _rc) = conn(3, Vsn::V2);
        let state: Value =
            serde_json::from_str(&rooms.join("realtime:p", member(c, false, "carol"))).unwrap();
        assert_eq!(state["alice"]["metas"][0]["status"], "away");
        assert_eq!(state.as_object().unwrap().len(), 1);
        rooms.leave("realtime:p", false, 1);
        let frames = texts(&mut rb);
        let d = &frames.last().unwrap()["payload"];
        assert_eq!(d["leaves"]["alice"]["metas"][0]["status"], "away");
        assert_eq!(d["joins"], json!({}));
        rooms.untrack("realtime:p", false, 2);
        assert!(
            texts(&mut rb)
                .iter()
                .all(|f| f["payload"]["leaves"] != json!({"bob": {}})),
            "bob never tracked: no leave"
        );
    }
}
