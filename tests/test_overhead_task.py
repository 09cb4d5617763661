"""`invoke overhead` without a fleet: the fan-out is replaced by recorded series (tests/data/overhead/)."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
from invoke import Collection, Config, Context
from invoke.exceptions import Exit
from PIL import Image

from playbooks import overhead as ov
from playbooks.settings.defaults import DEFAULTS
from playbooks.measure.verdicts import VERDICTS
from playbooks.providers import Node
from playbooks.ssh.fanout import HostResult

DATA = Path(__file__).parent / "data" / "overhead"
SERIES = ["compute", "under_used", "disk", "network", "memory", "idle"]


def ctx(tmp_path, provider="local", cores=1) -> Context:
    d = copy.deepcopy(DEFAULTS)
    d["shared"]["root"] = str(tmp_path / "data")
    d["fleet"]["state_dir"] = str(tmp_path / "state")
    d["fleet"]["provider"] = provider
    d["local"]["cores_per_node"] = cores
    cfg = Config(overrides={"run": {"hide": True}})
    cfg.load_collection(d)
    return Context(config=cfg)


def node(name: str, **labels) -> Node:
    return Node(name=name, host="127.0.1.10", port=2222, user="fb", python="python3", labels=labels)


def series_for(name: str) -> dict:
    """The recorded series of that name; 'under_used' on a 1-core node: the burner busy half of the time."""
    if name != "under_used":
        return json.loads((DATA / f"{name}.json").read_text())["series"]
    series = json.loads((DATA / "compute.json").read_text())["series"]
    for s in series["samples"]:
        s["procs"]["cpu_cores"] /= 2
        s["procs"]["threads_run"] /= 2
        s["procs"]["threads_other"] = s["procs"]["threads_run"]
    return series


@pytest.fixture
def fleet(monkeypatch):
    """Six nodes, each answering with one recorded series; a seventh that does not answer."""
    nodes = [node(n, **({"link": "fbv123abc2"} if n == "network" else {})) for n in SERIES] + [node("gone")]
    calls = {}

    def fake_nodes(c, name, provider=""):
        return name or c.config.fleet.name, nodes

    def fake_fan_out(c, fleet, nodes_, fn, *, step):
        calls.update(fleet=fleet, step=step, n=len(nodes_), fn=fn)
        out = []
        for n in nodes_:
            if n.name == "gone":
                out.append(HostResult(n, step, False, error="NoValidConnectionsError: Unable to connect"))
            else:
                out.append(HostResult(n, step, True, series_for(n.name)))
        return out

    monkeypatch.setattr(ov, "nodes_or_exit", fake_nodes)
    monkeypatch.setattr(ov, "fan_out", fake_fan_out)
    return calls


def test_json_prints_only_a_json_object_with_verdict_and_lever_per_node(tmp_path, fleet, capsys):
    ov.overhead(ctx(tmp_path), seconds=2, json_=True, name="demo")
    out = capsys.readouterr().out
    data = json.loads(out)  # nothing else on stdout
    assert data["fleet"] == "demo" and data["shared_machine"] is True and data["cores_per_node"] == 1
    assert set(data["nodes"]) == set(SERIES) | {"gone"}
    for name, entry in data["nodes"].items():
        assert {"verdict", "lever"} <= set(entry)
        assert entry["lever"].startswith(entry["verdict"] + ": ")
    assert {data["nodes"][n]["verdict"] for n in SERIES} == set(VERDICTS)
    assert data["nodes"]["gone"]["verdict"] == "no-data" and "Unable to connect" in data["nodes"]["gone"]["lever"]
    assert "net_mb_s" in data["shared_figures"]
    assert "net_mb_s" in data["nodes"]["disk"]["shared"]
    assert "net_mb_s" not in data["nodes"]["network"]["shared"]  # its own link (local.netns)
    assert data["fleet_line"]["nodes"] == len(SERIES)
    assert fleet["step"] == "overhead" and fleet["fleet"] == "demo" and fleet["n"] == 7


def test_table_has_a_row_per_node_a_fleet_line_and_says_what_is_shared(tmp_path, fleet, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    ov.overhead(ctx(tmp_path), seconds=2)
    out = capsys.readouterr().out
    for name in SERIES + ["gone"]:
        assert name in out
    for verdict in VERDICTS:
        assert verdict in out
    assert "fleet: 6 node(s), unknown (no heartbeats); slowest" in out
    assert "* shared: local nodes run on one machine" in out and "local.cores_per_node = 1" in out


def test_cloud_fleet_has_no_shared_note(tmp_path, fleet, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    ov.overhead(ctx(tmp_path, provider="gcp"), seconds=2, json_=True)
    data = json.loads(capsys.readouterr().out)
    assert data["shared_machine"] is False and data["shared_figures"] == [] and data["cores_per_node"] is None


def test_plot_writes_a_png_that_opens(tmp_path, fleet, capsys):
    png = tmp_path / "plots" / "overhead.png"
    ov.overhead(ctx(tmp_path), seconds=2, json_=True, plot=str(png))
    captured = capsys.readouterr()
    json.loads(captured.out)  # --plot does not spoil --json's stdout
    assert "wrote" in captured.err
    with Image.open(png) as img:
        img.load()
        assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 300


@pytest.mark.parametrize(("kw", "says"), [
    ({"seconds": 0}, "--seconds must be between 1 and"),
    ({"seconds": 601}, "--seconds must be between 1 and"),
    ({"plot": "out.jpg"}, "ending in .png"),
])
def test_user_mistakes_end_with_what_to_do(tmp_path, fleet, kw, says):
    with pytest.raises(Exit, match=says):
        ov.overhead(ctx(tmp_path), **kw)


def test_a_fleet_without_running_nodes_is_a_one_line_error(tmp_path):
    with pytest.raises(Exit, match="fleet.create"):
        ov.overhead(ctx(tmp_path), seconds=1, name="nosuchfleet")


def test_every_argument_has_help_and_json_is_spelled_json():
    coll = Collection.from_module(ov)
    t = coll["overhead"]
    args = {a.names[0]: a for a in t.get_arguments()}
    assert set(args) == {"seconds", "json", "plot", "name", "provider"}
    assert all(a.help for a in args.values())
    assert (ov.__doc__ or "").strip() and t.__doc__.strip().splitlines()[0]


# ---------------------------------------------------------------------------------------------- heartbeats
def write_run(c, nodes: dict, exits: dict | None = None) -> None:
    from playbooks.runs import state as runstate
    rid = "resize-test"
    runs = runstate.runs_dir(c)
    runstate.write_json(runs / rid / "run.json", {"run_id": rid, "started_at": time.time() - 5, "src": "src",
                                                 "dst": "out", "workload": "resize",
                                                 "nodes": [{"name": n, "shard": i} for i, n in enumerate(nodes)]})
    for n, beat in nodes.items():
        if beat is not None:
            runstate.write_json(runs / rid / "nodes" / n / "heartbeat.json", beat)
    for n, code in (exits or {}).items():
        runstate.write_json(runs / rid / "nodes" / n / "exit.json", {"code": code})
    (runs / "LATEST").write_text(rid + "\n")


def beat(done, updated_at, total=100, rate=2.0):
    return {"node": "x", "pid": 1, "host": "h", "total": total, "done": done, "skipped": 0, "failed": 0,
            "rate_per_s": rate, "started_at": 1000.0, "updated_at": updated_at}


def test_run_state_and_items_rate_come_from_the_heads_disk(tmp_path):
    c = ctx(tmp_path)
    assert ov.read_run_state(c, [node("a")]) == {}  # no run yet
    now = time.time()
    write_run(c, {"a": beat(10, now - 1), "b": beat(100, now - 2), "c": None}, exits={"b": 0})
    st = ov.read_run_state(c, [node("a"), node("b"), node("c"), node("d")])
    assert st["a"][1] == "running" and st["b"][1] == "done" and st["c"] == (None, "starting") and "d" not in st
    assert ov.items_rate(beat(10, now - 6), beat(40, now - 1), "running") == 6.0  # counter moved: 30 in 5 s
    assert ov.items_rate(None, beat(40, now - 1, rate=3.5), "running") == 3.5     # else its own rate
    assert ov.items_rate(beat(10, now - 6), beat(100, now - 1), "done") == 0.0
    assert ov.items_rate(None, None, None) is None


def test_items_per_s_reach_the_fleet_line(tmp_path, fleet, capsys):
    c = ctx(tmp_path)
    now = time.time()
    write_run(c, {"compute": beat(50, now, rate=12.0), "disk": beat(5, now, rate=1.5)})
    ov.overhead(c, seconds=1, json_=True)
    data = json.loads(capsys.readouterr().out)
    assert data["nodes"]["compute"]["items_per_s"] == 12.0
    assert data["fleet_line"]["items_per_s"] == 13.5
    assert data["fleet_line"]["slowest"]["node"] == "disk"
    assert data["fleet_line"]["slowest"]["lever"].startswith("disk-bound: ")
