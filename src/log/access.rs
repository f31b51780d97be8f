//! Access log lines: a `log_format` rendered for one finished request, with
//! nginx's escaping, handed to the background writer.

use crate::conf::model::{AccessLog, LogEscape, LogFormat};
use crate::vars::eval::{eval_var, VarCtx};
use crate::vars::Part;

use super::writer::AccessLogs;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends one line for `fmt` (with its trailing newline) to `out`.
///
/// As nginx: literal text is copied as written; a variable that is not found
/// is `-` (nothing in json mode); a found value is escaped by the format's
/// mode (`default`: `"`, `\`, control bytes and bytes >= 0x7f as `\xXX`).
pub fn format_line(fmt: &LogFormat, cx: &VarCtx<'_>, out: &mut Vec<u8>) {
    for part in fmt.template.parts.iter() {
        match part {
            Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
            Part::Var(v) => {
                let start = out.len();
                if !eval_var(v, cx, out) {
                    out.truncate(start);
                    if fmt.escape != LogEscape::Json {
                        out.push(b'-');
                    }
                    continue;
                }
                escape_tail(fmt.escape, out, start);
            }
        }
    }
    out.push(b'\n');
}

/// Escapes `out[start..]` in place (copying only when something needs it).
fn escape_tail(mode: LogEscape, out: &mut Vec<u8>, start: usize) {
    // One loop per mode, so that the test is inlined rather than called per
    // byte; a fold without an early exit, so that it is vectorised (values
    // that need escaping are rare).
    let clean = match mode {
        LogEscape::None => return,
        LogEscape::Default => !out[start..]
            .iter()
            .fold(false, |n, &b| n | needs_default(b)),
        LogEscape::Json => !out[start..].iter().fold(false, |n, &b| n | needs_json(b)),
    };
    if clean {
        return;
    }
    let raw = out.split_off(start);
    match mode {
        LogEscape::Default => escape_default(&raw, out),
        LogEscape::Json => escape_json(&raw, out),
        LogEscape::None => out.extend_from_slice(&raw),
    }
}

fn needs_default(b: u8) -> bool {
    !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\'
}

fn needs_json(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// nginx's `ngx_http_log_escape`.
pub fn escape_default(src: &[u8], out: &mut Vec<u8>) {
    for &b in src {
        if needs_default(b) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.push(b);
        }
    }
}

/// nginx's `ngx_escape_json`.
pub fn escape_json(src: &[u8], out: &mut Vec<u8>) {
    for &b in src {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                b'0' + (b >> 4),
                HEX[usize::from(b & 0xf)],
            ]),
            _ => out.push(b),
        }
    }
}

/// Writes the line of every access log in force for a finished request.
/// `access_log off` anywhere in the list disables logging at that level, and
/// an `if=` condition that is empty or "0" skips its log.
pub fn log_request(logs: &[AccessLog], cx: &VarCtx<'_>, sink: &AccessLogs) {
    if logs.iter().any(|l| matches!(l, AccessLog::Off)) {
        return;
    }
    for log in logs {
        let AccessLog::File {
            path,
            format,
            condition,
            ..
        } = log
        else {
            continue;
        };
        if let Some(cond) = condition {
            let mut v = Vec::new();
            cond.render(cx, &mut v);
            if v.is_empty() || v == b"0" {
                continue;
            }
        }
        let Some(target) = sink.target(path) else {
            continue;
        };
        let mut line = Vec::with_capacity(256);
        format_line(format, cx, &mut line);
        sink.write(target, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::eval::tests::{conn, ctx, parts};
    use crate::vars::eval::{ResponseInfo, UpstreamInfo, UpstreamTry};
    use crate::vars::{Template, VarRegistry};

    fn fmt(escape: LogEscape, text: &str) -> LogFormat {
        LogFormat {
            name: "t".into(),
            escape,
            template: Template::compile(text, &VarRegistry::default()).unwrap(),
        }
    }

    /// One line with the user agent and `$uri` set (the URI carries the
    /// control bytes a header value cannot).
    fn line(f: &LogFormat, ua: Option<&[u8]>, uri: &str) -> String {
        let c = conn();
        let mut p = parts("/", &[]);
        if let Some(ua) = ua {
            p.headers
                .insert("user-agent", http::HeaderValue::from_bytes(ua).unwrap());
        }
        let mut cx = ctx(&c, &p, None);
        cx.uri = uri;
        let mut out = Vec::new();
        format_line(f, &cx, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn default_escape() {
        let f = fmt(
            LogEscape::Default,
            "\"$http_user_agent\" $http_referer $uri",
        );
        assert_eq!(
            line(&f, Some("a\"b\\c\tdé".as_bytes()), "/\x01\x7f\n"),
            "\"a\\x22b\\x5Cc\\x09d\\xC3\\xA9\" - /\\x01\\x7F\\x0A\n"
        );
        // Found but empty is empty, not "-".
        assert_eq!(line(&f, Some(b""), ""), "\"\" - \n");
    }

    #[test]
    fn json_escape() {
        let f = fmt(
            LogEscape::Json,
            "{\"ua\":\"$http_user_agent\",\"r\":\"$http_referer\",\"u\":\"$uri\"}",
        );
        assert_eq!(
            line(
                &f,
                Some("a\"b\\c\tdé".as_bytes()),
                "\x01\x7f\n\r\x08\x0c\x1b"
            ),
            "{\"ua\":\"a\\\"b\\\\c\\tdé\",\"r\":\"\",\"u\":\"\\u0001\x7f\\n\\r\\b\\f\\u001B\"}\n"
        );
    }

    #[test]
    fn no_escape() {
        let f = fmt(LogEscape::None, "$http_user_agent|$http_referer|$uri");
        assert_eq!(line(&f, Some(b"a\"b\\c\td"), "\x01"), "a\"b\\c\td|-|\x01\n");
    }

    #[test]
    fn seed_log_access_format() {
        // log_format log_access from the seed nginx.conf.
        let text = concat!(
            "$remote_addr - $remote_user [$time_local] \"$request\" \"$request_time\" \"$upstream_response_time\"",
            "$status $body_bytes_sent \"$http_referer\" ",
            "\"$http_user_agent\" $http_x_forwarded_for $host $hostname"
        );
        let f = fmt(LogEscape::Default, text);
        let c = conn();
        let p = parts(
            "/websocket?x=1",
            &[("host", "example.com"), ("user-agent", "curl/8.5.0")],
        );
        let mut cx = ctx(&c, &p, Some("x=1"));
        let resp = ResponseInfo {
            status: 101,
            body_bytes_sent: 0,
            bytes_sent: 129,
            ..Default::default()
        };
        let up = UpstreamInfo {
            tries: vec![UpstreamTry {
                addr: Some("127.0.0.1:8010".parse().unwrap()),
                status: 101,
                connect_ms: Some(0),
                header_ms: Some(1),
                response_ms: Some(4),
            }],
            ..Default::default()
        };
        cx.resp = Some(&resp);
        cx.upstream = Some(&up);
        let mut out = Vec::new();
        format_line(&f, &cx, &mut out);
        let got = String::from_utf8(out).unwrap();
        // Times aside: cut out [$time_local] and "$request_time".
        let open = got.find('[').unwrap();
        let close = got.find(']').unwrap();
        assert_eq!(close - open - 1, 26);
        let rest = &got[close..];
        let rt_start = rest.find("HTTP/1.1\" \"").unwrap() + 11;
        let rt_end = rt_start + rest[rt_start..].find('"').unwrap();
        let expected_rest = format!(
            "] \"GET /websocket?x=1 HTTP/1.1\" \"\" \"0.004\"101 0 \"-\" \"curl/8.5.0\" - example.com {}\n",
            crate::vars::eval::hostname()
        );
        let without_rt = format!("{}{}", &rest[..rt_start], &rest[rt_end..]);
        assert_eq!(&got[..open], "192.0.2.7 - - ");
        assert_eq!(without_rt, expected_rest);
    }

    #[test]
    fn log_request_honours_off_and_if() {
        let dir = crate::log::writer::tests::temp_dir("access");
        let path = dir.join("a.log");
        let conf = format!(
            "events {{}} http {{ log_format f '$request_method $arg_n \\x'; \
             server {{ listen 127.0.0.1:8080; access_log {} f if=$arg_log; \
             location /off {{ access_log off; }} }} }}",
            path.display()
        );
        let cfg = crate::conf::load_str(&conf, "t.conf", &dir).unwrap();
        let sink = AccessLogs::from_config(&cfg).unwrap();
        let server = &cfg.http.as_ref().unwrap().servers[0];
        let c = conn();
        let p = parts("/", &[]);
        for (args, logs) in [
            ("n=1&log=1", &server.settings.access_log),
            ("n=2&log=0", &server.settings.access_log),
            ("n=3", &server.settings.access_log),
            ("n=4&log=yes", &server.locations[0].settings.access_log),
            ("n=5&log=yes", &server.settings.access_log),
        ] {
            let cx = ctx(&c, &p, Some(args));
            log_request(logs, &cx, &sink);
        }
        sink.flush_all();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "GET 1 \\x\nGET 5 \\x\n"
        );
    }
}
