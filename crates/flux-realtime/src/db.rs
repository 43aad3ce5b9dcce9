//! PostgreSQL connections: a small pool for row conversion and RLS checks, and the catalog
//! queries behind [`Catalog`] and [`Access`].

use crate::catalog::{Catalog, Column, Partition, Table};
use crate::filter::Kind;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, Config, NoTls, Statement};

pub type DbError = tokio_postgres::Error;

/// What went wrong, as the server said it: a `DbError` displays only "db error" for those.
pub fn error_message(e: &DbError) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

/// Opens a connection; its I/O runs on a spawned task that ends with the connection.
pub async fn connect(url: &str) -> Result<Client, DbError> {
    let mut config: Config = url.parse()?;
    config.application_name("flux-realtime");
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        // The error, if any, also fails the pending queries, which report it.
        let _ = connection.await;
    });
    Ok(client)
}

pub struct Conn {
    pub client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    /// Prepares `sql` once per connection: the per-table queries repeat every batch.
    pub async fn prepare(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// A fixed number of lazily opened connections; a broken one (PostgreSQL restarted) is
/// reopened on next use.
pub struct Pool {
    url: String,
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
}

pub struct PoolGuard<'a>(MutexGuard<'a, Option<Conn>>);

impl std::ops::Deref for PoolGuard<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.0
            .as_ref()
            .expect("a pool guard always holds a connection")
    }
}

impl std::ops::DerefMut for PoolGuard<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.0
            .as_mut()
            .expect("a pool guard always holds a connection")
    }
}

impl Pool {
    pub fn new(url: String, size: usize) -> Pool {
        Pool {
            url,
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub async fn get(&self) -> Result<PoolGuard<'_>, DbError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        let free = (0..n).find_map(|k| self.slots[(start + k) % n].try_lock().ok());
        let mut guard = match free {
            Some(g) => g,
            None => self.slots[start % n].lock().await,
        };
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = Some(Conn {
                client: connect(&self.url).await?,
                statements: HashMap::new(),
            });
        }
        Ok(PoolGuard(guard))
    }
}

/// The published tables, with their leaf partitions. A partitioned table shows in
/// `pg_publication_tables` as itself or as its partitions (publish_via_partition_root): either
/// way it is named here by its root.
const CATALOG_SQL: &str = "
WITH published AS (
    SELECT DISTINCT coalesce(pg_partition_root(c.oid), c.oid) AS oid
    FROM pg_publication_tables pt
    JOIN pg_namespace n ON n.nspname = pt.schemaname
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
    WHERE pt.pubname = $1
)
SELECT c.oid, n.nspname::text, c.relname::text, c.relrowsecurity,
       cols.names, cols.types, cols.sql_types, cols.nums,
       coalesce(pk.names, '{}'), leaves.schemas, leaves.names, cols.byte_ordered,
       cols.base_types
FROM published p
JOIN pg_class c ON c.oid = p.oid
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (
    SELECT array_agg(a.attname::text ORDER BY a.attnum) AS names,
           array_agg(t.typname::text ORDER BY a.attnum) AS types,
           array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS sql_types,
           -- The type by its name: format_type without a modifier still says `character`,
           -- which is character(1).
           array_agg((SELECT quote_ident(tn.nspname) || '.' || quote_ident(t.typname)
                      FROM pg_namespace tn WHERE tn.oid = t.typnamespace) ORDER BY a.attnum) AS base_types,
           array_agg(a.attnum ORDER BY a.attnum) AS nums,
           -- Whether the column's collation orders text byte by byte (C, POSIX, C.UTF-8), as
           -- the server's own filter comparisons do.
           array_agg(a.attcollation = 0 OR coalesce((
               SELECT CASE WHEN co.collname = 'default'
                           THEN d.datlocprovider = 'c' AND d.datcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8')
                           ELSE co.collprovider = 'c' AND co.collcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8') END
               FROM pg_collation co, pg_database d
               WHERE co.oid = a.attcollation AND d.datname = current_database()), false)
               ORDER BY a.attnum) AS byte_ordered
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
) cols
LEFT JOIN LATERAL (
    SELECT array_agg(a.attname::text ORDER BY k.ord) AS names
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = c.oid AND i.indisprimary
) pk ON true
CROSS JOIN LATERAL (
    -- pg_inherits rather than pg_partition_tree, which locks every partition: that would take
    -- its place in a deadlock with a DROP or ATTACH of one (they lock the parent, then it).
    WITH RECURSIVE tree(relid) AS (
        SELECT inhrelid FROM pg_inherits WHERE inhparent = c.oid
        UNION ALL
        SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid
    )
    SELECT coalesce(array_agg(ln.nspname::text ORDER BY lc.relname), '{}') AS schemas,
           coalesce(array_agg(lc.relname::text ORDER BY lc.relname), '{}') AS names
    FROM tree
    JOIN pg_class lc ON lc.oid = tree.relid
    JOIN pg_namespace ln ON ln.oid = lc.relnamespace
    WHERE lc.relkind <> 'p'
) leaves
ORDER BY n.nspname, c.relname";

pub async fn load_catalog(client: &Client, publication: &str) -> Result<Catalog, DbError> {
    let rows = client.query(CATALOG_SQL, &[&publication]).await?;
    let mut tables = Vec::new();
    let mut partitions = Vec::new();
    for r in &rows {
        let names: Vec<String> = r.get(4);
        let types: Vec<String> = r.get(5);
        let sql_types: Vec<String> = r.get(6);
        let nums: Vec<i16> = r.get(7);
        let pk_names: Vec<String> = r.get(8);
        let leaf_schemas: Vec<String> = r.get(9);
        let leaf_names: Vec<String> = r.get(10);
        let byte_ordered: Vec<bool> = r.get(11);
        let base_types: Vec<String> = r.get(12);
        let columns: Vec<Column> = names
            .into_iter()
            .zip(types)
            .zip(sql_types.into_iter().zip(base_types))
            .zip(nums)
            .zip(byte_ordered)
            .map(
                |((((name, typname), (sql_type, base_type)), attnum), byte_ordered)| Column {
                    kind: Kind::of(&typname),
                    name,
                    typname,
                    sql_type,
                    base_type,
                    attnum,
                    byte_ordered,
                },
            )
            .collect();
        let pk = pk_names
            .iter()
            .filter_map(|n| columns.iter().position(|c| &c.name == n))
            .collect();
        let table = tables.len();
        partitions.extend(
            leaf_schemas
                .into_iter()
                .zip(leaf_names)
                .map(|(schema, name)| Partition {
                    schema,
                    name,
                    table,
                }),
        );
        tables.push(Arc::new(Table {
            oid: r.get(0),
            schema: r.get(1),
            name: r.get(2),
            rls: r.get(3),
            columns,
            pk,
        }));
    }
    Ok(Catalog::new(tables, partitions))
}

/// What one role may see of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Per column: may the role SELECT it. All false when the role does not exist.
    pub visible: Vec<bool>,
    /// Superuser or BYPASSRLS: row-level security does not apply.
    pub bypass_rls: bool,
}

impl Access {
    pub fn any(&self) -> bool {
        self.visible.iter().any(|&v| v)
    }
}

pub async fn load_access(client: &Client, role: &str, table: &Table) -> Result<Access, DbError> {
    let attnums: Vec<i16> = table.columns.iter().map(|c| c.attnum).collect();
    let row = client
        .query_opt(
            "SELECT r.rolsuper OR r.rolbypassrls,
                    array(SELECT coalesce(has_column_privilege(r.oid, $2::oid, a, 'SELECT'), false)
                          FROM unnest($3::int2[]) WITH ORDINALITY AS u(a, o) ORDER BY o)
             FROM pg_roles r WHERE r.rolname = $1",
            &[&role, &table.oid, &attnums],
        )
        .await?;
    Ok(match row {
        Some(r) => Access {
            bypass_rls: r.get(0),
            visible: r.get(1),
        },
        None => Access {
            visible: vec![false; table.columns.len()],
            bypass_rls: false,
        },
    })
}
