#!/usr/bin/env python3
"""Manual probe of how nginx times out and half-closes an upgraded connection
(the spec for src/proxy/tunnel.rs). Needs nginx on PATH; writes under
/tmp/tunnel-nginx. Timing-based by nature, so not part of `cargo test`.
"""
import socket, subprocess, threading, time, os, sys

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

NP, UP = free_port(), free_port()
prefix = "/tmp/tunnel-nginx"
os.makedirs(prefix, exist_ok=True)
conf = f"""
daemon off; master_process off; worker_processes 1;
error_log {prefix}/error.log info; pid {prefix}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log {prefix}/access.log;
  client_body_temp_path {prefix}/t1; proxy_temp_path {prefix}/t2; fastcgi_temp_path {prefix}/t3;
  uwsgi_temp_path {prefix}/t4; scgi_temp_path {prefix}/t5;
  server {{
    listen 127.0.0.1:{NP};
    location / {{
      proxy_pass http://127.0.0.1:{UP};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1s;
    }}
  }}
}}
"""
open(f"{prefix}/nginx.conf", "w").write(conf)
ng = subprocess.Popen(["nginx", "-p", prefix, "-c", f"{prefix}/nginx.conf"])

lsock = socket.socket(); lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind(("127.0.0.1", UP)); lsock.listen(16)

def recv_headers(s):
    data = b""
    while b"\r\n\r\n" not in data:
        c = s.recv(4096)
        if not c: raise RuntimeError("eof in headers")
        data += c
    return data

def wait_nginx():
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", NP)).close(); return
        except OSError: time.sleep(0.05)
    raise RuntimeError("nginx did not start")

def open_tunnel():
    c = socket.create_connection(("127.0.0.1", NP))
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    u, _ = lsock.accept()
    recv_headers(u)
    u.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    recv_headers(c)
    return c, u

def closed_within(sock, seconds):
    """True if sock sees EOF/reset within `seconds` (data is drained)."""
    sock.settimeout(0.05); end = time.time() + seconds
    while time.time() < end:
        try:
            d = sock.recv(4096)
            if d == b"": return True
        except socket.timeout: pass
        except ConnectionResetError: return True
    return False

def ticker(sock, period, count):
    for _ in range(count):
        time.sleep(period)
        try: sock.sendall(b"x")
        except OSError: return

def scenario(name, fn):
    c, u = open_tunnel()
    t0 = time.time()
    res = fn(c, u)
    print(f"{name}: {res} (after {time.time()-t0:.1f}s)", flush=True)
    c.close(); u.close()

wait_nginx()
# A: no traffic
scenario("A idle, proxy_read_timeout 1s -> client sees close within 3s", lambda c, u: closed_within(c, 3))
# B: client->upstream traffic only, every 0.3s for 3s
def b(c, u):
    t = threading.Thread(target=ticker, args=(c, 0.3, 10)); t.start()
    r = closed_within(c, 3.0); t.join(); return r
scenario("B client->upstream only every 0.3s -> closed within 3s", b)
# C: upstream->client traffic only
def cc(c, u):
    t = threading.Thread(target=ticker, args=(u, 0.3, 10)); t.start()
    r = closed_within(u, 3.0); t.join(); return r
scenario("C upstream->client only every 0.3s -> closed within 3s", cc)
# D: client half-close
def d(c, u):
    c.shutdown(socket.SHUT_WR)
    up_eof = closed_within(u, 0.5)
    try:
        u.sendall(b"after"); c.settimeout(0.5); got = c.recv(100)
    except OSError as e: got = repr(e)
    return f"upstream saw EOF={up_eof}, then upstream->client delivered {got!r}"
scenario("D client shutdown(SHUT_WR)", d)
# E: upstream half-close
def e(c, u):
    u.shutdown(socket.SHUT_WR)
    cl_eof = closed_within(c, 0.5)
    try:
        c.sendall(b"after"); u.settimeout(0.5); got = u.recv(100)
    except OSError as ex: got = repr(ex)
    return f"client saw EOF={cl_eof}, then client->upstream delivered {got!r}"
scenario("E upstream shutdown(SHUT_WR)", e)

ng.terminate(); ng.wait()
print(subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip())
