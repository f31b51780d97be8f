//! TLS termination with rustls: one `ServerConfig` per listen address with
//! `ssl`, built at each load (so a reload picks up new certificates); the
//! certificate is chosen by SNI with the vhost table's own server_name rules,
//! the default server's when there is no SNI or no match.
//!
//! As in nginx, what the handshake negotiates besides the certificate
//! (`ssl_protocols`, `ssl_ciphers`, session settings) comes from the default
//! server of the address: the SNI callback switches only the certificate.
//!
//! ALPN offers `h2` (before `http/1.1`) on addresses that serve HTTP/2.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert, ServerConfig};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::vhost::{normalize_host, VhostTable};
use crate::conf::error::ConfError;
use crate::conf::model::{LogLevel, ServerConf};
use crate::conf::ssl::{self, ServerTls, SessionCache};
use crate::vars::eval::TlsInfo;

/// A TCP stream, plain or TLS.
pub enum MaybeTls<T> {
    Plain(TcpStream),
    // Boxed: a TLS session is large, a plain stream should not pay for it.
    Tls(Box<T>),
}

/// A client connection, plain or TLS: what the head guard reads from.
pub type ClientStream = MaybeTls<tokio_rustls::server::TlsStream<TcpStream>>;

/// A connection to an upstream, plain or TLS (`proxy_pass https://`).
pub type UpstreamStream = MaybeTls<tokio_rustls::client::TlsStream<TcpStream>>;

/// TLS streams over TCP give their socket back.
pub trait OverTcp {
    fn tcp(&self) -> &TcpStream;
}

impl OverTcp for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl OverTcp for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl<T> From<TcpStream> for MaybeTls<T> {
    fn from(s: TcpStream) -> Self {
        MaybeTls::Plain(s)
    }
}

impl<T: OverTcp> MaybeTls<T> {
    /// The TCP socket under the stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(t) => t.tcp(),
        }
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nodelay(on)
    }

    /// Makes the socket's `close()` send RST instead of FIN (`SO_LINGER`
    /// with a zero timeout): unsent data is dropped and the socket leaves no
    /// FIN_WAIT or TIME_WAIT behind.
    pub fn reset_on_close(&self) {
        reset_on_close(self.tcp());
    }
}

/// [`MaybeTls::reset_on_close`] for a bare socket or its descriptor.
pub fn reset_on_close<S: std::os::fd::AsFd>(s: &S) {
    let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// TLS acceptors by listen address (parallel to `VhostTable::addrs()`).
#[derive(Default)]
pub struct TlsTable {
    by_addr: Vec<Option<TlsAcceptor>>,
}

impl TlsTable {
    /// Builds a rustls config for every address with `ssl`.
    pub fn build(vhosts: &Arc<VhostTable>, servers: &[ServerConf]) -> Result<TlsTable, ConfError> {
        let certs: Arc<[Option<Arc<ServerTls>>]> = servers.iter().map(|s| s.tls.clone()).collect();
        let mut by_addr = Vec::new();
        for (i, a) in vhosts.addrs().iter().enumerate() {
            if !a.ssl {
                by_addr.push(None);
                continue;
            }
            // The handshake settings: the default server's, else the first
            // server here with certificates.
            let Some(settings) = certs
                .get(a.default_server)
                .and_then(Option::as_ref)
                .or_else(|| a.servers.iter().find_map(|&s| certs.get(s)?.as_ref()))
            else {
                by_addr.push(None);
                continue;
            };
            let resolver = SniResolver {
                vhosts: vhosts.clone(),
                addr: i,
                certs: certs.clone(),
            };
            let loc = servers.get(a.default_server).map(|s| s.loc.clone());
            let h2 = super::h2::offered(a, servers);
            let cfg = server_config(settings, Arc::new(resolver), h2).map_err(|e| {
                let text = format!("cannot set up TLS for {}: {e}", a.key);
                match &loc {
                    Some(l) => ConfError::msg(text, l),
                    None => ConfError::bare(crate::conf::ConfErrorKind::Message(text)),
                }
            })?;
            by_addr.push(Some(TlsAcceptor::from(Arc::new(cfg))));
        }
        Ok(TlsTable { by_addr })
    }

    /// The acceptor for connections to the address at `addr`
    /// ([`VhostTable::addr_index`]), when it has `ssl`.
    pub fn acceptor(&self, addr: Option<usize>) -> Option<TlsAcceptor> {
        self.by_addr.get(addr?)?.clone()
    }
}

fn server_config(
    tls: &ServerTls,
    resolver: Arc<dyn ResolvesServerCert>,
    h2: bool,
) -> Result<ServerConfig, rustls::Error> {
    let (provider, versions) = ssl::provider(tls.protocols, &tls.ciphers);
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = match h2 {
        true => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        false => vec![b"http/1.1".to_vec()],
    };
    cfg.ignore_client_order = tls.prefer_server_ciphers;
    cfg.session_storage = match tls.session_cache {
        SessionCache::Entries(n) => ServerSessionMemoryCache::new(n),
        SessionCache::Off | SessionCache::None => Arc::new(NoServerSessionStorage {}),
    };
    if tls.session_tickets {
        cfg.ticketer = Arc::new(Lifetime {
            inner: rustls::crypto::ring::Ticketer::new()?,
            secs: tls.session_timeout.as_secs().min(u32::MAX as u64) as u32,
        });
    } else if tls.session_cache == SessionCache::Off || tls.session_cache == SessionCache::None {
        // Nothing to resume with: do not hand out useless tickets.
        cfg.send_tls13_tickets = 0;
    }
    Ok(cfg)
}

/// rustls' ticketer with `ssl_session_timeout` as the ticket lifetime.
#[derive(Debug)]
struct Lifetime {
    inner: Arc<dyn ProducesTickets>,
    secs: u32,
}

impl ProducesTickets for Lifetime {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }
    fn lifetime(&self) -> u32 {
        self.secs
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.inner.decrypt(cipher)
    }
}

/// Picks the certificate by SNI as the vhost table picks the server.
struct SniResolver {
    vhosts: Arc<VhostTable>,
    addr: usize,
    certs: Arc<[Option<Arc<ServerTls>>]>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let a = self.vhosts.addrs().get(self.addr)?;
        let server = match hello.server_name().map(normalize_host) {
            Some(Ok(name)) => a.select(Some(&name)).0,
            _ => a.default_server,
        };
        // nginx fails the handshake of a server without a certificate.
        let tls = self.certs.get(server)?.as_ref()?;
        pick(&tls.certs, hello.signature_schemes())
    }
}

/// With dual certificates, the first (in configuration order) the client
/// can verify.
fn pick(
    certs: &[Arc<CertifiedKey>],
    offered: &[rustls::SignatureScheme],
) -> Option<Arc<CertifiedKey>> {
    certs
        .iter()
        .find(|c| c.key.choose_scheme(offered).is_some())
        .or_else(|| certs.first())
        .cloned()
}

/// Runs the server handshake on `stream` within `timeout`
/// (`client_header_timeout`, as nginx's post-accept timer). Failures are
/// logged at `info`, as nginx does, and end the connection.
pub async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
    remote: SocketAddr,
    local: SocketAddr,
    conn: u64,
) -> Option<(ClientStream, TlsInfo)> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let info = facts(tls.get_ref().1);
            Some((ClientStream::Tls(Box::new(tls)), info))
        }
        Ok(Err(e)) => {
            crate::error_log!(
                LogLevel::Info,
                conn = conn,
                "SSL_do_handshake() failed ({e}) while SSL handshaking, client: {}, server: {local}",
                remote.ip()
            );
            None
        }
        Err(_) => {
            crate::error_log!(
                LogLevel::Info,
                conn = conn,
                "client timed out (110: Connection timed out) while SSL handshaking, client: {}, server: {local}",
                remote.ip()
            );
            None
        }
    }
}

/// What the `$ssl_*` variables show of a finished handshake.
fn facts(c: &rustls::ServerConnection) -> TlsInfo {
    TlsInfo {
        protocol: match c.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        },
        cipher: c.negotiated_cipher_suite().map_or("", ssl::openssl_name),
        server_name: c.server_name().map(Into::into),
        reused: c.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    }
}

/// The handshake of a new connection, its facts recorded in the
/// connection's state for the `$ssl_*` variables. `None` ends the connection.
pub async fn accept(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    state: &mut Arc<super::conn::ConnState>,
    timeout: Duration,
    server_tokens: bool,
) -> Option<ClientStream> {
    let (remote, local, id) = (state.info.remote, state.info.local, state.info.id);
    let deadline = tokio::time::Instant::now() + timeout;
    // A TLS connection starts with a handshake record (22); anything else
    // is taken for plain HTTP and gets nginx's 400 page.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != 0x16 => {
            plain_http(stream, deadline, server_tokens).await;
            return None;
        }
        Ok(Ok(1)) => {}
        Ok(_) => return None,
        Err(_) => {
            crate::error_log!(
                LogLevel::Info,
                conn = id,
                "client timed out (110: Connection timed out) while SSL handshaking, client: {}, server: {local}",
                remote.ip()
            );
            return None;
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let (stream, info) = handshake(acceptor, stream, left, remote, local, id).await?;
    // The state is still this task's alone: no request has been read.
    if let Some(st) = Arc::get_mut(state) {
        st.info.tls = Some(Box::new(info));
    }
    Some(stream)
}

/// Reads a plain HTTP head sent to a TLS port (bounded) and answers with
/// nginx's "400 The plain HTTP request was sent to HTTPS port" page.
async fn plain_http(mut stream: TcpStream, deadline: tokio::time::Instant, tokens: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 8192];
    let mut got = 0;
    while got < buf.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[got..])).await {
            Ok(Ok(n)) if n > 0 => got += n,
            _ => return,
        }
        if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let pages = crate::proxy::pages::error_body(497, tokens).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\nServer: {}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        crate::proxy::pages::server_token(tokens),
        pages.len()
    );
    let _ = tokio::time::timeout_at(deadline, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(pages.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
