//! wal2json format-version 2 messages, one per changed row.
//!
//! Column values are kept as the raw JSON wal2json wrote (numbers keep every digit) and later
//! handed to `jsonb_populate_recordset` to be re-typed by PostgreSQL itself; only json/jsonb
//! values, which wal2json writes as JSON strings, are unwrapped so they populate as documents.

use crate::time;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Insert,
    Update,
    Delete,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Insert => "INSERT",
            Action::Update => "UPDATE",
            Action::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalValue {
    pub name: String,
    /// JSON text as `jsonb_populate_record` should see it.
    pub json: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalChange {
    pub action: Action,
    pub schema: String,
    pub table: String,
    /// Commit time, µs since the epoch.
    pub commit_micros: i64,
    /// The new row (INSERT, UPDATE); unchanged TOASTed values are absent.
    pub new: Vec<WalValue>,
    /// The old row (UPDATE, DELETE) as far as the replica identity goes.
    pub old: Vec<WalValue>,
}

#[derive(Deserialize)]
struct Message {
    action: String,
    schema: Option<String>,
    table: Option<String>,
    timestamp: Option<String>,
    #[serde(default)]
    columns: Vec<Column>,
    #[serde(default)]
    identity: Vec<Column>,
}

#[derive(Deserialize)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    typeoid: Option<u32>,
    value: Box<RawValue>,
}

const JSON_OID: u32 = 114;
const JSONB_OID: u32 = 3802;

impl Column {
    fn into_value(self) -> Result<WalValue, String> {
        let is_json = match self.typeoid {
            Some(oid) => oid == JSON_OID || oid == JSONB_OID,
            None => self.type_name == "json" || self.type_name == "jsonb",
        };
        let raw = self.value.get();
        let json = if is_json && raw.starts_with('"') {
            serde_json::from_str::<String>(raw).map_err(|e| format!("column {}: {e}", self.name))?
        } else {
            raw.to_owned()
        };
        Ok(WalValue {
            name: self.name,
            json,
        })
    }
}

/// Parses one row of `pg_logical_slot_get_changes`. `Ok(None)` for what carries no row change
/// (transaction boundaries, TRUNCATE, logical messages).
pub fn parse(data: &str) -> Result<Option<WalChange>, String> {
    let m: Message =
        serde_json::from_str(data).map_err(|e| format!("bad wal2json message: {e}"))?;
    let action = match m.action.as_str() {
        "I" => Action::Insert,
        "U" => Action::Update,
        "D" => Action::Delete,
        _ => return Ok(None),
    };
    let (Some(schema), Some(table), Some(ts)) = (m.schema, m.table, m.timestamp) else {
        return Err(format!(
            "wal2json {} message without schema, table or timestamp",
            m.action
        ));
    };
    let commit_micros = time::parse_timestamp(&ts)
        .ok_or_else(|| format!("bad wal2json timestamp {ts:?}"))?
        .instant();
    let values = |cols: Vec<Column>| {
        cols.into_iter()
            .map(Column::into_value)
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Some(WalChange {
        action,
        schema,
        table,
        commit_micros,
        new: values(m.columns)?,
        old: values(m.identity)?,
    }))
}

/// A JSON object `{"column": value, ...}` for `jsonb_populate_recordset`. Columns missing from
/// `values` (unchanged TOAST in an UPDATE) are taken from `fallback`, the old row.
pub fn populate_object(values: &[WalValue], fallback: &[WalValue]) -> String {
    let mut out = String::from("{");
    let mut seen: HashSet<&str> = HashSet::with_capacity(values.len());
    let push = |out: &mut String, v: &WalValue| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(v.name.as_str()).to_string());
        out.push(':');
        out.push_str(&v.json);
    };
    for v in values {
        seen.insert(&v.name);
        push(&mut out, v);
    }
    for v in fallback {
        if !seen.contains(v.name.as_str()) {
            push(&mut out, v);
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const INSERT: &str = r#"{"action":"I","timestamp":"2026-11-26 02:16:42.766291+00","schema":"flux","table":"mg_bess_readings","columns":[{"name":"id","type":"uuid","typeoid":2950,"value":"8d694730-eb5a-42d9-a4b4-b375e433b33b"},{"name":"time","type":"timestamp with time zone","typeoid":1184,"value":"2024-01-01 12:00:00.123456+00"},{"name":"soe","type":"double precision","typeoid":701,"value":55.5},{"name":"price","type":"numeric","typeoid":1700,"value":12345678901234567890.123},{"name":"command_source","type":"integer","typeoid":23,"value":null}],"pk":[{"name":"time","type":"timestamp with time zone","typeoid":1184}]}"#;

    #[test]
    fn parses_an_insert_keeping_every_digit() {
        let c = parse(INSERT).unwrap().unwrap();
        assert_eq!(c.action, Action::Insert);
        assert_eq!(
            (c.schema.as_str(), c.table.as_str()),
            ("flux", "mg_bess_readings")
        );
        assert_eq!(
            time::format_millis_utc(c.commit_micros),
            "2026-11-26T02:16:42.766Z"
        );
        assert!(c.old.is_empty());
        let values: Vec<(&str, &str)> = c
            .new
            .iter()
            .map(|v| (v.name.as_str(), v.json.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                ("id", r#""8d694730-eb5a-42d9-a4b4-b375e433b33b""#),
                ("time", r#""2024-01-01 12:00:00.123456+00""#),
                ("soe", "55.5"),
                ("price", "12345678901234567890.123"),
                ("command_source", "null"),
            ]
        );
    }

    #[test]
    fn unwraps_json_documents() {
        let msg = r#"{"action":"U","timestamp":"2026-11-26 02:16:42.768991+00","schema":"flux","table":"mg_device_registry","columns":[{"name":"id","type":"uuid","typeoid":2950,"value":"e59669df-4a8d-4480-a38f-a150dafd2ff8"},{"name":"metadata","type":"jsonb","typeoid":3802,"value":"{\"b\": \"x\"}"}],"identity":[{"name":"id","type":"uuid","typeoid":2950,"value":"e59669df-4a8d-4480-a38f-a150dafd2ff8"},{"name":"metadata","type":"jsonb","typeoid":3802,"value":"{\"a\": [1, 2.50]}"},{"name":"site","type":"text","typeoid":25,"value":"WLCE"}]}"#;
        let c = parse(msg).unwrap().unwrap();
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.new[1].json, r#"{"b": "x"}"#);
        assert_eq!(c.old[1].json, r#"{"a": [1, 2.50]}"#);
        // `site` is absent from the new row (unchanged TOAST): the old value fills in.
        let obj: Value = serde_json::from_str(&populate_object(&c.new, &c.old)).unwrap();
        assert_eq!(
            obj,
            json!({"id": "e59669df-4a8d-4480-a38f-a150dafd2ff8", "metadata": {"b": "x"}, "site": "WLCE"})
        );
    }

    #[test]
    fn skips_what_is_not_a_row_change() {
        for msg in [
            r#"{"action":"B","timestamp":"2026-11-26 02:16:42.766291+00"}"#,
            r#"{"action":"C","timestamp":"2026-11-26 02:16:42.766291+00"}"#,
            r#"{"action":"T","schema":"flux","table":"x"}"#,
            r#"{"action":"M","transactional":false,"prefix":"p","content":"c"}"#,
        ] {
            assert_eq!(parse(msg).unwrap(), None, "{msg}");
        }
        assert!(parse("{").is_err());
        assert!(parse(r#"{"action":"I","schema":"flux"}"#).is_err());
    }

    #[test]
    fn delete_carries_the_old_row() {
        let msg = r#"{"action":"D","timestamp":"2026-11-26 02:16:42.768513+00","schema":"flux","table":"t","identity":[{"name":"id","type":"integer","typeoid":23,"value":7}]}"#;
        let c = parse(msg).unwrap().unwrap();
        assert_eq!(c.action, Action::Delete);
        assert!(c.new.is_empty());
        assert_eq!(populate_object(&c.old, &[]), r#"{"id":7}"#);
    }
}
