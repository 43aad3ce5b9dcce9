//! The tables of the publication, as the change feed and the join handler need them.

use crate::filter::Kind;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// `pg_type.typname` (`float8`, `timestamptz`, `_int4`): what clients see in `columns`.
    pub typname: String,
    /// `format_type()` (`double precision`, `character varying(20)`): for casts in SQL.
    pub sql_type: String,
    /// The type without modifier, schema-qualified (`"pg_catalog"."bpchar"`): for casting
    /// filter values (a `varchar(3)` cast would truncate them).
    pub base_type: String,
    pub attnum: i16,
    pub kind: Kind,
    /// Its collation orders text byte by byte (C, POSIX, C.UTF-8; or it has none).
    pub byte_ordered: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order.
    pub pk: Vec<usize>,
    /// Row-level security is enabled (`relrowsecurity`).
    pub rls: bool,
}

impl Table {
    /// `"schema"."table"`, safe to splice into SQL.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn is_pk(&self, column: usize) -> bool {
        self.pk.contains(&column)
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A partition of a published table: pgoutput names the partition a row went to, never the
/// partitioned table, and subscribers know only the latter.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub schema: String,
    pub name: String,
    /// Index into [`Catalog::tables`] of the partitioned table.
    pub table: usize,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub tables: Vec<Arc<Table>>,
    /// schema → relation → index into `tables`, for the tables and their partitions: every
    /// change is looked up here, and two years of daily partitions are some 1,500 names.
    by_name: HashMap<String, HashMap<String, usize>>,
    /// Schemas that hold partitions, sorted.
    partition_schemas: Vec<String>,
}

impl Catalog {
    pub fn new(tables: Vec<Arc<Table>>, partitions: Vec<Partition>) -> Catalog {
        let mut by_name: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            by_name
                .entry(t.schema.clone())
                .or_default()
                .insert(t.name.clone(), i);
        }
        let mut partition_schemas: Vec<String> =
            partitions.iter().map(|p| p.schema.clone()).collect();
        partition_schemas.sort_unstable();
        partition_schemas.dedup();
        for p in partitions {
            by_name.entry(p.schema).or_default().insert(p.name, p.table);
        }
        Catalog {
            tables,
            by_name,
            partition_schemas,
        }
    }

    /// The published table a change of `schema.name` belongs to: the table itself or the
    /// partitioned table of a partition.
    pub fn find(&self, schema: &str, name: &str) -> Option<&Arc<Table>> {
        let i = *self.by_name.get(schema)?.get(name)?;
        self.tables.get(i)
    }

    /// Whether a change of `schema.name` may be of a partition newer than this catalog: it
    /// is in a schema that holds partitions, and unknown.
    pub fn may_be_new_partition(&self, schema: &str, name: &str) -> bool {
        self.partition_schemas
            .binary_search_by(|s| s.as_str().cmp(schema))
            .is_ok()
            && self.find(schema, name).is_none()
    }

    /// Tables a binding names; `*` matches any schema or table.
    pub fn matching(&self, schema: &str, table: &str) -> Vec<Arc<Table>> {
        self.tables
            .iter()
            .filter(|t| (schema == "*" || t.schema == schema) && (table == "*" || t.name == table))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
pub mod fixtures {
    //! A catalog shaped like the flux schema, for the pure modules' tests.
    use super::*;

    pub fn column(name: &str, typname: &str, attnum: i16) -> Column {
        Column {
            name: name.into(),
            typname: typname.into(),
            sql_type: typname.into(),
            base_type: typname.into(),
            attnum,
            kind: Kind::of(typname),
            byte_ordered: true,
        }
    }

    pub fn bess() -> Table {
        Table {
            oid: 100,
            schema: "flux".into(),
            name: "mg_bess_readings".into(),
            columns: vec![
                column("id", "uuid", 1),
                column("time", "timestamptz", 2),
                column("device_id", "uuid", 3),
                column("soe", "float8", 4),
                column("available_inverter_blocks", "int4", 5),
            ],
            pk: vec![2, 1],
            rls: true,
        }
    }

    pub fn registry() -> Table {
        Table {
            oid: 200,
            schema: "flux".into(),
            name: "mg_device_registry".into(),
            columns: vec![
                column("id", "uuid", 1),
                column("name", "text", 2),
                column("site", "text", 3),
                column("metadata", "jsonb", 4),
            ],
            pk: vec![0],
            rls: false,
        }
    }

    pub fn catalog() -> Catalog {
        Catalog::new(
            vec![Arc::new(bess()), Arc::new(registry())],
            vec![Partition {
                schema: "flux_partitions".into(),
                name: "mg_bess_readings_p20261129".into(),
                table: 0,
            }],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;

    #[test]
    fn finds_tables_by_pattern() {
        let c = catalog();
        assert_eq!(c.matching("flux", "*").len(), 2);
        assert_eq!(c.matching("*", "*").len(), 2);
        assert_eq!(c.matching("flux", "mg_bess_readings")[0].oid, 100);
        assert!(c.matching("public", "*").is_empty());
        assert!(c.find("flux", "nope").is_none());
        assert_eq!(c.find("flux", "mg_device_registry").unwrap().oid, 200);
    }

    #[test]
    fn partitions_resolve_to_their_table() {
        let c = catalog();
        let t = c
            .find("flux_partitions", "mg_bess_readings_p20261129")
            .unwrap();
        assert_eq!(
            (t.schema.as_str(), t.name.as_str()),
            ("flux", "mg_bess_readings")
        );
        assert!(!c.may_be_new_partition("flux_partitions", "mg_bess_readings_p20261129"));
        assert!(c.may_be_new_partition("flux_partitions", "mg_bess_readings_p20261130"));
        assert!(!c.may_be_new_partition("public", "other"));
    }

    #[test]
    fn quotes_and_escapes_names() {
        let mut t = registry();
        t.name = "we\"ird.name, x".into();
        assert_eq!(t.qualified(), r#""flux"."we""ird.name, x""#);
    }
}
