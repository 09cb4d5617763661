"""`invoke run --workload resize --then edges|features` on a real local fleet (issue 13, item 6): the second stage
reads the first one's output folder, starts once the first is complete, and each skips what is done."""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from tests.support.fleet import bring_up, invoke_cli, outputs, sampled_ctx

from playbooks.runs import state as runstate

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(600)]
NAME = "stages" + secrets.token_hex(2)
IMAGES = 16


@pytest.fixture(scope="module")
def up(fleet_base):
    for c in sampled_ctx(fleet_base, NAME, IMAGES, (160, 120), job__poll=0.3, local__cores_per_node=1):
        yield bring_up(c, NAME, 2)


def runs_of(c) -> list[dict]:
    """Every run record on the shared disk, oldest first."""
    folder = Path(c.config.shared.root) / runstate.STATE / "runs"
    if not folder.is_dir():
        return []
    return sorted((runstate.load_run(c, p.name) for p in folder.iterdir() if p.is_dir()),
                  key=lambda r: r["started_at"])


def exits(c, record: dict) -> list[dict]:
    return [runstate.node_files(c, record["run_id"], e["name"])[1] for e in record["nodes"]]


def stems(c, dst: str, ext: str) -> set[str]:
    return {k.rsplit(".", 1)[0] for k in outputs(c, dst) if k.endswith(ext)}


def test_resize_then_edges_waits_for_the_first_stage_and_reads_its_outputs(up, fleet_base):
    cmd = ("run", "--workload", "resize", "--args", "--size 64", "--then", "edges", "--name", NAME, "--wait")
    result = invoke_cli(fleet_base, *cmd, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    sources = {p.relative_to(fleet_base / "data" / "src").with_suffix("").as_posix()
               for p in (fleet_base / "data" / "src").rglob("*.jpg")}
    assert stems(up, "out", ".jpg") == sources and stems(up, "out-edges", ".png") == sources
    from PIL import Image
    for path in outputs(up, "out-edges").values():
        with Image.open(path) as im:
            assert im.size == (64, 64) and im.mode == "L"           # edges of the resized image, not the source
    first, second = runs_of(up)[-2:]
    assert (first["workload"], first["dst"], first["then"]["workload"]) == ("resize", "out", "edges")
    assert (second["workload"], second["src"], second["dst"]) == ("edges", "out", "out-edges")
    assert first["next_run"] == second["run_id"] and runstate.load_run(up)["run_id"] == second["run_id"]
    assert second["started_at"] >= max(e["finished_at"] for e in exits(up, first))   # the first was complete
    mtimes = {k: p.stat().st_mtime_ns for k, p in {**outputs(up, "out"), **outputs(up, "out-edges")}.items()}

    again = invoke_cli(fleet_base, *cmd, timeout=300)                # the same command: nothing left to do
    assert again.returncode == 0, again.stdout + again.stderr
    first2, second2 = runs_of(up)[-2:]
    assert first2["run_id"] != first["run_id"] and second2["src"] == "out"
    for rec in (first2, second2):       # each node skips every item (its own shard, then as a helper)
        assert sum(e["summary"]["done"] for e in exits(up, rec)) == 0
        assert all(e["code"] == 0 and e["summary"]["skipped"] >= IMAGES / 2 for e in exits(up, rec))
    assert {k: p.stat().st_mtime_ns for k, p in {**outputs(up, "out"), **outputs(up, "out-edges")}.items()} == mtimes


def test_resize_then_features_until_done_supervises_each_stage(up, fleet_base):
    result = invoke_cli(fleet_base, "run", "--workload", "resize", "--dst", "small", "--then", "features",
                        "--then-dst", "feats", "--then-args", "--nfeatures 100", "--name", NAME, "--until-done",
                        timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = runs_of(up)[-2:]
    assert (second["workload"], second["src"], second["dst"], second["args"]) == ("features", "small", "feats",
                                                                                 "--nfeatures 100")
    assert stems(up, "feats", ".npz") == stems(up, "small", ".jpg") and len(stems(up, "feats", ".npz")) == IMAGES
    root = Path(up.config.shared.root)
    for rec in (first, second):          # each stage was supervised to its end: its own final report
        report = json.loads((root / runstate.run_rel(rec["run_id"]) / "report.json").read_text())
        assert report["done"] == IMAGES and report["failed"] == 0 and report["nodes_lost"] == 0
    assert "starting its next stage, features over small into feats" in " ".join(result.stdout.split())


@pytest.mark.parametrize("flags, says", [
    (("--then", "nosuch"), "--then 'nosuch': no such workload"),
    (("--then", "edges", "--engine", "dask"), "--then is for the default engine"),
    (("--then", "edges", "--then-dst", "out"), "must be a folder apart from --dst"),
    (("--then", "edges", "--then-dst", "../x"), "leaves shared.root"),
])
def test_a_bad_then_is_one_line_before_anything_starts(tmp_path, flags, says):
    result = invoke_cli(tmp_path, "run", "--workload", "resize", *flags)
    assert result.returncode != 0
    err = result.stderr.strip()
    assert says in err and "\n" not in err, err
    assert not (tmp_path / "data" / runstate.STATE).exists()      # no run was recorded


def test_attach_to_a_first_stage_goes_on_to_the_second(up, fleet_base):
    """The supervisor of `--then edges --until-done` stopped (Ctrl-C) during the first stage: the nodes go on;
    `run --attach` supervises the first stage to its end, then starts and supervises the second."""
    import os
    import signal
    import subprocess
    import time
    from tests.support.fleet import INVOKE
    from playbooks.settings.defaults import REPO
    env = {**os.environ, "INVOKE_FLEET_STATE_DIR": str(fleet_base / "state"),
           "INVOKE_SHARED_ROOT": str(fleet_base / "data"), "INVOKE_JOB_POLL": "0.3", "INVOKE_JOB_ITEM_DELAY": "0.5",
           "COLUMNS": "200"}
    before = {r["run_id"] for r in runs_of(up)}
    proc = subprocess.Popen([INVOKE, "run", "--workload", "resize", "--dst", "att", "--then", "edges", "--name", NAME,
                             "--until-done"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 120
    while not stems(up, "att", ".jpg"):                 # the first stage has made an output: stop the supervisor
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else ""
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "--attach" in out, out
    first = runstate.load_run(up)
    assert first["run_id"] not in before and first["workload"] == "resize" and not first.get("next_run")
    assert len(stems(up, "att", ".jpg")) < IMAGES                # the stop came during the first stage
    result = invoke_cli(fleet_base, "run", "--attach", first["run_id"], timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(stems(up, "att", ".jpg")) == IMAGES and stems(up, "att-edges", ".png") == stems(up, "att", ".jpg")
    second = runstate.load_run(up)
    assert runstate.load_run(up, first["run_id"])["next_run"] == second["run_id"] and second["src"] == "att"
