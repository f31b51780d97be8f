//! `server {}` and the `location {}` tree inside it: listen, server_name,
//! return, proxy_pass, and settings inherited from the enclosing level.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use super::http::{template_error, HttpCx};
use super::upstream::split_host_port;
use super::{ctx, invalid, regex, settings, upstream, Cx, LOCATION, SERVER};
use crate::conf::error::{ConfError, ConfErrorKind, Result};
use crate::conf::model::{
    Balance, Handler, LevelSettings, Listen, ListenAddr, LocationConf, LocationMatch, ProxyPass,
    Return, Scheme, ServerConf, ServerName, StatusFormat, UpstreamConf, UpstreamServer,
};
use crate::conf::parse::Directive;
use crate::vars::Template;

pub(super) fn compile(
    cx: &mut Cx,
    hx: &mut HttpCx,
    parent: &LevelSettings,
    block: &Directive,
) -> Result<ServerConf> {
    let body = block.block.as_deref().unwrap_or_default();
    let mut level = LevelSettings::default();
    let mut listens = Vec::new();
    let mut names = Vec::new();
    let mut primary_name = None;
    let mut server_return = None;
    let mut location_blocks = Vec::new();
    for d in body {
        cx.check(d, SERVER)?;
        match d.name.as_str() {
            "listen" => listens.push(listen(d)?),
            "server_name" => {
                for a in &d.args {
                    let name = server_name(a, &d.loc)?;
                    if primary_name.is_none() {
                        primary_name = Some(a.to_ascii_lowercase());
                    }
                    if let Some(n) = name {
                        names.push(n);
                    }
                }
            }
            "location" => location_blocks.push(d),
            "return" => {
                if server_return.is_none() {
                    server_return = Some(return_(hx, d)?);
                }
            }
            "if" => check_if_block(cx, d, ctx::SIF)?,
            _ => settings::apply(cx, hx, &mut level, d)?,
        }
    }
    if listens.is_empty() {
        listens.push(Listen {
            addr: ListenAddr::AnyV4(80),
            default_server: false,
            reuseport: false,
            backlog: None,
            ssl: false,
            http2: false,
            ipv6only: true,
            loc: block.loc.clone(),
        });
    }
    level.inherit(parent);
    let settings = Arc::new(level.resolve());
    let tls = super::ssl::server(&settings, &listens, &block.loc)?;
    let mut locations = Vec::new();
    compile_locations(cx, hx, &level, &location_blocks, None, &mut locations)?;
    Ok(ServerConf {
        listens,
        names,
        primary_name: primary_name.unwrap_or_default(),
        settings,
        server_return,
        locations,
        loc: block.loc.clone(),
        tls,
    })
}

/// Validates the inside of an `if` block, which sluice does not run yet.
fn check_if_block(cx: &mut Cx, d: &Directive, here: u16) -> Result<()> {
    for inner in d.block.as_deref().unwrap_or_default() {
        cx.check(inner, here)?;
    }
    Ok(())
}

fn compile_locations(
    cx: &mut Cx,
    hx: &mut HttpCx,
    parent: &LevelSettings,
    blocks: &[&Directive],
    outer: Option<&LocationMatch>,
    out: &mut Vec<LocationConf>,
) -> Result<()> {
    let mut seen: HashMap<(u8, String), ()> = HashMap::new();
    for d in blocks {
        let loc = location(cx, hx, parent, d, outer)?;
        let key = match &loc.matcher {
            LocationMatch::Exact(p) => (0, p.clone()),
            LocationMatch::Prefix(p) | LocationMatch::PrefixNoRegex(p) => (1, p.clone()),
            LocationMatch::Regex { pattern, caseless } => (2 + *caseless as u8, pattern.clone()),
            LocationMatch::Named(n) => (4, n.clone()),
        };
        // Regex locations may repeat in nginx; the others may not.
        if (key.0 < 2 || key.0 == 4) && seen.insert(key.clone(), ()).is_some() {
            let shown = match &loc.matcher {
                LocationMatch::Named(n) => format!("@{n}"),
                _ => key.1,
            };
            return Err(ConfError::at(
                ConfErrorKind::DuplicateLocation(shown),
                &d.loc,
            ));
        }
        out.push(loc);
    }
    Ok(())
}

fn location(
    cx: &mut Cx,
    hx: &mut HttpCx,
    parent: &LevelSettings,
    d: &Directive,
    outer: Option<&LocationMatch>,
) -> Result<LocationConf> {
    let matcher = location_match(d)?;
    let mut regex_compiled = None;
    if let LocationMatch::Regex { pattern, caseless } = &matcher {
        regex_compiled = Some(regex(pattern, *caseless, &d.loc)?);
    }
    match (outer, &matcher) {
        (Some(LocationMatch::Exact(o)), _) => {
            return Err(ConfError::msg(
                format!(
                    "location \"{}\" cannot be inside the exact location \"{o}\"",
                    show(&matcher)
                ),
                &d.loc,
            ))
        }
        (Some(LocationMatch::Named(o)), _) => {
            return Err(ConfError::msg(
                format!(
                    "location \"{}\" cannot be inside the named location \"@{o}\"",
                    show(&matcher)
                ),
                &d.loc,
            ))
        }
        (Some(_), LocationMatch::Named(n)) => {
            return Err(ConfError::msg(
                format!("named location \"@{n}\" can be on the server level only"),
                &d.loc,
            ))
        }
        (
            Some(LocationMatch::Prefix(o) | LocationMatch::PrefixNoRegex(o)),
            LocationMatch::Prefix(p) | LocationMatch::PrefixNoRegex(p) | LocationMatch::Exact(p),
        ) if !p.starts_with(o.as_str()) => {
            return Err(ConfError::msg(
                format!("location \"{p}\" is outside location \"{o}\""),
                &d.loc,
            ))
        }
        _ => {}
    }

    let mut level = LevelSettings::default();
    let mut handler = Handler::None;
    let mut internal = matches!(matcher, LocationMatch::Named(_));
    let mut nested = Vec::new();
    let mut proxy_pass_d = None;
    for inner in d.block.as_deref().unwrap_or_default() {
        cx.check(inner, LOCATION)?;
        match inner.name.as_str() {
            "location" => nested.push(inner),
            "proxy_pass" => {
                if proxy_pass_d.is_some() || matches!(handler, Handler::Proxy(_)) {
                    return Err(super::duplicate(inner));
                }
                proxy_pass_d = Some(inner);
            }
            "return" => {
                if matches!(handler, Handler::None) {
                    handler = Handler::Return(return_(hx, inner)?);
                }
            }
            "internal" => internal = true,
            "check_status" => {
                let f = match inner.args.first().map(String::as_str) {
                    None | Some("html") => StatusFormat::Html,
                    Some("csv") => StatusFormat::Csv,
                    Some("json") => StatusFormat::Json,
                    Some(v) => return Err(invalid(inner, v)),
                };
                if matches!(handler, Handler::None) {
                    handler = Handler::CheckStatus(f);
                }
            }
            // Content handlers of ops (runtime/metrics.rs); the last one wins, as in nginx.
            "stub_status" | "prometheus_metrics" | "status_page" => {
                if !matches!(handler, Handler::Return(_)) {
                    handler = match inner.name.as_str() {
                        "stub_status" => Handler::StubStatus,
                        "prometheus_metrics" => Handler::Prometheus,
                        _ => Handler::StatusPage,
                    };
                }
            }
            "if" => check_if_block(cx, inner, ctx::LIF)?,
            "limit_except" => check_if_block(cx, inner, ctx::LIMIT_EXCEPT)?,
            _ => settings::apply(cx, hx, &mut level, inner)?,
        }
    }
    level.inherit(parent);
    if let Some(pd) = proxy_pass_d {
        let pp = proxy_pass(hx, pd, &matcher)?;
        // tls: the client config for https upstreams; none for http ones,
        // whatever an enclosing location had.
        level.proxy_ssl = Some(match pp.scheme {
            Scheme::Https => Some(super::ssl::upstream(
                &level.resolve(),
                &pp.proxy_host,
                &pd.loc,
            )?),
            Scheme::Http => None,
        });
        // `return` runs in the rewrite phase, before the content handler.
        if matches!(handler, Handler::None) {
            handler = Handler::Proxy(Arc::new(pp));
        }
    }
    let mut children = Vec::new();
    compile_locations(cx, hx, &level, &nested, Some(&matcher), &mut children)?;
    Ok(LocationConf {
        matcher,
        regex: regex_compiled,
        settings: Arc::new(level.resolve()),
        handler,
        internal,
        children,
        loc: d.loc.clone(),
    })
}

fn show(m: &LocationMatch) -> String {
    match m {
        LocationMatch::Exact(p) | LocationMatch::Prefix(p) | LocationMatch::PrefixNoRegex(p) => {
            p.clone()
        }
        LocationMatch::Regex { pattern, .. } => pattern.clone(),
        LocationMatch::Named(n) => format!("@{n}"),
    }
}

/// `location [=|^~|~|~*] uri` and `location @name`, with the modifier apart
/// or attached as nginx allows.
fn location_match(d: &Directive) -> Result<LocationMatch> {
    let a = &d.args;
    let m = if a.len() == 2 {
        let uri = a[1].clone();
        match a[0].as_str() {
            "=" => LocationMatch::Exact(uri),
            "^~" => LocationMatch::PrefixNoRegex(uri),
            "~" => LocationMatch::Regex {
                pattern: uri,
                caseless: false,
            },
            "~*" => LocationMatch::Regex {
                pattern: uri,
                caseless: true,
            },
            other => {
                return Err(ConfError::msg(
                    format!("invalid location modifier \"{other}\""),
                    &d.loc,
                ))
            }
        }
    } else {
        let s = a[0].as_str();
        if let Some(r) = s.strip_prefix('=') {
            LocationMatch::Exact(r.to_string())
        } else if let Some(r) = s.strip_prefix("^~") {
            LocationMatch::PrefixNoRegex(r.to_string())
        } else if let Some(r) = s.strip_prefix("~*") {
            LocationMatch::Regex {
                pattern: r.to_string(),
                caseless: true,
            }
        } else if let Some(r) = s.strip_prefix('~') {
            LocationMatch::Regex {
                pattern: r.to_string(),
                caseless: false,
            }
        } else if let Some(r) = s.strip_prefix('@') {
            LocationMatch::Named(r.to_string())
        } else {
            LocationMatch::Prefix(s.to_string())
        }
    };
    let empty = match &m {
        LocationMatch::Regex { pattern, .. } => pattern.is_empty(),
        LocationMatch::Named(n) => n.is_empty(),
        _ => false,
    };
    if empty {
        return Err(invalid(d, &a.join(" ")));
    }
    Ok(m)
}

/// `return code [text]`, `return code URL`, `return URL`.
fn return_(hx: &HttpCx, d: &Directive) -> Result<Return> {
    let a = &d.args;
    let first = a[0].as_str();
    if let Ok(code) = first.parse::<u16>() {
        if code > 999 || !first.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(d, first));
        }
        let text = match a.get(1) {
            Some(t) => Some(Template::compile(t, &hx.reg).map_err(|e| template_error(e, d))?),
            None => None,
        };
        return Ok(Return { code, text });
    }
    if a.len() == 1
        && (first.starts_with("http://")
            || first.starts_with("https://")
            || first.starts_with("$scheme"))
    {
        let url = Template::compile(first, &hx.reg).map_err(|e| template_error(e, d))?;
        return Ok(Return {
            code: 302,
            text: Some(url),
        });
    }
    Err(ConfError::msg(
        format!("invalid return code \"{first}\""),
        &d.loc,
    ))
}

/// `proxy_pass http://group` / `http://host:port/uri`.
fn proxy_pass(hx: &mut HttpCx, d: &Directive, matcher: &LocationMatch) -> Result<ProxyPass> {
    let url = d.args[0].clone();
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(ConfError::msg(
            format!("invalid URL prefix in \"{url}\""),
            &d.loc,
        ));
    };
    if url.contains('$') {
        return Err(ConfError::msg(
            format!("variables in \"proxy_pass\" are not supported yet in \"{url}\""),
            &d.loc,
        ));
    }
    let (authority, uri) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_string())),
        None => (rest, None),
    };
    if uri.is_some()
        && matches!(
            matcher,
            LocationMatch::Regex { .. } | LocationMatch::Named(_)
        )
    {
        return Err(ConfError::msg(
            "\"proxy_pass\" cannot have URI part in location given by regular expression, or inside named location, or inside \"if\" statement, or inside \"limit_except\" block".to_string(),
            &d.loc,
        ));
    }
    let default_port = if scheme == Scheme::Https { 443 } else { 80 };
    let (host, port) = split_host_port(authority).ok_or_else(|| {
        ConfError::msg(format!("invalid port in upstream \"{authority}\""), &d.loc)
    })?;
    if host.is_empty() {
        return Err(ConfError::msg(
            format!("no host in upstream \"{authority}\""),
            &d.loc,
        ));
    }
    let upstream = match (port, hx.upstreams.get(host)) {
        (None, Some(u)) => u.clone(),
        _ => {
            let key = authority.to_string();
            match hx.implicit.get(&key) {
                Some(u) => u.clone(),
                None => {
                    let addrs = upstream::resolve(authority, default_port, &d.loc)?;
                    let u = Arc::new(implicit_upstream(authority, addrs, d));
                    hx.implicit.insert(key, u.clone());
                    u
                }
            }
        }
    };
    Ok(ProxyPass {
        scheme,
        upstream,
        proxy_host: authority.to_string(),
        proxy_port: port.unwrap_or(default_port),
        uri,
        url,
    })
}

fn implicit_upstream(name: &str, addrs: Vec<SocketAddr>, d: &Directive) -> UpstreamConf {
    UpstreamConf {
        name: name.to_string(),
        servers: vec![UpstreamServer {
            name: name.to_string(),
            addrs,
            weight: 1,
            // nginx never marks the single server of an implicit upstream failed.
            max_fails: 0,
            fail_timeout: std::time::Duration::from_secs(10),
            backup: false,
            down: false,
            max_conns: 0,
        }],
        balance: Balance::RoundRobin,
        keepalive: None,
        keepalive_requests: 1000,
        keepalive_timeout: std::time::Duration::from_secs(60),
        keepalive_time: std::time::Duration::from_secs(3600),
        check: None,
        implicit: true,
        loc: d.loc.clone(),
    }
}

/// `listen address[:port] [default_server] [ssl] [http2] [reuseport] [backlog=n] ...`.
fn listen(d: &Directive) -> Result<Listen> {
    let spec = d.args[0].as_str();
    let addr = listen_addr(spec).ok_or_else(|| {
        ConfError::msg(
            format!("host not found in \"{spec}\" of the \"listen\" directive"),
            &d.loc,
        )
    })?;
    let mut l = Listen {
        addr,
        default_server: false,
        reuseport: false,
        backlog: None,
        ssl: false,
        http2: false,
        ipv6only: true,
        loc: d.loc.clone(),
    };
    for p in &d.args[1..] {
        match p.as_str() {
            "default_server" | "default" => l.default_server = true,
            "reuseport" => l.reuseport = true,
            "ssl" => l.ssl = true,
            "http2" => l.http2 = true,
            "deferred" | "bind" | "proxy_protocol" | "quic" => {}
            _ => {
                if let Some(v) = p.strip_prefix("backlog=") {
                    l.backlog = Some(v.parse().map_err(|_| invalid(d, p))?);
                } else if let Some(v) = p.strip_prefix("ipv6only=") {
                    l.ipv6only = match v {
                        "on" => true,
                        "off" => false,
                        _ => return Err(invalid(d, p)),
                    };
                } else if let Some(v) = p
                    .strip_prefix("rcvbuf=")
                    .or_else(|| p.strip_prefix("sndbuf="))
                {
                    crate::conf::units::parse_size(v).ok_or_else(|| invalid(d, p))?;
                } else if p.starts_with("so_keepalive=")
                    || p.starts_with("fastopen=")
                    || p.starts_with("setfib=")
                    || p.starts_with("accept_filter=")
                {
                } else {
                    return Err(ConfError::msg(format!("invalid parameter \"{p}\""), &d.loc));
                }
            }
        }
    }
    Ok(l)
}

/// `8080`, `*:8080`, `127.0.0.1`, `127.0.0.1:8080`, `[::]:80`, `localhost:8080`, `unix:/path`.
fn listen_addr(spec: &str) -> Option<ListenAddr> {
    if let Some(path) = spec.strip_prefix("unix:") {
        return Some(ListenAddr::Unix(path.into()));
    }
    if spec.bytes().all(|b| b.is_ascii_digit()) {
        return Some(ListenAddr::AnyV4(spec.parse().ok()?));
    }
    if let Some(port) = spec.strip_prefix("*:") {
        return Some(ListenAddr::AnyV4(port.parse().ok()?));
    }
    let (host, port) = split_host_port(spec)?;
    let port = port.unwrap_or(80);
    if host == "*" {
        return Some(ListenAddr::AnyV4(port));
    }
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    Some(ListenAddr::Addr(addr))
}

/// One `server_name` argument; `None` for names that match nothing by
/// themselves (`""` still counts: it matches requests without Host).
fn server_name(a: &str, loc: &crate::conf::error::SrcLoc) -> Result<Option<ServerName>> {
    if let Some(p) = a.strip_prefix('~') {
        return Ok(Some(ServerName::Regex(regex(p, true, loc)?)));
    }
    let lower = a.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("*.") {
        return Ok(Some(ServerName::WildStart {
            suffix: format!(".{rest}"),
            also_bare: false,
        }));
    }
    if let Some(rest) = lower.strip_prefix('.') {
        return Ok(Some(ServerName::WildStart {
            suffix: format!(".{rest}"),
            also_bare: true,
        }));
    }
    if let Some(rest) = lower.strip_suffix(".*") {
        return Ok(Some(ServerName::WildEnd(format!("{rest}."))));
    }
    if lower.contains('*') {
        return Err(ConfError::msg(
            format!("invalid server name or wildcard \"{a}\""),
            loc,
        ));
    }
    Ok(Some(ServerName::Exact(lower)))
}
