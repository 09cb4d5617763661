"""Measure this machine before scaling out: the bench suite, then a machine profile the workloads read.

``invoke bench [--scale small|default|large]`` runs ``pytest bench -m 'not fleet'`` with ``--benchmark-json``
(the command is echoed; with ``--fleet`` there is no ``-m`` and it selects exactly what ``pytest bench/`` does,
the benchmarks marked ``fleet`` included, which start a local fleet) and turns the result into
``.fleetbook/profile.json`` (``bench.profile``), a Markdown report of headline ratios next to what the original
write-ups say (``bench-report.md``) and a chart of chunk size against throughput (``bench-chunks.png``).
Workloads read ``start_method``, ``per_task_overhead_us`` and ``cores`` from the profile (on the machine it was
measured on).  ``--from-json`` rebuilds profile, report and chart from a benchmark JSON without measuring again.
"""
from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from invoke import task
from invoke.exceptions import Exit

from .config import REPO, profile_path

PROFILE_VERSION = 1
SCALES = ("small", "default", "large")

CROSSOVER_DEFINITION = (
    "I/O-bound items (each a sleep of wait_s): the smallest measured thread count whose thread pool finishes "
    "the batch faster (median) than a process pool with one process per core; null if none does. "
    "speedup_vs_processes = process-pool time / thread-pool time for each thread count. "
    "cpu_share: items of fixed length, part GIL-holding Python work and part wait; the percentage of work "
    "at which the process pool starts to beat 8 threads, interpolated linearly between the measured shares "
    "(null if it never does); "
    "cpu_share_threads_vs_processes = thread time / process time at each share (> 1: processes win).")
OVERHEAD_DEFINITION = (
    "(median of map with chunksize=1 - median of one manual chunk per worker) / items, in microseconds of "
    "wall time: what handing each item to the pool as its own task adds per item.")

# What the original write-ups say about each headline ratio, word for word where they give a figure; a ratio
# they say nothing about has no entry.  The measured figures of this kind of machine are in the report itself.
MEMO_CAVEAT = ("~2.7x, but from a script whose memoized branch raised an exception that was never read: "
               "not a measured speed-up")
REFERENCE = {
    "per_item_vs_chunked": "~800x on 16 cores",
    "memo_speedup_dict": MEMO_CAVEAT,
    "memo_speedup_lru_cache": MEMO_CAVEAT,
    "csv_vs_pickle_write": "no ratio: CSV writes took about 10 minutes, and pickle saved about 20 minutes",
}
LABELS = {
    "per_item_vs_chunked": "process pool: chunksize 1 / one chunk per worker",
    "memo_speedup_dict": "memo: no memo / dict memo",
    "memo_speedup_lru_cache": "memo: no memo / lru_cache",
    "memo_lru_vs_numpy": "memo: lru_cache / numpy lookup (what is left)",
    "csv_vs_pickle_write": "write: CSV / pickle",
    "csv_vs_parquet_write": "write: CSV / parquet",
    "csv_vs_feather_write": "write: CSV / feather",
    "csv_vs_pickle_read": "read: CSV / pickle",
    "spawn_vs_fork_start": "pool start: spawn / fork",
    "forkserver_vs_fork_start": "pool start: forkserver / fork",
    "send_vs_inherit_100mb": "biggest argument (100 MB; 10 MB small): send / inherit at fork",
    "exists_vs_scandir_flat": "skip-if-done, flat: exists() per file / one scandir",
    "exists_vs_scandir_256": "skip-if-done, 256 folders: exists() per file / one scan",
    "find_vs_scan": "count outputs (256 folders): find | wc -l / scan_outputs (invoke progress)",
    "find_vs_listdir": "count outputs (256 folders): find | wc -l / sum(len(os.listdir))",
    "processes_vs_threads_128": "I/O-bound: process pool / 128 threads",
    "draft_vs_pil_decode": "JPEG thumbnails: PIL draft / PIL (images/s)",
    "opencv_vs_pil_decode": "JPEG thumbnails: OpenCV / PIL (images/s)",
    "draft_pool_vs_one": "JPEG thumbnails, PIL draft: one process per core / one process",
}


# ----------------------------------------------------------------------------------------------------------
# benchmark JSON -> profile (pure)

def _rows(data: dict, group: str) -> list[tuple[dict, float]]:
    """(extra_info, median seconds) of every benchmark of ``group``."""
    return [(b.get("extra_info") or {}, float(b["stats"]["median"]))
            for b in data.get("benchmarks", []) if b.get("group") == group and b.get("stats")]


def _pick(rows, **match) -> float | None:
    for info, median in rows:
        if all(info.get(k) == v for k, v in match.items()):
            return median
    return None


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _start(data: dict) -> dict:
    rows = _rows(data, "start methods: pool start")
    by_parent: dict[str, dict[str, float]] = {}
    for info, median in rows:
        by_parent.setdefault(info.get("parent", "small"), {})[info["method"]] = round(median, 6)
    small = by_parent.get("small", {})
    sends = {}
    for info, median in _rows(data, "start methods: send vs inherit"):
        sends.setdefault(f"{info['megabytes']}MB", {})[info["how"]] = round(median, 6)
    return {
        "start_method": min(small, key=small.get) if small else None,
        "pool_start_s": small,
        "pool_start_big_parent_s": {k: v for k, v in by_parent.items() if k != "small"},
        "send_vs_inherit_s": sends,
    }


def _chunks(data: dict) -> dict:
    out = {"chunk_throughput": {}}
    for kind in ("process", "thread"):
        rows = _rows(data, f"chunks: {kind} pool")
        out["chunk_throughput"][kind] = sorted(
            ({"chunksize": info["chunksize"], "manual": bool(info.get("manual")),
              "items_per_s": round(info["items"] / median, 1)} for info, median in rows),
            key=lambda r: r["chunksize"])
    rows = _rows(data, "chunks: process pool")
    one, manual = _pick(rows, chunksize=1, manual=False), _pick(rows, manual=True)
    items = next((info["items"] for info, _ in rows), None)
    out["per_task_overhead_us"] = (round(max(0.0, one - manual) / items * 1e6, 3)
                                   if one is not None and manual is not None else None)
    out["per_item_vs_chunked"] = _ratio(one, manual)
    return out


def _memo(data: dict) -> dict:
    rows = _rows(data, "memo: reduce to the 10th power")
    s = {info["how"]: round(median, 6) for info, median in rows}
    return {"memo_s": s, "memo_speedup": {k: _ratio(s.get("none"), s.get(k)) for k in ("dict", "lru_cache", "numpy")}}


def _serialization(data: dict) -> dict:
    fmts: dict[str, dict] = {}
    for way in ("write", "read"):
        for info, median in _rows(data, f"serialization: {way}"):
            f = fmts.setdefault(info["format"], {})
            f[f"{way}_s"] = round(median, 6)
            f["size_bytes"] = info.get("size_bytes")
            f["dtypes_survive"] = bool(info.get("dtypes_survive"))
            if info.get("changed"):
                f["changed"] = info["changed"]
    complete = {k: v for k, v in fmts.items() if "write_s" in v and "read_s" in v}
    ranking = sorted(complete, key=lambda k: complete[k]["write_s"] + complete[k]["read_s"])
    return {"serialization": fmts, "serialization_ranking": ranking}


def _counting(data: dict) -> dict:
    skip = {info["how"]: round(median, 6) for info, median in _rows(data, "counting: skip-if-done")}
    rows = _rows(data, "counting: count outputs")
    count = {f"{info['how']}-{info['layout']}": round(median, 6) for info, median in rows}
    files = next((info.get("files") for info, _ in rows), None)
    counter = next((info["counter"] for info, _ in rows if info.get("how") == "scan"), None)
    return {"counting": {"files": files, "counter": counter, "skip_if_done_s": skip, "count_s": count,
                         "progress_find_vs_scan": _ratio(count.get("find-nested"), count.get("scan-nested"))}}


def _threads(data: dict) -> dict:
    rows = _rows(data, "threads: I/O-bound items")
    procs = [(info, m) for info, m in rows if info.get("kind") == "processes"]
    threads = sorted((info["workers"], m) for info, m in rows if info.get("kind") == "threads")
    if not procs or not threads:
        return {"thread_process_crossover": None}
    pinfo, pmed = procs[0]
    winner = next((n for n, m in threads if m < pmed), None)
    return {"thread_process_crossover": {
        "threads": winner, "processes": pinfo["workers"], "wait_s": pinfo.get("wait_s"),
        "items": pinfo.get("items"), "processes_s": round(pmed, 6),
        "threads_s": {str(n): round(m, 6) for n, m in threads},
        "speedup_vs_processes": {str(n): _ratio(pmed, m) for n, m in threads},
        **_cpu_share(data),
        "definition": CROSSOVER_DEFINITION}}


def _cpu_share(data: dict) -> dict:
    rows = _rows(data, "threads: CPU share")
    by_share: dict[int, dict[str, float]] = {}
    for info, m in rows:
        by_share.setdefault(info["cpu_share"], {})[info["kind"]] = m
    pairs = sorted((s, v) for s, v in by_share.items() if len(v) == 2)
    if not pairs:
        return {}
    ratios = [(s, v["threads"] / v["processes"]) for s, v in pairs]
    share = None
    for i, (s, r) in enumerate(ratios):
        if r > 1:  # processes win here: interpolate between the last share where threads won and this one
            if i == 0:
                share = float(s)
            else:
                s0, r0 = ratios[i - 1]
                share = round(s0 + (s - s0) * (1 - r0) / (r - r0), 1)
            break
    return {"cpu_share": share,
            "cpu_share_threads_vs_processes": {str(s): round(r, 3) for s, r in ratios}}


def _decode(data: dict) -> dict:
    rows = _rows(data, "decode: JPEG to 128x128")
    pool = _rows(data, "decode: JPEG to 128x128, pool")
    return {"decode_images_per_s": {info["how"]: round(info["images"] / m, 1) for info, m in rows},
            "decode_pool_images_per_s": {info["how"]: round(info["images"] / m, 1) for info, m in pool}}


def headline_ratios(p: dict) -> dict:
    """The ratios of the report, from a profile (None where the benchmark was not run)."""
    start, memo, ser = p.get("pool_start_s") or {}, p.get("memo_s") or {}, p.get("serialization") or {}
    cnt = p.get("counting") or {}
    skip, count = cnt.get("skip_if_done_s") or {}, cnt.get("count_s") or {}
    thr = p.get("thread_process_crossover") or {}
    dec = p.get("decode_images_per_s") or {}
    sends = p.get("send_vs_inherit_s") or {}
    biggest = max(sends, key=lambda k: int(k.rstrip("MB")), default=None)
    w = {k: v.get("write_s") for k, v in ser.items()}
    r = {k: v.get("read_s") for k, v in ser.items()}
    return {
        "per_item_vs_chunked": p.get("per_item_vs_chunked"),
        "memo_speedup_dict": _ratio(memo.get("none"), memo.get("dict")),
        "memo_speedup_lru_cache": _ratio(memo.get("none"), memo.get("lru_cache")),
        "memo_lru_vs_numpy": _ratio(memo.get("lru_cache"), memo.get("numpy")),
        "csv_vs_pickle_write": _ratio(w.get("csv"), w.get("pickle")),
        "csv_vs_parquet_write": _ratio(w.get("csv"), w.get("parquet")),
        "csv_vs_feather_write": _ratio(w.get("csv"), w.get("feather")),
        "csv_vs_pickle_read": _ratio(r.get("csv"), r.get("pickle")),
        "spawn_vs_fork_start": _ratio(start.get("spawn"), start.get("fork")),
        "forkserver_vs_fork_start": _ratio(start.get("forkserver"), start.get("fork")),
        "send_vs_inherit_100mb": (_ratio(sends[biggest].get("send"), sends[biggest].get("inherit"))
                                  if biggest else None),
        "exists_vs_scandir_flat": _ratio(skip.get("exists-flat"), skip.get("scandir-flat")),
        "exists_vs_scandir_256": _ratio(skip.get("exists-256"), skip.get("scandir-256")),
        "find_vs_scan": _ratio(count.get("find-nested"), count.get("scan-nested")),
        "find_vs_listdir": _ratio(count.get("find-nested"), count.get("listdir-nested")),
        "processes_vs_threads_128": (thr.get("speedup_vs_processes") or {}).get("128"),
        "draft_vs_pil_decode": _ratio(dec.get("pil-draft"), dec.get("pil")),
        "opencv_vs_pil_decode": _ratio(dec.get("opencv"), dec.get("pil")),
        "draft_pool_vs_one": _ratio((p.get("decode_pool_images_per_s") or {}).get("pil-draft"), dec.get("pil-draft")),
    }


def build_profile(data: dict, source: str | None = None) -> dict:
    """A machine profile from a pytest-benchmark JSON document (``--benchmark-json``). Pure: no I/O."""
    mi = data.get("machine_info") or {}
    fb, cpu = mi.get("fleetbook") or {}, mi.get("cpu") or {}
    profile = {
        "version": PROFILE_VERSION,
        "created_at": data.get("datetime") or datetime.now(timezone.utc).isoformat(),
        "cores": fb.get("cores") or cpu.get("count"),
        "cpu_model": fb.get("cpu_model") or cpu.get("brand_raw") or mi.get("processor") or mi.get("machine"),
        "python": mi.get("python_version"),
        "scale": fb.get("scale"),
        "load_average_1m": fb.get("load_average_1m"),
        "source": source,
    }
    for part in (_start, _chunks, _memo, _serialization, _counting, _threads, _decode):
        profile.update(part(data))
    profile["per_task_overhead_definition"] = OVERHEAD_DEFINITION
    profile["headline_ratios"] = headline_ratios(profile)
    return profile


# ----------------------------------------------------------------------------------------------------------
# report and chart

def _x(v) -> str:
    return "n/a" if v is None else f"{v:,.1f}x"


def render_report(profile: dict, chart_name: str | None = None) -> str:
    """Markdown: what was measured, headline ratios next to the write-ups' figures, the profile's key values."""
    p, ratios = profile, profile.get("headline_ratios") or headline_ratios(profile)
    lines = [
        "# Machine profile: what one machine can do",
        "",
        f"{p.get('cores')} cores, {p.get('cpu_model')}, Python {p.get('python')}, scale `{p.get('scale')}`, "
        f"measured {p.get('created_at')}.",
        "Ratios of benchmarks from one run (timings on a shared machine are noisy; ratios travel better).",
        f"Load average (1 min) when the run ended: {p.get('load_average_1m')}; above 0.5 per core, other work "
        "was competing and the parallel figures (pools, crossover) understate this machine.",
        "At `small` scale fixed costs dominate and most ratios come out smaller than at `default`.",
        "",
        "| ratio | this machine | original write-up |",
        "| --- | --- | --- |",
    ]
    for key, label in LABELS.items():
        cells = [c.replace("|", "\\|") for c in (label, _x(ratios.get(key)), REFERENCE.get(key, ""))]
        lines.append("| " + " | ".join(cells) + " |")
    thr = p.get("thread_process_crossover") or {}
    ser = p.get("serialization") or {}
    lines += [
        "",
        "## What the workloads read",
        "",
        f"- `start_method`: **{p.get('start_method')}** (pool start + first result, s: {p.get('pool_start_s')})",
        f"- `per_task_overhead_us`: **{p.get('per_task_overhead_us')}** ({OVERHEAD_DEFINITION})",
        f"- `cores`: **{p.get('cores')}**",
        "",
        "## Other findings",
        "",
        _crossover_lines(thr),
        f"- serialization, fastest write + read first: {', '.join(p.get('serialization_ranking') or [])}",
    ]
    for fmt, v in ser.items():
        lines.append(f"  - {fmt}: write {v.get('write_s')} s, read {v.get('read_s')} s, "
                     f"{v.get('size_bytes')} bytes, dtypes survive: {v.get('dtypes_survive')}"
                     + (f" (changed: {v['changed']})" if v.get("changed") else ""))
    lines.append(f"- JPEG thumbnails per second, one process: {p.get('decode_images_per_s')}; "
                 f"one process per core: {p.get('decode_pool_images_per_s')}")
    cnt = p.get("counting") or {}
    lines.append(f"- {cnt.get('files')} outputs: skip-if-done {cnt.get('skip_if_done_s')}; "
                 f"counting {cnt.get('count_s')} (Python counter: {cnt.get('counter')})")
    if chart_name:
        lines += ["", f"![chunk size against throughput]({chart_name})"]
    return "\n".join(lines) + "\n"


def _crossover_lines(thr: dict) -> str:
    if not thr:
        return "- thread/process crossover: not measured"
    first = (f"**{thr['threads']}** threads" if thr.get("threads") else "no measured thread count")
    text = (f"- thread/process crossover: {first} beat {thr.get('processes')} processes on {thr.get('wait_s')} s "
            f"waits; speed-ups by thread count {thr.get('speedup_vs_processes')}")
    if "cpu_share" in thr:
        share = thr["cpu_share"]
        when = f"once an item is **{share} %** Python work" if share is not None else \
            "at **no** measured share of Python work (is the machine busy? processes then lack their cores)"
        text += (f"\n- processes beat 8 threads {when}; thread time / process time by share: "
                 f"{thr.get('cpu_share_threads_vs_processes')}")
    return text


def plot_chunks(profile: dict, path) -> Path:
    """PNG of chunk size against throughput (items/s), process and thread pools, log-log."""
    from matplotlib.figure import Figure  # Agg canvas, no global backend switch

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for kind, rows in (profile.get("chunk_throughput") or {}).items():
        if not rows:
            continue
        ax.plot([r["chunksize"] for r in rows], [r["items_per_s"] for r in rows], marker="o", label=f"{kind} pool")
        for r in rows:
            if r["manual"]:
                ax.annotate("one chunk per worker", (r["chunksize"], r["items_per_s"]), fontsize=7,
                            textcoords="offset points", xytext=(-6, 6), ha="right")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("items per task (chunk size)")
    ax.set_ylabel("items per second")
    ax.set_title(f"x*x over a pool, {profile.get('cores')} cores ({profile.get('scale')} scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def write_outputs(profile: dict, profile_file: Path) -> dict[str, Path]:
    """Profile JSON, report and chart, side by side."""
    profile_file.parent.mkdir(parents=True, exist_ok=True)
    chart = profile_file.parent / "bench-chunks.png"
    report = profile_file.parent / "bench-report.md"
    profile_file.write_text(json.dumps(profile, indent=2) + "\n")
    plot_chunks(profile, chart)
    report.write_text(render_report(profile, chart.name))
    return {"profile": profile_file, "report": report, "chart": chart}


# ----------------------------------------------------------------------------------------------------------
# the task

@task(default=True, help={
    "scale": "input sizes: small (about a minute), default (about 5 minutes), large; default: bench.scale",
    "from_json": "build profile, report and chart from this pytest-benchmark JSON instead of measuring",
    "pytest_args": "extra pytest arguments, one quoted string, e.g. '-k chunks'",
    "fleet": "also run the local-fleet benchmarks (marked `fleet`: they start sshd and sshfs)",
})
def run(c, scale=None, from_json=None, pytest_args="", fleet=False):
    """Benchmark this machine (pytest bench/) and write its profile, report and chart."""
    scale = scale or c.config.bench.scale
    if scale not in SCALES:
        raise Exit(f"--scale {scale!r}: use one of {', '.join(SCALES)} (or set bench.scale)")
    out = profile_path(c)
    if from_json:
        json_file = Path(from_json).resolve()
        if not json_file.is_file():
            raise Exit(f"--from-json {from_json}: no such file; run `invoke bench` to measure")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        json_file = out.parent / f"bench-{scale}.json"
        json_file.unlink(missing_ok=True)
        marks = "" if fleet else "-m 'not fleet' "
        cmd = (f"{shlex.quote(sys.executable)} -m pytest bench -p no:cacheprovider {marks}"
               f"--bench-scale {scale} --benchmark-json {shlex.quote(str(json_file))} "
               f"--benchmark-columns median,rounds --benchmark-sort name {pytest_args}").strip()
        with c.cd(str(REPO)):
            result = c.run(cmd, warn=True, pty=False, echo=True)
        if not json_file.is_file():
            raise Exit("the benchmarks wrote no JSON (see pytest's output above); fix the failure, or try "
                       "`invoke bench --scale small`")
        if result is not None and result.failed:
            print(f"warning: pytest exited {result.exited}; building the profile from what was measured",
                  file=sys.stderr)
    try:
        data = json.loads(json_file.read_text())
    except ValueError as e:
        raise Exit(f"{json_file} is not a benchmark JSON ({e}); run `invoke bench` again") from None
    if not data.get("benchmarks"):
        raise Exit(f"{json_file} holds no benchmarks (was the run made with --benchmark-disable?)")
    files = write_outputs(build_profile(data, source=str(json_file)), out)
    for what, path in files.items():
        print(f"{what}: {path}")
