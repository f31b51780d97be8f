//! nginx's gzip filter: which responses are compressed
//! (`ngx_http_gzip_header_filter` and `ngx_http_gzip_ok`), the header changes
//! that go with it, and a streaming compressor with bounded memory.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::{header, HeaderMap, HeaderValue, Method, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::{BoxError, ProxyBody};
use crate::conf::model::{gzip_proxied, HttpVersion, Settings};

/// Compressed bytes gathered before a frame is sent; about one of nginx's
/// `gzip_buffers`, so a fast upstream does not yield a frame per read.
const EMIT_AT: usize = 16 << 10;
/// Input compressed in one poll before yielding to other tasks.
const INPUT_PER_POLL: usize = 256 << 10;
/// With `proxy_buffering on`, compressed data held back while the upstream is
/// quiet is flushed after this long, so a stalled stream still reaches the client.
const IDLE_FLUSH: Duration = Duration::from_millis(100);

/// What the filter decided for one response.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not a candidate at all (status, type, length, encoding, setting).
    Skip,
    /// A candidate that this client does not get compressed: only `Vary`.
    VaryOnly,
    Compress,
}

/// The response half of `ngx_http_gzip_header_filter`: every check before
/// nginx sets `r->gzip_vary`.
pub fn candidate(settings: &Settings, status: u16, headers: &HeaderMap, len: Option<u64>) -> bool {
    if !settings.gzip || !matches!(status, 200 | 403 | 404) {
        return false;
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    if len.is_some_and(|l| l < settings.gzip_min_length) {
        return false;
    }
    type_matches(&settings.gzip_types, headers.get(header::CONTENT_TYPE))
}

/// `ngx_http_test_content_type`: the type without parameters, lowercased,
/// exactly in the list; `*` matches anything, even no type.
pub fn type_matches(types: &[String], ct: Option<&HeaderValue>) -> bool {
    if types.iter().any(|t| t == "*") {
        return true;
    }
    let Some(ct) = ct else { return false };
    let raw = ct.as_bytes();
    let end = raw.iter().position(|&c| c == b';').unwrap_or(raw.len());
    let Ok(mime) = std::str::from_utf8(&raw[..end]) else {
        return false;
    };
    let mime = mime.trim().to_ascii_lowercase();
    !mime.is_empty() && types.contains(&mime)
}

/// `ngx_http_gzip_ok`: whether this request may get a compressed answer.
pub fn request_ok(
    settings: &Settings,
    req: &http::request::Parts,
    resp_headers: &HeaderMap,
) -> bool {
    // nginx reads the first Accept-Encoding only.
    let Some(ae) = req.headers.get(header::ACCEPT_ENCODING) else {
        return false;
    };
    if !accepts_gzip(ae.as_bytes()) {
        return false;
    }
    let min = match settings.gzip_http_version {
        HttpVersion::Http10 => Version::HTTP_10,
        HttpVersion::Http11 => Version::HTTP_11,
    };
    if req.version < min {
        return false;
    }
    if req.headers.contains_key(header::VIA)
        && !proxied_ok(settings.gzip_proxied, req, resp_headers)
    {
        return false;
    }
    if let Some(ua) = req.headers.get(header::USER_AGENT) {
        let ua = String::from_utf8_lossy(ua.as_bytes());
        if settings.gzip_disable.iter().any(|re| re.is_match(&ua)) {
            return false;
        }
    }
    true
}

/// The `gzip_proxied` part of `ngx_http_gzip_ok`, for requests with `Via`.
fn proxied_ok(p: u16, req: &http::request::Parts, resp: &HeaderMap) -> bool {
    if p == gzip_proxied::OFF {
        return false;
    }
    if p & gzip_proxied::ANY != 0 {
        return true;
    }
    if p & gzip_proxied::AUTH != 0 && req.headers.contains_key(header::AUTHORIZATION) {
        return true;
    }
    if let Some(e) = resp.get(header::EXPIRES) {
        if p & gzip_proxied::EXPIRED == 0 {
            return false;
        }
        let Some(expires) = http_time(e.as_bytes()) else {
            return false;
        };
        let date = match resp.get(header::DATE) {
            Some(d) => match http_time(d.as_bytes()) {
                Some(d) => d,
                None => return false,
            },
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        };
        return expires < date;
    }
    if resp.contains_key(header::CACHE_CONTROL) {
        let has = |token: &str| {
            resp.get_all(header::CACHE_CONTROL).iter().any(|v| {
                String::from_utf8_lossy(v.as_bytes()).split(',').any(|d| {
                    let name = d.split('=').next().unwrap_or("").trim();
                    name.eq_ignore_ascii_case(token)
                })
            })
        };
        return (p & gzip_proxied::NO_CACHE != 0 && has("no-cache"))
            || (p & gzip_proxied::NO_STORE != 0 && has("no-store"))
            || (p & gzip_proxied::PRIVATE != 0 && has("private"));
    }
    if p & gzip_proxied::NO_LAST_MODIFIED != 0 && resp.contains_key(header::LAST_MODIFIED) {
        return false;
    }
    if p & gzip_proxied::NO_ETAG != 0 && resp.contains_key(header::ETAG) {
        return false;
    }
    true
}

/// `ngx_http_gzip_accept_encoding`: a `gzip` token (case-insensitive) at the
/// start or after `,`/space, and not `gzip;q=0`.
pub fn accepts_gzip(ae: &[u8]) -> bool {
    if ae.len() < 4 {
        return false;
    }
    if ae.starts_with(b"gzip,") {
        return true;
    }
    let lower = ae.to_ascii_lowercase();
    let mut start = 0;
    let p = loop {
        let Some(i) = find(&lower[start..], b"gzip") else {
            return false;
        };
        let p = start + i;
        if p == 0 || matches!(lower[p - 1], b',' | b' ') {
            break p;
        }
        start = p + 4;
    };
    let mut rest = lower[p + 4..].iter();
    loop {
        match rest.next() {
            None | Some(b',') => return true,
            Some(b';') => break,
            Some(b' ') => continue,
            Some(_) => return false,
        }
    }
    loop {
        match rest.next() {
            None => return true,
            Some(b'q') => break,
            Some(b' ') => continue,
            Some(_) => return false,
        }
    }
    let rest = rest.as_slice();
    if rest.len() < 2 || rest[0] != b'=' {
        return false;
    }
    quantity(&rest[1..]) != 0
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `ngx_http_gzip_quantity`: `q` in thousandths, 0 when invalid.
fn quantity(q: &[u8]) -> u32 {
    let mut it = q.iter();
    let c = match it.next() {
        Some(&c @ (b'0' | b'1')) => c,
        _ => return 0,
    };
    let mut v = u32::from(c - b'0') * 100;
    match it.next() {
        None | Some(b',' | b' ') => return v,
        Some(b'.') => {}
        Some(_) => return 0,
    }
    let mut n = 0;
    for &c in it {
        if c == b',' || c == b' ' {
            break;
        }
        if !c.is_ascii_digit() {
            return 0;
        }
        // nginx adds each digit as is; kept for identical accept/decline.
        v += u32::from(c - b'0');
        n += 1;
    }
    if v > 100 || n > 3 {
        return 0;
    }
    v
}

/// `ngx_parse_http_time` for the three HTTP date forms; seconds since the epoch.
pub fn http_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let (mut month, mut time, mut nums) = (None, None, Vec::new());
    for tok in s.split([' ', ',', '-']).filter(|t| !t.is_empty()) {
        if tok.contains(':') {
            let mut parts = tok.split(':').map(|p| p.parse::<i64>().ok());
            let (h, m, sec) = (parts.next()??, parts.next()??, parts.next()??);
            if h > 23 || m > 59 || sec > 60 {
                return None;
            }
            time = Some(h * 3600 + m * 60 + sec);
        } else if tok.bytes().all(|b| b.is_ascii_digit()) {
            nums.push((tok.len(), tok.parse::<i64>().ok()?));
        } else if let Some(i) = MONTHS.iter().position(|m| tok.eq_ignore_ascii_case(m)) {
            month = Some(i as i64 + 1);
        }
    }
    let (month, time) = (month?, time?);
    let (&(_, day), &(ylen, year)) = (nums.first()?, nums.get(1)?);
    let year = match ylen {
        2 if year < 70 => year + 2000,
        2 => year + 1900,
        4 => year,
        _ => return None,
    };
    if !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86400 + time)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The whole decision for one response.
pub fn decide(
    settings: &Settings,
    req: &http::request::Parts,
    status: u16,
    headers: &HeaderMap,
    len: Option<u64>,
) -> Decision {
    if !candidate(settings, status, headers, len) {
        Decision::Skip
    } else if request_ok(settings, req, headers) {
        Decision::Compress
    } else {
        Decision::VaryOnly
    }
}

/// Applies the gzip filter to a response about to be sent: headers as nginx
/// changes them, and the body compressed as it streams. `flush_each` sends
/// every upstream frame on at once (`proxy_buffering off`).
pub fn apply(
    settings: &Settings,
    req: &http::request::Parts,
    resp: Response<ProxyBody>,
    flush_each: bool,
) -> Response<ProxyBody> {
    if !settings.gzip {
        return resp;
    }
    let len = crate::server::request::content_length(resp.headers())
        .or_else(|| resp.body().size_hint().exact());
    let decision = decide(settings, req, resp.status().as_u16(), resp.headers(), len);
    if decision == Decision::Skip {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    if settings.gzip_vary {
        // nginx's header filter appends its own Vary, even beside an upstream's.
        parts
            .headers
            .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if decision == Decision::VaryOnly {
        return Response::from_parts(parts, body);
    }
    let h = &mut parts.headers;
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    weak_etag(h);
    let body = if req.method == Method::HEAD {
        // No body goes out; nginx still sends the compressed response's head.
        drop(body);
        NoBody.boxed()
    } else {
        GzipBody::new(body, settings.gzip_comp_level, flush_each).boxed()
    };
    Response::from_parts(parts, body)
}

/// `ngx_http_weak_etag`: a strong ETag becomes weak, a malformed one goes.
fn weak_etag(h: &mut HeaderMap) {
    let Some(v) = h.get(header::ETAG) else { return };
    let b = v.as_bytes();
    if b.len() > 2 && b.starts_with(b"W/") {
        return;
    }
    if b.first() != Some(&b'"') {
        h.remove(header::ETAG);
        return;
    }
    let mut w = Vec::with_capacity(b.len() + 2);
    w.extend_from_slice(b"W/");
    w.extend_from_slice(b);
    match HeaderValue::from_bytes(&w) {
        Ok(v) => {
            h.insert(header::ETAG, v);
        }
        Err(_) => {
            h.remove(header::ETAG);
        }
    }
}

/// An empty body of unknown length, so the server adds no `Content-Length`
/// to a HEAD answer whose compressed length nobody knows.
struct NoBody;

impl Body for NoBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(None)
    }
}

pin_project_lite::pin_project! {
    /// Compresses a body frame by frame: output goes out in frames of about
    /// `EMIT_AT` bytes, at a sync flush when the source is quiet for
    /// `IDLE_FLUSH` (or after every frame with `flush_each`), and at the end.
    pub struct GzipBody<B> {
        #[pin]
        inner: B,
        #[pin]
        idle: tokio::time::Sleep,
        enc: Option<GzEncoder<Vec<u8>>>,
        // Input written since the last flush.
        dirty: bool,
        idle_armed: bool,
        flush_each: bool,
    }
}

impl<B> GzipBody<B> {
    pub fn new(inner: B, level: u32, flush_each: bool) -> Self {
        GzipBody {
            inner,
            idle: tokio::time::sleep(IDLE_FLUSH),
            enc: Some(GzEncoder::new(Vec::new(), Compression::new(level))),
            dirty: false,
            idle_armed: false,
            flush_each,
        }
    }
}

fn take_out(enc: &mut GzEncoder<Vec<u8>>) -> Frame<Bytes> {
    Frame::data(Bytes::from(std::mem::take(enc.get_mut())))
}

impl<B> Body for GzipBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let mut budget = INPUT_PER_POLL;
        loop {
            let Some(enc) = this.enc.as_mut() else {
                return Poll::Ready(None);
            };
            if enc.get_ref().len() >= EMIT_AT {
                return Poll::Ready(Some(Ok(take_out(enc))));
            }
            if budget == 0 {
                if !enc.get_ref().is_empty() {
                    return Poll::Ready(Some(Ok(take_out(enc))));
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are dropped, as nginx does on HTTP/1.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    enc.write_all(&data)?;
                    budget = budget.saturating_sub(data.len());
                    *this.dirty = true;
                    *this.idle_armed = false;
                    if *this.flush_each {
                        enc.flush()?;
                        *this.dirty = false;
                        if !enc.get_ref().is_empty() {
                            return Poll::Ready(Some(Ok(take_out(enc))));
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    let Some(enc) = this.enc.take() else {
                        return Poll::Ready(None);
                    };
                    let out = enc.finish()?;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                Poll::Pending => {
                    if !*this.dirty {
                        return Poll::Pending;
                    }
                    if !*this.idle_armed {
                        *this.idle_armed = true;
                        let at = tokio::time::Instant::now() + IDLE_FLUSH;
                        this.idle.as_mut().reset(at);
                    }
                    if std::future::Future::poll(this.idle.as_mut(), cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this.idle_armed = false;
                    *this.dirty = false;
                    enc.flush()?;
                    if !enc.get_ref().is_empty() {
                        return Poll::Ready(Some(Ok(take_out(enc))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.enc.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::model::LevelSettings;
    use std::io::Read;
    use std::sync::Arc;

    fn settings() -> Settings {
        let mut s = LevelSettings::default().resolve();
        s.gzip = true;
        s.gzip_min_length = 10;
        s.gzip_types = Arc::new(vec!["text/html".into(), "text/plain".into()]);
        s.gzip_vary = true;
        s
    }

    fn req(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    fn ct(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(t).expect("value"),
        );
        h
    }

    #[test]
    fn accept_encoding_as_nginx_parses_it() {
        for yes in [
            "gzip",
            "gzip, deflate",
            "deflate, gzip",
            "br,gzip",
            "GZIP",
            "gzip;q=1",
            "gzip; q=0.5",
            "gzip;q=0.001",
            "deflate, gzip ,br",
            "x-gzip, gzip",
        ] {
            assert!(accepts_gzip(yes.as_bytes()), "{yes}");
        }
        for no in [
            "",
            "gz",
            "deflate",
            "gzip;q=0",
            "gzip;q=0.000",
            "gzip;q=1.5",
            "x-gzip",
            "gzipx",
            "gzip;level=1",
            "gzip;q=",
        ] {
            assert!(!accepts_gzip(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn response_candidates() {
        let s = settings();
        assert!(candidate(&s, 200, &ct("text/plain; charset=utf-8"), None));
        assert!(candidate(&s, 404, &ct("Text/HTML"), Some(10)));
        assert!(candidate(&s, 403, &ct("text/html"), None));
        assert!(!candidate(&s, 500, &ct("text/html"), None));
        assert!(!candidate(&s, 206, &ct("text/html"), None));
        assert!(!candidate(&s, 200, &ct("image/png"), None));
        assert!(!candidate(&s, 200, &HeaderMap::new(), None));
        assert!(!candidate(&s, 200, &ct("text/html"), Some(9)));
        let mut enc = ct("text/html");
        enc.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(!candidate(&s, 200, &enc, None));
        let mut any = settings();
        any.gzip_types = Arc::new(vec!["text/html".into(), "*".into()]);
        assert!(candidate(&any, 200, &HeaderMap::new(), None));
        let mut off = settings();
        off.gzip = false;
        assert!(!candidate(&off, 200, &ct("text/html"), None));
    }

    #[test]
    fn request_conditions() {
        let s = settings();
        let h = ct("text/html");
        assert!(request_ok(&s, &req(&[("accept-encoding", "gzip")]), &h));
        assert!(!request_ok(&s, &req(&[]), &h));
        assert_eq!(
            decide(&s, &req(&[]), 200, &h, None),
            Decision::VaryOnly,
            "clients without gzip still get Vary"
        );
        let mut old = req(&[("accept-encoding", "gzip")]);
        old.version = Version::HTTP_10;
        assert!(!request_ok(&s, &old, &h));
        let mut s10 = settings();
        s10.gzip_http_version = HttpVersion::Http10;
        assert!(request_ok(&s10, &old, &h));
        let mut dis = settings();
        dis.gzip_disable = Arc::new(vec![regex::Regex::new("(?i)curl").expect("re")]);
        assert!(!request_ok(
            &dis,
            &req(&[("accept-encoding", "gzip"), ("user-agent", "Curl/8")]),
            &h
        ));
    }

    #[test]
    fn via_and_gzip_proxied() {
        let mut s = settings();
        let via = req(&[("accept-encoding", "gzip"), ("via", "1.1 cache")]);
        let h = ct("text/html");
        assert!(!request_ok(&s, &via, &h), "off by default");
        s.gzip_proxied = gzip_proxied::ANY;
        assert!(request_ok(&s, &via, &h));
        s.gzip_proxied = gzip_proxied::NO_CACHE;
        let mut cc = ct("text/html");
        cc.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, no-cache"),
        );
        assert!(request_ok(&s, &via, &cc));
        cc.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        assert!(!request_ok(&s, &via, &cc));
        s.gzip_proxied = gzip_proxied::AUTH;
        let auth = req(&[
            ("accept-encoding", "gzip"),
            ("via", "x"),
            ("authorization", "Basic x"),
        ]);
        assert!(request_ok(&s, &auth, &cc));
        s.gzip_proxied = gzip_proxied::EXPIRED;
        let mut ex = ct("text/html");
        ex.insert(
            header::DATE,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        ex.insert(
            header::EXPIRES,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:36 GMT"),
        );
        assert!(request_ok(&s, &via, &ex));
        ex.insert(
            header::EXPIRES,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert!(!request_ok(&s, &via, &ex));
        s.gzip_proxied = gzip_proxied::NO_ETAG;
        let mut et = ct("text/html");
        assert!(request_ok(&s, &via, &et));
        et.insert(header::ETAG, HeaderValue::from_static("\"x\""));
        assert!(!request_ok(&s, &via, &et));
        s.gzip_proxied = gzip_proxied::NO_LAST_MODIFIED;
        et.insert(header::LAST_MODIFIED, HeaderValue::from_static("x"));
        assert!(!request_ok(&s, &via, &et));
    }

    #[test]
    fn http_dates() {
        let t = 784111777;
        assert_eq!(http_time(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(http_time(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(http_time(b"Sun Nov  6 08:49:37 1994"), Some(t));
        assert_eq!(http_time(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(http_time(b"0"), None);
        assert_eq!(http_time(b"-1"), None);
    }

    #[test]
    fn etags_become_weak() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        weak_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"abc\"");
        weak_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"abc\"");
        h.insert(header::ETAG, HeaderValue::from_static("abc"));
        weak_etag(&mut h);
        assert!(!h.contains_key(header::ETAG));
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    #[tokio::test]
    async fn headers_and_body() {
        let s = settings();
        let text = "hello gzip ".repeat(1000);
        let mut resp = Response::new(super::super::body::full(text.clone()));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
        resp.headers_mut()
            .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        let out = apply(&s, &req(&[("accept-encoding", "gzip")]), resp, false);
        assert_eq!(out.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(out.headers()[header::VARY], "Accept-Encoding");
        assert!(!out.headers().contains_key(header::CONTENT_LENGTH));
        assert!(!out.headers().contains_key(header::ACCEPT_RANGES));
        let body = out.into_body().collect().await.expect("body").to_bytes();
        assert!(body.len() < text.len() / 10);
        assert_eq!(gunzip(&body), text.as_bytes());
    }

    #[tokio::test]
    async fn streams_in_bounded_frames() {
        // 4 MiB of poorly compressible data in 4 KiB frames: output frames
        // stay near EMIT_AT, so nothing accumulates.
        let mut seed = 0x9e3779b97f4a7c15u64;
        let chunks: Vec<Result<Frame<Bytes>, BoxError>> = (0..1024)
            .map(|_| {
                let mut v = vec![0u8; 4096];
                for b in v.iter_mut() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    *b = (seed & 0x3f) as u8;
                }
                Ok(Frame::data(Bytes::from(v)))
            })
            .collect();
        let original: Vec<u8> = chunks
            .iter()
            .flat_map(|c| match c {
                Ok(f) => f.data_ref().map(|d| d.to_vec()).unwrap_or_default(),
                Err(_) => Vec::new(),
            })
            .collect();
        let src = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let mut body = Box::pin(GzipBody::new(src, 1, false));
        let mut all = Vec::new();
        let mut frames = 0;
        while let Some(f) = body.frame().await {
            let d = f.expect("frame").into_data().expect("data");
            assert!(d.len() < EMIT_AT + 64 * 1024, "frame of {}", d.len());
            all.extend_from_slice(&d);
            frames += 1;
        }
        assert!(frames > 10);
        assert_eq!(gunzip(&all), original);
    }

    #[tokio::test]
    async fn flush_each_sends_every_frame() {
        let (mut tx, rx) = futures_channel_like();
        let mut body = Box::pin(GzipBody::new(rx, 2, true));
        tx.send(Bytes::from_static(b"first part")).await;
        let f = body.frame().await.expect("frame").expect("ok");
        let first = f.into_data().expect("data");
        // A sync flush makes everything so far decodable.
        let mut dec = flate2::write::GzDecoder::new(Vec::new());
        dec.write_all(&first).expect("decode");
        dec.flush().expect("flush");
        assert_eq!(dec.get_ref().as_slice(), b"first part");
        drop(tx);
        let rest = body.collect().await.expect("rest").to_bytes();
        let mut all = first.to_vec();
        all.extend_from_slice(&rest);
        assert_eq!(gunzip(&all), b"first part");
    }

    /// A tiny channel body for the tests.
    struct Tx(tokio::sync::mpsc::Sender<Bytes>);
    impl Tx {
        async fn send(&mut self, b: Bytes) {
            self.0.send(b).await.expect("send");
        }
    }
    struct Rx(tokio::sync::mpsc::Receiver<Bytes>);
    impl Body for Rx {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }
    fn futures_channel_like() -> (Tx, Rx) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (Tx(tx), Rx(rx))
    }

    #[tokio::test]
    async fn quiet_source_is_flushed() {
        let (mut tx, rx) = futures_channel_like();
        let mut body = Box::pin(GzipBody::new(rx, 2, false));
        tx.send(Bytes::from_static(b"held back until idle")).await;
        // The sender stays open: only the idle flush can release the data.
        let f = body.frame().await.expect("frame").expect("ok");
        let mut dec = flate2::write::GzDecoder::new(Vec::new());
        dec.write_all(&f.into_data().expect("data"))
            .expect("decode");
        dec.flush().expect("flush");
        assert_eq!(dec.get_ref().as_slice(), b"held back until idle");
    }
}
