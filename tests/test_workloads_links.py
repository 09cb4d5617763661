"""Workloads and the files they do not own: symlinks out of --src, long names, a full destination disk."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.workloads import SKIMAGE_DATA, check_jpeg_outputs, fleetwork, run, summary_of

import fw_outputs  # noqa: E402 - workloads/ is on sys.path (workloads_support)


@pytest.fixture
def linked_src(tmp_path):
    """--src with: a real image, links inside src (absolute and relative), links to real images OUTSIDE src,
    a link to a secret-like file outside, a broken link and a folder link out of src."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    src.mkdir()
    (outside / "deep").mkdir(parents=True)
    shutil.copy(SKIMAGE_DATA / "chelsea.png", src / "real.png")
    shutil.copy(SKIMAGE_DATA / "coffee.png", outside / "coffee.png")
    shutil.copy(SKIMAGE_DATA / "rocket.jpg", outside / "deep" / "rocket.jpg")
    (outside / "secret.jpg").write_text("root:$6$not-an-image:19000:0:99999:7:::\n")
    (src / "inside-abs.png").symlink_to(src / "real.png")
    (src / "inside-rel.png").symlink_to("real.png")
    (src / "out.png").symlink_to(outside / "coffee.png")
    (src / "out-rel.jpg").symlink_to("../outside/deep/rocket.jpg")
    (src / "shadow.jpg").symlink_to(outside / "secret.jpg")
    (src / "broken.jpg").symlink_to(src / "gone.jpg")
    (src / "linked-dir").symlink_to(outside / "deep")             # a folder link: never entered by the listing
    return src, outside


def test_links_out_of_src_are_not_followed_and_say_why(linked_src, tmp_path):
    src, _outside = linked_src
    dst = tmp_path / "dst"
    r = run("resize", "--src", src, "--dst", dst, "--workers", 1)
    assert r.returncode == 0, r.stderr
    assert summary_of(r.stdout)["done"] == 3                       # real.png and its two links inside src
    check_jpeg_outputs(dst, ["real.png", "inside-abs.png", "inside-rel.png"])
    reasons = {item: rec["reason"] for item, rec in fleetwork.read_failures(str(dst)).items()}
    assert reasons == {"out.png": "symlink-outside-src", "out-rel.jpg": "symlink-outside-src",
                       "shadow.jpg": "symlink-outside-src", "broken.jpg": "broken-symlink"}
    rec = fleetwork.read_failures(str(dst))["shadow.jpg"]
    assert "--follow-links" in rec["error"] and "root:" not in json.dumps(rec)   # not read, not quoted


def test_follow_links_reads_them(linked_src, tmp_path):
    src, _outside = linked_src
    dst = tmp_path / "dst"
    r = run("resize", "--src", src, "--dst", dst, "--workers", 1, "--follow-links")
    assert r.returncode == 0, r.stderr
    check_jpeg_outputs(dst, ["real.png", "inside-abs.png", "inside-rel.png", "out.png", "out-rel.jpg"])
    reasons = {item: rec["reason"] for item, rec in fleetwork.read_failures(str(dst)).items()}
    assert reasons["broken.jpg"] == "broken-symlink" and reasons["shadow.jpg"] == "not-an-image"


def test_check_source_names_that_leave_src(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    (tmp_path / "src" / "sub" / "a.npz").write_bytes(b"x")
    (tmp_path / "b.npz").write_bytes(b"x")
    src = str(tmp_path / "src")
    assert fleetwork.check_source(src, "sub/a.npz") == os.path.join(src, "sub/a.npz")
    assert fleetwork.check_source(src, "sub/../sub/a.npz")                   # '..' that stays inside: fine
    for rel in ("../b.npz", str(tmp_path / "b.npz")):                         # pairs files can name anything
        with pytest.raises(fleetwork.BadInput) as exc:
            fleetwork.check_source(src, rel, follow_links=True)
        assert exc.value.reason == "outside-src"
    (tmp_path / "src" / "up").symlink_to(tmp_path)
    with pytest.raises(fleetwork.BadInput) as exc:
        fleetwork.check_source(src, "up/b.npz")                               # a folder link on the way
    assert exc.value.reason == "symlink-outside-src"


def test_features_pairs_cannot_read_outside_src(tmp_path):
    src, dst = tmp_path / "feat", tmp_path / "match"
    src.mkdir()
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\nx.npz,../../etc/passwd.npz\n")
    r = run("features", "--src", src, "--dst", dst, "--match", pairs, "--workers", 1)
    assert r.returncode == 0, r.stderr
    [rec] = fleetwork.read_failures(str(dst)).values()
    assert rec["reason"] == "outside-src"


@pytest.mark.parametrize("stem", ["x" * 251, "é" * 125 + "x", "a-b" * 83 + "zz"])
def test_longest_valid_names_are_written_and_their_temps_swept(tmp_path, stem):
    name = stem + ".png"
    assert len(os.fsencode(name)) <= 255
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    shutil.copy(SKIMAGE_DATA / "chelsea.png", src / name)
    r = run("resize", "--src", src, "--dst", dst, "--workers", 1)
    assert r.returncode == 0 and summary_of(r.stdout)["done"] == 1, r.stdout + r.stderr
    check_jpeg_outputs(dst, [name])
    tmp = os.path.basename(fleetwork.temp_name(str(dst / (stem + ".jpg"))))
    assert len(os.fsencode(tmp)) <= fleetwork.NAME_MAX
    assert fw_outputs.parse_temp(tmp) == (fleetwork.HOST, os.getpid())        # the sweep still knows its owner
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.MonkeyPatch.context() as mp:                                    # a temp a killed run left behind
        mp.setattr(os, "getpid", lambda: dead.pid)                              # (its pid may be longer than ours)
        left = os.path.basename(fleetwork.temp_name(str(dst / (stem + ".jpg"))))
    assert len(os.fsencode(left)) <= fleetwork.NAME_MAX and fw_outputs.parse_temp(left) == (fleetwork.HOST, dead.pid)
    (dst / left).write_bytes(b"partial")
    _outputs, temps = fw_outputs.scan(str(dst))
    assert fleetwork.sweep_temps(temps) == 1 and not (dst / left).exists()


def test_failure_records_behind_links_are_not_read(tmp_path):
    dst, elsewhere = tmp_path / "dst", tmp_path / "elsewhere"
    fleetwork.record_failure(str(elsewhere), "planted.jpg", "empty")
    dst.mkdir()
    (dst / ".failed").symlink_to(elsewhere / ".failed")                       # the folder is a link
    assert fleetwork.read_failures(str(dst)) == {}
    (dst / ".failed").unlink()
    fleetwork.record_failure(str(dst), "real.jpg", "empty")
    planted = elsewhere / ".failed" / os.listdir(elsewhere / ".failed")[0]
    (dst / ".failed" / "x.json").symlink_to(planted)                          # one record is a link
    os.mkfifo(dst / ".failed" / "fifo.json")                                  # and one a FIFO: no hang
    assert list(fleetwork.read_failures(str(dst))) == ["real.jpg"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 384 KB filesystem (tmpfs) as the destination: root only."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "fbtiny", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_destination_disk_is_named_as_such(tmp_path, tiny_disk):
    from PIL import Image
    src, state = tmp_path / "src", tmp_path / "state"
    src.mkdir()
    noise = Image.effect_noise((600, 600), 100).convert("RGB")          # JPEGs that do not compress away
    for i in range(12):
        noise.rotate(i * 30).save(src / f"n{i:02d}.png")
    r = run("resize", "--src", src, "--dst", tiny_disk / "out", "--size", "500", "--workers", 1,
            "--state", state, "--quality", 100)
    assert r.returncode == 3, r.stdout + r.stderr                       # the destination failed mid-run
    assert "destination disk full" in r.stderr.strip().splitlines()[-1]
    exit_ = json.loads((state / "exit.json").read_text())
    beat = json.loads((state / "heartbeat.json").read_text())
    assert exit_["code"] == 3 and exit_["error"].startswith("destination disk full: ")
    assert beat["error"] == exit_["error"]
