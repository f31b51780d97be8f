//! Directives that may appear at http, server and location level and inherit
//! downwards, and value checks for the ones accepted without effect.

use std::sync::Arc;

use super::http::{template_error, HttpCx};
use super::{arg_flag, arg_num, arg_size, arg_time, duplicate, invalid, regex, Cx};
use crate::conf::error::{ConfError, Result};
use crate::conf::model::{
    gzip_proxied, next_upstream, AccessLog, Bufs, HttpVersion, LevelSettings, ProxyRedirect,
    RedirectFrom, RedirectRule,
};
use crate::conf::parse::Directive;
use crate::vars::Template;

/// Sets a single-valued field, refusing a second one at the same level.
macro_rules! set_once {
    ($level:expr, $field:ident, $d:expr, $value:expr) => {{
        if $level.$field.is_some() {
            return Err(duplicate($d));
        }
        $level.$field = Some($value);
    }};
}

/// Applies one directive to the settings of its level. Directives that are not
/// inherited settings (they belong to the caller) are ignored here.
pub(crate) fn apply(
    cx: &mut Cx,
    hx: &mut HttpCx,
    lv: &mut LevelSettings,
    d: &Directive,
) -> Result<()> {
    let a = &d.args;
    match d.name.as_str() {
        "default_type" => set_once!(lv, default_type, d, a[0].clone()),
        "types" => {
            let mut types = std::collections::HashMap::new();
            for t in d.block.as_deref().unwrap_or_default() {
                if t.block.is_some() || t.args.is_empty() {
                    return Err(invalid(t, &t.name));
                }
                for ext in &t.args {
                    types.insert(ext.to_ascii_lowercase(), t.name.clone());
                }
            }
            // Later `types` blocks at the same level replace earlier ones in nginx.
            lv.types = Some(Arc::new(types));
        }
        "client_header_buffer_size" => set_once!(lv, client_header_buffer_size, d, arg_size(d, 0)?),
        "large_client_header_buffers" => set_once!(lv, large_client_header_buffers, d, bufs(d)?),
        "client_header_timeout" => set_once!(lv, client_header_timeout, d, arg_time(d, 0)?),
        "client_body_timeout" => set_once!(lv, client_body_timeout, d, arg_time(d, 0)?),
        "client_max_body_size" => set_once!(lv, client_max_body_size, d, arg_size(d, 0)?),
        "client_body_buffer_size" => set_once!(lv, client_body_buffer_size, d, arg_size(d, 0)?),
        "keepalive_timeout" => {
            if let Some(h) = a.get(1) {
                crate::conf::units::parse_time(h).ok_or_else(|| invalid(d, h))?;
            }
            set_once!(lv, keepalive_timeout, d, arg_time(d, 0)?)
        }
        "keepalive_requests" => set_once!(lv, keepalive_requests, d, arg_num(d, 0)?),
        "keepalive_time" => set_once!(lv, keepalive_time, d, arg_time(d, 0)?),
        "send_timeout" => set_once!(lv, send_timeout, d, arg_time(d, 0)?),
        "reset_timedout_connection" => {
            set_once!(lv, reset_timedout_connection, d, arg_flag(d))
        }
        "tcp_nodelay" => set_once!(lv, tcp_nodelay, d, arg_flag(d)),
        // h2
        "http2" => set_once!(lv, http2, d, arg_flag(d)),
        "http2_max_concurrent_streams" => {
            set_once!(lv, http2_max_concurrent_streams, d, arg_num(d, 0)?)
        }
        "http2_recv_buffer_size" => set_once!(lv, http2_recv_buffer_size, d, arg_size(d, 0)?),
        "http2_extended_connect" => set_once!(lv, http2_extended_connect, d, arg_flag(d)),
        "server_tokens" => {
            let v = match a[0].as_str() {
                "on" => true,
                "off" | "build" => false,
                _ => return Err(invalid(d, &a[0])),
            };
            set_once!(lv, server_tokens, d, v)
        }
        "underscores_in_headers" => set_once!(lv, underscores_in_headers, d, arg_flag(d)),
        "ignore_invalid_headers" => set_once!(lv, ignore_invalid_headers, d, arg_flag(d)),
        "merge_slashes" => set_once!(lv, merge_slashes, d, arg_flag(d)),
        "absolute_redirect" => set_once!(lv, absolute_redirect, d, arg_flag(d)),
        "port_in_redirect" => set_once!(lv, port_in_redirect, d, arg_flag(d)),
        "server_name_in_redirect" => set_once!(lv, server_name_in_redirect, d, arg_flag(d)),
        "chunked_transfer_encoding" => set_once!(lv, chunked_transfer_encoding, d, arg_flag(d)),
        "access_log" => {
            let entry = access_log(cx, hx, d)?;
            let mut list = match lv.access_log.take() {
                Some(list) => Arc::try_unwrap(list).unwrap_or_else(|l| (*l).clone()),
                None => Vec::new(),
            };
            list.push(entry);
            lv.access_log = Some(Arc::new(list));
        }
        "proxy_set_header" => {
            let value = Template::compile(&a[1], &hx.reg).map_err(|e| template_error(e, d))?;
            push(&mut lv.proxy_set_header, (a[0].to_ascii_lowercase(), value));
        }
        "proxy_hide_header" => push(&mut lv.proxy_hide_header, a[0].to_ascii_lowercase()),
        "proxy_pass_header" => push(&mut lv.proxy_pass_header, a[0].to_ascii_lowercase()),
        "proxy_http_version" => {
            let v = match a[0].as_str() {
                "1.0" => HttpVersion::Http10,
                "1.1" => HttpVersion::Http11,
                _ => return Err(invalid(d, &a[0])),
            };
            set_once!(lv, proxy_http_version, d, v)
        }
        "proxy_redirect" => proxy_redirect(hx, lv, d)?,
        "proxy_connect_timeout" => set_once!(lv, proxy_connect_timeout, d, arg_time(d, 0)?),
        "proxy_read_timeout" => set_once!(lv, proxy_read_timeout, d, arg_time(d, 0)?),
        "proxy_send_timeout" => set_once!(lv, proxy_send_timeout, d, arg_time(d, 0)?),
        "proxy_buffering" => set_once!(lv, proxy_buffering, d, arg_flag(d)),
        "proxy_request_buffering" => set_once!(lv, proxy_request_buffering, d, arg_flag(d)),
        "proxy_buffer_size" => set_once!(lv, proxy_buffer_size, d, arg_size(d, 0)?),
        "proxy_buffers" => set_once!(lv, proxy_buffers, d, bufs(d)?),
        "proxy_pass_request_headers" => set_once!(lv, proxy_pass_request_headers, d, arg_flag(d)),
        "proxy_pass_request_body" => set_once!(lv, proxy_pass_request_body, d, arg_flag(d)),
        "proxy_next_upstream" => {
            let mut bits = 0;
            for w in a {
                let b = next_upstream::parse(w).ok_or_else(|| invalid(d, w))?;
                if b == next_upstream::OFF && a.len() > 1 {
                    return Err(invalid(d, w));
                }
                bits |= b;
            }
            set_once!(lv, proxy_next_upstream, d, bits)
        }
        "proxy_next_upstream_tries" => set_once!(lv, proxy_next_upstream_tries, d, arg_num(d, 0)?),
        "proxy_next_upstream_timeout" => {
            set_once!(lv, proxy_next_upstream_timeout, d, arg_time(d, 0)?)
        }
        "proxy_ignore_client_abort" => set_once!(lv, proxy_ignore_client_abort, d, arg_flag(d)),
        "proxy_method" => set_once!(lv, proxy_method, d, Some(a[0].clone())),
        "proxy_socket_keepalive" => set_once!(lv, proxy_socket_keepalive, d, arg_flag(d)),
        "gzip" => set_once!(lv, gzip, d, arg_flag(d)),
        "gzip_min_length" => set_once!(lv, gzip_min_length, d, arg_size(d, 0)?),
        "gzip_http_version" => {
            let v = match a[0].as_str() {
                "1.0" => HttpVersion::Http10,
                "1.1" => HttpVersion::Http11,
                _ => return Err(invalid(d, &a[0])),
            };
            set_once!(lv, gzip_http_version, d, v)
        }
        "gzip_comp_level" => {
            let n = arg_num(d, 0)?;
            if !(1..=9).contains(&n) {
                return Err(ConfError::msg(
                    "the value must be between 1 and 9".to_string(),
                    &d.loc,
                ));
            }
            set_once!(lv, gzip_comp_level, d, n as u32)
        }
        "gzip_types" => {
            // text/html is always compressed, as in nginx.
            let mut types = vec!["text/html".to_string()];
            types.extend(a.iter().map(|t| t.to_ascii_lowercase()));
            set_once!(lv, gzip_types, d, Arc::new(types))
        }
        "gzip_vary" => set_once!(lv, gzip_vary, d, arg_flag(d)),
        "gzip_proxied" => {
            let mut bits = 0;
            for w in a {
                bits |= gzip_proxied::parse(w).ok_or_else(|| invalid(d, w))?;
            }
            // nginx checks the `off` bit first: with it, nothing else counts.
            if a.iter().any(|w| w == "off") {
                bits = gzip_proxied::OFF;
            }
            set_once!(lv, gzip_proxied, d, bits)
        }
        "gzip_disable" => {
            let mut list = Vec::new();
            for p in a {
                // "msie6" is nginx's shorthand for old Internet Explorer.
                let pattern = if p == "msie6" {
                    "MSIE [4-6]\\."
                } else {
                    p.as_str()
                };
                list.push(regex(pattern, true, &d.loc)?);
            }
            set_once!(lv, gzip_disable, d, Arc::new(list))
        }
        _ if super::ssl::apply(cx, lv, d)? => {}
        _ => validate_no_effect(d)?,
    }
    Ok(())
}

fn push<T: Clone>(slot: &mut Option<Arc<Vec<T>>>, item: T) {
    let mut list = match slot.take() {
        Some(list) => Arc::try_unwrap(list).unwrap_or_else(|l| (*l).clone()),
        None => Vec::new(),
    };
    list.push(item);
    *slot = Some(Arc::new(list));
}

/// `4 64k`.
pub(crate) fn bufs(d: &Directive) -> Result<Bufs> {
    let count = arg_num(d, 0)?;
    if count == 0 {
        return Err(invalid(d, &d.args[0]));
    }
    Ok(Bufs {
        count,
        size: arg_size(d, 1)?,
    })
}

/// `access_log off | path [format [buffer=size] [gzip[=level]] [flush=time] [if=condition]]`.
fn access_log(cx: &Cx, hx: &HttpCx, d: &Directive) -> Result<AccessLog> {
    let a = &d.args;
    if a[0] == "off" {
        if a.len() > 1 {
            return Err(invalid(d, &a[1]));
        }
        return Ok(AccessLog::Off);
    }
    let fmt_name = a.get(1).map_or("combined", String::as_str);
    let format = hx
        .log_formats
        .get(fmt_name)
        .cloned()
        .ok_or_else(|| ConfError::msg(format!("unknown log format \"{fmt_name}\""), &d.loc))?;
    let (mut buffer, mut flush, mut gzip, mut condition) = (None, None, None, None);
    for p in a.iter().skip(2) {
        if let Some(v) = p.strip_prefix("buffer=") {
            buffer = Some(crate::conf::units::parse_size(v).ok_or_else(|| invalid(d, p))?);
        } else if let Some(v) = p.strip_prefix("flush=") {
            flush = Some(crate::conf::units::parse_time(v).ok_or_else(|| invalid(d, p))?);
        } else if p == "gzip" {
            gzip = Some(1);
        } else if let Some(v) = p.strip_prefix("gzip=") {
            gzip = Some(
                v.parse()
                    .ok()
                    .filter(|l| (1..=9).contains(l))
                    .ok_or_else(|| invalid(d, p))?,
            );
        } else if let Some(v) = p.strip_prefix("if=") {
            condition = Some(Template::compile(v, &hx.reg).map_err(|e| template_error(e, d))?);
        } else {
            return Err(invalid(d, p));
        }
    }
    if a[0].contains('$') {
        return Err(ConfError::msg(
            "variables in access_log paths are not supported".to_string(),
            &d.loc,
        ));
    }
    Ok(AccessLog::File {
        path: cx.full_path(&a[0]),
        format,
        buffer,
        flush,
        gzip,
        condition,
    })
}

/// `proxy_redirect default | off | from to`, several of them at one level.
fn proxy_redirect(hx: &HttpCx, lv: &mut LevelSettings, d: &Directive) -> Result<()> {
    let a = &d.args;
    let rule = match (a.len(), a[0].as_str()) {
        (1, "off") => {
            if lv.proxy_redirect.is_some() {
                return Err(duplicate(d));
            }
            lv.proxy_redirect = Some(ProxyRedirect::Off);
            return Ok(());
        }
        (1, "default") => RedirectRule::Default,
        (1, _) => return Err(invalid(d, &a[0])),
        _ => {
            let from = if let Some(p) = a[0].strip_prefix("~*") {
                RedirectFrom::Regex(regex(p, true, &d.loc)?)
            } else if let Some(p) = a[0].strip_prefix('~') {
                RedirectFrom::Regex(regex(p, false, &d.loc)?)
            } else {
                RedirectFrom::Prefix(
                    Template::compile(&a[0], &hx.reg).map_err(|e| template_error(e, d))?,
                )
            };
            let to = Template::compile(&a[1], &hx.reg).map_err(|e| template_error(e, d))?;
            RedirectRule::Map(from, to)
        }
    };
    match &mut lv.proxy_redirect {
        Some(ProxyRedirect::Off) => return Err(duplicate(d)),
        Some(ProxyRedirect::Rules(rules)) => rules.push(rule),
        None => lv.proxy_redirect = Some(ProxyRedirect::Rules(vec![rule])),
    }
    Ok(())
}

/// Value checks for directives that sluice accepts without acting on, so
/// that a typo in them is still caught at load as nginx would catch it.
fn validate_no_effect(d: &Directive) -> Result<()> {
    let a = &d.args;
    let name = d.name.as_str();
    let time = |i: usize| arg_time(d, i).map(drop);
    let size = |i: usize| arg_size(d, i).map(drop);
    match name {
        _ if name.ends_with("_timeout") => time(0),
        _ if name.ends_with("_buffer_size")
            || name.ends_with("_busy_buffers_size")
            || name.ends_with("_temp_file_write_size")
            || name.ends_with("_max_temp_file_size")
            || name.ends_with("_hash_bucket_size")
            || name.ends_with("_hash_max_size")
            || name == "sendfile_max_chunk"
            || name == "postpone_output"
            || name == "http2_chunk_size" =>
        {
            size(0)
        }
        "fastcgi_buffers" | "gzip_buffers" | "output_buffers" => bufs(d).map(drop),
        "open_file_cache_valid" | "lingering_time" => time(0),
        "open_file_cache_min_uses" => arg_num(d, 0).map(drop),
        "open_file_cache" => {
            if a[0] == "off" && a.len() == 1 {
                return Ok(());
            }
            for p in a {
                let ok = if let Some(v) = p.strip_prefix("max=") {
                    v.parse::<u64>().is_ok_and(|n| n > 0)
                } else if let Some(v) = p.strip_prefix("inactive=") {
                    crate::conf::units::parse_time(v).is_some()
                } else {
                    false
                };
                if !ok {
                    return Err(invalid(d, p));
                }
            }
            if !a[0].starts_with("max=") {
                return Err(ConfError::msg(
                    "\"open_file_cache\" must have the \"max\" parameter".to_string(),
                    &d.loc,
                ));
            }
            Ok(())
        }
        "proxy_temp_path"
        | "fastcgi_temp_path"
        | "uwsgi_temp_path"
        | "scgi_temp_path"
        | "client_body_temp_path" => {
            for (i, l) in a.iter().enumerate().skip(1) {
                if !l.parse::<u8>().is_ok_and(|n| (1..=2).contains(&n)) {
                    return Err(invalid(d, &a[i]));
                }
            }
            Ok(())
        }
        "proxy_cache_path" => proxy_cache_path(d),
        "proxy_cache_valid" => {
            let last = a.len() - 1;
            time(last)
        }
        _ => Ok(()),
    }
}

/// `proxy_cache_path path [levels=1:2] keys_zone=name:size [inactive=time] [max_size=size] ...`.
fn proxy_cache_path(d: &Directive) -> Result<()> {
    let mut zone = false;
    for p in &d.args[1..] {
        let (k, v) = p.split_once('=').ok_or_else(|| invalid(d, p))?;
        let ok = match k {
            "levels" => {
                let parts: Vec<_> = v.split(':').collect();
                parts.len() <= 3 && parts.iter().all(|l| matches!(*l, "1" | "2"))
            }
            "keys_zone" => {
                zone = true;
                v.split_once(':').is_some_and(|(n, s)| {
                    !n.is_empty() && crate::conf::units::parse_size(s).is_some()
                })
            }
            "inactive" | "manager_sleep" | "manager_threshold" | "loader_sleep"
            | "loader_threshold" | "purger_sleep" | "purger_threshold" => {
                crate::conf::units::parse_time(v).is_some()
            }
            "max_size" | "min_free" => crate::conf::units::parse_size(v).is_some(),
            "manager_files" | "loader_files" | "purger_files" => v.parse::<u64>().is_ok(),
            "use_temp_path" | "purger" => matches!(v, "on" | "off"),
            _ => false,
        };
        if !ok {
            return Err(invalid(d, p));
        }
    }
    if !zone {
        return Err(ConfError::msg(
            "\"proxy_cache_path\" must have \"keys_zone\" parameter".to_string(),
            &d.loc,
        ));
    }
    Ok(())
}
