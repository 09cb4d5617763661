"""Plain helpers shared by benchmark modules (imported by name; bench/ is on sys.path under pytest)."""
from __future__ import annotations

import importlib.util
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_photos(folder: Path, n: int) -> list[str]:
    """``n`` 1024x768 JPEG photos (crops of the pictures shipped with scikit-image) in ``folder``; their names."""
    from PIL import Image

    data = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"
    pics = [Image.open(data / f).convert("RGB") for f in ("astronaut.png", "coffee.png", "chelsea.png")]
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        im = pics[i % 3]
        x, y = (i * 13) % 60, (i * 7) % 40
        crop = im.crop((x, y, x + im.width * 3 // 4, y + im.height * 9 // 16)).resize((1024, 768))
        crop.save(folder / f"photo{i:04d}.jpg", quality=90)
        names.append(f"photo{i:04d}.jpg")
    return names


def workload_cpu_s(workload: str, argv: list, env: dict) -> float:
    """CPU seconds (user + system) of one run of ``workloads/<workload>.py argv --workers 1 --quiet`` in a child
    process (which must succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, str(REPO / "workloads" / f"{workload}.py"), *map(str, argv), "--workers", "1",
                    "--quiet"], check=True, capture_output=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
