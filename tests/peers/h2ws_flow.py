#!/usr/bin/python3
"""WebSocket over HTTP/2 (RFC 8441) flow-control client for tests/h2.rs,
built on the third-party `h2` package.

usage: h2ws_flow.py HOST PORT PATH down|up FRAMES

Opens an h2c connection and an extended CONNECT stream on PATH, prints
`open` once the stream is answered with 200. The bytes carried are binary
WebSocket frames of 65536 bytes each, frame k's payload byte j being
(k + j) % 251 (server frames unmasked; client frames masked with the zero
key, so the payload reads the same).

down: reads DATA without giving any window back (no WINDOW_UPDATE), prints
`window-full N` once the initial windows (65535 bytes) are used up, waits
for a line on stdin, then acknowledges everything and reads FRAMES frames
to the end, checking every byte; prints `got N ok` (or `mismatch at N`).

up: sends FRAMES frames as fast as sluice's windows allow; the first time
no window comes back for a second, prints `blocked N` (N bytes sent so
far). Prints `sent N` once all is sent, then waits for the stream's end.
Every wait is bounded.
"""

import socket
import sys
import time

import h2.events
from h2peer import Peer

host, port, path, mode, frames = (
    sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
PAYLOAD = 65536
BASE = bytes(j % 251 for j in range(PAYLOAD + 251))


def frame(k, masked):
    if masked:
        head = b"\x82\xff" + PAYLOAD.to_bytes(8, "big") + b"\0\0\0\0"
    else:
        head = b"\x82\x7f" + PAYLOAD.to_bytes(8, "big")
    return head + BASE[k % 251:k % 251 + PAYLOAD]


sock = socket.create_connection((host, port), timeout=30)
# Windows are given back by hand below: no acknowledging as DATA is read.
peer = Peer(sock, port, "http", ack=False, deadline=time.monotonic() + 240)
conn, events, pump, wait_for = peer.conn, peer.events, peer.pump, peer.wait_for

wait_for(lambda ev: isinstance(ev, h2.events.RemoteSettingsChanged))
sid = peer.open_ws(path)
resp = wait_for(lambda ev: isinstance(ev, (h2.events.ResponseReceived, h2.events.StreamReset))
                and ev.stream_id == sid)
status = dict(resp.headers).get(b":status", b"reset") if hasattr(resp, "headers") else b"reset"
if status != b"200":
    raise SystemExit("stream answered %r" % status)
print("open", flush=True)

if mode == "down":
    total = frames * (10 + PAYLOAD)
    received = 0
    unacked = 0
    checked_to = 0
    chunks = []
    ok = True

    def check(data):
        """Compares `data`, which starts at offset checked_to, with the expected stream."""
        global checked_to
        fl = 10 + PAYLOAD
        at = 0
        while at < len(data):
            k, within = divmod(checked_to, fl)
            want = frame(k, False)[within:within + len(data) - at]
            if data[at:at + len(want)] != want:
                return False
            at += len(want)
            checked_to += len(want)
        return True

    stalled = False
    while received < total:
        if not stalled and received >= 65535:
            print("window-full %d" % received, flush=True)
            sys.stdin.readline()
            stalled = True
            conn.acknowledge_received_data(unacked, sid)
            unacked = 0
            sock.sendall(conn.data_to_send())
        got = [ev for ev in events if isinstance(ev, (h2.events.DataReceived, h2.events.StreamEnded,
                                                      h2.events.StreamReset))]
        events.clear()
        for ev in got:
            if not isinstance(ev, h2.events.DataReceived):
                raise SystemExit("stream ended after %d bytes" % received)
            received += len(ev.data)
            if ok and not check(ev.data):
                ok = False
                print("mismatch at %d" % checked_to, flush=True)
            if stalled:
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            else:
                unacked += ev.flow_controlled_length
        if stalled:
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        if received < total and not got and not pump():
            raise SystemExit("connection closed after %d bytes" % received)
    print("got %d %s" % (received, "ok" if ok else "bad"), flush=True)
else:
    sent = 0
    blocked = False
    for k in range(frames):
        data = frame(k, True)
        while data:
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if room <= 0:
                sock.settimeout(1.0)
                try:
                    alive = pump()
                except socket.timeout:
                    if not blocked:
                        print("blocked %d" % sent, flush=True)
                        blocked = True
                    continue
                finally:
                    sock.settimeout(30)
                if not alive:
                    raise SystemExit("connection closed after %d bytes sent" % sent)
                continue
            conn.send_data(sid, data[:room])
            sent += min(room, len(data))
            data = data[room:]
            sock.sendall(conn.data_to_send())
    print("sent %d" % sent, flush=True)
    wait_for(lambda ev: isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset))
             and ev.stream_id == sid)
    print("ended", flush=True)

conn.close_connection()
sock.sendall(conn.data_to_send())
sock.close()
