"""Cloud helpers shared by gcp and aws: names, labels, prices, cost so far, startup script (no network)."""
from __future__ import annotations

import time

import pytest

from tests.support.cloud import make_context
from playbooks.settings.cloud import CLOUD_DEFAULTS
from playbooks.providers import ProviderError
from playbooks.providers import HeadInstance, Node
from playbooks.providers import cloud as cc


def test_every_cloud_setting_has_a_default():
    assert set(CLOUD_DEFAULTS) == {"gcp", "aws", "image"}
    for sub in CLOUD_DEFAULTS.values():
        assert all(v is not None for v in sub.values())


@pytest.mark.parametrize("name", ["a", "demo", "fb-2", "x" * 50])
def test_valid_names(name):
    assert cc.check_name(name) == name


def test_labels_are_valid_gcp_label_values():
    labels = cc.fleet_labels("demo", 1.5, spot=False)
    assert labels["fleetbook-spot"] == "false"
    assert all(cc.LABEL_VALUE_RE.match(v) for v in labels.values())
    with pytest.raises(ProviderError, match="--ttl"):
        cc.fleet_labels("demo", 0, spot=True)
    with pytest.raises(ProviderError, match="invalid label"):
        cc.check_labels({"fleet": "Has Space"})


def test_prices_estimate_and_cost_so_far():
    c = make_context({"gcp": {"machine_type": "e2-standard-2"}, "aws": {"instance_type": "nope.large"}})
    assert cc.price_per_hour(c, "gcp", spot=True) == 0.0201
    assert cc.price_per_hour(c, "aws", spot=True) is None
    line = cc.estimate(c, "gcp", 10, spot=False, ttl_hours=2)
    assert "10 x e2-standard-2 (on-demand)" in line and "$0.67/h" in line and "$1.34 over the 2 h TTL" in line
    assert "price unknown" in cc.estimate(c, "aws", 3, True, 1)
    now = time.time()
    nodes = [Node(name=f"n{i}", host="h", started_at=now - 1800, labels={"fleetbook-spot": "true"}) for i in range(4)]
    assert cc.cost_so_far(c, nodes, "gcp", now=now) == pytest.approx(4 * 0.5 * 0.0201, abs=1e-4)
    assert cc.cost_so_far(c, nodes, "aws", now=now) is None
    c.config.aws.price_spot = 0.05
    assert cc.cost_so_far(c, nodes, "aws", now=now) == pytest.approx(0.1)


def test_startup_script_reschedules_the_deadline_each_boot():
    script = cc.startup_script(1_900_000_000)
    assert "deadline=1900000000" in script and "shutdown -h" in script
    ud = cc.aws_user_data(1_900_000_000)
    assert ud.startswith("#cloud-config\n") and '"bootcmd"' in ud


def test_cost_of_a_run_counts_the_head_instance_at_its_on_demand_price():
    c = make_context({"gcp": {"machine_type": "e2-standard-2", "head_machine_type": "e2-standard-4"}})
    now = time.time()
    nodes = [Node(name=f"hc-{i}", host="h", started_at=now - 3600, labels={"fleetbook-spot": "true"})
             for i in range(2)]
    head = Node(name="hc-head", host="h", started_at=now - 3600, labels={"role": "head"})
    record = {"fleet": "hc", "nodes": [{"name": n.name} for n in nodes]}
    cost = cc.run_cost(c, "gcp", record, 3600, lambda c, f: nodes, find_head=lambda c, f: HeadInstance(head, "10.0.0.2", "z"))
    assert cost == pytest.approx(2 * 0.0201 + 0.1340, abs=1e-3)  # 2 spot e2-standard-2 + 1 on-demand e2-standard-4
    cc._COST_CACHE.clear()
    alone = cc.run_cost(c, "gcp", record, 3600, lambda c, f: nodes)
    assert alone == pytest.approx(2 * 0.0201, abs=1e-3)
    cc._COST_CACHE.clear()


def test_each_node_is_priced_by_its_own_type_and_zone():
    c = make_context({"gcp": {"machine_types": "e2-standard-2,n2-standard-2", "prices": {
        "us-central1-b/e2-standard-2": [0.03, 0.09], "europe-west4/e2-standard-2": [0.025, 0.08]}}})
    assert cc.price_per_hour(c, "gcp", True, "e2-standard-2", "us-central1-a") == 0.0201   # the type's entry
    assert cc.price_per_hour(c, "gcp", True, "e2-standard-2", "us-central1-b") == 0.03     # the zone's wins
    assert cc.price_per_hour(c, "gcp", False, "e2-standard-2", "europe-west4-c") == 0.08   # then the region's
    assert cc.price_per_hour(c, "aws", True, "m6i.large", "us-east-1a") == 0.038
    now = time.time()

    def node(i, mtype, zone):
        return Node(name=f"n{i}", host="h", started_at=now - 3600,
                    labels=cc.node_facts({"fleetbook-spot": "true"}, zone, mtype))
    nodes = [node(0, "e2-standard-2", "us-central1-a"), node(1, "e2-standard-2", "us-central1-a"),
             node(2, "e2-standard-2", "us-central1-b"), node(3, "n2-standard-2", "us-central1-c")]
    assert cc.cost_so_far(c, nodes, "gcp", now=now) == pytest.approx(2 * 0.0201 + 0.03 + 0.0237, abs=1e-4)
    assert cc.cost_so_far(c, [node(4, "m6i.large", "us-east-1a"), node(5, "c6i.large", "us-east-1b")], "aws",
                          now=now) == pytest.approx(0.038 + 0.034, abs=1e-4)
    line = cc.estimate(c, "gcp", 10, True, 2, zones=["us-central1-a", "us-central1-b"])
    assert line == ("cost: 10 x {e2-standard-2, n2-standard-2} (spot) at $0.0201-0.0300/h = $0.20-0.30/h, "
                    "at most $0.60 over the 2 h TTL")
    c.config.gcp.machine_types = ["e2-standard-2", "x9-huge"]
    assert "price unknown for x9-huge; add it to gcp.prices" in cc.estimate(c, "gcp", 3, True, 1)
