//! The table of chain heads the extension keeps in shared memory: the end of
//! each cached tenant's chain and the runs of links that transactions still
//! in flight appended to it (see `pg_authaudit/src/heads.rs` for the
//! protocol around it). Pure data and logic: the extension holds its lock
//! around every call and supplies the hash of each (database, tenant) key.
//!
//! The slots form an open-addressing hash table with linear probing. At
//! most [`Table::MAX_CACHED`] tenants (half the slots) are cached at once:
//! when a new tenant comes and the table is full, an idle tenant (one
//! without appends in flight) is evicted, found by a clock hand, and its
//! slot is emptied with backward-shift deletion so that probe sequences stay
//! short. A lookup therefore inspects a few slots however many tenants the
//! server has seen.

use crate::chain::{ChainHead, HEAD_BYTES};

/// A transaction id as PostgreSQL numbers them (0: invalid).
pub type Xid = u32;
/// No transaction.
pub const INVALID_XID: Xid = 0;

/// Slots of the table: twice the tenants cached at once.
pub const SLOTS: usize = 4096;
/// Runs of in-flight appends (consecutive links of one (sub)transaction)
/// tracked per tenant; a writer waits for the oldest when all are in use.
pub const RUNS: usize = 16;
/// The longest tenant id (bytes) the table holds.
pub const MAX_TENANT_BYTES: usize = 64;

/// Consecutive links one (sub)transaction appended.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub xid: Xid,
    pub first_seq: i64,
    pub last_seq: i64,
    pub head_before: [u8; HEAD_BYTES],
}

/// Most tenants one transaction may hold in flight whatever the others do.
pub const MAX_SHARE: usize = 8;

/// How the tenants the table can hold in flight are shared among
/// `max_backends` server processes: every transaction may always hold
/// `share` tenants in flight, and beyond its share draws on a common `pool`.
/// The shares of all processes and the pool together never exceed
/// [`Table::MAX_CACHED`], so no session, whatever it holds, can keep
/// another from its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairShare {
    pub share: usize,
    pub pool: usize,
}

impl FairShare {
    /// The shares for a server of `max_backends` processes: half the table
    /// split evenly (at most [`MAX_SHARE`] each, at least one), the rest the
    /// pool.
    pub fn for_backends(max_backends: usize) -> FairShare {
        let n = max_backends.max(1);
        let share = (Table::MAX_CACHED / (2 * n)).clamp(1, MAX_SHARE);
        FairShare {
            share,
            pool: Table::MAX_CACHED.saturating_sub(share * n),
        }
    }
}

/// One cached tenant. All zeroes is an empty slot.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slot {
    used: u32,
    /// The slot the key hashes to (where its probe sequence starts).
    home: u32,
    dboid: u32,
    tenant_len: u32,
    tenant: [u8; MAX_TENANT_BYTES],
    seq: i64,
    /// The (sub)transaction that appended the link at `seq`, or invalid.
    last_xid: Xid,
    runs_len: u32,
    /// Whether `prev_head`/`prev_last_xid` describe the link before `seq`.
    can_unappend: u32,
    prev_last_xid: Xid,
    head: [u8; HEAD_BYTES],
    prev_head: [u8; HEAD_BYTES],
    runs: [Run; RUNS],
}

impl Slot {
    fn is(&self, dboid: u32, tenant: &[u8]) -> bool {
        self.used != 0 && self.dboid == dboid && &self.tenant[..self.tenant_len as usize] == tenant
    }

    fn runs(&self) -> &[Run] {
        &self.runs[..self.runs_len as usize]
    }

    fn holds(&self, seq: i64, xid: Xid) -> bool {
        self.runs()
            .iter()
            .any(|r| r.xid == xid && r.first_seq <= seq && seq <= r.last_seq)
    }

    fn retain_runs(&mut self, keep: impl Fn(&Run) -> bool) {
        let mut n = 0;
        for i in 0..self.runs_len as usize {
            if keep(&self.runs[i]) {
                self.runs[n] = self.runs[i];
                n += 1;
            }
        }
        self.runs_len = n as u32;
    }

    /// The live state: (seq, head, last appender).
    pub fn live(&self) -> (i64, [u8; HEAD_BYTES], Xid) {
        (self.seq, self.head, self.last_xid)
    }
}

/// What one append produced.
#[derive(Debug)]
pub struct Appended {
    pub seq: i64,
    pub prev: ChainHead,
    pub next: ChainHead,
    /// The transaction that appended the link before, which must end
    /// before this one commits.
    pub pred_xid: Xid,
}

/// The outcome of [`Table::append`].
#[derive(Debug)]
pub enum AppendOutcome {
    Done(Box<Appended>),
    /// The tenant's head is not cached: read it from the table first.
    NotLoaded,
    /// Every run is in use: wait for this transaction, then try again.
    Busy(Xid),
}

/// The table. All zeroes is the valid empty table (shared memory starts so).
#[repr(C)]
pub struct Table {
    slots: [Slot; SLOTS],
    /// Tenants cached.
    cached: u32,
    /// The state of the generator that draws where an eviction looks
    /// (xorshift; 0 until the first eviction seeds it).
    draw: u64,
}

impl Table {
    /// Tenants cached at once.
    pub const MAX_CACHED: usize = SLOTS / 2;

    /// A new empty table on the heap (for tests; the extension's lives in
    /// shared memory, zeroed).
    pub fn boxed() -> Box<Table> {
        // SAFETY: all zeroes is a valid Table (plain integers and arrays).
        unsafe { Box::<Table>::new_zeroed().assume_init() }
    }

    fn home(hash: u64) -> usize {
        (hash % SLOTS as u64) as usize
    }

    /// The slot of a cached tenant.
    pub fn find(&self, dboid: u32, tenant: &[u8], hash: u64) -> Option<usize> {
        let start = Self::home(hash);
        for i in 0..SLOTS {
            let k = (start + i) % SLOTS;
            let slot = &self.slots[k];
            if slot.used == 0 {
                return None;
            }
            if slot.is(dboid, tenant) {
                return Some(k);
            }
        }
        None
    }

    /// The cached state of a tenant's chain.
    pub fn slot(&self, k: usize) -> &Slot {
        &self.slots[k]
    }

    /// Tenants cached now.
    pub fn cached(&self) -> usize {
        self.cached as usize
    }

    /// Caches a head read from the table (evicting an idle tenant when the
    /// table is full). False when every cached tenant has appends in flight.
    pub fn place(
        &mut self,
        dboid: u32,
        tenant: &[u8],
        hash: u64,
        seq: i64,
        head: &ChainHead,
    ) -> bool {
        assert!(tenant.len() <= MAX_TENANT_BYTES);
        if self.find(dboid, tenant, hash).is_some() {
            return true;
        }
        if self.cached() >= Self::MAX_CACHED && !self.evict_one(hash) {
            return false;
        }
        let start = Self::home(hash);
        let k = (0..SLOTS)
            .map(|i| (start + i) % SLOTS)
            .find(|k| self.slots[*k].used == 0)
            .expect("at most half the slots are used");
        let slot = &mut self.slots[k];
        *slot = Slot {
            used: 1,
            home: start as u32,
            dboid,
            tenant_len: tenant.len() as u32,
            tenant: [0; MAX_TENANT_BYTES],
            seq,
            last_xid: INVALID_XID,
            runs_len: 0,
            can_unappend: 0,
            prev_last_xid: INVALID_XID,
            head: head.to_bytes(),
            prev_head: [0; HEAD_BYTES],
            runs: [Run {
                xid: INVALID_XID,
                first_seq: 0,
                last_seq: 0,
                head_before: [0; HEAD_BYTES],
            }; RUNS],
        };
        slot.tenant[..tenant.len()].copy_from_slice(tenant);
        self.cached += 1;
        true
    }

    /// Evicts one idle tenant drawn at random (the generator is seeded with
    /// the first incoming key's secret-keyed hash): every cached tenant is
    /// as likely to go, so no part of the table fills up.
    fn evict_one(&mut self, hash: u64) -> bool {
        let idle = |s: &Slot| s.used != 0 && s.runs_len == 0;
        for _ in 0..4 * SLOTS {
            let mut x = if self.draw == 0 { hash | 1 } else { self.draw };
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.draw = x;
            let k = ((x >> 32) % SLOTS as u64) as usize;
            if idle(&self.slots[k]) {
                self.remove(k);
                return true;
            }
        }
        // Nearly every tenant has appends in flight: look at each.
        match (0..SLOTS).find(|k| idle(&self.slots[*k])) {
            Some(k) => {
                self.remove(k);
                true
            }
            None => false,
        }
    }

    /// Empties slot `k`, moving later entries of the probe sequence back
    /// so that every entry stays reachable from its home slot.
    fn remove(&mut self, k: usize) {
        let mut hole = k;
        self.slots[hole].used = 0;
        self.cached -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) % SLOTS;
            if self.slots[j].used == 0 {
                break;
            }
            let home = self.slots[j].home as usize;
            // The entry at j may move to the hole unless its home lies
            // cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j];
                self.slots[j].used = 0;
                hole = j;
            }
        }
    }

    /// Appends `body` as the next link of a cached tenant's chain for `xid`.
    pub fn append(
        &mut self,
        dboid: u32,
        tenant: &[u8],
        hash: u64,
        body: &[u8],
        xid: Xid,
    ) -> AppendOutcome {
        let Some(k) = self.find(dboid, tenant, hash) else {
            return AppendOutcome::NotLoaded;
        };
        let slot = &mut self.slots[k];
        let seq = slot.seq + 1;
        let extends_run = slot
            .runs()
            .last()
            .is_some_and(|r| r.xid == xid && r.last_seq == slot.seq);
        if !extends_run && slot.runs_len as usize == RUNS {
            return AppendOutcome::Busy(slot.runs[0].xid);
        }
        let prev = ChainHead::from_bytes(&slot.head).expect("head has its fixed size");
        let next = prev.next(seq, body);
        if extends_run {
            slot.runs[slot.runs_len as usize - 1].last_seq = seq;
        } else {
            slot.runs[slot.runs_len as usize] = Run {
                xid,
                first_seq: seq,
                last_seq: seq,
                head_before: slot.head,
            };
            slot.runs_len += 1;
        }
        let pred_xid = slot.last_xid;
        slot.prev_head = slot.head;
        slot.prev_last_xid = slot.last_xid;
        slot.can_unappend = 1;
        slot.seq = seq;
        slot.head = next.to_bytes();
        slot.last_xid = xid;
        AppendOutcome::Done(Box::new(Appended {
            seq,
            prev,
            next,
            pred_xid,
        }))
    }

    /// Undoes the appends of `xid` in the tenant's chain from `seq` on, and
    /// with them every later append (those transactions are now doomed).
    pub fn rewind(&mut self, dboid: u32, tenant: &[u8], hash: u64, seq: i64, xid: Xid) {
        let Some(k) = self.find(dboid, tenant, hash) else {
            return;
        };
        let slot = &mut self.slots[k];
        let Some(run) = slot
            .runs()
            .iter()
            .find(|r| r.xid == xid && r.first_seq <= seq && seq <= r.last_seq)
            .copied()
        else {
            return;
        };
        // A run belongs to one (sub)transaction, which aborts as a whole:
        // undo from the start of the run.
        let cut = run.first_seq;
        slot.head = run.head_before;
        slot.seq = cut - 1;
        slot.retain_runs(|r| r.first_seq < cut);
        slot.can_unappend = 0;
        slot.last_xid = slot
            .runs()
            .iter()
            .find(|r| r.last_seq == cut - 1)
            .map_or(INVALID_XID, |r| r.xid);
    }

    /// Forgets the runs of a committed transaction.
    pub fn release(&mut self, dboid: u32, tenant: &[u8], hash: u64, xid: Xid) {
        if let Some(k) = self.find(dboid, tenant, hash) {
            self.slots[k].retain_runs(|r| r.xid != xid);
        }
    }

    /// Takes back the latest link of the chain if `xid` appended it (its
    /// owner found the log_id already recorded). Returns the undone seq.
    pub fn unappend(&mut self, dboid: u32, tenant: &[u8], hash: u64, xid: Xid) -> Option<i64> {
        let k = self.find(dboid, tenant, hash)?;
        let slot = &mut self.slots[k];
        let n = slot.runs_len as usize;
        if slot.can_unappend == 0 || slot.last_xid != xid || n == 0 {
            return None;
        }
        let run = &mut slot.runs[n - 1];
        if run.xid != xid || run.last_seq != slot.seq {
            return None;
        }
        if run.first_seq == run.last_seq {
            slot.runs_len -= 1;
        } else {
            run.last_seq -= 1;
        }
        let undone = slot.seq;
        slot.seq -= 1;
        slot.head = slot.prev_head;
        slot.last_xid = slot.prev_last_xid;
        slot.can_unappend = 0;
        Some(undone)
    }

    /// Whether `xid`'s append at `seq` is still part of the chain.
    pub fn holds(&self, dboid: u32, tenant: &[u8], hash: u64, seq: i64, xid: Xid) -> bool {
        self.find(dboid, tenant, hash)
            .is_some_and(|k| self.slots[k].holds(seq, xid))
    }

    /// The seq of a tenant's cached head while no transaction has appends
    /// in flight to it (`None`: not cached, or appends in flight).
    pub fn idle_seq(&self, dboid: u32, tenant: &[u8], hash: u64) -> Option<i64> {
        let k = self.find(dboid, tenant, hash)?;
        let s = &self.slots[k];
        (s.runs_len == 0).then_some(s.seq)
    }

    /// Forgets a tenant's cached head if it is still idle at `seq`: the
    /// table holds more of its chain than the cache knows (on Citus, its
    /// shard moved away, took more rows, and came back), so it is read
    /// again. Returns whether it was forgotten.
    pub fn forget_stale(&mut self, dboid: u32, tenant: &[u8], hash: u64, seq: i64) -> bool {
        match self.find(dboid, tenant, hash) {
            Some(k) if self.slots[k].runs_len == 0 && self.slots[k].seq == seq => {
                self.remove(k);
                true
            }
            _ => false,
        }
    }

    /// Forgets the cached heads of database `dboid` that have no appends in
    /// flight (they are read from the table again). Returns how many.
    pub fn forget_database(&mut self, dboid: u32) -> usize {
        let mut n = 0;
        let mut k = 0;
        while k < SLOTS {
            let s = &self.slots[k];
            if s.used != 0 && s.dboid == dboid && s.runs_len == 0 {
                // Removal may move a later entry into k: look at k again.
                self.remove(k);
                n += 1;
            } else {
                k += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod stale_tests {
    use super::*;

    #[test]
    fn an_idle_head_is_forgotten_only_at_the_seq_it_was_seen() {
        let mut t = Table::boxed();
        let k = b"t1".to_vec();
        let h = 42;
        assert!(t.place(5, &k, h, 7, &ChainHead::genesis("t1")));
        assert_eq!(t.idle_seq(5, &k, h), Some(7));
        assert!(!t.forget_stale(5, &k, h, 6), "another seq: kept");
        assert!(t.forget_stale(5, &k, h, 7), "idle at 7: forgotten");
        assert!(t.find(5, &k, h).is_none());
        assert!(t.place(5, &k, h, 7, &ChainHead::genesis("t1")));
        assert!(matches!(
            t.append(5, &k, h, b"x", 9),
            AppendOutcome::Done(_)
        ));
        assert_eq!(t.idle_seq(5, &k, h), None, "appends in flight");
        assert!(!t.forget_stale(5, &k, h, 8), "appends in flight: kept");
        assert!(t.find(5, &k, h).is_some());
    }
}

#[cfg(test)]
mod fair_share_tests {
    use super::*;

    #[test]
    fn every_share_and_the_pool_fit_the_table() {
        for n in [1, 2, 10, 100, 122, 232, 1000, 2048, 5000] {
            let f = FairShare::for_backends(n);
            assert!(f.share >= 1 && f.share <= MAX_SHARE, "{n}: {f:?}");
            if f.share * n <= Table::MAX_CACHED {
                assert!(f.share * n + f.pool <= Table::MAX_CACHED, "{n}: {f:?}");
            } else {
                assert_eq!(f.pool, 0, "{n}: more processes than the table holds");
            }
        }
        // A default server (max_connections = 100) lets one transaction
        // hold a thousand tenants when the others hold their shares.
        let f = FairShare::for_backends(122);
        assert_eq!(f.share, MAX_SHARE);
        assert!(f.share + f.pool >= 1000, "{f:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash that puts tenant `n` at slot `n % m` (collisions on purpose).
    fn hash_of(tenant: &[u8], m: u64) -> u64 {
        let n: u64 = std::str::from_utf8(tenant).unwrap()[1..].parse().unwrap();
        n % m
    }

    fn key(n: usize) -> Vec<u8> {
        format!("t{n}").into_bytes()
    }

    fn genesis(n: usize) -> ChainHead {
        ChainHead::genesis(&format!("t{n}"))
    }

    fn done(o: AppendOutcome) -> Appended {
        match o {
            AppendOutcome::Done(a) => *a,
            other => panic!("expected an append, got {other:?}"),
        }
    }

    #[test]
    fn appends_chain_on_from_the_cached_head_and_name_their_predecessor() {
        let mut t = Table::boxed();
        let (k, h) = (key(1), 1);
        assert!(matches!(
            t.append(5, &k, h, b"a", 100),
            AppendOutcome::NotLoaded
        ));
        assert!(t.place(5, &k, h, 0, &genesis(1)));
        let a = done(t.append(5, &k, h, b"a", 100));
        assert_eq!((a.seq, a.pred_xid), (1, INVALID_XID));
        assert_eq!(a.prev, genesis(1));
        assert_eq!(a.next, genesis(1).next(1, b"a"));
        let b = done(t.append(5, &k, h, b"b", 101));
        assert_eq!((b.seq, b.pred_xid), (2, 100));
        assert_eq!(b.prev, a.next);
        // Another database's tenant of the same name is another chain.
        assert!(matches!(
            t.append(6, &k, h, b"a", 100),
            AppendOutcome::NotLoaded
        ));
    }

    #[test]
    fn a_rollback_rewinds_its_run_and_every_later_one() {
        let mut t = Table::boxed();
        let (k, h) = (key(1), 1);
        t.place(5, &k, h, 0, &genesis(1));
        done(t.append(5, &k, h, b"a", 100));
        done(t.append(5, &k, h, b"b", 101));
        done(t.append(5, &k, h, b"c", 101));
        done(t.append(5, &k, h, b"d", 102));
        t.rewind(5, &k, h, 3, 101);
        assert!(t.holds(5, &k, h, 1, 100));
        assert!(!t.holds(5, &k, h, 2, 101) && !t.holds(5, &k, h, 4, 102));
        let e = done(t.append(5, &k, h, b"e", 103));
        assert_eq!((e.seq, e.pred_xid), (2, 100));
        assert_eq!(e.prev, genesis(1).next(1, b"a"));
    }

    #[test]
    fn unappend_takes_back_only_the_owners_latest_link() {
        let mut t = Table::boxed();
        let (k, h) = (key(1), 1);
        t.place(5, &k, h, 0, &genesis(1));
        done(t.append(5, &k, h, b"a", 100));
        done(t.append(5, &k, h, b"b", 101));
        assert_eq!(
            t.unappend(5, &k, h, 100),
            None,
            "not the latest link's owner"
        );
        assert_eq!(t.unappend(5, &k, h, 101), Some(2));
        assert_eq!(t.unappend(5, &k, h, 101), None, "once");
        let c = done(t.append(5, &k, h, b"c", 101));
        assert_eq!((c.seq, c.pred_xid), (2, 100));
    }

    #[test]
    fn a_tenant_with_every_run_in_flight_is_busy() {
        let mut t = Table::boxed();
        let (k, h) = (key(1), 1);
        t.place(5, &k, h, 0, &genesis(1));
        for x in 0..RUNS as u32 {
            done(t.append(5, &k, h, b"x", 100 + x));
        }
        assert!(matches!(
            t.append(5, &k, h, b"y", 999),
            AppendOutcome::Busy(100)
        ));
        // The newest run's owner extends it.
        done(t.append(5, &k, h, b"z", 100 + RUNS as u32 - 1));
        t.release(5, &k, h, 100);
        done(t.append(5, &k, h, b"y", 999));
    }

    /// Slots a lookup of the key inspects.
    fn probes(t: &Table, k: &[u8], h: u64) -> usize {
        let start = Table::home(h);
        (0..SLOTS)
            .position(|i| {
                let s = &t.slots[(start + i) % SLOTS];
                s.used == 0 || s.is(5, k)
            })
            .unwrap_or(SLOTS)
            + 1
    }

    #[test]
    fn idle_tenants_are_evicted_and_lookups_stay_short_past_the_capacity() {
        let mut t = Table::boxed();
        let mut longest = 0;
        // Many more tenants than the table caches, hashing uniformly.
        for n in 0..5 * SLOTS {
            let (k, h) = (key(n), (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7);
            assert!(t.place(5, &k, h, 0, &genesis(n)), "tenant {n}");
            assert!(t.cached() <= Table::MAX_CACHED);
            assert!(t.find(5, &k, h).is_some());
            longest = longest.max(probes(&t, &key(n + 1), h ^ 0x5555));
        }
        assert_eq!(t.cached(), Table::MAX_CACHED);
        // A miss (the costliest lookup) ends at an empty slot soon.
        assert!(longest < 64, "a miss inspected {longest} slots");
        let (k, h) = (key(1), 1);
        t.place(5, &k, h, 0, &genesis(1));
        assert_eq!(done(t.append(5, &k, h, b"x", 7)).seq, 1);
        // Colliding keys (runs of 4 on one home slot) stay reachable.
        let mut t = Table::boxed();
        for n in 0..3 * SLOTS {
            assert!(t.place(
                5,
                &key(n),
                hash_of(&key(n), SLOTS as u64 / 4),
                0,
                &genesis(0)
            ));
        }
        // Every cached tenant is still reachable from its home slot.
        let reachable = (0..5 * SLOTS)
            .filter(|n| {
                t.find(5, &key(*n), hash_of(&key(*n), SLOTS as u64 / 4))
                    .is_some()
            })
            .count();
        assert_eq!(reachable, Table::MAX_CACHED);
    }

    #[test]
    fn tenants_with_appends_in_flight_are_never_evicted() {
        let mut t = Table::boxed();
        for n in 0..Table::MAX_CACHED {
            let (k, h) = (key(n), n as u64);
            t.place(5, &k, h, 0, &genesis(n));
            done(t.append(5, &k, h, b"x", 7));
        }
        let (k, h) = (key(99_999), 3);
        assert!(
            !t.place(5, &k, h, 0, &genesis(99_999)),
            "all in flight: refused"
        );
        t.release(5, &key(10), 10, 7);
        assert!(t.place(5, &k, h, 0, &genesis(99_999)));
        assert!(t.find(5, &key(10), 10).is_none(), "the idle one made room");
        for n in (0..Table::MAX_CACHED).filter(|n| *n != 10) {
            assert!(t.holds(5, &key(n), n as u64, 1, 7));
        }
    }

    #[test]
    fn forgetting_a_database_keeps_the_others_reachable() {
        let mut t = Table::boxed();
        for n in 0..300 {
            let db = if n % 2 == 0 { 5 } else { 6 };
            t.place(db, &key(n), hash_of(&key(n), 64), 0, &genesis(n));
        }
        assert_eq!(t.forget_database(5), 150);
        for n in 0..300 {
            let (db, found) = (
                if n % 2 == 0 { 5 } else { 6 },
                t.find(
                    if n % 2 == 0 { 5 } else { 6 },
                    &key(n),
                    hash_of(&key(n), 64),
                ),
            );
            assert_eq!(found.is_some(), db == 6, "tenant {n}");
        }
    }
}
