#!/usr/bin/python3
"""An HTTP/2 client that asks for a large body and stops reading, for the
send_timeout test in tests/h2.rs (Python's `h2` package).

usage: h2_stall.py HOST PORT PATH

Opens an h2c connection with the largest flow-control windows (so only TCP
holds the server back), sends the request, prints `sent`, then waits for a
line on stdin before reading the socket to its end and printing `closed`.
"""

import socket
import sys

import h2.config
import h2.connection
import h2.settings

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
# A small fixed receive buffer: no autotuning soaks up the body.
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
sock.settimeout(30)
sock.connect((host, port))
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
conn.increment_flow_control_window(2**31 - 1 - 65535)
sid = conn.get_next_available_stream_id()
conn.send_headers(
    sid,
    [(":method", "GET"), (":scheme", "http"), (":path", path),
     (":authority", "%s:%d" % (host, port))],
    end_stream=True,
)
sock.sendall(conn.data_to_send())
print("sent", flush=True)
sys.stdin.readline()
total = 0
try:
    while True:
        data = sock.recv(1 << 20)
        if not data:
            break
        total += len(data)
except (ConnectionResetError, socket.timeout) as e:
    print("error %s" % type(e).__name__, flush=True)
print("closed after %d bytes" % total, flush=True)
