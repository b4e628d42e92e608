//! The extension's error type and its mapping to SQLSTATEs (see
//! `docs/errors.md`). Inner code returns [`AuditError`]; only the SQL
//! boundary turns it into a PostgreSQL error.

use authaudit_core::event::EventError;
use authaudit_core::jwt::TokenError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// Everything the extension's Rust functions can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Token(#[from] authaudit_core::jwt::TokenError),
    #[error(transparent)]
    Policy(#[from] authaudit_core::lockout::PolicyError),
    #[error("chain head must be {expected} bytes, got {got}")]
    MalformedHead { expected: usize, got: usize },
    #[error(
        "shared_preload_libraries must include pg_authaudit (chain heads live in shared memory)"
    )]
    NotPreloaded,
    #[error("this transaction holds appends in flight in {held} tenants: beyond its share of {share}, the {pool} tenants other sessions may hold together are taken; commit, or record fewer tenants per transaction")]
    TooManyTenantsInFlight {
        held: usize,
        share: usize,
        pool: usize,
    },
    #[error("one transaction interleaved its events with other transactions more than {0} times in one tenant's chain")]
    TooManyRuns(usize),
    #[error("verifying tenant {0} needs tenant-wide read access (a tenant_scope binding without org_id, or authaudit_auditor)")]
    NoVerifyScope(String),
    #[error("role {role} may not record events for tenant {tenant}{}", org.as_ref().map(|o| format!(" organisation {o}")).unwrap_or_else(|| " without organisation".into()))]
    NotBound {
        role: String,
        tenant: String,
        org: Option<String>,
    },
    #[error(transparent)]
    Refused(#[from] authaudit_core::scope::WriteRefusal),
    #[error("account {user} of tenant {tenant} belongs to another organisation than the writer's ({org})")]
    AccountOfOtherOrganisation {
        user: String,
        tenant: String,
        org: String,
    },
    #[error("the chain head of tenant {tenant} in the table (seq {table_seq}) is not the live head (seq {live_seq}): rows were removed or added outside the extension")]
    HeadMismatch {
        tenant: String,
        table_seq: i64,
        live_seq: i64,
    },
    #[error("log_id {0} is being recorded concurrently")]
    ConcurrentLogId(String),
    #[error("this statement appends to a tenant's chain again after another transaction did: record a tenant's events of one statement in one call (record_events), or in a transaction block")]
    InterleavedAppend,
    #[error("log_id {0} was already recorded with different content")]
    LogIdReused(String),
    #[error("could not serialize access due to concurrent update (the first events of one account or source IP raced)")]
    ConcurrentFirstEvent,
    #[error("events must be a JSON array of event objects")]
    BatchNotArray,
    #[error("a batch holds at most {max} events (authaudit.max_batch_events), this one {got}")]
    BatchTooLarge { max: i32, got: i32 },
    #[error("event {0} of the batch is not a JSON object")]
    BatchEventNotObject(usize),
    #[error("event {0} of the batch has unknown field(s): {1}")]
    BatchUnknownFields(usize, String),
    #[error("event {event} of the batch: {field} must be {expected} or null, not a JSON {found}")]
    BatchFieldType {
        event: usize,
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("could not serialize access due to concurrent update of a lockout state row")]
    ConcurrentUpdate,
    #[error("relation authaudit.{0} does not exist")]
    MissingRelation(String),
    #[error("no append of this transaction to take back")]
    NothingToUnappend,
    #[error("role {role} may not rebuild the lockout state of tenant {tenant} (it needs a tenant-wide write binding, authaudit_admin or superuser)")]
    NoRebuildScope { role: String, tenant: String },
    #[error("rebuild_lockout needs READ COMMITTED: a transaction snapshot would miss events committed before the lockout tables were locked")]
    RebuildNeedsReadCommitted,
    #[error(
        "tenant {tenant} has {head} rows; a tree of {asked} is not one of its trees (1 to {head})"
    )]
    TreeSize {
        tenant: String,
        asked: i64,
        head: i64,
    },
    #[error("old_size {old_size} of tenant {tenant} is not a tree before new_size {new_size} (1 to {new_size})")]
    OldTreeSize {
        tenant: String,
        old_size: i64,
        new_size: i64,
    },
    #[error("seq {seq} is not in the tree of the first {size} rows of tenant {tenant}")]
    SeqOutsideTree { tenant: String, seq: i64, size: i64 },
    #[error("rows 1 to {removed_to} of tenant {tenant} were removed by retention: the tree over them is held by the mirror and the signed checkpoints, not by PostgreSQL")]
    TreeRetained { tenant: String, removed_to: i64 },
    #[error("authaudit.witness_keys is not set: no witness key to check the checkpoint with")]
    WitnessKeysUnset,
    #[error("witness checkpoint refused: {0}")]
    WitnessNote(authaudit_core::note::NoteError),
    #[error("the witness checkpoint's origin {origin} is not of tenant {tenant}")]
    WitnessOrigin { origin: String, tenant: String },
    #[error("pg_authaudit's SQL objects are of release {installed}; this library serves those of {} and {}", authaudit_core::release::PREVIOUS, env!("CARGO_PKG_VERSION"))]
    RetiredSql { installed: String },
    #[error(
        "event {event} of the batch: tenant_id must be {tenant}, the call's tenant, or absent"
    )]
    BatchOtherTenant { event: usize, tenant: String },
    #[error("the shards of tenant {0} are not on this node")]
    ShardElsewhere(String),
    #[error("on a distributed install one call records one tenant's events (tenants {0} and {1})")]
    TenantsAcrossShards(String, String),
    #[error("internal query failed: {0}")]
    Spi(#[from] pgrx::spi::SpiError),
}

impl AuditError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            AuditError::Event(e) => match e {
                EventError::Missing(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
                EventError::UserIdTooLong(_) | EventError::UserAgentTooLong(_) => {
                    ERRCODE_STRING_DATA_RIGHT_TRUNCATION
                }
                EventError::MetadataTooLarge(_) => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                EventError::NotFinite(_)
                | EventError::OccurredInFuture { .. }
                | EventError::OccurredTooLongAgo { .. } => ERRCODE_DATETIME_FIELD_OVERFLOW,
                EventError::UnknownEventType(_)
                | EventError::UnknownChannel(_)
                | EventError::MalformedScopeId { .. }
                | EventError::ControlCharacter(_)
                | EventError::NotHostAddress(_)
                | EventError::MetadataNotObject
                | EventError::MetadataTooDeep(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            },
            AuditError::Token(e) => match e {
                TokenError::Malformed(_) | TokenError::ClaimType(_) => {
                    ERRCODE_INVALID_TEXT_REPRESENTATION
                }
                TokenError::Unsecured | TokenError::NoSubject | TokenError::SubjectMismatch => {
                    ERRCODE_INVALID_PARAMETER_VALUE
                }
            },
            AuditError::MalformedHead { .. } => ERRCODE_DATA_CORRUPTED,
            AuditError::Policy(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            AuditError::NotPreloaded => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            AuditError::NoVerifyScope(_)
            | AuditError::NotBound { .. }
            | AuditError::AccountOfOtherOrganisation { .. }
            | AuditError::NoRebuildScope { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
            AuditError::RebuildNeedsReadCommitted => ERRCODE_INVALID_TRANSACTION_STATE,
            AuditError::Refused(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            AuditError::HeadMismatch { .. } => ERRCODE_DATA_CORRUPTED,
            AuditError::TooManyTenantsInFlight { .. } | AuditError::TooManyRuns(_) => {
                ERRCODE_CONFIGURATION_LIMIT_EXCEEDED
            }
            AuditError::ConcurrentLogId(_)
            | AuditError::InterleavedAppend
            | AuditError::ConcurrentFirstEvent
            | AuditError::ConcurrentUpdate => ERRCODE_T_R_SERIALIZATION_FAILURE,
            AuditError::LogIdReused(_) => ERRCODE_UNIQUE_VIOLATION,
            AuditError::BatchNotArray
            | AuditError::BatchEventNotObject(_)
            | AuditError::BatchUnknownFields(..)
            | AuditError::BatchFieldType { .. }
            | AuditError::BatchOtherTenant { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            AuditError::BatchTooLarge { .. } => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            AuditError::MissingRelation(_) => ERRCODE_UNDEFINED_TABLE,
            AuditError::TreeSize { .. }
            | AuditError::OldTreeSize { .. }
            | AuditError::SeqOutsideTree { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            AuditError::TreeRetained { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            AuditError::WitnessKeysUnset => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            AuditError::WitnessNote(_) | AuditError::WitnessOrigin { .. } => {
                ERRCODE_INVALID_PARAMETER_VALUE
            }
            AuditError::RetiredSql { .. } | AuditError::TenantsAcrossShards(..) => {
                ERRCODE_FEATURE_NOT_SUPPORTED
            }
            AuditError::ShardElsewhere(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            AuditError::Spi(_) | AuditError::NothingToUnappend => ERRCODE_INTERNAL_ERROR,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        match self {
            AuditError::ConcurrentLogId(_) => {
                Some("Retry: the retry returns the row the other session recorded.")
            }
            AuditError::LogIdReused(_) => Some(
                "A retry must repeat the original event exactly; a new event needs a new log_id.",
            ),
            AuditError::ConcurrentFirstEvent | AuditError::ConcurrentUpdate => {
                Some("Retry the transaction.")
            }
            AuditError::ShardElsewhere(_) => Some(
                "Call the function through the coordinator, where authaudit.distribute() delegated it to the tenant's worker (docs/scale-out.md).",
            ),
            AuditError::TenantsAcrossShards(..) => Some(
                "Record each tenant's events with authaudit.record_events(tenant_id, events) (docs/scale-out.md).",
            ),
            AuditError::RetiredSql { .. } => {
                Some("Run ALTER EXTENSION pg_authaudit UPDATE in this database (docs/installation.md, \"Upgrades\").")
            }
            AuditError::Event(EventError::OccurredTooLongAgo { .. }) => Some(
                "Record history with authaudit.import_events, then authaudit.rebuild_lockout (docs/lockout.md, \"Event time\").",
            ),
            AuditError::Event(EventError::UnknownChannel(_)) => Some(
                "Channels: web, mobile, api, ssh, vpn, sso and those of authaudit.extra_channels (SELECT * FROM authaudit.channels()); a superuser adds others there.",
            ),
            AuditError::NoRebuildScope { .. } => Some(
                "An importer bound to an organisation passes rebuild => false; a tenant-wide writer or an admin then calls authaudit.rebuild_lockout.",
            ),
            AuditError::WitnessKeysUnset => Some(
                "A superuser sets authaudit.witness_keys to the witness's verifier key (authaudit-sidecar witness-key).",
            ),
            AuditError::BatchTooLarge { .. } => {
                Some("Split the events into several calls; each call is one transaction.")
            }
            _ => None,
        }
    }
}

impl From<AuditError> for ErrorReport {
    #[track_caller]
    fn from(e: AuditError) -> ErrorReport {
        let code = e.sqlstate();
        let report = ErrorReport::new(code, format!("pg_authaudit: {e}"), "pg_authaudit");
        match e.hint() {
            Some(hint) => report.set_hint(hint),
            None => report,
        }
    }
}

/// The result type of the extension's SQL-facing functions.
pub type SqlResult<T> = Result<T, ErrorReport>;
