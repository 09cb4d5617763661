"""Shared helpers of tests/test_workloads_*.py: image sets (real, awkward, bad) and running the scripts."""
from __future__ import annotations

import importlib.util
import io
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "workloads"
if str(WORKLOADS) not in sys.path:
    sys.path.insert(0, str(WORKLOADS))

import fleetwork  # noqa: E402

PY = sys.executable
SKIMAGE_DATA = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data"


def script(name: str) -> str:
    return str(WORKLOADS / f"{name}.py")


def run(name: str, *args, env: dict | None = None, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run ``python workloads/<name>.py args...``; FLEETBOOK_PROFILE points nowhere unless env sets it."""
    full_env = dict(os.environ)
    full_env.pop("FLEETBOOK_FAULT", None)
    full_env["FLEETBOOK_PROFILE"] = "/nonexistent/profile.json"
    full_env.update(env or {})
    return subprocess.run([PY, script(name), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, **kw)


def summary_of(stdout: str) -> dict:
    """The last stdout line ``done=N skipped=N failed=N seconds=S items_per_s=R`` as a dict."""
    last = stdout.strip().splitlines()[-1]
    pairs = dict(kv.split("=", 1) for kv in last.split())
    assert list(pairs) == ["done", "skipped", "failed", "seconds", "items_per_s"], last
    return {k: (float(v) if k in ("seconds", "items_per_s") else int(v)) for k, v in pairs.items()}


def temp_files(root) -> list[str]:
    return [os.path.join(d, f) for d, _dirs, files in os.walk(root) for f in files if fleetwork.TMP_MARK in f]


# ------------------------------------------------------------------------------------------------ image sets
def real_set(src: Path) -> list[str]:
    """Real photos shipped with scikit-image, as PNG and as JPEG (converted here)."""
    from PIL import Image

    src.mkdir(parents=True, exist_ok=True)
    names = []
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png"):
        shutil.copy(SKIMAGE_DATA / name, src / name)
        names.append(name)
    for name in ("astronaut", "chelsea", "coffee"):
        with Image.open(SKIMAGE_DATA / f"{name}.png") as im:
            im.convert("RGB").save(src / f"{name}-photo.jpeg", quality=92)
        names.append(f"{name}-photo.jpeg")
    return sorted(names)


def exif_image(path: Path, orientation: int) -> None:
    """chelsea (451x300, asymmetric) saved as JPEG with an EXIF orientation tag."""
    from PIL import Image

    with Image.open(SKIMAGE_DATA / "chelsea.png") as im:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.convert("RGB").save(path, quality=95, exif=exif.tobytes())


def awkward_set(src: Path) -> dict[str, str]:
    """Valid but awkward images -> what each checks.  Returns {relative name: kind}."""
    import numpy as np
    from PIL import Image

    src.mkdir(parents=True, exist_ok=True)
    kinds = {}
    astro = Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB")
    astro.convert("CMYK").save(src / "cmyk.jpg", quality=95)
    kinds["cmyk.jpg"] = "cmyk"
    camera = np.asarray(Image.open(SKIMAGE_DATA / "camera.png").convert("L"))
    Image.fromarray(camera.astype(np.uint16) * 257).save(src / "gray16.png")
    kinds["gray16.png"] = "16bit"
    # palette with a transparent left half (index 0) and a blue right half (index 1)
    pal = Image.new("P", (200, 100), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (100, 0, 200, 100))
    pal.save(src / "palette.png", transparency=0)
    kinds["palette.png"] = "palette-alpha"
    rgba = Image.new("RGBA", (200, 100), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (100, 0, 200, 100))
    rgba.save(src / "rgba.png")
    kinds["rgba.png"] = "alpha"
    Image.new("LA", (90, 60), (40, 255)).save(src / "la.png")
    kinds["la.png"] = "alpha"
    for o in (3, 6, 8):
        exif_image(src / f"exif{o}.jpg", o)
        kinds[f"exif{o}.jpg"] = "exif"
    frames = [Image.new("RGB", (64, 48), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    kinds["anim.gif"] = "multi-frame-red"
    frames[0].save(src / "pages.tiff", save_all=True, append_images=frames[1:])
    kinds["pages.tiff"] = "multi-frame-red"
    shutil.copy(SKIMAGE_DATA / "multipage.tif", src / "multipage.tif")
    kinds["multipage.tif"] = "multi-frame"
    (src / "with space" / "ünïcødé").mkdir(parents=True)
    astro.resize((160, 120)).save(src / "with space" / "ünïcødé" / "café ☕ photo.JPG")
    kinds["with space/ünïcødé/café ☕ photo.JPG"] = "names"
    astro.resize((300, 200)).save(src / "small.bmp")
    kinds["small.bmp"] = "bmp"
    astro.resize((300, 200)).save(src / "lossy.webp")
    kinds["lossy.webp"] = "webp"
    Image.new("1", (40, 30), 1).save(src / "onebit.png")
    kinds["onebit.png"] = "1bit"
    return kinds


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data): a decompression bomb for Pillow."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def bad_set(src: Path) -> dict[str, set[str]]:
    """Bad inputs -> the failure reasons accepted for each.  Includes one output collision."""
    from PIL import Image

    src.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB").save(buf, "JPEG")
    jpeg = buf.getvalue()
    png = (SKIMAGE_DATA / "chelsea.png").read_bytes()
    (src / "empty.jpg").write_bytes(b"")
    (src / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (src / "cut.png").write_bytes(png[: len(png) // 2])
    (src / "notimage.png").write_text("this is a text file, not a picture\n")
    (src / "random.jpg").write_bytes(random.Random(3).randbytes(5000))
    (src / "bomb.png").write_bytes(png_header_only(20000, 20000))       # > 2x Pillow's limit: error
    (src / "bombwarn.png").write_bytes(png_header_only(10000, 10000))   # 1x-2x the limit: a warning
    os.symlink("does-not-exist.jpg", src / "dangling.jpg")
    (src / "folder.png").mkdir()
    os.mkfifo(src / "pipe.jpg")
    # collision: twin.jpg wins (lexicographically first), twin.png is recorded
    (src / "twin.jpg").write_bytes(jpeg)
    shutil.copy(SKIMAGE_DATA / "chelsea.png", src / "twin.png")
    return {"empty.jpg": {"empty"}, "truncated.jpg": {"truncated"}, "cut.png": {"truncated", "corrupt"},
            "notimage.png": {"not-an-image"}, "random.jpg": {"not-an-image"},
            "bomb.png": {"decompression-bomb"}, "bombwarn.png": {"decompression-bomb"},
            "dangling.jpg": {"broken-symlink"}, "folder.png": {"not-a-regular-file"},
            "pipe.jpg": {"not-a-regular-file"}, "twin.png": {"output-collision"}}


def many_jpegs(src: Path, n: int, side: int = 320) -> list[str]:
    """n distinct JPEG photos (crops of the scikit-image pictures) in two folders."""
    from PIL import Image

    pics = [Image.open(SKIMAGE_DATA / f).convert("RGB") for f in ("astronaut.png", "coffee.png", "chelsea.png")]
    names = []
    for i in range(n):
        im = pics[i % 3]
        x, y = (i * 7) % 40, (i * 11) % 40
        sub = src / f"d{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        im.crop((x, y, x + side, y + side * 3 // 4)).save(sub / f"img{i:03d}.jpg", quality=90)
        names.append(f"d{i % 2}/img{i:03d}.jpg")
    return sorted(names)


def check_jpeg_outputs(dst: Path, names, size: int = 128) -> None:
    """Every expected output exists, decodes completely, is an RGB JPEG of size x size."""
    from PIL import Image

    for name in names:
        out = dst / (os.path.splitext(name)[0] + ".jpg")
        with Image.open(out) as im:
            assert im.format == "JPEG", out
            im.load()
            assert im.size == (size, size) and im.mode == "RGB", (out, im.size, im.mode)
