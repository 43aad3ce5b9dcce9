//! A changed row as the change feed hands it to the dispatcher: its values as JSON text that
//! `jsonb_populate_recordset` types (PostgreSQL's own input functions do the typing).

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

    fn v(name: &str, json: &str) -> WalValue {
        WalValue {
            name: name.into(),
            json: json.into(),
        }
    }

    #[test]
    fn columns_missing_from_the_new_row_come_from_the_old() {
        // `site` is absent from the new row (unchanged TOAST): the old value fills in.
        let new = [v("id", r#""e5""#), v("metadata", r#"{"b": "x"}"#)];
        let old = [
            v("id", r#""e5""#),
            v("metadata", r#"{"a": 1}"#),
            v("site", r#""WLCE""#),
        ];
        let obj: Value = serde_json::from_str(&populate_object(&new, &old)).unwrap();
        assert_eq!(
            obj,
            json!({"id": "e5", "metadata": {"b": "x"}, "site": "WLCE"})
        );
        assert_eq!(populate_object(&[v("id", "7")], &[]), r#"{"id":7}"#);
    }
}
