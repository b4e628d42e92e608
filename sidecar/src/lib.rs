//! The pg_authaudit mirror: reads the extension's publication with logical
//! replication (pgoutput) and mirrors every committed row into MongoDB.
//! `main.rs` is the binary; these modules hold the parts.

pub mod batch;
pub mod config;
pub mod custody;
pub mod destination;
pub mod detect;
pub mod documents;
pub mod error;
pub mod http;
pub mod metrics;
pub mod mirror;
pub mod monitor;
pub use authaudit_core::note;
pub mod mongo_store;
pub mod operator;
pub mod pg;
pub mod pgoutput;
pub mod pipeline;
pub mod preflight;
pub mod recompute;
pub mod relp;
pub mod siem;
pub mod siem_target;
pub mod syslog;
pub mod tamper;
pub mod tls;
pub mod verify;
pub mod witness;
pub mod write_back;
