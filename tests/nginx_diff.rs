//! Differential test of the HTTP proxy against real nginx (Debian's 1.22.1).
//!
//! Each case is data: an `http { }` body (templated with `{PORT}` for the
//! listen port and `{UP}` / `{DEAD}` for the recording upstream and a port
//! nobody listens on; an `upstream backend` naming `{UP}` is always there),
//! the raw requests to send, how the upstream answers, and what to compare.
//! The same text runs through nginx and sluice at once; every request goes to
//! both, and the test compares what the upstream received (request line,
//! headers in order, body) and what the client got (status, headers, body).
//!
//! Normalised before comparing, because they differ by design (see
//! docs/compat.md): `Date` and `Server`; the product name in error pages'
//! footer (`nginx` / `sluice`) and the `Content-Length` that follows from it;
//! the listen port (each server has its own); the case of header names
//! (hyper writes them in lower case); the order of response headers.
//!
//! A case whose difference is deliberate carries `known` with the reason:
//! it runs, its difference is printed, and it does not fail the test.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::backend::{Backend, Recorded, Reply};
use common::nginx::{diff_conf, exchange, log_text, ClientResponse, Nginx};
use common::{free_port, temp_dir, Sluice};

/// What a case compares.
#[derive(Clone, Copy, PartialEq)]
enum Cmp {
    Both,
    Upstream,
    Client,
}

struct Case {
    name: &'static str,
    http: String,
    reply: Reply,
    reqs: Vec<String>,
    cmp: Cmp,
    /// A documented, deliberate difference: the reason.
    known: Option<&'static str>,
    /// An access log (file under logs/) to compare line by line.
    log: Option<&'static str>,
}

impl Case {
    fn get(mut self, path: &str) -> Case {
        self.reqs.push(format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ));
        self
    }
    fn host(mut self, host: &str, path: &str) -> Case {
        self.reqs.push(format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ));
        self
    }
    fn raw(mut self, req: &str) -> Case {
        self.reqs.push(req.to_string());
        self
    }
    fn reply(mut self, r: Reply) -> Case {
        self.reply = r;
        self
    }
    fn cmp(mut self, c: Cmp) -> Case {
        self.cmp = c;
        self
    }
    fn known(mut self, why: &'static str) -> Case {
        self.known = Some(why);
        self
    }
    fn log(mut self, file: &'static str) -> Case {
        self.log = Some(file);
        self
    }
}

fn case(name: &'static str, http: impl Into<String>) -> Case {
    Case {
        name,
        http: http.into(),
        reply: up_reply(200, &[], "from upstream\n"),
        reqs: Vec::new(),
        cmp: Cmp::Both,
        known: None,
        log: None,
    }
}

/// One `server` on the case's port, named localhost, with `body`.
fn srv(body: &str) -> String {
    format!("server {{ listen 127.0.0.1:{{PORT}}; server_name localhost;\n{body}\n}}")
}

/// A location that proxies to the backend, marking itself in a header.
fn mark(loc: &str, tag: &str) -> String {
    format!("location {loc} {{ proxy_set_header X-Loc {tag}; proxy_pass http://backend; }}\n")
}

fn up_reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut h = vec![("Content-Type".to_string(), "text/plain".to_string())];
    h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Reply::Fixed(status, h, body.as_bytes().to_vec())
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();

    // ---- location order ----
    v.push(
        case(
            "location: the nginx docs example",
            srv(r#"
                location = / { return 200 "A\n"; }
                location / { return 200 "B\n"; }
                location /documents/ { return 200 "C\n"; }
                location ^~ /images/ { return 200 "D\n"; }
                location ~* \.(gif|jpg|jpeg)$ { return 200 "E\n"; }
            "#),
        )
        .get("/")
        .get("/index.html")
        .get("/documents/document.html")
        .get("/images/1.gif")
        .get("/documents/1.jpg")
        .get("/DOCUMENTS/1.JPG"),
    );
    v.push(
        case(
            "location: exact, longest prefix, regex in order, ^~",
            srv(&[
                mark("= /x", "exact"),
                mark("/x", "prefix-x"),
                mark("/x/long/", "prefix-long"),
                mark("^~ /x/stop/", "stop"),
                mark("~ /x/.*\\.php$", "re1"),
                mark("~ \\.php$", "re2"),
                mark("~* \\.PHP$", "re3"),
                mark("/", "root"),
            ]
            .concat()),
        )
        .get("/x")
        .get("/x/")
        .get("/xy")
        .get("/x/long/a")
        .get("/x/long/a.php")
        .get("/x/stop/a.php")
        .get("/y.php")
        .get("/y.PhP")
        .get("/z")
        .cmp(Cmp::Upstream),
    );
    v.push(
        case(
            "location: nested locations",
            srv(&format!(
                "location /a/ {{ proxy_set_header X-Loc a; proxy_pass http://backend;\n{}{}}}\n{}{}",
                mark("~ \\.php$", "a-php"),
                mark("/a/b/", "a-b"),
                mark("~ \\.html$", "html"),
                mark("/", "root"),
            )),
        )
        .get("/a/x")
        .get("/a/x.php")
        .get("/a/b/y")
        .get("/a/b/y.php")
        .get("/a/x.html")
        .get("/c.html")
        .cmp(Cmp::Upstream),
    );
    v.push(
        case(
            "location: no match is 404, /dir redirects to /dir/",
            srv(
                "location /dir/ { proxy_pass http://backend; }\nlocation = /exact { return 200 ok; }",
            ),
        )
        .get("/other")
        .get("/dir")
        .get("/dir?q=1")
        .get("/exact/"),
    );

    // ---- proxy_pass URI mapping ----
    let paths = [
        "/a/b%20c?x=1&y",
        "/a/%2F/x",
        "/a/../a/b",
        "/a//b",
        "/a/./b",
        "/a/b%41%7e",
        "/a/%C3%A9?%20",
        "/a/b+c;p=1",
        "/a",
    ];
    for (name, loc) in [
        (
            "proxy_pass: without URI part",
            "location /a { proxy_pass http://backend; }",
        ),
        (
            "proxy_pass: with URI part",
            "location /a/ { proxy_pass http://backend/z/; }\nlocation /a { proxy_pass http://backend/y; }",
        ),
        (
            "proxy_pass: URI part /",
            "location /a/ { proxy_pass http://backend/; }",
        ),
        (
            "proxy_pass: regex location",
            "location ~ ^/a { proxy_pass http://backend; }",
        ),
        (
            "proxy_pass: merge_slashes off",
            "merge_slashes off; location /a/ { proxy_pass http://backend/z/; }",
        ),
    ] {
        let mut c = case(name, srv(loc)).cmp(Cmp::Upstream);
        for p in paths {
            c = c.get(p);
        }
        v.push(c);
    }

    // ---- proxy_set_header ----
    v.push(
        case(
            "proxy_set_header: inheritance http -> server -> location",
            r#"proxy_set_header X-Level http;
            proxy_set_header X-Http yes;
            server { listen 127.0.0.1:{PORT}; server_name a.test;
                proxy_set_header X-Level server;
                location /s/ { proxy_pass http://backend; }
                location /l/ { proxy_set_header X-Level location; proxy_pass http://backend; }
            }
            server { listen 127.0.0.1:{PORT}; server_name b.test;
                location / { proxy_pass http://backend; }
                location /l/ { proxy_set_header X-Only loc; proxy_pass http://backend; }
            }"#,
        )
        .host("a.test", "/s/1")
        .host("a.test", "/l/1")
        .host("b.test", "/x")
        .host("b.test", "/l/1")
        .cmp(Cmp::Upstream),
    );
    v.push(
        case(
            "proxy_set_header: empty value removes, overrides replace client headers",
            srv(r#"location / {
                proxy_set_header User-Agent "";
                proxy_set_header Accept-Encoding "";
                proxy_set_header X-Empty $http_x_nothing;
                proxy_set_header Host $host:1;
                proxy_set_header Connection "";
                proxy_set_header X-Set "v1";
                proxy_pass http://backend;
            }"#),
        )
        .raw("GET /h HTTP/1.1\r\nHost: localhost\r\nUser-Agent: ua\r\nAccept-Encoding: gzip\r\nX-Set: client\r\nX-Keep: k\r\nConnection: close\r\n\r\n")
        .cmp(Cmp::Upstream),
    );
    v.push(
        case(
            "headers: order of set and client headers, duplicates",
            srv(r#"location / {
                proxy_set_header X-B b;
                proxy_set_header X-A a;
                proxy_pass http://backend;
            }"#),
        )
        .raw("GET /o HTTP/1.1\r\nX-Z: 1\r\nHost: localhost\r\nX-Y: 2\r\nCookie: a=1\r\nX-Z: 3\r\nCookie: b=2\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        .cmp(Cmp::Upstream)
        .known("hyper's HeaderMap groups repeated header names: a repeated client header reaches the upstream right after its first occurrence"),
    );
    v.push(
        case(
            "headers: order without duplicates",
            srv(r#"location / {
                proxy_set_header X-B b;
                proxy_set_header X-A a;
                proxy_pass http://backend;
            }"#),
        )
        .raw("GET /o HTTP/1.1\r\nX-Z: 1\r\nHost: localhost\r\nX-Y: 2\r\nCookie: a=1\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        .cmp(Cmp::Upstream),
    );
    v.push(
        case(
            "headers: hop-by-hop request headers",
            srv("location / { proxy_pass http://backend; }"),
        )
        .raw("GET /hop HTTP/1.1\r\nHost: localhost\r\nConnection: close, X-Named\r\nKeep-Alive: 300\r\nTE: trailers\r\nUpgrade: foo\r\nProxy-Connection: keep-alive\r\nX-Named: n\r\nExpect: x\r\nTrailer: X-T\r\n\r\n")
        .cmp(Cmp::Upstream),
    );
    v.push(
        case(
            "headers: hop-by-hop with proxy_http_version 1.1 and Upgrade set",
            srv(r#"location / { proxy_http_version 1.1;
                proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade";
                proxy_pass http://backend; }"#),
        )
        .raw("GET /hop HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nUpgrade: foo\r\n\r\n")
        .cmp(Cmp::Upstream),
    );
    v.push(
        case(
            "headers: response hop-by-hop and hidden headers",
            srv("location / { proxy_pass http://backend; }\nlocation /h/ { proxy_hide_header X-Up; proxy_pass_header X-Pad; proxy_pass http://backend; }"),
        )
        .reply(up_reply(
            200,
            &[
                ("X-Up", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "x"),
                ("Upgrade", "h2c"),
                ("Trailer", "X-T"),
                ("Connection", "X-Listed"),
                ("X-Listed", "1"),
                ("TE", "trailers"),
                ("X-Pad", "p"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("Server", "backend"),
                ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ],
            "body\n",
        ))
        .get("/")
        .get("/h/")
        .cmp(Cmp::Client),
    );

    v.push(
        case(
            "headers: X-Accel-Redirect from the upstream",
            srv("location / { proxy_pass http://backend; }\nlocation /x { return 200 \"internal\\n\"; }"),
        )
        .reply(up_reply(200, &[("X-Accel-Redirect", "/x")], "body\n"))
        .get("/")
        .cmp(Cmp::Client)
        .known("sluice has no internal redirects yet: X-Accel-Redirect is hidden from the client but not followed"),
    );

    // ---- map ----
    v.push(
        case(
            "map: exact, regex with captures, hostnames, default",
            r#"map $http_x_k $mk {
                default d;
                exact e;
                ~^re(?<num>\d+)$ r$1-$num;
                ~*^CASE ci;
            }
            map $http_x_h $mh {
                hostnames;
                default none;
                example.com exact;
                *.example.com wild;
                www.example.* tail;
                .dot.com dot;
            }
            server { listen 127.0.0.1:{PORT}; server_name localhost;
                location / { proxy_set_header X-Mk $mk; proxy_set_header X-Mh $mh; proxy_pass http://backend; }
            }"#,
        )
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\nX-K: exact\r\nX-H: example.com\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\nX-K: re42\r\nX-H: a.example.com\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\nX-K: case-y\r\nX-H: www.example.org\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\nX-K: other\r\nX-H: dot.com\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\nX-H: x.dot.com\r\nConnection: close\r\n\r\n")
        .cmp(Cmp::Upstream),
    );

    // ---- variables ----
    v.push(
        case(
            "variables in proxy_set_header",
            srv(r#"location / {
                proxy_set_header X-Host $host;
                proxy_set_header X-Remote $remote_addr;
                proxy_set_header X-Fwd $proxy_add_x_forwarded_for;
                proxy_set_header X-Request-Uri $request_uri;
                proxy_set_header X-Uri $uri;
                proxy_set_header X-Args $args;
                proxy_set_header X-Is-Args $is_args;
                proxy_set_header X-Arg-A $arg_a;
                proxy_set_header X-Scheme $scheme;
                proxy_set_header X-Server-Name $server_name;
                proxy_set_header X-Server-Port $server_port;
                proxy_set_header X-Ua $http_user_agent;
                proxy_set_header X-Custom $http_x_custom_thing;
                proxy_set_header X-Method $request_method;
                proxy_set_header X-Request $request;
                proxy_set_header X-Proto $server_protocol;
                proxy_set_header X-Proxy-Host $proxy_host;
                proxy_set_header X-Cookie-C $cookie_c;
                proxy_set_header X-Content-Length $content_length;
                proxy_pass http://backend;
            }"#),
        )
        .raw("GET /p/q%20r/../s?a=1&b=%20 HTTP/1.1\r\nHost: LocalHost:8080\r\nUser-Agent: ua/1\r\nX-Custom-Thing: c\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: a=1; c=3\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.0\r\n\r\n")
        .cmp(Cmp::Upstream),
    );

    // ---- server_name ----
    let names = r#"
        server { listen 127.0.0.1:{PORT}; server_name example.com; return 200 "exact $host $server_name\n"; }
        server { listen 127.0.0.1:{PORT}; server_name *.wild.com; return 200 "lead $host $server_name\n"; }
        server { listen 127.0.0.1:{PORT}; server_name tail.*; return 200 "tail $host $server_name\n"; }
        server { listen 127.0.0.1:{PORT}; server_name ~^(?<sub>[a-z]+)\.re\.com$; return 200 "re $sub $1 $host $server_name\n"; }
        server { listen 127.0.0.1:{PORT} default_server; server_name dflt; return 200 "default $host $server_name\n"; }
        server { listen 127.0.0.1:{PORT}; server_name first; return 200 "first $host\n"; }
    "#;
    v.push(
        case(
            "server_name: exact, wildcards, regex with captures, default_server",
            names,
        )
        .host("example.com", "/")
        .host("EXAMPLE.com.", "/")
        .host("a.b.wild.com", "/")
        .host("wild.com", "/")
        .host("tail.org", "/")
        .host("abc.re.com", "/")
        .host("abc.re.com:99", "/")
        .host("nomatch", "/")
        .raw("GET / HTTP/1.0\r\n\r\n")
        .raw("GET http://example.com/x?y HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n")
        .raw("GET http://abc.re.com:81/x HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"),
    );
    v.push(
        case(
            "absolute-form request target, proxied",
            srv("location / { proxy_set_header X-Host $host; proxy_set_header X-Ru $request_uri; proxy_pass http://backend; }"),
        )
        .raw("GET http://localhost/x/y?z=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n")
        .raw("GET http://LOCALHOST:123/a%20b HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"),
    );

    // ---- bad requests and limits ----
    v.push(
        case(
            "400: bad requests",
            srv("location / { proxy_pass http://backend; }"),
        )
        .raw("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .raw("GET /a%zz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .raw("GET /a/../../x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\nHost: other\r\nConnection: close\r\n\r\n")
        .raw("GET /%00 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );
    v.push(
        case(
            "400: requests hyper's parser refuses",
            srv("location / { proxy_pass http://backend; }"),
        )
        .raw("GET\r\n\r\n")
        .raw("GET / HTTP/2.0\r\nHost: localhost\r\n\r\n")
        .raw("G@T / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: \x01x\r\nConnection: close\r\n\r\n")
        .known("hyper's parser answers these itself with a bare 400 (no page, no Server header) before sluice sees them: a malformed request line, an unknown HTTP version (nginx: 505), an invalid or repeated Content-Length, a control character in a header value (nginx passes it)"),
    );
    v.push(
        case(
            "413: client_max_body_size",
            srv("client_max_body_size 10; location / { proxy_pass http://backend; }"),
        )
        .raw("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\nConnection: close\r\n\r\n01234567890123456789")
        .raw("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789"),
    );
    v.push(
        case(
            "request bodies: Content-Length and chunked",
            srv("location / { proxy_pass http://backend; }\nlocation /v11/ { proxy_http_version 1.1; proxy_pass http://backend; }"),
        )
        .raw("POST /cl HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nhello")
        .raw("POST /ch HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .raw("PUT /empty HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    v.push(
        case(
            "request bodies: chunked to an HTTP/1.1 upstream",
            srv("location / { proxy_http_version 1.1; proxy_pass http://backend; }"),
        )
        .raw("POST /v11/ch HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .cmp(Cmp::Upstream)
        .known("sluice streams a chunked request body to an HTTP/1.1 upstream chunked; nginx (proxy_request_buffering on) reads it whole and sends Content-Length"),
    );
    v.push(
        case(
            "414: request line longer than large_client_header_buffers",
            srv("large_client_header_buffers 2 1k; location / { proxy_pass http://backend; }"),
        )
        .raw(&format!(
            "GET /{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            "a".repeat(1500)
        )),
    );
    v.push(
        case(
            "494: header longer than large_client_header_buffers",
            srv("large_client_header_buffers 2 1k; location / { proxy_pass http://backend; }"),
        )
        .raw(&format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "b".repeat(1500)
        )),
    );
    v.push(
        case(
            "494: request head larger than all large_client_header_buffers",
            srv("large_client_header_buffers 2 1k; location / { proxy_pass http://backend; }"),
        )
        .raw(&format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\n{}Connection: close\r\n\r\n",
            (0..12).map(|i| format!("X-H{i}: {}\r\n", "h".repeat(900))).collect::<String>()
        ))
        .known("a request head larger than hyper's read buffer (the larger of 8 KiB and large_client_header_buffers' total) is refused by hyper with a bare 431 and no page; nginx answers 494 (400 Request Header Or Cookie Too Large) once the head outgrows its buffers"),
    );
    v.push(
        case(
            "502: connection refused",
            srv("location / { proxy_pass http://{DEAD}; }"),
        )
        .get("/"),
    );
    v.push(
        case(
            "502: upstream closes without answering",
            srv("location / { proxy_pass http://backend; }"),
        )
        .reply(Reply::Close)
        .get("/"),
    );
    v.push(
        case(
            "504: proxy_read_timeout",
            srv("location / { proxy_read_timeout 1s; proxy_pass http://backend; }"),
        )
        .reply(Reply::Hang)
        .get("/"),
    );
    v.push(
        case(
            "408: client_header_timeout",
            srv("client_header_timeout 1s; location / { proxy_pass http://backend; }"),
        )
        .raw("GET / HTTP/1.1\r\nHost: localhost\r\n"),
    );

    // ---- redirects ----
    let loc_up = "http://backend/a/x?q=1";
    for (name, loc) in [
        ("proxy_redirect default", "location /a/ { proxy_pass http://backend; }"),
        ("proxy_redirect default with URI part", "location /b/ { proxy_pass http://backend/a/; }"),
        ("proxy_redirect off", "location /a/ { proxy_redirect off; proxy_pass http://backend; }"),
        (
            "proxy_redirect custom",
            "location /a/ { proxy_redirect http://backend/a/ /new/; proxy_pass http://backend; }",
        ),
        (
            "proxy_redirect regex",
            "location /a/ { proxy_redirect ~^http://([^/]+)/a/(.*)$ http://$host/re/$1/$2; proxy_pass http://backend; }",
        ),
        (
            "proxy_redirect to a relative path, absolute_redirect off",
            "location /a/ { absolute_redirect off; proxy_redirect http://backend/ /; proxy_pass http://backend; }",
        ),
    ] {
        v.push(
            case(name, srv(loc))
                .reply(up_reply(
                    302,
                    &[("Location", loc_up), ("Refresh", "5; url=http://backend/a/r")],
                    "",
                ))
                .get("/a/1")
                .get("/b/1")
                .cmp(Cmp::Client),
        );
    }
    v.push(
        case(
            "return: redirects and relative Location",
            r#"server { listen 127.0.0.1:{PORT}; server_name localhost;
                location /r1 { return 301 /rel?x; }
                location /r2 { return 302 http://abs.test/p; }
                location /r3 { return 307 $request_uri/more; }
                location /r4 { absolute_redirect off; return 301 /rel; }
                location /r5 { port_in_redirect off; return 301 /rel; }
                location /r6 { server_name_in_redirect on; return 301 /rel; }
                location /r7 { return 302 "/$host"; }
            }"#,
        )
        .get("/r1")
        .get("/r2")
        .get("/r3?a")
        .get("/r4")
        .get("/r5")
        .host("Other.Test", "/r6")
        .host("Other.Test", "/r7"),
    );
    v.push(
        case(
            "return: codes and texts, error pages",
            r#"server { listen 127.0.0.1:{PORT}; server_name localhost;
                location /t { return 200 "text $uri\n"; }
                location /e { return 404; }
                location /f { return 500 "oops"; }
                location /n { return 204; }
                location /g { return 403; }
                location /tok { server_tokens off; return 502; }
                location /d { default_type application/json; return 200 "{}"; }
            }"#,
        )
        .get("/t")
        .get("/e")
        .get("/f")
        .get("/n")
        .get("/g")
        .get("/tok")
        .get("/d")
        .raw("HEAD /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );

    // ---- client framing ----
    v.push(
        case(
            "client protocol: HTTP/1.0, keep-alive, HEAD",
            srv("location / { proxy_pass http://backend; }"),
        )
        .raw("GET /10 HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .raw("GET /10ka HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n")
        .raw("GET /11ka HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .raw("HEAD /head HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    );

    // ---- access log: the seed's log_access format ----
    v.push(
        case(
            "access log: the seed's log_access format",
            r#"log_format log_access  '$remote_addr - $remote_user [$time_local] "$request" "$request_time" "$upstream_response_time"'
              '$status $body_bytes_sent "$http_referer" '
              '"$http_user_agent" $http_x_forwarded_for $host $hostname' ;
            server { listen 127.0.0.1:{PORT}; server_name localhost;
                access_log logs/seed.log log_access;
                location / { proxy_pass http://backend; }
                location /ret { return 200 "r\n"; }
            }"#,
        )
        .raw("GET /a?b=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: t \"q\"\r\nReferer: http://r/\r\nX-Forwarded-For: 10.1.1.1\r\nConnection: close\r\n\r\n")
        .raw("GET /ret HTTP/1.0\r\n\r\n")
        .raw("GET /%C3%A9 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: caf\u{e9} \\ x\r\nConnection: close\r\n\r\n")
        .log("seed.log"),
    );

    v
}

// ---------------------------------------------------------------- runner

/// Both servers of a case, normalised, for one request.
#[derive(Debug, PartialEq)]
struct View {
    upstream: Vec<String>,
    client: Vec<String>,
}

fn norm_port(s: &str, port: u16) -> String {
    // Ephemeral ports have 4-5 digits; nothing else in a case does.
    s.replace(&port.to_string(), "PORT")
}

fn upstream_view(recs: &[Recorded], port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for r in recs {
        out.push(format!("> {}", norm_port(&r.request_line, port)));
        for (k, v) in &r.headers {
            out.push(format!(
                ">   {}: {}",
                k.to_ascii_lowercase(),
                norm_port(v, port)
            ));
        }
        out.push(format!(">   body {:?}", String::from_utf8_lossy(&r.body)));
    }
    out
}

/// The product's name on error pages, either server's.
fn norm_body(body: &[u8], port: u16) -> String {
    let text = String::from_utf8_lossy(body);
    let mut t = norm_port(&text, port);
    for product in ["nginx/1.22.1", "nginx", "sluice/0.1.0", "sluice"] {
        t = t.replace(
            &format!("<hr><center>{product}</center>"),
            "<hr><center>PRODUCT</center>",
        );
    }
    t
}

/// The `Connection` value that only restates the protocol's default for
/// this request (nginx writes it, hyper leaves it out).
fn default_connection(req: &str) -> &'static str {
    let head = req.to_ascii_lowercase();
    let http10 = head.lines().next().is_some_and(|l| l.ends_with("http/1.0"));
    if http10 && !head.contains("\r\nconnection: keep-alive") {
        "close"
    } else if !http10 && !head.contains("\r\nconnection: close") {
        "keep-alive"
    } else {
        ""
    }
}

fn client_view(r: &ClientResponse, port: u16, req: &str) -> Vec<String> {
    let body = norm_body(&r.body, port);
    let implied = default_connection(req);
    let mut headers: Vec<String> = r
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("date") && !k.eq_ignore_ascii_case("server"))
        .filter(|(k, v)| !(k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case(implied)))
        .map(|(k, v)| {
            let k = k.to_ascii_lowercase();
            let v = if k == "content-length" {
                body.len().to_string()
            } else {
                norm_port(v, port)
            };
            format!("<   {k}: {v}")
        })
        .collect();
    headers.sort();
    let mut out = vec![format!("< {} {}", r.status, r.reason)];
    out.extend(headers);
    out.push(format!("<   body {body:?}"));
    out
}

fn take_new(b: &Backend, seen: &mut usize) -> Vec<Recorded> {
    let all = b.requests.lock().expect("lock");
    let new = all[*seen..].to_vec();
    *seen = all.len();
    new
}

/// The access log line with the times blanked.
fn norm_log_line(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    // [$time_local]
    if let (Some(a), Some(b)) = (rest.find('['), rest.find(']')) {
        out.push_str(&rest[..a]);
        out.push_str("[TIME]");
        rest = &rest[b + 1..];
    }
    // "$request_time" "$upstream_response_time": the two quoted fields after
    // the request, numbers in either.
    let mut fields: Vec<String> = Vec::new();
    for part in rest.split('"') {
        fields.push(part.to_string());
    }
    for f in fields.iter_mut() {
        if !f.is_empty()
            && f.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == ',' || c == ' ' || c == '-')
            && f.contains('.')
        {
            *f = "T".into();
        }
    }
    out.push_str(&fields.join("\""));
    out
}

struct Outcome {
    name: &'static str,
    known: Option<&'static str>,
    diffs: Vec<String>,
}

fn run_case(c: &Case) -> Outcome {
    let backend = Backend::start(c.reply.clone());
    let dead = free_port();
    let (pn, ps) = (free_port(), free_port());
    let body = |port: u16| {
        format!(
            "upstream backend {{ server {}; }}\n{}",
            backend.addr,
            c.http
                .replace("{PORT}", &port.to_string())
                .replace("{UP}", &backend.addr.to_string())
                .replace("{DEAD}", &format!("127.0.0.1:{dead}"))
        )
    };
    let tag = c
        .name
        .chars()
        .filter(|ch| ch.is_ascii_alphanumeric())
        .take(20)
        .collect::<String>();
    let mut nginx = Nginx::spawn(
        temp_dir(&format!("ngx-{tag}")),
        &diff_conf("nginx.pid", &body(pn)),
    );
    let sprefix = temp_dir(&format!("slc-{tag}"));
    std::fs::create_dir_all(sprefix.join("tmp")).ok();
    let mut sluice = Sluice::start_in(sprefix, &diff_conf("sluice.pid", &body(ps)));
    nginx.ready("nginx.pid");

    let mut diffs = Vec::new();
    let mut seen = 0usize;
    let na: SocketAddr = ([127, 0, 0, 1], pn).into();
    let sa: SocketAddr = ([127, 0, 0, 1], ps).into();
    for req in &c.reqs {
        let head = req.starts_with("HEAD ");
        let rn = exchange(na, req.as_bytes(), head);
        let un = take_new(&backend, &mut seen);
        let rs = exchange(sa, req.as_bytes(), head);
        let us = take_new(&backend, &mut seen);
        let vn = View {
            upstream: upstream_view(&un, pn),
            client: client_view(&rn, pn, req),
        };
        let vs = View {
            upstream: upstream_view(&us, ps),
            client: client_view(&rs, ps, req),
        };
        let mut lines = Vec::new();
        if c.cmp != Cmp::Client && vn.upstream != vs.upstream {
            lines.push(side_by_side("upstream got", &vn.upstream, &vs.upstream));
        }
        if c.cmp != Cmp::Upstream && vn.client != vs.client {
            lines.push(side_by_side("client got", &vn.client, &vs.client));
        }
        if !lines.is_empty() {
            diffs.push(format!(
                "request {:?}\n{}",
                req.chars().take(120).collect::<String>(),
                lines.join("\n")
            ));
        }
    }
    if let Some(file) = c.log {
        // Both servers log when the response is done; the lines are there by
        // the time the next request is served, but the writer may batch, so
        // stop sluice first (it flushes on exit).
        sluice.stop();
        let ln: Vec<String> = log_text(&nginx.prefix, file)
            .lines()
            .map(norm_log_line)
            .collect();
        let ls: Vec<String> = log_text(&sluice.prefix, file)
            .lines()
            .map(norm_log_line)
            .collect();
        if ln.len() != c.reqs.len() {
            diffs.push(format!(
                "nginx logged {} lines for {} requests",
                ln.len(),
                c.reqs.len()
            ));
        }
        if ln != ls {
            diffs.push(side_by_side("access log", &ln, &ls));
        }
    }
    if c.known.is_none() && !diffs.is_empty() {
        // The test fails after every case ran: keep this case's logs.
        sluice.prefix.keep();
        nginx.prefix.keep();
    }
    drop(sluice);
    drop(nginx);
    Outcome {
        name: c.name,
        known: c.known,
        diffs,
    }
}

fn side_by_side(what: &str, n: &[String], s: &[String]) -> String {
    let mut out = format!("  {what}:\n");
    let len = n.len().max(s.len());
    for i in 0..len {
        let a = n.get(i).map_or("", String::as_str);
        let b = s.get(i).map_or("", String::as_str);
        let mark = if a == b { " " } else { "!" };
        out.push_str(&format!("   {mark} nginx:  {a}\n   {mark} sluice: {b}\n"));
    }
    out
}

#[test]
fn sluice_matches_nginx() {
    let queue: Arc<Mutex<VecDeque<Case>>> = Arc::new(Mutex::new(cases().into_iter().collect()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (q, r) = (queue.clone(), results.clone());
            std::thread::spawn(move || loop {
                let Some(c) = q.lock().expect("lock").pop_front() else {
                    return;
                };
                let out = run_case(&c);
                r.lock().expect("lock").push(out);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let results = results.lock().expect("lock");
    let mut failed = Vec::new();
    for o in results.iter() {
        match (o.known, o.diffs.is_empty()) {
            (None, true) => eprintln!("ok       {}", o.name),
            (Some(_), true) => {
                eprintln!("ok       {} (a known difference no longer shows)", o.name)
            }
            (Some(why), false) => {
                eprintln!("known    {}: {why}\n{}", o.name, o.diffs.join("\n"))
            }
            (None, false) => {
                eprintln!("DIFFERS  {}\n{}", o.name, o.diffs.join("\n"));
                failed.push(o.name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "sluice differs from nginx in: {failed:#?}"
    );
}
