//! From a batch of WAL changes to frames in the subscribers' send queues.
//!
//! Per batch: (1) PostgreSQL re-types the changed rows of each subscribed table in one query
//! (`to_jsonb` of `jsonb_populate_recordset`), so values are exactly what PostgREST returns;
//! (2) every change is matched against every channel's bindings and filters, PostgreSQL
//! evaluating in one query per table the filters only it can (see `filter`); (3) row-level
//! security decides who may see each row, by selecting the rows by primary key as the
//! subscriber's role with its JWT claims; (4) frames are queued in commit order.

use crate::catalog::{quote_ident, Table};
use crate::change::{Change, Row};
use crate::db::{error_message, Access, DbError};
use crate::feed::Batch;
use crate::filter::Compiled;
use crate::hub::ChannelSub;
use crate::protocol::{self, Outgoing};
use crate::state::{RlsCheck, State};
use crate::time;
use crate::wal::{self, Action, WalChange};
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

/// How long a changed row may take to become visible to new snapshots (see [`await_visible`]).
const VISIBILITY_WAIT: Duration = Duration::from_millis(50);

pub async fn run(state: Arc<State>, mut batches: mpsc::Receiver<Batch>) {
    while let Some(batch) = batches.recv().await {
        if let Err(e) = dispatch(&state, batch).await {
            log!("dispatch: batch dropped: {e}");
        }
    }
}

/// One change that one channel wants (bindings and filters matched).
struct Candidate<'b> {
    change: usize,
    sub: usize,
    ids: Vec<u32>,
    /// Bindings whose filter PostgreSQL evaluates before they join `ids`.
    ask: Vec<(u32, &'b Compiled)>,
    access: Arc<Access>,
    /// Row-level security applies to this subscriber on this table.
    secure: bool,
}

impl Candidate<'_> {
    /// A deleted row cannot be looked up: DELETEs go out with their key only instead.
    fn needs_check(&self, changes: &[Option<Change>]) -> bool {
        self.secure
            && changes[self.change]
                .as_ref()
                .is_some_and(|c| c.action != Action::Delete)
    }
}

async fn dispatch(state: &State, batch: Batch) -> Result<(), String> {
    let snapshot = state.hub.snapshot();
    let subs = &snapshot.subs;
    if subs.is_empty() {
        return Ok(());
    }
    let catalog = state.catalog();
    let wanted = &snapshot.tables;

    // (1) Re-type the rows of the tables someone listens to, one query per table.
    let mut by_table: BTreeMap<u32, (Arc<Table>, Vec<usize>)> = BTreeMap::new();
    for (i, c) in batch.changes.iter().enumerate() {
        if let Some(t) = catalog
            .find(&c.schema, &c.table)
            .filter(|t| wanted.contains_key(&t.oid))
        {
            by_table
                .entry(t.oid)
                .or_insert_with(|| (t.clone(), Vec::new()))
                .1
                .push(i);
        }
    }
    let conversions = join_all(
        by_table
            .values()
            .map(|(table, idx)| convert(state, table, idx.iter().map(|&i| &batch.changes[i]))),
    )
    .await;
    let mut changes: Vec<Option<Change>> = vec![None; batch.changes.len()];
    let mut not_yet_visible: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for ((table, idx), converted) in by_table.values().zip(conversions) {
        let converted =
            converted.map_err(|e| format!("converting rows of {}: {e}", table.qualified()))?;
        for (&i, (change, visible)) in idx.iter().zip(converted) {
            if !visible && change.action != Action::Delete {
                not_yet_visible.entry(table.oid).or_default().push(i);
            }
            changes[i] = Some(change);
        }
    }

    // (2) Look up each role's rights on each table once; match bindings and filters, for the
    // channels the snapshot's index names for each change.
    let mut rights: HashMap<(&str, u32), Arc<Access>> = HashMap::new();
    for (table, _) in by_table.values() {
        for role in &snapshot.tables[&table.oid].roles {
            let access = state
                .access(role, table)
                .await
                .map_err(|e| format!("reading privileges of {role}: {e}"))?;
            rights.insert((role.as_str(), table.oid), access);
        }
    }
    let mut candidates = Vec::new();
    for (ci, change) in changes.iter().enumerate() {
        let Some(change) = change else { continue };
        let Some(table_subs) = snapshot.tables.get(&change.table.oid) else {
            continue;
        };
        for si in table_subs.candidates(change) {
            let sub = &subs[si];
            let Some(access) = rights.get(&(sub.auth.role.as_str(), change.table.oid)) else {
                continue;
            };
            if !access.any() {
                continue;
            }
            let secure = change.table.rls && !access.bypass_rls;
            let matching = change.matching(&sub.bindings, secure);
            if !matching.ids.is_empty() || !matching.ask.is_empty() {
                candidates.push(Candidate {
                    change: ci,
                    sub: si,
                    ids: matching.ids,
                    ask: matching.ask,
                    access: access.clone(),
                    secure,
                });
            }
        }
    }
    if candidates.iter().any(|c| !c.ask.is_empty()) {
        let answers = evaluate_in_database(state, &changes, &candidates).await;
        for c in &mut candidates {
            for (id, filter) in std::mem::take(&mut c.ask) {
                if answers.contains(&(c.change, filter_address(filter))) {
                    c.ids.push(id);
                }
            }
            c.ids.sort_unstable();
        }
        candidates.retain(|c| !c.ids.is_empty());
    }

    // (3) Row-level security.
    let to_check: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.needs_check(&changes))
        .collect();
    let visible = if to_check.is_empty() {
        HashSet::new()
    } else {
        await_visible(state, &changes, not_yet_visible).await;
        match state.config.rls_check {
            RlsCheck::Grouped => check_grouped(state, subs, &changes, &to_check).await,
            RlsCheck::PerSubscriber => check_per_subscriber(state, subs, &changes, &to_check).await,
        }
    };

    // (4) Queue frames in commit order; a change's data is serialized once per column set.
    let mut data_cache: HashMap<(usize, *const Access, bool), Arc<String>> = HashMap::new();
    for c in &candidates {
        if c.needs_check(&changes) && !visible.contains(&(c.change, c.sub)) {
            continue;
        }
        let Some(change) = &changes[c.change] else {
            continue;
        };
        let data = data_cache
            .entry((c.change, Arc::as_ptr(&c.access), c.secure))
            .or_insert_with(|| Arc::new(change.data_json(&c.access.visible, c.secure)))
            .clone();
        let sub = &subs[c.sub];
        if !state.admit_event(
            &sub.auth.role,
            &sub.conn,
            &sub.topic,
            sub.join_ref.as_deref(),
        ) {
            continue;
        }
        let ids = c
            .ids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let payload = format!("{{\"ids\":[{ids}],\"data\":{data}}}");
        sub.conn.push(protocol::encode(
            sub.conn.vsn,
            &Outgoing {
                join_ref: sub.join_ref.as_deref(),
                msg_ref: None,
                topic: &sub.topic,
                event: "postgres_changes",
                payload: &payload,
            },
        ));
    }
    Ok(())
}

/// Has PostgreSQL type the rows: their text forms in, `to_jsonb` per column out. Also
/// says, per change, whether its new row is visible to a snapshot taken now.
async fn convert<'a>(
    state: &State,
    table: &Arc<Table>,
    changes: impl Iterator<Item = &'a WalChange>,
) -> Result<Vec<(Change, bool)>, DbError> {
    let changes: Vec<&WalChange> = changes.collect();
    // The rows to convert: each change's new row, then its old row.
    let mut objects = Vec::with_capacity(changes.len() * 2);
    for c in &changes {
        if c.action != Action::Delete {
            objects.push(wal::populate_object(&c.new, &c.old));
        }
        if c.action != Action::Insert {
            objects.push(wal::populate_object(&c.old, &[]));
        }
    }
    let columns = table
        .columns
        .iter()
        .map(|c| format!("to_jsonb(r.{})::text", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let exists = if table.pk.is_empty() {
        "false".to_owned()
    } else {
        let key = table
            .pk
            .iter()
            .map(|&i| {
                let c = quote_ident(&table.columns[i].name);
                format!("x.{c} = r.{c}")
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        format!("EXISTS (SELECT 1 FROM {} x WHERE {key})", table.qualified())
    };
    let sql = format!(
        "SELECT {columns}, {exists} FROM jsonb_populate_recordset(NULL::{}, $1::text::jsonb) r",
        table.qualified()
    );
    let input = format!("[{}]", objects.join(","));
    let mut conn = state.pool.get().await?;
    let stmt = conn.prepare(&sql).await?;
    let rows = conn.client.query(&stmt, &[&input]).await?;
    drop(conn);

    // A column absent from the WAL (an old row under REPLICA IDENTITY DEFAULT) stays absent
    // rather than turning into a null.
    let to_row = |values: &[wal::WalValue], fallback: &[wal::WalValue], r: &tokio_postgres::Row| {
        let present: HashSet<&str> = values
            .iter()
            .chain(fallback)
            .map(|v| v.name.as_str())
            .collect();
        Row(table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                present.contains(c.name.as_str()).then(|| {
                    r.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "null".into())
                })
            })
            .collect())
    };
    let visible_column = table.columns.len();
    let mut rows = rows.iter();
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        let mut visible = false;
        let new = if c.action == Action::Delete {
            None
        } else {
            rows.next().map(|r| {
                visible = r.get(visible_column);
                to_row(&c.new, &c.old, r)
            })
        };
        let old = if c.action == Action::Insert {
            None
        } else {
            rows.next().map(|r| to_row(&c.old, &[], r))
        };
        let change = Change {
            action: c.action,
            table: table.clone(),
            commit_timestamp: time::format_millis_utc(c.commit_micros),
            new,
            old,
        };
        out.push((change, visible));
    }
    Ok(out)
}

/// Waits (briefly) until the changed rows are visible to new snapshots.
///
/// A transaction's commit record reaches the WAL, and so the feed, a moment before the
/// transaction is marked committed for other sessions: looked up in that moment, a row would
/// seem hidden and its change would be lost. Rows the conversion query could not see are
/// looked up again (as the superuser, so only visibility counts) until they appear or
/// [`VISIBILITY_WAIT`] passes; a row still missing by then was deleted or re-keyed since.
async fn await_visible(
    state: &State,
    changes: &[Option<Change>],
    mut pending: BTreeMap<u32, Vec<usize>>,
) {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    while !pending.is_empty() && started.elapsed() < VISIBILITY_WAIT {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(10));
        for (oid, waiting) in std::mem::take(&mut pending) {
            let Some(table) = waiting
                .first()
                .and_then(|&i| changes[i].as_ref())
                .map(|c| c.table.clone())
            else {
                continue;
            };
            let keys = pk_keys(changes, waiting.iter().copied());
            match visible_rows(state, None, &table, &keys).await {
                Ok(seen) => {
                    let seen: HashSet<usize> = seen.into_iter().collect();
                    let still: Vec<usize> =
                        waiting.into_iter().filter(|i| !seen.contains(i)).collect();
                    if !still.is_empty() {
                        pending.insert(oid, still);
                    }
                }
                Err(e) => log!(
                    "visibility check on {} failed: {}",
                    table.qualified(),
                    error_message(&e)
                ),
            }
        }
    }
}

/// (change index, primary key as text) of the given changes' new rows.
fn pk_keys(
    changes: &[Option<Change>],
    idx: impl Iterator<Item = usize>,
) -> Vec<(usize, Vec<String>)> {
    idx.filter_map(|ci| Some((ci, changes[ci].as_ref()?.pk_texts()?)))
        .collect()
}

/// A query returning which of a set of keys are visible (`batched`: arrays of keys with their
/// change index in `$1`), or whether one key is (`$1..`, as text).
fn check_sql(table: &Table, batched: bool) -> String {
    let cond = table
        .pk
        .iter()
        .enumerate()
        .map(|(k, &col)| {
            let c = &table.columns[col];
            let value = if batched {
                format!("k.v{k}")
            } else {
                format!("${}::text", k + 1)
            };
            format!("x.{} = {value}::{}", quote_ident(&c.name), c.sql_type)
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    if batched {
        let arrays = (0..table.pk.len())
            .map(|k| format!("${}::text[]", k + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let names = (0..table.pk.len())
            .map(|k| format!("v{k}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT k.i FROM unnest($1::int4[], {arrays}) AS k(i, {names}) \
             WHERE EXISTS (SELECT 1 FROM {} x WHERE {cond})",
            table.qualified()
        )
    } else {
        format!("SELECT 1 FROM {} x WHERE {cond}", table.qualified())
    }
}

/// The (change, filter address) pairs among the candidates' questions whose filter holds, as
/// PostgreSQL evaluates it: per table, its changed rows once and each distinct filter with the
/// changes it is asked about.
async fn evaluate_in_database(
    state: &State,
    changes: &[Option<Change>],
    candidates: &[Candidate<'_>],
) -> HashSet<(usize, usize)> {
    let mut by_table: BTreeMap<u32, (Arc<Table>, Vec<Question>)> = BTreeMap::new();
    for c in candidates {
        let Some(change) = &changes[c.change] else {
            continue;
        };
        let (_, questions) = by_table
            .entry(change.table.oid)
            .or_insert_with(|| (change.table.clone(), Vec::new()));
        for &(_, filter) in &c.ask {
            let i = match questions.iter().position(|q| q.filter == filter) {
                Some(i) => i,
                None => {
                    questions.push(Question {
                        filter,
                        changes: BTreeSet::new(),
                        asked_by: HashSet::new(),
                    });
                    questions.len() - 1
                }
            };
            questions[i].changes.insert(c.change);
            questions[i].asked_by.insert(filter_address(filter));
        }
    }
    let queries = by_table.values().map(|(table, questions)| async move {
        let mut answers = Vec::new();
        for chunk in questions.chunks(FILTERS_PER_QUERY) {
            let held = match filter_query(state, table, changes, chunk).await {
                Ok(held) => held,
                // One filter's error (a type that cannot compare after all, a catalog change)
                // must not cost the others their deliveries: ask each alone.
                Err(_) if chunk.len() > 1 => {
                    let mut held = Vec::new();
                    for (i, question) in chunk.iter().enumerate() {
                        let alone = std::slice::from_ref(question);
                        match filter_query(state, table, changes, alone).await {
                            Ok(found) => held.extend(found.into_iter().map(|(_, c)| (i, c))),
                            Err(e) => log_filter_error(table, &e),
                        }
                    }
                    held
                }
                Err(e) => {
                    log_filter_error(table, &e);
                    Vec::new()
                }
            };
            answers.extend(held.into_iter().flat_map(|(i, change)| {
                chunk[i]
                    .asked_by
                    .iter()
                    .map(move |&address| (change, address))
            }));
        }
        answers
    });
    join_all(queries).await.into_iter().flatten().collect()
}

/// One distinct filter of a table that PostgreSQL evaluates for a batch.
struct Question<'c> {
    filter: &'c Compiled,
    /// The changes it is asked about.
    changes: BTreeSet<usize>,
    /// The addresses of the equal filters of every channel that asked.
    asked_by: HashSet<usize>,
}

/// Distinct filters per query: each takes two parameters, of PostgreSQL's 65,535.
const FILTERS_PER_QUERY: usize = 500;

fn log_filter_error(table: &Table, e: &DbError) {
    log!(
        "filter evaluation on {} failed: {}",
        table.qualified(),
        error_message(e)
    );
}

/// A filter's identity within one batch (a plain number keeps the dispatch future `Send`).
fn filter_address(filter: &Compiled) -> usize {
    filter as *const Compiled as usize
}

/// One query for some of a table's filter questions: the changed rows, each once, as the
/// table's row type; then per filter, the rows asked about that satisfy it. Returns (index
/// into `questions`, change index) of each that does.
async fn filter_query(
    state: &State,
    table: &Table,
    changes: &[Option<Change>],
    questions: &[Question<'_>],
) -> Result<Vec<(usize, usize)>, DbError> {
    let asked: BTreeSet<usize> = questions
        .iter()
        .flat_map(|q| q.changes.iter().copied())
        .collect();
    let indexes: Vec<i32> = asked.iter().map(|&ci| ci as i32).collect();
    let rows: Vec<String> = asked
        .iter()
        .map(|&ci| {
            changes[ci]
                .as_ref()
                .map(Change::filter_row_json)
                .unwrap_or_default()
        })
        .collect();
    let mut branches = Vec::with_capacity(questions.len());
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(indexes), Box::new(rows)];
    for (i, question) in questions.iter().enumerate() {
        let (condition, values) = question
            .filter
            .sql_condition(params.len() + 2)
            .expect("only filters PostgreSQL evaluates are asked");
        let asked_here: Vec<i32> = question.changes.iter().map(|&ci| ci as i32).collect();
        branches.push(format!(
            "SELECT {i}, x.{POSITION} FROM unnest(${}::int4[]) AS a(i) JOIN x ON x.{POSITION} = a.i WHERE {condition}",
            params.len() + 1
        ));
        params.push(Box::new(asked_here));
        params.push(Box::new(values));
    }
    let sql = format!(
        "WITH x AS MATERIALIZED (SELECT k.i AS {POSITION}, p.* \
         FROM unnest($1::int4[], $2::text[]) AS k(i, r) \
         CROSS JOIN LATERAL jsonb_populate_record(NULL::{}, k.r::jsonb) AS p) {}",
        table.qualified(),
        branches.join(" UNION ALL ")
    );
    let params: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let conn = state.pool.get().await?;
    let found = conn.client.query(&sql, &params).await?;
    Ok(found
        .iter()
        .map(|r| (r.get::<_, i32>(0) as usize, r.get::<_, i32>(1) as usize))
        .collect())
}

/// The changed row's position in a filter query, named so as not to meet a column's name.
const POSITION: &str = "\"flux.change\"";

/// Checks at join that PostgreSQL accepts a filter it will evaluate: the value's syntax, and
/// that the column's type has the operator, on values that are not NULL. `Err` carries
/// PostgreSQL's message.
pub async fn check_filter(state: &State, table: &Table, filter: &Compiled) -> Result<(), String> {
    let Some((condition, values)) = filter.sql_condition(1) else {
        return Ok(());
    };
    let column = &table.columns[filter.column];
    let sql = format!(
        "SELECT {condition} FROM (SELECT ($1::text[])[1]::{} AS {}) AS x",
        column.base_type,
        quote_ident(&column.name)
    );
    let conn = state.check_pool.get().await.map_err(|e| e.to_string())?;
    conn.client
        .query(&sql, &[&values])
        .await
        .map(drop)
        .map_err(|e| error_message(&e))
}

const SET_CLAIMS: &str =
    "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true)";

/// Grouped mode: one query per (role, claims, table) for the whole batch, all concurrently.
async fn check_grouped(
    state: &State,
    subs: &[Arc<ChannelSub>],
    changes: &[Option<Change>],
    candidates: &[&Candidate<'_>],
) -> HashSet<(usize, usize)> {
    // (role, claims, table) → the changes to check, each with the channels awaiting it.
    type Group<'s> = (BTreeMap<usize, Vec<usize>>, &'s Arc<Table>);
    let mut groups: BTreeMap<(&str, &str, u32), Group> = BTreeMap::new();
    for c in candidates {
        let Some(change) = &changes[c.change] else {
            continue;
        };
        let auth = &subs[c.sub].auth;
        groups
            .entry((&auth.role, &auth.claims, change.table.oid))
            .or_insert_with(|| (BTreeMap::new(), &change.table))
            .0
            .entry(c.change)
            .or_default()
            .push(c.sub);
    }
    let checks = groups
        .iter()
        .map(|((role, claims, _), (waiting, table))| async move {
            let keys = pk_keys(changes, waiting.keys().copied());
            let seen = match visible_rows(state, Some((role, claims)), table, &keys).await {
                Ok(seen) => seen,
                Err(e) => {
                    log!(
                        "rls check on {} as {role} failed: {}",
                        table.qualified(),
                        error_message(&e)
                    );
                    Vec::new()
                }
            };
            seen.into_iter()
                .flat_map(|ci| {
                    waiting
                        .get(&ci)
                        .into_iter()
                        .flatten()
                        .map(move |&si| (ci, si))
                })
                .collect::<Vec<_>>()
        });
    join_all(checks).await.into_iter().flatten().collect()
}

/// The changes among `keys` (change index, primary key as text) whose row is visible: to
/// `as_role` (role, claims) under row-level security, or, without it, to this superuser.
async fn visible_rows(
    state: &State,
    as_role: Option<(&str, &str)>,
    table: &Table,
    keys: &[(usize, Vec<String>)],
) -> Result<Vec<usize>, DbError> {
    if keys.is_empty() || table.pk.is_empty() {
        return Ok(Vec::new());
    }
    let indexes: Vec<i32> = keys.iter().map(|(ci, _)| *ci as i32).collect();
    let columns: Vec<Vec<&str>> = (0..table.pk.len())
        .map(|k| keys.iter().map(|(_, pk)| pk[k].as_str()).collect())
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&indexes];
    params.extend(columns.iter().map(|c| c as &(dyn ToSql + Sync)));
    let mut conn = state.pool.get().await?;
    let check = conn.prepare(&check_sql(table, true)).await?;
    let rows = match as_role {
        None => conn.client.query(&check, &params).await?,
        Some((role, claims)) => {
            let set = conn.prepare(SET_CLAIMS).await?;
            let tx = conn.client.transaction().await?;
            tx.execute(&set, &[&role, &claims]).await?;
            let rows = tx.query(&check, &params).await?;
            tx.commit().await?;
            rows
        }
    };
    Ok(rows.iter().map(|r| r.get::<_, i32>(0) as usize).collect())
}

/// Baseline mode: every (change, channel) pair on its own, sequentially on one connection.
async fn check_per_subscriber(
    state: &State,
    subs: &[Arc<ChannelSub>],
    changes: &[Option<Change>],
    candidates: &[&Candidate<'_>],
) -> HashSet<(usize, usize)> {
    let mut visible = HashSet::new();
    for c in candidates {
        let Some(change) = &changes[c.change] else {
            continue;
        };
        let Some(pk) = change.pk_texts().filter(|pk| !pk.is_empty()) else {
            continue;
        };
        let auth = &subs[c.sub].auth;
        let result: Result<bool, DbError> = async {
            let mut conn = state.pool.get().await?;
            let set = conn.prepare(SET_CLAIMS).await?;
            let check = conn.prepare(&check_sql(&change.table, false)).await?;
            let tx = conn.client.transaction().await?;
            tx.execute(&set, &[&auth.role, &auth.claims]).await?;
            let params: Vec<&(dyn ToSql + Sync)> =
                pk.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let found = tx.query_opt(&check, &params).await?.is_some();
            tx.commit().await?;
            Ok(found)
        }
        .await;
        match result {
            Ok(true) => {
                visible.insert((c.change, c.sub));
            }
            Ok(false) => {}
            Err(e) => log!(
                "rls check on {} as {} failed: {}",
                change.table.qualified(),
                auth.role,
                error_message(&e)
            ),
        }
    }
    visible
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::fixtures;

    #[test]
    fn check_queries() {
        let t = fixtures::bess();
        assert_eq!(
            check_sql(&t, true),
            "SELECT k.i FROM unnest($1::int4[], $2::text[], $3::text[]) AS k(i, v0, v1) \
             WHERE EXISTS (SELECT 1 FROM \"flux\".\"mg_bess_readings\" x \
             WHERE x.\"device_id\" = k.v0::uuid AND x.\"time\" = k.v1::timestamptz)"
        );
        assert_eq!(
            check_sql(&t, false),
            "SELECT 1 FROM \"flux\".\"mg_bess_readings\" x \
             WHERE x.\"device_id\" = $1::text::uuid AND x.\"time\" = $2::text::timestamptz"
        );
    }
}
