//! The `ip-restriction` stage: the client address (as [`crate::proxy::headers::client_ip`]
//! finds it, so `X-Forwarded-For` counts only from `trusted_proxies`) is
//! refused when a `deny` entry holds it, or when `allow` is set and no
//! entry holds it. Entries are canonical CIDRs (checked on write), and
//! clients are canonical addresses (IPv4-mapped IPv6 is IPv4), so one
//! comparison per entry decides.

use std::net::IpAddr;

use ipnet::IpNet;
use portico_shared::model::policy::ip::IpRestrictionPolicy;

use crate::error::ProxyError;

/// A compiled `ip-restriction` policy.
#[derive(Debug)]
pub struct IpRule {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpRule {
    /// Compiles a validated policy (entries that do not parse, which
    /// validation excludes, refuse the config).
    pub fn compile(policy: &IpRestrictionPolicy) -> Result<Self, String> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|entry| {
                    portico_shared::model::policy::ip::parse_cidr(entry).ok_or_else(|| format!("ip-restriction: bad entry '{entry}'"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self { allow: parse(&policy.allow)?, deny: parse(&policy.deny)? })
    }

    /// Whether `client` (canonical) may call.
    pub fn admits(&self, client: IpAddr) -> bool {
        !self.deny.iter().any(|net| net.contains(&client)) && (self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&client)))
    }

    /// `403 ip_forbidden` for a client that may not call.
    pub fn check(&self, client: IpAddr) -> Result<(), ProxyError> {
        if self.admits(client) { Ok(()) } else { Err(ProxyError::IpForbidden) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_shared::validate::Validate;

    fn rule(allow: &[&str], deny: &[&str]) -> IpRule {
        let mut policy = IpRestrictionPolicy {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
        };
        policy.normalize_and_validate().unwrap();
        IpRule::compile(&policy).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse::<IpAddr>().unwrap().to_canonical()
    }

    #[test]
    fn deny_wins_over_allow() {
        let rule = rule(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert!(rule.admits(ip("10.2.3.4")));
        assert!(!rule.admits(ip("10.1.3.4")));
        assert!(!rule.admits(ip("192.0.2.1")), "outside allow");
    }

    #[test]
    fn deny_alone_admits_everyone_else() {
        let rule = rule(&[], &["192.0.2.0/24", "2001:db8::/32"]);
        assert!(rule.admits(ip("198.51.100.1")));
        assert!(!rule.admits(ip("192.0.2.9")));
        assert!(!rule.admits(ip("2001:db8::7")));
        assert!(rule.admits(ip("2001:db9::7")));
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_entries_and_mapped_entries_match_ipv4_clients() {
        let rule = rule(&["::ffff:192.0.2.0/120"], &[]);
        assert!(rule.admits(ip("::ffff:192.0.2.5")));
        assert!(rule.admits(ip("192.0.2.5")));
        assert!(!rule.admits(ip("::ffff:198.51.100.5")));
    }
}
