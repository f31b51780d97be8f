//! Byte-level helpers shared by the backends and the clients: reads and writes on `&TcpStream`
//! (so a reader task and a writer task can share one socket), HTTP/1.1 response framing and
//! WebSocket frames. Hand-rolled so that an idle connection holds no buffer and the hot loops
//! do no work beyond what the protocol needs.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Refuse frames and bodies past this: the bench never sends more, so more means a bug.
pub const MAX_FRAME: usize = 16 << 20;

thread_local! {
    // One scratch buffer per thread: reads land here, then only the bytes received are kept.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 256 * 1024]);
}

/// Reads what is available into `buf` (appending). Returns 0 at end of stream.
pub async fn read_some(s: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    read_at_most(s, buf, usize::MAX).await
}

/// [`read_some`], reading no more than `max` bytes.
pub async fn read_at_most(s: &TcpStream, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    read_with(s, max, |chunk| {
        buf.extend_from_slice(chunk);
        Ok(())
    })
    .await
}

/// Reads what is available, at most `max` bytes, and hands it to `f` without keeping it (from
/// the per-thread scratch buffer). Returns the byte count, 0 at end of stream.
pub async fn read_with(
    s: &TcpStream,
    max: usize,
    mut f: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<usize> {
    loop {
        s.readable().await?;
        let r = SCRATCH.with(|sc| {
            let mut sc = sc.borrow_mut();
            let room = sc.len().min(max);
            let n = s.try_read(&mut sc[..room])?;
            f(&sc[..n]).map(|()| n)
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Discards up to `len` received bytes in the kernel (recv with MSG_TRUNC: TCP drops them
/// without copying). Returns the count, 0 at end of stream.
pub async fn discard(s: &TcpStream, len: usize) -> io::Result<usize> {
    loop {
        s.readable().await?;
        let r = s.try_io(Interest::READABLE, || {
            // SAFETY: with MSG_TRUNC a TCP socket copies nothing, so the buffer is never written.
            let n = unsafe {
                libc::recv(
                    s.as_raw_fd(),
                    std::ptr::null_mut(),
                    len,
                    libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Reads frames for `counter`: a payload it is in the middle of is discarded in the kernel,
/// anything else is read and fed to it. Returns the bytes consumed, 0 at end of stream.
pub async fn count_frames(
    s: &TcpStream,
    counter: &mut FrameCounter,
    mut frame: impl FnMut(u8, usize),
) -> io::Result<usize> {
    if counter.skip >= DISCARD_MIN {
        let n = discard(s, counter.skip).await?;
        counter.skipped(n, frame);
        return Ok(n);
    }
    // Up to the next head's end at most: a payload behind it is left for the discarding recv.
    let max = counter.skip + MAX_HEAD - counter.head.len();
    read_with(s, max, |chunk| counter.feed(chunk, &mut frame)).await
}

/// The longest frame head: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEAD: usize = 14;

/// Payload bytes worth a discarding recv of their own rather than a copy.
pub const DISCARD_MIN: usize = 4096;

/// Writes all of `data`.
pub async fn write_all(s: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        s.writable().await?;
        match s.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where the readers below pull bytes from: a plain socket (shared by reference, so that a reader
/// and a writer task can use one socket) or a TLS stream. `fill` appends what is available to
/// `buf` and returns 0 at end of stream.
pub trait Source {
    async fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
}

/// Where frames and requests go: `put` writes all of `data`.
pub trait Sink {
    async fn put(&mut self, data: &[u8]) -> io::Result<()>;
}

impl Source for &TcpStream {
    async fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        read_some(self, buf).await
    }
}

impl Source for TcpStream {
    async fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        read_some(self, buf).await
    }
}

impl Sink for TcpStream {
    async fn put(&mut self, data: &[u8]) -> io::Result<()> {
        write_all(self, data).await
    }
}

impl<S: Source + ?Sized> Source for &mut S {
    async fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        (**self).fill(buf).await
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one HTTP/1.1 response (head and body, discarding the body) from `s`, with `inbuf`
/// holding bytes already received. Returns (status, body bytes, connection must close).
pub async fn read_response<S: Source>(
    mut s: S,
    inbuf: &mut Vec<u8>,
) -> io::Result<(u16, u64, bool)> {
    let (status, head_len, length, chunked, close) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(inbuf) {
            Ok(httparse::Status::Complete(n)) => {
                let mut length = None;
                let mut chunked = false;
                let mut close = resp.version == Some(0);
                for h in resp.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        let v = std::str::from_utf8(h.value).map_err(|_| bad("content-length"))?;
                        length = Some(v.trim().parse::<u64>().map_err(|_| bad("content-length"))?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = contains_token(h.value, b"chunked");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = contains_token(h.value, b"close");
                    }
                }
                break (resp.code.unwrap_or(0), n, length, chunked, close);
            }
            Ok(httparse::Status::Partial) => {
                if inbuf.len() > 64 * 1024 {
                    return Err(bad("response head too large"));
                }
                if s.fill(inbuf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            Err(_) => return Err(bad("malformed response head")),
        }
    };
    inbuf.drain(..head_len);
    let body = if chunked {
        skip_chunked(&mut s, inbuf).await?
    } else if let Some(len) = length {
        skip_exact(&mut s, inbuf, len).await?;
        len
    } else if status == 101 || status == 204 || status == 304 {
        0
    } else {
        // Delimited by close: read to the end.
        let mut n = inbuf.len() as u64;
        inbuf.clear();
        loop {
            let r = s.fill(inbuf).await?;
            if r == 0 {
                break;
            }
            n += r as u64;
            inbuf.clear();
        }
        return Ok((status, n, true));
    };
    Ok((status, body, close))
}

async fn skip_exact<S: Source>(mut s: S, inbuf: &mut Vec<u8>, len: u64) -> io::Result<()> {
    let mut left = len;
    loop {
        let take = left.min(inbuf.len() as u64) as usize;
        inbuf.drain(..take);
        left -= take as u64;
        if left == 0 {
            return Ok(());
        }
        if s.fill(inbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

async fn skip_chunked<S: Source>(mut s: S, inbuf: &mut Vec<u8>) -> io::Result<u64> {
    let mut total = 0u64;
    // Bounded: each round consumes one chunk; MAX_FRAME caps the body.
    loop {
        let line_end = loop {
            if let Some(p) = inbuf.windows(2).position(|w| w == b"\r\n") {
                break p;
            }
            if inbuf.len() > 4096 || s.fill(inbuf).await? == 0 {
                return Err(bad("bad chunk size line"));
            }
        };
        let line = std::str::from_utf8(&inbuf[..line_end]).map_err(|_| bad("chunk size"))?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_hex, 16).map_err(|_| bad("chunk size"))?;
        inbuf.drain(..line_end + 2);
        if size == 0 {
            // No trailers from our backends: expect the final CRLF.
            skip_exact(&mut s, inbuf, 2).await?;
            return Ok(total);
        }
        total += size;
        if total > MAX_FRAME as u64 * 64 {
            return Err(bad("body too large"));
        }
        skip_exact(&mut s, inbuf, size + 2).await?;
    }
}

pub fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

// ---- WebSocket frames (RFC 6455) ----

pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: usize,
    pub head_len: usize,
}

/// Parses a frame head at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8]) -> io::Result<Option<FrameHead>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if len > MAX_FRAME as u64 {
        return Err(bad("frame too large"));
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let k = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(k)
    } else {
        None
    };
    Ok(Some(FrameHead {
        fin,
        opcode,
        mask,
        len: len as usize,
        head_len: at,
    }))
}

/// Follows a stream of frames through its heads only, for a reader that needs their opcodes and
/// lengths but not their payloads: nothing is copied but a head split between two reads.
#[derive(Default)]
pub struct FrameCounter {
    /// The bytes of a head that a read cut short.
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come, with its opcode and length.
    skip: usize,
    current: (u8, usize),
}

impl FrameCounter {
    /// Takes note of `n` payload bytes passed over (at most what the frame has left).
    fn skipped(&mut self, n: usize, mut frame: impl FnMut(u8, usize)) {
        self.skip -= n;
        if n > 0 && self.skip == 0 {
            frame(self.current.0, self.current.1);
        }
    }

    /// Consumes `data`, calling `frame(opcode, payload length)` for every frame it completes.
    pub fn feed(&mut self, mut data: &[u8], mut frame: impl FnMut(u8, usize)) -> io::Result<()> {
        while !data.is_empty() {
            if self.skip > 0 {
                let k = self.skip.min(data.len());
                self.skipped(k, &mut frame);
                data = &data[k..];
                continue;
            }
            // Complete a head that a read cut short from `data`.
            let old = self.head.len();
            let parsed = if old == 0 {
                parse_head(data)?
            } else {
                self.head
                    .extend_from_slice(&data[..data.len().min(MAX_HEAD - old)]);
                parse_head(&self.head)?
            };
            match parsed {
                Some(h) => {
                    data = &data[h.head_len - old..];
                    self.head.clear();
                    self.current = (h.opcode, h.len);
                    self.skip = h.len;
                    if h.len == 0 {
                        frame(h.opcode, 0);
                    }
                }
                None => {
                    if old == 0 {
                        self.head.extend_from_slice(data);
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// XORs `data` with the mask, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let k8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_ne_bytes(w) ^ k8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Appends one frame to `out`; masked (as a client must) when `mask` is given.
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], k);
        }
        None => out.extend_from_slice(payload),
    }
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&h.digest().bytes())
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_round_trip_masked() {
        for len in [0usize, 5, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            encode_frame(&mut out, true, OP_BINARY, &payload, Some([1, 2, 3, 4]));
            let h = parse_head(&out).unwrap().unwrap();
            assert_eq!((h.fin, h.opcode, h.len), (true, OP_BINARY, len));
            let mut body = out[h.head_len..].to_vec();
            apply_mask(&mut body, h.mask.unwrap());
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn frame_counter_sees_every_frame_however_reads_cut_them() {
        let mut stream = Vec::new();
        let lens = [0usize, 3, 125, 126, 300, 65535, 65536, 70000];
        for (i, len) in lens.iter().enumerate() {
            let mask = (i % 2 == 0).then_some([9, 8, 7, 6]);
            encode_frame(&mut stream, true, OP_BINARY, &vec![b'z'; *len], mask);
        }
        encode_frame(&mut stream, true, OP_PONG, b"end", None);
        for cut in [1usize, 2, 3, 7, 13, 1000, 65536, stream.len()] {
            let mut c = FrameCounter::default();
            let mut seen = Vec::new();
            for part in stream.chunks(cut) {
                c.feed(part, |op, len| seen.push((op, len))).unwrap();
            }
            let want: Vec<_> = lens
                .iter()
                .map(|l| (OP_BINARY, *l))
                .chain([(OP_PONG, 3)])
                .collect();
            assert_eq!(seen, want, "reads of {cut} bytes");
        }
    }

    #[test]
    fn tokens() {
        assert!(contains_token(b"keep-alive, Upgrade", b"upgrade"));
        assert!(!contains_token(b"upgrader", b"upgrade"));
    }
}
