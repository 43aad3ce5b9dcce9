//! `phx_join`: the `postgres_changes` bindings a channel asks for, and the reply that echoes
//! them.
//!
//! realtime-js compares the reply entry by entry with what it sent (event, schema, table,
//! filter) and fails the subscription with "mismatch between server and client bindings" on
//! any difference, so each entry goes back exactly as received, plus an integer `id` that
//! later `postgres_changes` pushes name in `ids`.

use crate::catalog::Catalog;
use crate::filter::{Compiled, FilterSpec};
use crate::wal::Action;
use serde_json::{Map, Value};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    All,
    Insert,
    Update,
    Delete,
}

impl EventKind {
    fn parse(s: &str) -> Option<EventKind> {
        Some(match s.to_ascii_uppercase().as_str() {
            "*" => EventKind::All,
            "INSERT" => EventKind::Insert,
            "UPDATE" => EventKind::Update,
            "DELETE" => EventKind::Delete,
            _ => return None,
        })
    }

    pub fn matches(self, action: Action) -> bool {
        matches!(
            (self, action),
            (EventKind::All, _)
                | (EventKind::Insert, Action::Insert)
                | (EventKind::Update, Action::Update)
                | (EventKind::Delete, Action::Delete)
        )
    }
}

/// One table a binding covers, with its filter typed for that table.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub table: u32,
    pub filter: Option<Compiled>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub id: u32,
    pub event: EventKind,
    pub targets: Vec<Target>,
}

/// More bindings than this in one join are refused (a bound on per-change matching work).
pub const MAX_BINDINGS: usize = 100;

/// Longest `config.presence.key`.
pub const MAX_PRESENCE_KEY: usize = 255;

/// The parts of a join payload the server acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinRequest {
    pub access_token: Option<String>,
    pub postgres_changes: Vec<Map<String, Value>>,
    /// `config.broadcast.self`: the sender gets its own broadcasts.
    pub broadcast_self: bool,
    /// `config.broadcast.ack`: each broadcast push is answered.
    pub broadcast_ack: bool,
    /// `config.presence.key`; empty or absent: the server makes one.
    pub presence_key: Option<String>,
    /// `config.presence.enabled` (supabase-js sets it when the app listens to presence).
    pub presence_enabled: bool,
    /// `config.private`.
    pub private: bool,
    /// `config.postgres_changes_options` `{wait: true, timeout}` (supabase-js ≥ 2.11x): hold the
    /// reply until the change feed streams, at most this long (already clamped).
    pub wait_for_changes: Option<Duration>,
}

/// How long a join with `postgres_changes_options.wait` waits by default, and at most
/// (Supabase's defaults: 15 s, clamped to 20 s).
pub const DEFAULT_CHANGES_WAIT: Duration = Duration::from_secs(15);
pub const MAX_CHANGES_WAIT: Duration = Duration::from_secs(20);

/// A join refused; the text becomes the reply's `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinError(pub String);

impl JoinError {
    fn new(code: &str, message: impl std::fmt::Display) -> JoinError {
        JoinError(format!("{code}: {message}"))
    }
}

pub fn parse(payload: &Value) -> Result<JoinRequest, JoinError> {
    let bad = |m: &str| JoinError::new("InvalidJoinPayload", m);
    let payload = match payload {
        Value::Object(p) => p,
        Value::Null => &Map::new(),
        _ => return Err(bad("payload must be an object")),
    };
    let access_token = match payload.get("access_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(_) => return Err(bad("access_token must be a string")),
    };
    let empty = Map::new();
    let config = match payload.get("config") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(config)) => config,
        Some(_) => return Err(bad("config must be an object")),
    };
    let changes = config.get("postgres_changes");
    let section = |name: &str| match config.get(name) {
        None | Some(Value::Null) => Ok(&empty),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(bad(&format!("config.{name} must be an object"))),
    };
    let flag = |section: &Map<String, Value>, name: &str, path: &str| match section.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(&format!("{path} must be true or false"))),
    };
    let broadcast = section("broadcast")?;
    let presence = section("presence")?;
    let presence_key = match presence.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if k.is_empty() => None,
        Some(Value::String(k)) if k.len() <= MAX_PRESENCE_KEY => Some(k.clone()),
        Some(Value::String(_)) => {
            return Err(bad(&format!(
                "config.presence.key is longer than {MAX_PRESENCE_KEY} bytes"
            )))
        }
        Some(_) => return Err(bad("config.presence.key must be a string")),
    };
    let postgres_changes = match changes {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries
            .iter()
            .enumerate()
            .map(|(i, e)| match e {
                Value::Object(m) => Ok(m.clone()),
                _ => Err(bad(&format!(
                    "config.postgres_changes[{i}] must be an object"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("config.postgres_changes must be an array")),
    };
    if postgres_changes.len() > MAX_BINDINGS {
        return Err(bad(&format!(
            "at most {MAX_BINDINGS} postgres_changes bindings per channel"
        )));
    }
    Ok(JoinRequest {
        access_token,
        postgres_changes,
        broadcast_self: flag(broadcast, "self", "config.broadcast.self")?,
        broadcast_ack: flag(broadcast, "ack", "config.broadcast.ack")?,
        presence_key,
        presence_enabled: flag(presence, "enabled", "config.presence.enabled")?,
        private: flag(config, "private", "config.private")?,
        wait_for_changes: changes_wait(section("postgres_changes_options")?)
            .map_err(|m| bad(&m))?,
    })
}

/// `postgres_changes_options`: `wait` (boolean) and `timeout` (milliseconds).
fn changes_wait(options: &Map<String, Value>) -> Result<Option<Duration>, String> {
    match options.get("wait") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => {}
        Some(_) => return Err("config.postgres_changes_options.wait must be true or false".into()),
    }
    let wait = match options.get("timeout") {
        None | Some(Value::Null) => DEFAULT_CHANGES_WAIT,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(ms) if ms > 0.0 && ms.is_finite() => Duration::from_secs_f64(ms.min(1e9) / 1000.0),
            _ => return Err(
                "config.postgres_changes_options.timeout must be a positive number of milliseconds"
                    .into(),
            ),
        },
        Some(_) => {
            return Err(
                "config.postgres_changes_options.timeout must be a positive number of milliseconds"
                    .into(),
            )
        }
    };
    Ok(Some(wait.min(MAX_CHANGES_WAIT)))
}

fn text_field<'a>(
    entry: &'a Map<String, Value>,
    key: &str,
    i: usize,
) -> Result<Option<&'a str>, JoinError> {
    match entry.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JoinError::new(
            "InvalidBinding",
            format!("postgres_changes[{i}].{key} must be a string"),
        )),
    }
}

/// Resolves the requested bindings against the publication's tables. Returns the bindings and
/// the reply's `postgres_changes` array (JSON text). `next_id` hands out binding ids.
pub fn resolve(
    entries: &[Map<String, Value>],
    catalog: &Catalog,
    publication: &str,
    mut next_id: impl FnMut() -> u32,
) -> Result<(Vec<Binding>, String), JoinError> {
    let mut bindings = Vec::with_capacity(entries.len());
    let mut echoed = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let event = text_field(entry, "event", i)?
            .and_then(EventKind::parse)
            .ok_or_else(|| {
                JoinError::new(
                    "InvalidBinding",
                    format!("postgres_changes[{i}].event must be INSERT, UPDATE, DELETE or *"),
                )
            })?;
        let schema = text_field(entry, "schema", i)?.ok_or_else(|| {
            JoinError::new(
                "InvalidBinding",
                format!("postgres_changes[{i}].schema is required"),
            )
        })?;
        let table = text_field(entry, "table", i)?.unwrap_or("*");
        let filter = match text_field(entry, "filter", i)? {
            None | Some("") => None,
            Some(f) => Some(FilterSpec::parse(f).map_err(|e| JoinError::new("InvalidFilter", e))?),
        };
        let tables = catalog.matching(schema, table);
        if tables.is_empty() {
            return Err(JoinError::new(
                "UnknownTable",
                format!("no table {schema}.{table} in publication {publication}"),
            ));
        }
        let targets = tables
            .iter()
            .map(|t| {
                let filter = filter
                    .as_ref()
                    .map(|f| {
                        f.compile(&t.columns).map_err(|e| {
                            JoinError::new(
                                "InvalidFilter",
                                format!("{e} in {}.{}", t.schema, t.name),
                            )
                        })
                    })
                    .transpose()?;
                Ok(Target {
                    table: t.oid,
                    filter,
                })
            })
            .collect::<Result<Vec<_>, JoinError>>()?;
        let id = next_id();
        let mut echo = entry.clone();
        echo.insert("id".into(), Value::from(id));
        echoed.push(Value::Object(echo));
        bindings.push(Binding { id, event, targets });
    }
    Ok((bindings, Value::Array(echoed).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::fixtures::catalog;
    use serde_json::json;

    fn entries(v: Value) -> Vec<Map<String, Value>> {
        parse(&json!({"config": {"postgres_changes": v}}))
            .unwrap()
            .postgres_changes
    }

    fn counter() -> impl FnMut() -> u32 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn parses_the_supabase_js_join_payload() {
        let req = parse(&json!({
            "config": {
                "broadcast": {"ack": false, "self": false},
                "presence": {"key": "", "enabled": false},
                "postgres_changes": [{"event": "INSERT", "schema": "flux", "table": "mg_bess_readings"}],
                "private": false
            },
            "access_token": "tok"
        }))
        .unwrap();
        assert_eq!(req.access_token.as_deref(), Some("tok"));
        assert_eq!(req.postgres_changes.len(), 1);
        assert!(parse(&json!({"config": {"broadcast": {}}}))
            .unwrap()
            .postgres_changes
            .is_empty());
        assert!(parse(&json!({"config": {"postgres_changes": {}}})).is_err());
        assert!(parse(&json!({"access_token": 5})).is_err());
        let many = vec![json!({"event": "*", "schema": "flux"}); MAX_BINDINGS + 1];
        assert!(parse(&json!({"config": {"postgres_changes": many}})).is_err());
    }

    #[test]
    fn echoes_entries_exactly_with_ids() {
        let sent = json!([
            {"event": "INSERT", "schema": "flux", "table": "mg_bess_readings",
             "filter": "device_id=eq.123e4567-e89b-12d3-a456-426614174000"},
            {"event": "*", "schema": "flux"},
            {"event": "delete", "schema": "flux", "table": "mg_device_registry", "filter": null, "extra": [1]}
        ]);
        let (bindings, reply) =
            resolve(&entries(sent.clone()), &catalog(), "pub", counter()).unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        let mut expected = sent;
        for (i, e) in expected.as_array_mut().unwrap().iter_mut().enumerate() {
            e["id"] = json!(i + 1);
        }
        assert_eq!(reply, expected);
        assert_eq!(bindings.iter().map(|b| b.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            bindings[1].targets.len(),
            2,
            "table absent = every table of the schema"
        );
        assert_eq!(bindings[2].event, EventKind::Delete);
        assert!(bindings[0].targets[0].filter.is_some());
    }

    #[test]
    fn refuses_bad_bindings_with_a_reason() {
        for (entry, code) in [
            (
                json!({"event": "UPSERT", "schema": "flux"}),
                "InvalidBinding",
            ),
            (json!({"schema": "flux"}), "InvalidBinding"),
            (json!({"event": "*"}), "InvalidBinding"),
            (
                json!({"event": "*", "schema": "flux", "table": 1}),
                "InvalidBinding",
            ),
            (
                json!({"event": "*", "schema": "flux", "table": "nope"}),
                "UnknownTable",
            ),
            (json!({"event": "*", "schema": "public"}), "UnknownTable"),
            (
                json!({"event": "*", "schema": "flux", "table": "mg_bess_readings", "filter": "soe=like.1"}),
                "InvalidFilter",
            ),
            (
                json!({"event": "*", "schema": "flux", "table": "mg_bess_readings", "filter": "nope=eq.1"}),
                "InvalidFilter",
            ),
            // With table *, the filter must make sense in every table.
            (
                json!({"event": "*", "schema": "flux", "filter": "soe=eq.1"}),
                "InvalidFilter",
            ),
        ] {
            let err = resolve(
                &entries(json!([entry.clone()])),
                &catalog(),
                "pub",
                counter(),
            )
            .unwrap_err();
            assert!(
                err.0.starts_with(&format!("{code}: ")),
                "{entry}: {}",
                err.0
            );
        }
    }

    #[test]
    fn broadcast_presence_and_private_config() {
        let r = parse(&json!({"config": {"broadcast": {"self": true, "ack": true},
            "presence": {"key": "gw-7", "enabled": true}, "private": true}}))
        .unwrap();
        assert!(r.broadcast_self && r.broadcast_ack && r.presence_enabled && r.private);
        assert_eq!(r.presence_key.as_deref(), Some("gw-7"));
        let blank = parse(&json!({"config": {"presence": {"key": ""}}})).unwrap();
        assert_eq!(
            blank.presence_key, None,
            "the server makes a key for an empty one"
        );
        for bad in [
            json!({"broadcast": {"self": "yes"}}),
            json!({"presence": {"key": "k".repeat(MAX_PRESENCE_KEY + 1)}}),
            json!({"presence": {"key": 7}}),
            json!({"presence": []}),
            json!({"private": 1}),
        ] {
            let e = parse(&json!({ "config": bad })).unwrap_err().0;
            assert!(e.starts_with("InvalidJoinPayload: config."), "{bad}: {e}");
        }
    }

    #[test]
    fn the_wait_option_is_read_and_clamped() {
        let wait = |options: Value| {
            parse(&json!({"config": {"postgres_changes_options": options}}))
                .map(|r| r.wait_for_changes)
        };
        assert_eq!(wait(json!({})).unwrap(), None);
        assert_eq!(wait(json!({"wait": false, "timeout": 5})).unwrap(), None);
        assert_eq!(
            wait(json!({"wait": true})).unwrap(),
            Some(DEFAULT_CHANGES_WAIT)
        );
        assert_eq!(
            wait(json!({"wait": true, "timeout": 1500})).unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait(json!({"wait": true, "timeout": 1e12})).unwrap(),
            Some(MAX_CHANGES_WAIT)
        );
        for bad in [
            json!({"wait": "yes"}),
            json!({"wait": true, "timeout": -1}),
            json!({"wait": true, "timeout": "5"}),
        ] {
            assert!(
                wait(bad.clone())
                    .unwrap_err()
                    .0
                    .starts_with("InvalidJoinPayload: config.postgres_changes_options"),
                "{bad}"
            );
        }
        assert!(parse(&json!({"config": {"postgres_changes_options": 3}})).is_err());
    }

    #[test]
    fn event_kinds() {
        assert!(EventKind::All.matches(Action::Delete));
        assert!(EventKind::Insert.matches(Action::Insert));
        assert!(!EventKind::Insert.matches(Action::Update));
        assert!(EventKind::Delete.matches(Action::Delete));
    }
}
