"""What the --until-done supervisor asks the provider for when it replaces nodes (playbooks/supervise.replace):
the fleet's size plus the run's machines still alive on their way out (a preempted node within its notice is
replaced at once, its replacement booting during the notice), a lost machine still listed made to vanish first.
The provider here is a recording stand-in: the real ones are driven end to end by tests/test_chaos.py (local) and
tests/test_heal_cloud_fakes.py (the GCE fake, moto).  And where its final report puts the run's end."""
from __future__ import annotations

import pytest
from tests.support.fleet import make_ctx

from playbooks import supervise
from playbooks.providers import RUNNING, TERMINATED, UNREACHABLE, Node


class Recording:
    def __init__(self, states: dict[str, str], kill_fails: bool = False):
        self.states, self.kill_fails = dict(states), kill_fails
        self.counts, self.killed, self.waited = [], [], []

    def list_nodes(self, c, name):
        return [Node(name=m, host="127.0.0.1", state=s, id=m) for m, s in self.states.items()]

    def create(self, c, spec):
        self.counts.append(spec.count)        # makes nothing: replace() then says so and returns []
        return self.list_nodes(c, spec.name)

    def wait_ready(self, c, name, timeout, only=None):
        self.waited.append(sorted(only or ()))     # a machine taken as the replacement
        return []

    def kill_node(self, c, name, machine):
        if self.kill_fails:
            raise RuntimeError("the cloud said no")
        self.killed.append(machine)
        self.states[machine] = TERMINATED


def a_run(*extra):
    nodes = [{"name": f"f-{i}", "shard": i} for i in range(3)] + list(extra)
    return {"run_id": "r", "fleet": "f", "provider": "local", "shards": 3, "nodes": nodes}


@pytest.fixture
def ctx(tmp_path):
    return make_ctx(tmp_path, fleet__ready_timeout=1.0)


def replace_with(monkeypatch, c, prov, record, gone_names, events):
    monkeypatch.setattr(supervise, "provider_of", lambda _c, _p: prov)
    gone = [e for e in record["nodes"] if e["name"] in gone_names]
    return supervise.replace(c, record, gone, events)


def test_a_preempted_node_within_its_notice_is_replaced_beside_it_not_after_it(ctx, monkeypatch):
    """f-1 preempted (its machine alive for the rest of the notice), f-9 an earlier preempted node already
    replaced by f-3 and still alive too: create is asked for 3 + 2, so that it makes one machine now."""
    record = a_run({"name": "f-3", "shard": 2, "replaces": "f-9"}, {"name": "f-9", "shard": 2, "replaced_by": "f-3"})
    record["nodes"][2]["replaced_by"] = "f-9"           # shard 2: f-2 -> f-9 -> f-3
    prov = Recording({"f-0": RUNNING, "f-1": RUNNING, "f-3": RUNNING, "f-9": RUNNING})
    events = {"f-1": {"cause": "preempted", "machine_id": "f-1"},
              "f-2": {"cause": "lost", "machine_id": "f-2", "replaced_by": "f-9"},
              "f-9": {"cause": "preempted", "machine_id": "f-9", "replaced_by": "f-3"}}
    assert replace_with(monkeypatch, ctx, prov, record, {"f-1"}, events) == []
    assert prov.counts == [5] and prov.killed == []
    assert prov.waited == []          # neither machine on its way out was taken for the new one
    prov.states["f-9"] = TERMINATED                      # its notice ran out meanwhile
    replace_with(monkeypatch, ctx, prov, record, {"f-1"}, events)
    assert prov.counts[-1] == 4 and prov.waited == []


def test_a_lost_machine_still_listed_is_made_to_vanish_and_not_counted(ctx, monkeypatch):
    """f-2 lost (paused: listed unreachable), f-1 failed (listed running): both killed first, then create
    refills to the size, 3."""
    prov = Recording({"f-0": RUNNING, "f-1": RUNNING, "f-2": UNREACHABLE})
    events = {"f-1": {"cause": "failed"}, "f-2": {"cause": "lost"}}
    replace_with(monkeypatch, ctx, prov, a_run(), {"f-1", "f-2"}, events)
    assert sorted(prov.killed) == ["f-1", "f-2"] and prov.counts == [3]
    prov = Recording({"f-0": RUNNING, "f-1": RUNNING, "f-2": TERMINATED})
    replace_with(monkeypatch, ctx, prov, a_run(), {"f-2"}, {"f-2": {"cause": "lost"}})
    assert prov.killed == [] and prov.counts == [3]        # already gone: nothing to kill


def test_a_machine_the_cloud_would_not_remove_gets_a_replacement_beside_it(ctx, monkeypatch, capsys):
    prov = Recording({"f-0": RUNNING, "f-1": RUNNING, "f-2": UNREACHABLE}, kill_fails=True)
    replace_with(monkeypatch, ctx, prov, a_run(), {"f-2"}, {"f-2": {"cause": "lost"}})
    assert prov.counts == [4]
    assert "could not remove f-2 (the cloud said no)" in capsys.readouterr().out


def test_the_report_ends_the_run_at_the_first_look_that_saw_every_item_settled(ctx):
    """The supervisor goes on looking until every node has ended (a second or more after the last output): the
    wall time and the ETA's error count from the first look that saw all items settled (they took the last one,
    and the ETA seemed 2-3 % of the run worse than the chaos test's own count from the outputs' times)."""
    record = {"run_id": "r", "started_at": 100.0, "nodes": [], "events": {}}
    polls = [{"t": 100.0 + t, "done": d, "failed": 0, "total": 10, "eta_s": e}
             for t, d, e in ((1.0, 1, 9.0), (5.0, 5, 5.0), (10.0, 10, 0.0), (11.0, 10, 0.0), (12.5, 10, 0.0))]
    snap = {"total": 10, "done": 10, "failed": 0, "processed": 10, "cost_usd": None}
    report = supervise.final_report(ctx, record, snap, polls, None)
    assert report["wall_s"] == 10.0 and report["eta_error_max_pct"] == 0.0
