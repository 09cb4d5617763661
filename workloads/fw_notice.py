"""Preemption notices, watched beside the workload runner (standard library only: it runs on the nodes).

Sources, each polled every ``POLL`` seconds by a daemon thread of the runner:

* ``$FLEETBOOK_NOTICE_FILE``: a file that appears (the local provider's ``invoke fleet.preempt NODE``); its
  content may be a grace period in seconds;
* ``$FLEETBOOK_METADATA_KIND=gcp`` with ``$FLEETBOOK_METADATA_URL``: ``GET <url>/computeMetadata/v1/instance/
  preempted`` (header ``Metadata-Flavor: Google``) turning ``TRUE`` (30 s of notice);
* ``$FLEETBOOK_METADATA_KIND=aws``: ``GET <url>/latest/meta-data/spot/instance-action`` answering 200 (two
  minutes of notice), with an IMDSv2 token when the service gives one.

On notice the runner claims no new item (``stopping()`` turns true in its worker processes too, through a flag
file in the node's own /tmp), lets the items in flight finish within the grace period (``$FLEETBOOK_GRACE``, else
the source's notice less a margin), writes its last heartbeat with state ``preempted`` and exits.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
import urllib.error
import urllib.request

POLL = 1.0
GRACE = {"gcp": 25.0, "aws": 100.0, "file": 20.0}   # seconds the items in flight may take after a notice


def _flag(runner_pid: int) -> str:
    return os.path.join(tempfile.gettempdir(), f"fleetbook-preempted-{runner_pid}")


def stopping(runner_pid: int | None = None) -> bool:
    """True once the runner ``runner_pid`` (default: this process) got a notice: claim nothing new."""
    return os.path.exists(_flag(runner_pid or os.getpid()))


def _get(url: str, headers: dict, timeout: float = 1.0, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:     # noqa: S310 - a setting's http URL
            return resp.status, resp.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (OSError, ValueError):
        return 0, ""


def check_once(kind: str, base: str = "", notice_file: str = "") -> float | None:
    """The grace period (seconds) when a notice is there now, else None."""
    if notice_file and os.path.exists(notice_file):
        try:
            with open(notice_file, encoding="utf-8") as f:
                text = f.read(64).strip()
            return float(text) if text else GRACE["file"]
        except (OSError, ValueError):
            return GRACE["file"]
    base = base.rstrip("/")
    if kind == "gcp" and base:
        code, body = _get(f"{base}/computeMetadata/v1/instance/preempted", {"Metadata-Flavor": "Google"})
        return GRACE["gcp"] if code == 200 and body.strip().upper() == "TRUE" else None
    if kind == "aws" and base:
        code, token = _get(f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "300"},
                           method="PUT")
        headers = {"X-aws-ec2-metadata-token": token.strip()} if code == 200 and token.strip() else {}
        code, _body = _get(f"{base}/latest/meta-data/spot/instance-action", headers)
        return GRACE["aws"] if code == 200 else None
    return None


class Watcher:
    """A daemon thread that calls ``on_notice(grace_s)`` once, at the first notice."""

    def __init__(self, on_notice, env=None):
        env = os.environ if env is None else env
        self.kind = env.get("FLEETBOOK_METADATA_KIND", "")
        self.base = env.get("FLEETBOOK_METADATA_URL", "")
        self.file = env.get("FLEETBOOK_NOTICE_FILE", "")
        if self.file:
            self.file = os.path.abspath(self.file)
        try:
            self.grace = float(env.get("FLEETBOOK_GRACE", "") or 0) or None
        except ValueError:
            self.grace = None
        self.on_notice = on_notice
        self.noticed_at: float | None = None
        self._stop = threading.Event()
        self._thread = None

    @property
    def active(self) -> bool:
        return bool(self.file or (self.kind and self.base))

    def start(self):
        if self.active:
            self._thread = threading.Thread(target=self._loop, name="fleetwork-notice", daemon=True)
            self._thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            grace = check_once(self.kind, self.base, self.file)
            if grace is not None:
                self.noticed_at = time.time()
                try:
                    open(_flag(os.getpid()), "w").close()
                except OSError:
                    pass
                self.on_notice(self.grace or grace)
                return
            self._stop.wait(POLL)

    def stop(self):
        self._stop.set()
        try:
            os.unlink(_flag(os.getpid()))
        except OSError:
            pass
