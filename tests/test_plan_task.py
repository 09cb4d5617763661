"""`invoke plan`: the table and the JSON from recorded profiles, every machine type of the price tables, the
machine types of fleets made on the GCE fake and on moto, AWS Batch shards, and one-line mistakes."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.support.cloud import FLEET
from tests.support.fleet import invoke_cli, make_ctx

from playbooks import plan
from playbooks.measure import profiles
from playbooks.settings.cloud import AWS_PRICES, GCP_PRICES
from playbooks.providers import FleetSpec
from playbooks.runs.samples import make_samples

RECORDED = json.loads((Path(__file__).parent / "data" / "profile-local-1cpu.json").read_text())


def operator_profile() -> dict:
    """The recorded figures as `invoke bench` on this machine would have written them (not a node's)."""
    p = copy.deepcopy(RECORDED)
    for key in ("node", "machine_type", "provider", "measured_on"):
        p.pop(key)
    p["cores"] = 2
    return p


def node_profile(provider: str, mtype: str, cores: int) -> dict:
    return {**copy.deepcopy(RECORDED), "provider": provider, "machine_type": mtype, "cores": cores,
            "node": f"{FLEET}-0001"}


def _plan(c, capsys, **kw) -> dict:
    plan.plan(c, json_=True, **kw)
    return json.loads(capsys.readouterr().out)


def test_local_plan_from_the_nodes_own_profile(tmp_path, capsys):
    c = make_ctx(tmp_path, bench__profile=str(tmp_path / "none.json"), bench__profiles=str(tmp_path / "profiles"))
    f = profiles.profile_file(c, "local", "1cpu")
    f.parent.mkdir()
    f.write_text(json.dumps(RECORDED))
    make_samples(tmp_path / "data" / "src", 30, size=(200, 150))
    r = _plan(c, capsys, workload="resize", provider="local", sizes="1,2,3")
    assert r["items"] == 30 and r["machine_type"] == "1cpu" and r["inputs"]["item_s"].startswith("measured on")
    assert r["model"]["item_s"] == RECORDED["item_seconds"]["resize"]
    assert r["model"]["machine_cores"] >= 1 and r["inputs"]["shared_disk"].startswith("default: DESIGN.md")
    assert [o["nodes"] for o in r["options"]] == [1, 2, 3] and r["recommended"]["nodes"] in (1, 2, 3)
    assert all(o["cost_usd"] is None for o in r["options"])            # a local fleet has no price
    # the table: every size, the recommended one starred, where the figures come from
    plan.plan(c, workload="resize", provider="local", sizes="1,2,3", items=600)
    out = capsys.readouterr().out
    assert "600 items of resize on local 1cpu" in out and "recommended:" in out and " * " in out
    assert "not measured on this fleet" in out


@pytest.mark.parametrize("provider, mtype", [("gcp", t) for t in GCP_PRICES] + [("aws", t) for t in AWS_PRICES])
def test_every_priced_machine_type_plans_at_its_spot_price(tmp_path, capsys, provider, mtype):
    """Nothing measured on that type yet: this machine's figures, marked as a guess; cores from the type name."""
    c = make_ctx(tmp_path, bench__profile=str(tmp_path / "here.json"), bench__profiles=str(tmp_path / "profiles"))
    Path(c.config.bench.profile).write_text(json.dumps(operator_profile()))
    r = _plan(c, capsys, workload="resize", items=100_000, provider=provider, machine_type=mtype, sizes="1,5,20")
    assert r["inputs"]["item_s"].startswith("guess: measured on this machine")
    spot = (GCP_PRICES if provider == "gcp" else AWS_PRICES)[mtype][0]
    assert r["model"]["cores"] == profiles.type_cores(mtype) and r["model"]["node_price_h"] == spot
    for o in r["options"]:
        assert o["cost_usd"] == pytest.approx(o["nodes"] * spot * max(o["wall_s"], 60) / 3600, abs=1e-4)
    assert r["head"] == "tunnel" and r["options"][-1]["bottleneck"] in ("operator uplink", "node CPU")


def test_gce_fake_fleet_type_is_planned_from_its_node_profile(gcp_ctx, gce, capsys, tmp_path):
    from playbooks.providers import gcp
    c = gcp_ctx
    c.config.bench.profile = str(tmp_path / "none.json")
    c.config.bench.profiles = str(tmp_path / "profiles")
    c.config.gcp.machine_type = "e2-standard-4"
    gcp.create(c, FleetSpec(name=FLEET, count=2, head="tunnel"))
    mtype = profiles.machine_type(c, "gcp", gcp.list_nodes(c, FLEET)[0])
    assert mtype == "e2-standard-4"
    f = profiles.profile_file(c, "gcp", mtype)   # where bench --node puts it
    f.parent.mkdir()
    f.write_text(json.dumps(node_profile("gcp", mtype, 4)))
    r = _plan(c, capsys, workload="features", items=330_000, provider="gcp", machine_type=mtype,
              deadline="2h")
    assert r["inputs"]["item_s"].startswith(f"measured on {FLEET}-0001 (gcp e2-standard-4")
    assert (r["model"]["cores"], r["model"]["node_price_h"]) == (4, 0.0402)
    # behind the tunnel every input climbs the operator's uplink: no size makes 2 h
    assert r["recommended"]["bottleneck"] == "operator uplink" and "no size meets" in r["recommended"]["why"]
    c.config.gcp.head = "instance"                 # the data next to the nodes: the deadline is met
    r = _plan(c, capsys, workload="features", items=330_000, provider="gcp", machine_type=mtype, deadline="2h")
    assert r["recommended"]["wall_s"] <= 7200 and "cheapest that meets" in r["recommended"]["why"]
    assert r["model"]["head_price_h"] == GCP_PRICES["e2-standard-2"][1]
    gcp.terminate(c, FLEET)


def test_moto_fleet_type_with_a_head_instance(aws_ctx, capsys, tmp_path):
    from playbooks.providers import aws
    c = aws_ctx
    c.config.bench.profile = str(tmp_path / "none.json")
    c.config.bench.profiles = str(tmp_path / "profiles")
    c.config.aws.instance_type = "c6i.large"
    c.config.aws.head = "instance"
    aws.create(c, FleetSpec(name=FLEET, count=1, head="tunnel"))
    mtype = profiles.machine_type(c, "aws", aws.list_nodes(c, FLEET)[0])
    assert mtype == "c6i.large"
    f = profiles.profile_file(c, "aws", mtype)
    f.parent.mkdir()
    f.write_text(json.dumps(node_profile("aws", mtype, 2)))
    r = _plan(c, capsys, workload="resize", items=330_000, provider="aws", budget=0.5)
    assert r["machine_type"] == "c6i.large" and r["head"] == "instance"
    assert r["model"]["node_price_h"] == AWS_PRICES["c6i.large"][0]
    assert r["model"]["head_price_h"] == AWS_PRICES["t3.medium"][1]          # the head is on-demand
    for o in r["options"]:
        hours = max(o["wall_s"], 60) / 3600
        assert o["cost_usd"] == pytest.approx((o["nodes"] * 0.034 + 0.0416) * hours, abs=1e-4)
    assert r["recommended"]["cost_usd"] <= 0.5 and "budget" in r["recommended"]["why"]
    aws.terminate(c, FLEET)


def test_batch_shards_jobs_and_overhead(tmp_path, capsys):
    c = make_ctx(tmp_path, bench__profile=str(tmp_path / "none.json"), bench__profiles=str(tmp_path / "profiles"))
    f = profiles.profile_file(c, "aws", str(c.config.aws.instance_type))
    f.parent.mkdir()
    slow = node_profile("aws", str(c.config.aws.instance_type), 2)
    slow["item_seconds"]["features"] = 5.0        # 1,290 items a job at 256 shards: start-up is 7 %
    f.write_text(json.dumps(slow))
    r = _plan(c, capsys, workload="features", items=330_000, engine="batch")
    by = {o["shards"]: o for o in r["options"]}
    assert {256, 4096, 65536} <= set(by)
    assert by[65536]["warning"] and not by[256]["warning"]
    assert by[65536]["items_per_job"] == 6 and by[256]["jobs"] == 256
    assert r["recommended"]["overhead_share"] <= 0.10 and "fleet" in r      # the EC2 fleet plan rides along
    plan.plan(c, workload="features", items=330_000, engine="batch")
    out = capsys.readouterr().out
    assert "AWS Batch, one job per shard" in out and "65,536" in out


@pytest.mark.parametrize("args, message", [
    (["--workload", "resize", "--items", "10", "--provider", "gcp"], "no measured time per item of resize"),
    (["--workload", "resize", "--items", "10", "--deadline", "soon"], "--deadline 'soon': write it like"),
    (["--workload", "resize", "--items", "10", "--src", "src"], "give --items N or --src S"),
    (["--workload", "resize", "--items", "10", "--deadline", "1h", "--budget", "5"], "not both"),
    (["--workload", "nope", "--items", "10"], "unknown workload 'nope'"),
    (["--workload", "resize", "--items", "10", "--sizes", "0,2"], "--sizes '0,2'"),
    (["--workload", "resize", "--items", "10", "--provider", "azure"], "unknown provider 'azure'"),
    (["--workload", "resize", "--src", "missing"], "source folder missing does not exist"),
])
def test_mistakes_are_one_line(fleet_base, monkeypatch, args, message):
    monkeypatch.setenv("INVOKE_BENCH_PROFILE", str(fleet_base / "none.json"))
    monkeypatch.setenv("INVOKE_BENCH_PROFILES", str(fleet_base / "profiles"))
    r = invoke_cli(fleet_base, "plan", *args)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_json_only(fleet_base, monkeypatch):
    (fleet_base / "profiles").mkdir(exist_ok=True)
    (fleet_base / "profiles" / "local-1cpu.json").write_text(json.dumps(RECORDED))
    monkeypatch.setenv("INVOKE_BENCH_PROFILES", str(fleet_base / "profiles"))
    r = invoke_cli(fleet_base, "plan", "--workload", "edges", "--items", "5000", "--sizes", "1,2", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data["recommended"]) >= {"nodes", "wall_s", "cost_usd", "bottleneck"}
    assert [o["nodes"] for o in data["options"]] == [1, 2] and data["items"] == 5000


def test_a_profile_measured_on_a_busy_machine_is_flagged(tmp_path, capsys):
    c = make_ctx(tmp_path, bench__profile=str(tmp_path / "none.json"), bench__profiles=str(tmp_path / "profiles"))
    f = profiles.profile_file(c, "local", "1cpu")
    f.parent.mkdir()
    f.write_text(json.dumps({**RECORDED, "load_average_1m": 4.4, "cpus": 2}))
    r = _plan(c, capsys, workload="resize", items=100, provider="local")
    assert any("busy (load 4.4 on 2 CPU(s))" in n for n in r["notes"])
    f.write_text(json.dumps({**RECORDED, "load_average_1m": 0.2, "cpus": 2}))
    assert _plan(c, capsys, workload="resize", items=100, provider="local")["notes"] == []


def test_local_plan_from_the_shared_disk_bench_node_measured(tmp_path, capsys):
    """A node profile with the probe's figures: the plan takes the shared disk's CPU per item and one worker's
    wait on it from there, per workload, instead of DESIGN.md's defaults."""
    c = make_ctx(tmp_path, bench__profile=str(tmp_path / "none.json"), bench__profiles=str(tmp_path / "profiles"))
    p = copy.deepcopy(RECORDED)
    item_s = p["item_seconds"]["resize"]
    p["shared_disk"] = {"resize": {"items": 200, "node_cpu_s_per_item": 0.0025, "head_cpu_s_per_item": 0.002,
                                   "item_wall_s": item_s + 0.004, "work_cpu_s_per_item": item_s},
                        "features": {"items": 200, "node_cpu_s_per_item": 0.009, "head_cpu_s_per_item": None,
                                     "item_wall_s": 0.05, "work_cpu_s_per_item": 0.04}}
    f = profiles.profile_file(c, "local", "1cpu")
    f.parent.mkdir()
    f.write_text(json.dumps(p))
    r = _plan(c, capsys, workload="resize", provider="local", sizes="1,2", items=1000)
    assert r["model"]["node_disk_s"] == 0.0025 and r["model"]["head_disk_s"] == 0.002
    assert r["model"]["io_s"] == pytest.approx(0.004)
    assert r["inputs"]["shared_disk"].startswith("measured by bench --node")
    assert "waiting on the shared disk" in r["inputs"]["io_wait"]
    r = _plan(c, capsys, workload="features", provider="local", sizes="1,2", items=1000)
    assert r["model"]["node_disk_s"] == 0.009                    # the features entry, not resize's
    assert r["model"]["head_disk_s"] == pytest.approx(1.3e-3)   # not measured (a head instance): the default
    assert "head not measured" in r["inputs"]["shared_disk"]


def test_local_plan_counts_the_runners_cpu_and_their_starts_from_the_probe(tmp_path, capsys):
    """A probe that measured the runner's CPU through the mount and its start: the machine term of a local
    fleet takes them (an older probe without a start figure: the work's time, as before), and the plan says
    what its run time leaves out."""
    c = make_ctx(tmp_path, bench__profile=str(tmp_path / "none.json"), bench__profiles=str(tmp_path / "profiles"))
    p = copy.deepcopy(RECORDED)
    item_s = p["item_seconds"]["resize"]
    entry = {"items": 200, "node_cpu_s_per_item": 0.0015, "head_cpu_s_per_item": 0.0013,
             "item_wall_s": item_s + 0.002, "work_cpu_s_per_item": item_s + 0.002,
             "start_cpu_s": 0.25, "run_cpu_s_per_item": item_s + 0.00075, "help_cpu_s_per_item": 0.0009}
    p["shared_disk"] = {"resize": entry}
    f = profiles.profile_file(c, "local", "1cpu")
    f.parent.mkdir()
    f.write_text(json.dumps(p))
    r = _plan(c, capsys, workload="resize", provider="local", sizes="1,2,3", items=600)
    assert r["model"]["run_cpu_s"] == item_s + 0.00075 and r["model"]["start_cpu_s"] == 0.25
    assert r["model"]["help_cpu_s"] == 0.0009 and "0.90 ms for each node beyond the first" in r["inputs"]["machine_cpu"]
    assert "to start each node's runner (measured" in r["inputs"]["machine_cpu"]
    assert "not the start of the `invoke` command" in r["run_s_means"]
    f.write_text(json.dumps({**p, "shared_disk": {"resize": {k: v for k, v in entry.items()
                                                             if k not in ("start_cpu_s", "run_cpu_s_per_item",
                                                                          "help_cpu_s_per_item")}}}))
    r = _plan(c, capsys, workload="resize", provider="local", sizes="1,2,3", items=600)
    assert r["model"]["run_cpu_s"] is None and r["model"]["start_cpu_s"] == r["model"]["help_cpu_s"] == 0.0
    assert "not measured" in r["inputs"]["machine_cpu"]
    plan.plan(c, workload="resize", provider="local", sizes="1,2,3", items=600)
    assert "run: `invoke run --wait` on a fleet that is up" in capsys.readouterr().out
