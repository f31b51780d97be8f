//! STUB: replaced by the vars branch.
use super::{Builtin, Part, Template, Var};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub id: u64,
    pub scheme: &'static str,
}
#[derive(Clone, Debug)]
pub struct Captures {
    subject: String,
    groups: Vec<Option<(usize, usize)>>,
}
impl Captures {
    pub fn from_regex(re: &regex::Regex, subject: &str) -> Option<Captures> {
        let c = re.captures(subject)?;
        Some(Captures {
            subject: subject.to_string(),
            groups: c.iter().map(|m| m.map(|m| (m.start(), m.end()))).collect(),
        })
    }
    pub fn get(&self, i: usize) -> Option<&str> {
        self.groups.get(i)?.map(|(a, b)| &self.subject[a..b])
    }
}
#[derive(Default)]
pub struct ResponseInfo {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body_bytes_sent: u64,
    pub bytes_sent: u64,
}
#[derive(Default, Debug)]
pub struct UpstreamInfo {
    pub addr: String,
    pub status: String,
    pub connect_time: String,
    pub header_time: String,
    pub response_time: String,
    pub headers: Option<http::HeaderMap>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}
#[derive(Clone, Copy)]
pub struct VarCtx<'a> {
    pub conn: &'a ConnInfo,
    pub connection_requests: u64,
    pub req: &'a http::request::Parts,
    pub uri: &'a str,
    pub args: Option<&'a str>,
    pub server_name: &'a str,
    pub host: &'a str,
    pub captures: Option<&'a Captures>,
    pub maps: &'a [Arc<crate::conf::model::MapConf>],
    pub proxy: Option<&'a crate::conf::model::ProxyPass>,
    pub start: std::time::Instant,
    pub start_wall: std::time::SystemTime,
    pub request_length: u64,
    pub resp: Option<&'a ResponseInfo>,
    pub upstream: Option<&'a UpstreamInfo>,
}
impl Template {
    pub fn render(&self, cx: &VarCtx<'_>, out: &mut Vec<u8>) {
        for p in self.parts.iter() {
            match p {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::Var(v) => var_value(v, cx, out),
            }
        }
    }
    pub fn render_to_vec(&self, cx: &VarCtx<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        self.render(cx, &mut v);
        v
    }
}
pub fn var_value(var: &Var, cx: &VarCtx<'_>, out: &mut Vec<u8>) {
    match var {
        Var::Builtin(Builtin::RemoteAddr) => {
            out.extend_from_slice(cx.conn.remote.ip().to_string().as_bytes())
        }
        Var::Builtin(Builtin::Host) => out.extend_from_slice(cx.host.as_bytes()),
        Var::Builtin(Builtin::ProxyHost) => {
            if let Some(p) = cx.proxy {
                out.extend_from_slice(p.proxy_host.as_bytes())
            }
        }
        Var::Builtin(Builtin::ProxyAddXForwardedFor) => {
            if let Some(x) = cx.req.headers.get("x-forwarded-for") {
                out.extend_from_slice(x.as_bytes());
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(cx.conn.remote.ip().to_string().as_bytes())
        }
        Var::Http(name) => {
            if let Some(v) = cx.req.headers.get(&**name) {
                out.extend_from_slice(v.as_bytes())
            }
        }
        Var::Map(i) => {
            let m = &cx.maps[*i];
            let src = m.source.render_to_vec(cx);
            let key = String::from_utf8_lossy(&src).to_ascii_lowercase();
            match m.exact.get(&key) {
                Some(t) => t.render(cx, out),
                None => m.default.render(cx, out),
            }
        }
        _ => {}
    }
}
