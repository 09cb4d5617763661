"""workloads/resize.py on real, awkward and bad images."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.support.workloads import (PY, SKIMAGE_DATA, awkward_set, bad_set, check_jpeg_outputs, fleetwork, real_set,
                               run, script, summary_of, temp_files)


def reference(path: Path, size: int = 128) -> np.ndarray:
    """What resize should produce, made the slow obvious way: exif_transpose, RGB, center crop, resize."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        w, h = im.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        return np.asarray(im.crop(box).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32)


def test_help_explains():
    r = run("resize", "--help")
    assert r.returncode == 0
    for word in ("--src", "--dst", "--size", "--shard", "--retry-failed", "EXIF", "draft"):
        assert word in r.stdout


def test_real_images(tmp_path):
    names = real_set(tmp_path / "src")
    r = run("resize", "--src", tmp_path / "src", "--dst", tmp_path / "dst", "--size", 128, "--workers", 2)
    assert r.returncode == 0, r.stderr
    assert summary_of(r.stdout)["done"] == len(names)
    check_jpeg_outputs(tmp_path / "dst", names)
    for name in names:       # draft decoding + JPEG: close to the full-resolution reference
        diff = np.abs(pixels(tmp_path / "dst" / (os.path.splitext(name)[0] + ".jpg"))
                      - reference(tmp_path / "src" / name)).mean()
        assert diff < 8, (name, diff)
    assert not temp_files(tmp_path / "dst")


def test_awkward_images(tmp_path):
    kinds = awkward_set(tmp_path / "src")
    dst = tmp_path / "dst"
    assert fleetwork.main(fleetwork.load("resize"),
                          ["--src", str(tmp_path / "src"), "--dst", str(dst), "--workers", "1", "--quiet"]) == 0
    check_jpeg_outputs(dst, kinds)
    out = {name: pixels(dst / (os.path.splitext(name)[0] + ".jpg")) for name in kinds}
    # EXIF orientation honoured: matches exif_transpose, and differs from ignoring the tag
    plain = reference(SKIMAGE_DATA / "chelsea.png")
    for o in (3, 6, 8):
        ref = reference(tmp_path / "src" / f"exif{o}.jpg")
        assert np.abs(out[f"exif{o}.jpg"] - ref).mean() < 8, o
        assert np.abs(out[f"exif{o}.jpg"] - plain).mean() > 20, o
    # CMYK and 16-bit come out like their 8-bit RGB originals
    assert np.abs(out["cmyk.jpg"] - reference(SKIMAGE_DATA / "astronaut.png")).mean() < 10
    assert np.abs(out["gray16.png"] - reference(SKIMAGE_DATA / "camera.png")).mean() < 5
    # transparent pixels on white; the opaque half keeps its colour (crop 50..150 of 200 -> left half white)
    for name in ("palette.png", "rgba.png"):
        left, right = out[name][64, 20], out[name][64, 108]
        assert left.min() > 230, (name, left)
        assert right[2] > 200 and right[0] < 40, (name, right)
    # first frame of multi-frame files (red)
    for name in ("anim.gif", "pages.tiff"):
        r_, g_, b_ = out[name].reshape(-1, 3).mean(0)
        assert r_ > 200 and g_ < 40 and b_ < 40, (name, r_, g_, b_)
    assert (dst / "with space" / "ünïcødé" / "café ☕ photo.jpg").is_file()


def test_undecodable_file_name(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    odd = os.fsdecode(b"caf\xe9-latin1.png")              # not UTF-8: the item id carries a surrogate
    shutil.copy(SKIMAGE_DATA / "chelsea.png", os.path.join(src, odd))
    (src / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"")
    wl = fleetwork.load("resize")
    assert fleetwork.main(wl, ["--src", str(src), "--dst", str(tmp_path / "d"), "--workers", "1", "--quiet"]) == 0
    check_jpeg_outputs(tmp_path / "d", [odd])
    assert list(fleetwork.read_failures(str(tmp_path / "d"))) == [os.fsdecode(b"bad\xff.jpg")]


def test_sizes_and_quality_options(tmp_path):
    shutil.copy(SKIMAGE_DATA / "coffee.png", tmp_path / "coffee.png")
    (tmp_path / "src").mkdir()
    shutil.move(tmp_path / "coffee.png", tmp_path / "src" / "coffee.png")
    assert fleetwork.main(fleetwork.load("resize"), ["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "d"),
                                                     "--size", "37", "--no-draft", "--workers", "1",
                                                     "--quiet"]) == 0
    check_jpeg_outputs(tmp_path / "d", ["coffee.png"], size=37)


def test_bad_inputs_recorded_once(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    expected = bad_set(src)
    shutil.copy(SKIMAGE_DATA / "astronaut.png", src / "good.png")
    r = run("resize", "--src", src, "--dst", dst, "--workers", 2, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    s = summary_of(r.stdout)
    assert (s["done"], s["failed"], s["skipped"]) == (2, len(expected), 0)       # good.png + twin.jpg
    failures = fleetwork.read_failures(str(dst))
    assert set(failures) == set(expected)
    assert len(os.listdir(dst / ".failed")) == len(expected)                     # one file per item
    for item, rec in failures.items():
        assert rec["reason"] in expected[item], (item, rec)
        assert set(rec) == {"item", "reason", "error", "node", "time"}
    outputs = fleetwork.scan_outputs(str(dst))
    assert outputs == {"good.jpg", "twin.jpg"}
    # twin.jpg came from twin.jpg (astronaut), not from twin.png (chelsea)
    assert np.abs(pixels(dst / "twin.jpg") - reference(src / "twin.jpg")).mean() < 8

    # a second run skips the known failures; --retry-failed tries them again (and records them again)
    r2 = run("resize", "--src", src, "--dst", dst, "--workers", 1)
    assert r2.returncode == 0 and summary_of(r2.stdout) == {**summary_of(r2.stdout), "done": 0, "skipped": 2,
                                                            "failed": len(expected)}
    assert '"known_failed": %d' % len(expected) in r2.stderr
    before = {f: os.stat(dst / ".failed" / f).st_mtime_ns for f in os.listdir(dst / ".failed")}
    r3 = run("resize", "--src", src, "--dst", dst, "--workers", 1, "--retry-failed")
    assert r3.returncode == 0 and summary_of(r3.stdout)["failed"] == len(expected)
    after = {f: os.stat(dst / ".failed" / f).st_mtime_ns for f in os.listdir(dst / ".failed")}
    assert set(after) == set(before) and all(after[f] >= before[f] for f in after)
    assert fleetwork.count_progress(fleetwork.load("resize"), str(src), str(dst),
                                    fleetwork.load("resize").parse_args(["--src", str(src), "--dst", str(dst)])) \
        == {"total": len(expected) + 2, "done": 2, "failed": len(expected), "pending": 0}
    assert not temp_files(dst)


def test_fixed_input_clears_its_failure_record(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "later.png").write_text("not yet an image")
    wl = fleetwork.load("resize")
    args = ["--src", str(src), "--dst", str(dst), "--workers", "1", "--quiet"]
    assert fleetwork.main(wl, args) == 0
    assert list(fleetwork.read_failures(str(dst))) == ["later.png"]
    shutil.copy(SKIMAGE_DATA / "chelsea.png", src / "later.png")
    assert fleetwork.main(wl, args + ["--retry-failed"]) == 0
    assert fleetwork.read_failures(str(dst)) == {} and (dst / "later.jpg").is_file()


@pytest.fixture
def unprivileged_user():
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs root, useradd and runuser")
    name = "fbwl" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_unreadable_file_and_unwritable_destination(unprivileged_user):
    base = Path(tempfile.mkdtemp(prefix="fbwl-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        user = pwd.getpwnam(unprivileged_user)
        src, dst = base / "src", base / "dst"
        src.mkdir()
        shutil.copy(SKIMAGE_DATA / "chelsea.png", src / "ok.png")
        shutil.copy(SKIMAGE_DATA / "coffee.png", src / "secret.png")
        os.chmod(src / "secret.png", 0o000)
        dst.mkdir()
        os.chown(dst, user.pw_uid, user.pw_gid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FLEETBOOK_PROFILE": "/nonexistent"}
        cmd = ["runuser", "-u", unprivileged_user, "--", PY, script("resize"), "--src", str(src), "--dst"]
        r = subprocess.run(cmd + [str(dst), "--workers", "1"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert summary_of(r.stdout)["failed"] == 1
        assert fleetwork.read_failures(str(dst))["secret.png"]["reason"] == "unreadable"
        assert not (dst / "secret.jpg").exists() and (dst / "ok.jpg").is_file()
        # a destination the user may not write: exit 2, one line, no traceback
        root_dir = base / "rootonly"
        root_dir.mkdir()
        r = subprocess.run(cmd + [str(root_dir / "out"), "--workers", "1"], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "not writable" in r.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_cannot_start_exits_2_with_one_line(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "afile").write_text("x")
    cases = [
        ["--src", tmp_path / "missing", "--dst", tmp_path / "d"],
        ["--src", tmp_path / "src", "--dst", tmp_path / "afile"],
        ["--src", tmp_path / "src", "--dst", tmp_path / "d", "--shard", "3/2"],
        ["--src", tmp_path / "src", "--dst", tmp_path / "d", "--shard", "x"],
        ["--src", tmp_path / "src", "--dst", tmp_path / "src" / "out"],
    ]
    for args in cases:
        r = run("resize", *args, "--state", tmp_path / "state")
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("resize: error:"), (args, r.stderr)
        assert json.loads((tmp_path / "state" / "exit.json").read_text())["code"] == 2
