//! A batch: the documents of the changes read since the last one, already
//! in BSON, which every destination (`destination.rs`) delivers before the
//! mirror acknowledges its position.

use crate::documents::{self, LockoutChange};
use bson::RawDocumentBuf;
use std::collections::HashMap;

/// Documents waiting to be written, already in BSON.
#[derive(Debug, Default)]
pub struct Batch {
    pub log: Vec<RawDocumentBuf>,
    /// Parts of log fields too large for their document
    /// (`documents::LogDocument`), written before the log documents.
    pub parts: Vec<RawDocumentBuf>,
    pub checkpoints: Vec<RawDocumentBuf>,
    /// Tamper alarms (`tamper.rs`), by `_id` (commit LSN and position).
    pub tamper: Vec<RawDocumentBuf>,
    /// Signed checkpoints (`witness.rs`), written after the rows they cover,
    /// and their lines for the witness log.
    pub witness: Vec<RawDocumentBuf>,
    pub witness_lines: Vec<String>,
    /// Campaign alerts (`detect.rs`), by `_id` (tenant, rule, last seq).
    pub alerts: Vec<RawDocumentBuf>,
    /// The CEF lines of `log` and `alerts`, for the SIEM (empty without one).
    pub siem: Vec<crate::siem::SiemEvent>,
    /// Lockout state changes by `_id`, newest version only.
    pub lockout: HashMap<String, LockoutChange>,
    /// Approximate size of the decoded changes, bytes.
    pub bytes: usize,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.log.len()
            + self.checkpoints.len()
            + self.lockout.len()
            + self.tamper.len()
            + self.witness.len()
            + self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    /// The number of log, checkpoint and lockout documents.
    pub fn counts(&self) -> RowCounts {
        RowCounts {
            log: self.log.len() as u64,
            checkpoints: self.checkpoints.len() as u64,
            lockout: self.lockout.len() as u64,
        }
    }

    /// Adds a log row's document and the parts it names.
    pub fn put_log(&mut self, l: documents::LogDocument) {
        self.parts.extend(l.parts);
        self.log.push(l.doc);
    }

    /// Adds a lockout state change, keeping the newest version per key.
    pub fn put_lockout(&mut self, c: LockoutChange) {
        match self.lockout.get_mut(&c.id) {
            Some(old) if old.version > c.version => {}
            Some(old) => *old = c,
            None => {
                self.lockout.insert(c.id.clone(), c);
            }
        }
    }
}

impl crate::pipeline::Contents for Batch {
    fn rows(&self) -> usize {
        Batch::rows(self)
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
    fn standalone(&self) -> bool {
        !self.witness.is_empty() || !self.alerts.is_empty()
    }
}

/// The rows of a batch the metrics count (`rows_total{table}`) once
/// every destination delivered it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub log: u64,
    pub checkpoints: u64,
    pub lockout: u64,
}
