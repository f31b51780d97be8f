//! WebSocket over HTTP/2 (RFC 8441), bridged to HTTP/1.1 upstreams.
//!
//! An extended CONNECT stream with `:protocol websocket` is turned, before
//! routing, into the HTTP/1.1 handshake it stands for (`GET`, `Upgrade:
//! websocket`, `Connection: upgrade`, a fresh `Sec-WebSocket-Key`; the
//! client's `Sec-WebSocket-Version`/`-Protocol`/`-Extensions` pass as usual),
//! so locations, variables and `proxy_set_header` apply unchanged. Only a
//! location whose upstream request carries `Upgrade` (it proxies WebSockets)
//! takes it. The upstream's `101` (its `Sec-WebSocket-Accept` checked) answers
//! the stream with `200`; any other status goes back as is, except a 2xx,
//! which would read as an open tunnel and becomes `502`. Then the stream and
//! the upstream connection are tunnelled both ways; HTTP/2 flow control is
//! the backpressure on the client side.

use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::body::{self, Finished, ProxyBody};
use super::pages;
use super::tunnel::{TunnelEnd, TunnelTimeouts};
use crate::conf::model::{LocationMatch, LogLevel};
use crate::server::request::{add_server_header, LogWhenDone, RequestState};
use crate::upstream::PeerGuard;
use crate::vars::eval::{ResponseInfo, UpstreamInfo};

/// Marks a request that came as an HTTP/2 extended CONNECT for WebSocket.
#[derive(Clone, Copy, Debug)]
pub struct Bridge;

/// Marks the `200` that opened a bridged stream.
#[derive(Clone, Copy, Debug)]
struct Bridged;

/// Whether `resp` is the bridge's own answer to an extended CONNECT.
pub fn bridged<B>(resp: &Response<B>) -> bool {
    resp.extensions().get::<Bridged>().is_some()
}

/// The response headers of a handshake that reach the client's stream.
const PASSED: &[&str] = &["sec-websocket-protocol", "sec-websocket-extensions"];

/// Rewrites an extended CONNECT into an HTTP/1.1 WebSocket handshake
/// request. `false` for a `:protocol` other than `websocket`.
pub fn translate(req: &mut Request<Incoming>) -> bool {
    let websocket = req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if !websocket {
        return false;
    }
    *req.method_mut() = http::Method::GET;
    let h = req.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(key) = HeaderValue::from_str(&generate_key()) {
        h.insert(header::SEC_WEBSOCKET_KEY, key);
    }
    h.remove(header::CONTENT_LENGTH);
    req.extensions_mut().insert(Bridge);
    true
}

/// Whether the request is a bridged HTTP/2 WebSocket stream.
pub fn is_bridge(state: &RequestState) -> bool {
    state.parts.extensions.get::<Bridge>().is_some()
}

/// Whether the forward path must refuse the stream: its location does not
/// proxy WebSockets (the upstream request would carry no `Upgrade`).
pub fn refused(state: &RequestState, head: &HeaderMap) -> bool {
    is_bridge(state) && !head.contains_key(header::UPGRADE)
}

/// Whether the bridge answers this upstream status (else the plain relay).
pub fn takes(state: &RequestState, status: StatusCode) -> bool {
    is_bridge(state) && (status == StatusCode::SWITCHING_PROTOCOLS || status.is_success())
}

/// Answers the stream with an error page, logging the request.
pub fn error(state: RequestState, code: u16, up: Option<UpstreamInfo>) -> Response<ProxyBody> {
    let tokens = state.settings.server_tokens;
    let mut resp = pages::error(code, tokens, false);
    add_server_header(&mut resp, tokens);
    let info = ResponseInfo {
        status: code,
        headers: resp.headers().clone(),
        body_bytes_sent: 0,
        bytes_sent: 0,
    };
    let hook = Box::new(LogWhenDone {
        state,
        resp: info,
        upstream: up,
    });
    resp.map(|b| Finished::new(b, hook).boxed())
}

fn log_ctx(state: &RequestState) -> String {
    crate::log::error::request_context(&state.vars(None, None), None)
}

/// Takes the upstream's answer to a bridged handshake: `101` opens the
/// tunnel and answers the stream with `200`.
pub fn relay(
    mut state: RequestState,
    answer: super::driven::Answer,
    peer: PeerGuard,
    client_upgrade: Option<OnUpgrade>,
    mut up_info: UpstreamInfo,
    t0: Instant,
    matcher: &LocationMatch,
) -> Response<ProxyBody> {
    let super::driven::Answer {
        mut response,
        driver,
    } = answer;
    let settings = state.settings.clone();
    let tokens = settings.server_tokens;
    let id = state.conn.info.id;
    up_info.headers = Some(response.headers().clone());
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let ctx = log_ctx(&state);
        crate::error_log!(
            LogLevel::Error,
            conn = id,
            "upstream answered \"{}\" to a WebSocket handshake from an HTTP/2 stream while reading response header from upstream{ctx}",
            response.status()
        );
        return error(state, 502, Some(up_info));
    }
    let expected = state
        .parts
        .headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));
    let accept = response.headers().get(header::SEC_WEBSOCKET_ACCEPT);
    if expected.is_none()
        || accept.map(HeaderValue::as_bytes) != expected.as_deref().map(str::as_bytes)
    {
        let ctx = log_ctx(&state);
        crate::error_log!(
            LogLevel::Error,
            conn = id,
            "upstream sent invalid \"Sec-WebSocket-Accept\" header while reading response header from upstream{ctx}"
        );
        return error(state, 502, Some(up_info));
    }
    let Some(client_up) = client_upgrade else {
        return error(state, 502, Some(up_info));
    };
    let upstream_up = super::driven::UpstreamUpgrade::of(driver, &mut response);
    let mut resp = Response::new(body::empty());
    for name in PASSED {
        for v in response.headers().get_all(*name) {
            resp.headers_mut()
                .append(HeaderName::from_static(name), v.clone());
        }
    }
    add_server_header(&mut resp, tokens);
    resp.extensions_mut().insert(Bridged);
    // The stream carries a WebSocket: on shutdown or a draining reload both
    // sides get close 1001, inside the stream's DATA for the client.
    let spec = super::upgraded::TunnelSpec {
        timeouts: TunnelTimeouts::proxied(&settings),
        cancel: super::drain::tunnel_token(&state.gen, state.server_idx, matcher, true),
        websocket: true,
        drain_window: state.gen.config.main.websocket_drain_window,
    };
    let tracker = state.gen.tunnels.clone();
    // The tunnel may live for days: keep no view into hyper's buffers.
    let needs = state.header_needs();
    let info = ResponseInfo {
        status: 200,
        headers: needs.response.keep(resp.headers()),
        body_bytes_sent: 0,
        bytes_sent: 0,
    };
    state.compact(&needs);
    up_info.headers = up_info.headers.as_ref().map(|h| needs.upstream.keep(h));
    tracker.spawn(crate::runtime::busy::active(async move {
        let (client, (upstream, pending)) = match (client_up.await, upstream_up.get().await) {
            (Ok(c), Some(u)) => (c, u),
            _ => {
                up_info.set_last_response(t0.elapsed());
                state.log(&info, Some(&up_info));
                return;
            }
        };
        if state.settings.tcp_nodelay {
            let _ = upstream.set_nodelay(true);
        }
        let stats = spec
            .run(TokioIo::new(client), Bytes::new(), upstream, pending, id)
            .await;
        if let TunnelEnd::Timeout(kind) = &stats.end {
            let ctx = log_ctx(&state);
            crate::error_log!(
                LogLevel::Info,
                conn = state.conn.info.id,
                "{} (110: Connection timed out) while proxying upgraded connection{ctx}",
                kind.nginx_message()
            );
        }
        drop(peer);
        up_info.set_last_response(t0.elapsed());
        up_info.bytes_received = stats.upstream_to_client;
        up_info.bytes_sent = stats.client_to_upstream;
        let mut info = info;
        info.body_bytes_sent = stats.upstream_to_client;
        info.bytes_sent = stats.upstream_to_client;
        state.log(&info, Some(&up_info));
    }));
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_is_rfc6455s() {
        // RFC 6455, 1.3.
        assert_eq!(
            super::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
