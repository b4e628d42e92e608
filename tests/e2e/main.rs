//! End-to-end tests of pg_authaudit against a real PostgreSQL 15 cluster
//! (one integration binary, one module per capability).

mod attacks;
mod attacks_round2;
mod backup;
mod cef;
mod chain_heads;
mod channels;
mod checkpoints;
mod concurrency;
mod demo;
mod dockerfile;
mod event_time;
mod hostile_input;
mod independent_verifier;
mod install;
mod investigation;
mod isolation;
mod lockout;
mod lockout_keys;
mod merkle;
mod metrics_endpoint;
mod mirror;
mod mirror_hostile;
mod mongo_contract;
mod operator;
mod pipeline;
mod publication;
mod recording;
mod siem;
mod snapshots;
mod sshd_import;
mod support;
mod tampering;
mod tokens;
mod upgrade;
mod witness;
