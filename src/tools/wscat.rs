//! `sluice wscat`: a WebSocket client in the manner of npm's `wscat`.
//!
//! ```text
//! sluice wscat -c ws://127.0.0.1:8080/           # interactive
//! sluice wscat -c ws://127.0.0.1:8080/ -x hello  # send, print the reply, close
//! ```
//!
//! Output, one event a line:
//!
//! * `Connected (press CTRL+C to quit)` once the handshake succeeds;
//! * `> MSG` for a message sent, `< MSG` for a text message received,
//!   `< <Binary N bytes>` for a binary one;
//! * with `-P`, `< Received ping (data: "...")` and `< Received pong (data: "...")`;
//! * `Disconnected (code: 1000, reason: "...")` when the connection closes.
//!
//! When stdin and stdout are both terminals, a `> ` prompt waits for input and
//! lines typed are not printed again. Otherwise no prompt is written, so the
//! output is a plain list of the lines above, stable for scripts and tests.
//!
//! Modes:
//!
//! * Interactive (no `-x`): each stdin line is sent as a text message; at end
//!   of input the client closes with 1000 and exits once the server answers.
//! * `-x MSG` (repeatable): the messages are sent in order, stdin is not read.
//!   With `-w SECS` (only valid with `-x`) the client closes SECS seconds after the last message;
//!   without it, once as many text or binary replies as messages sent have
//!   arrived (for one `-x`, that is the first reply).
//!
//! With `--slash`, interactive lines `/ping [DATA]`, `/pong [DATA]` and
//! `/close [CODE [REASON]]` send control frames instead of text.
//!
//! Exit status: 0 after a closing handshake (whatever its code), 1 on a
//! connection error (printed on stderr, e.g. `error: Unexpected server
//! response: 403`), 2 on a usage error. Only `ws://` URLs are supported; a URL
//! without a scheme is taken as `ws://`.

use std::ffi::OsString;
use std::io::{IsTerminal as _, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long to wait for the server's half of a closing handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Command line of `sluice wscat`.
#[derive(Debug, Parser)]
#[command(
    name = "sluice wscat",
    about = "WebSocket client in the manner of npm's wscat"
)]
struct Cli {
    /// Server to connect to (ws://HOST[:PORT][/PATH])
    #[arg(short = 'c', long = "connect", value_name = "URL")]
    connect: String,

    /// Send MSG after connecting (repeatable); stdin is then not read
    #[arg(short = 'x', long = "execute", value_name = "MSG")]
    execute: Vec<String>,

    /// With -x: close SECS seconds after the last message instead of after
    /// the replies
    #[arg(short = 'w', long = "wait", value_name = "SECS", value_parser = parse_wait, requires = "execute")]
    wait: Option<Duration>,

    /// Add a request header (repeatable)
    #[arg(short = 'H', long = "header", value_name = "K: V", value_parser = parse_header)]
    header: Vec<(HeaderName, HeaderValue)>,

    /// Offer a subprotocol (repeatable, in order of preference)
    #[arg(short = 's', long = "subprotocol", value_name = "P", value_parser = parse_token)]
    subprotocol: Vec<String>,

    /// Origin header to send
    #[arg(short = 'o', long = "origin", value_name = "O", value_parser = parse_header_value)]
    origin: Option<HeaderValue>,

    /// Print pings and pongs received
    #[arg(short = 'P', long = "show-ping-pong")]
    show_ping_pong: bool,

    /// Treat interactive /ping, /pong and /close lines as commands
    #[arg(long)]
    slash: bool,
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("not a usable number of seconds: {s:?}"))
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("expected \"NAME: VALUE\", got {s:?}"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("invalid header name {:?}", name.trim()))?;
    Ok((name, parse_header_value(value.trim())?))
}

fn parse_header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|_| format!("invalid header value {s:?}"))
}

fn parse_token(s: &str) -> Result<String, String> {
    let valid = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!("invalid subprotocol name {s:?}"))
    }
}

/// Why wscat gave up.
#[derive(Debug, thiserror::Error)]
pub enum WscatError {
    #[error("wss:// is not yet supported (this build has no TLS); use ws://")]
    TlsUnsupported,
    #[error("Unexpected server response: {0}")]
    UnexpectedResponse(u16),
    /// Boxed: tungstenite's error is large and this travels through Results.
    #[error("{0}")]
    WebSocket(Box<WsError>),
    #[error("connection closed without a closing handshake")]
    Abnormal,
    #[error("the server did not complete the closing handshake")]
    CloseTimeout,
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl From<WsError> for WscatError {
    fn from(e: WsError) -> Self {
        WscatError::WebSocket(Box::new(e))
    }
}

/// Entry point of `sluice wscat`; `args` excludes the program name and `wscat`.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(std::iter::once(OsString::from("sluice wscat")).chain(args))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let prompt = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut out = Printer::new(std::io::stdout(), prompt);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WscatError::Runtime)
        .and_then(|rt| rt.block_on(client(cli, &mut out)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out.end_prompt();
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Add `ws://` to a bare `host:port/path`, and refuse `wss://` clearly.
fn normalize_url(url: &str) -> Result<String, WscatError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("wss://") || lower.starts_with("https://") {
        return Err(WscatError::TlsUnsupported);
    }
    if lower.starts_with("http://") {
        return Ok(format!("ws://{}", &url["http://".len()..]));
    }
    if url.contains("://") {
        Ok(url.to_owned())
    } else {
        Ok(format!("ws://{url}"))
    }
}

fn build_request(cli: &Cli) -> Result<http::Request<()>, WscatError> {
    let url = normalize_url(&cli.connect)?;
    let mut req = url.as_str().into_client_request()?;
    let headers = req.headers_mut();
    // A -H header replaces the default of that name; repeating it appends.
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in &cli.header {
        if !replaced.contains(&name) {
            headers.remove(name);
            replaced.push(name);
        }
        headers.append(name.clone(), value.clone());
    }
    if !cli.subprotocol.is_empty() {
        // tungstenite splits the offer on "," without trimming, so no spaces.
        let offer = HeaderValue::from_str(&cli.subprotocol.join(","))
            .map_err(|e| WsError::HttpFormat(e.into()))?;
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, offer);
    }
    if let Some(origin) = &cli.origin {
        headers.insert(header::ORIGIN, origin.clone());
    }
    Ok(req)
}

/// What one stdin line asks for.
#[derive(Debug, PartialEq)]
enum Input {
    Send(Message),
    Close(CloseFrame<'static>),
}

fn parse_input(line: String, slash: bool) -> Input {
    if slash {
        let (verb, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        match verb {
            "/ping" => return Input::Send(Message::Ping(rest.as_bytes().to_vec())),
            "/pong" => return Input::Send(Message::Pong(rest.as_bytes().to_vec())),
            "/close" => {
                let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                let code = code.trim().parse::<u16>().unwrap_or(1000);
                return Input::Close(CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.to_owned().into(),
                });
            }
            _ => {}
        }
    }
    Input::Send(Message::Text(line))
}

fn normal_close() -> CloseFrame<'static> {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }
}

/// Read stdin on a plain thread: a blocked read cannot be cancelled, and a
/// detached thread does not keep the process alive the way a runtime's
/// blocking pool would at shutdown.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn client<W: Write>(cli: Cli, out: &mut Printer<W>) -> Result<(), WscatError> {
    let req = build_request(&cli)?;
    let (mut ws, _response) = match tokio_tungstenite::connect_async(req).await {
        Ok(conn) => conn,
        Err(WsError::Http(resp)) => {
            return Err(WscatError::UnexpectedResponse(resp.status().as_u16()))
        }
        Err(e) => return Err(e.into()),
    };
    out.connected();

    // Replies still awaited before closing, when -x runs without -w.
    let mut replies_due: Option<usize> = None;
    let mut stdin = None;
    let close_at = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(close_at);
    let mut close_timer_armed = false;

    if cli.execute.is_empty() {
        stdin = Some(stdin_lines());
    } else {
        for msg in &cli.execute {
            ws.send(Message::Text(msg.clone())).await?;
            out.sent(msg, false);
        }
        match cli.wait {
            Some(wait) => {
                close_at.as_mut().reset(tokio::time::Instant::now() + wait);
                close_timer_armed = true;
            }
            None => replies_due = Some(cli.execute.len()),
        }
    }

    // Set once we have sent our close frame: from then on only read.
    let mut closing = false;
    let close_deadline = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(close_deadline);
    // The peer's close frame, once received.
    let mut peer_close: Option<Option<CloseFrame<'static>>> = None;

    loop {
        let mut to_close: Option<CloseFrame<'static>> = None;
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    out.received(&text);
                    replies_due = replies_due.map(|n| n.saturating_sub(1));
                }
                Some(Ok(Message::Binary(data))) => {
                    out.received(&format!("<Binary {} bytes>", data.len()));
                    replies_due = replies_due.map(|n| n.saturating_sub(1));
                }
                Some(Ok(Message::Ping(data))) => {
                    if cli.show_ping_pong {
                        out.received(&format!("Received ping (data: {:?})", String::from_utf8_lossy(&data)));
                    }
                }
                Some(Ok(Message::Pong(data))) => {
                    if cli.show_ping_pong {
                        out.received(&format!("Received pong (data: {:?})", String::from_utf8_lossy(&data)));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite answers a server-initiated close itself; the
                    // stream ends once the server drops the connection.
                    peer_close = Some(frame);
                    stdin = None;
                }
                Some(Ok(Message::Frame(_))) => {}
                None | Some(Err(WsError::ConnectionClosed)) => break,
                // The peer hung up without a close frame: report it as 1006.
                Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => break,
                Some(Err(e)) => {
                    if peer_close.is_some() {
                        // The handshake is done; a rough TCP ending is harmless.
                        break;
                    }
                    return Err(e.into());
                }
            },
            line = async {
                match stdin.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            }, if stdin.is_some() => match line {
                Some(line) => match parse_input(line.clone(), cli.slash) {
                    Input::Send(msg) => {
                        ws.send(msg).await?;
                        out.sent(&line, true);
                    }
                    Input::Close(frame) => {
                        out.sent(&line, true);
                        to_close = Some(frame);
                    }
                },
                None => to_close = Some(normal_close()),
            },
            () = &mut close_at, if close_timer_armed => {
                close_timer_armed = false;
                to_close = Some(normal_close());
            },
            () = &mut close_deadline, if closing => return Err(WscatError::CloseTimeout),
        }
        if replies_due == Some(0) {
            replies_due = None;
            to_close = Some(normal_close());
        }
        if let Some(frame) = to_close {
            if !closing && peer_close.is_none() {
                closing = true;
                stdin = None;
                close_timer_armed = false;
                close_deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + CLOSE_TIMEOUT);
                ws.close(Some(frame)).await?;
            }
        }
    }

    match peer_close {
        Some(frame) => {
            out.disconnected(frame.as_ref());
            Ok(())
        }
        None => {
            out.disconnected(Some(&CloseFrame {
                code: CloseCode::Abnormal,
                reason: "".into(),
            }));
            Err(WscatError::Abnormal)
        }
    }
}

/// Writes wscat's lines, with or without an interactive `> ` prompt.
struct Printer<W: Write> {
    w: W,
    prompt: bool,
    /// A prompt is on screen and must be wiped before the next line.
    prompt_shown: bool,
}

impl<W: Write> Printer<W> {
    fn new(w: W, prompt: bool) -> Self {
        Printer {
            w,
            prompt,
            prompt_shown: false,
        }
    }

    /// Write a whole line, keeping the prompt below it when there is one.
    fn line(&mut self, text: &str) {
        // Output errors (a closed pipe) must not abort the session.
        if self.prompt_shown {
            let _ = self.w.write_all(b"\r\x1b[2K");
        }
        let _ = writeln!(self.w, "{text}");
        if self.prompt {
            let _ = self.w.write_all(b"> ");
            self.prompt_shown = true;
        }
        let _ = self.w.flush();
    }

    fn connected(&mut self) {
        self.line("Connected (press CTRL+C to quit)");
    }

    fn received(&mut self, text: &str) {
        self.line(&format!("< {text}"));
    }

    /// `typed`: the terminal already shows the line the user entered.
    fn sent(&mut self, text: &str, typed: bool) {
        if self.prompt && typed {
            // Enter moved the cursor below the typed line: prompt again.
            let _ = self.w.write_all(b"> ");
            let _ = self.w.flush();
            self.prompt_shown = true;
        } else {
            self.line(&format!("> {text}"));
        }
    }

    fn disconnected(&mut self, frame: Option<&CloseFrame<'_>>) {
        let (code, reason) = match frame {
            Some(f) => (u16::from(f.code), f.reason.as_ref()),
            // RFC 6455 7.1.5: a close frame without a body means 1005.
            None => (1005, ""),
        };
        self.prompt = false;
        self.line(&format!("Disconnected (code: {code}, reason: {reason:?})"));
        self.prompt_shown = false;
    }

    /// Leave the terminal on a fresh line before an error message.
    fn end_prompt(&mut self) {
        if self.prompt_shown {
            let _ = self.w.write_all(b"\r\x1b[2K");
            let _ = self.w.flush();
            self.prompt_shown = false;
        }
        self.prompt = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(prompt: bool, f: impl FnOnce(&mut Printer<&mut Vec<u8>>)) -> String {
        let mut buf = Vec::new();
        let mut p = Printer::new(&mut buf, prompt);
        f(&mut p);
        String::from_utf8(buf).unwrap_or_default()
    }

    #[test]
    fn plain_output_has_no_prompt() {
        let s = printed(false, |p| {
            p.connected();
            p.sent("hi", true);
            p.received("Server received from client: hi");
            p.disconnected(Some(&normal_close()));
        });
        assert_eq!(
            s,
            "Connected (press CTRL+C to quit)\n> hi\n< Server received from client: hi\nDisconnected (code: 1000, reason: \"\")\n"
        );
    }

    #[test]
    fn terminal_output_keeps_a_prompt() {
        let s = printed(true, |p| {
            p.connected();
            p.received("x");
        });
        assert_eq!(s, "Connected (press CTRL+C to quit)\n> \r\x1b[2K< x\n> ");
    }

    #[test]
    fn close_without_code_is_1005() {
        let s = printed(false, |p| p.disconnected(None));
        assert_eq!(s, "Disconnected (code: 1005, reason: \"\")\n");
    }

    #[test]
    fn headers() {
        let (n, v) = parse_header("X-Test:  a b ").expect("valid header");
        assert_eq!(n, "x-test");
        assert_eq!(v, "a b");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: v").is_err());
        assert!(parse_header("X: a\nb").is_err());
    }

    #[test]
    fn subprotocol_tokens() {
        assert!(parse_token("chat.v2").is_ok());
        assert!(parse_token("a,b").is_err());
        assert!(parse_token("").is_err());
    }

    #[test]
    fn wait_needs_execute() {
        assert!(Cli::try_parse_from(["wscat", "-c", "ws://a/", "-w", "1"]).is_err());
        assert!(Cli::try_parse_from(["wscat", "-c", "ws://a/", "-x", "m", "-w", "1"]).is_ok());
    }

    #[test]
    fn waits() {
        assert_eq!(parse_wait("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_wait("-1").is_err());
        assert!(parse_wait("soon").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("localhost:8010").ok().as_deref(),
            Some("ws://localhost:8010")
        );
        assert_eq!(normalize_url("ws://a/b").ok().as_deref(), Some("ws://a/b"));
        assert_eq!(normalize_url("http://a/").ok().as_deref(), Some("ws://a/"));
        assert!(matches!(
            normalize_url("wss://a/"),
            Err(WscatError::TlsUnsupported)
        ));
    }

    #[test]
    fn request_headers() {
        let cli = Cli::try_parse_from([
            "wscat",
            "-c",
            "ws://127.0.0.1:1/p",
            "-H",
            "X-A: 1",
            "-H",
            "X-A: 2",
            "-s",
            "a",
            "-s",
            "b",
            "-o",
            "http://o",
        ])
        .expect("valid command line");
        let req = build_request(&cli).expect("valid request");
        let h = req.headers();
        let xa: Vec<_> = h.get_all("x-a").iter().collect();
        assert_eq!(xa, ["1", "2"]);
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "a,b");
        assert_eq!(h[header::ORIGIN], "http://o");
    }

    #[test]
    fn slash_commands() {
        assert_eq!(
            parse_input("/ping hi".into(), true),
            Input::Send(Message::Ping(b"hi".to_vec()))
        );
        assert_eq!(
            parse_input("/ping hi".into(), false),
            Input::Send(Message::Text("/ping hi".into()))
        );
        assert_eq!(
            parse_input("/close 4000 done".into(), true),
            Input::Close(CloseFrame {
                code: CloseCode::from(4000),
                reason: "done".into()
            })
        );
    }
}
