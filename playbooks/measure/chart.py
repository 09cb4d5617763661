"""The chart of ``invoke bench``: chunk size against throughput, process and thread pools (``bench-chunks.png``)."""
from __future__ import annotations

from pathlib import Path


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
