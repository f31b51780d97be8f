//! TLS termination through the real binary, with certificates made by rcgen
//! at test time (a private CA; an ECDSA server certificate for a.test and
//! localhost, an RSA one for b.test) and real TLS peers: `openssl s_client`
//! (SNI, protocol versions, ALPN), curl (HTTPS to a plain upstream), npm's
//! wscat and Python's websockets (wss:// end to end). The peers are installed
//! by tests/peers/install.sh.

mod common;
mod interop_common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::backend::Backend;
use common::{main_block, temp_dir, Sluice};
use interop_common::{run_bounded, start_echo, wait_bounded, wscat, PEER_WAIT};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PKCS_RSA_SHA256,
};

/// PEM files of a private CA and two server certificates.
struct Certs {
    ca: PathBuf,
    /// ECDSA P-256, for a.test and localhost.
    a_cert: PathBuf,
    a_key: PathBuf,
    /// RSA 2048, for b.test.
    b_cert: PathBuf,
    b_key: PathBuf,
    /// A renewed a.test certificate (CN "a.test renewed"), key beside it.
    a2_cert: PathBuf,
    a2_key: PathBuf,
}

fn server_params(names: &[&str]) -> CertificateParams {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p
}

fn make_certs(dir: &Path) -> Certs {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sluice test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let a_key = KeyPair::generate().unwrap();
    let a = server_params(&["a.test", "localhost"])
        .signed_by(&a_key, &ca)
        .unwrap();

    // ring signs with RSA keys but does not make them: openssl does.
    let rsa_path = dir.join("b.key");
    let (status, _, err) = run_bounded(
        Command::new("openssl").args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            rsa_path.to_str().unwrap(),
        ]),
        dir,
        PEER_WAIT,
    );
    assert!(status.success(), "openssl genpkey: {err}");
    let b_key = KeyPair::from_pem_and_sign_algo(
        &std::fs::read_to_string(&rsa_path).unwrap(),
        &PKCS_RSA_SHA256,
    )
    .unwrap();
    let b = server_params(&["b.test"]).signed_by(&b_key, &ca).unwrap();
    let a2_key = KeyPair::generate().unwrap();
    let mut a2 = server_params(&["a.test", "localhost"]);
    a2.distinguished_name = rcgen::DistinguishedName::new();
    a2.distinguished_name
        .push(DnType::CommonName, "a.test renewed");
    let a2 = a2.signed_by(&a2_key, &ca).unwrap();

    let w = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Certs {
        ca: w("ca.pem", ca.pem()),
        // The leaf and the CA: a chain file, as nginx users write them.
        a_cert: w("a.pem", format!("{}{}", a.pem(), ca.pem())),
        a_key: w("a.key", a_key.serialize_pem()),
        b_cert: w("b.pem", b.pem()),
        b_key: rsa_path,
        a2_cert: w("a2.pem", a2.pem()),
        a2_key: w("a2.key", a2_key.serialize_pem()),
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Two servers on one TLS port (a.test default, b.test), `extra` in both.
fn two_servers(c: &Certs, port: u16, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "{main}http {{
    access_log off;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl default_server;
        server_name a.test;
        ssl_certificate {ac};
        ssl_certificate_key {ak};
        {extra}
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Scheme $scheme;
            proxy_set_header X-Https $https;
            proxy_set_header X-Tls \"$ssl_protocol $ssl_cipher $ssl_server_name $ssl_session_reused\";
        }}
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name b.test;
        ssl_certificate {bc};
        ssl_certificate_key {bk};
        location / {{ return 200 \"b.test over $scheme\\n\"; }}
    }}
}}
",
        main = main_block(),
        ac = p(&c.a_cert),
        ak = p(&c.a_key),
        bc = p(&c.b_cert),
        bk = p(&c.b_key),
    )
}

/// `openssl s_client` against 127.0.0.1:port; its stdout and stderr.
fn s_client(port: u16, ca: &Path, args: &[&str]) -> (bool, String) {
    let dir = temp_dir("s_client");
    let connect = format!("127.0.0.1:{port}");
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        &p(ca),
        "-verify_return_error",
    ])
    .args(args)
    .stdin(Stdio::null());
    let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
    (status.success(), format!("{out}\n{err}"))
}

fn peer_cn(out: &str) -> String {
    // "subject=CN = a.test" (OpenSSL 1.1/3.x).
    out.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| {
            s.trim()
                .trim_start_matches("CN = ")
                .trim_start_matches("CN=")
                .to_string()
        })
        .unwrap_or_default()
}

#[test]
fn sni_chooses_the_certificate_and_protocols_follow_ssl_protocols() {
    let dir = temp_dir("tls-sni");
    let certs = make_certs(&dir);
    let backend = Backend::ok("ok");
    let port = common::free_port();
    let port12 = common::free_port();
    let mut conf = two_servers(&certs, port, backend.addr, "");
    // A third address that speaks TLSv1.2 only, with one named suite.
    conf = conf.trim_end().trim_end_matches('}').to_string()
        + &format!(
            "    server {{
        listen 127.0.0.1:{port12} ssl;
        ssl_protocols TLSv1 TLSv1.2;
        ssl_ciphers ECDHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-GCM-SHA256;
        ssl_prefer_server_ciphers on;
        ssl_certificate {ac};
        ssl_certificate_key {ak};
        return 200 ok;
    }}
}}
",
            ac = p(&certs.a_cert),
            ak = p(&certs.a_key)
        );
    let s = Sluice::start("tls-sni", &conf);

    let (ok, out) = s_client(port, &certs.ca, &["-servername", "a.test"]);
    assert!(ok, "{out}");
    assert_eq!(peer_cn(&out), "a.test", "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");

    let (ok, out) = s_client(port, &certs.ca, &["-servername", "b.test"]);
    assert!(ok, "{out}");
    assert_eq!(peer_cn(&out), "b.test", "{out}");
    assert!(out.contains("Server public key is 2048 bit"), "{out}");

    // No SNI, and an unknown name: the default server's certificate.
    let (ok, out) = s_client(port, &certs.ca, &["-noservername"]);
    assert!(ok, "{out}");
    assert_eq!(peer_cn(&out), "a.test", "{out}");
    let (_, out) = s_client(port, &certs.ca, &["-servername", "c.test"]);
    assert_eq!(peer_cn(&out), "a.test", "{out}");

    // ALPN: http/1.1 only, never h2 yet.
    let (ok, out) = s_client(
        port,
        &certs.ca,
        &["-servername", "a.test", "-alpn", "h2,http/1.1"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");

    // Both versions on the default port.
    for (flag, want) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, out) = s_client(port, &certs.ca, &["-servername", "a.test", flag]);
        assert!(ok, "{flag}: {out}");
        assert!(
            out.contains(&format!("New, {want}, Cipher is")),
            "{flag}: {out}"
        );
    }

    // TLSv1.2 only there: 1.3 fails, 1.2 works with the named suite that
    // fits the ECDSA certificate.
    let (ok, out) = s_client(port12, &certs.ca, &["-servername", "localhost", "-tls1_3"]);
    assert!(!ok, "TLSv1.3 should be refused: {out}");
    let (ok, out) = s_client(port12, &certs.ca, &["-servername", "localhost", "-tls1_2"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{out}"
    );
    // The old protocol and the missing suite were warned about at load.
    let log = s.error_log() + &s.stderr();
    assert!(log.contains("TLSv1 refused"), "{log}");
    assert!(log.contains("DHE-RSA-AES128-SHA not available"), "{log}");
}

#[test]
fn curl_over_https_reaches_a_plain_upstream_with_scheme_https() {
    let dir = temp_dir("tls-curl");
    let certs = make_certs(&dir);
    let backend = Backend::ok("through tls");
    let port = common::free_port();
    let _s = Sluice::start("tls-curl", &two_servers(&certs, port, backend.addr, ""));
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--cacert",
        &p(&certs.ca),
        "--resolve",
        &format!("a.test:{port}:127.0.0.1"),
        &format!("https://a.test:{port}/x"),
    ]);
    let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
    assert!(status.success(), "curl: {err}");
    assert_eq!(out, "through tls");
    let r = backend.last();
    assert_eq!(r.header("x-scheme"), Some("https"));
    assert_eq!(r.header("x-https"), Some("on"));
    let tls = r.header("x-tls").unwrap_or_default().to_string();
    let parts: Vec<&str> = tls.split(' ').collect();
    assert_eq!(parts.len(), 4, "{tls}");
    assert!(parts[0] == "TLSv1.3" || parts[0] == "TLSv1.2", "{tls}");
    assert!(
        parts[1].starts_with("TLS_") || parts[1].starts_with("ECDHE-"),
        "{tls}"
    );
    assert_eq!(parts[2], "a.test");
    assert_eq!(parts[3], ".");

    // SNI b.test reaches the other server through the same port.
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--cacert",
        &p(&certs.ca),
        "--resolve",
        &format!("b.test:{port}:127.0.0.1"),
        &format!("https://b.test:{port}/"),
    ]);
    let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
    assert!(status.success(), "curl: {err}");
    assert_eq!(out, "b.test over https\n");
}

#[test]
fn wss_end_to_end_with_wscat_and_python_websockets() {
    let dir = temp_dir("tls-wss");
    let certs = make_certs(&dir);
    let (_echo, echo) = start_echo();
    let port = common::free_port();
    let _s = Sluice::start("tls-wss", &two_servers(&certs, port, echo, ""));
    let url = format!("wss://localhost:{port}/");

    // wscat, its stdin kept open until it exits.
    let mut child = Command::new(wscat())
        .args([
            "--ca",
            &p(&certs.ca),
            "-c",
            &url,
            "-x",
            "hello wss",
            "-w",
            "1",
        ])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(dir.join("wscat.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("wscat.err")).unwrap())
        .spawn()
        .expect("spawn wscat");
    let stdin = child.stdin.take();
    let status = wait_bounded(&mut child, PEER_WAIT);
    drop(stdin);
    let out = common::read_file(&dir.join("wscat.out"));
    let err = common::read_file(&dir.join("wscat.err"));
    assert!(status.success(), "wscat failed ({status}): {out}{err}");
    assert!(
        out.lines()
            .any(|l| l.trim_start_matches("< ") == "Server received from client: hello wss"),
        "wscat saw: {out:?}"
    );

    // Python websockets with a verifying SSL context.
    let script = dir.join("client.py");
    std::fs::write(
        &script,
        r#"import asyncio, ssl, sys
import websockets

async def main():
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    async with websockets.connect(sys.argv[1], ssl=ctx) as ws:
        for i in range(3):
            await ws.send(f"python {i}")
            print(await ws.recv(), flush=True)

asyncio.run(main())
"#,
    )
    .unwrap();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.args([p(&script), url.clone(), p(&certs.ca)]);
    let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
    assert!(status.success(), "python websockets: {out}{err}");
    let want: Vec<String> = (0..3)
        .map(|i| format!("Server received from client: python {i}"))
        .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
}

#[test]
fn a_bad_certificate_is_a_load_error_with_file_and_line() {
    let dir = temp_dir("tls-bad");
    let certs = make_certs(&dir);
    let bad = dir.join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let conf_dir = dir.join("conf");
    let write_conf = |cert: &Path, key: &Path| {
        std::fs::write(
            conf_dir.join("nginx.conf"),
            format!(
                "{}http {{\n    server {{\n        listen 127.0.0.1:1 ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};\n    }}\n}}\n",
                main_block(),
                p(cert),
                p(key)
            ),
        )
        .unwrap();
    };
    let t = |what: &str| {
        let out = Command::new(common::bin())
            .args(["-t", "-p", &p(&dir), "-c", "conf/nginx.conf"])
            .output()
            .expect("run sluice -t");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{what}: -t passed: {err}");
        err
    };
    let line_of = |needle: &str| {
        let text = std::fs::read_to_string(conf_dir.join("nginx.conf")).unwrap();
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    };

    write_conf(&bad, &certs.a_key);
    let err = t("bad certificate");
    let line = line_of("ssl_certificate ");
    assert!(err.contains(&format!("conf/nginx.conf:{line}")), "{err}");
    assert!(err.contains("bad.pem"), "{err}");

    // A key that is not the certificate's.
    write_conf(&certs.a_cert, &certs.b_key);
    let err = t("mismatched key");
    let line = line_of("ssl_certificate_key");
    assert!(err.contains("does not match"), "{err}");
    assert!(err.contains(&format!("conf/nginx.conf:{line}")), "{err}");

    // listen ... ssl without a certificate.
    std::fs::write(
        conf_dir.join("nginx.conf"),
        format!(
            "{}http {{\n    server {{\n        listen 127.0.0.1:1 ssl;\n    }}\n}}\n",
            main_block()
        ),
    )
    .unwrap();
    let err = t("no certificate");
    assert!(err.contains("no \"ssl_certificate\" is defined"), "{err}");
    assert!(err.contains("conf/nginx.conf:6"), "{err}");

    // proxy_ssl_verify needs trusted certificates; a bad bundle names its line.
    std::fs::write(
        conf_dir.join("nginx.conf"),
        format!(
            "{}http {{\n    server {{\n        listen 127.0.0.1:1;\n        location / {{\n            proxy_ssl_verify on;\n            proxy_pass https://127.0.0.1:2;\n        }}\n    }}\n}}\n",
            main_block()
        ),
    )
    .unwrap();
    let err = t("verify without trusted certificates");
    assert!(
        err.contains("no proxy_ssl_trusted_certificate for proxy_ssl_verify"),
        "{err}"
    );
    assert!(
        err.contains(&format!("conf/nginx.conf:{}", line_of("proxy_pass"))),
        "{err}"
    );
    std::fs::write(
        conf_dir.join("nginx.conf"),
        format!(
            "{}http {{\n    server {{\n        listen 127.0.0.1:1;\n        location / {{\n            proxy_ssl_verify on;\n            proxy_ssl_trusted_certificate {};\n            proxy_pass https://127.0.0.1:2;\n        }}\n    }}\n}}\n",
            main_block(),
            p(&bad)
        ),
    )
    .unwrap();
    let err = t("bad trusted certificate");
    assert!(
        err.contains(&format!("conf/nginx.conf:{}", line_of("proxy_ssl_trusted"))),
        "{err}"
    );
}

#[test]
fn a_stalled_handshake_does_not_hold_up_another_client() {
    let dir = temp_dir("tls-stall");
    let certs = make_certs(&dir);
    let backend = Backend::ok("still served");
    let port = common::free_port();
    let s = Sluice::start(
        "tls-stall",
        &two_servers(&certs, port, backend.addr, "client_header_timeout 2s;"),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Connections that never send a ClientHello, and one that stops halfway.
    let mut stalled: Vec<std::net::TcpStream> = (0..5)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    {
        use std::io::Write;
        let mut half = std::net::TcpStream::connect(addr).unwrap();
        half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .unwrap();
        stalled.push(half);
    }
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--cacert",
        &p(&certs.ca),
        &format!("https://localhost:{port}/"),
    ]);
    let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
    assert!(status.success(), "curl: {err}");
    assert_eq!(out, "still served");
    // The stalled ones are closed once client_header_timeout passes.
    for mut c in stalled {
        c.set_read_timeout(Some(PEER_WAIT)).unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).unwrap_or(0);
        assert!(n < buf.len());
    }
    common::wait_until("the handshake timeout in the error log", || {
        s.error_log().contains("while SSL handshaking")
    });
}

#[test]
fn reload_reads_the_certificates_again_and_keeps_them_when_the_new_ones_are_bad() {
    let dir = temp_dir("tls-reload");
    let certs = make_certs(&dir);
    let backend = Backend::ok("ok");
    let port = common::free_port();
    let s = Sluice::start("tls-reload", &two_servers(&certs, port, backend.addr, ""));
    let cn = || peer_cn(&s_client(port, &certs.ca, &["-servername", "a.test"]).1);
    assert_eq!(cn(), "a.test");

    // Renewed files under the same names, then a reload.
    std::fs::copy(&certs.a2_cert, &certs.a_cert).unwrap();
    std::fs::copy(&certs.a2_key, &certs.a_key).unwrap();
    s.signal(libc::SIGHUP);
    let mut tries = 0;
    while cn() != "a.test renewed" {
        tries += 1;
        assert!(tries < 200, "the renewed certificate never showed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A broken certificate: the reload is refused with file:line and the
    // loaded one keeps serving.
    std::fs::write(&certs.a_cert, "garbage").unwrap();
    s.signal(libc::SIGHUP);
    common::wait_until("the refused reload in the error log", || {
        s.error_log().contains("a.pem")
    });
    assert!(
        s.error_log().contains("conf/nginx.conf:"),
        "{}",
        s.error_log()
    );
    assert_eq!(cn(), "a.test renewed");
}

#[test]
fn sessions_resume_and_ssl_session_reused_says_so() {
    let dir = temp_dir("tls-resume");
    let certs = make_certs(&dir);
    let port = common::free_port();
    let port_cache = common::free_port();
    let server = |port: u16, extra: &str| {
        format!(
            "server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {};
        ssl_certificate_key {};
        {extra}
        return 200 \"reused=$ssl_session_reused $ssl_protocol\\n\";
    }}\n",
            p(&certs.a_cert),
            p(&certs.a_key)
        )
    };
    let conf = format!(
        "{}http {{\n    access_log off;\n{}{}}}\n",
        main_block(),
        // nginx's defaults: no cache, tickets on.
        server(port, ""),
        // A session cache and no tickets: resumption by session id.
        server(
            port_cache,
            "ssl_session_cache shared:SSL:1m; ssl_session_tickets off; ssl_session_timeout 10m;"
        )
    );
    let _s = Sluice::start("tls-resume", &conf);
    let req = dir.join("req");
    std::fs::write(&req, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    for port in [port, port_cache] {
        let sess = dir.join(format!("sess{port}"));
        let run = |sess_arg: &str| {
            let connect = format!("127.0.0.1:{port}");
            let mut cmd = Command::new("openssl");
            cmd.args(["s_client", "-connect", &connect, "-CAfile", &p(&certs.ca)])
                .args([
                    "-verify_return_error",
                    "-tls1_2",
                    "-servername",
                    "localhost",
                    "-ign_eof",
                ])
                .args([sess_arg, &p(&sess)])
                .stdin(std::fs::File::open(&req).unwrap());
            let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
            assert!(status.success(), "{out}{err}");
            out
        };
        let first = run("-sess_out");
        assert!(first.contains("New, TLSv1.2"), "{first}");
        assert!(first.contains("reused=. TLSv1.2"), "{first}");
        let second = run("-sess_in");
        assert!(second.contains("Reused, TLSv1.2"), "port {port}: {second}");
        assert!(second.contains("reused=r TLSv1.2"), "{second}");
    }
}

/// A plain front port whose locations proxy to a TLS port of the same
/// sluice (certificate a.test, proxying to `backend`), with `front_loc`
/// directives per location.
fn upstream_tls_conf(
    c: &Certs,
    front: u16,
    tls: u16,
    backend: SocketAddr,
    locs: &[(&str, &str)],
) -> String {
    let mut front_locs = String::new();
    for (path, extra) in locs {
        front_locs += &format!(
            "        location {path} {{
            proxy_pass https://127.0.0.1:{tls};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            {extra}
        }}\n"
        );
    }
    format!(
        "{main}http {{
    access_log off;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{front};
{front_locs}    }}
    server {{
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {ac};
        ssl_certificate_key {ak};
        location / {{
            proxy_pass http://{backend};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Scheme $scheme;
            proxy_set_header X-Sni $ssl_server_name;
        }}
    }}
}}
",
        main = main_block(),
        ac = p(&c.a_cert),
        ak = p(&c.a_key),
    )
}

fn get(port: u16, path: &str) -> (u16, String) {
    let resp = common::raw_exchange(
        ([127, 0, 0, 1], port).into(),
        format!("GET {path} HTTP/1.0\r\nHost: front\r\n\r\n").as_bytes(),
    );
    let text = String::from_utf8_lossy(&resp).to_string();
    (common::status_of(&resp), text)
}

#[test]
fn proxy_pass_https_verifies_the_upstream_as_configured() {
    let dir = temp_dir("tls-upstream");
    let certs = make_certs(&dir);
    // A CA that signed nothing here.
    let other_ca = {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let path = dir.join("other-ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        path
    };
    let backend = Backend::ok("from the backend");
    let (front, tls) = (common::free_port(), common::free_port());
    let ca = format!("proxy_ssl_trusted_certificate {};", p(&certs.ca));
    let other = format!("proxy_ssl_trusted_certificate {};", p(&other_ca));
    let verified =
        format!("proxy_ssl_verify on; {ca} proxy_ssl_name a.test; proxy_ssl_server_name on;");
    let wrong_name = format!("proxy_ssl_verify on; {ca} proxy_ssl_name c.test;");
    let wrong_ca = format!("proxy_ssl_verify on; {other} proxy_ssl_name a.test;");
    let s = Sluice::start(
        "tls-upstream",
        &upstream_tls_conf(
            &certs,
            front,
            tls,
            backend.addr,
            &[
                ("/plain/", ""),
                ("/verified/", &verified),
                ("/wrong-name/", &wrong_name),
                ("/wrong-ca/", &wrong_ca),
            ],
        ),
    );

    // nginx's default: proxy_ssl_verify off, no SNI.
    let (status, text) = get(front, "/plain/x");
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("from the backend"), "{text}");
    let r = backend.last();
    assert_eq!(r.header("x-scheme"), Some("https"));
    assert_eq!(r.header("x-sni"), None);

    let (status, text) = get(front, "/verified/x");
    assert_eq!(status, 200, "{text}");
    assert_eq!(backend.last().header("x-sni"), Some("a.test"));

    let (status, _) = get(front, "/wrong-name/x");
    assert_eq!(status, 502);
    let (status, _) = get(front, "/wrong-ca/x");
    assert_eq!(status, 502);
    common::wait_until("both verification failures in the error log", || {
        let log = s.error_log();
        log.contains("upstream SSL certificate does not match \"c.test\" while SSL handshaking to upstream")
            && log.contains("upstream SSL certificate verify error: (20:unable to get local issuer certificate) while SSL handshaking to upstream")
    });
    let log = s.error_log();
    assert!(
        log.contains(&format!("upstream: \"https://127.0.0.1:{tls}/wrong-ca/x\"")),
        "{log}"
    );
}

#[test]
fn wss_through_tls_on_both_sides_and_ws_to_a_tls_upstream() {
    let dir = temp_dir("tls-wss-upstream");
    let certs = make_certs(&dir);
    let (_echo, echo) = start_echo();
    let (front, tls) = (common::free_port(), common::free_port());
    let mut conf = upstream_tls_conf(&certs, front, tls, echo, &[("/", "")]);
    // A third server: TLS in front of the same https upstream.
    let front_tls = common::free_port();
    conf = conf.trim_end().trim_end_matches('}').to_string()
        + &format!(
            "    server {{
        listen 127.0.0.1:{front_tls} ssl;
        ssl_certificate {ac};
        ssl_certificate_key {ak};
        location / {{
            proxy_pass https://127.0.0.1:{tls};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
        }}
    }}
}}
",
            ac = p(&certs.a_cert),
            ak = p(&certs.a_key)
        );
    let _s = Sluice::start("tls-wss-upstream", &conf);
    let script = dir.join("client.py");
    std::fs::write(
        &script,
        r#"import asyncio, ssl, sys
import websockets

async def main():
    url = sys.argv[1]
    ctx = ssl.create_default_context(cafile=sys.argv[2]) if url.startswith("wss") else None
    async with websockets.connect(url, ssl=ctx) as ws:
        for i in range(3):
            await ws.send(f"hop {i}")
            print(await ws.recv(), flush=True)
        await ws.send("/big 100000")
        print(len(await ws.recv()), flush=True)

asyncio.run(main())
"#,
    )
    .unwrap();
    for url in [
        format!("ws://127.0.0.1:{front}/"),
        format!("wss://localhost:{front_tls}/"),
    ] {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.args([p(&script), url.clone(), p(&certs.ca)]);
        let (status, out, err) = run_bounded(&mut cmd, &dir, PEER_WAIT);
        assert!(status.success(), "{url}: {out}{err}");
        let mut want: Vec<String> = (0..3)
            .map(|i| format!("Server received from client: hop {i}"))
            .collect();
        want.push("100000".into());
        assert_eq!(out.lines().collect::<Vec<_>>(), want, "{url}");
    }
}

#[test]
fn plain_http_to_a_tls_port_gets_nginx_400_page() {
    let dir = temp_dir("tls-plain");
    let certs = make_certs(&dir);
    let backend = Backend::ok("never");
    let port = common::free_port();
    let _s = Sluice::start("tls-plain", &two_servers(&certs, port, backend.addr, ""));
    let resp = common::raw_exchange(
        ([127, 0, 0, 1], port).into(),
        b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(common::status_of(&resp), 400, "{text}");
    assert!(
        text.contains("The plain HTTP request was sent to HTTPS port"),
        "{text}"
    );
    assert_eq!(backend.count(), 0);
}
