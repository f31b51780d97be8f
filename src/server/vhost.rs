//! Virtual server selection, as nginx does it: first by the address the
//! connection came to, then by the Host name among the servers listening on
//! that address.
//!
//! Listen addresses are grouped per family and port. When a group has a
//! wildcard (`listen 80`, `listen [::]:80`), only the wildcard is bound, plus
//! the specific addresses whose options need a socket of their own
//! (`reuseport`, `backlog=`, `ipv6only=off`); a connection to a specific
//! address is still served by the servers that listen on that address, the
//! others by the wildcard's servers. Within an address the name order is:
//! exact, longest leading wildcard (`*.example.com`, `.example.com`), longest
//! trailing wildcard (`www.example.*`), regexes in configuration order, and
//! the default server.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::{run_regex, RegexCaptures};
use crate::conf::error::SrcLoc;
use crate::conf::model::{Listen, ListenAddr, ServerConf, ServerName};
use crate::conf::ConfError;

/// nginx's default listen backlog on Linux (NGX_LISTEN_BACKLOG).
pub const DEFAULT_BACKLOG: i32 = 511;

/// Socket options of one bound listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    pub reuseport: bool,
    pub backlog: i32,
    pub ipv6only: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            reuseport: false,
            backlog: DEFAULT_BACKLOG,
            ipv6only: true,
        }
    }
}

/// Where a listener is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenKey {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenKey::Inet(a) => write!(f, "{a}"),
            ListenKey::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl ListenKey {
    fn of(addr: &ListenAddr) -> ListenKey {
        match addr {
            ListenAddr::AnyV4(port) => ListenKey::Inet(SocketAddr::from(([0, 0, 0, 0], *port))),
            ListenAddr::Addr(a) => ListenKey::Inet(*a),
            ListenAddr::Unix(p) => ListenKey::Unix(p.clone()),
        }
    }

    fn is_wildcard(&self) -> bool {
        matches!(self, ListenKey::Inet(a) if a.ip().is_unspecified())
    }

    /// The group a listener belongs to: family and port (unix: the path).
    fn group(&self) -> (u8, u16, Option<&Path>) {
        match self {
            ListenKey::Inet(SocketAddr::V4(a)) => (4, a.port(), None),
            ListenKey::Inet(SocketAddr::V6(a)) => (6, a.port(), None),
            ListenKey::Unix(p) => (0, 0, Some(p)),
        }
    }
}

/// Why a Host value is refused (the caller answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("client sent invalid host header")]
pub struct BadHost;

/// ngx_http_validate_host: refuses `..`, `/`, control characters, space, DEL
/// and NUL; drops the port and one trailing dot; lower-cases. An IPv6
/// literal keeps its brackets.
pub fn normalize_host(host: &str) -> Result<Cow<'_, str>, BadHost> {
    #[derive(PartialEq)]
    enum St {
        Usual,
        Literal,
        Rest,
    }
    let h = host.as_bytes();
    let mut dot_pos: Option<usize> = None;
    let mut host_len = h.len();
    let mut st = St::Usual;
    let mut upper = false;
    for (i, &ch) in h.iter().enumerate() {
        match ch {
            b'.' => {
                if i > 0 && dot_pos == Some(i - 1) {
                    return Err(BadHost);
                }
                dot_pos = Some(i);
            }
            b':' if st == St::Usual => {
                host_len = i;
                st = St::Rest;
            }
            b'[' if i == 0 => st = St::Literal,
            b']' if st == St::Literal => {
                host_len = i + 1;
                st = St::Rest;
            }
            b'/' => return Err(BadHost),
            _ if ch <= 0x20 || ch == 0x7f => return Err(BadHost),
            b'A'..=b'Z' => upper = true,
            _ => {}
        }
    }
    if host_len > 0 && dot_pos == Some(host_len - 1) {
        host_len -= 1;
    }
    if host_len == 0 {
        return Err(BadHost);
    }
    // host_len is at an ASCII byte (':' or '.' or ']'+1) or the end.
    let h = &host[..host_len];
    Ok(if upper {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    })
}

/// The server names of one address, ready for lookup.
#[derive(Debug, Default)]
struct Names {
    exact: HashMap<String, usize>,
    /// `.example.com` also matching `example.com`: keyed `example.com`.
    bare: HashMap<String, usize>,
    /// `*.example.com` / `.example.com` for subdomains: keyed `.example.com`.
    head: HashMap<String, usize>,
    /// The suffixes written as `*.example.com`, to spot repeats.
    stars: HashSet<String>,
    /// `www.example.*`: keyed `www.example.`.
    tail: HashMap<String, usize>,
    regexes: Vec<(Regex, usize)>,
}

/// The configuration of one listen address.
#[derive(Debug)]
pub struct AddrConf {
    pub key: ListenKey,
    /// Servers listening here, by index, in configuration order.
    pub servers: Vec<usize>,
    /// `default_server`, else the first server listening here.
    pub default_server: usize,
    /// Any listen on this address says `ssl` / `http2`.
    pub ssl: bool,
    pub http2: bool,
    options: ListenOptions,
    /// Options set explicitly: the address needs a socket of its own.
    own_socket: bool,
    explicit_default: bool,
    names: Names,
}

/// Virtual servers by listen address and name.
#[derive(Debug)]
pub struct VhostTable {
    addrs: Vec<AddrConf>,
    /// Keys from the configuration, looked up per connection: not SipHash.
    by_key: fnv::FnvHashMap<ListenKey, usize>,
    /// The wildcard address per (family, port).
    wildcards: HashMap<(u8, u16), usize>,
    /// `conflicting server name "x" on 0.0.0.0:80, ignored` lines.
    pub warnings: Vec<String>,
}

fn name_text(n: &ServerName) -> String {
    match n {
        ServerName::Exact(s) => s.clone(),
        ServerName::WildStart { suffix, also_bare } => {
            if *also_bare {
                suffix.clone()
            } else {
                format!("*{suffix}")
            }
        }
        ServerName::WildEnd(prefix) => format!("{prefix}*"),
        ServerName::Regex(r) => format!("~{}", r.as_str()),
    }
}

fn options_of(l: &Listen) -> (ListenOptions, bool) {
    let o = ListenOptions {
        reuseport: l.reuseport,
        backlog: l.backlog.unwrap_or(DEFAULT_BACKLOG),
        ipv6only: l.ipv6only,
    };
    (o, l.reuseport || l.backlog.is_some() || !l.ipv6only)
}

impl VhostTable {
    /// Groups the servers by listen address, as nginx does at startup.
    /// Errors: `a duplicate default server for ADDR`, `a duplicate listen
    /// ADDR` (one server twice on an address) and `duplicate listen options
    /// for ADDR`.
    pub fn build(servers: &[ServerConf]) -> Result<VhostTable, ConfError> {
        let mut addrs: Vec<AddrConf> = Vec::new();
        let mut by_key: fnv::FnvHashMap<ListenKey, usize> = Default::default();
        for (si, server) in servers.iter().enumerate() {
            for l in &server.listens {
                let key = ListenKey::of(&l.addr);
                let (options, set) = options_of(l);
                let ai = match by_key.get(&key) {
                    Some(&ai) => {
                        let a = &mut addrs[ai];
                        if a.servers.contains(&si) {
                            return Err(msg(format!("a duplicate listen {key}"), &l.loc));
                        }
                        if set {
                            if a.own_socket {
                                return Err(msg(
                                    format!("duplicate listen options for {key}"),
                                    &l.loc,
                                ));
                            }
                            a.options = options;
                            a.own_socket = true;
                        }
                        a.servers.push(si);
                        ai
                    }
                    None => {
                        by_key.insert(key.clone(), addrs.len());
                        addrs.push(AddrConf {
                            key,
                            servers: vec![si],
                            default_server: si,
                            ssl: false,
                            http2: false,
                            options,
                            own_socket: set,
                            explicit_default: false,
                            names: Names::default(),
                        });
                        addrs.len() - 1
                    }
                };
                let a = &mut addrs[ai];
                a.ssl |= l.ssl;
                a.http2 |= l.http2;
                if l.default_server {
                    if a.explicit_default {
                        return Err(msg(
                            format!("a duplicate default server for {}", a.key),
                            &l.loc,
                        ));
                    }
                    a.explicit_default = true;
                    a.default_server = si;
                }
            }
        }
        let mut warnings = Vec::new();
        for a in &mut addrs {
            for &si in &a.servers {
                let s = &servers[si];
                // A server without server_name has the name "".
                let implicit = [ServerName::Exact(String::new())];
                let names = if s.names.is_empty() {
                    &implicit[..]
                } else {
                    &s.names[..]
                };
                for n in names {
                    if !a.names.add(n, si) {
                        warnings.push(format!(
                            "conflicting server name \"{}\" on {}, ignored",
                            name_text(n),
                            a.key
                        ));
                    }
                }
            }
        }
        let wildcards = addrs
            .iter()
            .enumerate()
            .filter(|(_, a)| a.key.is_wildcard())
            .map(|(i, a)| {
                let g = a.key.group();
                ((g.0, g.1), i)
            })
            .collect();
        Ok(VhostTable {
            addrs,
            by_key,
            wildcards,
            warnings,
        })
    }

    /// The sockets to bind: per family and port, the wildcard if there is
    /// one (plus the specific addresses that set socket options), else every
    /// address. In order of first appearance in the configuration.
    pub fn listen_addrs(&self) -> Vec<(SocketAddr, ListenOptions)> {
        self.bound()
            .filter_map(|a| match &a.key {
                ListenKey::Inet(sa) => Some((*sa, a.options)),
                ListenKey::Unix(_) => None,
            })
            .collect()
    }

    /// The unix-domain sockets to bind.
    pub fn unix_listens(&self) -> Vec<(PathBuf, ListenOptions)> {
        self.bound()
            .filter_map(|a| match &a.key {
                ListenKey::Unix(p) => Some((p.clone(), a.options)),
                ListenKey::Inet(_) => None,
            })
            .collect()
    }

    fn bound(&self) -> impl Iterator<Item = &AddrConf> {
        self.addrs.iter().filter(move |a| {
            a.key.is_wildcard() || a.own_socket || self.group_wildcard(&a.key).is_none()
        })
    }

    fn group_wildcard(&self, key: &ListenKey) -> Option<usize> {
        let g = key.group();
        if g.2.is_some() {
            return None;
        }
        self.wildcards.get(&(g.0, g.1)).copied()
    }

    /// Every listen address with its servers.
    pub fn addrs(&self) -> &[AddrConf] {
        &self.addrs
    }

    /// The address configuration serving a connection whose local address
    /// (getsockname) is `local`: that address if some server listens on it,
    /// else the wildcard of its family and port.
    pub fn addr_conf(&self, local: SocketAddr) -> Option<&AddrConf> {
        self.addr_index(local).map(|i| &self.addrs[i])
    }

    /// [`addr_conf`](Self::addr_conf)'s place in [`addrs`](Self::addrs):
    /// looked up once per connection, which keeps it.
    pub fn addr_index(&self, local: SocketAddr) -> Option<usize> {
        let key = ListenKey::Inet(local);
        if let Some(&i) = self.by_key.get(&key) {
            return Some(i);
        }
        self.group_wildcard(&key)
    }

    /// [`select`](Self::select) by [`addr_index`](Self::addr_index).
    pub fn select_at(
        &self,
        addr: Option<usize>,
        host: Option<&str>,
    ) -> Option<(usize, Option<RegexCaptures<'_>>)> {
        self.addrs.get(addr?).map(|a| a.select(host))
    }

    /// The server for a connection to `local` with the normalised Host
    /// (from [`normalize_host`]; `None` without Host). Regex captures are
    /// offsets into `host`. `None` only for an address no server listens on.
    pub fn select(
        &self,
        local: SocketAddr,
        host: Option<&str>,
    ) -> Option<(usize, Option<RegexCaptures<'_>>)> {
        self.addr_conf(local).map(|a| a.select(host))
    }

    /// [`select`](Self::select) for a unix-domain listener.
    pub fn select_unix(
        &self,
        path: &Path,
        host: Option<&str>,
    ) -> Option<(usize, Option<RegexCaptures<'_>>)> {
        let i = *self.by_key.get(&ListenKey::Unix(path.to_path_buf()))?;
        Some(self.addrs[i].select(host))
    }
}

fn msg(text: String, loc: &SrcLoc) -> ConfError {
    ConfError::msg(text, loc)
}

impl AddrConf {
    /// The server for a normalised Host on this address.
    pub fn select(&self, host: Option<&str>) -> (usize, Option<RegexCaptures<'_>>) {
        // Without Host, nginx looks the empty name up (it matches `""`).
        let host = host.unwrap_or("");
        match self.names.find(host) {
            Some(found) => found,
            None => (self.default_server, None),
        }
    }

    pub fn options(&self) -> ListenOptions {
        self.options
    }
}

impl Names {
    /// Adds a name; false when it conflicts with one already there (nginx
    /// keeps the first and warns).
    fn add(&mut self, n: &ServerName, si: usize) -> bool {
        match n {
            ServerName::Exact(s) => {
                if self.exact.contains_key(s) || self.bare.contains_key(s) {
                    return false;
                }
                self.exact.insert(s.clone(), si);
            }
            ServerName::WildStart { suffix, also_bare } => {
                if *also_bare {
                    let bare = &suffix[1..];
                    if self.exact.contains_key(bare) || self.bare.contains_key(bare) {
                        return false;
                    }
                    self.bare.insert(bare.to_string(), si);
                    // A `*.x` written earlier keeps the subdomains.
                    self.head.entry(suffix.clone()).or_insert(si);
                } else {
                    if !self.stars.insert(suffix.clone()) {
                        return false;
                    }
                    // A `.x` written earlier keeps the subdomains.
                    self.head.entry(suffix.clone()).or_insert(si);
                }
            }
            ServerName::WildEnd(prefix) => {
                if self.tail.contains_key(prefix) {
                    return false;
                }
                self.tail.insert(prefix.clone(), si);
            }
            ServerName::Regex(r) => self.regexes.push((r.clone(), si)),
        }
        true
    }

    fn find(&self, host: &str) -> Option<(usize, Option<RegexCaptures<'_>>)> {
        if let Some(&s) = self.exact.get(host) {
            return Some((s, None));
        }
        if !self.bare.is_empty() {
            if let Some(&s) = self.bare.get(host) {
                return Some((s, None));
            }
        }
        if !self.head.is_empty() {
            // Longest suffix first: `.b.example.com`, then `.example.com`...
            for (i, _) in host.match_indices('.').filter(|&(i, _)| i > 0) {
                if let Some(&s) = self.head.get(&host[i..]) {
                    return Some((s, None));
                }
            }
        }
        if !self.tail.is_empty() {
            // Longest prefix first; something must follow the dot.
            for (i, _) in host.rmatch_indices('.') {
                if i + 1 < host.len() {
                    if let Some(&s) = self.tail.get(&host[..=i]) {
                        return Some((s, None));
                    }
                }
            }
        }
        for (re, s) in &self.regexes {
            if let Some(c) = run_regex(re, host) {
                return Some((*s, Some(c)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(servers: &str) -> Vec<ServerConf> {
        let text = format!("events {{}} http {{ {servers} }}");
        let conf = crate::conf::load_str(&text, "t.conf", Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("{e}"));
        conf.http.expect("http").servers
    }

    fn table(servers: &str) -> VhostTable {
        VhostTable::build(&load(servers)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn pick(t: &VhostTable, local: &str, host: Option<&str>) -> usize {
        t.select(sa(local), host).expect("address served").0
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("Example.COM").unwrap(), "example.com");
        assert!(matches!(
            normalize_host("example.com").unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(normalize_host("example.com:8080").unwrap(), "example.com");
        assert_eq!(normalize_host("example.com.").unwrap(), "example.com");
        assert_eq!(normalize_host("example.com.:80").unwrap(), "example.com");
        assert_eq!(normalize_host("[::1]:80").unwrap(), "[::1]");
        assert_eq!(normalize_host("[::1]").unwrap(), "[::1]");
        assert_eq!(normalize_host("127.0.0.1:80").unwrap(), "127.0.0.1");
        assert_eq!(normalize_host(".example.com").unwrap(), ".example.com");
        assert_eq!(normalize_host("a_b").unwrap(), "a_b");
        assert_eq!(normalize_host("bücher.de").unwrap(), "bücher.de");
        for bad in [
            "",
            ":80",
            ".",
            "a..b",
            "a/b",
            "a b",
            "a\tb",
            "a\0b",
            "a\x7f",
            "example.com..",
        ] {
            assert_eq!(normalize_host(bad), Err(BadHost), "{bad:?}");
        }
    }

    #[test]
    fn name_order_exact_then_wildcards_then_regex() {
        let t = table(
            r#"server { listen 127.0.0.1:8080; server_name _; }
               server { listen 127.0.0.1:8080; server_name example.com www.example.com; }
               server { listen 127.0.0.1:8080; server_name *.example.com; }
               server { listen 127.0.0.1:8080; server_name *.b.example.com; }
               server { listen 127.0.0.1:8080; server_name www.example.*; }
               server { listen 127.0.0.1:8080; server_name www.*; }
               server { listen 127.0.0.1:8080; server_name ~^(?<user>\w+)\.users\.(net|org)$; }
               server { listen 127.0.0.1:8080; server_name ~\.org$; }
               server { listen 127.0.0.1:8080; server_name .example.org; }"#,
        );
        let at = "127.0.0.1:8080";
        assert_eq!(pick(&t, at, Some("example.com")), 1);
        assert_eq!(pick(&t, at, Some("www.example.com")), 1);
        assert_eq!(pick(&t, at, Some("a.example.com")), 2);
        assert_eq!(pick(&t, at, Some("x.y.example.com")), 2);
        assert_eq!(pick(&t, at, Some("a.b.example.com")), 3);
        assert_eq!(pick(&t, at, Some("b.example.com")), 2);
        assert_eq!(pick(&t, at, Some("www.example.net")), 4);
        assert_eq!(pick(&t, at, Some("www.example.co.uk")), 4);
        assert_eq!(pick(&t, at, Some("www.other.net")), 5);
        // A leading wildcard beats a trailing one.
        assert_eq!(pick(&t, at, Some("www.example.example.com")), 2);
        assert_eq!(pick(&t, at, Some("www")), 0);
        // `.example.org` covers the bare name and subdomains, before regexes.
        assert_eq!(pick(&t, at, Some("example.org")), 8);
        assert_eq!(pick(&t, at, Some("a.example.org")), 8);
        assert_eq!(pick(&t, at, Some("x.org")), 7);
        let (s, c) = t.select(sa(at), Some("joe.users.net")).unwrap();
        assert_eq!(s, 6);
        let c = c.unwrap();
        assert_eq!(c.name("user"), Some((0, 3)));
        assert_eq!(c.get(2), Some((10, 13)));
        // Nothing matches: the first server is the default.
        assert_eq!(pick(&t, at, Some("nothing.test")), 0);
        assert_eq!(pick(&t, at, None), 0);
    }

    #[test]
    fn regex_names_are_caseless_and_in_order() {
        let t = table(
            r#"server { listen 127.0.0.1:8081; server_name ~^a; }
               server { listen 127.0.0.1:8081; server_name ~^A ~b; }"#,
        );
        assert_eq!(pick(&t, "127.0.0.1:8081", Some("ab")), 0);
        assert_eq!(pick(&t, "127.0.0.1:8081", Some("b")), 1);
    }

    #[test]
    fn default_server_and_hostless_requests() {
        let t = table(
            r#"server { listen 8082; server_name a; }
               server { listen 8082 default_server; server_name b; }
               server { listen 8082; }"#,
        );
        let at = "10.0.0.1:8082";
        assert_eq!(pick(&t, at, Some("a")), 0);
        assert_eq!(pick(&t, at, Some("zzz")), 1);
        // No Host: the server without server_name has the name "".
        assert_eq!(pick(&t, at, None), 2);
        assert!(t.warnings.is_empty());
    }

    #[test]
    fn address_specific_servers_win_for_their_address() {
        let t = table(
            r#"server { listen 80; server_name any; }
               server { listen 127.0.0.1:80; server_name local; }
               server { listen 127.0.0.2:80; server_name two; }
               server { listen [::]:80; server_name six; }
               server { listen 8083; }"#,
        );
        // Connections to 127.0.0.1 only see the servers listening there.
        assert_eq!(pick(&t, "127.0.0.1:80", Some("any")), 1);
        assert_eq!(pick(&t, "127.0.0.1:80", Some("local")), 1);
        assert_eq!(pick(&t, "127.0.0.2:80", Some("any")), 2);
        assert_eq!(pick(&t, "10.1.2.3:80", Some("local")), 0);
        assert_eq!(pick(&t, "[::1]:80", Some("any")), 3);
        assert_eq!(pick(&t, "[::ffff:10.0.0.1]:80", None), 3);
        assert_eq!(pick(&t, "10.1.2.3:8083", None), 4);
        assert!(t.select(sa("10.1.2.3:9999"), None).is_none());
        assert!(t.select(sa("[::1]:8083"), None).is_none());
        // One socket per family and port: the wildcards.
        assert_eq!(
            t.listen_addrs(),
            vec![
                (sa("0.0.0.0:80"), ListenOptions::default()),
                (sa("[::]:80"), ListenOptions::default()),
                (sa("0.0.0.0:8083"), ListenOptions::default()),
            ]
        );
    }

    #[test]
    fn specific_addresses_with_options_get_their_own_socket() {
        let (_dir, cert, key) = crate::conf::ssl::test_cert_files("vhost", &["localhost"]);
        let t = table(
            &r#"server { listen 80; }
               server { listen 127.0.0.1:80 reuseport backlog=100; }
               server { listen 127.0.0.2:81; }
               server { listen 127.0.0.3:81 ssl http2; ssl_certificate CERT; ssl_certificate_key KEY; }"#
                .replace("CERT", &cert.display().to_string())
                .replace("KEY", &key.display().to_string()),
        );
        assert_eq!(
            t.listen_addrs(),
            vec![
                (sa("0.0.0.0:80"), ListenOptions::default()),
                (
                    sa("127.0.0.1:80"),
                    ListenOptions {
                        reuseport: true,
                        backlog: 100,
                        ipv6only: true
                    }
                ),
                (sa("127.0.0.2:81"), ListenOptions::default()),
                (sa("127.0.0.3:81"), ListenOptions::default()),
            ]
        );
        let a = t.addr_conf(sa("127.0.0.3:81")).unwrap();
        assert!(a.ssl && a.http2);
        assert!(!t.addr_conf(sa("127.0.0.2:81")).unwrap().ssl);
    }

    #[test]
    fn default_listen_is_port_80_on_every_address() {
        let t = table("server { server_name a; } server { server_name b; }");
        assert_eq!(
            t.listen_addrs(),
            vec![(sa("0.0.0.0:80"), ListenOptions::default())]
        );
        assert_eq!(pick(&t, "192.0.2.1:80", Some("b")), 1);
        assert_eq!(pick(&t, "192.0.2.1:80", Some("c")), 0);
    }

    #[test]
    fn duplicate_default_server_is_an_error() {
        let servers = load(
            "server { listen 80 default_server; }
             server { listen 0.0.0.0:80 default; }",
        );
        let e = VhostTable::build(&servers).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a duplicate default server for 0.0.0.0:80 in t.conf:2"
        );
        // Different addresses may each have one.
        let ok = load(
            "server { listen 80 default_server; }
             server { listen 127.0.0.1:80 default_server; }",
        );
        assert!(VhostTable::build(&ok).is_ok());
    }

    #[test]
    fn duplicate_listen_and_options_are_errors() {
        let e = VhostTable::build(&load("server { listen 80; listen *:80; }")).unwrap_err();
        assert_eq!(e.to_string(), "a duplicate listen 0.0.0.0:80 in t.conf:1");
        let e = VhostTable::build(&load(
            "server { listen 80 reuseport; } server { listen 80 backlog=5; }",
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "duplicate listen options for 0.0.0.0:80 in t.conf:1"
        );
    }

    #[test]
    fn conflicting_names_warn_and_the_first_wins() {
        let t = table(
            r#"server { listen 80; server_name a.test *.w.test www.x.*; }
               server { listen 80; server_name A.test *.w.test www.x.* b.test; }
               server { listen 80; }
               server { listen 80; }
               server { listen 81; server_name a.test; }"#,
        );
        assert_eq!(
            t.warnings,
            vec![
                "conflicting server name \"a.test\" on 0.0.0.0:80, ignored",
                "conflicting server name \"*.w.test\" on 0.0.0.0:80, ignored",
                "conflicting server name \"www.x.*\" on 0.0.0.0:80, ignored",
                "conflicting server name \"\" on 0.0.0.0:80, ignored",
            ]
        );
        assert_eq!(pick(&t, "1.2.3.4:80", Some("a.test")), 0);
        assert_eq!(pick(&t, "1.2.3.4:80", Some("b.test")), 1);
        assert_eq!(pick(&t, "1.2.3.4:80", None), 2);
        assert_eq!(pick(&t, "1.2.3.4:81", Some("a.test")), 4);
    }

    #[test]
    fn dot_wildcard_conflicts_with_the_exact_name() {
        let t = table(
            r#"server { listen 80; server_name example.com; }
               server { listen 80; server_name .example.com; }"#,
        );
        assert_eq!(
            t.warnings,
            vec!["conflicting server name \".example.com\" on 0.0.0.0:80, ignored"]
        );
        // nginx drops the whole name, subdomains included.
        assert_eq!(pick(&t, "1.2.3.4:80", Some("example.com")), 0);
        assert_eq!(pick(&t, "1.2.3.4:80", Some("www.example.com")), 0);
    }

    #[test]
    fn unix_listeners() {
        let t = table(
            r#"server { listen unix:/tmp/s.sock; server_name a; }
               server { listen unix:/tmp/s.sock; server_name b; }"#,
        );
        assert!(t.listen_addrs().is_empty());
        assert_eq!(
            t.unix_listens(),
            vec![(PathBuf::from("/tmp/s.sock"), ListenOptions::default())]
        );
        let p = Path::new("/tmp/s.sock");
        assert_eq!(t.select_unix(p, Some("b")).unwrap().0, 1);
        assert_eq!(t.select_unix(p, Some("c")).unwrap().0, 0);
        assert!(t.select_unix(Path::new("/tmp/x"), None).is_none());
    }
}
