//! The SSRF guard: which IP addresses Herald may connect to when it delivers a webhook. Loopback,
//! private, link-local (cloud metadata), CGNAT, multicast, documentation, benchmarking, reserved and ULA
//! addresses are refused unless `delivery.allow_private_targets` is set or the address falls inside
//! `delivery.allowed_cidrs`. IPv4-mapped and IPv4-embedding IPv6 forms are judged by their IPv4 address.
//! The same policy checks IP-literal URLs at subscribe time and every resolved address at delivery.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Which targets deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    pub allow_private: bool,
    pub allowed: Vec<IpNet>,
}

/// Why an address was refused; the text goes into the attempt log and API errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{address} is a {class} address; deliveries to it are blocked (set delivery.allow_private_targets or add it to delivery.allowed_cidrs to allow it)"
)]
pub struct Blocked {
    pub address: IpAddr,
    pub class: &'static str,
}

impl TargetPolicy {
    pub fn new(allow_private: bool, allowed: Vec<IpNet>) -> Self {
        Self { allow_private, allowed }
    }

    /// Whether Herald may connect to `address`.
    pub fn check(&self, address: IpAddr) -> Result<(), Blocked> {
        if self.allow_private || self.allowed.iter().any(|net| net.contains(&address)) {
            return Ok(());
        }
        let canonical = canonical(address);
        if canonical != address && self.allowed.iter().any(|net| net.contains(&canonical)) {
            return Ok(());
        }
        match special_class(canonical) {
            Some(class) => Err(Blocked { address, class }),
            None => Ok(()),
        }
    }

    /// Whether plain `http://` may be used for a host: only where private targets are allowed (tests,
    /// on-premise receivers); public endpoints must use TLS.
    pub fn allows_plain_http(&self, literal: Option<IpAddr>) -> bool {
        self.allow_private
            || literal.is_some_and(|ip| self.allowed.iter().any(|net| net.contains(&canonical(ip))))
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) forms reduced to the IPv4
/// address they carry.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return IpAddr::V4(embedded_v4(s[6], s[7]));
            }
            if s[0] == 0x2002 {
                return IpAddr::V4(embedded_v4(s[1], s[2]));
            }
            address
        }
        IpAddr::V4(_) => address,
    }
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// The class of a non-public address, or `None` for a public one.
fn special_class(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "unspecified",
        (127, _, _) => "loopback",
        (10, _, _) | (192, 168, _) => "private",
        (172, 16..=31, _) => "private",
        (169, 254, _) => "link-local (cloud metadata)",
        (100, 64..=127, _) => "carrier-grade NAT",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        0 if s[1..6] == [0, 0, 0, 0, 0] => "IPv4-compatible",
        0xfc00..=0xfdff => "unique local (ULA)",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation",
        0x2001 if s[1] == 0 => "Teredo",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(text: &str) -> bool {
        TargetPolicy::default().check(text.parse().expect("ip")).is_err()
    }

    #[test]
    fn private_and_special_addresses_are_blocked() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.10",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(blocked(address), "{address} should be blocked");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for address in
            ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"]
        {
            assert!(!blocked(address), "{address} should pass");
        }
    }

    #[test]
    fn allow_list_and_switch_open_the_guard() {
        let policy = TargetPolicy::new(false, vec!["127.0.0.0/8".parse().expect("cidr")]);
        assert!(policy.check("127.0.0.1".parse().expect("ip")).is_ok());
        assert!(policy.check("::ffff:127.0.0.1".parse().expect("ip")).is_ok());
        assert!(policy.check("10.0.0.1".parse().expect("ip")).is_err());
        assert!(policy.allows_plain_http(Some("127.0.0.1".parse().expect("ip"))));
        assert!(!policy.allows_plain_http(None));
        let open = TargetPolicy::new(true, vec![]);
        assert!(open.check("10.0.0.1".parse().expect("ip")).is_ok());
        assert!(open.allows_plain_http(None));
    }

    #[test]
    fn the_reason_names_the_class() {
        let error =
            TargetPolicy::default().check("169.254.169.254".parse().expect("ip")).expect_err("blocked");
        assert!(error.to_string().contains("link-local"), "{error}");
    }
}
