//! Test certificates made at test time: a private CA and a server
//! certificate it signed.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// PEM files of a CA, and a certificate + key it issued.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A private CA and an ECDSA certificate for `names` (DNS names or IP
/// addresses), written into `dir`.
pub fn make(dir: &Path, names: &[&str]) -> Certs {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sluice test CA");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("localhost"),
    );
    let cert = params.signed_by(&key, &ca).expect("sign");
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write PEM");
        p
    };
    Certs {
        ca: write("ca.pem", ca.pem()),
        cert: write("server.pem", cert.pem()),
        key: write("server.key", key.serialize_pem()),
    }
}
