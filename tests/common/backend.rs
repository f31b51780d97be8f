//! A recording HTTP/1 upstream: keeps every request exactly as it arrived
//! (request line, headers in order, body) and answers as told.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_names(&self) -> Vec<String> {
        self.headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect()
    }
}

/// How the backend answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, extra headers, body (sent with Content-Length, then close).
    Fixed(u16, Vec<(String, String)>, Vec<u8>),
    /// Reads the request, then never answers.
    Hang,
    /// Closes the connection right after reading the request.
    Close,
}

pub struct Backend {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(reply: Reply) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stop2) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, reply) = (reqs.clone(), reply.clone());
                std::thread::spawn(move || serve(conn, reqs, reply));
            }
        });
        Backend {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// A backend answering 200 with `body`.
    pub fn ok(body: &str) -> Backend {
        Self::start(Reply::Fixed(200, vec![], body.as_bytes().to_vec()))
    }

    pub fn last(&self) -> Recorded {
        self.requests
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("the backend got no request")
    }

    pub fn count(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, reqs: Arc<Mutex<Vec<Recorded>>>, reply: Reply) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut rec = Recorded::default();
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    rec.request_line = line.trim_end().to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            rec.headers.push((k.to_string(), v.trim().to_string()));
        }
    }
    let len = rec
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = len {
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        rec.body = body;
    } else if rec
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                return;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            if reader.read_exact(&mut chunk).is_err() {
                return;
            }
            if n == 0 {
                break;
            }
            rec.body.extend_from_slice(&chunk[..n]);
        }
    }
    reqs.lock().expect("lock").push(rec);
    let mut conn = conn;
    match reply {
        Reply::Fixed(status, headers, body) => {
            let mut out = format!(
                "HTTP/1.1 {status} Status\r\nContent-Length: {}\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("Connection: close\r\n\r\n");
            let _ = conn.write_all(out.as_bytes());
            let _ = conn.write_all(&body);
        }
        Reply::Hang => {
            let mut sink = [0u8; 1024];
            while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
        }
        Reply::Close => {}
    }
}
