#!/usr/bin/python3
"""WebSocket over HTTP/2 (RFC 8441) client for tests/h2.rs, built on the
third-party `h2` (HTTP/2) and `wsproto` (WebSocket framing) packages.

usage: h2ws_client.py HOST PORT [--tls CA] [--goaway] PATH...
       h2ws_client.py HOST PORT [--tls CA] --multi N PATH
       h2ws_client.py HOST PORT [--tls CA] --offer PATH

For every PATH it opens an extended CONNECT stream on one connection and
prints `PATH status=N settings_connect=0|1 [subprotocol=P]`. On a 200 it then
sends a text message, a binary message and a close with code 4001, and
prints what came back: `text=...`, `binary=<hex>`, `close=CODE REASON`.
Ends with `done`. Every wait is bounded by a socket timeout.

With --multi, it opens N WebSockets on PATH at once on one connection, sends
`hello I` on each before reading any reply, checks every echo (`Server
received from client: hello I`, as the guide's server.js and `sluice echo`
answer), sends one 16 MiB text message on the first while the others stay
open and checks its echo byte for byte (SHA-256), closes all with 4001 and
prints `multi=N echoes=ok big=ok closes=ok`.

With --offer, it asks for subprotocols `chat, superchat` and the
permessage-deflate extension, prints `status=N protocol=P extensions=E` from
the response, then closes with 4001 and prints `close=CODE REASON` (control
frames are never compressed, so no inflating is needed).
"""

import hashlib
import socket
import ssl
import sys

import h2.events
import h2.settings
from h2peer import Peer
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, TextMessage

args = sys.argv[1:]
host, port = args[0], int(args[1])
args = args[2:]
ca = None
if args and args[0] == "--tls":
    ca = args[1]
    args = args[2:]
paths = args
# `--goaway PATH`: one GET, print `ready`, then wait for the server's GOAWAY.
goaway = bool(paths) and paths[0] == "--goaway"
if goaway:
    paths = paths[1:]

sock = socket.create_connection((host, port), timeout=20)
if ca:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.set_alpn_protocols(["h2"])
    sock = ctx.wrap_socket(sock, server_hostname="localhost")
    assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
scheme = "https" if ca else "http"

peer = Peer(sock, port, scheme)
conn, events, server_settings = peer.conn, peer.events, peer.settings
pump, wait_for, open_ws = peer.pump, peer.wait_for, peer.open_ws

# RFC 8441: the client may use :protocol once the server said it can.
wait_for(lambda ev: isinstance(ev, h2.events.RemoteSettingsChanged))
connect_ok = server_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0)

if goaway:
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [(":method", "GET"), (":scheme", scheme), (":path", paths[0]),
         (":authority", "localhost:%d" % port)],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    # Frames are read raw from here: python-h2 refuses the PING hyper sends
    # after its first GOAWAY, dropping the events of the whole read.
    sock.settimeout(60)
    buf = b""
    found = None
    ended = False
    # Both the response's end and a GOAWAY, in either order.
    while found is None or not ended:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed before the response and a GOAWAY")
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            kind, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload = buf[9:9 + length]
            buf = buf[9 + length:]
            # END_STREAM on the response's HEADERS or DATA.
            if kind in (0x0, 0x1) and stream == sid and flags & 0x1 and not ended:
                ended = True
                print("ready", flush=True)
            if kind == 0x7 and found is None:
                found = payload
    last = int.from_bytes(found[:4], "big") & 0x7FFFFFFF
    print("goaway error=%d last_stream=%d" % (int.from_bytes(found[4:8], "big"), last), flush=True)
    sock.close()
    sys.exit(0)

def send_on(sid, ws, event):
    """Sends a WebSocket event on stream `sid` within the flow-control windows."""
    data = ws.send(event)
    while data:
        room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
        if room <= 0:
            if not pump():
                raise SystemExit("connection closed while sending")
            continue
        conn.send_data(sid, data[:room])
        data = data[room:]
        sock.sendall(conn.data_to_send())


def next_ws_on(sid, ws):
    """The next WebSocket event of stream `sid`; other streams' data waits."""
    while True:
        for ev in ws.events():
            return ev
        got = wait_for(
            lambda ev: isinstance(ev, (h2.events.DataReceived, h2.events.StreamEnded))
            and ev.stream_id == sid
        )
        if isinstance(got, h2.events.StreamEnded):
            raise SystemExit("stream %d ended before a WebSocket event" % sid)
        ws.receive_data(got.data)


def next_message_on(sid, ws):
    """A whole message (its fragments joined), or a CloseConnection."""
    parts = []
    while True:
        ev = next_ws_on(sid, ws)
        if isinstance(ev, CloseConnection):
            return ev
        parts.append(ev.data)
        if ev.message_finished:
            return "".join(parts) if isinstance(ev, TextMessage) else b"".join(parts)


if paths and paths[0] == "--offer":
    sid = open_ws(paths[1], [
        ("sec-websocket-protocol", "chat, superchat"),
        ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
    ])
    resp = wait_for(
        lambda ev: isinstance(ev, (h2.events.ResponseReceived, h2.events.StreamReset))
        and ev.stream_id == sid
    )
    headers = dict((k.decode(), v.decode()) for k, v in getattr(resp, "headers", []))
    print("status=%s protocol=%s extensions=%s" % (
        headers.get(":status", "reset"),
        headers.get("sec-websocket-protocol", "-"),
        headers.get("sec-websocket-extensions", "-"),
    ), flush=True)
    ws = Connection(ConnectionType.CLIENT)
    send_on(sid, ws, CloseConnection(code=4001, reason="bye"))
    ev = next_ws_on(sid, ws)
    print("close=%d %s" % (ev.code, ev.reason), flush=True)
    sys.exit(0)

if paths and paths[0] == "--multi":
    n, path = int(paths[1]), paths[2]
    sids = [open_ws(path) for _ in range(n)]
    for sid in sids:
        resp = wait_for(
            lambda ev, sid=sid: isinstance(ev, (h2.events.ResponseReceived, h2.events.StreamReset))
            and ev.stream_id == sid
        )
        status = dict(resp.headers).get(b":status") if hasattr(resp, "headers") else b"reset"
        if status != b"200":
            raise SystemExit("stream %d: status %r" % (sid, status))
    wss = {sid: Connection(ConnectionType.CLIENT) for sid in sids}
    # Every stream has a message in flight before any reply is read.
    for i, sid in enumerate(sids):
        send_on(sid, wss[sid], TextMessage(data="hello %d" % i))
    # Replies are read in reverse order, so streams' data interleave.
    for i, sid in reversed(list(enumerate(sids))):
        got = next_message_on(sid, wss[sid])
        if got != "Server received from client: hello %d" % i:
            raise SystemExit("stream %d echoed %r" % (sid, got))
    big = "".join(chr(ord("a") + i % 26) for i in range(4096)) * 4096
    want = hashlib.sha256(("Server received from client: " + big).encode()).hexdigest()
    send_on(sids[0], wss[sids[0]], TextMessage(data=big))
    got = next_message_on(sids[0], wss[sids[0]])
    if hashlib.sha256(got.encode()).hexdigest() != want:
        raise SystemExit("16 MiB echo differs (%d bytes)" % len(got))
    for sid in sids:
        send_on(sid, wss[sid], CloseConnection(code=4001, reason="bye"))
    for sid in sids:
        ev = next_ws_on(sid, wss[sid])
        if not isinstance(ev, CloseConnection) or ev.code != 4001:
            raise SystemExit("stream %d: close %r" % (sid, ev))
    print("multi=%d echoes=ok big=ok closes=ok" % n, flush=True)
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()
    sys.exit(0)

for path in paths:
    sid = open_ws(path, [("sec-websocket-protocol", "chat, superchat")])
    resp = wait_for(
        lambda ev: isinstance(ev, (h2.events.ResponseReceived, h2.events.StreamReset))
        and ev.stream_id == sid
    )
    if isinstance(resp, h2.events.StreamReset):
        print("%s reset=%d" % (path, resp.error_code), flush=True)
        continue
    headers = dict((k.decode(), v.decode()) for k, v in resp.headers)
    line = "%s status=%s settings_connect=%d" % (path, headers[":status"], connect_ok)
    if "sec-websocket-protocol" in headers:
        line += " subprotocol=" + headers["sec-websocket-protocol"]
    print(line, flush=True)
    if headers[":status"] != "200":
        continue

    ws = Connection(ConnectionType.CLIENT)

    def send(event, sid=sid, ws=ws):
        send_on(sid, ws, event)

    def next_ws(sid=sid, ws=ws):
        return next_ws_on(sid, ws)

    send(TextMessage(data="hello over h2"))
    ev = next_ws()
    print("text=%s" % ev.data, flush=True)
    send(BytesMessage(data=bytes(range(256)) * 300))
    # sluice echo answers a binary message with a prefix, then the bytes.
    prefix = b"Server received from client: "
    want = prefix + bytes(range(256)) * 300
    got = b""
    while len(got) < len(want):
        ev = next_ws()
        got += ev.data
    print("binary=%s" % ("ok" if got == want else "mismatch %d" % len(got)), flush=True)
    send(CloseConnection(code=4001, reason="bye"))
    ev = next_ws()
    print("close=%d %s" % (ev.code, ev.reason), flush=True)

print("done", flush=True)
conn.close_connection()
sock.sendall(conn.data_to_send())
sock.close()
