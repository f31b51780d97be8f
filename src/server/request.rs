//! One request: target and Host checks, virtual server and location
//! selection, `return`, limits, then the location's content handler.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{header, Request, Response};
use hyper::body::Incoming;

use super::conn::ConnState;
use super::Generation;
use crate::conf::model::{Handler, ProxyPass, Return, Settings};
use crate::log::access;
use crate::proxy::body::{OnDone, ProxyBody};
use crate::proxy::pages;
use crate::vars::eval::{Captures, ResponseInfo, UpstreamInfo, VarCtx};

/// What is known about a request once it is routed; owns everything the
/// variables and the access log need, so it can outlive the handler (the
/// response body and WebSocket tunnels finish later).
pub struct RequestState {
    pub gen: Arc<Generation>,
    pub conn: Arc<ConnState>,
    pub connection_requests: u64,
    pub parts: http::request::Parts,
    pub uri: String,
    pub host: String,
    pub server_idx: usize,
    pub captures: Option<Captures>,
    pub start: Instant,
    pub start_wall: SystemTime,
    pub request_length: u64,
    pub settings: Arc<Settings>,
    pub proxy: Option<Arc<ProxyPass>>,
}

/// How the client framed its request body. Read once from the head (where
/// nginx's checks on it are made too), so that the proxy path does not look
/// the same headers up again. Not kept in [`RequestState`], which a tunnel's
/// log holds for as long as the tunnel lasts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodyFraming {
    /// The one `Content-Length`.
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` header is present.
    pub transfer_encoding: bool,
}

impl BodyFraming {
    /// `None` for what nginx refuses with 400: `Content-Length` together
    /// with `Transfer-Encoding`, repeated, or not a number.
    pub fn of(h: &http::HeaderMap) -> Option<BodyFraming> {
        let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
        let first = lengths.next();
        let transfer_encoding = h.contains_key(header::TRANSFER_ENCODING);
        if first.is_some() && (transfer_encoding || lengths.next().is_some()) {
            return None;
        }
        let content_length = match first {
            None => None,
            Some(v) if v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit) => {
                return None;
            }
            // Digits only: too many of them is the one failure.
            Some(v) => Some(v.to_str().ok()?.parse().ok()?),
        };
        Some(BodyFraming {
            content_length,
            transfer_encoding,
        })
    }

    /// Whether a body follows the head.
    pub fn has_body(&self) -> bool {
        self.content_length.is_some_and(|l| l > 0) || self.transfer_encoding
    }
}

impl RequestState {
    pub fn vars<'a>(
        &'a self,
        resp: Option<&'a ResponseInfo>,
        up: Option<&'a UpstreamInfo>,
    ) -> VarCtx<'a> {
        let server = &self.gen.http().servers[self.server_idx];
        VarCtx {
            conn: &self.conn.info,
            connection_requests: self.connection_requests,
            req: &self.parts,
            uri: &self.uri,
            args: self.parts.uri.query(),
            server_name: &server.primary_name,
            host: &self.host,
            captures: self.captures.as_ref(),
            maps: &self.gen.http().maps,
            proxy: self.proxy.as_deref(),
            start: self.start,
            start_wall: self.start_wall,
            request_length: self.request_length,
            resp,
            upstream: up,
        }
    }

    /// Keeps, in owned memory, only the parts of the request a long-lived
    /// tunnel's access log and error log lines can still read: hyper's parsed
    /// values are slices of its read buffer and would keep all of it alive,
    /// and headers no log mentions are dead weight for days.
    pub fn compact(&mut self, needs: &HeaderNeeds) {
        self.parts.headers = needs.request.keep(&self.parts.headers);
        self.parts.uri = owned_uri(&self.parts.uri);
        // `clear()` would keep the map's allocation for the tunnel's life.
        self.parts.extensions = http::Extensions::new();
    }

    /// Which headers this location's access logs can read, worked out once
    /// at load (`Generation::log_needs`).
    pub fn header_needs(&self) -> Arc<HeaderNeeds> {
        self.gen.log_needs(&self.settings)
    }

    /// Whether this location's access logs can read the response headers
    /// and the upstream's (`$sent_http_*`, `$upstream_http_*`, a map): only
    /// then are copies of them kept for the log line.
    pub fn logs_read_headers(&self) -> (bool, bool) {
        let needs = self.gen.log_needs_ref(&self.settings);
        (needs.response.any(), needs.upstream.any())
    }

    /// Writes the access log lines for the finished request.
    pub fn log(&self, resp: &ResponseInfo, up: Option<&UpstreamInfo>) {
        let up_time = up.and_then(UpstreamInfo::response_total);
        crate::runtime::metrics::request_logged(
            &self.conn.gauge,
            resp.status,
            self.start.elapsed(),
            up_time,
        ); // ops
        let cx = self.vars(Some(resp), up);
        access::log_request(&self.settings.access_log, &cx, &self.gen.logs);
    }
}

/// A copy of `uri` in its own memory. An origin-form target (the usual
/// one) is copied as a path and query, without formatting and parsing the
/// whole URI again.
fn owned_uri(uri: &http::Uri) -> http::Uri {
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(pq)) => {
            let copy = bytes::Bytes::copy_from_slice(pq.as_str().as_bytes());
            match http::uri::PathAndQuery::from_maybe_shared(copy) {
                Ok(pq) => http::Uri::from(pq),
                Err(_) => uri.clone(),
            }
        }
        _ => http::Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone()),
    }
}

/// Logs once the response body has been sent (or abandoned).
pub struct LogWhenDone {
    pub state: RequestState,
    pub resp: ResponseInfo,
    pub upstream: Option<UpstreamInfo>,
}

impl LogWhenDone {
    /// Writes the access log line of a response whose body is done.
    pub fn log(mut self, body_bytes: u64) {
        self.resp.body_bytes_sent = body_bytes;
        self.resp.bytes_sent += body_bytes;
        self.state.log(&self.resp, self.upstream.as_ref());
    }
}

impl OnDone for LogWhenDone {
    fn done(self: Box<Self>, body_bytes: u64, _complete: bool) {
        (*self).log(body_bytes);
    }
}

/// A request that ends without an answer, as nginx ends one whose client
/// timed out sending its body: hyper closes the connection (resets the
/// HTTP/2 stream) instead of writing a response.
#[derive(Debug, thiserror::Error)]
#[error("request ended without an answer")]
pub struct Unanswered;

/// Logs the request with `status` (nginx's 408 for a timed-out body), and
/// nothing sent, and gives the error that ends it without an answer; under
/// reset_timedout_connection the connection then closes with RST.
pub fn unanswered(state: RequestState, status: u16) -> Unanswered {
    if state.settings.reset_timedout_connection {
        state.conn.timers.request_reset();
    }
    let info = ResponseInfo {
        status,
        headers: http::HeaderMap::new(),
        body_bytes_sent: 0,
        bytes_sent: 0,
    };
    state.log(&info, None);
    Unanswered
}

/// Estimates the request head's size on the wire for `$request_length`.
fn head_length(parts: &http::request::Parts) -> u64 {
    let line = parts.method.as_str().len()
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + 12;
    let headers: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    (line + headers + 2) as u64
}

pub async fn handle(
    gen: Arc<Generation>,
    conn: Arc<ConnState>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Unanswered> {
    let start = Instant::now();
    let start_wall = SystemTime::now();
    let connection_requests = conn.next_request();
    conn.gauge.request_start(); // ops: stub_status counters
    let client_upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let request_length = head_length(&parts);

    let http = gen.http();
    // Host: the absolute-form target's authority wins over the header.
    // Borrowed from the head; only the normalised name is kept.
    let mut host_headers = parts.headers.get_all(header::HOST).iter();
    let host_header = host_headers.next();
    let repeated_host = host_headers.next().is_some();
    let host_raw = match parts.uri.authority() {
        Some(a) => Some(std::borrow::Cow::Borrowed(a.as_str())),
        None => host_header.map(|h| String::from_utf8_lossy(h.as_bytes())),
    };
    let host_norm = match host_raw.as_deref().map(super::vhost::normalize_host) {
        Some(Ok(h)) => Some(h.into_owned()),
        Some(Err(_)) => None,
        None => None,
    };
    let bad_host = host_raw.is_some() && host_norm.is_none();
    // h2: HTTP/2 needs :authority or Host too, as in nginx.
    let missing_host = host_raw.is_none() && parts.version >= http::Version::HTTP_11;
    let selected = gen.vhosts.select_at(conn.addr, host_norm.as_deref());
    let (server_idx, server_caps) = match selected {
        Some((i, caps)) => {
            let subject = host_norm.as_deref().unwrap_or("");
            let owned = caps.map(|c| Captures::from_locations(c.regex, &c.locs, subject));
            (i, owned)
        }
        None => (0, None),
    };
    let Some(server) = http.servers.get(server_idx) else {
        return Ok(pages::error(400, true, true));
    };
    let host = host_norm.unwrap_or_else(|| server.primary_name.clone());
    if !server.settings.underscores_in_headers && server.settings.ignore_invalid_headers {
        drop_underscored(&mut parts.headers);
    }
    let framing = BodyFraming::of(&parts.headers);

    let mut state = RequestState {
        gen: gen.clone(),
        conn: conn.clone(),
        connection_requests,
        parts,
        uri: String::new(),
        host,
        server_idx,
        captures: server_caps,
        start,
        start_wall,
        request_length,
        settings: server.settings.clone(),
        proxy: None,
    };
    let tokens = server.settings.server_tokens;

    let framing = match framing {
        Some(f) if !(bad_host || missing_host || repeated_host) => f,
        _ => return Ok(finish(state, pages::error(400, tokens, true))),
    };
    let merge = server.settings.merge_slashes;
    state.uri = match super::uri::normalize(state.parts.uri.path(), merge) {
        Ok(u) => u,
        Err(_) => return Ok(finish(state, pages::error(400, tokens, true))),
    };

    if let Some(r) = &server.server_return {
        let resp = returned(&state, r);
        return Ok(finish(state, resp));
    }

    let Some(matched) = gen.locations[server_idx].find(&state.uri) else {
        return Ok(finish(state, pages::error(404, tokens, false)));
    };
    let location = matched.location;
    if let Some(c) = &matched.captures {
        state.captures = Some(Captures::from_locations(c.regex, &c.locs, &state.uri));
    }
    if matched.redirect {
        // nginx's automatic redirect: `/dir` to `/dir/` for a proxied `/dir/`.
        let mut url = format!("{}/", state.uri);
        if let Some(q) = state.parts.uri.query() {
            url.push('?');
            url.push_str(q);
        }
        let resp = pages::returned(301, Some(url.into_bytes()), tokens, "text/html");
        return Ok(finish(state, resp));
    }
    state.settings = location.settings.clone();
    conn.timers.set(&state.settings);
    let tokens = state.settings.server_tokens;
    if location.internal {
        return Ok(finish(state, pages::error(404, tokens, false)));
    }

    match &location.handler {
        Handler::Return(r) => {
            let resp = returned(&state, r);
            Ok(finish(state, resp))
        }
        Handler::None => Ok(finish(state, pages::error(404, tokens, false))),
        Handler::CheckStatus(f) => {
            let (ctype, body) = crate::upstream::check::status_page(
                &gen.upstreams,
                gen.id,
                *f,
                state.parts.uri.query(),
            );
            let resp = pages::returned(200, Some(body.into_bytes()), tokens, ctype);
            Ok(finish(state, resp))
        }
        Handler::StubStatus | Handler::Prometheus | Handler::StatusPage => {
            let resp =
                crate::runtime::status::respond(&location.handler, &state.parts.method, &state.gen);
            Ok(finish(state, resp))
        }
        Handler::Proxy(pp) => {
            if let Some(len) = framing.content_length {
                let max = state.settings.client_max_body_size;
                if max != 0 && len > max {
                    crate::error_log!(crate::conf::model::LogLevel::Error,
                        "client intended to send too large body: {len} bytes, client: {}, server: {}, request: \"{} {}\"",
                        state.conn.info.remote.ip(),
                        server.primary_name,
                        state.parts.method,
                        state.parts.uri
                    );
                    return Ok(finish(state, pages::error(413, tokens, true)));
                }
            }
            state.proxy = Some(pp.clone());
            crate::proxy::forward(state, framing, &location.matcher, body, client_upgrade).await
        }
    }
}

/// Answers `return`, rendering its text or URL with the request's variables.
fn returned(state: &RequestState, r: &Return) -> Response<ProxyBody> {
    let text = r.text.as_ref().map(|t| {
        let mut out = Vec::new();
        t.render(&state.vars(None, None), &mut out);
        out
    });
    pages::returned(
        r.code,
        text,
        state.settings.server_tokens,
        content_type(&state.settings, &state.uri),
    )
}

/// nginx ignores header names with underscores unless told otherwise: they
/// reach neither variables nor the upstream.
fn drop_underscored(headers: &mut http::HeaderMap) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let names: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// nginx's `ngx_http_set_content_type`: the type of the URI's extension
/// (after the last `.` of the last segment), else `default_type`. Without
/// a `types` block nginx knows html, gif and jpg.
fn content_type<'a>(settings: &'a Settings, uri: &str) -> &'a str {
    const BUILTIN: &[(&str, &str)] = &[
        ("html", "text/html"),
        ("gif", "image/gif"),
        ("jpg", "image/jpeg"),
    ];
    let last = uri.rsplit('/').next().unwrap_or("");
    let Some((_, ext)) = last.rsplit_once('.') else {
        return &settings.default_type;
    };
    let ext = ext.to_ascii_lowercase();
    if settings.types.is_empty() {
        BUILTIN
            .iter()
            .find(|(e, _)| *e == ext)
            .map_or(settings.default_type.as_str(), |(_, t)| t)
    } else {
        settings
            .types
            .get(&ext)
            .map_or(settings.default_type.as_str(), String::as_str)
    }
}

/// The request's Content-Length, when it has exactly one valid one.
pub fn content_length(h: &http::HeaderMap) -> Option<u64> {
    let v = h.get(header::CONTENT_LENGTH)?;
    v.to_str().ok()?.trim().parse().ok()
}

/// Adds the access-log hook and nginx's response headers to a response
/// sluice made itself.
pub fn finish(state: RequestState, resp: Response<ProxyBody>) -> Response<ProxyBody> {
    use http_body_util::BodyExt;
    let mut resp = crate::proxy::gzip::apply(&state.settings, &state.parts, resp, false);
    add_server_header(&mut resp, state.settings.server_tokens);
    crate::proxy::redirect::absolute_location(resp.headers_mut(), &state);
    let info = ResponseInfo {
        status: resp.status().as_u16(),
        headers: if state.logs_read_headers().0 {
            resp.headers().clone()
        } else {
            http::HeaderMap::new()
        },
        body_bytes_sent: 0,
        bytes_sent: 0,
    };
    let hook = Box::new(LogWhenDone {
        state,
        resp: info,
        upstream: None,
    });
    resp.map(|b| crate::proxy::body::Finished::new(b, hook).boxed())
}

pub fn add_server_header(resp: &mut Response<ProxyBody>, tokens: bool) {
    resp.headers_mut().insert(
        header::SERVER,
        http::HeaderValue::from_static(pages::server_token(tokens)),
    );
}

#[cfg(test)]
mod tests {
    use super::{BodyFraming, HeaderNeeds};

    fn framing(headers: &[(&str, &str)]) -> Option<BodyFraming> {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        BodyFraming::of(&h)
    }

    #[test]
    fn body_framing_is_read_once_with_nginx_s_refusals() {
        let none = BodyFraming::default();
        assert_eq!(framing(&[("host", "a")]), Some(none));
        assert!(!none.has_body());
        let cl = framing(&[("content-length", "12")]).expect("valid");
        assert_eq!(cl.content_length, Some(12));
        assert!(cl.has_body());
        let empty = framing(&[("content-length", "0")]).expect("valid");
        assert_eq!(empty.content_length, Some(0));
        assert!(!empty.has_body());
        let te = framing(&[("transfer-encoding", "chunked")]).expect("valid");
        assert!(te.transfer_encoding && te.has_body());
        // What nginx answers with 400.
        for bad in [
            &[("content-length", "3"), ("transfer-encoding", "chunked")][..],
            &[("content-length", "3"), ("content-length", "3")],
            &[("content-length", "-1")],
            &[("content-length", "1 2")],
            &[("content-length", "")],
            &[("content-length", "99999999999999999999999")],
        ] {
            assert_eq!(framing(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn owned_uri_is_the_same_uri() {
        for text in [
            "/a/b?x=1&y=%20",
            "/",
            "*",
            "http://example.com:8080/p?q",
            "/%zz",
        ] {
            let uri: http::Uri = text.parse().expect("uri");
            let owned = super::owned_uri(&uri);
            assert_eq!(owned, uri, "{text}");
            assert_eq!(owned.to_string(), uri.to_string(), "{text}");
        }
    }

    fn needs(http: &str) -> HeaderNeeds {
        let text =
            format!("events {{}} http {{ {http} server {{ location / {{ return 200; }} }} }}");
        let c =
            crate::conf::load_str(&text, "t.conf", std::path::Path::new("/tmp")).expect("config");
        let http = c.http.expect("http");
        HeaderNeeds::for_logs(&http.servers[0].locations[0].settings)
    }

    #[test]
    fn log_needs_follow_the_formats() {
        let n = needs(
            "log_format f '$http_user_agent $upstream_response_length'; access_log /tmp/a f;",
        );
        assert!(!n.response.any());
        assert!(n.upstream.any());
        let n = needs("log_format f '$sent_http_content_type'; access_log /tmp/a f;");
        assert!(n.response.any() && !n.upstream.any());
        let n = needs("access_log off;");
        assert!(!n.response.any() && !n.upstream.any());
        // The error log's context always needs Host and Referer.
        assert!(n.request.any());
    }

    use super::*;

    #[test]
    fn content_type_follows_the_extension_of_the_last_segment() {
        let s = crate::conf::model::LevelSettings::default().resolve();
        assert_eq!(content_type(&s, "/a/b.GIF"), "image/gif");
        assert_eq!(content_type(&s, "/a.jpg/b"), "text/plain");
        assert_eq!(content_type(&s, "/x.css"), "text/plain");
    }
}

/// Header names a set of templates reads, per header map.
#[derive(Default, Debug)]
pub struct HeaderNeeds {
    pub request: NameSet,
    pub response: NameSet,
    pub upstream: NameSet,
}

/// Some header names, or all of them.
#[derive(Default, Debug)]
pub struct NameSet {
    all: bool,
    names: Vec<Box<str>>,
}

impl NameSet {
    /// Whether any header is wanted.
    pub fn any(&self) -> bool {
        self.all || !self.names.is_empty()
    }

    fn add(&mut self, name: &str) {
        if !self.names.iter().any(|n| &**n == name) {
            self.names.push(name.into());
        }
    }

    /// An owned copy of the wanted headers of `h`.
    pub fn keep(&self, h: &http::HeaderMap) -> http::HeaderMap {
        let wanted =
            |k: &http::HeaderName| self.all || self.names.iter().any(|n| **n == *k.as_str());
        // Sized exactly: a map grown by `append` reserves room for 6 entries
        // (about 600 bytes), kept for the tunnel's life.
        let count = h.iter().filter(|(k, _)| wanted(k)).count();
        let mut out = http::HeaderMap::with_capacity(count);
        for (k, v) in h {
            if wanted(k) {
                if let Ok(v) = http::HeaderValue::from_bytes(v.as_bytes()) {
                    out.append(k.clone(), v);
                }
            }
        }
        out
    }
}

impl HeaderNeeds {
    /// The headers the access logs of `settings` can read, and those the
    /// error log's context names (Host, Referer).
    pub fn for_logs(settings: &Settings) -> HeaderNeeds {
        let mut needs = HeaderNeeds::default();
        needs.request.add("host");
        needs.request.add("referer");
        for log in settings.access_log.iter() {
            if let crate::conf::model::AccessLog::File {
                format, condition, ..
            } = log
            {
                needs.scan(format.template.vars());
                if let Some(c) = condition {
                    needs.scan(c.vars());
                }
            }
        }
        needs
    }

    fn scan<'a>(&mut self, vars: impl Iterator<Item = &'a crate::vars::Var>) {
        use crate::vars::{Builtin, Var};
        for v in vars {
            match v {
                Var::Http(Some(n)) => self.request.add(n.as_str()),
                Var::Cookie(_) => self.request.add("cookie"),
                Var::SentHttp(Some(n)) => self.response.add(n.as_str()),
                Var::UpstreamHttp(Some(n)) => self.upstream.add(n.as_str()),
                // Read from the upstream's Content-Length.
                Var::Builtin(Builtin::UpstreamResponseLength) => {
                    self.upstream.add("content-length")
                }
                Var::Builtin(Builtin::ProxyAddXForwardedFor) => self.request.add("x-forwarded-for"),
                Var::Builtin(Builtin::ContentLength) => self.request.add("content-length"),
                Var::Builtin(Builtin::ContentType) => self.request.add("content-type"),
                Var::Builtin(Builtin::RemoteUser) => self.request.add("authorization"),
                // A map can read anything: keep everything.
                Var::Map(_) => {
                    self.request.all = true;
                    self.response.all = true;
                    self.upstream.all = true;
                }
                _ => {}
            }
        }
    }
}
