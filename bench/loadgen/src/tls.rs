//! TLS client side of the TLS scenarios: rustls with the ring provider, as sluice itself uses.
//!
//! The proxies present a self-signed certificate generated at bench time, so the client accepts
//! any certificate and skips the signature check: the client's work is the same whichever proxy
//! answers, and keeping it small leaves the load generator's core to generate load.

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::wire;

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// The name sent as SNI (and the certificate's subject).
pub const NAME: &str = "localhost";

/// A TLS 1.3 client; `resume` keeps a session cache (tickets), otherwise every handshake is full.
pub fn connector(resume: bool, alpn: &[&[u8]]) -> io::Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.resumption = if resume {
        Resumption::in_memory_sessions(256)
    } else {
        Resumption::disabled()
    };
    Ok(TlsConnector::from(Arc::new(cfg)))
}

pub fn server_name() -> ServerName<'static> {
    ServerName::from(rustls::pki_types::DnsName::try_from(NAME).expect("a valid DNS name"))
}

/// Connects TCP (no Nagle), then TLS.
pub async fn connect(c: &TlsConnector, addr: std::net::SocketAddr) -> io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    c.connect(server_name(), tcp).await
}

/// Whether the handshake just completed resumed a session.
pub fn resumed(s: &Tls) -> bool {
    matches!(
        s.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    )
}

impl wire::Source for Tls {
    async fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let start = buf.len();
        buf.resize(start + 16 * 1024, 0);
        let r = self.read(&mut buf[start..]).await;
        buf.truncate(start + r.as_ref().map_or(0, |n| *n));
        r
    }
}

impl wire::Sink for Tls {
    async fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all(data).await?;
        self.flush().await
    }
}

#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
