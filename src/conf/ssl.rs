//! The server side's `ssl_*` settings: certificates read from PEM files at
//! load (so `-t` and a reload see a bad one, with file:line), protocol
//! versions, the OpenSSL cipher string mapped onto what rustls has, and the
//! session cache. The runtime (src/server/tls.rs) builds rustls configs from
//! these.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls::SupportedCipherSuite;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::{ConfError, Result, SrcLoc};

/// `ssl_protocols` bits.
pub const TLS12: u8 = 1;
pub const TLS13: u8 = 2;

/// A file named by a directive, with the directive's place for errors.
#[derive(Clone, Debug)]
pub struct SslFile {
    pub path: PathBuf,
    pub loc: SrcLoc,
}

/// `ssl_session_cache`, reduced to what rustls can do: how many sessions
/// the server keeps for stateful resumption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionCache {
    /// `off`: sessions are never reused through the cache.
    Off,
    /// `none` (nginx's default): no cache either.
    None,
    /// `builtin[:size]` and `shared:name:size`, in sessions.
    Entries(usize),
}

/// `ssl_ciphers` as rustls TLS 1.2 suites, in the string's order.
/// TLS 1.3 suites are not governed by the string, as with OpenSSL.
#[derive(Clone, Debug)]
pub struct Ciphers {
    pub tls12: Vec<SupportedCipherSuite>,
    pub text: String,
}

impl Default for Ciphers {
    fn default() -> Self {
        // nginx's default is "HIGH:!aNULL:!MD5": every suite rustls has.
        Ciphers {
            tls12: tls12_suites().iter().map(|s| s.suite).collect(),
            text: "HIGH:!aNULL:!MD5".into(),
        }
    }
}

/// What a server's handshake needs, compiled at load.
pub struct ServerTls {
    /// One per `ssl_certificate`/`ssl_certificate_key` pair (RSA and ECDSA
    /// side by side for dual certificates).
    pub certs: Vec<Arc<CertifiedKey>>,
    pub protocols: u8,
    pub ciphers: Arc<Ciphers>,
    pub prefer_server_ciphers: bool,
    pub session_cache: SessionCache,
    pub session_timeout: Duration,
    pub session_tickets: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certs", &self.certs.len())
            .field("protocols", &self.protocols)
            .finish_non_exhaustive()
    }
}

/// The client side of `proxy_pass https://`, compiled at load.
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    /// `proxy_ssl_name` (the host of `proxy_pass` by default): sent as SNI
    /// with `proxy_ssl_server_name on`, and checked against the certificate
    /// with `proxy_ssl_verify on`.
    pub name: rustls_pki_types::ServerName<'static>,
    /// The name as written, for error messages.
    pub name_text: String,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("name", &self.name_text)
            .finish_non_exhaustive()
    }
}

struct Suite12 {
    suite: SupportedCipherSuite,
    openssl: &'static str,
    /// OpenSSL keywords that select this suite.
    words: &'static [&'static str],
}

const COMMON12: &[&str] = &[
    "HIGH", "ALL", "DEFAULT", "ECDHE", "EECDH", "kECDHE", "kEECDH", "TLSv1.2", "AEAD", "FIPS",
];

fn tls12_suites() -> Vec<Suite12> {
    use rustls::crypto::ring::cipher_suite as cs;
    vec![
        Suite12 {
            suite: cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            openssl: "ECDHE-ECDSA-AES256-GCM-SHA384",
            words: &["aECDSA", "ECDSA", "AESGCM", "AES", "AES256", "SHA384"],
        },
        Suite12 {
            suite: cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            openssl: "ECDHE-ECDSA-AES128-GCM-SHA256",
            words: &["aECDSA", "ECDSA", "AESGCM", "AES", "AES128", "SHA256"],
        },
        Suite12 {
            suite: cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            openssl: "ECDHE-ECDSA-CHACHA20-POLY1305",
            words: &["aECDSA", "ECDSA", "CHACHA20", "SHA256"],
        },
        Suite12 {
            suite: cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            openssl: "ECDHE-RSA-AES256-GCM-SHA384",
            words: &["aRSA", "RSA", "AESGCM", "AES", "AES256", "SHA384"],
        },
        Suite12 {
            suite: cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            openssl: "ECDHE-RSA-AES128-GCM-SHA256",
            words: &["aRSA", "RSA", "AESGCM", "AES", "AES128", "SHA256"],
        },
        Suite12 {
            suite: cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            openssl: "ECDHE-RSA-CHACHA20-POLY1305",
            words: &["aRSA", "RSA", "CHACHA20", "SHA256"],
        },
    ]
}

/// A ring provider with the suites `protocols` and `ciphers` allow, and
/// the protocol versions to enable.
pub fn provider(
    protocols: u8,
    ciphers: &Ciphers,
) -> (
    rustls::crypto::CryptoProvider,
    Vec<&'static rustls::SupportedProtocolVersion>,
) {
    let mut provider = rustls::crypto::ring::default_provider();
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    let mut suites = Vec::new();
    if protocols & TLS13 != 0 {
        versions.push(&rustls::version::TLS13);
        suites.extend(
            provider
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .copied(),
        );
    }
    if protocols & TLS12 != 0 {
        versions.push(&rustls::version::TLS12);
        suites.extend(ciphers.tls12.iter().copied());
    }
    provider.cipher_suites = suites;
    (provider, versions)
}

/// OpenSSL's name of a negotiated suite, for `$ssl_cipher`.
pub fn openssl_name(s: SupportedCipherSuite) -> &'static str {
    use rustls::CipherSuite as C;
    match s.suite() {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        other => tls12_suites()
            .into_iter()
            .find(|x| x.suite.suite() == other)
            .map_or("", |x| x.openssl),
    }
}

/// Maps an OpenSSL cipher string onto rustls' TLS 1.2 suites. Returns the
/// suites and the names OpenSSL knows but rustls does not have (to warn
/// about). `!X` removes for good, `-X` removes, `+X` moves to the end,
/// `A+B` means both; `@STRENGTH` and `@SECLEVEL=n` are ignored.
pub fn map_ciphers(text: &str) -> (Vec<SupportedCipherSuite>, Vec<String>) {
    let all = tls12_suites();
    let mut chosen: Vec<usize> = Vec::new();
    let mut banned = vec![false; all.len()];
    let mut missing = Vec::new();
    for token in text.split([':', ',', ' ']).filter(|t| !t.is_empty()) {
        if token.starts_with('@') {
            continue;
        }
        let (op, body) = match token.as_bytes()[0] {
            b'!' | b'-' | b'+' => (token.as_bytes()[0], &token[1..]),
            _ => (0, token),
        };
        let matches: Vec<usize> = if body.contains('-') {
            // A suite's name.
            match all.iter().position(|s| s.openssl == body) {
                Some(i) => vec![i],
                None => {
                    if op == 0 {
                        missing.push(body.to_string());
                    }
                    Vec::new()
                }
            }
        } else {
            (0..all.len())
                .filter(|&i| {
                    body.split('+').all(|w| {
                        COMMON12.contains(&w) || all[i].words.contains(&w) || w == "COMPLEMENTOFALL"
                    })
                })
                .collect()
        };
        for i in matches {
            match op {
                b'!' => {
                    banned[i] = true;
                    chosen.retain(|&c| c != i);
                }
                b'-' => chosen.retain(|&c| c != i),
                b'+' => {
                    if chosen.contains(&i) {
                        chosen.retain(|&c| c != i);
                        chosen.push(i);
                    }
                }
                _ => {
                    if !banned[i] && !chosen.contains(&i) {
                        chosen.push(i);
                    }
                }
            }
        }
    }
    (chosen.into_iter().map(|i| all[i].suite).collect(), missing)
}

/// Parses `ssl_protocols` words; the old protocols rustls refuses are
/// returned for a warning.
pub fn parse_protocols(words: &[String]) -> std::result::Result<(u8, Vec<String>), String> {
    let mut bits = 0;
    let mut old = Vec::new();
    for w in words {
        match w.as_str() {
            "TLSv1.2" => bits |= TLS12,
            "TLSv1.3" => bits |= TLS13,
            "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => old.push(w.clone()),
            _ => return Err(w.clone()),
        }
    }
    Ok((bits, old))
}

/// Parses `ssl_session_cache` arguments.
pub fn parse_session_cache(args: &[String]) -> Option<SessionCache> {
    if args.len() == 1 && args[0] == "off" {
        return Some(SessionCache::Off);
    }
    if args.len() == 1 && args[0] == "none" {
        return Some(SessionCache::None);
    }
    let mut entries = 0usize;
    for a in args {
        if a == "builtin" {
            entries += 20480;
        } else if let Some(n) = a.strip_prefix("builtin:") {
            entries += n.parse::<usize>().ok().filter(|&n| n > 0)?;
        } else if let Some(rest) = a.strip_prefix("shared:") {
            let (name, size) = rest.rsplit_once(':')?;
            if name.is_empty() {
                return None;
            }
            let bytes = super::units::parse_size(size)? as usize;
            // nginx: "one megabyte of the cache contains about 4000 sessions".
            entries += (bytes / 262).max(1);
        } else {
            return None;
        }
    }
    Some(SessionCache::Entries(entries))
}

/// Reads one `ssl_certificate` (leaf first, then its chain) and its
/// `ssl_certificate_key`, and checks that they belong together.
pub fn load_pair(cert: &SslFile, key: &SslFile) -> Result<Arc<CertifiedKey>> {
    let fail = |what: &str, f: &SslFile, why: String| {
        ConfError::msg(
            format!("cannot load {what} \"{}\": {why}", f.path.display()),
            &f.loc,
        )
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.path)
        .map_err(|e| fail("certificate", cert, pem_reason(e)))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| fail("certificate", cert, pem_reason(e)))?;
    if chain.is_empty() {
        return Err(fail(
            "certificate",
            cert,
            "no certificate in the PEM file".into(),
        ));
    }
    for c in &chain {
        webpki_check(c).map_err(|e| fail("certificate", cert, e))?;
    }
    let der = PrivateKeyDer::from_pem_file(&key.path)
        .map_err(|e| fail("certificate key", key, pem_reason(e)))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| fail("certificate key", key, e.to_string()))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| {
        fail(
            "certificate key",
            key,
            format!("the key does not match \"{}\" ({e})", cert.path.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

/// Reads every certificate of a PEM file (a CA bundle).
pub fn load_certs(f: &SslFile, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let fail = |why: String| {
        ConfError::msg(
            format!("cannot load {what} \"{}\": {why}", f.path.display()),
            &f.loc,
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&f.path)
        .map_err(|e| fail(pem_reason(e)))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| fail(pem_reason(e)))?;
    if certs.is_empty() {
        return Err(fail("no certificate in the PEM file".into()));
    }
    Ok(certs)
}

fn pem_reason(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM data of that kind in the file".into(),
        other => format!("bad PEM data ({other:?})"),
    }
}

/// A certificate must at least parse as X.509 for rustls' verifier.
fn webpki_check(c: &CertificateDer<'_>) -> std::result::Result<(), String> {
    rustls::server::ParsedCertificate::try_from(c)
        .map(|_| ())
        .map_err(|e| format!("not a valid X.509 certificate ({e})"))
}

/// A self-signed ECDSA certificate for `names`, written as `cert.pem` and
/// `key.pem` under a new directory in the temp dir; for unit tests. The
/// directory goes when the returned guard drops (kept if the test fails).
#[cfg(test)]
pub(crate) fn test_cert_files(
    tag: &str,
    names: &[&str],
) -> (crate::log::writer::tests::TestDir, PathBuf, PathBuf) {
    let dir = crate::log::writer::tests::TestDir::new(
        std::env::temp_dir().join(format!("sluice-ssl-{tag}-{}", std::process::id())),
    );
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).expect("write cert");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("write key");
    (dir, cert, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_loads_and_a_mismatched_or_bad_one_names_its_line() {
        let (_d1, c1, k1) = test_cert_files("pair1", &["a.test"]);
        let (_d2, _c2, k2) = test_cert_files("pair2", &["b.test"]);
        let loc = |line| SrcLoc {
            file: Arc::new(PathBuf::from("t.conf")),
            line,
        };
        let f = |p: &PathBuf, line| SslFile {
            path: p.clone(),
            loc: loc(line),
        };
        assert!(load_pair(&f(&c1, 3), &f(&k1, 4)).is_ok());
        let e = load_pair(&f(&c1, 3), &f(&k2, 4)).unwrap_err();
        assert_eq!(e.loc, Some(loc(4)));
        assert!(e.to_string().contains("does not match"), "{e}");
        let e = load_pair(&f(&k1, 7), &f(&k1, 8)).unwrap_err();
        assert_eq!(e.loc, Some(loc(7)));
        let e = load_pair(&f(&PathBuf::from("/nonexistent.pem"), 9), &f(&k1, 10)).unwrap_err();
        assert!(e.to_string().ends_with("in t.conf:9"), "{e}");
    }

    fn names(s: &[SupportedCipherSuite]) -> Vec<&'static str> {
        s.iter().map(|s| openssl_name(*s)).collect()
    }

    #[test]
    fn default_string_keeps_every_suite() {
        let (s, missing) = map_ciphers("HIGH:!aNULL:!MD5");
        assert_eq!(s.len(), 6);
        assert!(missing.is_empty());
    }

    #[test]
    fn named_suites_keep_their_order_and_unknown_ones_are_reported() {
        let (s, missing) = map_ciphers(
            "ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
        );
        assert_eq!(
            names(&s),
            [
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-AES256-GCM-SHA384"
            ]
        );
        assert_eq!(missing, ["DHE-RSA-AES128-GCM-SHA256"]);
    }

    #[test]
    fn keywords_combine_and_exclude() {
        let (s, _) = map_ciphers("ECDHE+AESGCM:!AES256");
        assert_eq!(
            names(&s),
            [
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256"
            ]
        );
        let (s, _) = map_ciphers("aNULL:RC4");
        assert!(s.is_empty());
    }

    #[test]
    fn protocols_and_session_cache() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_protocols(&w(&["TLSv1", "TLSv1.2"])),
            Ok((TLS12, vec!["TLSv1".to_string()]))
        );
        assert!(parse_protocols(&w(&["TLSv2"])).is_err());
        assert_eq!(
            parse_session_cache(&w(&["shared:SSL:1m"])),
            Some(SessionCache::Entries(4002))
        );
        assert_eq!(parse_session_cache(&w(&["none"])), Some(SessionCache::None));
        assert_eq!(parse_session_cache(&w(&["shared:SSL"])), None);
    }
}
