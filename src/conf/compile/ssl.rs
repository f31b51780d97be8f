//! The `ssl_*` directives of http and server blocks, and the per-server TLS
//! setup (certificates read here, so `-t` and reloads see bad files).

use std::sync::Arc;

use super::{arg_flag, arg_time, duplicate, invalid, Cx};
use crate::conf::error::{ConfError, Result, SrcLoc};
use crate::conf::model::{LevelSettings, Listen, Settings};
use crate::conf::parse::Directive;
use crate::conf::ssl::{self, Ciphers, ServerTls, SslFile};

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
