//! The lockout engine's replay state as bytes: what a snapshot of a
//! tenant's replay at one point in event time holds
//! (`lockout_replay::Replayer::state` and `Replayer::restore`), so that an
//! answer about a period replays from the snapshot before it instead of
//! from the tenant's first event (docs/lockout.md, "Snapshots").
//!
//! The encoding is versioned and self-delimiting; anything else (a
//! truncated or edited value, another version) is refused, and the caller
//! replays from the start instead.

use crate::identity::SourceKey;
use crate::lockout::{AccountState, IpState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The first bytes of every encoded state, with the format version.
const MAGIC: &[u8; 5] = b"AAES\x01";

/// Why bytes are not a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not an engine state of this version")]
    Version,
    #[error("engine state truncated or malformed at byte {0}")]
    Malformed(usize),
}

/// An account as a snapshot holds it: its key, its state row (`None`: it
/// has none), and the failures of its current run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEntry {
    pub key: String,
    pub row: Option<AccountRowState>,
    pub run: Vec<(IpAddr, Option<String>)>,
}

/// An account's state row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountRowState {
    pub state: AccountState,
    pub first_failure_ip: Option<IpAddr>,
    pub last_failure_ip: Option<IpAddr>,
}

/// The whole state: accounts (with their organisations apart, as strings
/// are), sources and pairs (the pair's account by its position in
/// `accounts`), the last event applied and how many were.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineState {
    pub accounts: Vec<AccountEntry>,
    /// Per account, the organisation of its row (aligned with `accounts`).
    pub orgs: Vec<Option<String>>,
    pub sources: Vec<(SourceKey, IpState)>,
    pub pairs: Vec<(SourceKey, u32, IpState)>,
    pub last: Option<(i64, [u8; 16])>,
    pub applied: u64,
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
        }
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }
    fn opt_ip(&mut self, ip: Option<IpAddr>) {
        match ip {
            None => self.u8(0),
            Some(ip) => {
                self.u8(1);
                self.ip(ip);
            }
        }
    }
    fn key(&mut self, k: &SourceKey) {
        self.ip(k.addr);
        self.u8(k.prefix);
    }
    fn ip_state(&mut self, s: &IpState) {
        self.i32(s.failure_count);
        self.opt_i64(s.first_failure_us);
        self.opt_i64(s.blocked_until_us);
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], StateError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(StateError::Malformed(self.at))?;
        let s = self
            .b
            .get(self.at..end)
            .ok_or(StateError::Malformed(self.at))?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, StateError> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn flag(&mut self) -> Result<bool, StateError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(StateError::Malformed(self.at - 1)),
        }
    }
    fn opt_i64(&mut self) -> Result<Option<i64>, StateError> {
        Ok(if self.flag()? {
            Some(self.i64()?)
        } else {
            None
        })
    }
    fn str(&mut self) -> Result<String, StateError> {
        let n = self.u32()? as usize;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| StateError::Malformed(at))
    }
    fn opt_str(&mut self) -> Result<Option<String>, StateError> {
        Ok(if self.flag()? {
            Some(self.str()?)
        } else {
            None
        })
    }
    fn ip(&mut self) -> Result<IpAddr, StateError> {
        match self.u8()? {
            4 => {
                let o: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
                Ok(IpAddr::V4(Ipv4Addr::from(o)))
            }
            6 => {
                let o: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
                Ok(IpAddr::V6(Ipv6Addr::from(o)))
            }
            _ => Err(StateError::Malformed(self.at - 1)),
        }
    }
    fn opt_ip(&mut self) -> Result<Option<IpAddr>, StateError> {
        Ok(if self.flag()? { Some(self.ip()?) } else { None })
    }
    fn key(&mut self) -> Result<SourceKey, StateError> {
        Ok(SourceKey {
            addr: self.ip()?,
            prefix: self.u8()?,
        })
    }
    fn ip_state(&mut self) -> Result<IpState, StateError> {
        Ok(IpState {
            failure_count: self.i32()?,
            first_failure_us: self.opt_i64()?,
            blocked_until_us: self.opt_i64()?,
        })
    }
    /// A count of items each at least `min` bytes long, checked against
    /// what is left (a malformed count allocates nothing).
    fn count(&mut self, min: usize) -> Result<usize, StateError> {
        let at = self.at;
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.b.len() - self.at {
            return Err(StateError::Malformed(at));
        }
        Ok(n)
    }
}

impl EngineState {
    /// The state's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + self.accounts.len() * 64));
        w.0.extend_from_slice(MAGIC);
        match self.last {
            None => w.u8(0),
            Some((at, id)) => {
                w.u8(1);
                w.i64(at);
                w.0.extend_from_slice(&id);
            }
        }
        w.u64(self.applied);
        w.u32(self.accounts.len() as u32);
        for (a, org) in self.accounts.iter().zip(&self.orgs) {
            w.str(&a.key);
            match &a.row {
                None => w.u8(0),
                Some(r) => {
                    w.u8(1);
                    let s = &r.state;
                    w.i32(s.failure_count);
                    w.opt_i64(s.first_failure_us);
                    w.opt_i64(s.last_failure_us);
                    w.u8(u8::from(s.locked));
                    w.opt_i64(s.locked_at_us);
                    w.opt_i64(s.locked_until_us);
                    w.i32(s.lock_count);
                    w.i32(s.failures_since_success);
                    w.opt_ip(r.first_failure_ip);
                    w.opt_ip(r.last_failure_ip);
                    w.opt_str(org.as_deref());
                }
            }
            w.u32(a.run.len() as u32);
            for (ip, org) in &a.run {
                w.ip(*ip);
                w.opt_str(org.as_deref());
            }
        }
        w.u32(self.sources.len() as u32);
        for (k, s) in &self.sources {
            w.key(k);
            w.ip_state(s);
        }
        w.u32(self.pairs.len() as u32);
        for (k, a, s) in &self.pairs {
            w.key(k);
            w.u32(*a);
            w.ip_state(s);
        }
        w.0
    }

    /// The state `bytes` hold.
    pub fn decode(bytes: &[u8]) -> Result<EngineState, StateError> {
        if !bytes.starts_with(MAGIC) {
            return Err(StateError::Version);
        }
        let mut r = Reader {
            b: bytes,
            at: MAGIC.len(),
        };
        let last = if r.flag()? {
            let at = r.i64()?;
            let id: [u8; 16] = r.take(16)?.try_into().expect("16 bytes");
            Some((at, id))
        } else {
            None
        };
        let applied = r.u64()?;
        let n = r.count(9)?;
        let mut accounts = Vec::with_capacity(n);
        let mut orgs = Vec::with_capacity(n);
        for _ in 0..n {
            let key = r.str()?;
            let (row, org) = if r.flag()? {
                let state = AccountState {
                    failure_count: r.i32()?,
                    first_failure_us: r.opt_i64()?,
                    last_failure_us: r.opt_i64()?,
                    locked: r.flag()?,
                    locked_at_us: r.opt_i64()?,
                    locked_until_us: r.opt_i64()?,
                    lock_count: r.i32()?,
                    failures_since_success: r.i32()?,
                };
                let row = AccountRowState {
                    state,
                    first_failure_ip: r.opt_ip()?,
                    last_failure_ip: r.opt_ip()?,
                };
                (Some(row), r.opt_str()?)
            } else {
                (None, None)
            };
            let m = r.count(6)?;
            let mut run = Vec::with_capacity(m);
            for _ in 0..m {
                run.push((r.ip()?, r.opt_str()?));
            }
            accounts.push(AccountEntry { key, row, run });
            orgs.push(org);
        }
        let n = r.count(15)?;
        let mut sources = Vec::with_capacity(n);
        for _ in 0..n {
            sources.push((r.key()?, r.ip_state()?));
        }
        let n = r.count(19)?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let k = r.key()?;
            let a = r.u32()?;
            if a as usize >= accounts.len() {
                return Err(StateError::Malformed(r.at - 4));
            }
            pairs.push((k, a, r.ip_state()?));
        }
        if r.at != bytes.len() {
            return Err(StateError::Malformed(r.at));
        }
        Ok(EngineState {
            accounts,
            orgs,
            sources,
            pairs,
            last,
            applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EngineState {
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        EngineState {
            accounts: vec![
                AccountEntry {
                    key: "alice".into(),
                    row: Some(AccountRowState {
                        state: AccountState {
                            failure_count: 3,
                            first_failure_us: Some(10),
                            last_failure_us: Some(-20),
                            locked: true,
                            locked_at_us: Some(30),
                            locked_until_us: None,
                            lock_count: 2,
                            failures_since_success: 7,
                        },
                        first_failure_ip: Some(v4),
                        last_failure_ip: Some(v6),
                    }),
                    run: vec![(v4, Some("hq".into())), (v6, None)],
                },
                AccountEntry {
                    key: "ünïcode bob".into(),
                    row: None,
                    run: vec![],
                },
            ],
            orgs: vec![Some("hq".into()), None],
            sources: vec![(
                SourceKey {
                    addr: v4,
                    prefix: 32,
                },
                IpState {
                    failure_count: 9,
                    first_failure_us: Some(5),
                    blocked_until_us: None,
                },
            )],
            pairs: vec![(
                SourceKey {
                    addr: v6,
                    prefix: 64,
                },
                1,
                IpState::default(),
            )],
            last: Some((123_456, [7; 16])),
            applied: 42,
        }
    }

    #[test]
    fn a_state_reads_back_as_it_was() {
        let s = sample();
        assert_eq!(EngineState::decode(&s.encode()).unwrap(), s);
        let empty = EngineState::default();
        assert_eq!(EngineState::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn damaged_bytes_are_refused_never_misread() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(EngineState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(EngineState::decode(&longer).is_err());
        let mut other = bytes.clone();
        other[4] = 2;
        assert_eq!(EngineState::decode(&other), Err(StateError::Version));
        // A huge count allocates nothing.
        let mut huge = MAGIC.to_vec();
        huge.push(0);
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(EngineState::decode(&huge).is_err());
    }
}
