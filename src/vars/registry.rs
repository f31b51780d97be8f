//! The variables sluice knows, resolved from their names once at load.

use std::collections::HashMap;

use http::HeaderName;

macro_rules! builtins {
    ($($variant:ident = $name:literal,)*) => {
        /// Variables with a fixed name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Builtin { $($variant,)* }

        impl Builtin {
            pub const ALL: &'static [Builtin] = &[$(Builtin::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Builtin::$variant => $name,)* }
            }

            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(Builtin::$variant),)* _ => None }
            }
        }
    };
}

builtins! {
    RemoteAddr = "remote_addr",
    RemotePort = "remote_port",
    RemoteUser = "remote_user",
    BinaryRemoteAddr = "binary_remote_addr",
    Host = "host",
    Hostname = "hostname",
    Args = "args",
    QueryString = "query_string",
    IsArgs = "is_args",
    Request = "request",
    RequestMethod = "request_method",
    RequestUri = "request_uri",
    Uri = "uri",
    DocumentUri = "document_uri",
    Scheme = "scheme",
    Https = "https",
    ServerName = "server_name",
    ServerAddr = "server_addr",
    ServerPort = "server_port",
    ServerProtocol = "server_protocol",
    Status = "status",
    BodyBytesSent = "body_bytes_sent",
    BytesSent = "bytes_sent",
    BytesReceived = "bytes_received",
    RequestLength = "request_length",
    RequestTime = "request_time",
    RequestId = "request_id",
    RequestBody = "request_body",
    ContentLength = "content_length",
    ContentType = "content_type",
    Msec = "msec",
    Pid = "pid",
    TimeLocal = "time_local",
    TimeIso8601 = "time_iso8601",
    Connection = "connection",
    ConnectionRequests = "connection_requests",
    ConnectionsActive = "connections_active",
    ProxyHost = "proxy_host",
    ProxyPort = "proxy_port",
    ProxyAddXForwardedFor = "proxy_add_x_forwarded_for",
    UpstreamAddr = "upstream_addr",
    UpstreamStatus = "upstream_status",
    UpstreamResponseTime = "upstream_response_time",
    UpstreamConnectTime = "upstream_connect_time",
    UpstreamHeaderTime = "upstream_header_time",
    UpstreamResponseLength = "upstream_response_length",
    UpstreamBytesSent = "upstream_bytes_sent",
    UpstreamBytesReceived = "upstream_bytes_received",
    SslProtocol = "ssl_protocol",
    SslCipher = "ssl_cipher",
    SslServerName = "ssl_server_name",
    SslSessionReused = "ssl_session_reused",
    NginxVersion = "nginx_version",
    RealpathRoot = "realpath_root",
    DocumentRoot = "document_root",
    LimitRate = "limit_rate",
    Pipe = "pipe",
    Realip = "realip_remote_addr",
    TcpInfoRtt = "tcpinfo_rtt",
    GzipRatio = "gzip_ratio",
}

/// A variable reference, resolved at load.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Var {
    Builtin(Builtin),
    /// `$http_user_agent`: a request header, named as parsed at load (`-` for
    /// `_`); `None` for a name no header can have, which is never found.
    Http(Option<HeaderName>),
    /// `$sent_http_content_type`: a response header.
    SentHttp(Option<HeaderName>),
    /// `$upstream_http_server`: a header of the upstream's response.
    UpstreamHttp(Option<HeaderName>),
    /// `$cookie_NAME`.
    Cookie(Box<str>),
    /// `$arg_NAME`.
    Arg(Box<str>),
    /// `$1`..`$9` (and `$0`) from the last regex that matched.
    Capture(u8),
    /// A named capture `(?<name>...)` of a `server_name`, `location` or `map` regex.
    Named(Box<str>),
    /// A variable defined by `map`, by its index in the http block's maps.
    Map(usize),
    /// A variable defined by `set`, by its index.
    Set(usize),
}

/// Names defined by the configuration itself: `map` targets, `set` targets and
/// regex named captures. Built-ins and prefixed families need no registration.
#[derive(Clone, Debug, Default)]
pub struct VarRegistry {
    maps: HashMap<String, usize>,
    sets: HashMap<String, usize>,
    named: Vec<String>,
}

impl VarRegistry {
    /// Registers a `map` target variable (without `$`); returns its index, or
    /// `None` if a map already defines it.
    pub fn add_map(&mut self, name: &str) -> Option<usize> {
        if self.maps.contains_key(name) {
            return None;
        }
        let idx = self.maps.len();
        self.maps.insert(name.to_string(), idx);
        Some(idx)
    }

    pub fn add_set(&mut self, name: &str) -> usize {
        let next = self.sets.len();
        *self.sets.entry(name.to_string()).or_insert(next)
    }

    pub fn add_named_capture(&mut self, name: &str) {
        if !self.named.iter().any(|n| n == name) {
            self.named.push(name.to_string());
        }
    }

    pub fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.get(name).copied()
    }

    /// Resolves a variable name as written after `$`.
    pub fn resolve(&self, name: &str) -> Option<Var> {
        if let Some(&i) = self.maps.get(name) {
            return Some(Var::Map(i));
        }
        if let Some(&i) = self.sets.get(name) {
            return Some(Var::Set(i));
        }
        if let Some(b) = Builtin::from_name(name) {
            return Some(Var::Builtin(b));
        }
        if name.len() == 1 && name.as_bytes()[0].is_ascii_digit() {
            return Some(Var::Capture(name.as_bytes()[0] - b'0'));
        }
        let header = |rest: &str| HeaderName::from_bytes(rest.replace('_', "-").as_bytes()).ok();
        if let Some(rest) = name.strip_prefix("http_") {
            return Some(Var::Http(header(rest)));
        }
        if let Some(rest) = name.strip_prefix("sent_http_") {
            return Some(Var::SentHttp(header(rest)));
        }
        if let Some(rest) = name.strip_prefix("upstream_http_") {
            return Some(Var::UpstreamHttp(header(rest)));
        }
        if let Some(rest) = name.strip_prefix("cookie_") {
            return Some(Var::Cookie(rest.into()));
        }
        if let Some(rest) = name.strip_prefix("arg_") {
            return Some(Var::Arg(rest.into()));
        }
        if self.named.iter().any(|n| n == name) {
            return Some(Var::Named(name.into()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_families() {
        let mut reg = VarRegistry::default();
        assert_eq!(reg.resolve("host"), Some(Var::Builtin(Builtin::Host)));
        assert_eq!(
            reg.resolve("http_X_Real_IP"),
            Some(Var::Http(Some(HeaderName::from_static("x-real-ip"))))
        );
        assert_eq!(reg.resolve("arg_id"), Some(Var::Arg("id".into())));
        assert_eq!(reg.resolve("7"), Some(Var::Capture(7)));
        assert_eq!(reg.resolve("connection_upgrade"), None);
        let i = reg.add_map("connection_upgrade").unwrap();
        assert_eq!(reg.resolve("connection_upgrade"), Some(Var::Map(i)));
        assert_eq!(reg.add_map("connection_upgrade"), None);
        reg.add_named_capture("domain");
        assert_eq!(reg.resolve("domain"), Some(Var::Named("domain".into())));
    }

    #[test]
    fn builtin_names_round_trip() {
        for b in Builtin::ALL {
            assert_eq!(Builtin::from_name(b.name()), Some(*b));
        }
    }
}
