//! The embedded default: the second guide's setup, the proxy on
//! 127.0.0.1:8020 in front of the built-in echo server on 127.0.0.1:8010.

use std::path::Path;

use crate::conf::{self, ConfError, Config};

/// The configuration the demo runs, in nginx syntax.
pub const DEMO_CONF: &str = r#"# sluice's embedded demo: the nginx WebSocket guide's setup.
worker_processes 1;
error_log stderr notice;

events {
    worker_connections 1024;
}

http {
    access_log off;

    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }

    upstream websocket {
        server 127.0.0.1:8010;
    }

    server {
        listen 127.0.0.1:8020;
        location / {
            proxy_pass http://websocket;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
        }
    }
}
"#;

/// Where the demo's echo backend listens.
pub const ECHO_ADDR: &str = "127.0.0.1:8010";

pub fn config(prefix: &Path) -> Result<Config, ConfError> {
    let mut c = conf::load_str(DEMO_CONF, "embedded demo", prefix)?;
    // The demo must not write files into whatever directory it is started from.
    c.main.pid = std::env::temp_dir().join(format!("sluice-demo-{}.pid", std::process::id()));
    Ok(c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_config_compiles() {
        let c = super::config(std::path::Path::new(".")).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.http.unwrap().servers.len(), 1);
    }
}
