//! JSON numbers as PostgreSQL's `numeric` keeps them, and their exact
//! forms in a document store.
//!
//! jsonb stores a number as a `numeric`: any size, with its scale (`1.50`
//! stays `1.50`), written back without an exponent (`1e400` is a 1 and 400
//! zeros, `1.5e-3` is `0.0015`), and never as `-0`. [`canonical`] computes
//! that text from any JSON number without PostgreSQL.
//!
//! A document store holds such a number exactly as a BSON Int64 (an integer
//! that fits) or a BSON Decimal128 (at most 34 significant digits, with the
//! scale as the exponent); [`Exact::of`] chooses, and [`Exact::text`] gives
//! the jsonb text back, so the text is always recoverable from the stored
//! value. A number neither holds (40 significant digits, a scale beyond
//! 6176) has no exact form: the caller falls back.

use std::borrow::Cow;
use std::fmt::Write;

/// Why a JSON number is not one PostgreSQL accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumericError {
    #[error("not a JSON number: {0:?}")]
    Syntax(String),
    /// PostgreSQL refuses exponents beyond ±1000 (`numeric_in`).
    #[error("exponent out of range: {0:?}")]
    Exponent(String),
    /// More than 131,072 digits before the point or 16,383 after.
    #[error("value overflows numeric format: {0:?}")]
    Overflow(String),
}

/// The largest exponent `numeric_in` takes (`NUMERIC_MAX_PRECISION`).
const MAX_EXPONENT: i64 = 1000;
/// Digits before the point a numeric holds (`NUMERIC_WEIGHT_MAX` + 1
/// groups of 4).
const MAX_INTEGER_DIGITS: usize = 131_072;
/// Digits after the point a numeric keeps (`NUMERIC_DSCALE_MAX`).
const MAX_SCALE: usize = 16_383;

/// The parts of a JSON number token: sign, integer digits, fraction
/// digits, exponent.
fn split(token: &str) -> Option<(bool, &str, &str, i64)> {
    let b = token.as_bytes();
    let mut at = 0;
    let negative = b.first() == Some(&b'-');
    at += usize::from(negative);
    let int_start = at;
    while b.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    let int = &token[int_start..at];
    if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    let mut frac = "";
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        frac = &token[start..at];
        if frac.is_empty() {
            return None;
        }
    }
    let mut exponent = 0i64;
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        let sign = match b.get(at) {
            Some(b'-') => {
                at += 1;
                -1
            }
            Some(b'+') => {
                at += 1;
                1
            }
            _ => 1,
        };
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            // Saturates: anything past the limit is refused anyway.
            exponent = (exponent * 10 + i64::from(b[at] - b'0')).min(i64::MAX / 100);
            at += 1;
        }
        if at == start {
            return None;
        }
        exponent *= sign;
    }
    (at == b.len()).then_some((negative, int, frac, exponent))
}

/// Whether `token` is a JSON number as jsonb writes it already
/// (`-?(0|[1-9][0-9]*)(\.[0-9]+)?`, not `-0…` of value zero).
pub fn is_canonical(token: &str) -> bool {
    let b = token.as_bytes();
    if b.iter().any(|c| matches!(c, b'e' | b'E' | b'+')) {
        return false;
    }
    match split(token) {
        Some((negative, int, frac, _)) => {
            !(negative && int == "0" && frac.bytes().all(|c| c == b'0'))
                && frac.len() <= MAX_SCALE
                && int.len() <= MAX_INTEGER_DIGITS
        }
        None => false,
    }
}

/// The text jsonb writes for the JSON number `token` (`numeric_in` then
/// `numeric_out`): no exponent, the scale of the input less its exponent
/// (at least 0), no leading zeros, no negative zero.
pub fn canonical(token: &str) -> Result<Cow<'_, str>, NumericError> {
    if is_canonical(token) {
        return Ok(Cow::Borrowed(token));
    }
    let (negative, int, frac, exponent) =
        split(token).ok_or_else(|| NumericError::Syntax(token.into()))?;
    if !(-MAX_EXPONENT..=MAX_EXPONENT).contains(&exponent) {
        return Err(NumericError::Exponent(token.into()));
    }
    // The value is digits × 10^(exponent - frac.len()).
    let digits: String = [int, frac].concat();
    let shift = exponent - frac.len() as i64;
    let (mut int_part, frac_part) = if shift >= 0 {
        let mut i = digits;
        i.extend(std::iter::repeat_n('0', shift as usize));
        (i, String::new())
    } else {
        let scale = (-shift) as usize;
        let padded = if digits.len() <= scale {
            "0".repeat(scale + 1 - digits.len()) + &digits
        } else {
            digits
        };
        let (i, f) = padded.split_at(padded.len() - scale);
        (i.to_string(), f.to_string())
    };
    let leading = int_part.len() - int_part.trim_start_matches('0').len();
    int_part.drain(..leading.min(int_part.len() - 1));
    if int_part.len() > MAX_INTEGER_DIGITS || frac_part.len() > MAX_SCALE {
        return Err(NumericError::Overflow(token.into()));
    }
    let zero = int_part == "0" && frac_part.bytes().all(|c| c == b'0');
    let mut out = String::with_capacity(int_part.len() + frac_part.len() + 2);
    if negative && !zero {
        out.push('-');
    }
    out.push_str(&int_part);
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(&frac_part);
    }
    Ok(Cow::Owned(out))
}

/// The smallest and largest exponent of a Decimal128 (IEEE 754-2008).
const DECIMAL128_EXPONENTS: std::ops::RangeInclusive<i64> = -6176..=6111;
/// Significant digits a Decimal128 holds.
const DECIMAL128_DIGITS: usize = 34;

/// A number's exact form in a document store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exact {
    /// An integer within 64 bits.
    Int64(i64),
    /// A Decimal128 in BSON's byte order (little-endian BID): the
    /// coefficient is the number's digits, the exponent minus its scale.
    Decimal128([u8; 16]),
}

impl Exact {
    /// The exact form of a number in jsonb's text (see [`canonical`]);
    /// `None` when neither form holds it.
    pub fn of(text: &str) -> Option<Exact> {
        if !is_canonical(text) {
            return None;
        }
        let (negative, int, frac, _) = split(text)?;
        if frac.is_empty() {
            if let Ok(i) = text.parse::<i64>() {
                return Some(Exact::Int64(i));
            }
        }
        // Coefficient and exponent: an integer's trailing zeros go into a
        // positive exponent; a fraction keeps every digit (its scale).
        let (coefficient, exponent) = if frac.is_empty() {
            let trimmed = int.trim_end_matches('0');
            (trimmed, (int.len() - trimmed.len()) as i64)
        } else {
            ("", -(frac.len() as i64))
        };
        let digits: String = if frac.is_empty() {
            coefficient.to_string()
        } else {
            [int, frac].concat().trim_start_matches('0').to_string()
        };
        if digits.len() > DECIMAL128_DIGITS || !DECIMAL128_EXPONENTS.contains(&exponent) {
            return None;
        }
        let c: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let biased = (exponent - DECIMAL128_EXPONENTS.start()) as u128;
        let bits = (u128::from(negative) << 127) | (biased << 113) | c;
        Some(Exact::Decimal128(bits.to_le_bytes()))
    }

    /// The jsonb text of the number; `None` for a Decimal128 that
    /// [`Exact::of`] does not write (infinities, NaN, non-canonical
    /// coefficients).
    pub fn text(&self) -> Option<String> {
        let bytes = match self {
            Exact::Int64(i) => return Some(i.to_string()),
            Exact::Decimal128(b) => b,
        };
        let bits = u128::from_le_bytes(*bytes);
        let negative = bits >> 127 == 1;
        if (bits >> 125) & 0b11 == 0b11 {
            return None;
        }
        let exponent = ((bits >> 113) & 0x3fff) as i64 + DECIMAL128_EXPONENTS.start();
        let c = bits & ((1u128 << 113) - 1);
        if c >= 10u128.pow(DECIMAL128_DIGITS as u32) {
            return None;
        }
        let mut out = String::new();
        if negative && c != 0 {
            out.push('-');
        }
        if exponent >= 0 {
            let _ = write!(out, "{c}");
            if c != 0 {
                out.extend(std::iter::repeat_n('0', exponent as usize));
            }
        } else {
            let scale = (-exponent) as usize;
            let digits = c.to_string();
            let padded = if digits.len() <= scale {
                "0".repeat(scale + 1 - digits.len()) + &digits
            } else {
                digits
            };
            let (i, f) = padded.split_at(padded.len() - scale);
            out.push_str(i);
            out.push('.');
            out.push_str(f);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_numeric_out_writes_them() {
        for (input, jsonb) in [
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("0.00", "0.00"),
            ("1.50", "1.50"),
            ("-1.50", "-1.50"),
            ("1e2", "100"),
            ("1E+2", "100"),
            ("1.5e-3", "0.0015"),
            ("1.50e1", "15.0"),
            ("100e-1", "10.0"),
            ("0.001e2", "0.1"),
            ("123e-5", "0.00123"),
            ("-1e-1", "-0.1"),
            ("5e0", "5"),
            ("0e5", "0"),
            ("0e-2", "0.00"),
            (
                "1234567890123456789012345678901234567890",
                "1234567890123456789012345678901234567890",
            ),
        ] {
            assert_eq!(canonical(input).unwrap(), jsonb, "{input}");
            assert!(is_canonical(jsonb), "{jsonb}");
        }
        let big = canonical("1e400").unwrap();
        assert_eq!(big.len(), 401);
        assert!(big.starts_with("10000") && big.bytes().skip(1).all(|c| c == b'0'));
        assert_eq!(canonical("1e-400").unwrap().len(), 402);
    }

    #[test]
    fn what_numeric_in_refuses_is_refused() {
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "1x", "--1", "NaN",
        ] {
            assert!(
                matches!(canonical(bad), Err(NumericError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            canonical("1e1001"),
            Err(NumericError::Exponent(_))
        ));
        assert!(matches!(
            canonical("1e-1001"),
            Err(NumericError::Exponent(_))
        ));
        assert!(canonical("1e1000").is_ok());
        let wide = format!("0.{}1", "0".repeat(MAX_SCALE));
        assert!(matches!(canonical(&wide), Err(NumericError::Overflow(_))));
    }

    #[test]
    fn integers_within_64_bits_are_int64_and_others_decimal128() {
        assert_eq!(Exact::of("42"), Some(Exact::Int64(42)));
        assert_eq!(
            Exact::of("-9223372036854775808"),
            Some(Exact::Int64(i64::MIN))
        );
        assert!(matches!(
            Exact::of("9223372036854775808"),
            Some(Exact::Decimal128(_))
        ));
        assert!(matches!(Exact::of("1.50"), Some(Exact::Decimal128(_))));
        // Not jsonb's text: refused rather than guessed.
        assert_eq!(Exact::of("1e2"), None);
        assert_eq!(Exact::of("-0"), None);
    }

    #[test]
    fn decimal128_bytes_are_the_standard_encoding() {
        // The BSON specification's test corpus (decimal128-1.json):
        // "0.0" ends in the bytes 3E 30, "1" in 40 30.
        let one = Exact::of("12345678901234567891").unwrap();
        let Exact::Decimal128(b) = one else {
            panic!("{one:?}")
        };
        let bits = u128::from_le_bytes(b);
        assert_eq!(bits >> 113, 6176, "exponent 0, positive");
        assert_eq!(bits & ((1 << 113) - 1), 12345678901234567891);
        // An integer's trailing zeros are its exponent.
        let Exact::Decimal128(b) = Exact::of("12345678901234567890").unwrap() else {
            panic!()
        };
        assert_eq!(u128::from_le_bytes(b) >> 113, 6177);
        let Exact::Decimal128(b) = Exact::of("0.0").unwrap() else {
            panic!()
        };
        // {"$numberDecimal": "0.0"} is 0x303E0000… in the corpus.
        assert_eq!(u128::from_le_bytes(b) >> 112, 0x303E);
        let Exact::Decimal128(b) = Exact::of("-1.50").unwrap() else {
            panic!()
        };
        assert_eq!(
            u128::from_le_bytes(b) >> 112,
            0xB03C,
            "negative, exponent -2"
        );
    }

    #[test]
    fn the_text_comes_back_from_the_exact_form() {
        for text in [
            "0",
            "7",
            "-7",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "1.50",
            "-1.50",
            "0.00",
            "0.0015",
            "100000000000000000000000000000000000000000000000000",
            "1234567890123456789012345678901234",
            "12345678901234567890123456789012.34",
            "0.000000000000000000000000000000000000000000000000001",
        ] {
            let e = Exact::of(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(e.text().as_deref(), Some(text), "{e:?}");
        }
        let e400 = canonical("1e400").unwrap();
        assert_eq!(Exact::of(&e400).unwrap().text().as_deref(), Some(&*e400));
    }

    #[test]
    fn numbers_no_bson_type_holds_exactly_have_no_exact_form() {
        // 35 significant digits, a scale beyond Decimal128's exponents.
        assert_eq!(Exact::of("12345678901234567890123456789012345"), None);
        assert_eq!(Exact::of("1234567890123456789012345678901234567890"), None);
        assert_eq!(Exact::of(&format!("0.{}1", "0".repeat(6176))), None);
        assert!(Exact::of(&format!("0.{}1", "0".repeat(6174))).is_some());
        assert_eq!(Exact::of(&format!("1{}", "0".repeat(6112))), None);
        assert!(Exact::of(&format!("1{}", "0".repeat(6111))).is_some());
    }

    #[test]
    fn decimal128_values_not_written_here_have_no_text() {
        let inf = (0b11110u128 << 122).to_le_bytes();
        assert_eq!(Exact::Decimal128(inf).text(), None);
        let too_wide = (6176u128 << 113 | 10u128.pow(34)).to_le_bytes();
        assert_eq!(Exact::Decimal128(too_wide).text(), None);
    }
}
