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
use crate::server::request::BodyFraming;
use crate::vars::{Template, VarCtx};

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
    pub set: Vec<(HeaderName, PlanValue)>,
}

/// One value of the plan.
#[derive(Debug)]
pub enum PlanValue {
    /// A value without variables, made once at load (a clone per request
    /// shares its bytes); `None` when it is empty, which removes the header,
    /// or not a valid header value.
    Fixed(Option<HeaderValue>),
    /// A value rendered for each request.
    Rendered(Template),
}

impl PlanValue {
    fn of(t: Template) -> PlanValue {
        match t.as_literal() {
            Some(text) => PlanValue::Fixed(value(text.as_bytes()).filter(|v| !v.is_empty())),
            None => PlanValue::Rendered(t),
        }
    }
}

impl HeaderPlan {
    pub fn build(settings: &Settings) -> HeaderPlan {
        let mut set: Vec<(HeaderName, PlanValue)> = Vec::new();
        for (name, value) in settings.proxy_set_header.iter() {
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                set.retain(|(k, _)| k != n);
                set.push((n, PlanValue::of(value.clone())));
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
                set.push((n, PlanValue::of(t)));
            }
        }
        HeaderPlan { set }
    }

    /// Whether the client's header `name` is replaced by the plan.
    pub fn overrides(&self, name: &HeaderName) -> bool {
        self.set.iter().any(|(k, _)| k == name) || FRAMING.contains(&name.as_str())
    }

    /// The upstream request's header fields: the plan's values, a place for
    /// `Content-Length` when the body has a framing, then the client's
    /// (`pass_client`: `proxy_pass_request_headers`). `Content-Length` gets
    /// its value, or goes, with [`set_length`].
    pub fn head(
        &self,
        cx: &VarCtx<'_>,
        client: &HeaderMap,
        framing: &BodyFraming,
        pass_body: bool,
        pass_client: bool,
    ) -> HeaderMap {
        let mut head = HeaderMap::new();
        // One allocation that every rendered value fits in, instead of a Vec
        // grown in steps by the first value.
        let mut buf = Vec::new();
        for (name, v) in &self.set {
            let v = match v {
                PlanValue::Fixed(Some(v)) => v.clone(),
                PlanValue::Fixed(None) => continue,
                PlanValue::Rendered(tmpl) => {
                    if buf.capacity() == 0 {
                        buf.reserve(256);
                    }
                    buf.clear();
                    tmpl.render(cx, &mut buf);
                    match value(&buf) {
                        Some(v) if !buf.is_empty() => v,
                        _ => continue,
                    }
                }
            };
            head.append(name.clone(), v);
        }
        reserve_length(&mut head, framing, pass_body);
        if pass_client {
            for (k, v) in client.iter() {
                if !self.overrides(k) {
                    head.append(k.clone(), v.clone());
                }
            }
        }
        head
    }
}

/// Gives the upstream head's `Content-Length` its value (in the place
/// [`reserve_length`] kept), or removes it when the request has no length.
pub fn set_length(head: &mut HeaderMap, length: Option<u64>) {
    match length {
        Some(n) => {
            head.insert(header::CONTENT_LENGTH, n.into());
        }
        None => {
            head.remove(header::CONTENT_LENGTH);
        }
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
fn reserve_length(head: &mut HeaderMap, framing: &BodyFraming, pass_body: bool) {
    if pass_body && (framing.content_length.is_some() || framing.transfer_encoding) {
        head.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(directives: &str) -> HeaderPlan {
        let text = format!(
            "events {{}} http {{ server {{ location / {{ proxy_pass http://127.0.0.1:9; {directives} }} }} }}"
        );
        let c =
            crate::conf::load_str(&text, "t.conf", std::path::Path::new("/tmp")).expect("config");
        let http = c.http.expect("http");
        HeaderPlan::build(&http.servers[0].locations[0].settings)
    }

    fn value_of<'a>(p: &'a HeaderPlan, name: &str) -> &'a PlanValue {
        &p.set.iter().find(|(k, _)| k == name).expect(name).1
    }

    #[test]
    fn values_without_variables_are_made_at_load() {
        let p = plan(
            r#"proxy_set_header X-Fixed "one"; proxy_set_header X-Var "$host"; proxy_set_header Accept "";"#,
        );
        assert!(matches!(value_of(&p, "x-fixed"), PlanValue::Fixed(Some(v)) if v == "one"));
        assert!(matches!(value_of(&p, "x-var"), PlanValue::Rendered(_)));
        // An empty value removes the header, as nginx's does.
        assert!(matches!(value_of(&p, "accept"), PlanValue::Fixed(None)));
        assert!(p.overrides(&header::ACCEPT));
        // nginx's defaults: `Connection: close` is fixed, Host is rendered.
        assert!(matches!(value_of(&p, "connection"), PlanValue::Fixed(Some(v)) if v == "close"));
        assert!(matches!(value_of(&p, "host"), PlanValue::Rendered(_)));
    }

    #[test]
    fn set_length_fills_the_place_kept_before_the_client_s_headers() {
        let mut head = HeaderMap::new();
        head.append(header::HOST, HeaderValue::from_static("up"));
        let framing = BodyFraming {
            content_length: Some(5),
            transfer_encoding: false,
        };
        reserve_length(&mut head, &framing, true);
        head.append("x-client", HeaderValue::from_static("c"));
        set_length(&mut head, Some(5));
        let names: Vec<&str> = head.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "content-length", "x-client"]);
        assert_eq!(head[header::CONTENT_LENGTH], "5");
        set_length(&mut head, None);
        assert!(!head.contains_key(header::CONTENT_LENGTH));
        // No framing, or the body not passed: no place is kept.
        let mut bare = HeaderMap::new();
        reserve_length(&mut bare, &BodyFraming::default(), true);
        reserve_length(&mut bare, &framing, false);
        assert!(bare.is_empty());
    }
}
