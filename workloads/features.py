"""features: ORB keypoints + descriptors and a colour histogram per image; or score candidate pairs (--match).

Extract mode (default): each image ``SRC/a/b.jpg`` becomes ``DST/a/b.npz`` holding
  keypoints   float32 (N, 6): x, y, size, angle, response, octave (in the coordinates of the image used)
  descriptors uint8 (N, 32): ORB binary descriptors (N <= --nfeatures; N = 0 for a flat image)
  hist        float32 (512,): 8x8x8 RGB histogram, sums to 1 (a small global descriptor)
  size        int32 (2,): width, height of the image the keypoints refer to (after --max-side)
Images are decoded with resize's checks (bad files are recorded failures) and shrunk to --max-side first.

Match mode (``--match PAIRS.csv`` or ``--match all``): --src is a folder of .npz files from extract mode; each
candidate pair is one item (id ``a<TAB>b``) scored by ORB descriptor matching (Hamming, Lowe ratio test
--ratio) and RANSAC homography inliers; output ``DST/matches/<h[:2]>/<h[2:20]>.json`` with h = sha1(pair id):
{"a","b","keypoints_a","keypoints_b","good","inliers","hist_similarity","score"}, score = inliers +
hist_similarity.  PAIRS.csv: two columns of paths relative to --src (``.npz``, or image names, which are mapped
to their .npz); blank lines, ``#`` comments and an ``a,b`` header are ignored.  ``all`` = every pair of the
.npz files under --src (at most --max-pairs).
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import sys

import fleetwork

PAIR_SEP = "\t"


def extract(path: str, nfeatures: int = 500, max_side: int = 512) -> dict:
    """One image file -> dict of arrays (see the module docstring)."""
    import cv2
    import numpy as np
    from PIL import Image

    img = fleetwork.open_image(path, draft=max_side or None, mode="RGB")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    rgb = np.asarray(img)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    orb = cv2.ORB_create(nfeatures=nfeatures)
    kps, desc = orb.detectAndCompute(gray, None)
    keypoints = np.array([(k.pt[0], k.pt[1], k.size, k.angle, k.response, k.octave) for k in kps],
                         dtype=np.float32).reshape(-1, 6)
    if desc is None:
        desc = np.zeros((0, 32), np.uint8)
    hist = cv2.calcHist([rgb], [0, 1, 2], None, [8, 8, 8], [0, 256, 0, 256, 0, 256]).reshape(-1)
    hist = (hist / max(1.0, float(hist.sum()))).astype(np.float32)
    return {"keypoints": keypoints, "descriptors": desc.astype(np.uint8), "hist": hist,
            "size": np.array(img.size, dtype=np.int32)}


def load_features(path: str) -> dict:
    import numpy as np

    try:
        data = fleetwork.read_bytes(path)
    except fleetwork.BadInput as e:
        raise fleetwork.BadInput("missing-features" if e.reason in ("missing", "broken-symlink") else e.reason,
                                 f"{os.path.basename(path)}: {e.detail}") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            out = {k: z[k] for k in ("keypoints", "descriptors", "hist")}
    except Exception as e:  # noqa: BLE001
        raise fleetwork.BadInput("corrupt-features", f"{os.path.basename(path)}: {type(e).__name__}: {e}") from None
    if out["descriptors"].ndim != 2 or out["descriptors"].dtype != np.uint8:
        raise fleetwork.BadInput("corrupt-features", f"{os.path.basename(path)}: bad descriptor array")
    return out


def match_pair(fa: dict, fb: dict, ratio: float = 0.75) -> dict:
    """Score two feature sets: good ORB matches (ratio test), RANSAC inliers, histogram intersection."""
    import cv2
    import numpy as np

    da, db = fa["descriptors"], fb["descriptors"]
    good = []
    if len(da) >= 2 and len(db) >= 2:
        for pair in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(da, db, k=2):
            if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance:
                good.append(pair[0])
    inliers = 0
    if len(good) >= 8:
        pa = np.float32([fa["keypoints"][m.queryIdx][:2] for m in good]).reshape(-1, 1, 2)
        pb = np.float32([fb["keypoints"][m.trainIdx][:2] for m in good]).reshape(-1, 1, 2)
        cv2.setRNGSeed(0)
        _h, mask = cv2.findHomography(pa, pb, cv2.RANSAC, 5.0)
        inliers = int(mask.sum()) if mask is not None else 0
    hist_sim = float(np.minimum(fa["hist"], fb["hist"]).sum()) if len(fa["hist"]) == len(fb["hist"]) else 0.0
    return {"keypoints_a": int(len(da)), "keypoints_b": int(len(db)), "good": len(good), "inliers": inliers,
            "hist_similarity": round(hist_sim, 6), "score": round(inliers + hist_sim, 6)}


def _npz_name(path: str) -> str:
    path = path.strip().replace(os.sep, "/")
    return path if path.lower().endswith(".npz") else os.path.splitext(path)[0] + ".npz"


def read_pairs(path: str) -> list[str]:
    items = set()
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2:
                raise fleetwork.UsageError(f"{path}: each line needs two columns a,b (got {row!r})")
            a, b = row[0].strip(), row[1].strip()
            if (a, b) == ("a", "b"):
                continue
            if PAIR_SEP in a or PAIR_SEP in b:
                raise fleetwork.UsageError(f"{path}: names with a tab are not supported ({row!r})")
            items.add(_npz_name(a) + PAIR_SEP + _npz_name(b))
    return sorted(items)


class Features(fleetwork.FileWorkload):
    name = "features"
    description = __doc__
    epilog = ("examples:\n  python workloads/features.py --src data/out --dst data/feat\n"
              "  python workloads/features.py --src data/feat --dst data/match --match pairs.csv")
    extensions = fleetwork.IMAGE_EXTENSIONS
    out_ext = ".npz"

    def add_arguments(self, parser):
        parser.add_argument("--nfeatures", type=int, default=500, help="ORB keypoints per image (500)")
        parser.add_argument("--max-side", type=int, default=512,
                            help="shrink images whose longer side exceeds this before ORB (512; 0 = never)")
        parser.add_argument("--match", metavar="PAIRS.csv|all", default=None,
                            help="score candidate pairs of .npz files under --src instead of extracting")
        parser.add_argument("--ratio", type=float, default=0.75, help="Lowe ratio test threshold (0.75)")
        parser.add_argument("--max-pairs", type=int, default=100_000,
                            help="refuse --match all when it would make more pairs than this (100000)")

    def check(self, src, dst, opts):
        super().check(src, dst, opts)
        if opts.match and opts.match != "all" and not os.path.isfile(opts.match):
            raise fleetwork.UsageError(f"pairs file not found: {opts.match}")

    def setup_worker(self, opts):
        import cv2

        cv2.setNumThreads(1)

    def list_items(self, src, opts):
        if not opts.match:
            return super().list_items(src, opts)
        if opts.match == "all":
            names = fleetwork.list_files(src, (".npz",))
            n = len(names) * (len(names) - 1) // 2
            if n > opts.max_pairs:
                raise fleetwork.UsageError(f"--match all would make {n} pairs (> --max-pairs {opts.max_pairs})")
            return sorted(a + PAIR_SEP + b for i, a in enumerate(names) for b in names[i + 1:])
        return read_pairs(opts.match)

    def output_for(self, item, opts):
        if not opts.match:
            return super().output_for(item, opts)
        h = hashlib.sha1(item.encode("utf-8", "surrogateescape")).hexdigest()
        return f"matches/{h[:2]}/{h[2:20]}.json"

    def source_files(self, item, opts):
        return item.split(PAIR_SEP) if opts.match else [item]

    def process(self, item, src, dst, opts):
        import numpy as np

        out = os.path.join(dst, self.output_for(item, opts))
        if opts.match:
            a, _, b = item.partition(PAIR_SEP)
            result = {"a": a, "b": b, **match_pair(_cached_features(os.path.join(src, a)),
                                                   _cached_features(os.path.join(src, b)), opts.ratio)}
            fleetwork.atomic_write(out, (json.dumps(result, sort_keys=True) + "\n").encode())
            return
        arrays = extract(os.path.join(src, item), opts.nfeatures, opts.max_side)
        fleetwork.atomic_write(out, lambda f: np.savez(f, **arrays))


@functools.lru_cache(maxsize=256)
def _cached_features(path: str) -> dict:
    """Pairs share images: keep the last few hundred feature files of this process in memory."""
    return load_features(path)


WORKLOAD = Features()

if __name__ == "__main__":
    sys.exit(fleetwork.main(WORKLOAD))
