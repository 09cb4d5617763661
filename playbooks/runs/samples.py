"""Real sample images for demos, tests and benchmarks, made from the pictures scikit-image ships."""
from __future__ import annotations

from pathlib import Path

NAMES = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
         "motorcycle_left", "retina", "colorwheel")


def base_images():
    from PIL import Image
    from skimage import data
    out = []
    for name in NAMES:
        try:
            arr = getattr(data, name)()
        except Exception:  # some pictures need an optional download: skip them
            continue
        if isinstance(arr, tuple):
            arr = arr[0]
        img = Image.fromarray(arr)
        out.append((name, img.convert("RGB")))
    return out


def make_samples(folder: Path, count: int, size: tuple[int, int] = (1024, 768), root: Path | None = None) -> int:
    """Write ``count`` varied JPEGs (crops and flips of the shipped pictures) into ``folder``; keep existing.

    ``root``: a folder above ``folder`` (the shared root) below which no symlink is followed (``safefs``): the
    demo's folders may have been replaced by links from a node.  Without it, ``folder`` itself is that root."""
    import io

    from PIL import ImageOps

    from playbooks.fs.safefs import Root
    disk = Root(root if root is not None else folder)
    base = Path(folder).relative_to(root).as_posix() + "/" if root is not None else ""
    disk.mkdirs(base or ".")
    bases = base_images()
    for i in range(count):
        rel = f"{base}{i // 20:02d}/img_{i:05d}.jpg"
        if disk.exists(rel):
            continue
        name, img = bases[i % len(bases)]
        w, h = img.size
        k = i // len(bases)
        box = (k * 7 % max(1, w // 8), k * 5 % max(1, h // 8), w - k * 3 % max(1, w // 8), h - k * 11 % max(1, h // 8))
        pic = img.crop(box).resize(size)
        if k % 2:
            pic = ImageOps.mirror(pic)
        buf = io.BytesIO()
        pic.save(buf, "JPEG", quality=90)
        disk.write_bytes(rel, buf.getvalue())
    return count
