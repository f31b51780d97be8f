//! Runtime evaluation of variables and templates against one request.
//!
//! Values follow nginx 1.22's formats. nginx distinguishes a variable that is
//! "not found" from one that is found but empty (the access log writes `-`
//! only for the former); [`eval_var`] reports that, [`var_value`] ignores it.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName};

use super::registry::{Builtin, Var};
use super::template::{Part, Template};
use crate::conf::model::{MapConf, ProxyPass};

/// What sluice knows about the client connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// `$connection`: the connection serial number.
    pub id: u64,
    /// `"http"` or `"https"`.
    pub scheme: &'static str,
    /// The handshake's facts on a TLS connection.
    pub tls: Option<Box<TlsInfo>>,
}

/// What `$ssl_protocol`, `$ssl_cipher`, `$ssl_server_name` and
/// `$ssl_session_reused` show, in OpenSSL's words.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    pub protocol: &'static str,
    pub cipher: &'static str,
    pub server_name: Option<Box<str>>,
    pub reused: bool,
}

/// Regex captures of the last match, owned so they outlive the match.
#[derive(Clone, Debug, Default)]
pub struct Captures {
    subject: Box<str>,
    /// Byte ranges of group 0..n; `None` for a group that did not take part.
    groups: Vec<Option<(usize, usize)>>,
    /// Named groups and their index.
    names: Vec<(Box<str>, usize)>,
}

impl Captures {
    /// Runs `re` on `subject`; `None` when it does not match.
    pub fn from_regex(re: &regex::Regex, subject: &str) -> Option<Captures> {
        let caps = re.captures(subject)?;
        let groups = (0..caps.len())
            .map(|i| caps.get(i).map(|m| (m.start(), m.end())))
            .collect();
        let names = re
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (Box::from(n), i)))
            .collect();
        Some(Captures {
            subject: subject.into(),
            groups,
            names,
        })
    }

    /// Owned captures from a match made elsewhere (server and location
    /// selection), so they outlive the routing tables' borrow.
    pub fn from_locations(
        re: &regex::Regex,
        locs: &regex::CaptureLocations,
        subject: &str,
    ) -> Captures {
        let groups = (0..locs.len()).map(|i| locs.get(i)).collect();
        let names = re
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (Box::from(n), i)))
            .collect();
        Captures {
            subject: subject.into(),
            groups,
            names,
        }
    }

    /// Group `i` (0 is the whole match).
    pub fn get(&self, i: usize) -> Option<&str> {
        let (s, e) = (*self.groups.get(i)?)?;
        self.subject.get(s..e)
    }

    pub fn named(&self, name: &str) -> Option<&str> {
        let i = self.names.iter().find(|(n, _)| &**n == name)?.1;
        self.get(i)
    }

    /// Number of groups including group 0.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// The response as sent to the client (for the access log).
#[derive(Clone, Debug, Default)]
pub struct ResponseInfo {
    pub status: u16,
    pub headers: HeaderMap,
    pub body_bytes_sent: u64,
    pub bytes_sent: u64,
}

/// One try at a peer, as the `$upstream_*` variables list tries. Times are
/// kept in milliseconds, the precision nginx prints them with; they are
/// formatted only when a log line asks for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamTry {
    /// The peer; `None` when no peer was live (nginx names the group then).
    pub addr: Option<SocketAddr>,
    pub status: u16,
    pub connect_ms: Option<u32>,
    pub header_ms: Option<u32>,
    pub response_ms: Option<u32>,
}

/// A duration in whole milliseconds, rounded as nginx's `%T.%03M` shows it.
pub fn millis(d: std::time::Duration) -> u32 {
    u32::try_from((d.as_micros() + 500) / 1000).unwrap_or(u32::MAX)
}

/// What the proxy learnt from the upstream: one entry per try, formatted
/// only when a variable is read.
#[derive(Clone, Debug, Default)]
pub struct UpstreamInfo {
    pub tries: Vec<UpstreamTry>,
    /// The group's name, for a try that found no live peer.
    pub group: Option<Box<str>>,
    pub headers: Option<HeaderMap>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl UpstreamInfo {
    /// Sets the last try's response time (once its response has ended).
    pub fn set_last_response(&mut self, d: std::time::Duration) {
        if let Some(t) = self.tries.last_mut() {
            t.response_ms = Some(millis(d));
        }
    }

    /// The sum of the tries' response times, if any try has one (for the
    /// metrics' upstream time).
    pub fn response_total(&self) -> Option<std::time::Duration> {
        let mut total = None;
        for ms in self.tries.iter().filter_map(|t| t.response_ms) {
            *total.get_or_insert(0u64) += u64::from(ms);
        }
        total.map(std::time::Duration::from_millis)
    }
}

/// Which value of each try an `$upstream_*` variable lists.
#[derive(Clone, Copy)]
enum TryField {
    Addr,
    Status,
    Connect,
    Header,
    Response,
}

/// nginx's list of one value per try, `", "` between tries, `-` for a
/// value a try does not have.
fn upstream_tries(cx: &VarCtx<'_>, out: &mut Vec<u8>, field: TryField) -> bool {
    let Some(up) = cx.upstream.filter(|u| !u.tries.is_empty()) else {
        return false;
    };
    for (i, t) in up.tries.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        let ms = match field {
            TryField::Addr => {
                match t.addr {
                    Some(SocketAddr::V4(a)) => {
                        put_ip(out, IpAddr::V4(*a.ip()));
                        out.push(b':');
                        push_u64(out, a.port().into());
                    }
                    // As nginx names an IPv6 peer: "[::1]:8080".
                    Some(a) => {
                        let _ = write!(out, "{a}");
                    }
                    None => out.extend_from_slice(up.group.as_deref().unwrap_or("-").as_bytes()),
                }
                continue;
            }
            TryField::Status => {
                push_u64(out, t.status.into());
                continue;
            }
            TryField::Connect => t.connect_ms,
            TryField::Header => t.header_ms,
            TryField::Response => t.response_ms,
        };
        match ms {
            Some(ms) => push_msec(out, ms.into()),
            None => out.push(b'-'),
        }
    }
    true
}

/// Milliseconds as nginx's `%T.%03M`: seconds, a dot, three digits.
pub fn push_msec(out: &mut Vec<u8>, ms: u64) {
    push_u64(out, ms / 1000);
    let frac = ms % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Everything a variable may read, borrowed for the duration of one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct VarCtx<'a> {
    pub conn: &'a ConnInfo,
    pub connection_requests: u64,
    /// As received: method, uri (request target), version, headers.
    pub req: &'a http::request::Parts,
    /// `$uri`: normalised, decoded path.
    pub uri: &'a str,
    /// Query string without '?'; `None` when the target had no '?'.
    pub args: Option<&'a str>,
    /// `$server_name`.
    pub server_name: &'a str,
    /// `$host` (lower-case, no port; falls back to server_name when empty).
    pub host: &'a str,
    pub captures: Option<&'a Captures>,
    pub maps: &'a [Arc<MapConf>],
    pub proxy: Option<&'a ProxyPass>,
    pub start: Instant,
    pub start_wall: SystemTime,
    pub request_length: u64,
    pub resp: Option<&'a ResponseInfo>,
    pub upstream: Option<&'a UpstreamInfo>,
}

impl Template {
    /// Appends the template's value to `out`; missing variables add nothing.
    pub fn render(&self, cx: &VarCtx<'_>, out: &mut Vec<u8>) {
        for part in self.parts.iter() {
            match part {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::Var(v) => {
                    eval_var(v, cx, out);
                }
            }
        }
    }

    pub fn render_to_vec(&self, cx: &VarCtx<'_>) -> Vec<u8> {
        if let Some(lit) = self.as_literal() {
            return lit.as_bytes().to_vec();
        }
        let mut out = Vec::with_capacity(64);
        self.render(cx, &mut out);
        out
    }
}

/// Appends the value of `var`; nothing when it is not found, as nginx
/// (substituting `-` is the access log's job).
pub fn var_value(var: &Var, cx: &VarCtx<'_>, out: &mut Vec<u8>) {
    eval_var(var, cx, out);
}

/// Appends the value of `var` and says whether it was found (nginx's
/// `not_found` is the `false` case; a found value may still be empty).
pub fn eval_var(var: &Var, cx: &VarCtx<'_>, out: &mut Vec<u8>) -> bool {
    match var {
        Var::Builtin(b) => builtin(*b, cx, out),
        Var::Http(name) => match name {
            Some(n) => request_header(n, &cx.req.headers, out),
            None => false,
        },
        Var::SentHttp(name) => match (name, cx.resp) {
            (Some(n), Some(r)) => sent_header(n, &r.headers, out),
            _ => false,
        },
        Var::UpstreamHttp(name) => match (name, cx.upstream.and_then(|u| u.headers.as_ref())) {
            (Some(n), Some(h)) => first_header(n, h, out),
            _ => false,
        },
        Var::Cookie(name) => match cookie(&cx.req.headers, name) {
            Some(v) => put(out, v),
            None => false,
        },
        Var::Arg(name) => match cx.args.and_then(|a| arg(a, name)) {
            Some(v) => put(out, v),
            None => false,
        },
        Var::Capture(n) => match cx.captures.and_then(|c| c.get(usize::from(*n))) {
            Some(v) => put(out, v),
            None => false,
        },
        Var::Named(name) => match cx.captures.and_then(|c| c.named(name)) {
            Some(v) => put(out, v),
            None => false,
        },
        Var::Map(i) => match cx.maps.get(*i) {
            Some(m) => {
                super::map::map_lookup(m, cx, out);
                true
            }
            None => false,
        },
        // `set` variables live in the request's rewrite state, which the
        // context does not carry yet.
        Var::Set(_) => false,
    }
}

fn put(out: &mut Vec<u8>, s: &str) -> bool {
    out.extend_from_slice(s.as_bytes());
    true
}

fn put_num(out: &mut Vec<u8>, n: impl Into<u64>) -> bool {
    push_u64(out, n.into());
    true
}

/// Decimal digits of `n`, without the formatting machinery (several
/// numbers go into every access log line).
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) -> bool {
    if let IpAddr::V4(a) = ip {
        for (i, o) in a.octets().into_iter().enumerate() {
            if i > 0 {
                out.push(b'.');
            }
            push_u64(out, o.into());
        }
        return true;
    }
    // nginx prints IPv6 without brackets, and IPv4-mapped as ::ffff:a.b.c.d.
    let _ = write!(out, "{ip}");
    true
}

fn builtin(b: Builtin, cx: &VarCtx<'_>, out: &mut Vec<u8>) -> bool {
    use Builtin as B;
    let req = cx.req;
    match b {
        B::RemoteAddr | B::Realip => put_ip(out, cx.conn.remote.ip()),
        B::RemotePort => put_num(out, cx.conn.remote.port()),
        B::BinaryRemoteAddr => {
            match cx.conn.remote.ip() {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
            true
        }
        B::RemoteUser => match remote_user(&req.headers) {
            Some(u) => {
                out.extend_from_slice(&u);
                true
            }
            None => false,
        },
        B::Host => {
            if cx.host.is_empty() {
                put(out, cx.server_name)
            } else {
                put(out, cx.host)
            }
        }
        B::Hostname => put(out, hostname()),
        B::Args | B::QueryString => match cx.args {
            Some(a) => put(out, a),
            None => false,
        },
        B::IsArgs => {
            if cx.args.is_some_and(|a| !a.is_empty()) {
                out.push(b'?');
            }
            true
        }
        B::Request => {
            out.extend_from_slice(req.method.as_str().as_bytes());
            out.push(b' ');
            if req.version == http::Version::HTTP_2 || req.version == http::Version::HTTP_3 {
                // nginx rebuilds the HTTP/2 request line from the path.
                out.extend_from_slice(request_uri(req).as_bytes());
            } else {
                let _ = write!(out, "{}", req.uri);
            }
            if req.version != http::Version::HTTP_09 {
                out.push(b' ');
                out.extend_from_slice(protocol(req.version).as_bytes());
            }
            true
        }
        B::RequestMethod => put(out, req.method.as_str()),
        B::RequestUri => put(out, request_uri(req)),
        B::Uri | B::DocumentUri => put(out, cx.uri),
        B::Scheme => put(out, cx.conn.scheme),
        B::Https => {
            if cx.conn.scheme == "https" {
                out.extend_from_slice(b"on");
            }
            true
        }
        B::ServerName => put(out, cx.server_name),
        B::ServerAddr => put_ip(out, cx.conn.local.ip()),
        B::ServerPort => put_num(out, cx.conn.local.port()),
        B::ServerProtocol => put(out, protocol(req.version)),
        B::Status => {
            let s = cx.resp.map_or(0, |r| r.status);
            if s < 100 {
                out.extend_from_slice(b"0");
                if s < 10 {
                    out.push(b'0');
                }
            }
            push_u64(out, s.into());
            true
        }
        B::BodyBytesSent => put_num(out, cx.resp.map_or(0, |r| r.body_bytes_sent)),
        B::BytesSent => put_num(out, cx.resp.map_or(0, |r| r.bytes_sent)),
        B::RequestLength => put_num(out, cx.request_length),
        B::RequestTime => {
            push_msec(
                out,
                u64::try_from(cx.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            );
            true
        }
        B::RequestId => {
            request_id(cx, out);
            true
        }
        B::ContentLength => first_header(&header::CONTENT_LENGTH, &req.headers, out),
        B::ContentType => first_header(&header::CONTENT_TYPE, &req.headers, out),
        B::Msec => {
            let d = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            push_msec(out, u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            true
        }
        B::Pid => put_num(out, std::process::id()),
        B::TimeLocal => {
            with_cached_time(|t| out.extend_from_slice(t.time_local()));
            true
        }
        B::TimeIso8601 => {
            with_cached_time(|t| out.extend_from_slice(t.iso8601()));
            true
        }
        B::Connection => put_num(out, cx.conn.id),
        B::ConnectionRequests => put_num(out, cx.connection_requests),
        B::ProxyHost => match cx.proxy {
            Some(p) => put(out, &p.proxy_host),
            None => false,
        },
        B::ProxyPort => match cx.proxy {
            Some(p) => put_num(out, p.proxy_port),
            None => false,
        },
        B::ProxyAddXForwardedFor => {
            // nginx 1.22 joins every X-Forwarded-For line, then adds the client.
            for v in req.headers.get_all(X_FORWARDED_FOR) {
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b", ");
            }
            put_ip(out, cx.conn.remote.ip())
        }
        B::UpstreamAddr => upstream_tries(cx, out, TryField::Addr),
        B::UpstreamStatus => upstream_tries(cx, out, TryField::Status),
        B::UpstreamResponseTime => upstream_tries(cx, out, TryField::Response),
        B::UpstreamConnectTime => upstream_tries(cx, out, TryField::Connect),
        B::UpstreamHeaderTime => upstream_tries(cx, out, TryField::Header),
        B::UpstreamBytesReceived => match cx.upstream {
            Some(u) => put_num(out, u.bytes_received),
            None => false,
        },
        B::UpstreamBytesSent => match cx.upstream {
            Some(u) => put_num(out, u.bytes_sent),
            None => false,
        },
        B::UpstreamResponseLength => match cx.upstream.and_then(|u| u.headers.as_ref()) {
            // The body length the upstream announced; the proxy does not
            // report the counted length separately yet.
            Some(h) => first_header(&header::CONTENT_LENGTH, h, out),
            None => false,
        },
        B::NginxVersion => put(out, crate::runtime::cli::NGINX_VERSION),
        B::SslProtocol => cx.conn.tls.as_ref().is_some_and(|t| put(out, t.protocol)),
        B::SslCipher => cx.conn.tls.as_ref().is_some_and(|t| put(out, t.cipher)),
        B::SslServerName => match cx.conn.tls.as_ref().and_then(|t| t.server_name.as_ref()) {
            Some(n) => put(out, n),
            None => false,
        },
        // nginx says "." for a new session, "r" for a reused one.
        B::SslSessionReused => match &cx.conn.tls {
            Some(t) => put(out, if t.reused { "r" } else { "." }),
            None => false,
        },
        B::LimitRate => put(out, "0"),
        // Requests are not pipelined-marked by hyper; nginx says "." then.
        B::Pipe => put(out, "."),
        B::BytesReceived
        | B::RequestBody
        | B::ConnectionsActive
        | B::RealpathRoot
        | B::DocumentRoot
        | B::TcpInfoRtt
        | B::GzipRatio => false,
    }
}

fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// `$request_uri`: the target's path and query as received (an absolute-form
/// target contributes its path only, as nginx's `unparsed_uri`).
fn request_uri(req: &http::request::Parts) -> &str {
    match req.uri.path_and_query() {
        Some(pq) => pq.as_str(),
        None => "",
    }
}

/// Parsed at compile time: a `&str` name would be parsed at every lookup.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// `$http_NAME`: nginx 1.22 joins Cookie lines with "; " and X-Forwarded-For
/// lines with ", "; any other header gives its first line.
fn request_header(name: &HeaderName, headers: &HeaderMap, out: &mut Vec<u8>) -> bool {
    if *name == header::COOKIE {
        joined(name, headers, b"; ", out)
    } else if *name == X_FORWARDED_FOR {
        joined(name, headers, b", ", out)
    } else {
        first_header(name, headers, out)
    }
}

/// `$sent_http_NAME`: Cache-Control and Link are joined in nginx 1.22.
fn sent_header(name: &HeaderName, headers: &HeaderMap, out: &mut Vec<u8>) -> bool {
    if *name == header::CACHE_CONTROL || *name == header::LINK {
        joined(name, headers, b", ", out)
    } else {
        first_header(name, headers, out)
    }
}

fn first_header(name: &HeaderName, headers: &HeaderMap, out: &mut Vec<u8>) -> bool {
    match headers.get(name) {
        Some(v) => {
            out.extend_from_slice(v.as_bytes());
            true
        }
        None => false,
    }
}

fn joined(name: &HeaderName, headers: &HeaderMap, sep: &[u8], out: &mut Vec<u8>) -> bool {
    let mut found = false;
    for v in headers.get_all(name) {
        if found {
            out.extend_from_slice(sep);
        }
        out.extend_from_slice(v.as_bytes());
        found = true;
    }
    found
}

/// nginx's `ngx_http_parse_multi_header_lines` for `$cookie_NAME`: the name
/// is matched case-insensitively at the start of a pair, optional spaces
/// around `=`, the value runs to the next `;`.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let name = name.as_bytes();
    for h in headers.get_all(header::COOKIE) {
        let b = h.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let mut matched = None;
            if b.len() - i >= name.len() && b[i..i + name.len()].eq_ignore_ascii_case(name) {
                let mut j = i + name.len();
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                if j < b.len() && b[j] == b'=' {
                    j += 1;
                    while j < b.len() && b[j] == b' ' {
                        j += 1;
                    }
                    let end = b[j..]
                        .iter()
                        .position(|&c| c == b';')
                        .map_or(b.len(), |p| j + p);
                    matched = Some((j, end));
                }
                i = j.min(b.len());
            }
            if let Some((s, e)) = matched {
                return std::str::from_utf8(&b[s..e]).ok();
            }
            // Skip to the next pair.
            while i < b.len() {
                let c = b[i];
                i += 1;
                if c == b';' || c == b',' {
                    break;
                }
            }
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
        }
    }
    None
}

/// nginx's `ngx_http_arg`: the first `name=value` pair whose name matches
/// case-insensitively; the value is not decoded.
pub fn arg<'a>(args: &'a str, name: &str) -> Option<&'a str> {
    args.split('&').find_map(|pair| {
        let b = pair.as_bytes();
        if b.len() > name.len()
            && b[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && b[name.len()] == b'='
        {
            pair.get(name.len() + 1..)
        } else {
            None
        }
    })
}

/// `$remote_user`: the user of `Authorization: Basic`, as nginx decodes it.
fn remote_user(headers: &HeaderMap) -> Option<Vec<u8>> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    if v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let rest = &v[6..];
    let start = rest.iter().position(|&c| c != b' ')?;
    let decoded = base64_decode(&rest[start..])?;
    let user_len = decoded.iter().position(|&c| c == b':')?;
    let mut user = decoded;
    user.truncate(user_len);
    Some(user)
}

fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The machine's host name, read once.
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at
        // most that many bytes.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return "localhost".to_string();
        }
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase()
    })
}

/// `$request_id`: 32 hex digits, stable for one request. nginx draws them
/// from RAND_bytes; here they are mixed from the connection, the request's
/// number on it, its start time and the pid, so every evaluation within the
/// request agrees without storing state.
fn request_id(cx: &VarCtx<'_>, out: &mut Vec<u8>) {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let nanos = cx
        .start_wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let a = mix(cx.conn.id ^ mix(cx.connection_requests) ^ u64::from(std::process::id()) << 40);
    let b = mix(nanos ^ a);
    let mut s = String::with_capacity(32);
    let _ = write!(s, "{:016x}{:016x}", mix(a ^ nanos.rotate_left(17)), b);
    out.extend_from_slice(s.as_bytes());
}

/// Time strings formatted once per second per thread, as nginx caches them.
pub struct CachedTime {
    sec: i64,
    time_local: [u8; 26],
    iso8601: [u8; 25],
    error_log: [u8; 19],
}

impl CachedTime {
    /// `21/Nov/2026:06:40:00 +0000`.
    pub fn time_local(&self) -> &[u8] {
        &self.time_local
    }

    /// `2026-11-21T06:40:00+00:00`.
    pub fn iso8601(&self) -> &[u8] {
        &self.iso8601
    }

    /// `2026/11/21 06:40:00`, the error log's timestamp.
    pub fn error_log(&self) -> &[u8] {
        &self.error_log
    }

    fn format(sec: i64) -> CachedTime {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        // SAFETY: zeroed `tm` is a valid value; localtime_r only writes to it.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let t: libc::time_t = sec as libc::time_t;
        // SAFETY: both pointers are valid for the duration of the call.
        unsafe { libc::localtime_r(&t, &mut tm) };
        let (year, mon, day) = (tm.tm_year + 1900, tm.tm_mon, tm.tm_mday);
        let (h, m, s) = (tm.tm_hour, tm.tm_min, tm.tm_sec);
        let off = tm.tm_gmtoff / 60;
        let sign = if off < 0 { '-' } else { '+' };
        let (oh, om) = (off.abs() / 60, off.abs() % 60);
        let month = MONTHS.get(mon as usize).copied().unwrap_or("Jan");
        let mut c = CachedTime {
            sec,
            time_local: [b' '; 26],
            iso8601: [b' '; 25],
            error_log: [b' '; 19],
        };
        let mut w = &mut c.time_local[..];
        let _ = write!(
            w,
            "{day:02}/{month}/{year:04}:{h:02}:{m:02}:{s:02} {sign}{oh:02}{om:02}"
        );
        w = &mut c.iso8601[..];
        let _ = write!(
            w,
            "{year:04}-{:02}-{day:02}T{h:02}:{m:02}:{s:02}{sign}{oh:02}:{om:02}",
            mon + 1
        );
        w = &mut c.error_log[..];
        let _ = write!(w, "{year:04}/{:02}/{day:02} {h:02}:{m:02}:{s:02}", mon + 1);
        c
    }
}

thread_local! {
    static TIME: RefCell<Option<CachedTime>> = const { RefCell::new(None) };
}

/// Calls `f` with the current second's formatted time strings.
pub fn with_cached_time<R>(f: impl FnOnce(&CachedTime) -> R) -> R {
    let sec = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    TIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|t| t.sec != sec) {
            *slot = Some(CachedTime::format(sec));
        }
        match slot.as_ref() {
            Some(t) => f(t),
            None => f(&CachedTime::format(sec)),
        }
    })
}

/// The time strings for a given second (for tests and callers with their own clock).
pub fn format_time(sec: i64) -> CachedTime {
    CachedTime::format(sec)
}

#[cfg(test)]
pub(crate) mod tests {
    #[test]
    fn push_msec_writes_seconds_and_three_digits() {
        for (ms, text) in [
            (0u64, "0.000"),
            (7, "0.007"),
            (45, "0.045"),
            (1003, "1.003"),
            (60_000, "60.000"),
        ] {
            let mut out = Vec::new();
            push_msec(&mut out, ms);
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn push_u64_writes_decimal_digits() {
        for n in [0u64, 7, 10, 99, 100, 65535, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    use super::*;
    use crate::vars::VarRegistry;

    pub(crate) fn conn() -> ConnInfo {
        ConnInfo {
            remote: "192.0.2.7:54321".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
            id: 7,
            scheme: "http",
            tls: None,
        }
    }

    pub(crate) fn parts(target: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method("GET").uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    pub(crate) fn ctx<'a>(
        conn: &'a ConnInfo,
        req: &'a http::request::Parts,
        args: Option<&'a str>,
    ) -> VarCtx<'a> {
        VarCtx {
            conn,
            connection_requests: 3,
            req,
            uri: "/a b",
            args,
            server_name: "example.org",
            host: "example.com",
            captures: None,
            maps: &[],
            proxy: None,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            request_length: 77,
            resp: None,
            upstream: None,
        }
    }

    fn render(text: &str, cx: &VarCtx<'_>) -> String {
        let t = Template::compile(text, &VarRegistry::default()).unwrap();
        String::from_utf8(t.render_to_vec(cx)).unwrap()
    }

    fn found(text: &str, cx: &VarCtx<'_>) -> (bool, Vec<u8>) {
        let var = VarRegistry::default().resolve(text).unwrap();
        let mut out = Vec::new();
        let f = eval_var(&var, cx, &mut out);
        (f, out)
    }

    #[test]
    fn connection_and_request_line() {
        let c = conn();
        let p = parts(
            "/a%20b?x=1&Y=2&y=3",
            &[("host", "Example.COM:8080"), ("user-agent", "curl/8")],
        );
        let cx = ctx(&c, &p, Some("x=1&Y=2&y=3"));
        assert_eq!(
            render("$remote_addr:$remote_port $server_addr:$server_port", &cx),
            "192.0.2.7:54321 127.0.0.1:8080"
        );
        assert_eq!(render("$request", &cx), "GET /a%20b?x=1&Y=2&y=3 HTTP/1.1");
        assert_eq!(
            render("$request_uri|$uri|$document_uri", &cx),
            "/a%20b?x=1&Y=2&y=3|/a b|/a b"
        );
        assert_eq!(
            render("$args|$query_string|$is_args", &cx),
            "x=1&Y=2&y=3|x=1&Y=2&y=3|?"
        );
        assert_eq!(render("$arg_y|$arg_x|$arg_z", &cx), "2|1|");
        assert_eq!(
            render("$request_method $scheme [$https] $server_protocol", &cx),
            "GET http [] HTTP/1.1"
        );
        assert_eq!(
            render("$host $server_name $http_host", &cx),
            "example.com example.org Example.COM:8080"
        );
        assert_eq!(
            render("$connection $connection_requests $request_length", &cx),
            "7 3 77"
        );
        assert_eq!(render("$pid", &cx), std::process::id().to_string());
        assert_eq!(render("$hostname", &cx), hostname());
        assert!(!hostname().is_empty());
        let (f, v) = found("binary_remote_addr", &cx);
        assert!(f);
        assert_eq!(v, vec![192, 0, 2, 7]);
        assert_eq!(found("remote_user", &cx), (false, vec![]));
        assert_eq!(found("http_referer", &cx), (false, vec![]));
        assert_eq!(found("ssl_protocol", &cx), (false, vec![]));
    }

    #[test]
    fn args_found_or_not() {
        let c = conn();
        let p = parts("/x", &[]);
        let cx = ctx(&c, &p, None);
        assert_eq!(found("args", &cx), (false, vec![]));
        assert_eq!(render("[$is_args]", &cx), "[]");
        let p = parts("/x?", &[]);
        let cx = ctx(&c, &p, Some(""));
        assert_eq!(found("args", &cx), (true, vec![]));
        assert_eq!(render("[$is_args]", &cx), "[]");
        // ngx_http_arg needs "=" after the name.
        assert_eq!(arg("a&b=1&ab=2&A=3", "a"), Some("3"));
        assert_eq!(arg("a=&b=1", "a"), Some(""));
        assert_eq!(arg("b=%41", "b"), Some("%41"));
    }

    #[test]
    fn host_falls_back_and_empty_host() {
        let c = conn();
        let p = parts("/", &[]);
        let mut cx = ctx(&c, &p, None);
        cx.host = "";
        assert_eq!(render("$host", &cx), "example.org");
    }

    #[test]
    fn http2_request_line() {
        let c = conn();
        let mut p = parts("https://example.com/p?q", &[]);
        p.version = http::Version::HTTP_2;
        let cx = ctx(&c, &p, Some("q"));
        assert_eq!(
            render("$request|$request_uri|$server_protocol", &cx),
            "GET /p?q HTTP/2.0|/p?q|HTTP/2.0"
        );
        p.version = http::Version::HTTP_10;
        let p2 = parts("/p", &[]);
        let mut p2 = p2;
        p2.version = http::Version::HTTP_10;
        let cx = ctx(&c, &p2, None);
        assert_eq!(render("$request", &cx), "GET /p HTTP/1.0");
    }

    #[test]
    fn headers_cookies_and_forwarding() {
        let c = conn();
        let p = parts(
            "/",
            &[
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-for", "10.0.0.2"),
                ("cookie", "a=1; SID = xyz ;b=2"),
                ("cookie", "c=3"),
                ("accept", "text/html"),
                ("accept", "text/plain"),
                ("authorization", "Basic dXNlcjpwYXNz"),
            ],
        );
        let cx = ctx(&c, &p, None);
        assert_eq!(render("$http_x_forwarded_for", &cx), "10.0.0.1, 10.0.0.2");
        assert_eq!(render("$http_cookie", &cx), "a=1; SID = xyz ;b=2; c=3");
        assert_eq!(render("$http_accept", &cx), "text/html");
        assert_eq!(
            render("$proxy_add_x_forwarded_for", &cx),
            "10.0.0.1, 10.0.0.2, 192.0.2.7"
        );
        assert_eq!(
            render("[$cookie_sid][$cookie_b][$cookie_c][$cookie_d]", &cx),
            "[xyz ][2][3][]"
        );
        assert_eq!(render("$remote_user", &cx), "user");
        let p = parts("/", &[]);
        let cx = ctx(&c, &p, None);
        assert_eq!(render("$proxy_add_x_forwarded_for", &cx), "192.0.2.7");
    }

    #[test]
    fn response_upstream_and_proxy() {
        let c = conn();
        let p = parts("/", &[]);
        let mut cx = ctx(&c, &p, None);
        assert_eq!(
            render("$status $body_bytes_sent $bytes_sent", &cx),
            "000 0 0"
        );
        assert_eq!(found("upstream_addr", &cx), (false, vec![]));
        let mut h = HeaderMap::new();
        h.insert("content-type", "text/plain".parse().unwrap());
        h.append("cache-control", "no-cache".parse().unwrap());
        h.append("cache-control", "private".parse().unwrap());
        let resp = ResponseInfo {
            status: 200,
            headers: h,
            body_bytes_sent: 12,
            bytes_sent: 140,
        };
        let mut uh = HeaderMap::new();
        uh.insert("server", "echo".parse().unwrap());
        uh.insert("content-length", "12".parse().unwrap());
        let up = UpstreamInfo {
            tries: vec![
                UpstreamTry {
                    addr: Some("127.0.0.1:9000".parse().unwrap()),
                    status: 502,
                    connect_ms: Some(1),
                    header_ms: None,
                    response_ms: Some(1003),
                },
                UpstreamTry {
                    addr: Some("[::1]:9001".parse().unwrap()),
                    status: 200,
                    connect_ms: Some(0),
                    header_ms: Some(2),
                    response_ms: Some(30),
                },
            ],
            group: None,
            headers: Some(uh),
            bytes_received: 90,
            bytes_sent: 80,
        };
        cx.resp = Some(&resp);
        cx.upstream = Some(&up);
        assert_eq!(
            render("$status $body_bytes_sent $bytes_sent $sent_http_content_type $sent_http_cache_control", &cx),
            "200 12 140 text/plain no-cache, private"
        );
        assert_eq!(
            render("$upstream_addr|$upstream_status|$upstream_connect_time|$upstream_header_time|$upstream_response_time", &cx),
            "127.0.0.1:9000, [::1]:9001|502, 200|0.001, 0.000|-, 0.002|1.003, 0.030"
        );
        assert_eq!(
            up.response_total(),
            Some(std::time::Duration::from_millis(1033))
        );
        assert_eq!(
            render("$upstream_http_server $upstream_bytes_received $upstream_bytes_sent $upstream_response_length", &cx),
            "echo 90 80 12"
        );
        // No live peer: nginx names the group.
        let none = UpstreamInfo {
            tries: vec![UpstreamTry {
                addr: None,
                status: 502,
                connect_ms: None,
                header_ms: None,
                response_ms: Some(0),
            }],
            group: Some("backend".into()),
            ..Default::default()
        };
        cx.upstream = Some(&none);
        assert_eq!(
            render(
                "$upstream_addr|$upstream_status|$upstream_connect_time|$upstream_response_time",
                &cx
            ),
            "backend|502|-|0.000"
        );
    }

    #[test]
    fn captures_numbered_and_named() {
        let re = regex::Regex::new(r"^/(?<dir>\w+)/(\d+)(x)?$").unwrap();
        let caps = Captures::from_regex(&re, "/img/42").unwrap();
        assert_eq!(caps.get(0), Some("/img/42"));
        assert_eq!(caps.get(2), Some("42"));
        assert_eq!(caps.get(3), None);
        assert_eq!(caps.named("dir"), Some("img"));
        assert!(Captures::from_regex(&re, "/nope").is_none());
        let mut reg = VarRegistry::default();
        reg.add_named_capture("dir");
        let t = Template::compile("$1-$2-$dir-$3", &reg).unwrap();
        let c = conn();
        let p = parts("/", &[]);
        let mut cx = ctx(&c, &p, None);
        cx.captures = Some(&caps);
        assert_eq!(t.render_to_vec(&cx), b"img-42-img-");
    }

    #[test]
    fn times() {
        let c = conn();
        let p = parts("/", &[]);
        let cx = ctx(&c, &p, None);
        let rt = render("$request_time", &cx);
        assert!(rt.len() >= 5 && rt.as_bytes()[rt.len() - 4] == b'.', "{rt}");
        let ms = render("$msec", &cx);
        assert_eq!(ms.len(), 14, "{ms}");
        assert_eq!(render("$time_local", &cx).len(), 26);
        assert_eq!(render("$time_iso8601", &cx).len(), 25);
    }

    #[test]
    fn time_formats_in_utc() {
        // Only meaningful when the test process runs in UTC; the layout is
        // checked either way.
        let t = format_time(1_700_000_000);
        let local = std::str::from_utf8(t.time_local()).unwrap();
        let iso = std::str::from_utf8(t.iso8601()).unwrap();
        let err = std::str::from_utf8(t.error_log()).unwrap();
        if local.ends_with("+0000") {
            assert_eq!(local, "14/Nov/2023:22:13:20 +0000");
            assert_eq!(iso, "2023-11-14T22:13:20+00:00");
            assert_eq!(err, "2023/11/14 22:13:20");
        }
        assert_eq!(&local[2..3], "/");
        assert_eq!(&iso[10..11], "T");
    }

    #[test]
    fn request_id_is_stable() {
        let c = conn();
        let p = parts("/", &[]);
        let cx = ctx(&c, &p, None);
        let a = render("$request_id", &cx);
        assert_eq!(a.len(), 32);
        assert_eq!(a, render("$request_id", &cx));
    }
}
