"""`invoke run --workload resize --then edges|features` on a real local fleet (issue 13, item 6): the second stage
reads the first one's output folder, starts once the first is complete, and each skips what is done."""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from tests.support.fleet import bring_up, invoke_cli, make_ctx, outputs

from playbooks import teardown
from playbooks.runs import state as runstate
from playbooks.runs.samples import make_samples

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(600)]
NAME = "stages" + secrets.token_hex(2)
IMAGES = 16


@pytest.fixture(scope="module")
def up(fleet_base):
    c = make_ctx(fleet_base, job__poll=0.3, local__cores_per_node=1)
    make_samples(fleet_base / "data" / "src", IMAGES, size=(160, 120))
    try:
        yield bring_up(c, NAME, 2)
    finally:
        teardown.teardown(c, name=NAME)


def runs_of(c) -> list[dict]:
    """Every run record on the shared disk, oldest first."""
    folder = Path(c.config.shared.root) / runstate.STATE / "runs"
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
