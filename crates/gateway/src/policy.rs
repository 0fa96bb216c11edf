//! Which upstreams the gateway may fetch for an agent.
//!
//! The gateway sends requests on the agent's behalf from inside the
//! operator's network, so a prompt-injected agent could point it at a ledger
//! node, a cloud metadata service or anything else only the gateway can
//! reach. The rule, checked before anything is sent or held:
//!
//! 1. **Allowlist.** The URL's host (and port, when the pattern has one)
//!    must match a pattern of [`UpstreamPolicy::allow`]: `api.example.com`,
//!    `*.example.com` (any subdomain, not the apex), `203.0.113.7`, `[2001:db8::1]`,
//!    each optionally with `:port` (without one, any port). An empty
//!    allowlist refuses every upstream, unless [`UpstreamPolicy::allow_any`]
//!    (demos only) is set.
//! 2. **Addresses.** The host is resolved once; *every* address must be
//!    public: loopback, private (RFC 1918), unique-local, link-local,
//!    unspecified, multicast, broadcast, carrier-grade NAT, documentation,
//!    benchmarking and reserved ranges are refused (IPv4-mapped, IPv4-compatible,
//!    NAT64 and 6to4 IPv6 addresses are judged by the IPv4 address inside),
//!    unless [`UpstreamPolicy::allow_private`] is set (tests and local
//!    demos).
//! 3. **Own addresses.** The ledger nodes' and the gateway's own sockets
//!    are always refused, and the ledger nodes' public addresses on any port
//!    (their Raft port included).
//! 4. **No second resolution.** The connection goes to the checked
//!    addresses only: the per-fetch HTTP client is pinned to them
//!    ([`reqwest::ClientBuilder::resolve_to_addrs`]), so a DNS answer that
//!    changes between the check and the connection (rebinding) cannot
//!    redirect it. Redirects are never followed (a 3xx is relayed to the
//!    agent as is).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{Code, GatewayError, GatewayResult};
use crate::limits::{ConfigError, Limits};

/// How a pattern names hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostMatch {
    /// One host, canonical (`api.example.com`, `127.0.0.1`, `[::1]`).
    Exact(String),
    /// `*.example.com`: stored as `.example.com`; matches any host that
    /// ends with it and is longer.
    Subdomains(String),
}

/// `host[:port]` or `*.domain[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: HostMatch,
    port: Option<u16>,
}

/// The canonical form of a host as the URL parser writes it (lowercase,
/// IPv4 in dotted form, IPv6 in brackets, IDN in punycode).
fn canonical_host(host: &str) -> Option<String> {
    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
        return None;
    }
    let url = reqwest::Url::parse(&format!("http://{host}/")).ok()?;
    let canonical = url.host_str()?.to_string();
    Some(canonical.strip_suffix('.').map(str::to_string).unwrap_or(canonical))
}

/// The IP address a canonical host names, if it is one.
fn host_ip(canonical: &str) -> Option<IpAddr> {
    if let Some(inner) = canonical.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    canonical.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, ConfigError> {
        let bad = |why: &str| ConfigError::new(format!("upstream pattern {text:?}: {why}"));
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inner, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("expected :PORT after ']'"))?),
            };
            (format!("[{inner}]"), port)
        } else {
            match text.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h.to_string(), Some(p)),
                Some(_) => return Err(bad("write IPv6 addresses in brackets, [::1]")),
                None => (text.to_string(), None),
            }
        };
        let port = port
            .map(|p| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("bad port")))
            .transpose()?;
        let host = if let Some(domain) = host.strip_prefix("*.") {
            let canonical = canonical_host(domain).ok_or_else(|| bad("bad domain after '*.'"))?;
            if host_ip(&canonical).is_some() || canonical.contains('*') {
                return Err(bad("'*.' takes a domain name, not an address"));
            }
            HostMatch::Subdomains(format!(".{canonical}"))
        } else {
            if host.contains('*') {
                return Err(bad("'*' is allowed only as a leading '*.'"));
            }
            HostMatch::Exact(canonical_host(&host).ok_or_else(|| bad("bad host"))?)
        };
        Ok(HostPattern { host, port })
    }

    /// Parses a comma-separated list (empty items are skipped).
    pub fn parse_list(text: &str) -> Result<Vec<HostPattern>, ConfigError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(HostPattern::parse)
            .collect()
    }

    /// Whether this pattern covers `url`'s host and port.
    pub fn matches(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host_str().and_then(canonical_host) else {
            return false;
        };
        if let Some(port) = self.port {
            if url.port_or_known_default() != Some(port) {
                return false;
            }
        }
        match &self.host {
            HostMatch::Exact(h) => *h == host,
            HostMatch::Subdomains(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }

    /// How specific the host part is (for tool rules: exact beats wildcard,
    /// longer beats shorter, a port beats none).
    pub(crate) fn specificity(&self) -> (u8, usize, bool) {
        match &self.host {
            HostMatch::Exact(h) => (1, h.len(), self.port.is_some()),
            HostMatch::Subdomains(s) => (0, s.len(), self.port.is_some()),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            HostMatch::Exact(h) => f.write_str(h)?,
            HostMatch::Subdomains(s) => write!(f, "*{s}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// Which upstreams may be fetched. The default refuses everything.
#[derive(Clone, Debug, Default)]
pub struct UpstreamPolicy {
    /// Host patterns an upstream must match.
    pub allow: Vec<HostPattern>,
    /// Any host name or address passes the allowlist (the address checks
    /// still apply). For demos; never in production.
    pub allow_any: bool,
    /// Loopback, private, link-local ... addresses pass the address check
    /// (the gateway's and the ledger nodes' own sockets stay refused). For
    /// tests and local demos.
    pub allow_private: bool,
}

impl UpstreamPolicy {
    /// True when no upstream can ever pass.
    pub fn refuses_everything(&self) -> bool {
        self.allow.is_empty() && !self.allow_any
    }
}

/// Whether an IPv4 address is publicly routable (not in a special range).
fn ipv4_is_public(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = ip.is_unspecified()        // 0.0.0.0
        || a == 0                            // 0.0.0.0/8 "this network"
        || ip.is_loopback()                  // 127.0.0.0/8
        || ip.is_private()                   // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()                // 169.254/16 (cloud metadata)
        || (a == 100 && (64..128).contains(&b)) // 100.64/10 carrier-grade NAT
        || (a == 192 && b == 0 && c == 0)    // 192.0.0/24 IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)    // 192.0.2/24 documentation
        || (a == 198 && b == 51 && c == 100) // 198.51.100/24 documentation
        || (a == 203 && b == 0 && c == 113)  // 203.0.113/24 documentation
        || (a == 198 && (b == 18 || b == 19)) // 198.18/15 benchmarking
        || (a == 192 && b == 88 && c == 99)  // 192.88.99/24 6to4 relay anycast
        || ip.is_multicast()                 // 224/4
        || a >= 240; // 240/4 reserved, 255.255.255.255 broadcast
    !special
}

/// Whether an address is publicly routable. IPv6 forms that carry an IPv4
/// address (mapped, compatible, NAT64, 6to4) are judged by that address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => ipv4_is_public(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return ipv4_is_public(v4);
            }
            // ::/96 IPv4-compatible (deprecated), which includes :: and ::1.
            if s[..6] == [0, 0, 0, 0, 0, 0] {
                return false;
            }
            let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            // 64:ff9b::/96 NAT64 (well-known) and 64:ff9b:1::/48 (local use).
            if s[0] == 0x64 && s[1] == 0xff9b {
                return s[2] == 0 && s[3..6] == [0, 0, 0] && ipv4_is_public(embedded(s[6], s[7]));
            }
            // 2002::/16 6to4: the IPv4 address is in bits 16..48.
            if s[0] == 0x2002 {
                return ipv4_is_public(embedded(s[1], s[2]));
            }
            let special = v6.is_multicast()            // ff00::/8
                || (s[0] & 0xfe00) == 0xfc00           // fc00::/7 unique local
                || (s[0] & 0xffc0) == 0xfe80           // fe80::/10 link-local
                || (s[0] & 0xffc0) == 0xfec0           // fec0::/10 site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8)  // 2001:db8::/32 documentation
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // 100::/64 discard
                || (s[0] == 0x2001 && s[1] < 0x0200); // 2001::/23 IETF protocol assignments (Teredo, ...)
            !special
        }
    }
}

/// The policy plus the addresses that are the system's own, as used at run
/// time.
#[derive(Clone, Debug)]
pub struct Guard {
    policy: UpstreamPolicy,
    /// Sockets that are ours (ledger APIs, the gateway): always refused.
    own_sockets: Vec<SocketAddr>,
    /// Addresses of the ledger nodes: refused on any port (their Raft
    /// port), unless private addresses are allowed and the address is not
    /// public.
    own_ips: Vec<IpAddr>,
    resolve_timeout: std::time::Duration,
    addresses_max: usize,
}

fn not_allowed(message: impl Into<String>) -> GatewayError {
    GatewayError::new(Code::UpstreamNotAllowed, message)
}

impl Guard {
    pub fn new(policy: UpstreamPolicy, limits: &Limits) -> Guard {
        Guard {
            policy,
            own_sockets: Vec::new(),
            own_ips: Vec::new(),
            resolve_timeout: limits.upstream_resolve_timeout,
            addresses_max: limits.upstream_addresses_max,
        }
    }

    /// Adds one of our own sockets (a ledger node's API, the gateway's
    /// listener); its address, when it names one host, is refused on every
    /// port too.
    pub fn add_own(&mut self, socket: SocketAddr) {
        if !self.own_sockets.contains(&socket) {
            self.own_sockets.push(socket);
        }
        let ip = socket.ip();
        if !ip.is_unspecified() && !self.own_ips.contains(&ip) {
            self.own_ips.push(ip);
        }
    }

    /// Adds the addresses of a ledger URL's host (resolving a name; a
    /// name that does not resolve now is skipped with a warning).
    pub async fn add_ledger_url(&mut self, url: &str) {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return;
        };
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
            return;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let resolved = tokio::time::timeout(self.resolve_timeout, tokio::net::lookup_host((host.as_str(), port))).await;
        match resolved {
            Ok(Ok(addrs)) => {
                for a in addrs {
                    self.add_own(a);
                }
            }
            _ => tracing::warn!(
                url,
                "cannot resolve a ledger URL's host; its addresses are not added to the refused upstreams"
            ),
        };
    }

    pub fn policy(&self) -> &UpstreamPolicy {
        &self.policy
    }

    /// Why `addr` may not be connected to, if it may not.
    fn refuse_address(&self, addr: SocketAddr) -> Option<String> {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let own_socket = self.own_sockets.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == ip || (own.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified())))
        });
        if own_socket {
            return Some(format!("{addr} is the gateway's or a ledger node's own address"));
        }
        let public = is_public(ip);
        if self.own_ips.contains(&ip) && (public || !self.policy.allow_private) {
            return Some(format!("{ip} is a ledger node's or the gateway's address"));
        }
        if !public && !self.policy.allow_private {
            return Some(format!(
                "{ip} is a loopback, private, link-local or otherwise non-public address"
            ));
        }
        None
    }

    /// Checks `url` against the policy, resolves its host once and checks
    /// every address; returns the addresses to connect to (`None` when the
    /// host is an IP literal, which the client connects to without
    /// resolving). Nothing is sent here.
    pub async fn check(&self, url: &reqwest::Url) -> GatewayResult<Option<(String, Vec<SocketAddr>)>> {
        let host = url
            .host_str()
            .ok_or_else(|| GatewayError::new(Code::InvalidRequest, "url: no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| GatewayError::new(Code::InvalidRequest, "url: no port"))?;
        if self.policy.refuses_everything() {
            return Err(not_allowed(
                "the gateway allows no upstream (configure --upstream-allow)",
            ));
        }
        if !self.policy.allow_any && !self.policy.allow.iter().any(|p| p.matches(url)) {
            return Err(not_allowed(format!(
                "{host}:{port} is not in the gateway's upstream allowlist"
            )));
        }
        let canonical = canonical_host(host).unwrap_or_else(|| host.to_string());
        if let Some(ip) = host_ip(&canonical) {
            let addr = SocketAddr::new(ip, port);
            if let Some(why) = self.refuse_address(addr) {
                return Err(not_allowed(format!("{host}: {why}")));
            }
            return Ok(None);
        }
        let lookup = tokio::net::lookup_host((canonical.as_str(), port));
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(self.resolve_timeout, lookup).await {
            Err(_) => {
                return Err(GatewayError::new(
                    Code::UpstreamUnreachable,
                    format!(
                        "resolving {host} took longer than {} ms; nothing was sent",
                        self.resolve_timeout.as_millis()
                    ),
                ))
            }
            Ok(Err(e)) => {
                return Err(GatewayError::new(
                    Code::UpstreamUnreachable,
                    format!("cannot resolve {host}: {e}; nothing was sent"),
                ))
            }
            Ok(Ok(addrs)) => addrs.take(self.addresses_max + 1).collect(),
        };
        if addrs.is_empty() {
            return Err(GatewayError::new(
                Code::UpstreamUnreachable,
                format!("{host} resolves to no address; nothing was sent"),
            ));
        }
        if addrs.len() > self.addresses_max {
            return Err(not_allowed(format!(
                "{host} resolves to more than {} addresses",
                self.addresses_max
            )));
        }
        for addr in &addrs {
            if let Some(why) = self.refuse_address(*addr) {
                return Err(not_allowed(format!("{host} resolves to {}: {why}", addr.ip())));
            }
        }
        Ok(Some((host.to_string(), addrs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> reqwest::Url {
        reqwest::Url::parse(u).unwrap()
    }

    #[test]
    fn patterns_parse_and_match() {
        let p = HostPattern::parse("api.example.com").unwrap();
        assert!(p.matches(&url("https://api.example.com/x")));
        assert!(p.matches(&url("http://API.Example.com:8080/x")));
        assert!(p.matches(&url("http://api.example.com./x")));
        assert!(!p.matches(&url("https://evil.api.example.com/")));
        assert!(!p.matches(&url("https://api.example.com.evil.org/")));

        let w = HostPattern::parse("*.example.com").unwrap();
        assert!(w.matches(&url("https://a.example.com/")));
        assert!(w.matches(&url("https://a.b.example.com/")));
        assert!(!w.matches(&url("https://example.com/")));
        assert!(!w.matches(&url("https://badexample.com/")));

        let ported = HostPattern::parse("127.0.0.1:8080").unwrap();
        assert!(ported.matches(&url("http://127.0.0.1:8080/")));
        assert!(!ported.matches(&url("http://127.0.0.1:8081/")));
        assert!(HostPattern::parse("127.0.0.1")
            .unwrap()
            .matches(&url("http://2130706433/")));
        assert!(HostPattern::parse("[::1]:80")
            .unwrap()
            .matches(&url("http://[0:0::1]/")));
        assert!(HostPattern::parse("example.com:443")
            .unwrap()
            .matches(&url("https://example.com/")));

        for bad in [
            "",
            "::1",
            "*.1.2.3.4",
            "a*.example.com",
            "x:0",
            "x:99999",
            "[::1",
            "a/b",
            "u@h",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(HostPattern::parse_list(" a.com, *.b.com:81 ,").unwrap().len(), 2);
        assert_eq!(HostPattern::parse("*.B.com:81").unwrap().to_string(), "*.b.com:81");
    }

    #[test]
    fn special_addresses_are_not_public() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2001::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn the_guard_refuses_before_anything_is_sent() {
        let limits = Limits::default();
        let strict = Guard::new(
            UpstreamPolicy {
                allow: HostPattern::parse_list("localhost,127.0.0.1,10.0.0.1,[::1],169.254.169.254,93.184.216.34")
                    .unwrap(),
                allow_any: false,
                allow_private: false,
            },
            &limits,
        );
        for u in [
            "http://127.0.0.1:9/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:9/",
            "http://localhost:9/",
            "http://2130706433:9/",
        ] {
            let e = strict.check(&url(u)).await.unwrap_err();
            assert_eq!(e.code, Code::UpstreamNotAllowed, "{u}: {e}");
        }
        let e = strict.check(&url("http://example.org/")).await.unwrap_err();
        assert_eq!(e.code, Code::UpstreamNotAllowed);
        assert!(e.body.message.contains("allowlist"), "{e}");
        // A public literal passes (nothing is connected here).
        assert!(strict.check(&url("http://93.184.216.34/")).await.unwrap().is_none());

        let none = Guard::new(UpstreamPolicy::default(), &limits);
        assert_eq!(
            none.check(&url("http://93.184.216.34/")).await.unwrap_err().code,
            Code::UpstreamNotAllowed
        );

        let mut lax = Guard::new(
            UpstreamPolicy {
                allow: Vec::new(),
                allow_any: true,
                allow_private: true,
            },
            &limits,
        );
        lax.add_own("127.0.0.1:7700".parse().unwrap());
        assert!(lax.check(&url("http://127.0.0.1:9/")).await.is_ok());
        let e = lax.check(&url("http://127.0.0.1:7700/raft/propose")).await.unwrap_err();
        assert_eq!(e.code, Code::UpstreamNotAllowed);
        let (host, addrs) = lax.check(&url("http://localhost:9/")).await.unwrap().unwrap();
        assert_eq!(host, "localhost");
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
        // A public ledger address is refused on every port, even when
        // private addresses are allowed.
        lax.add_own("93.184.216.34:7700".parse().unwrap());
        assert!(lax.check(&url("http://93.184.216.34:7701/")).await.is_err());
    }
}
