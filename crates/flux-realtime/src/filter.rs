//! `postgres_changes` filters: `column=op.value`, compared with PostgreSQL's semantics.
//!
//! A filter is parsed once when a channel joins ([`FilterSpec::parse`]) and compiled against
//! each table it applies to ([`FilterSpec::compile`]). Where this module's comparison is
//! PostgreSQL's own (numbers, booleans, uuids, times, and text under a byte-order collation),
//! the value is typed here, rejected as PostgreSQL would reject it, and evaluated against the
//! `to_jsonb` text of a changed row's column ([`Compiled::verdict`]). Every other column
//! (other collations, citext, bpchar, jsonb, intervals, arrays, ...) is left to PostgreSQL:
//! [`Compiled::sql_condition`] is checked once at join and evaluated per batch by the
//! dispatcher. NULL never matches, as in SQL.

use crate::catalog::{quote_ident, Column};
use crate::time;
use std::cmp::Ordering;
use std::fmt;

/// Supabase caps `in` lists at 100 values; so do we.
const MAX_IN_VALUES: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "neq" => Op::Neq,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "in" => Op::In,
            _ => return None,
        })
    }

    fn sql(self) -> &'static str {
        match self {
            Op::Eq | Op::In => "=",
            Op::Neq => "<>",
            Op::Lt => "<",
            Op::Lte => "<=",
            Op::Gt => ">",
            Op::Gte => ">=",
        }
    }

    fn accepts(self, ord: Ordering) -> bool {
        match self {
            Op::Eq | Op::In => ord == Ordering::Equal,
            Op::Neq => ord != Ordering::Equal,
            Op::Lt => ord == Ordering::Less,
            Op::Lte => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Gte => ord != Ordering::Less,
        }
    }
}

/// How a column's values compare, from its `pg_type.typname`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Float,
    Numeric,
    Bool,
    Uuid,
    Timestamptz,
    Timestamp,
    Date,
    Text,
    /// Anything else (jsonb, interval, arrays, ...): compared by PostgreSQL.
    Other,
}

impl Kind {
    pub fn of(typname: &str) -> Kind {
        match typname {
            "int2" | "int4" | "int8" | "oid" => Kind::Int,
            "float4" | "float8" => Kind::Float,
            "numeric" => Kind::Numeric,
            "bool" => Kind::Bool,
            "uuid" => Kind::Uuid,
            "timestamptz" => Kind::Timestamptz,
            "timestamp" => Kind::Timestamp,
            "date" => Kind::Date,
            "text" | "varchar" | "name" | "char" => Kind::Text,
            _ => Kind::Other,
        }
    }
}

/// A parsed value of a column of some [`Kind`].
#[derive(Debug, Clone, PartialEq)]
enum Typed {
    Int(i128),
    Float(f64),
    Numeric(Decimal),
    Bool(bool),
    Uuid(u128),
    Micros(i64),
    Days(i64),
    Text(String),
}

impl Typed {
    fn parse(kind: Kind, s: &str) -> Option<Typed> {
        Some(match kind {
            Kind::Int => Typed::Int(s.trim().parse().ok()?),
            Kind::Float => Typed::Float(parse_float(s)?),
            Kind::Numeric => Typed::Numeric(Decimal::parse(s)?),
            Kind::Bool => Typed::Bool(parse_bool(s)?),
            Kind::Uuid => Typed::Uuid(parse_uuid(s)?),
            Kind::Timestamptz => Typed::Micros(time::parse_timestamp(s)?.instant()),
            Kind::Timestamp => Typed::Micros(time::parse_timestamp(s)?.local_micros),
            Kind::Date => Typed::Days(time::parse_date(s)?),
            Kind::Text | Kind::Other => Typed::Text(s.to_owned()),
        })
    }

    fn compare(&self, other: &Typed) -> Option<Ordering> {
        Some(match (self, other) {
            (Typed::Int(a), Typed::Int(b)) => a.cmp(b),
            (Typed::Float(a), Typed::Float(b)) => float_cmp(*a, *b),
            (Typed::Numeric(a), Typed::Numeric(b)) => a.cmp(b),
            (Typed::Bool(a), Typed::Bool(b)) => a.cmp(b),
            (Typed::Uuid(a), Typed::Uuid(b)) => a.cmp(b),
            (Typed::Micros(a), Typed::Micros(b)) | (Typed::Days(a), Typed::Days(b)) => a.cmp(b),
            // Byte order: the stack's clusters use the C.UTF-8 locale.
            (Typed::Text(a), Typed::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            _ => return None,
        })
    }
}

/// A value by which equal values are found in a hash index: only for kinds whose equality here
/// is equality of the key (not floats or numerics, whose equal values have several forms).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EqKey {
    Int(i128),
    Uuid(u128),
    Bool(bool),
    Time(i64),
    Text(String),
}

impl Typed {
    fn eq_key(&self) -> Option<EqKey> {
        Some(match self {
            Typed::Int(i) => EqKey::Int(*i),
            Typed::Uuid(u) => EqKey::Uuid(*u),
            Typed::Bool(b) => EqKey::Bool(*b),
            Typed::Micros(t) | Typed::Days(t) => EqKey::Time(*t),
            Typed::Text(t) => EqKey::Text(t.clone()),
            Typed::Float(_) | Typed::Numeric(_) => return None,
        })
    }
}

/// The key of a changed row's column value (`to_jsonb` text), as [`Compiled::eq_keys`] gives
/// them for the column's kind. `None` for NULL or a kind without keys.
pub fn eq_key_of(kind: Kind, raw: &str) -> Option<EqKey> {
    Typed::parse(kind, &json_scalar_text(raw)?)?.eq_key()
}

/// PostgreSQL orders NaN above every number and equal to itself.
fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn parse_float(s: &str) -> Option<f64> {
    let s = s.trim();
    match s.to_ascii_lowercase().as_str() {
        "nan" => Some(f64::NAN),
        "infinity" | "+infinity" | "inf" => Some(f64::INFINITY),
        "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
        // Rust would also accept "inf" spellings; PostgreSQL's other spellings are covered above.
        _ => s.parse().ok().filter(|f: &f64| f.is_finite()),
    }
}

/// PostgreSQL's boolean input: any unique prefix of true/false/yes/no, on/off, 1/0.
fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() {
        return None;
    }
    // "o" alone is ambiguous (on/off), so those two must be spelled out.
    let prefix_of = |word: &str| word.starts_with(s.as_str());
    if prefix_of("true") || prefix_of("yes") || s == "on" || s == "1" {
        Some(true)
    } else if prefix_of("false") || prefix_of("no") || s == "off" || s == "0" {
        Some(false)
    } else {
        None
    }
}

/// 32 hex digits, optionally hyphenated and braced, any case (as PostgreSQL accepts).
fn parse_uuid(s: &str) -> Option<u128> {
    let s = s.trim();
    let s = s
        .strip_prefix('{')
        .and_then(|inner| inner.strip_suffix('}'))
        .unwrap_or(s);
    let mut value: u128 = 0;
    let mut digits = 0;
    for (i, c) in s.char_indices() {
        if c == '-' {
            // PostgreSQL allows a hyphen after any group of four digits, never first or doubled.
            if digits == 0 || digits % 4 != 0 || s[..i].ends_with('-') {
                return None;
            }
            continue;
        }
        value = (value << 4) | u128::from(c.to_digit(16)?);
        digits += 1;
        if digits > 32 {
            return None;
        }
    }
    (digits == 32 && !s.ends_with('-')).then_some(value)
}

/// An exact decimal for `numeric`: `0.digits × 10^exp`, digits without leading or trailing
/// zeros (empty for zero). NaN orders above everything, as in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decimal {
    class: NumClass,
    negative: bool,
    digits: Vec<u8>,
    exp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NumClass {
    NegInfinity,
    Finite,
    Infinity,
    NaN,
}

impl Decimal {
    fn parse(input: &str) -> Option<Decimal> {
        let s = input.trim();
        let special = |class| {
            Some(Decimal {
                class,
                negative: false,
                digits: Vec::new(),
                exp: 0,
            })
        };
        match s.to_ascii_lowercase().as_str() {
            "nan" => return special(NumClass::NaN),
            "infinity" | "+infinity" => return special(NumClass::Infinity),
            "-infinity" => return special(NumClass::NegInfinity),
            _ => {}
        }
        let (negative, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match body.find(['e', 'E']) {
            Some(at) => (&body[..at], body[at + 1..].parse::<i64>().ok()?),
            None => (body, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let all: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
        if !all.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let leading = all.iter().take_while(|&&d| d == b'0').count();
        let mut digits: Vec<u8> = all[leading..].iter().map(|d| d - b'0').collect();
        while digits.last() == Some(&0) {
            digits.pop();
        }
        let exp = int_part.len() as i64 - leading as i64 + exponent;
        Some(Decimal {
            class: NumClass::Finite,
            negative: negative && !digits.is_empty(),
            digits,
            exp: if all.len() == leading { 0 } else { exp },
        })
    }

    fn signum(&self) -> i8 {
        match (self.digits.is_empty(), self.negative) {
            (true, _) => 0,
            (false, true) => -1,
            (false, false) => 1,
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.class != NumClass::Finite || other.class != NumClass::Finite {
            return self.class.cmp(&other.class);
        }
        let by_sign = self.signum().cmp(&other.signum());
        if by_sign != Ordering::Equal || self.signum() == 0 {
            return by_sign;
        }
        let magnitude = self
            .exp
            .cmp(&other.exp)
            .then_with(|| self.digits.cmp(&other.digits));
        if self.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A filter as the client wrote it, before it meets a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    pub column: String,
    op: Op,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: String) -> Result<T, FilterError> {
    Err(FilterError(msg))
}

impl FilterSpec {
    /// Parses `column=op.value` (`in.(a,b,"c,d")` for `in`).
    pub fn parse(filter: &str) -> Result<FilterSpec, FilterError> {
        let Some((column, rest)) = filter.split_once('=') else {
            return err(format!(
                "filter {filter:?} is not of the form column=op.value"
            ));
        };
        let column = column.trim();
        if column.is_empty() {
            return err(format!("filter {filter:?} names no column"));
        }
        let Some((op, value)) = rest.split_once('.') else {
            return err(format!(
                "filter {filter:?} is not of the form column=op.value"
            ));
        };
        let Some(op) = Op::parse(op) else {
            return err(format!(
                "unknown filter operator {op:?} (use eq, neq, lt, lte, gt, gte or in)"
            ));
        };
        let values = if op == Op::In {
            parse_in_list(value)?
        } else {
            vec![value.to_owned()]
        };
        Ok(FilterSpec {
            column: column.to_owned(),
            op,
            values,
        })
    }

    /// Types the filter for a table's columns.
    pub fn compile(&self, columns: &[Column]) -> Result<Compiled, FilterError> {
        let Some((index, column)) = columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == self.column)
        else {
            return err(format!("column {:?} does not exist", self.column));
        };
        let native = match column.kind {
            // Text compares byte by byte here, as PostgreSQL does under a C collation only.
            Kind::Text => column.byte_ordered,
            Kind::Other => false,
            // A time without offset is in PostgreSQL's session time zone, unknown here.
            Kind::Timestamptz => self.values.iter().all(|v| {
                time::parse_timestamp(v)
                    .is_some_and(|t| t.offset_secs.is_some() || t.local_micros.abs() == i64::MAX)
            }),
            _ => true,
        };
        // A value this module cannot read may still be one PostgreSQL reads (`Jan 1 2026`,
        // `1e400` for numeric, ...): it decides, and its error is the join's.
        let typed: Option<Vec<Typed>> = native
            .then(|| {
                self.values
                    .iter()
                    .map(|v| Typed::parse(column.kind, v))
                    .collect()
            })
            .flatten();
        let eval = match typed {
            Some(values) => Eval::Native {
                kind: column.kind,
                values,
            },
            None => Eval::Database {
                column: quote_ident(&column.name),
                base_type: column.base_type.clone(),
                values: self.values.clone(),
            },
        };
        Ok(Compiled {
            column: index,
            op: self.op,
            eval,
        })
    }
}

/// `(a,b,"c,d")` → `["a", "b", "c,d"]`.
fn parse_in_list(value: &str) -> Result<Vec<String>, FilterError> {
    let Some(inner) = value
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
    else {
        return err(format!(
            "in filter value {value:?} must be a list like (a,b,c)"
        ));
    };
    let mut values = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => current.extend(chars.next()),
            ',' if !quoted => values.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if quoted {
        return err(format!("unterminated quote in in filter value {value:?}"));
    }
    values.push(current);
    if values.len() > MAX_IN_VALUES {
        return err(format!("in filter has more than {MAX_IN_VALUES} values"));
    }
    Ok(values)
}

/// A filter typed for one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    /// Index of the column in the table's column list.
    pub column: usize,
    op: Op,
    eval: Eval,
}

#[derive(Debug, Clone, PartialEq)]
enum Eval {
    /// Compared here, exactly as PostgreSQL compares.
    Native { kind: Kind, values: Vec<Typed> },
    /// Compared by PostgreSQL: the quoted column name, the type without modifier (see
    /// `Column::base_type`), and the values as written.
    Database {
        column: String,
        base_type: String,
        values: Vec<String>,
    },
}

/// Whether a change's column satisfies a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    NoMatch,
    /// Only PostgreSQL can say: see [`Compiled::sql_condition`].
    AskDatabase,
}

impl Compiled {
    /// `raw` is the column's value as `to_jsonb` text (`"abc"`, `12.5`, `true`, `null`, ...).
    pub fn verdict(&self, raw: &str) -> Verdict {
        let Eval::Native { kind, values } = &self.eval else {
            return Verdict::AskDatabase;
        };
        let Some(text) = json_scalar_text(raw) else {
            return Verdict::NoMatch;
        };
        let Some(value) = Typed::parse(*kind, &text) else {
            return Verdict::NoMatch;
        };
        let mut any = false;
        for expected in values {
            let Some(ord) = value.compare(expected) else {
                return Verdict::NoMatch;
            };
            if self.op == Op::In {
                any |= ord == Ordering::Equal;
            } else {
                any = self.op.accepts(ord);
                break;
            }
        }
        if any {
            Verdict::Match
        } else {
            Verdict::NoMatch
        }
    }

    /// For an equality filter (`eq`, `in`) compared here: its column and kind, and the keys
    /// of the values it matches.
    pub fn eq_keys(&self) -> Option<(usize, Kind, Vec<EqKey>)> {
        let Eval::Native { kind, values } = &self.eval else {
            return None;
        };
        if !matches!(self.op, Op::Eq | Op::In) {
            return None;
        }
        let keys = values.iter().map(Typed::eq_key).collect::<Option<_>>()?;
        Some((self.column, *kind, keys))
    }

    /// For a filter PostgreSQL evaluates: the condition on row alias `x` (the changed row, as
    /// the table's row type), taking the values as text array parameter `$param`, and that
    /// parameter's value. `None` for a filter evaluated here.
    pub fn sql_condition(&self, param: usize) -> Option<(String, Vec<String>)> {
        let Eval::Database {
            column,
            base_type,
            values,
        } = &self.eval
        else {
            return None;
        };
        let condition = if self.op == Op::In {
            // Not `= ANY(…::type[])`: that is no type when the type is an array (`_int4`).
            format!("x.{column} IN (SELECT v::{base_type} FROM unnest(${param}::text[]) AS v)")
        } else {
            format!(
                "x.{column} {} (${param}::text[])[1]::{base_type}",
                self.op.sql()
            )
        };
        Some((condition, values.clone()))
    }
}

/// The text a JSON scalar stands for: a string's contents, a number's or boolean's literal,
/// or for objects/arrays their JSON text. `None` for `null`.
pub fn json_scalar_text(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let raw = raw.trim();
    if raw == "null" {
        return None;
    }
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        if !inner.contains('\\') {
            return Some(inner.into());
        }
        return serde_json::from_str::<String>(raw).ok().map(Into::into);
    }
    Some(raw.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::fixtures;

    const COLUMNS: &[(&str, &str)] = &[
        ("id", "uuid"),
        ("time", "timestamptz"),
        ("soe", "float8"),
        ("blocks", "int4"),
        ("name", "text"),
        ("active", "bool"),
        ("price", "numeric"),
        ("metadata", "jsonb"),
        ("day", "date"),
        ("local", "timestamp"),
    ];

    fn columns() -> Vec<Column> {
        COLUMNS
            .iter()
            .zip(1..)
            .map(|(&(name, typname), attnum)| fixtures::column(name, typname, attnum))
            .collect()
    }

    fn compile(filter: &str) -> Result<Compiled, FilterError> {
        FilterSpec::parse(filter)?.compile(&columns())
    }

    #[test]
    fn what_does_not_compare_as_here_is_left_to_postgresql() {
        let mut collated = fixtures::column("name", "text", 1);
        collated.byte_ordered = false;
        let mut padded = fixtures::column("code", "bpchar", 2);
        padded.base_type = "bpchar".into();
        let table = [collated, padded, fixtures::column("email", "citext", 3)];
        let condition = |f: &str| {
            let compiled = FilterSpec::parse(f).unwrap().compile(&table).unwrap();
            assert_eq!(compiled.verdict(r#""x""#), Verdict::AskDatabase, "{f}");
            compiled.sql_condition(4).unwrap()
        };
        assert_eq!(
            condition("name=lt.m"),
            (
                r#"x."name" < ($4::text[])[1]::text"#.into(),
                vec!["m".into()]
            )
        );
        assert_eq!(
            condition("code=in.(a,\"b,c\")"),
            (
                r#"x."code" IN (SELECT v::bpchar FROM unnest($4::text[]) AS v)"#.into(),
                vec!["a".into(), "b,c".into()]
            )
        );
        assert_eq!(
            condition("email=neq.A").0,
            r#"x."email" <> ($4::text[])[1]::citext"#
        );
        assert_eq!(compile("soe=eq.1").unwrap().sql_condition(1), None);
    }

    /// What this module cannot read, PostgreSQL reads or refuses (checked at join).
    fn assert_left_to_postgresql(filter: &str) {
        let compiled = compile(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert!(compiled.sql_condition(1).is_some(), "{filter}");
    }

    fn check(filter: &str, raw: &str) -> bool {
        match compile(filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .verdict(raw)
        {
            Verdict::Match => true,
            Verdict::NoMatch => false,
            Verdict::AskDatabase => panic!("{filter} is evaluated here"),
        }
    }

    #[test]
    fn uuid_ignores_case_and_hyphenation() {
        let raw = r#""123e4567-e89b-12d3-a456-426614174000""#;
        assert!(check("id=eq.123E4567-E89B-12D3-A456-426614174000", raw));
        assert!(check("id=eq.{123e4567e89b12d3a456426614174000}", raw));
        assert!(!check("id=eq.123e4567-e89b-12d3-a456-426614174001", raw));
        assert!(check("id=neq.123e4567-e89b-12d3-a456-426614174001", raw));
        assert_left_to_postgresql("id=eq.not-a-uuid");
        assert_left_to_postgresql("id=eq.123e4567-e89b-12d3-a456-42661417400");
        assert_left_to_postgresql("id=eq.-123e4567e89b12d3a456426614174000");
    }

    #[test]
    fn numbers_compare_numerically() {
        assert!(check("soe=gt.9", "10.5"));
        assert!(!check("soe=gt.10.5", "10.5"));
        assert!(check("soe=gte.10.50", "10.5"));
        assert!(check("soe=lt.1e2", "99.9"));
        assert!(check("soe=eq.NaN", r#""NaN""#));
        assert!(check("soe=gt.Infinity", r#""NaN""#));
        assert!(check("blocks=lte.10", "9"));
        assert!(!check("blocks=lt.-1", "9"));
        assert_left_to_postgresql("blocks=eq.1.5");
        assert_left_to_postgresql("soe=eq.abc");
    }

    #[test]
    fn numeric_is_exact() {
        assert!(check("price=gt.0.1", "0.10000000000000000001"));
        assert!(check("price=eq.1.50", "1.5"));
        assert!(check("price=eq.150e-2", "1.5"));
        assert!(check("price=lt.-0.5", "-1"));
        assert!(check("price=gt.-1", "0"));
        assert!(check("price=eq.-0", "0.000"));
        assert!(check(
            "price=gt.99999999999999999999",
            "100000000000000000000"
        ));
        assert!(!check(
            "price=gt.12345678901234567890.2",
            "12345678901234567890.1"
        ));
        assert!(check("price=gt.Infinity", r#""NaN""#));
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let raw = r#""2024-01-01T12:00:00.5+00:00""#;
        assert!(check("time=gt.2024-01-01T12:00:00Z", raw));
        assert!(check("time=lt.2024-01-01T13:00:00+00:30", raw));
        assert!(check("time=eq.2024-01-01 14:00:00.5+02", raw));
        assert!(check("time=lt.infinity", raw));
        // Without an offset the value is in the session's time zone: PostgreSQL reads it.
        assert_left_to_postgresql("time=gte.2024-01-02");
        assert!(check("day=lt.2024-01-02", r#""2024-01-01""#));
        assert!(check(
            "local=eq.2024-01-01T12:00:00",
            r#""2024-01-01T12:00:00""#
        ));
        assert_left_to_postgresql("time=gt.soon");
    }

    #[test]
    fn booleans_and_text() {
        assert!(check("active=eq.true", "true"));
        assert!(check("active=eq.t", "true"));
        assert!(check("active=eq.off", "false"));
        assert!(!check("active=eq.yes", "false"));
        assert_left_to_postgresql("active=eq.maybe");
        assert!(check("name=eq.WLCE", r#""WLCE""#));
        assert!(!check("name=eq.wlce", r#""WLCE""#));
        assert!(check("name=lt.b", r#""a\"b""#));
        assert!(check("name=eq.a\"b", r#""a\"b""#));
        assert!(check("name=gt.10", r#""9""#), "text compares as text");
    }

    #[test]
    fn in_lists() {
        assert!(check("blocks=in.(1,2,3)", "2"));
        assert!(!check("blocks=in.(1,2,3)", "4"));
        assert!(check(r#"name=in.("a,b",c)"#, r#""a,b""#));
        assert!(check(r#"name=in.("a,b",c)"#, r#""c""#));
        assert!(!check(r#"name=in.("a,b",c)"#, r#""a""#));
        assert_left_to_postgresql("blocks=in.(1,x)");
        assert!(compile("blocks=in.1,2").is_err());
        let many = (0..=MAX_IN_VALUES)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(compile(&format!("blocks=in.({many})")).is_err());
    }

    #[test]
    fn null_never_matches() {
        for f in ["soe=eq.1", "soe=neq.1", "name=neq.x", "blocks=in.(1)"] {
            assert!(!check(f, "null"), "{f}");
        }
    }

    #[test]
    fn other_types_are_compared_by_postgresql() {
        for f in ["metadata=eq.{}", "metadata=gt.{}"] {
            assert_eq!(compile(f).unwrap().verdict("{}"), Verdict::AskDatabase);
        }
    }

    #[test]
    fn bad_filters_say_why() {
        for (filter, needle) in [
            ("nope=eq.1", "does not exist"),
            ("soe=like.1", "unknown filter operator"),
            ("soe", "column=op.value"),
            ("soe=eq", "column=op.value"),
            ("=eq.1", "names no column"),
        ] {
            let e = compile(filter).unwrap_err();
            assert!(e.0.contains(needle), "{filter}: {e}");
        }
    }

    #[test]
    fn value_may_contain_dots_and_equals() {
        assert!(check("name=eq.a.b=c", r#""a.b=c""#));
    }
}
