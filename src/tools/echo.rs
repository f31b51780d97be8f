//! `sluice echo`: a WebSocket echo backend for trying sluice out and for tests.
//!
//! It behaves like the Node `ws` echo server from the nginx WebSocket guide:
//! it prints `Server started` once listening, logs `Received from client: MSG`
//! for every text message and answers `Server received from client: MSG`.
//! A second startup line, `Listening on ADDR`, names the bound address so a
//! caller that asked for port 0 learns the real port.
//!
//! # WebSocket behaviour
//!
//! * Text message `MSG`: reply `Server received from client: MSG` (text).
//! * Binary message: reply with the same prefix as bytes followed by the
//!   received bytes (binary).
//! * Ping: answered with a pong carrying the same data.
//! * Close: echoed with the same code and reason.
//! * Subprotocols: when the client offers `Sec-WebSocket-Protocol`, the first
//!   offered protocol is accepted.
//! * With `--name NAME` every reply is prefixed by `[NAME] `, and the 101
//!   response and every HTTP response carry `X-Echo-Server: NAME`.
//!
//! Two text commands help to test a proxy:
//!
//! * `/close CODE [REASON]`: the server starts the closing handshake with that
//!   code and reason. CODE must be one a peer may send (1000-1003, 1007-1014
//!   or 3000-4999); the reason is cut to the 123 bytes a close frame can hold.
//! * `/big N`: the server replies with a binary message of exactly N bytes,
//!   byte `i` being `i as u8` (no prefix, even with `--name`). N is at most
//!   16 MiB, the default frame limit of tungstenite clients.
//!
//! A malformed command is answered with a text message starting `error: `.
//!
//! # Plain HTTP on the same port
//!
//! * `GET /`: a self-contained HTML page whose script connects to
//!   `ws(s)://HOST/` (or to the path given as `?path=/some/path`), sends
//!   `hello` when the socket opens, and lists sent and received messages in
//!   `<ul id="log">` (items with class `sent`, `received` or `info`; the text
//!   of an item is the message itself). `#status` shows the socket state,
//!   `#msg` is the input and `#send` the button.
//! * `GET /name`: the server name (`echo` when `--name` is not given).
//! * Any other GET: 404. Other methods: 405.

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Prefix of every echo reply, as in the nginx guide's Node server.
pub const REPLY_PREFIX: &str = "Server received from client: ";

/// Response header naming the backend when `--name` is given.
pub const NAME_HEADER: &str = "x-echo-server";

/// Largest `/big N` reply: the default `max_frame_size` of tungstenite peers.
pub const BIG_MAX: usize = 16 << 20;

/// Longest close reason: a control frame payload is 125 bytes, 2 are the code.
const CLOSE_REASON_MAX: usize = 123;

/// Command line of `sluice echo`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice echo",
    about = "WebSocket echo server (with a small HTML test page) for trying sluice out"
)]
struct Cli {
    /// Address to listen on (HOST:PORT, or a bare PORT meaning 127.0.0.1:PORT;
    /// port 0 picks a free port, printed as `Listening on ADDR`)
    #[arg(short, long, value_name = "ADDR", default_value = "127.0.0.1:8010")]
    listen: String,

    /// Name this backend: replies get a `[NAME] ` prefix and HTTP responses an
    /// `X-Echo-Server: NAME` header
    #[arg(short, long, value_name = "NAME", value_parser = parse_name)]
    name: Option<String>,

    /// Do not log received messages
    #[arg(short, long)]
    quiet: bool,
}

fn parse_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the name must not be empty".into());
    }
    // The name goes into a response header, so it has to be a valid value.
    if HeaderValue::from_str(s).is_err() {
        return Err("the name must be printable ASCII (it is sent as a header)".into());
    }
    Ok(s.to_owned())
}

/// Errors that stop `sluice echo` before it serves.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// How an embedded echo server behaves.
#[derive(Debug, Clone, Default)]
pub struct EchoOptions {
    /// Log received messages on stdout and problems on stderr.
    pub log: bool,
    /// Backend name for replies and the `X-Echo-Server` header.
    pub name: Option<String>,
}

/// Entry point of `sluice echo`; `args` excludes the program name and `echo`.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(std::iter::once(OsString::from("sluice echo")).chain(args))
    {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version land here too; clap knows which is which.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run_cli(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> Result<(), EchoError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(EchoError::Runtime)?;
    rt.block_on(async {
        let addr = listen_addr(&cli.listen);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| EchoError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| EchoError::Bind { addr, source })?;
        // These two lines are the readiness signal scripts and tests wait for.
        say(&format!("Server started\nListening on {bound}"));
        serve_with(
            listener,
            EchoOptions {
                log: !cli.quiet,
                name: cli.name,
            },
        )
        .await;
        Ok(())
    })
}

/// A bare port means loopback, like `new WebSocketServer({port})` in the guide.
fn listen_addr(s: &str) -> String {
    match s.parse::<u16>() {
        Ok(port) => format!("127.0.0.1:{port}"),
        Err(_) => s.to_owned(),
    }
}

/// Serve echo connections on `listener` forever, without a name.
pub async fn serve(listener: TcpListener, log: bool) {
    serve_with(listener, EchoOptions { log, name: None }).await
}

/// Serve echo connections on `listener` forever.
pub async fn serve_with(listener: TcpListener, opts: EchoOptions) {
    let shared = Arc::new(Shared::new(opts));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                shared.warn(&format!("accept failed: {e}"));
                // Usually out of descriptors: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = hyper::service::service_fn({
                let shared = Arc::clone(&shared);
                move |req| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, std::convert::Infallible>(handle(req, shared, peer)) }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                shared.warn(&format!("{peer}: {e}"));
            }
        });
    }
}

/// Per-server state shared by all connections.
struct Shared {
    log: bool,
    /// Name shown by `GET /name`.
    display_name: String,
    /// `[NAME] ` or empty.
    reply_prefix: String,
    name_header: Option<HeaderValue>,
}

impl Shared {
    fn new(opts: EchoOptions) -> Self {
        let name_header = opts
            .name
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok());
        Shared {
            log: opts.log,
            display_name: opts.name.clone().unwrap_or_else(|| "echo".to_owned()),
            reply_prefix: opts.name.map(|n| format!("[{n}] ")).unwrap_or_default(),
            name_header,
        }
    }

    fn info(&self, line: &str) {
        if self.log {
            say(line);
        }
    }

    fn warn(&self, line: &str) {
        if self.log {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "echo: {line}");
        }
    }

    fn response(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.add_name(resp.headers_mut());
        resp
    }

    fn add_name(&self, headers: &mut HeaderMap) {
        if let Some(v) = &self.name_header {
            headers.insert(NAME_HEADER, v.clone());
        }
    }
}

/// Print a line on stdout and flush it now: readers are often pipes.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not bring the server down.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn handle(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if req.method() == Method::GET && wants_websocket(req.headers()) {
        return upgrade(&mut req, shared, peer);
    }
    let text = "text/plain; charset=utf-8";
    match *req.method() {
        Method::GET | Method::HEAD => {}
        _ => {
            let mut resp = shared.response(
                StatusCode::METHOD_NOT_ALLOWED,
                text,
                Bytes::from_static(b"method not allowed\n"),
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
    }
    match req.uri().path() {
        "/" => shared.response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(PAGE.as_bytes()),
        ),
        "/name" => {
            let body = Bytes::from(shared.display_name.clone());
            shared.response(StatusCode::OK, text, body)
        }
        _ => shared.response(
            StatusCode::NOT_FOUND,
            text,
            Bytes::from_static(b"not found\n"),
        ),
    }
}

/// Whether a request asks for a WebSocket (RFC 6455 section 4.2.1).
fn wants_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
        && has_token(headers, header::CONNECTION, "upgrade")
}

/// Whether a comma-separated header (possibly repeated) holds `token`.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The first subprotocol the client offers, if any.
fn first_subprotocol(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|p| !p.is_empty())
        .and_then(|p| HeaderValue::from_str(p).ok())
}

fn upgrade(
    req: &mut Request<Incoming>,
    shared: Arc<Shared>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    if !version_ok {
        let mut resp = shared.response(
            StatusCode::UPGRADE_REQUIRED,
            text,
            Bytes::from_static(b"unsupported WebSocket version\n"),
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return shared.response(
            StatusCode::BAD_REQUEST,
            text,
            Bytes::from_static(b"missing Sec-WebSocket-Key\n"),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    let protocol = first_subprotocol(req.headers());

    let on_upgrade = hyper::upgrade::on(req);
    let session_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                if let Err(e) = session(ws, &session_shared).await {
                    session_shared.warn(&format!("{peer}: {e}"));
                }
            }
            Err(e) => session_shared.warn(&format!("{peer}: upgrade failed: {e}")),
        }
    });

    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    // derive_accept_key yields base64, always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    shared.add_name(h);
    resp
}

/// What a text message asks the server to do.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// Reply with the usual prefix.
    Echo,
    /// Close with this code and reason.
    Close(u16, String),
    /// Reply with this many pattern bytes.
    Big(usize),
}

/// Parse the `/close` and `/big` commands; anything else is echoed.
fn parse_command(msg: &str) -> Result<Command, String> {
    let mut words = msg.splitn(2, char::is_whitespace);
    let verb = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim_start();
    match verb {
        "/close" => {
            let mut parts = rest.splitn(2, char::is_whitespace);
            let code_text = parts.next().unwrap_or_default();
            let code: u16 = code_text
                .parse()
                .map_err(|_| format!("/close needs a numeric code, got {code_text:?}"))?;
            if !sendable_close_code(code) {
                return Err(format!(
                    "close code {code} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)"
                ));
            }
            let reason = truncate_utf8(parts.next().unwrap_or_default().trim(), CLOSE_REASON_MAX);
            Ok(Command::Close(code, reason.to_owned()))
        }
        "/big" => {
            let n: usize = rest
                .trim()
                .parse()
                .map_err(|_| format!("/big needs a byte count, got {:?}", rest.trim()))?;
            if n > BIG_MAX {
                return Err(format!("/big is limited to {BIG_MAX} bytes"));
            }
            Ok(Command::Big(n))
        }
        _ => Ok(Command::Echo),
    }
}

/// Codes an endpoint may put in a close frame (RFC 6455 section 7.4).
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The `/big N` payload: byte `i` is `i as u8`.
pub fn big_payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

async fn session<S>(mut ws: WebSocketStream<S>, shared: &Shared) -> Result<(), WsError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // Pongs and close replies are queued by tungstenite and written on the
    // next poll, so keep reading until the stream ends.
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                shared.info(&format!("Received from client: {text}"));
                match parse_command(&text) {
                    Ok(Command::Echo) => {
                        let reply = format!("{}{REPLY_PREFIX}{text}", shared.reply_prefix);
                        ws.send(Message::Text(reply)).await?;
                    }
                    Ok(Command::Close(code, reason)) => {
                        let frame = CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        };
                        ws.close(Some(frame)).await?;
                    }
                    Ok(Command::Big(n)) => ws.send(Message::Binary(big_payload(n))).await?,
                    Err(e) => {
                        let reply = format!("{}error: {e}", shared.reply_prefix);
                        ws.send(Message::Text(reply)).await?;
                    }
                }
            }
            Ok(Message::Binary(data)) => {
                shared.info(&format!(
                    "Received from client: <Binary {} bytes>",
                    data.len()
                ));
                let mut reply =
                    Vec::with_capacity(shared.reply_prefix.len() + REPLY_PREFIX.len() + data.len());
                reply.extend_from_slice(shared.reply_prefix.as_bytes());
                reply.extend_from_slice(REPLY_PREFIX.as_bytes());
                reply.extend_from_slice(&data);
                ws.send(Message::Binary(reply)).await?;
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_)) => {}
            // Clients that just go away (closed tabs, killed scripts) are
            // routine for a demo backend, not worth a warning.
            Err(
                WsError::ConnectionClosed
                | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
            ) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The browser test page. Message text goes in via `textContent` only.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sluice echo</title>
<style>
body { font-family: sans-serif; margin: 2em; }
#log { font-family: monospace; list-style: none; padding: 0; }
#log li.sent::before { content: "> "; color: #060; }
#log li.received::before { content: "< "; color: #006; }
#log li.info { color: #777; }
</style>
</head>
<body>
<h1>sluice echo</h1>
<p>Socket: <span id="url"></span> &mdash; <span id="status">connecting</span></p>
<form id="form">
<input id="msg" autocomplete="off" placeholder="message" autofocus>
<button id="send" type="submit">Send</button>
</form>
<ul id="log"></ul>
<script>
(function () {
  var params = new URLSearchParams(location.search);
  var path = params.get("path") || "/";
  if (path.charAt(0) !== "/") { path = "/" + path; }
  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  var log = document.getElementById("log");
  var status = document.getElementById("status");
  var input = document.getElementById("msg");
  document.getElementById("url").textContent = url;
  function add(cls, text) {
    var li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    log.appendChild(li);
  }
  var ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  ws.onopen = function () {
    status.textContent = "open";
    ws.send("hello");
    add("sent", "hello");
  };
  ws.onmessage = function (ev) {
    if (typeof ev.data === "string") { add("received", ev.data); }
    else { add("received", "<Binary " + ev.data.byteLength + " bytes>"); }
  };
  ws.onerror = function () { add("info", "error"); };
  ws.onclose = function (ev) {
    status.textContent = "closed";
    add("info", "closed: code " + ev.code + (ev.reason ? ", reason " + ev.reason : ""));
  };
  document.getElementById("form").onsubmit = function (ev) {
    ev.preventDefault();
    if (ws.readyState === WebSocket.OPEN && input.value !== "") {
      ws.send(input.value);
      add("sent", input.value);
      input.value = "";
    }
  };
})();
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse_command("hello"), Ok(Command::Echo));
        assert_eq!(parse_command("/closed"), Ok(Command::Echo));
        assert_eq!(
            parse_command("/close 4001 bye now"),
            Ok(Command::Close(4001, "bye now".into()))
        );
        assert_eq!(
            parse_command("/close 1000"),
            Ok(Command::Close(1000, String::new()))
        );
        assert!(parse_command("/close").is_err());
        assert!(parse_command("/close 1006 x").is_err());
        assert!(parse_command("/close 70000").is_err());
        assert_eq!(parse_command("/big 10"), Ok(Command::Big(10)));
        assert!(parse_command("/big").is_err());
        assert!(parse_command("/big -1").is_err());
        assert!(parse_command(&format!("/big {}", BIG_MAX + 1)).is_err());
    }

    #[test]
    fn close_reason_fits_a_frame() {
        let long = "é".repeat(100);
        let Ok(Command::Close(_, reason)) = parse_command(&format!("/close 1000 {long}")) else {
            panic!("expected a close command");
        };
        assert!(reason.len() <= CLOSE_REASON_MAX);
        assert!(reason.chars().all(|c| c == 'é'));
    }

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1003, 1007, 1014, 3000, 4999] {
            assert!(sendable_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert!(!sendable_close_code(bad), "{bad}");
        }
    }

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(wants_websocket(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!wants_websocket(&h));
    }

    #[test]
    fn subprotocol_choice() {
        let mut h = HeaderMap::new();
        assert_eq!(first_subprotocol(&h), None);
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(" , chat, superchat"),
        );
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("other"),
        );
        assert_eq!(
            first_subprotocol(&h),
            Some(HeaderValue::from_static("chat"))
        );
    }

    #[test]
    fn listen_shorthand() {
        assert_eq!(listen_addr("8010"), "127.0.0.1:8010");
        assert_eq!(listen_addr("0.0.0.0:80"), "0.0.0.0:80");
    }

    #[test]
    fn big_pattern() {
        let p = big_payload(300);
        assert_eq!(p.len(), 300);
        assert_eq!(p[255], 255);
        assert_eq!(p[256], 0);
    }

    #[test]
    fn names_must_be_header_values() {
        assert!(parse_name("b1").is_ok());
        assert!(parse_name("").is_err());
        assert!(parse_name("a\nb").is_err());
    }
}
