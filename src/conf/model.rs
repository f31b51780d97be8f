//! The typed configuration: what a load produces, validated, with nginx's
//! http -> server -> location inheritance already resolved.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;

use super::error::SrcLoc;
use super::parse::{Directive, SourceFiles};
use crate::vars::Template;

/// A whole loaded configuration.
#[derive(Debug)]
pub struct Config {
    pub main: MainConf,
    pub events: EventsConf,
    pub http: Option<HttpConf>,
    /// The directive tree as read, for `-T` and tests.
    pub tree: Vec<Directive>,
    /// Every file read, in order, for `-T`.
    pub sources: SourceFiles,
    /// One `[warn]` line per directive accepted without effect.
    pub warnings: Vec<String>,
    /// The prefix relative paths (logs, pid) resolve against.
    pub prefix: PathBuf,
    pub conf_file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerProcesses {
    Auto,
    Count(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warn,
    Error,
    Crit,
    Alert,
    Emerg,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "notice" => LogLevel::Notice,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "crit" => LogLevel::Crit,
            "alert" => LogLevel::Alert,
            "emerg" => LogLevel::Emerg,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Notice => "notice",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Crit => "crit",
            LogLevel::Alert => "alert",
            LogLevel::Emerg => "emerg",
        }
    }
}

/// Where the error log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorLogTarget {
    Stderr,
    File(PathBuf),
    /// `/dev/null` and friends are plain files; `off` is not special in nginx
    /// (it writes to a file named "off"), and neither is it here.
    Syslog(String),
}

#[derive(Clone, Debug)]
pub struct ErrorLog {
    pub target: ErrorLogTarget,
    pub level: LogLevel,
}

#[derive(Debug)]
pub struct MainConf {
    pub user: Option<(String, Option<String>)>,
    pub worker_processes: WorkerProcesses,
    pub worker_rlimit_nofile: Option<u64>,
    pub worker_shutdown_timeout: Option<Duration>,
    /// sluice: when a graceful shutdown starts closing WebSocket tunnels
    /// (default: at `worker_shutdown_timeout`).
    pub websocket_drain_delay: Option<Duration>,
    /// sluice: the span over which those closes are spread.
    pub websocket_drain_window: Duration,
    /// sluice: on a reload, close the WebSocket tunnels of locations the new
    /// configuration no longer has (default: they run on).
    pub websocket_drain_on_reload: bool,
    /// sluice: how long the worker keeps polling for events after the last
    /// task ran, instead of sleeping (`None`: `busy_poll off`, the default).
    pub busy_poll: Option<Duration>,
    pub error_log: ErrorLog,
    pub pid: PathBuf,
    pub daemon: bool,
    pub master_process: bool,
}

#[derive(Debug)]
pub struct EventsConf {
    pub worker_connections: usize,
}

#[derive(Debug)]
pub struct HttpConf {
    pub servers: Vec<ServerConf>,
    pub upstreams: Vec<Arc<UpstreamConf>>,
    pub maps: Vec<Arc<MapConf>>,
    pub log_formats: HashMap<String, Arc<LogFormat>>,
    /// Variables defined by `set`, by index.
    pub set_vars: usize,
}

/// `log_format name [escape=default|json|none] string...`.
#[derive(Debug)]
pub struct LogFormat {
    pub name: String,
    pub escape: LogEscape,
    pub template: Template,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEscape {
    Default,
    Json,
    None,
}

#[derive(Clone, Debug)]
pub enum AccessLog {
    Off,
    File {
        path: PathBuf,
        format: Arc<LogFormat>,
        buffer: Option<u64>,
        flush: Option<Duration>,
        gzip: Option<u32>,
        /// `if=condition`: the line is written when the value is neither empty nor "0".
        condition: Option<Template>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
}

/// `proxy_redirect`: `off`, or rules tried in order on Location and Refresh.
#[derive(Clone, Debug)]
pub enum ProxyRedirect {
    Off,
    Rules(Vec<RedirectRule>),
}

#[derive(Clone, Debug)]
pub enum RedirectRule {
    /// `default`: the proxy_pass URL is replaced with the location prefix.
    Default,
    Map(RedirectFrom, Template),
}

#[derive(Clone, Debug)]
pub enum RedirectFrom {
    Prefix(Template),
    Regex(Regex),
}

/// `proxy_next_upstream` conditions, as bits.
pub mod next_upstream {
    pub const ERROR: u16 = 1;
    pub const TIMEOUT: u16 = 1 << 1;
    pub const INVALID_HEADER: u16 = 1 << 2;
    pub const HTTP_500: u16 = 1 << 3;
    pub const HTTP_502: u16 = 1 << 4;
    pub const HTTP_503: u16 = 1 << 5;
    pub const HTTP_504: u16 = 1 << 6;
    pub const HTTP_403: u16 = 1 << 7;
    pub const HTTP_404: u16 = 1 << 8;
    pub const HTTP_429: u16 = 1 << 9;
    pub const NON_IDEMPOTENT: u16 = 1 << 10;
    pub const OFF: u16 = 0;

    pub fn parse(word: &str) -> Option<u16> {
        Some(match word {
            "error" => ERROR,
            "timeout" => TIMEOUT,
            "invalid_header" => INVALID_HEADER,
            "http_500" => HTTP_500,
            "http_502" => HTTP_502,
            "http_503" => HTTP_503,
            "http_504" => HTTP_504,
            "http_403" => HTTP_403,
            "http_404" => HTTP_404,
            "http_429" => HTTP_429,
            "non_idempotent" => NON_IDEMPOTENT,
            "off" => OFF,
            _ => return None,
        })
    }
}

/// `gzip_proxied` conditions, as bits.
pub mod gzip_proxied {
    pub const EXPIRED: u16 = 1;
    pub const NO_CACHE: u16 = 1 << 1;
    pub const NO_STORE: u16 = 1 << 2;
    pub const PRIVATE: u16 = 1 << 3;
    pub const NO_LAST_MODIFIED: u16 = 1 << 4;
    pub const NO_ETAG: u16 = 1 << 5;
    pub const AUTH: u16 = 1 << 6;
    pub const ANY: u16 = 1 << 7;
    pub const OFF: u16 = 0;

    pub fn parse(word: &str) -> Option<u16> {
        Some(match word {
            "expired" => EXPIRED,
            "no-cache" => NO_CACHE,
            "no-store" => NO_STORE,
            "private" => PRIVATE,
            "no_last_modified" => NO_LAST_MODIFIED,
            "no_etag" => NO_ETAG,
            "auth" => AUTH,
            "any" => ANY,
            "off" => OFF,
            _ => return None,
        })
    }
}

/// `proxy_buffers 4 64k` and the like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bufs {
    pub count: u64,
    pub size: u64,
}

/// Declares the settings that inherit http -> server -> location: an
/// all-`Option` struct for each level as written, and the resolved struct with
/// nginx's defaults that the rest of sluice reads.
macro_rules! inherited {
    ($($field:ident : $ty:ty = $default:expr,)*) => {
        /// Settings as written at one level; `None` means "inherit".
        #[derive(Clone, Debug, Default)]
        pub struct LevelSettings { $(pub $field: Option<$ty>,)* }

        impl LevelSettings {
            /// Fills what this level leaves unset from its parent.
            pub fn inherit(&mut self, parent: &LevelSettings) {
                $(if self.$field.is_none() { self.$field = parent.$field.clone(); })*
            }

            /// Applies nginx's defaults to whatever is still unset.
            pub fn resolve(&self) -> Settings {
                Settings { $($field: self.$field.clone().unwrap_or_else(|| $default),)* }
            }
        }

        /// Settings in force at a location (or server), defaults applied.
        #[derive(Clone, Debug)]
        pub struct Settings { $(pub $field: $ty,)* }
    };
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

inherited! {
    default_type: String = "text/plain".to_string(),
    types: Arc<HashMap<String, String>> = Arc::new(HashMap::new()),
    client_header_buffer_size: u64 = 1024,
    large_client_header_buffers: Bufs = Bufs { count: 4, size: 8192 },
    client_header_timeout: Duration = secs(60),
    client_body_timeout: Duration = secs(60),
    client_max_body_size: u64 = 1 << 20,
    client_body_buffer_size: u64 = 16 << 10,
    keepalive_timeout: Duration = secs(75),
    keepalive_requests: u64 = 1000,
    keepalive_time: Duration = secs(3600),
    send_timeout: Duration = secs(60),
    reset_timedout_connection: bool = false,
    tcp_nodelay: bool = true,
    server_tokens: bool = true,
    underscores_in_headers: bool = false,
    ignore_invalid_headers: bool = true,
    merge_slashes: bool = true,
    absolute_redirect: bool = true,
    port_in_redirect: bool = true,
    server_name_in_redirect: bool = false,
    chunked_transfer_encoding: bool = true,
    access_log: Arc<Vec<AccessLog>> = Arc::new(Vec::new()),
    proxy_set_header: Arc<Vec<(String, Template)>> = Arc::new(Vec::new()),
    proxy_http_version: HttpVersion = HttpVersion::Http10,
    proxy_redirect: ProxyRedirect = ProxyRedirect::Rules(vec![RedirectRule::Default]),
    proxy_connect_timeout: Duration = secs(60),
    proxy_read_timeout: Duration = secs(60),
    proxy_send_timeout: Duration = secs(60),
    proxy_buffering: bool = true,
    proxy_request_buffering: bool = true,
    proxy_buffer_size: u64 = 4096,
    proxy_buffers: Bufs = Bufs { count: 8, size: 4096 },
    proxy_pass_request_headers: bool = true,
    proxy_pass_request_body: bool = true,
    proxy_hide_header: Arc<Vec<String>> = Arc::new(Vec::new()),
    proxy_pass_header: Arc<Vec<String>> = Arc::new(Vec::new()),
    proxy_next_upstream: u16 = next_upstream::ERROR | next_upstream::TIMEOUT,
    proxy_next_upstream_tries: u64 = 0,
    proxy_next_upstream_timeout: Duration = Duration::ZERO,
    proxy_ignore_client_abort: bool = false,
    proxy_method: Option<String> = None,
    proxy_socket_keepalive: bool = false,
    gzip: bool = false,
    gzip_min_length: u64 = 20,
    gzip_http_version: HttpVersion = HttpVersion::Http11,
    gzip_comp_level: u32 = 1,
    gzip_types: Arc<Vec<String>> = Arc::new(vec!["text/html".to_string()]),
    gzip_vary: bool = false,
    gzip_proxied: u16 = gzip_proxied::OFF,
    gzip_disable: Arc<Vec<Regex>> = Arc::new(Vec::new()),
    // h2: HTTP/2 from clients (src/server/h2.rs).
    http2: bool = false,
    http2_max_concurrent_streams: u64 = 128,
    http2_recv_buffer_size: u64 = 256 << 10,
    http2_extended_connect: bool = true,
    // tls: the server side's ssl_* settings (src/conf/ssl.rs).
    ssl_certificate: Arc<Vec<crate::conf::ssl::SslFile>> = Arc::new(Vec::new()),
    ssl_certificate_key: Arc<Vec<crate::conf::ssl::SslFile>> = Arc::new(Vec::new()),
    ssl_protocols: u8 = crate::conf::ssl::TLS12 | crate::conf::ssl::TLS13,
    ssl_ciphers: Arc<crate::conf::ssl::Ciphers> = Arc::new(crate::conf::ssl::Ciphers::default()),
    ssl_prefer_server_ciphers: bool = false,
    ssl_session_cache: crate::conf::ssl::SessionCache = crate::conf::ssl::SessionCache::None,
    ssl_session_timeout: Duration = secs(300),
    ssl_session_tickets: bool = true,
    // tls: proxy_ssl_* for `proxy_pass https://`.
    proxy_ssl_verify: bool = false,
    proxy_ssl_trusted_certificate: Option<crate::conf::ssl::SslFile> = None,
    proxy_ssl_verify_depth: u64 = 1,
    proxy_ssl_server_name: bool = false,
    proxy_ssl_name: Option<String> = None,
    proxy_ssl_certificate: Option<crate::conf::ssl::SslFile> = None,
    proxy_ssl_certificate_key: Option<crate::conf::ssl::SslFile> = None,
    proxy_ssl_protocols: u8 = crate::conf::ssl::TLS12 | crate::conf::ssl::TLS13,
    proxy_ssl_ciphers: Arc<crate::conf::ssl::Ciphers> = Arc::new(crate::conf::ssl::Ciphers::default()),
    proxy_ssl_session_reuse: bool = true,
    // Compiled from the above where the location's proxy_pass is https.
    proxy_ssl: Option<Arc<crate::conf::ssl::UpstreamTls>> = None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `listen 8080`, `listen *:8080`: every IPv4 address.
    AnyV4(u16),
    Addr(SocketAddr),
    Unix(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Listen {
    pub addr: ListenAddr,
    pub default_server: bool,
    pub reuseport: bool,
    pub backlog: Option<i32>,
    pub ssl: bool,
    pub http2: bool,
    pub ipv6only: bool,
    pub loc: SrcLoc,
}

impl ListenAddr {
    /// The socket address to bind.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::AnyV4(port) => Some(SocketAddr::from(([0, 0, 0, 0], *port))),
            ListenAddr::Addr(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        }
    }
}

#[derive(Clone, Debug)]
pub enum ServerName {
    Exact(String),
    /// `*.example.com` or `.example.com`: the suffix including the dot.
    /// `.example.com` also matches `example.com` itself (`also_bare`).
    WildStart {
        suffix: String,
        also_bare: bool,
    },
    /// `www.example.*`: the prefix including the dot.
    WildEnd(String),
    Regex(Regex),
}

/// The content a request in a location gets.
#[derive(Clone, Debug)]
pub enum Handler {
    /// No content handler: nginx would serve static files.
    None,
    Proxy(Arc<ProxyPass>),
    Return(Return),
    /// Tengine's `check_status [html|csv|json]`: the active health-check
    /// verdicts of every checked peer.
    CheckStatus(StatusFormat),
    /// `stub_status`: nginx's connection counters as text.
    StubStatus,
    /// `prometheus_metrics` (sluice): metrics in Prometheus' text format.
    Prometheus,
    /// `status_page` (sluice): the same figures as an HTML page.
    StatusPage,
}

/// Output format of `check_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFormat {
    Html,
    Csv,
    Json,
}

#[derive(Clone, Debug)]
pub struct Return {
    pub code: u16,
    /// Body text, or the URL for 301/302/303/307/308.
    pub text: Option<Template>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Clone, Debug)]
pub struct ProxyPass {
    pub scheme: Scheme,
    /// The upstream group (explicit, or implicit for `host:port`).
    pub upstream: Arc<UpstreamConf>,
    /// `$proxy_host`: the group name or `host[:port]` as written.
    pub proxy_host: String,
    /// `$proxy_port`.
    pub proxy_port: u16,
    /// The URI part after the host (`/` in `http://b/`), when there is one.
    pub uri: Option<String>,
    pub url: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocationMatch {
    /// `location = /x`
    Exact(String),
    /// `location /x`
    Prefix(String),
    /// `location ^~ /x`
    PrefixNoRegex(String),
    /// `location ~ re` / `location ~* re`
    Regex { pattern: String, caseless: bool },
    /// `location @name`
    Named(String),
}

#[derive(Clone, Debug)]
pub struct LocationConf {
    pub matcher: LocationMatch,
    /// Compiled for `Regex` matchers.
    pub regex: Option<Regex>,
    pub settings: Arc<Settings>,
    pub handler: Handler,
    pub internal: bool,
    pub children: Vec<LocationConf>,
    pub loc: SrcLoc,
}

#[derive(Clone, Debug)]
pub struct ServerConf {
    pub listens: Vec<Listen>,
    pub names: Vec<ServerName>,
    /// The first name, for `$server_name` (empty when none).
    pub primary_name: String,
    pub settings: Arc<Settings>,
    /// `return` at server level runs before any location.
    pub server_return: Option<Return>,
    pub locations: Vec<LocationConf>,
    pub loc: SrcLoc,
    /// tls: certificates and handshake settings, when the server has any
    /// `ssl_certificate`.
    pub tls: Option<Arc<crate::conf::ssl::ServerTls>>,
}

#[derive(Clone, Debug)]
pub struct UpstreamServer {
    /// As written, for messages and `$upstream_addr` grouping.
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub backup: bool,
    pub down: bool,
    pub max_conns: u32,
}

#[derive(Clone, Debug)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    IpHash,
    Hash { key: Template, consistent: bool },
    Random { two: bool, least_conn: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckType {
    Tcp,
    Http,
}

#[derive(Clone, Debug)]
pub struct HealthCheck {
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
    pub timeout: Duration,
    pub kind: CheckType,
    pub default_down: bool,
    pub port: Option<u16>,
    pub http_send: String,
    /// Bits: 1 << (class - 1) for http_1xx .. http_5xx.
    pub expect_alive: u8,
}

#[derive(Debug)]
pub struct UpstreamConf {
    pub name: String,
    pub servers: Vec<UpstreamServer>,
    pub balance: Balance,
    pub keepalive: Option<u32>,
    pub keepalive_requests: u64,
    pub keepalive_timeout: Duration,
    pub keepalive_time: Duration,
    pub check: Option<HealthCheck>,
    /// Created by `proxy_pass http://host:port` rather than an `upstream` block.
    pub implicit: bool,
    pub loc: SrcLoc,
}

/// `map $source $target { ... }`.
#[derive(Debug)]
pub struct MapConf {
    pub source: Template,
    pub target: String,
    pub default: Template,
    pub hostnames: bool,
    pub exact: HashMap<String, Template>,
    /// `*.example.com` / `.example.com` entries (with `hostnames`): suffix -> value.
    pub wild_start: Vec<(String, bool, Template)>,
    /// `www.example.*` entries (with `hostnames`).
    pub wild_end: Vec<(String, Template)>,
    pub regexes: Vec<(Regex, Template)>,
    pub volatile: bool,
    pub loc: SrcLoc,
}
