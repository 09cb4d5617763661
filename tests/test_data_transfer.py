"""data.push / data.pull between a local folder, the shared root on this machine, S3 (a moto server) and GCS
(the GCS emulator, through the real google-cloud-storage client).  Every request the object store gets passes a
counting proxy, so "nothing re-sent" and "one listing, never a request per file" are counted at the server.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from invoke.exceptions import Exit

from tests.support.cloud import make_context
from playbooks import data
from playbooks.settings.defaults import REPO
from playbooks.transfer.stores import temp_name
from tests.support.transfer import make_tree, same_tree

N_SMALL, N_BIG = 1000, 3


def ctx(tmp_path, **data_settings):
    return make_context({"shared": {"root": str(tmp_path / "shared")},
                         "fleet": {"state_dir": str(tmp_path / "state")},
                         "data": {"part_mb": 1, **data_settings}})


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_local_folder_to_shared_root_and_back(tmp_path, capsys):
    made = make_tree(tmp_path / "in", N_SMALL, N_BIG)
    c = ctx(tmp_path)
    data.push(c, from_=str(tmp_path / "in"), to="src", json_=True, threads=8)
    out = last_json(capsys)
    assert (out["copied"], out["skipped"], out["failed"]) == (N_SMALL + N_BIG, 0, 0)
    assert out["bytes_copied"] == sum(map(len, made.values()))
    shared = tmp_path / "shared" / "src"
    assert same_tree(shared, made)
    rel = "big/blob-0.bin"
    assert int((shared / rel).stat().st_mtime) == int((tmp_path / "in" / rel).stat().st_mtime)
    # again: everything is there and the same; a stale temp file of a killed transfer is removed
    (shared / "small" / "0" / temp_name()).write_bytes(b"half")
    data.push(c, from_=str(tmp_path / "in"), to="src", json_=True)
    assert (last_json(capsys)["copied"], same_tree(shared, made)) == (0, True)
    # same size, newer mtime: sent again; the dry run says so and copies nothing
    os.utime(tmp_path / "in" / rel, (time.time() + 5, time.time() + 5))
    data.push(c, from_=str(tmp_path / "in"), to="src", json_=True, dry_run=True)
    dry = last_json(capsys)
    assert (dry["to_copy"], dry["copied"], dry["dry_run"]) == (1, 0, True)
    data.push(c, from_=str(tmp_path / "in"), to="src", json_=True)
    assert last_json(capsys)["copied"] == 1
    data.pull(c, from_="src", to=str(tmp_path / "back"), json_=True)
    assert last_json(capsys)["copied"] == N_SMALL + N_BIG and same_tree(tmp_path / "back", made)


def test_mistakes_are_one_line(tmp_path):
    c = ctx(tmp_path)
    (tmp_path / "in").mkdir()
    for call, match in [
        (lambda: data.push(c, from_=str(tmp_path / "nope"), to="src"), "nothing there"),
        (lambda: data.push(c, from_="", to="src"), "say where"),
        (lambda: data.push(c, from_=str(tmp_path / "in"), to="../escape"), "--to '../escape' leaves shared.root"),
        (lambda: data.pull(c, from_="/etc", to=str(tmp_path / "x")), "--from '/etc' must be relative to shared.root"),
        (lambda: data.pull(c, from_="missing", to=str(tmp_path / "x")), "no such folder in the shared root"),
        (lambda: data.pull(c, from_="src", to="ftp://host/x"), "only s3:// and gs://"),
        (lambda: data.pull(c, from_="src", to="s3://"), "names no bucket"),
    ]:
        with pytest.raises(Exit, match=match):
            call()
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()


def _cli(tmp_path, *argv, **env_vars):
    env = {**os.environ, "INVOKE_SHARED_ROOT": str(tmp_path / "shared"), "INVOKE_DATA_PART_MB": "5",
           "INVOKE_FLEET_STATE_DIR": str(tmp_path / "state"), **env_vars}
    return subprocess.Popen([sys.executable, "-m", "invoke", *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


@pytest.mark.slow   # about 20 s: moto answers about 150 requests a second here, and this makes some 2,800
def test_s3_pull_killed_mid_way_resumes_without_resending(tmp_path, counting_s3, capsys):
    proxy = counting_s3
    made = make_tree(tmp_path / "shared" / "out", N_SMALL, N_BIG, big_mb=6)   # S3 parts are 5 MiB at least
    c = ctx(tmp_path, s3_endpoint=proxy.url, part_mb=5)
    dest = "s3://results/run1"
    # a real `invoke data.pull` in its own process, slowed at the server's door, killed with SIGKILL mid-way
    proxy.delay = 0.01
    proc = _cli(tmp_path, "data.pull", "--from", "out", "--to", dest, "--threads", "4", "--json",
                INVOKE_DATA_S3_ENDPOINT=proxy.url)
    deadline = time.monotonic() + 60
    while len(proxy.requests("PUT")) < 300 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()
    proxy.delay = 0.0
    import boto3
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=proxy.url)
    listed = {o["Key"]: o["Size"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket="results", Prefix="run1/") for o in page.get("Contents", [])}
    complete = {k[len("run1/"):] for k in listed}
    assert 0 < len(complete) < N_SMALL + N_BIG            # killed mid-way
    assert all(listed[f"run1/{rel}"] == len(made[rel]) for rel in complete)   # no half object ever shows
    # resume: only what was not complete is sent, each once
    proxy.clear()
    data.pull(c, from_="out", to=dest, json_=True, threads=8)
    out = last_json(capsys)
    assert (out["copied"], out["skipped"], out["failed"]) == (N_SMALL + N_BIG - len(complete), len(complete), 0)
    sent = [p.split("/results/run1/", 1)[1] for p in proxy.requests("PUT", "/results/run1/")]
    assert not set(sent) & complete                       # nothing re-sent that was complete
    assert set(sent) == set(made) - complete
    assert not proxy.requests("HEAD", "/results/run1/")   # what exists came from the listing
    # pulled back byte-identical (S3 -> shared root); a second pull sends nothing
    data.push(c, from_=dest, to="back", json_=True)
    assert last_json(capsys)["copied"] == N_SMALL + N_BIG and same_tree(tmp_path / "shared" / "back", made)
    proxy.clear()
    data.pull(c, from_="out", to=dest, json_=True)
    assert last_json(capsys)["skipped"] == N_SMALL + N_BIG and not proxy.requests("PUT")
    lists = [q for m, p, q in proxy.log if m == "GET" and p.rstrip("/") == "/results" and "list-type=2" in q]
    assert len(lists) == 2 and len(proxy.log) == 3     # the bucket (HEAD), 1,003 keys: two pages of one listing
    assert not s3.list_multipart_uploads(Bucket="results").get("Uploads")   # a killed multipart was aborted
    proxy.clear()
    with pytest.raises(Exit, match="bucket s3://no-such-bucket cannot be used"):
        data.pull(c, from_="out", to="s3://no-such-bucket/x")
    assert len(proxy.log) == 1                            # one request, not one failure per file


def test_gcs_round_trip_skips_by_checksum(tmp_path, gcs_emulator, capsys):
    proxy = gcs_emulator
    made = make_tree(tmp_path / "shared" / "out", 200, N_BIG)
    c = ctx(tmp_path, gcs_endpoint=proxy.url)
    c.config.gcp.project = "fake-project"
    data.pull(c, from_="out", to="gs://results/run1", json_=True, threads=8)
    out = last_json(capsys)
    assert (out["copied"], out["failed"]) == (200 + N_BIG, 0), out["failures"]
    uploads = proxy.requests("POST", "/upload/storage/v1/b/results/o")
    assert len(uploads) == 200 + N_BIG                     # one upload started per file
    proxy.clear()
    data.pull(c, from_="out", to="gs://results/run1", json_=True)
    assert last_json(capsys)["skipped"] == 200 + N_BIG
    assert not proxy.requests("POST") and not proxy.requests("PUT")
    assert len(proxy.requests("GET", "/storage/v1/b/results/o")) == 1     # one listing, nothing per object
    data.push(c, from_="gs://results/run1", to="back", json_=True)
    assert last_json(capsys)["copied"] == 200 + N_BIG and same_tree(tmp_path / "shared" / "back", made)
    proxy.clear()
    data.push(c, from_="gs://results/run1", to="back", json_=True)      # size + mtime: nothing downloaded
    assert last_json(capsys)["skipped"] == 200 + N_BIG
    per_object = [p for m, p, q in proxy.log if "/o/" in p or "alt=media" in q]
    lists = proxy.requests("GET", "/storage/v1/b/results/o")
    assert per_object == [] and len(lists) == 2     # "is anything there" (one object) and one listing
    with pytest.raises(Exit, match="bucket gs://no-such-bucket does not exist"):
        data.pull(c, from_="out", to="gs://no-such-bucket/x")
