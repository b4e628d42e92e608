//! SQL values the recording pipeline passes through without converting them:
//! a `jsonb` argument goes into the row as the same datum, an `inet`
//! argument is read from its binary form. The `jsonb` helpers call
//! PostgreSQL's own functions, so numbers keep their exact form.

use pgrx::callconv::{Arg, ArgAbi};
use pgrx::nullable::Nullable;
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::impl_sql_translatable;
use pgrx::{direct_function_call, direct_function_call_as_datum, FromDatum, IntoDatum};
use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Lets a function take the type as an argument, through `FromDatum`.
macro_rules! argument_from_datum {
    ($ty:ty) => {
        // SAFETY: the value is read with the type's FromDatum, which checks
        // for SQL NULL.
        unsafe impl<'fcx> ArgAbi<'fcx> for $ty {
            unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                // SAFETY: the caller passes an argument of this type.
                unsafe { arg.unbox_arg_using_from_datum() }
                    .unwrap_or_else(|| panic!("argument {index} must not be null"))
            }

            unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
                // SAFETY: as above.
                unsafe { arg.unbox_arg_using_from_datum() }.into()
            }
        }
    };
}

/// A `jsonb` value as PostgreSQL holds it.
#[derive(Debug, Clone, Copy)]
pub struct Jsonb(pub pg_sys::Datum);

impl FromDatum for Jsonb {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _oid: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then_some(Jsonb(datum))
    }
}

impl IntoDatum for Jsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

impl_sql_translatable!(Jsonb, "jsonb");
argument_from_datum!(Jsonb);

impl Jsonb {
    /// Parses JSON text (PostgreSQL's `jsonb_in`, which raises 22P02 on bad
    /// input).
    pub fn parse(text: &str) -> Jsonb {
        let c = CString::new(text).expect("JSON text holds no NUL");
        // SAFETY: jsonb_in takes a C string (valid for the call) and
        // returns a new jsonb datum.
        let d = unsafe {
            direct_function_call_as_datum(
                pg_sys::jsonb_in,
                &[Some(pg_sys::Datum::from(c.as_ptr()))],
            )
        };
        Jsonb(d.expect("jsonb_in returns a value"))
    }

    /// The canonical text of the value (`jsonb_out`): what the chain hashes.
    pub fn text(self) -> String {
        // SAFETY: jsonb_out of a jsonb datum returns a C string.
        let s = unsafe { direct_function_call::<&CStr>(pg_sys::jsonb_out, &[Some(self.0)]) }
            .expect("jsonb_out returns text");
        s.to_string_lossy().into_owned()
    }

    /// `jsonb_typeof(self) = 'object' AND self ? key`.
    pub fn has_key(self, key: &str) -> bool {
        // SAFETY: jsonb_exists of a jsonb datum and a text datum.
        self.is_object()
            && unsafe {
                direct_function_call::<bool>(
                    pg_sys::jsonb_exists,
                    &[Some(self.0), key.into_datum()],
                )
            }
            .unwrap_or(false)
    }

    /// Whether the value is a JSON object.
    pub fn is_object(self) -> bool {
        // SAFETY: jsonb_typeof of a jsonb datum returns text.
        unsafe { direct_function_call::<String>(pg_sys::jsonb_typeof, &[Some(self.0)]) }
            .is_some_and(|t| t == "object")
    }

    /// `self -> key`, `None` when absent.
    fn field(self, key: &str) -> Option<Jsonb> {
        // SAFETY: jsonb_object_field of a jsonb and a text datum; NULL when
        // the key is absent.
        unsafe {
            direct_function_call_as_datum(
                pg_sys::jsonb_object_field,
                &[Some(self.0), key.into_datum()],
            )
        }
        .map(Jsonb)
    }

    fn concat(self, other: Jsonb) -> Jsonb {
        // SAFETY: jsonb_concat of two jsonb datums.
        let d = unsafe {
            direct_function_call_as_datum(pg_sys::jsonb_concat, &[Some(self.0), Some(other.0)])
        };
        Jsonb(d.expect("jsonb || jsonb is not null"))
    }

    /// `self = other` as jsonb values (numbers compare by value).
    pub fn same_as(self, other: Jsonb) -> bool {
        // SAFETY: jsonb_eq of two jsonb datums.
        unsafe { direct_function_call::<bool>(pg_sys::jsonb_eq, &[Some(self.0), Some(other.0)]) }
            .unwrap_or(false)
    }

    /// The object with `facts` (a JSON object's text) merged into its
    /// `_authaudit` object (created when absent):
    /// `self || {"_authaudit": coalesce(self->'_authaudit', '{}') || facts}`.
    pub fn with_authaudit(self, facts_text: &str) -> Jsonb {
        let inner = match self.field("_authaudit") {
            Some(existing) if existing.is_object() => {
                existing.concat(Jsonb::parse(facts_text)).text()
            }
            _ => facts_text.to_owned(),
        };
        self.concat(Jsonb::parse(&format!("{{\"_authaudit\": {inner}}}")))
    }
}

/// An `inet` argument: its datum (passed on as it is) and its address.
#[derive(Debug, Clone, Copy)]
pub struct Inet {
    pub datum: pg_sys::Datum,
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Inet {
    /// `text::inet`, raising the cast's error (22P02).
    pub fn parse(text: &str) -> Inet {
        // Text from SQL holds no NUL (PostgreSQL refuses \u0000 in text).
        let c = CString::new(text).unwrap_or_default();
        // SAFETY: inet_in takes a C string valid for the call.
        unsafe {
            pgrx::direct_function_call::<Inet>(
                pg_sys::inet_in,
                &[Some(pg_sys::Datum::from(c.as_ptr()))],
            )
        }
        .expect("inet_in returns a value")
    }
}

/// PostgreSQL's address families in an `inet` (`PGSQL_AF_INET`, `_INET6`).
const PGSQL_AF_INET: u8 = 2;
const PGSQL_AF_INET6: u8 = 3;

impl FromDatum for Inet {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _oid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: an inet is a varlena of family, bits and 4 or 16 address
        // bytes (utils/inet.h); the detoasted copy lives in the call's context.
        let bytes = unsafe {
            let v = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            pgrx::varlena::varlena_to_byte_slice(v)
        };
        let (family, prefix, addr) = (bytes[0], bytes[1], &bytes[2..]);
        let addr = match family {
            PGSQL_AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
            PGSQL_AF_INET6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&addr[..16]);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            other => panic!("inet of unknown family {other}"),
        };
        Some(Inet {
            datum,
            addr,
            prefix,
        })
    }
}

impl IntoDatum for Inet {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.datum)
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::INETOID
    }
}

// SAFETY: the datum is an inet value valid for the call.
unsafe impl pgrx::callconv::BoxRet for Inet {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        // SAFETY: returns the value's datum as the function's result.
        unsafe { fcinfo.return_raw_datum(self.datum) }
    }
}

impl_sql_translatable!(Inet, "inet");
argument_from_datum!(Inet);

/// A row's `ctid`: the engine updates the state rows it locked by their
/// position, without looking them up again.
#[derive(Debug, Clone, Copy)]
pub struct Tid(pg_sys::ItemPointerData);

impl Tid {
    pub fn from_item_pointer(p: pg_sys::ItemPointerData) -> Tid {
        Tid(p)
    }

    pub fn item_pointer(self) -> pg_sys::ItemPointerData {
        self.0
    }
}

impl FromDatum for Tid {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _oid: pg_sys::Oid,
    ) -> Option<Self> {
        // SAFETY: a tid datum points to an ItemPointerData.
        (!is_null).then(|| Tid(unsafe { *datum.cast_mut_ptr::<pg_sys::ItemPointerData>() }))
    }
}

impl IntoDatum for Tid {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        // SAFETY: a palloc'd copy, as tid values are passed by reference.
        unsafe {
            let p = pg_sys::palloc(std::mem::size_of::<pg_sys::ItemPointerData>())
                as *mut pg_sys::ItemPointerData;
            p.write(self.0);
            Some(pg_sys::Datum::from(p))
        }
    }
    fn type_oid() -> pg_sys::Oid {
        pg_sys::TIDOID
    }
}
