//! Parses and compiles a generated configuration with 10,000 `server` blocks
//! and 100,000 `location`s, and prints how long each step took.
//!
//! `cargo run --release --example conf_parse [servers] [locations per server]`

use std::fmt::Write as _;
use std::time::Instant;

fn generate(servers: usize, per_server: usize) -> String {
    let mut c = String::with_capacity(servers * per_server * 80);
    c.push_str("worker_processes 2;\nevents { worker_connections 1024; }\nhttp {\n");
    c.push_str("    log_format main '$remote_addr [$time_local] \"$request\" $status';\n");
    c.push_str("    map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n");
    c.push_str("    upstream backend { server 127.0.0.1:9000; server 127.0.0.1:9001 weight=2; }\n");
    for s in 0..servers {
        let _ = writeln!(
            c,
            "    server {{\n        listen 127.0.0.1:{};\n        server_name s{s}.example.com www.s{s}.example.com;",
            10000 + s % 50
        );
        for l in 0..per_server {
            let head = match l % 10 {
                0 => format!("= /exact/{l}"),
                1 => format!("~ ^/re{l}/(?<id>[0-9]+)$"),
                2 => format!("^~ /static/{l}/"),
                _ => format!("/p{l}/"),
            };
            let body = if l % 2 == 0 {
                "proxy_pass http://backend; proxy_http_version 1.1; \
                 proxy_set_header Upgrade $http_upgrade; \
                 proxy_set_header Connection $connection_upgrade;"
            } else {
                "return 200 \"ok $uri\";"
            };
            let _ = writeln!(c, "        location {head} {{ {body} }}");
        }
        c.push_str("    }\n");
    }
    c.push_str("}\n");
    c
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let servers = args.next().and_then(Result::ok).unwrap_or(10_000);
    let per_server = args.next().and_then(Result::ok).unwrap_or(10);
    let text = generate(servers, per_server);
    let dir = std::env::temp_dir().join(format!("sluice-bench-conf-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf")).expect("temp dir");
    std::fs::write(dir.join("conf/nginx.conf"), &text).expect("write config");
    let opts = sluice::conf::LoadOptions {
        prefix: dir.clone(),
        conf_file: "conf/nginx.conf".into(),
        global_directives: None,
    };
    let start = Instant::now();
    let result = sluice::conf::load(&opts);
    let elapsed = start.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(config) => {
            let http = config.http.as_ref().map_or(0, |h| h.servers.len());
            println!(
                "{servers} servers, {} locations, {} bytes: parsed and compiled in {:.3} s ({} servers in the model)",
                servers * per_server,
                text.len(),
                elapsed.as_secs_f64(),
                http
            );
        }
        Err(e) => {
            eprintln!("load failed: {e}");
            std::process::exit(1);
        }
    }
}
