//! The messages of PostgreSQL's `pgoutput` plugin (protocol version 1) that carry rows:
//! Relation, Insert, Update and Delete. Begin, Commit and logical messages come decoded from
//! `pgwire-replication`; Truncate, Type and Origin carry no row and are passed over. Values are
//! in text format: each is handed to PostgreSQL again (`jsonb_populate_recordset`) to be typed.

use crate::wal::{Action, WalValue};

const JSON_OID: u32 = 114;
const JSONB_OID: u32 = 3802;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub schema: String,
    pub table: String,
    /// Column names and type OIDs, in the table's order.
    pub columns: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// An unchanged TOASTed value of an UPDATE: not sent.
    Unchanged,
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Relation(Relation),
    Change {
        relation: u32,
        action: Action,
        /// The new row (INSERT, UPDATE).
        new: Vec<Value>,
        /// The old row or its key (UPDATE with a replica identity, DELETE).
        old: Vec<Value>,
    },
    /// Nothing with a row in it.
    Other,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err(format!("pgoutput message ends inside its {what}"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    fn i16(&mut self, what: &str) -> Result<i16, String> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("pgoutput {what} has no terminator"))?;
        let s = String::from_utf8(self.0[..end].to_vec())
            .map_err(|_| format!("pgoutput {what} is not UTF-8"))?;
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Vec<Value>, String> {
        let n = self.i16("column count")?;
        (0..n)
            .map(|_| match self.u8("column kind")? {
                b'n' => Ok(Value::Null),
                b'u' => Ok(Value::Unchanged),
                b't' => {
                    let len = self.u32("value length")? as usize;
                    let bytes = self.take(len, "value")?;
                    String::from_utf8(bytes.to_vec())
                        .map(Value::Text)
                        .map_err(|_| "a text value that is not UTF-8".to_owned())
                }
                other => Err(format!("unknown column kind {:?}", other as char)),
            })
            .collect()
    }
}

pub fn decode(data: &[u8]) -> Result<Message, String> {
    let mut r = Reader(data);
    let tag = r.u8("tag")?;
    Ok(match tag {
        b'R' => {
            let id = r.u32("relation id")?;
            let schema = r.string("namespace")?;
            let table = r.string("relation name")?;
            let _replica_identity = r.u8("replica identity")?;
            let n = r.i16("column count")?;
            let columns = (0..n)
                .map(|_| {
                    let _flags = r.u8("column flags")?;
                    let name = r.string("column name")?;
                    let oid = r.u32("column type")?;
                    let _typmod = r.u32("column type modifier")?;
                    Ok((name, oid))
                })
                .collect::<Result<_, String>>()?;
            Message::Relation(Relation {
                id,
                schema,
                table,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32("relation id")?;
            expect(r.u8("tuple kind")?, b"N")?;
            Message::Change {
                relation,
                action: Action::Insert,
                new: r.tuple()?,
                old: Vec::new(),
            }
        }
        b'U' => {
            let relation = r.u32("relation id")?;
            let mut old = Vec::new();
            let mut kind = r.u8("tuple kind")?;
            if kind == b'K' || kind == b'O' {
                old = r.tuple()?;
                kind = r.u8("tuple kind")?;
            }
            expect(kind, b"N")?;
            Message::Change {
                relation,
                action: Action::Update,
                new: r.tuple()?,
                old,
            }
        }
        b'D' => {
            let relation = r.u32("relation id")?;
            expect(r.u8("tuple kind")?, b"KO")?;
            Message::Change {
                relation,
                action: Action::Delete,
                new: Vec::new(),
                old: r.tuple()?,
            }
        }
        _ => Message::Other,
    })
}

fn expect(kind: u8, allowed: &[u8]) -> Result<(), String> {
    if allowed.contains(&kind) {
        Ok(())
    } else {
        Err(format!("unexpected tuple kind {:?}", kind as char))
    }
}

/// A row's values as the dispatcher takes them: JSON text that `jsonb_populate_record` types
/// (strings through the column type's input function; json and jsonb as the documents).
/// Unchanged TOASTed values are left out, to be taken from the old row.
pub fn values(relation: &Relation, row: &[Value]) -> Vec<WalValue> {
    relation
        .columns
        .iter()
        .zip(row)
        .filter_map(|((name, oid), value)| {
            let json = match value {
                Value::Unchanged => return None,
                Value::Null => "null".to_owned(),
                Value::Text(t) if *oid == JSON_OID || *oid == JSONB_OID => t.clone(),
                Value::Text(t) => serde_json::Value::from(t.as_str()).to_string(),
            };
            Some(WalValue {
                name: name.clone(),
                json,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation_message() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16_385u32.to_be_bytes());
        m.extend_from_slice(b"flux\0mg_bess_readings_p2031_03\0");
        m.push(b'f');
        m.extend_from_slice(&3i16.to_be_bytes());
        for (name, oid) in [("device_id", 2950u32), ("soe", 701), ("meta", 3802)] {
            m.push(1);
            m.extend_from_slice(name.as_bytes());
            m.push(0);
            m.extend_from_slice(&oid.to_be_bytes());
            m.extend_from_slice(&(-1i32).to_be_bytes());
        }
        m
    }

    fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut m = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => m.push(b'n'),
                Some("<unchanged>") => m.push(b'u'),
                Some(t) => {
                    m.push(b't');
                    m.extend_from_slice(&(t.len() as u32).to_be_bytes());
                    m.extend_from_slice(t.as_bytes());
                }
            }
        }
        m
    }

    #[test]
    fn relations_and_row_changes() {
        let Message::Relation(rel) = decode(&relation_message()).unwrap() else {
            panic!()
        };
        assert_eq!(
            (rel.id, rel.schema.as_str(), rel.table.as_str()),
            (16_385, "flux", "mg_bess_readings_p2031_03")
        );
        assert_eq!(rel.columns[2], ("meta".to_owned(), 3802));

        let mut insert = vec![b'I'];
        insert.extend_from_slice(&16_385u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(tuple(&[
            Some("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
            Some("65.5"),
            Some(r#"{"a": [1, "x"]}"#),
        ]));
        let Message::Change {
            relation,
            action,
            new,
            old,
        } = decode(&insert).unwrap()
        else {
            panic!()
        };
        assert_eq!((relation, action, old.len()), (16_385, Action::Insert, 0));
        let values = values(&rel, &new);
        assert_eq!(
            values[1].json, r#""65.5""#,
            "typed later by PostgreSQL from the text"
        );
        assert_eq!(
            values[2].json, r#"{"a": [1, "x"]}"#,
            "json stays a document"
        );

        let mut update = vec![b'U'];
        update.extend_from_slice(&16_385u32.to_be_bytes());
        update.push(b'O');
        update.extend(tuple(&[Some("d"), Some("1"), None]));
        update.push(b'N');
        update.extend(tuple(&[Some("d"), Some("2"), Some("<unchanged>")]));
        let Message::Change {
            action, new, old, ..
        } = decode(&update).unwrap()
        else {
            panic!()
        };
        assert_eq!(action, Action::Update);
        assert_eq!(old[2], Value::Null);
        assert_eq!(
            super::values(&rel, &new).len(),
            2,
            "an unchanged TOASTed value is left out"
        );
        assert_eq!(super::values(&rel, &old)[2].json, "null");

        let mut delete = vec![b'D'];
        delete.extend_from_slice(&16_385u32.to_be_bytes());
        delete.push(b'K');
        delete.extend(tuple(&[Some("d"), None, None]));
        assert!(matches!(
            decode(&delete).unwrap(),
            Message::Change {
                action: Action::Delete,
                ..
            }
        ));

        assert_eq!(decode(b"T\0\0\0\x01").unwrap(), Message::Other);
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(decode(&relation_message()[..12])
            .unwrap_err()
            .contains("terminator"));
        assert!(decode(b"I\0\0\0\x01X").unwrap_err().contains("tuple kind"));
        assert!(decode(b"I\0\0\0\x01N\0\x01t\0\0\0\x09ab")
            .unwrap_err()
            .contains("ends inside"));
        assert!(decode(b"I\0\0\0\x01N\0\x01z")
            .unwrap_err()
            .contains("column kind"));
        assert!(decode(b"").unwrap_err().contains("tag"));
    }
}
