//! Channels: the path through which an event reached the application.
//!
//! Seven are built in (`web`, `mobile`, `api`, `ssh`, `vpn`, `sso` and
//! `system`, the extension's own). A deployment adds its own names with a
//! [`ChannelSet`] (the extension reads it from `authaudit.extra_channels`).
//! Names are interned, so a [`Channel`] is a `Copy` handle to a `'static`
//! name whether it is built in or configured.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 32;

/// A channel name, built in or configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Channel(&'static str);

impl Channel {
    pub const WEB: Channel = Channel("web");
    pub const MOBILE: Channel = Channel("mobile");
    pub const API: Channel = Channel("api");
    /// Remote shells (OpenSSH, PAM), as the sshd importer records them.
    pub const SSH: Channel = Channel("ssh");
    pub const VPN: Channel = Channel("vpn");
    /// Single sign-on (an identity provider's own login).
    pub const SSO: Channel = Channel("sso");
    /// Events the extension itself appends (for example `account_locked`).
    pub const SYSTEM: Channel = Channel("system");

    /// The built-in channels, in documentation order.
    pub const BUILT_IN: [Channel; 7] = [
        Channel::WEB,
        Channel::MOBILE,
        Channel::API,
        Channel::SSH,
        Channel::VPN,
        Channel::SSO,
        Channel::SYSTEM,
    ];

    /// The name stored in `auth_log.channel`.
    pub fn as_str(self) -> &'static str {
        self.0
    }

    /// The built-in channel named `s`.
    pub fn built_in(s: &str) -> Option<Channel> {
        Channel::BUILT_IN.into_iter().find(|c| c.0 == s)
    }

    /// The channel named `s`: built in, or one of `configured`.
    pub fn find(s: &str, configured: &ChannelSet) -> Option<Channel> {
        Channel::built_in(s).or_else(|| configured.get(s))
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Why a deployment's channel list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelListError {
    #[error("channel name \"{name}\" is malformed: {rule}")]
    Malformed { name: String, rule: &'static str },
    #[error("channel \"system\" is reserved for the extension's own events")]
    Reserved,
}

/// The channels a deployment adds to the built-in ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSet {
    names: Vec<Channel>,
}

impl ChannelSet {
    /// Parses a list of names separated by commas (blanks around a name
    /// are ignored, and so are empty entries). A name is 1 to 32 bytes of
    /// lowercase ASCII letters, digits, `_` and `-`, starting with a letter.
    /// `system` is refused; other built-in names are accepted and change
    /// nothing.
    pub fn parse(list: &str) -> Result<ChannelSet, ChannelListError> {
        let mut names = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            check_name(name)?;
            if name == Channel::SYSTEM.0 {
                return Err(ChannelListError::Reserved);
            }
            if Channel::built_in(name).is_none() && !names.iter().any(|c: &Channel| c.0 == name) {
                names.push(Channel(intern(name)));
            }
        }
        Ok(ChannelSet { names })
    }

    /// The configured channel named `s`.
    pub fn get(&self, s: &str) -> Option<Channel> {
        self.names.iter().copied().find(|c| c.0 == s)
    }

    /// The configured channels, in list order.
    pub fn channels(&self) -> &[Channel] {
        &self.names
    }
}

fn check_name(name: &str) -> Result<(), ChannelListError> {
    let malformed = |rule| ChannelListError::Malformed {
        name: name
            .chars()
            .take(40)
            .flat_map(char::escape_default)
            .collect(),
        rule,
    };
    if name.len() > MAX_CHANNEL_BYTES {
        return Err(malformed("longer than 32 bytes"));
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err(malformed("must start with a lowercase letter"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(malformed(
            "only lowercase letters, digits, '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// The one `'static` copy of `name`. Names come from configuration, so the
/// set stays as small as the distinct names ever configured.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.get(name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_adds_channels_beside_the_built_in_ones() {
        let set = ChannelSet::parse(" kiosk, radius ,, web,kiosk").unwrap();
        let names: Vec<&str> = set.channels().iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["kiosk", "radius"]);
        assert_eq!(Channel::find("radius", &set).unwrap().as_str(), "radius");
        assert_eq!(Channel::find("web", &set), Some(Channel::WEB));
        assert_eq!(Channel::find("fax", &set), None);
        assert_eq!(Channel::find("radius", &ChannelSet::default()), None);
        // One interned name per spelling, whichever list it came from.
        let again = ChannelSet::parse("radius").unwrap();
        assert_eq!(again.get("radius"), set.get("radius"));
        assert!(std::ptr::eq(
            again.get("radius").unwrap().as_str(),
            set.get("radius").unwrap().as_str()
        ));
        assert_eq!(ChannelSet::parse("").unwrap(), ChannelSet::default());
    }

    #[test]
    fn malformed_and_reserved_names_are_refused() {
        assert_eq!(
            ChannelSet::parse("kiosk, system"),
            Err(ChannelListError::Reserved)
        );
        for bad in [
            "Kiosk",
            "9lives",
            "ki osk",
            "kiosk!",
            "-x",
            "ĸiosk",
            &"k".repeat(33),
        ] {
            assert!(
                matches!(
                    ChannelSet::parse(bad),
                    Err(ChannelListError::Malformed { .. })
                ),
                "{bad}"
            );
        }
        assert!(ChannelSet::parse(&"k".repeat(32)).is_ok());
    }
}
