//! `proxy_redirect` on `Location` and `Refresh`, then nginx's header filter
//! rule that turns a relative `Location` into an absolute one.

use http::header::{HeaderMap, HeaderValue, LOCATION, REFRESH};

use crate::conf::model::{LocationMatch, ProxyRedirect, RedirectFrom, RedirectRule};
use crate::server::request::RequestState;

/// Rewrites `Location` and `Refresh` of an upstream response in place.
pub fn rewrite(headers: &mut HeaderMap, state: &RequestState, matcher: &LocationMatch) {
    if let Some(v) = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        let mut out = apply_rules(&v, state, matcher).unwrap_or(v);
        if out.starts_with('/') && state.settings.absolute_redirect {
            out = absolute(state, &out);
        }
        if let Ok(hv) = HeaderValue::from_str(&out) {
            headers.insert(LOCATION, hv);
        }
    }
    if let Some(v) = headers
        .get(REFRESH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        // Only the URL after "url=" is rewritten.
        if let Some(i) = v.to_ascii_lowercase().find("url=") {
            let (head, url) = v.split_at(i + 4);
            if let Some(new) = apply_rules(url, state, matcher) {
                if let Ok(hv) = HeaderValue::from_str(&format!("{head}{new}")) {
                    headers.insert(REFRESH, hv);
                }
            }
        }
    }
}

/// The first rule that matches, applied; `None` when none does.
fn apply_rules(value: &str, state: &RequestState, matcher: &LocationMatch) -> Option<String> {
    let ProxyRedirect::Rules(rules) = &state.settings.proxy_redirect else {
        return None;
    };
    let pp = state.proxy.as_ref()?;
    let cx = state.vars(None, None);
    for rule in rules {
        match rule {
            RedirectRule::Default => {
                let loc_name = match matcher {
                    LocationMatch::Prefix(p)
                    | LocationMatch::PrefixNoRegex(p)
                    | LocationMatch::Exact(p) => p.as_str(),
                    // nginx has no default rule for regex and named locations.
                    _ => continue,
                };
                let from = match &pp.uri {
                    Some(_) => pp.url.clone(),
                    None => format!("{}{loc_name}", pp.url),
                };
                if let Some(rest) = value.strip_prefix(from.as_str()) {
                    return Some(format!("{loc_name}{rest}"));
                }
            }
            RedirectRule::Map(RedirectFrom::Prefix(from), to) => {
                let from = from.render_to_vec(&cx);
                let from = String::from_utf8_lossy(&from);
                if let Some(rest) = value.strip_prefix(from.as_ref()) {
                    let to = to.render_to_vec(&cx);
                    return Some(format!("{}{rest}", String::from_utf8_lossy(&to)));
                }
            }
            RedirectRule::Map(RedirectFrom::Regex(re), to) => {
                if let Some(caps) = crate::vars::eval::Captures::from_regex(re, value) {
                    let local = crate::vars::eval::VarCtx {
                        captures: Some(&caps),
                        ..cx
                    };
                    let to = to.render_to_vec(&local);
                    return Some(String::from_utf8_lossy(&to).into_owned());
                }
            }
        }
    }
    None
}

/// `/path` -> `scheme://host[:port]/path`, as nginx's header filter does.
fn absolute(state: &RequestState, path: &str) -> String {
    let scheme = state.conn.info.scheme;
    let host = if state.settings.server_name_in_redirect {
        state.gen.http().servers[state.server_idx]
            .primary_name
            .as_str()
    } else {
        state.host.as_str()
    };
    let port = state.conn.info.local.port();
    let default = if scheme == "https" { 443 } else { 80 };
    if state.settings.port_in_redirect && port != default {
        format!("{scheme}://{host}:{port}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

/// nginx's header filter on a response sluice made itself (`return`, the
/// `/dir` -> `/dir/` redirect): a `Location` starting with `/` becomes
/// absolute unless `absolute_redirect off`.
pub fn absolute_location(headers: &mut HeaderMap, state: &RequestState) {
    if !state.settings.absolute_redirect {
        return;
    }
    let Some(path) = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with('/'))
        .map(str::to_owned)
    else {
        return;
    };
    if let Ok(hv) = HeaderValue::from_str(&absolute(state, &path)) {
        headers.insert(LOCATION, hv);
    }
}
