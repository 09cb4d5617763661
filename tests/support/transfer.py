"""Fixtures for the data-transfer tests: a counting HTTP proxy on loopback in front of the moto server or the
GCS emulator (every request the server gets is in ``proxy.log``, so a test can say what was (re)sent), the
GCS emulator itself (``gcp-storage-emulator``, in-memory, driven through the real google-cloud-storage client),
and a tree of files to move (``make_tree``: many small files and a few of several MB).
"""
from __future__ import annotations

import http.client
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

__all__ = ["CountingProxy", "counting_s3", "gcs_emulator", "make_tree", "same_tree"]


class CountingProxy:
    """Forwards every request to ``target`` (http://127.0.0.1:PORT) and logs (method, path, query) first.
    ``delay`` seconds are slept before forwarding a request whose method is in ``slow`` (to kill mid-way)."""

    def __init__(self, target: str):
        self.target = urllib.parse.urlparse(target)
        self.log: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.delay, self.slow = 0.0, ("PUT", "POST")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self):
                body = self._body()
                declared = self.headers.get("Content-Length")
                if declared is not None and len(body) < int(declared):
                    self.close_connection = True    # the client died mid-body: a server drops it, never stores it
                    return
                url = urllib.parse.urlparse(self.path)
                with proxy.lock:
                    proxy.log.append((self.command, url.path, url.query))
                if proxy.delay and self.command in proxy.slow:
                    import time
                    time.sleep(proxy.delay)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("transfer-encoding", "content-length", "connection")}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None   # a killed client resets its connections
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests(self, method: str, fragment: str = "") -> list[str]:
        """Paths of the requests with this method whose path contains ``fragment``."""
        with self.lock:
            return [p for m, p, _ in self.log if m == method and fragment in p]

    def clear(self) -> None:
        with self.lock:
            self.log.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_s3(aws_env):
    """A counting proxy in front of the (reset) moto server, and a bucket ``results`` on it."""
    import boto3
    proxy = CountingProxy(aws_env)
    boto3.client("s3", region_name="us-east-1", endpoint_url=aws_env).create_bucket(Bucket="results")
    yield proxy
    proxy.stop()


@pytest.fixture
def gcs_emulator(isolated_env):
    """The GCS emulator on 127.0.0.1 (in memory, a bucket ``results``), behind a counting proxy."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    from gcp_storage_emulator.server import create_server

    from tests.support.cloud import free_port
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    proxy = CountingProxy(f"http://127.0.0.1:{port}")
    storage.Client(project="fake-project", credentials=AnonymousCredentials(),
                   client_options={"api_endpoint": proxy.url}).create_bucket("results")
    proxy.clear()
    yield proxy
    proxy.stop()
    server.stop()


def make_tree(root: Path, small: int = 1000, big: int = 3, big_mb: float = 3.0) -> dict[str, bytes]:
    """``small`` files of a few bytes in 10 folders and ``big`` files of ``big_mb`` MB; returns rel -> bytes."""
    made = {}
    for i in range(small):
        made[f"small/{i % 10}/item-{i:05d}.txt"] = f"item {i}\n".encode() * (1 + i % 7)
    for i in range(big):
        made[f"big/blob-{i}.bin"] = os.urandom(int(big_mb * (1 << 20)))
    for rel, data in made.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return made


def same_tree(root: Path, made: dict[str, bytes]) -> bool:
    """Exactly these files with exactly these bytes below ``root`` (nothing more, no temp file)."""
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return found == set(made) and all((root / rel).read_bytes() == data for rel, data in made.items())
