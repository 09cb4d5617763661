"""A machine profile from a pytest-benchmark JSON document (``--benchmark-json`` of ``pytest bench``): pure.

``build_profile(data)`` turns the medians of the benchmark groups into what the workloads and the planner read:
``start_method``, ``per_task_overhead_us``, ``cores``, ``memory_bytes``, ``item_seconds`` (per workload, from
``bench/test_items.py``), ``run_start_s``, ``parallel_efficiency``, and the other findings (memo, serialization,
counting, threads, decode).  A group that was not run gives ``None``/empty values.
"""
from __future__ import annotations

from datetime import datetime, timezone

PROFILE_VERSION = 1

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


def _items(data: dict) -> dict:
    """Per-item seconds of each workload on the sample (one process), run start-up, parallel efficiency."""
    per = {}
    for info, median in _rows(data, "items: per-item time"):
        if info.get("items"):
            per[info["workload"]] = {"seconds": round(median / info["items"], 6),
                                     "items": info.get("sample_items", info["items"]),
                                     "in_bytes": info.get("in_bytes"), "out_bytes": info.get("out_bytes"),
                                     "input": info.get("input")}
    start = {info["workload"]: round(median, 4) for info, median in _rows(data, "items: run start")}
    par = next((info for info, _ in _rows(data, "items: parallel")), {})
    sample = next((info.get("sample") for info, _ in _rows(data, "items: per-item time") if info.get("sample")),
                  None)
    read = next((info.get("read_s_per_item") for info, _ in _rows(data, "items: per-item time")
                 if info.get("read_s_per_item")), None)
    return {"item_seconds": {w: v["seconds"] for w, v in per.items()}, "items": per, "run_start_s": start,
            "sample_read_s_per_item": round(read, 6) if read else None,
            "parallel_efficiency": par.get("efficiency"), "machine_efficiency": par.get("machine_efficiency"),
            "sample": sample}


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
        "memory_bytes": fb.get("memory_bytes"),
        "cpus": fb.get("cpus"),            # the machine's CPUs (a local node counts fewer cores: ``cores``)
        "python": mi.get("python_version"),
        "scale": fb.get("scale"),
        "load_average_1m": fb.get("load_average_1m"),
        "source": source,
    }
    for part in (_start, _chunks, _memo, _serialization, _counting, _threads, _decode, _items):
        profile.update(part(data))
    profile["per_task_overhead_definition"] = OVERHEAD_DEFINITION
    profile["headline_ratios"] = headline_ratios(profile)
    return profile


