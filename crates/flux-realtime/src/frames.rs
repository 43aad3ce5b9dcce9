//! Binary frames of protocol vsn 2.0.0, which supabase-js (≥ 2.81) uses for user broadcasts
//! only: kind 3 (client → server, a broadcast push) and kind 4 (server → client, a broadcast).
//!
//! Kind 3: `03 | len(join_ref) | len(ref) | len(topic) | len(event) | len(metadata) | encoding`
//! then those strings and the payload (the rest of the frame). Kind 4: `04 | len(topic) |
//! len(event) | len(metadata) | encoding` then topic, event, metadata and payload. Lengths are
//! one byte each; encoding 1 is JSON text, 0 raw bytes.

const USER_BROADCAST_PUSH: u8 = 3;
const USER_BROADCAST: u8 = 4;

/// How a broadcast payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Binary,
    Json,
}

/// A client's binary broadcast push (kind 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastPush {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub encoding: Encoding,
    pub payload: Vec<u8>,
}

pub fn decode_push(frame: &[u8]) -> Result<BroadcastPush, String> {
    let header = frame
        .get(..7)
        .ok_or("binary frame shorter than its header")?;
    if header[0] != USER_BROADCAST_PUSH {
        return Err(format!(
            "binary frame of kind {}: only user broadcast pushes (3) are accepted",
            header[0]
        ));
    }
    let encoding = match header[6] {
        0 => Encoding::Binary,
        1 => Encoding::Json,
        other => return Err(format!("unknown payload encoding {other}")),
    };
    let mut rest = &frame[7..];
    let mut field = |len: u8, what: &str| -> Result<String, String> {
        let len = usize::from(len);
        if rest.len() < len {
            return Err(format!("binary frame ends inside its {what}"));
        }
        let (text, tail) = rest.split_at(len);
        rest = tail;
        String::from_utf8(text.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    };
    let join_ref = field(header[1], "join_ref")?;
    let msg_ref = field(header[2], "ref")?;
    let topic = field(header[3], "topic")?;
    let event = field(header[4], "event")?;
    // Metadata is not used (Supabase does not use it either) but must be well formed.
    let metadata = field(header[5], "metadata")?;
    if !metadata.is_empty() {
        serde_json::from_str::<serde_json::Value>(&metadata)
            .map_err(|_| "metadata is not JSON".to_owned())?;
    }
    if encoding == Encoding::Json {
        serde_json::from_slice::<&serde_json::value::RawValue>(rest)
            .map_err(|_| "a JSON payload that is not JSON".to_owned())?;
    }
    Ok(BroadcastPush {
        join_ref: (!join_ref.is_empty()).then_some(join_ref),
        msg_ref: (!msg_ref.is_empty()).then_some(msg_ref),
        topic,
        event,
        encoding,
        payload: rest.to_vec(),
    })
}

/// A broadcast to a vsn 2.0.0 client (kind 4); None when a field is too long for its length
/// byte, in which case the text form is sent instead.
pub fn encode_broadcast(
    topic: &str,
    event: &str,
    metadata: &str,
    encoding: Encoding,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let len = |s: &str| u8::try_from(s.len()).ok();
    let mut out =
        Vec::with_capacity(5 + topic.len() + event.len() + metadata.len() + payload.len());
    out.extend_from_slice(&[
        USER_BROADCAST,
        len(topic)?,
        len(event)?,
        len(metadata)?,
        match encoding {
            Encoding::Binary => 0,
            Encoding::Json => 1,
        },
    ]);
    for part in [
        topic.as_bytes(),
        event.as_bytes(),
        metadata.as_bytes(),
        payload,
    ] {
        out.extend_from_slice(part);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(
        join_ref: &str,
        r: &str,
        topic: &str,
        event: &str,
        meta: &str,
        enc: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![
            3,
            join_ref.len() as u8,
            r.len() as u8,
            topic.len() as u8,
            event.len() as u8,
            meta.len() as u8,
            enc,
        ];
        for p in [
            join_ref.as_bytes(),
            r.as_bytes(),
            topic.as_bytes(),
            event.as_bytes(),
            meta.as_bytes(),
            payload,
        ] {
            f.extend_from_slice(p);
        }
        f
    }

    #[test]
    fn decodes_the_protocol_documents_example() {
        let frame = push(
            "10",
            "1",
            "realtime:chat-room",
            "user-event",
            "",
            1,
            br#"{"a":1}"#,
        );
        assert_eq!(&frame[..7], &[0x03, 0x02, 0x01, 0x12, 0x0A, 0x00, 0x01]);
        let p = decode_push(&frame).unwrap();
        assert_eq!(p.join_ref.as_deref(), Some("10"));
        assert_eq!(p.msg_ref.as_deref(), Some("1"));
        assert_eq!(p.topic, "realtime:chat-room");
        assert_eq!(p.event, "user-event");
        assert_eq!(p.encoding, Encoding::Json);
        assert_eq!(p.payload, br#"{"a":1}"#);
    }

    #[test]
    fn binary_payloads_pass_as_bytes() {
        let p = decode_push(&push("1", "", "realtime:t", "e", "{}", 0, &[0, 255, 7])).unwrap();
        assert_eq!(p.msg_ref, None);
        assert_eq!(p.encoding, Encoding::Binary);
        assert_eq!(p.payload, vec![0, 255, 7]);
    }

    #[test]
    fn refuses_malformed_frames() {
        assert!(decode_push(&[3, 0, 0]).unwrap_err().contains("shorter"));
        assert!(decode_push(&push("1", "1", "t", "e", "", 1, b"{}")[..9])
            .unwrap_err()
            .contains("ends inside"));
        let mut wrong_kind = push("1", "1", "t", "e", "", 1, b"{}");
        wrong_kind[0] = 4;
        assert!(decode_push(&wrong_kind).unwrap_err().contains("kind 4"));
        assert!(decode_push(&push("1", "1", "t", "e", "", 9, b"{}"))
            .unwrap_err()
            .contains("encoding 9"));
        assert!(decode_push(&push("1", "1", "t", "e", "", 1, b"{nope"))
            .unwrap_err()
            .contains("not JSON"));
        assert!(decode_push(&push("1", "1", "t", "e", "{x", 1, b"{}"))
            .unwrap_err()
            .contains("metadata"));
        assert!(decode_push(&push("1", "1", "t\u{0}", "e", "", 1, b"{}")).is_ok());
        assert!(decode_push(&[3, 0, 0, 2, 0, 0, 1, 0xff, 0xfe, b'{', b'}'])
            .unwrap_err()
            .contains("UTF-8"));
    }

    #[test]
    fn encodes_the_protocol_documents_broadcast() {
        let meta = r#"{"id":"006554ce-d22d-469c-877a-88bef47214a3"}"#;
        let f = encode_broadcast(
            "realtime:chat-room",
            "message",
            meta,
            Encoding::Json,
            br#"{"content":"oi"}"#,
        )
        .unwrap();
        assert_eq!(&f[..5], &[0x04, 0x12, 0x07, 0x2D, 0x01]);
        assert!(
            f.ends_with(br#"message{"id":"006554ce-d22d-469c-877a-88bef47214a3"}{"content":"oi"}"#)
        );
        assert_eq!(
            encode_broadcast(&"t".repeat(256), "e", "", Encoding::Json, b"{}"),
            None
        );
    }
}
