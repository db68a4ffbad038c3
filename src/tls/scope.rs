//! What the farm's CA may sign for: the names a farm serves, written into the CA as X.509
//! name constraints (critical, so that a verifier that cannot check them refuses the CA).
//! A machine that trusts the farm's CA then trusts it for those names only, whoever gets
//! hold of its key: a certificate it signs for `www.google.com` or a public address fails
//! verification.

use std::net::IpAddr;

use ipnet::IpNet;
use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};

use crate::scenario::{Scenario, TlsMode};

/// The top-level domains reserved for testing and examples (RFC 2606, RFC 6761): no real
/// host has a name under them, so a CA for them cannot be abused for one.
pub const RESERVED_DOMAINS: [&str; 4] = ["test", "localhost", "example", "invalid"];

/// The addresses no public host has: loopback, private (RFC 1918, RFC 4193), link-local,
/// and the ranges reserved for documentation (RFC 5737, RFC 3849).
pub const RESERVED_NETWORKS: [&str; 12] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "2001:db8::/32",
];

/// The names and addresses a CA may sign for: each DNS name with every name below it, and
/// each network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaScope {
    dns: Vec<String>,
    networks: Vec<IpNet>,
}

impl Default for CaScope {
    /// The reserved domains and networks, which every farm's CA may sign for.
    fn default() -> Self {
        Self {
            dns: RESERVED_DOMAINS.iter().map(|d| d.to_string()).collect(),
            networks: RESERVED_NETWORKS
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
        }
    }
}

impl CaScope {
    /// The reserved domains and networks, and the names `scenario` gives its domains and
    /// hosts (its hostnames, and the name of a `wrong-hostname` host's certificate), when
    /// they are not under those already. Addresses are not added: a host's certificate
    /// names its address only when that is in a reserved network.
    pub fn for_scenario(scenario: &Scenario) -> Self {
        let mut scope = Self::default();
        scope.add_scenario(scenario);
        scope
    }

    /// Adds the names of `scenario`'s domains and hosts that are not in the scope yet.
    pub fn add_scenario(&mut self, scenario: &Scenario) {
        let domains = scenario.domains.iter().map(|d| d.name.clone());
        let hosts = scenario.hosts.iter().flat_map(|h| match h.tls.mode {
            TlsMode::WrongHostname => vec![h.hostname.clone(), wrong_name(&h.hostname)],
            _ => vec![h.hostname.clone()],
        });
        for name in domains.chain(hosts) {
            let name = normalized(&name);
            // A constraint is IA5 text: a name that is not ASCII cannot be one (and cannot
            // be in a certificate either).
            if !name.is_empty() && name.is_ascii() && !self.permits_name(&name) {
                self.dns.push(name);
            }
        }
    }

    /// Whether a certificate for the DNS name `name` verifies under this scope.
    pub fn permits_name(&self, name: &str) -> bool {
        let name = normalized(name);
        self.dns.iter().any(|base| {
            name == *base
                || name
                    .strip_suffix(base.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }

    /// Whether a certificate for the address `ip` verifies under this scope.
    pub fn permits_address(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(&ip))
    }

    /// The DNS names, each with the names below it.
    pub fn names(&self) -> &[String] {
        &self.dns
    }

    /// The networks.
    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }

    /// The scope as the CA certificate's name constraints.
    pub(super) fn constraints(&self) -> NameConstraints {
        let dns = self.dns.iter().cloned().map(GeneralSubtree::DnsName);
        let ips = self.networks.iter().map(|n| {
            GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(n.addr(), n.prefix_len()))
        });
        NameConstraints {
            permitted_subtrees: dns.chain(ips).collect(),
            excluded_subtrees: Vec::new(),
        }
    }

    /// The scope of a CA certificate's permitted subtrees, as x509-parser reads them; `None`
    /// when it has no name constraints (a CA of an older mxfarm), or constraints of a kind
    /// the farm does not write.
    pub(super) fn from_certificate(
        cert: &x509_parser::certificate::X509Certificate,
    ) -> Option<Self> {
        use x509_parser::extensions::GeneralName;
        let constraints = cert.name_constraints().ok()??.value;
        if constraints.excluded_subtrees.is_some() {
            return None;
        }
        let mut scope = Self {
            dns: Vec::new(),
            networks: Vec::new(),
        };
        for subtree in constraints.permitted_subtrees.as_ref()? {
            match &subtree.base {
                GeneralName::DNSName(name) => scope.dns.push(normalized(name)),
                GeneralName::IPAddress(bytes) => scope.networks.push(network(bytes)?),
                _ => return None,
            }
        }
        Some(scope)
    }

    /// The scope in a few words, for messages: "names under .test, .localhost, .example,
    /// .invalid and .corp.example.com, and loopback, private, link-local and documentation
    /// addresses".
    pub fn describe(&self) -> String {
        let mut names: Vec<String> = self.dns.iter().map(|d| format!(".{d}")).collect();
        if names.len() > 8 {
            let more = names.len() - 6;
            names.truncate(6);
            names.push(format!("{more} more"));
        }
        let names = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => "no name".to_string(),
        };
        let addresses = if self.networks == Self::default().networks {
            "loopback, private, link-local and documentation addresses".to_string()
        } else {
            let networks: Vec<String> = self.networks.iter().map(|n| n.to_string()).collect();
            format!("the addresses of {}", networks.join(", "))
        };
        format!("names under {names}, and {addresses}")
    }
}

/// The name a `wrong-hostname` host's certificate is for.
pub(super) fn wrong_name(hostname: &str) -> String {
    format!("not-{hostname}")
}

/// A DNS name as constraints compare them: lower case, without a trailing dot.
fn normalized(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A network from the bytes of an iPAddress constraint: the address, then the mask.
fn network(bytes: &[u8]) -> Option<IpNet> {
    let (addr, mask): (IpAddr, &[u8]) = match bytes.len() {
        8 => (<[u8; 4]>::try_from(&bytes[..4]).ok()?.into(), &bytes[4..]),
        32 => (
            <[u8; 16]>::try_from(&bytes[..16]).ok()?.into(),
            &bytes[16..],
        ),
        _ => return None,
    };
    let prefix = mask.iter().map(|b| b.count_ones()).sum::<u32>();
    IpNet::new(addr, u8::try_from(prefix).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_under_a_reserved_domain_are_in_scope_and_real_names_are_not() {
        let scope = CaScope::default();
        for name in [
            "mx1.aol.test",
            "test",
            "LOCALHOST",
            "a.b.example.",
            "x.invalid",
        ] {
            assert!(scope.permits_name(name), "{name}");
        }
        for name in [
            "www.google.com",
            "attest",
            "test.com",
            "example.com",
            "mytest",
        ] {
            assert!(!scope.permits_name(name), "{name}");
        }
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "::1",
            "fd00::1",
        ] {
            assert!(scope.permits_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "0.0.0.0", "2a00::1", "::"] {
            assert!(!scope.permits_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_scenario_adds_its_own_names_that_are_not_reserved() {
        let scenario = crate::scenario::load_str(
            "t.toml",
            r#"
name = "t"
[[domain]]
name = "corp.example.com"
mx = [{ host = "mx1" }]
[[domain]]
name = "aol.test"
mx = [{ host = "mx1" }]
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.corp.example.com"
[[host]]
name = "mx2"
listen = "127.0.0.1:0"
hostname = "MX2.Other.ORG"
tls = "wrong-hostname"
"#,
        )
        .unwrap();
        let scope = CaScope::for_scenario(&scenario);
        assert_eq!(
            scope.names(),
            [
                "test",
                "localhost",
                "example",
                "invalid",
                "corp.example.com",
                "mx2.other.org",
                "not-mx2.other.org"
            ]
        );
        assert_eq!(
            scope.describe(),
            "names under .test, .localhost, .example, .invalid, .corp.example.com, .mx2.other.org and .not-mx2.other.org, and loopback, private, link-local and documentation addresses"
        );
        assert!(scope.permits_name("mx1.corp.example.com"));
        assert!(!scope.permits_name("example.com"));
        assert!(!scope.permits_name("other.org"));
    }

    #[test]
    fn constraints_read_back_as_the_same_scope() {
        let mut scope = CaScope::default();
        scope.dns.push("corp.example.com".into());
        let ca = super::super::FarmCa::generate_in(&scope).unwrap();
        let der = ca.cert_der();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let constraints = cert.name_constraints().unwrap().unwrap();
        assert!(constraints.critical, "name constraints are critical");
        assert_eq!(CaScope::from_certificate(&cert), Some(scope));
    }
}
