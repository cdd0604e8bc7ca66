//! The `ip-restriction` policy as users write it: CIDR lists matched
//! against the client address as rate limits find it (the gateway's
//! `trusted_proxies` decide whether `X-Forwarded-For` is believed).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ConfigError, ConfigErrors, Errors};
use crate::validate::Validate;

/// Fields of the `ip-restriction` policy. A client in `deny` is refused; with
/// `allow` set, so is every client outside it. Entries are CIDRs or single
/// addresses, IPv4 or IPv6 (IPv4-mapped IPv6 clients match IPv4 entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionPolicy {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Most entries in one list.
const MAX_ENTRIES: usize = 1_024;

impl Validate for IpRestrictionPolicy {
    /// Puts every entry in canonical CIDR form (`10.0.0.7` is `10.0.0.7/32`,
    /// `::ffff:10.0.0.0/104` is `10.0.0.0/8`, host bits cleared) and checks
    /// that at least one list is set; every bad entry is reported.
    fn normalize_and_validate(&mut self) -> Result<(), ConfigErrors> {
        let mut errors = Errors::default();
        if self.allow.is_empty() && self.deny.is_empty() {
            errors.add(ConfigError::invalid("allow", "name at least one CIDR in allow or deny"));
        }
        for (field, list) in [("allow", &mut self.allow), ("deny", &mut self.deny)] {
            if list.len() > MAX_ENTRIES {
                errors.add(ConfigError::invalid(field, format!("at most {MAX_ENTRIES} entries")));
                continue;
            }
            for (i, entry) in list.iter_mut().enumerate() {
                match parse_cidr(entry) {
                    Some(net) => *entry = net.to_string(),
                    None => errors.add(ConfigError::invalid(
                        format!("{field}[{i}]"),
                        format!("'{entry}' is not an IPv4 or IPv6 address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)"),
                    )),
                }
            }
        }
        errors.finish()
    }
}

/// A CIDR or a single address, canonical: host bits cleared, IPv4-mapped
/// IPv6 networks as IPv4 (clients are matched by their canonical address).
pub fn parse_cidr(entry: &str) -> Option<ipnet::IpNet> {
    let net = match entry.parse::<ipnet::IpNet>() {
        Ok(net) => net,
        Err(_) => ipnet::IpNet::from(entry.parse::<std::net::IpAddr>().ok()?),
    };
    let net = match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::IpNet::V4(ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok()?),
            None => net,
        },
        _ => net,
    };
    Some(net.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_canonical_cidrs() {
        let mut policy = IpRestrictionPolicy {
            allow: vec!["10.1.2.3/8".into(), "192.0.2.7".into(), "::ffff:198.51.100.0/120".into(), "2001:DB8::1/32".into()],
            deny: vec![],
        };
        policy.normalize_and_validate().unwrap();
        assert_eq!(policy.allow, ["10.0.0.0/8", "192.0.2.7/32", "198.51.100.0/24", "2001:db8::/32"]);
    }

    #[test]
    fn bad_entries_and_empty_policies_name_the_field() {
        let mut bad = IpRestrictionPolicy { allow: vec![], deny: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()] };
        assert_eq!(bad.normalize_and_validate().unwrap_err().first().field(), "deny[1]");
        let mut empty = IpRestrictionPolicy::default();
        assert_eq!(empty.normalize_and_validate().unwrap_err().first().field(), "allow");
        let mut word = IpRestrictionPolicy { allow: vec!["localhost".into()], deny: vec![] };
        assert!(word.normalize_and_validate().unwrap_err().first().message().contains("'localhost'"));
    }

    #[test]
    fn reports_every_bad_entry_of_both_lists_at_once() {
        let mut policy = IpRestrictionPolicy {
            allow: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into(), "localhost".into()],
            deny: vec!["::1/129".into(), "192.0.2.1".into()],
        };
        let errors = policy.normalize_and_validate().unwrap_err();
        let fields: Vec<&str> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(fields, ["allow[1]", "allow[2]", "deny[0]"]);
        assert!(errors.as_slice()[2].message().contains("'::1/129'"), "{errors}");
    }
}
