//! The bench's upstream: HTTP/1.1 keep-alive answering `/1m...` with 1 MiB and anything else
//! with 100 B, and, on a WebSocket upgrade, an echo of every frame as received (a bulk frame
//! is answered with one of its length, unread: see `ws_echo`). An idle
//! WebSocket here holds only its socket, so the backend never limits the idle scenario.

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, OnceLock};

use tokio::net::{TcpListener, TcpStream};

use crate::wire::{self, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG};

pub const SMALL_BODY: usize = 100;
pub const BIG_BODY: usize = 1 << 20;

fn response(len: usize) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes();
    r.extend((0..len).map(|i| b'a' + (i % 26) as u8));
    r
}

fn small() -> &'static [u8] {
    static R: OnceLock<Vec<u8>> = OnceLock::new();
    R.get_or_init(|| response(SMALL_BODY))
}

fn big() -> &'static [u8] {
    static R: OnceLock<Vec<u8>> = OnceLock::new();
    R.get_or_init(|| response(BIG_BODY))
}

pub async fn serve(listen: &str) -> io::Result<()> {
    let l = TcpListener::bind(listen).await?;
    // The runner reads this line to learn the port.
    println!("listening {}", l.local_addr()?);
    loop {
        let (s, _) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: report and go on, as a server would.
                eprintln!("backend accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = conn(s).await;
        });
    }
}

enum Next {
    Respond { big: bool, close: bool, used: usize },
    Upgrade { key: String, used: usize },
    More,
    Bad,
}

fn next_request(buf: &[u8]) -> Next {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let mut close = req.version == Some(0);
            let mut upgrade = false;
            let mut key = None;
            let mut body = 0usize;
            for h in req.headers.iter() {
                let name = h.name;
                if name.eq_ignore_ascii_case("connection") {
                    close |= wire::contains_token(h.value, b"close");
                } else if name.eq_ignore_ascii_case("upgrade") {
                    upgrade = wire::contains_token(h.value, b"websocket");
                } else if name.eq_ignore_ascii_case("sec-websocket-key") {
                    key = std::str::from_utf8(h.value)
                        .ok()
                        .map(|k| k.trim().to_string());
                } else if name.eq_ignore_ascii_case("content-length") {
                    match std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                    {
                        Some(v) if v <= wire::MAX_FRAME => body = v,
                        _ => return Next::Bad,
                    }
                }
            }
            if buf.len() < n + body {
                return Next::More;
            }
            match (upgrade, key) {
                (true, Some(key)) => Next::Upgrade {
                    key,
                    used: n + body,
                },
                _ => Next::Respond {
                    big: req.path.is_some_and(|p| p.starts_with("/1m")),
                    close,
                    used: n + body,
                },
            }
        }
        Ok(httparse::Status::Partial) => Next::More,
        Err(_) => Next::Bad,
    }
}

async fn conn(s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    // Bounded by the peer: each round consumes a request or reads more bytes; EOF ends it.
    loop {
        match next_request(&buf) {
            Next::Respond {
                big: is_big,
                close,
                used,
            } => {
                wire::write_all(&s, if is_big { big() } else { small() }).await?;
                buf.drain(..used);
                if close {
                    return Ok(());
                }
                continue;
            }
            Next::Upgrade { key, used } => {
                let head = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    wire::accept_key(key.as_bytes())
                );
                wire::write_all(&s, head.as_bytes()).await?;
                buf.drain(..used);
                return ws_echo(s, buf).await;
            }
            Next::Bad => {
                let _ = wire::write_all(
                    &s,
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
                return Ok(());
            }
            Next::More => {}
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
        if buf.is_empty() {
            // Idle keep-alive: hold no buffer.
            buf = Vec::new();
        }
        if wire::read_some(&s, &mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Data frames at least this long are answered without being read (see [`ws_echo`]).
const BULK_MIN: usize = wire::DISCARD_MIN;

/// A bulk answer and what it answers: (fin, opcode, payload length).
type BulkFrame = ((bool, u8, usize), Arc<[u8]>);

thread_local! {
    // The last bulk answer built, shared by the connections while clients send one size.
    static BULK: RefCell<Option<BulkFrame>> = const { RefCell::new(None) };
}

/// An unmasked frame of `len` zero bytes.
fn bulk_answer(fin: bool, opcode: u8, len: usize) -> Arc<[u8]> {
    BULK.with(|b| {
        let mut b = b.borrow_mut();
        match &*b {
            Some((of, frame)) if *of == (fin, opcode, len) => frame.clone(),
            _ => {
                let mut f = Vec::with_capacity(len + 10);
                wire::encode_frame(&mut f, fin, opcode, &vec![0; len], None);
                let f: Arc<[u8]> = f.into();
                *b = Some(((fin, opcode, len), f.clone()));
                f
            }
        }
    })
}

/// Echoes frames back unmasked, fragment for fragment; answers ping and close.
///
/// A data frame of [`BULK_MIN`] bytes or more is answered, once it has arrived, with a frame of
/// the same opcode, fin bit and length whose payload is zeros; its own payload is discarded in
/// the kernel unread. The proxy relays the same bytes either way and the bulk client counts
/// lengths only, while this side copies and unmasks nothing per bulk message: the load core
/// would otherwise bound the bulk figures before the proxy's core does.
async fn ws_echo(s: TcpStream, mut inbuf: Vec<u8>) -> io::Result<()> {
    let mut out = Vec::new();
    let mut after_bulk = false;
    loop {
        let mut used = 0;
        let mut closing = false;
        // A bulk frame still arriving: (payload bytes to come, fin, opcode, length).
        let mut pending: Option<(usize, bool, u8, usize)> = None;
        while let Some(h) = wire::parse_head(&inbuf[used..])? {
            if h.len >= BULK_MIN && h.opcode <= OP_BINARY {
                let have = (inbuf.len() - used - h.head_len).min(h.len);
                used += h.head_len + have;
                pending = Some((h.len - have, h.fin, h.opcode, h.len));
                break;
            }
            after_bulk = false;
            let total = h.head_len + h.len;
            if inbuf.len() - used < total {
                break;
            }
            let payload = &mut inbuf[used + h.head_len..used + total];
            if let Some(k) = h.mask {
                wire::apply_mask(payload, k);
            }
            match h.opcode {
                OP_PING => wire::encode_frame(&mut out, true, OP_PONG, payload, None),
                OP_PONG => {}
                OP_CLOSE => {
                    let code = &payload[..payload.len().min(2)];
                    wire::encode_frame(&mut out, true, OP_CLOSE, code, None);
                    closing = true;
                }
                op => wire::encode_frame(&mut out, h.fin, op, payload, None),
            }
            used += total;
            if closing {
                break;
            }
        }
        inbuf.drain(..used);
        if !out.is_empty() {
            wire::write_all(&s, &out).await?;
            out = Vec::new();
        }
        if closing {
            // The server closes the TCP connection first (RFC 6455 section 7.1.1).
            return Ok(());
        }
        if let Some((mut rest, fin, opcode, len)) = pending {
            while rest > 0 {
                match wire::discard(&s, rest).await? {
                    0 => return Ok(()),
                    n => rest -= n,
                }
            }
            wire::write_all(&s, &bulk_answer(fin, opcode, len)).await?;
            // What follows is most likely another bulk frame: read its head alone, so that its
            // payload is left for the discarding recv.
            after_bulk = true;
            continue;
        }
        if inbuf.is_empty() {
            inbuf = Vec::new();
        }
        let max = match after_bulk {
            true => wire::MAX_HEAD.saturating_sub(inbuf.len()).max(1),
            false => usize::MAX,
        };
        if wire::read_at_most(&s, &mut inbuf, max).await? == 0 {
            return Ok(());
        }
    }
}
