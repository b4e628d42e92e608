//! Who may read and write which rows: the rules behind `authaudit.tenant_scope`.
//!
//! A role's bindings say, per tenant and optionally per organisation, whether
//! it may read and whether it may write. A binding without organisation
//! covers the whole tenant; an organisation binding covers rows of that
//! organisation only, so a row (or an event) without organisation needs a
//! tenant-wide binding. The extension answers every read and write check
//! from these rules, for one role: the one asking (see `docs/security.md`).

use crate::event::{Channel, EventType};

/// One row of `authaudit.tenant_scope` for the role asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub tenant: String,
    /// `None`: the whole tenant.
    pub org: Option<String>,
    pub can_read: bool,
    pub can_write: bool,
}

/// How far a writer's right to write a tenant reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteReach {
    /// Every organisation, events without organisation and every account.
    Tenant,
    /// Only events of this organisation and accounts that belong to it.
    Organisation(String),
}

/// The bindings of one role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    bindings: Vec<Binding>,
    read_tenants: Vec<String>,
}

impl Scope {
    /// The scope made of `bindings` (in any order).
    pub fn new(bindings: Vec<Binding>) -> Scope {
        let mut read_tenants: Vec<String> = bindings
            .iter()
            .filter(|b| b.can_read)
            .map(|b| b.tenant.clone())
            .collect();
        read_tenants.sort();
        read_tenants.dedup();
        Scope {
            bindings,
            read_tenants,
        }
    }

    /// The tenants with at least one read binding, sorted, each once.
    pub fn read_tenants(&self) -> &[String] {
        &self.read_tenants
    }

    /// Whether a row of `tenant` in organisation `org` may be read; `org`
    /// `None` asks for tenant-wide access.
    pub fn may_read(&self, tenant: &str, org: Option<&str>) -> bool {
        self.bindings
            .iter()
            .any(|b| b.can_read && b.tenant == tenant && covers(b.org.as_deref(), org))
    }

    /// Whether the whole of `tenant` may be read (what verifying its chain needs).
    pub fn may_read_tenant(&self, tenant: &str) -> bool {
        self.may_read(tenant, None)
    }

    /// Whether an event of `tenant` in organisation `org` may be written,
    /// and how far the writer reaches there. A tenant-wide binding wins over
    /// organisation bindings.
    pub fn write_reach(&self, tenant: &str, org: Option<&str>) -> Option<WriteReach> {
        let mut reach = None;
        for b in self
            .bindings
            .iter()
            .filter(|b| b.can_write && b.tenant == tenant)
        {
            match b.org.as_deref() {
                None => return Some(WriteReach::Tenant),
                Some(o) if Some(o) == org => reach = Some(WriteReach::Organisation(o.to_owned())),
                Some(_) => {}
            }
        }
        reach
    }

    /// Whether the role has any write binding for `tenant`.
    pub fn writes_tenant(&self, tenant: &str) -> bool {
        self.bindings
            .iter()
            .any(|b| b.can_write && b.tenant == tenant)
    }
}

/// A binding to `bound` (None: tenant-wide) covers a row of organisation `org`.
fn covers(bound: Option<&str>, org: Option<&str>) -> bool {
    bound.is_none() || (bound == org && org.is_some())
}

impl WriteReach {
    /// Whether an account that belongs to `account_org` (None: to no
    /// organisation) may be affected (counted, locked, reset) by this writer.
    pub fn reaches_account(&self, account_org: Option<&str>) -> bool {
        match self {
            WriteReach::Tenant => true,
            WriteReach::Organisation(o) => account_org == Some(o.as_str()),
        }
    }
}

/// Why a writer's event is refused before anything is locked or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    #[error("{0} events are appended by the extension itself, never recorded by a writer")]
    EngineEventType(EventType),
    #[error("channel \"system\" is reserved for events the extension appends")]
    SystemChannel,
    #[error("metadata key \"_authaudit\" is reserved for the extension")]
    ReservedMetadataKey,
}

/// The rules a writer's event must pass besides its binding: engine event
/// types, the `system` channel and the `_authaudit` metadata key belong to
/// the extension.
pub fn check_writer_event(
    event_type: Option<EventType>,
    channel: Option<Channel>,
    has_reserved_key: bool,
) -> Result<(), WriteRefusal> {
    if let Some(t) = event_type.filter(|t| t.is_engine_only()) {
        return Err(WriteRefusal::EngineEventType(t));
    }
    if channel == Some(Channel::SYSTEM) {
        return Err(WriteRefusal::SystemChannel);
    }
    if has_reserved_key {
        return Err(WriteRefusal::ReservedMetadataKey);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(tenant: &str, org: Option<&str>, can_read: bool, can_write: bool) -> Binding {
        Binding {
            tenant: tenant.into(),
            org: org.map(Into::into),
            can_read,
            can_write,
        }
    }

    #[test]
    fn organisation_readers_see_their_organisation_only() {
        let s = Scope::new(vec![b("a", Some("hq"), true, false)]);
        assert!(s.may_read("a", Some("hq")));
        assert!(!s.may_read("a", Some("branch")));
        assert!(
            !s.may_read("a", None),
            "a row without org needs tenant-wide"
        );
        assert!(!s.may_read_tenant("a"));
        assert!(!s.may_read("b", Some("hq")));
        assert_eq!(s.read_tenants(), ["a".to_string()]);
    }

    #[test]
    fn tenant_readers_see_every_row_of_their_tenant() {
        let s = Scope::new(vec![
            b("a", None, true, false),
            b("a", Some("x"), true, false),
        ]);
        assert!(s.may_read("a", None) && s.may_read("a", Some("x")) && s.may_read("a", Some("y")));
        assert_eq!(s.read_tenants().len(), 1);
    }

    #[test]
    fn write_bindings_do_not_read_and_read_bindings_do_not_write() {
        let s = Scope::new(vec![b("a", None, false, true), b("b", None, true, false)]);
        assert!(!s.may_read("a", None));
        assert_eq!(s.write_reach("a", None), Some(WriteReach::Tenant));
        assert_eq!(s.write_reach("b", None), None);
        assert!(s.read_tenants() == ["b".to_string()]);
    }

    #[test]
    fn organisation_writers_write_their_organisation_only() {
        let s = Scope::new(vec![b("a", Some("branch"), false, true)]);
        let reach = s.write_reach("a", Some("branch")).unwrap();
        assert_eq!(reach, WriteReach::Organisation("branch".into()));
        assert_eq!(s.write_reach("a", Some("hq")), None);
        assert_eq!(s.write_reach("a", None), None, "no org needs tenant-wide");
        assert!(reach.reaches_account(Some("branch")));
        assert!(!reach.reaches_account(Some("hq")));
        assert!(!reach.reaches_account(None));
        assert!(WriteReach::Tenant.reaches_account(None));
        assert!(s.writes_tenant("a") && !s.writes_tenant("b"));
    }

    #[test]
    fn a_tenant_wide_write_binding_wins() {
        let s = Scope::new(vec![
            b("a", Some("x"), false, true),
            b("a", None, false, true),
        ]);
        assert_eq!(s.write_reach("a", Some("x")), Some(WriteReach::Tenant));
    }

    #[test]
    fn writers_never_record_what_the_engine_records() {
        use EventType::*;
        for t in [AccountLocked, TokenIssued, RetentionApplied, LockoutRebuilt] {
            assert_eq!(
                check_writer_event(Some(t), Some(Channel::WEB), false),
                Err(WriteRefusal::EngineEventType(t))
            );
        }
        for t in [LoginFailed, LoginSuccess, LockoutReset] {
            assert_eq!(
                check_writer_event(Some(t), Some(Channel::API), false),
                Ok(())
            );
        }
        assert_eq!(
            check_writer_event(Some(LockoutReset), Some(Channel::SYSTEM), false),
            Err(WriteRefusal::SystemChannel)
        );
        assert_eq!(
            check_writer_event(Some(LoginFailed), Some(Channel::WEB), true),
            Err(WriteRefusal::ReservedMetadataKey)
        );
    }
}
