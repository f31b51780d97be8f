//! Header rules of the proxy, as ngx_http_proxy_module applies them.
//!
//! Request: the configured `proxy_set_header` list (nginx's defaults merged
//! under it) is sent first; an empty value removes the header; then the
//! client's headers follow, except those whose names the list mentions.
//! hop-by-hop headers reach the upstream only when the list sets them.
//! Response: the connection and framing headers and nginx's hidden headers
//! are dropped (other hop-by-hop names pass, as in nginx),
//! `proxy_hide_header` / `proxy_pass_header` adjust the hidden set.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::conf::model::{HttpVersion, Settings};
use crate::vars::Template;

/// nginx's `ngx_http_proxy_headers`: what is set unless the config says otherwise.
/// `Content-Length` and `Transfer-Encoding` are decided by the body framing.
const DEFAULTS: &[(&str, &str)] = &[
    ("host", "$proxy_host"),
    ("connection", "close"),
    ("te", ""),
    ("keep-alive", ""),
    ("expect", ""),
    ("upgrade", ""),
];

/// Headers of the client request that nginx never copies: the body framing
/// is re-done for the upstream.
const FRAMING: &[&str] = &["content-length", "transfer-encoding"];

/// The headers to set for one location: the user's list merged over nginx's
/// defaults, compiled once at load.
#[derive(Debug)]
pub struct HeaderPlan {
    pub set: Vec<(HeaderName, Template)>,
}

impl HeaderPlan {
    pub fn build(settings: &Settings) -> HeaderPlan {
        let mut set: Vec<(HeaderName, Template)> = Vec::new();
        for (name, value) in settings.proxy_set_header.iter() {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                set.retain(|(k, _)| k != n);
                set.push((n, value.clone()));
            }
        }
        let reg = crate::vars::VarRegistry::default();
        for (name, value) in DEFAULTS {
            let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            if set.iter().any(|(k, _)| *k == n) {
                continue;
            }
            // The defaults only use built-in variables, which always resolve.
            if let Ok(t) = Template::compile(value, &reg) {
                set.push((n, t));
            }
        }
        HeaderPlan { set }
    }

    /// Whether the client's header `name` is replaced by the plan.
    pub fn overrides(&self, name: &HeaderName) -> bool {
        self.set.iter().any(|(k, _)| k == name) || FRAMING.contains(&name.as_str())
    }
}

/// Headers nginx hides from the upstream response by default.
const HIDDEN: &[&str] = &[
    "date",
    "server",
    "x-pad",
    "x-accel-expires",
    "x-accel-redirect",
    "x-accel-limit-rate",
    "x-accel-buffering",
    "x-accel-charset",
];

/// The response headers nginx's upstream module does not relay
/// (`ngx_http_upstream_headers_in`): the framing and connection ones, which
/// the client connection decides for itself. nginx passes the other
/// hop-by-hop names (TE, Trailer, Upgrade, Proxy-Connection, names listed in
/// Connection), and so does sluice; on a 101 `Upgrade` and `Connection`
/// belong to the switch.
const NOT_RELAYED: &[&str] = &["connection", "keep-alive", "transfer-encoding"];

/// Filters an upstream response's headers for the client.
pub fn filter_response(headers: &mut HeaderMap, settings: &Settings, switching: bool) {
    // One look at the few names present instead of a parse and a lookup per
    // listed name: this runs for every response.
    let drop = |name: &str| {
        (NOT_RELAYED.contains(&name) && !(switching && name == "connection"))
            || (HIDDEN.contains(&name) && !settings.proxy_pass_header.iter().any(|p| p == name))
            || settings.proxy_hide_header.iter().any(|h| h == name)
    };
    let gone: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| drop(k.as_str()))
        .cloned()
        .collect();
    for name in gone {
        headers.remove(name);
    }
}

/// `Connection: close` / `Connection: upgrade` for the client side is hyper's
/// job; this says whether the version allows upstream keepalive at all.
pub fn upstream_version(v: HttpVersion) -> http::Version {
    match v {
        HttpVersion::Http10 => http::Version::HTTP_10,
        HttpVersion::Http11 => http::Version::HTTP_11,
    }
}

/// A header value from rendered bytes; invalid bytes drop the header, as a
/// value nginx would send verbatim could not be sent by hyper anyway.
pub fn value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

/// nginx sends the body's length among its own headers, right after the
/// `proxy_set_header` list and before the client's: reserves that place in
/// `head` (the value is set, or the header removed, once the body framing
/// is known; inserting into an existing name keeps its position).
pub fn reserve_length(head: &mut HeaderMap, client: &HeaderMap, pass_body: bool) {
    if pass_body
        && (client.contains_key(header::CONTENT_LENGTH)
            || client.contains_key(header::TRANSFER_ENCODING))
    {
        head.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
}
