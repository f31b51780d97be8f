//! The URI sent upstream, by nginx's `proxy_pass` rules.

use crate::conf::model::{LocationMatch, ProxyPass};

/// nginx's `ngx_escape_uri(NGX_ESCAPE_URI)`: space, `#`, `%`, `?`, controls
/// and bytes >= 0x80 are escaped; everything else is kept.
fn escape_uri(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b <= 0x20 || b >= 0x7f || matches!(b, b'#' | b'%' | b'?') {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        } else {
            out.push(b as char);
        }
    }
}

/// The request target for the upstream.
///
/// Without a URI part in `proxy_pass`, the client's request target passes
/// unchanged. With one, the part of the normalised URI that matched the
/// location prefix is replaced by it, and the result is escaped again.
pub fn upstream_target(
    pp: &ProxyPass,
    matcher: &LocationMatch,
    raw_target: &str,
    uri: &str,
    args: Option<&str>,
) -> String {
    let Some(part) = &pp.uri else {
        return raw_target.to_string();
    };
    let prefix_len = match matcher {
        LocationMatch::Prefix(p) | LocationMatch::PrefixNoRegex(p) | LocationMatch::Exact(p) => {
            p.len()
        }
        // Config load refuses a URI part elsewhere.
        _ => 0,
    };
    let rest = uri.get(prefix_len..).unwrap_or("");
    let mut out = String::with_capacity(part.len() + rest.len() + args.map_or(0, |a| a.len() + 1));
    out.push_str(part);
    escape_uri(rest, &mut out);
    if let Some(a) = args {
        out.push('?');
        out.push_str(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn pp(url: &str) -> ProxyPass {
        let text =
            format!("events {{}} http {{ server {{ location /a/ {{ proxy_pass {url}; }} }} }}");
        let c = crate::conf::load_str(&text, "t.conf", Path::new("/tmp")).unwrap();
        let http = c.http.unwrap();
        match &http.servers[0].locations[0].handler {
            crate::conf::model::Handler::Proxy(p) => (**p).clone(),
            _ => panic!("no proxy"),
        }
    }

    #[test]
    fn without_uri_part_the_target_passes_unchanged() {
        let p = pp("http://127.0.0.1:9");
        let m = LocationMatch::Prefix("/a/".into());
        assert_eq!(
            upstream_target(&p, &m, "/a/%7Ex?q=1", "/a/~x", Some("q=1")),
            "/a/%7Ex?q=1"
        );
    }

    #[test]
    fn with_uri_part_the_prefix_is_replaced() {
        let p = pp("http://127.0.0.1:9/b/");
        let m = LocationMatch::Prefix("/a/".into());
        assert_eq!(
            upstream_target(&p, &m, "/a/x%20y?q", "/a/x y", Some("q")),
            "/b/x%20y?q"
        );
        let p = pp("http://127.0.0.1:9/");
        assert_eq!(upstream_target(&p, &m, "/a/c", "/a/c", None), "/c");
    }
}
