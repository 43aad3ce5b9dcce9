//! A changed row after PostgreSQL re-typed it: which bindings it matches and the `data` object
//! of the `postgres_changes` push.

use crate::catalog::Table;
use crate::filter::{json_scalar_text, Compiled, Verdict};
use crate::join::Binding;
use crate::wal::Action;
use serde_json::Value;
use std::sync::Arc;

/// A row as `to_jsonb` text per column of the table, in table order (`null` for NULL, `None`
/// for a column the WAL did not carry, such as non-key columns of an old row under
/// `REPLICA IDENTITY DEFAULT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Option<String>>);

/// What [`Change::matching`] found: the ids of bindings matched, and the bindings whose filter
/// PostgreSQL must evaluate.
#[derive(Debug, Default)]
pub struct Matching<'b> {
    pub ids: Vec<u32>,
    pub ask: Vec<(u32, &'b Compiled)>,
}

#[derive(Debug, Clone)]
pub struct Change {
    pub action: Action,
    pub table: Arc<Table>,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub commit_timestamp: String,
    /// INSERT and UPDATE.
    pub new: Option<Row>,
    /// UPDATE and DELETE.
    pub old: Option<Row>,
}

impl Change {
    /// Filters look at the new row, or at the old one of a DELETE.
    fn filter_row(&self) -> Option<&Row> {
        match self.action {
            Action::Delete => self.old.as_ref(),
            Action::Insert | Action::Update => self.new.as_ref(),
        }
    }

    /// The value (`to_jsonb` text) of a column of the row filters look at.
    pub fn filter_value(&self, column: usize) -> Option<&str> {
        self.filter_row()?.0.get(column)?.as_deref()
    }

    /// The bindings this change matches. `secure_delete` is set when row-level security
    /// applies to the subscriber: a deleted row cannot be checked against policies, so only its
    /// primary key may be revealed, and a filter on any other column would leak that column's
    /// value; such filters never match a DELETE (as in Supabase).
    pub fn matching<'b>(&self, bindings: &'b [Binding], secure_delete: bool) -> Matching<'b> {
        let mut matching = Matching::default();
        for b in bindings.iter().filter(|b| b.event.matches(self.action)) {
            // A binding's targets are distinct tables: at most one is this change's.
            let Some(target) = b.targets.iter().find(|t| t.table == self.table.oid) else {
                continue;
            };
            let Some(f) = &target.filter else {
                matching.ids.push(b.id);
                continue;
            };
            if secure_delete && self.action == Action::Delete && !self.table.is_pk(f.column) {
                continue;
            }
            let Some(raw) = self.filter_value(f.column) else {
                continue;
            };
            match f.verdict(raw) {
                Verdict::Match => matching.ids.push(b.id),
                Verdict::NoMatch => {}
                Verdict::AskDatabase => matching.ask.push((b.id, f)),
            }
        }
        matching
    }

    /// The row filters look at, as one JSON object of the columns the WAL carried, for
    /// `jsonb_populate_record` when PostgreSQL evaluates a filter.
    pub fn filter_row_json(&self) -> String {
        let mut out = String::new();
        if let Some(row) = self.filter_row() {
            record(&mut out, &self.table, row, |_| true);
        }
        out
    }

    /// Primary-key values (of the new row) as text, for looking the row up under RLS.
    pub fn pk_texts(&self) -> Option<Vec<String>> {
        let row = self.new.as_ref()?;
        self.table
            .pk
            .iter()
            .map(|&i| json_scalar_text(row.0.get(i)?.as_deref()?).map(|t| t.into_owned()))
            .collect()
    }

    /// The `data` object of the push, showing the columns for which `visible` is true (the
    /// subscriber's column privileges); `secure_delete` as in [`Change::matching`].
    pub fn data_json(&self, visible: &[bool], secure_delete: bool) -> String {
        let t = &self.table;
        let shown = |i: usize| visible.get(i).copied().unwrap_or(false);
        let mut out = String::with_capacity(512);
        out.push_str("{\"schema\":");
        out.push_str(&Value::from(t.schema.as_str()).to_string());
        out.push_str(",\"table\":");
        out.push_str(&Value::from(t.name.as_str()).to_string());
        out.push_str(",\"commit_timestamp\":\"");
        out.push_str(&self.commit_timestamp);
        out.push_str("\",\"type\":\"");
        out.push_str(self.action.name());
        out.push_str("\",\"columns\":[");
        let mut first = true;
        for (_, c) in t.columns.iter().enumerate().filter(|(i, _)| shown(*i)) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&serde_json::json!({"name": c.name, "type": c.typname}).to_string());
        }
        out.push(']');
        if let Some(new) = self.new.as_ref().filter(|_| self.action != Action::Delete) {
            out.push_str(",\"record\":");
            record(&mut out, t, new, shown);
        }
        if let Some(old) = self.old.as_ref().filter(|_| self.action != Action::Insert) {
            out.push_str(",\"old_record\":");
            let pk_only = secure_delete && self.action == Action::Delete;
            record(&mut out, t, old, |i| shown(i) && (!pk_only || t.is_pk(i)));
        }
        out.push_str(",\"errors\":null}");
        out
    }
}

fn record(out: &mut String, table: &Table, row: &Row, include: impl Fn(usize) -> bool) {
    out.push('{');
    let mut first = true;
    for (i, (c, v)) in table.columns.iter().zip(&row.0).enumerate() {
        let Some(v) = v.as_deref().filter(|_| include(i)) else {
            continue;
        };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&Value::from(c.name.as_str()).to_string());
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::fixtures;
    use crate::filter::FilterSpec;
    use crate::join::{EventKind, Target};
    use serde_json::json;

    const DEVICE: &str = "123e4567-e89b-12d3-a456-426614174000";

    fn row(soe: &str) -> Row {
        Row(vec![
            Some(r#""8d694730-eb5a-42d9-a4b4-b375e433b33b""#.into()),
            Some(r#""2024-01-01T12:00:00+00:00""#.into()),
            Some(format!("\"{DEVICE}\"")),
            Some(soe.into()),
            Some("3".into()),
        ])
    }

    fn change(action: Action) -> Change {
        Change {
            action,
            table: Arc::new(fixtures::bess()),
            commit_timestamp: "2024-01-01T12:00:00.123Z".into(),
            new: (action != Action::Delete).then(|| row("55.5")),
            old: (action != Action::Insert).then(|| row("50")),
        }
    }

    fn binding(id: u32, event: EventKind, filter: Option<&str>) -> Binding {
        let table = fixtures::bess();
        Binding {
            id,
            event,
            targets: vec![Target {
                table: table.oid,
                filter: filter.map(|f| {
                    FilterSpec::parse(f)
                        .unwrap()
                        .compile(&table.columns)
                        .unwrap()
                }),
            }],
        }
    }

    #[test]
    fn matches_event_table_and_filter() {
        let bindings = [
            binding(
                1,
                EventKind::Insert,
                Some(&format!("device_id=eq.{DEVICE}")),
            ),
            binding(
                2,
                EventKind::Insert,
                Some("device_id=eq.00000000-0000-0000-0000-000000000000"),
            ),
            binding(3, EventKind::All, Some("soe=gt.55")),
            binding(4, EventKind::Update, None),
            Binding {
                id: 5,
                event: EventKind::All,
                targets: vec![Target {
                    table: fixtures::registry().oid,
                    filter: None,
                }],
            },
        ];
        assert_eq!(
            change(Action::Insert).matching(&bindings, false).ids,
            [1, 3]
        );
        assert_eq!(
            change(Action::Update).matching(&bindings, false).ids,
            [3, 4]
        );
        // A DELETE is filtered on the old row (soe 50).
        assert!(change(Action::Delete)
            .matching(&bindings, false)
            .ids
            .is_empty());
    }

    #[test]
    fn secure_delete_matches_only_key_filters() {
        let bindings = [
            binding(
                1,
                EventKind::Delete,
                Some(&format!("device_id=eq.{DEVICE}")),
            ),
            binding(2, EventKind::Delete, Some("soe=eq.50")),
            binding(3, EventKind::Delete, None),
        ];
        let del = change(Action::Delete);
        assert_eq!(del.matching(&bindings, false).ids, [1, 2, 3]);
        assert_eq!(del.matching(&bindings, true).ids, [1, 3]);
    }

    #[test]
    fn data_of_each_action() {
        let all = [true; 5];
        let insert: Value =
            serde_json::from_str(&change(Action::Insert).data_json(&all, true)).unwrap();
        assert_eq!(
            insert,
            json!({
                "schema": "flux", "table": "mg_bess_readings",
                "commit_timestamp": "2024-01-01T12:00:00.123Z", "type": "INSERT",
                "columns": [
                    {"name": "id", "type": "uuid"}, {"name": "time", "type": "timestamptz"},
                    {"name": "device_id", "type": "uuid"}, {"name": "soe", "type": "float8"},
                    {"name": "available_inverter_blocks", "type": "int4"}
                ],
                "record": {"id": "8d694730-eb5a-42d9-a4b4-b375e433b33b",
                           "time": "2024-01-01T12:00:00+00:00", "device_id": DEVICE,
                           "soe": 55.5, "available_inverter_blocks": 3},
                "errors": null
            })
        );
        let update: Value =
            serde_json::from_str(&change(Action::Update).data_json(&all, true)).unwrap();
        assert_eq!(update["record"]["soe"], json!(55.5));
        assert_eq!(update["old_record"]["soe"], json!(50));
        let delete: Value =
            serde_json::from_str(&change(Action::Delete).data_json(&all, false)).unwrap();
        assert!(delete.get("record").is_none());
        assert_eq!(delete["old_record"]["soe"], json!(50));
    }

    #[test]
    fn hides_columns_and_secures_deletes() {
        let visible = [true, true, true, false, true];
        let insert: Value =
            serde_json::from_str(&change(Action::Insert).data_json(&visible, true)).unwrap();
        assert!(insert["record"].get("soe").is_none());
        assert_eq!(insert["columns"].as_array().unwrap().len(), 4);
        let delete: Value =
            serde_json::from_str(&change(Action::Delete).data_json(&visible, true)).unwrap();
        assert_eq!(
            delete["old_record"],
            json!({"time": "2024-01-01T12:00:00+00:00", "device_id": DEVICE})
        );
    }

    #[test]
    fn primary_key_texts() {
        assert_eq!(
            change(Action::Insert).pk_texts().unwrap(),
            [DEVICE, "2024-01-01T12:00:00+00:00"]
        );
        assert_eq!(change(Action::Delete).pk_texts(), None);
    }
}
