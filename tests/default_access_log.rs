//! Without any `access_log`, requests are logged to logs/access.log in
//! `combined`, as nginx does; `access_log off` still silences a level.

mod common;

use common::{main_block, raw_exchange, status_of, wait_until, Sluice};

#[test]
fn requests_go_to_logs_access_log_in_combined() {
    let port = common::free_port();
    let conf = format!(
        "{}http {{\n server {{\n  listen 127.0.0.1:{port};\n  location / {{ return 200 \"ok\"; }}\n  location /quiet {{ access_log off; return 204; }}\n }}\n}}\n",
        main_block()
    );
    let s = Sluice::start("default-access-log", &conf);
    let addr = ([127, 0, 0, 1], port).into();
    let q = raw_exchange(
        addr,
        b"GET /quiet HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&q), 204);
    let r = raw_exchange(
        addr,
        b"GET /hello HTTP/1.1\r\nHost: a\r\nUser-Agent: probe/1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 200);
    let log = s.path("logs/access.log");
    wait_until("the access log line", || {
        common::read_file(&log).contains("/hello")
    });
    let text = common::read_file(&log);
    let line = text.lines().last().unwrap_or_default();
    assert!(line.starts_with("127.0.0.1 - - ["), "not combined: {line}");
    assert!(
        line.ends_with("\"GET /hello HTTP/1.1\" 200 2 \"-\" \"probe/1\""),
        "not combined: {line}"
    );
    assert!(
        !text.contains("/quiet"),
        "access_log off was ignored: {text}"
    );
}
