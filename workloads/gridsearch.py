"""gridsearch: cross-validated RandomForest over a parameter grid; one grid point = one item = one JSON file.

The grid is criterion x n_estimators x max_features x max_depth (``--grid small``: 8 points for tests and
smoke runs; ``--grid full``: 3 x 10 x 5 x 20 = 3,000 points).  The data set ships inside scikit-learn
(``--dataset digits`` or ``wine``; no download).  Each point's id is ``p-`` + sha1 of its parameters (JSON with
sorted keys)[:12]; its output is ``DST/<id>.json`` = {"params","dataset","cv","mean_score","std_score",
"scores","fit_seconds"}.  --src is not used (optional).  ``--summarize`` prints the best --top points found
in DST as a table instead of running.  --seed is also the forests' random_state.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import sys
import time

import fleetwork

GRIDS = {
    "small": {"criterion": ["gini", "entropy"], "n_estimators": [5, 10], "max_features": ["sqrt"],
              "max_depth": [4, None]},
    "full": {"criterion": ["gini", "entropy", "log_loss"],
             "n_estimators": [10, 20, 30, 50, 75, 100, 150, 200, 300, 400],
             "max_features": ["sqrt", "log2", 0.2, 0.5, None],
             "max_depth": [2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 24, 28, 32, 40, 50, None]},
}


def point_id(params: dict) -> str:
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return "p-" + hashlib.sha1(blob.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=4)
def grid_points(grid: str) -> dict[str, dict]:
    """id -> params for every point of a named grid."""
    spec = GRIDS[grid]
    keys = sorted(spec)
    points = {}
    for values in itertools.product(*(spec[k] for k in keys)):
        params = dict(zip(keys, values))
        points[point_id(params)] = params
    return points


@functools.lru_cache(maxsize=2)
def dataset(name: str):
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "wine": datasets.load_wine}[name]
    return loader(return_X_y=True)


def evaluate(params: dict, data: str = "digits", cv: int = 3, seed: int = 0) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_val_score

    X, y = dataset(data)
    t0 = time.perf_counter()
    model = RandomForestClassifier(random_state=seed, n_jobs=1, **params)
    scores = cross_val_score(model, X, y, cv=cv, n_jobs=1)
    return {"params": params, "dataset": data, "cv": cv, "mean_score": float(scores.mean()),
            "std_score": float(scores.std()), "scores": [float(s) for s in scores],
            "fit_seconds": round(time.perf_counter() - t0, 4)}


def summarize(dst: str, top: int = 10, out=None) -> int:
    out = out or sys.stdout
    rows = []
    for name in sorted(fleetwork.scan_outputs(dst)):
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(dst, name), encoding="utf-8") as f:
                rec = json.load(f)
            rows.append((rec["mean_score"], rec["std_score"], rec["params"], rec.get("fit_seconds", 0.0),
                         name[:-5]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not rows:
        print(f"no results in {dst}", file=out)
        return 1
    rows.sort(key=lambda r: (-r[0], r[1], r[4]))
    header = ("rank", "mean", "std", "criterion", "n_estimators", "max_features", "max_depth", "fit_s", "id")
    table = [header] + [
        (str(i + 1), f"{m:.4f}", f"{s:.4f}", str(p.get("criterion")), str(p.get("n_estimators")),
         str(p.get("max_features")), str(p.get("max_depth")), f"{t:.2f}", pid)
        for i, (m, s, p, t, pid) in enumerate(rows[:top])]
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    for r in table:
        print("  ".join(v.rjust(w) if c < 3 or c in (4, 7) else v.ljust(w)
                        for c, (v, w) in enumerate(zip(r, widths))).rstrip(), file=out)
    print(f"{len(rows)} points in {dst}", file=out)
    return 0


class GridSearch(fleetwork.Workload):
    name = "gridsearch"
    description = __doc__
    epilog = ("examples:\n  python workloads/gridsearch.py --dst data/grid --grid full --shard 0/8\n"
              "  python workloads/gridsearch.py --dst data/grid --summarize --top 5")
    needs_src = False

    def add_arguments(self, parser):
        parser.add_argument("--grid", choices=sorted(GRIDS), default="small",
                            help="small (8 points, default) or full (3,000 points)")
        parser.add_argument("--dataset", choices=("digits", "wine"), default="digits",
                            help="data set shipped with scikit-learn (digits)")
        parser.add_argument("--cv", type=int, default=3, help="cross-validation folds (3)")
        parser.add_argument("--summarize", action="store_true", help="print the best points in --dst and exit")
        parser.add_argument("--top", type=int, default=10, help="rows of --summarize (10)")

    def handle(self, opts):
        if opts.summarize:
            return summarize(opts.dst, opts.top)
        return None

    def list_items(self, src, opts):
        return sorted(grid_points(opts.grid))

    def output_for(self, item, opts):
        return item + ".json"

    def process(self, item, src, dst, opts):
        params = grid_points(opts.grid).get(item)
        if params is None:
            raise fleetwork.BadInput("unknown-grid-point", f"{item} is not in --grid {opts.grid}")
        result = evaluate(params, opts.dataset, opts.cv, opts.seed)
        result["id"] = item
        fleetwork.atomic_write(os.path.join(dst, self.output_for(item, opts)),
                               (json.dumps(result, sort_keys=True) + "\n").encode())


WORKLOAD = GridSearch()

if __name__ == "__main__":
    sys.exit(fleetwork.main(WORKLOAD))
