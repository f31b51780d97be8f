//! The request target: absolute-form and origin-form parsing, and the
//! decoding and normalisation that turns the raw path into nginx's `$uri`
//! (ngx_http_parse_request_line and ngx_http_parse_complex_uri).

use std::fmt;

/// Why a request target is refused; the caller answers 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// Not `/...`, not `scheme://host...`, not `*`.
    #[error("invalid request target")]
    BadForm,
    /// A control character, a space or DEL in the target.
    #[error("invalid character in request target")]
    BadChar,
    /// Bad host or port in an absolute-form target.
    #[error("invalid host in request target")]
    BadHost,
    /// `%` not followed by two hex digits, or `%00`.
    #[error("invalid percent-encoding in URI")]
    BadPercent,
    /// A `..` segment that climbs above the root.
    #[error("URI climbs above the root")]
    AboveRoot,
    /// The decoded path is not UTF-8. nginx works on bytes and would
    /// accept it; sluice's `$uri` is a string, so such a request is refused.
    #[error("decoded URI is not UTF-8")]
    NotUtf8,
}

/// A request target split into its parts; nothing decoded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The authority of an absolute-form target (`host[:port]`, as written);
    /// nginx prefers it to the Host header. Pass it to `vhost::normalize_host`.
    pub host: Option<String>,
    /// The raw path, starting with `/` (or `*` for `OPTIONS *`). An
    /// absolute-form target without a path gets `/`, as in nginx.
    pub path: String,
    /// The raw query after `?`, without any `#fragment`.
    pub query: Option<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// Cuts a target at the first `#` (nginx drops fragments), then splits the
/// rest at the first `?` into path and query.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let t = match target.find('#') {
        Some(i) => &target[..i],
        None => target,
    };
    match t.find('?') {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    }
}

/// Parses a request target as nginx's request-line parser does: origin-form
/// `/path?query`, absolute-form `scheme://host[:port][/path][?query]`, or `*`.
/// Anything else, and any control character, space or DEL, is an error (400).
pub fn parse_target(target: &str) -> Result<Target, UriError> {
    if target.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return Err(UriError::BadChar);
    }
    if target == "*" {
        // nginx itself answers 400 to `OPTIONS *`; `normalize("*")` refuses
        // it, so a caller that feeds the path on gets nginx's answer.
        return Ok(Target {
            host: None,
            path: "*".into(),
            query: None,
        });
    }
    if target.starts_with('/') {
        let (path, query) = split_target(target);
        return Ok(Target {
            host: None,
            path: path.into(),
            query: query.map(Into::into),
        });
    }
    absolute_form(target)
}

fn absolute_form(target: &str) -> Result<Target, UriError> {
    let b = target.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) {
        return Err(UriError::BadForm);
    }
    let scheme_len = b
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
        .ok_or(UriError::BadForm)?;
    let rest = target[scheme_len..]
        .strip_prefix("://")
        .ok_or(UriError::BadForm)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    validate_authority(authority)?;
    let (path, query) = split_target(&rest[end..]);
    let path = if path.is_empty() { "/" } else { path };
    Ok(Target {
        host: Some(authority.to_string()),
        path: path.to_string(),
        query: query.map(Into::into),
    })
}

/// nginx's request-line host grammar: letters, digits, `.` and `-`, or an
/// IP literal in brackets, then an optional all-digit port.
fn validate_authority(a: &str) -> Result<(), UriError> {
    let (host, port) = if let Some(lit) = a.strip_prefix('[') {
        let close = lit.find(']').ok_or(UriError::BadHost)?;
        let inner = &lit[..close];
        let ok = inner.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b':' | b'-'
                        | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        });
        if !ok {
            return Err(UriError::BadHost);
        }
        let after = &lit[close + 1..];
        match after.strip_prefix(':') {
            Some(p) => ("[]", Some(p)),
            None if after.is_empty() => ("[]", None),
            None => return Err(UriError::BadHost),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() {
        return Err(UriError::BadHost);
    }
    if host != "[]"
        && !host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
    {
        return Err(UriError::BadHost);
    }
    if let Some(p) = port {
        if !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err(UriError::BadHost);
        }
    }
    Ok(())
}

/// Decodes and normalises a raw path into `$uri`, as
/// ngx_http_parse_complex_uri does: `%XX` is decoded (everything, `%2F`
/// included) and the decoded byte is then treated like the literal one, so
/// `%2E%2E` is a `..` segment; `.` and `..` segments are resolved; `//` is
/// merged when `merge_slashes` is on; a `#` ends the path. A decoded `%`,
/// `#` or `?` stays a plain character. `%00`, a bad `%` sequence and a `..`
/// above the root are errors (400).
pub fn normalize(raw_path: &str, merge_slashes: bool) -> Result<String, UriError> {
    let bytes = normalize_bytes(raw_path.as_bytes(), merge_slashes)?;
    String::from_utf8(bytes).map_err(|_| UriError::NotUtf8)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Usual,
    Slash,
    Dot,
    DotDot,
}

/// Removes the `/..` just written and the segment before it, leaving the
/// output after the previous `/`.
fn climb(u: &mut Vec<u8>) -> Result<(), UriError> {
    // The output ends with "/.."; drop it and the segment before it.
    let keep = u.len().checked_sub(4).ok_or(UriError::AboveRoot)?;
    match u[..=keep].iter().rposition(|&c| c == b'/') {
        Some(i) => {
            u.truncate(i + 1);
            Ok(())
        }
        None => Err(UriError::AboveRoot),
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// [`normalize`] on bytes, for callers that keep `$uri` as bytes.
pub fn normalize_bytes(raw: &[u8], merge_slashes: bool) -> Result<Vec<u8>, UriError> {
    if raw.first() != Some(&b'/') {
        return Err(UriError::BadForm);
    }
    let mut u: Vec<u8> = Vec::with_capacity(raw.len());
    let mut st = St::Usual;
    let mut i = 0;
    while i < raw.len() {
        let mut ch = raw[i];
        i += 1;
        if ch == b'%' {
            let hi = raw.get(i).copied().and_then(hex);
            let lo = raw.get(i + 1).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(UriError::BadPercent);
            };
            i += 2;
            ch = (hi << 4) | lo;
            match ch {
                0 => return Err(UriError::BadPercent),
                // Decoded but not special: they stay in the path as text.
                b'%' | b'#' | b'?' => {
                    u.push(ch);
                    st = St::Usual;
                    continue;
                }
                _ => {}
            }
        } else if ch == b'#' || ch == b'?' {
            // End of the path; a pending "." or ".." is resolved below.
            break;
        }
        // `ch` is now a literal or decoded byte, handled alike.
        match (st, ch) {
            (St::Usual, b'/') => {
                st = St::Slash;
                u.push(ch);
            }
            (St::Usual, _) => u.push(ch),
            (St::Slash, b'/') => {
                if !merge_slashes {
                    u.push(ch);
                }
            }
            (St::Slash, b'.') => {
                st = St::Dot;
                u.push(ch);
            }
            (St::Slash, _) => {
                st = St::Usual;
                u.push(ch);
            }
            (St::Dot, b'/') => {
                // "/./" -> "/"
                u.pop();
                st = St::Slash;
            }
            (St::Dot, b'.') => {
                st = St::DotDot;
                u.push(ch);
            }
            (St::Dot, _) => {
                st = St::Usual;
                u.push(ch);
            }
            (St::DotDot, b'/') => {
                climb(&mut u)?;
                st = St::Slash;
            }
            (St::DotDot, _) => {
                st = St::Usual;
                u.push(ch);
            }
        }
    }
    match st {
        St::Dot => {
            u.pop();
        }
        St::DotDot => climb(&mut u)?,
        _ => {}
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, UriError> {
        normalize(p, true)
    }

    #[test]
    fn plain_paths_are_unchanged() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c.d",
            "/a+b",
            "/~user/x;y=1",
            "/..a",
            "/a..",
            "/...",
        ] {
            assert_eq!(n(p).as_deref(), Ok(p), "{p}");
        }
    }

    #[test]
    fn dot_segments() {
        assert_eq!(n("/a/./b/../c").as_deref(), Ok("/a/c"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/./").as_deref(), Ok("/"));
        assert_eq!(n("/.").as_deref(), Ok("/"));
        assert_eq!(n("/a/..").as_deref(), Ok("/"));
        assert_eq!(n("/a/../").as_deref(), Ok("/"));
        assert_eq!(n("/a/b/../../c").as_deref(), Ok("/c"));
        assert_eq!(n("/..").unwrap_err(), UriError::AboveRoot);
        assert_eq!(n("/../x").unwrap_err(), UriError::AboveRoot);
        assert_eq!(n("/a/../../x").unwrap_err(), UriError::AboveRoot);
    }

    #[test]
    fn percent_decoding_feeds_the_state_machine() {
        assert_eq!(n("/%41%62c").as_deref(), Ok("/Abc"));
        assert_eq!(n("/a%2Fb").as_deref(), Ok("/a/b"));
        assert_eq!(n("/a/%2e%2e/b").as_deref(), Ok("/b"));
        assert_eq!(n("/a/%2E/b").as_deref(), Ok("/a/b"));
        assert_eq!(n("/%2E%2E/x").unwrap_err(), UriError::AboveRoot);
        assert_eq!(n("/a%2F%2Fb").as_deref(), Ok("/a/b"));
        assert_eq!(n("/%20x").as_deref(), Ok("/ x"));
        // Decoded %, # and ? are plain text.
        assert_eq!(n("/a%25b").as_deref(), Ok("/a%b"));
        assert_eq!(n("/a%23b").as_deref(), Ok("/a#b"));
        assert_eq!(n("/a%3Fb").as_deref(), Ok("/a?b"));
        assert_eq!(n("/caf%C3%A9").as_deref(), Ok("/café"));
    }

    #[test]
    fn bad_percent_sequences() {
        for p in ["/%", "/%4", "/%zz", "/%4g", "/a%00b", "/%%41"] {
            assert_eq!(n(p).unwrap_err(), UriError::BadPercent, "{p}");
        }
        assert_eq!(n("/%FF").unwrap_err(), UriError::NotUtf8);
        assert_eq!(normalize_bytes(b"/%FF", true), Ok(vec![b'/', 0xff]));
    }

    #[test]
    fn slashes() {
        assert_eq!(n("//a///b").as_deref(), Ok("/a/b"));
        assert_eq!(normalize("//a///b", false).as_deref(), Ok("//a///b"));
        assert_eq!(n("/a//../b").as_deref(), Ok("/b"));
        assert_eq!(normalize("/a//../b", false).as_deref(), Ok("/a/b"));
        assert_eq!(n("/.//a").as_deref(), Ok("/a"));
    }

    #[test]
    fn fragment_and_query_end_the_path() {
        assert_eq!(n("/a#b").as_deref(), Ok("/a"));
        assert_eq!(n("/a/.#b").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/b/..?x").as_deref(), Ok("/a/"));
    }

    #[test]
    fn not_a_path() {
        assert_eq!(n("").unwrap_err(), UriError::BadForm);
        assert_eq!(n("*").unwrap_err(), UriError::BadForm);
        assert_eq!(n("a/b").unwrap_err(), UriError::BadForm);
    }

    #[test]
    fn split() {
        assert_eq!(split_target("/a?b=1"), ("/a", Some("b=1")));
        assert_eq!(split_target("/a"), ("/a", None));
        assert_eq!(split_target("/a?"), ("/a", Some("")));
        assert_eq!(split_target("/a?b#c"), ("/a", Some("b")));
        assert_eq!(split_target("/a#b?c"), ("/a", None));
        assert_eq!(split_target("/a?b?c"), ("/a", Some("b?c")));
    }

    #[test]
    fn origin_form() {
        let t = parse_target("/x/y?q=1").unwrap();
        assert_eq!(t.host, None);
        assert_eq!(t.path, "/x/y");
        assert_eq!(t.query.as_deref(), Some("q=1"));
        assert_eq!(t.to_string(), "/x/y?q=1");
    }

    #[test]
    fn absolute_form_targets() {
        let t = parse_target("http://Example.com:8080/p/q?x").unwrap();
        assert_eq!(t.host.as_deref(), Some("Example.com:8080"));
        assert_eq!(t.path, "/p/q");
        assert_eq!(t.query.as_deref(), Some("x"));

        let t = parse_target("https://h").unwrap();
        assert_eq!((t.host.as_deref(), t.path.as_str()), (Some("h"), "/"));
        let t = parse_target("http://h?a=b").unwrap();
        assert_eq!(t.path, "/");
        assert_eq!(t.query.as_deref(), Some("a=b"));
        let t = parse_target("http://[::1]:80/z").unwrap();
        assert_eq!(t.host.as_deref(), Some("[::1]:80"));
        assert_eq!(t.path, "/z");
        let t = parse_target("h2c+x-y.z://h/").unwrap();
        assert_eq!(t.host.as_deref(), Some("h"));

        for bad in [
            "http:///x",
            "http://u@h/",
            "http://h:8x/",
            "http://h_x/",
            "http:/h/",
            "http//h/",
            "1http://h/",
            "http://[::1/",
            "http://[::1]x/",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_forms_are_refused() {
        assert_eq!(parse_target("").unwrap_err(), UriError::BadForm);
        assert_eq!(parse_target("x").unwrap_err(), UriError::BadForm);
        assert_eq!(parse_target("a/b").unwrap_err(), UriError::BadForm);
        assert_eq!(parse_target("/a b").unwrap_err(), UriError::BadChar);
        assert_eq!(parse_target("/a\tb").unwrap_err(), UriError::BadChar);
        assert_eq!(parse_target("/a\x7f").unwrap_err(), UriError::BadChar);
        let star = parse_target("*").unwrap();
        assert_eq!(star.path, "*");
        assert!(normalize(&star.path, true).is_err());
    }
}
