"""The bench report (Markdown: headline ratios next to what the original write-ups say) and the chunk chart."""
from __future__ import annotations

import json
from pathlib import Path

from playbooks.measure.chart import plot_chunks
from playbooks.measure.profile import OVERHEAD_DEFINITION, headline_ratios

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


def write_outputs(profile: dict, profile_file: Path) -> dict[str, Path]:
    """Profile JSON, report and chart, side by side."""
    profile_file.parent.mkdir(parents=True, exist_ok=True)
    chart = profile_file.parent / "bench-chunks.png"
    report = profile_file.parent / "bench-report.md"
    profile_file.write_text(json.dumps(profile, indent=2) + "\n")
    plot_chunks(profile, chart)
    report.write_text(render_report(profile, chart.name))
    return {"profile": profile_file, "report": report, "chart": chart}


