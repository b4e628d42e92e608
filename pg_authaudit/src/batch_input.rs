//! The events of a `record_events` batch read from its `jsonb` array in
//! place: each element's known fields looked up in the binary container
//! (what `e ->> 'field'` returns, and `e -> 'metadata'`), without a
//! statement or a copy of each element.

use crate::error::AuditError;
use crate::sql_values::Jsonb;
use pgrx::direct_function_call;
use pgrx::pg_sys;
use pgrx::pg_sys::jbvType;
use pgrx::pg_sys::JsonbIteratorToken::{WJB_DONE, WJB_KEY};
use std::ffi::CStr;

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

/// Reads one event object.
///
/// # Safety
/// `c` points to a jsonb object container that stays valid for the call.
unsafe fn element(c: *mut pg_sys::JsonbContainer, ord: usize) -> Result<Raw, AuditError> {
    // SAFETY: as the function requires.
    unsafe {
        let mut found = 0u32;
        let mut text = |key: &str| {
            let v = field(c, key);
            found += u32::from(v.is_some());
            v.and_then(|v| as_text(&v))
        };
        let mut raw = Raw {
            log_id: text("log_id"),
            tenant: text("tenant_id"),
            org: text("org_id"),
            event_type: text("event_type"),
            user: text("user_id"),
            ip: text("ip"),
            user_agent: text("user_agent"),
            channel: text("channel"),
            occurred_at: text("occurred_at"),
            metadata: None,
        };
        if let Some(mut m) = field(c, "metadata") {
            found += 1;
            if m.type_ != jbvType::jbvNull {
                raw.metadata = Some(Jsonb(pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(
                    &mut m,
                ))));
            }
        }
        if (*c).header & JB_CMASK > found {
            return Err(AuditError::BatchUnknownFields(ord, unknown_keys(c)));
        }
        Ok(raw)
    }
}

/// The value of `key` in object `c`, if present.
///
/// # Safety
/// `c` points to a valid jsonb object container.
unsafe fn field(c: *mut pg_sys::JsonbContainer, key: &str) -> Option<pg_sys::JsonbValue> {
    // SAFETY: as the function requires.
    unsafe {
        let mut v = std::mem::zeroed::<pg_sys::JsonbValue>();
        let r =
            pg_sys::getKeyJsonValueFromContainer(c, key.as_ptr().cast(), key.len() as i32, &mut v);
        (!r.is_null()).then_some(v)
    }
}

/// The value as `->>` gives it: a string's text, a number's or a boolean's
/// literal, a container's JSON text, none for `null`.
///
/// # Safety
/// `v` is a value found in a valid container.
unsafe fn as_text(v: &pg_sys::JsonbValue) -> Option<String> {
    // SAFETY: as the function requires.
    unsafe {
        match v.type_ {
            jbvType::jbvNull => None,
            jbvType::jbvString => {
                let s = v.val.string;
                let bytes = std::slice::from_raw_parts(s.val.cast::<u8>(), s.len as usize);
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
            jbvType::jbvBool => Some(if v.val.boolean { "true" } else { "false" }.to_owned()),
            jbvType::jbvNumeric => direct_function_call::<String>(
                pg_sys::numeric_out,
                &[Some(pg_sys::Datum::from(v.val.numeric))],
            ),
            _ => {
                let b = v.val.binary;
                let s = pg_sys::JsonbToCString(std::ptr::null_mut(), b.data, b.len);
                Some(CStr::from_ptr(s).to_string_lossy().into_owned())
            }
        }
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
                if let Some(k) = as_text(&v) {
                    if !KNOWN_FIELDS.contains(&k.as_str()) {
                        keys.push(k);
                    }
                }
            }
        }
        keys.sort();
        keys.join(", ")
    }
}
