//! The pg_authaudit mirror: reads the extension's publication with logical
//! replication (pgoutput) and mirrors every committed row into MongoDB.
//! This library holds the parts that are pure logic; `main.rs` is the
//! binary.

pub mod pgoutput;
