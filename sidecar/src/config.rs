//! Configuration: flags, environment variables, and an optional TOML file
//! (`--config`). A flag beats its environment variable, which beats the
//! file, which beats the default. `authaudit-sidecar --help` lists them all.
//!
//! The options come in sections; each module receives only the sections it
//! uses, and start-up (`main`, `mirror::run`) assembles them. In the file
//! a section is a table, its options keys without their flag's prefix;
//! the general options are top-level keys (before the first table):
//!
//! | section | keys |
//! |---|---|
//! | top level ([`GeneralConfig`]) | `log`, `log_json`, `state_file`, `progress_interval_ms` |
//! | `[postgres]` ([`PostgresConfig`]) | `host`, `port`, `user`, `password`, `database`, `sslmode`, `sslrootcert`, `application_name`, `slot`, `publication`, `synchronous` |
//! | `[mongo]` ([`MongoConfig`]) | `uri`, `database`, `write_concern`, `timeout_ms` |
//! | `[batch]` ([`BatchConfig`]) | `rows`, `bytes`, `wait_ms`, `max_backoff_ms`, `status_interval_ms`, `shutdown_timeout_ms` |
//! | `[witness]` ([`WitnessConfig`]) | `key_file`, `origin`, `every`, `interval_ms`, `log`, `write_back` |
//! | `[siem]` ([`SiemConfig`]) | `target`, `tls_mode`, `tls_rootcert`, `hostname`, `timeout_ms` |
//! | `[metrics]` ([`MetricsConfig`]) | `listen`, `max_connections`, `max_header_bytes`, `header_timeout_ms`, `health_timeout_ms`, `per_tenant` |
//! | `[detections]` ([`DetectionsConfig`]) | `enabled`, `config` |
//!
//! Each option is declared once (`section!`): its flag, environment
//! variable and default (clap), its file key (serde) and the merge of the
//! two follow from that. A file key of releases before 0.9.0 (`pg_host`)
//! is refused with its new place (`pg_host is now [postgres] host`).

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Mirrors pg_authaudit's log, lockout state and checkpoints from logical
/// replication (pgoutput) into MongoDB: every committed row, nothing twice,
/// acknowledged to PostgreSQL only once MongoDB acknowledged it.
#[derive(Debug, Parser)]
#[command(name = "authaudit-sidecar", version, about, long_about = None)]
pub struct Cli {
    /// TOML file with any of these options (`[postgres]` `host`, `[batch]`
    /// `rows`: docs/sidecar.md).
    #[arg(
        id = "config",
        long = "config",
        value_name = "CONFIG",
        env = "AUTHAUDIT_SIDECAR_CONFIG",
        global = true
    )]
    pub config_file: Option<PathBuf>,
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream and mirror until SIGTERM or Ctrl-C (the default).
    Run,
    /// Compares every PostgreSQL row with the document the mirror stores for
    /// it, field by field (the log per tenant in seq order, the checkpoints,
    /// the lockout state), naming the first difference per tenant; exits 1
    /// on any difference.
    Verify {
        /// Rewrites the log documents that hold their metadata numbers as
        /// releases before 0.9.0 wrote them (Doubles) in the exact form.
        #[arg(long)]
        rewrite_earlier_numbers: bool,
    },
    /// Moves the log documents a mirror written before release 0.6.0 keys
    /// by `log_id` alone to the current key (`tenant_id/log_id`), a chunk a
    /// crash left staged first; prints how many moved. Run it once after
    /// upgrading from such a release (again after a crash: it resumes).
    Migrate,
    /// Creates a witness signer key file (mode 0600) and prints its
    /// verifier key, the text to publish.
    WitnessKeygen {
        /// The key file to create (refused if it exists).
        #[arg(long)]
        out: PathBuf,
        /// The key's name in signature lines.
        #[arg(long, default_value = "authaudit-witness")]
        name: String,
    },
    /// Prints the verifier key of --witness-key-file.
    WitnessKey,
    /// Prints a key rotation statement: the key of --witness-key-file hands
    /// over to that of --new-key-file (create it with witness-keygen),
    /// signed by both. Publish it with the new verifier key.
    WitnessRotate {
        /// The new signer key file.
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Checks PostgreSQL against the latest signed checkpoint of every
    /// tenant (from MongoDB, and from --witness-log when set) with the
    /// verifier key: recomputes every row's link from its content and names
    /// the first edited, rewritten or missing seq; exits 1 on any finding.
    WitnessCheck {
        /// The verifier key (name+id+key); default: that of --witness-key-file.
        #[arg(long, env = "AUTHAUDIT_WITNESS_PUBLIC_KEY")]
        public_key: Option<String>,
    },
    /// Tamper alarms in the store (`tamper_events`): list them, or mark one
    /// resolved with a note.
    Alarms {
        #[command(subcommand)]
        action: AlarmAction,
    },
    /// Campaign alerts in the store (`alerts`).
    Alerts {
        #[command(subcommand)]
        action: AlertAction,
    },
    /// Restores a log row from the mirror into PostgreSQL: prints the SQL a
    /// superuser runs (or runs it with --execute); the sidecar records the
    /// restoration as a resolved alarm.
    Restore {
        /// The row's tenant.
        #[arg(long)]
        tenant: String,
        /// The row's seq.
        #[arg(long)]
        seq: i64,
        /// Runs the SQL over --pg-user's connection (a superuser) instead of
        /// printing it, and resolves the row's open alarms with --note.
        #[arg(long)]
        execute: bool,
        /// Why, for the record (required with --execute): an incident
        /// number, a name.
        #[arg(long)]
        note: Option<String>,
    },
}

/// `alarms …`
#[derive(Debug, Subcommand)]
pub enum AlarmAction {
    /// Lists the unresolved tamper alarms (with --all, the resolved too).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Marks one alarm resolved, with a note saying what was done.
    Resolve {
        /// The alarm's id (the first column of `alarms list`).
        id: String,
        /// What was done (an incident number, "restored from the mirror").
        #[arg(long)]
        note: String,
    },
}

/// `alerts …`
#[derive(Debug, Subcommand)]
pub enum AlertAction {
    /// Lists campaign alerts, newest first.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this rule's (password_spray, credential_stuffing, …).
        #[arg(long)]
        rule: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

/// How the sidecar's PostgreSQL connections use TLS (libpq's `sslmode`;
/// what each mode means: `crate::tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Whether the server's certificate is checked against the root
    /// certificates.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// In the file as on the command line (`verify-full`, any case).
impl<'de> Deserialize<'de> for SslMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SslMode, D::Error> {
        let text = String::deserialize(d)?;
        SslMode::from_str(&text, true).map_err(|_| {
            let modes: Vec<String> = SslMode::value_variants()
                .iter()
                .filter_map(|m| m.to_possible_value())
                .map(|v| v.get_name().to_string())
                .collect();
            serde::de::Error::custom(format!("{text:?}: one of {}", modes.join(", ")))
        })
    }
}

/// In the file as on the command line (`relp://host:port`).
impl<'de> Deserialize<'de> for crate::siem_target::Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Declares a section once: its struct (clap `Args`: each field a flag and
/// an environment variable; its id, also its value name, is the option's
/// file key of releases before 0.9.0 in capitals), the struct its file
/// table is read into (serde: every key optional, unknown keys refused),
/// and the merge of the two.
macro_rules! section {
    (
        $(#[doc = $sdoc:literal])*
        $name:ident, $file:ident {
            $(
                $(#[doc = $doc:literal])*
                #[arg($($arg:tt)*)]
                $id:literal => $field:ident: $ty:ty,
            )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, Args)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                #[arg(id = $id, global = true, $($arg)*)]
                pub $field: $ty,
            )*
        }

        /// The section's table in the file.
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $file {
            $($field: Option<$ty>,)*
        }

        impl $name {
            /// Each option's argument id and its key in the section (unused
            /// for the general options: their keys did not move).
            #[allow(dead_code)]
            const KEYS: &[(&str, &str)] = &[$(($id, stringify!($field))),*];

            /// Takes the file's values of the options whose value is the
            /// default (neither a flag nor the environment gave it).
            fn merge(&mut self, file: $file, from_default: &dyn Fn(&str) -> bool) {
                $(
                    if let Some(v) = file.$field {
                        if from_default($id) {
                            self.$field = v;
                        }
                    }
                )*
            }
        }
    };
}

section! {
    /// The general options: top-level keys of the file.
    GeneralConfig, GeneralFile {
        /// Log filter (tracing's EnvFilter syntax, e.g. "info,sidecar=debug").
        #[arg(long = "log", env = "AUTHAUDIT_LOG", default_value = "info")]
        "LOG" => log: String,
        /// Log as JSON lines instead of text.
        #[arg(long = "log-json", env = "AUTHAUDIT_LOG_JSON")]
        "LOG_JSON" => log_json: bool,
        /// Local file of what the sidecar acknowledged (the store's identity
        /// and each tenant's acknowledged head): a store that comes back empty,
        /// replaced or short of rows is detected against it. Empty: none.
        #[arg(long = "state-file", env = "AUTHAUDIT_STATE_FILE")]
        "STATE_FILE" => state_file: Option<PathBuf>,
        /// Interval of the progress lines of the initial copy and `verify` (ms).
        #[arg(long = "progress-interval-ms", env = "AUTHAUDIT_PROGRESS_INTERVAL_MS", default_value_t = 10_000)]
        "PROGRESS_INTERVAL_MS" => progress_interval_ms: u64,
    }
}

section! {
    /// `[postgres]`: the server, the role, TLS, the slot and the
    /// publication.
    PostgresConfig, PostgresFile {
        /// PostgreSQL host (or Unix socket directory).
        #[arg(long = "pg-host", env = "PGHOST", default_value = "127.0.0.1")]
        "PG_HOST" => host: String,
        /// PostgreSQL port.
        #[arg(long = "pg-port", env = "PGPORT", default_value_t = 5432)]
        "PG_PORT" => port: u16,
        /// PostgreSQL role: needs REPLICATION and membership in authaudit_auditor
        /// (the initial copy and `verify` read every tenant).
        #[arg(long = "pg-user", env = "PGUSER", default_value = "postgres")]
        "PG_USER" => user: String,
        /// PostgreSQL password (prefer the environment variable to the flag).
        #[arg(long = "pg-password", env = "PGPASSWORD", default_value = "", hide_env_values = true)]
        "PG_PASSWORD" => password: SecretString,
        /// Database with the pg_authaudit extension.
        #[arg(long = "pg-database", env = "PGDATABASE", default_value = "postgres")]
        "PG_DATABASE" => database: String,
        /// TLS to PostgreSQL, as libpq's sslmode: disable, prefer (TLS when the
        /// server offers it, certificate unchecked), require (TLS, unchecked),
        /// verify-ca (certificate chains to --pg-sslrootcert), verify-full (and
        /// names the host).
        #[arg(long = "pg-sslmode", env = "PGSSLMODE", value_enum, default_value_t = SslMode::Prefer)]
        "PG_SSLMODE" => sslmode: SslMode,
        /// PEM file of the certificate authorities PostgreSQL's certificate must
        /// chain to (needed by verify-ca and verify-full).
        #[arg(long = "pg-sslrootcert", env = "PGSSLROOTCERT")]
        "PG_SSLROOTCERT" => sslrootcert: Option<PathBuf>,
        /// application_name of every PostgreSQL connection of the sidecar: the
        /// name `synchronous_standby_names` uses for its walsender.
        #[arg(long = "application-name", env = "AUTHAUDIT_APPLICATION_NAME", default_value = "authaudit-sidecar")]
        "APPLICATION_NAME" => application_name: String,
        /// Logical replication slot (created with pgoutput if missing).
        #[arg(long = "slot", env = "AUTHAUDIT_SLOT", default_value = "authaudit_mirror")]
        "SLOT" => slot: String,
        /// Publication to stream (created at start through
        /// authaudit.ensure_mirror_publication when missing).
        #[arg(long = "publication", env = "AUTHAUDIT_PUBLICATION", default_value = "authaudit_mirror")]
        "PUBLICATION" => publication: String,
        /// Synchronous mirroring: each commit's position is reported to
        /// PostgreSQL as soon as the store acknowledged it, not per batch timer,
        /// so that a synchronous standby setting can make commits wait for it.
        #[arg(long = "synchronous", env = "AUTHAUDIT_SYNCHRONOUS", default_value_t = false, action = clap::ArgAction::Set)]
        "SYNCHRONOUS" => synchronous: bool,
    }
}

section! {
    /// `[mongo]`: the store.
    MongoConfig, MongoFile {
        /// MongoDB connection string.
        #[arg(long = "mongodb-uri", env = "AUTHAUDIT_MONGODB_URI", default_value = "mongodb://127.0.0.1:27017/")]
        "MONGODB_URI" => uri: SecretString,
        /// MongoDB database for the mirrored collections.
        #[arg(long = "mongodb-database", env = "AUTHAUDIT_MONGODB_DATABASE", default_value = "authaudit")]
        "MONGODB_DATABASE" => database: String,
        /// Write concern the mirror waits for before acknowledging a position:
        /// "majority" or a number of nodes.
        #[arg(long = "write-concern", env = "AUTHAUDIT_WRITE_CONCERN", default_value = "majority")]
        "WRITE_CONCERN" => write_concern: String,
        /// Longest wait for the document store to be reached (server selection
        /// and connect) or to answer a ping (ms); then the attempt counts as
        /// failed and is retried.
        #[arg(long = "store-timeout-ms", env = "AUTHAUDIT_STORE_TIMEOUT_MS", default_value_t = 5000)]
        "STORE_TIMEOUT_MS" => timeout_ms: u64,
    }
}

section! {
    /// `[batch]`: batches, retries, status updates and the shutdown.
    BatchConfig, BatchFile {
        /// Largest batch, in rows, written to MongoDB at once.
        #[arg(long = "batch-rows", env = "AUTHAUDIT_BATCH_ROWS", default_value_t = 5000)]
        "BATCH_ROWS" => rows: usize,
        /// Largest batch, in bytes of decoded changes.
        #[arg(long = "batch-bytes", env = "AUTHAUDIT_BATCH_BYTES", default_value_t = 8 << 20)]
        "BATCH_BYTES" => bytes: usize,
        /// Longest a committed change waits for its batch to fill (milliseconds).
        #[arg(long = "batch-wait-ms", env = "AUTHAUDIT_BATCH_WAIT_MS", default_value_t = 20)]
        "BATCH_WAIT_MS" => wait_ms: u64,
        /// Longest back-off between retries of a failed write or connection (ms).
        #[arg(long = "max-backoff-ms", env = "AUTHAUDIT_MAX_BACKOFF_MS", default_value_t = 10_000)]
        "MAX_BACKOFF_MS" => max_backoff_ms: u64,
        /// Interval of status updates (and idle heartbeats) to PostgreSQL (ms).
        #[arg(long = "status-interval-ms", env = "AUTHAUDIT_STATUS_INTERVAL_MS", default_value_t = 1000)]
        "STATUS_INTERVAL_MS" => status_interval_ms: u64,
        /// Longest a SIGTERM waits for in-flight deliveries (ms); what is not
        /// delivered by then stays unacknowledged and is replayed at the next
        /// start.
        #[arg(long = "shutdown-timeout-ms", env = "AUTHAUDIT_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
        "SHUTDOWN_TIMEOUT_MS" => shutdown_timeout_ms: u64,
    }
}

section! {
    /// `[metrics]`: the /metrics and /health endpoint.
    MetricsConfig, MetricsFile {
        /// Address of the Prometheus metrics (/metrics) and health (/health)
        /// endpoint; empty to disable.
        #[arg(long = "metrics-listen", env = "AUTHAUDIT_METRICS_LISTEN", default_value = "127.0.0.1:9187")]
        "METRICS_LISTEN" => listen: String,
        /// Most connections the metrics endpoint holds at once; one more is
        /// closed as soon as it is accepted.
        #[arg(long = "metrics-max-connections", env = "AUTHAUDIT_METRICS_MAX_CONNECTIONS", default_value_t = 64)]
        "METRICS_MAX_CONNECTIONS" => max_connections: usize,
        /// Longest request head (request line and headers, bytes) the metrics
        /// endpoint reads; a longer one is answered 431 and closed.
        #[arg(long = "metrics-max-header-bytes", env = "AUTHAUDIT_METRICS_MAX_HEADER_BYTES", default_value_t = 8192)]
        "METRICS_MAX_HEADER_BYTES" => max_header_bytes: usize,
        /// Longest wait (ms) for a complete request head, from the connection's
        /// accept or its last response; then the connection is closed.
        #[arg(long = "metrics-header-timeout-ms", env = "AUTHAUDIT_METRICS_HEADER_TIMEOUT_MS", default_value_t = 5000)]
        "METRICS_HEADER_TIMEOUT_MS" => header_timeout_ms: u64,
        /// A destination that failed, or has not answered a delivery for this
        /// long (ms), turns /health degraded.
        #[arg(long = "health-timeout-ms", env = "AUTHAUDIT_HEALTH_TIMEOUT_MS", default_value_t = 5000)]
        "HEALTH_TIMEOUT_MS" => health_timeout_ms: u64,
        /// Per-tenant series on /metrics (events and failures streamed, by
        /// tenant): one series per tenant, so off by default.
        #[arg(long = "tenant-metrics", env = "AUTHAUDIT_TENANT_METRICS", default_value_t = false, action = clap::ArgAction::Set)]
        "TENANT_METRICS" => per_tenant: bool,
    }
}

section! {
    /// `[witness]`: the signed checkpoints.
    WitnessConfig, WitnessFile {
        /// The witness's signer key file (`witness-keygen`); empty: no signed
        /// checkpoints. Never stored in PostgreSQL.
        #[arg(long = "witness-key-file", env = "AUTHAUDIT_WITNESS_KEY_FILE")]
        "WITNESS_KEY_FILE" => key_file: Option<PathBuf>,
        /// Origin line prefix of the signed checkpoints (`<origin>/<tenant>`).
        #[arg(long = "witness-origin", env = "AUTHAUDIT_WITNESS_ORIGIN", default_value = "pg_authaudit")]
        "WITNESS_ORIGIN" => origin: String,
        /// A tenant's checkpoint is signed once this many of its rows are
        /// mirrored since its last one...
        #[arg(long = "witness-every", env = "AUTHAUDIT_WITNESS_EVERY", default_value_t = 1000)]
        "WITNESS_EVERY" => every: u64,
        /// ...or this long (ms) after its last one, if it has new rows.
        #[arg(long = "witness-interval-ms", env = "AUTHAUDIT_WITNESS_INTERVAL_MS", default_value_t = 60_000)]
        "WITNESS_INTERVAL_MS" => interval_ms: u64,
        /// Append-only file the signed checkpoints are also written to (each
        /// flushed to disk before its position is acknowledged); empty: none.
        #[arg(long = "witness-log", env = "AUTHAUDIT_WITNESS_LOG")]
        "WITNESS_LOG" => log: Option<PathBuf>,
        /// Writes each signed checkpoint back to PostgreSQL
        /// (`authaudit.record_witness_checkpoint`) for analysts, after the
        /// store holds it; at start, the ones PostgreSQL lacks.
        #[arg(long = "witness-write-back", env = "AUTHAUDIT_WITNESS_WRITE_BACK", default_value_t = true, action = clap::ArgAction::Set)]
        "WITNESS_WRITE_BACK" => write_back: bool,
    }
}

section! {
    /// `[siem]`: the SIEM destination.
    SiemConfig, SiemFile {
        /// SIEM collector that receives every log row as a CEF line in an RFC
        /// 5424 syslog message: relp://host:port (acknowledged: the slot moves
        /// only past what the collector answered 200 OK for), tcp://host:port
        /// (RFC 6587 octet counting) or tls://host:port (RFC 5425); both of the
        /// latter count a message delivered once written to the socket. Empty:
        /// no SIEM destination.
        #[arg(long = "siem-target", env = "AUTHAUDIT_SIEM_TARGET")]
        "SIEM_TARGET" => target: Option<crate::siem_target::Target>,
        /// How a tls:// collector's certificate is checked: require (encrypted,
        /// unchecked), verify-ca (chains to --siem-tls-rootcert) or verify-full
        /// (and names the host).
        #[arg(long = "siem-tls-mode", env = "AUTHAUDIT_SIEM_TLS_MODE", value_enum, default_value_t = SslMode::VerifyFull, hide_possible_values = true)]
        "SIEM_TLS_MODE" => tls_mode: SslMode,
        /// PEM file of the authorities a tls:// collector's certificate must
        /// chain to.
        #[arg(long = "siem-tls-rootcert", env = "AUTHAUDIT_SIEM_TLS_ROOTCERT")]
        "SIEM_TLS_ROOTCERT" => tls_rootcert: Option<PathBuf>,
        /// HOSTNAME of the syslog messages (default: this machine's name).
        #[arg(long = "siem-hostname", env = "AUTHAUDIT_SIEM_HOSTNAME")]
        "SIEM_HOSTNAME" => hostname: Option<String>,
        /// Longest wait for the collector to connect, take a write or answer
        /// (ms); then the connection is dropped and the batch retried.
        #[arg(long = "siem-timeout-ms", env = "AUTHAUDIT_SIEM_TIMEOUT_MS", default_value_t = 10_000)]
        "SIEM_TIMEOUT_MS" => timeout_ms: u64,
    }
}

section! {
    /// `[detections]`: campaign detections over the stream.
    DetectionsConfig, DetectionsFile {
        /// Campaign detections over the stream (password spray, credential
        /// stuffing, distributed brute force, success after failures or while
        /// locked, lockout storm): alerts to the `alerts` collection and the SIEM.
        #[arg(long = "detections", env = "AUTHAUDIT_DETECTIONS", default_value_t = true, action = clap::ArgAction::Set)]
        "DETECTIONS" => enabled: bool,
        /// TOML file of detection thresholds: `[default]` and
        /// `[tenant."name"]` tables (docs/sidecar.md, "Campaign detections").
        #[arg(long = "detection-config", env = "AUTHAUDIT_DETECTION_CONFIG")]
        "DETECTION_CONFIG" => config: Option<PathBuf>,
    }
}

/// Every option but `--config`, in its sections.
#[derive(Debug, Clone, Args)]
pub struct Config {
    #[command(flatten)]
    pub general: GeneralConfig,
    #[command(flatten)]
    pub postgres: PostgresConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    #[command(flatten)]
    pub batch: BatchConfig,
    #[command(flatten)]
    pub metrics: MetricsConfig,
    #[command(flatten)]
    pub witness: WitnessConfig,
    #[command(flatten)]
    pub siem: SiemConfig,
    #[command(flatten)]
    pub detections: DetectionsConfig,
}

/// Session settings that make text values parse the same on every
/// connection (the replication stream, the initial copy, `verify`).
pub const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO -c TimeZone=UTC -c bytea_output=hex -c extra_float_digits=3";

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Cli {
    /// Parses flags and environment, then fills what neither set from the
    /// `--config` file.
    pub fn load() -> Result<Cli, ConfigError> {
        let matches = Cli::command().get_matches();
        Cli::from_matches_with_file(&matches)
    }

    pub fn from_matches_with_file(matches: &ArgMatches) -> Result<Cli, ConfigError> {
        let mut cli =
            Cli::from_arg_matches(matches).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(path) = &cli.config_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let from_default = |id: &str| {
                matches!(
                    matches.value_source(id),
                    Some(ValueSource::DefaultValue) | None
                )
            };
            cli.config
                .merge_file(&text, &from_default)
                .map_err(|message| ConfigError::Parse {
                    path: path.clone(),
                    message,
                })?;
        }
        cli.config.validate()?;
        Ok(cli)
    }
}

impl Config {
    /// Takes the values of the file `text` for the options no flag or
    /// environment variable set (`from_default`, by argument id).
    fn merge_file(
        &mut self,
        text: &str,
        from_default: &dyn Fn(&str) -> bool,
    ) -> Result<(), String> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let sections: [(&str, &[(&str, &str)]); 7] = [
            ("postgres", PostgresConfig::KEYS),
            ("mongo", MongoConfig::KEYS),
            ("batch", BatchConfig::KEYS),
            ("metrics", MetricsConfig::KEYS),
            ("witness", WitnessConfig::KEYS),
            ("siem", SiemConfig::KEYS),
            ("detections", DetectionsConfig::KEYS),
        ];
        // A top-level key of releases before 0.9.0 (a table is a section).
        for key in table.iter().filter(|(_, v)| !v.is_table()).map(|(k, _)| k) {
            let moved = sections.iter().find_map(|(section, keys)| {
                keys.iter()
                    .find(|(id, _)| id.eq_ignore_ascii_case(key))
                    .map(|(_, new)| (section, new))
            });
            if let Some((section, new)) = moved {
                return Err(format!("{key} is now [{section}] {new}"));
            }
        }
        // The deserialiser's message on one line: "…, expected usize in `rows`".
        fn one_line(e: toml::de::Error) -> String {
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        }
        fn section<T: Default + serde::de::DeserializeOwned>(
            table: &mut toml::Table,
            name: &str,
        ) -> Result<T, String> {
            match table.remove(name) {
                None => Ok(T::default()),
                Some(toml::Value::Table(t)) => t
                    .try_into()
                    .map_err(|e| format!("[{name}]: {}", one_line(e))),
                Some(_) => Err(format!("{name}: a table ([{name}]) expected")),
            }
        }
        let postgres: PostgresFile = section(&mut table, "postgres")?;
        let mongo: MongoFile = section(&mut table, "mongo")?;
        let batch: BatchFile = section(&mut table, "batch")?;
        let metrics: MetricsFile = section(&mut table, "metrics")?;
        let witness: WitnessFile = section(&mut table, "witness")?;
        let siem: SiemFile = section(&mut table, "siem")?;
        let detections: DetectionsFile = section(&mut table, "detections")?;
        if let Some((name, _)) = table.iter().find(|(_, v)| v.is_table()) {
            return Err(format!(
                "unknown section [{name}] (the sections: {})",
                sections.map(|(s, _)| format!("[{s}]")).join(", ")
            ));
        }
        let general: GeneralFile = table
            .try_into()
            .map_err(|e| format!("top level: {}", one_line(e)))?;
        self.general.merge(general, from_default);
        self.postgres.merge(postgres, from_default);
        self.mongo.merge(mongo, from_default);
        self.batch.merge(batch, from_default);
        self.metrics.merge(metrics, from_default);
        self.witness.merge(witness, from_default);
        self.siem.merge(siem, from_default);
        self.detections.merge(detections, from_default);
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.postgres.validate()?;
        self.batch.validate()?;
        self.metrics.validate()?;
        if self.mongo.timeout_ms < 100
            || self.metrics.health_timeout_ms < 100
            || self.batch.shutdown_timeout_ms < 100
            || self.general.progress_interval_ms < 100
        {
            return Err(ConfigError::Invalid(
                "store_timeout_ms, health_timeout_ms, shutdown_timeout_ms and progress_interval_ms must be at least 100".into(),
            ));
        }
        self.witness.validate()?;
        self.mongo.validate()?;
        self.siem.validate()
    }
}

impl GeneralConfig {
    /// The interval of the progress lines.
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }
}

impl PostgresConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !ident(&self.slot) {
            return Err(ConfigError::Invalid(format!(
                "slot {:?}: lowercase letters, digits and _ only",
                self.slot
            )));
        }
        if !ident(&self.publication) {
            return Err(ConfigError::Invalid(format!(
                "publication {:?}: lowercase letters, digits and _ only",
                self.publication
            )));
        }
        if self.application_name.is_empty()
            || self.application_name.len() > 63
            || !self
                .application_name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'\'' && b != b'\\')
        {
            return Err(ConfigError::Invalid(format!(
                "application_name {:?}: 1 to 63 printable ASCII characters, no quotes, backslashes or spaces",
                self.application_name
            )));
        }
        if self.sslmode.verifies() && self.sslrootcert.is_none() {
            return Err(ConfigError::Invalid(
                "pg_sslmode verify-ca and verify-full need pg_sslrootcert".into(),
            ));
        }
        Ok(())
    }

    /// Whether `--pg-host` names a Unix socket directory (libpq's rule: it
    /// starts with `/`).
    pub fn socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// The server, as messages name it: `host:port`, or the socket path.
    pub fn server(&self) -> String {
        if self.socket() {
            format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The password, for the one place a connection is made with it.
    pub fn expose_password(&self) -> &str {
        self.password.expose_secret()
    }

    /// A libpq-style connection string for the control connection. Its
    /// own commits (the publication, the write-back, a restoration) wait
    /// for the local flush only: with synchronous mirroring they would
    /// otherwise wait for this sidecar's own walsender.
    pub fn conninfo(&self) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        format!(
            "host={} port={} user={} password={} dbname={} application_name={} options={} sslmode={}",
            q(&self.host),
            self.port,
            q(&self.user),
            q(self.expose_password()),
            q(&self.database),
            q(&self.application_name),
            q(&format!("{SESSION_OPTIONS} -c synchronous_commit=local")),
            // The connector checks the certificate for the verify modes; a
            // Unix socket is never encrypted (libpq ignores sslmode there).
            match self.sslmode {
                _ if self.socket() => "disable",
                SslMode::Disable => "disable",
                SslMode::Prefer => "prefer",
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
            }
        )
    }
}

impl MongoConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.write_concern != "majority" && self.write_concern.parse::<u32>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "write_concern {:?}: \"majority\" or a number",
                self.write_concern
            )));
        }
        Ok(())
    }

    /// The connection string, for the one place the store is connected.
    pub fn expose_uri(&self) -> &str {
        self.uri.expose_secret()
    }

    /// The longest wait to reach the store or for it to answer a ping.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl BatchConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.rows == 0 || self.bytes < 1024 {
            return Err(ConfigError::Invalid(
                "batch_rows must be positive and batch_bytes at least 1024".into(),
            ));
        }
        Ok(())
    }
}

impl MetricsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 || self.max_header_bytes < 256 || self.header_timeout_ms < 100
        {
            return Err(ConfigError::Invalid(
                "metrics_max_connections must be positive, metrics_max_header_bytes at least 256 and metrics_header_timeout_ms at least 100".into(),
            ));
        }
        Ok(())
    }
}

impl WitnessConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.every == 0 || self.origin.is_empty() || self.origin.contains('\n') {
            return Err(ConfigError::Invalid(
                "witness_every must be positive and witness_origin one non-empty line".into(),
            ));
        }
        Ok(())
    }
}

impl SiemConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = self
            .target
            .as_ref()
            .filter(|t| t.transport == crate::siem_target::Transport::Tls)
        {
            match self.tls_mode {
                SslMode::Disable | SslMode::Prefer => {
                    return Err(ConfigError::Invalid(format!(
                        "siem_tls_mode for {t}: require, verify-ca or verify-full"
                    )))
                }
                m if m.verifies() && self.tls_rootcert.is_none() => {
                    return Err(ConfigError::Invalid(format!(
                        "siem_tls_mode verify-ca and verify-full need siem_tls_rootcert (for {t})"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `text` in a directory of this test's own.
    fn file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sidecar-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sidecar.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(args: &[&str]) -> Result<Cli, ConfigError> {
        let args = std::iter::once("authaudit-sidecar").chain(args.iter().copied());
        Cli::from_matches_with_file(&Cli::command().get_matches_from(args))
    }

    fn load_file(path: &std::path::Path) -> Result<Cli, ConfigError> {
        load(&["--config", path.to_str().unwrap()])
    }

    #[test]
    fn the_configuration_prints_no_secret() {
        let path = file(
            "secrets",
            "[siem]\ntarget = \"tls://siem.example:6514\"\ntls_rootcert = \"/etc/ca.pem\"\n\
             hostname = \"mirror1\"\n[witness]\nkey_file = \"/etc/w.key\"\nlog = \"/var/w.log\"\n\
             [detections]\nconfig = \"/etc/d.toml\"\n",
        );
        let cli = load(&[
            "--config",
            path.to_str().unwrap(),
            "--pg-password",
            "hunter2-from-flag",
            "--mongodb-uri",
            "mongodb://mirror:s3cret-in-uri@db.example:27017/",
            "--pg-sslmode",
            "verify-full",
            "--pg-sslrootcert",
            "/etc/pg-ca.pem",
            "--state-file",
            "/var/state.json",
        ])
        .unwrap();
        let c = &cli.config;
        assert!(c.siem.target.is_some() && c.witness.key_file.is_some());
        assert!(c.detections.config.is_some() && c.general.state_file.is_some());
        let printed = format!("{cli:?} {c:#?} {:?} {:?}", c.postgres, c.mongo);
        assert!(
            !printed.contains("hunter2") && !printed.contains("s3cret"),
            "{printed}"
        );
        assert!(printed.contains("password: SecretBox<str>([REDACTED])"));
        assert!(printed.contains("uri: SecretBox<str>([REDACTED])"));
        assert_eq!(c.postgres.expose_password(), "hunter2-from-flag");
        assert!(c.mongo.expose_uri().contains("s3cret-in-uri"));
        assert!(c
            .postgres
            .conninfo()
            .contains("password='hunter2-from-flag'"));
    }

    #[test]
    fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
        let path = file(
            "precedence",
            "log = \"debug\"\n[postgres]\nslot = \"from_file\"\nport = 6543\n\
             [batch]\nrows = 77\n[metrics]\nper_tenant = true\n",
        );
        // Environment variables of this test's own (another test may parse
        // the real ones at the same time).
        std::env::set_var("AUTHAUDIT_TEST_PRECEDENCE_PORT", "6000");
        std::env::set_var("AUTHAUDIT_TEST_PRECEDENCE_ROWS", "88");
        let command = Cli::command()
            .mut_arg("PG_PORT", |a| a.env("AUTHAUDIT_TEST_PRECEDENCE_PORT"))
            .mut_arg("BATCH_ROWS", |a| a.env("AUTHAUDIT_TEST_PRECEDENCE_ROWS"));
        let matches = command.get_matches_from([
            "authaudit-sidecar",
            "--config",
            path.to_str().unwrap(),
            "--pg-port",
            "7000",
            "verify",
        ]);
        let cli = Cli::from_matches_with_file(&matches).unwrap();
        let c = &cli.config;
        assert_eq!(
            c.postgres.port, 7000,
            "the flag beats the environment and the file"
        );
        assert_eq!(c.batch.rows, 88, "the environment beats the file");
        assert_eq!(c.postgres.slot, "from_file", "the file beats the default");
        assert_eq!(c.general.log, "debug");
        assert!(c.metrics.per_tenant);
        assert_eq!(c.postgres.publication, "authaudit_mirror", "the default");
        assert_eq!(c.batch.bytes, 8 << 20);
        assert!(matches!(
            cli.command,
            Some(Command::Verify {
                rewrite_earlier_numbers: false
            })
        ));
        // The file's values are checked as the flags' are.
        let path = file("invalid", "[postgres]\nslot = \"Bad-Slot\"\n");
        assert!(matches!(load_file(&path), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn unknown_keys_and_sections_are_refused_naming_them_and_the_file() {
        for (text, named) in [
            (
                "[postgres]\nhots = \"db\"\n",
                "[postgres]: unknown field `hots`",
            ),
            ("colour = 1\n", "top level: unknown field `colour`"),
            ("[colour]\nred = 1\n", "unknown section [colour]"),
            ("[batch]\nrows = \"many\"\n", "[batch]: invalid type"),
            ("postgres = 1\n", "postgres: a table ([postgres]) expected"),
        ] {
            let path = file("unknown", text);
            let e = load_file(&path).unwrap_err();
            assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
            let message = e.to_string();
            assert!(message.contains(named), "{text}: {message}");
            assert!(
                message.starts_with(&path.display().to_string()),
                "{message}"
            );
        }
    }

    #[test]
    fn the_flat_keys_of_earlier_releases_name_their_new_place() {
        for (text, moved) in [
            ("pg_host = \"db\"\n", "pg_host is now [postgres] host"),
            (
                "mongodb_uri = \"mongodb://m/\"\n",
                "mongodb_uri is now [mongo] uri",
            ),
            ("batch_rows = 10\n", "batch_rows is now [batch] rows"),
            (
                "tenant_metrics = true\n",
                "tenant_metrics is now [metrics] per_tenant",
            ),
            (
                "detections = false\n",
                "detections is now [detections] enabled",
            ),
            ("slot = \"s\"\n", "slot is now [postgres] slot"),
        ] {
            let path = file("moved", text);
            let message = load_file(&path).unwrap_err().to_string();
            assert!(message.ends_with(moved), "{text}: {message}");
        }
        // The general options stay top-level keys, a section named like an
        // earlier key is the section.
        let path = file(
            "general",
            "state_file = \"/var/state.json\"\nlog_json = true\n[detections]\nenabled = false\n",
        );
        let c = load_file(&path).unwrap().config;
        assert!(c.general.log_json && !c.detections.enabled);
        assert_eq!(c.general.state_file, Some(PathBuf::from("/var/state.json")));
    }

    #[test]
    fn the_sample_and_the_documented_files_parse() {
        let sample = file("sample", include_str!("../../packaging/sidecar.toml"));
        let c = load_file(&sample).unwrap().config;
        assert!(c.postgres.socket());
        let docs = include_str!("../../docs/sidecar.md");
        let example = docs
            .split_once("Example file:\n\n```toml\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .expect("docs/sidecar.md has an example file")
            .0;
        let documented = file("documented", example);
        let c = load_file(&documented).unwrap().config;
        assert_eq!(c.batch.rows, 10_000);
    }

    #[test]
    fn verifying_modes_need_the_root_certificates() {
        let path = file("tls", "[postgres]\nsslmode = \"verify-full\"\n");
        assert!(matches!(
            load_file(&path),
            Err(ConfigError::Invalid(m)) if m.contains("pg_sslrootcert")
        ));
        let path = file(
            "tls",
            "[postgres]\nsslmode = \"Verify-CA\"\nsslrootcert = \"/etc/ca.pem\"\n",
        );
        let cli = load_file(&path).unwrap();
        assert_eq!(cli.config.postgres.sslmode, SslMode::VerifyCa);
        // The control connection insists on TLS; the connector checks the chain.
        assert!(cli.config.postgres.conninfo().ends_with("sslmode=require"));
        let path = file("tls", "[postgres]\nsslmode = \"sometimes\"\n");
        assert!(matches!(load_file(&path), Err(ConfigError::Parse { .. })));
    }
}
