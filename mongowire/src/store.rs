//! The in-memory document store and the commands on it, with MongoDB's
//! documented semantics for the subset the mirror uses: unordered and
//! ordered inserts with duplicate-key write errors (code 11000), updates
//! with upsert and the `$set`, `$setOnInsert`, `$inc`, `$max`, `$min` and
//! `$unset` operators or a replacement document, deletes, `find` with
//! filters, sort, projection, skip and limit over cursors, `count`, and
//! unique indexes.
//!
//! A document is held as its BSON bytes, so the store costs about what it
//! holds; a filter decodes only the fields it names. Queries go by `_id`
//! (an equality or `$in`) or by the index whose leading fields the filter
//! fixes, as MongoDB's planner would, and a cursor keeps the `_id`s still
//! to return, reading each batch's documents when it is sent.

use bson::oid::ObjectId;
use bson::{doc, Bson, Document, RawArrayBuf, RawBsonRef, RawDocument, RawDocumentBuf};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::{Duration, Instant};

/// MongoDB error codes the store raises.
pub mod codes {
    pub const BAD_VALUE: i32 = 2;
    pub const NO_SUCH_KEY: i32 = 4;
    pub const FAILED_TO_PARSE: i32 = 9;
    pub const CURSOR_NOT_FOUND: i32 = 43;
    pub const COMMAND_NOT_FOUND: i32 = 59;
    pub const DUPLICATE_KEY: i32 = 11000;
}

/// A command failure: `{ok: 0, code, codeName, errmsg}`, with the
/// duplicate key's `keyPattern` and `keyValue` for 11000.
#[derive(Debug, Clone)]
pub struct CommandError {
    pub code: i32,
    pub name: &'static str,
    pub message: String,
    pub details: Option<Box<Document>>,
}

impl CommandError {
    pub fn new(code: i32, name: &'static str, message: impl Into<String>) -> CommandError {
        CommandError {
            code,
            name,
            message: message.into(),
            details: None,
        }
    }

    pub fn to_document(&self) -> Document {
        let mut d =
            doc! {"ok": 0.0, "errmsg": &self.message, "code": self.code, "codeName": self.name};
        d.extend(self.details.as_deref().cloned().unwrap_or_default());
        d
    }
}

fn bad(message: impl Into<String>) -> CommandError {
    CommandError::new(codes::FAILED_TO_PARSE, "FailedToParse", message)
}

/// A secondary index: one entry per document, `key ␀ slot`, where `key`
/// is the canonical key of the indexed fields joined by U+0001 and `slot`
/// the document's place in its collection (4 bytes, big-endian). An
/// equality on a leading run of the index's fields is a range of entries.
#[derive(Debug)]
struct Index {
    name: String,
    keys: Vec<String>,
    spec: Document,
    unique: bool,
    entries: BTreeSet<Box<[u8]>>,
}

/// One collection: each document as its BSON bytes in a slot, the slots by
/// `_id` key, and the indexes. A stored document costs its own size, its
/// `_id` key once, and a few dozen bytes per index.
#[derive(Debug, Default)]
pub struct Collection {
    ids: BTreeMap<Box<str>, u32>,
    slots: Vec<Option<Box<[u8]>>>,
    free: Vec<u32>,
    indexes: Vec<Index>,
    /// Documents a filter was tested against (MongoDB's `docsExamined`).
    examined: u64,
}

/// What a cursor has left to return.
#[derive(Debug)]
enum Rows {
    /// Documents of a collection by `_id` key (the next one last), read
    /// when a batch is returned, with the find's projection.
    Stored {
        ids: Vec<Box<str>>,
        projection: Option<Document>,
    },
    /// Computed documents (an aggregation's, the index list), the next one
    /// last.
    Computed(Vec<Document>),
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Stored { ids, .. } => ids.len(),
            Rows::Computed(docs) => docs.len(),
        }
    }
}

#[derive(Debug)]
struct Cursor {
    ns: String,
    rows: Rows,
    used: Instant,
}

/// A cursor not used for this long is closed, as MongoDB's
/// `cursorTimeoutMillis` (10 minutes) does: a client that goes away
/// without `killCursors` leaves nothing behind.
pub const CURSOR_TIMEOUT: Duration = Duration::from_secs(600);

/// The whole store: collections by namespace (`db.collection`).
#[derive(Debug, Default)]
pub struct Store {
    collections: HashMap<String, Collection>,
    cursors: HashMap<i64, Cursor>,
    next_cursor: i64,
}

/// The canonical key of a BSON value (for `_id` and unique indexes).
fn key_of(v: &Bson) -> String {
    let mut out = String::new();
    push_key(&mut out, v);
    out
}

/// Appends the canonical key of a BSON value to `out`.
fn push_key(out: &mut String, v: &Bson) {
    use std::fmt::Write;
    let _ = match v {
        Bson::String(s) => {
            out.push_str("s:");
            out.push_str(s);
            Ok(())
        }
        // Numbers of equal value are one key, as in MongoDB.
        Bson::Int32(i) => write!(out, "n:{}", f64::from(*i)),
        Bson::Int64(i) => write!(out, "n:{}", *i as f64),
        Bson::Double(d) => write!(out, "n:{d}"),
        Bson::DateTime(t) => write!(out, "d:{}", t.timestamp_millis()),
        Bson::Null => {
            out.push_str("null");
            Ok(())
        }
        other => write!(out, "{}", other.clone().into_relaxed_extjson()),
    };
}

/// A field by dotted path.
pub fn lookup<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(d) => d.get(p)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn type_rank(v: &Bson) -> u8 {
    match v {
        Bson::MinKey => 0,
        Bson::Null | Bson::Undefined => 1,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 2,
        Bson::String(_) | Bson::Symbol(_) => 3,
        Bson::Document(_) => 4,
        Bson::Array(_) => 5,
        Bson::Binary(_) => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Timestamp(_) => 10,
        Bson::RegularExpression(_) => 11,
        Bson::MaxKey => 13,
        _ => 12,
    }
}

fn as_f64(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

/// MongoDB's comparison order of BSON values (the subset that matters).
pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Bson::Int64(x), Bson::Int64(y)) => x.cmp(y),
        (Bson::Int32(x), Bson::Int32(y)) => x.cmp(y),
        _ if ra == 2 => as_f64(a)
            .unwrap_or(0.0)
            .partial_cmp(&as_f64(b).unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Bson::String(x), Bson::String(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Binary(x), Bson::Binary(y)) => x.bytes.cmp(&y.bytes),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::Array(x), Bson::Array(y)) => x
            .iter()
            .zip(y)
            .map(|(p, q)| compare(p, q))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(x.len().cmp(&y.len())),
        (Bson::Document(x), Bson::Document(y)) => {
            key_of(&Bson::Document(x.clone())).cmp(&key_of(&Bson::Document(y.clone())))
        }
        _ => Ordering::Equal,
    }
}

fn equal(a: &Bson, b: &Bson) -> bool {
    type_rank(a) == type_rank(b) && compare(a, b) == Ordering::Equal
}

/// Whether `doc` matches `filter`.
pub fn matches(doc: &Document, filter: &Document) -> Result<bool, CommandError> {
    for (k, cond) in filter {
        let ok = match k.as_str() {
            "$and" | "$or" | "$nor" => {
                let Bson::Array(items) = cond else {
                    return Err(bad(format!("{k} must be an array")));
                };
                let mut results = Vec::with_capacity(items.len());
                for item in items {
                    let Bson::Document(d) = item else {
                        return Err(bad(format!("{k} entries must be objects")));
                    };
                    results.push(matches(doc, d)?);
                }
                match k.as_str() {
                    "$and" => results.iter().all(|r| *r),
                    "$or" => results.iter().any(|r| *r),
                    _ => !results.iter().any(|r| *r),
                }
            }
            _ => field_matches(lookup(doc, k), cond)?,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn field_matches(value: Option<&Bson>, cond: &Bson) -> Result<bool, CommandError> {
    let Bson::Document(ops) = cond else {
        return Ok(
            value.is_some_and(|v| equal(v, cond)) || (cond == &Bson::Null && value.is_none())
        );
    };
    if !ops.keys().any(|k| k.starts_with('$')) {
        return Ok(value.is_some_and(|v| equal(v, cond)));
    }
    for (op, arg) in ops {
        let ok = match op.as_str() {
            "$eq" => {
                value.is_some_and(|v| equal(v, arg)) || (arg == &Bson::Null && value.is_none())
            }
            "$ne" => {
                !(value.is_some_and(|v| equal(v, arg)) || (arg == &Bson::Null && value.is_none()))
            }
            "$gt" | "$gte" | "$lt" | "$lte" => match value {
                Some(v) if type_rank(v) == type_rank(arg) => {
                    let o = compare(v, arg);
                    match op.as_str() {
                        "$gt" => o == Ordering::Greater,
                        "$gte" => o != Ordering::Less,
                        "$lt" => o == Ordering::Less,
                        _ => o != Ordering::Greater,
                    }
                }
                _ => false,
            },
            "$in" | "$nin" => {
                let Bson::Array(items) = arg else {
                    return Err(bad(format!("{op} needs an array")));
                };
                let found = items.iter().any(|i| value.is_some_and(|v| equal(v, i)));
                if op == "$in" {
                    found
                } else {
                    !found
                }
            }
            "$exists" => {
                value.is_some()
                    == matches!(arg, Bson::Boolean(true) | Bson::Int32(1) | Bson::Int64(1))
            }
            other => {
                return Err(CommandError::new(
                    codes::BAD_VALUE,
                    "BadValue",
                    format!("unknown operator: {other}"),
                ))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn set_path(doc: &mut Document, path: &str, value: Bson) {
    match path.split_once('.') {
        None => {
            doc.insert(path, value);
        }
        Some((head, rest)) => {
            if !matches!(doc.get(head), Some(Bson::Document(_))) {
                doc.insert(head, Document::new());
            }
            if let Some(Bson::Document(inner)) = doc.get_mut(head) {
                set_path(inner, rest, value);
            }
        }
    }
}

fn unset_path(doc: &mut Document, path: &str) {
    match path.split_once('.') {
        None => {
            doc.remove(path);
        }
        Some((head, rest)) => {
            if let Some(Bson::Document(inner)) = doc.get_mut(head) {
                unset_path(inner, rest);
            }
        }
    }
}

fn is_operator_update(u: &Document) -> bool {
    u.keys().next().is_some_and(|k| k.starts_with('$'))
}

/// Applies an update document to `doc` (`inserting`: an upsert's new doc).
fn apply_update(doc: &mut Document, u: &Document, inserting: bool) -> Result<(), CommandError> {
    if !is_operator_update(u) {
        let id = doc.get("_id").cloned();
        *doc = u.clone();
        if let Some(id) = id {
            doc.insert("_id", id);
        }
        return Ok(());
    }
    for (op, fields) in u {
        let Bson::Document(fields) = fields else {
            return Err(bad(format!("{op} needs an object")));
        };
        for (path, v) in fields {
            match op.as_str() {
                "$set" => set_path(doc, path, v.clone()),
                "$setOnInsert" => {
                    if inserting {
                        set_path(doc, path, v.clone())
                    }
                }
                "$unset" => unset_path(doc, path),
                "$inc" => {
                    let cur = lookup(doc, path).and_then(as_f64);
                    let new = match (lookup(doc, path), v) {
                        (Some(Bson::Int64(a)), Bson::Int64(b)) => Bson::Int64(a + b),
                        (Some(Bson::Int32(a)), Bson::Int32(b)) => Bson::Int32(a + b),
                        (None, b) => b.clone(),
                        (_, b) => Bson::Double(cur.unwrap_or(0.0) + as_f64(b).unwrap_or(0.0)),
                    };
                    set_path(doc, path, new);
                }
                "$max" | "$min" => {
                    let replace = match lookup(doc, path) {
                        None => true,
                        Some(cur) => {
                            let o = compare(v, cur);
                            if op == "$max" {
                                o == Ordering::Greater
                            } else {
                                o == Ordering::Less
                            }
                        }
                    };
                    if replace {
                        set_path(doc, path, v.clone());
                    }
                }
                other => {
                    return Err(CommandError::new(
                        codes::BAD_VALUE,
                        "BadValue",
                        format!("unknown update operator: {other}"),
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The equality fields of a filter, as an upsert's new document starts.
fn equality_fields(filter: &Document) -> Document {
    let mut out = Document::new();
    for (k, v) in filter {
        if k.starts_with('$') {
            continue;
        }
        match v {
            Bson::Document(d) if d.keys().any(|x| x.starts_with('$')) => {
                if let Some(eq) = d.get("$eq") {
                    set_path(&mut out, k, eq.clone());
                }
            }
            other => set_path(&mut out, k, other.clone()),
        }
    }
    out
}

/// A write error of one statement: `{index, code, errmsg}` (and the
/// duplicate key's `keyPattern`, `keyValue`).
/// The deepest nesting MongoDB stores: a document nested deeper is refused
/// (the document itself is the first level here, the stricter count).
pub const MAX_NESTING: usize = 100;

/// The nesting depth of `d`: 1 for a flat document, one more for each
/// level of embedded documents and arrays.
fn nesting(d: &Document) -> usize {
    fn of(b: &Bson) -> usize {
        match b {
            Bson::Document(d) => nesting(d),
            Bson::Array(a) => 1 + a.iter().map(of).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + d.values().map(of).max().unwrap_or(0)
}

/// A document MongoDB refuses to store, and why.
fn unstorable(d: &Document) -> Option<CommandError> {
    (nesting(d) > MAX_NESTING).then(|| {
        CommandError::new(
            15,
            "Overflow",
            format!("Document exceeds maximum nesting depth of {MAX_NESTING}"),
        )
    })
}

fn write_error(index: usize, e: &CommandError) -> Bson {
    let mut d = doc! {"index": index as i32, "code": e.code, "errmsg": &e.message};
    d.extend(e.details.as_deref().cloned().unwrap_or_default());
    Bson::Document(d)
}

/// Ends an index entry's key (before the slot).
const KEY_END: u8 = 0;
/// Separates the fields of an index entry's key.
const FIELD_SEP: char = '\u{1}';

/// A document as BSON.
pub fn raw(d: &Document) -> RawDocumentBuf {
    RawDocumentBuf::from_document(d).expect("documents encode")
}

/// A field by dotted path in stored BSON, decoded.
fn raw_lookup(doc: &RawDocument, path: &str) -> Option<Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?).ok()??;
    for p in parts {
        cur = match cur {
            RawBsonRef::Document(d) => d.get(p).ok()??,
            _ => return None,
        };
    }
    Bson::try_from(cur.to_raw_bson()).ok()
}

/// Copies into `out` the top-level fields of `raw` that `filter` names
/// (through `$and`, `$or` and `$nor` too): all that [`matches`] or a sort
/// reads, without decoding the rest of the document.
fn fields_named(raw: &RawDocument, filter: &Document, out: &mut Document) {
    for (k, cond) in filter {
        if matches!(k.as_str(), "$and" | "$or" | "$nor") {
            if let Bson::Array(items) = cond {
                for item in items {
                    if let Bson::Document(d) = item {
                        fields_named(raw, d, out);
                    }
                }
            }
            continue;
        }
        let top = k.split('.').next().unwrap_or(k);
        if !out.contains_key(top) {
            if let Some(v) = raw_lookup(raw, top) {
                out.insert(top, v);
            }
        }
    }
}

/// The value a filter requires a field to equal, if it requires one.
fn equality(cond: &Bson) -> Option<&Bson> {
    match cond {
        Bson::Document(d) if d.keys().any(|k| k.starts_with('$')) => match d.get("$eq") {
            Some(v) if d.len() == 1 && !matches!(v, Bson::Document(_) | Bson::Array(_)) => Some(v),
            _ => None,
        },
        Bson::Document(_) | Bson::Array(_) => None,
        v => Some(v),
    }
}

impl Collection {
    fn stored(&self, slot: u32) -> Option<&RawDocument> {
        self.slots
            .get(slot as usize)?
            .as_deref()
            .map(|b| RawDocument::from_bytes(b).expect("stored documents are valid BSON"))
    }

    fn document(&self, slot: u32) -> Option<Document> {
        self.stored(slot)
            .map(|raw| Document::try_from(raw).expect("stored documents decode"))
    }

    /// The `_id` key of the document in `slot`.
    fn id_of(&self, slot: u32) -> Option<String> {
        self.stored(slot)
            .map(|raw| key_of(&raw_lookup(raw, "_id").unwrap_or(Bson::Null)))
    }

    fn index_key(index: &Index, field: impl Fn(&str) -> Option<Bson>) -> String {
        let mut out = String::with_capacity(64);
        for (i, k) in index.keys.iter().enumerate() {
            if i > 0 {
                out.push(FIELD_SEP);
            }
            push_key(&mut out, &field(k).unwrap_or(Bson::Null));
        }
        out
    }

    fn entry(key: &str, slot: u32) -> Box<[u8]> {
        let mut e = Vec::with_capacity(key.len() + 5);
        e.extend_from_slice(key.as_bytes());
        e.push(KEY_END);
        e.extend_from_slice(&slot.to_be_bytes());
        e.into_boxed_slice()
    }

    /// The slots of the entries of `index` that start with `prefix`, in
    /// the index's order.
    fn slots_with_prefix<'a>(index: &'a Index, prefix: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
        index
            .entries
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |e| e.starts_with(prefix))
            .map(|e| {
                let n = e.len();
                u32::from_be_bytes([e[n - 4], e[n - 3], e[n - 2], e[n - 1]])
            })
    }

    /// Checks `_id` and the unique indexes for `doc`, to be stored under
    /// the `_id` key `id`.
    fn check_unique(&self, ns: &str, id: &str, doc: &Document) -> Result<(), CommandError> {
        if self.ids.contains_key(id) {
            return Err(dup(ns, "_id_", &doc! {"_id": 1}, doc));
        }
        for index in self.indexes.iter().filter(|i| i.unique) {
            let mut key = Collection::index_key(index, |k| lookup(doc, k).cloned()).into_bytes();
            key.push(KEY_END);
            if Collection::slots_with_prefix(index, &key).next().is_some() {
                let pattern = index.spec.get_document("key").cloned().unwrap_or_default();
                return Err(dup(ns, &index.name, &pattern, doc));
            }
        }
        Ok(())
    }

    fn put(&mut self, id: String, doc: &Document) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        for index in self.indexes.iter_mut() {
            let k = Collection::index_key(index, |f| lookup(doc, f).cloned());
            index.entries.insert(Collection::entry(&k, slot));
        }
        let bson = bson::to_vec(doc).expect("documents encode");
        self.slots[slot as usize] = Some(bson.into_boxed_slice());
        self.ids.insert(id.into_boxed_str(), slot);
    }

    /// Removes the document in `slot`, returning its BSON.
    fn remove(&mut self, slot: u32) -> Option<Box<[u8]>> {
        let id = self.id_of(slot)?;
        let bson = self.slots.get_mut(slot as usize)?.take()?;
        let raw = RawDocument::from_bytes(&bson).expect("stored documents are valid BSON");
        for index in self.indexes.iter_mut() {
            let k = Collection::index_key(index, |f| raw_lookup(raw, f));
            index.entries.remove(&Collection::entry(&k, slot));
        }
        self.ids.remove(id.as_str());
        self.free.push(slot);
        Some(bson)
    }

    /// Whether the document in `slot` matches `filter`.
    fn test(&mut self, slot: u32, filter: &Document) -> Result<bool, CommandError> {
        self.examined += 1;
        let Some(raw) = self.stored(slot) else {
            return Ok(false);
        };
        let mut fields = Document::new();
        fields_named(raw, filter, &mut fields);
        matches(&fields, filter)
    }

    /// The slots of the documents that match `filter`: by `_id` (an
    /// equality or `$in`), by the index with the longest run of leading
    /// fields the filter fixes, or else by a scan in `_id` order.
    fn matching(&mut self, filter: &Document) -> Result<Vec<u32>, CommandError> {
        let by_id: Option<Vec<String>> = match filter.get("_id") {
            Some(Bson::Document(d)) if d.len() == 1 => match d.get("$in") {
                Some(Bson::Array(values)) => Some(values.iter().map(key_of).collect()),
                _ => equality(&Bson::Document(d.clone())).map(|v| vec![key_of(v)]),
            },
            Some(v) => equality(v).map(|v| vec![key_of(v)]),
            None => None,
        };
        let candidates: Vec<u32> = if let Some(mut keys) = by_id {
            keys.sort();
            keys.dedup();
            keys.iter()
                .filter_map(|k| self.ids.get(k.as_str()).copied())
                .collect()
        } else {
            let best = self
                .indexes
                .iter()
                .map(|index| {
                    let fixed = index
                        .keys
                        .iter()
                        .take_while(|k| filter.get(k.as_str()).and_then(equality).is_some())
                        .count();
                    (fixed, index)
                })
                .filter(|(fixed, _)| *fixed > 0)
                .max_by_key(|(fixed, _)| *fixed);
            match best {
                Some((fixed, index)) => {
                    let mut prefix = String::new();
                    for (i, k) in index.keys[..fixed].iter().enumerate() {
                        if i > 0 {
                            prefix.push(FIELD_SEP);
                        }
                        let v = filter.get(k.as_str()).and_then(equality);
                        push_key(&mut prefix, v.unwrap_or(&Bson::Null));
                    }
                    let mut prefix = prefix.into_bytes();
                    prefix.push(if fixed == index.keys.len() {
                        KEY_END
                    } else {
                        FIELD_SEP as u8
                    });
                    Collection::slots_with_prefix(index, &prefix).collect()
                }
                None => self.ids.values().copied().collect(),
            }
        };
        let mut out = Vec::new();
        for slot in candidates {
            if self.test(slot, filter)? {
                out.push(slot);
            }
        }
        Ok(out)
    }
}

/// The duplicate-key error of `doc` on the index `index` (key `pattern`),
/// as MongoDB words it, with `keyPattern` and `keyValue`.
fn dup(ns: &str, index: &str, pattern: &Document, doc: &Document) -> CommandError {
    let mut value = Document::new();
    for k in pattern.keys() {
        value.insert(k.clone(), lookup(doc, k).cloned().unwrap_or(Bson::Null));
    }
    let shown: Vec<String> = value.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let mut e = CommandError::new(
        codes::DUPLICATE_KEY,
        "DuplicateKey",
        format!(
            "E11000 duplicate key error collection: {ns} index: {index} dup key: {{ {} }}",
            shown.join(", ")
        ),
    );
    e.details = Some(Box::new(
        doc! {"keyPattern": pattern.clone(), "keyValue": value},
    ));
    e
}

/// What makes two index specs the same index: everything but the name and
/// the version, with `unique: false` the same as no `unique`.
fn index_options(spec: &Document) -> Vec<(String, Bson)> {
    let mut v: Vec<(String, Bson)> = spec
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "name" | "v" | "ns"))
        .filter(|(k, val)| !(k.as_str() == "unique" && **val == Bson::Boolean(false)))
        .map(|(k, val)| (k.clone(), val.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// `db.collection` of a command whose first field names the collection.
fn namespace(db: &str, cmd: &Document, command: &str) -> Result<String, CommandError> {
    let coll = cmd
        .get_str(command)
        .map_err(|_| bad(format!("{command} needs a collection")))?;
    Ok(format!("{db}.{coll}"))
}

fn get_array<'a>(cmd: &'a Document, key: &str) -> Result<&'a Vec<Bson>, CommandError> {
    match cmd.get(key) {
        Some(Bson::Array(a)) => Ok(a),
        _ => Err(bad(format!("'{key}' must be an array"))),
    }
}

fn get_doc<'a>(d: &'a Document, key: &str) -> Result<Option<&'a Document>, CommandError> {
    match d.get(key) {
        None | Some(Bson::Null) => Ok(None),
        Some(Bson::Document(x)) => Ok(Some(x)),
        Some(_) => Err(bad(format!("'{key}' must be an object"))),
    }
}

fn get_i64(d: &Document, key: &str) -> Option<i64> {
    d.get(key).and_then(as_f64).map(|f| f as i64)
}

impl Store {
    fn collection(&mut self, ns: &str) -> &mut Collection {
        self.collections.entry(ns.to_string()).or_default()
    }

    /// A copy of a collection's documents (for tests), in `_id` order.
    pub fn documents(&self, ns: &str) -> Vec<Document> {
        self.collections
            .get(ns)
            .map(|c| {
                c.ids
                    .values()
                    .filter_map(|slot| c.document(*slot))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Documents tested against a filter so far, over every collection
    /// (MongoDB's `docsExamined`): what a query costs.
    pub fn examined(&self) -> u64 {
        self.collections.values().map(|c| c.examined).sum()
    }

    /// Runs `insert`. `stop_after`: apply at most that many documents (a
    /// fault that drops the connection mid-batch).
    pub fn insert(
        &mut self,
        db: &str,
        mut cmd: Document,
        stop_after: Option<usize>,
    ) -> Result<Document, CommandError> {
        let ns = namespace(db, &cmd, "insert")?;
        get_array(&cmd, "documents")?;
        let Some(Bson::Array(docs)) = cmd.remove("documents") else {
            unreachable!("checked above")
        };
        let ordered = cmd.get_bool("ordered").unwrap_or(true);
        let c = self.collection(&ns);
        let (mut n, mut errors) = (0, Vec::new());
        for (i, d) in docs.into_iter().enumerate() {
            if stop_after.is_some_and(|s| i >= s) {
                break;
            }
            let Bson::Document(mut d) = d else {
                return Err(bad("documents must be objects"));
            };
            if !d.contains_key("_id") {
                let mut with_id = doc! {"_id": ObjectId::new()};
                with_id.extend(d);
                d = with_id;
            }
            let id = key_of(d.get("_id").unwrap_or(&Bson::Null));
            let stored = match unstorable(&d) {
                Some(e) => Err(e),
                None => c.check_unique(&ns, &id, &d),
            };
            match stored {
                Ok(()) => {
                    c.put(id, &d);
                    n += 1;
                }
                Err(e) => {
                    errors.push(write_error(i, &e));
                    if ordered {
                        break;
                    }
                }
            }
        }
        let mut out = doc! {"n": n, "ok": 1.0};
        if !errors.is_empty() {
            out.insert("writeErrors", errors);
        }
        Ok(out)
    }

    /// Runs `update` (see `insert` for `stop_after`).
    pub fn update(
        &mut self,
        db: &str,
        cmd: &Document,
        stop_after: Option<usize>,
    ) -> Result<Document, CommandError> {
        let ns = namespace(db, cmd, "update")?;
        let updates = get_array(cmd, "updates")?;
        let ordered = cmd.get_bool("ordered").unwrap_or(true);
        let (mut n, mut modified, mut upserted, mut errors) = (0i64, 0i64, Vec::new(), Vec::new());
        for (i, u) in updates.iter().enumerate() {
            if stop_after.is_some_and(|s| i >= s) {
                break;
            }
            let Bson::Document(u) = u else {
                return Err(bad("updates must be objects"));
            };
            let result = self.update_one_statement(&ns, u);
            match result {
                Ok((matched, changed, new_id)) => {
                    n += matched;
                    modified += changed;
                    if let Some(id) = new_id {
                        n += 1;
                        upserted.push(Bson::Document(doc! {"index": i as i32, "_id": id}));
                    }
                }
                Err(e) => {
                    errors.push(write_error(i, &e));
                    if ordered {
                        break;
                    }
                }
            }
        }
        let mut out = doc! {"n": n, "nModified": modified, "ok": 1.0};
        if !upserted.is_empty() {
            out.insert("upserted", upserted);
        }
        if !errors.is_empty() {
            out.insert("writeErrors", errors);
        }
        Ok(out)
    }

    fn update_one_statement(
        &mut self,
        ns: &str,
        u: &Document,
    ) -> Result<(i64, i64, Option<Bson>), CommandError> {
        let everything = Document::new();
        let q = get_doc(u, "q")?.unwrap_or(&everything);
        let upd = get_doc(u, "u")?.ok_or_else(|| bad("update needs 'u'"))?;
        let multi = u.get_bool("multi").unwrap_or(false);
        let upsert = u.get_bool("upsert").unwrap_or(false);
        let c = self.collection(ns);
        let mut slots = c.matching(q)?;
        if !multi {
            slots.truncate(1);
        }
        if slots.is_empty() {
            if !upsert {
                return Ok((0, 0, None));
            }
            let mut d = equality_fields(q);
            apply_update(&mut d, upd, true)?;
            if !d.contains_key("_id") {
                let mut with_id = doc! {"_id": ObjectId::new()};
                with_id.extend(d);
                d = with_id;
            }
            let id_val = d.get("_id").cloned().unwrap_or(Bson::Null);
            let id = key_of(&id_val);
            c.check_unique(ns, &id, &d)?;
            c.put(id, &d);
            return Ok((0, 0, Some(id_val)));
        }
        let (mut matched, mut changed) = (0, 0);
        for slot in slots {
            let Some(old) = c.document(slot) else {
                continue;
            };
            let id = key_of(old.get("_id").unwrap_or(&Bson::Null));
            let mut new = old.clone();
            apply_update(&mut new, upd, false)?;
            if key_of(new.get("_id").unwrap_or(&Bson::Null)) != id {
                return Err(CommandError::new(
                    66,
                    "ImmutableField",
                    "Performing an update on the path '_id' would modify the immutable field '_id'",
                ));
            }
            matched += 1;
            if new == old {
                continue;
            }
            c.remove(slot);
            if let Err(e) = c.check_unique(ns, &id, &new) {
                c.put(id, &old);
                return Err(e);
            }
            changed += 1;
            c.put(id, &new);
        }
        Ok((matched, changed, None))
    }

    /// Runs `delete`.
    pub fn delete(&mut self, db: &str, cmd: &Document) -> Result<Document, CommandError> {
        let ns = namespace(db, cmd, "delete")?;
        let deletes = get_array(cmd, "deletes")?;
        let c = self.collections.entry(ns).or_default();
        let mut n = 0;
        for d in deletes {
            let Bson::Document(d) = d else {
                return Err(bad("deletes must be objects"));
            };
            let everything = Document::new();
            let q = get_doc(d, "q")?.unwrap_or(&everything);
            let mut slots = c.matching(q)?;
            if get_i64(d, "limit") == Some(1) {
                slots.truncate(1);
            }
            for slot in slots {
                if c.remove(slot).is_some() {
                    n += 1;
                }
            }
        }
        Ok(doc! {"n": n, "ok": 1.0})
    }

    /// Runs `find`: the matching documents' `_id`s go to a cursor, and
    /// each batch reads its documents when it is returned.
    pub fn find(&mut self, db: &str, cmd: &Document) -> Result<RawDocumentBuf, CommandError> {
        let ns = namespace(db, cmd, "find")?;
        let everything = Document::new();
        let filter = get_doc(cmd, "filter")?.unwrap_or(&everything);
        let c = self.collections.entry(ns.clone()).or_default();
        let mut slots = c.matching(filter)?;
        if let Some(sort) = get_doc(cmd, "sort")? {
            // Only the fields sorted on are decoded.
            let mut keyed: Vec<(Document, u32)> = slots
                .iter()
                .filter_map(|slot| {
                    let mut fields = Document::new();
                    fields_named(c.stored(*slot)?, sort, &mut fields);
                    Some((fields, *slot))
                })
                .collect();
            let mut refs: Vec<&(Document, u32)> = keyed.iter().collect();
            sort_by_spec(&mut refs, sort, |(d, _)| d);
            slots = refs.into_iter().map(|(_, slot)| *slot).collect();
            keyed.clear();
        }
        let skip = get_i64(cmd, "skip").unwrap_or(0).max(0) as usize;
        let limit = get_i64(cmd, "limit")
            .filter(|l| *l != 0)
            .map_or(usize::MAX, |l| l.unsigned_abs() as usize);
        let mut ids: Vec<Box<str>> = slots
            .into_iter()
            .skip(skip)
            .take(limit)
            .filter_map(|slot| c.id_of(slot).map(String::into_boxed_str))
            .collect();
        ids.reverse();
        let rows = Rows::Stored {
            ids,
            projection: get_doc(cmd, "projection")?.cloned(),
        };
        let batch = get_i64(cmd, "batchSize").filter(|b| *b > 0).unwrap_or(101) as usize;
        Ok(self.open_cursor(0, ns, rows, batch, "firstBatch"))
    }

    /// Takes the next `n` documents of `rows`. Stored documents are
    /// returned as their stored bytes, decoded only for a projection.
    fn take(&self, ns: &str, rows: &mut Rows, n: usize) -> RawArrayBuf {
        let mut out = RawArrayBuf::new();
        let mut taken = 0;
        match rows {
            Rows::Computed(docs) => {
                while taken < n {
                    let Some(d) = docs.pop() else { break };
                    out.push(raw(&d));
                    taken += 1;
                }
            }
            Rows::Stored { ids, projection } => {
                let c = self.collections.get(ns);
                while taken < n {
                    let Some(id) = ids.pop() else { break };
                    // A document deleted since the find is skipped.
                    let Some((c, slot)) =
                        c.and_then(|c| c.ids.get(&id).copied().map(|slot| (c, slot)))
                    else {
                        continue;
                    };
                    let Some(stored) = c.stored(slot) else {
                        continue;
                    };
                    match projection {
                        Some(p) => out.push(raw(&project(
                            &Document::try_from(stored).expect("stored documents decode"),
                            p,
                        ))),
                        None => out.push(stored.to_raw_document_buf()),
                    }
                    taken += 1;
                }
            }
        }
        out
    }

    /// Returns a batch of `rows` and keeps the rest under a cursor: `id`
    /// (a `getMore`'s) or a new one when `id` is 0.
    fn open_cursor(
        &mut self,
        id: i64,
        ns: String,
        mut rows: Rows,
        batch: usize,
        field: &str,
    ) -> RawDocumentBuf {
        let now = Instant::now();
        self.cursors
            .retain(|_, c| now.duration_since(c.used) < CURSOR_TIMEOUT);
        let docs = self.take(&ns, &mut rows, batch);
        let id = if rows.len() == 0 {
            0
        } else {
            let id = if id == 0 {
                self.next_cursor += 1;
                self.next_cursor
            } else {
                id
            };
            let cursor = Cursor {
                ns: ns.clone(),
                rows,
                used: now,
            };
            self.cursors.insert(id, cursor);
            id
        };
        let mut cursor = RawDocumentBuf::new();
        cursor.append(field, docs);
        cursor.append("id", id);
        cursor.append("ns", ns);
        let mut reply = RawDocumentBuf::new();
        reply.append("cursor", cursor);
        reply.append("ok", 1.0);
        reply
    }

    /// Runs `getMore`.
    pub fn get_more(&mut self, cmd: &Document) -> Result<RawDocumentBuf, CommandError> {
        let id = get_i64(cmd, "getMore").ok_or_else(|| bad("getMore needs a cursor id"))?;
        let batch = get_i64(cmd, "batchSize").filter(|b| *b > 0).unwrap_or(1000) as usize;
        let cursor = self
            .cursors
            .remove(&id)
            .filter(|c| c.used.elapsed() < CURSOR_TIMEOUT)
            .ok_or_else(|| {
                CommandError::new(
                    codes::CURSOR_NOT_FOUND,
                    "CursorNotFound",
                    format!("cursor id {id} not found"),
                )
            })?;
        Ok(self.open_cursor(id, cursor.ns, cursor.rows, batch, "nextBatch"))
    }

    /// Runs `aggregate` with the stages the drivers' helpers use: `$match`,
    /// `$sort`, `$skip`, `$limit`, `$project` and `$group` with `$sum`
    /// (what `countDocuments` sends). A leading `$match` selects documents
    /// as `find` does; only those are decoded.
    pub fn aggregate(&mut self, db: &str, cmd: &Document) -> Result<RawDocumentBuf, CommandError> {
        let ns = namespace(db, cmd, "aggregate")?;
        let pipeline = get_array(cmd, "pipeline")?;
        let c = self.collections.entry(ns.clone()).or_default();
        let leading = match pipeline.first() {
            Some(Bson::Document(stage)) if stage.len() == 1 => stage.get_document("$match").ok(),
            _ => None,
        };
        let (slots, stages) = match leading {
            Some(filter) => (c.matching(filter)?, &pipeline[1..]),
            None => (c.ids.values().copied().collect(), &pipeline[..]),
        };
        let mut docs: Vec<Document> = slots.into_iter().filter_map(|s| c.document(s)).collect();
        for stage in stages {
            let Bson::Document(stage) = stage else {
                return Err(bad("pipeline stages must be objects"));
            };
            let Some((name, arg)) = stage.iter().next() else {
                return Err(bad("empty stage"));
            };
            match (name.as_str(), arg) {
                ("$match", Bson::Document(f)) => {
                    let mut kept = Vec::new();
                    for d in docs {
                        if matches(&d, f)? {
                            kept.push(d);
                        }
                    }
                    docs = kept;
                }
                ("$skip", n) => {
                    docs = docs
                        .into_iter()
                        .skip(as_f64(n).unwrap_or(0.0) as usize)
                        .collect()
                }
                ("$limit", n) => docs.truncate(as_f64(n).unwrap_or(0.0) as usize),
                ("$sort", Bson::Document(sort)) => {
                    let mut refs: Vec<&Document> = docs.iter().collect();
                    sort_by_spec(&mut refs, sort, |d| d);
                    docs = refs.into_iter().cloned().collect();
                }
                ("$project", Bson::Document(p)) => {
                    docs = docs.iter().map(|d| project(d, p)).collect()
                }
                ("$group", Bson::Document(g)) => docs = group(&docs, g)?,
                (other, _) => {
                    return Err(CommandError::new(
                        codes::BAD_VALUE,
                        "BadValue",
                        format!("unsupported aggregation stage {other}"),
                    ))
                }
            }
        }
        let batch = cmd
            .get_document("cursor")
            .ok()
            .and_then(|c| get_i64(c, "batchSize"))
            .filter(|b| *b > 0)
            .unwrap_or(101) as usize;
        docs.reverse();
        Ok(self.open_cursor(0, ns, Rows::Computed(docs), batch, "firstBatch"))
    }

    /// Runs `killCursors`.
    pub fn kill_cursors(&mut self, cmd: &Document) -> Result<Document, CommandError> {
        let mut killed = Vec::new();
        if let Ok(ids) = cmd.get_array("cursors") {
            for id in ids {
                if let Some(id) = as_f64(id).map(|f| f as i64) {
                    if self.cursors.remove(&id).is_some() {
                        killed.push(Bson::Int64(id));
                    }
                }
            }
        }
        Ok(
            doc! {"cursorsKilled": killed, "cursorsNotFound": [], "cursorsAlive": [], "cursorsUnknown": [], "ok": 1.0},
        )
    }

    /// Runs `count`.
    pub fn count(&mut self, db: &str, cmd: &Document) -> Result<Document, CommandError> {
        let ns = namespace(db, cmd, "count")?;
        let everything = Document::new();
        let q = get_doc(cmd, "query")?.unwrap_or(&everything);
        let n = self.collection(&ns).matching(q)?.len() as i64;
        Ok(doc! {"n": n, "ok": 1.0})
    }

    /// Runs `createIndexes`; building a unique index over duplicates fails
    /// with 11000 as in MongoDB.
    pub fn create_indexes(&mut self, db: &str, cmd: &Document) -> Result<Document, CommandError> {
        let ns = namespace(db, cmd, "createIndexes")?;
        let specs = get_array(cmd, "indexes")?.clone();
        let c = self.collection(&ns);
        let before = c.indexes.len() as i32 + 1;
        for spec in specs {
            let Bson::Document(spec) = spec else {
                return Err(bad("index specs must be objects"));
            };
            let key = get_doc(&spec, "key")?
                .cloned()
                .ok_or_else(|| bad("index spec needs 'key'"))?;
            let name = spec
                .get_str("name")
                .map(str::to_string)
                .unwrap_or_else(|_| {
                    key.iter()
                        .map(|(k, v)| format!("{k}_{}", as_f64(v).unwrap_or(1.0) as i64))
                        .collect::<Vec<_>>()
                        .join("_")
                });
            if let Some(existing) = c.indexes.iter().find(|i| i.name == name) {
                if index_options(&existing.spec) != index_options(&spec) {
                    return Err(CommandError::new(
                        86,
                        "IndexKeySpecsConflict",
                        format!(
                            "An existing index has the same name as the requested index but a different key or options: {name}"
                        ),
                    ));
                }
                continue;
            }
            let mut index = Index {
                name: name.clone(),
                keys: key.keys().cloned().collect(),
                spec: spec.clone(),
                unique: spec.get_bool("unique").unwrap_or(false),
                entries: BTreeSet::new(),
            };
            for &slot in c.ids.values() {
                let Some(raw) = c.stored(slot) else { continue };
                let k = Collection::index_key(&index, |f| raw_lookup(raw, f));
                if index.unique {
                    let mut prefix = k.clone().into_bytes();
                    prefix.push(KEY_END);
                    if Collection::slots_with_prefix(&index, &prefix)
                        .next()
                        .is_some()
                    {
                        let d = c.document(slot).unwrap_or_default();
                        return Err(dup(&ns, &name, &key, &d));
                    }
                }
                index.entries.insert(Collection::entry(&k, slot));
            }
            c.indexes.push(index);
        }
        let after = c.indexes.len() as i32 + 1;
        Ok(
            doc! {"numIndexesBefore": before, "numIndexesAfter": after, "createdCollectionAutomatically": false, "ok": 1.0},
        )
    }

    /// Runs `listIndexes`.
    pub fn list_indexes(
        &mut self,
        db: &str,
        cmd: &Document,
    ) -> Result<RawDocumentBuf, CommandError> {
        let ns = namespace(db, cmd, "listIndexes")?;
        let c = self.collection(&ns);
        let mut docs = vec![doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}];
        for i in &c.indexes {
            let mut d = doc! {"v": 2, "key": i.spec.get("key").cloned().unwrap_or(Bson::Null), "name": &i.name};
            if i.unique {
                d.insert("unique", true);
            }
            docs.push(d);
        }
        docs.reverse();
        Ok(self.open_cursor(0, ns, Rows::Computed(docs), 1000, "firstBatch"))
    }

    /// Runs `drop` (a missing collection is not an error here).
    pub fn drop_collection(&mut self, db: &str, cmd: &Document) -> Result<Document, CommandError> {
        let coll = cmd
            .get_str("drop")
            .map_err(|_| bad("drop needs a collection"))?;
        self.collections.remove(&format!("{db}.{coll}"));
        Ok(doc! {"ok": 1.0})
    }

    /// Runs `dropDatabase`.
    pub fn drop_database(&mut self, db: &str) -> Result<Document, CommandError> {
        let prefix = format!("{db}.");
        self.collections.retain(|ns, _| !ns.starts_with(&prefix));
        Ok(doc! {"ok": 1.0})
    }
}

/// Sorts items by a sort specification (`{field: 1 | -1, …}`) on the
/// document each one shows.
fn sort_by_spec<T>(items: &mut [&T], sort: &Document, doc: impl Fn(&T) -> &Document) {
    let keys: Vec<(String, bool)> = sort
        .iter()
        .map(|(k, v)| (k.clone(), as_f64(v).unwrap_or(1.0) < 0.0))
        .collect();
    items.sort_by(|a, b| {
        let (a, b) = (doc(a), doc(b));
        for (k, desc) in &keys {
            let o = compare(
                lookup(a, k).unwrap_or(&Bson::Null),
                lookup(b, k).unwrap_or(&Bson::Null),
            );
            if o != Ordering::Equal {
                return if *desc { o.reverse() } else { o };
            }
        }
        Ordering::Equal
    });
}

/// `$group` with an `_id` expression (a constant or `"$field"`) and `$sum`
/// accumulators (of a constant or `"$field"`).
fn group(docs: &[Document], g: &Document) -> Result<Vec<Document>, CommandError> {
    let eval = |d: &Document, e: &Bson| -> Bson {
        match e {
            Bson::String(s) if s.starts_with('$') => {
                lookup(d, &s[1..]).cloned().unwrap_or(Bson::Null)
            }
            other => other.clone(),
        }
    };
    let id_expr = g.get("_id").cloned().unwrap_or(Bson::Null);
    let mut groups: Vec<(Bson, Document)> = Vec::new();
    for d in docs {
        let id = eval(d, &id_expr);
        let pos = match groups.iter().position(|(k, _)| equal(k, &id)) {
            Some(p) => p,
            None => {
                groups.push((id.clone(), doc! {"_id": id}));
                groups.len() - 1
            }
        };
        for (field, acc) in g.iter().filter(|(k, _)| *k != "_id") {
            let Bson::Document(acc) = acc else {
                return Err(bad("accumulators must be objects"));
            };
            let Some(expr) = acc.get("$sum") else {
                return Err(CommandError::new(
                    codes::BAD_VALUE,
                    "BadValue",
                    "only $sum is supported",
                ));
            };
            let add = as_f64(&eval(d, expr)).unwrap_or(0.0);
            let out = &mut groups[pos].1;
            let cur = out.get(field).and_then(as_f64).unwrap_or(0.0);
            let sum = cur + add;
            if sum.fract() == 0.0 && sum.abs() < 2f64.powi(31) {
                out.insert(field.clone(), sum as i32);
            } else {
                out.insert(field.clone(), sum);
            }
        }
    }
    Ok(groups.into_iter().map(|(_, d)| d).collect())
}

fn project(d: &Document, p: &Document) -> Document {
    let include: Vec<&String> = p
        .iter()
        .filter(|(k, v)| {
            *k != "_id"
                && as_f64(v).unwrap_or(if matches!(v, Bson::Boolean(true)) {
                    1.0
                } else {
                    0.0
                }) != 0.0
        })
        .map(|(k, _)| k)
        .collect();
    let drop_id = p
        .get("_id")
        .is_some_and(|v| matches!(v, Bson::Boolean(false)) || as_f64(v) == Some(0.0));
    if include.is_empty() {
        let mut out = d.clone();
        for (k, _) in p.iter() {
            out.remove(k);
        }
        if !drop_id {
            if let Some(id) = d.get("_id") {
                out.insert("_id", id.clone());
            }
        }
        return out;
    }
    let mut out = Document::new();
    if !drop_id {
        if let Some(id) = d.get("_id") {
            out.insert("_id", id.clone());
        }
    }
    for k in include {
        if let Some(v) = lookup(d, k) {
            set_path(&mut out, k, v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_with_a_version_guard_never_moves_back() {
        let mut s = Store::default();
        let up = |v: i64| {
            doc! {"update": "st", "updates": [{"q": {"_id": "t/alice", "v": {"$lt": v}}, "u": {"$set": {"v": v}}, "upsert": true}], "ordered": false}
        };
        assert_eq!(
            s.update("d", &up(5), None).unwrap().get_i64("n").unwrap(),
            1
        );
        assert_eq!(
            s.update("d", &up(9), None)
                .unwrap()
                .get_i64("nModified")
                .unwrap(),
            1
        );
        // An older version: no match, and the upsert collides on _id: 11000.
        let r = s.update("d", &up(7), None).unwrap();
        let errs = r.get_array("writeErrors").unwrap();
        assert_eq!(
            errs[0].as_document().unwrap().get_i32("code").unwrap(),
            11000
        );
        assert_eq!(s.documents("d.st")[0].get_i64("v").unwrap(), 9);
    }

    #[test]
    fn unordered_insert_keeps_going_past_duplicates() {
        let mut s = Store::default();
        s.insert("d", doc! {"insert": "c", "documents": [{"_id": 1}]}, None)
            .unwrap();
        let r = s
            .insert("d", doc! {"insert": "c", "documents": [{"_id": 0}, {"_id": 1}, {"_id": 2}], "ordered": false}, None)
            .unwrap();
        assert_eq!(r.get_i32("n").unwrap(), 2);
        assert_eq!(r.get_array("writeErrors").unwrap().len(), 1);
        let r = s
            .insert(
                "d",
                doc! {"insert": "c", "documents": [{"_id": 3}, {"_id": 1}, {"_id": 4}]},
                None,
            )
            .unwrap();
        assert_eq!(
            r.get_i32("n").unwrap(),
            1,
            "ordered stops at the first error"
        );
    }

    #[test]
    fn documents_nested_deeper_than_mongodb_stores_are_refused() {
        // `levels` of documents, the innermost `{x: 1}`.
        let nested = |levels: usize| (1..levels).fold(doc! {"x": 1}, |d, _| doc! {"a": d});
        let mut s = Store::default();
        let mut insert = |d: Document| {
            s.insert("d", doc! {"insert": "c", "documents": [d]}, None)
                .unwrap()
        };
        let deep = |id: i64, levels: usize| doc! {"_id": id, "n": nested(levels - 1)};
        assert_eq!(insert(deep(1, MAX_NESTING)).get_i32("n").unwrap(), 1);
        // Arrays are levels too.
        let array = doc! {"_id": 2, "n": [nested(MAX_NESTING - 2)]};
        assert_eq!(insert(array).get_i32("n").unwrap(), 1);
        for d in [
            deep(3, MAX_NESTING + 1),
            doc! {"_id": 4, "n": [nested(MAX_NESTING - 1)]},
        ] {
            let r = insert(d);
            assert_eq!(r.get_i32("n").unwrap(), 0);
            let e = r.get_array("writeErrors").unwrap()[0]
                .as_document()
                .unwrap()
                .clone();
            assert_eq!(e.get_i32("code").unwrap(), 15, "{e}");
        }
    }

    #[test]
    fn find_sorts_filters_and_pages() {
        let mut s = Store::default();
        let docs: Vec<Document> = (0..250i64)
            .map(|i| doc! {"_id": i, "t": if i % 2 == 0 {"a"} else {"b"}, "seq": 1000 - i})
            .collect();
        s.insert("d", doc! {"insert": "c", "documents": docs}, None)
            .unwrap();
        let r = s
            .find("d", &doc! {"find": "c", "filter": {"t": "a", "seq": {"$gte": 800}}, "sort": {"seq": 1}, "projection": {"seq": 1, "_id": 0}, "batchSize": 50})
            .unwrap();
        let cursor = r.get_document("cursor").unwrap();
        let first = cursor.get_array("firstBatch").unwrap();
        assert_eq!(first.into_iter().count(), 50);
        assert_eq!(
            Document::try_from(first.get_document(0).unwrap()).unwrap(),
            doc! {"seq": 800i64}
        );
        let id = cursor.get_i64("id").unwrap();
        let more = s
            .get_more(&doc! {"getMore": id, "collection": "c", "batchSize": 1000})
            .unwrap();
        let next = more
            .get_document("cursor")
            .unwrap()
            .get_array("nextBatch")
            .unwrap();
        assert_eq!(next.into_iter().count(), 51);
    }

    #[test]
    fn unique_indexes_are_enforced() {
        let mut s = Store::default();
        s.create_indexes("d", &doc! {"createIndexes": "c", "indexes": [{"key": {"t": 1, "seq": 1}, "name": "t_seq", "unique": true}]}).unwrap();
        s.insert(
            "d",
            doc! {"insert": "c", "documents": [{"_id": 1, "t": "a", "seq": 1}]},
            None,
        )
        .unwrap();
        let r = s
            .insert(
                "d",
                doc! {"insert": "c", "documents": [{"_id": 2, "t": "a", "seq": 1}]},
                None,
            )
            .unwrap();
        assert!(r.get_array("writeErrors").is_ok());
        let r = s
            .insert(
                "d",
                doc! {"insert": "c", "documents": [{"_id": 2, "t": "b", "seq": 1}]},
                None,
            )
            .unwrap();
        assert!(r.get_array("writeErrors").is_err());
    }
}
