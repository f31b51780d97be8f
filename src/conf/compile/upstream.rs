//! `upstream name { server ...; balancing; keepalive; check ...; }`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::http::template_error;
use super::{arg_num, arg_time, duplicate, invalid, Cx, UPSTREAM};
use crate::conf::error::{ConfError, ConfErrorKind, Result, SrcLoc};
use crate::conf::model::{Balance, CheckType, HealthCheck, UpstreamConf, UpstreamServer};
use crate::conf::parse::Directive;
use crate::conf::units;
use crate::vars::{Template, VarRegistry};

pub(super) fn compile(cx: &mut Cx, reg: &VarRegistry, block: &Directive) -> Result<UpstreamConf> {
    let mut up = UpstreamConf {
        name: block.args[0].clone(),
        servers: Vec::new(),
        balance: Balance::RoundRobin,
        keepalive: None,
        keepalive_requests: 1000,
        keepalive_timeout: Duration::from_secs(60),
        keepalive_time: Duration::from_secs(3600),
        check: None,
        implicit: false,
        loc: block.loc.clone(),
    };
    let mut balance_set = false;
    let mut check_send = None;
    let mut check_expect = None;
    for d in block.block.as_deref().unwrap_or_default() {
        cx.check(d, UPSTREAM)?;
        let mut set_balance = |b: Balance| -> Result<()> {
            if balance_set {
                return Err(ConfError::msg("load balancing method redefined", &d.loc));
            }
            balance_set = true;
            up.balance = b;
            Ok(())
        };
        match d.name.as_str() {
            "server" => up.servers.push(server(d)?),
            "least_conn" => set_balance(Balance::LeastConn)?,
            "ip_hash" => set_balance(Balance::IpHash)?,
            "hash" => {
                let key = Template::compile(&d.args[0], reg).map_err(|e| template_error(e, d))?;
                let consistent = match d.args.get(1).map(String::as_str) {
                    None => false,
                    Some("consistent") => true,
                    Some(other) => return Err(invalid(d, other)),
                };
                set_balance(Balance::Hash { key, consistent })?
            }
            "random" => {
                let (two, least_conn) =
                    match d.args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                        [] => (false, false),
                        ["two"] => (true, false),
                        ["two", "least_conn"] => (true, true),
                        _ => return Err(invalid(d, &d.args.join(" "))),
                    };
                set_balance(Balance::Random { two, least_conn })?
            }
            "keepalive" => {
                if up.keepalive.is_some() {
                    return Err(duplicate(d));
                }
                let n = arg_num(d, 0)?;
                if n == 0 || n > u32::MAX as u64 {
                    return Err(invalid(d, &d.args[0]));
                }
                up.keepalive = Some(n as u32);
            }
            "keepalive_requests" => up.keepalive_requests = arg_num(d, 0)?,
            "keepalive_timeout" => up.keepalive_timeout = arg_time(d, 0)?,
            "keepalive_time" => up.keepalive_time = arg_time(d, 0)?,
            "check" => up.check = Some(check(d)?),
            "check_http_send" => check_send = Some(d.args[0].clone()),
            "check_http_expect_alive" => {
                let mut bits = 0u8;
                for w in &d.args {
                    bits |= match w.as_str() {
                        "http_1xx" => 1,
                        "http_2xx" => 2,
                        "http_3xx" => 4,
                        "http_4xx" => 8,
                        "http_5xx" => 16,
                        _ => return Err(invalid(d, w)),
                    };
                }
                check_expect = Some(bits);
            }
            "check_keepalive_requests" => {
                arg_num(d, 0)?;
            }
            _ => {}
        }
    }
    if let Some(c) = &mut up.check {
        if let Some(s) = check_send {
            c.http_send = s;
        }
        if let Some(e) = check_expect {
            c.expect_alive = e;
        }
    }
    if up.servers.is_empty() {
        return Err(ConfError::msg(
            format!("no servers are inside upstream \"{}\"", up.name),
            &block.loc,
        ));
    }
    Ok(up)
}

/// `server address [weight=n] [max_fails=n] [fail_timeout=t] [backup] [down] [max_conns=n]`.
fn server(d: &Directive) -> Result<UpstreamServer> {
    if d.args.is_empty() {
        return Err(ConfError::at(
            ConfErrorKind::InvalidArgCount(d.name.clone()),
            &d.loc,
        ));
    }
    let name = d.args[0].clone();
    let addrs = resolve(&name, 80, &d.loc)?;
    let mut s = UpstreamServer {
        name,
        addrs,
        weight: 1,
        max_fails: 1,
        fail_timeout: Duration::from_secs(10),
        backup: false,
        down: false,
        max_conns: 0,
    };
    for p in &d.args[1..] {
        let num = |v: &str| -> Result<u32> { v.parse::<u32>().map_err(|_| invalid(d, p)) };
        if let Some(v) = p.strip_prefix("weight=") {
            s.weight = num(v)?;
            if s.weight == 0 {
                return Err(invalid(d, p));
            }
        } else if let Some(v) = p.strip_prefix("max_fails=") {
            s.max_fails = num(v)?;
        } else if let Some(v) = p.strip_prefix("fail_timeout=") {
            s.fail_timeout = units::parse_time(v).ok_or_else(|| invalid(d, p))?;
        } else if let Some(v) = p.strip_prefix("max_conns=") {
            s.max_conns = num(v)?;
        } else if p == "backup" {
            s.backup = true;
        } else if p == "down" {
            s.down = true;
        } else {
            return Err(invalid(d, p));
        }
    }
    Ok(s)
}

/// Resolves `host[:port]` (or `[v6]:port`) to all its addresses, as nginx does
/// at load; `default_port` applies when none is written.
pub(crate) fn resolve(spec: &str, default_port: u16, loc: &SrcLoc) -> Result<Vec<SocketAddr>> {
    if spec.starts_with("unix:") {
        return Err(ConfError::msg(
            format!("unix domain sockets are not supported yet in upstream \"{spec}\""),
            loc,
        ));
    }
    let not_found = || ConfError::at(ConfErrorKind::HostNotFound(spec.to_string()), loc);
    let (host, port) = split_host_port(spec).ok_or_else(not_found)?;
    if host.is_empty() {
        return Err(not_found());
    }
    let port = port.unwrap_or(default_port);
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|_| not_found())?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(not_found());
    }
    Ok(addrs)
}

/// Splits `host:port`, `[v6]:port`, `host`, `[v6]`; `None` for a bad port.
pub(crate) fn split_host_port(spec: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match spec.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, Some(port.parse().ok()?))),
        _ => Some((spec, None)),
    }
}

/// Tengine's `check interval=3000 rise=2 fall=5 timeout=1000 type=http [default_down=true] [port=N]`.
fn check(d: &Directive) -> Result<HealthCheck> {
    let mut c = HealthCheck {
        interval: Duration::from_secs(30),
        rise: 2,
        fall: 5,
        timeout: Duration::from_secs(1),
        kind: CheckType::Tcp,
        default_down: true,
        port: None,
        http_send: "GET / HTTP/1.0\r\n\r\n".into(),
        expect_alive: 2 | 4,
    };
    for p in &d.args {
        let (k, v) = p.split_once('=').ok_or_else(|| invalid(d, p))?;
        let ms = |v: &str| -> Result<Duration> {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| invalid(d, p))
        };
        let count = |v: &str| -> Result<u32> {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(d, p))
        };
        match k {
            "interval" => c.interval = ms(v)?,
            "timeout" => c.timeout = ms(v)?,
            "rise" => c.rise = count(v)?,
            "fall" => c.fall = count(v)?,
            "type" => {
                c.kind = match v {
                    "tcp" => CheckType::Tcp,
                    "http" => CheckType::Http,
                    _ => return Err(invalid(d, p)),
                }
            }
            "default_down" => {
                c.default_down = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid(d, p)),
                }
            }
            "port" => c.port = Some(v.parse().map_err(|_| invalid(d, p))?),
            _ => return Err(invalid(d, p)),
        }
    }
    if c.interval.is_zero() {
        return Err(invalid(d, "interval=0"));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("a:80"), Some(("a", Some(80))));
        assert_eq!(split_host_port("a"), Some(("a", None)));
        assert_eq!(split_host_port("[::1]:8080"), Some(("::1", Some(8080))));
        assert_eq!(split_host_port("[::1]"), Some(("::1", None)));
        assert_eq!(split_host_port("a:x"), None);
        assert_eq!(split_host_port("a:99999"), None);
    }
}
