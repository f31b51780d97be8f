//! The http context: log formats, maps, upstreams, then servers.

use std::collections::HashMap;
use std::sync::Arc;

use super::{invalid, map, regex, server, settings, upstream, Cx, HTTP};
use crate::conf::error::{ConfError, ConfErrorKind, Result};
use crate::conf::model::{AccessLog, HttpConf, LevelSettings, LogEscape, LogFormat, UpstreamConf};
use crate::conf::parse::Directive;
use crate::vars::{Template, VarRegistry};

/// nginx's built-in `combined` format.
pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

/// What the http block's compile steps share.
pub(crate) struct HttpCx {
    pub reg: VarRegistry,
    pub log_formats: HashMap<String, Arc<LogFormat>>,
    pub upstreams: HashMap<String, Arc<UpstreamConf>>,
    /// Implicit upstreams created by `proxy_pass http://host:port`, by address.
    pub implicit: HashMap<String, Arc<UpstreamConf>>,
}

pub(super) fn compile(cx: &mut Cx, block: &Directive) -> Result<HttpConf> {
    let body = block.block.as_deref().unwrap_or_default();
    let mut hx = HttpCx {
        reg: VarRegistry::default(),
        log_formats: HashMap::new(),
        upstreams: HashMap::new(),
        implicit: HashMap::new(),
    };
    // Variables are checked once the whole block is known, as nginx does, so
    // a map may be defined after its first use.
    register_variables(&mut hx.reg, body)?;
    let combined = Template::compile(COMBINED, &hx.reg)
        .map_err(|e| ConfError::msg(e.to_string(), &block.loc))?;
    hx.log_formats.insert(
        "combined".into(),
        Arc::new(LogFormat {
            name: "combined".into(),
            escape: LogEscape::Default,
            template: combined,
        }),
    );

    let mut upstream_order = Vec::new();
    for d in body {
        cx.check(d, HTTP)?;
        match d.name.as_str() {
            "log_format" => {
                let f = log_format(&hx.reg, d)?;
                if hx.log_formats.contains_key(&f.name) && f.name != "combined" {
                    return Err(ConfError::msg(
                        format!("duplicate \"log_format\" name \"{}\"", f.name),
                        &d.loc,
                    ));
                }
                hx.log_formats.insert(f.name.clone(), Arc::new(f));
            }
            "upstream" => {
                let u = upstream::compile(cx, &hx.reg, d)?;
                if hx.upstreams.contains_key(&u.name) {
                    return Err(ConfError::msg(
                        format!("duplicate upstream \"{}\"", u.name),
                        &d.loc,
                    ));
                }
                upstream_order.push(u.name.clone());
                hx.upstreams.insert(u.name.clone(), Arc::new(u));
            }
            _ => {}
        }
    }

    let mut level = LevelSettings::default();
    let mut maps = Vec::new();
    let mut server_blocks = Vec::new();
    for d in body {
        match d.name.as_str() {
            "log_format" | "upstream" => {}
            "map" => maps.push(Arc::new(map::compile(&hx.reg, d)?)),
            "server" => server_blocks.push(d),
            _ => {
                settings::apply(cx, &mut hx, &mut level, d)?;
            }
        }
    }
    default_access_log(cx, &hx, &mut level);
    let mut servers = Vec::new();
    for d in server_blocks {
        servers.push(server::compile(cx, &mut hx, &level, d)?);
    }
    let mut upstreams: Vec<Arc<UpstreamConf>> = upstream_order
        .iter()
        .filter_map(|n| hx.upstreams.get(n).cloned())
        .collect();
    let mut implicit: Vec<_> = hx.implicit.into_values().collect();
    implicit.sort_by(|a, b| a.name.cmp(&b.name));
    upstreams.extend(implicit);
    Ok(HttpConf {
        servers,
        upstreams,
        maps,
        log_formats: hx.log_formats,
        set_vars: 0,
    })
}

/// nginx's `NGX_HTTP_LOG_PATH`, relative to the prefix.
pub const DEFAULT_ACCESS_LOG: &str = "logs/access.log";

/// Where no level names an access log, nginx logs to `logs/access.log` in
/// `combined` (ngx_http_log_merge_loc_conf). Setting it at the http level is
/// the same: every server and location either sets its own (`off` included)
/// or inherits this one.
fn default_access_log(cx: &Cx, hx: &HttpCx, level: &mut LevelSettings) {
    if level.access_log.is_some() {
        return;
    }
    let Some(format) = hx.log_formats.get("combined").cloned() else {
        return;
    };
    level.access_log = Some(Arc::new(vec![AccessLog::File {
        path: cx.full_path(DEFAULT_ACCESS_LOG),
        format,
        buffer: None,
        flush: None,
        gzip: None,
        condition: None,
    }]));
}

/// Registers map targets and regex named captures found anywhere in the block.
fn register_variables(reg: &mut VarRegistry, body: &[Directive]) -> Result<()> {
    for d in body {
        match d.name.as_str() {
            "map" if d.args.len() == 2 => {
                let Some(target) = d.args[1].strip_prefix('$') else {
                    return Err(invalid(d, &d.args[1]));
                };
                if reg.add_map(target).is_none() {
                    return Err(ConfError::msg(
                        format!("the duplicate \"{target}\" variable"),
                        &d.loc,
                    ));
                }
                for e in d.block.as_deref().unwrap_or_default() {
                    if let Some(p) = e.name.strip_prefix('~') {
                        let (p, ci) = p.strip_prefix('*').map_or((p, false), |p| (p, true));
                        add_captures(reg, &regex(p, ci, &e.loc)?);
                    }
                }
            }
            "server_name" => {
                for a in &d.args {
                    if let Some(p) = a.strip_prefix('~') {
                        add_captures(reg, &regex(p, true, &d.loc)?);
                    }
                }
            }
            "location" if d.args.len() == 2 && (d.args[0] == "~" || d.args[0] == "~*") => {
                add_captures(reg, &regex(&d.args[1], d.args[0] == "~*", &d.loc)?);
            }
            "set" => {
                if let Some(name) = d.args.first().and_then(|a| a.strip_prefix('$')) {
                    reg.add_set(name);
                }
            }
            _ => {}
        }
        if d.name != "map" {
            if let Some(inner) = &d.block {
                register_variables(reg, inner)?;
            }
        }
    }
    Ok(())
}

fn add_captures(reg: &mut VarRegistry, re: &regex::Regex) {
    for name in re.capture_names().flatten() {
        reg.add_named_capture(name);
    }
}

/// `log_format name [escape=...] string ...`.
fn log_format(reg: &VarRegistry, d: &Directive) -> Result<LogFormat> {
    let name = d.args[0].clone();
    let mut rest = &d.args[1..];
    let mut escape = LogEscape::Default;
    if let Some(e) = rest.first().and_then(|a| a.strip_prefix("escape=")) {
        escape = match e {
            "default" => LogEscape::Default,
            "json" => LogEscape::Json,
            "none" => LogEscape::None,
            _ => return Err(invalid(d, &rest[0])),
        };
        rest = &rest[1..];
    }
    if rest.is_empty() {
        return Err(ConfError::at(
            ConfErrorKind::InvalidArgCount(d.name.clone()),
            &d.loc,
        ));
    }
    let text: String = rest.concat();
    let template = Template::compile(&text, reg).map_err(|e| template_error(e, d))?;
    Ok(LogFormat {
        name,
        escape,
        template,
    })
}

pub(crate) fn template_error(e: crate::vars::TemplateError, d: &Directive) -> ConfError {
    match e {
        crate::vars::TemplateError::UnknownVariable(v) => {
            ConfError::at(ConfErrorKind::UnknownVariable(v), &d.loc)
        }
        other => ConfError::msg(other.to_string(), &d.loc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::model::Settings;
    use std::path::Path;

    fn http(text: &str) -> HttpConf {
        let conf = crate::conf::compile::load_str(
            &format!("events {{}}\nhttp {{\n{text}\n}}\n"),
            "nginx.conf",
            Path::new("/prefix"),
        )
        .expect("valid config");
        conf.http.expect("http block")
    }

    fn paths(s: &Settings) -> Vec<String> {
        s.access_log
            .iter()
            .map(|l| match l {
                AccessLog::Off => "off".to_string(),
                AccessLog::File { path, format, .. } => {
                    format!("{} {}", path.display(), format.name)
                }
            })
            .collect()
    }

    #[test]
    fn default_access_log_where_none_is_configured() {
        let h = http(
            "server { listen 8080; location / { } }\n\
             server { listen 8081; access_log off; location / { } }\n\
             server { listen 8082; location / { access_log logs/x.log; } location /b { } }",
        );
        let default = vec!["/prefix/logs/access.log combined".to_string()];
        assert_eq!(paths(&h.servers[0].settings), default);
        assert_eq!(paths(&h.servers[0].locations[0].settings), default);
        assert_eq!(paths(&h.servers[1].locations[0].settings), ["off"]);
        assert_eq!(
            paths(&h.servers[2].locations[0].settings),
            ["/prefix/logs/x.log combined"]
        );
        assert_eq!(paths(&h.servers[2].locations[1].settings), default);
    }

    #[test]
    fn an_http_level_access_log_replaces_the_default() {
        let h = http(
            "log_format f '$status';\naccess_log logs/a.log f;\n\
             server { listen 8080; location / { } }",
        );
        assert_eq!(
            paths(&h.servers[0].locations[0].settings),
            ["/prefix/logs/a.log f"]
        );
        let h = http("access_log off;\nserver { listen 8080; location / { } }");
        assert_eq!(paths(&h.servers[0].locations[0].settings), ["off"]);
    }

    #[test]
    fn gzip_proxied_off_wins_over_other_words() {
        let h = http("gzip_proxied expired off;\nserver { listen 8080; location / { } }");
        assert_eq!(h.servers[0].locations[0].settings.gzip_proxied, 0);
        let h = http("gzip_proxied expired any;\nserver { listen 8080; location / { } }");
        assert_ne!(h.servers[0].locations[0].settings.gzip_proxied, 0);
    }
}
