"""The HTTP/2 client side shared by the RFC 8441 test peers (h2ws_client.py,
h2ws_flow.py): one connection on the third-party `h2` package, its events
queued as they come and taken by predicate, and extended CONNECT streams.
"""

import time

import h2.config
import h2.connection
import h2.events


class Peer:
    """An HTTP/2 client connection over `sock` (plain or TLS).

    With `ack` every DATA frame is acknowledged as it is read (windows given
    back at once); without, the caller gives windows back itself. After
    `deadline` (time.monotonic()) any further read fails.
    """

    def __init__(self, sock, port, scheme, ack=True, deadline=None):
        self.sock, self.port, self.scheme = sock, port, scheme
        self.ack, self.deadline = ack, deadline
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        sock.sendall(self.conn.data_to_send())
        self.events = []
        self.settings = {}

    def pump(self):
        """Reads once and queues the events; False when the server closed."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SystemExit("out of time")
        data = self.sock.recv(1 << 16)
        if not data:
            return False
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                for k, v in ev.changed_settings.items():
                    self.settings[k] = v.new_value
            if self.ack and isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            self.events.append(ev)
        self.flush()
        return True

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def wait_for(self, pred):
        """The first queued event `pred` accepts, reading until one comes."""
        while True:
            for i, ev in enumerate(self.events):
                if pred(ev):
                    return self.events.pop(i)
            if not self.pump():
                raise SystemExit("connection closed while waiting")

    def open_ws(self, path, extra=()):
        """Sends an extended CONNECT (RFC 8441) for `path`; the stream id."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", self.scheme),
                (":path", path),
                (":authority", "localhost:%d" % self.port),
                ("sec-websocket-version", "13"),
                *extra,
                ("origin", "http://localhost"),
            ],
        )
        self.flush()
        return sid
