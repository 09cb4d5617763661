"""The ``gcp`` provider's clients and errors: the Compute clients of one call (all on ``gcp.endpoint`` when set),
the credentials, and Google's errors as one-line ProviderErrors (capacity errors told apart).
"""
from __future__ import annotations

import re

from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from playbooks.providers.types import ProviderError
from playbooks.settings import setting


SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


OPERATIONS = {"zone_operations": compute_v1.ZoneOperationsClient,
              "region_operations": compute_v1.RegionOperationsClient,
              "global_operations": compute_v1.GlobalOperationsClient}


CAPACITY_REASONS = ("ZONE_RESOURCE_POOL_EXHAUSTED", "RESOURCE_POOL_EXHAUSTED", "QUOTA_EXCEEDED",
                    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "resourceExhausted")


class Api:
    """The Compute clients for one call, all on ``gcp.endpoint`` when it is set (operations polling too)."""

    def __init__(self, c):
        g = c.config.gcp
        self.endpoint = str(g.endpoint or "")
        self.credentials, project = _credentials(c)
        self.project = str(g.project or project or "")
        if not self.project:
            raise ProviderError("no GCP project: set gcp.project (INVOKE_GCP_PROJECT) or `gcloud config set project ...`")
        self.timeout = setting(c, "gcp.operation_timeout")
        self._clients: dict[str, object] = {}

    def _make(self, cls):
        kw = {"credentials": self.credentials, "transport": "rest"}
        if self.endpoint:
            kw["client_options"] = {"api_endpoint": self.endpoint}
        return cls(**kw)

    def _client(self, key: str, cls, ops: str | None):
        if key not in self._clients:
            client = self._make(cls)
            if ops and self.endpoint:
                # result() polls through a lazily built operations client on the DEFAULT endpoint: point it here
                client._transport._extended_operations_services[ops] = self._make(OPERATIONS[ops])
            self._clients[key] = client
        return self._clients[key]

    @property
    def instances(self) -> compute_v1.InstancesClient:
        return self._client("instances", compute_v1.InstancesClient, "zone_operations")

    @property
    def region_instances(self) -> compute_v1.RegionInstancesClient:
        return self._client("region_instances", compute_v1.RegionInstancesClient, "region_operations")

    @property
    def regions(self) -> compute_v1.RegionsClient:
        return self._client("regions", compute_v1.RegionsClient, None)

    @property
    def images(self) -> compute_v1.ImagesClient:
        return self._client("images", compute_v1.ImagesClient, "global_operations")

    @property
    def firewalls(self) -> compute_v1.FirewallsClient:
        return self._client("firewalls", compute_v1.FirewallsClient, "global_operations")

    def wait(self, op, what: str):
        """Wait for an extended operation; GoogleAPICallError on failure, ProviderError on timeout."""
        try:
            return op.result(timeout=self.timeout)
        except TimeoutError:
            raise ProviderError(f"GCP {what} did not finish in {self.timeout:g} s (gcp.operation_timeout); "
                                "check `invoke fleet.list` and the console") from None


def _credentials(c):
    g = c.config.gcp
    mode = str(g.credentials or "")
    if mode == "anonymous" or (not mode and str(g.endpoint or "").startswith("http://")):
        # plain http is a fake or a local proxy: never send a real token over it
        from google.auth.credentials import AnonymousCredentials
        return AnonymousCredentials(), ""
    try:
        if mode:
            from google.oauth2 import service_account
            creds = service_account.Credentials.from_service_account_file(mode, scopes=SCOPES)
            return creds, creds.project_id
        import google.auth
        return google.auth.default(scopes=SCOPES)
    except (OSError, ValueError) as exc:
        raise ProviderError(f"cannot read GCP credentials {mode!r}: {exc}") from None
    except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError
        if type(exc).__name__ == "DefaultCredentialsError":
            raise ProviderError("no GCP credentials: run `gcloud auth application-default login` or set gcp.credentials "
                                "to a service-account key file") from None
        raise


def _fail(exc: Exception, what: str) -> ProviderError:
    text = _error_text(exc)
    if isinstance(exc, (gexc.Unauthorized, gexc.Forbidden)) and not _is_capacity(exc):
        return ProviderError(f"GCP refused {what}: {text}; check the credentials and that the Compute API is enabled")
    return ProviderError(f"GCP {what} failed: {text}")


def _error_text(exc: Exception) -> str:
    reasons = []
    for e in getattr(exc, "errors", None) or []:
        if isinstance(e, dict):
            reasons.append(str(e.get("reason") or e.get("code") or ""))
        else:
            reasons.append(str(getattr(e, "code", "") or getattr(e, "reason", "") or ""))
    msg = re.sub(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ", "", str(getattr(exc, "message", None) or exc))  # no URL
    reasons = [r for r in reasons if r and r not in msg]
    return " ".join([*reasons, str(msg).splitlines()[0] if msg else type(exc).__name__]).strip()


def _is_capacity(exc: Exception) -> bool:
    text = _error_text(exc) + str(exc)
    return isinstance(exc, gexc.ServiceUnavailable) or any(r in text for r in CAPACITY_REASONS)
