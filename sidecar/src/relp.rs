//! RELP, the Reliable Event Logging Protocol rsyslog speaks (imrelp): frames
//! and the client's side of a session, without I/O.
//!
//! A frame is `TXNR SP COMMAND SP DATALEN [SP DATA] LF`. The client opens
//! with `open` (offering `relp_version=0` and `commands=syslog`), sends each
//! message as a `syslog` command, and the server answers every command with
//! `rsp` carrying the same transaction number and `200 OK` once it has taken
//! the message. `serverclose` means the server is going away.

use std::fmt::Write;

/// Transaction numbers run 1 ..= MAX_TXNR, then start again at 1.
pub const MAX_TXNR: u32 = 999_999_999;

/// The `open` command's offers.
pub fn open_offers() -> String {
    format!(
        "relp_version=0\nrelp_software=pg_authaudit,{},https://github.com/pg-authaudit\ncommands=syslog",
        env!("CARGO_PKG_VERSION")
    )
}

/// Appends one frame.
pub fn frame(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    let mut head = String::with_capacity(24);
    let _ = write!(head, "{txnr} {command} {}", data.len());
    out.extend_from_slice(head.as_bytes());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// The transaction number after `txnr`.
pub fn next_txnr(txnr: u32) -> u32 {
    if txnr >= MAX_TXNR {
        1
    } else {
        txnr + 1
    }
}

/// One frame received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub txnr: u32,
    pub command: String,
    pub data: Vec<u8>,
}

impl Frame {
    /// The status code of an `rsp` (`200` for success).
    pub fn status(&self) -> Option<u16> {
        let text = std::str::from_utf8(&self.data).ok()?;
        text.split([' ', '\n']).next()?.parse().ok()
    }
}

/// A frame that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelpError {
    #[error("malformed RELP frame: {0}")]
    Malformed(&'static str),
}

/// Splits frames out of the bytes received so far.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
}

impl Parser {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the bytes hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, RelpError> {
        let b = &self.buf;
        // A header field: bytes up to `end`, at most `max` of them.
        let token = |from: usize, max: usize, what: &'static str, ok: fn(&u8) -> bool| match b
            [from..]
            .iter()
            .position(|c| *c == b' ' || *c == b'\n')
        {
            Some(n) if n == 0 || n > max || !b[from..from + n].iter().all(ok) => {
                Err(RelpError::Malformed(what))
            }
            Some(n) => Ok(Some(n)),
            None if b.len() - from > max || !b[from..].iter().all(ok) => {
                Err(RelpError::Malformed(what))
            }
            None => Ok(None),
        };
        let Some(t) = token(0, 9, "transaction number", u8::is_ascii_digit)? else {
            return Ok(None);
        };
        if b[t] != b' ' {
            return Err(RelpError::Malformed("transaction number"));
        }
        let c0 = t + 1;
        let Some(c) = token(c0, 32, "command", u8::is_ascii_alphabetic)? else {
            return Ok(None);
        };
        if b[c0 + c] != b' ' {
            return Err(RelpError::Malformed("command"));
        }
        let l0 = c0 + c + 1;
        let Some(l) = token(l0, 9, "data length", u8::is_ascii_digit)? else {
            return Ok(None);
        };
        let number = |s: &[u8]| -> Option<usize> { std::str::from_utf8(s).ok()?.parse().ok() };
        let datalen = number(&b[l0..l0 + l]).ok_or(RelpError::Malformed("data length"))?;
        let after = l0 + l;
        let (data, total) = match (datalen, b[after]) {
            // `TXNR SP COMMAND SP 0 LF`.
            (0, b'\n') => (after + 1..after + 1, after + 1),
            (0, _) => return Err(RelpError::Malformed("trailer")),
            (n, b' ') => (after + 1..after + 1 + n, after + 2 + n),
            _ => return Err(RelpError::Malformed("data")),
        };
        if b.len() < total {
            return Ok(None);
        }
        if b[total - 1] != b'\n' {
            return Err(RelpError::Malformed("trailer"));
        }
        let frame = Frame {
            txnr: number(&b[..t])
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(RelpError::Malformed("transaction number"))?,
            command: String::from_utf8_lossy(&b[c0..c0 + c]).into_owned(),
            data: b[data].to_vec(),
        };
        self.buf.drain(..total);
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_written_with_their_length() {
        let mut out = Vec::new();
        frame(&mut out, 1, "open", b"relp_version=0");
        frame(&mut out, 2, "close", b"");
        assert_eq!(out, b"1 open 14 relp_version=0\n2 close 0\n");
    }

    #[test]
    fn responses_parse_in_any_split() {
        let bytes = b"1 rsp 6 200 OK\n2 rsp 0\n0 serverclose 0\n3 rsp 19 500 error\nmore text\n";
        for split in 0..bytes.len() {
            let mut p = Parser::default();
            p.feed(&bytes[..split]);
            let mut got = Vec::new();
            while let Some(f) = p.next_frame().unwrap() {
                got.push(f);
            }
            p.feed(&bytes[split..]);
            while let Some(f) = p.next_frame().unwrap() {
                got.push(f);
            }
            assert_eq!(got.len(), 4, "split at {split}");
            assert_eq!(got[0].status(), Some(200));
            assert_eq!(got[1].data, b"");
            assert_eq!(got[2].command, "serverclose");
            assert_eq!(got[3].txnr, 3);
            assert_eq!(got[3].status(), Some(500));
            assert_eq!(got[3].data, b"500 error\nmore text");
        }
    }

    #[test]
    fn broken_frames_are_refused() {
        for bad in [
            &b"x rsp 6 200 OK\n"[..],
            b"1 r$p 6 200 OK\n",
            b"1 rsp z 200 OK\n",
            b"1 rsp 2 200 OK\n",
            b"1 rsp 0 \n",
            b"1234567890 rsp 0\n",
        ] {
            let mut p = Parser::default();
            p.feed(bad);
            assert!(
                p.next_frame().is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn transaction_numbers_wrap_to_one() {
        assert_eq!(next_txnr(1), 2);
        assert_eq!(next_txnr(MAX_TXNR), 1);
    }
}
