//! What must hold before the mirror touches anything, and the faults that
//! retrying cannot mend.
//!
//! Before a session creates a replication slot it checks, on its control
//! connection, that the database has the extension, that the role may
//! stream (`REPLICATION`) and read every tenant (`authaudit_auditor`, or a
//! superuser, or `BYPASSRLS`), that `wal_level` is `logical`, and that the
//! publication exists (creating it when the role may). A slot is never
//! created where the mirror cannot run: it would hold WAL for nobody.
//! `verify`, `witness-check` and the operator commands check the extension
//! and the tenants the role sees the same way.
//!
//! Each fault is a [`Misconfigured`]: its message names the cause and what
//! to do, and the process exits with code 4 instead of retrying (only
//! transient faults are retried: docs/sidecar.md, "Exit codes").

use crate::config::PostgresConfig;

/// A configuration PostgreSQL or the store refuses: retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misconfigured {
    #[error("database {database:?} does not exist on {server}: set --pg-database (PGDATABASE) to the database where pg_authaudit is installed")]
    NoDatabase { database: String, server: String },
    #[error("PostgreSQL at {server} refused the login of role {role:?}: {message}; check --pg-user and --pg-password (PGUSER, PGPASSWORD) and pg_hba.conf (a line for the database and one for `replication`)")]
    Login {
        role: String,
        server: String,
        message: String,
    },
    #[error("the extension pg_authaudit is not installed in database {database:?}: run CREATE EXTENSION pg_authaudit there, or set --pg-database (PGDATABASE) to the database that has it (no replication slot was created)")]
    NoExtension { database: String },
    #[error("role {role:?} may not stream changes (it has neither REPLICATION nor SUPERUSER): as a superuser run ALTER ROLE {role} REPLICATION (no replication slot was created)")]
    NoReplication { role: String },
    #[error("role {role:?} cannot read every tenant (row-level security shows it only its own): as a superuser run GRANT authaudit_auditor TO {role}, or use a role that has it")]
    NotAuditor { role: String },
    #[error("wal_level is {level:?} but logical replication needs wal_level = logical: set it in postgresql.conf and restart PostgreSQL (no replication slot was created)")]
    WalLevel { level: String },
    #[error("publication {publication:?} does not exist in database {database:?} and could not be created ({why}): as a superuser run SELECT authaudit.ensure_mirror_publication('{publication}') (no replication slot was created)")]
    NoPublication {
        publication: String,
        database: String,
        why: String,
    },
    #[error("replication slot {slot:?} exists but is not this mirror's ({why}): choose another --slot (AUTHAUDIT_SLOT), or drop it with SELECT pg_drop_replication_slot('{slot}') if nothing uses it")]
    ForeignSlot { slot: String, why: String },
    #[error("PostgreSQL refused the replication connection of role {role:?}: {message}; pg_hba.conf needs a `replication` line for it, and the role REPLICATION")]
    ReplicationRefused { role: String, message: String },
    #[error("the document store refused the configuration: {message}; check --mongodb-uri (AUTHAUDIT_MONGODB_URI) and its credentials")]
    Store { message: String },
}

impl Misconfigured {
    /// The fault a login refusal with this SQLSTATE is, if it is one
    /// (a wrong database, role or password, or no CONNECT right).
    pub fn of_login(code: &str, message: &str, config: &PostgresConfig) -> Option<Misconfigured> {
        match code {
            "3D000" => Some(Misconfigured::NoDatabase {
                database: config.database.clone(),
                server: config.server(),
            }),
            "28000" | "28P01" | "42501" => Some(Misconfigured::Login {
                role: config.user.clone(),
                server: config.server(),
                message: message.to_owned(),
            }),
            _ => None,
        }
    }

    /// The fault a refusal of the replication connection is, if it is one.
    /// The replication client reports a server error as text ending in
    /// `(SQLSTATE xxxxx)`.
    pub fn of_replication(text: &str, config: &PostgresConfig) -> Option<Misconfigured> {
        let code = sqlstate_of(text)?;
        match code {
            "3D000" => Misconfigured::of_login(code, text, config),
            "28000" | "28P01" | "42501" => Some(Misconfigured::ReplicationRefused {
                role: config.user.clone(),
                message: text.to_owned(),
            }),
            _ => None,
        }
    }
}

/// The SQLSTATE at the end of a server error's text, `… (SQLSTATE 28000)`.
pub fn sqlstate_of(text: &str) -> Option<&str> {
    let at = text.rfind("(SQLSTATE ")?;
    let code = text[at + "(SQLSTATE ".len()..].strip_suffix(')')?;
    (code.len() == 5 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(code)
}

/// What the role and the database are, as the checks need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub database: String,
    pub role: String,
    pub superuser: bool,
    pub replication: bool,
    pub bypass_rls: bool,
    pub auditor: bool,
    pub wal_level: String,
    pub extension: Option<String>,
}

impl Facts {
    /// Reads them on `pg`.
    pub async fn read(pg: &tokio_postgres::Client) -> Result<Facts, tokio_postgres::Error> {
        let r = pg
            .query_one(
                "SELECT current_database()::text, current_user::text, r.rolsuper, r.rolreplication, r.rolbypassrls, \
                        CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authaudit_auditor') \
                             THEN pg_catalog.pg_has_role(current_user, 'authaudit_auditor', 'USAGE') ELSE false END, \
                        pg_catalog.current_setting('wal_level'), \
                        (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_authaudit') \
                   FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
                &[],
            )
            .await?;
        Ok(Facts {
            database: r.get(0),
            role: r.get(1),
            superuser: r.get(2),
            replication: r.get(3),
            bypass_rls: r.get(4),
            auditor: r.get(5),
            wal_level: r.get(6),
            extension: r.get(7),
        })
    }

    /// What a reader of every tenant needs (`verify`, `witness-check`,
    /// the copy): the extension, and a role row-level security shows every
    /// tenant.
    pub fn check_reader(&self) -> Result<(), Misconfigured> {
        if self.extension.is_none() {
            return Err(Misconfigured::NoExtension {
                database: self.database.clone(),
            });
        }
        if !(self.superuser || self.bypass_rls || self.auditor) {
            return Err(Misconfigured::NotAuditor {
                role: self.role.clone(),
            });
        }
        Ok(())
    }

    /// What the mirror needs besides: the right to stream, logical WAL.
    pub fn check_mirror(&self) -> Result<(), Misconfigured> {
        self.check_reader()?;
        if !(self.superuser || self.replication) {
            return Err(Misconfigured::NoReplication {
                role: self.role.clone(),
            });
        }
        if self.wal_level != "logical" {
            return Err(Misconfigured::WalLevel {
                level: self.wal_level.clone(),
            });
        }
        Ok(())
    }
}

/// An existing slot of the configured name, as `pg_replication_slots`
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotFacts {
    pub database: Option<String>,
    pub plugin: Option<String>,
    pub logical: bool,
}

impl SlotFacts {
    /// Whether the slot can be this mirror's, in `database`.
    pub fn check(&self, slot: &str, database: &str) -> Result<(), Misconfigured> {
        let why = if !self.logical {
            Some("it is a physical slot".to_string())
        } else if self.database.as_deref() != Some(database) {
            Some(format!(
                "it belongs to database {:?}",
                self.database.as_deref().unwrap_or("")
            ))
        } else if self.plugin.as_deref() != Some("pgoutput") {
            Some(format!(
                "it decodes with {:?}, not pgoutput",
                self.plugin.as_deref().unwrap_or("")
            ))
        } else {
            None
        };
        match why {
            Some(why) => Err(Misconfigured::ForeignSlot {
                slot: slot.to_owned(),
                why,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn opts() -> PostgresConfig {
        let m = crate::config::Cli::command().get_matches_from([
            "authaudit-sidecar",
            "--pg-user",
            "mirror",
            "--pg-database",
            "auth",
        ]);
        crate::config::Cli::from_arg_matches(&m)
            .unwrap()
            .config
            .postgres
    }

    fn facts() -> Facts {
        Facts {
            database: "auth".into(),
            role: "mirror".into(),
            superuser: false,
            replication: true,
            bypass_rls: false,
            auditor: true,
            wal_level: "logical".into(),
            extension: Some("0.9.0".into()),
        }
    }

    #[test]
    fn each_missing_right_or_piece_is_named_with_its_remedy() {
        assert_eq!(facts().check_mirror(), Ok(()));
        let e = Facts {
            extension: None,
            ..facts()
        }
        .check_mirror()
        .unwrap_err();
        assert!(
            e.to_string().contains("CREATE EXTENSION pg_authaudit"),
            "{e}"
        );
        let e = Facts {
            replication: false,
            ..facts()
        }
        .check_mirror()
        .unwrap_err();
        assert!(
            e.to_string().contains("ALTER ROLE mirror REPLICATION"),
            "{e}"
        );
        assert_eq!(
            Facts {
                replication: false,
                ..facts()
            }
            .check_reader(),
            Ok(()),
            "verify needs no REPLICATION"
        );
        let e = Facts {
            auditor: false,
            ..facts()
        }
        .check_reader()
        .unwrap_err();
        assert!(
            e.to_string().contains("GRANT authaudit_auditor TO mirror"),
            "{e}"
        );
        assert_eq!(
            Facts {
                auditor: false,
                bypass_rls: true,
                ..facts()
            }
            .check_reader(),
            Ok(())
        );
        let e = Facts {
            wal_level: "replica".into(),
            ..facts()
        }
        .check_mirror()
        .unwrap_err();
        assert!(matches!(e, Misconfigured::WalLevel { .. }));
    }

    #[test]
    fn login_refusals_are_configuration_and_the_rest_is_not() {
        let o = opts();
        assert!(matches!(
            Misconfigured::of_login("3D000", "database \"x\" does not exist", &o),
            Some(Misconfigured::NoDatabase { .. })
        ));
        assert!(matches!(
            Misconfigured::of_login("28P01", "password authentication failed", &o),
            Some(Misconfigured::Login { .. })
        ));
        assert_eq!(Misconfigured::of_login("57P03", "starting up", &o), None);
        assert_eq!(Misconfigured::of_login("53300", "too many", &o), None);
        let text = "must be superuser or replication role to start walsender (SQLSTATE 42501)";
        assert_eq!(sqlstate_of(text), Some("42501"));
        assert!(matches!(
            Misconfigured::of_replication(text, &o),
            Some(Misconfigured::ReplicationRefused { .. })
        ));
        assert_eq!(
            Misconfigured::of_replication("terminating connection (SQLSTATE 57P01)", &o),
            None
        );
        assert_eq!(sqlstate_of("no code here"), None);
    }

    #[test]
    fn a_slot_of_another_database_or_plugin_is_not_taken() {
        let ours = SlotFacts {
            database: Some("auth".into()),
            plugin: Some("pgoutput".into()),
            logical: true,
        };
        assert_eq!(ours.check("s", "auth"), Ok(()));
        let e = ours.check("s", "other").unwrap_err();
        assert!(
            e.to_string().contains("belongs to database \"auth\""),
            "{e}"
        );
        let e = SlotFacts {
            plugin: Some("wal2json".into()),
            ..ours.clone()
        }
        .check("s", "auth")
        .unwrap_err();
        assert!(e.to_string().contains("wal2json"), "{e}");
    }
}
