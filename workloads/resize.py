"""resize: center-crop every image under --src to a square and resize it to --size x --size, JPEG output.

Each image ``SRC/a/b.png`` becomes ``DST/a/b.jpg`` (RGB, --size x --size).  EXIF orientation is applied;
CMYK, 16-bit, palette, grayscale and alpha images become RGB (alpha on white); multi-frame files (GIF, TIFF,
WebP) give their first frame.  JPEGs are decoded in draft mode (1/2, 1/4, 1/8 scale) while both sides stay
>= --size, which is several times faster on large photos.  Two inputs that map to the same output
(``a.png`` and ``a.jpg``) are a recorded failure (``output-collision``) of the lexicographically later one.
"""
from __future__ import annotations

import io
import os
import sys

import fleetwork


def center_square(img):
    """The largest centered square box of a Pillow image, as (left, top, right, bottom)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def resize_image(path: str, size: int, *, draft: bool = True, quality: int = 90) -> bytes:
    """One image file -> JPEG bytes of its centered square resized to size x size (BadInput when bad)."""
    from PIL import Image

    img = fleetwork.open_image(path, draft=size if draft else None, mode="RGB")
    out = img.resize((size, size), Image.Resampling.BICUBIC, box=center_square(img), reducing_gap=3.0)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


class Resize(fleetwork.FileWorkload):
    name = "resize"
    description = __doc__
    epilog = "example:\n  python workloads/resize.py --src data/src --dst data/out --size 128 --shard 0/4"
    extensions = fleetwork.IMAGE_EXTENSIONS
    out_ext = ".jpg"

    def add_arguments(self, parser):
        parser.add_argument("--size", type=int, default=128, help="side of the square output in pixels (128)")
        parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the output (90)")
        parser.add_argument("--no-draft", action="store_true",
                            help="decode JPEGs at full resolution (slower; for comparisons)")

    def check(self, src, dst, opts):
        super().check(src, dst, opts)
        if opts.size < 1:
            raise fleetwork.UsageError("--size must be >= 1")

    def process(self, item, src, dst, opts):
        data = resize_image(os.path.join(src, item), opts.size, draft=not opts.no_draft, quality=opts.quality)
        fleetwork.atomic_write(os.path.join(dst, self.output_for(item, opts)), data)


WORKLOAD = Resize()

if __name__ == "__main__":
    sys.exit(fleetwork.main(WORKLOAD))
