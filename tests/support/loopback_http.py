"""The loopback HTTP server under the cloud fakes (fake_gce.py, fake_ec2_fleet.py): threaded, on 127.0.0.1 at a
free port, stopped by the fixture that started it."""
from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class LoopbackServer:
    server: ThreadingHTTPServer | None = None

    def serve(self, handler, name: str):
        """Serve ``handler`` (a BaseHTTPRequestHandler class) in a daemon thread; returns self."""
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name=name).start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
