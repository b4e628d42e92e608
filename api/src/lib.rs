//! pg_authaudit's platform API (`authaudit-api`): the authentication log
//! over HTTP. A bearer token names a PostgreSQL role ([`identity`]); each
//! request runs under it in one transaction ([`db`]), so the extension's
//! bindings and row-level security scope every answer to the caller's
//! tenant and organisation. The API adds no scope logic of its own.

pub mod admin;
pub mod config;
pub mod db;
pub mod identity;
pub mod key_set;
pub mod limits;
pub mod metrics;
pub mod problem;
pub mod provider_http;
pub mod query;
pub mod routes;
pub mod server;
pub mod write;
