"""The provider contract, shared by ``local``, ``gcp`` and ``aws``: every hook a caller may use, declared here.

A provider is a module of plain functions (as in SkyPilot's ``sky/provision``); ``get(name)`` returns it as a
``Provider``, whose methods below are the whole contract.  A required hook is one every provider module defines;
an optional hook has a default here (as in Ray's ``NodeProvider``) and ``supports(prov, "hook")`` is the one
capability check (does the module define it itself?).  What crosses the contract is frozen data
(``types.py``: ``FleetSpec``, ``Node``, ``HeadInstance``, the states) and typed errors (``ProviderError``, turned
into Invoke's one-line ``Exit`` at the task boundary, ``playbooks/settings/errors.py``).

Labels/tags on the machines are the only truth about a fleet: nothing here keeps a local list of nodes that could
drift from what really runs.  ``c`` is the Invoke context (settings are read with ``playbooks.settings.setting``).
SDKs are imported lazily: ``get`` imports ``playbooks.providers.<name>`` only when that provider is used, so boto3
loads only for ``aws``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from playbooks.providers.types import (PENDING, PROVIDERS, RUNNING, STOPPED, TERMINATED, TYPE_KEY,  # noqa: F401
                                       UNREACHABLE, ZONE_KEY, FleetSpec, HeadInstance, Node, NodesNotReady,
                                       ProviderError, check_name)

REQUIRED = ("create", "list_nodes", "wait_ready", "terminate")


class Provider:
    """One provider behind the contract.  Each method calls the module's own function of that name, looked up at
    call time (so a test may replace one), or does the default written here."""

    def __init__(self, name: str, module: ModuleType):
        self.name, self.module = name, module

    def __repr__(self) -> str:
        return f"<provider {self.name}>"

    def _own(self, hook: str):
        return getattr(self.module, hook, None)

    # --- required ------------------------------------------------------------------------------------------

    def create(self, c, spec: FleetSpec, **kw) -> list[Node]:
        """Idempotent: counts the nodes that already carry ``fleet=<spec.name>`` and creates only the gap up to
        ``spec.count``.  Returns the fleet's nodes after creation.  With ``spec.dry_run`` it sends nothing (it
        prints the requests it would send) and returns the nodes that exist.  (``image=`` for a bake: cloud.)"""
        return self.module.create(c, spec, **kw)

    def list_nodes(self, c, name: str) -> list[Node]:
        """The fleet's nodes as the provider sees them now, with a live ``state``."""
        return self.module.list_nodes(c, name)

    def wait_ready(self, c, name: str, timeout: float, only: set[str] | None = None) -> list[Node]:
        """Waits until every node answers SSH and its host key is pinned in the fleet's known_hosts; raises
        ``NodesNotReady`` naming the nodes that never came up.  ``only``: wait for these nodes alone (a
        supervisor's replacements, while another node of the fleet may be dying)."""
        return self.module.wait_ready(c, name, timeout, only=only)

    def terminate(self, c, name: str, dry_run: bool = False, **kw) -> int:
        """Stops and deletes every node of the fleet, re-listing until none remain; "already gone" is success
        (a second call removes 0).  Returns how many nodes it removed.  ``keep_head=True`` (cloud) keeps the head
        instance."""
        return self.module.terminate(c, name, dry_run=dry_run, **kw)

    # --- optional, with defaults ---------------------------------------------------------------------------

    def list_all(self, c) -> list[Node]:
        """Every node of every fleet this provider can see (cloud: orphans included).  Default: none."""
        own = self._own("list_all")
        return own(c) if own else []

    def estimate(self, c, spec: FleetSpec) -> str:
        """One line on what the fleet costs, printed before creating.  Default: "" (nothing to say)."""
        own = self._own("estimate")
        return own(c, spec) if own else ""

    def head(self, c, fleet: str):
        """Where the nodes mount the shared disk from (an ``ssh.sftp_head.Head``).  Default: this machine's
        SFTP-only head sshd, started if needed (cloud: through tunnels, or the head instance)."""
        own = self._own("head")
        if own:
            return own(c, fleet)
        from playbooks.ssh import sftp_head
        return sftp_head.start(c, fleet)

    def find_head(self, c, fleet: str) -> HeadInstance | None:
        """The fleet's head instance, when its shared disk lives on one.  Default: None."""
        own = self._own("find_head")
        return own(c, fleet) if own else None

    def head_node(self, c, fleet: str) -> Node | None:
        """The head instance as a Node, whatever its state (for ``fleet.down``'s keep check).  Default: None."""
        own = self._own("head_node")
        return own(c, fleet) if own else None

    def start_head(self, c, fleet: str, ttl_hours: float, dry_run: bool = False) -> Node | None:
        """Start the fleet's head instance when its TTL stopped it (its disk holds the shared root), with a TTL
        of ``ttl_hours`` again, and pin its host key; returns it, or None when no head is stopped.  Default: None."""
        own = self._own("start_head")
        return own(c, fleet, ttl_hours, dry_run) if own else None

    def stop_head(self, c, fleet: str) -> int:
        """Close what serves the shared disk from this machine (tunnels, the local head sshd); returns the
        tunnels closed.  Default: 0."""
        own = self._own("stop_head")
        return own(c, fleet) if own else 0

    def cost_so_far(self, c, record, elapsed: float | None = None) -> float | None:
        """USD a run (or a list of nodes) has cost so far.  Default: ``fleet.price_per_hour`` x nodes x
        elapsed, None without a price."""
        own = self._own("cost_so_far")
        if own:
            return own(c, record, elapsed)
        from playbooks.settings import setting
        price = setting(c, "fleet.price_per_hour")
        nodes = record if isinstance(record, (list, tuple)) else record.get("nodes", [])
        return round(price * len(nodes) * elapsed / 3600, 4) if price and elapsed is not None else None

    def kill_node(self, c, name: str, node: str) -> None:
        """Makes one node vanish as a whole, like a preempted VM (fault tests)."""
        own = self._own("kill_node")
        if not own:
            raise ProviderError(f"the {self.name} provider cannot kill one node")
        own(c, name, node)

    def base_image(self, c) -> str:
        """The image a bake starts from (cloud)."""
        return self._bake("base_image")(c)

    def find_image(self, c, digest: str) -> str | None:
        """The newest baked image holding ``digest``'s steps, or None (cloud)."""
        return self._bake("find_image")(c, digest)

    def capture_image(self, c, node: Node, digest: str, image_name: str) -> str:
        """Stop the bake template ``node`` and capture its disk as ``image_name``; returns the image (cloud)."""
        return self._bake("capture_image")(c, node, digest, image_name)

    def _bake(self, hook: str):
        own = self._own(hook)
        if not own:
            raise ProviderError(f"the {self.name} provider bakes no images: use --provider gcp or aws")
        return own


def supports(prov: Provider, hook: str) -> bool:
    """The one capability check: does this provider implement ``hook`` itself (not the contract's default)?"""
    return callable(getattr(prov.module, hook, None))


_CACHE: dict[str, Provider] = {}


def get(name: str) -> Provider:
    """The provider ``name`` (its module imported lazily), or a ProviderError saying which ones exist."""
    if name not in PROVIDERS:
        raise ProviderError(f"unknown provider {name!r}: choose one of {', '.join(PROVIDERS)} "
                            "(--provider or fleet.provider)")
    if name not in _CACHE:
        try:
            module = importlib.import_module(f"playbooks.providers.{name}")
        except ImportError as exc:  # an SDK extra is missing
            raise ProviderError(f"provider {name!r} needs {exc.name}: pip install -e '.[cloud]'") from None
        missing = [h for h in REQUIRED if not callable(getattr(module, h, None))]
        assert not missing, f"playbooks.providers.{name} lacks the required hooks {missing}"
        _CACHE[name] = Provider(name, module)
    return _CACHE[name]
