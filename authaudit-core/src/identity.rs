//! The keys the lockout engine counts an event against. The recorded
//! `user_id` and `ip` stay exactly as given (they are evidence); the engine
//! counts failures, locks and blocks against the account's key and the
//! source's key, so that the spellings of one account and the addresses of
//! one source share one count (docs/lockout.md, "Account and source keys").

use icu_casemap::CaseMapper;
use icu_normalizer::ComposingNormalizer;
use icu_properties::props::{Dash, DefaultIgnorableCodePoint, WhiteSpace};
use icu_properties::CodePointSetData;
use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// How an account's `user_id` becomes its key (per tenant:
/// `lockout_policy.account_key_folding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Folding {
    /// Unicode NFKC, full case folding, default-ignorable characters removed,
    /// dashes as `-`, white space trimmed from both ends.
    #[default]
    Canonical,
    /// The `user_id` as given.
    Exact,
}

impl Folding {
    pub fn as_str(self) -> &'static str {
        match self {
            Folding::Canonical => "canonical",
            Folding::Exact => "exact",
        }
    }
}

impl FromStr for Folding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "canonical" => Ok(Folding::Canonical),
            "exact" => Ok(Folding::Exact),
            other => Err(format!(
                "account_key_folding must be 'canonical' or 'exact', not '{other}'"
            )),
        }
    }
}

/// The key of account `user` under `folding`.
pub fn account_key(user: &str, folding: Folding) -> Cow<'_, str> {
    if folding == Folding::Exact || is_plain(user) {
        return Cow::Borrowed(user);
    }
    let nfkc = ComposingNormalizer::new_nfkc();
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let dash = CodePointSetData::new::<Dash>();
    let white = CodePointSetData::new::<WhiteSpace>();
    let folded = CaseMapper::new()
        .fold_string(&nfkc.normalize(user))
        .into_owned();
    let mapped: String = folded
        .chars()
        .filter(|c| !ignorable.contains(*c))
        .map(|c| if dash.contains(c) { '-' } else { c })
        .collect();
    // Folding and the mapping can leave a string that is not in NFKC.
    let normal = nfkc.normalize(&mapped);
    Cow::Owned(normal.trim_matches(|c| white.contains(c)).to_owned())
}

/// ASCII without upper case letters and without surrounding white space:
/// its own key.
fn is_plain(user: &str) -> bool {
    let b = user.as_bytes();
    b.iter().all(|c| c.is_ascii() && !c.is_ascii_uppercase())
        && !b.first().is_some_and(|c| c.is_ascii_whitespace())
        && !b.last().is_some_and(|c| c.is_ascii_whitespace())
        && !b.contains(&0x7f)
}

/// The smallest and largest IPv6 prefix a tenant may group sources by
/// (`lockout_policy.ipv6_prefix`).
pub const IPV6_PREFIX_RANGE: std::ops::RangeInclusive<u8> = 32..=128;

/// A source's key: an IPv4 address (an IPv4-mapped IPv6 address is its
/// IPv4 address), or the IPv6 network of `ipv6_prefix` bits it lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceKey {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl SourceKey {
    /// The key as `inet` text: `addr/prefix`.
    pub fn inet_text(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

/// The key of source `addr` with IPv6 sources grouped by `ipv6_prefix` bits.
pub fn source_key(addr: IpAddr, ipv6_prefix: u8) -> SourceKey {
    match addr {
        IpAddr::V4(a) => SourceKey {
            addr: IpAddr::V4(a),
            prefix: 32,
        },
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => SourceKey {
                addr: IpAddr::V4(v4),
                prefix: 32,
            },
            None => {
                let prefix = ipv6_prefix.clamp(*IPV6_PREFIX_RANGE.start(), 128);
                let mask = if prefix == 128 {
                    u128::MAX
                } else {
                    !(u128::MAX >> prefix)
                };
                SourceKey {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask)),
                    prefix,
                }
            }
        },
    }
}

/// A tenant's rules for the keys (`lockout_policy.account_key_folding`
/// and `ipv6_prefix`, or the `authaudit.lockout_*` defaults): what the
/// lockout engine counts by, and the detections with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRules {
    pub folding: Folding,
    pub ipv6_prefix: u8,
}

impl Default for KeyRules {
    /// The extension's defaults: canonical folding, IPv6 sources by /64.
    fn default() -> Self {
        KeyRules {
            folding: Folding::Canonical,
            ipv6_prefix: 64,
        }
    }
}

impl KeyRules {
    /// The key of account `user`.
    pub fn account<'u>(&self, user: &'u str) -> Cow<'u, str> {
        account_key(user, self.folding)
    }

    /// The key of a source given as text: an address's [`SourceKey`],
    /// written as the address alone when the key is one host (`/32`,
    /// `/128`) and as `network/prefix` otherwise; text that is no
    /// address (an `inet` with a mask) stays as it is.
    pub fn source<'s>(&self, ip: &'s str) -> Cow<'s, str> {
        let Ok(addr) = ip.parse::<IpAddr>() else {
            return Cow::Borrowed(ip);
        };
        let key = source_key(addr, self.ipv6_prefix);
        let host = match key.addr {
            IpAddr::V4(_) => key.prefix == 32,
            IpAddr::V6(_) => key.prefix == 128,
        };
        match (host, key.addr == addr) {
            (true, true) => Cow::Borrowed(ip),
            (true, false) => Cow::Owned(key.addr.to_string()),
            (false, _) => Cow::Owned(key.inet_text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(u: &str) -> String {
        account_key(u, Folding::Canonical).into_owned()
    }

    #[test]
    fn every_spelling_of_one_account_has_one_key() {
        let k = key("victim-lk");
        assert_eq!(k, "victim-lk");
        for variant in [
            "Victim-LK",
            "VICTIM-LK",
            " victim-lk",
            "victim-lk  ",
            "\tvictim-lk\n",
            "\u{00a0}victim-lk",
            "victim-lk\u{3000}",
            "ｖｉｃｔｉｍ－ｌｋ",
            "victim\u{2010}lk",
            "victim\u{2011}lk",
            "victim\u{2013}lk",
            "victim\u{2212}lk",
            "vic\u{200b}tim-lk",
            "victim\u{200d}-lk",
            "\u{feff}victim-lk",
            "vic\u{00ad}tim-lk",
        ] {
            assert_eq!(key(variant), k, "{variant:?}");
        }
    }

    #[test]
    fn case_folding_is_full_not_lower_case() {
        assert_eq!(key("STRASSE"), key("straße"));
        assert_eq!(key("ΣΊΣΥΦΟΣ"), key("σίσυφος"));
        assert_eq!(key("ﬁle"), "file");
        assert_eq!(key("Ａｄｍｉｎ"), "admin");
    }

    #[test]
    fn different_accounts_keep_different_keys() {
        assert_ne!(key("victim-lk"), key("victimlk"));
        assert_ne!(key("victim-lk"), key("victim_lk"));
        assert_ne!(key("a b"), key("ab"));
        assert_ne!(key("alice"), key("alicé"));
    }

    #[test]
    fn plain_names_are_their_own_key_and_exact_keeps_everything() {
        assert!(matches!(
            account_key("user42@example.org", Folding::Canonical),
            Cow::Borrowed(_)
        ));
        assert_eq!(account_key(" Victim-LK", Folding::Exact), " Victim-LK");
        assert_eq!("canonical".parse::<Folding>(), Ok(Folding::Canonical));
        assert_eq!("exact".parse::<Folding>(), Ok(Folding::Exact));
        assert!("lower".parse::<Folding>().is_err());
    }

    #[test]
    fn a_key_is_a_fixed_point() {
        for u in ["Victim-LK", "ｖｉｃｔｉｍ－ｌｋ", "straße", "ǅemal", "Å"] {
            let k = key(u);
            assert_eq!(key(&k), k, "{u:?}");
        }
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let v4: IpAddr = "198.51.100.250".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.51.100.250".parse().unwrap();
        assert_eq!(source_key(mapped, 64), source_key(v4, 64));
        assert_eq!(source_key(v4, 64).inet_text(), "198.51.100.250/32");
    }

    #[test]
    fn key_rules_name_sources_as_the_engine_counts_them() {
        let r = KeyRules::default();
        assert_eq!(r.source("198.51.100.7"), "198.51.100.7");
        assert_eq!(r.source("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(r.source("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(r.source("not an address"), "not an address");
        let hosts = KeyRules {
            ipv6_prefix: 128,
            ..r
        };
        assert_eq!(hosts.source("2001:db8::1"), "2001:db8::1");
        assert_eq!(r.account(" Alice"), "alice");
        let exact = KeyRules {
            folding: Folding::Exact,
            ..r
        };
        assert_eq!(exact.account(" Alice"), " Alice");
    }

    #[test]
    fn ipv6_sources_are_grouped_by_the_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a, 64), source_key(b, 64));
        assert_ne!(source_key(a, 64), source_key(c, 64));
        assert_eq!(source_key(a, 64).inet_text(), "2001:db8:1:2::/64");
        assert_eq!(source_key(a, 48), source_key(c, 48));
        assert_ne!(source_key(a, 128), source_key(b, 128));
        assert_eq!(source_key(a, 128).inet_text(), "2001:db8:1:2:aaaa::1/128");
        // Out of range prefixes are held to the range.
        assert_eq!(source_key(a, 8), source_key(a, 32));
    }
}
