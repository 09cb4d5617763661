"""Image decode: the cheapest way to turn a 1024x768 JPEG into a 128x128 thumbnail, in one process.

Question: on the same JPEGs (made from scikit-image's shipped sample photos, resized to 1024x768), how many
images per second do plain Pillow (full decode, then resize), Pillow draft mode (the JPEG decoder scales by
1/2, 1/4 or 1/8 while decoding, so most pixels are never produced) and OpenCV (``imread`` + ``INTER_AREA``
resize, held to one thread) manage?

How to read it: images per second = ``extra_info.images / median``; compare the three rows.  Draft mode only
helps JPEG, and only when the target is at most half the source size.  ``decode: JPEG to 128x128, pool``
repeats the two fast ones over a process pool (one process per core, one chunk per worker) to show how far
they scale on this machine.
"""
from __future__ import annotations

import shutil
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

cv2 = pytest.importorskip("cv2")
from PIL import Image  # noqa: E402

SIZE = (128, 128)


def _sources():
    from skimage import data

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory, sized):
    n = sized(small=8, default=48, large=200)
    d = tmp_path_factory.mktemp("jpegs")
    bases = [Image.fromarray(a).convert("RGB").resize((1024, 768), Image.Resampling.LANCZOS) for a in _sources()]
    paths = []
    for i in range(n):
        im = bases[i % len(bases)]
        if i >= len(bases):  # not byte-identical files: shift the picture a little
            im = im.rotate(i % 7 - 3)
        p = d / f"img-{i:04d}.jpg"
        im.save(p, quality=90)
        paths.append(str(p))
    yield paths
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def one_cv_thread():
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


def pil_thumb(path):
    with Image.open(path) as im:
        return im.convert("RGB").resize(SIZE).size


def pil_draft_thumb(path):
    with Image.open(path) as im:
        im.draft("RGB", SIZE)
        return im.convert("RGB").resize(SIZE).size


def cv_thumb(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return cv2.resize(img, SIZE, interpolation=cv2.INTER_AREA).shape[1::-1]


DECODERS = {"pil": pil_thumb, "pil-draft": pil_draft_thumb, "opencv": cv_thumb}


@pytest.mark.parametrize("how", list(DECODERS))
def test_decode(benchmark, jpegs, one_cv_thread, sized, how):
    """JPEG -> 128x128 thumbnails in this process; images/s = extra_info.images / median."""
    thumb = DECODERS[how]
    benchmark.group = "decode: JPEG to 128x128"
    benchmark.extra_info.update(how=how, images=len(jpegs), source="1024x768", target="128x128", processes=1)

    def run(paths):
        return [thumb(p) for p in paths]

    sizes = benchmark.pedantic(run, args=(jpegs,), rounds=sized(small=2, default=3, large=3))
    assert sizes == [SIZE] * len(jpegs)


def thumbs(how, paths):
    if how == "opencv":
        cv2.setNumThreads(1)
    return [DECODERS[how](p) for p in paths]


@pytest.mark.parametrize("how", ["pil-draft", "opencv"])
def test_decode_pool(benchmark, pools, jpegs, n_workers, sized, how):
    """The two fast decoders over one process per core: how far they scale here."""
    benchmark.group = "decode: JPEG to 128x128, pool"
    benchmark.extra_info.update(how=how, images=len(jpegs), source="1024x768", target="128x128",
                                processes=n_workers)
    size = -(-len(jpegs) // n_workers)
    chunks = [jpegs[i:i + size] for i in range(0, len(jpegs), size)]

    def run(pool):
        return [s for part in pool.map(thumbs, [how] * len(chunks), chunks) for s in part]

    def warm(pool):
        list(pool.map(time.sleep, [0.02] * n_workers))

    sizes = benchmark.pedantic(run, setup=pools.setup(lambda: ProcessPoolExecutor(n_workers), warm),
                               teardown=pools.teardown, rounds=sized(small=2, default=3, large=3))
    assert sizes == [SIZE] * len(jpegs)
