//! Decoding of PostgreSQL's logical replication messages (the `pgoutput`
//! plugin, protocol version 1, text tuple format), as described in
//! "Logical Replication Message Formats" of the PostgreSQL 15 manual.
//!
//! The decoder is pure: it takes the payload of one XLogData message (or of
//! one row of `pg_logical_slot_peek_binary_changes`) and keeps the relation
//! descriptions it has seen, which later row messages refer to by OID.

use std::collections::HashMap;
use std::sync::Arc;

/// A position in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl std::str::FromStr for Lsn {
    type Err = DecodeError;

    /// Parses PostgreSQL's `XXX/XXX` notation.
    fn from_str(s: &str) -> Result<Lsn, DecodeError> {
        let (hi, lo) = s.split_once('/').ok_or(DecodeError::BadLsn)?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| DecodeError::BadLsn)?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| DecodeError::BadLsn)?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return Err(DecodeError::BadLsn);
        }
        Ok(Lsn(hi << 32 | lo))
    }
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message ends early")]
    Truncated,
    #[error("unknown message type {0:?}")]
    UnknownMessage(char),
    #[error("unknown tuple column kind {0:?}")]
    UnknownColumnKind(char),
    #[error("row message for relation {0} before its Relation message")]
    UnknownRelation(u32),
    #[error("string is not UTF-8 or not terminated")]
    BadString,
    #[error("malformed LSN")]
    BadLsn,
    #[error("unexpected tuple marker {0:?}")]
    BadMarker(char),
}

/// A column of a published relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    pub is_key: bool,
}

/// A published relation, as the Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

impl Relation {
    /// The index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value that did not change (updates only).
    Unchanged,
    /// The value in PostgreSQL's text output format.
    Text(String),
}

/// A row of a relation, with its column values in relation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub relation: Arc<Relation>,
    pub values: Vec<Value>,
}

impl Row {
    /// A column's text value (None for NULL, unchanged or unknown columns).
    pub fn text(&self, column: &str) -> Option<&str> {
        match self.values.get(self.relation.column(column)?)? {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        /// Microseconds since 2000-01-01 UTC.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    Relation(Arc<Relation>),
    Insert(Row),
    Update {
        old: Option<Row>,
        new: Row,
    },
    Delete(Row),
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, Type and logical decoding messages: nothing to mirror.
    Other(char),
}

/// Decodes a stream of pgoutput messages, remembering relations.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Arc<Relation>>,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::BadString)?;
        let s = std::str::from_utf8(&self.buf[..end]).map_err(|_| DecodeError::BadString)?;
        self.buf = &self.buf[end + 1..];
        Ok(s.to_string())
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes one message.
    pub fn decode(&mut self, payload: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader { buf: payload };
        let kind = r.u8()? as char;
        Ok(match kind {
            'B' => Message::Begin {
                final_lsn: Lsn(r.u64()?),
                commit_time: r.u64()? as i64,
                xid: r.u32()?,
            },
            'C' => {
                let _flags = r.u8()?;
                Message::Commit {
                    commit_lsn: Lsn(r.u64()?),
                    end_lsn: Lsn(r.u64()?),
                    commit_time: r.u64()? as i64,
                }
            }
            'R' => {
                let oid = r.u32()?;
                let schema = r.string()?;
                let name = r.string()?;
                let _identity = r.u8()?;
                let n = r.i16()?.max(0) as usize;
                let mut columns = Vec::with_capacity(n);
                for _ in 0..n {
                    let flags = r.u8()?;
                    let name = r.string()?;
                    let type_oid = r.u32()?;
                    let _typmod = r.i32()?;
                    columns.push(Column {
                        name,
                        type_oid,
                        is_key: flags & 1 == 1,
                    });
                }
                let rel = Arc::new(Relation {
                    oid,
                    schema,
                    name,
                    columns,
                });
                self.relations.insert(oid, rel.clone());
                Message::Relation(rel)
            }
            'I' => {
                let rel = self.relation(r.u32()?)?;
                expect(&mut r, 'N')?;
                Message::Insert(tuple(&mut r, rel)?)
            }
            'U' => {
                let rel = self.relation(r.u32()?)?;
                let mut marker = r.u8()? as char;
                let mut old = None;
                if marker == 'K' || marker == 'O' {
                    old = Some(tuple(&mut r, rel.clone())?);
                    marker = r.u8()? as char;
                }
                if marker != 'N' {
                    return Err(DecodeError::BadMarker(marker));
                }
                Message::Update {
                    old,
                    new: tuple(&mut r, rel)?,
                }
            }
            'D' => {
                let rel = self.relation(r.u32()?)?;
                let marker = r.u8()? as char;
                if marker != 'K' && marker != 'O' {
                    return Err(DecodeError::BadMarker(marker));
                }
                Message::Delete(tuple(&mut r, rel)?)
            }
            'T' => {
                let n = r.u32()? as usize;
                let _options = r.u8()?;
                let mut relations = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    relations.push(r.u32()?);
                }
                Message::Truncate { relations }
            }
            'O' | 'Y' | 'M' => Message::Other(kind),
            other => return Err(DecodeError::UnknownMessage(other)),
        })
    }

    /// A relation the stream has described.
    pub fn known_relation(&self, oid: u32) -> Option<Arc<Relation>> {
        self.relations.get(&oid).cloned()
    }

    fn relation(&self, oid: u32) -> Result<Arc<Relation>, DecodeError> {
        self.relations
            .get(&oid)
            .cloned()
            .ok_or(DecodeError::UnknownRelation(oid))
    }
}

fn expect(r: &mut Reader<'_>, marker: char) -> Result<(), DecodeError> {
    let got = r.u8()? as char;
    if got == marker {
        Ok(())
    } else {
        Err(DecodeError::BadMarker(got))
    }
}

fn tuple(r: &mut Reader<'_>, relation: Arc<Relation>) -> Result<Row, DecodeError> {
    let n = r.i16()?.max(0) as usize;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        values.push(match r.u8()? as char {
            'n' => Value::Null,
            'u' => Value::Unchanged,
            't' => {
                let len = r.i32()?.max(0) as usize;
                let bytes = r.take(len)?;
                Value::Text(String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::BadString)?)
            }
            other => return Err(DecodeError::UnknownColumnKind(other)),
        });
    }
    Ok(Row { relation, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation_msg() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(16384u32.to_be_bytes());
        m.extend(b"authaudit\0auth_log\0");
        m.push(b'd');
        m.extend(2i16.to_be_bytes());
        for (flags, name, oid) in [(1u8, "log_id", 2950u32), (0, "user_id", 25)] {
            m.push(flags);
            m.extend(name.as_bytes());
            m.push(0);
            m.extend(oid.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    fn text(m: &mut Vec<u8>, s: &str) {
        m.push(b't');
        m.extend((s.len() as i32).to_be_bytes());
        m.extend(s.as_bytes());
    }

    #[test]
    fn decodes_a_transaction_with_a_row() {
        let mut d = Decoder::new();
        let mut begin = vec![b'B'];
        begin.extend(0x1_0000_0010u64.to_be_bytes());
        begin.extend(42u64.to_be_bytes());
        begin.extend(7u32.to_be_bytes());
        assert_eq!(
            d.decode(&begin).unwrap(),
            Message::Begin {
                final_lsn: Lsn(0x1_0000_0010),
                commit_time: 42,
                xid: 7
            }
        );
        let Message::Relation(rel) = d.decode(&relation_msg()).unwrap() else {
            panic!()
        };
        assert_eq!(rel.name, "auth_log");
        assert!(rel.columns[0].is_key && !rel.columns[1].is_key);
        let mut ins = vec![b'I'];
        ins.extend(16384u32.to_be_bytes());
        ins.push(b'N');
        ins.extend(2i16.to_be_bytes());
        text(&mut ins, "0b8e…");
        ins.push(b'n');
        let Message::Insert(row) = d.decode(&ins).unwrap() else {
            panic!()
        };
        assert_eq!(row.text("log_id"), Some("0b8e…"));
        assert_eq!(row.values[1], Value::Null);
        let mut commit = vec![b'C', 0];
        commit.extend(0x1_0000_0010u64.to_be_bytes());
        commit.extend(0x1_0000_0040u64.to_be_bytes());
        commit.extend(42u64.to_be_bytes());
        assert!(matches!(
            d.decode(&commit).unwrap(),
            Message::Commit {
                end_lsn: Lsn(0x1_0000_0040),
                ..
            }
        ));
    }

    #[test]
    fn updates_with_and_without_old_keys() {
        let mut d = Decoder::new();
        d.decode(&relation_msg()).unwrap();
        let mut up = vec![b'U'];
        up.extend(16384u32.to_be_bytes());
        up.push(b'K');
        up.extend(2i16.to_be_bytes());
        text(&mut up, "k");
        up.push(b'n');
        up.push(b'N');
        up.extend(2i16.to_be_bytes());
        text(&mut up, "k");
        up.push(b'u');
        let Message::Update { old, new } = d.decode(&up).unwrap() else {
            panic!()
        };
        assert_eq!(old.unwrap().text("log_id"), Some("k"));
        assert_eq!(new.values[1], Value::Unchanged);
    }

    #[test]
    fn refuses_rows_of_unknown_relations_and_truncated_input() {
        let mut d = Decoder::new();
        let mut ins = vec![b'I'];
        ins.extend(5u32.to_be_bytes());
        ins.push(b'N');
        assert_eq!(d.decode(&ins), Err(DecodeError::UnknownRelation(5)));
        let rel = relation_msg();
        for cut in 1..rel.len() {
            assert!(d.decode(&rel[..cut]).is_err(), "accepted {cut} bytes");
        }
        assert_eq!(d.decode(b"Z"), Err(DecodeError::UnknownMessage('Z')));
    }

    #[test]
    fn lsn_text_round_trips() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l, Lsn(0x16_B374_D848));
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("16".parse::<Lsn>().is_err());
        assert!("1FFFFFFFF/0".parse::<Lsn>().is_err());
    }
}
