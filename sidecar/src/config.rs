//! Configuration: flags, environment variables, and an optional TOML file
//! (`--config`). A flag beats its environment variable, which beats the
//! file, which beats the default. `authaudit-sidecar --help` lists them all.

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Mirrors pg_authaudit's log, lockout state and checkpoints from logical
/// replication (pgoutput) into MongoDB: every committed row, nothing twice,
/// acknowledged to PostgreSQL only once MongoDB acknowledged it.
#[derive(Debug, Parser)]
#[command(name = "authaudit-sidecar", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub options: Options,
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

/// A value that must never be printed (a password, a connection string
/// that may hold one): `{:?}` shows `<redacted>`; `expose` hands it to the
/// one place that uses it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Every option; each also reads an environment variable and a key of the
/// `--config` file (the long name without dashes, `_` for `-`).
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// TOML file with any of these options (keys like `pg_host`, `batch_rows`).
    #[arg(long, env = "AUTHAUDIT_SIDECAR_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// PostgreSQL host (or Unix socket directory).
    #[arg(long, env = "PGHOST", default_value = "127.0.0.1", global = true)]
    pub pg_host: String,
    /// PostgreSQL port.
    #[arg(long, env = "PGPORT", default_value_t = 5432, global = true)]
    pub pg_port: u16,
    /// PostgreSQL role: needs REPLICATION and membership in authaudit_auditor
    /// (the initial copy and `verify` read every tenant).
    #[arg(long, env = "PGUSER", default_value = "postgres", global = true)]
    pub pg_user: String,
    /// PostgreSQL password (prefer the environment variable to the flag).
    #[arg(
        long,
        env = "PGPASSWORD",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    pub pg_password: Secret,
    /// Database with the pg_authaudit extension.
    #[arg(long, env = "PGDATABASE", default_value = "postgres", global = true)]
    pub pg_database: String,
    /// TLS to PostgreSQL, as libpq's sslmode: disable, prefer (TLS when the
    /// server offers it, certificate unchecked), require (TLS, unchecked),
    /// verify-ca (certificate chains to --pg-sslrootcert), verify-full (and
    /// names the host).
    #[arg(long, env = "PGSSLMODE", value_enum, default_value_t = SslMode::Prefer, global = true)]
    pub pg_sslmode: SslMode,
    /// PEM file of the certificate authorities PostgreSQL's certificate must
    /// chain to (needed by verify-ca and verify-full).
    #[arg(long, env = "PGSSLROOTCERT", global = true)]
    pub pg_sslrootcert: Option<PathBuf>,
    /// application_name of every PostgreSQL connection of the sidecar: the
    /// name `synchronous_standby_names` uses for its walsender.
    #[arg(
        long,
        env = "AUTHAUDIT_APPLICATION_NAME",
        default_value = "authaudit-sidecar",
        global = true
    )]
    pub application_name: String,
    /// Synchronous mirroring: each commit's position is reported to
    /// PostgreSQL as soon as the store acknowledged it, not per batch timer,
    /// so that a synchronous standby setting can make commits wait for it.
    #[arg(
        long,
        env = "AUTHAUDIT_SYNCHRONOUS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub synchronous: bool,
    /// Local file of what the sidecar acknowledged (the store's identity
    /// and each tenant's acknowledged head): a store that comes back empty,
    /// replaced or short of rows is detected against it. Empty: none.
    #[arg(long, env = "AUTHAUDIT_STATE_FILE", global = true)]
    pub state_file: Option<PathBuf>,
    /// Longest wait for the document store to be reached (server selection
    /// and connect) or to answer a ping (ms); then the attempt counts as
    /// failed and is retried.
    #[arg(
        long,
        env = "AUTHAUDIT_STORE_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub store_timeout_ms: u64,
    /// A destination that failed, or has not answered a delivery for this
    /// long (ms), turns /health degraded.
    #[arg(
        long,
        env = "AUTHAUDIT_HEALTH_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub health_timeout_ms: u64,
    /// Longest a SIGTERM waits for in-flight deliveries (ms); what is not
    /// delivered by then stays unacknowledged and is replayed at the next
    /// start.
    #[arg(
        long,
        env = "AUTHAUDIT_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub shutdown_timeout_ms: u64,
    /// Interval of the progress lines of the initial copy and `verify` (ms).
    #[arg(
        long,
        env = "AUTHAUDIT_PROGRESS_INTERVAL_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub progress_interval_ms: u64,
    /// Logical replication slot (created with pgoutput if missing).
    #[arg(
        long,
        env = "AUTHAUDIT_SLOT",
        default_value = "authaudit_mirror",
        global = true
    )]
    pub slot: String,
    /// Publication to stream (created at start through
    /// authaudit.ensure_mirror_publication when missing).
    #[arg(
        long,
        env = "AUTHAUDIT_PUBLICATION",
        default_value = "authaudit_mirror",
        global = true
    )]
    pub publication: String,

    /// MongoDB connection string.
    #[arg(
        long,
        env = "AUTHAUDIT_MONGODB_URI",
        default_value = "mongodb://127.0.0.1:27017/",
        global = true
    )]
    pub mongodb_uri: Secret,
    /// MongoDB database for the mirrored collections.
    #[arg(
        long,
        env = "AUTHAUDIT_MONGODB_DATABASE",
        default_value = "authaudit",
        global = true
    )]
    pub mongodb_database: String,
    /// Write concern the mirror waits for before acknowledging a position:
    /// "majority" or a number of nodes.
    #[arg(
        long,
        env = "AUTHAUDIT_WRITE_CONCERN",
        default_value = "majority",
        global = true
    )]
    pub write_concern: String,

    /// Largest batch, in rows, written to MongoDB at once.
    #[arg(
        long,
        env = "AUTHAUDIT_BATCH_ROWS",
        default_value_t = 5000,
        global = true
    )]
    pub batch_rows: usize,
    /// Largest batch, in bytes of decoded changes.
    #[arg(long, env = "AUTHAUDIT_BATCH_BYTES", default_value_t = 8 << 20, global = true)]
    pub batch_bytes: usize,
    /// Longest a committed change waits for its batch to fill (milliseconds).
    #[arg(
        long,
        env = "AUTHAUDIT_BATCH_WAIT_MS",
        default_value_t = 20,
        global = true
    )]
    pub batch_wait_ms: u64,
    /// Longest back-off between retries of a failed write or connection (ms).
    #[arg(
        long,
        env = "AUTHAUDIT_MAX_BACKOFF_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub max_backoff_ms: u64,
    /// Interval of status updates (and idle heartbeats) to PostgreSQL (ms).
    #[arg(
        long,
        env = "AUTHAUDIT_STATUS_INTERVAL_MS",
        default_value_t = 1000,
        global = true
    )]
    pub status_interval_ms: u64,

    /// Address of the Prometheus metrics (/metrics) and health (/health)
    /// endpoint; empty to disable.
    #[arg(
        long,
        env = "AUTHAUDIT_METRICS_LISTEN",
        default_value = "127.0.0.1:9187",
        global = true
    )]
    pub metrics_listen: String,
    /// Most connections the metrics endpoint holds at once; one more is
    /// closed as soon as it is accepted.
    #[arg(
        long,
        env = "AUTHAUDIT_METRICS_MAX_CONNECTIONS",
        default_value_t = 64,
        global = true
    )]
    pub metrics_max_connections: usize,
    /// Longest request head (request line and headers, bytes) the metrics
    /// endpoint reads; a longer one is answered 431 and closed.
    #[arg(
        long,
        env = "AUTHAUDIT_METRICS_MAX_HEADER_BYTES",
        default_value_t = 8192,
        global = true
    )]
    pub metrics_max_header_bytes: usize,
    /// Longest wait (ms) for a complete request head, from the connection's
    /// accept or its last response; then the connection is closed.
    #[arg(
        long,
        env = "AUTHAUDIT_METRICS_HEADER_TIMEOUT_MS",
        default_value_t = 5000,
        global = true
    )]
    pub metrics_header_timeout_ms: u64,
    /// Per-tenant series on /metrics (events and failures streamed, by
    /// tenant): one series per tenant, so off by default.
    #[arg(
        long,
        env = "AUTHAUDIT_TENANT_METRICS",
        default_value_t = false,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub tenant_metrics: bool,
    /// Log filter (tracing's EnvFilter syntax, e.g. "info,sidecar=debug").
    #[arg(long, env = "AUTHAUDIT_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "AUTHAUDIT_LOG_JSON", global = true)]
    pub log_json: bool,

    /// The witness's signer key file (`witness-keygen`); empty: no signed
    /// checkpoints. Never stored in PostgreSQL.
    #[arg(long, env = "AUTHAUDIT_WITNESS_KEY_FILE", global = true)]
    pub witness_key_file: Option<PathBuf>,
    /// Origin line prefix of the signed checkpoints (`<origin>/<tenant>`).
    #[arg(
        long,
        env = "AUTHAUDIT_WITNESS_ORIGIN",
        default_value = "pg_authaudit",
        global = true
    )]
    pub witness_origin: String,
    /// A tenant's checkpoint is signed once this many of its rows are
    /// mirrored since its last one...
    #[arg(
        long,
        env = "AUTHAUDIT_WITNESS_EVERY",
        default_value_t = 1000,
        global = true
    )]
    pub witness_every: u64,
    /// ...or this long (ms) after its last one, if it has new rows.
    #[arg(
        long,
        env = "AUTHAUDIT_WITNESS_INTERVAL_MS",
        default_value_t = 60_000,
        global = true
    )]
    pub witness_interval_ms: u64,
    /// Append-only file the signed checkpoints are also written to (each
    /// flushed to disk before its position is acknowledged); empty: none.
    #[arg(long, env = "AUTHAUDIT_WITNESS_LOG", global = true)]
    pub witness_log: Option<PathBuf>,
    /// Writes each signed checkpoint back to PostgreSQL
    /// (`authaudit.record_witness_checkpoint`) for analysts, after the
    /// store holds it; at start, the ones PostgreSQL lacks.
    #[arg(
        long,
        env = "AUTHAUDIT_WITNESS_WRITE_BACK",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub witness_write_back: bool,

    /// SIEM collector that receives every log row as a CEF line in an RFC
    /// 5424 syslog message: relp://host:port (acknowledged: the slot moves
    /// only past what the collector answered 200 OK for), tcp://host:port
    /// (RFC 6587 octet counting) or tls://host:port (RFC 5425); both of the
    /// latter count a message delivered once written to the socket. Empty:
    /// no SIEM destination.
    #[arg(long, env = "AUTHAUDIT_SIEM_TARGET", global = true)]
    pub siem_target: Option<crate::siem_target::Target>,
    /// How a tls:// collector's certificate is checked: require (encrypted,
    /// unchecked), verify-ca (chains to --siem-tls-rootcert) or verify-full
    /// (and names the host).
    #[arg(
        long,
        env = "AUTHAUDIT_SIEM_TLS_MODE",
        value_enum,
        default_value_t = SslMode::VerifyFull,
        hide_possible_values = true,
        global = true
    )]
    pub siem_tls_mode: SslMode,
    /// PEM file of the authorities a tls:// collector's certificate must
    /// chain to.
    #[arg(long, env = "AUTHAUDIT_SIEM_TLS_ROOTCERT", global = true)]
    pub siem_tls_rootcert: Option<PathBuf>,
    /// HOSTNAME of the syslog messages (default: this machine's name).
    #[arg(long, env = "AUTHAUDIT_SIEM_HOSTNAME", global = true)]
    pub siem_hostname: Option<String>,
    /// Longest wait for the collector to connect, take a write or answer
    /// (ms); then the connection is dropped and the batch retried.
    #[arg(
        long,
        env = "AUTHAUDIT_SIEM_TIMEOUT_MS",
        default_value_t = 10_000,
        global = true
    )]
    pub siem_timeout_ms: u64,

    /// Campaign detections over the stream (password spray, credential
    /// stuffing, distributed brute force, success after failures or while
    /// locked, lockout storm): alerts to the `alerts` collection and the SIEM.
    #[arg(
        long,
        env = "AUTHAUDIT_DETECTIONS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub detections: bool,
    /// TOML file of detection thresholds: `[default]` and
    /// `[tenant."name"]` tables (docs/sidecar.md, "Campaign detections").
    #[arg(long, env = "AUTHAUDIT_DETECTION_CONFIG", global = true)]
    pub detection_config: Option<PathBuf>,
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
        if let Some(path) = cli.options.config.clone() {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let table: BTreeMap<String, toml::Value> =
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            for (key, value) in table {
                let id = key.replace('-', "_");
                if id == "config"
                    || !Cli::command()
                        .get_arguments()
                        .any(|a| a.get_id() == id.as_str())
                {
                    return Err(ConfigError::Parse {
                        path: path.clone(),
                        message: format!("unknown option {key}"),
                    });
                }
                let from_default = matches!(
                    matches.value_source(&id),
                    Some(ValueSource::DefaultValue) | None
                );
                if !from_default {
                    continue;
                }
                let text = match &value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                cli.options
                    .set(&id, &text)
                    .map_err(|m| ConfigError::Parse {
                        path: path.clone(),
                        message: format!("{key}: {m}"),
                    })?;
            }
        }
        cli.options.validate()?;
        Ok(cli)
    }
}

impl Options {
    fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
            v.parse().map_err(|_| format!("not a number: {v}"))
        }
        match key {
            "pg_host" => self.pg_host = v.into(),
            "pg_port" => self.pg_port = num(v)?,
            "pg_user" => self.pg_user = v.into(),
            "pg_password" => self.pg_password = v.into(),
            "pg_database" => self.pg_database = v.into(),
            "pg_sslmode" => self.pg_sslmode = SslMode::from_str(v, true)?,
            "pg_sslrootcert" => self.pg_sslrootcert = Some(v.into()),
            "application_name" => self.application_name = v.into(),
            "synchronous" => self.synchronous = num::<bool>(v)?,
            "state_file" => self.state_file = Some(v.into()),
            "store_timeout_ms" => self.store_timeout_ms = num(v)?,
            "health_timeout_ms" => self.health_timeout_ms = num(v)?,
            "shutdown_timeout_ms" => self.shutdown_timeout_ms = num(v)?,
            "progress_interval_ms" => self.progress_interval_ms = num(v)?,
            "slot" => self.slot = v.into(),
            "publication" => self.publication = v.into(),
            "mongodb_uri" => self.mongodb_uri = v.into(),
            "mongodb_database" => self.mongodb_database = v.into(),
            "write_concern" => self.write_concern = v.into(),
            "batch_rows" => self.batch_rows = num(v)?,
            "batch_bytes" => self.batch_bytes = num(v)?,
            "batch_wait_ms" => self.batch_wait_ms = num(v)?,
            "max_backoff_ms" => self.max_backoff_ms = num(v)?,
            "status_interval_ms" => self.status_interval_ms = num(v)?,
            "metrics_listen" => self.metrics_listen = v.into(),
            "metrics_max_connections" => self.metrics_max_connections = num(v)?,
            "metrics_max_header_bytes" => self.metrics_max_header_bytes = num(v)?,
            "metrics_header_timeout_ms" => self.metrics_header_timeout_ms = num(v)?,
            "tenant_metrics" => self.tenant_metrics = num::<bool>(v)?,
            "log" => self.log = v.into(),
            "log_json" => self.log_json = num::<bool>(v)?,
            "witness_key_file" => self.witness_key_file = Some(v.into()),
            "witness_origin" => self.witness_origin = v.into(),
            "witness_every" => self.witness_every = num(v)?,
            "witness_interval_ms" => self.witness_interval_ms = num(v)?,
            "witness_log" => self.witness_log = Some(v.into()),
            "witness_write_back" => self.witness_write_back = num::<bool>(v)?,
            "siem_target" => self.siem_target = Some(v.parse()?),
            "siem_tls_mode" => self.siem_tls_mode = SslMode::from_str(v, true)?,
            "siem_tls_rootcert" => self.siem_tls_rootcert = Some(v.into()),
            "siem_hostname" => self.siem_hostname = Some(v.into()),
            "siem_timeout_ms" => self.siem_timeout_ms = num(v)?,
            "detections" => self.detections = num::<bool>(v)?,
            "detection_config" => self.detection_config = Some(v.into()),
            other => return Err(format!("unknown option {other}")),
        }
        Ok(())
    }

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
        if self.batch_rows == 0 || self.batch_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "batch_rows must be positive and batch_bytes at least 1024".into(),
            ));
        }
        if self.metrics_max_connections == 0
            || self.metrics_max_header_bytes < 256
            || self.metrics_header_timeout_ms < 100
        {
            return Err(ConfigError::Invalid(
                "metrics_max_connections must be positive, metrics_max_header_bytes at least 256 and metrics_header_timeout_ms at least 100".into(),
            ));
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
        if self.store_timeout_ms < 100
            || self.health_timeout_ms < 100
            || self.shutdown_timeout_ms < 100
            || self.progress_interval_ms < 100
        {
            return Err(ConfigError::Invalid(
                "store_timeout_ms, health_timeout_ms, shutdown_timeout_ms and progress_interval_ms must be at least 100".into(),
            ));
        }
        if self.pg_sslmode.verifies() && self.pg_sslrootcert.is_none() {
            return Err(ConfigError::Invalid(
                "pg_sslmode verify-ca and verify-full need pg_sslrootcert".into(),
            ));
        }
        if self.witness_every == 0
            || self.witness_origin.is_empty()
            || self.witness_origin.contains('\n')
        {
            return Err(ConfigError::Invalid(
                "witness_every must be positive and witness_origin one non-empty line".into(),
            ));
        }
        if self.write_concern != "majority" && self.write_concern.parse::<u32>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "write_concern {:?}: \"majority\" or a number",
                self.write_concern
            )));
        }
        if let Some(t) = self
            .siem_target
            .as_ref()
            .filter(|t| t.transport == crate::siem_target::Transport::Tls)
        {
            match self.siem_tls_mode {
                SslMode::Disable | SslMode::Prefer => {
                    return Err(ConfigError::Invalid(format!(
                        "siem_tls_mode for {t}: require, verify-ca or verify-full"
                    )))
                }
                m if m.verifies() && self.siem_tls_rootcert.is_none() => {
                    return Err(ConfigError::Invalid(format!(
                        "siem_tls_mode verify-ca and verify-full need siem_tls_rootcert (for {t})"
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The metrics endpoint's limits.
    pub fn http_limits(&self) -> crate::http::Limits {
        crate::http::Limits {
            max_connections: self.metrics_max_connections,
            max_header_bytes: self.metrics_max_header_bytes,
            header_timeout: std::time::Duration::from_millis(self.metrics_header_timeout_ms),
        }
    }

    /// Whether `--pg-host` names a Unix socket directory (libpq's rule: it
    /// starts with `/`).
    pub fn pg_socket(&self) -> bool {
        self.pg_host.starts_with('/')
    }

    /// The server, as messages name it: `host:port`, or the socket path.
    pub fn pg_server(&self) -> String {
        if self.pg_socket() {
            format!(
                "{}/.s.PGSQL.{}",
                self.pg_host.trim_end_matches('/'),
                self.pg_port
            )
        } else {
            format!("{}:{}", self.pg_host, self.pg_port)
        }
    }

    /// A libpq-style connection string for the control connection. Its
    /// own commits (the publication, the write-back, a restoration) wait
    /// for the local flush only: with synchronous mirroring they would
    /// otherwise wait for this sidecar's own walsender.
    pub fn pg_conninfo(&self) -> String {
        let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        format!(
            "host={} port={} user={} password={} dbname={} application_name={} options={} sslmode={}",
            q(&self.pg_host),
            self.pg_port,
            q(&self.pg_user),
            q(self.pg_password.expose()),
            q(&self.pg_database),
            q(&self.application_name),
            q(&format!("{SESSION_OPTIONS} -c synchronous_commit=local")),
            // The connector checks the certificate for the verify modes; a
            // Unix socket is never encrypted (libpq ignores sslmode there).
            match self.pg_sslmode {
                _ if self.pg_socket() => "disable",
                SslMode::Disable => "disable",
                SslMode::Prefer => "prefer",
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_prints_no_secret() {
        let matches = Cli::command().get_matches_from([
            "authaudit-sidecar",
            "--pg-password",
            "hunter2-from-flag",
            "--mongodb-uri",
            "mongodb://mirror:s3cret-in-uri@db.example:27017/",
        ]);
        let cli = Cli::from_matches_with_file(&matches).unwrap();
        let printed = format!("{cli:?} {:#?}", cli.options);
        assert!(
            !printed.contains("hunter2") && !printed.contains("s3cret"),
            "{printed}"
        );
        assert!(printed.contains("pg_password: <redacted>"));
        assert_eq!(cli.options.pg_password.expose(), "hunter2-from-flag");
        assert!(cli
            .options
            .pg_conninfo()
            .contains("password='hunter2-from-flag'"));
    }

    #[test]
    fn the_file_fills_what_flags_and_environment_left_unset() {
        let dir = std::env::temp_dir().join(format!("sidecar-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sidecar.toml");
        std::fs::write(
            &path,
            "slot = \"from_file\"\nbatch_rows = 77\npg_port = 6543\n",
        )
        .unwrap();
        let matches = Cli::command().get_matches_from([
            "authaudit-sidecar",
            "--config",
            path.to_str().unwrap(),
            "--pg-port",
            "7000",
            "verify",
        ]);
        let cli = Cli::from_matches_with_file(&matches).unwrap();
        assert_eq!(cli.options.slot, "from_file");
        assert_eq!(cli.options.batch_rows, 77);
        assert_eq!(cli.options.pg_port, 7000, "the flag wins over the file");
        assert!(matches!(
            cli.command,
            Some(Command::Verify {
                rewrite_earlier_numbers: false
            })
        ));
        std::fs::write(&path, "slot = \"Bad-Slot\"\n").unwrap();
        let matches = Cli::command().get_matches_from([
            "authaudit-sidecar",
            "--config",
            path.to_str().unwrap(),
        ]);
        assert!(matches!(
            Cli::from_matches_with_file(&matches),
            Err(ConfigError::Invalid(_))
        ));
        std::fs::write(&path, "colour = 1\n").unwrap();
        assert!(matches!(
            Cli::from_matches_with_file(&matches),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn verifying_modes_need_the_root_certificates() {
        let dir = std::env::temp_dir().join(format!("sidecar-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sidecar.toml");
        std::fs::write(&path, "pg_sslmode = \"verify-full\"\n").unwrap();
        let args = ["authaudit-sidecar", "--config", path.to_str().unwrap()];
        let matches = Cli::command().get_matches_from(args);
        assert!(matches!(
            Cli::from_matches_with_file(&matches),
            Err(ConfigError::Invalid(m)) if m.contains("pg_sslrootcert")
        ));
        std::fs::write(
            &path,
            "pg_sslmode = \"verify-ca\"\npg_sslrootcert = \"/etc/ca.pem\"\n",
        )
        .unwrap();
        let cli = Cli::from_matches_with_file(&Cli::command().get_matches_from(args)).unwrap();
        assert_eq!(cli.options.pg_sslmode, SslMode::VerifyCa);
        // The control connection insists on TLS; the connector checks the chain.
        assert!(cli.options.pg_conninfo().ends_with("sslmode=require"));
        std::fs::write(&path, "pg_sslmode = \"sometimes\"\n").unwrap();
        assert!(matches!(
            Cli::from_matches_with_file(&Cli::command().get_matches_from(args)),
            Err(ConfigError::Parse { .. })
        ));
    }
}
