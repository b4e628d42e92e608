//! Pure logic of pg_authaudit, shared by the PostgreSQL extension and the
//! sidecar: the event model and its rules, the canonical record encoding and
//! the per-tenant hash chains. Nothing here depends on PostgreSQL.

pub mod campaign;
pub mod canonical;
pub mod cef;
pub mod chain;
pub mod chain_heads;
pub mod channel;
pub mod custody;
pub mod detection;
pub mod ecs;
pub mod engine_state;
pub mod event;
pub mod exact_json;
pub mod identity;
pub mod jsonb_text;
pub mod jwt;
pub mod lock_key;
pub mod lockout;
pub mod lockout_effect;
pub mod lockout_replay;
pub mod log_text;
pub mod merkle;
pub mod note;
pub mod numeric;
pub mod ocsf;
pub mod release;
pub mod retention;
pub mod scope;
pub mod signed_tree;
pub mod stored_event;
pub mod verification;
