"""The machine profile built from a benchmark JSON, its report and chart, and the ``invoke bench`` task."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from invoke import Config, MockContext, Result
from invoke.exceptions import Exit
from PIL import Image

from playbooks import bench
from playbooks.measure import report as bench_report
from playbooks.settings.defaults import DEFAULTS

RECORDED = Path(__file__).parent / "data" / "bench-small.json"  # a real `--bench-scale small` run, trimmed


@pytest.fixture
def recorded():
    return json.loads(RECORDED.read_text())


def _row(group, median, **info):
    return {"group": group, "name": f"test[{info}]", "extra_info": info, "stats": {"median": median}}


def synthetic():
    """Round numbers so the derived figures can be checked exactly."""
    rows = [
        _row("start methods: pool start", 0.010, method="fork", parent="small"),
        _row("start methods: pool start", 0.300, method="spawn", parent="small"),
        _row("start methods: pool start", 0.250, method="forkserver", parent="small"),
        _row("start methods: pool start", 0.020, method="fork", parent="numpy"),
        _row("start methods: send vs inherit", 0.4, how="send", megabytes=100),
        _row("start methods: send vs inherit", 0.001, how="inherit", megabytes=100),
        _row("chunks: process pool", 2.0, kind="process", items=10_000, chunksize=1, manual=False),
        _row("chunks: process pool", 0.1, kind="process", items=10_000, chunksize=100, manual=False),
        _row("chunks: process pool", 0.01, kind="process", items=10_000, chunksize=5_000, manual=True),
        _row("memo: reduce to the 10th power", 9.0, how="none"),
        _row("memo: reduce to the 10th power", 1.0, how="dict"),
        _row("memo: reduce to the 10th power", 1.5, how="lru_cache"),
        _row("memo: reduce to the 10th power", 0.1, how="numpy"),
        _row("serialization: write", 6.0, format="csv", size_bytes=100, dtypes_survive=False, changed={"a": "x -> y"}),
        _row("serialization: read", 2.0, format="csv", size_bytes=100, dtypes_survive=False, changed={"a": "x -> y"}),
        _row("serialization: write", 0.1, format="pickle", size_bytes=50, dtypes_survive=True, changed={}),
        _row("serialization: read", 0.1, format="pickle", size_bytes=50, dtypes_survive=True, changed={}),
        _row("serialization: write", 0.3, format="parquet", size_bytes=20, dtypes_survive=True, changed={}),
        _row("threads: I/O-bound items", 5.0, kind="processes", workers=2, items=1000, wait_s=0.01),
        _row("threads: I/O-bound items", 6.0, kind="threads", workers=1, items=1000, wait_s=0.01),
        _row("threads: I/O-bound items", 1.25, kind="threads", workers=8, items=1000, wait_s=0.01),
        _row("threads: I/O-bound items", 0.1, kind="threads", workers=128, items=1000, wait_s=0.01),
        _row("threads: CPU share", 0.25, kind="threads", workers=8, cpu_share=0),
        _row("threads: CPU share", 1.0, kind="processes", workers=2, cpu_share=0),
        _row("threads: CPU share", 0.5, kind="threads", workers=8, cpu_share=50),
        _row("threads: CPU share", 1.0, kind="processes", workers=2, cpu_share=50),
        _row("threads: CPU share", 1.5, kind="threads", workers=8, cpu_share=75),
        _row("threads: CPU share", 1.0, kind="processes", workers=2, cpu_share=75),
        _row("decode: JPEG to 128x128", 1.0, how="pil", images=60),
        _row("decode: JPEG to 128x128", 0.3, how="pil-draft", images=60),
    ]
    return {"datetime": "2026-01-01T00:00:00+00:00",
            "machine_info": {"python_version": "3.11.9", "cpu": {"count": 16, "brand_raw": "Some CPU"},
                             "fleetbook": {"scale": "default", "cores": 2, "cpu_model": "EPYC"}},
            "benchmarks": rows}


def test_profile_has_what_the_workloads_read(recorded):
    p = bench.build_profile(recorded)
    for key in ("version", "created_at", "cores", "cpu_model", "python", "start_method", "pool_start_s",
                "per_task_overhead_us", "thread_process_crossover", "serialization_ranking"):
        assert key in p, key
    assert p["version"] == bench.PROFILE_VERSION
    assert isinstance(p["cores"], int) and p["cores"] >= 1
    assert set(p["pool_start_s"]) == {"fork", "spawn", "forkserver"}
    assert p["start_method"] == min(p["pool_start_s"], key=p["pool_start_s"].get)
    assert p["per_task_overhead_us"] > 0
    assert sorted(p["serialization_ranking"]) == ["csv", "feather", "parquet", "pickle"]
    assert p["serialization"]["pickle"]["dtypes_survive"] is True
    assert p["serialization"]["csv"]["dtypes_survive"] is False
    json.dumps(p)  # serializable as it stands


def test_profile_figures_from_known_medians():
    p = bench.build_profile(synthetic(), source="x.json")
    assert p["cores"] == 2 and p["cpu_model"] == "EPYC" and p["python"] == "3.11.9" and p["scale"] == "default"
    assert p["created_at"] == "2026-01-01T00:00:00+00:00"
    assert p["start_method"] == "fork"
    assert p["pool_start_s"] == {"fork": 0.01, "spawn": 0.3, "forkserver": 0.25}
    assert p["pool_start_big_parent_s"] == {"numpy": {"fork": 0.02}}
    assert p["per_task_overhead_us"] == pytest.approx((2.0 - 0.01) / 10_000 * 1e6)
    assert p["per_item_vs_chunked"] == pytest.approx(200)
    assert p["memo_speedup"] == {"dict": 9.0, "lru_cache": 6.0, "numpy": 90.0}
    assert p["serialization_ranking"] == ["pickle", "csv"]  # parquet was written but not read: not ranked
    cross = p["thread_process_crossover"]
    assert cross["threads"] == 8 and cross["processes"] == 2
    assert cross["speedup_vs_processes"] == {"1": pytest.approx(5 / 6, abs=1e-3), "8": 4.0, "128": 50.0}
    assert cross["cpu_share"] == 62.5  # threads 0.5x at 50 %, 1.5x at 75 %: even at 62.5 %
    assert cross["cpu_share_threads_vs_processes"] == {"0": 0.25, "50": 0.5, "75": 1.5}
    assert "definition" in cross
    assert p["decode_images_per_s"] == {"pil": 60.0, "pil-draft": 200.0}
    r = p["headline_ratios"]
    assert r["csv_vs_pickle_write"] == 60.0 and r["spawn_vs_fork_start"] == 30.0
    assert r["send_vs_inherit_100mb"] == 400.0 and r["processes_vs_threads_128"] == 50.0
    assert r["exists_vs_scandir_flat"] is None  # not measured


def test_no_thread_count_beats_processes():
    data = synthetic()
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"].get("workers") != 8
                          and b["extra_info"].get("workers") != 128]
    assert bench.build_profile(data)["thread_process_crossover"]["threads"] is None


def test_empty_run_gives_a_profile_of_unknowns():
    p = bench.build_profile({"benchmarks": []})
    assert p["start_method"] is None and p["per_task_overhead_us"] is None
    assert p["thread_process_crossover"] is None and p["serialization_ranking"] == []
    assert "n/a" in bench_report.render_report(p)


def test_outputs_profile_report_and_chart(recorded, tmp_path):
    files = bench_report.write_outputs(bench.build_profile(recorded), tmp_path / "sub" / "profile.json")
    assert json.loads(files["profile"].read_text())["cores"] >= 1
    report = files["report"].read_text()
    assert "~800x on 16 cores" in report and "bench-chunks.png" in report
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[0] == "| ratio | this machine | original write-up |"     # no column citing notes elsewhere
    assert all(line.replace("\\|", "").count("|") == 4 for line in table)  # no stray column breaks
    memo = next(line for line in table if line.startswith("| memo: no memo / dict memo"))
    assert "~2.7x" in memo and "exception that was never read" in memo
    pickle = next(line for line in table if line.startswith("| write: CSV / pickle"))
    assert "~100x" not in report and "about 10 minutes" in pickle and "about 20 minutes" in pickle
    assert "DESIGN.md" not in report
    with Image.open(files["chart"]) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200


def _ctx(tmp_path, **bench_cfg):
    cfg = copy.deepcopy(DEFAULTS)
    cfg["bench"].update(profile=str(tmp_path / "profile.json"), **bench_cfg)
    return MockContext(config=Config(overrides=cfg), run=Result(exited=0), repeat=True)


def test_task_from_json_writes_profile(recorded, tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(recorded))
    c = _ctx(tmp_path)
    bench.run(c, from_json=str(src))
    assert not c.run.called
    assert json.loads((tmp_path / "profile.json").read_text())["source"] == str(src)
    assert (tmp_path / "bench-report.md").exists() and (tmp_path / "bench-chunks.png").exists()


def test_task_runs_pytest_then_builds(recorded, tmp_path):
    c = _ctx(tmp_path, scale="small")

    def fake_pytest(cmd, **kwargs):  # stand-in for the real run: it leaves the JSON behind
        (tmp_path / "bench-small.json").write_text(json.dumps(recorded))
        return Result(exited=0)

    c.run.side_effect = fake_pytest
    bench.run(c)
    cmd = c.run.call_args.args[0]
    assert "-m pytest bench" in cmd and "--bench-scale small" in cmd and "-m 'not fleet'" in cmd
    assert f"--benchmark-json {tmp_path / 'bench-small.json'}" in cmd
    assert (tmp_path / "profile.json").exists()
    bench.run(c, fleet=True, pytest_args="-k chunks")
    cmd = c.run.call_args.args[0]
    assert "not fleet" not in cmd and cmd.endswith("-k chunks")


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": "huge"}, "use one of small, default, large"),
    ({"from_json": "/nonexistent/bench.json"}, "no such file"),
    ({"scale": "small"}, "wrote no JSON"),
])
def test_task_mistakes_end_with_what_to_do(tmp_path, kwargs, message):
    with pytest.raises(Exit, match=message):
        bench.run(_ctx(tmp_path), **kwargs)


def test_task_refuses_a_disabled_run(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(Exit, match="no benchmarks"):
        bench.run(_ctx(tmp_path), from_json=str(src))
