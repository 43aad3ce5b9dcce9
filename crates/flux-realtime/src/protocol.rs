//! Phoenix channel frames as supabase-js speaks them.
//!
//! `vsn=1.0.0` (supabase-js ≤ 2.90): a JSON object per text frame. Clients send
//! `{"topic","event","payload","ref","join_ref"}`; the server answers with
//! `topic, event, payload, ref` only (Phoenix's V1 serializer).
//! `vsn=2.0.0` (supabase-js ≥ 2.91): a JSON array `[join_ref, ref, topic, event, payload]`.
//! Refs are decimal strings. Outgoing payloads are passed as ready JSON text so a change
//! serialized once can go to many channels.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    /// The `vsn` query parameter; Phoenix defaults to 1.0.0 when it is absent.
    pub fn parse(param: Option<&str>) -> Option<Vsn> {
        match param {
            None | Some("1.0.0") => Some(Vsn::V1),
            Some("2.0.0") => Some(Vsn::V2),
            Some(_) => None,
        }
    }
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
}

fn opt_ref(v: Option<&Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!("ref must be a string, got {other}")),
    }
}

fn required_str(v: Option<&Value>, what: &str) -> Result<String, String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("{what} must be a string")),
    }
}

pub fn decode(vsn: Vsn, text: &str) -> Result<Incoming, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    match (vsn, value) {
        (Vsn::V1, Value::Object(mut m)) => Ok(Incoming {
            join_ref: opt_ref(m.get("join_ref"))?,
            msg_ref: opt_ref(m.get("ref"))?,
            topic: required_str(m.get("topic"), "topic")?,
            event: required_str(m.get("event"), "event")?,
            payload: m.remove("payload").unwrap_or(Value::Null),
        }),
        (Vsn::V2, Value::Array(a)) if a.len() == 5 => {
            let mut a = a.into_iter();
            let join_ref = opt_ref(a.next().as_ref())?;
            let msg_ref = opt_ref(a.next().as_ref())?;
            let topic = required_str(a.next().as_ref(), "topic")?;
            let event = required_str(a.next().as_ref(), "event")?;
            Ok(Incoming {
                join_ref,
                msg_ref,
                topic,
                event,
                payload: a.next().unwrap_or(Value::Null),
            })
        }
        (Vsn::V1, _) => Err("vsn 1.0.0 expects a JSON object".into()),
        (Vsn::V2, _) => Err("vsn 2.0.0 expects a JSON array of 5 elements".into()),
    }
}

/// A message to the client; `payload` is JSON text.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub join_ref: Option<&'a str>,
    pub msg_ref: Option<&'a str>,
    pub topic: &'a str,
    pub event: &'a str,
    pub payload: &'a str,
}

fn json_str(out: &mut String, s: &str) {
    out.push_str(&Value::from(s).to_string());
}

fn json_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

pub fn encode(vsn: Vsn, m: &Outgoing) -> String {
    let mut out = String::with_capacity(m.payload.len() + m.topic.len() + 64);
    match vsn {
        Vsn::V1 => {
            out.push_str("{\"topic\":");
            json_str(&mut out, m.topic);
            out.push_str(",\"event\":");
            json_str(&mut out, m.event);
            out.push_str(",\"payload\":");
            out.push_str(m.payload);
            out.push_str(",\"ref\":");
            json_opt(&mut out, m.msg_ref);
            out.push('}');
        }
        Vsn::V2 => {
            out.push('[');
            json_opt(&mut out, m.join_ref);
            out.push(',');
            json_opt(&mut out, m.msg_ref);
            out.push(',');
            json_str(&mut out, m.topic);
            out.push(',');
            json_str(&mut out, m.event);
            out.push(',');
            out.push_str(m.payload);
            out.push(']');
        }
    }
    out
}

/// `{"status": ..., "response": ...}`, the payload of every `phx_reply`.
pub fn reply_payload(ok: bool, response: &str) -> String {
    let status = if ok { "ok" } else { "error" };
    format!("{{\"status\":\"{status}\",\"response\":{response}}}")
}

/// The `response` of an error reply: `{"reason": ...}`.
pub fn reason(text: &str) -> String {
    format!("{{\"reason\":{}}}", Value::from(text))
}

/// Payload of a `system` event.
pub fn system_payload(ok: bool, extension: &str, channel: &str, message: &str) -> String {
    serde_json::json!({
        "message": message,
        "status": if ok { "ok" } else { "error" },
        "extension": extension,
        "channel": channel,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_v1_objects() {
        let m = decode(
            Vsn::V1,
            r#"{"topic":"realtime:a","event":"phx_join","payload":{"x":1},"ref":"1","join_ref":"1"}"#,
        )
        .unwrap();
        assert_eq!(m.topic, "realtime:a");
        assert_eq!(m.event, "phx_join");
        assert_eq!(m.msg_ref.as_deref(), Some("1"));
        assert_eq!(m.join_ref.as_deref(), Some("1"));
        assert_eq!(m.payload, json!({"x": 1}));
        let hb = decode(
            Vsn::V1,
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"7"}"#,
        )
        .unwrap();
        assert_eq!(hb.join_ref, None);
    }

    #[test]
    fn decodes_v2_arrays() {
        let m = decode(Vsn::V2, r#"["3","4","realtime:a","phx_leave",{}]"#).unwrap();
        assert_eq!(
            m,
            Incoming {
                join_ref: Some("3".into()),
                msg_ref: Some("4".into()),
                topic: "realtime:a".into(),
                event: "phx_leave".into(),
                payload: json!({}),
            }
        );
        let hb = decode(Vsn::V2, r#"[null,"5","phoenix","heartbeat",{}]"#).unwrap();
        assert_eq!((hb.join_ref, hb.msg_ref), (None, Some("5".into())));
    }

    #[test]
    fn rejects_the_other_shape_and_garbage() {
        assert!(decode(Vsn::V1, r#"[null,"1","phoenix","heartbeat",{}]"#).is_err());
        assert!(decode(
            Vsn::V2,
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}"#
        )
        .is_err());
        assert!(decode(Vsn::V2, r#"[null,"1","phoenix","heartbeat"]"#).is_err());
        assert!(decode(Vsn::V2, r#"[null,"1",5,"heartbeat",{}]"#).is_err());
        assert!(decode(Vsn::V1, "not json").is_err());
    }

    #[test]
    fn encodes_both_versions() {
        let m = Outgoing {
            join_ref: Some("1"),
            msg_ref: Some("2"),
            topic: "realtime:a\"b",
            event: "phx_reply",
            payload: &reply_payload(true, "{}"),
        };
        let v1: Value = serde_json::from_str(&encode(Vsn::V1, &m)).unwrap();
        assert_eq!(
            v1,
            json!({"topic": "realtime:a\"b", "event": "phx_reply",
                   "payload": {"status": "ok", "response": {}}, "ref": "2"})
        );
        let v2: Value = serde_json::from_str(&encode(Vsn::V2, &m)).unwrap();
        assert_eq!(
            v2,
            json!(["1", "2", "realtime:a\"b", "phx_reply", {"status": "ok", "response": {}}])
        );
        let push = Outgoing {
            join_ref: None,
            msg_ref: None,
            ..m
        };
        assert!(encode(Vsn::V2, &push).starts_with("[null,null,"));
        assert!(encode(Vsn::V1, &push).ends_with(",\"ref\":null}"));
    }

    #[test]
    fn payload_helpers() {
        let e: Value =
            serde_json::from_str(&reply_payload(false, &reason("unmatched topic"))).unwrap();
        assert_eq!(
            e,
            json!({"status": "error", "response": {"reason": "unmatched topic"}})
        );
        let s: Value = serde_json::from_str(&system_payload(
            true,
            "postgres_changes",
            "c",
            "Subscribed to PostgreSQL",
        ))
        .unwrap();
        assert_eq!(
            s,
            json!({"message": "Subscribed to PostgreSQL", "status": "ok",
                   "extension": "postgres_changes", "channel": "c"})
        );
    }

    #[test]
    fn vsn_param() {
        assert_eq!(Vsn::parse(None), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("1.0.0")), Some(Vsn::V1));
        assert_eq!(Vsn::parse(Some("2.0.0")), Some(Vsn::V2));
        assert_eq!(Vsn::parse(Some("3.0.0")), None);
    }
}
