//! The events of a `record_events` batch read from its `jsonb` array in
//! place: each element's known fields looked up in the binary container
//! (what `e ->> 'field'` returns, and `e -> 'metadata'`), without a
//! statement or a copy of each element.

use crate::error::AuditError;
use crate::sql_values::Jsonb;
use pgrx::pg_sys;
use pgrx::pg_sys::jbvType;
use pgrx::pg_sys::JsonbIteratorToken::{WJB_DONE, WJB_KEY};

/// The fields an event object may hold.
const KNOWN_FIELDS: [&str; 10] = [
    "log_id",
    "tenant_id",
    "org_id",
    "event_type",
    "user_id",
    "ip",
    "user_agent",
    "channel",
    "occurred_at",
    "metadata",
];

/// One element of the array: its fields as `->>` gives them, its metadata
/// as `-> 'metadata'` (a JSON `null` is none).
pub struct Raw {
    pub log_id: Option<String>,
    pub tenant: Option<String>,
    pub org: Option<String>,
    pub event_type: Option<String>,
    pub user: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub channel: Option<String>,
    pub occurred_at: Option<String>,
    pub metadata: Option<Jsonb>,
}

const JB_CMASK: u32 = pg_sys::JB_CMASK;
const JB_FOBJECT: u32 = pg_sys::JB_FOBJECT;
const JB_FARRAY: u32 = pg_sys::JB_FARRAY;
const JB_FSCALAR: u32 = pg_sys::JB_FSCALAR;

/// The elements of `array`, in order: refused (`BatchNotArray`) unless it
/// is a JSON array, and (`BatchTooLarge`) when it holds more than `max`.
pub fn read(array: Jsonb, max: i32) -> Result<Vec<Raw>, AuditError> {
    // SAFETY: the datum is a jsonb value; its detoasted copy (or the value
    // itself) lives in the call's memory context while it is read, and
    // every container pointer below points into it.
    unsafe {
        let jb = pg_sys::pg_detoast_datum(array.0.cast_mut_ptr()) as *mut pg_sys::Jsonb;
        let root = std::ptr::addr_of_mut!((*jb).root);
        // A scalar is stored as a one-element array marked scalar.
        let header = (*root).header;
        if header & JB_FARRAY == 0 || header & JB_FSCALAR != 0 {
            return Err(AuditError::BatchNotArray);
        }
        let n = header & JB_CMASK;
        if i64::from(n) > i64::from(max) {
            return Err(AuditError::BatchTooLarge { max, got: n as i32 });
        }
        let mut raws = Vec::with_capacity(n as usize);
        for i in 0..n {
            let ord = i as usize + 1;
            let v = pg_sys::getIthJsonbValueFromContainer(root, i);
            let object = if v.is_null() || (*v).type_ != jbvType::jbvBinary {
                None
            } else {
                let c = (*v).val.binary.data;
                ((*c).header & JB_FOBJECT != 0).then_some(c)
            };
            let Some(c) = object else {
                return Err(AuditError::BatchEventNotObject(ord));
            };
            raws.push(element(c, ord)?);
        }
        Ok(raws)
    }
}

/// Reads one event object: each text field must be a JSON string or
/// `null` (absent), the metadata an object or `null`; any other JSON type
/// is refused (`BatchFieldType`), naming the event and the field.
///
/// # Safety
/// `c` points to a jsonb object container that stays valid for the call.
unsafe fn element(c: *mut pg_sys::JsonbContainer, ord: usize) -> Result<Raw, AuditError> {
    let mut found = 0u32;
    let mut text = |key: &'static str| -> Result<Option<String>, AuditError> {
        // SAFETY: `c` is valid, as the function requires.
        let Some(v) = (unsafe { field(c, key) }) else {
            return Ok(None);
        };
        found += 1;
        // SAFETY: `v` was found in the valid container `c`.
        match unsafe { string(&v) } {
            Ok(s) => Ok(s),
            Err(found) => Err(AuditError::BatchFieldType {
                event: ord,
                field: key,
                expected: "a JSON string",
                found,
            }),
        }
    };
    let mut raw = Raw {
        log_id: text("log_id")?,
        tenant: text("tenant_id")?,
        org: text("org_id")?,
        event_type: text("event_type")?,
        user: text("user_id")?,
        ip: text("ip")?,
        user_agent: text("user_agent")?,
        channel: text("channel")?,
        occurred_at: text("occurred_at")?,
        metadata: None,
    };
    // SAFETY: `c` is valid, as the function requires.
    if let Some(mut m) = unsafe { field(c, "metadata") } {
        found += 1;
        match json_type(&m) {
            "null" => {}
            // SAFETY: a container value found in `c`; the new jsonb datum is
            // allocated in the current memory context.
            "object" => unsafe {
                raw.metadata = Some(Jsonb(pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(
                    &mut m,
                ))));
            },
            other => {
                return Err(AuditError::BatchFieldType {
                    event: ord,
                    field: "metadata",
                    expected: "a JSON object",
                    found: other,
                })
            }
        }
    }
    // SAFETY: `c` is valid, as the function requires.
    if unsafe { (*c).header } & JB_CMASK > found {
        // SAFETY: as above.
        return Err(AuditError::BatchUnknownFields(ord, unsafe {
            unknown_keys(c)
        }));
    }
    Ok(raw)
}

/// The value of `key` in object `c`, if present.
///
/// # Safety
/// `c` points to a valid jsonb object container.
unsafe fn field(c: *mut pg_sys::JsonbContainer, key: &str) -> Option<pg_sys::JsonbValue> {
    // SAFETY: `c` is valid (the function's contract); the key is a Rust
    // string of `key.len()` bytes that outlives the call; `v` is written
    // in full when a value is found and read only then.
    unsafe {
        let mut v = std::mem::zeroed::<pg_sys::JsonbValue>();
        let r =
            pg_sys::getKeyJsonValueFromContainer(c, key.as_ptr().cast(), key.len() as i32, &mut v);
        (!r.is_null()).then_some(v)
    }
}

/// The JSON type of a value found in a container, as `jsonb_typeof` names it.
fn json_type(v: &pg_sys::JsonbValue) -> &'static str {
    match v.type_ {
        jbvType::jbvNull => "null",
        jbvType::jbvString => "string",
        jbvType::jbvNumeric => "number",
        jbvType::jbvBool => "boolean",
        jbvType::jbvBinary => {
            // SAFETY: a jbvBinary value's `binary` member is the one set,
            // and its container pointer points into the detoasted value.
            let header = unsafe { (*v.val.binary.data).header };
            if header & JB_FOBJECT != 0 {
                "object"
            } else {
                "array"
            }
        }
        _ => "array",
    }
}

/// A string value's text, `None` for `null`, or the JSON type it has
/// instead.
///
/// # Safety
/// `v` is a value found in a valid container.
unsafe fn string(v: &pg_sys::JsonbValue) -> Result<Option<String>, &'static str> {
    match v.type_ {
        jbvType::jbvNull => Ok(None),
        jbvType::jbvString => {
            // SAFETY: a jbvString value's `string` member is the one set: a
            // pointer to `len` bytes inside the container (not terminated).
            let bytes = unsafe {
                let s = v.val.string;
                std::slice::from_raw_parts(s.val.cast::<u8>(), s.len as usize)
            };
            Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
        }
        _ => Err(json_type(v)),
    }
}

/// The keys of object `c` that are not event fields, sorted, joined by ", ".
///
/// # Safety
/// `c` points to a valid jsonb object container.
unsafe fn unknown_keys(c: *mut pg_sys::JsonbContainer) -> String {
    // SAFETY: as the function requires.
    unsafe {
        let mut it = pg_sys::JsonbIteratorInit(c);
        let mut v = std::mem::zeroed::<pg_sys::JsonbValue>();
        let mut keys = Vec::new();
        loop {
            let token = pg_sys::JsonbIteratorNext(&mut it, &mut v, true);
            if token == WJB_DONE {
                break;
            }
            if token == WJB_KEY {
                if let Ok(Some(k)) = string(&v) {
                    if !KNOWN_FIELDS.contains(&k.as_str()) {
                        keys.push(k);
                    }
                }
            }
        }
        keys.sort();
        let shown: Vec<String> = keys
            .iter()
            .take(SHOWN_KEYS)
            .map(|k| k.chars().take(SHOWN_KEY_CHARS).collect())
            .collect();
        let more = keys.len().saturating_sub(SHOWN_KEYS);
        if more > 0 {
            format!("{} and {more} more", shown.join(", "))
        } else {
            shown.join(", ")
        }
    }
}

/// How many unknown keys an error names, and how many characters of each
/// (the caller chose them: an error stays short whatever it sent).
const SHOWN_KEYS: usize = 5;
const SHOWN_KEY_CHARS: usize = 64;
