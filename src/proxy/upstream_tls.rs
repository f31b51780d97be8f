//! `proxy_pass https://`: the TLS handshake to an upstream, with nginx's
//! words for its failures in the error log.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::conf::ssl::UpstreamTls;
use crate::server::tls::UpstreamStream;

/// Why a handshake to an upstream failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// `proxy_connect_timeout` passed.
    Timeout,
    /// nginx's words, e.g. `upstream SSL certificate verify error: (...)`.
    Failed(String),
}

/// Runs the client handshake on a connected socket, bounded by `timeout`
/// (`proxy_connect_timeout`, as nginx times it).
pub async fn handshake(
    stream: TcpStream,
    tls: &UpstreamTls,
    timeout: Duration,
) -> Result<UpstreamStream, HandshakeError> {
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    match tokio::time::timeout(timeout, connector.connect(tls.name.clone(), stream)).await {
        Err(_) => Err(HandshakeError::Timeout),
        Ok(Ok(s)) => Ok(UpstreamStream::Tls(Box::new(s))),
        Ok(Err(e)) => Err(HandshakeError::Failed(reason(&e, &tls.name_text))),
    }
}

/// nginx's wording for a failed upstream handshake.
fn reason(e: &std::io::Error, name: &str) -> String {
    use rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return format!("SSL_do_handshake() failed ({e})");
    };
    match tls {
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("upstream SSL certificate does not match \"{name}\""),
        Error::InvalidCertificate(c) => {
            format!(
                "upstream SSL certificate verify error: ({})",
                cert_reason(c)
            )
        }
        other => format!("SSL_do_handshake() failed ({other})"),
    }
}

/// OpenSSL's verify error numbers and texts where one fits.
fn cert_reason(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match c {
        C::UnknownIssuer => "20:unable to get local issuer certificate".into(),
        C::Expired | C::ExpiredContext { .. } => "10:certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "9:certificate is not yet valid".into(),
        C::Revoked => "23:certificate revoked".into(),
        C::BadSignature => "7:certificate signature failure".into(),
        other => format!("{other:?}"),
    }
}
