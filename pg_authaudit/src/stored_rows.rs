//! Decoding stored log rows straight from an SPI tuple table into a
//! [`RowBatch`]: one deform per row and no per-column conversions, so that
//! verification reads rows about as fast as PostgreSQL can produce them.
//! The column order is that of `sql/queries/verify_rows.sql`.

use crate::time::unix_micros_of_raw;
use authaudit_core::canonical::{encode_body_into, Record};
use authaudit_core::chain::StoredLinks;
use authaudit_core::verification::RowBatch;
use pgrx::pg_sys;
use pgrx::varlena::{varatt_is_1b_e, varatt_is_4b_c, varlena_to_byte_slice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const COLUMNS: usize = 16;
/// `PGSQL_AF_INET` and `PGSQL_AF_INET6` in PostgreSQL's `inet` struct.
const PGSQL_AF_INET: u8 = 2;
const PGSQL_AF_INET6: u8 = 3;

/// Decodes every row of `table` for `tenant_id`. Stops at the first row it
/// cannot read and returns its seq and the reason with the rows before it.
///
/// # Safety
/// `table` must be a valid SPI tuple table whose columns are those of
/// `verify_rows.sql`, alive for the duration of the call.
pub unsafe fn decode(
    table: *mut pg_sys::SPITupleTable,
    tenant_id: &str,
) -> (RowBatch, Option<(i64, String)>) {
    // SAFETY: guaranteed by the caller.
    let table = unsafe { &*table };
    let n = table.numvals as usize;
    let mut batch = RowBatch::with_capacity(n);
    let mut values = [pg_sys::Datum::from(0usize); COLUMNS];
    let mut nulls = [false; COLUMNS];
    for i in 0..n {
        // SAFETY: `vals` holds `numvals` tuples described by `tupdesc`, which
        // has COLUMNS attributes.
        unsafe {
            pg_sys::heap_deform_tuple(
                *table.vals.add(i),
                table.tupdesc,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
        }
        // SAFETY: each datum is read as the type its column has.
        let row = unsafe { Columns::new(&values, &nulls) };
        let seq = row.int8(0);
        let ip = match row.inet(5) {
            Ok(ip) => ip,
            Err(reason) => return (batch, Some((seq, reason))),
        };
        let record = Record {
            log_id: row.uuid(1),
            tenant_id,
            org_id: row.text(2),
            event_type: row.text(3).unwrap_or(""),
            user_id: row.text(4).unwrap_or(""),
            ip,
            user_agent: row.text(6),
            channel: row.text(7).unwrap_or(""),
            occurred_at_us: unix_micros_of_raw(row.int8(8)),
            recorded_at_us: unix_micros_of_raw(row.int8(9)),
            metadata: row.text(10).unwrap_or(""),
        };
        let stored = StoredLinks {
            format_version: row.int8(11) as i16,
            prev_link: row.bytes(12).unwrap_or_default(),
            sha256: row.bytes(13).unwrap_or_default(),
            sha512: row.bytes(14).unwrap_or_default(),
            sha3_256: row.bytes(15).unwrap_or_default(),
        };
        batch.push(seq, &stored, |buf| encode_body_into(buf, &record));
    }
    (batch, None)
}

/// Typed views of one deformed row.
struct Columns<'a> {
    values: &'a [pg_sys::Datum; COLUMNS],
    nulls: &'a [bool; COLUMNS],
}

impl<'a> Columns<'a> {
    /// # Safety
    /// The datums must stay valid while the view is used.
    unsafe fn new(values: &'a [pg_sys::Datum; COLUMNS], nulls: &'a [bool; COLUMNS]) -> Self {
        Columns { values, nulls }
    }

    /// A by-value 8-byte (or smaller, sign-extended) column; 0 when NULL.
    fn int8(&self, i: usize) -> i64 {
        if self.nulls[i] {
            0
        } else {
            self.values[i].value() as i64
        }
    }

    fn bytes(&self, i: usize) -> Option<&'a [u8]> {
        if self.nulls[i] {
            return None;
        }
        let mut ptr = self.values[i].cast_mut_ptr::<pg_sys::varlena>();
        // SAFETY: a varlena column; compressed or external values are
        // expanded first (into the current memory context).
        unsafe {
            if varatt_is_1b_e(ptr) || varatt_is_4b_c(ptr) {
                ptr = pg_sys::pg_detoast_datum_packed(ptr);
            }
            Some(varlena_to_byte_slice(ptr))
        }
    }

    /// Text columns; PostgreSQL guarantees valid UTF-8 in a UTF-8 database,
    /// and anything else would not match its digest anyway.
    fn text(&self, i: usize) -> Option<&'a str> {
        self.bytes(i)
            .map(|b| std::str::from_utf8(b).unwrap_or("\u{FFFD}"))
    }

    fn uuid(&self, i: usize) -> [u8; 16] {
        if self.nulls[i] {
            return [0; 16];
        }
        // SAFETY: uuid is a fixed-length 16-byte by-reference type.
        unsafe { *self.values[i].cast_mut_ptr::<[u8; 16]>() }
    }

    /// The `inet` struct: family, prefix bits, then the address bytes.
    fn inet(&self, i: usize) -> Result<Option<IpAddr>, String> {
        let Some(b) = self.bytes(i) else {
            return Ok(None);
        };
        match b {
            [PGSQL_AF_INET, 32, a @ ..] if a.len() >= 4 => {
                Ok(Some(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))))
            }
            [PGSQL_AF_INET6, 128, a @ ..] if a.len() >= 16 => {
                let octets: [u8; 16] = a[..16].try_into().expect("16 bytes");
                Ok(Some(IpAddr::V6(Ipv6Addr::from(octets))))
            }
            _ => Err("stored ip is not a host address".into()),
        }
    }
}
