"""workloads/edges.py, features.py and gridsearch.py: the stages after resize, and a grid search."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.support.workloads import SKIMAGE_DATA, bad_set, fleetwork, real_set, run, summary_of, temp_files


@pytest.fixture(scope="module")
def resized(tmp_path_factory):
    """The real set, resized to 128 (the usual input of the second stages)."""
    base = tmp_path_factory.mktemp("stages")
    names = real_set(base / "src")
    assert fleetwork.main(fleetwork.load("resize"), ["--src", str(base / "src"), "--dst", str(base / "small"),
                                                     "--workers", "1", "--quiet"]) == 0
    return base, sorted(os.path.splitext(n)[0] + ".jpg" for n in names)


def test_help_of_every_workload():
    for name in ("edges", "features", "gridsearch"):
        r = run(name, "--help")
        assert r.returncode == 0 and "--dst" in r.stdout and "--shard" in r.stdout, name


@pytest.mark.parametrize("method", ["canny", "pil"])
def test_edges_on_resize_output(resized, tmp_path, method):
    base, names = resized
    r = run("edges", "--src", base / "small", "--dst", tmp_path / "edges", "--method", method, "--workers", 2)
    assert r.returncode == 0, r.stderr
    assert summary_of(r.stdout)["done"] == len(names)
    for name in names:
        with Image.open(tmp_path / "edges" / (os.path.splitext(name)[0] + ".png")) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (128, 128)
            arr = np.asarray(im)
        assert 0.005 < (arr > 0).mean() < 0.6, (name, (arr > 0).mean())   # some edges, not everything
        if method == "canny":
            assert set(np.unique(arr)) <= {0, 255}
    assert not temp_files(tmp_path / "edges")


def test_edges_bad_inputs(tmp_path):
    expected = bad_set(tmp_path / "src")
    r = run("edges", "--src", tmp_path / "src", "--dst", tmp_path / "dst", "--workers", 1)
    assert r.returncode == 0, r.stderr
    failures = fleetwork.read_failures(str(tmp_path / "dst"))
    assert set(failures) == set(expected)          # twin.png: twin.jpg -> twin.png is also edges' output
    assert {rec["reason"] for rec in failures.values()} <= set().union(*expected.values())
    assert fleetwork.scan_outputs(str(tmp_path / "dst")) == {"twin.png"}


def test_features_extract_and_match(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    astro = Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB")
    astro.save(src / "astro.jpg", quality=92)
    astro.rotate(12, expand=False).resize((460, 460)).save(src / "astro-rotated.jpg", quality=92)
    shutil.copy(SKIMAGE_DATA / "coffee.png", src / "coffee.png")
    Image.new("RGB", (200, 200), (90, 90, 90)).save(src / "flat.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    r = run("features", "--src", src, "--dst", tmp_path / "feat", "--workers", 2)
    assert r.returncode == 0, r.stderr
    s = summary_of(r.stdout)
    assert (s["done"], s["failed"]) == (4, 1)
    with np.load(tmp_path / "feat" / "astro.npz") as z:
        assert z["keypoints"].dtype == np.float32 and z["keypoints"].shape[1] == 6
        assert z["descriptors"].dtype == np.uint8 and z["descriptors"].shape == (len(z["keypoints"]), 32)
        assert 100 < len(z["keypoints"]) <= 500
        assert z["hist"].shape == (512,) and abs(float(z["hist"].sum()) - 1) < 1e-4
        assert tuple(z["size"]) == (512, 512)
    with np.load(tmp_path / "feat" / "flat.npz") as z:           # a flat image: no keypoints, still valid
        assert z["descriptors"].shape == (0, 32)

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\nastro.jpg,astro-rotated.jpg\nastro.npz,coffee.npz\n# comment\n\n"
                     "astro.npz,missing.npz\n")
    r = run("features", "--src", tmp_path / "feat", "--dst", tmp_path / "match", "--match", pairs, "--workers", 1)
    assert r.returncode == 0, r.stderr
    s = summary_of(r.stdout)
    assert (s["done"], s["failed"]) == (2, 1)
    results = {}
    for out in fleetwork.scan_outputs(str(tmp_path / "match")):
        assert out.startswith("matches/")
        rec = json.loads((tmp_path / "match" / out).read_text())
        results[(rec["a"], rec["b"])] = rec
    same, other = results[("astro.npz", "astro-rotated.npz")], results[("astro.npz", "coffee.npz")]
    assert same["inliers"] >= 20 and same["score"] > 3 * other["score"], (same, other)
    failure = fleetwork.read_failures(str(tmp_path / "match"))["astro.npz\tmissing.npz"]
    assert failure["reason"] == "missing-features"
    # --match all: every pair of the 4 feature files; the pairs already done are not redone elsewhere
    r = run("features", "--src", tmp_path / "feat", "--dst", tmp_path / "all", "--match", "all", "--workers", 1)
    assert r.returncode == 0 and summary_of(r.stdout)["done"] == 6
    assert not temp_files(tmp_path / "match") and not temp_files(tmp_path / "feat")


def test_features_corrupt_npz_is_a_bad_input(tmp_path):
    (tmp_path / "feat").mkdir()
    (tmp_path / "feat" / "a.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(tmp_path / "feat" / "b.npz", keypoints=np.zeros((0, 6), np.float32),
             descriptors=np.zeros((0, 32), np.uint8), hist=np.zeros(512, np.float32))
    r = run("features", "--src", tmp_path / "feat", "--dst", tmp_path / "m", "--match", "all", "--workers", 1)
    assert r.returncode == 0, r.stderr
    assert [rec["reason"] for rec in fleetwork.read_failures(str(tmp_path / "m")).values()] == ["corrupt-features"]


def test_gridsearch_small_grid_and_summary(tmp_path):
    gs = fleetwork.load("gridsearch")
    import gridsearch  # noqa: PLC0415 - the module load() imported

    assert len(gridsearch.grid_points("full")) == 3000
    small = gridsearch.grid_points("small")
    assert len(small) == 8
    r = run("gridsearch", "--dst", tmp_path / "grid", "--workers", 2, timeout=120)   # no --src
    assert r.returncode == 0, r.stderr
    assert summary_of(r.stdout)["done"] == 8
    outputs = fleetwork.scan_outputs(str(tmp_path / "grid"))
    assert outputs == {pid + ".json" for pid in small}
    for pid, params in small.items():
        rec = json.loads((tmp_path / "grid" / f"{pid}.json").read_text())
        assert rec["params"] == params and rec["id"] == pid == gridsearch.point_id(params)
        assert 0.5 < rec["mean_score"] <= 1 and len(rec["scores"]) == 3
    r = run("gridsearch", "--dst", tmp_path / "grid", "--summarize", "--top", 3)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "mean", "std"] and len(lines) == 1 + 3 + 1
    best = max(json.loads((tmp_path / "grid" / o).read_text())["mean_score"] for o in outputs)
    assert f"{best:.4f}" in lines[1]
    with pytest.raises(fleetwork.BadInput):
        gs.process("p-000000000000", None, str(tmp_path / "grid"), gs.parse_args(["--dst", "x"]))
    r = run("gridsearch", "--dst", tmp_path / "grid")                    # finished: nothing to do
    assert summary_of(r.stdout)["skipped"] == 8


@pytest.mark.parametrize("name", ["edges", "features"])
def test_image_stages_on_awkward_and_bad_inputs(tmp_path, name):
    """The second stages decode like resize: awkward images work (orientation applied), bad ones are recorded."""
    from PIL import ImageOps

    from tests.support.workloads import awkward_set

    src = tmp_path / "src"
    kinds = awkward_set(src)
    bad = bad_set(src / "bad")
    r = run(name, "--src", src, "--dst", tmp_path / "dst", "--workers", 2)
    assert r.returncode == 0, r.stderr
    s = summary_of(r.stdout)
    n_bad = len(bad) - 1                          # bad/twin.jpg and bad/twin.png collide; twin.jpg is fine
    assert (s["done"], s["failed"]) == (len(kinds) + 1, n_bad + 1)
    failures = fleetwork.read_failures(str(tmp_path / "dst"))
    assert {f"bad/{k}" for k in bad} == set(failures)
    for item, accepted in bad.items():
        assert failures[f"bad/{item}"]["reason"] in accepted, (item, failures[f"bad/{item}"])
    ext = ".png" if name == "edges" else ".npz"
    for item in kinds:
        out = tmp_path / "dst" / (os.path.splitext(item)[0] + ext)
        with Image.open(src / item) as im:
            w, h = ImageOps.exif_transpose(im).size
        if name == "edges":
            with Image.open(out) as im:
                assert im.mode == "L" and im.size == (w, h), (item, im.size, (w, h))
        else:
            with np.load(out) as z:
                scale = min(1.0, 512 / max(w, h))
                assert tuple(z["size"]) == (round(w * scale), round(h * scale)) or max(z["size"]) == 512, item
                assert z["descriptors"].shape[1] == 32 and abs(float(z["hist"].sum()) - 1) < 1e-4
    assert not temp_files(tmp_path / "dst")
