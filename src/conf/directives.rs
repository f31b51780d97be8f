//! The directive table: for every directive sluice knows, where it may appear,
//! how many arguments it takes, whether it opens a block, and whether sluice
//! acts on it. Validation of those properties is generic; the compile step for
//! each context gives the values their meaning. `docs/compat.md` is checked
//! against this table by a test.

/// Contexts, as nginx's `NGX_*_CONF` flags.
pub mod ctx {
    pub const MAIN: u16 = 1;
    pub const EVENTS: u16 = 1 << 1;
    pub const HTTP: u16 = 1 << 2;
    pub const SERVER: u16 = 1 << 3;
    pub const LOCATION: u16 = 1 << 4;
    pub const UPSTREAM: u16 = 1 << 5;
    /// `if` inside a `location`.
    pub const LIF: u16 = 1 << 6;
    /// `if` inside a `server`.
    pub const SIF: u16 = 1 << 7;
    pub const LIMIT_EXCEPT: u16 = 1 << 8;
    pub const HSL: u16 = HTTP | SERVER | LOCATION;
    pub const HS: u16 = HTTP | SERVER;
    pub const SL: u16 = SERVER | LOCATION;
}

use ctx::*;

/// How many arguments a directive takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Between `min` and `max` arguments, inclusive.
    Range(u8, u8),
    /// At least this many.
    AtLeast(u8),
    /// `on` or `off`.
    Flag,
}

/// What sluice does with a directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Acts as in nginx.
    Supported,
    /// Acts, with a difference that docs/compat.md explains.
    Differs(&'static str),
    /// Accepted and validated, but has no effect; a `[warn]` at load says so.
    NoEffect(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub ctx: u16,
    pub arity: Arity,
    pub block: bool,
    pub status: Status,
}

const fn d(name: &'static str, ctx: u16, arity: Arity, status: Status) -> Spec {
    Spec {
        name,
        ctx,
        arity,
        block: false,
        status,
    }
}

const fn b(name: &'static str, ctx: u16, arity: Arity, status: Status) -> Spec {
    Spec {
        name,
        ctx,
        arity,
        block: true,
        status,
    }
}

use Arity::{AtLeast, Flag, Range};
use Status::{Differs, NoEffect, Supported};

const fn n(k: u8) -> Arity {
    Range(k, k)
}

const OK: Status = Supported;
/// Performance knobs of nginx's own I/O model that sluice's design makes moot.
const MOOT_IO: Status = NoEffect("sluice's I/O model does not use this knob");
const NO_FASTCGI: Status = NoEffect("sluice has no FastCGI client; accepted so configs load");
const NO_CACHE: Status = NoEffect("sluice has no proxy cache yet");
/// Where nginx spills a response to disk, sluice waits for the client.
const NO_TEMP_FILES: Status = NoEffect(
    "sluice never writes responses to temporary files; beyond its memory buffers the upstream waits",
);
const NO_STATIC: Status = NoEffect("sluice does not serve static files yet");
const NO_HASH: Status = NoEffect("sluice's lookup tables size themselves");
const NO_CLIENT_CERTS: Status = NoEffect(
    "client certificates are not implemented (ssl_verify_client other than off is refused at load)",
);
const NO_STAPLING: Status = NoEffect("OCSP stapling is not implemented");
const NO_PUSH: Status =
    NoEffect("HTTP/2 server push is not implemented (nginx 1.25.1 dropped it too)");
const LATER_REWRITE: Status = NoEffect("the rewrite module (except return) is not implemented yet");
const LATER_ACCESS: Status = NoEffect("access control and limits are not implemented yet");
const LATER_OPS: Status = NoEffect("process management is not implemented yet");

/// Every directive sluice recognises.
pub static DIRECTIVES: &[Spec] = &[
    // Core, main context.
    d(
        "user",
        MAIN,
        Range(1, 2),
        NoEffect("sluice runs as the user that starts it"),
    ),
    d(
        "worker_processes",
        MAIN,
        n(1),
        Differs("sets worker threads of one process"),
    ),
    d(
        "worker_cpu_affinity",
        MAIN,
        AtLeast(1),
        NoEffect("use taskset or systemd CPUAffinity"),
    ),
    d("worker_rlimit_nofile", MAIN, n(1), OK),
    d(
        "worker_priority",
        MAIN,
        n(1),
        NoEffect("use nice or systemd Nice"),
    ),
    d("worker_shutdown_timeout", MAIN, n(1), OK),
    // sluice extensions (see docs/compat.md).
    d("busy_poll", MAIN, n(1), OK),
    d("websocket_drain_delay", MAIN, n(1), OK),
    d("websocket_drain_window", MAIN, n(1), OK),
    d("websocket_drain_on_reload", MAIN, Flag, OK),
    d(
        "working_directory",
        MAIN,
        n(1),
        NoEffect("sluice writes no core dumps of its own"),
    ),
    d(
        "error_log",
        MAIN | HSL,
        AtLeast(1),
        Differs("one error log; levels apply process-wide"),
    ),
    d("pid", MAIN, n(1), OK),
    d(
        "daemon",
        MAIN,
        Flag,
        Differs("default off (nginx: on); with on, the command returns once the server is ready"),
    ),
    d(
        "master_process",
        MAIN,
        Flag,
        NoEffect("sluice is one process with worker threads"),
    ),
    d("timer_resolution", MAIN, n(1), MOOT_IO),
    d(
        "pcre_jit",
        MAIN,
        Flag,
        NoEffect("sluice's regex engine compiles patterns natively"),
    ),
    d("thread_pool", MAIN, Range(2, 3), MOOT_IO),
    d("lock_file", MAIN, n(1), MOOT_IO),
    d(
        "env",
        MAIN,
        n(1),
        NoEffect("sluice does not filter its environment"),
    ),
    d(
        "load_module",
        MAIN,
        n(1),
        NoEffect("sluice has no dynamic modules"),
    ),
    d("ssl_engine", MAIN, n(1), NoEffect("rustls has no OpenSSL engines")),
    b("events", MAIN, n(0), OK),
    b("http", MAIN, n(0), OK),
    // events {}
    d("worker_connections", EVENTS, n(1), OK),
    d("use", EVENTS, n(1), NoEffect("sluice always uses epoll")),
    d("multi_accept", EVENTS, Flag, MOOT_IO),
    d("accept_mutex", EVENTS, Flag, MOOT_IO),
    d("accept_mutex_delay", EVENTS, n(1), MOOT_IO),
    d("worker_aio_requests", EVENTS, n(1), MOOT_IO),
    // http core
    b("server", HTTP, n(0), OK),
    b("location", SERVER | LOCATION, Range(1, 2), OK),
    b("types", HSL, n(0), Differs("sets the Content-Type of return texts; sluice serves no static files yet")),
    b("map", HTTP, n(2), OK),
    b("upstream", HTTP, n(1), OK),
    b("if", SERVER | LOCATION, AtLeast(1), LATER_REWRITE),
    b("limit_except", LOCATION, AtLeast(1), LATER_ACCESS),
    d("listen", SERVER, AtLeast(1), Differs("ssl terminates TLS (rustls); http2 serves HTTP/2 (ALPN h2 with ssl, h2c prior knowledge and HTTP/1.1 side by side without)")),
    d("server_name", SERVER, AtLeast(1), OK),
    d("default_type", HSL | LIF, n(1), OK),
    d("log_format", HTTP, AtLeast(2), OK),
    d("access_log", HSL | LIF | LIMIT_EXCEPT, AtLeast(1), OK),
    d("open_log_file_cache", HSL, Range(1, 4), MOOT_IO),
    d("log_not_found", HSL, Flag, NO_STATIC),
    d(
        "log_subrequest",
        HSL,
        Flag,
        NoEffect("sluice makes no subrequests"),
    ),
    d("server_names_hash_bucket_size", HTTP, n(1), NO_HASH),
    d("server_names_hash_max_size", HTTP, n(1), NO_HASH),
    d("variables_hash_bucket_size", HTTP, n(1), NO_HASH),
    d("variables_hash_max_size", HTTP, n(1), NO_HASH),
    d("types_hash_bucket_size", HSL, n(1), NO_HASH),
    d("types_hash_max_size", HSL, n(1), NO_HASH),
    d("map_hash_bucket_size", HTTP, n(1), NO_HASH),
    d("map_hash_max_size", HTTP, n(1), NO_HASH),
    d("proxy_headers_hash_bucket_size", HSL, n(1), NO_HASH),
    d("proxy_headers_hash_max_size", HSL, n(1), NO_HASH),
    d("client_header_buffer_size", HS, n(1), Differs("the default server's value applies to every server on an address")),
    d("large_client_header_buffers", HS, n(2), Differs("the default server's value applies to every server on an address")),
    d("client_header_timeout", HS, n(1), OK),
    d("client_body_timeout", HSL, n(1), OK),
    d("client_max_body_size", HSL, n(1), OK),
    d("client_body_buffer_size", HSL, n(1), NoEffect("request bodies stream to the upstream without a body buffer")),
    d(
        "client_body_temp_path",
        HSL,
        Range(1, 4),
        NoEffect("sluice streams request bodies in memory"),
    ),
    d(
        "client_body_in_file_only",
        HSL,
        n(1),
        NoEffect("sluice streams request bodies in memory"),
    ),
    d("client_body_in_single_buffer", HSL, Flag, MOOT_IO),
    d("keepalive_timeout", HSL | UPSTREAM, Range(1, 2), OK),
    d("keepalive_requests", HSL | UPSTREAM, n(1), OK),
    d("keepalive_time", HSL, n(1), NoEffect("not implemented yet for client connections")),
    d(
        "keepalive_disable",
        HSL,
        AtLeast(1),
        NoEffect("no browser workarounds"),
    ),
    d("send_timeout", HSL, n(1), Differs("the default server's value applies to every server on an address")),
    d(
        "reset_timedout_connection",
        HSL,
        Flag,
        Differs("HTTP/2 connections are closed normally"),
    ),
    d("lingering_close", HSL, n(1), MOOT_IO),
    d("lingering_time", HSL, n(1), MOOT_IO),
    d("lingering_timeout", HSL, n(1), MOOT_IO),
    d("sendfile", HSL | LIF, Flag, MOOT_IO),
    d("sendfile_max_chunk", HSL, n(1), MOOT_IO),
    d("tcp_nopush", HSL, Flag, MOOT_IO),
    d("tcp_nodelay", HSL, Flag, OK),
    d("aio", HSL, n(1), MOOT_IO),
    d("directio", HSL, n(1), MOOT_IO),
    d("output_buffers", HSL, n(2), MOOT_IO),
    d("postpone_output", HSL, n(1), MOOT_IO),
    d("open_file_cache", HSL, Range(1, 2), NO_STATIC),
    d("open_file_cache_valid", HSL, n(1), NO_STATIC),
    d("open_file_cache_min_uses", HSL, n(1), NO_STATIC),
    d("open_file_cache_errors", HSL, Flag, NO_STATIC),
    d("root", HSL | LIF, n(1), NO_STATIC),
    d("alias", LOCATION, n(1), NO_STATIC),
    d("index", HSL, AtLeast(1), NO_STATIC),
    d("autoindex", HSL, Flag, NO_STATIC),
    d("try_files", SL, AtLeast(2), NO_STATIC),
    d("etag", HSL, Flag, NO_STATIC),
    d("if_modified_since", HSL, n(1), NO_STATIC),
    d(
        "expires",
        HSL | LIF,
        Range(1, 2),
        NoEffect("headers filter not implemented yet"),
    ),
    d(
        "add_header",
        HSL | LIF,
        Range(2, 3),
        NoEffect("headers filter not implemented yet"),
    ),
    d(
        "charset",
        HSL | LIF,
        n(1),
        NoEffect("charset filter not implemented yet"),
    ),
    d(
        "source_charset",
        HSL | LIF,
        n(1),
        NoEffect("charset filter not implemented yet"),
    ),
    d("server_tokens", HSL, n(1), OK),
    d("underscores_in_headers", HS, Flag, OK),
    d("ignore_invalid_headers", HS, Flag, Differs("headers with invalid characters are refused with 400 by the HTTP parser rather than passed when off")),
    d("merge_slashes", HS, Flag, OK),
    d("absolute_redirect", HSL, Flag, OK),
    d("port_in_redirect", HSL, Flag, OK),
    d("server_name_in_redirect", HSL, Flag, OK),
    d(
        "error_page",
        HSL | LIF,
        AtLeast(2),
        NoEffect("custom error pages are not implemented yet"),
    ),
    d(
        "recursive_error_pages",
        HSL,
        Flag,
        NoEffect("custom error pages are not implemented yet"),
    ),
    d("chunked_transfer_encoding", HSL, Flag, NoEffect("not implemented yet")),
    d("internal", LOCATION, n(0), OK),
    d(
        "resolver",
        HSL,
        AtLeast(1),
        NoEffect("names are resolved at load with the system resolver"),
    ),
    d(
        "resolver_timeout",
        HSL,
        n(1),
        NoEffect("names are resolved at load with the system resolver"),
    ),
    d("satisfy", HSL, n(1), LATER_ACCESS),
    d("allow", HSL | LIMIT_EXCEPT, n(1), LATER_ACCESS),
    d("deny", HSL | LIMIT_EXCEPT, n(1), LATER_ACCESS),
    d("auth_basic", HSL | LIMIT_EXCEPT, n(1), LATER_ACCESS),
    d(
        "auth_basic_user_file",
        HSL | LIMIT_EXCEPT,
        n(1),
        LATER_ACCESS,
    ),
    d("limit_req_zone", HTTP, Range(3, 4), LATER_ACCESS),
    d("limit_req", HSL, Range(1, 3), LATER_ACCESS),
    d("limit_req_status", HSL, n(1), LATER_ACCESS),
    d("limit_conn_zone", HTTP, n(2), LATER_ACCESS),
    d("limit_conn", HSL, n(2), LATER_ACCESS),
    d("limit_conn_status", HSL, n(1), LATER_ACCESS),
    d("limit_rate", HSL | LIF, n(1), LATER_ACCESS),
    d("real_ip_header", HSL, n(1), LATER_ACCESS),
    d("set_real_ip_from", HSL, n(1), LATER_ACCESS),
    d(
        "stub_status",
        SL,
        Range(0, 1),
        Differs("acts in a location; in a server block it has no effect"),
    ),
    // sluice extensions (see docs/compat.md).
    d("prometheus_metrics", LOCATION, n(0), OK),
    d("status_page", LOCATION, n(0), OK),
    // rewrite module
    d("return", SERVER | LOCATION | LIF | SIF, Range(1, 2), OK),
    d(
        "rewrite",
        SERVER | LOCATION | LIF | SIF,
        Range(2, 3),
        LATER_REWRITE,
    ),
    d("set", SERVER | LOCATION | LIF | SIF, n(2), LATER_REWRITE),
    d("break", SERVER | LOCATION | LIF | SIF, n(0), LATER_REWRITE),
    d("rewrite_log", HSL | SIF | LIF, Flag, LATER_REWRITE),
    // proxy module
    d("proxy_pass", LOCATION | LIF | LIMIT_EXCEPT, n(1), OK),
    d("proxy_set_header", HSL, n(2), OK),
    d("proxy_http_version", HSL, n(1), OK),
    d("proxy_redirect", HSL, Range(1, 2), OK),
    d("proxy_connect_timeout", HSL, n(1), OK),
    d("proxy_read_timeout", HSL, n(1), OK),
    d("proxy_send_timeout", HSL, n(1), Differs("applies to WebSocket tunnels; request bodies are guarded by client_body_timeout")),
    d(
        "proxy_buffering",
        HSL,
        Flag,
        Differs("reads ahead into proxy_buffer_size + proxy_buffers of memory; beyond that the upstream waits instead of spilling to a temporary file"),
    ),
    d(
        "proxy_request_buffering",
        HSL,
        Flag,
        Differs("request bodies are always streamed to the upstream as they arrive, as with proxy_request_buffering off"),
    ),
    d("proxy_buffer_size", HSL, n(1), OK),
    d("proxy_buffers", HSL, n(2), OK),
    d("proxy_busy_buffers_size", HSL, n(1), MOOT_IO),
    d(
        "proxy_temp_file_write_size",
        HSL,
        n(1),
        NO_TEMP_FILES,
    ),
    d(
        "proxy_max_temp_file_size",
        HSL,
        n(1),
        NO_TEMP_FILES,
    ),
    d(
        "proxy_temp_path",
        HSL,
        Range(1, 4),
        NO_TEMP_FILES,
    ),
    d("proxy_pass_request_headers", HSL, Flag, OK),
    d("proxy_pass_request_body", HSL, Flag, OK),
    d("proxy_hide_header", HSL, n(1), OK),
    d("proxy_pass_header", HSL, n(1), OK),
    d(
        "proxy_ignore_headers",
        HSL,
        AtLeast(1),
        NoEffect("sluice has no proxy cache yet"),
    ),
    d("proxy_next_upstream", HSL, AtLeast(1), OK),
    d("proxy_next_upstream_tries", HSL, n(1), OK),
    d("proxy_next_upstream_timeout", HSL, n(1), OK),
    d(
        "proxy_intercept_errors",
        HSL,
        Flag,
        NoEffect("custom error pages are not implemented yet"),
    ),
    d("proxy_ignore_client_abort", HSL, Flag, NoEffect("not implemented yet: a client that goes away ends the upstream request")),
    d("proxy_method", HSL, n(1), OK),
    d("proxy_set_body", HSL, n(1), NoEffect("not implemented yet")),
    d("proxy_socket_keepalive", HSL, Flag, OK),
    d(
        "proxy_bind",
        HSL,
        Range(1, 2),
        NoEffect("not implemented yet"),
    ),
    d("proxy_cache_path", HTTP, AtLeast(2), NO_CACHE),
    d("proxy_cache", HSL, n(1), NO_CACHE),
    d("proxy_cache_key", HSL, n(1), NO_CACHE),
    d("proxy_cache_valid", HSL, AtLeast(1), NO_CACHE),
    d("proxy_cache_bypass", HSL, AtLeast(1), NO_CACHE),
    d("proxy_no_cache", HSL, AtLeast(1), NO_CACHE),
    d("proxy_cache_use_stale", HSL, AtLeast(1), NO_CACHE),
    d("proxy_cache_lock", HSL, Flag, NO_CACHE),
    d("proxy_cache_methods", HSL, AtLeast(1), NO_CACHE),
    d("proxy_cache_min_uses", HSL, n(1), NO_CACHE),
    d("proxy_ssl_verify", HSL, Flag, OK),
    d("proxy_ssl_trusted_certificate", HSL, n(1), OK),
    d("proxy_ssl_verify_depth", HSL, n(1), Differs("accepted; the chain is checked by webpki without a depth limit")),
    d("proxy_ssl_server_name", HSL, Flag, OK),
    d("proxy_ssl_name", HSL, n(1), Differs("a literal name or $proxy_host; other variables are a load error")),
    d("proxy_ssl_certificate", HSL, n(1), Differs("a PEM file; no variables or data:")),
    d("proxy_ssl_certificate_key", HSL, n(1), Differs("PEM (PKCS#8, PKCS#1 or SEC1); no passphrase-protected keys")),
    d("proxy_ssl_protocols", HSL, AtLeast(1), Differs("TLSv1.2 and TLSv1.3 only; older ones are refused with a warning")),
    d("proxy_ssl_ciphers", HSL, n(1), Differs("mapped onto rustls' TLS 1.2 suites as ssl_ciphers")),
    d("proxy_ssl_session_reuse", HSL, Flag, OK),
    // fastcgi module: accepted so that shared http blocks load.
    d("fastcgi_pass", LOCATION | LIF, n(1), NO_FASTCGI),
    d("fastcgi_param", HSL, Range(2, 3), NO_FASTCGI),
    d("fastcgi_index", HSL, n(1), NO_FASTCGI),
    d("fastcgi_connect_timeout", HSL, n(1), NO_FASTCGI),
    d("fastcgi_send_timeout", HSL, n(1), NO_FASTCGI),
    d("fastcgi_read_timeout", HSL, n(1), NO_FASTCGI),
    d("fastcgi_buffer_size", HSL, n(1), NO_FASTCGI),
    d("fastcgi_buffers", HSL, n(2), NO_FASTCGI),
    d("fastcgi_busy_buffers_size", HSL, n(1), NO_FASTCGI),
    d("fastcgi_temp_file_write_size", HSL, n(1), NO_FASTCGI),
    d("fastcgi_temp_path", HSL, Range(1, 4), NO_FASTCGI),
    d("fastcgi_intercept_errors", HSL, Flag, NO_FASTCGI),
    d(
        "uwsgi_temp_path",
        HSL,
        Range(1, 4),
        NoEffect("sluice has no uwsgi client"),
    ),
    d(
        "scgi_temp_path",
        HSL,
        Range(1, 4),
        NoEffect("sluice has no scgi client"),
    ),
    // gzip
    d("gzip", HSL | LIF, Flag, OK),
    d("gzip_min_length", HSL, n(1), OK),
    d("gzip_buffers", HSL, n(2), MOOT_IO),
    d("gzip_http_version", HSL, n(1), OK),
    d("gzip_comp_level", HSL, n(1), OK),
    d("gzip_types", HSL, AtLeast(1), OK),
    d("gzip_vary", HSL, Flag, OK),
    d("gzip_proxied", HSL, AtLeast(1), OK),
    d("gzip_disable", HSL, AtLeast(1), OK),
    d("gzip_static", HSL, n(1), NO_STATIC),
    // TLS and HTTP/2
    d("ssl_certificate", HS, n(1), Differs("PEM files, RSA or ECDSA, several for dual certificates; no variables, data: or engine: (a load error)")),
    d("ssl_certificate_key", HS, n(1), Differs("PEM (PKCS#8, PKCS#1 or SEC1); no passphrase-protected keys")),
    d("ssl_protocols", HS, AtLeast(1), Differs("TLSv1.2 and TLSv1.3 only (default both); SSLv2, SSLv3, TLSv1, TLSv1.1 are refused with a warning")),
    d("ssl_ciphers", HS, n(1), Differs("OpenSSL's string mapped onto rustls' TLS 1.2 ECDHE suites (AES-GCM, CHACHA20-POLY1305); other suites warn; TLS 1.3 suites are always on, as with OpenSSL")),
    d("ssl_prefer_server_ciphers", HS, Flag, OK),
    d("ssl_session_cache", HS, AtLeast(1), Differs("a cache per listen address and worker process set (not shared between processes); shared:NAME:SIZE holds about 4000 sessions per MB")),
    d("ssl_session_timeout", HS, n(1), Differs("the lifetime of session tickets")),
    d("ssl_session_tickets", HS, Flag, Differs("ticket keys are random per load and rotate as rustls does; ssl_session_ticket_key is not read")),
    d("ssl_dhparam", HS, n(1), NoEffect("rustls has no DHE suites: key exchange is ECDHE")),
    d("ssl_ecdh_curve", HS, n(1), NoEffect("rustls offers X25519, P-256 and P-384 in its own order")),
    d("ssl_stapling", HS, Flag, NO_STAPLING),
    d("ssl_stapling_verify", HS, Flag, NO_STAPLING),
    d("ssl_trusted_certificate", HS, n(1), NoEffect("used by OCSP stapling and client certificates, neither implemented")),
    d("ssl_client_certificate", HS, n(1), NO_CLIENT_CERTS),
    d("ssl_verify_client", HS, n(1), Differs("only off (the default): on, optional and optional_no_ca are refused at load, as client certificates are not implemented")),
    d("http2", HS, Flag, Differs("acts per address: HTTP/2 is offered on an address when its listen has http2 or any of its servers says http2 on")),
    d("http2_max_concurrent_streams", HS, n(1), Supported),
    d("http2_recv_buffer_size", HTTP, n(1), Differs("bounds the connection's HTTP/2 receive window (unread request body data per connection)")),
    d("http2_chunk_size", HSL, n(1), NoEffect("hyper frames HTTP/2 response data itself (frames of up to 16 KiB)")),
    d("http2_extended_connect", HS, Flag, Differs("sluice extension (RFC 8441 WebSocket over HTTP/2, default on), bridged to HTTP/1.1 Upgrade upstream; like the other HTTP/2 settings, taken from the server SNI chose, else the default server of the address")),
    // upstream {}
    d("server", UPSTREAM, AtLeast(1), OK),
    d("least_conn", UPSTREAM, n(0), OK),
    d("ip_hash", UPSTREAM, n(0), OK),
    d("hash", UPSTREAM, Range(1, 2), OK),
    d("random", UPSTREAM, Range(0, 2), OK),
    d(
        "keepalive",
        UPSTREAM,
        n(1),
        Differs("a connection idle for less than 10 ms is not closed to make room; the cache may briefly hold more than N"),
    ),
    d("keepalive_time", UPSTREAM, n(1), OK),
    d(
        "zone",
        UPSTREAM,
        Range(1, 2),
        NoEffect("upstream state is always shared by all threads"),
    ),
    d(
        "check",
        UPSTREAM,
        AtLeast(0),
        Differs("type=tcp and type=http only (no ssl_hello, mysql, ajp)"),
    ),
    d("check_http_send", UPSTREAM, n(1), OK),
    d("check_http_expect_alive", UPSTREAM, AtLeast(1), OK),
    d(
        "check_keepalive_requests",
        UPSTREAM,
        n(1),
        NoEffect("each health probe uses a new connection"),
    ),
    d("check_status", LOCATION, Range(0, 1), OK),
    // Other modules users commonly have in their configs: recognised so that
    // those configs load, each named by a `[warn]` at load.
    d("worker_rlimit_core", MAIN, n(1), LATER_OPS),
    d("pcre_jit_stack_size", MAIN, n(1), NoEffect("no PCRE")),
    b(
        "stream",
        MAIN,
        n(0),
        NoEffect("the stream (TCP/UDP) module is not implemented"),
    ),
    b(
        "mail",
        MAIN,
        n(0),
        NoEffect("the mail proxy module is not implemented"),
    ),
    b(
        "geo",
        HTTP,
        Range(1, 2),
        NoEffect("the geo module is not implemented yet"),
    ),
    b(
        "split_clients",
        HTTP,
        n(2),
        NoEffect("split_clients is not implemented yet"),
    ),
    d("real_ip_recursive", HSL, Flag, LATER_ACCESS),
    d("valid_referers", SL, AtLeast(1), LATER_ACCESS),
    d("auth_request", HSL, n(1), LATER_ACCESS),
    d("auth_request_set", HSL, n(2), LATER_ACCESS),
    d("limit_rate_after", HSL | LIF, n(1), LATER_ACCESS),
    d("limit_req_log_level", HSL, n(1), LATER_ACCESS),
    d("limit_conn_log_level", HSL, n(1), LATER_ACCESS),
    d(
        "mirror",
        HSL,
        n(1),
        NoEffect("request mirroring is not implemented"),
    ),
    d(
        "sub_filter",
        HSL,
        n(2),
        NoEffect("response body filters are not implemented"),
    ),
    d(
        "sub_filter_once",
        HSL,
        Flag,
        NoEffect("response body filters are not implemented"),
    ),
    d(
        "sub_filter_types",
        HSL,
        AtLeast(1),
        NoEffect("response body filters are not implemented"),
    ),
    d(
        "ssi",
        HSL | LIF,
        Flag,
        NoEffect("server side includes are not implemented"),
    ),
    d(
        "add_trailer",
        HSL | LIF,
        Range(2, 3),
        NoEffect("headers filter not implemented yet"),
    ),
    d(
        "empty_gif",
        LOCATION,
        n(0),
        NoEffect("empty_gif is not implemented"),
    ),
    d(
        "proxy_cookie_domain",
        HSL,
        Range(1, 2),
        NoEffect("cookie rewriting is not implemented yet"),
    ),
    d(
        "proxy_cookie_path",
        HSL,
        Range(1, 2),
        NoEffect("cookie rewriting is not implemented yet"),
    ),
    d("proxy_store", HSL, n(1), NO_CACHE),
    d("proxy_cache_revalidate", HSL, Flag, NO_CACHE),
    d("proxy_cache_background_update", HSL, Flag, NO_CACHE),
    d("proxy_cache_lock_timeout", HSL, n(1), NO_CACHE),
    d(
        "uwsgi_pass",
        LOCATION | LIF,
        n(1),
        NoEffect("sluice has no uwsgi client"),
    ),
    d(
        "uwsgi_param",
        HSL,
        Range(2, 3),
        NoEffect("sluice has no uwsgi client"),
    ),
    d(
        "scgi_pass",
        LOCATION | LIF,
        n(1),
        NoEffect("sluice has no scgi client"),
    ),
    d(
        "scgi_param",
        HSL,
        Range(2, 3),
        NoEffect("sluice has no scgi client"),
    ),
    d(
        "grpc_pass",
        LOCATION | LIF,
        n(1),
        NoEffect("sluice has no gRPC client yet"),
    ),
    d(
        "grpc_set_header",
        HSL,
        n(2),
        NoEffect("sluice has no gRPC client yet"),
    ),
    d("ssl", HS, Flag, Differs("only off: \"ssl on\" is refused at load (nginx 1.25 removed it); use listen ... ssl")),
    d("ssl_buffer_size", HS, n(1), NoEffect("rustls sizes its records itself (up to 16 KiB)")),
    d("ssl_session_ticket_key", HS, n(1), NoEffect("ticket keys are random per configuration load")),
    d("ssl_verify_depth", HS, n(1), NO_CLIENT_CERTS),
    d("ssl_crl", HS, n(1), NO_CLIENT_CERTS),
    d("ssl_password_file", HS, n(1), NoEffect("encrypted private keys are not supported: the key fails to load")),
    d("ssl_early_data", HS, Flag, NoEffect("0-RTT early data is not offered")),
    d("ssl_reject_handshake", HS, Flag, NoEffect("not implemented: a listen ... ssl server needs a certificate")),
    d("ssl_conf_command", HS, n(2), NoEffect("OpenSSL configuration commands do not apply to rustls")),
    d("http2_push", HSL, n(1), NO_PUSH),
    d("http2_push_preload", HSL, Flag, NO_PUSH),
    d("http2_idle_timeout", HS, n(1), NoEffect("obsolete in nginx since 1.19.7; keepalive_timeout closes idle HTTP/2 connections, as here")),
    d(
        "brotli",
        HSL | LIF,
        Flag,
        NoEffect("third-party brotli module; gzip is supported"),
    ),
    d(
        "brotli_comp_level",
        HSL,
        n(1),
        NoEffect("third-party brotli module; gzip is supported"),
    ),
    d(
        "brotli_types",
        HSL,
        AtLeast(1),
        NoEffect("third-party brotli module; gzip is supported"),
    ),
    d(
        "brotli_static",
        HSL,
        n(1),
        NoEffect("third-party brotli module; gzip is supported"),
    ),
];

/// Looks a directive up by name for context `here`. A name may have one row
/// per context (`server` opens a block in http but not in upstream); when no
/// row allows `here`, the first row is returned so the caller can say
/// "not allowed here".
pub fn find(name: &str, here: u16) -> Option<&'static Spec> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static INDEX: OnceLock<HashMap<&'static str, Vec<&'static Spec>>> = OnceLock::new();
    let rows = INDEX
        .get_or_init(|| {
            let mut m: HashMap<&'static str, Vec<&'static Spec>> = HashMap::new();
            for s in DIRECTIVES {
                m.entry(s.name).or_default().push(s);
            }
            m
        })
        .get(name)?;
    rows.iter()
        .find(|s| s.ctx & here != 0)
        .or(rows.first())
        .copied()
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Range(lo, hi) => (lo as usize..=hi as usize).contains(&n),
            Arity::AtLeast(lo) => n >= lo as usize,
            Arity::Flag => n == 1,
        }
    }
}

/// The directive table of docs/compat.md, one row per [`DIRECTIVES`] entry
/// (plus `include`, which the parser handles), sorted by name.
pub fn compat_table() -> String {
    const CTX: [(u16, &str); 9] = [
        (MAIN, "main"),
        (EVENTS, "events"),
        (HTTP, "http"),
        (SERVER, "server"),
        (LOCATION, "location"),
        (UPSTREAM, "upstream"),
        (SIF, "if in server"),
        (LIF, "if in location"),
        (LIMIT_EXCEPT, "limit_except"),
    ];
    let mut rows: Vec<[String; 4]> = DIRECTIVES
        .iter()
        .map(|s| {
            let ctx: Vec<&str> = CTX
                .iter()
                .filter(|c| s.ctx & c.0 != 0)
                .map(|c| c.1)
                .collect();
            let args = match s.arity {
                Range(lo, hi) if lo == hi => lo.to_string(),
                Range(lo, hi) => format!("{lo}-{hi}"),
                AtLeast(lo) => format!("{lo}+"),
                Flag => "on\\|off".into(),
            };
            let args = if s.block {
                format!("{args} + block")
            } else {
                args
            };
            let status = match s.status {
                Supported => "Supported".to_string(),
                Differs(why) => format!("Differs: {why}"),
                NoEffect(why) => format!("No effect: {why}"),
            };
            [format!("`{}`", s.name), ctx.join(", "), args, status]
        })
        .collect();
    rows.push([
        "`include`".into(),
        "any".into(),
        "1".into(),
        "Supported".into(),
    ]);
    rows.sort_by(|a, b| a[0].trim_matches('`').cmp(b[0].trim_matches('`')));
    let mut out =
        String::from("| directive | contexts | arguments | status |\n|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/compat.md carries [`compat_table`] between these markers.
    const BEGIN: &str = "<!-- BEGIN generated directive table -->\n";
    const END: &str = "<!-- END generated directive table -->";

    #[test]
    fn compat_md_table_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/compat.md");
        let doc = std::fs::read_to_string(&path).expect("docs/compat.md");
        let (start, end) = match (doc.find(BEGIN), doc.find(END)) {
            (Some(s), Some(e)) if s < e => (s + BEGIN.len(), e),
            _ => panic!("docs/compat.md lacks the table markers {BEGIN:?} ... {END:?}"),
        };
        let table = compat_table();
        if doc[start..end] == table {
            return;
        }
        if std::env::var_os("SLUICE_UPDATE_COMPAT").is_some() {
            let updated = format!("{}{table}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, updated).expect("write docs/compat.md");
            return;
        }
        panic!(
            "docs/compat.md's directive table is out of date with src/conf/directives.rs; \
             run `SLUICE_UPDATE_COMPAT=1 cargo test --lib compat` to rewrite it"
        );
    }

    #[test]
    fn rows_of_one_name_have_disjoint_contexts() {
        let mut seen: std::collections::HashMap<&str, u16> = Default::default();
        for s in DIRECTIVES {
            let prev = seen.entry(s.name).or_default();
            assert_eq!(*prev & s.ctx, 0, "{} listed twice for one context", s.name);
            *prev |= s.ctx;
        }
    }
}
