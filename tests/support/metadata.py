"""A loopback fake of the cloud metadata servers' preemption notices: GCE's ``instance/preempted`` (TRUE once
``Metadata.preempted`` is set) and AWS's ``spot/instance-action`` (IMDSv2: a token first).  The ``metadata``
fixture serves it on 127.0.0.1 (``job.metadata_url`` / ``$FLEETBOOK_METADATA_URL`` point at it)."""
from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest

from tests.support.loopback_http import LoopbackServer


class Metadata(BaseHTTPRequestHandler):
    preempted = False

    def do_GET(self):  # noqa: N802
        if self.path == "/computeMetadata/v1/instance/preempted":
            ok = self.headers.get("Metadata-Flavor") == "Google"
            self._answer(200 if ok else 403, "TRUE" if type(self).preempted else "FALSE")
        elif self.path == "/latest/meta-data/spot/instance-action":
            if type(self).preempted and self.headers.get("X-aws-ec2-metadata-token") == "tok":
                self._answer(200, '{"action": "terminate", "time": "2026-12-02T18:00:00Z"}')
            else:
                self._answer(404, "")
        else:
            self._answer(404, "")

    def do_PUT(self):  # noqa: N802
        self._answer(200 if self.path == "/latest/api/token" else 404, "tok")

    def _answer(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def metadata():
    Metadata.preempted = False
    server = LoopbackServer().serve(Metadata, "fake-metadata")
    yield server
    server.stop()
