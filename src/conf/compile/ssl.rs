//! The `ssl_*` directives of http and server blocks, and the per-server TLS
//! setup (certificates read here, so `-t` and reloads see bad files).

use std::sync::Arc;

use super::{arg_flag, arg_time, duplicate, invalid, Cx};
use crate::conf::error::{ConfError, Result, SrcLoc};
use crate::conf::model::{LevelSettings, Listen, Settings};
use crate::conf::parse::Directive;
use crate::conf::ssl::{self, Ciphers, ServerTls, SslFile, UpstreamTls};

macro_rules! once {
    ($lv:expr, $field:ident, $d:expr, $value:expr) => {{
        if $lv.$field.is_some() {
            return Err(duplicate($d));
        }
        $lv.$field = Some($value);
    }};
}

/// Applies an `ssl_*` directive sluice acts on; false for any other.
pub(super) fn apply(cx: &mut Cx, lv: &mut LevelSettings, d: &Directive) -> Result<bool> {
    let a = &d.args;
    match d.name.as_str() {
        "ssl_certificate" | "ssl_certificate_key" => {
            if a[0].contains('$') || a[0].starts_with("data:") || a[0].starts_with("engine:") {
                return Err(ConfError::msg(
                    format!(
                        "\"{}\" with variables, data: or engine: is not supported by sluice",
                        d.name
                    ),
                    &d.loc,
                ));
            }
            let file = SslFile {
                path: cx.conf_dir.join(&a[0]),
                loc: d.loc.clone(),
            };
            let slot = if d.name == "ssl_certificate" {
                &mut lv.ssl_certificate
            } else {
                &mut lv.ssl_certificate_key
            };
            let mut list = slot.take().map(|l| (*l).clone()).unwrap_or_default();
            list.push(file);
            *slot = Some(Arc::new(list));
        }
        "ssl_protocols" => {
            let (bits, old) = ssl::parse_protocols(a).map_err(|w| invalid(d, &w))?;
            if !old.is_empty() {
                cx.warn_once(
                    "ssl_protocols_old",
                    format!(
                        "\"ssl_protocols\": {} refused: sluice (rustls) speaks TLSv1.2 and TLSv1.3 only, in {}",
                        old.join(" "),
                        d.loc
                    ),
                );
            }
            if bits == 0 {
                return Err(ConfError::msg(
                    "\"ssl_protocols\" leaves no protocol: sluice speaks TLSv1.2 and TLSv1.3 only",
                    &d.loc,
                ));
            }
            once!(lv, ssl_protocols, d, bits)
        }
        "ssl_ciphers" => {
            let (tls12, missing) = ssl::map_ciphers(&a[0]);
            if !missing.is_empty() {
                cx.warn_once(
                    "ssl_ciphers_missing",
                    format!(
                        "\"ssl_ciphers\": {} not available in sluice (rustls has no such suite), ignored in {}",
                        missing.join(":"),
                        d.loc
                    ),
                );
            }
            if tls12.is_empty() {
                return Err(ConfError::msg(
                    format!(
                        "SSL_CTX_set_cipher_list(\"{}\") failed (no cipher match: sluice has ECDHE with AES-GCM and CHACHA20-POLY1305)",
                        a[0]
                    ),
                    &d.loc,
                ));
            }
            once!(
                lv,
                ssl_ciphers,
                d,
                Arc::new(Ciphers {
                    tls12,
                    text: a[0].clone()
                })
            )
        }
        "ssl_prefer_server_ciphers" => once!(lv, ssl_prefer_server_ciphers, d, arg_flag(d)),
        "ssl_session_cache" => {
            let c = ssl::parse_session_cache(a).ok_or_else(|| {
                let bad = a
                    .iter()
                    .find(|w| ssl::parse_session_cache(std::slice::from_ref(w)).is_none());
                invalid(d, bad.unwrap_or(&a[0]))
            })?;
            once!(lv, ssl_session_cache, d, c)
        }
        "ssl_session_timeout" => once!(lv, ssl_session_timeout, d, arg_time(d, 0)?),
        "ssl_session_tickets" => once!(lv, ssl_session_tickets, d, arg_flag(d)),
        // Accepting these as on without acting would serve plain HTTP where
        // TLS was asked for, or let clients in without a certificate.
        "ssl" if arg_flag(d) => {
            return Err(ConfError::msg(
                "\"ssl on\" is not supported by sluice (nginx 1.25 removed it): use \"listen ... ssl\"",
                &d.loc,
            ))
        }
        "ssl_verify_client" if a[0] != "off" => {
            return Err(ConfError::msg(
                format!(
                    "\"ssl_verify_client {}\" is not supported by sluice: client certificates are not implemented",
                    a[0]
                ),
                &d.loc,
            ))
        }
        n if n.starts_with("proxy_ssl_") => return apply_proxy(cx, lv, d),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Reads a server's certificates. A server with `listen ... ssl` must have
/// one (nginx asks it of an address's default server, and fails the
/// handshakes of the others); the error names the server block, as nginx's.
pub(super) fn server(
    s: &Settings,
    listens: &[Listen],
    block: &SrcLoc,
) -> Result<Option<Arc<ServerTls>>> {
    if s.ssl_certificate.is_empty() {
        if listens.iter().any(|l| l.ssl) {
            return Err(ConfError::msg(
                "no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive",
                block,
            ));
        }
        return Ok(None);
    }
    let mut certs = Vec::new();
    for (i, cert) in s.ssl_certificate.iter().enumerate() {
        let Some(key) = s.ssl_certificate_key.get(i) else {
            return Err(ConfError::msg(
                format!(
                    "no \"ssl_certificate_key\" is defined for certificate \"{}\"",
                    cert.path.display()
                ),
                &cert.loc,
            ));
        };
        certs.push(ssl::load_pair(cert, key)?);
    }
    Ok(Some(Arc::new(ServerTls {
        certs,
        protocols: s.ssl_protocols,
        ciphers: s.ssl_ciphers.clone(),
        prefer_server_ciphers: s.ssl_prefer_server_ciphers,
        session_cache: s.ssl_session_cache,
        session_timeout: s.ssl_session_timeout,
        session_tickets: s.ssl_session_tickets,
    })))
}

/// Applies a `proxy_ssl_*` directive; false for any other.
pub(super) fn apply_proxy(cx: &mut Cx, lv: &mut LevelSettings, d: &Directive) -> Result<bool> {
    let a = &d.args;
    let file = |cx: &Cx| SslFile {
        path: cx.conf_dir.join(&a[0]),
        loc: d.loc.clone(),
    };
    match d.name.as_str() {
        "proxy_ssl_verify" => once!(lv, proxy_ssl_verify, d, arg_flag(d)),
        "proxy_ssl_trusted_certificate" => {
            once!(lv, proxy_ssl_trusted_certificate, d, Some(file(cx)))
        }
        "proxy_ssl_verify_depth" => {
            let n = super::arg_num(d, 0)?;
            once!(lv, proxy_ssl_verify_depth, d, n)
        }
        "proxy_ssl_server_name" => once!(lv, proxy_ssl_server_name, d, arg_flag(d)),
        "proxy_ssl_name" => {
            // The default, $proxy_host, is what None means.
            let v = match a[0].as_str() {
                "$proxy_host" => None,
                n if n.contains('$') => {
                    return Err(ConfError::msg(
                        format!("variables in \"proxy_ssl_name\" are not supported yet in \"{n}\""),
                        &d.loc,
                    ))
                }
                n => Some(n.to_string()),
            };
            once!(lv, proxy_ssl_name, d, v)
        }
        "proxy_ssl_certificate" | "proxy_ssl_certificate_key" => {
            if a[0].contains('$') || a[0].starts_with("data:") {
                return Err(ConfError::msg(
                    format!(
                        "\"{}\" with variables or data: is not supported by sluice",
                        d.name
                    ),
                    &d.loc,
                ));
            }
            if d.name == "proxy_ssl_certificate" {
                once!(lv, proxy_ssl_certificate, d, Some(file(cx)))
            } else {
                once!(lv, proxy_ssl_certificate_key, d, Some(file(cx)))
            }
        }
        "proxy_ssl_protocols" => {
            let (bits, old) = ssl::parse_protocols(a).map_err(|w| invalid(d, &w))?;
            if !old.is_empty() {
                cx.warn_once(
                    "proxy_ssl_protocols_old",
                    format!(
                        "\"proxy_ssl_protocols\": {} refused: sluice (rustls) speaks TLSv1.2 and TLSv1.3 only, in {}",
                        old.join(" "),
                        d.loc
                    ),
                );
            }
            if bits == 0 {
                return Err(ConfError::msg(
                    "\"proxy_ssl_protocols\" leaves no protocol: sluice speaks TLSv1.2 and TLSv1.3 only",
                    &d.loc,
                ));
            }
            once!(lv, proxy_ssl_protocols, d, bits)
        }
        "proxy_ssl_ciphers" => {
            let (tls12, missing) = ssl::map_ciphers(&a[0]);
            if !missing.is_empty() {
                cx.warn_once(
                    "proxy_ssl_ciphers_missing",
                    format!(
                        "\"proxy_ssl_ciphers\": {} not available in sluice (rustls has no such suite), ignored in {}",
                        missing.join(":"),
                        d.loc
                    ),
                );
            }
            once!(
                lv,
                proxy_ssl_ciphers,
                d,
                Arc::new(Ciphers {
                    tls12,
                    text: a[0].clone()
                })
            )
        }
        "proxy_ssl_session_reuse" => once!(lv, proxy_ssl_session_reuse, d, arg_flag(d)),
        _ => return Ok(false),
    }
    Ok(true)
}

/// The client config of a location whose `proxy_pass` is https.
pub(super) fn upstream(s: &Settings, proxy_host: &str, at: &SrcLoc) -> Result<Arc<UpstreamTls>> {
    use rustls::client::WebPkiServerVerifier;
    use rustls_pki_types::ServerName;

    let err = |text: String| ConfError::msg(text, at);
    let (provider, versions) = ssl::provider(s.proxy_ssl_protocols, &s.proxy_ssl_ciphers);
    let provider = Arc::new(provider);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| err(format!("cannot set up TLS to the upstream: {e}")))?;
    let name_text = s
        .proxy_ssl_name
        .clone()
        .unwrap_or_else(|| proxy_host.to_string());
    // nginx strips a port from the name.
    let host = if let Some(v6) = name_text.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else if name_text.matches(':').count() == 1 {
        name_text.split(':').next().unwrap_or(&name_text)
    } else {
        name_text.as_str()
    };
    let name = ServerName::try_from(host.to_string());
    let builder = if s.proxy_ssl_verify {
        let Some(ca) = &s.proxy_ssl_trusted_certificate else {
            return Err(err(
                "no proxy_ssl_trusted_certificate for proxy_ssl_verify".into()
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in ssl::load_certs(ca, "trusted certificate")? {
            roots.add(c).map_err(|e| {
                ConfError::msg(
                    format!(
                        "cannot load trusted certificate \"{}\": {e}",
                        ca.path.display()
                    ),
                    &ca.loc,
                )
            })?;
        }
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| err(format!("cannot set up upstream verification: {e}")))?;
        builder.with_webpki_verifier(v)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
    };
    let mut cfg = match (&s.proxy_ssl_certificate, &s.proxy_ssl_certificate_key) {
        (Some(c), Some(k)) => {
            let ck = ssl::load_pair(c, k)?;
            builder.with_client_cert_resolver(Arc::new(ClientCert(ck)))
        }
        (Some(c), None) => {
            return Err(ConfError::msg(
                format!(
                    "no \"proxy_ssl_certificate_key\" is defined for certificate \"{}\"",
                    c.path.display()
                ),
                &c.loc,
            ))
        }
        _ => builder.with_no_client_auth(),
    };
    let name = match name {
        Ok(n) => n,
        Err(_) if !s.proxy_ssl_verify && !s.proxy_ssl_server_name => {
            // Neither sent nor checked: any valid placeholder does.
            ServerName::try_from("localhost").map_err(|e| err(e.to_string()))?
        }
        Err(_) => return Err(err(format!("invalid proxy_ssl_name \"{name_text}\""))),
    };
    cfg.enable_sni = s.proxy_ssl_server_name;
    if !s.proxy_ssl_session_reuse {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(UpstreamTls {
        config: Arc::new(cfg),
        name,
        name_text: host.to_string(),
    }))
}

/// `proxy_ssl_verify off` (nginx's default): the upstream's certificate is
/// not checked, but its handshake signatures still are.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `proxy_ssl_certificate`: the one client certificate, whatever is asked.
#[derive(Debug)]
struct ClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod refusals {
    fn load(server: &str) -> Result<(), String> {
        crate::conf::load_str(
            &format!("events {{}}\nhttp {{\nserver {{\n{server}\n}}\n}}\n"),
            "t.conf",
            std::path::Path::new("/tmp"),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    // Accepted as "on" without acting, these would serve plain HTTP where
    // TLS was asked for, or let in clients without a certificate.
    #[test]
    fn ssl_on_and_client_certificate_checks_are_refused_not_ignored() {
        let e = load("listen 127.0.0.1:8443;\nssl on;").expect_err("ssl on");
        assert!(
            e.contains("\"ssl on\" is not supported") && e.contains("t.conf:5"),
            "{e}"
        );
        for v in ["on", "optional", "optional_no_ca"] {
            let e = load(&format!("listen 127.0.0.1:8443;\nssl_verify_client {v};"))
                .expect_err("ssl_verify_client");
            assert!(e.contains("client certificates are not implemented"), "{e}");
            assert!(e.contains("t.conf:5"), "{e}");
        }
        assert!(load("listen 127.0.0.1:8443;\nssl off;\nssl_verify_client off;").is_ok());
    }
}
