"""The provider contract (``playbooks/providers/__init__.py``), one test run against every provider: local (real
sshd nodes), gcp (the real google-cloud-compute client on the GCE fake) and aws (boto3 on a moto server).

Through ``providers.get(name)``, as the runbook steps call them: create is idempotent (twice -> the same nodes),
terminate twice is a no-op success the second time, a dry run sends nothing, and the listing tells the truth.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable

import pytest
from tests.support.fleet import fleet_processes, make_ctx

from playbooks import providers
from playbooks.providers import PENDING, RUNNING, TERMINATED, FleetSpec, Provider, supports
from playbooks.settings.defaults import fleet_dir

pytestmark = pytest.mark.timeout(300)


@dataclass
class UnderTest:
    prov: Provider
    c: object
    fleet: str
    sent: Callable[[], int]   # how many changing requests (or things made) the provider has sent so far


def _aws_sent(c) -> Callable[[], int]:
    import boto3
    ec2 = boto3.client("ec2", region_name="us-east-1")

    def sent() -> int:
        instances = sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])
        groups = len(ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["fleetbook-*"]}])[
            "SecurityGroups"])
        return instances + len(ec2.describe_key_pairs()["KeyPairs"]) + groups
    return sent


@pytest.fixture(params=["local", "gcp", "aws"])
def under(request, tmp_path_factory):
    name = request.param
    if name == "gcp":
        gce = request.getfixturevalue("gce")
        c = request.getfixturevalue("gcp_ctx")
        fleet = "contract"
        sent = lambda: len(gce.bodies) + gce.saw("/", "DELETE")   # noqa: E731
    elif name == "aws":
        c = request.getfixturevalue("aws_ctx")
        fleet = "contract"
        sent = _aws_sent(c)
    else:
        c = make_ctx(tmp_path_factory.mktemp("contract"))
        fleet = "ct" + secrets.token_hex(2)    # local node logins and processes are machine-wide: a fresh name
        sent = lambda: len(fleet_processes(fleet)) + sum(1 for _ in fleet_dir(c, fleet).rglob("*"))  # noqa: E731
    ut = UnderTest(providers.get(name), c, fleet, sent)
    yield ut
    ut.prov.terminate(c, fleet)


def live(ut: UnderTest) -> list:
    return [n for n in ut.prov.list_nodes(ut.c, ut.fleet) if n.state != TERMINATED]


def test_every_provider_has_the_required_hooks_and_says_what_it_supports(under):
    for hook in providers.REQUIRED:
        assert supports(under.prov, hook)
    assert supports(under.prov, "head") == (under.prov.name != "local")   # local: this machine is the head
    assert under.prov.find_head(under.c, under.fleet) is None             # no fleet, no head instance


def test_create_is_idempotent(under):
    first = under.prov.create(under.c, FleetSpec(name=under.fleet, count=2, provider=under.prov.name))
    assert len(first) == 2
    made = under.sent()
    again = under.prov.create(under.c, FleetSpec(name=under.fleet, count=2, provider=under.prov.name))
    assert sorted((n.name, n.id) for n in again) == sorted((n.name, n.id) for n in first)
    assert sorted(n.name for n in live(under)) == sorted(n.name for n in first)
    if under.prov.name != "local":        # (a local node's sshd writes its log as it runs)
        assert under.sent() == made       # the second create sent nothing that changes anything


def test_terminate_twice_the_second_is_a_no_op_success(under):
    under.prov.create(under.c, FleetSpec(name=under.fleet, count=2, provider=under.prov.name))
    assert under.prov.terminate(under.c, under.fleet) == 2
    assert under.prov.terminate(under.c, under.fleet) == 0
    assert live(under) == []


def test_dry_run_sends_nothing(under, capsys):
    before = under.sent()
    assert under.prov.create(under.c, FleetSpec(name=under.fleet, count=3, provider=under.prov.name,
                                                 dry_run=True)) == []
    assert under.sent() == before and live(under) == []
    under.prov.create(under.c, FleetSpec(name=under.fleet, count=1, provider=under.prov.name))
    made = under.sent()
    under.prov.terminate(under.c, under.fleet, dry_run=True)
    assert [n.state for n in live(under)] in ([RUNNING], [PENDING])    # the node is still there
    if under.prov.name != "local":
        assert under.sent() == made


def test_list_tells_the_truth(under):
    assert live(under) == []
    made = under.prov.create(under.c, FleetSpec(name=under.fleet, count=2, provider=under.prov.name))
    listed = live(under)
    assert sorted(n.name for n in listed) == sorted(n.name for n in made)
    assert {n.state for n in listed} <= {RUNNING, PENDING}
    victim = sorted(n.name for n in listed)[0]
    under.prov.kill_node(under.c, under.fleet, victim)               # gone as a whole, like a preempted VM
    assert victim not in {n.name for n in under.prov.list_nodes(under.c, under.fleet)
                          if n.state in (RUNNING, PENDING)}
    under.prov.terminate(under.c, under.fleet)
    assert [n for n in under.prov.list_nodes(under.c, under.fleet) if n.state in (RUNNING, PENDING)] == []
